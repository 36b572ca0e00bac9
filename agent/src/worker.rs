//! The worker: what every delivery runs with. [`Intelligence`] (model, tools, memory) is
//! built once from the settings; [`Worker`] adds the task store, the settings and the
//! presence registry, and is shared by the consumer's tasks behind an `Arc`.

use std::sync::Arc;

use proto::store::TaskStore;

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

pub struct Worker {
    pub settings: Settings,
    pub store: TaskStore,
    pub model: Arc<dyn Model>,
    pub tools: Tools,
    pub memory: Memory,
    pub registry: Registry,
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
        let mcp = runtime::mcp::McpClients::new(settings.mcp.clone(), settings.mcp_limits);
        let tools = Tools::new(settings.search.clone(), settings.visit.clone(), mcp)?;
        Ok(Self { model, tools, memory })
    }
}

impl Worker {
    /// The store's terminal writes forget the task's memories when they live in Redis.
    pub fn new(settings: Settings, store: TaskStore, parts: Intelligence) -> Self {
        let Intelligence { model, tools, memory } = parts;
        let store = store.with_memory_cleanup(memory.cleanup_at_end());
        Self { settings, store, model, tools, memory, registry: Registry::default() }
    }
}
