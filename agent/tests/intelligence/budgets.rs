//! Spend and recovery end to end, through the gateway and an agent process against a
//! scripted OpenAI server whose every chat call costs 120 tokens: a task stops `incomplete`
//! at exactly the first call that would cross its token budget, and an extend resumes it
//! from the checkpointed tick; a task failed by the model API (401) is retried after the fix
//! and resumes at its last tick; a retry after the checkpoint expired is `410`, and one
//! `from: start` starts again at tick 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proto::TaskStatus;
use proto::task::IncompleteReason;
use serde_json::{Value, json};
use testkit::Harness;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{Script, chat_requests, decision};
use crate::{AGENT, SOON};

fn think() -> String {
    decision("think", None, None, &[])
}

fn exit(deliverable: &str) -> String {
    decision("exit", None, Some(deliverable), &[])
}

fn synthesis() -> String {
    json!({"success": true, "deliverables": ["the answer"], "notes": "done", "sources": []}).to_string()
}

async fn model(script: impl Respond + 'static) -> MockServer {
    let openai = MockServer::start().await;
    Mock::given(method("POST")).and(path("/v1/chat/completions")).respond_with(script).mount(&openai).await;
    openai
}

fn agent_env(openai: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("OPENAI_API_KEY", "test-key".to_owned()),
        ("OPENAI_BASE_URL", format!("{}/v1", openai.uri())),
        ("LLM_MODEL", "test-model".to_owned()),
    ]
}

fn spawn(app: &mut Harness, openai: &MockServer) {
    let env = agent_env(openai);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    app.spawn_agent(AGENT, "spender", &env);
}

