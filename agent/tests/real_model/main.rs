//! The agent against a real small model (SmolLM2-135M-Instruct through llama.cpp's server),
//! end to end: gateway, queue, agent process, model. What it checks is robustness, not
//! intelligence: a model this small answers badly, and the agent must still bound every
//! call, end every task, count every request and claim only what it read.
//!
//! Ignored by `cargo test`: it needs the model installed. `scripts/real-model.sh` installs it
//! and runs this with `--ignored` (CI does); `EUGLENA_LLM_PYTHON` names the venv's python.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::Html;
use proto::{TaskId, TaskStatus};
use serde_json::Value;
use testkit::Harness;
use testkit::llm::{LocalModel, RecordingProxy};

const AGENT: &str = env!("CARGO_BIN_EXE_agent");
/// The agent's per-request bound; every recorded request must end within it.
const LLM_TIMEOUT_SECONDS: u64 = 90;
/// Every task must be terminal within this, on a shared two-core machine.
const ALL_DONE: Duration = Duration::from_secs(1500);

const PAGE: &str = "<html><head><title>The Korvath lighthouse</title></head><body>\
    <h1>The Korvath lighthouse</h1>\
    <p>The Korvath lighthouse was built in 1893 by the engineer Mira Tallis.</p>\
    <p>Its lamp can be seen from 31 kilometres away.</p></body></html>";

async fn serve_page() -> String {
    let app = Router::new().route("/lighthouse", axum::routing::get(|| async { Html(PAGE) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/lighthouse")
}

fn python() -> PathBuf {
    PathBuf::from(
        std::env::var("EUGLENA_LLM_PYTHON")
            .expect("EUGLENA_LLM_PYTHON must name a python with the model installed; run scripts/real-model.sh"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the small real model: scripts/real-model.sh runs it"]
async fn a_real_small_model_runs_tasks_to_the_end() {
    let model = LocalModel::start(&python()).await;
    let proxy = RecordingProxy::start(&model.url).await;
    let page = serve_page().await;
    let mut app = Harness::start(&[]).await;
    let timeout = LLM_TIMEOUT_SECONDS.to_string();
    app.spawn_agent(
        AGENT,
        "real-model",
        &[
            ("OPENAI_BASE_URL", &proxy.base_url),
            ("LLM_MODEL", "smollm2-135m"),
            ("EMBEDDING_MODEL", "local"),
            ("LLM_TEMPERATURE", "0"),
            ("LLM_TIMEOUT_SECONDS", &timeout),
            ("LLM_MAX_RETRIES", "1"),
            ("AGENT_CONCURRENCY", "2"),
            ("TASK_TIMEOUT_SECONDS", "600"),
            // The page the first mandate names is served on loopback by this test.
            ("VISIT_ALLOW_PRIVATE", "true"),
        ],
    );
    let mandates = [
        format!("Read {page} and say in which year the Korvath lighthouse was built."),
        "List three colours of the rainbow.".to_owned(),
        "What is the capital of France? Answer in one sentence.".to_owned(),
        "Explain in one sentence what a queue is in computing.".to_owned(),
        "Find the opening hours of the Tallis museum.".to_owned(),
    ];
    let started = Instant::now();
    let mut ids: Vec<TaskId> = Vec::new();
    for (i, m) in mandates.iter().enumerate() {
        ids.push(app.submit_ok("real-user", m, if i == 0 { 4 } else { 3 }).await);
    }
    let mut results = Vec::new();
    for id in &ids {
        let left = ALL_DONE.saturating_sub(started.elapsed());
        let rec = app.wait_for(*id, left, |r| r.status.ends_run()).await;
        results.push(rec);
    }
    let elapsed = started.elapsed();

    let records = proxy.records();
    let mut model_calls = 0;
    let mut failed_calls = 0;
    let mut invalid_ticks = 0;
    let mut ticks = 0;
    for (rec, id) in results.iter().zip(&ids) {
        // A run that used its ticks without exiting stops incomplete, with its synthesis.
        assert!(
            matches!(rec.status, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Incomplete),
            "{id}: {:?}",
            rec.status
        );
        let result = rec.result.clone().unwrap_or(Value::Null);
        let usage = &result["usage"];
        model_calls += usage["model_calls"].as_u64().expect("usage.model_calls");
        failed_calls += usage["failed_calls"].as_u64().unwrap_or(0);
        let actions: Vec<String> = app.events(*id).await.into_iter().filter_map(|e| e.get("action").cloned()).collect();
        assert!(!actions.iter().any(|a| a == "search"), "{id}: search offered without a provider: {actions:?}");
        invalid_ticks += actions.iter().filter(|a| *a == "invalid").count();
        ticks += actions.len();
        // The only page that exists is the test's; every source must be it (a page read).
        for s in result["sources"].as_array().cloned().unwrap_or_default() {
            assert_eq!(s.as_str(), Some(page.as_str()), "{id}: a source the agent never read: {result}");
        }
        if result["deliverables"].as_array().is_none_or(Vec::is_empty) {
            assert_eq!(result["success"], false, "{id}: success without a deliverable: {result}");
        }
        eprintln!(
            "task {id}: {:?} after {} ticks ({} invalid), {} model calls: {}",
            rec.status,
            actions.len(),
            actions.iter().filter(|a| *a == "invalid").count(),
            usage["model_calls"],
            result["deliverables"]
        );
    }
    for r in &records {
        let max_tokens = r.body["max_tokens"].as_u64();
        assert!(max_tokens.is_some_and(|n| n <= 1024), "a chat request without a bound: {}", r.body);
        assert!(
            r.took < Duration::from_secs(LLM_TIMEOUT_SECONDS + 5),
            "a model call ran {:?}, past LLM_TIMEOUT_SECONDS",
            r.took
        );
    }
    assert_eq!(model_calls, records.len() as u64, "usage.model_calls counts every request the server saw");
    let log = std::fs::read_to_string(&app.agent(0).log).unwrap_or_default();
    let errors: Vec<&str> =
        log.lines().filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "ERROR lines in the agent's log: {errors:?}");
    let statuses: HashSet<u16> = records.iter().map(|r| r.status).collect();
    eprintln!(
        "real model: {} tasks in {:.0} s, {ticks} ticks, {invalid_ticks} lost to unusable replies, \
         {} requests ({failed_calls} failed, statuses {statuses:?})",
        ids.len(),
        elapsed.as_secs_f64(),
        records.len()
    );
    drop(model);
    app.cleanup().await;
}
