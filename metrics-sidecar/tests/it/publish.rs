use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use metrics_sidecar::cloudwatch::Publisher;
use metrics_sidecar::config::Settings;
use proto::Keys;
use proto::presence::{Heartbeat, WorkerState};
use proto::topology::Topology;
use runtime::config::Env;
use testkit::Namespace;
use tokio_util::sync::CancellationToken;

use crate::eventually;
use crate::moto::{Moto, cloudwatch_at, read_metric};

async fn publish(ch: &lapin::Channel, queue: &str, n: usize) {
    for i in 0..n {
        let props = BasicProperties::default().with_delivery_mode(2);
        let body = format!(r#"{{"correlation_id":"{}","mandate":"m{i}","max_ticks":3}}"#, proto::TaskId::new());
        ch.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body.as_bytes(), props)
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
}

fn heartbeat(id: &str, state: WorkerState, tasks: usize) -> Heartbeat {
    Heartbeat {
        worker_id: id.to_owned(),
        state,
        tasks: (0..tasks).map(|_| proto::TaskId::new()).collect(),
        slots: 4,
        version: "test".to_owned(),
        host: "test".to_owned(),
        started_at: "2026-01-01T00:00:00Z".to_owned(),
    }
}

/// Queue state the test knows exactly: 3 ready, 2 dead-lettered, 2 agents of which one is
/// busy with 2 tasks.
async fn known_state(ns: &Namespace) -> lapin::Connection {
    let conn = runtime::connect::amqp(&testkit::Services::shared().rabbitmq, "sidecar-test").await.expect("rabbitmq");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(Default::default()).await.expect("confirms");
    let topology = Topology::new(ns.queue.clone(), 5);
    topology.declare(&ch).await.expect("declare");
    publish(&ch, &ns.queue, 3).await;
    publish(&ch, &topology.dlq(), 2).await;
    let mut redis = runtime::connect::redis(&testkit::Services::shared().redis).expect("redis");
    let keys = Keys::new(ns.prefix.clone());
    let ttl = Duration::from_secs(60);
    proto::presence::beat(&mut redis, &keys, &heartbeat("w-busy", WorkerState::Busy, 2), ttl).await.expect("beat");
    proto::presence::beat(&mut redis, &keys, &heartbeat("w-idle", WorkerState::Idle, 0), ttl).await.expect("beat");
    // Quorum queues report published messages after a moment.
    eventually("queue counts visible", || async {
        Topology::depth(&ch, &ns.queue).await.map(|d| d.0).unwrap_or(0) == 3
            && Topology::depth(&ch, &topology.dlq()).await.map(|d| d.0).unwrap_or(0) == 2
    })
    .await;
    conn
}

fn settings(ns: &Namespace, namespace: &str) -> Settings {
    let env = Env::from_pairs(ns.env())
        .with("METRICS_INTERVAL_SECONDS", "1")
        .with("CLOUDWATCH_NAMESPACE", namespace)
        .with("METRICS_SIDECAR_ADDR", "127.0.0.1:0");
    Settings::from_env(&env).expect("settings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_every_metric_for_the_queue_to_cloudwatch() {
    let moto = Moto::start();
    let ns = Namespace::new();
    let _conn = known_state(&ns).await;
    let cw = moto.cloudwatch();
    let namespace = format!("Test/{}", ns.queue);
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sidecar = tokio::spawn(metrics_sidecar::run(
        listener,
        settings(&ns, &namespace),
        Publisher::cloudwatch(cw.clone(), &namespace),
        stop.clone().cancelled_owned(),
    ));

    let expected = [
        ("QueueDepth", 3.0),
        ("InFlight", 2.0),
        ("Workers", 2.0),
        ("BusyWorkers", 1.0),
        ("BusySlots", 2.0),
        ("TotalSlots", 8.0),
        ("DeadLetterDepth", 2.0),
    ];
    for (name, value) in expected {
        eventually(&format!("{name} = {value} in CloudWatch"), || async {
            read_metric(&cw, &namespace, &ns.queue, name).await.last() == Some(&value)
        })
        .await;
    }
    // Nothing leaks into another queue's dimension.
    assert!(read_metric(&cw, &namespace, "agent.mandates", "QueueDepth").await.is_empty());

    let health = reqwest::get(format!("http://{addr}/health")).await.expect("health");
    assert_eq!(health.status(), 200);
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("euglena_queue_metric"), "{metrics}");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), sidecar).await.expect("stops").expect("join").expect("run ok");
    testkit::purge(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_errors_are_retried_and_never_fatal() {
    let ns = Namespace::new();
    let _conn = known_state(&ns).await;
    // A CloudWatch that refuses every connection.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port");
    let publisher = Publisher::cloudwatch(cloudwatch_at(&format!("http://{dead}")), "Test/Dead");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let err = publisher.publish(&ns.queue, &[("QueueDepth", 1)], deadline).await.expect_err("unreachable");
    assert!(!err.is_empty());

    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sidecar = tokio::spawn(metrics_sidecar::run(
        listener,
        settings(&ns, "Test/Dead"),
        publisher,
        stop.clone().cancelled_owned(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!sidecar.is_finished(), "the loop must survive CloudWatch failures");
    assert_eq!(reqwest::get(format!("http://{addr}/health")).await.expect("health").status(), 200);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), sidecar).await.expect("stops").expect("join").expect("run ok");
    testkit::purge(&ns).await;
}

#[tokio::test]
async fn cloudwatch_disabled_means_log_only() {
    let ns = Namespace::new();
    let env = Env::from_pairs(ns.env()).with("CLOUDWATCH_ENABLED", "false");
    let settings = Settings::from_env(&env).expect("settings");
    assert!(metrics_sidecar::publisher(&settings).await.is_log_only());
}
