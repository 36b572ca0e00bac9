//! Processing one delivery, from envelope to ack: parse, take over, run, finish, settle.
//! The consumer loop calls [`process`], which settles the delivery with the [`Outcome`] of
//! [`handle`] (the rest); tests call [`handle`] directly with a [`Received`] message.
//!
//! Order of effects: the terminal status is written *before* the ack, so a worker that
//! dies at any point loses nothing: the broker redelivers, and the record (terminal, or
//! in progress with a checkpoint) tells the next delivery what to do.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::AMQPValue;
use proto::TaskEnvelope;
use proto::store::{Claimed, Finish, FinishOutcome, MemoryCleanup, StoreError, Takeover};
use proto::task::{TaskRecord, TaskStatus};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::checkpoint::LoopState;
use crate::meter::{Meter, Usage};
use crate::tick::{Run, RunEnd};
use crate::worker::Worker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ran to a terminal status, or was already terminal.
    Acked,
    /// Given back to the broker for another delivery (drain, outage).
    Requeued,
    /// Rejected without requeue: the broker moves it to the dead-letter queue.
    DeadLettered,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acked => "acked",
            Self::Requeued => "requeued",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

fn delivery_count(d: &Delivery) -> i64 {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => Some(n),
            AMQPValue::LongInt(n) => Some(i64::from(n)),
            AMQPValue::LongUInt(n) => Some(i64::from(n)),
            _ => None,
        })
        .unwrap_or(0)
}

/// What [`handle`] reads from a delivery.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub data: &'a [u8],
    pub message_id: Option<&'a str>,
    /// The broker's `x-delivery-count`: earlier deliveries of this message (0 on the first).
    pub delivery_count: i64,
}

/// `stop` interrupts a running task (end of drain, or the channel was lost).
pub async fn process(worker: &Worker, delivery: Delivery, stop: &CancellationToken) -> Outcome {
    let message_id = delivery.properties.message_id().as_ref().map(|m| m.as_str().to_owned());
    let received =
        Received { data: &delivery.data, message_id: message_id.as_deref(), delivery_count: delivery_count(&delivery) };
    let span = tracing::info_span!(
        "delivery",
        correlation_id = tracing::field::Empty,
        attempt = tracing::field::Empty,
        redelivered = delivery.redelivered,
        delivery_count = received.delivery_count,
    );
    if let Some(m) = &message_id {
        span.record("correlation_id", m.as_str());
    }
    // The task's trace (the gateway's submit span), the same on every delivery and resume
    // of it: a redelivered or resumed task lands in the trace it started in.
    if let Some(tp) = proto::envelope::traceparent(&delivery.properties) {
        runtime::telemetry::propagation::continue_trace(&span, &tp);
    }
    let outcome = handle(worker, received, stop).instrument(span.clone()).await;
    let settle = async {
        let r = match outcome {
            Outcome::Acked => delivery.acker.ack(BasicAckOptions::default()).await,
            Outcome::Requeued => delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await,
            // lapin's default reject discards; requeue: false routes to the DLX.
            Outcome::DeadLettered => delivery.acker.reject(BasicRejectOptions { requeue: false }).await,
        };
        if let Err(e) = r {
            // The channel is gone; the broker redelivers, and the record decides what happens.
            tracing::warn!(error = %e, outcome = outcome.as_str(), "could not settle the delivery");
        }
        tracing::info!(outcome = outcome.as_str(), "delivery settled");
    };
    settle.instrument(span).await;
    metrics::counter!("agent_deliveries_total", "outcome" => outcome.as_str()).increment(1);
    outcome
}

