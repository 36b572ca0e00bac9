//! The undo survives a Redis stall: a submission whose publish failed while Redis was
//! stalled is still failed and refunded once Redis answers again, and a script cache emptied
//! by a restart costs each script one round trip, not a timeout.

use std::time::Duration;

use proto::{Keys, TaskId, TaskStatus};
use redis::AsyncCommands;
use runtime::connect::Endpoint;
use serde_json::json;
use testkit::private::{PrivateRedis, Proxy};
use testkit::{Harness, Namespace, Services};

const USER: &str = "undo-user";

async fn only_task(app: &Harness) -> Option<TaskId> {
    let key = Keys::new(app.ns.prefix.clone()).user_tasks(USER);
    let ids: Vec<String> = app.redis.clone().zrange(key, 0, -1).await.ok()?;
    ids.first().and_then(|s| s.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_is_retried_through_a_redis_stall() {
    let redis = PrivateRedis::start(false);
    // A black-holed broker: publishes time out without an answer.
    let proxy = Proxy::start(testkit::private::amqp_addr(&testkit::rabbitmq_url())).await;
    proxy.freeze();
    let broker = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let ns = Namespace::on(Services { redis: Endpoint::new(redis.url()), ..Services::shared() });
    // A grace far beyond the test, so only the undo (not the reconciler) can close it.
    let extra = [("RABBITMQ_URL", broker.as_str()), ("PUBLISH_TIMEOUT_MS", "1500"), ("RECONCILE_GRACE_MS", "600000")];
    let app = Harness::start_in(ns, &extra).await;
    crate::common::wait_serving(&app).await;
    // The warm-up's failed connect starts a one-second cool-down, during which a publish
    // fails at once; past it, the publish hangs on the frozen link until its timeout.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let submit = {
        let (http, url, token) = (app.http.clone(), app.url("/tasks"), app.token_for(USER));
        tokio::spawn(async move {
            http.post(url).bearer_auth(token).json(&json!({"mandate": "undo me", "max_ticks": 10})).send().await
        })
    };
    testkit::eventually("the record is written", Duration::from_secs(5), || async { only_task(&app).await.is_some() })
        .await;
    let id = only_task(&app).await.expect("task id");
    // As after a failover: the script cache is empty. The stalled Redis still runs the
    // undo's buffered EVALSHA once it resumes, but answers NOSCRIPT to a caller that has
    // long given up; only a retry gets the undo through.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut app.redis.clone()).await.expect("flush");
    // Redis stalls while the publish is still waiting, so the first undo attempts fail.
    redis.stall();
    let resp = submit.await.expect("join").expect("response");
    assert_eq!(resp.status(), 503);
    tokio::time::sleep(Duration::from_secs(8)).await;
    redis.resume();

    let rec = app.wait_for(id, Duration::from_secs(15), |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Failed);
    assert_eq!(rec.error.as_deref(), Some(proto::reconcile::NOT_ENQUEUED));
    assert_eq!(app.quota_used(USER).await, 0, "the reservation is refunded");
    app.cleanup().await;
}

async fn command_calls(conn: &mut redis::aio::ConnectionManager, cmd: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_script_cache_costs_one_eval_per_script() {
    let redis = PrivateRedis::start(false);
    let ns = Namespace::on(Services { redis: Endpoint::new(redis.url()), ..Services::shared() });
    let app = Harness::start_in(ns, &[]).await;
    let mut conn = app.redis.clone();
    // What a restart or failover does to the cache.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.expect("flush");
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut conn).await.expect("resetstat");
    let id = app.submit_ok(USER, "after a flush", 10).await;
    assert_eq!(command_calls(&mut conn, "eval").await, 2, "submit and confirm each paid one EVAL");
    assert_eq!(command_calls(&mut conn, "script|load").await, 0, "no SCRIPT LOAD round trip");
    let _ = app.cancel(USER, id).await;
    let _ = app.cancel(USER, id).await;
    assert_eq!(command_calls(&mut conn, "eval").await, 3, "cancel paid one EVAL, then ran by hash");
    // Preloading fills the cache: nothing falls back after it.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.expect("flush");
    app.store.load_scripts().await.expect("load");
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut conn).await.expect("resetstat");
    app.submit_ok(USER, "after a preload", 10).await;
    assert_eq!(command_calls(&mut conn, "eval").await, 0);
    assert!(command_calls(&mut conn, "evalsha").await >= 2);
    drop(redis);
    app.cleanup().await;
}
