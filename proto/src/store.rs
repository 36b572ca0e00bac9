//! Every write to task records, quota counters and task events, as atomic Lua scripts.
//!
//! Guarantees: a terminal status is never overwritten; status and checkpoint writes from
//! an older delivery (a smaller `attempt`) are refused; quota is reserved together with
//! the record and refunded exactly once, when the task ends or is never enqueued.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::domain::TaskId;
use crate::keys::Keys;
use crate::lua::{Invocation, Lua};
use crate::task::{RecordError, TaskRecord, TaskStatus};
use crate::time::{rfc3339, seconds_to_utc_midnight, utc_day};

const PRELUDE: &str = include_str!("lua/prelude.lua");

pub(crate) fn with_prelude(body: &str) -> Lua {
    Lua::new(&format!("{PRELUDE}\n{body}"))
}

static SUBMIT: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/submit.lua")));
static ADOPT: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("lua/adopt.lua")));
static ABORT_SUBMIT: LazyLock<Lua> = LazyLock::new(|| with_prelude(include_str!("lua/abort_submit.lua")));
static CANCEL: LazyLock<Lua> = LazyLock::new(|| with_prelude(include_str!("lua/cancel.lua")));
static CLAIM: LazyLock<Lua> = LazyLock::new(|| with_prelude(include_str!("lua/claim.lua")));
static PROGRESS: LazyLock<Lua> = LazyLock::new(|| with_prelude(include_str!("lua/progress.lua")));
static FINISH: LazyLock<Lua> = LazyLock::new(|| with_prelude(include_str!("lua/finish.lua")));

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Corrupt(#[from] RecordError),
    #[error("unexpected script reply: {0}")]
    Reply(String),
}

impl StoreError {
    /// One copy per caller of a failed group commit (a Redis error keeps its kind).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Redis(e) => Self::Redis(e.clone()),
            other => Self::Reply(other.to_string()),
        }
    }
}

/// The error a never-confirmed submission ends with, whether the gateway's undo or the
/// reconciler closes it.
pub const NOT_ENQUEUED: &str = "not enqueued: the task queue was unavailable";

/// A task about to be submitted.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: TaskId,
    pub user_id: String,
    pub mandate: String,
    pub max_ticks: u32,
    pub created_at: DateTime<Utc>,
    /// The client's `Idempotency-Key` and a fingerprint of what it asked for.
    pub idempotency: Option<Idempotency>,
    /// Announce the end of the task here (checked by the address policy before submit).
    pub webhook_url: Option<String>,
}

impl NewTask {
    /// A task created now, with no idempotency key and no webhook.
    pub fn new(user_id: impl Into<String>, mandate: impl Into<String>, max_ticks: u32) -> Self {
        Self {
            id: TaskId::new(),
            user_id: user_id.into(),
            mandate: mandate.into(),
            max_ticks,
            created_at: Utc::now(),
            idempotency: None,
            webhook_url: None,
        }
    }

    /// The task of an envelope that arrived without a record (another producer published
    /// it). Without a user id it has no owner and is listed under nobody.
    pub fn from_envelope(env: &crate::TaskEnvelope) -> Self {
        Self {
            id: env.correlation_id,
            user_id: env.user_id.clone().unwrap_or_default(),
            mandate: env.mandate.clone(),
            max_ticks: env.max_ticks,
            created_at: env.submitted_at.unwrap_or_else(Utc::now),
            idempotency: None,
            webhook_url: None,
        }
    }

    /// The envelope published for this task (the inverse of [`Self::from_envelope`]).
    pub fn envelope(&self) -> crate::TaskEnvelope {
        crate::TaskEnvelope {
            correlation_id: self.id,
            mandate: self.mandate.clone(),
            max_ticks: self.max_ticks,
            user_id: Some(self.user_id.clone()),
            submitted_at: Some(self.created_at),
            v: Some(crate::envelope::ENVELOPE_VERSION),
        }
    }

