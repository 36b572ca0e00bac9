//! The Euglena gateway.
//!
//! # Layout
//! - [`config`]: settings from the environment.
//! - [`auth`]: bearer JWT verification and the `AuthUser` extractor.
//! - [`extract`], [`problem`]: request bodies in, RFC 9457 problems out.
//! - [`publisher`]: envelope publishing with publisher confirms, and broker readiness.
//! - [`undo`]: publish, mark confirmed, or undo with retries off the request path.
//! - [`reconciler`]: ends records nobody else will (never enqueued, dead-lettered).
//! - [`routes`]: the HTTP API (SPEC §2).
//! - [`http_metrics`]: per-route metrics and the request deadline.
//!
//! Submission is all-or-nothing: `202` only after Redis holds the record and RabbitMQ
//! confirmed the envelope; otherwise the record is failed and the quota refunded.

pub mod auth;
pub mod config;
pub mod extract;
pub mod http_metrics;
pub mod problem;
pub mod publisher;
pub mod reconciler;
pub mod routes;
pub mod state;
pub mod undo;

use std::future::Future;
use std::time::Duration;

use proto::Keys;
use proto::store::TaskStore;
use proto::topology::Topology;
use tokio::net::TcpListener;

use crate::auth::JwtVerifier;
use crate::config::Settings;
use crate::publisher::Publisher;
use crate::state::{AppState, Inner};

/// In-flight requests get this long to finish after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

pub fn build_state(settings: Settings) -> anyhow::Result<AppState> {
    let redis = proto::connect::redis(&settings.common.redis_url)?;
    let keys = Keys::new(settings.common.key_prefix.clone());
    let store = TaskStore::new(redis.clone(), keys, settings.common.task_record_ttl);
    let topology = Topology::new(settings.common.input_queue.clone(), settings.common.max_deliveries);
    let publisher = Publisher::new(settings.common.rabbitmq_url.clone(), topology, settings.publish_timeout);
    let verifier = JwtVerifier::hs256(settings.jwt_secret_bytes(), &settings.audience, settings.issuer.as_deref());
    Ok(AppState::new(Inner { settings, store, redis, publisher, verifier }))
}

/// Serves the API on `listener` until `shutdown` resolves, then drains in-flight
/// requests for up to [`SHUTDOWN_GRACE`].
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    proto::ops::prometheus();
    let state = build_state(settings)?;
    if let Err(e) = state.store.load_scripts().await {
        // Not fatal: a script missing from the cache costs its first call one EVAL.
        tracing::warn!(error = %e, "could not preload the Lua scripts");
    }
    let reconciler_stop = tokio_util::sync::CancellationToken::new();
    let reconciler = tokio::spawn(reconciler::Reconciler::for_gateway(&state).run(reconciler_stop.clone()));
    // Warm the broker link so the first request does not pay for it; failure is not fatal,
    // /ready reports it and the next publish retries.
    if !state.publisher.ready(Duration::from_secs(2)).await {
        tracing::warn!("rabbitmq not reachable at start; submissions will get 503 until it is");
    }
    let app = routes::router(state.clone());
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopped_tx.send(());
    });
    let serve = async move { serve.await.map_err(anyhow::Error::from) };
    tokio::pin!(serve);
    tokio::select! {
        r = &mut serve => r?,
        () = async { let _ = stopped_rx.await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "shutdown grace elapsed with requests in flight; closing");
        }
    }
    reconciler_stop.cancel();
    // A pass in progress is bounded by its own timeouts; do not wait longer than that.
    let _ = tokio::time::timeout(Duration::from_secs(10), reconciler).await;
    state.publisher.close().await;
    tracing::info!("gateway stopped");
    Ok(())
}
