//! The floor under `POST /tasks`: the least any HTTP front of the broker must do per request
//! (an HTTP/1.1 request and a JSON answer through axum on tokio, one persistent publish with a
//! publisher confirm on one shared channel, the gateway's message properties and an
//! envelope-sized body), with no JWT, no Redis and no metrics. scripts/bench.sh runs it under
//! wrk next to the raw publisher and the real gateway: raw vs floor is what HTTP itself costs
//! on this machine, floor vs gateway what the gateway adds.
//!
//! `--bench`: serves on `FLOOR_ADDR` until SIGTERM or SIGINT, then deletes its queue. Under
//! `cargo test` it serves a few requests of its own as a smoke test.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use lapin::Channel;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use proto::topology::Topology;
use runtime::connect::Endpoint;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    channel: Channel,
    queue: String,
}

async fn submit(state: axum::extract::State<Arc<Floor>>, body: axum::body::Bytes) -> (StatusCode, String) {
    let id = uuid::Uuid::new_v4();
    let envelope = serde_json::json!({
        "v": 1, "correlation_id": id, "user_id": "bench-user",
        "mandate": String::from_utf8_lossy(&body), "max_ticks": 5,
        "created_at": chrono::Utc::now().to_rfc3339(),
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
                (StatusCode::ACCEPTED, format!(r#"{{"correlation_id":"{id}","status":"in_queue"}}"#))
            }
            _ => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
        },
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
    }
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
    let app = Router::new()
        .route("/tasks", post(submit))
        .with_state(Arc::new(Floor { channel: channel.clone(), queue: queue.clone() }));
    let addr = if benching { std::env::var("FLOOR_ADDR").expect("FLOOR_ADDR") } else { "127.0.0.1:0".into() };
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    let local = listener.local_addr().expect("addr");
    let serve = axum::serve(listener, app);
    if benching {
        serve.with_graceful_shutdown(runtime::shutdown::signal()).await.expect("serve");
    } else {
        let server = tokio::spawn(async move { serve.await });
        let http = reqwest::Client::new();
        for _ in 0..5 {
            let resp =
                http.post(format!("http://{local}/tasks")).body("smoke").send().await.expect("request to the floor");
            assert_eq!(resp.status(), 202, "the floor server answers 202 once the broker confirms");
        }
        server.abort();
    }
    let _ = topology.delete(&channel).await;
    let _ = conn.close(200, "done".into()).await;
}
