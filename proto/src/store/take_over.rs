//! A delivery takes its task over in one call, from its envelope: the claim script makes
//! the new attempt the owner (its number is the fencing token) and reads, in the same step,
//! what the run resumes from; the call adopts an envelope that has no record and corrects a
//! wrong guess of the owner.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::Utc;

use super::new_task::new_record_fields;
use super::{NewTask, StoreError, TaskStore, parse_status, with_prelude};
use crate::TaskEnvelope;
use crate::domain::TaskId;
use crate::lua::Lua;
use crate::task::{TaskRecord, TaskStatus};
use crate::time::rfc3339;

static ADOPT: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("../lua/adopt.lua")));
static CLAIM: LazyLock<Lua> = LazyLock::new(|| with_prelude(include_str!("../lua/claim.lua")));

pub(super) fn scripts() -> [&'static Lua; 2] {
    [&ADOPT, &CLAIM]
}

/// What [`TaskStore::take_over`] answers: the run, or why there is none.
#[derive(Debug, Clone)]
pub enum Takeover {
    /// The record vanished between its adoption and the claim.
    Missing,
    /// Already ended (a cancel requested while no run was alive ends it here).
    Terminal(TaskStatus),
    /// Failed here: its deliveries reached the limit.
    GaveUp {
        attempts: u32,
    },
    /// A copy of an earlier enqueue (the task was put back on the queue since): ack unrun.
    Stale,
    /// Parked on its owner's decision: this delivery was already handed back.
    Parked,
    Claimed(Box<Claimed>),
}

/// The run a delivery took over.
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
struct Owner {
    user_id: String,
    quota_key: Option<String>,
}

impl Owner {
    /// The owner the envelope's record should have: the gateway's envelopes carry the user
    /// and the submission time the quota was reserved by; an adopted record has the
    /// envelope's user (or none) and no reservation.
    fn expected(store: &TaskStore, envelope: &TaskEnvelope) -> Self {
        match (&envelope.user_id, envelope.submitted_at) {
            (Some(user), Some(at)) => Self { user_id: user.clone(), quota_key: Some(store.quota_key(user, at)) },
            (user, _) => Self { user_id: user.clone().unwrap_or_default(), quota_key: None },
        }
    }
}

impl TaskStore {
    /// A delivery of `envelope` takes its task over: `attempt` += 1 (the fencing token),
    /// and in the same step the record and the checkpoint the new attempt resumes from, so a
    /// delivery needs no read of its own. Cancels a task whose cancel was requested and fails
    /// one whose deliveries reached `max_deliveries`; a terminal record is left as it is (its
    /// memories forgotten, as [`TaskStore::with_memory_cleanup`] says).
    ///
    /// One round trip on the common path. An envelope without a record (another producer
    /// published it) gets one first ([`Self::adopt`]). Those endings refund and release keys
    /// named by the owner the envelope implies; when that is not the record's owner, the
    /// script writes nothing and the claim is made again with the record's.
    pub async fn take_over(
        &self,
        envelope: &TaskEnvelope,
        worker_id: &str,
        max_deliveries: u32,
    ) -> Result<Takeover, StoreError> {
        let id = envelope.correlation_id;
        let owner = Owner::expected(self, envelope);
        let first = self.claim_as(id, envelope.seq, &owner, worker_id, max_deliveries).await?;
        if !matches!(first, Takeover::Missing) {
            return Ok(first);
        }
        if self.adopt(envelope).await? {
            tracing::info!("envelope had no task record; created one");
        }
        self.claim_as(id, envelope.seq, &owner, worker_id, max_deliveries).await
    }

    /// Creates an `in_queue` record for an envelope that has none; false if one exists.
    pub async fn adopt(&self, env: &TaskEnvelope) -> Result<bool, StoreError> {
        let task = NewTask::from_envelope(env);
        let mut inv = ADOPT.prepare_invoke();
        inv.key(self.keys.task(task.id))
            .key(self.keys.user_tasks(&task.user_id))
            .key(self.keys.events(task.id))
            .arg(self.ttl())
            .arg(task.created_at.timestamp_millis())
            .arg(task.id.to_string())
            .arg(rfc3339(task.created_at));
        let mut fields = Vec::with_capacity(22);
        new_record_fields(&mut fields, &task);
        inv.arg(fields);
        let created: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(created == 1)
    }

    /// claim.lua, expecting `owner`, then once more with the record's own owner if the
    /// script says the guess was wrong.
    async fn claim_as(
        &self,
        id: TaskId,
        seq: u32,
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
                .arg(self.memory.arg())
                .arg(seq);
            let reply: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
            let bad = || StoreError::Reply(format!("{:?}", &reply[..reply.len().min(4)]));
            let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
            let outcome = match reply.as_slice() {
                [m] if m == "missing" => Takeover::Missing,
                [s] if s == "stale" => Takeover::Stale,
                [p] if p == "parked" => Takeover::Parked,
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
}