    /// The task's first record, `in_queue` with nothing used: what submit and adopt write,
    /// and (as [`TaskRecord::to_response`]) the body of the `202`.
    pub fn record(&self, quota_key: Option<String>) -> TaskRecord {
        let now = rfc3339(self.created_at);
        TaskRecord {
            id: self.id,
            user_id: self.user_id.clone(),
            status: TaskStatus::InQueue,
            mandate: self.mandate.clone(),
            max_ticks: self.max_ticks,
            tick: None,
            ticks_used: 0,
            result: None,
            error: None,
            attempt: 0,
            created_at: now.clone(),
            updated_at: now,
            started_at: None,
            finished_at: None,
            worker_id: None,
            cancel_requested: false,
            quota_key,
            webhook_url: self.webhook_url.clone(),
        }
    }
}

fn parse_submit_reply(reply: &[String]) -> Result<SubmitOutcome, StoreError> {
    let bad = || StoreError::Reply(format!("{reply:?}"));
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    Ok(match reply {
        [k, n] if k == "accepted" => SubmitOutcome::Accepted { remaining: u64::try_from(num(n)?).ok() },
        [k, n] if k == "over_quota" => SubmitOutcome::OverQuota { remaining: u64::try_from(num(n)?).unwrap_or(0) },
        [k, n] if k == "rate_limited" => {
            SubmitOutcome::RateLimited { retry_after: Duration::from_millis(u64::try_from(num(n)?).unwrap_or(0)) }
        }
        [k, n] if k == "too_many_active" => {
            SubmitOutcome::TooManyActive { active: u64::try_from(num(n)?).unwrap_or(0) }
        }
        [k, v] if k == "duplicate" => SubmitOutcome::Duplicate(Claim::parse(v).ok_or_else(bad)?),
        _ => return Err(bad()),
    })
}

/// The hash fields of a new record, as submit.lua and adopt.lua `HSET` them.
fn new_record_fields(args: &mut Vec<String>, rec: &TaskRecord) {
    let max_ticks = rec.max_ticks.to_string();
    let fields = [
        ("user_id", rec.user_id.as_str()),
        ("status", rec.status.as_str()),
        ("mandate", rec.mandate.as_str()),
        ("max_ticks", max_ticks.as_str()),
        ("attempt", "0"),
        ("ticks_used", "0"),
        ("cancel_requested", "0"),
        ("created_at", rec.created_at.as_str()),
        ("updated_at", rec.updated_at.as_str()),
    ];
    for (k, v) in fields {
        args.extend([k.to_owned(), v.to_owned()]);
    }
    for (k, v) in [("quota_key", &rec.quota_key), ("webhook_url", &rec.webhook_url)] {
        if let Some(v) = v {
            args.extend([k.to_owned(), v.clone()]);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    /// Equal for equal requests (hex SHA-256 of the normalised request).
    pub fingerprint: String,
}

/// Per-user admission limits checked by [`TaskStore::submit`] in one script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Ticks per UTC day; ≤ 0 = unlimited.
    pub daily_ticks: i64,
    /// Submissions per minute; 0 = off.
    pub rate_per_minute: u32,
    pub burst: u32,
    /// Non-terminal tasks per user; 0 = off.
    pub max_active: u32,
    pub idempotency_ttl: Duration,
}

impl Limits {
    /// No limit at all (tests, benchmarks).
    pub const NONE: Self = Self {
        daily_ticks: 0,
        rate_per_minute: 0,
        burst: 1,
        max_active: 0,
        idempotency_ttl: Duration::from_secs(86_400),
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// `remaining` is `None` when the user has no daily limit.
    Accepted {
        remaining: Option<u64>,
    },
    OverQuota {
        remaining: u64,
    },
    RateLimited {
        retry_after: Duration,
    },
    TooManyActive {
        active: u64,
    },
    /// The idempotency key was used before; nothing was written.
    Duplicate(Claim),
}

/// What an idempotency key already stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub task_id: TaskId,
    pub fingerprint: String,
    /// The broker has confirmed the first submission's envelope.
    pub confirmed: bool,
}

impl Claim {
    fn value(confirmed: bool, id: TaskId, fingerprint: &str) -> String {
        format!("{}:{id}:{fingerprint}", if confirmed { "done" } else { "pending" })
    }

    fn parse(v: &str) -> Option<Self> {
        let mut parts = v.splitn(3, ':');
        let confirmed = match parts.next()? {
            "done" => true,
            "pending" => false,
            _ => return None,
        };
        let task_id = parts.next()?.parse().ok()?;
        Some(Self { task_id, fingerprint: parts.next()?.to_owned(), confirmed })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Missing,
    Terminal(TaskStatus),
    /// Was queued: cancelled now, quota refunded.
    Cancelled,
    /// Is running: the agent stops at its next tick boundary.
    Requested,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    Missing,
    Terminal(TaskStatus),
    GaveUp { attempts: u32 },
    Claimed { attempt: u32 },
}

/// What [`TaskStore::take_over`] answers: [`ClaimOutcome`] with, on a claim, what the run
/// needs, read in the claim's own step.
#[derive(Debug, Clone)]
pub enum Takeover {
    Missing,
    Terminal(TaskStatus),
    GaveUp { attempts: u32 },
    Claimed(Box<Claimed>),
}

#[derive(Debug, Clone)]
pub struct Claimed {
    /// The fencing token.
    pub attempt: u32,
    /// The record as the claim left it (`in_progress`, this attempt).
    pub record: TaskRecord,
    /// The loop state the last recorded tick left, as the new attempt took over.
    pub checkpoint: Option<String>,
}

/// Whose task a delivery expects to claim: the keys of the finishing branches of the claim
/// (quota, user tasks, active set) are named from it. A wrong guess costs a second call,
/// never a write under the wrong keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub user_id: String,
    pub quota_key: Option<String>,
}

impl Owner {
    pub fn of(rec: &TaskRecord) -> Self {
        Self { user_id: rec.user_id.clone(), quota_key: rec.quota_key.clone() }
    }
}

/// What the agent's terminal writes (claim's and finish's) do with the task's Redis
/// memories (`memory:{id}`), in the same step as the terminal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryCleanup {
    /// Not ours to touch: no Redis memory store (Qdrant), or not the agent.
    #[default]
    Leave,
    Delete,
    /// Keep them this long after the end (`MEMORY_RETENTION_SECONDS`).
    Retain(Duration),
}

