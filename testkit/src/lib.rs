//! The integration-test harness. Each [`Harness`] gets its own Redis key prefix and queue
//! name, so tests run in parallel against the one local Redis and RabbitMQ, and removes
//! its keys and queues when dropped (even when the test panicked).
//!
//! Talks to the real services at `REDIS_URL` / `RABBITMQ_URL` (defaults: localhost), or to
//! the [`Services`] a test passes (e.g. private TLS servers from [`tls`], or a private Redis,
//! RabbitMQ node or freezable proxy from [`private`]).
//!
//! # Layout
//! - `namespace`: per-test key prefixes, queue names and settings ([`Namespace`]), and the
//!   purge (also compiled into `proto`'s store tests).
//! - [`Harness`] (here): an in-process gateway stopped through a trigger, as SIGTERM
//!   stops the binary, with typed helpers (`submit`, `take_over`, `record`, ...).
//! - `processes`: [`GatewayProc`] and [`AgentProc`], the binaries as child processes.
//! - [`private`], [`tls`]: private Redis and RabbitMQ servers, plain or TLS.
//! - [`cluster`]: a private RabbitMQ cluster, Redis with Sentinels, HAProxy.
//! - [`otlp`]: a test OTLP/HTTP receiver that keeps the exported bytes and decodes the spans.
//! - [`binaries`]: the workspace's own binaries, for tests that run other crates' processes.
//! - [`chaos`]: the chaos suite, its [`chaos::Stack`] and the table of scenarios, and
//!   [`chaos::cluster`], the same on a cluster.

pub mod binaries;
pub mod chaos;
pub mod cluster;
pub mod llm;
pub mod mcp;
mod namespace;
pub mod otlp;
pub mod private;
mod processes;
pub mod tls;

pub use namespace::{Namespace, SECRET, Services, purge, purge_keys, rabbitmq_url, redis_url};
pub use processes::{AgentProc, GatewayProc};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Connection};
use proto::store::{Takeover, TaskStore};
use proto::topology::Topology;
use proto::{Keys, TaskId, TaskRecord};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use runtime::config::Env;
use serde_json::{Value, json};

pub struct Harness {
    pub ns: Namespace,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub redis: ConnectionManager,
    pub store: TaskStore,
    pub amqp: Connection,
    pub channel: Channel,
    gateways: Vec<Gateway>,
    agents: Vec<AgentProc>,
}

/// An in-process gateway: its stop trigger and its task.
struct Gateway {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

async fn spawn_gateway(ns: &Namespace, extra: &[(&str, &str)]) -> (SocketAddr, Gateway) {
    let mut env = Env::from_pairs(ns.env());
    for (k, v) in extra {
        env = env.with(k, *v);
    }
    let settings = gateway::config::Settings::from_env(&env).expect("gateway settings");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        if let Err(e) = gateway::run(listener, settings, async move {
            let _ = rx.await;
        })
        .await
        {
            eprintln!("gateway failed: {e:?}");
        }
    });
    (addr, Gateway { stop: Some(tx), task: Some(task) })
}

