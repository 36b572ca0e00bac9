//! The dead-letter queue `{queue}.dlq` as operators change it: after a redrive, the redriven
//! tasks' dead letters are taken out of it. (Reading it is from the reconciler's index in
//! Redis, `proto::store::DeadLetter`: AMQP cannot read a queue without taking its messages.)
//!
//! One pass takes up to [`MAX_SWEEP`] messages with `basic.get`, acks those of the given
//! tasks and holds the rest unacknowledged, then closes its channel, which returns them to
//! the queue (the DLQ has no delivery limit, so returning them loses nothing). Killed mid-way,
//! the broker returns whatever the pass held; a pass repeated later removes what is left.

use std::collections::HashSet;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions};
use proto::topology::Topology;
use proto::{TaskEnvelope, TaskId};
use runtime::amqp_link::AmqpLink;
use runtime::connect::Endpoint;

/// Messages one pass looks at, at most.
pub const MAX_SWEEP: u32 = 10_000;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct DeadLetterQueue {
    link: AmqpLink,
    queue: String,
    /// One pass at a time per gateway: two would each hold what the other looks for.
    pass: tokio::sync::Mutex<()>,
}

impl DeadLetterQueue {
    pub fn new(endpoint: Endpoint, topology: &Topology) -> Self {
        Self {
            link: AmqpLink::new(endpoint, "euglena-gateway-admin", topology.clone()),
            queue: topology.dlq(),
            pass: tokio::sync::Mutex::new(()),
        }
    }

    /// Removes the dead letters of `ids` from the DLQ; how many were removed.
    pub async fn remove(&self, ids: &HashSet<TaskId>) -> anyhow::Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let _pass = self.pass.lock().await;
        let (ch, _) = tokio::time::timeout(CALL_TIMEOUT, self.link.channel())
            .await
            .map_err(|_| anyhow::anyhow!("rabbitmq: admin link timed out"))??;
        let outcome = async {
            let (ready, _) = tokio::time::timeout(CALL_TIMEOUT, Topology::depth(&ch, &self.queue))
                .await
                .map_err(|_| anyhow::anyhow!("rabbitmq: dead-letter queue depth timed out"))??;
            let mut removed = 0;
            for _ in 0..ready.min(MAX_SWEEP) {
                let got = tokio::time::timeout(
                    CALL_TIMEOUT,
                    ch.basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: false }),
                )
                .await
                .map_err(|_| anyhow::anyhow!("rabbitmq: basic.get timed out"))??;
                let Some(msg) = got else { break };
                let d = msg.delivery;
                let message_id = d.properties.message_id().as_ref().map(|m| m.as_str().to_owned());
                if TaskEnvelope::salvage_id(&d.data, message_id.as_deref()).is_some_and(|id| ids.contains(&id)) {
                    d.acker.ack(BasicAckOptions::default()).await?;
                    removed += 1;
                    if removed == ids.len() {
                        break;
                    }
                }
            }
            anyhow::Ok(removed)
        }
        .await;
        // Closing the channel hands back every message the pass held.
        let _ = tokio::time::timeout(CALL_TIMEOUT, ch.close(200, "dead-letter pass done".into())).await;
        self.link.drop_channel().await;
        outcome
    }

    pub async fn close(&self) {
        self.link.close("gateway shutting down").await;
    }
}
