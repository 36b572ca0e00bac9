//! The one definition of every Redis key (ARCHITECTURE §4). All keys carry `REDIS_KEY_PREFIX`,
//! so tests and tenants can share one Redis.

use crate::domain::TaskId;

#[derive(Debug, Clone, Default)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn task(&self, id: TaskId) -> String {
        format!("{}task:{id}", self.prefix)
    }

    pub fn user_tasks(&self, sub: &str) -> String {
        format!("{}user:{sub}:tasks", self.prefix)
    }

    /// The prefix of every `task:{id}` key (scripts that look up records by id).
    pub fn task_prefix(&self) -> String {
        format!("{}task:", self.prefix)
    }

    /// `sub`'s byte length leads, so no two (sub, key) pairs share a key: without it, sub
    /// `a:b` + key `c` and sub `a` + key `b:c` would collide.
    pub fn idempotency(&self, sub: &str, key: &str) -> String {
        format!("{}idem:{}:{sub}:{key}", self.prefix, sub.len())
    }

    /// The per-user rate limiter's state (GCRA theoretical arrival time, ms).
    pub fn rate(&self, sub: &str) -> String {
        format!("{}rate:{sub}", self.prefix)
    }

    /// The user's non-terminal task ids (the active-task cap).
    pub fn active(&self, sub: &str) -> String {
        format!("{}active:{sub}", self.prefix)
    }

    /// The user's open event streams (stream id → lease expiry, Redis ms), across replicas.
    pub fn streams(&self, sub: &str) -> String {
        format!("{}streams:{sub}", self.prefix)
    }

    /// `day` is `YYYYMMDD` in UTC.
    pub fn quota(&self, sub: &str, day: &str) -> String {
        format!("{}quota:{sub}:{day}", self.prefix)
    }

    /// Tokens reserved by the user's tasks that day (`DAILY_TOKEN_LIMIT`); `day` is `YYYYMMDD`.
    pub fn tokens(&self, sub: &str, day: &str) -> String {
        format!("{}tokens:{sub}:{day}", self.prefix)
    }

    /// Sorted set: every task id by creation ms, for the operators' listing.
    pub fn all_tasks(&self) -> String {
        format!("{}tasks", self.prefix)
    }

    /// Sorted set: tasks with an `expires_after_seconds` → when (unix ms) they expire unless
    /// started; the reconciler ends the ones left.
    pub fn expiring(&self) -> String {
        format!("{}expiring", self.prefix)
    }

    /// Sorted set: ids of dead-lettered tasks → when (unix ms) the reconciler saw the dead
    /// letter; [`Self::dead_letter`] holds what the message's headers said.
    pub fn dead_letters(&self) -> String {
        format!("{}dead_letters", self.prefix)
    }

    /// String, with the record's TTL: JSON of task `id`'s dead letter (reason, count, first
    /// death).
    pub fn dead_letter(&self, id: TaskId) -> String {
        format!("{}dead_letter:{id}", self.prefix)
    }

    /// Stream: every operator action (who, what, which tasks, when, dry run or not).
    pub fn audit(&self) -> String {
        format!("{}audit", self.prefix)
    }

    /// Task ids whose end must still be announced, scored by when (unix ms) the next
    /// delivery attempt is due.
    pub fn webhooks_due(&self) -> String {
        format!("{}webhooks:due", self.prefix)
    }

    /// The metrics sidecar's samples, for the console's ops chart.
    pub fn metrics_samples(&self) -> String {
        format!("{}metrics:samples", self.prefix)
    }

    pub fn workers(&self) -> String {
        format!("{}workers", self.prefix)
    }

    pub fn worker(&self, worker_id: &str) -> String {
        format!("{}worker:{worker_id}", self.prefix)
    }

    pub fn checkpoint(&self, id: TaskId) -> String {
        format!("{}checkpoint:{id}", self.prefix)
    }

    pub fn memory(&self, id: TaskId) -> String {
        format!("{}memory:{id}", self.prefix)
    }

    pub fn events(&self, id: TaskId) -> String {
        format!("{}events:{id}", self.prefix)
    }

    /// Sorted set: parked tasks (status `requires_action`) → when their pending call
    /// expires (unix ms); the reconciler denies expired ones.
    pub fn parked(&self) -> String {
        format!("{}parked", self.prefix)
    }

    /// Sorted set: tasks put back on the queue after a decision whose publish is not
    /// confirmed yet → when (unix ms); the reconciler publishes again what stays.
    pub fn resuming(&self) -> String {
        format!("{}resuming", self.prefix)
    }

    /// List: the owner's messages to a running task, oldest first.
    pub fn messages(&self, id: TaskId) -> String {
        format!("{}messages:{id}", self.prefix)
    }

    /// Sorted set: ids of submissions whose publish is not confirmed yet, by creation ms.
    pub fn unconfirmed(&self) -> String {
        format!("{}unconfirmed", self.prefix)
    }

    /// The reconciler's lease: the id of the gateway running it.
    pub fn reconciler_lease(&self) -> String {
        format!("{}reconciler:lease", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_spec() {
        let k = Keys::new("t1:");
        let id: TaskId = "6f1c1f0e-8d3a-4c1b-9a57-3f2e4f0a9b11".parse().expect("id");
        assert_eq!(k.task(id), "t1:task:6f1c1f0e-8d3a-4c1b-9a57-3f2e4f0a9b11");
        assert_eq!(k.user_tasks("alice"), "t1:user:alice:tasks");
        assert_eq!(k.quota("alice", "20261121"), "t1:quota:alice:20261121");
        assert_eq!(k.worker("w1"), "t1:worker:w1");
        assert_eq!(Keys::default().workers(), "workers");
        assert_eq!(k.rate("alice"), "t1:rate:alice");
        assert_eq!(k.active("alice"), "t1:active:alice");
        assert_eq!(k.idempotency("alice", "k1"), "t1:idem:5:alice:k1");
    }

    proptest::proptest! {
        #[test]
        fn idempotency_keys_never_collide(a in "[a-z:]{0,6}", b in "[a-z:]{0,6}", c in "[a-z:]{0,6}", d in "[a-z:]{0,6}") {
            let k = Keys::default();
            proptest::prop_assume!((a.as_str(), b.as_str()) != (c.as_str(), d.as_str()));
            proptest::prop_assert_ne!(k.idempotency(&a, &b), k.idempotency(&c, &d));
        }
    }
}
