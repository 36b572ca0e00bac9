//! Publishing a submission and, when that fails, undoing it: the record is failed ("not
//! enqueued") and its reservation refunded. Both run on a task of their own, so a request
//! dropped mid-way (its deadline, a client that hung up, shutdown) strands nothing.
//!
//! The undo is retried with backoff until it gets through — a Redis that stalls right when
//! the broker fails would otherwise leave the record `in_queue` with its quota held — and
//! stops once the reconciler owns the record (`PUBLISH_TIMEOUT_MS + RECONCILE_GRACE_MS`
//! after creation), which then closes it if it is still unconfirmed.

use std::time::Duration;

use proto::TaskEnvelope;
use proto::backoff::Backoff;
use proto::store::NewTask;
use tracing::Instrument;

use crate::state::AppState;

/// Publishes, then marks the record confirmed. `true` only when the client may be told the
/// task was accepted; on `false` an undo is already under way.
pub async fn publish_or_undo(state: &AppState, envelope: &TaskEnvelope, task: &NewTask) -> bool {
    let started = std::time::Instant::now();
    let published = state.publisher.publish(envelope).await;
    let stage = |name: &'static str, since: std::time::Instant| {
        metrics::histogram!("gateway_submit_stage_seconds", "stage" => name).record(since.elapsed().as_secs_f64());
    };
    stage("publish", started);
    if let Err(e) = published {
        tracing::error!(error.cause_chain = %proto::telemetry::Chain(&e), "publish failed; undoing the submission");
        metrics::counter!("gateway_publish_failures_total").increment(1);
        spawn(state.clone(), task.clone());
        return false;
    }
    let confirming = std::time::Instant::now();
    let confirmed = state.confirms.call(task.id).await;
    stage("confirm", confirming);
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
            spawn(state.clone(), task.clone());
            false
        }
    }
}

/// Undoes a submission off the request path, retrying until it succeeds or the
/// reconciler owns the record.
pub fn spawn(state: AppState, task: NewTask) {
    tokio::spawn(async move { undo(&state, &task).await }.in_current_span());
}

async fn undo(state: &AppState, task: &NewTask) {
    let owned_by_reconciler = state.settings.publish_timeout + state.settings.reconciler.grace;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut tries = 0u32;
    loop {
        tries += 1;
        match state.store.abort_submit(task).await {
            Ok(true) => {
                tracing::info!(tries, "submission undone: record failed, quota refunded");
                metrics::counter!("gateway_undo_total", "result" => "undone").increment(1);
                return;
            }
            Ok(false) => {
                // Claimed by an agent (the publish landed after all), or never created.
                metrics::counter!("gateway_undo_total", "result" => "not_needed").increment(1);
                return;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                let age = (chrono::Utc::now() - task.created_at).to_std().unwrap_or_default();
                if age + delay >= owned_by_reconciler {
                    tracing::error!(error = %e, tries, "could not undo the submission; the reconciler will close it");
                    metrics::counter!("gateway_undo_total", "result" => "left_to_reconciler").increment(1);
                    return;
                }
                tracing::warn!(error = %e, tries, retry_in_ms = delay.as_millis() as u64, "undo failed; retrying");
                metrics::counter!("gateway_undo_retries_total").increment(1);
                tokio::time::sleep(delay).await;
            }
        }
    }
}