impl Harness {
    /// Starts an in-process gateway on port 0 with the namespace's settings plus `extra`.
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        Self::start_on(Services::shared(), extra).await
    }

    /// [`Harness::start`] against the given servers instead of the shared ones.
    pub async fn start_on(services: Services, extra: &[(&str, &str)]) -> Self {
        Self::start_in(Namespace::on(services), extra).await
    }

    /// [`Harness::start`] in a namespace of the caller's (shared with processes it starts).
    pub async fn start_in(ns: Namespace, extra: &[(&str, &str)]) -> Self {
        let (addr, gateway) = spawn_gateway(&ns, extra).await;
        let redis = runtime::connect::redis(&ns.services.redis).expect("redis url");
        let store = TaskStore::new(redis.clone(), Keys::new(ns.prefix.clone()), Duration::from_secs(900));
        let amqp = runtime::connect::amqp(&ns.services.rabbitmq, "testkit").await.expect("rabbitmq");
        let channel = amqp.create_channel().await.expect("channel");
        Topology::new(ns.queue.clone(), max_deliveries(extra)).declare(&channel).await.expect("declare");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Self { ns, addr, http, redis, store, amqp, channel, gateways: vec![gateway], agents: Vec::new() }
    }

    /// Starts another gateway on this namespace (same keys and queue), as a second replica
    /// behind a load balancer would run; it is stopped at cleanup.
    pub async fn start_replica(&mut self, extra: &[(&str, &str)]) -> SocketAddr {
        let (addr, gateway) = spawn_gateway(&self.ns, extra).await;
        self.gateways.push(gateway);
        addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn token_for(&self, user: &str) -> String {
        gateway::auth::dev_token::hs256(SECRET.as_bytes(), user, "authenticated", None, 600).expect("token")
    }

    /// A token whose claims carry the default `OPERATOR_CLAIM` role.
    pub fn operator_token(&self, user: &str) -> String {
        let mut claims = gateway::auth::dev_token::claims(user, "authenticated", None, 600).expect("claims");
        let role = gateway::auth::OperatorClaim::parse("app_metadata.euglena_role=operator").expect("claim");
        gateway::auth::dev_token::make_operator(&mut claims, &role);
        gateway::auth::dev_token::sign_hs256(SECRET.as_bytes(), &claims).expect("token")
    }

    pub async fn submit(&self, user: &str, body: Value) -> reqwest::Response {
        self.http.post(self.url("/tasks")).bearer_auth(self.token_for(user)).json(&body).send().await.expect("request")
    }

    /// Submits and returns the new task id, asserting `202`.
    pub async fn submit_ok(&self, user: &str, mandate: &str, max_ticks: u32) -> TaskId {
        let resp = self.submit(user, json!({"mandate": mandate, "max_ticks": max_ticks})).await;
        assert_eq!(resp.status(), 202, "submit failed: {:?}", resp.text().await);
        let body: Value = resp.json().await.expect("json");
        body["correlation_id"].as_str().expect("id").parse().expect("uuid")
    }

    pub async fn get_task(&self, user: &str, id: TaskId) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/tasks/{id}")))
            .bearer_auth(self.token_for(user))
            .send()
            .await
            .expect("request")
    }

    /// `POST {path}` as `user` with a JSON body.
    pub async fn post_json(&self, user: &str, path: &str, body: &Value) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(self.token_for(user)).json(body).send().await.expect("request")
    }

    pub async fn cancel(&self, user: &str, id: TaskId) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/tasks/{id}/cancel")))
            .bearer_auth(self.token_for(user))
            .send()
            .await
            .expect("request")
    }

    pub async fn agent_count(&self) -> Value {
        self.http.get(self.url("/agents/count")).send().await.expect("request").json().await.expect("json")
    }

    /// The record straight from Redis.
    pub async fn record(&self, id: TaskId) -> Option<TaskRecord> {
        self.store.get(id).await.expect("redis")
    }

    /// A delivery of task `id` takes it over, as an agent would: the envelope the gateway
    /// published for it (rebuilt from its record), through [`TaskStore::take_over`].
    pub async fn take_over(&self, id: TaskId, worker: &str, max_deliveries: u32) -> Takeover {
        let rec = self.record(id).await.expect("record");
        let envelope = rec.envelope(rec.seq);
        self.store.take_over(&envelope, worker, max_deliveries).await.expect("take over")
    }

    /// [`Self::take_over`] that must claim the task; returns the attempt (the fencing token).
    pub async fn claim(&self, id: TaskId, worker: &str, max_deliveries: u32) -> u32 {
        match self.take_over(id, worker, max_deliveries).await {
            Takeover::Claimed(c) => c.attempt,
            other => panic!("expected a claim of {id}, got {other:?}"),
        }
    }

    /// Polls the record until `pred` holds, or panics after `limit`.
    pub async fn wait_for(&self, id: TaskId, limit: Duration, pred: impl Fn(&TaskRecord) -> bool) -> TaskRecord {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let rec = self.record(id).await;
            if let Some(r) = &rec
                && pred(r)
            {
                return r.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met within {limit:?}; last record: {rec:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls an arbitrary async condition.
    pub async fn eventually<F, Fut>(&self, what: &str, limit: Duration, check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        eventually(what, limit, check).await;
    }

    /// Ready messages in a queue of this namespace (`""` = the input queue, `".dlq"` = its DLQ).
    pub async fn ready(&self, suffix: &str) -> u32 {
        let q = format!("{}{suffix}", self.ns.queue);
        Topology::depth(&self.channel, &q).await.expect("passive declare").0
    }

    pub async fn quota_used(&self, user: &str) -> i64 {
        let key = self.store.quota_key(user, chrono_now());
        self.redis.clone().get::<_, Option<i64>>(key).await.expect("redis").unwrap_or(0)
    }

    /// Publishes raw bytes to the input queue, as a foreign producer would.
    pub async fn publish_raw(&self, body: &[u8], message_id: Option<&str>) {
        let mut props = BasicProperties::default().with_delivery_mode(2);
        if let Some(m) = message_id {
            props = props.with_message_id(m.into());
        }
        self.channel
            .basic_publish("".into(), self.ns.queue.as_str().into(), BasicPublishOptions::default(), body, props)
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// Task events (`events:{id}` stream) as field maps, oldest first.
    pub async fn events(&self, id: TaskId) -> Vec<HashMap<String, String>> {
        let key = Keys::new(self.ns.prefix.clone()).events(id);
        let reply: redis::streams::StreamRangeReply = self.redis.clone().xrange_all(key).await.expect("xrange");
        reply
            .ids
            .into_iter()
            .map(|e| {
                e.map.into_iter().map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap_or_default())).collect()
            })
            .collect()
    }

    /// Starts an agent process of this namespace; `bin` is `env!("CARGO_BIN_EXE_agent")`.
    pub fn spawn_agent(&mut self, bin: &str, id: &str, extra: &[(&str, &str)]) -> usize {
        let agent = AgentProc::spawn(bin, &self.ns, id, extra);
        self.agents.push(agent);
        self.agents.len() - 1
    }

    pub fn agent(&mut self, i: usize) -> &mut AgentProc {
        &mut self.agents[i]
    }

    /// Stops the gateway and agents and removes every key and queue of the namespace.
    pub async fn cleanup(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        for a in &mut self.agents {
            a.kill();
        }
        for g in &mut self.gateways {
            if let Some(tx) = g.stop.take() {
                let _ = tx.send(());
            }
        }
        for g in &mut self.gateways {
            if let Some(t) = g.task.take() {
                let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
            }
        }
        purge(&self.ns).await;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.kill();
        }
        if self.gateways.iter().any(|g| g.stop.is_some()) {
            // The test ended without cleanup (it panicked): purge from a fresh runtime.
            let ns = self.ns.clone();
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(purge(&ns));
                }
            })
            .join();
        }
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn max_deliveries(extra: &[(&str, &str)]) -> u32 {
    extra.iter().find(|(k, _)| *k == "AGENT_MAX_DELIVERIES").and_then(|(_, v)| v.parse().ok()).unwrap_or(5)
}

/// Polls `check` until it holds, or panics naming `what` after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A port that was free a moment ago (for child processes that bind their own).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}