impl MemoryCleanup {
    fn arg(self) -> String {
        match self {
            Self::Leave => String::new(),
            Self::Delete => "0".to_owned(),
            Self::Retain(d) => d.as_secs().max(1).to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressOutcome {
    Continue,
    CancelRequested,
    /// A newer delivery owns the task; this run must stop without writing.
    Fenced,
    /// The record is gone (a Redis that lost its data): not a fence, nobody else owns it.
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    Written,
    /// Already terminal, or fenced by a newer delivery.
    Refused,
    /// The record is gone.
    Missing,
}

/// How a run ended, as written by [`TaskStore::finish`].
#[derive(Debug, Clone)]
pub struct Finish {
    pub status: TaskStatus,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub ticks_used: Option<u32>,
}

/// One page of a user's tasks, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub tasks: Vec<TaskRecord>,
    pub next_cursor: Option<String>,
}

#[derive(Clone)]
pub struct TaskStore {
    conn: ConnectionManager,
    keys: Keys,
    record_ttl: Duration,
    memory: MemoryCleanup,
}

impl TaskStore {
    pub fn new(conn: ConnectionManager, keys: Keys, record_ttl: Duration) -> Self {
        Self { conn, keys, record_ttl, memory: MemoryCleanup::Leave }
    }

    /// The store the agent writes with when task memories live in Redis: its claim and
    /// finish forget them in the same step as the terminal status.
    #[must_use]
    pub fn with_memory_cleanup(mut self, memory: MemoryCleanup) -> Self {
        self.memory = memory;
        self
    }

    pub fn memory_cleanup(&self) -> MemoryCleanup {
        self.memory
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn ttl(&self) -> u64 {
        self.record_ttl.as_secs().max(1)
    }

    pub(crate) fn record_ttl_secs(&self) -> u64 {
        self.ttl()
    }

    /// The quota counter a submission made at `at` reserves from.
    pub fn quota_key(&self, user_id: &str, at: DateTime<Utc>) -> String {
        self.keys.quota(user_id, &utc_day(at))
    }

    /// Admits the task against `limits` (idempotency, rate, active cap, quota) and creates the
    /// `in_queue` record, atomically; nothing is written unless it is accepted (a rate-limit
    /// slot is spent by every attempt that passes the rate check).
    pub async fn submit(&self, task: &NewTask, limits: &Limits) -> Result<SubmitOutcome, StoreError> {
        let mut outcomes = self.submit_many(std::slice::from_ref(task), limits).await?;
        outcomes.pop().unwrap_or_else(|| Err(StoreError::Reply("no outcome".into())))
    }

    /// [`Self::submit`] for several tasks in one script call: each is admitted in turn, as if
    /// on its own, and gets its own outcome, in order. An `Err` for the whole call means
    /// none, some or all of them may have been written (an undo is then due for each).
    pub async fn submit_many(
        &self,
        tasks: &[NewTask],
        limits: &Limits,
    ) -> Result<Vec<Result<SubmitOutcome, StoreError>>, StoreError> {
        let mut inv = SUBMIT.prepare_invoke();
        let mut args: Vec<String> = Vec::with_capacity(40);
        for task in tasks {
            args.clear();
            self.submit_keys_and_args(&mut inv, &mut args, task, limits);
            inv.arg(args.len()).arg(&args);
        }
        let replies: Vec<Vec<String>> = inv.invoke_async(&mut self.conn.clone()).await?;
        if replies.len() != tasks.len() {
            return Err(StoreError::Reply(format!("{} replies for {} submissions", replies.len(), tasks.len())));
        }
        Ok(replies.iter().map(|r| parse_submit_reply(r)).collect())
    }

    fn submit_keys_and_args(&self, inv: &mut Invocation<'_>, args: &mut Vec<String>, task: &NewTask, limits: &Limits) {
        let created_ms = task.created_at.timestamp_millis();
        let ttl_ms = i64::try_from(self.record_ttl.as_millis()).unwrap_or(i64::MAX);
        let quota_key = self.quota_key(&task.user_id, task.created_at);
        // The counter outlives its day by an hour so late refunds still find it.
        let quota_ttl = seconds_to_utc_midnight(task.created_at) + 3600;
        let (claim_key, claim) = match &task.idempotency {
            Some(i) => (self.keys.idempotency(&task.user_id, &i.key), Claim::value(false, task.id, &i.fingerprint)),
            None => (self.keys.idempotency(&task.user_id, ""), String::new()),
        };
        let emission_ms =
            if limits.rate_per_minute == 0 { 0 } else { 60_000u64.div_ceil(u64::from(limits.rate_per_minute)) };
        inv.key(self.keys.task(task.id))
            .key(self.keys.user_tasks(&task.user_id))
            .key(&quota_key)
            .key(self.keys.events(task.id))
            .key(claim_key)
            .key(self.keys.rate(&task.user_id))
            .key(self.keys.active(&task.user_id))
            .key(self.keys.unconfirmed());
        args.extend([
            limits.daily_ticks.to_string(),
            task.max_ticks.to_string(),
            quota_ttl.to_string(),
            self.ttl().to_string(),
            created_ms.to_string(),
            task.id.to_string(),
            rfc3339(task.created_at),
            created_ms.saturating_sub(ttl_ms).to_string(),
            claim,
            limits.idempotency_ttl.as_secs().max(1).to_string(),
            emission_ms.to_string(),
            limits.burst.max(1).to_string(),
            limits.max_active.to_string(),
            self.keys.task_prefix(),
        ]);
        new_record_fields(args, &task.record(Some(quota_key)));
    }

    /// Ends a submission whose envelope the broker never confirmed: the record is marked
    /// `failed` (so a message that did land late is acked without running) and the whole
    /// reservation is refunded — unless an agent already claimed it, which then owns it.
    /// Also safe when the record was never created (the submit reply was lost).
    pub async fn abort_submit(&self, task: &NewTask) -> Result<bool, StoreError> {
        let quota = self.quota_key(&task.user_id, task.created_at);
        let mut inv = self.finishing(&ABORT_SUBMIT, task.id, &task.user_id, Some(&quota));
        inv.key(self.keys.unconfirmed())
            .arg(NOT_ENQUEUED)
            .arg(rfc3339(Utc::now()))
            .arg(self.ttl())
            .arg(task.id.to_string());
        let aborted: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(aborted == 1)
    }

    /// Creates an `in_queue` record for an envelope that has none; false if one exists.
    pub async fn adopt(&self, env: &crate::TaskEnvelope) -> Result<bool, StoreError> {
        let task = NewTask::from_envelope(env);
        let rec = task.record(None);
        let mut inv = ADOPT.prepare_invoke();
        inv.key(self.keys.task(task.id))
            .key(self.keys.user_tasks(&task.user_id))
            .key(self.keys.events(task.id))
            .arg(self.ttl())
            .arg(task.created_at.timestamp_millis())
            .arg(task.id.to_string())
            .arg(&rec.created_at);
        let mut fields = Vec::with_capacity(22);
        new_record_fields(&mut fields, &rec);
        inv.arg(fields);
        let created: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(created == 1)
    }

    pub async fn get(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let h: HashMap<String, String> = self.conn.clone().hgetall(self.keys.task(id)).await?;
        Ok(TaskRecord::from_hash(id, h)?)
    }

    /// The caller's tasks, newest first. The cursor is `{score}:{id}` of the last item
    /// returned; ties on the millisecond are resolved by id, the set's own order.
    pub async fn list(&self, user_id: &str, limit: usize, cursor: Option<&str>) -> Result<Page, StoreError> {
        let key = self.keys.user_tasks(user_id);
        let mut conn = self.conn.clone();
        let (max, after) = match cursor.and_then(parse_cursor) {
            Some((score, id)) => (score.to_string(), Some((score, id))),
            None => ("+inf".to_owned(), None),
        };
        let ties: usize = match &after {
            Some((score, _)) => conn.zcount(&key, *score, *score).await?,
            None => 0,
        };
        let fetched: Vec<(String, i64)> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(&key)
            .arg(&max)
            .arg("-inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + ties + 1)
            .query_async(&mut conn)
            .await?;
        let candidates = fetched.into_iter().filter(|(id, score)| match &after {
            // The set orders equal scores by member, descending; skip up to the cursor.
            Some((s, last)) => *score < *s || (*score == *s && id.as_str() < last.as_str()),
            None => true,
        });
        let mut stale = Vec::new();
        let mut page = Vec::new();
        for (id, score) in candidates {
            match id.parse::<TaskId>() {
                Ok(task_id) => page.push((task_id, id, score)),
                Err(_) => stale.push(id),
            }
        }
        // One round trip for the whole page, not one per task.
        let mut pipe = redis::pipe();
        for (task_id, _, _) in &page {
            pipe.hgetall(self.keys.task(*task_id));
        }
        let hashes: Vec<HashMap<String, String>> =
            if page.is_empty() { Vec::new() } else { pipe.query_async(&mut conn).await? };
        let mut tasks = Vec::with_capacity(limit);
        let mut last = None;
        let mut more = false;
        for ((task_id, id, score), hash) in page.into_iter().zip(hashes) {
            if tasks.len() == limit {
                more = true;
                break;
            }
            match TaskRecord::from_hash(task_id, hash)? {
                Some(rec) => {
                    last = Some(format!("{score}:{id}"));
                    tasks.push(rec);
                }
                None => stale.push(id),
            }
        }
        if !stale.is_empty() {
            let _: i64 = conn.zrem(&key, stale).await?;
        }
        Ok(Page { tasks, next_cursor: if more { last } else { None } })
    }

    /// An invocation of a script that may end the task, with the KEYS layout the prelude expects.
    /// A script with the prelude's keys for task `id` of `user_id`, whose reservation (if
    /// any) was taken from `quota_key`.
    pub(crate) fn finishing<'s>(
        &self,
        script: &'s Lua,
        id: TaskId,
        user_id: &str,
        quota_key: Option<&str>,
    ) -> Invocation<'s> {
        let quota = quota_key.map_or_else(|| self.keys.quota(user_id, "unknown"), str::to_owned);
        let mut inv = script.prepare_invoke();
        inv.key(self.keys.task(id))
            .key(quota)
            .key(self.keys.events(id))
            .key(self.keys.checkpoint(id))
            .key(self.keys.user_tasks(user_id))
            .key(self.keys.active(user_id))
            .key(self.keys.webhooks_due());
        inv
    }

    pub(crate) fn finishing_rec<'s>(&self, script: &'s Lua, rec: &TaskRecord) -> Invocation<'s> {
        self.finishing(script, rec.id, &rec.user_id, rec.quota_key.as_deref())
    }

