//! Connections to Redis and RabbitMQ: every call has a timeout, and waiting for a
//! dependency retries with capped, jittered backoff until the process is told to stop.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
pub const AMQP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Redis connection manager that connects lazily and reconnects by itself; commands
/// fail fast (after [`REDIS_TIMEOUT`]) while Redis is down instead of hanging.
pub fn redis(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// A connection of its own for blocking reads (`XREAD BLOCK`), which would stall every
/// other command on a shared multiplexed connection; its response timeout allows for `block`.
pub fn redis_blocking(url: &str, block: Duration) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(block + REDIS_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// Waits until Redis answers `PING`, or the token is cancelled (then `false`).
pub async fn wait_for_redis(conn: &mut ConnectionManager, stop: &CancellationToken) -> bool {
    let mut backoff = Backoff::reconnect();
    loop {
        match redis::cmd("PING").query_async::<String>(conn).await {
            Ok(_) => return true,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "redis not reachable");
                tokio::select! {
                    () = stop.cancelled() => return false,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AmqpConnectError {
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("rabbitmq: connection timed out after {0:?}")]
    Timeout(Duration),
}

pub async fn amqp(url: &str, name: &str) -> Result<Connection, AmqpConnectError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(AMQP_CONNECT_TIMEOUT, Connection::connect(url, props)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(AmqpConnectError::Timeout(AMQP_CONNECT_TIMEOUT)),
    }
}

/// Connects with backoff until it succeeds or the token is cancelled (then `None`).
pub async fn amqp_with_backoff(url: &str, name: &str, stop: &CancellationToken) -> Option<Connection> {
    let mut backoff = Backoff::reconnect();
    loop {
        match amqp(url, name).await {
            Ok(c) => return Some(c),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "rabbitmq not reachable");
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
