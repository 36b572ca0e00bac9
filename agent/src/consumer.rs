//! The consume loop: connect and subscribe (with backoff, through
//! [`runtime::connect::until_connected`]), declare the topology, set prefetch to
//! `AGENT_CONCURRENCY`, and hand each delivery to [`crate::delivery::process`] on the
//! task tracker. Prefetch is the concurrency bound: the broker never sends more unacked
//! deliveries than that.
//!
//! When the connection drops, the runs that belong to it are interrupted (their acks
//! could not reach the broker anyway; the broker redelivers them and they resume from
//! their checkpoints) and the loop reconnects. When told to stop, [`consume`] hands the
//! live [`Link`] back, so the runs still draining can ack on it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use proto::topology::Topology;
use runtime::backoff::Backoff;
use runtime::connect::AmqpConnectError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Settings;
use crate::worker::Worker;

/// The broker connection and channel deliveries arrived on. Acks travel on the channel,
/// and lapin closes a channel when its last handle drops: keep this until every run that
/// took a delivery from it has settled, then [`Link::close`] it.
pub struct Link {
    conn: Connection,
    channel: Channel,
}

impl Link {
    /// Closes the channel, then the connection (in that order, so the broker sees a
    /// clean close and lapin logs no connection error).
    pub async fn close(self, reason: &str) {
        let _ = self.channel.close(200, reason.into()).await;
        let _ = self.conn.close(200, reason.into()).await;
    }
}

#[derive(Debug, thiserror::Error)]
enum SubscribeError {
    #[error(transparent)]
    Connect(#[from] AmqpConnectError),
    #[error("could not start consuming: {0}")]
    Setup(#[from] lapin::Error),
}

/// Connects, opens a channel with prefetch, declares the topology and starts consuming.
async fn subscribe(s: &Settings, topology: &Topology) -> Result<(Link, Consumer), SubscribeError> {
    let conn = runtime::connect::amqp(&s.common.rabbitmq, &s.worker_id).await?;
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
    match setup.await {
        Ok((channel, consumer)) => Ok((Link { conn, channel }, consumer)),
        Err(e) => {
            let _ = conn.close(200, "setup failed".into()).await;
            Err(e.into())
        }
    }
}

/// Consumes until `stop` is cancelled, then returns the link the last deliveries came on
/// (`None` if it was not connected then). `interrupt` is cancelled by the caller when the
/// drain period is over; runs still going then are checkpointed and requeued.
pub async fn consume(
    worker: Arc<Worker>,
    tracker: TaskTracker,
    stop: CancellationToken,
    interrupt: CancellationToken,
) -> Option<Link> {
    let s = &worker.settings;
    let topology = Topology::new(s.common.input_queue.clone(), s.common.max_deliveries);
    loop {
        let (link, mut consumer) =
            runtime::connect::until_connected("rabbitmq", &stop, || subscribe(s, &topology)).await?;
        let link_lost = interrupt.child_token();
        tracing::info!(queue = %topology.queue, prefetch = s.concurrency, "consuming");
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    if let Err(e) = link.channel.basic_cancel(s.worker_id.as_str().into(), BasicCancelOptions::default()).await {
                        tracing::warn!(error = %e, "basic.cancel failed");
                    }
                    // Deliveries pushed before the cancel but not yet handed out would sit
                    // unacked until the channel closes after the drain: give them back now.
                    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                        let _ = d.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
                    }
                    tracing::info!("stopped taking deliveries");
                    return Some(link);
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
        link_lost.cancel();
        link.close("reconnecting").await;
        // A broker that accepts and at once drops us must not make this a hot loop.
        let pause = Backoff::reconnect().next_delay();
        tokio::select! { () = tokio::time::sleep(pause) => {}, () = stop.cancelled() => return None }
    }
}
