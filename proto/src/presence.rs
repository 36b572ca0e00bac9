//! Agent presence: each agent heartbeats `workers` (sorted set, score = last beat in unix
//! ms) and its own `worker:{id}` hash with a TTL. Readers prune members older than the
//! TTL, so an agent killed with SIGKILL drops out of the count within one TTL.

use std::time::Duration;

use chrono::Utc;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::Serialize;

use crate::domain::TaskId;
use crate::keys::Keys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Idle,
    Busy,
    Draining,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::Draining => "draining",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub worker_id: String,
    pub state: WorkerState,
    pub tasks: Vec<TaskId>,
    /// `AGENT_CONCURRENCY`: the tasks this agent runs at once (its slots).
    pub slots: u32,
    pub version: String,
    pub host: String,
    pub started_at: String,
}

pub async fn beat(conn: &mut ConnectionManager, keys: &Keys, hb: &Heartbeat, ttl: Duration) -> redis::RedisResult<()> {
    let worker_key = keys.worker(&hb.worker_id);
    let tasks = hb.tasks.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let slots = hb.slots.to_string();
    redis::pipe()
        .atomic()
        .zadd(keys.workers(), &hb.worker_id, Utc::now().timestamp_millis())
        .ignore()
        .hset_multiple(
            &worker_key,
            &[
                ("state", hb.state.as_str()),
                ("tasks", tasks.as_str()),
                ("slots", slots.as_str()),
                ("version", hb.version.as_str()),
                ("host", hb.host.as_str()),
                ("started_at", hb.started_at.as_str()),
            ],
        )
        .ignore()
        .expire(&worker_key, i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1))
        .ignore()
        .query_async(conn)
        .await
}

pub async fn deregister(conn: &mut ConnectionManager, keys: &Keys, worker_id: &str) -> redis::RedisResult<()> {
    redis::pipe()
        .atomic()
        .zrem(keys.workers(), worker_id)
        .ignore()
        .del(keys.worker(worker_id))
        .ignore()
        .query_async(conn)
        .await
}

/// Live agents (heartbeat newer than AGENT_HEARTBEAT_TTL_SECONDS), busy and idle.
// The gateway's `GET /agents/count` body and the sidecar's reading. The fields carry plain
// comments, not docs: the schema in the OpenAPI document has no per-field descriptions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AgentCount {
    // Agents whose last heartbeat is newer than the TTL.
    pub count: u64,
    // Live agents running at least one task.
    pub busy: u64,
    pub idle: u64,
    // Tasks running across live agents (the busy slots): for the sidecar, not on the wire.
    #[serde(skip)]
    pub running_tasks: u64,
    // Slots of live agents, busy or free: for the sidecar, not on the wire.
    #[serde(skip)]
    pub slots: u64,
}

pub async fn count(conn: &mut ConnectionManager, keys: &Keys, ttl: Duration) -> redis::RedisResult<AgentCount> {
    let cutoff = Utc::now().timestamp_millis() - i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let workers = keys.workers();
    let _: i64 = conn.zrembyscore(&workers, "-inf", format!("({cutoff}")).await?;
    let ids: Vec<String> = conn.zrange(&workers, 0, -1).await?;
    if ids.is_empty() {
        return Ok(AgentCount::default());
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HMGET").arg(keys.worker(id)).arg("state").arg("tasks").arg("slots");
    }
    let rows: Vec<(Option<String>, Option<String>, Option<u64>)> = pipe.query_async(conn).await?;
    let mut out = AgentCount::default();
    for (state, tasks, slots) in rows {
        // A member whose hash expired is dead even if its score has not aged out yet.
        if state.is_none() {
            continue;
        }
        let running = tasks.as_deref().unwrap_or("").split(',').filter(|t| !t.is_empty()).count() as u64;
        out.count += 1;
        out.running_tasks += running;
        // An agent from before slots were published ran one task at a time by default.
        out.slots += slots.unwrap_or(1);
        if running > 0 {
            out.busy += 1;
        }
    }
    out.idle = out.count - out.busy;
    Ok(out)
}
