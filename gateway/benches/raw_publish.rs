//! The broker's own limit, as the baseline for `POST /tasks`: persistent publishes with
//! publisher confirms into a quorum queue declared exactly as the gateway declares it, by
//! `BENCH_CONCURRENCY` (64) publishers sharing one confirm channel, for `BENCH_SECONDS` (10).
//! Prints one line `raw_publish: N msg/s, p50 X ms, p99 Y ms, M messages` (scripts/bench.sh
//! reads it). Under `cargo test` it publishes a few messages as a smoke test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use proto::topology::Topology;
use runtime::connect::Endpoint;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (seconds, concurrency) =
        if benching { (env_num("BENCH_SECONDS", 10), env_num("BENCH_CONCURRENCY", 64)) } else { (1, 4) };
    let url = std::env::var("RABBITMQ_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let queue = format!("bench.raw.{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let conn = runtime::connect::amqp(&Endpoint::new(url), "euglena-bench-raw").await.expect("rabbitmq");
    let channel = conn.create_channel().await.expect("channel");
    // `--delete-topology Q`: scripts/bench.sh removes the gateway's queues and exchange with it.
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--delete-topology") {
        let name = args.get(i + 1).expect("--delete-topology needs a queue name");
        Topology::new(name.clone(), 5).delete(&channel).await.expect("delete topology");
        let _ = conn.close(200, "done".into()).await;
        return;
    }
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    Topology::new(queue.clone(), 5).declare(&channel).await.expect("declare");
    let body = Arc::new(br#"{"correlation_id":"00000000-0000-4000-8000-000000000000","mandate":"benchmark mandate","max_ticks":5,"v":1}"#.to_vec());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (channel, queue, body) = (channel.clone(), queue.clone(), body.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let props =
                        BasicProperties::default().with_content_type("application/json".into()).with_delivery_mode(2);
                    let confirm = channel
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions { mandatory: true, ..Default::default() },
                            &body,
                            props,
                        )
                        .await
                        .expect("publish")
                        .await
                        .expect("confirm");
                    assert!(confirm.is_ack(), "broker nacked");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "raw_publish: {:.0} msg/s, p50 {:.1} ms, p99 {:.1} ms, {} messages, concurrency {concurrency}, {seconds} s",
            all.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            all.len()
        );
    }
    let _ = Topology::new(queue.clone(), 5).delete(&channel).await;
    let _ = conn.close(200, "done".into()).await;
}
