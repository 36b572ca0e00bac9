//! Agent settings, parsed in full from the environment before anything connects.

use std::net::SocketAddr;
use std::time::Duration;

use proto::config::{CommonSettings, ConfigError, Env};

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub health_addr: SocketAddr,
    pub worker_id: String,
    pub concurrency: u16,
    pub heartbeat_interval: Duration,
    pub task_timeout: Duration,
    pub drain: Duration,
    pub offline: OfflineSettings,
}

/// Pacing of the offline demo model (see [`crate::model::offline`]).
#[derive(Debug, Clone)]
pub struct OfflineSettings {
    pub think_ticks: u32,
    pub tick_delay: Duration,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let common = CommonSettings::from_env(env)?;
        let heartbeat_interval = env.seconds("AGENT_HEARTBEAT_SECONDS", 10)?;
        if heartbeat_interval >= common.heartbeat_ttl {
            return Err(ConfigError::new(
                "AGENT_HEARTBEAT_SECONDS",
                "must be shorter than AGENT_HEARTBEAT_TTL_SECONDS",
            ));
        }
        if env.raw("OPENAI_API_KEY").is_some() {
            // Refusing is better than silently running the demo model for a user who
            // configured a real one: the LLM client arrives with the agent-intelligence work.
            return Err(ConfigError::new("OPENAI_API_KEY", "is set, but this build only has the offline demo model"));
        }
        let worker_id = env.opt_string("AGENT_ID").unwrap_or_else(default_worker_id);
        if worker_id.len() > 128 || worker_id.contains(char::is_whitespace) {
            return Err(ConfigError::new("AGENT_ID", "must be at most 128 characters without spaces"));
        }
        Ok(Self {
            common,
            health_addr: env.parse("AGENT_HEALTH_ADDR", SocketAddr::from(([0, 0, 0, 0], 8081)))?,
            worker_id,
            concurrency: env.ranged("AGENT_CONCURRENCY", 1, 1..=256)?,
            heartbeat_interval,
            task_timeout: env.seconds("TASK_TIMEOUT_SECONDS", 900)?,
            drain: Duration::from_secs(env.ranged("AGENT_DRAIN_SECONDS", 90, 0..=3600)?),
            offline: OfflineSettings {
                think_ticks: env.ranged("OFFLINE_THINK_TICKS", 3, 0..=10_000)?,
                tick_delay: Duration::from_millis(env.ranged("OFFLINE_TICK_DELAY_MS", 1000, 0..=600_000)?),
            },
        })
    }
}

fn default_worker_id() -> String {
    let host = hostname();
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "agent".to_owned())
}

pub const HELP: &str = "\
The Euglena agent worker: consumes task envelopes from RabbitMQ, runs each task's tick
loop, writes progress and results to Redis, and heartbeats its presence.

USAGE:
    agent

This build runs the OFFLINE DEMO MODEL: a deterministic planner that thinks for
OFFLINE_THINK_TICKS ticks (OFFLINE_TICK_DELAY_MS apart) and exits with a summary. It
calls no LLM, search engine or web page.

Configuration is read from the environment; see the README's configuration table.
REDIS_URL, RABBITMQ_URL, REDIS_KEY_PREFIX, AGENT_INPUT_QUEUE, AGENT_HEALTH_ADDR (0.0.0.0:8081),
AGENT_ID, AGENT_CONCURRENCY (1), AGENT_MAX_DELIVERIES (5), AGENT_HEARTBEAT_SECONDS (10),
AGENT_HEARTBEAT_TTL_SECONDS (30), TASK_TIMEOUT_SECONDS (900), AGENT_DRAIN_SECONDS (90),
TASK_RECORD_TTL_SECONDS, OFFLINE_THINK_TICKS (3), OFFLINE_TICK_DELAY_MS (1000), LOG_FORMAT, RUST_LOG.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let s = Settings::from_env(&Env::default()).expect("defaults are valid");
        assert_eq!(s.concurrency, 1);
        assert_eq!(s.drain, Duration::from_secs(90));
        assert_eq!(s.task_timeout, Duration::from_secs(900));
        let bad = Env::default().with("AGENT_HEARTBEAT_SECONDS", "30");
        assert_eq!(Settings::from_env(&bad).unwrap_err().var, "AGENT_HEARTBEAT_SECONDS");
        let bad = Env::default().with("AGENT_CONCURRENCY", "0");
        assert_eq!(Settings::from_env(&bad).unwrap_err().var, "AGENT_CONCURRENCY");
        let key = Env::default().with("OPENAI_API_KEY", "sk-test");
        assert_eq!(Settings::from_env(&key).unwrap_err().var, "OPENAI_API_KEY");
    }
}
