//! The Redis memory store against the local Redis: exact nearest neighbours (checked
//! against brute force on random vectors), hybrid recall of an exact rare term the vector
//! alone misses, strict scoping by task and user, deletion and retention. Each test uses
//! its own key prefix and purges it.

use std::time::Duration;

use agent::embedding::{cosine, local_embedding};
use agent::memory::redis::RedisStore;
use agent::memory::{Kind, NewMemory, RecallQuery, Recalled, Scope, VectorStore};
use proptest::prelude::*;
use proto::{Keys, TaskId};
use redis::AsyncCommands;
use testkit::Namespace;

fn store(ns: &Namespace) -> RedisStore {
    let conn = runtime::connect::redis(&testkit::Services::shared().redis).expect("redis url");
    RedisStore::new(conn, Keys::new(ns.prefix.clone()), Duration::from_secs(900))
}

fn memory(text: &str) -> NewMemory {
    NewMemory { text: text.to_owned(), kind: Kind::Fact, tick: 1, url: None }
}

fn scope(user: &str) -> Scope {
    Scope { task: TaskId::new(), user: user.to_owned() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A query sharing no word with the memories ranks them exactly by the vector.
    #[test]
    fn nearest_neighbours_match_brute_force(
        vectors in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 8), 1..40),
        query in prop::collection::vec(-1.0f32..1.0, 8),
        k in 1usize..12,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let ns = Namespace::new();
            let s = store(&ns);
            let sc = scope("alice");
            let items = vectors.iter().enumerate().map(|(i, v)| (memory(&format!("m{i}")), v.clone())).collect();
            s.add(&sc, items).await.expect("add");
            let got = s.search(&sc, RecallQuery { text: "no shared word", vector: &query }, k).await.expect("search");

            let mut expected: Vec<(usize, f32)> = vectors.iter().map(|v| cosine(&query, v)).enumerate().collect();
            expected.sort_by(|a, b| b.1.partial_cmp(&a.1).expect("finite"));
            expected.truncate(k);
            assert_eq!(got.len(), expected.len());
            for (g, (_, similarity)) in got.iter().zip(&expected) {
                // Equal similarities may come in either order; the similarities must match.
                let i: usize = g.text[1..].parse().expect("index");
                assert!((cosine(&query, &vectors[i]) - similarity).abs() < 1e-5, "got {got:?}, expected {expected:?}");
            }
            assert!(got.windows(2).all(|w| w[0].score >= w[1].score), "best first: {got:?}");
            testkit::purge(&ns).await;
        });
    }
}

fn q(vector: &[f32]) -> RecallQuery<'_> {
    RecallQuery { text: "task", vector }
}

fn texts(r: Vec<Recalled>) -> Vec<String> {
    r.into_iter().map(|m| m.text).collect()
}

/// What hybrid recall is for: a memory holding an exact rare term (a part number) among
/// memories that share the query's common words. To the local embedding `K-7731` is two
/// tokens among many, so by the vector alone that memory ranks below the top k; BM25 ranks
/// it first (only it holds `7731`), and the fused ranking recalls it.
#[tokio::test]
async fn an_exact_rare_term_is_recalled_where_the_vector_alone_misses_it() {
    const K: usize = 6; // MEMORY_TOP_K's default
    let target = "Invoice K-7731 lists forty crates, paid on the second of May.";
    let memories = [
        "The shipment status at the port of Rotterdam is delayed by customs.",
        "Part of the shipment left the port of Rotterdam on Monday morning.",
        "Rotterdam port status: the shipment of spare parts is on schedule.",
        "The status of the Rotterdam shipment was confirmed by the port authority.",
        "Shipment tracking shows the part at the port of Antwerp, not Rotterdam.",
        "The port of Rotterdam reports the status of each shipment daily.",
        target,
        "Customs at the port asked for the shipment's papers before release.",
        "The carrier moved the shipment from Rotterdam to a rail terminal.",
        "A second shipment of parts is expected at the port next week.",
    ];
    let query = "status of the shipment of part K-7731 at the port of Rotterdam";
    let vector = local_embedding(query);

    // The vector alone: cosine over the same memories, as the store ranked them before.
    let mut by_vector: Vec<(&str, f32)> = memories.iter().map(|m| (*m, cosine(&vector, &local_embedding(m)))).collect();
    by_vector.sort_by(|a, b| b.1.total_cmp(&a.1));
    let vector_rank = by_vector.iter().position(|(m, _)| *m == target).expect("ranked") + 1;
    assert!(vector_rank > K, "the vector alone must miss it for this test to mean anything: rank {vector_rank}");

    let ns = Namespace::new();
    let s = store(&ns);
    let sc = scope("alice");
    s.add(&sc, memories.iter().map(|m| (memory(m), local_embedding(m))).collect()).await.expect("add");
    let found = texts(s.search(&sc, RecallQuery { text: query, vector: &vector }, K).await.expect("search"));
    assert_eq!(found.len(), K);
    assert!(found.iter().any(|t| t == target), "hybrid recall finds it (vector rank {vector_rank}): {found:?}");
    // By the term alone, it comes first.
    let alone = texts(
        s.search(&sc, RecallQuery { text: "K-7731", vector: &local_embedding("K-7731") }, 1).await.expect("search"),
    );
    assert_eq!(alone, vec![target]);
    testkit::purge(&ns).await;
}

#[tokio::test]
async fn searches_never_return_another_tasks_or_users_memories() {
    let ns = Namespace::new();
    let s = store(&ns);
    let a = scope("alice");
    let b = scope("alice");
    let c = scope("bob");
    let v = vec![1.0, 0.0, 0.0];
    for (sc, text) in [(&a, "task A"), (&b, "task B"), (&c, "bob's task")] {
        s.add(sc, vec![(memory(text), v.clone())]).await.expect("add");
    }
    assert_eq!(texts(s.search(&a, q(&v), 10).await.expect("search")), vec!["task A"]);
    assert_eq!(texts(s.search(&c, q(&v), 10).await.expect("search")), vec!["bob's task"]);
    // Bob naming Alice's task id still finds nothing of hers.
    let forged = Scope { task: a.task, user: "bob".into() };
    assert!(s.search(&forged, q(&v), 10).await.expect("search").is_empty());
    testkit::purge(&ns).await;
}

#[tokio::test]
async fn memories_are_deleted_at_the_end_or_kept_for_the_retention() {
    let ns = Namespace::new();
    let s = store(&ns);
    let keys = Keys::new(ns.prefix.clone());
    let mut conn = runtime::connect::redis(&testkit::Services::shared().redis).expect("redis");
    let (gone, kept) = (scope("alice"), scope("alice"));
    for sc in [&gone, &kept] {
        s.add(sc, vec![(memory("fact"), vec![0.5, 0.5])]).await.expect("add");
        let ttl: i64 = conn.ttl(keys.memory(sc.task)).await.expect("ttl");
        assert!(ttl > 0 && ttl <= 900, "memories carry the task's TTL, got {ttl}");
    }
    s.forget(gone.task, None).await.expect("forget");
    assert!(!conn.exists::<_, bool>(keys.memory(gone.task)).await.expect("exists"));
    assert!(s.search(&gone, q(&[0.5, 0.5]), 5).await.expect("search").is_empty());
    s.forget(kept.task, Some(Duration::from_secs(60))).await.expect("retain");
    let ttl: i64 = conn.ttl(keys.memory(kept.task)).await.expect("ttl");
    assert!(ttl > 0 && ttl <= 60, "kept for the retention period, got {ttl}");
    testkit::purge(&ns).await;
}
