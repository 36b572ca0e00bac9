//! The broker's own limit, as the baseline for agent throughput: a fresh quorum queue
//! declared exactly as the agent and gateway declare it (`proto::topology::Topology`) is
//! pre-filled with `BENCH_MESSAGES` (20000) persistent envelopes, then one consumer with the
//! agent's prefetch (`BENCH_CONCURRENCY`, as `AGENT_CONCURRENCY`; default 1) takes and acks
//! each one, as the agent does (manual ack, one at a time). Prints one line
//! `raw_consume: N msg/s, M messages, prefetch P, S s` and, for the consume phase only, the
//! CPU per message of this process and of `BENCH_CPU_PIDS` (scripts/bench-agent.sh reads
//! both). Under `cargo test` it consumes a few messages as a smoke test.

mod common;

use std::time::Instant;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use proto::topology::Topology;
use runtime::connect::Endpoint;

use common::{cpu_report, cpu_ticks, env_num, named_pids, publish_all, seconds};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (messages, prefetch) =
        if benching { (env_num("BENCH_MESSAGES", 20_000), env_num("BENCH_CONCURRENCY", 1)) } else { (50, 4) };
    let prefetch = u16::try_from(prefetch).expect("BENCH_CONCURRENCY fits a prefetch count");
    let url = std::env::var("RABBITMQ_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let queue = format!("bench.rawc.{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let conn = runtime::connect::amqp(&Endpoint::new(url), "euglena-bench-raw-consume").await.expect("rabbitmq");
    let topology = Topology::new(queue.clone(), 5);

    // Pre-fill on a confirm channel of its own.
    let publisher = conn.create_channel().await.expect("channel");
    publisher.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    topology.declare(&publisher).await.expect("declare");
    let bodies = (0..messages)
        .map(|_| {
            let id = uuid::Uuid::new_v4().to_string();
            let body = format!(r#"{{"correlation_id":"{id}","mandate":"benchmark mandate","max_ticks":5,"v":1}}"#);
            (id, body.into_bytes())
        })
        .collect();
    publish_all(&publisher, &queue, bodies, 64).await;

    // Consume as the agent does (agent/src/consumer.rs): qos = concurrency, manual ack.
    let channel = conn.create_channel().await.expect("channel");
    channel.basic_qos(prefetch, BasicQosOptions::default()).await.expect("qos");
    topology.declare(&channel).await.expect("declare");
    let pids = named_pids();
    let me = std::process::id();
    let before: Vec<u64> = std::iter::once(cpu_ticks(me)).chain(pids.iter().map(|(_, p)| cpu_ticks(*p))).collect();
    let started = Instant::now();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "euglena-bench-raw-consume".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut acked = 0u64;
    while acked < messages {
        let delivery = consumer.next().await.expect("consumer ended").expect("delivery");
        delivery.acker.ack(BasicAckOptions::default()).await.expect("ack");
        acked += 1;
    }
    // One more round trip on the channel, so the broker has taken every ack.
    let (ready, _) = Topology::depth(&channel, &queue).await.expect("depth");
    let elapsed = started.elapsed();
    let after: Vec<u64> = std::iter::once(cpu_ticks(me)).chain(pids.iter().map(|(_, p)| cpu_ticks(*p))).collect();
    assert_eq!(ready, 0, "every message was consumed");
    let names: Vec<String> =
        std::iter::once("consumer".to_owned()).chain(pids.iter().map(|(n, _)| n.clone())).collect();
    let parts: Vec<(String, u64, u64)> =
        names.into_iter().zip(before).zip(after).map(|((n, b), a)| (n, b, a)).collect();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "raw_consume: {:.0} msg/s, {messages} messages, prefetch {prefetch}, {:.2} s",
            messages as f64 / seconds(elapsed),
            elapsed.as_secs_f64()
        );
        println!("cpu raw_consume: {}", cpu_report(&parts, messages));
    }
    let _ = channel.close(200, "done".into()).await;
    let _ = topology.delete(&publisher).await;
    let _ = conn.close(200, "done".into()).await;
}