/// Handles one message up to the decision how to settle it: parse, take over (fenced by
/// the new attempt), run from the checkpoint or the start, write the terminal status.
pub async fn handle(worker: &Worker, msg: Received<'_>, stop: &CancellationToken) -> Outcome {
    let Some(envelope) = parse(worker, &msg).await else {
        return Outcome::DeadLettered;
    };
    let claimed = match take_over(worker, &envelope).await {
        Ok(claimed) => claimed,
        Err(outcome) => return outcome,
    };
    tracing::Span::current().record("attempt", claimed.attempt);

    let id = envelope.correlation_id;
    worker.registry.start(id);
    // The broker dead-letters a message returned once more than its delivery limit, without
    // telling us: on the last delivery it allows, a task that would be handed back is failed
    // here instead, so its record does not stay `in_progress` with its quota reserved.
    let last = msg.delivery_count >= i64::from(worker.settings.common.max_deliveries);
    let outcome = match run(worker, &envelope, &claimed, stop, last).await {
        Ok(ended) => finish(worker, &envelope, &claimed, &ended).await,
        Err(outcome) => outcome,
    };
    worker.registry.finish(id);
    outcome
}

/// The envelope, or `None` for an invalid one, whose record (when its id can be salvaged)
/// is failed here; the message is then dead-lettered.
async fn parse(worker: &Worker, msg: &Received<'_>) -> Option<TaskEnvelope> {
    match TaskEnvelope::parse(msg.data) {
        Ok(envelope) => Some(envelope),
        Err(e) => {
            tracing::warn!(error = %e, "invalid envelope; dead-lettering");
            mark_invalid(worker, msg.data, msg.message_id).await;
            None
        }
    }
}

/// The run this delivery took over, or how to settle a delivery that has none.
async fn take_over(worker: &Worker, envelope: &TaskEnvelope) -> Result<Claimed, Outcome> {
    let (worker_id, max) = (&worker.settings.worker_id, worker.settings.common.max_deliveries);
    match crate::retry::redis(|| worker.store.take_over(envelope, worker_id, max)).await {
        Ok(Takeover::Claimed(c)) => Ok(*c),
        Ok(Takeover::Terminal(status)) => {
            tracing::info!(%status, "task already ended; acking without running");
            // The agent that ended it may have died before cleaning up.
            forget(worker, envelope.correlation_id).await;
            Err(Outcome::Acked)
        }
        Ok(Takeover::GaveUp { attempts }) => {
            tracing::warn!(attempts, "delivery limit reached; task failed, message dead-lettered");
            forget(worker, envelope.correlation_id).await;
            Err(Outcome::DeadLettered)
        }
        Ok(Takeover::Stale) => {
            tracing::info!(seq = envelope.seq, "a copy of an earlier enqueue of this task; acking without running");
            Err(Outcome::Acked)
        }
        Ok(Takeover::Parked) => {
            tracing::info!("task is parked on its owner's decision; acking without running");
            Err(Outcome::Acked)
        }
        Ok(Takeover::Missing) => {
            tracing::warn!("task record vanished before the claim; dead-lettering");
            Err(Outcome::DeadLettered)
        }
        Err(e) => Err(store_failure(&e)),
    }
}

/// A run that reached a terminal status, for [`finish`] to write.
struct Ended {
    fin: Finish,
    usage: Usage,
}

