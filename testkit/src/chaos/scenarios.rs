//! The scenarios. Each builds its own [`Stack`], injects one kind of fault while tasks
//! flow, waits for every record to settle and returns its [`Tally`].

use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use proto::TaskId;
use proto::topology::Topology;

use super::{Bins, Servers, Stack, Tally};

/// How long a scenario waits for every record to become terminal after its fault.
const SETTLE: Duration = Duration::from_secs(150);

pub const ALL: [&str; 9] = [
    "agent_kill_loop",
    "broker_outage",
    "broker_freeze",
    "redis_outage",
    "redis_stall",
    "gateway_kill",
    "sigterm_drain",
    "poison",
    "burst_1000",
];

/// The subset `.ci/run` runs: one fault per component, about a minute in all.
pub const FAST: [&str; 4] = ["gateway_kill", "redis_stall", "broker_freeze", "poison"];

pub async fn run(name: &str, servers: &mut Servers, bins: &Bins) -> Tally {
    match name {
        "agent_kill_loop" => agent_kill_loop(servers, bins).await,
        "broker_outage" => broker_fault(servers, bins, name, false).await,
        "broker_freeze" => broker_fault(servers, bins, name, true).await,
        "redis_outage" => redis_outage(servers, bins).await,
        "redis_stall" => redis_stall(servers, bins).await,
        "gateway_kill" => gateway_kill(servers, bins).await,
        "sigterm_drain" => sigterm_drain(servers, bins).await,
        "poison" => poison(servers, bins).await,
        "burst_1000" => burst_1000(servers, bins).await,
        other => Tally { name: other.to_owned(), stuck: 1, note: "unknown scenario".into(), ..Tally::default() },
    }
}

fn agent_env(delay_ms: &str, think: &str, concurrency: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OFFLINE_TICK_DELAY_MS", delay_ms.to_owned()),
        ("OFFLINE_THINK_TICKS", think.to_owned()),
        ("AGENT_CONCURRENCY", concurrency.to_owned()),
        ("AGENT_DRAIN_SECONDS", "30".to_owned()),
    ]
}

