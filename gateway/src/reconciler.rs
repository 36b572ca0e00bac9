//! The reconciler: ends the records nobody else will end. It runs inside every gateway,
//! but only the holder of a Redis lease works, so replicas never race each other.
//!
//! Each pass, bounded by `RECONCILE_BATCH` per kind:
//! - **not enqueued**: a submission still in the unconfirmed index, created more than
//!   `PUBLISH_TIMEOUT_MS + RECONCILE_GRACE_MS` ago, whose record is `in_queue`, never
//!   claimed and never marked confirmed. Its gateway died between the record write and the
//!   confirm, or its undo never got through. It ends `failed` ("not enqueued"), quota refunded.
//! - **dead-lettered**: every message the broker dead-letters is copied to
//!   `{queue}.dlq.reconcile`; a record that is not terminal ends `failed` ("dead-lettered
//!   after N deliveries"), its unused quota refunded. The copy in `{queue}.dlq` stays there
//!   for operators.
//!
//! - **expired approvals**: a task parked on a tool call past its `expires_at` gets the
//!   call denied as expired and goes back to the queue, as a decision would put it.
//! - **unpublished resumes**: a task put back on the queue by a decision whose publish was
//!   not confirmed within `PUBLISH_TIMEOUT_MS + RECONCILE_GRACE_MS` (its gateway died, the
//!   broker was down) is published again with the next enqueue number while it is still
//!   unclaimed; a copy of the earlier number that did land is stale and acked unrun.
//!
//! The lease lives `3 × RECONCILE_INTERVAL_MS`, so a dead leader is replaced within that;
//! with the defaults a stuck submission is closed within `PUBLISH_TIMEOUT_MS` + 60 s.

use std::time::Duration;

use crate::config::ReconcilerSettings;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::AMQPValue;
use proto::TaskEnvelope;
use proto::reconcile::CloseOutcome;
use proto::store::{DeadLetter, StoreError, TaskStore};
use proto::topology::Topology;
use runtime::amqp_link::AmqpLink;
use runtime::connect::Endpoint;
use tokio_util::sync::CancellationToken;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub not_enqueued: usize,
    pub dead_lettered: usize,
    /// Parked calls denied as expired.
    pub expired: usize,
    /// Resumes published again.
    pub republished: usize,
    /// Tasks failed "expired in queue".
    pub queue_expired: usize,
    /// Entries looked at that needed nothing (confirmed, claimed, already terminal, gone).
    pub skipped: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader(PassReport),
    /// Another gateway holds the lease.
    Standby,
}

pub struct Reconciler {
    store: TaskStore,
    topology: Topology,
    publish_timeout: Duration,
    settings: ReconcilerSettings,
    holder: String,
    /// The dead-letter feed's connection and channel.
    link: AmqpLink,
    /// Publishes resumes (absent: expired calls are decided and left for a gateway's pass).
    resumes: Option<crate::submission::Submissions>,
}

impl Reconciler {
    pub fn new(
        store: TaskStore,
        topology: Topology,
        amqp: Endpoint,
        publish_timeout: Duration,
        settings: ReconcilerSettings,
    ) -> Self {
        let holder = format!("gateway-{}", uuid::Uuid::new_v4().simple());
        let link = AmqpLink::new(amqp, "euglena-gateway-reconciler", topology.clone());
        Self { store, topology, publish_timeout, settings, holder, link, resumes: None }
    }

    /// Also resumes parked tasks (expired calls, unpublished resumes) through `submissions`.
    #[must_use]
    pub fn with_resumes(mut self, submissions: crate::submission::Submissions) -> Self {
        self.resumes = Some(submissions);
        self
    }

