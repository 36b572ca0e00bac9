//! Sidecar settings, parsed in full from the environment before anything connects.

use std::net::SocketAddr;
use std::time::Duration;

use proto::metric_names::DEFAULT_NAMESPACE;
use runtime::config::{ConfigError, Env};
use runtime::settings::CommonSettings;

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub addr: SocketAddr,
    pub interval: Duration,
    pub namespace: String,
    /// `false` forces log-only mode even when AWS credentials exist.
    pub cloudwatch_enabled: bool,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let namespace = env.string("CLOUDWATCH_NAMESPACE", DEFAULT_NAMESPACE);
        // CloudWatch's own limits: 1..=255 characters, and no namespace starting with "AWS/".
        if namespace.len() > 255 || namespace.starts_with("AWS/") {
            return Err(ConfigError::new("CLOUDWATCH_NAMESPACE", "must be at most 255 characters, not AWS/…"));
        }
        Ok(Self {
            common: CommonSettings::from_env(env)?,
            addr: env.parse("METRICS_SIDECAR_ADDR", SocketAddr::from(([0, 0, 0, 0], 8082)))?,
            interval: Duration::from_secs(env.ranged("METRICS_INTERVAL_SECONDS", 10, 1..=3600)?),
            namespace,
            cloudwatch_enabled: env.bool("CLOUDWATCH_ENABLED", true)?,
        })
    }
}

pub const HELP: &str = "\
The Euglena metrics sidecar: every METRICS_INTERVAL_SECONDS reads the input queue's ready
and consumer counts, its dead-letter queue's depth, and the live/busy agents, running
tasks and slots from Redis, and publishes them to CloudWatch in one PutMetricData call
(namespace CLOUDWATCH_NAMESPACE, dimension QueueName): QueueDepth, InFlight, Workers,
BusyWorkers, BusySlots, TotalSlots, DeadLetterDepth. Serves /health and /metrics on METRICS_SIDECAR_ADDR.

USAGE:
    metrics-sidecar
    metrics-sidecar healthcheck   GET /health on METRICS_SIDECAR_ADDR (loopback if 0.0.0.0/::); exit 0 on 200, else 1

Without AWS credentials, or with CLOUDWATCH_ENABLED=false, it runs in log-only mode.
Configuration (environment; defaults in parentheses):
  METRICS_INTERVAL_SECONDS (10), CLOUDWATCH_NAMESPACE (Euglena/RabbitMQ),
  CLOUDWATCH_ENABLED (true), METRICS_SIDECAR_ADDR (0.0.0.0:8082), AWS_REGION,
  AWS_ENDPOINT_URL (e.g. a local moto_server), REDIS_URL, RABBITMQ_URL (rediss:// / amqps://
  for TLS), REDIS_CA_FILE, RABBITMQ_CA_FILE, REDIS_KEY_PREFIX,
  AGENT_INPUT_QUEUE (agent.mandates), AGENT_HEARTBEAT_TTL_SECONDS (30), LOG_FORMAT, RUST_LOG.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let s = Settings::from_env(&Env::default()).expect("defaults");
        assert_eq!(s.interval, Duration::from_secs(10));
        assert_eq!(s.namespace, "Euglena/RabbitMQ");
        assert_eq!(s.addr.port(), 8082);
        assert!(s.cloudwatch_enabled);
        let bad = Env::default().with("METRICS_INTERVAL_SECONDS", "0");
        assert_eq!(Settings::from_env(&bad).unwrap_err().var, "METRICS_INTERVAL_SECONDS");
        let bad = Env::default().with("CLOUDWATCH_ENABLED", "perhaps");
        assert_eq!(Settings::from_env(&bad).unwrap_err().var, "CLOUDWATCH_ENABLED");
        let bad = Env::default().with("CLOUDWATCH_NAMESPACE", "AWS/ECS");
        assert_eq!(Settings::from_env(&bad).unwrap_err().var, "CLOUDWATCH_NAMESPACE");
    }
}