    pub async fn cancel(&self, rec: &TaskRecord) -> Result<CancelOutcome, StoreError> {
        let mut inv = self.finishing_rec(&CANCEL, rec);
        inv.arg(rfc3339(Utc::now())).arg(self.ttl());
        let reply: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        match reply.as_slice() {
            [m] if m == "missing" => Ok(CancelOutcome::Missing),
            [c] if c == "cancelled" => Ok(CancelOutcome::Cancelled),
            [r] if r == "requested" => Ok(CancelOutcome::Requested),
            [t, st] if t == "terminal" => Ok(CancelOutcome::Terminal(parse_status(st)?)),
            other => Err(StoreError::Reply(format!("{other:?}"))),
        }
    }

    /// Claims the task for a new attempt of `rec` (see [`TaskStore::take_over`]).
    pub async fn claim(
        &self,
        rec: &TaskRecord,
        worker_id: &str,
        max_deliveries: u32,
    ) -> Result<ClaimOutcome, StoreError> {
        Ok(match self.take_over(rec.id, &Owner::of(rec), worker_id, max_deliveries).await? {
            Takeover::Missing => ClaimOutcome::Missing,
            Takeover::Terminal(st) => ClaimOutcome::Terminal(st),
            Takeover::GaveUp { attempts } => ClaimOutcome::GaveUp { attempts },
            Takeover::Claimed(c) => ClaimOutcome::Claimed { attempt: c.attempt },
        })
    }

