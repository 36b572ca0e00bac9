//! Admission: a submission is admitted and its record created in one script, undone when
//! the broker never confirmed its envelope, and marked confirmed when it did.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::Utc;

use super::{NewTask, StoreError, TaskStore, with_prelude};
use crate::domain::TaskId;
use crate::lua::{Invocation, Lua};
use crate::time::{rfc3339, seconds_to_utc_midnight, utc_day};

static SUBMIT: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(&format!("{}\n{}", super::ADMISSION, include_str!("../lua/submit.lua"))));
static ABORT_SUBMIT: LazyLock<Lua> = LazyLock::new(|| with_prelude(include_str!("../lua/abort_submit.lua")));
static CONFIRM: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("../lua/confirm.lua")));

pub(super) fn scripts() -> [&'static Lua; 3] {
    [&SUBMIT, &ABORT_SUBMIT, &CONFIRM]
}

/// The error a never-confirmed submission ends with, whether the gateway's undo or the
/// reconciler closes it.
pub const NOT_ENQUEUED: &str = "not enqueued: the task queue was unavailable";

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
    /// Tokens per UTC day (`DAILY_TOKEN_LIMIT`); ≤ 0 = unlimited.
    pub daily_tokens: i64,
    /// What a task without a token budget reserves of the daily tokens
    /// (`TASK_TOKEN_ESTIMATE`).
    pub token_estimate: u64,
    /// How long a stopped task's checkpoint is kept for retry and extend
    /// (`CHECKPOINT_RETENTION_SECONDS`); zero keeps none.
    pub checkpoint_retention: Duration,
}

impl Limits {
    /// No limit at all (tests, benchmarks).
    pub const NONE: Self = Self {
        daily_ticks: 0,
        rate_per_minute: 0,
        burst: 1,
        max_active: 0,
        idempotency_ttl: Duration::from_secs(86_400),
        daily_tokens: 0,
        token_estimate: 0,
        checkpoint_retention: Duration::from_secs(7 * 86_400),
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
    OverTokenQuota {
        remaining: u64,
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
        [k, n] if k == "over_token_quota" => {
            SubmitOutcome::OverTokenQuota { remaining: u64::try_from(num(n)?).unwrap_or(0) }
        }
        [k, v] if k == "duplicate" => SubmitOutcome::Duplicate(Claim::parse(v).ok_or_else(bad)?),
        _ => return Err(bad()),
    })
}

