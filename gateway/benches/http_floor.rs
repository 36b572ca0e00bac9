//! The floor under `POST /tasks`: the least any HTTP front of the broker must do per request
//! (an HTTP/1.1 request and a JSON answer through axum on tokio, one persistent publish with a
//! publisher confirm on one shared channel, the gateway's message properties and an
//! envelope-sized body), with no JWT, no Redis and no metrics. scripts/bench.sh runs it under
//! wrk next to the raw publisher and the real gateway: raw vs floor is what HTTP itself costs
//! on this machine, floor vs gateway what the gateway adds.
//!
//! With `FLOOR_RECORD` set to a Redis URL it is the floor of any design that keeps
//! `POST /tasks`'s guarantees instead: before the publish, a record (the five fields the agent
//! and `GET` need, a lifetime) and the task in an "unconfirmed" index, so a crash before the
//! confirm leaves something a reconciler can close; after the confirm, the task out of that
//! index, before the answer. Both writes are group-committed as the gateway does them (one
//! script call in flight each), with no limits, no idempotency, no user index and no metrics.
//! What the gateway costs above this floor is what its features cost; what this floor costs
//! above the plain one is what the guarantees cost. With `FLOOR_RECORD_CALLS=1` the two
//! writes share one group commit instead: the marks that queued ride on the next batch of
//! records (one script call per batch, not two), the cheapest way known to keep both.
//!
//! `--bench`: serves on `FLOOR_ADDR` until SIGTERM or SIGINT, then deletes its queue. Under
//! `cargo test` it serves a few requests through each design of the guarantees' floor, against
//! the local Redis, as a smoke test.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use lapin::Channel;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use proto::store::StoreError;
use proto::topology::Topology;
use redis::aio::ConnectionManager;
use runtime::connect::Endpoint;
use runtime::group_commit::GroupCommit;
use runtime::lifecycle::{Background, Stage};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    channel: Channel,
    queue: String,
    record: Option<Records>,
}

/// The guarantees' two writes, group-committed: in two script calls per batch (as the
/// gateway), or in one (`marks` is `None`: the marks go through `writes`).
struct Records {
    prefix: String,
    writes: GroupCommit<Op, ()>,
    marks: Option<GroupCommit<String, ()>>,
}

enum Op {
    Write(Written),
    /// The task's publish was confirmed: out of the unconfirmed index.
    Mark(String),
}

/// One record: its id, then the fields.
struct Written {
    id: String,
    created_ms: String,
    fields: [String; 5],
}

/// KEYS[1]: the unconfirmed index; KEYS[2..]: the records. ARGV[1]: their lifetime, ARGV[2]:
/// how many marks follow (ids whose publish was confirmed; a record is always written in an
/// earlier call than its mark), then per record its id, its score and its five field values.
const WRITE: &str = r"
local ttl = ARGV[1]
local marks = tonumber(ARGV[2])
if marks > 0 then
  redis.call('ZREM', KEYS[1], unpack(ARGV, 3, 2 + marks))