/// The ticks of the task's events, in order (`tick` events only).
async fn ticks(app: &Harness, id: proto::TaskId) -> Vec<(u32, u32)> {
    app.events(id)
        .await
        .into_iter()
        .filter_map(|e| Some((e.get("tick")?.parse().ok()?, e.get("attempt")?.parse().ok()?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stops_incomplete_at_the_first_call_that_would_cross_its_budget_and_an_extend_resumes_it() {
    // Three thinking ticks fit 400 tokens (360); the fourth call would end at 480.
    let openai = model(Script::new(vec![think(), think(), think(), think(), exit("the answer"), synthesis()])).await;
    let mut app = Harness::start(&[]).await;
    spawn(&mut app, &openai);
    let resp = app.submit("alice", json!({"mandate": "think hard", "max_ticks": 10, "max_tokens": 400})).await;
    assert_eq!(resp.status(), 202);
    let id: proto::TaskId =
        resp.json::<Value>().await.expect("json")["correlation_id"].as_str().expect("id").parse().expect("uuid");

    let rec = app.wait_for(id, SOON, |r| r.status == TaskStatus::Incomplete).await;
    assert_eq!((rec.incomplete_reason, rec.tick, rec.tokens_used), (Some(IncompleteReason::MaxTokens), Some(3), 360));
    let result = rec.result.expect("partial result");
    assert_eq!(
        (result["usage"]["total_tokens"].as_u64(), result["usage"]["model_calls"].as_u64()),
        (Some(360), Some(3))
    );
    assert_eq!(chat_requests(&openai).await.len(), 3, "the fourth call was not made");
    let body: Value = app.get_task("alice", id).await.json().await.expect("json");
    assert_eq!((body["status"].as_str(), body["incomplete_reason"].as_str()), (Some("incomplete"), Some("max_tokens")));

    // Not raised, or not incomplete: refused.
    let low = app.post_json("alice", &format!("/tasks/{id}/extend"), &json!({"max_tokens": 300})).await;
    assert_eq!(low.status(), 422);
    let other = app.post_json("bob", &format!("/tasks/{id}/extend"), &json!({"max_tokens": 3000})).await;
    assert_eq!(other.status(), 404, "another user's task");

    let extended = app.post_json("alice", &format!("/tasks/{id}/extend"), &json!({"max_tokens": 1000})).await;
    assert_eq!(extended.status(), 202);
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!((rec.status, rec.tick, rec.attempt), (TaskStatus::Completed, Some(5), 2), "{rec:#?}");
    assert_eq!(rec.history.len(), 1);
    assert_eq!(rec.history[0].incomplete_reason, Some(IncompleteReason::MaxTokens));
    assert_eq!(ticks(&app, id).await, vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)], "resumed at tick 4, not 1");
    let usage = &rec.result.expect("result")["usage"];
    assert_eq!((usage["total_tokens"].as_u64(), usage["model_calls"].as_u64()), (Some(720), Some(6)));
    let again = app.post_json("alice", &format!("/tasks/{id}/extend"), &json!({"max_tokens": 2000})).await;
    assert_eq!(again.status(), 409, "only an incomplete task can be extended");
    app.cleanup().await;
}

/// The script, or `401` while `broken` is set.
struct Breakable {
    script: Script,
    broken: Arc<AtomicBool>,
    /// Calls after which it breaks by itself (once).
    breaks_after: usize,
    calls: std::sync::Mutex<usize>,
}

impl Respond for Breakable {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut calls = self.calls.lock().expect("lock");
        *calls += 1;
        if *calls == self.breaks_after + 1 {
            self.broken.store(true, Ordering::SeqCst);
        }
        if self.broken.load(Ordering::SeqCst) {
            return ResponseTemplate::new(401)
                .set_body_json(json!({"error": {"message": "bad key", "type": "invalid_request_error"}}));
        }
        self.script.respond(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_failed_by_the_model_api_is_retried_after_the_fix_from_its_last_tick() {
    let broken = Arc::new(AtomicBool::new(false));
    let script = Script::new(vec![think(), think(), think(), exit("the answer"), synthesis()]);
    let openai =
        model(Breakable { script, broken: broken.clone(), breaks_after: 2, calls: std::sync::Mutex::new(0) }).await;
    let mut app = Harness::start(&[]).await;
    spawn(&mut app, &openai);
    let id = app.submit_ok("alice", "think, then answer", 10).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!((rec.status, rec.tick), (TaskStatus::Failed, Some(2)), "{rec:#?}");

    broken.store(false, Ordering::SeqCst);
    let retried = app.post_json("alice", &format!("/tasks/{id}/retry"), &json!({})).await;
    assert_eq!(retried.status(), 202);
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!((rec.status, rec.tick), (TaskStatus::Completed, Some(4)), "{rec:#?}");
    assert_eq!(rec.history.len(), 1);
    assert_eq!(rec.history[0].status, TaskStatus::Failed);
    let t = ticks(&app, id).await;
    assert_eq!(t, vec![(1, 1), (2, 1), (3, 2), (4, 2)], "resumed at its last tick");
    let again = app.post_json("alice", &format!("/tasks/{id}/retry"), &json!({})).await;
    assert_eq!(again.status(), 409, "a completed task is not retried");

    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_checkpoint_expired_is_gone_and_from_the_start_still_works() {
    let broken = Arc::new(AtomicBool::new(false));
    let script = Script::new(vec![think(), exit("x"), synthesis()]);
    let openai =
        model(Breakable { script, broken: broken.clone(), breaks_after: 1, calls: std::sync::Mutex::new(0) }).await;
    let mut app = Harness::start(&[("CHECKPOINT_RETENTION_SECONDS", "1")]).await;
    spawn(&mut app, &openai);
    let id = app.submit_ok("alice", "short-lived", 5).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!((rec.status, rec.tick), (TaskStatus::Failed, Some(1)), "{rec:#?}");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let gone = app.post_json("alice", &format!("/tasks/{id}/retry"), &json!({})).await;
    assert_eq!(gone.status(), 410);
    broken.store(false, Ordering::SeqCst);
    let fresh = app.post_json("alice", &format!("/tasks/{id}/retry"), &json!({"from": "start"})).await;
    assert_eq!(fresh.status(), 202);
    assert_eq!(app.wait_for(id, SOON, |r| r.status.is_terminal()).await.status, TaskStatus::Completed);
    assert_eq!(ticks(&app, id).await, vec![(1, 1), (1, 2)], "started again at tick 1");
    app.cleanup().await;
}
