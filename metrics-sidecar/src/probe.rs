//! Reads the numbers the fleet is scaled on: the input queue's ready and consumer counts
//! and its DLQ's depth (passive declares, so the sidecar never creates a queue with the
//! wrong arguments), and the live/busy agents and running tasks from Redis presence.
//!
//! Every read has a timeout, and a failed read is `None`, never zero: a scaler that read a
//! broker outage as "empty queue" would stop the whole fleet.

use std::time::Duration;

use lapin::{Channel, Connection};
use proto::Keys;
use proto::presence::AgentCount;
use proto::topology::Topology;
use redis::aio::ConnectionManager;
use runtime::backoff::Backoff;
use runtime::connect::Endpoint;
use tokio::time::Instant;

/// Bound on one broker or Redis read; the sample interval is seconds, so this is generous.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    pub ready: Option<u32>,
    pub consumers: Option<u32>,
    pub dlq_ready: Option<u32>,
    pub agents: Option<AgentCount>,
}

pub struct Probe {
    rabbitmq: Endpoint,
    redis_endpoint: Endpoint,
    topology: Topology,
    queue: String,
    redis: ConnectionManager,
    keys: Keys,
    heartbeat_ttl: Duration,
    conn: Option<Connection>,
    channel: Option<Channel>,
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
            rabbitmq: rabbitmq.clone(),
            redis_endpoint: redis_endpoint.clone(),
            queue: topology.queue.clone(),
            topology,
            redis,
            keys,
            heartbeat_ttl,
            conn: None,
            channel: None,
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
                self.channel = None;
                None
            }
            Err(_) => {
                tracing::warn!(queue, "passive queue declare timed out; reconnecting");
                self.channel = None;
                self.conn = None;
                None
            }
        }
    }

    /// The open channel, reopening it or reconnecting (with backoff) as needed.
    async fn channel(&mut self) -> Option<Channel> {
        if let Some(ch) = self.channel.as_ref().filter(|ch| ch.status().connected()) {
            return Some(ch.clone());
        }
        self.channel = None;
        if !self.conn.as_ref().is_some_and(|c| c.status().connected()) {
            self.conn = None;
            if Instant::now() < self.next_connect {
                return None;
            }
            match runtime::connect::amqp(&self.rabbitmq, "metrics-probe").await {
                Ok(c) => {
                    self.backoff.reset();
                    self.conn = Some(c);
                }
                Err(e) => {
                    let delay = self.backoff.next_delay();
                    self.next_connect = Instant::now() + delay;
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "rabbitmq not reachable");
                    return None;
                }
            }
        }
        let conn = self.conn.as_ref()?;
        match tokio::time::timeout(READ_TIMEOUT, conn.create_channel()).await {
            Ok(Ok(ch)) => {
                // Declare (idempotently, with the same arguments as every process) before the
                // passive reads: a passive declare of a queue that does not exist yet (the
                // sidecar started before the gateway) closes the channel and lapin logs it
                // as an ERROR on a healthy start.
                match tokio::time::timeout(READ_TIMEOUT, self.topology.declare(&ch)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "declaring the queues failed; the reads will say why");
                    }
                    Err(_) => tracing::warn!("declaring the queues timed out"),
                }
                if !ch.status().connected() {
                    return None;
                }
                self.channel = Some(ch.clone());
                Some(ch)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot open a rabbitmq channel; reconnecting");
                self.conn = None;
                None
            }
            Err(_) => {
                tracing::warn!("opening a rabbitmq channel timed out; reconnecting");
                self.conn = None;
                None
            }
        }
    }

    /// Closes the broker connection (graceful shutdown).
    pub async fn close(&mut self) {
        // Channel first: closing the connection with the channel still open makes lapin log
        // an ERROR ("invalid channel state: Closing") on every clean stop.
        if let Some(ch) = self.channel.take() {
            let _ = tokio::time::timeout(READ_TIMEOUT, ch.close(200, "metrics probe stopping".into())).await;
        }
        if let Some(conn) = self.conn.take() {
            let _ = tokio::time::timeout(READ_TIMEOUT, conn.close(200, "metrics probe stopping".into())).await;
        }
    }
}