    /// The reconciler of a running gateway.
    pub fn for_gateway(state: &crate::state::AppState) -> Self {
        let s = &state.settings;
        Self::new(
            state.store.clone(),
            Topology::new(s.common.input_queue.clone(), s.common.max_deliveries),
            s.common.rabbitmq.clone(),
            s.publish_timeout,
            s.reconciler.clone(),
        )
        .with_resumes(state.submissions.clone())
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn lease_ttl(&self) -> Duration {
        self.settings.interval * 3
    }

    /// Runs passes every `RECONCILE_INTERVAL_MS` until `stop`, then gives the lease up.
    pub async fn run(self, stop: CancellationToken) {
        let mut leading = false;
        loop {
            match self.pass().await {
                Ok(Role::Leader(report)) => {
                    if !leading {
                        tracing::info!(holder = %self.holder, "reconciler lease acquired; this gateway reconciles");
                    }
                    leading = true;
                    metrics::gauge!("gateway_reconciler_leader").set(1.0);
                    if report != PassReport::default() {
                        tracing::info!(
                            not_enqueued = report.not_enqueued,
                            dead_lettered = report.dead_lettered,
                            expired = report.expired,
                            queue_expired = report.queue_expired,
                            republished = report.republished,
                            skipped = report.skipped,
                            "reconciler pass"
                        );
                    }
                }
                Ok(Role::Standby) => {
                    if leading {
                        tracing::warn!(holder = %self.holder, "reconciler lease lost to another gateway");
                    }
                    leading = false;
                    metrics::gauge!("gateway_reconciler_leader").set(0.0);
                }
                Err(e) => {
                    metrics::counter!("gateway_reconciler_errors_total").increment(1);
                    tracing::warn!(error = %e, "reconciler pass failed; retrying next interval");
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.settings.interval) => {}
            }
        }
        if leading && let Err(e) = self.store.release_lease(&self.holder).await {
            tracing::warn!(error = %e, "could not release the reconciler lease; it expires by itself");
        }
        self.link.close("gateway shutting down").await;
    }

    /// One pass: take or keep the lease, then close what is due.
    pub async fn pass(&self) -> anyhow::Result<Role> {
        if !self.store.hold_lease(&self.holder, self.lease_ttl()).await? {
            metrics::counter!("gateway_reconciler_passes_total", "role" => "standby").increment(1);
            return Ok(Role::Standby);
        }
        metrics::counter!("gateway_reconciler_passes_total", "role" => "leader").increment(1);
        let mut report = PassReport::default();
        self.close_unconfirmed(&mut report).await?;
        self.expire_parked(&mut report).await?;
        self.expire_queued(&mut report).await?;
        self.republish_resumes(&mut report).await?;
        if let Err(e) = self.drain_dead_letters(&mut report).await {
            // Dropping the link makes the next pass reconnect.
            self.link.reset().await;
            return Err(e);
        }
        Ok(Role::Leader(report))
    }

    async fn close_unconfirmed(&self, report: &mut PassReport) -> anyhow::Result<()> {
        let wait = self.publish_timeout + self.settings.grace;
        let cutoff = chrono::Utc::now().timestamp_millis() - i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        for id in self.store.due_unconfirmed(cutoff, self.settings.batch).await? {
            match self.store.close_unconfirmed(id).await {
                Ok(CloseOutcome::Closed) => {
                    report.not_enqueued += 1;
                    metrics::counter!("gateway_reconciler_closed_total", "reason" => "not_enqueued").increment(1);
                    tracing::warn!(correlation_id = %id, "reconciler: submission never confirmed by the broker; task failed (not enqueued), quota refunded");
                }
                Ok(_) => report.skipped += 1,
                Err(StoreError::Redis(e)) => return Err(e.into()),
                Err(e) => {
                    report.skipped += 1;
                    tracing::error!(correlation_id = %id, error = %e, "reconciler: unreadable record; left as is");
                }
            }
        }
        Ok(())
    }

    /// Tasks not started before their `expires_after_seconds` (the agent checks at the claim;
    /// this closes the ones no agent reached).
    async fn expire_queued(&self, report: &mut PassReport) -> anyhow::Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        for id in self.store.due_expiring(now, self.settings.batch).await? {
            match self.store.expire_queued(id).await {
                Ok(CloseOutcome::Closed) => {
                    report.queue_expired += 1;
                    metrics::counter!("gateway_reconciler_closed_total", "reason" => "expired_in_queue").increment(1);
                    tracing::info!(correlation_id = %id, "reconciler: task not started in time; failed (expired in queue), quota refunded");
                }
                Ok(_) => report.skipped += 1,
                Err(StoreError::Redis(e)) => return Err(e.into()),
                Err(e) => {
                    report.skipped += 1;
                    tracing::error!(correlation_id = %id, error = %e, "reconciler: unreadable record; left as is");
                }
            }
        }
        Ok(())
    }

