//! Submission, all-or-nothing: admit → publish → confirm, or undo. A caller gets the
//! task's `202` body only once Redis holds the record and the broker has confirmed its
//! envelope; every other ending is a [`SubmitError`], mapped to a problem in one `From`.
//!
//! - Admission (idempotency, rate limit, active cap, quota) and the record are one script
//!   call, group-committed across concurrent submissions (`runtime::group_commit`); so is the
//!   confirmed mark.
//! - [`publisher`]: the broker link, publishes with publisher confirms (and readiness).
//! - [`undo`]: a submission that was admitted but not confirmed is closed "not enqueued"
//!   and refunded, retried off the request path until the reconciler owns it.
//!
//! The publish and the confirm-or-undo after it run on a task of their own: a request
//! dropped mid-way (its deadline, a client that hung up, shutdown) must not strand a record
//! in `in_queue` with no message behind it and its quota reserved.

pub mod publisher;
mod readmit;
mod resume;
mod undo;

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use metrics::Histogram;
use proto::store::{Claim, Confirmation, Limits, NewTask, StoreError, SubmitOutcome, TaskStore};
use proto::task::{TaskResponse, TaskStatus};
use runtime::group_commit::GroupCommit;
use runtime::lifecycle::Stage;

use crate::config::Settings;
use crate::problem::ApiError;
pub use publisher::{PublishError, Publisher};
pub use readmit::Readmitted;

/// Submissions per script call at most, and such calls in flight at once (see group_commit).
/// One in flight: a batch gathers while the call ahead runs, so batches are larger and Redis
/// and the gateway pay per-call costs less often. Against two, `scripts/bench.sh` measured
/// 14 % less CPU per submission in total, a higher rate and no worse p99 (README, issue 25).
const SUBMIT_BATCH: usize = 64;
const SUBMIT_CALLS: usize = 1;
/// Confirmed marks per script call at most (a batch is whatever queued while the last ran).
const CONFIRM_BATCH: usize = 128;
/// Confirm calls in flight at once; a batch gathers only while all are out.
const CONFIRM_CALLS: usize = 1;
/// Tasks run for seconds to minutes; a slot is unlikely to free up much sooner.
const ACTIVE_RETRY_AFTER_SECONDS: u64 = 10;

/// Why a submission was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("daily tick quota exceeded")]
    OverQuota { remaining: u64, daily_limit: i64, reserving: u32, retry_after: u64 },
    #[error("submission rate limit")]
    RateLimited { per_minute: u32, burst: u32, retry_after: u64 },
    #[error("active-task cap")]
    TooManyActive { active: u64, max_active: u32 },
    #[error("daily token quota exceeded")]
    OverTokenQuota { remaining: u64, daily_limit: i64, reserving: u64, retry_after: u64 },
    /// The Idempotency-Key was used with a different request.
    #[error("idempotency key reused for another request")]
    KeyReused,
    /// The first request with this Idempotency-Key may still be publishing.
    #[error("idempotency key in flight")]
    InFlight,
    /// The broker did not take it (or the record was closed first); an undo is under way.
    #[error("not enqueued")]
    NotEnqueued,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::OverQuota { remaining, daily_limit, reserving, retry_after } => Self::TooManyRequests {
                detail: format!(
                    "daily tick quota exceeded: {remaining} of {daily_limit} ticks left today, this task reserves {reserving}"
                ),
                retry_after,
            },
            SubmitError::RateLimited { per_minute, burst, retry_after } => Self::TooManyRequests {
                detail: format!(
                    "too many submissions: at most {per_minute} a minute (bursts of {burst}); retry in {retry_after} s"
                ),
                retry_after,
            },
            SubmitError::TooManyActive { active, max_active } => Self::TooManyRequests {
                detail: format!(
                    "{active} of your tasks are still queued or running, the most allowed at once is {max_active}; \
                     wait for one to finish or cancel one"
                ),
                retry_after: ACTIVE_RETRY_AFTER_SECONDS,
            },
            SubmitError::OverTokenQuota { remaining, daily_limit, reserving, retry_after } => Self::TooManyRequests {
                detail: format!(
                    "daily token quota exceeded: {remaining} of {daily_limit} tokens left today, this task reserves {reserving}"
                ),
                retry_after,
            },
            SubmitError::KeyReused => Self::Unprocessable(
                "this Idempotency-Key was already used with a different request; use a new key for a new task".into(),
            ),
            SubmitError::InFlight => {
                Self::Conflict("a request with this Idempotency-Key is still being processed; retry shortly".into())
            }
            SubmitError::NotEnqueued => Self::Unavailable {
                detail: "the task queue is unavailable; nothing was enqueued and no quota was used, try again".into(),
                retry_after: 5,
            },
            SubmitError::Store(e) => e.into(),
        }
    }
}