/// Runs the task from its checkpoint. `Err` is how to settle a run that ends without a
/// terminal write of its own (fenced, interrupted, its record gone, Redis down), after
/// what that takes (a re-created record, a give-up on the last delivery).
async fn run(
    worker: &Worker,
    envelope: &TaskEnvelope,
    claimed: &Claimed,
    stop: &CancellationToken,
    last: bool,
) -> Result<Ended, Outcome> {
    let Claimed { attempt, record, checkpoint } = claimed;
    let state = match checkpoint.as_deref().map(LoopState::decode) {
        Some(Ok(s)) => {
            tracing::info!(from_tick = s.tick, "resuming from checkpoint");
            s
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "unreadable checkpoint; starting over");
            LoopState::default()
        }
        None => LoopState::default(),
    };
    tracing::info!(max_ticks = record.max_ticks, model = worker.model.name(), "task started");
    let run = Run {
        store: &worker.store,
        model: worker.model.as_ref(),
        tools: &worker.tools,
        memory: &worker.memory,
        record,
        attempt: *attempt,
        timeout: worker.settings.task_timeout,
        stop,
        meter: Meter::starting_at(state.usage, record.max_tokens),
        approval_timeout: worker.settings.approval_timeout,
    };
    // The loop's future is large (its state lives across awaits): on the heap, once per delivery.
    let end = Box::pin(run.execute(state)).await;
    let usage = run.meter.total();
    let fin = match end {
        RunEnd::Completed(result, ticks) => terminal(TaskStatus::Completed, result, None, ticks, usage),
        RunEnd::Cancelled(result, ticks) => terminal(TaskStatus::Cancelled, result, None, ticks, usage),
        RunEnd::TimedOut(result, ticks) => terminal(TaskStatus::Failed, result, Some("timed out".into()), ticks, usage),
        RunEnd::Failed(error, result, ticks) => terminal(TaskStatus::Failed, result, Some(error), ticks, usage),
        RunEnd::Incomplete(reason, result, ticks) => {
            terminal(TaskStatus::Incomplete, result, Some(reason.as_str().to_owned()), ticks, usage)
        }
        RunEnd::Fenced => {
            tracing::warn!("a newer delivery owns this task; stopping without writing");
            return Err(Outcome::Acked);
        }
        // The record holds the pending call; the decision puts a new envelope on the queue.
        RunEnd::Parked => return Err(Outcome::Acked),
        RunEnd::Missing => return Err(recreate(worker, envelope, last).await),
        RunEnd::Interrupted if last => return Err(give_up(worker, record, *attempt).await),
        RunEnd::Interrupted => {
            tracing::info!("interrupted; checkpoint saved, requeueing");
            return Err(Outcome::Requeued);
        }
        RunEnd::Store(e) if last => {
            tracing::error!(error = %e, "task store unavailable on the last allowed delivery");
            return Err(give_up(worker, record, *attempt).await);
        }
        RunEnd::Store(e) => return Err(store_failure(&e)),
    };
    Ok(Ended { fin, usage })
}

/// The terminal write, fenced by the attempt; the delivery is acked once it is written.
async fn finish(worker: &Worker, envelope: &TaskEnvelope, claimed: &Claimed, ended: &Ended) -> Outcome {
    let Ended { fin, usage } = ended;
    let (record, attempt) = (&claimed.record, claimed.attempt);
    match crate::retry::redis(|| worker.store.finish(record, Some(attempt), fin)).await {
        Ok(FinishOutcome::Written) => {
            tracing::info!(status = %fin.status, ticks = fin.ticks_used.unwrap_or(0), total_tokens = usage.total_tokens, "task finished");
            metrics::counter!("agent_tasks_total", "status" => fin.status.as_str()).increment(1);
            // A task that did not complete may be retried or extended from its checkpoint,
            // which its memories are part of (they expire with the checkpoint's retention).
            if fin.status == TaskStatus::Completed {
                forget(worker, record.id).await;
            }
            Outcome::Acked
        }
        Ok(FinishOutcome::Refused) => {
            tracing::warn!("terminal write refused (fenced or already terminal); acking");
            Outcome::Acked
        }
        Ok(FinishOutcome::Missing) => finish_recreated(worker, envelope, fin).await,
        Err(e) => store_failure(&e),
    }
}

/// The record vanished mid-run: a Redis restart without persistence, or a failover that
/// lost writes. That is not a fence (no newer delivery owns the task), so the task must not
/// be dropped: the record is re-created from the envelope and the message handed back to
/// run again. On the broker's last allowed delivery it is dead-lettered instead, and the
/// gateway's reconciler fails the re-created record from the dead-letter feed.
async fn recreate(worker: &Worker, envelope: &TaskEnvelope, last: bool) -> Outcome {
    if let Err(e) = crate::retry::redis(|| worker.store.adopt(envelope)).await {
        return store_failure(&e);
    }
    metrics::counter!("agent_records_recreated_total").increment(1);
    if last {
        tracing::error!(
            "task record vanished mid-run on the last allowed delivery; re-created it, dead-lettering (the reconciler fails it)"
        );
        return Outcome::DeadLettered;
    }
    tracing::warn!("task record vanished mid-run (Redis lost its data?); re-created it from the envelope, requeueing");
    Outcome::Requeued
}

