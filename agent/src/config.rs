//! Agent settings, parsed in full from the environment before anything connects.

use std::net::SocketAddr;
use std::time::Duration;

use runtime::config::{ConfigError, Env};
use runtime::settings::CommonSettings;

use crate::memory::MemorySettings;
use crate::model::offline::OfflineSettings;
use crate::model::openai::LlmSettings;
use crate::protection::ProtectionSettings;
use crate::tools::search::SearchSettings;
use crate::tools::visit::VisitSettings;

/// `AGENT_CONCURRENCY` when unset: tasks (slots) one agent runs at once. Chosen from
/// scripts/bench-density.sh (ARCHITECTURE §9 "agent density"); the autoscaler's default is
/// the same number, so the fleet is sized in the slots the agents really have.
pub const DEFAULT_CONCURRENCY: u16 = 64;

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
    /// `None`: no `OPENAI_API_KEY` or `OPENAI_BASE_URL`, so the offline demo model runs.
    pub llm: Option<LlmSettings>,
    pub search: SearchSettings,
    pub visit: VisitSettings,
    pub memory: MemorySettings,
    /// `None`: no `ECS_AGENT_URI` (not on ECS), so no scale-in protection.
    pub protection: Option<ProtectionSettings>,
    /// `MCP_SERVERS` / `MCP_SERVERS_FILE`: the tool servers tasks may choose from.
    pub mcp: runtime::mcp::McpServers,
    /// `MCP_CALL_TIMEOUT_SECONDS`, `MCP_RESULT_MAX_CHARS`.
    pub mcp_limits: runtime::mcp::McpLimits,
    /// `APPROVAL_TIMEOUT_SECONDS`: a parked call not decided by then is denied as expired.
    pub approval_timeout: Duration,
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
        let worker_id = env.opt_string("AGENT_ID").unwrap_or_else(default_worker_id);
        if worker_id.len() > 128 || worker_id.contains(char::is_whitespace) {
            return Err(ConfigError::new("AGENT_ID", "must be at most 128 characters without spaces"));
        }
        Ok(Self {
            common,
            health_addr: env.parse("AGENT_HEALTH_ADDR", SocketAddr::from(([0, 0, 0, 0], 8081)))?,
            worker_id,
            concurrency: env.ranged("AGENT_CONCURRENCY", DEFAULT_CONCURRENCY, 1..=256)?,
            heartbeat_interval,
            task_timeout: env.seconds("TASK_TIMEOUT_SECONDS", 900)?,
            drain: Duration::from_secs(env.ranged("AGENT_DRAIN_SECONDS", 90, 0..=3600)?),
            offline: OfflineSettings::from_env(env)?,
            llm: LlmSettings::from_env(env)?,
            search: SearchSettings::from_env(env)?,
            visit: VisitSettings::from_env(env)?,
            memory: MemorySettings::from_env(env)?,
            protection: ProtectionSettings::from_env(env)?,
            mcp: runtime::mcp::McpServers::from_env(env)?,
            mcp_limits: runtime::mcp::McpLimits {
                call: env.seconds("MCP_CALL_TIMEOUT_SECONDS", 30)?,
                result_chars: env.ranged("MCP_RESULT_MAX_CHARS", 8000, 100..=100_000)?,
                ..runtime::mcp::McpLimits::default()
            },
            approval_timeout: Duration::from_secs(env.ranged("APPROVAL_TIMEOUT_SECONDS", 3600, 1..=30 * 86_400)?),
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
loop (model, search and visit tools, memory), writes progress and results to Redis, and
heartbeats its presence.

USAGE:
    agent
    agent healthcheck   GET /health on AGENT_HEALTH_ADDR (loopback if 0.0.0.0/::); exit 0 on 200, else 1

MODEL: with OPENAI_API_KEY and/or OPENAI_BASE_URL set, any OpenAI-compatible API
(OpenAI, Ollama, vLLM, llama.cpp). Without either, the OFFLINE DEMO MODEL: a deterministic
planner that visits the http(s) URLs in the mandate, thinks for OFFLINE_THINK_TICKS ticks
and exits with the pages' titles and first paragraphs. It never searches or reasons.

Configuration is read from the environment; see the README's configuration table.
REDIS_URL, RABBITMQ_URL (rediss:// / amqps:// for TLS), REDIS_CA_FILE, RABBITMQ_CA_FILE,
REDIS_KEY_PREFIX, AGENT_INPUT_QUEUE, AGENT_HEALTH_ADDR (0.0.0.0:8081),
AGENT_ID, AGENT_CONCURRENCY (64), AGENT_MAX_DELIVERIES (5), AGENT_HEARTBEAT_SECONDS (10),
AGENT_HEARTBEAT_TTL_SECONDS (30), TASK_TIMEOUT_SECONDS (900), AGENT_DRAIN_SECONDS (90),
TASK_RECORD_TTL_SECONDS, OFFLINE_THINK_TICKS (3), OFFLINE_TICK_DELAY_MS (1000),
OPENAI_API_KEY, OPENAI_BASE_URL (https://api.openai.com/v1), LLM_MODEL (gpt-4o-mini),
EMBEDDING_MODEL (text-embedding-3-small; 'local' = local embedding), LLM_TIMEOUT_SECONDS (60),
LLM_MAX_RETRIES (4), LLM_RESPONSE_FORMAT (json_schema|json_object|none), LLM_TEMPERATURE,
SEARCH_PROVIDER (none|brave|tavily|searxng), SEARCH_API_KEY, SEARCH_BASE_URL,
SEARCH_MAX_RESULTS (5), SEARCH_TIMEOUT_SECONDS (15), VISIT_MAX_BYTES (2097152),
VISIT_TIMEOUT_SECONDS (15), VISIT_ALLOW_PRIVATE (false), QDRANT_URL, QDRANT_API_KEY,
QDRANT_COLLECTION (euglena_memories), MEMORY_TOP_K (6), MEMORY_RETENTION_SECONDS (0 = delete
at task end), ECS_AGENT_URI (set by ECS; unset = no scale-in protection),
ECS_PROTECTION_MINUTES (60), ECS_PROTECTION_RENEW_SECONDS (half the expiry), LOG_FORMAT, RUST_LOG.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let s = Settings::from_env(&Env::default()).expect("defaults are valid");
        assert_eq!(s.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(s.drain, Duration::from_secs(90));
        assert_eq!(s.task_timeout, Duration::from_secs(900));
        let bad = Env::default().with("AGENT_HEARTBEAT_SECONDS", "30");
        assert_eq!(Settings::from_env(&bad).unwrap_err().var, "AGENT_HEARTBEAT_SECONDS");
        let bad = Env::default().with("AGENT_CONCURRENCY", "0");
        assert_eq!(Settings::from_env(&bad).unwrap_err().var, "AGENT_CONCURRENCY");
        assert!(s.llm.is_none(), "offline without a key");
        let key = Env::default().with("OPENAI_API_KEY", "sk-test");
        assert_eq!(
            Settings::from_env(&key).expect("a key selects the API model").llm.expect("llm").model,
            "gpt-4o-mini"
        );
        let bad = Env::default().with("VISIT_ALLOW_PRIVATE", "maybe");
        assert_eq!(Settings::from_env(&bad).unwrap_err().var, "VISIT_ALLOW_PRIVATE");
        assert!(s.protection.is_none(), "no scale-in protection off ECS");
        let bad = Env::default().with("ECS_PROTECTION_RENEW_SECONDS", "3600");
        assert_eq!(Settings::from_env(&bad).unwrap_err().var, "ECS_PROTECTION_RENEW_SECONDS");
    }
}