async fn stack(bins: &Bins, redis_url: &str, rabbit_url: &str, env: &[(&'static str, String)]) -> Stack {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Stack::new(bins, redis_url, rabbit_url, &env).await
}

async fn finish(mut stack: Stack, name: &str, started: Instant, note: String) -> Tally {
    let settled = stack.settle(SETTLE).await;
    let note = format!("{note} settled in {:.1}s; {} got 503/error.", settled.as_secs_f64(), stack.rejected());
    let t = stack.tally(name, started, note).await;
    stack.cleanup().await;
    t
}

async fn agent_kill_loop(servers: &mut Servers, bins: &Bins) -> Tally {
    let started = Instant::now();
    let mut s = stack(bins, &servers.redis.url(), &servers.rabbit.url(), &agent_env("150", "10", "2")).await;
    let g = s.gateway().await;
    for _ in 0..3 {
        s.agent();
    }
    // About 18 s of work for six slots, so the kills land on running tasks.
    s.submitter(g).burst(60, 4, Duration::from_millis(50), 12).await;
    let kills = 15;
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let live: Vec<usize> = (0..s.agents.len()).filter(|i| !s.agents[*i].exited()).collect();
        if let Some(&victim) = live.get(k % live.len().max(1)) {
            s.agents[victim].kill();
        }
        s.agent();
    }
    finish(s, "agent_kill_loop", started, format!("{kills} agents killed with SIGKILL;")).await
}

/// A broker outage (`stop_app` for 5 s) or freeze (SIGSTOP for 6 s) in the middle of a burst.
async fn broker_fault(servers: &mut Servers, bins: &Bins, name: &str, freeze: bool) -> Tally {
    let started = Instant::now();
    let mut s = stack(bins, &servers.redis.url(), &servers.rabbit.url(), &agent_env("100", "4", "2")).await;
    let g = s.gateway().await;
    for _ in 0..3 {
        s.agent();
    }
    let submitter = s.submitter(g);
    let burst = tokio::spawn(async move { submitter.burst(120, 4, Duration::from_millis(150), 6).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if freeze {
        servers.rabbit.freeze();
        tokio::time::sleep(Duration::from_secs(6)).await;
        servers.rabbit.thaw();
    } else {
        servers.rabbit.stop_app();
        tokio::time::sleep(Duration::from_secs(5)).await;
        servers.rabbit.start_app();
    }
    let _ = burst.await;
    let what =
        if freeze { "broker frozen (SIGSTOP) 6 s mid-burst;" } else { "broker stopped (stop_app) 5 s mid-burst;" };
    finish(s, name, started, what.into()).await
}

async fn redis_outage(servers: &mut Servers, bins: &Bins) -> Tally {
    let started = Instant::now();
    let mut s = stack(bins, &servers.redis_aof.url(), &servers.rabbit.url(), &agent_env("100", "4", "2")).await;
    let g = s.gateway().await;
    for _ in 0..3 {
        s.agent();
    }
    let submitter = s.submitter(g);
    let burst = tokio::spawn(async move { submitter.burst(120, 4, Duration::from_millis(150), 6).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    servers.redis_aof.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    servers.redis_aof.restart();
    let _ = burst.await;
    finish(s, "redis_outage", started, "Redis (AOF) killed with SIGKILL, restarted after 3 s;".into()).await
}

async fn redis_stall(servers: &mut Servers, bins: &Bins) -> Tally {
    let started = Instant::now();
    let mut s = stack(bins, &servers.redis.url(), &servers.rabbit.url(), &agent_env("100", "4", "2")).await;
    let g = s.gateway().await;
    for _ in 0..2 {
        s.agent();
    }
    let submitter = s.submitter(g);
    let burst = tokio::spawn(async move { submitter.burst(80, 4, Duration::from_millis(150), 6).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // 12 s without answers: commands sent meanwhile run when it resumes, long after their
    // callers gave up, so submissions that got a 503 leave records for the undo to close.
    servers.redis.stall();
    tokio::time::sleep(Duration::from_secs(12)).await;
    servers.redis.resume();
    let _ = burst.await;
    finish(s, "redis_stall", started, "Redis SIGSTOPped for 12 s mid-burst;".into()).await
}

async fn gateway_kill(servers: &mut Servers, bins: &Bins) -> Tally {
    let started = Instant::now();
    let mut s = stack(bins, &servers.redis.url(), &servers.rabbit.url(), &agent_env("100", "3", "2")).await;
    let doomed = s.gateway().await;
    let survivor = s.gateway().await;
    for _ in 0..2 {
        s.agent();
    }
    s.submitter(survivor).burst(10, 2, Duration::from_millis(20), 5).await;
    // With the broker frozen every publish hangs unconfirmed: kill the gateway right then.
    servers.rabbit.freeze();
    let before = s.record_count().await;
    let submitter = s.submitter(doomed);
    let inflight = tokio::spawn(async move { submitter.burst(16, 16, Duration::ZERO, 10).await });
    // Well inside PUBLISH_TIMEOUT_MS, so no publish has failed and been undone yet.
    let deadline = Instant::now() + Duration::from_millis(1500);
    while s.record_count().await < before + 16 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stranded = s.record_count().await - before;
    s.gateways[doomed].kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    servers.rabbit.thaw();
    let _ = inflight.await;
    s.settle(SETTLE).await;
    let note = format!(
        "gateway SIGKILLed with {stranded} submissions unconfirmed (broker frozen); all closed {:.1}s after the kill \
         (PUBLISH_TIMEOUT_MS 2000 + RECONCILE_GRACE_MS 3000, interval 1 s);",
        killed.elapsed().as_secs_f64(),
    );
    s.submitter(survivor).burst(10, 2, Duration::from_millis(20), 5).await;
    finish(s, "gateway_kill", started, note).await
}

async fn sigterm_drain(servers: &mut Servers, bins: &Bins) -> Tally {
    let started = Instant::now();
    let mut s = stack(bins, &servers.redis.url(), &servers.rabbit.url(), &agent_env("200", "10", "2")).await;
    let g = s.gateway().await;
    let first: Vec<usize> = (0..2).map(|_| s.agent()).collect();
    s.submitter(g).burst(12, 4, Duration::from_millis(20), 12).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for &a in &first {
        s.agents[a].sigterm();
    }
    let mut clean = 0;
    for &a in &first {
        if s.agents[a].wait_exit(Duration::from_secs(45)).await.is_some_and(|st| st.success()) {
            clean += 1;
        }
    }
    for _ in 0..2 {
        s.agent();
    }
    let note = format!("2 agents sent SIGTERM mid-run, {clean}/2 drained and exited 0; 2 fresh agents took the rest;");
    let mut t = finish(s, "sigterm_drain", started, note).await;
    if clean != 2 {
        t.stuck += 2 - clean;
    }
    t
}

async fn poison(servers: &mut Servers, bins: &Bins) -> Tally {
    let started = Instant::now();
    let mut s = stack(bins, &servers.redis.url(), &servers.rabbit.url(), &agent_env("50", "2", "2")).await;
    let g = s.gateway().await;
    for _ in 0..2 {
        s.agent();
    }
    let conn = proto::connect::amqp(&proto::connect::Endpoint::new(servers.rabbit.url()), "chaos-poison")
        .await
        .expect("rabbitmq");
    let ch = conn.create_channel().await.expect("channel");
    let topology = Topology::new(s.ns.queue.clone(), 5);
    topology.declare(&ch).await.expect("declare");
    let legacy: Vec<TaskId> = (0..2).map(|_| TaskId::new()).collect();
    let mut bodies: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"\xff\xfe".to_vec(),
        br#"{"correlation_id": 7}"#.to_vec(),
        br#"{"correlation_id": "x", "mandate": "", "max_ticks": -1}"#.to_vec(),
        serde_json::json!({"correlation_id": TaskId::new().to_string(), "mandate": "m", "max_ticks": 0})
            .to_string()
            .into_bytes(),
    ];
    let poisoned = bodies.len();
    for id in &legacy {
        let env = serde_json::json!({"correlation_id": id.to_string(), "mandate": "a legacy envelope", "max_ticks": 3});
        bodies.push(env.to_string().into_bytes());
    }
    for body in &bodies {
        let props = BasicProperties::default().with_delivery_mode(2);
        let _ =
            ch.basic_publish("".into(), s.ns.queue.as_str().into(), BasicPublishOptions::default(), body, props).await;
    }
    s.extra_ids = legacy;
    s.submitter(g).burst(20, 4, Duration::from_millis(20), 5).await;
    s.settle(SETTLE).await;
    let dlq = Topology::depth(&ch, &topology.dlq()).await.map(|d| d.0).unwrap_or(0);
    let _ = conn.close(200, "done".into()).await;
    let note =
        format!("{poisoned} poison messages and 2 legacy envelopes published; DLQ holds {dlq} (want {poisoned});");
    let mut t = finish(s, "poison", started, note).await;
    if dlq as usize != poisoned {
        t.stuck += 1;
    }
    t
}

async fn burst_1000(servers: &mut Servers, bins: &Bins) -> Tally {
    let started = Instant::now();
    let mut s = stack(bins, &servers.redis.url(), &servers.rabbit.url(), &agent_env("0", "1", "8")).await;
    let g = s.gateway().await;
    for _ in 0..4 {
        s.agent();
    }
    let t0 = Instant::now();
    s.submitter(g).burst(1000, 32, Duration::ZERO, 2).await;
    let note = format!("1000 submissions from 32 clients in {:.1}s;", t0.elapsed().as_secs_f64());
    finish(s, "burst_1000", started, note).await
}
