//! The Qdrant memory store (`QDRANT_URL`): one collection for every task, each point's
//! payload `correlation_id`, `user_id`, `tick`, `kind`, `url`, `text`. Every search and
//! delete is filtered by task, and searches by user as well.
//!
//! Each point carries two vectors: the embedding ([`DENSE`]) and the BM25 term weights of
//! its text ([`SPARSE`], [`sparse_document`](crate::memory::lexical::sparse_document); the collection applies the IDF). A
//! search prefetches the nearest of each and fuses the two rankings by RRF in Qdrant. A
//! collection made before hybrid recall has one unnamed vector and no sparse one; Qdrant
//! cannot add a vector to an existing collection, so it is used as before (vector-only,
//! with a warning) until it is recreated.
//!
//! Qdrant has no TTL, so retention (`MEMORY_RETENTION_SECONDS`) is an `expires_at` payload
//! (unix seconds) set when the task ends; each later task end sweeps the expired points.
//! The requests are built by plain functions ([`requests`]) and unit-tested there;
//! `tests/intelligence/qdrant_wire.rs` checks what the client sends over gRPC, and
//! `tests/intelligence/qdrant.rs` runs against a real server when `QDRANT_URL` is set.

mod requests;

use std::time::Duration;

use async_trait::async_trait;
use proto::TaskId;
use qdrant_client::qdrant::{CreateFieldIndexCollectionBuilder, FieldType};
use qdrant_client::{Payload, Qdrant};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

pub use self::requests::*;
use super::{Kind, MemoryError, MemorySettings, NewMemory, RecallQuery, Recalled, Scope, VectorStore};

const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn recalled(point: qdrant_client::qdrant::ScoredPoint) -> Option<Recalled> {
    let payload = serde_json::Value::from(Payload::from(point.payload));
    let text = payload["text"].as_str()?.to_owned();
    Some(Recalled {
        text,
        kind: payload["kind"].as_str().and_then(Kind::parse).unwrap_or(Kind::Fact),
        tick: payload["tick"].as_u64().and_then(|t| u32::try_from(t).ok()).unwrap_or(0),
        url: payload["url"].as_str().map(str::to_owned),
        score: point.score,
    })
}

fn err(e: qdrant_client::QdrantError) -> MemoryError {
    MemoryError::Qdrant(e.to_string())
}

pub struct QdrantStore {
    client: Qdrant,
    collection: String,
    ready: OnceCell<Layout>,
}

impl QdrantStore {
    pub fn new(settings: &MemorySettings) -> Result<Option<Self>, MemoryError> {
        let Some(url) = &settings.qdrant_url else { return Ok(None) };
        let mut config = Qdrant::from_url(url).timeout(TIMEOUT).connect_timeout(CONNECT_TIMEOUT);
        if let Some(key) = &settings.qdrant_api_key {
            config = config.api_key(key.expose_secret().to_owned());
        }
        // The version check would make a network call here, before the agent is up.
        let client = config.skip_compatibility_check().build().map_err(err)?;
        Ok(Some(Self { client, collection: settings.qdrant_collection.clone(), ready: OnceCell::new() }))
    }

    /// The collection's layout, learned once: read from Qdrant, or the collection created
    /// (sized by `dim`) when it is absent and `dim` is given. `None`: there is no collection
    /// yet and nothing to size one by.
    async fn layout(&self, dim: Option<usize>) -> Result<Option<Layout>, MemoryError> {
        let found = self
            .ready
            .get_or_try_init(|| async {
                if self.client.collection_exists(&self.collection).await.map_err(|e| Some(err(e)))? {
                    return self.inspect().await.map_err(Some);
                }
                match dim {
                    Some(dim) => self.create(dim).await.map_err(Some),
                    None => Err(None),
                }
            })
            .await;
        match found {
            Ok(layout) => Ok(Some(*layout)),
            Err(None) => Ok(None),
            Err(Some(e)) => Err(e),
        }
    }

    async fn inspect(&self) -> Result<Layout, MemoryError> {
        let info = self.client.collection_info(&self.collection).await.map_err(err)?;
        let info = info.result.ok_or_else(|| MemoryError::Qdrant("collection info without a result".into()))?;
        let layout = layout_of(&info);
        if layout == Layout::VectorOnly {
            tracing::warn!(
                collection = %self.collection,
                "the qdrant collection has no sparse vector (made before hybrid recall): recall is vector-only \
                 until it is recreated (delete it, or set another QDRANT_COLLECTION)"
            );
        }
        Ok(layout)
    }

    /// Creates the hybrid collection and its payload indexes.
    async fn create(&self, dim: usize) -> Result<Layout, MemoryError> {
        let layout = match self.client.create_collection(create_collection_request(&self.collection, dim as u64)).await
        {
            Ok(_) => Layout::Hybrid,
            // Another agent may have created it in the meantime; that is fine, if it is
            // there now (and its layout is whatever that agent made).
            Err(e) => match self.client.collection_exists(&self.collection).await.map_err(err)? {
                true => self.inspect().await?,
                false => return Err(err(e)),
            },
        };
        for (field, kind) in [
            ("correlation_id", FieldType::Keyword),
            ("user_id", FieldType::Keyword),
            ("expires_at", FieldType::Integer),
        ] {
            let index = CreateFieldIndexCollectionBuilder::new(&self.collection, field, kind).wait(true);
            if let Err(e) = self.client.create_field_index(index).await {
                tracing::warn!(error = %e, field, "could not create a qdrant payload index");
            }
        }
        Ok(layout)
    }
}

#[async_trait]
impl VectorStore for QdrantStore {
    fn name(&self) -> &'static str {
        "qdrant"
    }

    async fn add(&self, scope: &Scope, items: Vec<(NewMemory, Vec<f32>)>) -> Result<(), MemoryError> {
        let Some(dim) = items.first().map(|(_, v)| v.len()) else { return Ok(()) };
        // Given a size, `layout` always finds or makes the collection.
        let layout = self.layout(Some(dim)).await?.unwrap_or(Layout::Hybrid);
        self.client.upsert_points(upsert_request(&self.collection, layout, scope, items)).await.map_err(err)?;
        Ok(())
    }

    async fn search(&self, scope: &Scope, query: RecallQuery<'_>, k: usize) -> Result<Vec<Recalled>, MemoryError> {
        let Some(layout) = self.layout(None).await? else { return Ok(Vec::new()) };
        let request = search_request(&self.collection, layout, scope, query, k);
        let reply = self.client.query(request).await.map_err(err)?;
        Ok(reply.result.into_iter().filter_map(recalled).collect())
    }

    async fn forget(&self, task: TaskId, retain: Option<Duration>) -> Result<(), MemoryError> {
        if !self.client.collection_exists(&self.collection).await.map_err(err)? {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp();
        match retain {
            None => {
                self.client.delete_points(delete_request(&self.collection, task)).await.map_err(err)?;
            }
            Some(d) => {
                let until = now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                self.client.set_payload(retain_request(&self.collection, task, until)).await.map_err(err)?;
            }
        }
        self.client.delete_points(sweep_request(&self.collection, now)).await.map_err(err)?;
        Ok(())
    }
}
