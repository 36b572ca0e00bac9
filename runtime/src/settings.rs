//! The settings every process shares, read from the environment: where Redis and RabbitMQ
//! are, the key prefix, the queue, and the timeouts every service applies.

use std::time::Duration;

use crate::config::{ConfigError, Env};
use crate::connect::Endpoint;

/// Settings every process shares: where Redis and RabbitMQ are, key prefix, queue name.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    /// `REDIS_URL` and `REDIS_CA_FILE`.
    pub redis: Endpoint,
    /// `RABBITMQ_URL` and `RABBITMQ_CA_FILE`.
    pub rabbitmq: Endpoint,
    pub key_prefix: String,
    pub input_queue: String,
    pub max_deliveries: u32,
    pub heartbeat_ttl: Duration,
    pub task_record_ttl: Duration,
    /// `HTTP_HEADER_TIMEOUT_SECONDS`: every listener closes a connection that has not sent
    /// complete request headers (or sat idle between requests) this long.
    pub http_header_timeout: Duration,
}

impl CommonSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let input_queue = env.string("AGENT_INPUT_QUEUE", "agent.mandates");
        if input_queue.len() > 200 {
            return Err(ConfigError::new("AGENT_INPUT_QUEUE", "longer than 200 bytes"));
        }
        Ok(Self {
            redis: Endpoint::configured(
                env.string("REDIS_URL", "redis://127.0.0.1:6379"),
                "REDIS_URL",
                env.opt_string("REDIS_CA_FILE"),
                "REDIS_CA_FILE",
            )?,
            rabbitmq: Endpoint::configured(
                env.string("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
                "RABBITMQ_URL",
                env.opt_string("RABBITMQ_CA_FILE"),
                "RABBITMQ_CA_FILE",
            )?,
            key_prefix: env.string("REDIS_KEY_PREFIX", ""),
            input_queue,
            max_deliveries: env.ranged("AGENT_MAX_DELIVERIES", 5, 1..=1000)?,
            heartbeat_ttl: env.seconds("AGENT_HEARTBEAT_TTL_SECONDS", 30)?,
            task_record_ttl: env.seconds("TASK_RECORD_TTL_SECONDS", 7 * 24 * 3600)?,
            http_header_timeout: Duration::from_secs(env.ranged("HTTP_HEADER_TIMEOUT_SECONDS", 10, 1..=3600)?),
        })
    }
}