impl TaskStore {
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
        // submit.lua's shared keys and arguments, once for the whole batch.
        inv.key(self.keys.unconfirmed()).key(self.keys.expiring()).key(self.keys.all_tasks());
        let emission_ms =
            if limits.rate_per_minute == 0 { 0 } else { 60_000u64.div_ceil(u64::from(limits.rate_per_minute)) };
        inv.arg(self.ttl())
            .arg(limits.idempotency_ttl.as_secs().max(1))
            .arg(emission_ms)
            .arg(limits.burst.max(1))
            .arg(limits.max_active)
            .arg(self.keys.task_prefix())
            .arg(limits.daily_ticks)
            .arg(limits.daily_tokens)
            .arg(limits.checkpoint_retention.as_secs())
            .arg(self.prune_before_ms(tasks.first().map_or_else(Utc::now, |t| t.created_at)));
        let mut args: Vec<String> = Vec::with_capacity(16);
        for task in tasks {
            self.submit_keys_and_args(&mut inv, &mut args, task, limits);
        }
        // Two strings per submission, flat (submit.lua).
        let replies: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        if replies.len() != 2 * tasks.len() {
            return Err(StoreError::Reply(format!("{} reply fields for {} submissions", replies.len(), tasks.len())));
        }
        Ok(replies.chunks_exact(2).map(parse_submit_reply).collect())
    }

    /// The indexes drop ids scored (created) before this, unix ms: their records have expired.
    fn prune_before_ms(&self, now: chrono::DateTime<Utc>) -> i64 {
        let ttl_ms = i64::try_from(self.record_ttl.as_millis()).unwrap_or(i64::MAX);
        now.timestamp_millis().saturating_sub(ttl_ms)
    }

    /// submit.lua's keys and counted arguments for one submission of a batch (`args` is
    /// scratch space, reused across the batch).
    fn submit_keys_and_args(&self, inv: &mut Invocation<'_>, args: &mut Vec<String>, task: &NewTask, limits: &Limits) {
        args.clear();
        let created_ms = task.created_at.timestamp_millis();
        // The counter outlives its day by an hour so late refunds still find it.
        let quota_ttl = seconds_to_utc_midnight(task.created_at) + 3600;
        // A key the script will not touch (no idempotency key, a limit that is off) is passed
        // empty: every argument costs Redis a Lua string.
        let (claim_key, claim) = match &task.idempotency {
            Some(i) => (self.keys.idempotency(&task.user_id, &i.key), Claim::value(false, task.id, &i.fingerprint)),
            None => (String::new(), String::new()),
        };
        let rate_key = if limits.rate_per_minute == 0 { String::new() } else { self.keys.rate(&task.user_id) };
        let tokens_key = if limits.daily_tokens <= 0 {
            String::new()
        } else {
            self.keys.tokens(&task.user_id, &utc_day(task.created_at))
        };
        inv.key(self.keys.task(task.id))
            .key(self.keys.user_tasks(&task.user_id))
            .key(self.quota_key(&task.user_id, task.created_at))
            .key(claim_key)
            .key(rate_key)
            .key(self.keys.active(&task.user_id))
            .key(tokens_key);
        args.extend([
            task.max_ticks.to_string(),
            quota_ttl.to_string(),
            created_ms.to_string(),
            task.id.to_string(),
            claim,
            task.max_tokens.unwrap_or(limits.token_estimate).to_string(),
            task.expires_at.map(|t| t.timestamp_millis().to_string()).unwrap_or_default(),
            task.user_id.clone(),
            task.mandate.clone(),
            rfc3339(task.created_at),
        ]);
        task.optional_record_fields(args);
        inv.arg(args.len()).arg(&*args);
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

    /// What [`Self::confirm_many`] needs of a submitted task.
    pub fn confirmation(&self, task: &NewTask) -> Confirmation {
        Confirmation {
            id: task.id,
            claim_key: task.idempotency.as_ref().map(|i| self.keys.idempotency(&task.user_id, &i.key)),
        }
    }

    /// Marks the publish of `task` confirmed. `false` when the record was already closed
    /// without running (the undo or the reconciler won): the client must then get a 503.
    pub async fn confirm(&self, task: &NewTask) -> Result<bool, StoreError> {
        let ok = self.confirm_many(&[self.confirmation(task)]).await?;
        Ok(ok.first() == Some(&true))
    }

    /// [`Self::confirm`] for several tasks in one script call, one answer per task in order.
    pub async fn confirm_many(&self, tasks: &[Confirmation]) -> Result<Vec<bool>, StoreError> {
        let mut inv = CONFIRM.prepare_invoke();
        inv.key(self.keys.unconfirmed());
        for t in tasks {
            inv.key(self.keys.task(t.id)).arg(t.id.to_string());
        }
        for t in tasks {
            inv.arg(t.claim_key.as_deref().unwrap_or(""));
        }
        let ok: Vec<i64> = inv.invoke_async(&mut self.conn.clone()).await?;
        if ok.len() != tasks.len() {
            return Err(StoreError::Reply(format!("{} answers for {} confirms", ok.len(), tasks.len())));
        }
        Ok(ok.into_iter().map(|v| v == 1).collect())
    }
}

/// A submitted task whose publish the broker confirmed ([`TaskStore::confirmation`]).
#[derive(Debug, Clone)]
pub struct Confirmation {
    pub id: TaskId,
    /// Its idempotency claim's name, turned from pending to done with the mark.
    claim_key: Option<String>,
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
}