    /// A delivery takes task `id` over: `attempt` += 1 (the fencing token), and in the same
    /// step the record and the checkpoint the new attempt resumes from, so a delivery needs
    /// no read of its own. Cancels a task whose cancel was requested and fails one whose
    /// deliveries reached `max_deliveries`; a terminal record is left as it is (its memories
    /// forgotten, as [`TaskStore::with_memory_cleanup`] says). `owner` names the keys those
    /// endings refund and release; when it does not match the record, nothing is written
    /// and the call is made again with the record's owner (one more round trip).
    pub async fn take_over(
        &self,
        id: TaskId,
        owner: &Owner,
        worker_id: &str,
        max_deliveries: u32,
    ) -> Result<Takeover, StoreError> {
        let mut owner = owner.clone();
        // A rekey names the record's own owner, so a second one cannot happen unless the
        // record changed hands in between; a few tries bound even that.
        for _ in 0..3 {
            let mut inv = self.finishing(&CLAIM, id, &owner.user_id, owner.quota_key.as_deref());
            inv.key(self.keys.memory(id))
                .arg(worker_id)
                .arg(rfc3339(Utc::now()))
                .arg(max_deliveries)
                .arg(self.ttl())
                .arg(&owner.user_id)
                .arg(owner.quota_key.as_deref().unwrap_or(""))
                .arg(self.memory.arg());
            let reply: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
            let bad = || StoreError::Reply(format!("{:?}", &reply[..reply.len().min(4)]));
            let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
            let outcome = match reply.as_slice() {
                [m] if m == "missing" => Takeover::Missing,
                [t, st] if t == "terminal" => Takeover::Terminal(parse_status(st)?),
                [g, n] if g == "gave_up" => Takeover::GaveUp { attempts: num(n)? },
                [r, user, quota] if r == "rekey" => {
                    owner = Owner { user_id: user.clone(), quota_key: (!quota.is_empty()).then(|| quota.clone()) };
                    continue;
                }
                [c, n, has, cp, fields @ ..] if c == "claimed" && fields.len() % 2 == 0 => {
                    let attempt = num(n)?;
                    let checkpoint = (has == "1").then(|| cp.clone());
                    let hash: HashMap<String, String> =
                        fields.chunks_exact(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect();
                    let record = TaskRecord::from_hash(id, hash)?.ok_or_else(bad)?;
                    Takeover::Claimed(Box::new(Claimed { attempt, record, checkpoint }))
                }
                _ => return Err(bad()),
            };
            return Ok(outcome);
        }
        Err(StoreError::Reply("the task's owner kept changing during the claim".into()))
    }

    /// Records tick `tick` (1-based count of finished ticks) and the loop checkpoint.
    pub async fn progress(
        &self,
        rec: &TaskRecord,
        attempt: u32,
        tick: u32,
        action: &str,
        checkpoint: &str,
    ) -> Result<ProgressOutcome, StoreError> {
        let mut inv = self.finishing_rec(&PROGRESS, rec);
        inv.arg(attempt).arg(tick).arg(tick).arg(rfc3339(Utc::now())).arg(action).arg(checkpoint).arg(self.ttl());
        let reply: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(match reply {
            -2 => ProgressOutcome::Missing,
            -1 => ProgressOutcome::Fenced,
            1 => ProgressOutcome::CancelRequested,
            _ => ProgressOutcome::Continue,
        })
    }

    /// Writes a terminal status, and in the same step forgets the task's memories as
    /// [`TaskStore::with_memory_cleanup`] says. `attempt: None` skips the fencing check (for
    /// envelopes that never ran). A refused write (fenced, or already terminal) touches
    /// nothing.
    pub async fn finish(
        &self,
        rec: &TaskRecord,
        attempt: Option<u32>,
        fin: &Finish,
    ) -> Result<FinishOutcome, StoreError> {
        debug_assert!(fin.status.is_terminal());
        let result = fin.result.as_ref().map(|r| r.to_string()).unwrap_or_default();
        let mut inv = self.finishing_rec(&FINISH, rec);
        inv.key(self.keys.memory(rec.id))
            .arg(attempt.map_or_else(|| "*".to_owned(), |a| a.to_string()))
            .arg(fin.status.as_str())
            .arg(result)
            .arg(fin.error.clone().unwrap_or_default())
            .arg(fin.ticks_used.map(|t| t.to_string()).unwrap_or_default())
            .arg(rfc3339(Utc::now()))
            .arg(self.ttl())
            .arg(self.memory.arg());
        let written: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(match written {
            1 => FinishOutcome::Written,
            -1 => FinishOutcome::Missing,
            _ => FinishOutcome::Refused,
        })
    }

    pub async fn checkpoint(&self, id: TaskId) -> Result<Option<String>, StoreError> {
        Ok(self.conn.clone().get(self.keys.checkpoint(id)).await?)
    }
}

/// This module's scripts, for [`crate::preload`].
pub(crate) fn scripts() -> [&'static Lua; 7] {
    [&SUBMIT, &ADOPT, &ABORT_SUBMIT, &CANCEL, &CLAIM, &PROGRESS, &FINISH]
}

fn parse_status(s: &str) -> Result<TaskStatus, StoreError> {
    s.parse().map_err(StoreError::Reply)
}

pub fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (score, id) = c.split_once(':')?;
    id.parse::<TaskId>().ok()?;
    Some((score.parse().ok()?, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_claims_round_trip() {
        let id = TaskId::new();
        for confirmed in [false, true] {
            let v = Claim::value(confirmed, id, "ab12");
            assert_eq!(Claim::parse(&v), Some(Claim { task_id: id, fingerprint: "ab12".into(), confirmed }));
        }
        assert_eq!(Claim::parse("maybe:x:y"), None);
        assert_eq!(Claim::parse("done:not-a-uuid:y"), None);
    }

    #[test]
    fn cursor_parsing_rejects_garbage() {
        assert!(parse_cursor("12:6f1c1f0e-8d3a-4c1b-9a57-3f2e4f0a9b11").is_some());
        assert!(parse_cursor("x:6f1c1f0e-8d3a-4c1b-9a57-3f2e4f0a9b11").is_none());
        assert!(parse_cursor("12:nope").is_none());
        assert!(parse_cursor("").is_none());
    }
}
