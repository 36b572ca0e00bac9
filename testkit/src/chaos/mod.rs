//! The chaos suite: the real gateway and agent binaries against a private Redis (with and
//! without AOF) and a private RabbitMQ node, with faults injected while tasks flow. Each
//! scenario runs in its own key prefix and queue and ends with a tally: accepted (202),
//! completed, failed, lost (accepted but gone), duplicated (ended or finished twice), stuck
//! (any record, accepted or not, still not terminal at the deadline) and whether every
//! user's quota counter equals the ticks their tasks used. A scenario passes with 0 lost,
//! 0 duplicated, 0 stuck and the quota exact.

pub mod cluster;
pub mod scenarios;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::store::TaskStore;
use proto::{Keys, TaskId};
use redis::AsyncCommands;
use serde_json::json;

use crate::private::{PrivateRabbit, PrivateRedis};
use runtime::connect::Endpoint;

use crate::{AgentProc, GatewayProc, Namespace, SECRET, Services};

pub const USERS: [&str; 4] = ["chaos-a", "chaos-b", "chaos-c", "chaos-d"];

#[derive(Debug, Clone)]
pub struct Bins {
    pub gateway: PathBuf,
    pub agent: PathBuf,
}

/// The private servers the whole suite shares (each scenario has its own namespace).
pub struct Servers {
    pub redis: PrivateRedis,
    pub redis_aof: PrivateRedis,
    pub rabbit: PrivateRabbit,
}

impl Servers {
    pub fn start() -> Self {
        Self { redis: PrivateRedis::start(false), redis_aof: PrivateRedis::start(true), rabbit: PrivateRabbit::start() }
    }
}

/// The gateway settings every scenario uses: short timeouts so faults show quickly, and a
/// reconciler that closes stranded submissions within a few seconds.
pub const GATEWAY_ENV: [(&str, &str); 8] = [
    // Admission limits off: the suite measures delivery, not admission.
    ("SUBMIT_RATE_PER_MINUTE", "0"),
    ("MAX_ACTIVE_TASKS_PER_USER", "0"),
    ("PUBLISH_TIMEOUT_MS", "2000"),
    ("REQUEST_TIMEOUT_SECONDS", "5"),
    ("RECONCILE_INTERVAL_MS", "1000"),
    ("RECONCILE_GRACE_MS", "3000"),
    ("DAILY_TICK_LIMIT", "1000000000"),
    ("RUST_LOG", "info"),
];

/// One scenario's processes and bookkeeping.
pub struct Stack {
    pub ns: Namespace,
    pub bins: Bins,
    pub store: TaskStore,
    pub redis: redis::aio::ConnectionManager,
    pub http: reqwest::Client,
    pub gateways: Vec<GatewayProc>,
    pub agents: Vec<AgentProc>,
    agent_env: Vec<(String, String)>,
    accepted: Arc<Mutex<Vec<TaskId>>>,
    rejected: Arc<Mutex<usize>>,
    next: Arc<Mutex<usize>>,
    /// Records created outside the gateway (legacy envelopes) that must end too.
    pub extra_ids: Vec<TaskId>,
}

impl Stack {
    pub async fn new(bins: &Bins, redis_url: &str, rabbitmq_url: &str, agent_env: &[(&str, &str)]) -> Self {
        let services = Services { redis: Endpoint::new(redis_url), rabbitmq: Endpoint::new(rabbitmq_url) };
        Self::on(bins, services, agent_env).await
    }

    /// A stack on these services (e.g. a broker cluster and Redis behind sentinels).
    pub async fn on(bins: &Bins, services: Services, agent_env: &[(&str, &str)]) -> Self {
        let ns = Namespace::on(services);
        let redis = runtime::connect::redis(&ns.services.redis).expect("redis url");
        let store = TaskStore::new(redis.clone(), Keys::new(ns.prefix.clone()), Duration::from_secs(900));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("http client");
        Self {
            ns,
            bins: bins.clone(),
            store,
            redis,
            http,
            gateways: Vec::new(),
            agents: Vec::new(),
            agent_env: agent_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            accepted: Arc::default(),
            rejected: Arc::default(),
            next: Arc::default(),
            extra_ids: Vec::new(),
        }
    }

    /// Starts a gateway process with [`GATEWAY_ENV`] and waits until it serves.
    pub async fn gateway(&mut self) -> usize {
        self.gateways.push(GatewayProc::spawn(&self.bins.gateway, &self.ns, &GATEWAY_ENV).await);
        self.gateways.len() - 1
    }

    pub fn agent(&mut self) -> usize {
        let id = format!("chaos-agent-{}", self.agents.len());
        let env: Vec<(&str, &str)> = self.agent_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.agents.push(AgentProc::spawn(self.bins.agent.to_str().expect("utf-8 path"), &self.ns, &id, &env));
        self.agents.len() - 1
    }

