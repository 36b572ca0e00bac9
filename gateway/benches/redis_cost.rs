//! Redis's share of a submission, as the gateway batches it: `BENCH_BATCHES` calls of
//! `submit.lua` with 12 submissions each (about what a batch holds at c=64), each followed by
//! the `confirm.lua` call for the same 12, through the real `TaskStore`. scripts/bench-redis.sh
//! runs it against a private `redis-server` under callgrind and prints the instructions Redis
//! spent per submission: a count that does not depend on what else the machine is doing.
//!
//! `--bench`: runs against `REDIS_URL` on `REDIS_KEY_PREFIX` (both required). Under `cargo
//! test` it runs two batches against the local Redis on a key prefix of its own as a smoke test.

use std::time::Duration;

use proto::Keys;
use proto::store::{Limits, NewTask, SubmitOutcome, TaskStore};
use runtime::connect::Endpoint;

const BATCH: usize = 12;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (url, prefix, batches) = if benching {
        let batches = std::env::var("BENCH_BATCHES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
        (
            std::env::var("REDIS_URL").expect("REDIS_URL"),
            std::env::var("REDIS_KEY_PREFIX").expect("REDIS_KEY_PREFIX"),
            batches,
        )
    } else {
        ("redis://127.0.0.1:6379".to_owned(), format!("redis-cost-smoke-{}:", uuid::Uuid::new_v4().simple()), 2)
    };
    let conn = runtime::connect::redis(&Endpoint::new(url)).expect("redis url");
    let store = TaskStore::new(conn.clone(), Keys::new(prefix.clone()), Duration::from_secs(7 * 86_400));
    for _ in 0..batches {
        let tasks: Vec<NewTask> = (0..BATCH).map(|_| NewTask::new("bench-user", "benchmark mandate", 5)).collect();
        for outcome in store.submit_many(&tasks, &Limits::NONE).await.expect("submit") {
            assert!(matches!(outcome, Ok(SubmitOutcome::Accepted { .. })), "{outcome:?}");
        }
        let confirms: Vec<_> = tasks.iter().map(|t| store.confirmation(t)).collect();
        assert!(store.confirm_many(&confirms).await.expect("confirm").iter().all(|ok| *ok), "confirm refused");
    }
    if !benching {
        let mut conn = conn;
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.expect("keys");
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.expect("del");
    }
}
