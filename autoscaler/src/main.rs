use std::path::PathBuf;

use autoscaler::config::{LocalSettings, PolicySettings};
use autoscaler::simulate::{self, SimParams};
use runtime::config::{Env, cli_args, exit_on_config_error};

const HELP: &str = "\
The Euglena autoscaler: sizes the agent fleet from queue depth and running tasks.

USAGE:
    autoscaler local
        Runs agent child processes on this machine (AGENT_BIN), between MIN_WORKERS and
        MAX_WORKERS, re-deciding every AUTOSCALER_INTERVAL_SECONDS. Ctrl-C stops all of them.
    autoscaler simulate --trace trace.csv --out decisions.csv --chart chart.svg
                        [--slots N (AGENT_CONCURRENCY)] [--step SECONDS (10)] [--startup SECONDS (0)]
        Replays a demand trace (CSV: time_s,arrivals,task_duration_s) through the policy, each
        agent with N task slots; prints the agent-seconds the fleet ran.

The AWS Lambda runs the same policy from the `bootstrap` binary.
Policy: AGENT_CONCURRENCY (64, the slots per agent), TARGET_SLOT_UTILISATION (0.8), MIN_WORKERS (1),
MAX_WORKERS (11), SCALE_IN_WINDOW_SECONDS (300).
Local: AUTOSCALER_INTERVAL_SECONDS (10), AGENT_BIN (agent beside this binary, then PATH),
AGENT_DRAIN_SECONDS (90), and the agents' own variables (REDIS_URL, RABBITMQ_URL,
REDIS_CA_FILE, RABBITMQ_CA_FILE, ...),
which the children inherit. See the README's configuration table.";

fn fail(msg: &str) -> ! {
    eprintln!("autoscaler: {msg}; see --help");
    std::process::exit(2);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = cli_args("autoscaler", HELP);
    let env = Env::from_process();
    match args.first().map(String::as_str) {
        Some("local") if args.len() == 1 => {
            let settings = LocalSettings::from_env(&env).unwrap_or_else(|e| exit_on_config_error("autoscaler", &e));
            runtime::telemetry::init();
            let (view, _) = tokio::sync::watch::channel(Default::default());
            let ran = autoscaler::local::run(settings, view, runtime::shutdown::signal()).await;
            runtime::telemetry::shutdown();
            ran
        }
        Some("simulate") => simulate_cmd(&args[1..], &env),
        Some(other) => fail(&format!("unknown command or argument {other:?}")),
        None => fail("a command is required (local | simulate)"),
    }
}

fn simulate_cmd(args: &[String], env: &Env) -> anyhow::Result<()> {
    let policy = PolicySettings::from_env(env).unwrap_or_else(|e| exit_on_config_error("autoscaler", &e));
    let mut opts: std::collections::HashMap<&str, &str> = Default::default();
    for pair in args.chunks(2) {
        match pair {
            [k, v] if ["--trace", "--out", "--chart", "--slots", "--step", "--startup"].contains(&k.as_str()) => {
                opts.insert(k, v);
            }
            _ => fail(&format!("unexpected arguments {pair:?}")),
        }
    }
    let path = |k: &str| opts.get(k).map(PathBuf::from).unwrap_or_else(|| fail(&format!("{k} is required")));
    let secs = |k: &str, d: u64| {
        opts.get(k)
            .map_or(Ok(d), |v| v.parse())
            .unwrap_or_else(|_| fail(&format!("{k} must be a whole number of seconds")))
    };
    let mut bounds = policy.bounds;
    if let Some(v) = opts.get("--slots") {
        bounds.slots_per_agent =
            v.parse().ok().filter(|n| (1..=256).contains(n)).unwrap_or_else(|| fail("--slots must be 1..=256"));
    }
    let params = SimParams {
        bounds,
        window_s: policy.window.as_secs(),
        step_s: secs("--step", 10).max(1),
        startup_s: secs("--startup", 0),
    };
    let trace = simulate::read_trace(&path("--trace"))?;
    let rows = simulate::replay(&trace, &params);
    simulate::write_rows(&path("--out"), &rows)?;
    let b = params.bounds;
    let title = format!(
        "min {} max {} slots/agent {} at {} % window {} s step {} s",
        b.min,
        b.max,
        b.slots_per_agent,
        b.utilisation_permille / 10,
        params.window_s,
        params.step_s
    );
    simulate::chart::draw(&path("--chart"), &rows, &title)?;
    let peak = rows.iter().map(|r| r.current_workers).max().unwrap_or(0);
    // What the fleet ran (and is billed for): the agents present each step, starting or not.
    let agent_seconds: u64 = rows.iter().map(|r| u64::from(r.current_workers) * params.step_s).sum();
    let tasks: u64 = rows.iter().map(|r| u64::from(r.arrivals)).sum();
    eprintln!(
        "autoscaler: {} decisions, peak {peak} agents, {agent_seconds} agent-seconds for {tasks} tasks, last task done at {} s",
        rows.len(),
        rows.iter().rev().find(|r| r.in_flight > 0 || r.queue_depth > 0).map_or(0, |r| r.time_s + params.step_s)
    );
    Ok(())
}
