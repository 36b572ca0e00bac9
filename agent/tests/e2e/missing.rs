//! A record that vanishes under a running task (a Redis restart without persistence) is not
//! a fence: the agent re-creates it from the envelope and the task still ends.

use proto::{Keys, TaskStatus};
use redis::AsyncCommands;
use testkit::Harness;

use crate::{AGENT, SOON, env_refs, pace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_lost_mid_run_is_recreated_and_the_task_completes() {
    let mut app = Harness::start(&[]).await;
    let env = pace(200, 15);
    let a = app.spawn_agent(AGENT, "survivor", &env_refs(&env));
    let id = app.submit_ok("alice", "outlive a redis restart", 30).await;
    app.wait_for(id, SOON, |r| r.tick.unwrap_or(0) >= 2).await;
    let keys = Keys::new(app.ns.prefix.clone());
    let _: i64 = app.redis.clone().del(&[keys.task(id), keys.checkpoint(id), keys.events(id)]).await.expect("del");

    let done = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    assert_eq!(done.user_id, "alice", "the owner comes back from the envelope");
    let log = app.agent(a).log_text();
    assert!(log.contains("vanished mid-run"), "a clear log line says what happened");
    let completed = app.events(id).await.iter().filter(|e| e.get("status").is_some_and(|s| s == "completed")).count();
    assert_eq!(completed, 1);
    assert_eq!(app.ready("").await, 0);
    assert_eq!(app.ready(".dlq").await, 0);
    app.cleanup().await;
}
