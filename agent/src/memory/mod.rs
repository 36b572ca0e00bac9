//! Task memory: what the agent learned (facts it chose to remember, search results, page
//! passages), embedded and searched each tick by hybrid recall: the vector's similarity
//! and a lexical (BM25) score of the query's words, fused by rank ([`lexical`]), so an
//! exact rare term (a name, a number) finds its memory even where the embedding blurs it.
//!
//! Two stores behind [`VectorStore`]: [`qdrant::QdrantStore`] when `QDRANT_URL` is set
//! (dense and sparse vectors, fused by Qdrant's query API), else [`redis::RedisStore`]
//! (`memory:{id}`, exact search and fusion inside the agent). Both scope
//! every read to one task *and* its user, and a task's memories are deleted when it ends
//! unless `MEMORY_RETENTION_SECONDS` keeps them longer: Redis ones by the terminal write
//! itself ([`Memory::cleanup_at_end`]), Qdrant ones by a delete after it.

pub mod lexical;
pub mod qdrant;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use proto::TaskId;
use proto::store::MemoryCleanup;
use runtime::config::{ConfigError, Env};
use serde::{Deserialize, Serialize};

use crate::embedding::{EmbedError, Embedder};
use crate::meter::Meter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Something the model asked to remember.
    Fact,
    /// A search result.
    Search,
    /// A passage of a visited page.
    Page,
    /// What an MCP tool returned.
    Tool,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fact => "fact",
            Self::Search => "search",
            Self::Page => "page",
            Self::Tool => "tool",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Fact, Self::Search, Self::Page, Self::Tool].into_iter().find(|k| k.as_str() == s)
    }
}

/// Whose memories: one task of one user. Every read and write names both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub task: TaskId,
    pub user: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewMemory {
    pub text: String,
    pub kind: Kind,
    pub tick: u32,
    pub url: Option<String>,
}

/// What a recall looks for: the text (for the lexical score) and its embedding.
#[derive(Debug, Clone, Copy)]
pub struct RecallQuery<'a> {
    pub text: &'a str,
    pub vector: &'a [f32],
}

/// A memory found by a search, with its fused rank score (higher is better; comparable
/// only within one search).
#[derive(Debug, Clone, PartialEq)]
pub struct Recalled {
    pub text: String,
    pub kind: Kind,
    pub tick: u32,
    pub url: Option<String>,
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("qdrant: {0}")]
    Qdrant(String),
    #[error("unreadable memory entry: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait VectorStore: Send + Sync {
    fn name(&self) -> &'static str;
    async fn add(&self, scope: &Scope, items: Vec<(NewMemory, Vec<f32>)>) -> Result<(), MemoryError>;
    /// The `k` memories of `scope` best for `query` by vector and lexical rank, best first.
    async fn search(&self, scope: &Scope, query: RecallQuery<'_>, k: usize) -> Result<Vec<Recalled>, MemoryError>;
    /// Deletes the task's memories now (`retain: None`) or after `retain`.
    async fn forget(&self, task: TaskId, retain: Option<Duration>) -> Result<(), MemoryError>;
    /// The memories live in the task store's Redis (`memory:{id}`), so the task store's
    /// terminal write can forget them in its own step.
    fn beside_the_task(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone)]
pub struct MemorySettings {
    pub qdrant_url: Option<String>,
    pub qdrant_api_key: Option<secrecy::SecretString>,
    pub qdrant_collection: String,
    /// `None`: delete a task's memories when it ends.
    pub retention: Option<Duration>,
    pub top_k: usize,
}

