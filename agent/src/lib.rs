//! The Euglena agent worker.
//!
//! # Layout
//! A stack, top to bottom: each module uses only those below it in this list
//! (`scripts/import-graph.py` checks).
//! - [`consumer`]: the consume loop: subscribe with reconnects and prefetch, hand each
//!   delivery on, return the live [`consumer::Link`] when told to stop.
//! - [`delivery`]: one delivery from envelope to settle (parse, claim, resume, run, finish).
//! - [`worker`]: [`worker::Worker`], what every delivery runs with, and
//!   [`worker::Intelligence`], the model, tools and memory built from the settings.
//! - [`presence`]: running tasks and the heartbeat.
//! - [`config`]: the agent's settings from the environment (each part's own settings
//!   live with that part).
//! - [`protection`]: ECS task scale-in protection while busy (with `ECS_AGENT_URI`).
//! - [`tick`]: the tick loop of one task ([`tick::Run`]), racing its deadline and stop; parking
//!   on a call that needs the owner's approval and reading the owner's messages (`tick::owner`).
//! - [`vet`]: what a result may claim: sources read or shown, deliverables without
//!   duplicates or placeholders.
//! - [`tools`]: `search`, `visit` (with the SSRF address policy and HTML to text) and the
//!   operator's MCP tools.
//! - [`model`]: the model interface, its prompts, the OpenAI-compatible client and the
//!   offline demo model (with [`model::offline::OfflineSettings`]).
//! - [`memory`]: task memory in Redis or Qdrant.
//! - [`embedding`]: the embeddings memory uses (model API or local hashing).
//! - [`checkpoint`]: the loop state ([`checkpoint::LoopState`], steps, pages, the partial
//!   result) and its stored JSON format.
//! - [`meter`]: a task's running token count ([`meter::Meter`] over `proto::Usage`) and
//!   the count of model requests behind each call ([`meter::counted`]).
//! - [`retry`]: retrying Redis writes through short outages.
//! - [`text`]: [`text::clip`], the one way outside text is bounded.
//!
//! [`run`] wires them: Redis, the worker, heartbeat, protection, the consumer, then the
//! drain; heartbeat, protection and the health endpoint are background tasks owned by one
//! `runtime::lifecycle::Background`, stopped in that order after the drain. Shutdown (SIGTERM): stop taking deliveries, mark presence `draining`, let running
//! tasks finish for up to `AGENT_DRAIN_SECONDS`, then interrupt the rest (checkpointed,
//! requeued with `nack`), close the broker link, release scale-in protection, deregister.
//! Every log line of a run carries the `agent_id` (its span), so agents sharing one
//! terminal under the local autoscaler can be told apart.

pub mod checkpoint;
pub mod config;
pub mod consumer;
pub mod delivery;
pub mod embedding;
pub mod memory;
pub mod meter;
pub mod model;
pub mod presence;
pub mod protection;
pub mod retry;
pub mod text;
pub mod tick;
pub mod tools;
pub mod vet;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use proto::Keys;
use proto::store::TaskStore;
use runtime::lifecycle::{Background, Stage};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Settings;
use crate::worker::{Intelligence, Worker};

/// After the drain, interrupted runs get this long to checkpoint and nack.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);
/// Releasing scale-in protection and deregistering (each bounded on its own).
const AFTER_DRAIN_GRACE: Duration = Duration::from_secs(15);
/// A scrape or health check in flight.
const OPS_GRACE: Duration = Duration::from_secs(5);

/// Runs the agent until `shutdown` resolves, then drains. `health` serves `/health` and
/// `/metrics`.
pub async fn run(
    health: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let span = tracing::info_span!("agent", agent_id = %settings.worker_id);
    async move {
        let shutdown = runtime::lifecycle::cancel_on(shutdown);
        // Stopped in this order after the drain (or after a failed start): scale-in
        // protection released while deregistering, then the health endpoint.
        let mut background = Background::new();
        let after_drain = background.stage("presence and protection", AFTER_DRAIN_GRACE);
        let ops = background.stage("health endpoint", OPS_GRACE);
        ops.track(runtime::ops::spawn(health, settings.common.http_header_timeout, ops.token()));
        let result = serve(settings, shutdown, &after_drain).await;
        background.stop().await;
        tracing::info!("agent stopped");
        result
    }
    .instrument(span)
    .await
}

/// Until shutdown: connect, build the worker, consume; then drain. The background tasks it
/// starts run on `after_drain`, which the caller stops once this returns.
async fn serve(settings: Settings, shutdown: CancellationToken, after_drain: &Stage) -> anyhow::Result<()> {
    let mut redis = runtime::connect::redis(&settings.common.redis)?;
    if !runtime::connect::wait_for_redis(&mut redis, &settings.common.redis, &shutdown).await {
        return Ok(());
    }
    let store = TaskStore::new(redis, Keys::new(settings.common.key_prefix.clone()), settings.common.task_record_ttl);
    if let Err(e) = store.load_scripts().await {
        // Not fatal: a script missing from the cache costs its first call one EVAL.
        tracing::warn!(error = %e, "could not preload the Lua scripts");
    }
    let parts =
        Intelligence::build(&settings, &store).map_err(|e| e.context("could not set up the model, tools or memory"))?;
    if settings.llm.is_none() {
        tracing::warn!(
            model = parts.model.name(),
            "running the OFFLINE DEMO MODEL (no OPENAI_API_KEY or OPENAI_BASE_URL): it visits URLs from the \
             mandate and reports their titles; it does not search or reason"
        );
    } else {
        tracing::info!(model = parts.model.name(), "using an OpenAI-compatible model API");
    }
    tracing::info!(
        memory = %parts.memory.describe(),
        search = ?parts.tools.searcher.provider(),
        visit_allow_private = settings.visit.allow_private,
        "tools and memory ready"
    );
    if settings.visit.allow_private {
        tracing::warn!("VISIT_ALLOW_PRIVATE=true: the visit tool may reach private and loopback addresses");
    }
    let worker = Arc::new(Worker::new(settings, store, parts));
    tracing::info!(worker_id = %worker.settings.worker_id, concurrency = worker.settings.concurrency, "agent starting");

    if let Some(p) = &worker.settings.protection {
        let task = protection::spawn(p, worker.registry.watch_busy(), after_drain.token())
            .map_err(|e| e.context("could not set up ECS scale-in protection"))?;
        after_drain.track(task);
    }
    {
        let (w, stop) = (worker.clone(), after_drain.token());
        after_drain.spawn(async move { presence::heartbeat(&w.registry, &w.store, &w.settings, stop).await });
    }

    let tracker = TaskTracker::new();
    let interrupt = CancellationToken::new();
    let link = consumer::consume(worker.clone(), tracker.clone(), shutdown.clone(), interrupt.clone()).await;

    // Draining.
    worker.registry.set_draining();
    tracker.close();
    let drain = worker.settings.drain;
    let running = worker.registry.running().len();
    tracing::info!(running, drain_s = drain.as_secs(), "draining");
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!(
            running = worker.registry.running().len(),
            "drain period over; checkpointing and requeueing the rest"
        );
        interrupt.cancel();
        if tokio::time::timeout(INTERRUPT_GRACE, tracker.wait()).await.is_err() {
            tracing::error!("runs did not stop in time; the broker will redeliver them");
        }
    } else {
        tracing::info!("all running tasks finished");
    }
    interrupt.cancel();
    if let Some(link) = link {
        link.close("agent shutting down").await;
    }
    Ok(())
}
