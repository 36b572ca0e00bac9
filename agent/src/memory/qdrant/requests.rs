//! The Qdrant requests the store sends, built by plain functions so their filters, vectors
//! and fusion are unit-tested without a server.

use proto::TaskId;
use qdrant_client::Payload;
use qdrant_client::qdrant::{
    CollectionInfo, Condition, CreateCollection, CreateCollectionBuilder, DeletePoints, DeletePointsBuilder, Distance,
    Filter, Fusion, Modifier, NamedVectors, PointStruct, PrefetchQueryBuilder, Query, QueryPoints, QueryPointsBuilder,
    Range, SetPayloadPoints, SetPayloadPointsBuilder, SparseVectorParamsBuilder, SparseVectorsConfigBuilder,
    UpsertPoints, UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder, VectorsConfigBuilder,
};

use crate::memory::{NewMemory, RecallQuery, Scope, lexical};

/// The named vectors of a hybrid collection: the embedding and the BM25 term weights.
pub const DENSE: &str = "dense";
pub const SPARSE: &str = "lexical";
/// Candidates each prefetch hands to the fusion: above `MEMORY_TOP_K`'s bound (50), and
/// a good share of the few hundred memories one task makes.
pub const CANDIDATES: u64 = 100;

/// Which vectors the collection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Named [`DENSE`] and [`SPARSE`] vectors: hybrid recall.
    Hybrid,
    /// One unnamed dense vector: a collection made before hybrid recall.
    VectorOnly,
}

pub fn layout_of(info: &CollectionInfo) -> Layout {
    let sparse = info.config.as_ref().and_then(|c| c.params.as_ref()).and_then(|p| p.sparse_vectors_config.as_ref());
    if sparse.is_some_and(|s| s.map.contains_key(SPARSE)) { Layout::Hybrid } else { Layout::VectorOnly }
}

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
    let mut dense = VectorsConfigBuilder::default();
    dense.add_named_vector_params(DENSE, VectorParamsBuilder::new(dim, Distance::Cosine));
    let mut sparse = SparseVectorsConfigBuilder::default();
    // Qdrant keeps the document frequencies and multiplies each query term by its IDF.
    sparse.add_named_vector_params(SPARSE, SparseVectorParamsBuilder::default().modifier(Modifier::Idf));
    CreateCollectionBuilder::new(collection).vectors_config(dense).sparse_vectors_config(sparse).build()
}

pub fn upsert_request(
    collection: &str,
    layout: Layout,
    scope: &Scope,
    items: Vec<(NewMemory, Vec<f32>)>,
) -> UpsertPoints {
    let points: Vec<PointStruct> = items
        .into_iter()
        .map(|(m, v)| {
            let mut payload = Payload::new();
            payload.insert("correlation_id", scope.task.to_string());
            payload.insert("user_id", scope.user.clone());
            payload.insert("tick", i64::from(m.tick));
            payload.insert("kind", m.kind.as_str());
            payload.insert("text", m.text.clone());
            if let Some(url) = m.url {
                payload.insert("url", url);
            }
            let id = uuid::Uuid::new_v4().to_string();
            match layout {
                Layout::VectorOnly => PointStruct::new(id, v, payload),
                Layout::Hybrid => {
                    let mut vectors = NamedVectors::default().add_vector(DENSE, v);
                    let (indices, values): (Vec<u32>, Vec<f32>) = lexical::sparse_document(&m.text).into_iter().unzip();
                    // A text without words has no sparse vector; the point is still found by its embedding.
                    if !indices.is_empty() {
                        vectors = vectors.add_vector(SPARSE, Vector::new_sparse(indices, values));
                    }
                    PointStruct::new(id, vectors, payload)
                }
            }
        })
        .collect();
    UpsertPointsBuilder::new(collection, points).wait(true).build()
}

