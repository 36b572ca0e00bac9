//! One lazily opened RabbitMQ connection and channel, shared by its callers and rebuilt
//! when the broker drops either: the gateway's publisher (with publisher confirms), the
//! reconciler's dead-letter feed and the metrics sidecar's probe.
//!
//! The link connects on first use, opens a channel (in confirm mode if asked) and declares
//! the topology on it, so every process declares the queues with the same arguments before
//! it touches them. A lost channel on a live connection costs a new channel, not a new
//! connection. How often to retry a failed connect is the caller's policy (a cool-down in
//! the publisher, backoff in the probe); the link never waits on its own. It closes in one
//! order: the channel, then the connection (with the channel still open lapin logs an
//! ERROR, "invalid channel state: Closing", on every clean stop).

use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionStatus};
use proto::topology::Topology;
use tokio::sync::Mutex;

use crate::connect::{self, AmqpConnectError, Endpoint};

/// Bound on each half of [`AmqpLink::close`].
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No connection (the broker is unreachable, refused the login, or TLS failed).
    #[error(transparent)]
    Connect(#[from] AmqpConnectError),
    /// Connected, but the channel could not be opened or set up (confirm mode, declares).
    #[error(transparent)]
    Channel(#[from] lapin::Error),
}

pub struct AmqpLink {
    endpoint: Endpoint,
    /// The connection name the broker shows.
    name: String,
    topology: Topology,
    confirms: bool,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    connection: Option<Connection>,
    channel: Option<Channel>,
}

impl AmqpLink {
    /// A link that declares `topology` on every channel it opens; nothing connects yet.
    pub fn new(endpoint: Endpoint, name: impl Into<String>, topology: Topology) -> Self {
        Self { endpoint, name: name.into(), topology, confirms: false, open: Mutex::new(Open::default()) }
    }

    /// Channels in confirm mode (publisher confirms).
    pub fn with_confirms(mut self) -> Self {
        self.confirms = true;
        self
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Whether the connection is up (the channel may still need reopening).
    pub async fn is_connected(&self) -> bool {
        self.open.lock().await.connection.as_ref().is_some_and(|c| c.status().connected())
    }

    /// Whether the connection and the channel are both up: the next [`Self::channel`]
    /// call answers without a round trip.
    pub async fn is_open(&self) -> bool {
        let open = self.open.lock().await;
        open.connection.as_ref().is_some_and(|c| c.status().connected())
            && open.channel.as_ref().is_some_and(|ch| ch.status().connected())
    }

    /// The open channel and its connection's status, connecting and opening as needed.
    /// Cancelling the call (a caller's timeout) leaves the link as it was.
    pub async fn channel(&self) -> Result<(Channel, ConnectionStatus), LinkError> {
        let mut open = self.open.lock().await;
        if let Some(conn) = open.connection.as_ref().filter(|c| c.status().connected()) {
            let status = conn.status().clone();
            if let Some(ch) = open.channel.as_ref().filter(|ch| ch.status().connected()) {
                return Ok((ch.clone(), status));
            }
        } else {
            if open.connection.is_some() {
                tracing::warn!(connection = %self.name, "rabbitmq link lost; reconnecting");
            }
            *open = Open::default();
            let conn = connect::amqp(&self.endpoint, &self.name).await?;
            tracing::info!(connection = %self.name, queue = %self.topology.queue, "rabbitmq link connected");
            open.connection = Some(conn);
        }
        open.channel = None;
        let Some(conn) = open.connection.as_ref() else { unreachable!("connected above") };
        let status = conn.status().clone();
        let channel = conn.create_channel().await?;
        if self.confirms {
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
        }
        self.topology.declare(&channel).await?;
        open.channel = Some(channel.clone());
        Ok((channel, status))
    }

    /// Forgets the channel (a channel-level error closed it); the next call opens another
    /// on the same connection.
    pub async fn drop_channel(&self) {
        self.open.lock().await.channel = None;
    }

    /// Forgets the connection and channel; the next call reconnects.
    pub async fn reset(&self) {
        *self.open.lock().await = Open::default();
    }

    /// Closes the channel, then the connection, each within a bound; the next call
    /// would reconnect.
    pub async fn close(&self, reason: &str) {
        let open = std::mem::take(&mut *self.open.lock().await);
        if let Some(ch) = open.channel {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ch.close(200, reason.into())).await;
        }
        if let Some(conn) = open.connection {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, reason.into())).await;
        }
    }
}
