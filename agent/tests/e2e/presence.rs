use std::time::Duration;

use testkit::Harness;

use crate::{AGENT, SOON, env_refs, pace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_count_follows_start_graceful_stop_and_kill() {
    let mut app = Harness::start(&[]).await;
    let env = pace(200, 20);
    let a = app.spawn_agent(AGENT, "p1", &env_refs(&env));
    let b = app.spawn_agent(AGENT, "p2", &env_refs(&env));
    app.eventually("two agents", SOON, || async { app.agent_count().await["count"] == 2 }).await;
    let c = app.agent_count().await;
    assert_eq!((c["busy"].as_u64(), c["idle"].as_u64()), (Some(0), Some(2)));

    let id = app.submit_ok("alice", "keep one busy", 30).await;
    app.wait_for(id, SOON, |r| r.tick.is_some()).await;
    app.eventually("one busy", SOON, || async {
        let c = app.agent_count().await;
        c["busy"] == 1 && c["idle"] == 1
    })
    .await;

    // The idle one stops gracefully: gone at once.
    let idle = if app.record(id).await.and_then(|r| r.worker_id).as_deref() == Some("p1") { b } else { a };
    app.agent(idle).sigterm();
    app.agent(idle).wait_exit(SOON).await.expect("exits");
    assert_eq!(app.agent_count().await["count"], 1);

    // The busy one is killed: gone within the heartbeat TTL (3 s in tests).
    let busy = if idle == a { b } else { a };
    app.agent(busy).kill();
    let killed = tokio::time::Instant::now();
    app.eventually("killed agent ages out", Duration::from_secs(10), || async {
        app.agent_count().await["count"] == 0
    })
    .await;
    assert!(killed.elapsed() <= Duration::from_secs(5), "aged out after {:?}", killed.elapsed());
    app.cleanup().await;
}
