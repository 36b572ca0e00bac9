//! The scenarios, as a table. Every one runs the same skeleton: a [`Stack`] on the private
//! servers, one gateway, its agents, a burst of submissions, its fault (before, during or
//! after the burst), then every record settled and its [`Tally`]. A row says what differs.

use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use proto::TaskId;
use proto::topology::Topology;

use super::{Bins, Servers, Stack, Tally};

/// How long a scenario waits for every record to become terminal after its fault.
const SETTLE: Duration = Duration::from_secs(150);

/// One scenario: where it runs, its agents, its load and its fault.
struct Scenario {
    name: &'static str,
    /// On the Redis with AOF (one that is killed must keep what it acknowledged).
    aof: bool,
    agents: Agents,
    burst: Burst,
    fault: Fault,
}

/// The agent processes a scenario starts, all of one offline-model setting.
struct Agents {
    count: usize,
    tick_delay_ms: u32,
    think_ticks: u32,
    concurrency: u32,
}

/// `count` submissions of `max_ticks` from `parallel` clients, `gap_ms` apart per client.
struct Burst {
    count: usize,
    parallel: usize,
    gap_ms: u64,
    max_ticks: u32,
    when: When,
}

/// When the fault comes, relative to the burst.
enum When {
    /// After the burst has been submitted.
    After,
    /// This long into the burst, which goes on meanwhile.
    During(Duration),
    /// Before the burst.
    Before,
}

enum Fault {
    /// None: the load is the test.
    None,
    /// SIGKILL one live agent a second, `kills` times, starting a fresh one after each.
    KillAgents { kills: usize },
    /// The broker's app stopped (`stop_app`) for a while.
    BrokerStop(Duration),
    /// The broker SIGSTOPped for a while.
    BrokerFreeze(Duration),
    /// The AOF Redis SIGKILLed, restarted after a while.
    RedisKill(Duration),
    /// The plain Redis SIGSTOPped for a while.
    RedisStall(Duration),
    /// A second gateway SIGKILLed with submissions unconfirmed (the broker frozen).
    GatewayKill,
    /// The first agents sent SIGTERM mid-run; fresh ones take the rest.
    SigtermDrain,
    /// Poison messages and legacy envelopes published straight to the queue.
    Poison,
}

const fn agents(count: usize, tick_delay_ms: u32, think_ticks: u32, concurrency: u32) -> Agents {
    Agents { count, tick_delay_ms, think_ticks, concurrency }
}

const fn burst(count: usize, parallel: usize, gap_ms: u64, max_ticks: u32, when: When) -> Burst {
    Burst { count, parallel, gap_ms, max_ticks, when }
}

const MID_BURST: When = When::During(Duration::from_millis(1500));

const SCENARIOS: [Scenario; 9] = [
    // About 18 s of work for six slots, so the kills land on running tasks.
    Scenario {
        name: "agent_kill_loop",
        aof: false,
        agents: agents(3, 150, 10, 2),
        burst: burst(60, 4, 50, 12, When::After),
        fault: Fault::KillAgents { kills: 15 },
    },
    Scenario {
        name: "broker_outage",
        aof: false,
        agents: agents(3, 100, 4, 2),
        burst: burst(120, 4, 150, 6, MID_BURST),
        fault: Fault::BrokerStop(Duration::from_secs(5)),
    },
    Scenario {
        name: "broker_freeze",
        aof: false,
        agents: agents(3, 100, 4, 2),
        burst: burst(120, 4, 150, 6, MID_BURST),
        fault: Fault::BrokerFreeze(Duration::from_secs(6)),
    },
    Scenario {
        name: "redis_outage",
        aof: true,
        agents: agents(3, 100, 4, 2),
        burst: burst(120, 4, 150, 6, MID_BURST),
        fault: Fault::RedisKill(Duration::from_secs(3)),
    },
    // 12 s without answers: commands sent meanwhile run when it resumes, long after their
    // callers gave up, so submissions that got a 503 leave records for the undo to close.
    Scenario {
        name: "redis_stall",
        aof: false,
        agents: agents(2, 100, 4, 2),
        burst: burst(80, 4, 150, 6, MID_BURST),
        fault: Fault::RedisStall(Duration::from_secs(12)),
    },
    Scenario {
        name: "gateway_kill",
        aof: false,
        agents: agents(2, 100, 3, 2),
        burst: burst(10, 2, 20, 5, When::After),
        fault: Fault::GatewayKill,
    },
    Scenario {
        name: "sigterm_drain",
        aof: false,
        agents: agents(2, 200, 10, 2),
        burst: burst(12, 4, 20, 12, When::After),
        fault: Fault::SigtermDrain,
    },
    Scenario {
        name: "poison",
        aof: false,
        agents: agents(2, 50, 2, 2),
        burst: burst(20, 4, 20, 5, When::Before),
        fault: Fault::Poison,
    },
    Scenario {
        name: "burst_1000",
        aof: false,
        agents: agents(4, 0, 1, 8),
        burst: burst(1000, 32, 0, 2, When::After),
        fault: Fault::None,
    },
];

