//! MCP tools end to end: the in-process gateway, real agent processes and real MCP servers
//! on 127.0.0.1 (the official Python SDK's, and the reference server-everything).

use std::time::Duration;

use proto::{TaskId, TaskStatus};
use serde_json::{Value, json};
use testkit::Harness;
use testkit::mcp::McpServerProc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::support::{LocalEmbeddings, Script, chat_requests};
use crate::{AGENT, SOON};

/// `MCP_SERVERS` with one server `name` at `url`, its bearer `token` and `approval` policy.
pub(crate) fn servers(name: &str, url: &str, token: &str, approval: Value) -> String {
    json!({name: {"url": url, "headers": {"Authorization": format!("Bearer {token}")}, "approval": approval}})
        .to_string()
}

/// Submits `mandate` with `tools`, asserting `202`.
pub(crate) async fn submit_with_tools(app: &Harness, user: &str, mandate: &str, tools: &[&str]) -> TaskId {
    let resp = app.submit(user, json!({"mandate": mandate, "max_ticks": 10, "tools": tools})).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["tools"], json!(tools), "the choice is in the task");
    body["correlation_id"].as_str().expect("id").parse().expect("uuid")
}

pub(crate) const FAST: [(&str, &str); 1] = [("OFFLINE_TICK_DELAY_MS", "50")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_result_reaches_the_result_with_the_operators_header_and_a_stable_key() {
    let py = McpServerProc::python("s3cret-token").await;
    let mcp = servers("py", &py.url, "s3cret-token", json!("never"));
    let mut app = Harness::start(&[("MCP_SERVERS", &mcp)]).await;
    let a = app.spawn_agent(AGENT, "tooler", &[("MCP_SERVERS", &mcp), FAST[0]]);
    let id = submit_with_tools(&app, "alice", "Add.\ntool: py/add {\"a\": 2, \"b\": 3}", &["py/add"]).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:#?}");
    let result = rec.result.expect("result");
    assert!(result["deliverables"][0].as_str().expect("text").contains("2 + 3 = 5"), "{result}");
    assert_eq!(result["success"], true);

    let calls = py.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].arguments, json!({"a": 2, "b": 3}));
    assert_eq!(calls[0].authorized, Some(true), "the operator's header came");
    assert_eq!(calls[0].key.as_deref(), Some(format!("euglena:{id}:1:1").as_str()));

    // The tick's event carries the tool and what it returned; no secret anywhere.
    let events = app.events(id).await;
    let tick = events.iter().find(|e| e.get("tool").is_some()).expect("a tool event");
    assert_eq!(tick["tool"], "py/add");
    assert!(tick["output"].contains("2 + 3 = 5"));
    let log = app.agent(a).log_text();
    assert!(!log.contains("s3cret-token") && !result.to_string().contains("s3cret-token"));
    assert!(!events.iter().any(|e| e.values().any(|v| v.contains("s3cret-token"))));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_everything_answers_a_call() {
    let everything = McpServerProc::everything().await;
    let mcp = json!({"ev": {"url": everything.url}}).to_string();
    let mut app = Harness::start(&[("MCP_SERVERS", &mcp)]).await;
    app.spawn_agent(AGENT, "ev", &[("MCP_SERVERS", &mcp), FAST[0]]);
    let id = submit_with_tools(&app, "alice", "tool: ev/echo {\"message\": \"hello from euglena\"}", &["ev"]).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:#?}");
    let result = rec.result.expect("result");
    assert!(result.to_string().contains("hello from euglena"), "{result}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_choice_is_checked_at_submit() {
    let py = McpServerProc::python("").await;
    let mcp = json!({"py": {"url": py.url}}).to_string();
    let app = Harness::start(&[("MCP_SERVERS", &mcp)]).await;
    for (tools, named) in
        [(json!(["nope"]), "nope"), (json!(["py/nope"]), "py/nope"), (json!(["other/add"]), "other/add")]
    {
        let resp = app.submit("alice", json!({"mandate": "m", "tools": tools})).await;
        assert_eq!(resp.status(), 422);
        let body: Value = resp.json().await.expect("json");
        assert!(body["detail"].as_str().expect("detail").contains(named), "{body}");
    }
    let resp = app.submit("alice", json!({"mandate": "m"})).await;
    let body: Value = resp.json().await.expect("json");
    assert!(body.get("tools").is_none(), "absent: built-in tools only");
    let resp = app.submit("alice", json!({"mandate": "m", "tools": ["py", "py/add", "py"]})).await;
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["tools"], json!(["py", "py/add"]));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_or_slow_fails_the_call_not_the_agent() {
    let py = McpServerProc::python("").await;
    let mut gone = McpServerProc::python("").await;
    let gone_url = gone.url.clone();
    gone.kill();
    let mcp = json!({"py": {"url": py.url}, "gone": {"url": gone_url}}).to_string();
    let mut app = Harness::start(&[("MCP_SERVERS", &mcp)]).await;
    let a = app.spawn_agent(AGENT, "survivor", &[("MCP_SERVERS", &mcp), ("MCP_CALL_TIMEOUT_SECONDS", "1"), FAST[0]]);
    let mandate = "tool: gone/echo {\"text\": \"x\"}\ntool: py/slow {\"seconds\": 5, \"label\": \"late\"}\ntool: py/echo {\"text\": \"still here\"}";
    let id = submit_with_tools(&app, "alice", mandate, &["gone", "py"]).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:#?}");
    let result = rec.result.expect("result").to_string();
    assert!(result.contains("not available to this task"), "the down server's tool was not offered: {result}");
    assert!(result.contains("no answer within 1 s"), "the slow call timed out: {result}");
    assert!(result.contains("echo: still here"), "the agent went on: {result}");
    assert!(!app.agent(a).exited(), "the agent is alive");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_repaired_not_sent() {
    let py = McpServerProc::python("").await;
    let mcp = json!({"py": {"url": py.url}}).to_string();
    let openai = MockServer::start().await;
    let act = |args: Value| {
        json!({"thought": "add", "action": {"type": "tool", "query": null, "url": null, "tool": "py/add", "arguments": args},
               "notes": null, "deliverable": null, "remember": []})
        .to_string()
    };
    let exit = json!({"thought": "done", "action": {"type": "exit", "query": null, "url": null, "tool": null, "arguments": null},
                      "notes": null, "deliverable": null, "remember": []});
    let script = Script::new(vec![
        act(json!({"a": "two", "b": 3})),
        act(json!({"a": 2, "b": 3})),
        exit.to_string(),
        json!({"success": true, "deliverables": ["5"], "notes": "n", "sources": []}).to_string(),
    ]);
    Mock::given(method("POST")).and(path("/v1/chat/completions")).respond_with(script).mount(&openai).await;
    Mock::given(method("POST")).and(path("/v1/embeddings")).respond_with(LocalEmbeddings).mount(&openai).await;
    let mut app = Harness::start(&[("MCP_SERVERS", &mcp)]).await;
    let base = format!("{}/v1", openai.uri());
    app.spawn_agent(
        AGENT,
        "repairer",
        &[("MCP_SERVERS", &mcp), ("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", &base), ("EMBEDDING_MODEL", "local")],
    );
    let id = submit_with_tools(&app, "alice", "add two and three", &["py"]).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:#?}");
    let calls = py.calls();
    assert_eq!(calls.len(), 1, "only the repaired call was made: {calls:?}");
    assert_eq!(calls[0].arguments, json!({"a": 2, "b": 3}));
    let bodies = chat_requests(&openai).await;
    assert!(bodies[0].contains("py/add") && bodies[0].contains("Adds two integers"), "the tool was offered");
    assert!(bodies[1].contains("do not match its input schema"), "the repair said why");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_checkpointed_before_a_crash_is_not_made_again_and_one_in_flight_is_with_its_key() {
    let py = McpServerProc::python("").await;
    let mcp = json!({"py": {"url": py.url}}).to_string();
    let mut app = Harness::start(&[("MCP_SERVERS", &mcp)]).await;
    let env = [("MCP_SERVERS", mcp.as_str()), FAST[0]];
    let victim = app.spawn_agent(AGENT, "victim", &env);
    let mandate = "tool: py/echo {\"text\": \"one\"}\ntool: py/slow {\"seconds\": 4, \"label\": \"two\"}";
    let id = submit_with_tools(&app, "alice", mandate, &["py"]).await;
    app.eventually("the second call reached the server", SOON, || async {
        py.calls().iter().any(|c| c.tool == "slow")
    })
    .await;
    app.agent(victim).kill();
    app.spawn_agent(AGENT, "rescuer", &env);
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:#?}");
    let calls = py.calls();
    let echo: Vec<_> = calls.iter().filter(|c| c.tool == "echo").collect();
    let slow: Vec<_> = calls.iter().filter(|c| c.tool == "slow").collect();
    assert_eq!(echo.len(), 1, "the checkpointed call was not repeated: {calls:?}");
    assert_eq!(slow.len(), 2, "the call in flight was made again: {calls:?}");
    assert_eq!(slow[0].key, slow[1].key, "with the same idempotency key");
    assert_ne!(echo[0].key, slow[0].key);
    assert_eq!(rec.attempt, 2);
    tokio::time::sleep(Duration::from_millis(10)).await;
    app.cleanup().await;
}
