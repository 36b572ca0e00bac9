//! ECS scale-in protection: a real agent process against a wiremock ECS agent endpoint
//! (`ECS_AGENT_URI`) enables protection when a task starts, renews it while busy, releases
//! it when idle, and releases it after the drain when stopped while busy.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::Harness;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{AGENT, SOON, env_refs, pace};

/// ECS sets `ECS_AGENT_URI` to `http://169.254.170.2/api/{v3 endpoint id}`.
const AGENT_PATH: &str = "/api/0123456789abcdef-1234567890";
const TASK_ARN: &str = "arn:aws:ecs:eu-west-1:123456789012:task/euglena/0123456789abcdef";

fn enable_body() -> Value {
    json!({"ProtectionEnabled": true, "ExpiresInMinutes": 1})
}

fn disable_body() -> Value {
    json!({"ProtectionEnabled": false})
}

/// The bodies the endpoint received, in order.
async fn bodies(ecs: &MockServer) -> Vec<Value> {
    let requests = ecs.received_requests().await.expect("recording is on");
    requests
        .iter()
        .map(|r| {
            assert_eq!(r.method.as_str(), "PUT", "{r:?}");
            assert_eq!(r.url.path(), format!("{AGENT_PATH}/task-protection/v1/state"), "{r:?}");
            serde_json::from_slice(&r.body).expect("a JSON body")
        })
        .collect()
}

async fn mount(ecs: &MockServer, body: Value, protected: bool, expect: impl Into<wiremock::Times>) {
    // What the ECS agent answers on success (ECS's UpdateTaskProtection result for this task).
    let reply = json!({"protection": {
        "ExpirationDate": "2026-11-22T12:01:00Z",
        "ProtectionEnabled": protected,
        "TaskArn": TASK_ARN,
    }});
    Mock::given(method("PUT"))
        .and(path(format!("{AGENT_PATH}/task-protection/v1/state")))
        .and(header("content-type", "application/json"))
        .and(body_json(body))
        .respond_with(ResponseTemplate::new(200).set_body_json(reply))
        .expect(expect)
        .mount(ecs)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_enables_renews_and_idle_or_shutdown_disables_protection() {
    let ecs = MockServer::start().await;
    // Two tasks: an enable each plus at least two renewals during the first (~3 s at 1 s).
    mount(&ecs, enable_body(), true, 4..).await;
    mount(&ecs, disable_body(), false, 2).await;

    let mut app = Harness::start(&[]).await;
    let uri = format!("{}{AGENT_PATH}", ecs.uri());
    let mut env = pace(250, 12);
    env.extend([
        ("ECS_AGENT_URI", uri),
        ("ECS_PROTECTION_MINUTES", "1".to_owned()),
        ("ECS_PROTECTION_RENEW_SECONDS", "1".to_owned()),
        ("AGENT_DRAIN_SECONDS", "30".to_owned()),
    ]);
    let a = app.spawn_agent(AGENT, "protected", &env_refs(&env));
    app.eventually("agent up", SOON, || async { app.agent_count().await["count"] == 1 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(bodies(&ecs).await.is_empty(), "an idle agent leaves protection alone");

    // Busy: enabled at once, renewed while the task runs, released when it ends.
    let id = app.submit_ok("alice", "keep me protected", 20).await;
    app.wait_for(id, SOON, |r| r.tick.is_some()).await;
    app.eventually("enabled", SOON, || async { !bodies(&ecs).await.is_empty() }).await;
    assert_eq!(bodies(&ecs).await[0], enable_body(), "the first request protects");
    let busy_since = tokio::time::Instant::now();
    app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    let busy_for = busy_since.elapsed();
    app.eventually("released when idle", SOON, || async { bodies(&ecs).await.last() == Some(&disable_body()) }).await;
    let first = bodies(&ecs).await;
    let (last, renewals) = first.split_last().expect("requests");
    assert_eq!(last, &disable_body());
    assert!(renewals.iter().all(|b| *b == enable_body()), "only enable/renew while busy: {first:?}");
    assert!(renewals.len() >= 3, "enable plus renewals every second: {first:?}");
    assert!(renewals.len() as u64 <= busy_for.as_secs() + 3, "renewals are paced, not a hot loop: {first:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bodies(&ecs).await.len(), first.len(), "nothing while idle");

    // Stopped while busy: the task drains to completion, then protection is released.
    let id = app.submit_ok("alice", "finish me during the drain", 20).await;
    app.eventually("enabled again", SOON, || async { bodies(&ecs).await.len() > first.len() }).await;
    app.agent(a).sigterm();
    let status = app.agent(a).wait_exit(SOON).await.expect("agent exits after draining");
    assert!(status.success(), "clean exit: {status:?}");
    assert!(app.record(id).await.expect("record").status.is_terminal(), "drained, not abandoned");
    let all = bodies(&ecs).await;
    assert_eq!(all[first.len()], enable_body());
    assert_eq!(all.last(), Some(&disable_body()), "released on the way out: {all:?}");
    assert_eq!(all.iter().filter(|b| **b == disable_body()).count(), 2, "{all:?}");
    ecs.verify().await;
    app.cleanup().await;
}
