//! Putting a parked task back on the queue after its decision: the store has already
//! recorded the decision and the next enqueue number, and marked the task resuming; this
//! publishes the envelope with that number and clears the mark once the broker confirmed.
//!
//! Crash windows: killed before the publish (or the broker down), the mark stays and the
//! reconciler publishes again with a new number after `PUBLISH_TIMEOUT_MS` +
//! `RECONCILE_GRACE_MS`; killed after the publish but before the mark is cleared, the
//! reconciler's copy gets the newer number and whichever copy is claimed second is stale
//! (acked unrun). Either way the task runs once from its checkpoint.

use proto::TaskRecord;

use super::Submissions;

impl Submissions {
    /// Publishes enqueue `seq` of `rec` and clears its resuming mark; `false` when that did
    /// not happen (the reconciler will publish it).
    pub async fn resume(&self, rec: &TaskRecord, seq: u32) -> bool {
        if let Err(e) = self.0.publisher.publish(&rec.envelope(seq), rec.traceparent.as_deref()).await {
            tracing::warn!(correlation_id = %rec.id, error.cause_chain = %runtime::telemetry::Chain(&e), "resume not published; the reconciler will publish it");
            return false;
        }
        if let Err(e) = self.0.store.resumed(rec.id).await {
            // The reconciler publishes a copy with a newer number; the first one claimed runs.
            tracing::warn!(correlation_id = %rec.id, error = %e, "resume published but not marked; the reconciler may publish it again");
        }
        metrics::counter!("gateway_tasks_resumed_total").increment(1);
        true
    }
}