    async fn expire_parked(&self, report: &mut PassReport) -> anyhow::Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        for id in self.store.expired_parked(now, self.settings.batch).await? {
            let rec = match self.store.get(id).await {
                Ok(Some(rec)) => rec,
                Ok(None) => {
                    self.store.forget_marks(id).await?;
                    continue;
                }
                Err(StoreError::Redis(e)) => return Err(e.into()),
                Err(e) => {
                    tracing::error!(correlation_id = %id, error = %e, "reconciler: unreadable parked record; mark dropped");
                    self.store.forget_marks(id).await?;
                    continue;
                }
            };
            let Some(pending) = rec.pending_action.clone().filter(|_| rec.status == proto::TaskStatus::RequiresAction)
            else {
                // Decided or cancelled meanwhile; the mark is stale.
                self.store.forget_marks(id).await?;
                report.skipped += 1;
                continue;
            };
            let decision = proto::task::ActionDecision {
                call_id: pending.call_id,
                decision: proto::task::Verdict::Expired,
                arguments: None,
            };
            if let proto::store::DecideOutcome::Resumed { seq } = self.store.decide(&rec, &decision).await? {
                report.expired += 1;
                metrics::counter!("gateway_reconciler_closed_total", "reason" => "approval_expired").increment(1);
                tracing::info!(correlation_id = %id, "reconciler: tool call not decided in time; denied as expired, task resumes");
                if let Some(s) = &self.resumes {
                    s.resume(&rec, seq).await;
                }
            }
        }
        Ok(())
    }

    async fn republish_resumes(&self, report: &mut PassReport) -> anyhow::Result<()> {
        let Some(resumes) = &self.resumes else { return Ok(()) };
        let wait = self.publish_timeout + self.settings.grace;
        let cutoff = chrono::Utc::now().timestamp_millis() - i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        for id in self.store.stale_resumes(cutoff, self.settings.batch).await? {
            let Some(seq) = self.store.republish(id).await? else {
                report.skipped += 1;
                continue;
            };
            let Some(rec) = self.store.get(id).await? else {
                self.store.forget_marks(id).await?;
                continue;
            };
            if resumes.resume(&rec, seq).await {
                report.republished += 1;
                metrics::counter!("gateway_reconciler_closed_total", "reason" => "resume_republished").increment(1);
                tracing::warn!(correlation_id = %id, seq, "reconciler: a resume was never confirmed; published it again");
            }
        }
        Ok(())
    }

    async fn feed(&self) -> anyhow::Result<Channel> {
        let (channel, _) = self.link.channel().await?;
        Ok(channel)
    }

    async fn drain_dead_letters(&self, report: &mut PassReport) -> anyhow::Result<()> {
        let ch = tokio::time::timeout(runtime::connect::AMQP_CONNECT_TIMEOUT, self.feed())
            .await
            .map_err(|_| anyhow::anyhow!("rabbitmq: reconciler link timed out"))??;
        let queue = self.topology.dlq_feed();
        for _ in 0..self.settings.batch {
            let got = tokio::time::timeout(
                runtime::connect::REDIS_TIMEOUT,
                ch.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }),
            )
            .await
            .map_err(|_| anyhow::anyhow!("rabbitmq: basic.get timed out"))??;
            let Some(msg) = got else { break };
            let delivery = msg.delivery;
            match self.close_dead_lettered(&delivery, report).await {
                Ok(()) => {
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                }
                Err(e) => {
                    // Redis is unavailable: hand the copy back for the next pass.
                    delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await?;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn close_dead_lettered(&self, delivery: &Delivery, report: &mut PassReport) -> anyhow::Result<()> {
        let message_id = delivery.properties.message_id().as_ref().map(|m| m.as_str().to_owned());
        let Some(id) = TaskEnvelope::salvage_id(&delivery.data, message_id.as_deref()) else {
            report.skipped += 1;
            tracing::info!("reconciler: dead-lettered message without a task id; nothing to close");
            return Ok(());
        };
        let deliveries = deliveries(delivery, self.topology.max_deliveries);
        let letter = DeadLetter {
            reason: header_string(delivery, "x-first-death-reason"),
            count: deliveries,
            first_death_at: first_death_at(delivery).unwrap_or_else(|| proto::time::rfc3339(chrono::Utc::now())),
        };
        match self.store.close_dead_lettered(id, &letter).await {
            Ok(CloseOutcome::Closed) => {
                report.dead_lettered += 1;
                metrics::counter!("gateway_reconciler_closed_total", "reason" => "dead_lettered").increment(1);
                tracing::warn!(correlation_id = %id, deliveries = ?deliveries, "reconciler: message dead-lettered with its task unfinished; task failed, quota refunded, message kept in the DLQ");
            }
            Ok(_) => report.skipped += 1,
            Err(StoreError::Redis(e)) => return Err(e.into()),
            Err(e) => {
                report.skipped += 1;
                tracing::error!(correlation_id = %id, error = %e, "reconciler: unreadable record of a dead-lettered task; left as is");
            }
        }
        Ok(())
    }
}

/// Deliveries the message had before it was dead-lettered, when the headers tell: the
/// broker dead-letters for `delivery_limit` once a message is returned at the limit, i.e.
/// after `limit + 1` deliveries. A dead-lettered copy's `x-delivery-count` restarts, so for a
/// rejection (an agent gave up) the record's own claim count is used instead.
fn deliveries(d: &Delivery, limit: u32) -> Option<u32> {
    let reason = header_string(d, "x-first-death-reason");
    (reason.as_deref() == Some("delivery_limit")).then(|| limit.saturating_add(1))
}

fn header_string(d: &Delivery, name: &str) -> Option<String> {
    d.properties.headers().as_ref().and_then(|h| h.inner().get(name).cloned()).and_then(|v| match v {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    })
}

/// When the broker first dead-lettered the message: the `time` of its first `x-death` entry.
fn first_death_at(d: &Delivery) -> Option<String> {
    let headers = d.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else { return None };
    let AMQPValue::FieldTable(first) = deaths.as_slice().last()? else { return None };
    let AMQPValue::Timestamp(t) = first.inner().get("time")? else { return None };
    chrono::DateTime::from_timestamp(i64::try_from(*t).ok()?, 0).map(proto::time::rfc3339)
}
