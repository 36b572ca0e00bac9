//! `/mcp` driven by the official MCP Python SDK's client (`testkit/mcp_client.py`, installed
//! by `scripts/test-deps.sh`), against an in-process gateway and a real agent process on the
//! offline model: tools listed, a mandate run to completion and read back, another
//! cancelled, refusals without a token and for another user's task, REST's error texts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::http::HeaderValue;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig, DetailedTask,
    GetTaskParams, Implementation, ProtocolVersion, TaskPayload, TaskStatus as McpStatus,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use testkit::Harness;
use testkit::binaries::workspace_bin;

fn repo() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    Path::new(&dir).parent().expect("workspace root").to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_runs_a_mandate_over_mcp() {
    let mut app = Harness::start(&[]).await;
    let agent = workspace_bin("agent", "agent");
    // Short ticks; the task to cancel thinks for 40 of them, so it is still queued or running.
    app.spawn_agent(
        agent.to_str().expect("path"),
        "mcp-a1",
        &[("OFFLINE_TICK_DELAY_MS", "200"), ("OFFLINE_THINK_TICKS", "40")],
    );
    let bobs = app.submit("bob", json!({"mandate": "bob's own task", "max_ticks": 1})).await;
    assert_eq!(bobs.status(), 202);
    let bobs: Value = bobs.json().await.expect("json");

    let python = repo().join(".venv/bin/python");
    assert!(python.is_file(), "no {}: run scripts/test-deps.sh", python.display());
    let run = tokio::process::Command::new(python)
        .arg(repo().join("testkit/mcp_client.py"))
        .args(["--url", &app.url("/mcp"), "--token", &app.token_for("alice")])
        .args(["--other-task", bobs["correlation_id"].as_str().expect("id")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out =
        tokio::time::timeout(Duration::from_secs(300), run).await.expect("client within 300 s").expect("run client");
    let transcript = String::from_utf8_lossy(&out.stdout);
    eprintln!("{transcript}");
    assert!(
        out.status.success(),
        "MCP client session failed:\n{transcript}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<Value> = transcript.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(steps.last().map(|s| s["step"].clone()), Some(json!("done")), "the session ran to its end");
    let get = steps.iter().find(|s| s["step"] == "get_task").expect("get_task step");
    assert_eq!(get["status"], "completed");
    // Bob's task is untouched by alice's cancel attempt.
    let rec = app.record(bobs["correlation_id"].as_str().expect("id").parse().expect("uuid")).await.expect("record");
    assert!(!rec.cancel_requested && rec.status != proto::TaskStatus::Cancelled);
    app.cleanup().await;
}

#[tokio::test]
async fn mcp_without_a_valid_token_is_the_rest_401() {
    let app = Harness::start(&[]).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    for auth in [None, Some("Bearer not-a-jwt")] {
        let mut req =
            app.http.post(app.url("/mcp")).header("accept", "application/json, text/event-stream").json(&init);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    app.cleanup().await;
}

/// An MCP client with the Tasks extension declared (the `rmcp` client: the Python SDK 2.3
/// client has no Tasks support of its own), as `user`.
async fn tasks_client(app: &Harness, user: &str) -> rmcp::service::RunningService<rmcp::RoleClient, ClientConfig> {
    let mut headers = HashMap::new();
    let bearer = HeaderValue::from_str(&format!("Bearer {}", app.token_for(user))).expect("header");
    headers.insert(axum::http::header::AUTHORIZATION, bearer);
    let config = StreamableHttpClientTransportConfig::with_uri(app.url("/mcp")).custom_headers(headers);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let transport = StreamableHttpClientTransport::with_client(http, config);
    let me = ClientConfig::new(ClientCapabilities::builder().enable_tasks().build(), Implementation::new("test", "0"));
    // The 2026-07-28 lifecycle: every request carries the client's capabilities, which is how
    // a stateless server (any gateway replica) knows the host declared the Tasks extension.
    let modern = ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] };
    tokio::time::timeout(Duration::from_secs(10), me.serve_with_lifecycle(transport, modern))
        .await
        .expect("in time")
        .expect("connect")
}

async fn task_state(client: &rmcp::service::RunningService<rmcp::RoleClient, ClientConfig>, id: &str) -> DetailedTask {
    client.get_task(GetTaskParams::new(id)).await.expect("tasks/get").task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_augmented_run_mandate_answers_a_handle_at_once_and_the_result_later() {
    let mut app = Harness::start(&[]).await;
    let client = tasks_client(&app, "alice").await;
    let run = |mandate: &str| {
        let args = json!({"mandate": mandate, "max_ticks": 2});
        CallToolRequestParams::new("run_mandate").with_arguments(args.as_object().expect("object").clone())
    };
    // No agent runs yet: the handle comes back while the task is queued.
    let CallToolResponse::Task(created) = client.call_tool_once(run("a task-augmented mandate")).await.expect("call")
    else {
        panic!("run_mandate did not answer a task handle to a host with the Tasks extension");
    };
    assert_eq!(created.task.status, McpStatus::Working);
    let id = created.task.task_id.clone();
    assert_eq!(task_state(&client, &id).await.status(), McpStatus::Working);

    // tasks/cancel of a queued task ends it at once.
    let CallToolResponse::Task(other) = client.call_tool_once(run("one to cancel")).await.expect("call") else {
        panic!("no handle");
    };
    client.cancel_task(CancelTaskParams::new(&other.task.task_id)).await.expect("tasks/cancel");
    assert_eq!(task_state(&client, &other.task.task_id).await.status(), McpStatus::Cancelled);

    // Another user's task is no task of yours.
    let bob = tasks_client(&app, "bob").await;
    let err = bob.get_task(GetTaskParams::new(&id)).await.expect_err("bob reads alice's task");
    assert!(err.to_string().contains("no such resource"), "{err}");
    assert!(bob.cancel_task(CancelTaskParams::new(&id)).await.is_err());

    app.spawn_agent(
        workspace_bin("agent", "agent").to_str().expect("path"),
        "mcp-t1",
        &[("OFFLINE_TICK_DELAY_MS", "50")],
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let t = task_state(&client, &id).await;
        if t.status().is_terminal() {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "the task did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let TaskPayload::Completed { result } = &done.payload else { panic!("not completed: {done:?}") };
    assert_eq!(result["structuredContent"]["correlation_id"], id.as_str());
    assert_eq!(result["structuredContent"]["status"], "completed");
    assert_eq!(result["isError"], false);
    let _ = client.cancel().await;
    let _ = bob.cancel().await;
    app.cleanup().await;
}