/// The submission path: the store, the broker link and the two group commits.
#[derive(Clone)]
pub struct Submissions(Arc<Inner>);

struct Inner {
    store: TaskStore,
    publisher: Publisher,
    admits: GroupCommit<NewTask, SubmitOutcome>,
    confirms: GroupCommit<Confirmation, bool>,
    limits: Limits,
    /// The publishes and undos under way, each on a task of its own.
    in_flight: Stage,
    /// How long after its creation a submission's undo may still run: then the reconciler
    /// owns an unconfirmed record (`PUBLISH_TIMEOUT_MS + RECONCILE_GRACE_MS`).
    undo_window: Duration,
    /// How long after its creation an unconfirmed submission may still be closed by the
    /// reconciler (`PUBLISH_TIMEOUT_MS + RECONCILE_GRACE_MS` + a lease and a pass): until
    /// then a replay of its key is `409`, after it the record as it stands.
    replay_in_flight: Duration,
}

/// The submission's stages, timed in `gateway_submit_stage_seconds`.
#[derive(Clone, Copy)]
enum Timed {
    Store,
    Publish,
    Confirm,
}

/// Their histograms' handles, looked up once: the macro builds and hashes the series' key on
/// every call. (Made after the recorder is installed: the first submission comes after it.)
static STAGES: LazyLock<[Histogram; 3]> = LazyLock::new(|| {
    ["store", "publish", "confirm"].map(|stage| metrics::histogram!("gateway_submit_stage_seconds", "stage" => stage))
});

fn stage(timed: Timed, since: Instant) {
    STAGES[timed as usize].record(since.elapsed().as_secs_f64());
}

impl Submissions {
    /// Spawns the two group-commit workers on `commits`; publishes and undos run on
    /// `in_flight` (stopped first, so the workers still serve what they ask).
    pub fn new(settings: &Settings, store: TaskStore, publisher: Publisher, in_flight: Stage, commits: &Stage) -> Self {
        let limits = settings.admission;
        let admits = {
            let store = store.clone();
            GroupCommit::spawn(SUBMIT_BATCH, SUBMIT_CALLS, commits, move |tasks: Vec<NewTask>| {
                let store = store.clone();
                async move { store.submit_many(&tasks, &limits).await }
            })
        };
        let confirms = {
            let store = store.clone();
            GroupCommit::spawn(CONFIRM_BATCH, CONFIRM_CALLS, commits, move |tasks: Vec<Confirmation>| {
                let store = store.clone();
                async move { Ok(store.confirm_many(&tasks).await?.into_iter().map(Ok).collect()) }
            })
        };
        Self(Arc::new(Inner {
            store,
            publisher,
            admits,
            confirms,
            limits,
            in_flight,
            undo_window: settings.publish_timeout + settings.reconciler.grace,
            replay_in_flight: settings.publish_timeout + settings.reconciler.grace + settings.reconciler.interval * 4,
        }))
    }

    pub fn publisher(&self) -> &Publisher {
        &self.0.publisher
    }

    /// Admits `task`, publishes its envelope and marks it confirmed: the `202` body, or why
    /// not. An idempotent replay answers with the task the key created.
    pub async fn submit(&self, task: NewTask) -> Result<TaskResponse, SubmitError> {
        let stored = Instant::now();
        let outcome = match self.0.admits.call(task.clone()).await {
            Ok(outcome) => outcome,
            Err(e) => {
                // The script may have run with only its reply lost: undo it if it did.
                self.spawn_undo(task);
                return Err(e.into());
            }
        };
        stage(Timed::Store, stored);
        match outcome {
            SubmitOutcome::Accepted { .. } => {}
            SubmitOutcome::Duplicate(claim) => return self.replay(&task, &claim).await,
            SubmitOutcome::OverQuota { remaining } => {
                let retry_after = proto::time::seconds_to_utc_midnight(chrono::Utc::now());
                return Err(refused(
                    "quota",
                    SubmitError::OverQuota {
                        remaining,
                        daily_limit: self.0.limits.daily_ticks,
                        reserving: task.max_ticks,
                        retry_after,
                    },
                ));
            }
            SubmitOutcome::RateLimited { retry_after } => {
                let retry_after = retry_after.as_millis().div_ceil(1000).max(1) as u64;
                let (per_minute, burst) = (self.0.limits.rate_per_minute, self.0.limits.burst);
                return Err(refused("rate", SubmitError::RateLimited { per_minute, burst, retry_after }));
            }
            SubmitOutcome::TooManyActive { active } => {
                let max_active = self.0.limits.max_active;
                return Err(refused("active", SubmitError::TooManyActive { active, max_active }));
            }
            SubmitOutcome::OverTokenQuota { remaining } => {
                let retry_after = proto::time::seconds_to_utc_midnight(chrono::Utc::now());
                let reserving = task.max_tokens.unwrap_or(self.0.limits.token_estimate);
                let daily_limit = self.0.limits.daily_tokens;
                return Err(refused(
                    "tokens",
                    SubmitError::OverTokenQuota { remaining, daily_limit, reserving, retry_after },
                ));
            }
        }

        let envelope = task.envelope();
        let (published, answer) = tokio::sync::oneshot::channel();
        let (this, spawned) = (self.clone(), task.clone());
        self.0.in_flight.spawn(async move {
            let _ = published.send(this.publish_or_undo(&envelope, &spawned).await);
        });
        if !matches!(answer.await, Ok(true)) {
            return Err(SubmitError::NotEnqueued);
        }
        metrics::counter!("gateway_tasks_submitted_total").increment(1);
        tracing::info!(max_ticks = task.max_ticks, "task accepted");
        Ok(task.record(None).to_response())
    }

