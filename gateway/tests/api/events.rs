//! `GET /tasks/{id}/events` (ARCHITECTURE §2): the task's events replayed from the start and then
//! live, in order, ending after the terminal status; `Last-Event-ID` / `?after=` resume
//! exactly after an id; keep-alives; many followers on a bounded number of Redis connections.
//! The agent's writes are made with the same store scripts an agent uses.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::future::join_all;
use proto::TaskId;
use proto::store::{Finish, ProgressOutcome};
use serde_json::{Value, json};
use testkit::Harness;

use crate::common::{claims, problem, sign};

/// One parsed SSE event.
#[derive(Debug, Clone)]
pub(crate) struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// A followed stream, read chunk by chunk.
pub(crate) struct Follower {
    resp: reqwest::Response,
    buf: String,
    pub comments: usize,
}

impl Follower {
    pub(crate) async fn open(app: &Harness, user: &str, id: TaskId, last_event_id: Option<&str>) -> Self {
        let mut req = app.http.get(app.url(&format!("/tasks/{id}/events"))).bearer_auth(app.token_for(user));
        if let Some(l) = last_event_id {
            req = req.header("last-event-id", l);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), 200);
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        Self { resp, buf: String::new(), comments: 0 }
    }

    /// The next event, or `None` when the server ended the stream.
    pub(crate) async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, "message".to_owned(), String::new());
                let mut comment_only = true;
                for line in block.lines().filter(|l| !l.is_empty()) {
                    if line.starts_with(':') {
                        continue;
                    }
                    comment_only = false;
                    match line.split_once(':').map(|(k, v)| (k, v.strip_prefix(' ').unwrap_or(v))) {
                        Some(("id", v)) => id = Some(v.to_owned()),
                        Some(("event", v)) => event = v.to_owned(),
                        Some(("data", v)) => data.push_str(v),
                        _ => {}
                    }
                }
                if comment_only {
                    self.comments += 1;
                    continue;
                }
                if data.is_empty() {
                    continue; // a lone `retry:` block
                }
                let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}"));
                return Some(SseEvent { id, event, data });
            }
            let chunk = tokio::time::timeout(limit, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {limit:?}; buffered {:?}", self.buf))
                .expect("stream read");
            match chunk {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// Reads to the end of the stream.
    pub(crate) async fn rest(&mut self, limit: Duration) -> Vec<SseEvent> {
        let mut all = Vec::new();
        while let Some(e) = self.next(limit).await {
            all.push(e);
        }
        all
    }
}

const WAIT: Duration = Duration::from_secs(10);
const USER: &str = "follower";

/// Plays an agent's run of `ticks` ticks ending `completed`, through the store's scripts.
async fn run_task(app: &Harness, id: TaskId, ticks: u32) {
    let attempt = app.claim(id, "agent-1", 5).await;
    let rec = app.record(id).await.expect("record");
    for t in 1..=ticks {
        let outcome = app
            .store
            .progress(
                &rec,
                attempt,
                &proto::store::Tick { tick: t, action: "think", checkpoint: "{}", tool: None, tokens_used: 0 },
            )
            .await
            .expect("progress");
        assert_eq!(outcome, ProgressOutcome::Continue { messages: 0 });
    }
    let result = json!({"success": true, "deliverables": ["d"], "notes": "n", "sources": []});
    let fin = Finish {
        status: proto::TaskStatus::Completed,
        result: Some(result),
        error: None,
        ticks_used: Some(ticks),
        tokens_used: None,
    };
    assert_eq!(
        app.store.finish(&rec, Some(attempt), &fin).await.expect("finish"),
        proto::store::FinishOutcome::Written
    );
}

fn shape(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e.data.get("tick") {
            Some(t) => format!("{}:{}:{t}", e.event, e.data["status"].as_str().unwrap_or("")),
            None => format!("{}:{}", e.event, e.data["status"].as_str().unwrap_or("")),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_followed_from_submit_to_completed_and_resumed_from_the_middle() {
    let app = Harness::start(&[]).await;
    let id = app.submit_ok(USER, "follow me", 5).await;
    let mut live = Follower::open(&app, USER, id, None).await;
    let first = live.next(WAIT).await.expect("the submit event");
    assert_eq!((first.event.as_str(), first.data["status"].as_str()), ("status", Some("in_queue")));
    // The admission wrote no stream entry: the first event is told from the record, with an
    // id below every real entry's.
    assert_eq!(first.id.as_deref(), Some("0-1"));
    let created = app.record(id).await.expect("record").created_at;
    assert_eq!(first.data["at"], json!(created));
    assert_eq!(app.events(id).await.len(), 0, "no entry until the task first changes");

    // The run happens while the follower waits: these arrive live.
    run_task(&app, id, 3).await;
    let mut events = vec![first];
    events.extend(live.rest(WAIT).await);
    let want = [
        "status:in_queue",
        "status:in_progress",
        "tick:in_progress:1",
        "tick:in_progress:2",
        "tick:in_progress:3",
        "status:completed",
    ];
    assert_eq!(shape(&events), want, "in order, and the stream ended after the terminal status");
    let last = events.last().expect("terminal");
    assert_eq!(last.data["result"]["deliverables"], json!(["d"]), "the terminal event carries the result");
    assert_eq!(events[2].data["action"], json!("think"));
    let ids: Vec<String> = events.iter().map(|e| e.id.clone().expect("every event has an id")).collect();

    // A reconnect after the first (told) event gets every stored one; from the third event,
    // exactly the rest, by header and by query.
    let mut after_admission = Follower::open(&app, USER, id, Some("0-1")).await;
    assert_eq!(
        after_admission.rest(WAIT).await.iter().map(|e| e.id.clone().expect("id")).collect::<Vec<_>>(),
        ids[1..]
    );
    let mut resumed = Follower::open(&app, USER, id, Some(&ids[2])).await;
    let rest = resumed.rest(WAIT).await;
    assert_eq!(rest.iter().map(|e| e.id.clone().expect("id")).collect::<Vec<_>>(), ids[3..]);
    let query = app
        .http
        .get(app.url(&format!("/tasks/{id}/events?after={}", ids[4])))
        .bearer_auth(app.token_for(USER))
        .send()
        .await
        .expect("request");
    let mut by_query = Follower { resp: query, buf: String::new(), comments: 0 };
    assert_eq!(shape(&by_query.rest(WAIT).await), ["status:completed"]);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_tasks_stream_ends_with_cancelled() {
    let app = Harness::start(&[]).await;
    let id = app.submit_ok(USER, "cancel me", 5).await;
    let mut live = Follower::open(&app, USER, id, None).await;
    assert_eq!(live.next(WAIT).await.expect("submit").data["status"], json!("in_queue"));
    assert_eq!(app.cancel(USER, id).await.status(), 202);
    let rest = live.rest(WAIT).await;
    assert_eq!(shape(&rest), ["status:cancelled"]);
    // The same result shape as a task cancelled while running.
    assert_eq!(rest[0].data["result"]["notes"], json!("cancelled before it started"));
    assert_eq!(rest[0].data["result"]["deliverables"], json!([]));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_task_and_bad_positions() {
    let app = Harness::start(&[]).await;
    let id = app.submit_ok(USER, "mine", 5).await;
    let url = app.url(&format!("/tasks/{id}/events"));
    problem(app.http.get(&url).bearer_auth(sign(&claims("mallory"))).send().await.expect("request"), 404).await;
    problem(app.http.get(&url).send().await.expect("request"), 401).await;
    let token = app.token_for(USER);
    for bad in ["nope", "12", "1-x"] {
        let resp = app.http.get(&url).bearer_auth(&token).header("last-event-id", bad).send().await.expect("request");
        problem(resp, 400).await;
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_get_keep_alives_and_end_at_their_deadline() {
    let app = Harness::start(&[("SSE_KEEPALIVE_SECONDS", "1"), ("SSE_MAX_SECONDS", "4")]).await;
    let id = app.submit_ok(USER, "idle", 5).await;
    let mut live = Follower::open(&app, USER, id, None).await;
    assert_eq!(live.next(WAIT).await.expect("submit").data["status"], json!("in_queue"));
    // Nothing else happens: the stream sends comments, then ends at its deadline.
    assert!(live.next(WAIT).await.is_none(), "ends by itself, without a terminal event");
    assert!(live.comments >= 2, "keep-alive comments while idle: {}", live.comments);
    app.cleanup().await;
}

/// A private Redis, so its client count is the gateway's alone.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn clients(&self) -> u64 {
        let client = redis::Client::open(self.url()).expect("url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
        let info: String = redis::cmd("INFO").arg("clients").query_async(&mut conn).await.expect("info");
        let n = info.lines().find_map(|l| l.strip_prefix("connected_clients:")).expect("connected_clients");
        n.trim().parse::<u64>().expect("number") - 1 // not this probe's own
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_streams_share_a_few_redis_connections() {
    let redis = PrivateRedis::start();
    let url = redis.url();
    let probe = redis::Client::open(url.clone()).expect("url");
    testkit::eventually("the private redis answers", Duration::from_secs(10), || async {
        match probe.get_multiplexed_async_connection().await {
            Ok(mut c) => redis::cmd("PING").query_async::<String>(&mut c).await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    // One user follows 200 tasks from one address here; the per-user and per-peer limits are
    // not what this measures.
    let app = Harness::start(&[
        ("REDIS_URL", &url),
        ("SSE_MAX_STREAMS_PER_USER", "200"),
        ("GATEWAY_MAX_CONNECTIONS_PER_PEER", "0"),
    ])
    .await;
    crate::common::wait_serving(&app).await;
    let mandates: Vec<String> = (0..200).map(|i| format!("stream {i}")).collect();
    let ids: Vec<TaskId> = join_all(mandates.iter().map(|m| app.submit_ok(USER, m, 1))).await;
    let mut followers = join_all(ids.iter().map(|id| Follower::open(&app, USER, *id, None))).await;
    for f in &mut followers {
        assert_eq!(f.next(WAIT).await.expect("replayed").data["status"], json!("in_queue"));
    }
    let clients = redis.clients().await;
    assert!(clients <= 4, "200 followers must not hold a Redis connection each: {clients} connections");
    // Every follower sees its task end live.
    let gateway = &app;
    join_all(ids.iter().map(|id| async move { assert_eq!(gateway.cancel(USER, *id).await.status(), 202) })).await;
    for f in &mut followers {
        assert_eq!(shape(&f.rest(WAIT).await), ["status:cancelled"]);
    }
    app.cleanup().await;
}
