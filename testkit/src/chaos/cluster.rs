//! The cluster chaos suite: the real gateway and agent binaries on a three-node RabbitMQ
//! cluster (the task queue a quorum queue with a replica on each node), a Redis primary
//! with a replica behind three Sentinels, and two gateways behind HAProxy, with nodes
//! killed while submissions flow. Clients submit through the load balancer with an
//! `Idempotency-Key` and retry the same request on connection errors, 5xx and 409 (a
//! duplicate still in flight), as a careful client does.
//!
//! Each scenario has its own key prefix and queue on the shared cluster and ends with the
//! chaos [`Tally`] plus what only a cluster shows: keys that got two different task ids,
//! requests refused or retried, and the time from the fault to the first `202` of a
//! request sent after it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::TaskId;
use redis::AsyncCommands;
use runtime::connect::Endpoint;
use runtime::sentinel::Sentinels;
use serde_json::json;

use super::{Bins, Stack, Tally, USERS};
use crate::cluster::{Haproxy, RabbitCluster, RedisHa, RunDir};
use crate::{SECRET, Services};

/// How long a scenario waits for every record to become terminal after its fault.
const SETTLE: Duration = Duration::from_secs(120);
/// How long one client keeps retrying one submission.
const GIVE_UP: Duration = Duration::from_secs(60);

pub const ALL: [&str; 5] =
    ["rabbit_leader_kill", "rabbit_quorum_lost", "redis_primary_kill", "gateway_kill", "rabbit_rolling_restart"];

/// The cluster every scenario shares.
pub struct Cluster {
    pub run: RunDir,
    pub rabbit: RabbitCluster,
    pub redis: RedisHa,
}

impl Cluster {
    pub fn start(run: RunDir) -> Self {
        let redis = RedisHa::start(&run);
        let rabbit = RabbitCluster::start(&run, 3);
        assert!(redis.wait_ready(Duration::from_secs(30)), "the sentinels did not find the replica and each other");
        Self { run, rabbit, redis }
    }

    fn services(&self) -> Services {
        let sentinels = Sentinels::new(
            self.redis.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect(),
            RedisHa::MASTER.to_owned(),
            None,
        );
        Services {
            redis: Endpoint::new(self.redis.url()).with_sentinels(sentinels),
            rabbitmq: Endpoint::new(self.rabbit.url()),
        }
    }
}

/// One attempt of one client request.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    sent: Instant,
    answered: Instant,
    accepted: bool,
}

/// Clients submitting through the load balancer until stopped, each submission retried
/// with its key until a `202` or [`GIVE_UP`].
#[derive(Clone)]
struct Load {
    http: reqwest::Client,
    base: String,
    accepted: Arc<Mutex<Vec<TaskId>>>,
    ids_by_key: Arc<Mutex<HashMap<String, HashSet<TaskId>>>>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    retries: Arc<AtomicUsize>,
    given_up: Arc<AtomicUsize>,
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Stops the clients started with a gap under 100 ms (a dense burst) only.
    stop_dense: Arc<AtomicBool>,
}

impl Load {
    fn new(base: String, accepted: Arc<Mutex<Vec<TaskId>>>) -> Self {
        Self {
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client"),
            base,
            accepted,
            ids_by_key: Arc::default(),
            outcomes: Arc::default(),
            retries: Arc::default(),
            given_up: Arc::default(),
            next: Arc::default(),
            stop: Arc::default(),
            stop_dense: Arc::default(),
        }
    }