    /// A replayed `Idempotency-Key`: the task it created, unless the request differs or the
    /// first one may still be publishing.
    async fn replay(&self, task: &NewTask, claim: &Claim) -> Result<TaskResponse, SubmitError> {
        let mine = task.idempotency.as_ref().map(|i| i.fingerprint.as_str());
        if mine != Some(claim.fingerprint.as_str()) {
            return Err(SubmitError::KeyReused);
        }
        let rec = self.0.store.get(claim.task_id).await?.ok_or(SubmitError::InFlight)?;
        if !claim.confirmed {
            // Unconfirmed and still queued: the first request is publishing, or it was cut off
            // (its gateway died) and the reconciler has yet to close the record, which frees
            // the key. A `202` now could name a task the reconciler then fails without running
            // it; only once the reconciler had every chance does the record answer as it stands.
            let created = chrono::DateTime::parse_from_rfc3339(&rec.created_at).map(|t| t.to_utc()).ok();
            let deadline_passed = created.is_some_and(|t| {
                chrono::Utc::now() - t > chrono::Duration::from_std(self.0.replay_in_flight).unwrap_or_default()
            });
            if rec.status == TaskStatus::InQueue && !deadline_passed {
                return Err(SubmitError::InFlight);
            }
        }
        tracing::info!(correlation_id = %rec.id, "idempotent replay");
        Ok(rec.to_response())
    }

    /// Publishes, then marks the record confirmed. `true` only when the client may be told
    /// the task was accepted; on `false` an undo is already under way.
    async fn publish_or_undo(&self, envelope: &proto::TaskEnvelope, task: &NewTask) -> bool {
        let started = Instant::now();
        let published = self.0.publisher.publish(envelope, task.traceparent.as_deref()).await;
        stage(Timed::Publish, started);
        if let Err(e) = published {
            tracing::error!(error.cause_chain = %runtime::telemetry::Chain(&e), "publish failed; undoing the submission");
            metrics::counter!("gateway_publish_failures_total").increment(1);
            self.spawn_undo(task.clone());
            return false;
        }
        let confirming = Instant::now();
        let confirmed = self.0.confirms.call(self.0.store.confirmation(task)).await;
        stage(Timed::Confirm, confirming);
        match confirmed {
            // The same script turned the idempotency claim to done: replays get the task.
            Ok(true) => true,
            Ok(false) => {
                // The undo or the reconciler closed it first: the agent acks the message
                // without running it, so the truthful answer is still "not enqueued".
                tracing::warn!("broker confirmed after the record was closed as not enqueued");
                false
            }
            Err(e) => {
                // Without the mark the reconciler would later fail a task we called accepted:
                // fail it now (the landed message is then acked without running).
                tracing::error!(error = %e, "could not mark the publish confirmed; undoing the submission");
                self.spawn_undo(task.clone());
                false
            }
        }
    }

    /// Undoes a submission off the request path (see [`undo`]).
    fn spawn_undo(&self, task: NewTask) {
        let (store, window) = (self.0.store.clone(), self.0.undo_window);
        self.0.in_flight.spawn(async move { undo::undo(&store, &task, window).await });
    }
}

fn refused(reason: &'static str, e: SubmitError) -> SubmitError {
    metrics::counter!("gateway_admission_rejections_total", "reason" => reason).increment(1);
    e
}
