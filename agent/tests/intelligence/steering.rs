//! Steering: the owner's messages reach the model at the next tick as the owner's words,
//! once each, across a redelivery.

use std::sync::Mutex;
use std::time::Duration;

use proto::TaskStatus;
use serde_json::json;
use testkit::Harness;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{LocalEmbeddings, chat_requests, completion, decision};
use crate::{AGENT, SOON};

/// Thinks (slowly, so the test can act between ticks) for `thinks` tick calls, then exits,
/// then writes the result.
struct SlowThinker {
    thinks: usize,
    calls: Mutex<usize>,
}

impl Respond for SlowThinker {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body = String::from_utf8_lossy(&request.body);
        let reply = if body.contains("euglena_result") {
            json!({"success": true, "deliverables": ["done"], "notes": "n", "sources": []}).to_string()
        } else {
            let mut calls = self.calls.lock().expect("lock");
            *calls += 1;
            if *calls > self.thinks { decision("exit", None, None, &[]) } else { decision("think", None, None, &[]) }
        };
        ResponseTemplate::new(200).set_body_json(completion(&reply)).set_delay(Duration::from_millis(300))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_model_once_each_across_a_redelivery() {
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(SlowThinker { thinks: 12, calls: Mutex::new(0) })
        .mount(&openai)
        .await;
    Mock::given(method("POST")).and(path("/v1/embeddings")).respond_with(LocalEmbeddings).mount(&openai).await;
    let mut app = Harness::start(&[]).await;
    let base = format!("{}/v1", openai.uri());
    let env = [("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", base.as_str()), ("EMBEDDING_MODEL", "local")];

    let id = app.submit_ok("alice", "think about steering", 30).await;
    let path = format!("/tasks/{id}/messages");
    let sent = app.post_json("alice", &path, &json!({"text": "STEER-ONE: answer in French"})).await;
    assert_eq!(sent.status(), 202, "a queued task takes messages");
    assert_eq!(app.post_json("mallory", &path, &json!({"text": "hijack"})).await.status(), 404);
    assert_eq!(app.post_json("alice", &path, &json!({"text": " "})).await.status(), 422);
    assert_eq!(app.post_json("alice", &path, &json!({"text": "x".repeat(2001)})).await.status(), 422);

    let first = app.spawn_agent(AGENT, "steered", &env);
    app.wait_for(id, SOON, |r| r.tick.unwrap_or(0) >= 2).await;
    let sent = app.post_json("alice", &path, &json!({"text": "STEER-TWO: be brief"})).await;
    assert_eq!(sent.status(), 202);
    app.eventually("the second message reached the model", SOON, || async {
        chat_requests(&openai).await.iter().any(|b| b.contains("STEER-TWO"))
    })
    .await;
    // Let the tick that read it be checkpointed, then crash.
    let seen_at = app.record(id).await.expect("record").tick.unwrap_or(0);
    app.wait_for(id, SOON, |r| r.tick.unwrap_or(0) > seen_at).await;
    app.agent(first).kill();
    app.spawn_agent(AGENT, "rescuer", &env);
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:#?}");
    assert_eq!(rec.attempt, 2);

    let ticks: Vec<String> =
        chat_requests(&openai).await.into_iter().filter(|b| b.contains("euglena_action")).collect();
    let count = |b: &str, s: &str| b.matches(s).count();
    assert!(ticks.iter().all(|b| count(b, "STEER-ONE") == 1), "the first message in every tick prompt, once");
    let two: Vec<usize> = ticks.iter().map(|b| count(b, "STEER-TWO")).collect();
    let from = two.iter().position(|n| *n == 1).expect("seen");
    assert!(
        two[from..].iter().all(|n| *n == 1),
        "once in every prompt after it arrived, across the redelivery: {two:?}"
    );
    assert!(ticks[0].contains("Messages from the task's owner"));

    let events = app.events(id).await;
    assert_eq!(events.iter().filter(|e| e.contains_key("message")).count(), 2, "each is an SSE message event");
    let after = app.post_json("alice", &path, &json!({"text": "too late"})).await;
    assert_eq!(after.status(), 409, "not after the end");
    app.cleanup().await;
}
