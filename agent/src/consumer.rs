//! The consume loop: connect (with backoff), declare the topology, set prefetch to
//! `AGENT_CONCURRENCY`, and hand each delivery to [`crate::delivery::process`] on the
//! task tracker. Prefetch is the concurrency bound: the broker never sends more unacked
//! deliveries than that.
//!
//! When the connection drops, the runs that belong to it are interrupted (their acks
//! could not reach the broker anyway; the broker redelivers them and they resume from
//! their checkpoints) and the loop reconnects.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use proto::backoff::Backoff;
use proto::topology::Topology;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::Worker;

/// Consumes until `stop` is cancelled. `interrupt` is cancelled by the caller when the
/// drain period is over; runs still going then are checkpointed and requeued.
pub async fn consume(worker: Arc<Worker>, tracker: TaskTracker, stop: CancellationToken, interrupt: CancellationToken) {
    let s = &worker.settings;
    let topology = Topology::new(s.common.input_queue.clone(), s.common.max_deliveries);
    let mut backoff = Backoff::reconnect();
    while !stop.is_cancelled() {
        let Some(conn) = proto::connect::amqp_with_backoff(&s.common.rabbitmq, &s.worker_id, &stop).await else {
            break;
        };
        let link_lost = interrupt.child_token();
        let setup = async {
            let ch = conn.create_channel().await?;
            ch.basic_qos(s.concurrency, BasicQosOptions::default()).await?;
            topology.declare(&ch).await?;
            let consumer = ch
                .basic_consume(
                    topology.queue.as_str().into(),
                    s.worker_id.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((ch, consumer))
        };
        let (channel, mut consumer) = match setup.await {
            Ok(v) => v,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "could not start consuming");
                let _ = conn.close(200, "setup failed".into()).await;
                tokio::select! { () = tokio::time::sleep(delay) => continue, () = stop.cancelled() => break }
            }
        };
        backoff.reset();
        tracing::info!(queue = %topology.queue, prefetch = s.concurrency, "consuming");
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    if let Err(e) = channel.basic_cancel(s.worker_id.as_str().into(), BasicCancelOptions::default()).await {
                        tracing::warn!(error = %e, "basic.cancel failed");
                    }
                    // Deliveries pushed before the cancel but not yet handed out would sit
                    // unacked until the channel closes after the drain: give them back now.
                    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                        let _ = d.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
                    }
                    tracing::info!("stopped taking deliveries");
                    break;
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let w = worker.clone();
                        let run_stop = link_lost.clone();
                        tracker.spawn(
                            async move { crate::delivery::process(&w, delivery, &run_stop).await; }
                                .instrument(tracing::Span::current()),
                        );
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consumer failed; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!("consumer closed by the broker; reconnecting");
                        break;
                    }
                }
            }
        }
        if stop.is_cancelled() {
            // Keep the connection and channel open while runs drain: their acks travel on
            // them (lapin closes a channel when its last handle drops). The caller closes
            // everything after the drain.
            worker.hold_link(conn, channel).await;
            return;
        }
        link_lost.cancel();
        let _ = conn.close(200, "reconnecting".into()).await;
        let delay = backoff.next_delay();
        tokio::select! { () = tokio::time::sleep(delay) => {}, () = stop.cancelled() => break }
    }
}
