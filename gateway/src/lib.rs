//! The Euglena gateway.
//!
//! # Layout
//! - [`config`]: settings from the environment.
//! - [`auth`]: bearer JWT verification (JWKS and HS256) and the `AuthUser` extractor.
//! - [`extract`], [`problem`], [`edge`]: request bodies in, RFC 9457 problems out, for
//!   every error including unknown routes and oversize bodies; the request deadline.
//! - [`submission`]: admit → publish (with publisher confirms) → confirm, or undo; the
//!   broker link and its readiness.
//! - [`reconciler`]: ends records nobody else will (never enqueued, dead-lettered).
//! - [`streams`]: per-user and per-gateway bounds on open event streams.
//! - [`events`]: following a task's progress as Server-Sent Events; [`event_hub`]: the one
//!   Redis reader that wakes every follower.
//! - [`webhooks`]: signed task-end webhooks, delivered from a durable Redis queue.
//! - [`routes`]: the HTTP API (ARCHITECTURE §2); [`samples_cache`]: the copy of the
//!   sidecar's samples `GET /ops/samples` answers from.
//! - [`mcp`]: `/mcp`, the same tasks as MCP tools for MCP hosts (streamable HTTP).
//! - [`http_metrics`]: per-route metrics, labelled from closed sets.
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the routes.
//!
//! Submission is all-or-nothing: `202` only after Redis holds the record and RabbitMQ
//! confirmed the envelope; otherwise the record is failed and the quota refunded. Admission
//! (idempotency, rate limit, active cap, quota) is one Redis script, exact across replicas.

pub mod audit;
pub mod auth;
pub mod config;
pub mod dead_letters;
pub mod edge;
pub mod event_hub;
pub mod events;
pub mod extract;
pub mod http_metrics;
pub mod mcp;
pub mod openapi;
pub mod problem;
pub mod reconciler;
pub mod routes;
pub mod samples_cache;
pub mod state;
pub mod streams;
pub mod submission;
pub mod tools;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proto::Keys;
use proto::store::TaskStore;
use proto::topology::Topology;
use runtime::lifecycle::Background;
use tokio::net::TcpListener;

use crate::auth::{Jwks, Verifier, jwks};
use crate::config::Settings;
use crate::event_hub::{self as hub, EventHub};
use crate::samples_cache::SamplesCache;
use crate::state::{AppState, Inner};
use crate::streams::StreamLimits;
use crate::submission::{Publisher, Submissions};
use crate::webhooks::Dispatcher;
use proto::stream_leases::StreamLeases;
use proto::webhook_queue::WebhookQueue;
use runtime::address_policy::{Lookup, SystemLookup};

/// In-flight requests get this long to finish after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
const WARM_UP: Duration = Duration::from_secs(2);

/// The clients and background workers of a gateway. Declares the background stages it
/// starts on `background`, in the order they stop after the HTTP drain: the event hub (its
/// token, `AppState::shutdown`, is cancelled at the signal to end event streams), the
/// publishes and undos under way, the group-commit workers they use, the webhook dispatcher.
pub fn build_state(settings: Settings, background: &mut Background) -> anyhow::Result<AppState> {
    let streams_stage = background.stage("event streams", Duration::from_secs(5));
    let in_flight = background.stage("submissions in flight", Duration::from_secs(10));
    let commits = background.stage("group commits", Duration::from_secs(5));
    let redis = runtime::connect::redis(&settings.common.redis)?;
    let hub = EventHub::spawn(runtime::connect::redis_blocking(&settings.common.redis, hub::BLOCK)?, &streams_stage);
    let keys = Keys::new(settings.common.key_prefix.clone());
    let store = TaskStore::new(redis.clone(), keys, settings.common.task_record_ttl);
    let topology = Topology::new(settings.common.input_queue.clone(), settings.common.max_deliveries);
    let dead_letters = Arc::new(dead_letters::DeadLetterQueue::new(settings.common.rabbitmq.clone(), &topology));
    let publisher = Publisher::new(settings.common.rabbitmq.clone(), topology, settings.publish_timeout);
    let jwks = match (&settings.auth.jwks_url, &settings.auth.public_jwk) {
        (Some(url), _) => Some(Arc::new(Jwks::remote(url.clone()))),
        (None, Some(jwk)) => Some(Arc::new(Jwks::fixed(jwk).context("SUPABASE_JWT_PUBLIC_JWK is not a usable key")?)),
        (None, None) => None,
    };
    let verifier = Arc::new(Verifier::new(&settings.auth, jwks));
    let lookup: Arc<dyn Lookup> = Arc::new(SystemLookup);
    if let Some(w) = &settings.webhooks {
        let queue = WebhookQueue::new(redis.clone(), store.keys().clone());
        // It drains its attempts in flight, each bounded by the timeout plus bookkeeping.
        let stage = background.stage("webhooks", w.timeout + webhooks::DRAIN_MARGIN);
        stage.track(Dispatcher::new(queue, store.clone(), w.clone(), lookup.clone())?.spawn(stage.token()));
    }
    let submissions = Submissions::new(&settings, store.clone(), publisher, in_flight, &commits);
    let streams = StreamLimits::new(
        StreamLeases::new(redis.clone(), store.keys().clone()),
        settings.sse_max_streams,
        settings.sse_max_streams_per_user,
    );
    let samples = SamplesCache::new(settings.samples_cache);
    let shutdown = streams_stage.token();
    let mcp = Arc::new(runtime::mcp::McpClients::new(settings.mcp.clone(), runtime::mcp::McpLimits::default()));
    Ok(AppState::new(Inner {
        settings,
        store,
        redis,
        verifier,
        submissions,
        hub,
        shutdown,
        streams,
        samples,
        lookup,
        mcp,
        dead_letters,
    }))
}