pub fn search_request(
    collection: &str,
    layout: Layout,
    scope: &Scope,
    query: RecallQuery<'_>,
    k: usize,
) -> QueryPoints {
    let (indices, values): (Vec<u32>, Vec<f32>) = lexical::sparse_query(query.text).into_iter().unzip();
    let search = QueryPointsBuilder::new(collection).filter(scope_filter(scope)).limit(k as u64).with_payload(true);
    if layout == Layout::VectorOnly {
        return search.query(query.vector.to_vec()).build();
    }
    if indices.is_empty() {
        return search.query(query.vector.to_vec()).using(DENSE).build();
    }
    // Each prefetch carries the scope filter itself: the candidates must be this task's
    // and user's before the fusion ever sees them.
    let prefetch = |input: VectorInput, using: &str| {
        PrefetchQueryBuilder::default()
            .query(Query::new_nearest(input))
            .using(using)
            .filter(scope_filter(scope))
            .limit(CANDIDATES)
    };
    search
        .add_prefetch(prefetch(VectorInput::new_dense(query.vector.to_vec()), DENSE))
        .add_prefetch(prefetch(VectorInput::new_sparse(indices, values), SPARSE))
        .query(Query::new_fusion(Fusion::Rrf))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Kind;
    use qdrant_client::qdrant::condition::ConditionOneOf;
    use qdrant_client::qdrant::r#match::MatchValue;
    use qdrant_client::qdrant::points_selector::PointsSelectorOneOf;
    use qdrant_client::qdrant::query::Variant;
    use qdrant_client::qdrant::vector::Vector as VectorKind;
    use qdrant_client::qdrant::vector_input::Variant as VectorInputVariant;
    use qdrant_client::qdrant::vectors::VectorsOptions;
    use qdrant_client::qdrant::vectors_config::Config as VectorsConfigKind;
    use qdrant_client::qdrant::{CollectionConfig, CollectionParams, DenseVector, SparseVector};

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

    fn scoped() -> Vec<(String, String)> {
        vec![
            ("correlation_id".to_owned(), "6f1c1f0e-8d3a-4c1b-9a57-3f2e4f0a9b11".to_owned()),
            ("user_id".to_owned(), "alice".to_owned()),
        ]
    }

    fn query<'a>(text: &'a str, vector: &'a [f32]) -> RecallQuery<'a> {
        RecallQuery { text, vector }
    }

    #[test]
    fn searches_are_filtered_by_task_and_user() {
        for layout in [Layout::Hybrid, Layout::VectorOnly] {
            let q = search_request("mem", layout, &scope(), query("part K-7731", &[0.1, 0.2]), 4);
            assert_eq!(q.collection_name, "mem");
            assert_eq!(q.limit, Some(4));
            assert_eq!(matches(q.filter.as_ref().expect("filter")), scoped());
            for p in &q.prefetch {
                assert_eq!(matches(p.filter.as_ref().expect("prefetch filter")), scoped(), "{layout:?}");
            }
            assert!(q.query.is_some() && q.with_payload.is_some());
        }
    }

    #[test]
    fn hybrid_searches_fuse_a_dense_and_a_sparse_prefetch() {
        let q = search_request("mem", Layout::Hybrid, &scope(), query("Part K-7731 part", &[0.1, 0.2]), 4);
        assert_eq!(q.query.and_then(|q| q.variant), Some(Variant::Fusion(Fusion::Rrf as i32)));
        let inputs: Vec<(Option<&str>, Option<&VectorInputVariant>, Option<u64>)> = q
            .prefetch
            .iter()
            .map(|p| {
                let input = match p.query.as_ref().and_then(|q| q.variant.as_ref()) {
                    Some(Variant::Nearest(v)) => v.variant.as_ref(),
                    other => panic!("a nearest query, got {other:?}"),
                };
                (p.using.as_deref(), input, p.limit)
            })
            .collect();
        let sparse = lexical::sparse_query("part k 7731");
        assert_eq!(
            inputs,
            vec![
                (Some(DENSE), Some(&VectorInputVariant::Dense(DenseVector { data: vec![0.1, 0.2] })), Some(CANDIDATES)),
                (
                    Some(SPARSE),
                    Some(&VectorInputVariant::Sparse(SparseVector {
                        indices: sparse.iter().map(|p| p.0).collect(),
                        values: vec![1.0; 3],
                    })),
                    Some(CANDIDATES)
                ),
            ]
        );
        // Without a word to match, the dense vector alone, by name.
        let q = search_request("mem", Layout::Hybrid, &scope(), query(" -- ", &[0.1]), 4);
        assert!(q.prefetch.is_empty());
        assert_eq!(q.using.as_deref(), Some(DENSE));
        // A collection from before hybrid recall: its one unnamed vector.
        let q = search_request("mem", Layout::VectorOnly, &scope(), query("part K-7731", &[0.1]), 4);
        assert!(q.prefetch.is_empty() && q.using.is_none());
    }

    #[test]
    fn upserts_carry_the_scope_in_the_payload() {
        let item = NewMemory { text: "fact".into(), kind: Kind::Page, tick: 3, url: Some("https://a.example/".into()) };
        let u = upsert_request("mem", Layout::Hybrid, &scope(), vec![(item, vec![1.0, 0.0])]);
        assert_eq!(u.wait, Some(true));
        let p = serde_json::Value::from(Payload::from(u.points[0].payload.clone()));
        assert_eq!(p["correlation_id"], "6f1c1f0e-8d3a-4c1b-9a57-3f2e4f0a9b11");
        assert_eq!(p["user_id"], "alice");
        assert_eq!(
            (p["tick"].as_i64(), p["kind"].as_str(), p["url"].as_str()),
            (Some(3), Some("page"), Some("https://a.example/"))
        );
        assert!(u.points[0].id.is_some());
        let named = match u.points[0].vectors.as_ref().and_then(|v| v.vectors_options.as_ref()) {
            Some(VectorsOptions::Vectors(named)) => named.vectors.clone(),
            other => panic!("named vectors, got {other:?}"),
        };
        assert_eq!(named.len(), 2);
        let (indices, values): (Vec<u32>, Vec<f32>) = lexical::sparse_document("fact").into_iter().unzip();
        assert_eq!(named[SPARSE].vector, Some(VectorKind::Sparse(SparseVector { indices, values })));
        assert_eq!(named[DENSE].vector, Some(VectorKind::Dense(DenseVector { data: vec![1.0, 0.0] })));

        let wordless = NewMemory { text: "--".into(), kind: Kind::Fact, tick: 1, url: None };
        let u = upsert_request("mem", Layout::Hybrid, &scope(), vec![(wordless.clone(), vec![1.0])]);
        assert!(matches!(&u.points[0].vectors.as_ref().and_then(|v| v.vectors_options.clone()),
            Some(VectorsOptions::Vectors(n)) if n.vectors.len() == 1 && n.vectors.contains_key(DENSE)));
        let u = upsert_request("mem", Layout::VectorOnly, &scope(), vec![(wordless, vec![1.0])]);
        assert!(matches!(
            u.points[0].vectors.as_ref().and_then(|v| v.vectors_options.as_ref()),
            Some(VectorsOptions::Vector(_))
        ));
    }

    #[test]
    fn collections_declare_both_vectors_and_are_recognised_by_them() {
        let c = create_collection_request("mem", 256);
        let sparse = c.sparse_vectors_config.clone().expect("sparse config");
        assert_eq!(sparse.map[SPARSE].modifier, Some(Modifier::Idf as i32));
        let dense = match c.vectors_config.as_ref().and_then(|v| v.config.as_ref()) {
            Some(VectorsConfigKind::ParamsMap(m)) => m.map[DENSE],
            other => panic!("named dense vector params, got {other:?}"),
        };
        assert_eq!((dense.size, dense.distance), (256, Distance::Cosine as i32));
        let info = |sparse_vectors_config| CollectionInfo {
            config: Some(CollectionConfig {
                params: Some(CollectionParams { sparse_vectors_config, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(layout_of(&info(Some(sparse))), Layout::Hybrid);
        assert_eq!(layout_of(&info(None)), Layout::VectorOnly);
        assert_eq!(layout_of(&CollectionInfo::default()), Layout::VectorOnly);
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
    }
}
