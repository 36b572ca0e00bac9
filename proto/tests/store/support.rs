//! A task store on a key prefix of its own ([`Scratch`]), or with a task alice submitted
//! ([`Fixture`]). The keys are purged when either is dropped, also after a failed assertion.

use std::time::Duration;

use proto::store::{Limits, NewTask, SubmitOutcome, Takeover, TaskStore};
use proto::{Keys, TaskEnvelope, TaskId, TaskRecord};
use redis::AsyncCommands;

// The test kit's per-test names, compiled in: a dependency on `testkit` would be a cycle
// (it depends on the gateway, which depends on this crate). Its queue and process
// environment go unused here, and its `pub` (for the test kit's re-exports) reaches no one.
#[allow(dead_code, unreachable_pub)]
#[path = "../../../testkit/src/namespace.rs"]
mod namespace;

use namespace::Namespace;

/// A task store on a key prefix of its own and nothing in it.
pub(crate) struct Scratch {
    pub store: TaskStore,
    _keys: Purged,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        let ns = Namespace::new();
        let conn = runtime::connect::redis(&ns.services.redis).expect("redis url");
        let store = TaskStore::new(conn, Keys::new(ns.prefix.clone()), Duration::from_secs(900));
        Self { store, _keys: Purged(ns) }
    }

    /// Ticks `user` has reserved today.
    pub(crate) async fn quota_used(&self, user: &str) -> i64 {
        let key = self.store.quota_key(user, chrono::Utc::now());
        self.store.connection().get::<_, Option<i64>>(key).await.expect("redis").unwrap_or(0)
    }

    pub(crate) async fn record(&self, id: TaskId) -> Option<TaskRecord> {
        self.store.get(id).await.expect("redis")
    }
}

pub(crate) struct Fixture {
    pub store: TaskStore,
    /// The submitted task.
    pub task: NewTask,
    /// The envelope the gateway published for it.
    pub envelope: TaskEnvelope,
    _keys: Purged,
}

impl Fixture {
    /// A store, and a task of `max_ticks` alice submitted (every admission limit off).
    pub(crate) async fn submitted(max_ticks: u32) -> Self {
        Self::submitted_with(NewTask::new("alice", "a mandate", max_ticks), &Limits::NONE).await
    }

    /// A store, and `task` submitted under `limits`.
    pub(crate) async fn submitted_with(task: NewTask, limits: &Limits) -> Self {
        let Scratch { store, _keys } = Scratch::new();
        let submitted = store.submit(&task, limits).await.expect("submit");
        assert!(matches!(submitted, SubmitOutcome::Accepted { .. }), "{submitted:?}");
        Self { store, envelope: task.envelope(), task, _keys }
    }

    /// Ticks `user` has reserved today.
    pub(crate) async fn quota_used(&self, user: &str) -> i64 {
        let key = self.store.quota_key(user, chrono::Utc::now());
        self.store.connection().get::<_, Option<i64>>(key).await.expect("redis").unwrap_or(0)
    }

    pub(crate) fn id(&self) -> TaskId {
        self.envelope.correlation_id
    }

    pub(crate) async fn record(&self) -> TaskRecord {
        self.store.get(self.id()).await.expect("redis").expect("record")
    }

    /// A delivery of the task's envelope takes it over through `store`.
    pub(crate) async fn take(&self, store: &TaskStore, worker: &str, max_deliveries: u32) -> Takeover {
        store.take_over(&self.envelope, worker, max_deliveries).await.expect("take over")
    }

    /// A memory entry for the task, as the agent's Redis memory store would have written it.
    pub(crate) async fn remember(&self) -> String {
        let key = self.store.keys().memory(self.id());
        let mut conn = self.store.connection();
        let _: i64 = redis::cmd("RPUSH").arg(&key).arg("{\"text\":\"x\"}").query_async(&mut conn).await.expect("rpush");
        let _: bool = redis::cmd("EXPIRE").arg(&key).arg(900).query_async(&mut conn).await.expect("expire");
        key
    }

    pub(crate) async fn ttl(&self, key: &str) -> i64 {
        redis::cmd("TTL").arg(key).query_async(&mut self.store.connection()).await.expect("ttl")
    }
}

/// Purges its namespace's keys when dropped, also after a failed assertion.
struct Purged(Namespace);

impl Drop for Purged {
    fn drop(&mut self) {
        let ns = self.0.clone();
        // The test's runtime may be the one dropping us: purge on a runtime of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(namespace::purge_keys(&ns.services.redis, &ns.prefix));
            }
        })
        .join();
    }
}
