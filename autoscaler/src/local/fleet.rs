//! The local fleet: `agent` child processes, each with its own `AGENT_ID` and health port,
//! inheriting our environment. Stops are SIGTERM (the agent drains), escalated to SIGKILL
//! after the grace period; a child that exits on its own is reported so the loop replaces it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::config::LocalSettings;

pub struct Agent {
    pub id: String,
    pub pid: u32,
    child: Child,
    /// Set when we sent SIGTERM; the child is then no longer counted as capacity.
    stopping_since: Option<Instant>,
}

impl Agent {
    pub fn is_stopping(&self) -> bool {
        self.stopping_since.is_some()
    }
}

/// A child that exited; `expected` when we had asked it to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub id: String,
    pub expected: bool,
    pub status: String,
}

pub struct Fleet {
    bin: PathBuf,
    env: Vec<(String, String)>,
    log_dir: Option<PathBuf>,
    grace: Duration,
    id_base: String,
    seq: u64,
    agents: Vec<Agent>,
}

impl Fleet {
    pub fn new(settings: &LocalSettings) -> Self {
        Self {
            bin: settings.agent_bin.clone(),
            env: settings.child_env.clone(),
            log_dir: settings.child_log_dir.clone(),
            grace: settings.stop_grace,
            id_base: format!("local-{}", std::process::id()),
            seq: 0,
            agents: Vec::new(),
        }
    }

    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// Children that are not stopping: the fleet's capacity.
    pub fn active(&self) -> impl Iterator<Item = &Agent> {
        self.agents.iter().filter(|a| !a.is_stopping())
    }

    pub fn spawn(&mut self) -> std::io::Result<&Agent> {
        self.seq += 1;
        let id = format!("{}-{}", self.id_base, self.seq);
        // A port free a moment ago; the agent exits (and is replaced) if it lost the race.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let stderr = match &self.log_dir {
            Some(dir) => Stdio::from(std::fs::File::create(dir.join(format!("{id}.log")))?),
            None => Stdio::inherit(),
        };
        let child = Command::new(&self.bin)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("AGENT_ID", &id)
            .env("AGENT_HEALTH_ADDR", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Last resort when we are dropped without a clean stop.
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(agent_id = %id, pid, port, "agent started");
        self.agents.push(Agent { id, pid, child, stopping_since: None });
        Ok(self.agents.last().expect("just pushed"))
    }

    /// SIGTERM, through `kill(1)`: the workspace forbids the `unsafe` a direct syscall needs.
    pub async fn stop(&mut self, id: &str) {
        let Some(agent) = self.agents.iter_mut().find(|a| a.id == id && !a.is_stopping()) else { return };
        agent.stopping_since = Some(Instant::now());
        signal(agent.pid, "TERM").await;
        tracing::info!(agent_id = %agent.id, pid = agent.pid, "agent sent SIGTERM");
    }

    /// Removes exited children and SIGKILLs those past their grace period.
    pub async fn reap(&mut self) -> Vec<Exit> {
        let mut exits = Vec::new();
        let grace = self.grace;
        let mut i = 0;
        while i < self.agents.len() {
            let agent = &mut self.agents[i];
            match agent.child.try_wait() {
                Ok(Some(status)) => {
                    let exit = Exit { id: agent.id.clone(), expected: agent.is_stopping(), status: status.to_string() };
                    if exit.expected {
                        tracing::info!(agent_id = %exit.id, status = %exit.status, "agent stopped");
                    } else {
                        tracing::warn!(agent_id = %exit.id, status = %exit.status, "agent died unexpectedly");
                    }
                    exits.push(exit);
                    self.agents.swap_remove(i);
                    continue;
                }
                Ok(None) => {
                    if agent.stopping_since.is_some_and(|t| t.elapsed() > grace) {
                        tracing::warn!(agent_id = %agent.id, grace_s = grace.as_secs(), "agent did not drain in time; SIGKILL");
                        let _ = agent.child.start_kill();
                    }
                }
                Err(e) => tracing::warn!(agent_id = %agent.id, error = %e, "cannot poll agent"),
            }
            i += 1;
        }
        exits
    }

    /// SIGTERM to every child, then wait for all of them (SIGKILL after the grace period).
    pub async fn stop_all(&mut self) {
        let ids: Vec<String> = self.active().map(|a| a.id.clone()).collect();
        for id in ids {
            self.stop(&id).await;
        }
        while !self.agents.is_empty() {
            self.reap().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
    match tokio::time::timeout(Duration::from_secs(5), status).await {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => tracing::warn!(pid, sig, status = %s, "kill failed (already exited?)"),
        Ok(Err(e)) => tracing::warn!(pid, sig, error = %e, "cannot run kill"),
        Err(_) => tracing::warn!(pid, sig, "kill timed out"),
    }
}