    /// A cheap handle for concurrent submitters.
    pub fn submitter(&self, gateway: usize) -> Submitter {
        Submitter {
            http: self.http.clone(),
            base: self.gateways[gateway].url(""),
            accepted: self.accepted.clone(),
            rejected: self.rejected.clone(),
            next: self.next.clone(),
        }
    }

    /// Where submitters record the ids they got a 202 for.
    pub fn accepted_sink(&self) -> Arc<Mutex<Vec<TaskId>>> {
        self.accepted.clone()
    }

    pub fn accepted(&self) -> Vec<TaskId> {
        self.accepted.lock().map(|a| a.clone()).unwrap_or_default()
    }

    pub fn rejected(&self) -> usize {
        self.rejected.lock().map(|r| *r).unwrap_or(0)
    }

    /// Every task id of the scenario: accepted ones and every record any user has.
    pub async fn all_ids(&self) -> HashSet<TaskId> {
        let mut ids: HashSet<TaskId> = self.accepted().into_iter().collect();
        ids.extend(self.extra_ids.iter().copied());
        let keys = self.store.keys();
        for user in USERS {
            let members: Vec<String> =
                self.redis.clone().zrange(keys.user_tasks(user), 0, -1).await.unwrap_or_default();
            ids.extend(members.iter().filter_map(|m| m.parse::<TaskId>().ok()));
        }
        ids
    }

    /// How many task records the scenario's users have.
    pub async fn record_count(&self) -> usize {
        self.all_ids().await.len()
    }

    /// Waits until every record is terminal (or `limit` passes); returns how long it took.
    pub async fn settle(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < limit {
            let mut open = 0;
            for id in self.all_ids().await {
                match self.store.get(id).await {
                    Ok(Some(r)) if r.status.is_terminal() => {}
                    Ok(None) => {}
                    _ => open += 1,
                }
            }
            if open == 0 {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        started.elapsed()
    }

    pub async fn tally(&mut self, name: &str, started: Instant, note: String) -> Tally {
        let accepted: HashSet<TaskId> = self.accepted().into_iter().collect();
        let mut t = Tally { name: name.to_owned(), accepted: accepted.len(), note, ..Tally::default() };
        let finished = self.finished_counts();
        let mut used: HashMap<String, i64> = HashMap::new();
        for id in self.all_ids().await {
            let rec = match self.store.get(id).await {
                Ok(r) => r,
                Err(_) => {
                    t.stuck += 1;
                    continue;
                }
            };
            let Some(rec) = rec else {
                if accepted.contains(&id) {
                    t.lost += 1;
                }
                continue;
            };
            match rec.status {
                _ if !rec.status.is_terminal() => {
                    // What a stuck task was doing, so a failed run can be read from its table.
                    t.stuck += 1;
                    t.note.push_str(&format!(
                        " stuck {id}: {} attempt {} tick {:?} worker {:?} accepted {};",
                        rec.status,
                        rec.attempt,
                        rec.tick,
                        rec.worker_id,
                        accepted.contains(&id)
                    ));
                }
                _ if !accepted.contains(&id) => t.not_accepted_closed += 1,
                proto::TaskStatus::Completed => t.completed += 1,
                proto::TaskStatus::Failed => t.failed += 1,
                _ => t.cancelled += 1,
            }
            *used.entry(rec.user_id.clone()).or_default() += i64::from(rec.ticks_used);
            let terminal_events = self.terminal_events(id).await;
            if terminal_events > 1 || finished.get(&id.to_string()).copied().unwrap_or(0) > 1 {
                t.duplicated += 1;
            }
        }
        // The duplicate check reads the agents' logs; make sure it is reading something. A
        // SIGKILL after a finish's write but before its log line costs that line (the task
        // still ended once: its redelivery is acked without running), so each agent that is
        // gone may owe one line per task slot.
        let lines: usize = finished.values().sum();
        let slots: usize = self
            .agent_env
            .iter()
            .find(|(k, _)| k == "AGENT_CONCURRENCY")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(1);
        let gone = self.agents.iter_mut().map(|a| a.exited()).filter(|&e| e).count();
        t.evidence_ok = t.completed == 0 || lines + gone * slots >= t.completed;
        if !t.evidence_ok {
            t.note.push_str(&format!(" only {lines} \"task finished\" log lines for {} completed tasks;", t.completed));
        }
        t.quota_ok = true;
        for user in USERS {
            let key = self.store.quota_key(user, chrono::Utc::now());
            let counter: i64 = self.redis.clone().get::<_, Option<i64>>(key).await.ok().flatten().unwrap_or(0);
            let want = used.get(user).copied().unwrap_or(0);
            if counter != want {
                t.quota_ok = false;
                t.note.push_str(&format!(" quota[{user}]={counter} used={want};"));
            }
        }
        t.seconds = started.elapsed().as_secs_f64();
        t
    }

    async fn terminal_events(&self, id: TaskId) -> usize {
        let reply: redis::RedisResult<redis::streams::StreamRangeReply> =
            self.redis.clone().xrange_all(self.store.keys().events(id)).await;
        let Ok(reply) = reply else { return 0 };
        reply
            .ids
            .iter()
            .filter(|e| {
                e.map
                    .get("status")
                    .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                    .is_some_and(|s| matches!(s.as_str(), "completed" | "failed" | "cancelled"))
            })
            .count()
    }

    /// "task finished" log lines per task id, over every agent that ever ran.
    fn finished_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for a in &self.agents {
            for line in a.log_text().lines().filter(|l| l.contains("\"task finished\"")) {
                if let Some(id) = json_field(line, "correlation_id") {
                    *counts.entry(id).or_default() += 1;
                }
            }
        }
        counts
    }

    /// Removes the scenario's keys and queues.
    pub async fn cleanup(mut self) {
        for a in &mut self.agents {
            a.kill();
        }
        for g in &mut self.gateways {
            g.kill();
        }
        crate::purge(&self.ns).await;
    }
}

fn json_field(line: &str, field: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let spans = v.get("spans").and_then(|s| s.as_array()).cloned().unwrap_or_default();
    spans
        .iter()
        .chain(v.get("span"))
        .chain(v.get("fields"))
        .find_map(|s| s.get(field).and_then(|x| x.as_str()).map(str::to_owned))
}

#[derive(Clone)]
pub struct Submitter {
    http: reqwest::Client,
    base: String,
    accepted: Arc<Mutex<Vec<TaskId>>>,
    rejected: Arc<Mutex<usize>>,
    next: Arc<Mutex<usize>>,
}

impl Submitter {
    /// One submission; `true` on 202.
    pub async fn submit(&self, max_ticks: u32) -> bool {
        let n = self.next.lock().map(|mut n| {
            *n += 1;
            *n
        });
        let n = n.unwrap_or(0);
        let user = USERS[n % USERS.len()];
        let token =
            gateway::auth::dev_token::hs256(SECRET.as_bytes(), user, "authenticated", None, 3600).expect("token");
        let resp = self
            .http
            .post(format!("{}/tasks", self.base))
            .bearer_auth(token)
            .json(&json!({"mandate": format!("chaos task {n}"), "max_ticks": max_ticks}))
            .send()
            .await;
        match resp {
            Ok(r) if r.status() == 202 => {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if let Some(id) = body["correlation_id"].as_str().and_then(|s| s.parse().ok())
                    && let Ok(mut a) = self.accepted.lock()
                {
                    a.push(id);
                    return true;
                }
                false
            }
            _ => {
                if let Ok(mut r) = self.rejected.lock() {
                    *r += 1;
                }
                false
            }
        }
    }

