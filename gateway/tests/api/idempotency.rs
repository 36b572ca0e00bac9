//! `Idempotency-Key` on `POST /tasks` (ARCHITECTURE §2 "Idempotency"): a replay returns the first
//! task and enqueues nothing, a different body is 422, a duplicate while the first is still
//! publishing is 409, and a submission that failed frees its key for the retry.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use proto::store::{Idempotency, Limits, NewTask};
use proto::{Keys, TaskId};
use redis::AsyncCommands;
use serde_json::{Value, json};
use testkit::Harness;

use crate::common::{assert_ready, detail, problem, wait_serving};

const USER: &str = "idem-user";

async fn submit_with_key(app: &Harness, user: &str, key: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/tasks"))
        .bearer_auth(app.token_for(user))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn id_of(resp: reqwest::Response) -> TaskId {
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.expect("json");
    body["correlation_id"].as_str().expect("id").parse().expect("uuid")
}

async fn listed(app: &Harness, user: &str) -> Vec<String> {
    let key = Keys::new(app.ns.prefix.clone()).user_tasks(user);
    app.redis.clone().zrange(key, 0, -1).await.expect("zrange")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_returns_the_same_task_and_enqueues_nothing() {
    let app = Harness::start(&[("DAILY_TICK_LIMIT", "100")]).await;
    let body = json!({"mandate": "only once", "max_ticks": 7});
    let first = id_of(submit_with_key(&app, USER, "order-42", &body).await).await;
    // The same request again, and once more with the same content spelled differently.
    let again = submit_with_key(&app, USER, "order-42", &body).await;
    assert!(again.headers().get("location").is_some(), "a replay answers like the original");
    assert_eq!(id_of(again).await, first);
    let respelled = json!({"max_ticks": 7, "mandate": "  only once  "});
    assert_eq!(id_of(submit_with_key(&app, USER, "order-42", &respelled).await).await, first);
    assert_ready(&app, 1).await;
    assert_eq!(app.quota_used(USER).await, 7, "the replay reserved nothing");
    assert_eq!(listed(&app, USER).await.len(), 1);

    // Keys are per user: another user's identical key is another task.
    let bobs = id_of(submit_with_key(&app, "bob", "order-42", &body).await).await;
    assert_ne!(bobs, first);
    // And a new key is a new task.
    assert_ne!(id_of(submit_with_key(&app, USER, "order-43", &body).await).await, first);
    assert_ready(&app, 3).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_with_a_different_body_is_422() {
    let app = Harness::start(&[]).await;
    id_of(submit_with_key(&app, USER, "k", &json!({"mandate": "first", "max_ticks": 3})).await).await;
    for other in [json!({"mandate": "second", "max_ticks": 3}), json!({"mandate": "first", "max_ticks": 4})] {
        let (_, body) = problem(submit_with_key(&app, USER, "k", &other).await, 422).await;
        assert!(detail(&body).contains("Idempotency-Key"), "{body}");
    }
    assert_ready(&app, 1).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_with_one_key_make_exactly_one_task() {
    let app = Harness::start(&[]).await;
    let body = json!({"mandate": "raced", "max_ticks": 2});
    let responses = join_all((0..20).map(|_| submit_with_key(&app, USER, "race", &body))).await;
    let mut ids = HashSet::new();
    for resp in responses {
        match resp.status().as_u16() {
            202 => {
                ids.insert(id_of(resp).await);
            }
            409 => {
                problem(resp, 409).await;
            }
            other => panic!("unexpected {other}: {:?}", resp.text().await),
        }
    }
    assert_eq!(ids.len(), 1, "every 202 names the one task: {ids:?}");
    assert_eq!(listed(&app, USER).await.len(), 1, "exactly one record");
    assert_ready(&app, 1).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_a_request_still_publishing_is_409_until_the_reconciler_had_its_chance() {
    // The reconciler's bound: 500 ms publish timeout + 300 ms grace + 4 × 100 ms interval.
    // Its pass would close the stranded record (and free the key) first; a lease held by a
    // gateway that is not there keeps it away here, to see the bound itself.
    let app = Harness::start(&[
        ("PUBLISH_TIMEOUT_MS", "500"),
        ("REQUEST_TIMEOUT_SECONDS", "1"),
        ("RECONCILE_GRACE_MS", "300"),
        ("RECONCILE_INTERVAL_MS", "100"),
    ])
    .await;
    let lease = Keys::new(app.ns.prefix.clone()).reconciler_lease();
    let _: () = app.redis.clone().set_ex(&lease, "a-gateway-that-is-gone", 60).await.expect("lease");
    // A first request that wrote its record and claim and is "still publishing": the claim
    // is never confirmed, as when the first gateway was cut off mid-publish.
    let body = json!({"mandate": "in flight", "max_ticks": 2});
    // The probe only reads its claim's fingerprint. On a loaded machine its first publish
    // (the broker connection opened lazily, within the short timeout set above) can miss, and
    // a 503 frees the key: so the broker link comes up first, and a 503 is retried.
    app.eventually("gateway ready", Duration::from_secs(10), || async {
        matches!(app.http.get(app.url("/ready")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    let mut probe = submit_with_key(&app, USER, "probe", &body).await;
    for _ in 0..5 {
        if probe.status() != 503 {
            break;
        }
        probe = submit_with_key(&app, USER, "probe", &body).await;
    }
    let fingerprint_source = id_of(probe).await;
    let fingerprint = {
        let key = Keys::new(app.ns.prefix.clone()).idempotency(USER, "probe");
        let claim: String = app.redis.clone().get(key).await.expect("claim");
        assert!(claim.starts_with(&format!("done:{fingerprint_source}:")), "{claim}");
        claim.rsplit(':').next().expect("fingerprint").to_owned()
    };
    let task = NewTask {
        id: TaskId::new(),
        user_id: USER.into(),
        mandate: "in flight".into(),
        max_ticks: 2,
        created_at: chrono::Utc::now(),
        idempotency: Some(Idempotency { key: "pending".into(), fingerprint }),
        webhook_url: None,
        tools: Vec::new(),
        max_tokens: None,
        expires_at: None,
        traceparent: None,
    };
    app.store.submit(&task, &Limits::NONE).await.expect("submit");
    let (_, conflict) = problem(submit_with_key(&app, USER, "pending", &body).await, 409).await;
    assert!(detail(&conflict).contains("still being processed"), "{conflict}");
    // Past the request deadline, the record may still be closed by the reconciler: a 202
    // would name a task that may never run.
    tokio::time::sleep(Duration::from_millis(700)).await;
    problem(submit_with_key(&app, USER, "pending", &body).await, 409).await;
    // Past the reconciler's bound the replay gets the record as it stands.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(id_of(submit_with_key(&app, USER, "pending", &body).await).await, task.id);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_that_was_not_enqueued_frees_its_key() {
    let app = Harness::start(&[
        ("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
        ("PUBLISH_TIMEOUT_MS", "1000"),
        ("REQUEST_TIMEOUT_SECONDS", "3"),
    ])
    .await;
    wait_serving(&app).await;
    let body = json!({"mandate": "retry me", "max_ticks": 2});
    // The client retries with the same key after a 503: it is a fresh attempt, not a 409
    // and not the failed task.
    for _ in 0..2 {
        problem(submit_with_key(&app, USER, "retry", &body).await, 503).await;
    }
    let key = Keys::new(app.ns.prefix.clone()).idempotency(USER, "retry");
    let claim: Option<String> = app.redis.clone().get(key).await.expect("redis");
    assert_eq!(claim, None, "the undo freed the key");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_keys_are_400() {
    let app = Harness::start(&[]).await;
    let body = json!({"mandate": "x", "max_ticks": 1});
    for bad in ["".to_owned(), "k".repeat(256), "tab\there".to_owned()] {
        let (_, problem_body) = problem(submit_with_key(&app, USER, &bad, &body).await, 400).await;
        assert!(detail(&problem_body).contains("Idempotency-Key"), "{problem_body}");
    }
    assert_eq!(id_of(submit_with_key(&app, USER, &"k".repeat(255), &body).await).await.to_string().len(), 36);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_closing_a_stranded_submission_frees_its_key() {
    let app = Harness::start(&[]).await;
    // A first request whose gateway died after writing the record and claim: never confirmed.
    let body = json!({"mandate": "stranded", "max_ticks": 2});
    let fingerprint = {
        let probe = id_of(submit_with_key(&app, USER, "probe", &body).await).await;
        let claim: String =
            app.redis.clone().get(Keys::new(app.ns.prefix.clone()).idempotency(USER, "probe")).await.expect("claim");
        assert!(claim.starts_with(&format!("done:{probe}:")), "the confirm marked the claim done: {claim}");
        claim.rsplit(':').next().expect("fingerprint").to_owned()
    };
    let mut task = NewTask::new(USER, "stranded", 2);
    task.idempotency = Some(Idempotency { key: "stranded".into(), fingerprint });
    app.store.submit(&task, &Limits::NONE).await.expect("submit");
    assert_eq!(app.store.close_unconfirmed(task.id).await.expect("close"), proto::reconcile::CloseOutcome::Closed);
    let key = Keys::new(app.ns.prefix.clone()).idempotency(USER, "stranded");
    let claim: Option<String> = app.redis.clone().get(key).await.expect("redis");
    assert_eq!(claim, None, "the reconciler's close freed the key");
    // The retry with the same key is a fresh task.
    assert_ne!(id_of(submit_with_key(&app, USER, "stranded", &body).await).await, task.id);
    app.cleanup().await;
}
