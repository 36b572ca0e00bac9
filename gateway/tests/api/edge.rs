//! The hardened HTTP edge (ARCHITECTURE §2 "HTTP edge"): slow and idle connections are closed,
//! the connection cap holds, a declared oversize body is refused at once, and the router's
//! own errors are problem+json.

use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use serde_json::json;
use testkit::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{detail, header, problem, wait_serving};

/// Reads until the server closes the connection; returns what it sent, or panics after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {
                panic!("the server kept the connection open past {limit:?}; got {:?}", String::from_utf8_lossy(&got))
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    let app = Harness::start(&[("HTTP_HEADER_TIMEOUT_SECONDS", "1")]).await;
    wait_serving(&app).await;
    let mut slow = TcpStream::connect(app.addr).await.expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\n").await.expect("write");
    let started = Instant::now();
    let answer = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(!answer.contains("200 OK"), "half a request must not be served: {answer}");
    assert!(started.elapsed() >= Duration::from_millis(500), "closed before the timeout: {:?}", started.elapsed());

    // An idle keep-alive connection is closed too, after its request was answered.
    let mut idle = TcpStream::connect(app.addr).await.expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n").await.expect("write");
    let answer = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_probes_pass_and_it_frees_up() {
    let app = Harness::start(&[
        ("GATEWAY_MAX_CONNECTIONS", "2"),
        ("GATEWAY_PROBE_RESERVE", "1"),
        // The reserve's own header timeout is 2 s: the held reserve frees before the cap does.
        ("HTTP_HEADER_TIMEOUT_SECONDS", "4"),
    ])
    .await;
    // Two clients that connect and send nothing take both slots.
    let _a = TcpStream::connect(app.addr).await.expect("connect");
    let _b = TcpStream::connect(app.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = || reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    // Past the cap, the reserve answers the probes and sheds everything else at once.
    let probe = fresh().get(app.url("/health")).timeout(Duration::from_secs(1)).send().await.expect("probe served");
    assert_eq!(probe.status(), 200);
    let shed = fresh().get(app.url("/agents/count")).timeout(Duration::from_secs(1)).send().await.expect("answered");
    let (headers, _) = problem(shed, 503).await;
    assert_eq!(header(&headers, "retry-after"), "1");
    // With the reserve held too, a new connection waits in the backlog.
    let _c = TcpStream::connect(app.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let blocked = fresh().get(app.url("/health")).timeout(Duration::from_millis(800)).send().await;
    assert!(blocked.is_err(), "a fourth connection must wait while three hold the slots: {blocked:?}");
    // Their header timeout frees the slots and the gateway answers again.
    let served = fresh().get(app.url("/health")).timeout(Duration::from_secs(10)).send().await.expect("served");
    assert_eq!(served.status(), 200);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_oversize_body_is_413_at_once() {
    let app = Harness::start(&[]).await;
    wait_serving(&app).await;
    let token = app.token_for("alice");
    for auth in [format!("Authorization: Bearer {token}\r\n"), String::new()] {
        let mut conn = TcpStream::connect(app.addr).await.expect("connect");
        let head = format!(
            "POST /tasks HTTP/1.1\r\nHost: gateway\r\n{auth}Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.expect("write");
        // No body follows; the answer must come before any deadline, not after it.
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(3), conn.read(&mut buf))
            .await
            .expect("413 must not wait for the body")
            .expect("read");
        let answer = String::from_utf8_lossy(&buf[..n]).to_lowercase();
        assert!(answer.starts_with("http/1.1 413"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("65536 bytes"), "the limit is stated: {answer}");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_errors_are_problems() {
    let app = Harness::start(&[]).await;
    let (_, body) = problem(app.http.get(app.url("/no/such/route")).send().await.expect("request"), 404).await;
    assert!(!detail(&body).is_empty());

    let resp = app.http.delete(app.url("/tasks")).bearer_auth(app.token_for("alice")).send().await.expect("request");
    let (headers, body) = problem(resp, 405).await;
    let allow = header(&headers, "allow");
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow}");
    assert!(detail(&body).contains("GET"), "{body}");

    let resp =
        app.http.get(app.url("/tasks/%FF%FE")).bearer_auth(app.token_for("alice")).send().await.expect("request");
    let (_, body) = problem(resp, 400).await;
    assert!(!detail(&body).contains("FF"), "axum's own text is not echoed: {body}");

    let resp = app
        .http
        .post(app.url("/tasks"))
        .bearer_auth(app.token_for("alice"))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"["x", 1]"#)
        .send()
        .await
        .expect("request");
    let (_, body) = problem(resp, 422).await;
    assert_eq!(body["detail"], json!("the body must be a JSON object"));
    assert_eq!(app.ready("").await, 0, "an array body is not a task");
    app.cleanup().await;
}