    /// `count` submissions from `parallel` clients, spaced `gap` apart per client.
    pub async fn burst(&self, count: usize, parallel: usize, gap: Duration, max_ticks: u32) {
        let per = count.div_ceil(parallel.max(1));
        let mut set = tokio::task::JoinSet::new();
        let mut left = count;
        for _ in 0..parallel {
            let n = per.min(left);
            left -= n;
            let s = self.clone();
            set.spawn(async move {
                for _ in 0..n {
                    s.submit(max_ticks).await;
                    tokio::time::sleep(gap).await;
                }
            });
        }
        while set.join_next().await.is_some() {}
    }
}

#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub name: String,
    pub accepted: usize,
    pub completed: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub stuck: usize,
    /// Records without a 202 that ended: 503'd submissions closed by the undo or the
    /// reconciler (or run, when the publish landed after all), legacy envelopes.
    pub not_accepted_closed: usize,
    pub quota_ok: bool,
    /// The agents' logs had a "task finished" line for every completed task.
    pub evidence_ok: bool,
    pub seconds: f64,
    pub note: String,
}

impl Tally {
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.stuck == 0 && self.quota_ok && self.evidence_ok
    }
}

pub fn table(rows: &[Tally]) -> String {
    let mut out = String::from(
        "| scenario | result | accepted | completed | failed | lost | duplicated | stuck | quota | others closed | s | notes |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for t in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |\n",
            t.name,
            if t.passed() { "PASS" } else { "FAIL" },
            t.accepted,
            t.completed,
            t.failed,
            t.lost,
            t.duplicated,
            t.stuck,
            if t.quota_ok { "exact" } else { "WRONG" },
            t.not_accepted_closed,
            t.seconds,
            t.note.trim(),
        ));
    }
    out
}
