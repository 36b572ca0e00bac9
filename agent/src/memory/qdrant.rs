//! The Qdrant memory store (`QDRANT_URL`): one collection for every task, each point's
//! payload `correlation_id`, `user_id`, `tick`, `kind`, `url`, `text`. Every search and
//! delete is filtered by task, and searches by user as well.
//!
//! Qdrant has no TTL, so retention (`MEMORY_RETENTION_SECONDS`) is an `expires_at` payload
//! (unix seconds) set when the task ends; each later task end sweeps the expired points.
//! The requests are built by plain functions so their filters are unit-tested without a
//! server; `tests/intelligence/qdrant.rs` runs against a real one when `QDRANT_URL` is set.

use std::time::Duration;

use async_trait::async_trait;
use proto::TaskId;
use qdrant_client::qdrant::{
    Condition, CreateCollection, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePoints,
    DeletePointsBuilder, Distance, FieldType, Filter, PointStruct, QueryPoints, QueryPointsBuilder, Range,
    SetPayloadPoints, SetPayloadPointsBuilder, UpsertPoints, UpsertPointsBuilder, VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use super::{Kind, MemoryError, MemorySettings, NewMemory, Recalled, Scope, VectorStore};

const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn task_filter(task: TaskId) -> Filter {
    Filter::must([Condition::matches("correlation_id", task.to_string())])
}

pub fn scope_filter(scope: &Scope) -> Filter {
    Filter::must([
        Condition::matches("correlation_id", scope.task.to_string()),
        Condition::matches("user_id", scope.user.clone()),
    ])
}

pub fn create_collection_request(collection: &str, dim: u64) -> CreateCollection {
    CreateCollectionBuilder::new(collection).vectors_config(VectorParamsBuilder::new(dim, Distance::Cosine)).build()
}

pub fn upsert_request(collection: &str, scope: &Scope, items: Vec<(NewMemory, Vec<f32>)>) -> UpsertPoints {
    let points: Vec<PointStruct> = items
        .into_iter()
        .map(|(m, v)| {
            let mut payload = Payload::new();
            payload.insert("correlation_id", scope.task.to_string());
            payload.insert("user_id", scope.user.clone());
            payload.insert("tick", i64::from(m.tick));
            payload.insert("kind", m.kind.as_str());
            payload.insert("text", m.text);
            if let Some(url) = m.url {
                payload.insert("url", url);
            }
            PointStruct::new(uuid::Uuid::new_v4().to_string(), v, payload)
        })
        .collect();
    UpsertPointsBuilder::new(collection, points).wait(true).build()
}

pub fn search_request(collection: &str, scope: &Scope, query: &[f32], k: usize) -> QueryPoints {
    QueryPointsBuilder::new(collection)
        .query(query.to_vec())
        .filter(scope_filter(scope))
        .limit(k as u64)
        .with_payload(true)
        .build()
}

pub fn delete_request(collection: &str, task: TaskId) -> DeletePoints {
    DeletePointsBuilder::new(collection).points(task_filter(task)).wait(true).build()
}

/// Marks a task's points to expire at `expires_at` (unix seconds).
pub fn retain_request(collection: &str, task: TaskId, expires_at: i64) -> SetPayloadPoints {
    let mut payload = Payload::new();
    payload.insert("expires_at", expires_at);
    SetPayloadPointsBuilder::new(collection, payload).points_selector(task_filter(task)).wait(true).build()
}

/// Deletes every point whose `expires_at` is before `now`.
pub fn sweep_request(collection: &str, now: i64) -> DeletePoints {
    let expired = Filter::must([Condition::range("expires_at", Range { lt: Some(now as f64), ..Range::default() })]);
    DeletePointsBuilder::new(collection).points(expired).wait(true).build()
}

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
    ready: OnceCell<()>,
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

    /// Creates the collection (sized by the first vector) and its payload indexes once.
    async fn ensure_collection(&self, dim: usize) -> Result<(), MemoryError> {
        self.ready
            .get_or_try_init(|| async {
                if !self.client.collection_exists(&self.collection).await.map_err(err)? {
                    let created =
                        self.client.create_collection(create_collection_request(&self.collection, dim as u64)).await;
                    // Another agent may have created it in the meantime; that is fine.
                    if let Err(e) = created
                        && !self.client.collection_exists(&self.collection).await.map_err(err)?
                    {
                        return Err(err(e));
                    }
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
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl VectorStore for QdrantStore {
    fn name(&self) -> &'static str {
        "qdrant"
    }

    async fn add(&self, scope: &Scope, items: Vec<(NewMemory, Vec<f32>)>) -> Result<(), MemoryError> {
        let Some(dim) = items.first().map(|(_, v)| v.len()) else { return Ok(()) };
        self.ensure_collection(dim).await?;
        self.client.upsert_points(upsert_request(&self.collection, scope, items)).await.map_err(err)?;
        Ok(())
    }

    async fn search(&self, scope: &Scope, query: &[f32], k: usize) -> Result<Vec<Recalled>, MemoryError> {
        if self.ready.get().is_none() && !self.client.collection_exists(&self.collection).await.map_err(err)? {
            return Ok(Vec::new());
        }
        let reply = self.client.query(search_request(&self.collection, scope, query, k)).await.map_err(err)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use qdrant_client::qdrant::condition::ConditionOneOf;
    use qdrant_client::qdrant::r#match::MatchValue;
    use qdrant_client::qdrant::points_selector::PointsSelectorOneOf;

    /// `(key, keyword)` of every field-match condition in a filter's `must`.
    fn matches(f: &Filter) -> Vec<(String, String)> {
        f.must
            .iter()
            .filter_map(|c| match &c.condition_one_of {
                Some(ConditionOneOf::Field(fc)) => match fc.r#match.as_ref()?.match_value.as_ref()? {
                    MatchValue::Keyword(k) => Some((fc.key.clone(), k.clone())),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn selector_filter(sel: Option<&qdrant_client::qdrant::PointsSelector>) -> Filter {
        match sel.and_then(|s| s.points_selector_one_of.clone()) {
            Some(PointsSelectorOneOf::Filter(f)) => f,
            other => panic!("expected a filter selector, got {other:?}"),
        }
    }

    fn scope() -> Scope {
        Scope { task: "6f1c1f0e-8d3a-4c1b-9a57-3f2e4f0a9b11".parse().expect("id"), user: "alice".into() }
    }

    #[test]
    fn searches_are_filtered_by_task_and_user() {
        let q = search_request("mem", &scope(), &[0.1, 0.2], 4);
        assert_eq!(q.collection_name, "mem");
        assert_eq!(q.limit, Some(4));
        let f = q.filter.expect("filter");
        assert_eq!(
            matches(&f),
            vec![
                ("correlation_id".to_owned(), "6f1c1f0e-8d3a-4c1b-9a57-3f2e4f0a9b11".to_owned()),
                ("user_id".to_owned(), "alice".to_owned())
            ]
        );
        assert!(q.query.is_some() && q.with_payload.is_some());
    }

    #[test]
    fn upserts_carry_the_scope_in_the_payload() {
        let item = NewMemory { text: "fact".into(), kind: Kind::Page, tick: 3, url: Some("https://a.example/".into()) };
        let u = upsert_request("mem", &scope(), vec![(item, vec![1.0, 0.0])]);
        assert_eq!(u.wait, Some(true));
        let p = serde_json::Value::from(Payload::from(u.points[0].payload.clone()));
        assert_eq!(p["correlation_id"], "6f1c1f0e-8d3a-4c1b-9a57-3f2e4f0a9b11");
        assert_eq!(p["user_id"], "alice");
        assert_eq!(
            (p["tick"].as_i64(), p["kind"].as_str(), p["url"].as_str()),
            (Some(3), Some("page"), Some("https://a.example/"))
        );
        assert!(u.points[0].id.is_some());
    }

    #[test]
    fn deletes_and_retention_touch_only_the_task() {
        let task = scope().task;
        let d = delete_request("mem", task);
        assert_eq!(matches(&selector_filter(d.points.as_ref())), vec![("correlation_id".to_owned(), task.to_string())]);
        let r = retain_request("mem", task, 1_700_000_000);
        assert_eq!(matches(&selector_filter(r.points_selector.as_ref())).len(), 1);
        assert!(r.payload.contains_key("expires_at"));
        let s = sweep_request("mem", 42);
        let f = selector_filter(s.points.as_ref());
        match &f.must[0].condition_one_of {
            Some(ConditionOneOf::Field(fc)) => {
                assert_eq!(fc.key, "expires_at");
                assert_eq!(fc.range.as_ref().and_then(|r| r.lt), Some(42.0));
            }
            other => panic!("unexpected condition {other:?}"),
        }
        let c = create_collection_request("mem", 256);
        assert_eq!(c.collection_name, "mem");
        assert!(c.vectors_config.is_some());
    }
}
