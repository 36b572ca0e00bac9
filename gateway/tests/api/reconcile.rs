//! The reconciler: submissions stranded by a gateway killed mid-submit end `failed` ("not
//! enqueued") with their quota refunded; a dead-lettered message's unfinished record ends
//! `failed` ("dead-lettered after N deliveries") while the message stays in the DLQ; and two
//! gateways run one reconciler between them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway::config::ReconcilerSettings;
use gateway::reconciler::Role;
use lapin::options::{BasicGetOptions, BasicRejectOptions};
use proto::store::NewTask;
use proto::topology::Topology;
use proto::{Keys, TaskId, TaskStatus};
use redis::AsyncCommands;
use serde_json::json;
use testkit::private::Proxy;
use testkit::{Harness, Namespace};

const USER: &str = "reconcile-user";

fn fast() -> Vec<(&'static str, &'static str)> {
    vec![("RECONCILE_INTERVAL_MS", "300"), ("RECONCILE_GRACE_MS", "1000"), ("PUBLISH_TIMEOUT_MS", "1000")]
}

async fn user_task_ids(app: &Harness) -> Vec<TaskId> {
    let key = Keys::new(app.ns.prefix.clone()).user_tasks(USER);
    let ids: Vec<String> = app.redis.clone().zrange(key, 0, -1).await.expect("zrange");
    ids.iter().map(|s| s.parse().expect("task id")).collect()
}

