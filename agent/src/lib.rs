//! The Euglena agent worker.
//!
//! # Layout
//! - [`config`]: settings from the environment.
//! - [`consumer`]: the consume loop with reconnects and prefetch.
//! - [`delivery`]: one delivery from envelope to ack (parse, claim, run, finish).
//! - [`tick`]: the tick loop and its checkpointed state.
//! - [`model`]: the model interface, the OpenAI-compatible client and the offline demo model.
//! - [`prompt`]: prompt files (`agent/prompts/`) and their rendering.
//! - [`tools`]: `search` and `visit` (with the SSRF address policy and HTML to text).
//! - [`memory`], [`embedding`]: task memory in Redis or Qdrant, and the embeddings it uses.
//! - [`presence`]: running tasks and the heartbeat.
//! - [`protection`]: ECS task scale-in protection while busy (with `ECS_AGENT_URI`).
//!
//! Shutdown (SIGTERM): stop taking deliveries, mark presence `draining`, let running
//! tasks finish for up to `AGENT_DRAIN_SECONDS`, then interrupt the rest (checkpointed,
//! requeued with `nack`), release scale-in protection, deregister and close.

pub mod config;
pub mod consumer;
pub mod delivery;
pub mod embedding;
pub mod memory;
pub mod model;
pub mod presence;
pub mod prompt;
pub mod protection;
pub mod retry;
pub mod tick;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use proto::Keys;
use proto::store::TaskStore;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::embedding::{ApiEmbedder, Embedder, LocalEmbedder};
use crate::memory::qdrant::QdrantStore;
use crate::memory::redis::RedisStore;
use crate::memory::{Memory, VectorStore};
use crate::model::Model;
use crate::model::offline::OfflineModel;
use crate::model::openai::OpenAiModel;
use crate::presence::Registry;
use crate::tools::Tools;
use crate::tools::search::Searcher;
use crate::tools::visit::Visitor;
use proto::address_policy::SystemLookup;

/// After the drain, interrupted runs get this long to checkpoint and nack.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);

pub struct Worker {
    pub settings: Settings,
    pub store: TaskStore,
    pub model: Arc<dyn Model>,
    pub tools: Tools,
    pub memory: Memory,
    pub registry: Registry,
    held: Mutex<Option<(lapin::Connection, lapin::Channel)>>,
}

/// The model, tools and memory a worker runs tasks with, built once from the settings.
pub struct Intelligence {
    pub model: Arc<dyn Model>,
    pub tools: Tools,
    pub memory: Memory,
}

impl Intelligence {
    pub fn build(settings: &Settings, store: &TaskStore) -> anyhow::Result<Self> {
        let (model, embedder): (Arc<dyn Model>, Arc<dyn Embedder>) = match &settings.llm {
            None => (Arc::new(OfflineModel::new(settings.offline.clone())), Arc::new(LocalEmbedder)),
            Some(llm) => {
                let m = OpenAiModel::new(llm.clone())?;
                let embedder: Arc<dyn Embedder> = if llm.embedding_model == "local" {
                    Arc::new(LocalEmbedder)
                } else {
                    Arc::new(ApiEmbedder::new(m.client(), llm.embedding_model.clone()))
                };
                (Arc::new(m), embedder)
            }
        };
        let vectors: Arc<dyn VectorStore> = match QdrantStore::new(&settings.memory)? {
            Some(q) => Arc::new(q),
            None => {
                Arc::new(RedisStore::new(store.connection(), store.keys().clone(), settings.common.task_record_ttl))
            }
        };
        let memory = Memory::new(vectors, embedder, settings.memory.top_k, settings.memory.retention);
        let tools = Tools {
            searcher: Searcher::new(settings.search.clone())?,
            visitor: Visitor::new(settings.visit.clone(), Arc::new(SystemLookup), Vec::new())?,
        };
        Ok(Self { model, tools, memory })
    }
}

impl Worker {
    pub fn new(settings: Settings, store: TaskStore, parts: Intelligence) -> Self {
        let Intelligence { model, tools, memory } = parts;
        Self { settings, store, model, tools, memory, registry: Registry::default(), held: Mutex::new(None) }
    }

    async fn hold_link(&self, conn: lapin::Connection, channel: lapin::Channel) {
        *self.held.lock().await = Some((conn, channel));
    }
}

/// Runs the agent until `shutdown` is cancelled, then drains. `health` serves `/health`
/// and `/metrics`.
pub async fn run(settings: Settings, health: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ops_stop = CancellationToken::new();
    let ops_task = proto::ops::spawn(health, settings.common.http_header_timeout, ops_stop.clone());

    let mut redis = proto::connect::redis(&settings.common.redis)?;
    if !proto::connect::wait_for_redis(&mut redis, &settings.common.redis, &shutdown).await {
        ops_stop.cancel();
        return Ok(());
    }
    let store = TaskStore::new(redis, Keys::new(settings.common.key_prefix.clone()), settings.common.task_record_ttl);
    if let Err(e) = store.load_scripts().await {
        // Not fatal: a script missing from the cache costs its first call one EVAL.
        tracing::warn!(error = %e, "could not preload the Lua scripts");
    }
    let parts = match Intelligence::build(&settings, &store) {
        Ok(p) => p,
        Err(e) => {
            ops_stop.cancel();
            return Err(e.context("could not set up the model, tools or memory"));
        }
    };
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

    let protection_stop = CancellationToken::new();
    let protection = match &worker.settings.protection {
        None => None,
        Some(p) => match protection::spawn(p, worker.registry.watch_busy(), protection_stop.clone()) {
            Ok(task) => Some(task),
            Err(e) => {
                ops_stop.cancel();
                return Err(e.context("could not set up ECS scale-in protection"));
            }
        },
    };

    let presence_stop = CancellationToken::new();
    let presence = {
        let w = worker.clone();
        let stop = presence_stop.clone();
        tokio::spawn(async move { presence::heartbeat(&w, stop).await })
    };

    let tracker = TaskTracker::new();
    let interrupt = CancellationToken::new();
    consumer::consume(worker.clone(), tracker.clone(), shutdown.clone(), interrupt.clone()).await;

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
    if let Some((conn, channel)) = worker.held.lock().await.take() {
        let _ = channel.close(200, "agent shutting down".into()).await;
        let _ = conn.close(200, "agent shutting down".into()).await;
    }
    // After the drain: release scale-in protection (bounded) while deregistering.
    protection_stop.cancel();
    presence_stop.cancel();
    if let Some(task) = protection {
        let _ = task.await;
    }
    let _ = presence.await;
    ops_stop.cancel();
    let _ = ops_task.await;
    tracing::info!("agent stopped");
    Ok(())
}
