//! `eval --agent-bin <path> [--python <venv python>] [--max-ticks N]`: a fixed set of small
//! research tasks, each a question whose answer is on a page this program serves on
//! 127.0.0.1, run through the gateway and an agent process against whatever model is
//! configured, and graded by exact facts. Prints one line per task and `eval: solved k of n`.
//!
//! The model: `OPENAI_BASE_URL` / `OPENAI_API_KEY` (and `LLM_*`) from the environment, passed
//! to the agent as they are; with neither set, the small local model is started with
//! `--python` (scripts/eval.sh does this). The score is a figure, not a gate: the exit code
//! is 0 whenever every task ended.

// The report on standard output is what this program is for.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::response::{Html, IntoResponse};
use proto::TaskId;
use testkit::Harness;
use testkit::llm::LocalModel;

/// Page slug, page text, question, the fact a correct answer contains.
const TASKS: [(&str, &str, &str, &str); 5] = [
    (
        "lighthouse",
        "The Korvath lighthouse was built in 1893 by the engineer Mira Tallis. Its lamp is seen from 31 km.",
        "In which year was the Korvath lighthouse built?",
        "1893",
    ),
    (
        "river",
        "The Velna river is 412 kilometres long and flows into the Amber Sea near the town of Ostrel.",
        "How long is the Velna river?",
        "412",
    ),
    (
        "opera",
        "The opera Grey Harbour was written by the composer Anselm Kroy and first staged in Lisbon.",
        "Who wrote the opera Grey Harbour?",
        "Kroy",
    ),
    (
        "bakery",
        "The bakery on Quay Street has been run by Ada Pellino since 2011; it opens at six.",
        "Who runs the bakery on Quay Street?",
        "Pellino",
    ),
    (
        "archive",
        "Visitors to the Orrin archive reading room must quote the access code K-7731 at the desk.",
        "What access code does the Orrin archive reading room use?",
        "K-7731",
    ),
];

/// Every task must end within this, whatever the model.
const ALL_DONE: Duration = Duration::from_secs(1800);
const PASS_THROUGH: [&str; 10] = [
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "LLM_MODEL",
    "EMBEDDING_MODEL",
    "LLM_RESPONSE_FORMAT",
    "LLM_TIMEOUT_SECONDS",
    "LLM_MAX_TOKENS",
    "LLM_ACTION_MAX_TOKENS",
    "LLM_SCHEMA_DIALECT",
    "LLM_TEMPERATURE",
];

fn usage() -> ! {
    eprintln!("usage: eval --agent-bin <path> [--python <venv python>] [--max-ticks N]");
    std::process::exit(2);
}

async fn page(Path(slug): Path<String>) -> impl IntoResponse {
    match TASKS.iter().find(|t| t.0 == slug) {
        Some((slug, text, _, _)) => {
            Html(format!("<html><head><title>{slug}</title></head><body><p>{text}</p></body></html>"))
        }
        None => Html("<html><body>no such page</body></html>".to_owned()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut agent, mut python, mut max_ticks) = (None, None, 4u32);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--agent-bin" => agent = args.next().map(PathBuf::from),
            "--python" => python = args.next().map(PathBuf::from),
            "--max-ticks" => max_ticks = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            _ => usage(),
        }
    }
    let Some(agent) = agent else { usage() };
    let mut env: Vec<(String, String)> =
        PASS_THROUGH.iter().filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v))).collect();
    let configured = env.iter().any(|(k, _)| k == "OPENAI_BASE_URL" || k == "OPENAI_API_KEY");
    let local = if configured {
        None
    } else {
        let Some(python) = python else {
            eprintln!("eval: no OPENAI_BASE_URL or OPENAI_API_KEY, and no --python to start the small local model");
            std::process::exit(2);
        };
        let model = LocalModel::start(&python).await;
        env.push(("OPENAI_BASE_URL".into(), format!("{}/v1", model.url)));
        env.push(("LLM_MODEL".into(), "smollm2-135m".into()));
        // Greedy decoding: the small model's score then varies only with the order tasks
        // share the server in, not with sampling.
        if !env.iter().any(|(k, _)| k == "LLM_TEMPERATURE") {
            env.push(("LLM_TEMPERATURE".into(), "0".into()));
        }
        Some(model)
    };
    if !env.iter().any(|(k, _)| k == "EMBEDDING_MODEL") && local.is_some() {
        env.push(("EMBEDDING_MODEL".into(), "local".into()));
    }
    env.push(("VISIT_ALLOW_PRIVATE".into(), "true".into()));
    env.push(("AGENT_CONCURRENCY".into(), "2".into()));
    let model_name = env.iter().find(|(k, _)| k == "LLM_MODEL").map_or("gpt-4o-mini", |(_, v)| v.as_str()).to_owned();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let pages = Router::new().route("/{slug}", axum::routing::get(page));
    tokio::spawn(async move {
        let _ = axum::serve(listener, pages).await;
    });

    let mut app = Harness::start(&[]).await;
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    app.spawn_agent(&agent.display().to_string(), "eval", &env_refs);
    let mut ids: Vec<TaskId> = Vec::new();
    for (slug, _, question, _) in TASKS {
        let mandate = format!("Read {base}/{slug} and answer this question: {question}");
        ids.push(app.submit_ok("eval", &mandate, max_ticks).await);
    }
    let started = tokio::time::Instant::now();
    let mut solved = 0;
    println!("model: {model_name}; {} tasks, max_ticks {max_ticks}", TASKS.len());
    println!(
        "{:<11} {:<8} {:<10} {:>5} {:>5} {:>6} {:>7} {:>8}",
        "task", "answer", "status", "ticks", "lost", "calls", "tokens", "seconds"
    );
    let mut lost_total = 0;
    let mut errors = Vec::new();
    for (id, (slug, _, _, fact)) in ids.iter().zip(TASKS) {
        let rec = app.wait_for(*id, ALL_DONE.saturating_sub(started.elapsed()), |r| r.status.ends_run()).await;
        let result = rec.result.clone().unwrap_or_default();
        let said: String = result["deliverables"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        let correct = said.to_lowercase().contains(&fact.to_lowercase());
        solved += usize::from(correct);
        let seconds = match (rec.started_at.as_deref(), rec.finished_at.as_deref()) {
            (Some(a), Some(b)) => {
                match (chrono::DateTime::parse_from_rfc3339(a), chrono::DateTime::parse_from_rfc3339(b)) {
                    (Ok(a), Ok(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
                    _ => f64::NAN,
                }
            }
            _ => f64::NAN,
        };
        if let Some(e) = &rec.error {
            errors.push(format!("{slug}: {e}"));
        }
        // Ticks whose reply could not be used (after the retry): the robustness figure.
        let lost = app.events(*id).await.iter().filter(|e| e.get("action").is_some_and(|a| a == "invalid")).count();
        lost_total += lost;
        println!(
            "{:<11} {:<8} {:<10} {:>5} {:>5} {:>6} {:>7} {:>8.1}",
            slug,
            if correct { "correct" } else { "wrong" },
            rec.status.to_string(),
            rec.tick.unwrap_or(0),
            lost,
            result["usage"]["model_calls"].as_u64().unwrap_or(0),
            result["usage"]["total_tokens"].as_u64().unwrap_or(0),
            seconds
        );
    }
    for e in &errors {
        println!("error of {e}");
    }
    println!("ticks lost to unusable replies: {lost_total}");
    println!("eval: solved {solved} of {}", TASKS.len());
    drop(local);
    app.cleanup().await;
}
