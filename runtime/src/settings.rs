//! The settings every process shares, read from the environment: where Redis and RabbitMQ
//! are, the key prefix, the queue, and the timeouts every service applies.

use std::time::Duration;

use crate::config::{ConfigError, Env};
use crate::connect::Endpoint;
use crate::sentinel::Sentinels;

/// Settings every process shares: where Redis and RabbitMQ are, key prefix, queue name.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    /// `REDIS_URL` and `REDIS_CA_FILE`, and `REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`,
    /// `REDIS_SENTINEL_PASSWORD` when a Sentinel deployment names the primary.
    pub redis: Endpoint,
    /// `RABBITMQ_URL` (one URL, or a cluster's nodes comma-separated) and `RABBITMQ_CA_FILE`.
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
            redis: redis_endpoint(env)?,
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

/// `REDIS_URL` names one server (its credentials, database and, for `rediss://`, the name
/// TLS verifies); with `REDIS_SENTINELS` the sentinels say which node that is right now.
fn redis_endpoint(env: &Env) -> Result<Endpoint, ConfigError> {
    let endpoint = Endpoint::configured(
        env.string("REDIS_URL", "redis://127.0.0.1:6379"),
        "REDIS_URL",
        env.opt_string("REDIS_CA_FILE"),
        "REDIS_CA_FILE",
    )?;
    if endpoint.urls().len() > 1 {
        return Err(ConfigError::new(
            "REDIS_URL",
            "names one server; for failover list the sentinels in REDIS_SENTINELS",
        ));
    }
    let Some(list) = env.opt_string("REDIS_SENTINELS").filter(|s| !s.trim().is_empty()) else {
        for var in ["REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD"] {
            if env.opt_string(var).is_some() {
                return Err(ConfigError::new(var, "is set but REDIS_SENTINELS is not"));
            }
        }
        return Ok(endpoint);
    };
    let addrs = parse_sentinels(&list).map_err(|m| ConfigError::new("REDIS_SENTINELS", m))?;
    let Some(master) = env.opt_string("REDIS_SENTINEL_MASTER").filter(|m| !m.trim().is_empty()) else {
        return Err(ConfigError::new(
            "REDIS_SENTINEL_MASTER",
            "is required with REDIS_SENTINELS (the monitored master's name)",
        ));
    };
    Ok(endpoint.with_sentinels(Sentinels::new(
        addrs,
        master.trim().to_owned(),
        env.opt_string("REDIS_SENTINEL_PASSWORD"),
    )))
}

/// `host:port,host:port`: each entry needs a host and a port.
pub fn parse_sentinels(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((host, port)) = entry.rsplit_once(':') else {
            return Err(format!("{entry:?} is not host:port"));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{entry:?} is not host:port"));
        }
        out.push(entry.to_owned());
    }
    if out.is_empty() {
        return Err("lists no sentinel".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<CommonSettings, ConfigError> {
        CommonSettings::from_env(&Env::from_pairs(pairs.iter().map(|(k, v)| (*k, *v))))
    }

    #[test]
    fn rabbitmq_url_takes_a_list_of_nodes() {
        let s = settings(&[("RABBITMQ_URL", "amqp://g:g@a:5672/%2f, amqp://g:g@b:5673/%2f")]).expect("settings");
        assert_eq!(s.rabbitmq.urls().len(), 2);
        assert_eq!(s.rabbitmq.host_port(), "a:5672,b:5673");
        let mixed = settings(&[("RABBITMQ_URL", "amqp://a,amqps://b")]).unwrap_err();
        assert_eq!(mixed.var, "RABBITMQ_URL");
    }

    #[test]
    fn sentinels_need_a_master_name_and_host_port_entries() {
        let s = settings(&[("REDIS_SENTINELS", "10.0.0.1:26379, s2:26380"), ("REDIS_SENTINEL_MASTER", "main")])
            .expect("settings");
        let sentinels = s.redis.sentinels().expect("sentinels");
        assert_eq!(sentinels.addrs(), ["10.0.0.1:26379", "s2:26380"]);
        assert_eq!(sentinels.master(), "main");
        assert_eq!(settings(&[("REDIS_SENTINELS", "s1:26379")]).unwrap_err().var, "REDIS_SENTINEL_MASTER");
        assert_eq!(settings(&[("REDIS_SENTINEL_MASTER", "main")]).unwrap_err().var, "REDIS_SENTINEL_MASTER");
        for bad in ["s1", "s1:0", ":26379", "s1:x", ","] {
            let e = settings(&[("REDIS_SENTINELS", bad), ("REDIS_SENTINEL_MASTER", "m")]).unwrap_err();
            assert_eq!(e.var, "REDIS_SENTINELS", "{bad}");
        }
        assert_eq!(settings(&[("REDIS_URL", "redis://a,redis://b")]).unwrap_err().var, "REDIS_URL");
        let debug = format!(
            "{:?}",
            settings(&[
                ("REDIS_SENTINELS", "s:1"),
                ("REDIS_SENTINEL_MASTER", "m"),
                ("REDIS_SENTINEL_PASSWORD", "hunter2")
            ])
            .expect("settings")
        );
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
