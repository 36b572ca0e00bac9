//! The gateway and agent binaries as child processes of a test, each on free ports of a
//! test's namespace and logging to a file of its own.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Namespace, eventually, free_port};

/// An agent child process with its own health port.
pub struct AgentProc {
    pub id: String,
    pub health: SocketAddr,
    child: Child,
    pub log: PathBuf,
}

impl AgentProc {
    pub fn spawn(bin: impl AsRef<OsStr>, ns: &Namespace, id: &str, extra: &[(&str, &str)]) -> Self {
        let health = free_port();
        let log = std::env::temp_dir().join(format!("euglena-{}-{id}.log", ns.queue));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .envs(ns.env())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AGENT_ID", id)
            .env("AGENT_HEALTH_ADDR", health.to_string())
            .env("AGENT_HEARTBEAT_SECONDS", "1")
            .env("AGENT_HEARTBEAT_TTL_SECONDS", "3")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn agent");
        Self { id: id.to_owned(), health, child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no deregistration.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process has ended (killed or exited).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn sigterm(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
    }

    /// Waits for the process to exit; `None` if it is still running after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A gateway child process on a free port of this namespace, for tests that `kill -9` it
/// (an in-process gateway cannot die that way: its spawned tasks would live on) and for the
/// chaos suite.
pub struct GatewayProc {
    pub addr: SocketAddr,
    child: Child,
    pub log: PathBuf,
}

impl GatewayProc {
    /// Starts `bin` (`env!("CARGO_BIN_EXE_gateway")`, or a built binary's path) with the
    /// namespace's settings plus `extra`, and waits until it serves `/health`.
    pub async fn spawn(bin: impl AsRef<OsStr>, ns: &Namespace, extra: &[(&str, &str)]) -> Self {
        let addr = free_port();
        let log = std::env::temp_dir().join(format!("euglena-{}-gateway-{}.log", ns.queue, addr.port()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .envs(ns.env())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GATEWAY_ADDR", addr.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn gateway");
        let gw = Self { addr, child, log };
        let url = format!("http://{addr}/health");
        eventually("gateway process serving", Duration::from_secs(30), || async {
            matches!(reqwest::get(&url).await, Ok(r) if r.status() == 200)
        })
        .await;
        gw
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: nothing of its in-flight work survives but what is in Redis.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        self.kill();
        remove_log(&self.log);
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
        remove_log(&self.log);
    }
}

/// A process's log goes with it, unless `CHAOS_KEEP_LOGS` is set (to read after a run).
fn remove_log(log: &Path) {
    if std::env::var_os("CHAOS_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_file(log);
    }
}
