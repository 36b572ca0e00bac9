//! The Qdrant store against a real server. No Qdrant runs on the CI machines, so this
//! test is ignored by default (reported as ignored, never as a pass) and run explicitly:
//!
//! ```text
//! docker run -p 6334:6334 qdrant/qdrant
//! QDRANT_URL=http://127.0.0.1:6334 cargo test -p agent --test intelligence qdrant -- --ignored
//! ```
//!
//! (`QDRANT_URL` is the gRPC port, 6334 by default.) It uses its own collection and
//! deletes it at the end.

use std::time::Duration;

use agent::memory::qdrant::QdrantStore;
use agent::memory::{Kind, MemorySettings, NewMemory, RecallQuery, Scope, VectorStore};
use proto::TaskId;

/// A query sharing no word with the memories, so the order is the vectors'.
fn q(vector: &[f32]) -> RecallQuery<'_> {
    RecallQuery { text: "unrelated", vector }
}

#[tokio::test]
#[ignore = "needs a Qdrant server: set QDRANT_URL and pass --ignored"]
async fn qdrant_store_scopes_searches_and_forgets() {
    let url = std::env::var("QDRANT_URL").expect("QDRANT_URL must point at a Qdrant server (gRPC port)");
    let collection = format!("euglena_test_{}", uuid::Uuid::new_v4().simple());
    let settings = MemorySettings {
        qdrant_url: Some(url.clone()),
        qdrant_api_key: std::env::var("QDRANT_API_KEY").ok().map(Into::into),
        qdrant_collection: collection.clone(),
        retention: None,
        top_k: 5,
    };
    let store = QdrantStore::new(&settings).expect("client").expect("configured");
    let alice = Scope { task: TaskId::new(), user: "alice".into() };
    let bob = Scope { task: TaskId::new(), user: "bob".into() };
    let m = |t: &str| NewMemory { text: t.into(), kind: Kind::Page, tick: 2, url: Some("https://a.example/".into()) };
    store.add(&alice, vec![(m("near"), vec![1.0, 0.0, 0.0]), (m("far"), vec![0.0, 1.0, 0.0])]).await.expect("add");
    store.add(&bob, vec![(m("bob's"), vec![1.0, 0.0, 0.0])]).await.expect("add");

    let found = store.search(&alice, q(&[1.0, 0.1, 0.0]), 5).await.expect("search");
    let texts: Vec<&str> = found.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(texts, vec!["near", "far"], "alice's only, nearest first");
    assert_eq!((found[0].kind, found[0].tick, found[0].url.as_deref()), (Kind::Page, 2, Some("https://a.example/")));
    let forged = Scope { task: alice.task, user: "bob".into() };
    assert!(store.search(&forged, q(&[1.0, 0.0, 0.0]), 5).await.expect("search").is_empty());

    store.forget(alice.task, None).await.expect("forget");
    assert!(store.search(&alice, q(&[1.0, 0.0, 0.0]), 5).await.expect("search").is_empty());
    store.forget(bob.task, Some(Duration::from_secs(3600))).await.expect("retain");
    assert_eq!(store.search(&bob, q(&[1.0, 0.0, 0.0]), 5).await.expect("search").len(), 1, "kept for the retention");

    let client = qdrant_client::Qdrant::from_url(&url).skip_compatibility_check().build().expect("client");
    client.delete_collection(collection).await.expect("cleanup");
}