    /// `clients` clients, each submitting every `gap` until [`Load::stop`].
    fn start(&self, clients: usize, gap: Duration, max_ticks: u32) -> tokio::task::JoinSet<()> {
        let mut set = tokio::task::JoinSet::new();
        let dense = gap < Duration::from_millis(100);
        for _ in 0..clients {
            let load = self.clone();
            set.spawn(async move {
                let stopped = || load.stop.load(Ordering::SeqCst) || (dense && load.stop_dense.load(Ordering::SeqCst));
                while !stopped() {
                    load.submit(max_ticks).await;
                    tokio::time::sleep(gap).await;
                }
            });
        }
        set
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn pause_dense(&self) {
        self.stop_dense.store(true, Ordering::SeqCst);
    }

    /// Requests sent before `at` and answered after it.
    fn in_flight_at(&self, at: Instant) -> usize {
        self.outcomes.lock().map(|o| o.iter().filter(|o| o.sent < at && o.answered > at).count()).unwrap_or(0)
    }

    /// `202`s answered between `from` and `to`.
    fn accepted_between(&self, from: Instant, to: Instant) -> usize {
        self.outcomes
            .lock()
            .map(|o| o.iter().filter(|o| o.accepted && o.answered > from && o.answered < to).count())
            .unwrap_or(0)
    }

    /// One submission, retried with the same key and body.
    async fn submit(&self, max_ticks: u32) {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let user = USERS[n % USERS.len()];
        let key = uuid::Uuid::new_v4().to_string();
        let token =
            gateway::auth::dev_token::hs256(SECRET.as_bytes(), user, "authenticated", None, 3600).expect("token");
        let body = json!({"mandate": format!("cluster chaos task {n}"), "max_ticks": max_ticks});
        let started = Instant::now();
        let mut wait = Duration::from_millis(200);
        loop {
            let sent = Instant::now();
            let resp = self
                .http
                .post(format!("{}/tasks", self.base))
                .bearer_auth(&token)
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await;
            let status = resp.as_ref().map(|r| r.status().as_u16()).ok();
            if status == Some(202)
                && let Ok(r) = resp
            {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if let Some(id) = body["correlation_id"].as_str().and_then(|s| s.parse::<TaskId>().ok()) {
                    if let Ok(mut a) = self.accepted.lock() {
                        a.push(id);
                    }
                    if let Ok(mut k) = self.ids_by_key.lock() {
                        k.entry(key.clone()).or_default().insert(id);
                    }
                    self.note(sent, true);
                    return;
                }
            }
            self.note(sent, false);
            // Connection errors, 5xx and 409 (the first request still in flight) are retried.
            let retry = match status {
                None => true,
                Some(s) => s == 409 || s >= 500,
            };
            if !retry || started.elapsed() > GIVE_UP {
                self.given_up.fetch_add(1, Ordering::SeqCst);
                return;
            }
            self.retries.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    fn note(&self, sent: Instant, accepted: bool) {
        if let Ok(mut o) = self.outcomes.lock() {
            o.push(Outcome { sent, answered: Instant::now(), accepted });
        }
    }

    /// From `fault` to the first `202` of a request sent at or after it.
    fn recovery(&self, fault: Instant) -> Option<Duration> {
        let outcomes = self.outcomes.lock().ok()?;
        outcomes.iter().filter(|o| o.accepted && o.sent >= fault).map(|o| o.answered - fault).min()
    }

    fn refused(&self) -> usize {
        self.outcomes.lock().map(|o| o.iter().filter(|o| !o.accepted).count()).unwrap_or(0)
    }

    /// Keys that got a `202` naming two different tasks.
    fn keys_with_two_tasks(&self) -> usize {
        self.ids_by_key.lock().map(|k| k.values().filter(|ids| ids.len() > 1).count()).unwrap_or(0)
    }
}

/// A scenario's row: the chaos tally plus the cluster's own figures.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub tally: Tally,
    /// Requests answered with something other than 202 (then retried) or a connection error.
    pub refused: usize,
    pub given_up: usize,
    /// Kill → first 202 of a request sent after it; and, where the fault ends with a
    /// restore, restore → first 202.
    pub recovery: Option<Duration>,
    pub after_restore: Option<Duration>,
    /// Sum over users of |quota counter − ticks used| (0 when exact).
    pub quota_off_by: i64,
    /// The scenario may cost quota accuracy (a Redis failover, ARCHITECTURE §8).
    pub quota_may_drift: bool,
    /// What the fault's own check found wrong (e.g. a 202 while the queue had no quorum).
    pub fault_failures: usize,
}

impl Row {
    pub fn passed(&self) -> bool {
        let t = &self.tally;
        // On the offline model a task fails only when a fault took it: an accepted task that
        // ended failed (e.g. "not enqueued" after its 202) is work lost.
        t.lost == 0
            && t.failed == 0
            && t.duplicated == 0
            && t.stuck == 0
            && self.given_up == 0
            && self.fault_failures == 0
            && t.evidence_ok
            && (t.quota_ok || self.quota_may_drift)
    }
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | result | accepted | completed | failed | lost | duplicated | stuck | quota | refused, retried | kill → first 202 | s | notes |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let t = &r.tally;
        let secs = |d: Option<Duration>| d.map_or("—".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        let recovery = match r.after_restore {
            Some(_) => format!("{} (restore → {})", secs(r.recovery), secs(r.after_restore)),
            None => secs(r.recovery),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |\n",
            t.name,
            if r.passed() { "PASS" } else { "FAIL" },
            t.accepted,
            t.completed,
            t.failed,
            t.lost,
            t.duplicated,
            t.stuck,
            if t.quota_ok { "exact".to_owned() } else { format!("off by {}", r.quota_off_by) },
            r.refused,
            recovery,
            t.seconds,
            t.note.trim(),
        ));
    }
    out
}

/// What a fault did: when it struck, when service was restored (if the fault has a
/// restore step), and a note.
struct Struck {
    at: Instant,
    restored: Option<Instant>,
    /// What the fault's own check found wrong (counted as stuck).
    failures: usize,
    note: String,
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

pub async fn run(name: &str, cluster: &mut Cluster, bins: &Bins) -> Row {
    let started = Instant::now();
    let env = [
        ("OFFLINE_TICK_DELAY_MS", "100"),
        ("OFFLINE_THINK_TICKS", "3"),
        ("AGENT_CONCURRENCY", "2"),
        ("AGENT_DRAIN_SECONDS", "30"),
    ];
    let mut s = Stack::on(bins, cluster.services(), &env).await;
    let g0 = s.gateway().await;
    let g1 = s.gateway().await;
    for _ in 0..3 {
        s.agent();
    }
    let lb = blocking(|| Haproxy::start(&cluster.run, &[s.gateways[g0].addr, s.gateways[g1].addr]));
    let queue = s.ns.queue.clone();
    // The gateways declared the queue when they connected; it has a replica on each node.
    let replicas = blocking(|| cluster.rabbit.wait_queue_online(&queue, 3, Duration::from_secs(30)));
    let load = Load::new(lb.url(), s.accepted_sink());
    // A little over what the three agents' six slots finish, so work is queued and running.
    let mut clients = load.start(3, Duration::from_millis(400), 4);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let struck = match name {
        "rabbit_leader_kill" => leader_kill(cluster, &queue).await,
        "rabbit_quorum_lost" => quorum_lost(cluster, &queue, &load).await,
        "redis_primary_kill" => redis_primary_kill(cluster).await,
        "gateway_kill" => {
            // A denser burst of one-tick tasks around the kill, so requests are in flight on
            // the gateway that dies.
            let mut dense = load.start(6, Duration::from_millis(10), 1);
            tokio::time::sleep(Duration::from_millis(400)).await;
            let at = Instant::now();
            s.gateways[g0].kill();
            tokio::time::sleep(Duration::from_millis(200)).await;
            load.pause_dense();
            while dense.join_next().await.is_some() {}
            tokio::time::sleep(Duration::from_secs(4)).await;
            let in_flight = load.in_flight_at(at);
            Struck {
                at,
                restored: None,
                failures: 0,
                note: format!(
                    "gateway 0 killed with SIGKILL mid-burst, {in_flight} requests in flight through HAProxy;"
                ),
            }
        }
        "rabbit_rolling_restart" => rolling_restart(cluster, &queue).await,
        _ => {
            load.stop();
            while clients.join_next().await.is_some() {}
            s.cleanup().await;
            let tally = Tally { name: name.to_owned(), stuck: 1, note: "unknown scenario".into(), ..Tally::default() };
            return Row { tally, ..Row::default() };
        }
    };
    // A few more seconds of load on the recovered cluster, then let every request finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.stop();
    while clients.join_next().await.is_some() {}
    let settled = s.settle(SETTLE).await;
    let note = format!(
        "{} {}settled in {:.1}s; {} retries.",
        struck.note,
        if replicas { "" } else { "queue had fewer than 3 replicas online at the start; " },
        settled.as_secs_f64(),
        load.retries.load(Ordering::SeqCst),
    );
    let mut tally = s.tally(name, started, note).await;
    let failed = failed_accepted(&s).await;
    if !failed.is_empty() {
        tally.note.push_str(&format!(" accepted but failed: {failed};"));
    }
    tally.duplicated += load.keys_with_two_tasks() + completed_twice_per_key(&s).await;
    let quota_off_by = quota_drift(&s).await;
    let row = Row {
        refused: load.refused(),
        given_up: load.given_up.load(Ordering::SeqCst),
        recovery: load.recovery(struck.at),
        after_restore: struck.restored.and_then(|r| load.recovery(r)),
        quota_off_by,
        quota_may_drift: name == "redis_primary_kill",
        fault_failures: struck.failures,
        tally,
    };
    drop(lb);
    s.cleanup().await;
    row
}

/// SIGKILL of the node leading the task queue; it is started again after the burst.
async fn leader_kill(cluster: &mut Cluster, queue: &str) -> Struck {
    let Some((leader, _)) = blocking(|| cluster.rabbit.queue_leader(queue)) else {
        return Struck { at: Instant::now(), restored: None, failures: 1, note: "no leader found;".into() };
    };
    let at = Instant::now();
    blocking(|| cluster.rabbit.nodes[leader].kill9());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let new_leader = blocking(|| cluster.rabbit.queue_leader(queue)).map(|(l, _)| l);
    blocking(|| cluster.rabbit.nodes[leader].start());
    let back = blocking(|| cluster.rabbit.wait_queue_online(queue, 3, Duration::from_secs(60)));
    Struck {
        at,
        restored: None,
        failures: 0,
        note: format!(
            "leader node {leader} killed with SIGKILL, new leader node {}, restarted after 6 s{};",
            new_leader.map_or("?".into(), |l| l.to_string()),
            if back { "" } else { " (its replica did not come back online within 60 s)" }
        ),
    }
}

/// The leader SIGKILLed and a second node shut down: one node of three left, no quorum.
/// After 8 s the second node is started again (quorum back), then the first.
async fn quorum_lost(cluster: &mut Cluster, queue: &str, load: &Load) -> Struck {
    let Some((leader, _)) = blocking(|| cluster.rabbit.queue_leader(queue)) else {
        return Struck { at: Instant::now(), restored: None, failures: 1, note: "no leader found;".into() };
    };
    let second = (leader + 1) % cluster.rabbit.nodes.len();
    blocking(|| cluster.rabbit.nodes[leader].kill9());
    blocking(|| cluster.rabbit.nodes[second].shutdown());
    // From here one node of three is left: no majority for the queue.
    let at = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let restoring = Instant::now();
    blocking(|| cluster.rabbit.nodes[second].start());
    let restored = Instant::now();
    let accepted_without_quorum = load.accepted_between(at, restoring);
    blocking(|| cluster.rabbit.nodes[leader].start());
    let back = blocking(|| cluster.rabbit.wait_queue_online(queue, 3, Duration::from_secs(60)));
    Struck {
        at,
        restored: Some(restored),
        failures: accepted_without_quorum,
        note: format!(
            "leader node {leader} SIGKILLed and node {second} shut down: no quorum for 8 s, {accepted_without_quorum} submissions accepted meanwhile (must be 0); node {second} started again (quorum back), then node {leader}{};",
            if back { "" } else { " (not all replicas online within 60 s)" }
        ),
    }
}

/// SIGKILL of the Redis primary; the sentinels promote the replica. The old primary is
/// started again afterwards and the sentinels make it the new primary's replica.
async fn redis_primary_kill(cluster: &mut Cluster) -> Struck {
    let Some(primary) = blocking(|| cluster.redis.primary()) else {
        return Struck { at: Instant::now(), restored: None, failures: 1, note: "no primary found;".into() };
    };
    let at = Instant::now();
    blocking(|| cluster.redis.data[primary].kill9());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut promoted = None;
    while Instant::now() < deadline {
        match blocking(|| cluster.redis.primary()) {
            Some(p) if p != primary => {
                promoted = Some(at.elapsed());
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    blocking(|| cluster.redis.data[primary].restart());
    let ready = blocking(|| cluster.redis.wait_ready(Duration::from_secs(30)));
    Struck {
        at,
        restored: None,
        failures: 0,
        note: format!(
            "primary killed with SIGKILL, sentinels promoted the replica after {}, old primary back as replica{};",
            promoted.map_or("— (no promotion within 30 s)".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
            if ready { "" } else { " (not seen by the sentinels within 30 s)" }
        ),
    }
}

/// Each node in turn shut down and started again, waiting for the queue's three replicas
/// to be online before the next.
async fn rolling_restart(cluster: &mut Cluster, queue: &str) -> Struck {
    let at = Instant::now();
    let mut slow = Vec::new();
    for i in 0..cluster.rabbit.nodes.len() {
        blocking(|| cluster.rabbit.nodes[i].shutdown());
        tokio::time::sleep(Duration::from_secs(1)).await;
        blocking(|| cluster.rabbit.nodes[i].start());
        if !blocking(|| cluster.rabbit.wait_queue_online(queue, 3, Duration::from_secs(60))) {
            slow.push(i);
        }
    }
    Struck {
        at,
        restored: None,
        failures: 0,
        note: format!(
            "every node shut down and restarted in turn in {:.0} s{};",
            at.elapsed().as_secs_f64(),
            if slow.is_empty() { String::new() } else { format!(" (replicas slow to return after {slow:?})") }
        ),
    }
}

/// The errors of accepted tasks that ended `failed`, counted: `"error" ×n, …`.
async fn failed_accepted(s: &Stack) -> String {
    let mut errors: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let accepted: HashSet<TaskId> = s.accepted().into_iter().collect();
    for id in accepted {
        if let Ok(Some(rec)) = s.store.get(id).await
            && rec.status == proto::TaskStatus::Failed
        {
            *errors.entry(rec.error.unwrap_or_default()).or_default() += 1;
        }
    }
    errors.iter().map(|(e, n)| format!("\"{e}\" ×{n}")).collect::<Vec<_>>().join(", ")
}

/// Records of one idempotency key that both completed: a retry that became a second task.
async fn completed_twice_per_key(s: &Stack) -> usize {
    let mut completed_by_key: HashMap<String, usize> = HashMap::new();
    for id in s.all_ids().await {
        let key = s.store.keys().task(id);
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&key)
            .arg("idem_key")
            .arg("status")
            .query_async(&mut s.redis.clone())
            .await
            .unwrap_or_default();
        if let [Some(claim), Some(status)] = fields.as_slice()
            && status == "completed"
        {
            *completed_by_key.entry(claim.clone()).or_default() += 1;
        }
    }
    completed_by_key.values().filter(|&&n| n > 1).count()
}

/// Σ over users of |quota counter − ticks their tasks used|.
async fn quota_drift(s: &Stack) -> i64 {
    let mut used: HashMap<String, i64> = HashMap::new();
    for id in s.all_ids().await {
        if let Ok(Some(rec)) = s.store.get(id).await {
            *used.entry(rec.user_id.clone()).or_default() += i64::from(rec.ticks_used);
        }
    }
    let mut off = 0;
    for user in USERS {
        let key = s.store.quota_key(user, chrono::Utc::now());
        let counter: i64 = s.redis.clone().get::<_, Option<i64>>(key).await.ok().flatten().unwrap_or(0);
        off += (counter - used.get(user).copied().unwrap_or(0)).abs();
    }
    off
}