/// A gateway process in `ns`, publishing through `broker`.
fn gateway_process(ns: &Namespace, broker: &str, extra: &[(&str, &str)]) -> (std::process::Child, String) {
    let addr = testkit::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.env_clear()
        .envs(ns.env())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GATEWAY_ADDR", addr.to_string())
        .env("RABBITMQ_URL", broker)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    (cmd.spawn().expect("spawn gateway"), format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_mid_submit_leaves_nothing_stuck() {
    let ns = Namespace::new();
    // The doomed gateway's broker link is frozen, so every publish hangs unconfirmed.
    let proxy = Proxy::start(testkit::private::amqp_addr(&testkit::rabbitmq_url())).await;
    proxy.freeze();
    let broker = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    // Its lease (if it wins it) expires within 3 × 300 ms of the kill.
    let doomed = [("PUBLISH_TIMEOUT_MS", "8000"), ("RECONCILE_INTERVAL_MS", "300"), ("RECONCILE_GRACE_MS", "1000")];
    let (mut child, base) = gateway_process(&ns, &broker, &doomed);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let token =
        gateway::auth::dev_token::hs256(testkit::SECRET.as_bytes(), USER, "authenticated", None, 600).expect("token");
    testkit::eventually("doomed gateway serving", Duration::from_secs(20), || async {
        matches!(http.get(format!("{base}/health")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    const N: usize = 6;
    for i in 0..N {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tokio::spawn(async move {
            let _ = http
                .post(format!("{base}/tasks"))
                .bearer_auth(token)
                .json(&json!({"mandate": format!("stranded {i}"), "max_ticks": 10}))
                .send()
                .await;
        });
    }

    // The surviving gateway shares the namespace and runs the reconciler.
    let app = Harness::start_in(ns, &fast()).await;
    app.eventually("every submission wrote its record", Duration::from_secs(10), || async {
        user_task_ids(&app).await.len() == N
    })
    .await;
    assert_eq!(app.quota_used(USER).await, 10 * N as i64, "each stranded record holds its reservation");
    let _ = child.kill();
    let _ = child.wait();
    let killed = Instant::now();

    for id in user_task_ids(&app).await {
        let rec = app.wait_for(id, Duration::from_secs(20), |r| r.status.is_terminal()).await;
        assert_eq!(rec.status, TaskStatus::Failed);
        assert_eq!(rec.error.as_deref(), Some(proto::reconcile::NOT_ENQUEUED));
        let failed = app.events(id).await.iter().filter(|e| e.get("status").is_some_and(|s| s == "failed")).count();
        assert_eq!(failed, 1, "closed exactly once");
    }
    eprintln!("reconciler closed {N} stranded records {:?} after the kill", killed.elapsed());
    let metrics = app.http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("gateway_reconciler_closed_total{reason=\"not_enqueued\"}"), "{metrics}");
    assert_eq!(app.quota_used(USER).await, 0, "every reservation refunded");
    let unconfirmed: i64 =
        app.redis.clone().zcard(Keys::new(app.ns.prefix.clone()).unconfirmed()).await.expect("zcard");
    assert_eq!(unconfirmed, 0, "the unconfirmed index is drained");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_submissions_are_confirmed_and_left_alone() {
    let app = Harness::start(&fast()).await;
    let id = app.submit_ok(USER, "a healthy submission", 10).await;
    // Well past publish timeout + grace: the reconciler has had several passes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rec = app.record(id).await.expect("record");
    assert_eq!(rec.status, TaskStatus::InQueue, "a confirmed task waits for an agent");
    assert_eq!(app.quota_used(USER).await, 10);
    assert_eq!(app.ready("").await, 1);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_task_is_failed_and_its_message_kept_in_the_dlq() {
    let app = Harness::start(&fast()).await;
    let id = app.submit_ok(USER, "dies in the broker", 10).await;
    // What the broker does when Redis was down across every delivery: dead-letter it with
    // its record untouched. Here the message is rejected by hand, with the same effect.
    let got = app
        .channel
        .basic_get(app.ns.queue.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .expect("get")
        .expect("the envelope is queued");
    got.delivery.acker.reject(BasicRejectOptions { requeue: false }).await.expect("reject");

    let rec = app.wait_for(id, Duration::from_secs(15), |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Failed);
    assert_eq!(rec.error.as_deref(), Some("dead-lettered after 1 deliveries"), "delivered once, never claimed");
    assert_eq!(app.quota_used(USER).await, 0, "nothing ran: the whole reservation is refunded");
    assert_eq!(app.ready(".dlq").await, 1, "the message stays in the DLQ for operators");
    assert_eq!(app.ready(".dlq.reconcile").await, 0, "the reconciler consumed its copy");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_dead_lettered_task_counts_every_delivery() {
    let app = Harness::start(&[("AGENT_MAX_DELIVERIES", "2"), ("RECONCILE_INTERVAL_MS", "300")]).await;
    let id = app.submit_ok(USER, "handed back until the broker gives up", 10).await;
    // Consumers that keep handing it back, as agents do while Redis is down: the broker
    // dead-letters it once returned with the count at its limit, saying nothing.
    let mut deliveries = 0;
    let mut empty = 0;
    while empty < 3 {
        let got =
            app.channel.basic_get(app.ns.queue.as_str().into(), BasicGetOptions { no_ack: false }).await.expect("get");
        let Some(got) = got else {
            // A returned message takes a moment to be ready again.
            empty += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        empty = 0;
        deliveries += 1;
        let requeue = lapin::options::BasicNackOptions { requeue: true, multiple: false };
        got.delivery.acker.nack(requeue).await.expect("nack");
        assert!(deliveries < 10, "the broker never dead-lettered it");
    }
    assert_eq!(deliveries, 3, "x-delivery-limit 2 allows three deliveries");
    let rec = app.wait_for(id, Duration::from_secs(15), |r| r.status.is_terminal()).await;
    assert_eq!(rec.error.as_deref(), Some("dead-lettered after 3 deliveries"));
    assert_eq!(app.quota_used(USER).await, 0);
    assert_eq!(app.ready(".dlq").await, 1);
    app.cleanup().await;
}

fn reconciler(app: &Harness) -> gateway::reconciler::Reconciler {
    let settings =
        ReconcilerSettings { interval: Duration::from_millis(500), grace: Duration::from_millis(0), batch: 5 };
    gateway::reconciler::Reconciler::new(
        app.store.clone(),
        Topology::new(app.ns.queue.clone(), 5),
        app.ns.services.rabbitmq.clone(),
        Duration::from_millis(0),
        settings,
    )
}

/// Records as a gateway that died right after writing them leaves them.
async fn stranded(app: &Harness, n: usize) -> Vec<NewTask> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let task = NewTask {
            id: TaskId::new(),
            user_id: USER.into(),
            mandate: format!("stranded {i}"),
            max_ticks: 2,
            created_at: chrono::Utc::now() - chrono::Duration::seconds(5),
            idempotency: None,
            webhook_url: None,
            tools: Vec::new(),
            max_tokens: None,
            expires_at: None,
            traceparent: None,
        };
        app.store.submit(&task, &proto::store::Limits::NONE).await.expect("submit");
        tasks.push(task);
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_run_one_reconciler_and_a_standby_takes_over() {
    // No reconciler of the harness's own gateway: its lease key is another namespace's.
    let app = Harness::start(&[("RECONCILE_INTERVAL_MS", "600000")]).await;
    let lease = Keys::new(app.ns.prefix.clone()).reconciler_lease();
    // The harness gateway took the lease at start; free it for the two under test.
    let _: i64 = app.redis.clone().del(&lease).await.expect("del");
    let (a, b) = (reconciler(&app), reconciler(&app));
    let ids: Vec<TaskId> = stranded(&app, 12).await.iter().map(|t| t.id).collect();

    // Passes race; only the lease holder works, and bounded: 5 per pass.
    let (ra, rb) = tokio::join!(a.pass(), b.pass());
    let roles = [ra.expect("pass a"), rb.expect("pass b")];
    let leaders: Vec<_> = roles.iter().filter(|r| matches!(r, Role::Leader(_))).collect();
    assert_eq!(leaders.len(), 1, "exactly one leader: {roles:?}");
    assert!(roles.contains(&Role::Standby), "{roles:?}");
    let Role::Leader(first) = leaders[0] else { unreachable!() };
    assert_eq!(first.not_enqueued, 5, "work per pass is bounded by the batch");
    let (leader, standby) = if matches!(roles[0], Role::Leader(_)) { (&a, &b) } else { (&b, &a) };
    let holder: String = app.redis.clone().get(&lease).await.expect("get");
    assert_eq!(holder, leader.holder());

    assert_eq!(standby.pass().await.expect("standby"), Role::Standby);
    // The leader dies without releasing: the standby takes over once the lease expires.
    testkit::eventually("standby takes the lease", Duration::from_secs(5), || async {
        matches!(standby.pass().await, Ok(Role::Leader(_)))
    })
    .await;
    testkit::eventually("every stranded record closed", Duration::from_secs(10), || async {
        let _ = standby.pass().await;
        let mut all = true;
        for id in &ids {
            all &= app.record(*id).await.is_some_and(|r| r.status == TaskStatus::Failed);
        }
        all
    })
    .await;
    for id in &ids {
        let failed = app.events(*id).await.iter().filter(|e| e.get("status").is_some_and(|s| s == "failed")).count();
        assert_eq!(failed, 1, "closed exactly once");
    }
    assert_eq!(app.quota_used(USER).await, 0);
    assert!(matches!(leader.pass().await.expect("old leader"), Role::Standby), "the old leader is now standby");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_after_the_record_was_closed_is_not_reported_accepted() {
    let app = Harness::start(&[("RECONCILE_INTERVAL_MS", "600000")]).await;
    let tasks = stranded(&app, 1).await;
    let r = reconciler(&app);
    let _: i64 = app.redis.clone().del(Keys::new(app.ns.prefix.clone()).reconciler_lease()).await.expect("del");
    assert!(matches!(r.pass().await.expect("pass"), Role::Leader(p) if p.not_enqueued == 1));
    assert!(!app.store.confirm(&tasks[0]).await.expect("confirm"), "a late confirm must turn into a 503");
    app.cleanup().await;
}
