//! The Redis memory store against the local Redis: exact nearest neighbours (checked
//! against brute force on random vectors), strict scoping by task and user, deletion and
//! retention. Each test uses its own key prefix and purges it.

use std::time::Duration;

use agent::embedding::cosine;
use agent::memory::redis::RedisStore;
use agent::memory::{Kind, NewMemory, Scope, VectorStore};
use proptest::prelude::*;
use proto::{Keys, TaskId};
use redis::AsyncCommands;
use testkit::Namespace;

fn store(ns: &Namespace) -> RedisStore {
    let conn = proto::connect::redis(&testkit::Services::shared().redis).expect("redis url");
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
            let got = s.search(&sc, &query, k).await.expect("search");

            let mut expected: Vec<(usize, f32)> = vectors.iter().map(|v| cosine(&query, v)).enumerate().collect();
            expected.sort_by(|a, b| b.1.partial_cmp(&a.1).expect("finite"));
            expected.truncate(k);
            assert_eq!(got.len(), expected.len());
            for (g, (_, score)) in got.iter().zip(&expected) {
                // Equal scores may come in either order; the scores themselves must match.
                assert!((g.score - score).abs() < 1e-5, "got {got:?}, expected {expected:?}");
                let i: usize = g.text[1..].parse().expect("index");
                assert!((cosine(&query, &vectors[i]) - g.score).abs() < 1e-5, "score belongs to its memory");
            }
            testkit::purge(&ns).await;
        });
    }
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
    let texts = |r: Vec<agent::memory::Recalled>| r.into_iter().map(|m| m.text).collect::<Vec<_>>();
    assert_eq!(texts(s.search(&a, &v, 10).await.expect("search")), vec!["task A"]);
    assert_eq!(texts(s.search(&c, &v, 10).await.expect("search")), vec!["bob's task"]);
    // Bob naming Alice's task id still finds nothing of hers.
    let forged = Scope { task: a.task, user: "bob".into() };
    assert!(s.search(&forged, &v, 10).await.expect("search").is_empty());
    testkit::purge(&ns).await;
}

#[tokio::test]
async fn memories_are_deleted_at_the_end_or_kept_for_the_retention() {
    let ns = Namespace::new();
    let s = store(&ns);
    let keys = Keys::new(ns.prefix.clone());
    let mut conn = proto::connect::redis(&testkit::Services::shared().redis).expect("redis");
    let (gone, kept) = (scope("alice"), scope("alice"));
    for sc in [&gone, &kept] {
        s.add(sc, vec![(memory("fact"), vec![0.5, 0.5])]).await.expect("add");
        let ttl: i64 = conn.ttl(keys.memory(sc.task)).await.expect("ttl");
        assert!(ttl > 0 && ttl <= 900, "memories carry the task's TTL, got {ttl}");
    }
    s.forget(gone.task, None).await.expect("forget");
    assert!(!conn.exists::<_, bool>(keys.memory(gone.task)).await.expect("exists"));
    assert!(s.search(&gone, &[0.5, 0.5], 5).await.expect("search").is_empty());
    s.forget(kept.task, Some(Duration::from_secs(60))).await.expect("retain");
    let ttl: i64 = conn.ttl(keys.memory(kept.task)).await.expect("ttl");
    assert!(ttl > 0 && ttl <= 60, "kept for the retention period, got {ttl}");
    testkit::purge(&ns).await;
}