/// The record vanished between the last tick and the terminal write: re-create it, take it
/// over and write the result, so finished work is not thrown away.
async fn finish_recreated(worker: &Worker, envelope: &TaskEnvelope, fin: &Finish) -> Outcome {
    let (store, worker_id) = (&worker.store, &worker.settings.worker_id);
    let written = crate::retry::redis(|| async {
        match store.take_over(envelope, worker_id, u32::MAX).await? {
            Takeover::Claimed(c) => store.finish(&c.record, Some(c.attempt), fin).await,
            _ => Ok(FinishOutcome::Refused),
        }
    })
    .await;
    metrics::counter!("agent_records_recreated_total").increment(1);
    match written {
        Ok(FinishOutcome::Written) => {
            tracing::warn!(status = %fin.status, "task record vanished before the terminal write; re-created it with the result");
            forget(worker, envelope.correlation_id).await;
            Outcome::Acked
        }
        Ok(other) => {
            tracing::warn!(?other, "task record vanished before the terminal write and was taken over; acking");
            Outcome::Acked
        }
        Err(e) => store_failure(&e),
    }
}

/// What the terminal write writes. The result is the contract's `{success, deliverables,
/// notes, sources}` plus `usage`, the task's summed token counts.
fn terminal(
    status: TaskStatus,
    mut result: proto::TaskResult,
    error: Option<String>,
    ticks: u32,
    usage: Usage,
) -> Finish {
    result.usage = Some(usage);
    Finish {
        status,
        result: serde_json::to_value(result).ok(),
        error,
        ticks_used: Some(ticks),
        tokens_used: Some(usage.total_tokens),
    }
}

/// Deletes (or schedules the expiry of) a task's memories after its terminal write, for a
/// memory store the terminal write does not clean up itself (Qdrant): memories in Redis
/// went in the same step as the status (`MemoryCleanup`). A failure is logged only: the
/// memories still expire with the task's TTL.
async fn forget(worker: &Worker, id: proto::TaskId) {
    if worker.store.memory_cleanup() != MemoryCleanup::Leave {
        return;
    }
    if let Err(e) = worker.memory.forget(id).await {
        tracing::warn!(error = %e, "could not delete the task's memories; they expire with the task");
    }
}

/// Fails a task on the broker's last allowed delivery instead of handing it back.
async fn give_up(worker: &Worker, record: &TaskRecord, attempt: u32) -> Outcome {
    let fin = Finish {
        status: TaskStatus::Failed,
        result: None,
        error: Some(format!("gave up after {} deliveries", worker.settings.common.max_deliveries + 1)),
        ticks_used: None,
        tokens_used: None,
    };
    match worker.store.finish(record, Some(attempt), &fin).await {
        Ok(_) => {
            tracing::warn!("last allowed delivery interrupted; task failed, message dead-lettered");
            forget(worker, record.id).await;
            Outcome::DeadLettered
        }
        // Nothing to gain from a requeue the broker will dead-letter anyway.
        Err(e) => {
            tracing::error!(error = %e, "could not fail the task; dead-lettering, record left as is");
            Outcome::DeadLettered
        }
    }
}

fn store_failure(e: &StoreError) -> Outcome {
    match e {
        // Redis stayed down through the retry budget: give the message back.
        StoreError::Redis(_) => {
            tracing::error!(error = %e, "task store unavailable; requeueing");
            Outcome::Requeued
        }
        // A record we cannot read will not become readable: dead-letter it for a human.
        StoreError::Corrupt(_) | StoreError::Reply(_) => {
            tracing::error!(error = %e, "corrupt task record; dead-lettering");
            Outcome::DeadLettered
        }
    }
}

async fn mark_invalid(worker: &Worker, data: &[u8], message_id: Option<&str>) {
    let Some(id) = TaskEnvelope::salvage_id(data, message_id) else {
        return;
    };
    let fin = Finish {
        status: TaskStatus::Failed,
        result: None,
        error: Some("invalid envelope".into()),
        ticks_used: Some(0),
        tokens_used: None,
    };
    match worker.store.get(id).await {
        Ok(Some(rec)) => {
            if let Err(e) = worker.store.finish(&rec, None, &fin).await {
                tracing::warn!(error = %e, %id, "could not mark the task failed");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, %id, "could not read the task record"),
    }
}
