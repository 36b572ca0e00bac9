//! A task store on a key prefix of its own, and a task alice submitted. The keys are purged
//! when the fixture is dropped, also after a failed assertion.

use std::time::Duration;

use proto::store::{Limits, NewTask, SubmitOutcome, Takeover, TaskStore};
use proto::{Keys, TaskEnvelope, TaskId, TaskRecord};

// The test kit's per-test names, compiled in: a dependency on `testkit` would be a cycle
// (it depends on the gateway, which depends on this crate). Its queue and process
// environment go unused here.
#[allow(dead_code)]
#[path = "../../../testkit/src/namespace.rs"]
mod namespace;

use namespace::Namespace;

pub struct Fixture {
    pub ns: Namespace,
    pub store: TaskStore,
    /// The envelope the gateway published for the submitted task.
    pub envelope: TaskEnvelope,
}

impl Fixture {
    /// A store, and a task of `max_ticks` alice submitted (every admission limit off).
    pub async fn submitted(max_ticks: u32) -> Self {
        let ns = Namespace::new();
        let conn = proto::connect::redis(&ns.services.redis).expect("redis url");
        let store = TaskStore::new(conn, Keys::new(ns.prefix.clone()), Duration::from_secs(900));
        let task = NewTask::new("alice", "a mandate", max_ticks);
        let submitted = store.submit(&task, &Limits::NONE).await.expect("submit");
        assert!(matches!(submitted, SubmitOutcome::Accepted { .. }), "{submitted:?}");
        Self { ns, store, envelope: task.envelope() }
    }

    pub fn id(&self) -> TaskId {
        self.envelope.correlation_id
    }

    pub async fn record(&self) -> TaskRecord {
        self.store.get(self.id()).await.expect("redis").expect("record")
    }

    /// A delivery of the task's envelope takes it over through `store`.
    pub async fn take(&self, store: &TaskStore, worker: &str, max_deliveries: u32) -> Takeover {
        store.take_over(&self.envelope, worker, max_deliveries).await.expect("take over")
    }

    /// A memory entry for the task, as the agent's Redis memory store would have written it.
    pub async fn remember(&self) -> String {
        let key = self.store.keys().memory(self.id());
        let mut conn = self.store.connection();
        let _: i64 = redis::cmd("RPUSH").arg(&key).arg("{\"text\":\"x\"}").query_async(&mut conn).await.expect("rpush");
        let _: bool = redis::cmd("EXPIRE").arg(&key).arg(900).query_async(&mut conn).await.expect("expire");
        key
    }

    pub async fn ttl(&self, key: &str) -> i64 {
        redis::cmd("TTL").arg(key).query_async(&mut self.store.connection()).await.expect("ttl")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let ns = self.ns.clone();
        // The test's runtime may be the one dropping us: purge on a runtime of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(namespace::purge_keys(&ns.services.redis, &ns.prefix));
            }
        })
        .join();
    }
}
