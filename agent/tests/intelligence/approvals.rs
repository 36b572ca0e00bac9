//! Approvals: a call whose policy is `always` parks the task (no delivery, no agent slot),
//! the owner's decision resumes it from its checkpoint, and expiry, cancel, ownership and
//! concurrent decisions each end the wait exactly once.

use proto::{TaskId, TaskStatus};
use serde_json::{Value, json};
use testkit::Harness;
use testkit::mcp::McpServerProc;

use crate::tools::{FAST, servers, submit_with_tools};
use crate::{AGENT, SOON};

const MANDATE: &str = "Clean up.\ntool: py/delete_record {\"name\": \"old\"}\ntool: py/echo {\"text\": \"after\"}";

struct Parked {
    app: Harness,
    py: McpServerProc,
    id: TaskId,
    call_id: String,
}

/// A task parked on `py/delete_record` (approval `always`); `agent_env` adds to the agent's.
async fn parked(gateway_env: &[(&str, &str)], agent_env: &[(&str, &str)]) -> Parked {
    let py = McpServerProc::python("t").await;
    let mcp = servers("py", &py.url, "t", json!({"delete_record": "always"}));
    let mut genv = vec![("MCP_SERVERS", mcp.as_str())];
    genv.extend_from_slice(gateway_env);
    let mut app = Harness::start(&genv).await;
    let mut aenv = vec![("MCP_SERVERS", mcp.as_str()), FAST[0]];
    aenv.extend_from_slice(agent_env);
    app.spawn_agent(AGENT, "approver", &aenv);
    let id = submit_with_tools(&app, "alice", MANDATE, &["py"]).await;
    let rec = app.wait_for(id, SOON, |r| r.status == TaskStatus::RequiresAction).await;
    let call_id = rec.pending_action.expect("pending").call_id;
    Parked { app, py, id, call_id }
}

async fn decide(app: &Harness, user: &str, id: TaskId, call_id: &str, body: Value) -> reqwest::Response {
    app.post_json(user, &format!("/tasks/{id}/actions/{call_id}"), &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_call_parks_then_resumes_from_its_checkpoint_with_edited_arguments() {
    let Parked { app, py, id, call_id } = parked(&[], &[]).await;
    let body: Value = app.get_task("alice", id).await.json().await.expect("json");
    assert_eq!(body["status"], "requires_action");
    assert_eq!(body["required_action"]["tool"], "py/delete_record");
    assert_eq!(body["required_action"]["arguments"], json!({"name": "old"}));
    assert!(body["required_action"]["expires_at"].as_str().is_some());
    assert!(py.calls().is_empty(), "nothing called before the approval");
    // Parked: no message in the queue, no delivery held, no agent busy.
    app.eventually("the agent is idle", SOON, || async { app.agent_count().await["busy"] == 0 }).await;
    assert_eq!(app.ready("").await, 0);
    let events = app.events(id).await;
    assert!(events.iter().any(|e| e.get("status").is_some_and(|s| s == "requires_action")));

    assert_eq!(decide(&app, "mallory", id, &call_id, json!({"decision": "approve"})).await.status(), 404);
    let bad = decide(&app, "alice", id, &call_id, json!({"decision": "approve", "arguments": {"name": 5}})).await;
    assert_eq!(bad.status(), 422, "edited arguments are checked against the tool's schema");
    assert_eq!(decide(&app, "alice", id, "call_99", json!({"decision": "approve"})).await.status(), 404);
    let ok = decide(&app, "alice", id, &call_id, json!({"decision": "approve", "arguments": {"name": "older"}})).await;
    assert_eq!(ok.status(), 202);
    assert_eq!(decide(&app, "alice", id, &call_id, json!({"decision": "deny"})).await.status(), 409);

    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:#?}");
    assert_eq!(rec.attempt, 2, "resumed with a new attempt");
    assert_eq!(rec.tick, Some(3), "two tool ticks and the exit, none repeated");
    let calls = py.calls();
    let tools: Vec<&str> = calls.iter().map(|c| c.tool.as_str()).collect();
    assert_eq!(tools, vec!["delete_record", "echo"]);
    assert_eq!(calls[0].arguments, json!({"name": "older"}), "the owner's arguments were used");
    let result = rec.result.expect("result").to_string();
    assert!(result.contains("deleted older") && result.contains("echo: after"), "{result}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_call_is_not_made_and_two_concurrent_decisions_settle_once() {
    let Parked { app, py, id, call_id } = parked(&[], &[]).await;
    let (a, b) = tokio::join!(
        decide(&app, "alice", id, &call_id, json!({"decision": "deny"})),
        decide(&app, "alice", id, &call_id, json!({"decision": "deny"})),
    );
    let mut codes = [a.status().as_u16(), b.status().as_u16()];
    codes.sort_unstable();
    assert_eq!(codes, [202, 409]);
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed);
    let calls = py.calls();
    assert!(calls.iter().all(|c| c.tool != "delete_record"), "denied: never called ({calls:?})");
    assert!(rec.result.expect("result").to_string().contains("the owner denied it"));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecided_call_expires_as_denied_and_the_task_resumes() {
    let reconcile = [("RECONCILE_INTERVAL_MS", "200")];
    let Parked { app, py, id, .. } = parked(&reconcile, &[("APPROVAL_TIMEOUT_SECONDS", "2")]).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:#?}");
    assert!(py.calls().iter().all(|c| c.tool != "delete_record"));
    assert!(rec.result.expect("result").to_string().contains("expired"));
    let events = app.events(id).await;
    assert!(events.iter().any(|e| e.get("decision").is_some_and(|d| d == "expired")));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_parked_ends_the_task_at_once_and_clears_the_call() {
    let Parked { app, py, id, call_id } = parked(&[], &[]).await;
    let before = app.quota_used("alice").await;
    let resp = app.cancel("alice", id).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "cancelled");
    assert!(body.get("required_action").is_none());
    assert_eq!(decide(&app, "alice", id, &call_id, json!({"decision": "approve"})).await.status(), 409);
    let rec = app.record(id).await.expect("record");
    assert!(rec.pending_action.is_none());
    // The ticks it used stay charged; the rest of its reservation came back.
    assert_eq!(app.quota_used("alice").await, before - (10 - i64::from(rec.ticks_used)));
    assert!(py.calls().is_empty());
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_whose_gateway_died_before_publishing_is_published_by_the_reconciler() {
    let fast = [("RECONCILE_INTERVAL_MS", "200"), ("RECONCILE_GRACE_MS", "100"), ("PUBLISH_TIMEOUT_MS", "1000")];
    let Parked { app, py, id, call_id } = parked(&fast, &[]).await;
    // What a gateway killed between its decision write and its publish leaves behind.
    let rec = app.record(id).await.expect("record");
    let decision = proto::task::ActionDecision { call_id, decision: proto::task::Verdict::Approve, arguments: None };
    let decided = app.store.decide(&rec, &decision).await.expect("decide");
    assert_eq!(decided, proto::store::DecideOutcome::Resumed { seq: 1 });
    let done = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(done.status, TaskStatus::Completed, "{done:#?}");
    assert_eq!(done.seq, 2, "published again with the next enqueue number");
    assert_eq!(done.attempt, 2, "run once after the decision");
    let deleted = py.calls().iter().filter(|c| c.tool == "delete_record").count();
    assert_eq!(deleted, 1, "the approved call was made once");
    app.cleanup().await;
}
