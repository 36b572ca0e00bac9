//! Undoing a submission the broker never confirmed: the record is failed ("not enqueued")
//! and its reservation refunded. It runs on a task of its own, so a request dropped
//! mid-way strands nothing.
//!
//! The undo is retried with backoff until it gets through — a Redis that stalls right when
//! the broker fails would otherwise leave the record `in_queue` with its quota held — and
//! stops once the reconciler owns the record (`PUBLISH_TIMEOUT_MS + RECONCILE_GRACE_MS`
//! after creation), which then closes it if it is still unconfirmed.

use std::time::Duration;

use proto::store::{NewTask, StoreError, TaskStore};
use runtime::backoff::{self, Backoff};

/// Retries until the undo succeeds or `window` after the task's creation has passed.
pub(super) async fn undo(store: &TaskStore, task: &NewTask, window: Duration) {
    let mut tries = 0u32;
    let again = |e: &StoreError, delay: Duration, attempts: u32| {
        tries = attempts;
        let age = (chrono::Utc::now() - task.created_at).to_std().unwrap_or_default();
        if age + delay >= window {
            tracing::error!(error = %e, tries, "could not undo the submission; the reconciler will close it");
            metrics::counter!("gateway_undo_total", "result" => "left_to_reconciler").increment(1);
            return false;
        }
        tracing::warn!(error = %e, tries, retry_in_ms = delay.as_millis() as u64, "undo failed; retrying");
        metrics::counter!("gateway_undo_retries_total").increment(1);
        true
    };
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    match backoff::retry(backoff, None, || store.abort_submit(task), again).await {
        Ok(true) => {
            tracing::info!(tries = tries + 1, "submission undone: record failed, quota refunded");
            metrics::counter!("gateway_undo_total", "result" => "undone").increment(1);
        }
        Ok(false) => {
            // Claimed by an agent (the publish landed after all), or never created.
            metrics::counter!("gateway_undo_total", "result" => "not_needed").increment(1);
        }
        // Logged and counted above, when the retries stopped.
        Err(_) => {}
    }
}
