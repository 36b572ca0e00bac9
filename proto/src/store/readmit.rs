//! Recovery: a stopped task admitted again (`readmit.lua`), resuming from its checkpoint.
//! An owner extends an `incomplete` task or retries a `failed` or `cancelled` one; an
//! operator redrives a dead-lettered one or retries many. Each is an admission like a submit
//! (rate limit, active cap, tick and token quota) that puts the task back `in_queue` with the
//! next enqueue number and marks it resuming: the caller publishes and clears the mark with
//! [`TaskStore::resumed`], and the reconciler publishes again what stays marked — the same
//! path a decision on a parked call takes (`park.rs`).

use std::sync::LazyLock;
use std::time::Duration;

use chrono::Utc;

use super::{Limits, StoreError, TaskStore, parse_status, with_prelude};
use crate::lua::Lua;
use crate::task::{TaskRecord, TaskStatus};
use crate::time::{rfc3339, seconds_to_utc_midnight, utc_day};

static READMIT: LazyLock<Lua> =
    LazyLock::new(|| with_prelude(&format!("{}\n{}", super::ADMISSION, include_str!("../lua/readmit.lua"))));

pub(super) fn scripts() -> [&'static Lua; 1] {
    [&READMIT]
}

/// How a stopped task is admitted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readmission {
    /// An `incomplete` task, with a higher budget (at least one of the two).
    Extend { max_ticks: Option<u32>, max_tokens: Option<u64> },
    /// A `failed` or `cancelled` task, from its last checkpointed tick.
    Retry,
    /// A `failed` or `cancelled` task, from tick 1 (checkpoint and memories dropped).
    Restart,
}

impl Readmission {
    fn mode(self) -> &'static str {
        match self {
            Self::Extend { .. } => "extend",
            Self::Retry => "retry",
            Self::Restart => "restart",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadmitOutcome {
    Missing,
    /// Not possible from this status (extend needs `incomplete`, retry `failed` or
    /// `cancelled`).
    WrongState(TaskStatus),
    /// Its checkpoint expired (`CHECKPOINT_RETENTION_SECONDS`): only a restart is possible.
    CheckpointGone,
    /// This operation already admitted it (a repeated bulk call).
    AlreadyDone(TaskStatus),
    /// An extend that does not raise the named budget (or leaves out the one it stopped at).
    NotRaised(&'static str),
    RateLimited {
        retry_after: Duration,
    },
    TooManyActive {
        active: u64,
    },
    OverQuota {
        remaining: u64,
    },
    OverTokenQuota {
        remaining: u64,
    },
    /// Back in the queue: publish its envelope with this enqueue number.
    Admitted {
        seq: u32,
    },
}

impl TaskStore {
    /// Admits `rec` again as `how` says, against `limits`. `op` names a (bulk) operation: the
    /// same operation never admits a task twice, so an interrupted bulk call can be repeated.
    pub async fn readmit(
        &self,
        rec: &TaskRecord,
        how: Readmission,
        limits: &Limits,
        op: Option<&str>,
    ) -> Result<ReadmitOutcome, StoreError> {
        let now = Utc::now();
        let quota_key = self.quota_key(&rec.user_id, now);
        let (max_ticks, max_tokens) = match how {
            Readmission::Extend { max_ticks, max_tokens } => (max_ticks, max_tokens),
            Readmission::Retry | Readmission::Restart => (None, None),
        };
        let emission_ms =
            if limits.rate_per_minute == 0 { 0 } else { 60_000u64.div_ceil(u64::from(limits.rate_per_minute)) };
        let mut inv = self.finishing(&READMIT, rec.id, &rec.user_id, Some(&quota_key));
        inv.key(self.keys.resuming())
            .key(self.keys.rate(&rec.user_id))
            .key(self.keys.tokens(&rec.user_id, &utc_day(now)))
            .key(self.keys.memory(rec.id))
            .arg(how.mode())
            .arg(max_ticks.map(|n| n.to_string()).unwrap_or_default())
            .arg(max_tokens.map(|n| n.to_string()).unwrap_or_default())
            .arg(limits.daily_ticks)
            .arg(seconds_to_utc_midnight(now) + 3600)
            .arg(emission_ms)
            .arg(limits.burst.max(1))
            .arg(limits.max_active)
            .arg(self.keys.task_prefix())
            .arg(limits.daily_tokens)
            .arg(limits.token_estimate)
            .arg(rfc3339(now))
            .arg(now.timestamp_millis())
            .arg(self.ttl())
            .arg(op.unwrap_or(""));
        let reply: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        let bad = || StoreError::Reply(format!("{reply:?}"));
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
        Ok(match reply.as_slice() {
            [m] if m == "missing" => ReadmitOutcome::Missing,
            [g] if g == "gone" => ReadmitOutcome::CheckpointGone,
            [s, st] if s == "state" => ReadmitOutcome::WrongState(parse_status(st)?),
            [a, st] if a == "already" => ReadmitOutcome::AlreadyDone(parse_status(st)?),
            [n, f] if n == "not_raised" => {
                ReadmitOutcome::NotRaised(if f == "max_ticks" { "max_ticks" } else { "max_tokens" })
            }
            [r, ms] if r == "rate_limited" => {
                ReadmitOutcome::RateLimited { retry_after: Duration::from_millis(num(ms)?) }
            }
            [t, n] if t == "too_many_active" => ReadmitOutcome::TooManyActive { active: num(n)? },
            [o, n] if o == "over_quota" => ReadmitOutcome::OverQuota { remaining: num(n)? },
            [o, n] if o == "over_token_quota" => ReadmitOutcome::OverTokenQuota { remaining: num(n)? },
            [a, seq] if a == "admitted" => {
                ReadmitOutcome::Admitted { seq: u32::try_from(num(seq)?).map_err(|_| bad())? }
            }
            _ => return Err(bad()),
        })
    }
}
