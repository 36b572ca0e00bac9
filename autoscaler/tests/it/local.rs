//! The local loop with real `agent` processes. The agent binary is the workspace's own
//! `target/<profile>/agent`, found beside this test executable (`cargo test --workspace`
//! builds it first); when it is missing the test builds it with `cargo build -p agent`,
//! and panics with that command if the build fails. `AGENT_BIN` overrides.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use autoscaler::config::LocalSettings;
use autoscaler::local::FleetView;
use proto::{TaskId, TaskStatus};
use runtime::config::Env;
use testkit::Harness;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{SOON, eventually};

fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("AGENT_BIN") {
            return PathBuf::from(bin);
        }
        // target/<profile>/deps/it-<hash> → target/<profile>/agent
        let exe = std::env::current_exe().expect("current exe");
        let bin = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("agent");
        if !bin.is_file() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let ok = Command::new(cargo)
                .args(["build", "-p", "agent", "--bin", "agent"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok && bin.is_file(), "no agent binary at {}; run `cargo build -p agent` first", bin.display());
        }
        bin
    })
    .clone()
}

struct Local {
    app: Harness,
    view: watch::Receiver<FleetView>,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    _logs: TempDir,
}

/// Per-test directory for the children's logs, removed at the end.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the loop for a fresh namespace: 1 s interval, the given bounds and window, and
/// agents with fast heartbeats and offline pacing (`think_ticks` of `tick_ms`), one slot each
/// at full utilisation, so each task needs an agent of its own and which agent is busy is
/// what these tests choose (the slot arithmetic has its own tests in the policy).
async fn start(min: u32, max: u32, window_s: u32, think_ticks: u32, tick_ms: u32) -> Local {
    let app = Harness::start(&[]).await;
    let mut child_env = app.ns.env();
    for (k, v) in [
        ("AGENT_HEARTBEAT_SECONDS", "1".to_owned()),
        ("AGENT_HEARTBEAT_TTL_SECONDS", "3".to_owned()),
        ("AGENT_DRAIN_SECONDS", "10".to_owned()),
        ("AGENT_CONCURRENCY", "1".to_owned()),
        ("OFFLINE_THINK_TICKS", think_ticks.to_string()),
        ("OFFLINE_TICK_DELAY_MS", tick_ms.to_string()),
        ("RUST_LOG", "info".to_owned()),
    ] {
        child_env.push((k.to_owned(), v));
    }
    let env = Env::from_pairs(child_env.clone())
        .with("MIN_WORKERS", min.to_string())
        .with("MAX_WORKERS", max.to_string())
        .with("SCALE_IN_WINDOW_SECONDS", window_s.to_string())
        .with("TARGET_SLOT_UTILISATION", "1")
        .with("AUTOSCALER_INTERVAL_SECONDS", "1")
        .with("AGENT_BIN", agent_bin().display().to_string());
    let logs = std::env::temp_dir().join(format!("euglena-local-{}", app.ns.queue));
    std::fs::create_dir_all(&logs).expect("log dir");
    let mut settings = LocalSettings::from_env(&env).expect("settings");
    settings.child_env = child_env;
    settings.child_log_dir = Some(logs.clone());
    let (tx, view) = watch::channel(FleetView::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(autoscaler::local::run(settings, tx, stop.clone().cancelled_owned()));
    Local { app, view, stop, task, _logs: TempDir(logs) }
}

impl Local {
    fn agents(&self) -> Vec<(String, u32)> {
        self.view.borrow().agents.clone()
    }

    async fn wait_agents(&self, n: usize) {
        let view = self.view.clone();
        eventually(&format!("{n} agents"), SOON, || {
            let v = view.clone();
            async move { v.borrow().agents.len() == n }
        })
        .await;
    }

    async fn publish_task(&self, max_ticks: u32) -> TaskId {
        let id = TaskId::new();
        let body = format!(r#"{{"correlation_id":"{id}","mandate":"local loop test","max_ticks":{max_ticks}}}"#);
        self.app.publish_raw(body.as_bytes(), Some(&id.to_string())).await;
        id
    }

    /// Ctrl-C equivalent: every child stopped, the loop returned.
    async fn shutdown(self) {
        let pids: Vec<u32> = self.agents().iter().map(|(_, pid)| *pid).collect();
        self.stop.cancel();
        tokio::time::timeout(SOON, self.task).await.expect("loop stops").expect("join").expect("loop ok");
        for pid in pids {
            let alive = Command::new("kill")
                .args(["-0", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(!alive, "agent {pid} still running after shutdown");
        }
        self.app.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_scales_up_to_max_completes_and_returns_to_min() {
    let local = start(1, 3, 3, 3, 200).await;
    local.wait_agents(1).await;
    let ids: Vec<TaskId> = futures_join(&local, 9, 4).await;
    // Watch the fleet while the burst runs: it must reach max and never pass it.
    let mut seen_max = 0;
    let mut view = local.view.clone();
    let deadline = tokio::time::Instant::now() + SOON;
    while seen_max < 3 {
        assert!(tokio::time::Instant::now() < deadline, "never scaled to 3 (saw {seen_max})");
        let _ = tokio::time::timeout(Duration::from_millis(500), view.changed()).await;
        seen_max = seen_max.max(view.borrow().agents.len());
    }
    for id in ids {
        let rec = local.app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
        assert_eq!(rec.status, TaskStatus::Completed, "{rec:?}");
    }
    local.wait_agents(1).await;
    let v = local.view.borrow().clone();
    assert_eq!(v.desired, 1);
    assert!(v.agents.len() <= 3 && v.stops.len() >= 2, "{v:?}");
    assert!(v.stops.iter().all(|(_, state)| state == "idle"), "{v:?}");
    local.shutdown().await;
}

async fn futures_join(local: &Local, n: usize, max_ticks: u32) -> Vec<TaskId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(local.publish_task(max_ticks).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_sends_sigterm_to_the_idle_agent_not_the_busy_one() {
    // Long thinking: a task's length is its max_ticks (200 ms each).
    let local = start(1, 2, 3, 1000, 200).await;
    local.wait_agents(1).await;
    let long = local.publish_task(60).await;
    let running = local.app.wait_for(long, SOON, |r| r.status == TaskStatus::InProgress).await;
    let busy_agent = running.worker_id.clone().expect("worker id");
    let short = local.publish_task(1).await;
    local.wait_agents(2).await;
    let rec = local.app.wait_for(short, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed);
    // Demand is back to the one long task: after the window, the idle agent goes.
    let view = local.view.clone();
    eventually("one agent stopped", SOON, || {
        let v = view.clone();
        async move { !v.borrow().stops.is_empty() }
    })
    .await;
    let stops = local.view.borrow().stops.clone();
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert_ne!(stops[0].0, busy_agent, "the busy agent was chosen for scale-in");
    assert_eq!(stops[0].1, "idle");
    assert!(local.agents().iter().any(|(id, _)| *id == busy_agent));
    // The long task was never interrupted: it finishes on its first delivery.
    let done = local.app.wait_for(long, SOON, |r| r.status.is_terminal()).await;
    assert_eq!((done.status, done.attempt), (TaskStatus::Completed, 1), "{done:?}");
    assert_eq!(done.worker_id.as_deref(), Some(busy_agent.as_str()));
    local.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_is_replaced() {
    let local = start(2, 2, 3, 1, 50).await;
    local.wait_agents(2).await;
    let (victim, pid) = local.agents()[0].clone();
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill").success());
    let view = local.view.clone();
    let gone = victim.clone();
    eventually("the dead agent replaced", SOON, || {
        let v = view.clone();
        let gone = gone.clone();
        async move {
            let v = v.borrow();
            v.replaced >= 1 && v.agents.len() == 2 && v.agents.iter().all(|(id, _)| *id != gone)
        }
    })
    .await;
    // The replacement does real work.
    let id = local.publish_task(2).await;
    let rec = local.app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed);
    local.shutdown().await;
}