impl MemorySettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let retention = env.ranged("MEMORY_RETENTION_SECONDS", 0u64, 0..=u64::from(u32::MAX))?;
        let qdrant_url = env.opt_string("QDRANT_URL");
        let qdrant_api_key: Option<secrecy::SecretString> = env.opt_string("QDRANT_API_KEY").map(Into::into);
        if let Some(u) = &qdrant_url {
            let parsed = url::Url::parse(u).map_err(|e| ConfigError::new("QDRANT_URL", format!("{u:?}: {e}")))?;
            check_qdrant_transport(&parsed, qdrant_api_key.is_some())?;
        }
        let collection = env.string("QDRANT_COLLECTION", "euglena_memories");
        if collection.is_empty() || collection.len() > 255 || collection.contains('/') {
            return Err(ConfigError::new("QDRANT_COLLECTION", "must be 1..=255 characters without '/'"));
        }
        Ok(Self {
            qdrant_url,
            qdrant_api_key,
            qdrant_collection: collection,
            retention: (retention > 0).then(|| Duration::from_secs(retention)),
            top_k: env.ranged("MEMORY_TOP_K", 6, 0..=50)?,
        })
    }
}

/// `https://` (TLS, verified against the system roots, as Qdrant Cloud needs) or
/// `http://`; an API key only travels in plaintext to this machine.
fn check_qdrant_transport(url: &url::Url, has_key: bool) -> Result<(), ConfigError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if has_key && !loopback {
                return Err(ConfigError::new(
                    "QDRANT_API_KEY",
                    "would be sent in plaintext: QDRANT_URL is http:// to another host; use https://",
                ));
            }
            Ok(())
        }
        other => Err(ConfigError::new("QDRANT_URL", format!("scheme {other:?}: must be https:// or http://"))),
    }
}

/// The memory the tick loop uses: an embedder and a store, with the task-end policy.
pub struct Memory {
    store: Arc<dyn VectorStore>,
    embedder: Arc<dyn Embedder>,
    top_k: usize,
    retention: Option<Duration>,
}

impl Memory {
    pub fn new(
        store: Arc<dyn VectorStore>,
        embedder: Arc<dyn Embedder>,
        top_k: usize,
        retention: Option<Duration>,
    ) -> Self {
        Self { store, embedder, top_k, retention }
    }

    pub fn describe(&self) -> String {
        format!("{} store, {} embeddings", self.store.name(), self.embedder.name())
    }

    /// Embeds and stores `items`; returns how many were stored.
    pub async fn remember(&self, scope: &Scope, items: Vec<NewMemory>, meter: &Meter) -> Result<usize, MemoryError> {
        let items: Vec<NewMemory> = items.into_iter().filter(|m| !m.text.trim().is_empty()).collect();
        if items.is_empty() {
            return Ok(0);
        }
        let texts: Vec<String> = items.iter().map(|m| m.text.clone()).collect();
        let vectors = self.embedder.embed(&texts, meter).await?;
        let n = items.len();
        self.store.add(scope, items.into_iter().zip(vectors).collect()).await?;
        Ok(n)
    }

    pub async fn recall(&self, scope: &Scope, query: &str, meter: &Meter) -> Result<Vec<Recalled>, MemoryError> {
        if self.top_k == 0 || query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let mut v = self.embedder.embed(&[query.to_owned()], meter).await?;
        let vector = v.pop().ok_or(EmbedError::Count { asked: 1, got: 0 })?;
        self.store.search(scope, RecallQuery { text: query, vector: &vector }, self.top_k).await
    }

    /// What the task store's terminal writes do with the memories: forget them there, in
    /// the same step, when they live beside the task; else leave them to [`Memory::forget`].
    pub fn cleanup_at_end(&self) -> MemoryCleanup {
        match (self.store.beside_the_task(), self.retention) {
            (false, _) => MemoryCleanup::Leave,
            (true, None) => MemoryCleanup::Delete,
            (true, Some(d)) => MemoryCleanup::Retain(d),
        }
    }

    /// Deletes the memories (or schedules their expiry); called once the task's terminal
    /// status is written, for a store the terminal write does not clean up.
    pub async fn forget(&self, task: TaskId) -> Result<(), MemoryError> {
        self.store.forget(task, self.retention).await
    }
}
