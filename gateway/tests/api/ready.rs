//! `/ready` tells the truth: a frozen broker link or a broker that blocks publishers makes
//! it 503 within its one-second probe, and submissions fail fast once the broker has said
//! `connection.blocked`.

use std::time::{Duration, Instant};

use runtime::connect::Endpoint;
use serde_json::{Value, json};
use testkit::private::{PrivateRabbit, Proxy};
use testkit::{Harness, Services};

use crate::common::{problem, wait_serving};

async fn ready(app: &Harness) -> (u16, Value, Duration) {
    let started = Instant::now();
    let resp = app.http.get(app.url("/ready")).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"), started.elapsed())
}

async fn wait_ready(app: &Harness, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body, took) = ready(app).await;
        assert!(took < Duration::from_secs(3), "/ready is bounded by its 1 s probe; took {took:?}");
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "/ready stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_the_broker_link_is_frozen() {
    let proxy = Proxy::start(testkit::private::amqp_addr(&testkit::rabbitmq_url())).await;
    let broker = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let app = Harness::start(&[("RABBITMQ_URL", broker.as_str())]).await;
    wait_serving(&app).await;
    wait_ready(&app, 200).await;
    proxy.freeze();
    // Within the cache's half second plus one probe.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, body, took) = ready(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["components"]["rabbitmq"], json!(false), "{body}");
    assert_eq!(body["components"]["redis"], json!(true), "{body}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    proxy.thaw();
    wait_ready(&app, 200).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_and_submissions_fail_fast_while_publishers_are_blocked() {
    let rabbit = PrivateRabbit::start();
    let services = Services { rabbitmq: Endpoint::new(rabbit.url()), ..Services::shared() };
    let app = Harness::start_on(services, &[("PUBLISH_TIMEOUT_MS", "1500")]).await;
    wait_serving(&app).await;
    wait_ready(&app, 200).await;
    rabbit.block_publishers();
    // RabbitMQ blocks (and says `connection.blocked` to) a connection once it publishes, so
    // the first submission during an alarm waits out its publish timeout.
    let resp = app.submit("blocked-user", json!({"mandate": "first while blocked", "max_ticks": 5})).await;
    problem(resp, 503).await;
    let body = wait_ready(&app, 503).await;
    assert_eq!(body["components"]["rabbitmq"], json!(false), "{body}");
    let started = Instant::now();
    let resp = app.submit("blocked-user", json!({"mandate": "while blocked", "max_ticks": 5})).await;
    problem(resp, 503).await;
    assert!(started.elapsed() < Duration::from_secs(1), "a blocked connection fails the submit at once");
    rabbit.unblock_publishers();
    wait_ready(&app, 200).await;
    app.submit_ok("blocked-user", "after the alarm", 5).await;
    app.cleanup().await;
    drop(rabbit);
}