pub const ALL: [&str; 9] = {
    let mut names = [""; 9];
    let mut i = 0;
    while i < SCENARIOS.len() {
        names[i] = SCENARIOS[i].name;
        i += 1;
    }
    names
};

/// The subset `.ci/run` runs: one fault per component, about a minute in all.
pub const FAST: [&str; 4] = ["gateway_kill", "redis_stall", "broker_freeze", "poison"];

pub async fn run(name: &str, servers: &mut Servers, bins: &Bins) -> Tally {
    match SCENARIOS.iter().find(|s| s.name == name) {
        Some(scenario) => scenario.run(servers, bins).await,
        None => Tally { name: name.to_owned(), stuck: 1, note: "unknown scenario".into(), ..Tally::default() },
    }
}

/// What a fault adds to the tally: a note, and failures the record checks cannot see.
#[derive(Default)]
struct Effect {
    note: String,
    failures: usize,
}

impl Scenario {
    async fn run(&self, servers: &mut Servers, bins: &Bins) -> Tally {
        let started = Instant::now();
        let a = &self.agents;
        let env = [
            ("OFFLINE_TICK_DELAY_MS", a.tick_delay_ms.to_string()),
            ("OFFLINE_THINK_TICKS", a.think_ticks.to_string()),
            ("AGENT_CONCURRENCY", a.concurrency.to_string()),
            ("AGENT_DRAIN_SECONDS", "30".to_owned()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let redis = if self.aof { servers.redis_aof.url() } else { servers.redis.url() };
        let mut s = Stack::new(bins, &redis, &servers.rabbit.url(), &env).await;
        let g = s.gateway().await;
        for _ in 0..a.count {
            s.agent();
        }
        let b = &self.burst;
        let gap = Duration::from_millis(b.gap_ms);
        let submitter = s.submitter(g);
        let effect = match b.when {
            When::After => {
                let t0 = Instant::now();
                submitter.burst(b.count, b.parallel, gap, b.max_ticks).await;
                let mut effect = self.fault.inject(&mut s, servers).await;
                if matches!(self.fault, Fault::None) {
                    let secs = t0.elapsed().as_secs_f64();
                    effect.note = format!("{} submissions from {} clients in {secs:.1}s;", b.count, b.parallel);
                }
                effect
            }
            When::During(lead) => {
                let (count, parallel, max_ticks) = (b.count, b.parallel, b.max_ticks);
                let load = tokio::spawn(async move { submitter.burst(count, parallel, gap, max_ticks).await });
                tokio::time::sleep(lead).await;
                let effect = self.fault.inject(&mut s, servers).await;
                let _ = load.await;
                effect
            }
            When::Before => {
                let mut effect = self.fault.inject(&mut s, servers).await;
                submitter.burst(b.count, b.parallel, gap, b.max_ticks).await;
                s.settle(SETTLE).await;
                let checked = self.fault.check(&s, servers).await;
                effect.note.push_str(&checked.note);
                effect.failures += checked.failures;
                effect
            }
        };
        let settled = s.settle(SETTLE).await;
        let note = format!("{} settled in {:.1}s; {} got 503/error.", effect.note, settled.as_secs_f64(), s.rejected());
        let mut t = s.tally(self.name, started, note).await;
        s.cleanup().await;
        t.stuck += effect.failures;
        t
    }
}

impl Fault {
    async fn inject(&self, s: &mut Stack, servers: &mut Servers) -> Effect {
        let note = |n: String| Effect { note: n, failures: 0 };
        match self {
            Self::None => Effect::default(),
            Self::KillAgents { kills } => {
                for k in 0..*kills {
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    let live: Vec<usize> = (0..s.agents.len()).filter(|i| !s.agents[*i].exited()).collect();
                    if let Some(&victim) = live.get(k % live.len().max(1)) {
                        s.agents[victim].kill();
                    }
                    s.agent();
                }
                note(format!("{kills} agents killed with SIGKILL;"))
            }
            Self::BrokerStop(d) => {
                servers.rabbit.stop_app();
                tokio::time::sleep(*d).await;
                servers.rabbit.start_app();
                note(format!("broker stopped (stop_app) {} s mid-burst;", d.as_secs()))
            }
            Self::BrokerFreeze(d) => {
                servers.rabbit.freeze();
                tokio::time::sleep(*d).await;
                servers.rabbit.thaw();
                note(format!("broker frozen (SIGSTOP) {} s mid-burst;", d.as_secs()))
            }
            Self::RedisKill(d) => {
                servers.redis_aof.kill();
                tokio::time::sleep(*d).await;
                servers.redis_aof.restart();
                note(format!("Redis (AOF) killed with SIGKILL, restarted after {} s;", d.as_secs()))
            }
            Self::RedisStall(d) => {
                servers.redis.stall();
                tokio::time::sleep(*d).await;
                servers.redis.resume();
                note(format!("Redis SIGSTOPped for {} s mid-burst;", d.as_secs()))
            }
            Self::GatewayKill => gateway_kill(s, servers).await,
            Self::SigtermDrain => sigterm_drain(s).await,
            Self::Poison => note(poison(s, servers).await),
        }
    }

    /// Failures only visible once everything settled (run for faults before the burst).
    async fn check(&self, s: &Stack, servers: &Servers) -> Effect {
        match self {
            Self::Poison => {
                let conn =
                    runtime::connect::amqp(&runtime::connect::Endpoint::new(servers.rabbit.url()), "chaos-poison")
                        .await
                        .expect("rabbitmq");
                let ch = conn.create_channel().await.expect("channel");
                let dlq = Topology::new(s.ns.queue.clone(), 5).dlq();
                let depth = Topology::depth(&ch, &dlq).await.map(|d| d.0).unwrap_or(0);
                let _ = conn.close(200, "done".into()).await;
                Effect {
                    note: format!(" DLQ holds {depth} (want {POISON_BODIES});"),
                    failures: usize::from(depth as usize != POISON_BODIES),
                }
            }
            _ => Effect::default(),
        }
    }
}

/// The survivor is the scenario's first gateway; a second one is killed mid-publish.
async fn gateway_kill(s: &mut Stack, servers: &mut Servers) -> Effect {
    let survivor = 0;
    let doomed = s.gateway().await;
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
    Effect { note, failures: 0 }
}

async fn sigterm_drain(s: &mut Stack) -> Effect {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first: Vec<usize> = (0..s.agents.len()).collect();
    for &a in &first {
        s.agents[a].sigterm();
    }
    let mut clean = 0;
    for &a in &first {
        if s.agents[a].wait_exit(Duration::from_secs(45)).await.is_some_and(|st| st.success()) {
            clean += 1;
        }
    }
    for _ in 0..first.len() {
        s.agent();
    }
    let n = first.len();
    Effect {
        note: format!(
            "{n} agents sent SIGTERM mid-run, {clean}/{n} drained and exited 0; {n} fresh agents took the rest;"
        ),
        failures: n - clean,
    }
}

/// How many of [`poison`]'s messages must end in the DLQ.
const POISON_BODIES: usize = 5;

async fn poison(s: &mut Stack, servers: &Servers) -> String {
    let conn = runtime::connect::amqp(&runtime::connect::Endpoint::new(servers.rabbit.url()), "chaos-poison")
        .await
        .expect("rabbitmq");
    let ch = conn.create_channel().await.expect("channel");
    Topology::new(s.ns.queue.clone(), 5).declare(&ch).await.expect("declare");
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
    debug_assert_eq!(bodies.len(), POISON_BODIES);
    for id in &legacy {
        let env = serde_json::json!({"correlation_id": id.to_string(), "mandate": "a legacy envelope", "max_ticks": 3});
        bodies.push(env.to_string().into_bytes());
    }
    for body in &bodies {
        let props = BasicProperties::default().with_delivery_mode(2);
        let _ =
            ch.basic_publish("".into(), s.ns.queue.as_str().into(), BasicPublishOptions::default(), body, props).await;
    }
    let _ = conn.close(200, "done".into()).await;
    s.extra_ids = legacy;
    format!("{POISON_BODIES} poison messages and 2 legacy envelopes published;")
}
