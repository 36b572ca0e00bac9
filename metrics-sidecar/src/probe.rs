//! Reads the numbers the fleet is scaled on: the input queue's ready and consumer counts
//! and its DLQ's depth (passive declares, so the sidecar never creates a queue with the
//! wrong arguments), and the live/busy agents and running tasks from Redis presence.
//!
//! Every read has a timeout, and a failed read is `None`, never zero: a scaler that read a
//! broker outage as "empty queue" would stop the whole fleet.

use std::time::Duration;

use lapin::Channel;
use proto::Keys;
use proto::presence::AgentCount;
use proto::topology::Topology;
use redis::aio::ConnectionManager;
use runtime::amqp_link::{AmqpLink, LinkError};
use runtime::backoff::Backoff;
use runtime::connect::Endpoint;
use tokio::time::Instant;

/// Bound on one broker or Redis read; the sample interval is seconds, so this is generous.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on connecting (itself bounded by the connect timeout), opening a channel and
/// declaring the queues.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    pub ready: Option<u32>,
    pub consumers: Option<u32>,
    pub dlq_ready: Option<u32>,
    pub agents: Option<AgentCount>,
}

pub struct Probe {
    /// Declares the topology (idempotently, with the same arguments as every process)
    /// before the passive reads: a passive declare of a queue that does not exist yet (the
    /// sidecar started before the gateway) closes the channel and lapin logs it as an
    /// ERROR on a healthy start.
    link: AmqpLink,
    redis_endpoint: Endpoint,
    topology: Topology,
    queue: String,
    redis: ConnectionManager,
    keys: Keys,
    heartbeat_ttl: Duration,
    backoff: Backoff,
    next_connect: Instant,
}

impl Probe {
    pub fn new(
        rabbitmq: &Endpoint,
        redis_endpoint: &Endpoint,
        topology: Topology,
        redis: ConnectionManager,
        keys: Keys,
        heartbeat_ttl: Duration,
    ) -> Self {
        Self {
            link: AmqpLink::new(rabbitmq.clone(), "metrics-probe", topology.clone()),
            redis_endpoint: redis_endpoint.clone(),
            queue: topology.queue.clone(),
            topology,
            redis,
            keys,
            heartbeat_ttl,
            backoff: Backoff::reconnect(),
            next_connect: Instant::now(),
        }
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    pub async fn read(&mut self) -> Reading {
        let input = self.depth(&self.queue.clone()).await;
        let dlq = self.depth(&self.topology.dlq()).await;
        let agents = self.agents().await;
        Reading {
            ready: input.map(|(ready, _)| ready),
            consumers: input.map(|(_, consumers)| consumers),
            dlq_ready: dlq.map(|(ready, _)| ready),
            agents,
        }
    }

    /// Live/busy agents and running tasks; `None` when Redis does not answer.
    pub async fn agents(&mut self) -> Option<AgentCount> {
        let read = proto::presence::count(&mut self.redis, &self.keys, self.heartbeat_ttl);
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(count)) => Some(count),
            Ok(Err(e)) => {
                tracing::warn!(error = %self.redis_endpoint.describe("redis", &e), "redis presence read failed");
                None
            }
            Err(_) => {
                tracing::warn!("redis presence read timed out");
                None
            }
        }
    }

    async fn depth(&mut self, queue: &str) -> Option<(u32, u32)> {
        let channel = self.channel().await?;
        match tokio::time::timeout(READ_TIMEOUT, Topology::depth(&channel, queue)).await {
            Ok(Ok(depth)) => Some(depth),
            Ok(Err(e)) => {
                // A missing queue (404) closes the channel: open a fresh one next time.
                tracing::warn!(queue, error = %e, "passive queue declare failed");
                self.link.drop_channel().await;
                None
            }
            Err(_) => {
                tracing::warn!(queue, "passive queue declare timed out; reconnecting");
                self.link.reset().await;
                None
            }
        }
    }

    /// The open channel, reopening it or reconnecting (with backoff) as needed.
    async fn channel(&mut self) -> Option<Channel> {
        if !self.link.is_connected().await && Instant::now() < self.next_connect {
            return None;
        }
        match tokio::time::timeout(OPEN_TIMEOUT, self.link.channel()).await {
            Ok(Ok((ch, _))) => {
                self.backoff.reset();
                Some(ch)
            }
            Ok(Err(LinkError::Connect(e))) => {
                let delay = self.backoff.next_delay();
                self.next_connect = Instant::now() + delay;
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "rabbitmq not reachable");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot open a rabbitmq channel and declare the queues");
                None
            }
            Err(_) => {
                tracing::warn!("opening a rabbitmq channel timed out; reconnecting");
                self.link.reset().await;
                None
            }
        }
    }

    /// Closes the channel, then the connection (graceful shutdown).
    pub async fn close(&mut self) {
        self.link.close("metrics probe stopping").await;
    }
}