/// Serves the API on `listener` until `shutdown` resolves, then drains in-flight
/// requests for up to [`SHUTDOWN_GRACE`] and stops the background tasks in order (see
/// [`build_state`]; then the reconciler and the signing-key refresh).
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    runtime::ops::prometheus();
    let mut background = Background::new();
    let state = match build_state(settings, &mut background) {
        Ok(state) => state,
        Err(e) => {
            background.stop().await;
            return Err(e);
        }
    };
    // A pass in progress ends by its own timeouts.
    let reconciling = background.stage("reconciler", Duration::from_secs(10));
    let refreshing = background.stage("signing keys", jwks::FETCH_TIMEOUT + Duration::from_secs(1));
    if let Some(jwks) = state.verifier.jwks() {
        // Load the keys before serving, so the first tokens do not each miss; a key server
        // that is down at start is retried in the background.
        let loaded = match jwks.refresh().await {
            Ok(n) => {
                tracing::info!(keys = n, "signing keys loaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "signing keys could not be loaded at start; retrying in the background");
                false
            }
        };
        jwks.clone().spawn_refresher(state.settings.auth.jwks_cache, loaded, &refreshing);
    }
    if let Err(e) = state.store.load_scripts().await {
        // Not fatal: a script missing from the cache costs its first call one EVAL.
        tracing::warn!(error = %e, "could not preload the Lua scripts");
    }
    reconciling.spawn(reconciler::Reconciler::for_gateway(&state).run(reconciling.token()));
    // Warm both links so the first request does not pay for them, and so a refused TLS
    // certificate is in the log at start. Failure is not fatal: /ready reports it and the
    // next request retries.
    let mut redis = state.redis.clone();
    let (redis_up, broker_up) = tokio::join!(
        tokio::time::timeout(WARM_UP, runtime::connect::ping_redis(&mut redis, &state.settings.common.redis)),
        state.submissions.publisher().connect_now(WARM_UP),
    );
    match redis_up {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "redis not reachable at start; requests will get 503 until it is"),
        Err(_) => tracing::warn!("redis did not answer at start; requests will get 503 until it does"),
    }
    if let Err(e) = broker_up {
        tracing::warn!(error = %e, "rabbitmq not reachable at start; submissions will get 503 until it is");
    }
    if state.settings.console_dev_tokens {
        tracing::warn!("CONSOLE_DEV_TOKENS=true: POST /dev/token mints tokens for anyone; local use only");
    }
    let app = routes::router(state.clone(), mcp::router(&state));
    let reserve = runtime::serve::Reserve {
        app: routes::reserve_router(state.clone()),
        connections: state.settings.probe_reserve,
    };
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    // Ending the event streams at the signal means the drain does not wait for followers
    // that would otherwise stay for minutes.
    let streams = state.shutdown.clone();
    let signal = async move {
        shutdown.await;
        streams.cancel();
    };
    runtime::serve::serve(listener, app, Some(reserve), state.settings.edge.clone(), SHUTDOWN_GRACE, signal).await;
    background.stop().await;
    state.submissions.publisher().close().await;
    tracing::info!("gateway stopped");
    Ok(())
}
