//! A stopped task admitted again, by its owner (extend, retry) or an operator (redrive,
//! bulk retry): the store's admission (`readmit.lua`), then the publish of the envelope with
//! the new enqueue number through [`Submissions::resume`], the path a decided tool call
//! takes. Its crash windows are that path's: killed after the admission and before the
//! confirm, the task stays marked resuming and the reconciler publishes it; a late copy of an
//! earlier enqueue is stale at the claim and acked unrun.

use proto::store::{Readmission, ReadmitOutcome};
use proto::task::{TaskRecord, TaskResponse};

use super::{ACTIVE_RETRY_AFTER_SECONDS, Submissions};
use crate::problem::ApiError;

/// What an admission again ended as, for a bulk caller that reports per task.
pub enum Readmitted {
    /// Back in the queue (published, or left to the reconciler when the broker did not
    /// confirm).
    Queued(TaskResponse),
    /// This operation already admitted it before (a repeated bulk call).
    AlreadyDone(TaskResponse),
}

impl Submissions {
    /// Admits `rec` again (`op`: a bulk operation's id, so a repeated call admits each task
    /// once). The caller checked who may.
    pub async fn readmit(&self, rec: &TaskRecord, how: Readmission, op: Option<&str>) -> Result<Readmitted, ApiError> {
        let limits = &self.0.limits;
        let seq = match self.0.store.readmit(rec, how, limits, op).await? {
            ReadmitOutcome::Admitted { seq } => seq,
            ReadmitOutcome::AlreadyDone(_) => {
                let now = self.0.store.get(rec.id).await?.ok_or(ApiError::NotFound)?;
                return Ok(Readmitted::AlreadyDone(now.to_response()));
            }
            refused => return Err(refusal(refused, how, limits)),
        };
        let now = self.0.store.get(rec.id).await?.ok_or(ApiError::NotFound)?;
        self.resume(&now, seq).await;
        metrics::counter!("gateway_tasks_readmitted_total", "how" => how_label(how)).increment(1);
        tracing::info!(correlation_id = %rec.id, how = how_label(how), seq, "task admitted again");
        Ok(Readmitted::Queued(now.to_response()))
    }
}

fn how_label(how: Readmission) -> &'static str {
    match how {
        Readmission::Extend { .. } => "extend",
        Readmission::Retry => "retry",
        Readmission::Restart => "restart",
    }
}

fn refusal(outcome: ReadmitOutcome, how: Readmission, limits: &proto::store::Limits) -> ApiError {
    let tomorrow = || proto::time::seconds_to_utc_midnight(chrono::Utc::now());
    match outcome {
        ReadmitOutcome::Missing => ApiError::NotFound,
        ReadmitOutcome::WrongState(st) => ApiError::Conflict(match how {
            Readmission::Extend { .. } => format!("only an incomplete task can be extended; this one is {st}"),
            Readmission::Retry | Readmission::Restart => {
                format!("only a failed or cancelled task can be retried; this one is {st}")
            }
        }),
        ReadmitOutcome::CheckpointGone => ApiError::Gone(
            "the task's checkpoint has expired (CHECKPOINT_RETENTION_SECONDS); retry it with {\"from\": \"start\"}"
                .into(),
        ),
        ReadmitOutcome::NotRaised(field) => ApiError::Unprocessable(format!(
            "{field}: give a budget higher than the task's current one (the run stops at it)"
        )),
        ReadmitOutcome::RateLimited { retry_after } => ApiError::TooManyRequests {
            detail: format!("too many submissions: at most {} a minute", limits.rate_per_minute),
            retry_after: retry_after.as_millis().div_ceil(1000).max(1) as u64,
        },
        ReadmitOutcome::TooManyActive { active } => ApiError::TooManyRequests {
            detail: format!(
                "{active} of your tasks are still queued or running, the most allowed at once is {}",
                limits.max_active
            ),
            retry_after: ACTIVE_RETRY_AFTER_SECONDS,
        },
        ReadmitOutcome::OverQuota { remaining } => ApiError::TooManyRequests {
            detail: format!("daily tick quota exceeded: {remaining} of {} ticks left today", limits.daily_ticks),
            retry_after: tomorrow(),
        },
        ReadmitOutcome::OverTokenQuota { remaining } => ApiError::TooManyRequests {
            detail: format!("daily token quota exceeded: {remaining} of {} tokens left today", limits.daily_tokens),
            retry_after: tomorrow(),
        },
        ReadmitOutcome::Admitted { .. } | ReadmitOutcome::AlreadyDone(_) => {
            ApiError::Unexpected(anyhow::anyhow!("an admission is not a refusal"))
        }
    }
}
