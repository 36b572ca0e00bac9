//! Per-test names on the shared Redis and RabbitMQ: a key prefix and a queue, and the purge
//! that removes them. Depends on `proto` alone: `proto`'s own store tests compile this file
//! in (`#[path]`), since a dependency on this crate, which depends on the gateway, would be a
//! cycle.

use std::time::Duration;

use proto::topology::Topology;
use redis::AsyncCommands;
use runtime::connect::Endpoint;

pub const SECRET: &str = "testkit-secret-testkit-secret-testkit-0123";

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn rabbitmq_url() -> String {
    std::env::var("RABBITMQ_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The Redis and RabbitMQ a test talks to.
#[derive(Debug, Clone)]
pub struct Services {
    pub redis: Endpoint,
    pub rabbitmq: Endpoint,
}

impl Services {
    /// The machine's shared Redis and RabbitMQ.
    pub fn shared() -> Self {
        Self { redis: Endpoint::new(redis_url()), rabbitmq: Endpoint::new(rabbitmq_url()) }
    }

    /// `REDIS_URL`, `RABBITMQ_URL` and, where set, their `*_CA_FILE` and the sentinels.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("REDIS_URL".to_owned(), self.redis.url().to_owned()),
            ("RABBITMQ_URL".to_owned(), self.rabbitmq.url().to_owned()),
        ];
        for (var, endpoint) in [("REDIS_CA_FILE", &self.redis), ("RABBITMQ_CA_FILE", &self.rabbitmq)] {
            if let Some(ca) = endpoint.ca() {
                env.push((var.to_owned(), ca.path().display().to_string()));
            }
        }
        if let Some(sentinels) = self.redis.sentinels() {
            env.push(("REDIS_SENTINELS".to_owned(), sentinels.list()));
            env.push(("REDIS_SENTINEL_MASTER".to_owned(), sentinels.master().to_owned()));
        }
        env
    }
}

/// Per-test names: a key prefix and an input queue (which brings its own DLX and DLQ).
#[derive(Debug, Clone)]
pub struct Namespace {
    pub prefix: String,
    pub queue: String,
    pub services: Services,
}

impl Namespace {
    pub fn new() -> Self {
        Self::on(Services::shared())
    }

    /// A namespace on other servers than the shared ones.
    pub fn on(services: Services) -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Self { prefix: format!("test:{tag}:"), queue: format!("test.{tag}"), services }
    }

    /// The environment every process of this test shares.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.services.env();
        env.extend(
            [
                ("REDIS_KEY_PREFIX", self.prefix.clone()),
                ("AGENT_INPUT_QUEUE", self.queue.clone()),
                ("SUPABASE_JWT_SECRET", SECRET.to_owned()),
                // Leftovers of a crashed test run expire on their own.
                ("TASK_RECORD_TTL_SECONDS", "900".to_owned()),
                // Tests submit in bursts; the ones about admission limits set these themselves.
                ("SUBMIT_RATE_PER_MINUTE", "0".to_owned()),
                ("MAX_ACTIVE_TASKS_PER_USER", "0".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
        );
        env
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new()
    }
}

/// Deletes every key under `prefix`.
pub async fn purge_keys(redis: &Endpoint, prefix: &str) {
    let Ok(client) = runtime::connect::redis_client(redis) else { return };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return };
    let mut keys = Vec::new();
    if let Ok(mut iter) = conn.scan_match::<_, String>(format!("{prefix}*")).await {
        while let Some(Ok(k)) = futures_util::StreamExt::next(&mut iter).await {
            keys.push(k);
        }
    }
    if !keys.is_empty() {
        let _: redis::RedisResult<i64> = conn.del(keys).await;
    }
}

/// How long a cleanup may take: a broker call that never answers (a queue delete hung once,
/// holding a whole CI run) must cost a test this much and a warning, not the suite.
const PURGE_LIMIT: Duration = Duration::from_secs(30);

/// Deletes every key under the prefix and the namespace's queues and exchange.
pub async fn purge(ns: &Namespace) {
    let work = async {
        purge_keys(&ns.services.redis, &ns.prefix).await;
        if let Ok(conn) = runtime::connect::amqp(&ns.services.rabbitmq, "testkit-purge").await {
            if let Ok(ch) = conn.create_channel().await {
                let _ = Topology::new(ns.queue.clone(), 1).delete(&ch).await;
            }
            let _ = conn.close(200, "purged".into()).await;
        }
    };
    if tokio::time::timeout(PURGE_LIMIT, work).await.is_err() {
        eprintln!("testkit: cleanup of {} did not finish within {PURGE_LIMIT:?}; leaving it", ns.prefix);
    }
}
