//! Submission throughput and latency of `POST /tasks`, end to end: JWT check, quota +
//! record Lua script, persistent publish with publisher confirm, against the local Redis
//! and RabbitMQ. `cargo bench -p gateway --bench submit`; under `cargo test` it runs a
//! few requests as a smoke test.
//!
//! Env: BENCH_REQUESTS (default 2000), BENCH_CONCURRENCY (default 32).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use testkit::Harness;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (requests, concurrency) =
        if benching { (env_num("BENCH_REQUESTS", 2000), env_num("BENCH_CONCURRENCY", 32)) } else { (20, 4) };
    let app = Harness::start(&[("DAILY_TICK_LIMIT", "0")]).await;
    let token = app.token_for("bench");
    let url = app.url("/tasks");
    let body = json!({"mandate": "benchmark mandate", "max_ticks": 5});

    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures_util::stream::iter(0..requests)
        .map(|_| {
            let (http, url, token, body) = (app.http.clone(), url.clone(), token.clone(), body.clone());
            async move {
                let t = Instant::now();
                let resp = http.post(url).bearer_auth(token).json(&body).send().await.expect("request");
                assert_eq!(resp.status(), 202, "submit failed");
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    latencies.sort();
    assert_eq!(app.ready("").await as usize, requests, "every accepted task is in the queue");
    #[allow(clippy::print_stdout)]
    {
        println!(
            "submit: {requests} requests, concurrency {concurrency}: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            requests as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
    }
    app.cleanup().await;
}