end
local indexed = {}
for i = 2, #KEYS do
  local a = 3 + marks + (i - 2) * 7
  redis.call('HSET', KEYS[i], 'user_id', ARGV[a + 2], 'status', 'in_queue', 'mandate', ARGV[a + 3],
    'max_ticks', ARGV[a + 4], 'created_at', ARGV[a + 5], 'quota_key', ARGV[a + 6])
  redis.call('EXPIRE', KEYS[i], ttl)
  indexed[#indexed + 1] = ARGV[a + 1]
  indexed[#indexed + 1] = ARGV[a]
end
if #indexed > 0 then
  redis.call('ZADD', KEYS[1], unpack(indexed))
end
return 0
";
/// KEYS[1]: the unconfirmed index; ARGV: the confirmed ids.
const CONFIRM: &str = r"return redis.call('ZREM', KEYS[1], unpack(ARGV))";

impl Records {
    fn new(conn: ConnectionManager, prefix: String, one_call: bool, stage: &Stage) -> Self {
        let unconfirmed = format!("{prefix}unconfirmed");
        let writes = {
            let (conn, unconfirmed, prefix) = (conn.clone(), unconfirmed.clone(), prefix.clone());
            let script = redis::Script::new(WRITE);
            GroupCommit::spawn(64, 1, stage, move |batch: Vec<Op>| {
                let (script, unconfirmed, prefix, mut conn) =
                    (script.clone(), unconfirmed.clone(), prefix.clone(), conn.clone());
                async move {
                    let mut inv = script.prepare_invoke();
                    let marks: Vec<&String> =
                        batch.iter().filter_map(|op| if let Op::Mark(id) = op { Some(id) } else { None }).collect();
                    inv.key(&unconfirmed).arg(86_400).arg(marks.len()).arg(&marks);
                    for op in &batch {
                        if let Op::Write(w) = op {
                            inv.key(format!("{prefix}task:{}", w.id)).arg(&w.id).arg(&w.created_ms).arg(&w.fields);
                        }
                    }
                    let _: usize = inv.invoke_async(&mut conn).await.map_err(StoreError::from)?;
                    Ok(batch.iter().map(|_| Ok(())).collect())
                }
            })
        };
        let marks = (!one_call).then(|| {
            let script = redis::Script::new(CONFIRM);
            GroupCommit::spawn(128, 1, stage, move |ids: Vec<String>| {
                let (script, unconfirmed, mut conn) = (script.clone(), unconfirmed.clone(), conn.clone());
                async move {
                    let mut inv = script.prepare_invoke();
                    inv.key(&unconfirmed).arg(&ids);
                    let _: usize = inv.invoke_async(&mut conn).await.map_err(StoreError::from)?;
                    Ok(ids.iter().map(|_| Ok(())).collect())
                }
            })
        });
        Self { prefix, writes, marks }
    }

    async fn mark(&self, id: String) -> Result<(), StoreError> {
        match &self.marks {
            Some(marks) => marks.call(id).await,
            None => self.writes.call(Op::Mark(id)).await,
        }
    }
}

async fn submit(state: axum::extract::State<Arc<Floor>>, body: axum::body::Bytes) -> (StatusCode, String) {
    let id = uuid::Uuid::new_v4();
    let now = chrono::Utc::now();
    let mandate = String::from_utf8_lossy(&body);
    if let Some(records) = &state.record {
        let day = now.format("%Y-%m-%d");
        let written = Written {
            id: id.to_string(),
            created_ms: now.timestamp_millis().to_string(),
            fields: [
                "bench-user".into(),
                mandate.to_string(),
                "5".into(),
                now.to_rfc3339(),
                format!("{}quota:bench-user:{day}", records.prefix),
            ],
        };
        if records.writes.call(Op::Write(written)).await.is_err() {
            return (StatusCode::SERVICE_UNAVAILABLE, String::new());
        }
    }
    let envelope = serde_json::json!({
        "v": 1, "correlation_id": id, "user_id": "bench-user",
        "mandate": mandate, "max_ticks": 5,
        "created_at": now.to_rfc3339(),
    });
    let props = proto::envelope::properties(&id.to_string());
    let published = state
        .channel
        .basic_publish(
            "".into(),
            state.queue.as_str().into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            &serde_json::to_vec(&envelope).unwrap_or_default(),
            props,
        )
        .await;
    match published {
        Ok(confirm) => match confirm.await {
            Ok(c) if c.is_ack() => {
                if let Some(records) = &state.record
                    && records.mark(id.to_string()).await.is_err()
                {
                    return (StatusCode::SERVICE_UNAVAILABLE, String::new());
                }
                (StatusCode::ACCEPTED, format!(r#"{{"correlation_id":"{id}","status":"in_queue"}}"#))
            }
            _ => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
        },
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
    }
}

/// The records of one run, under a prefix of their own (returned).
fn records(url: &str, one_call: bool, stage: &Stage) -> (String, Records) {
    let prefix = format!("floor-{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let conn = runtime::connect::redis(&Endpoint::new(url.to_owned())).expect("redis url");
    (prefix.clone(), Records::new(conn, prefix, one_call, stage))
}

fn router(channel: &Channel, queue: &str, record: Option<Records>) -> Router {
    let floor = Floor { channel: channel.clone(), queue: queue.to_owned(), record };
    Router::new().route("/tasks", post(submit)).with_state(Arc::new(floor))
}

#[tokio::main]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let url = std::env::var("RABBITMQ_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let queue = format!("bench.floor.{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let conn = runtime::connect::amqp(&Endpoint::new(url), "euglena-bench-floor").await.expect("rabbitmq");
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let topology = Topology::new(queue.clone(), 5);
    topology.declare(&channel).await.expect("declare");
    if benching {
        let mut background = Background::new();
        let commits = background.stage("group commits", Duration::from_secs(5));
        let one_call = std::env::var("FLOOR_RECORD_CALLS").is_ok_and(|n| n == "1");
        let record = std::env::var("FLOOR_RECORD").ok().map(|url| records(&url, one_call, &commits).1);
        let app = router(&channel, &queue, record);
        let listener =
            tokio::net::TcpListener::bind(std::env::var("FLOOR_ADDR").expect("FLOOR_ADDR")).await.expect("bind");
        axum::serve(listener, app).with_graceful_shutdown(runtime::shutdown::signal()).await.expect("serve");
        background.stop().await;
    } else {
        // The smoke test: a few requests through each design of the guarantees' floor.
        for one_call in [false, true] {
            let mut background = Background::new();
            let commits = background.stage("group commits", Duration::from_secs(5));
            let (prefix, record) = records("redis://127.0.0.1:6379", one_call, &commits);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let local = listener.local_addr().expect("addr");
            let server = tokio::spawn(axum::serve(listener, router(&channel, &queue, Some(record))).into_future());
            let http = reqwest::Client::new();
            for _ in 0..5 {
                let resp = http.post(format!("http://{local}/tasks")).body("smoke").send().await.expect("request");
                assert_eq!(resp.status(), 202, "the floor server answers 202 once the broker confirms");
            }
            server.abort();
            background.stop().await;
            let mut conn =
                runtime::connect::redis(&Endpoint::new("redis://127.0.0.1:6379".to_owned())).expect("redis url");
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.expect("keys");
            let unconfirmed = keys.iter().filter(|k| k.ends_with("unconfirmed")).count();
            assert_eq!(keys.len(), 5, "five records and no unconfirmed index left (one call: {one_call}): {keys:?}");
            assert_eq!(unconfirmed, 0, "every confirmed task leaves the unconfirmed index");
            let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.expect("del");
        }
    }
    let _ = topology.delete(&channel).await;
    let _ = conn.close(200, "done".into()).await;
}
