//! Publishes task envelopes with publisher confirms. One connection and one confirm
//! channel (a [`runtime::amqp_link::AmqpLink`]) are shared by all requests and rebuilt
//! lazily when the broker drops them.
//! Every publish is bounded by `PUBLISH_TIMEOUT_MS`; a reconnect that just failed is not
//! retried for a second, so an outage costs each request one fast failure, not a stampede.
//!
//! Readiness is a real round trip (a passive declare of the input queue on the publishing
//! channel, bounded by the caller), and false while the broker has blocked the connection
//! (`connection.blocked`: a memory or disk alarm), during which publishes fail at once
//! instead of waiting out their timeout. The answer is cached briefly so a load balancer
//! probing every few seconds costs the broker next to nothing.

use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ConnectionStatus};
use proto::TaskEnvelope;
use proto::topology::Topology;
use runtime::amqp_link::{AmqpLink, LinkError};
use runtime::connect::Endpoint;

const RECONNECT_COOLDOWN: Duration = Duration::from_secs(1);
/// How long a readiness answer is reused (under the usual probe interval of a few seconds).
const READY_CACHE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker unreachable: {0}")]
    Connect(String),
    #[error("publish failed: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("broker did not confirm within {0:?}")]
    Timeout(Duration),
    #[error("broker refused the message (nack or unroutable)")]
    Refused,
    #[error("broker unreachable (reconnect cooling down)")]
    CoolingDown,
    #[error("broker is blocking publishers (resource alarm)")]
    Blocked,
}

impl From<LinkError> for PublishError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Connect(e) => Self::Connect(e.to_string()),
            LinkError::Channel(e) => Self::Amqp(e),
        }
    }
}

pub struct Publisher {
    link: AmqpLink,
    timeout: Duration,
    last_failure: std::sync::Mutex<Option<Instant>>,
    ready_cache: std::sync::Mutex<Option<(Instant, bool)>>,
}

impl Publisher {
    pub fn new(endpoint: Endpoint, topology: Topology, timeout: Duration) -> Self {
        Self {
            link: AmqpLink::new(endpoint, "euglena-gateway", topology).with_confirms(),
            timeout,
            last_failure: std::sync::Mutex::new(None),
            ready_cache: std::sync::Mutex::new(None),
        }
    }

    async fn channel(&self) -> Result<(Channel, ConnectionStatus), PublishError> {
        if self.link.is_open().await {
            return Ok(self.link.channel().await?);
        }
        let cooling =
            self.last_failure.lock().map(|t| t.is_some_and(|t| t.elapsed() < RECONNECT_COOLDOWN)).unwrap_or(false);
        if cooling {
            return Err(PublishError::CoolingDown);
        }
        // Counted as a failure until it succeeds, so an attempt that is cut short (a /ready
        // probe's timeout, a dropped request) still starts the cool-down; and bounded on
        // its own inside the publish timeout, so a broker that accepts TCP but never
        // answers costs one slow attempt, not one per request.
        self.mark_failure();
        let budget = (self.timeout * 3 / 4).min(runtime::connect::AMQP_CONNECT_TIMEOUT);
        let attempt = match tokio::time::timeout(budget, self.link.channel()).await {
            Ok(opened) => opened.map_err(PublishError::from),
            Err(_) => Err(PublishError::Connect("connection attempt timed out".into())),
        };
        match attempt {
            Ok(ch) => {
                if let Ok(mut t) = self.last_failure.lock() {
                    *t = None;
                }
                Ok(ch)
            }
            Err(e) => {
                self.mark_failure();
                Err(e)
            }
        }
    }

    fn mark_failure(&self) {
        if let Ok(mut t) = self.last_failure.lock() {
            *t = Some(Instant::now());
        }
    }

    /// Returns only once the broker has confirmed the persistent message. `traceparent`
    /// (the task's, when tracing is on) goes in the message's headers.
    pub async fn publish(&self, envelope: &TaskEnvelope, traceparent: Option<&str>) -> Result<(), PublishError> {
        let work = async {
            let (channel, status) = self.channel().await?;
            if status.blocked() {
                metrics::counter!("gateway_publish_blocked_total").increment(1);
                return Err(PublishError::Blocked);
            }
            let props = proto::envelope::with_traceparent(
                proto::envelope::properties(&envelope.correlation_id.to_string()),
                traceparent,
            );
            let confirm = channel
                .basic_publish(
                    "".into(),
                    self.topology().queue.as_str().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &envelope.to_json(),
                    props,
                )
                .await?;
            let confirmation = confirm.await?;
            if confirmation.is_ack() && confirmation.take_message().is_none() {
                Ok(())
            } else {
                Err(PublishError::Refused)
            }
        };
        tokio::time::timeout(self.timeout, work).await.unwrap_or(Err(PublishError::Timeout(self.timeout)))
    }

    /// Readiness: the broker answers a round trip on the publishing channel within `limit`
    /// and is not blocking publishers. Reused for [`READY_CACHE`].
    pub async fn ready(&self, limit: Duration) -> bool {
        if let Ok(cache) = self.ready_cache.lock()
            && let Some((at, ok)) = *cache
            && at.elapsed() < READY_CACHE
        {
            return ok;
        }
        let probe = async {
            let (channel, status) = self.channel().await?;
            if status.blocked() {
                return Err(PublishError::Blocked);
            }
            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
            channel.queue_declare(self.topology().queue.as_str().into(), passive, FieldTable::default()).await?;
            Ok::<_, PublishError>(())
        };
        let ok = match tokio::time::timeout(limit, probe).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "rabbitmq readiness probe failed");
                false
            }
            Err(_) => {
                tracing::warn!(limit_ms = limit.as_millis() as u64, "rabbitmq readiness probe timed out");
                false
            }
        };
        if let Ok(mut cache) = self.ready_cache.lock() {
            *cache = Some((Instant::now(), ok));
        }
        ok
    }

    /// Connects now unless connected; the error says why (a TLS failure names the host).
    pub async fn connect_now(&self, limit: Duration) -> Result<(), String> {
        match tokio::time::timeout(limit, self.channel()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no connection within {limit:?}")),
        }
    }

    /// Closes the channel, then the connection.
    pub async fn close(&self) {
        self.link.close("gateway shutting down").await;
    }

    fn topology(&self) -> &Topology {
        self.link.topology()
    }
}
