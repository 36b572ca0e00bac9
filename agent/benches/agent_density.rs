//! Agent density: how many waiting tasks one agent process holds, and what each tick costs
//! it. One release agent (`AGENT_BIN`) with `AGENT_CONCURRENCY` = `BENCH_CONCURRENCY` (256)
//! runs against a model stand-in served here on loopback: an OpenAI-compatible
//! `/v1/chat/completions` that answers every call after `BENCH_MODEL_DELAY_MS` (2000), always
//! with a `think` action (so each task runs its `BENCH_TICKS` (5) ticks, then one synthesis
//! call). Embeddings are local (`EMBEDDING_MODEL=local`), so the model calls are the only
//! waiting. Enough tasks are queued that every slot stays busy for the whole window.
//!
//! The records are written first (the `submit` script, every limit off) and the agent started
//! on an empty queue, so its idle RSS is known; then every envelope is published and
//! confirmed. Measured over `BENCH_SECONDS` (20), starting once every slot has been busy for
//! one model delay:
//! - `in_flight_peak`: the most model calls waiting at the stand-in at once (a task in flight
//!   is a task waiting on its model, nearly all the time);
//! - `ticks_per_s`: model calls answered per second (a tick is one call; a task's final
//!   synthesis counts as one);
//! - `agent_cpu_us_per_tick`: the agent's on-CPU time over the window per call;
//! - `rss_mb`: the agent's peak RSS (`VmHWM`); `rss_kb_per_task`: peak minus idle RSS, per
//!   task in flight at the peak.
//!
//! Prints `density: in_flight_peak=N ticks_per_s=X agent_cpu_us_per_tick=Y rss_mb=Z
//! rss_kb_per_task=W concurrency=C` (scripts/bench-density.sh reads it). Under `cargo test`
//! it runs 4 tasks of 2 ticks at 50 ms through one debug agent as a smoke test.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use proto::Keys;
use proto::store::{Limits, NewTask, SubmitOutcome, TaskStore};
use proto::topology::Topology;
use runtime::connect::Endpoint;
use serde_json::{Value, json};
use testkit::{AgentProc, Namespace, Services};

use common::{env_num, publish_all};

const USER: &str = "density-user";

/// Calls waiting now, the most waiting at once, and calls answered.
#[derive(Default)]
struct Counters {
    waiting: AtomicU64,
    peak: AtomicU64,
    answered: AtomicU64,
}

struct StandIn {
    delay: Duration,
    counters: Counters,
}

/// One reply for both kinds of call: the agent's parser reads loose shapes and ignores
/// fields it does not know, so a `think` action and a result fit in one object.
fn reply() -> Value {
    let content = json!({
        "thought": "waiting on the stand-in",
        "action": {"type": "think", "query": null, "url": null},
        "remember": [],
        "success": true,
        "deliverables": ["the stand-in's deliverable"],
        "notes": "density benchmark",
        "sources": []
    })
    .to_string();
    json!({
        "id": "chatcmpl-density",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "stand-in",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    })
}

async fn chat(State(s): State<Arc<StandIn>>) -> Json<Value> {
    let now = s.counters.waiting.fetch_add(1, Ordering::SeqCst) + 1;
    s.counters.peak.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(s.delay).await;
    s.counters.waiting.fetch_sub(1, Ordering::SeqCst);
    s.counters.answered.fetch_add(1, Ordering::SeqCst);
    Json(reply())
}

/// On-CPU time of a process's live threads in ns (`/proc/<pid>/task/*/schedstat`, first field):
/// nanosecond resolution, where `/proc/<pid>/stat`'s 10 ms clock ticks would round a window of
/// one slot's few ticks to nothing. The agent's threads (tokio's workers, lapin's I/O thread)
/// live as long as it does, so none of the window's CPU leaves with an exited thread.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `VmRSS` or `VmHWM` of a process in kB (0 when it cannot be read).
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.trim_start_matches(':').split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (concurrency, delay_ms, ticks, window) = if benching {
        (
            env_num("BENCH_CONCURRENCY", 256),
            env_num("BENCH_MODEL_DELAY_MS", 2000),
            env_num("BENCH_TICKS", 5),
            Duration::from_secs(env_num("BENCH_SECONDS", 20)),
        )
    } else {
        (2, 50, 2, Duration::from_millis(300))
    };
    let delay = Duration::from_millis(delay_ms);
    // A task holds its slot for (ticks + 1) model calls; queue enough for the warm-up, the
    // window and a margin, so no slot ever waits on the queue.
    let task_time = delay * (ticks as u32 + 1);
    let rounds = ((delay * 2 + window).as_secs_f64() / task_time.as_secs_f64()).ceil() as u64 + 1;
    let tasks = if benching { concurrency * rounds } else { 4 };
    let bin = std::env::var("AGENT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_agent").to_owned());
    let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let ns = Namespace {
        prefix: format!("density:{tag}:"),
        queue: format!("density.{tag}"),
        services: Services {
            redis: Endpoint::new(testkit::redis_url()),
            rabbitmq: Endpoint::new(testkit::rabbitmq_url()),
        },
    };

    let stand_in = Arc::new(StandIn { delay, counters: Counters::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the stand-in");
    let model_url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    let app = Router::new().route("/v1/chat/completions", post(chat)).with_state(stand_in.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("stand-in") });

    let redis = runtime::connect::redis(&ns.services.redis).expect("redis");
    let store = TaskStore::new(redis.clone(), Keys::new(ns.prefix.clone()), Duration::from_secs(900));
    store.load_scripts().await.expect("load scripts");
    let amqp = runtime::connect::amqp(&ns.services.rabbitmq, "euglena-bench-density").await.expect("rabbitmq");
    let channel = amqp.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    Topology::new(ns.queue.clone(), 5).declare(&channel).await.expect("declare");

    // Records first, as POST /tasks writes them; the envelopes once the agent is idle.
    let mandate = "density benchmark: think while the model answers";
    let submitted: Vec<NewTask> = futures_util::stream::iter(0..tasks)
        .map(|_| {
            let store = store.clone();
            async move {
                let task = NewTask::new(USER, mandate, ticks as u32);
                let accepted = store.submit(&task, &Limits::NONE).await.expect("submit");
                assert!(matches!(accepted, SubmitOutcome::Accepted { .. }), "{accepted:?}");
                task
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;

    let c = concurrency.to_string();
    let extra = [
        ("AGENT_CONCURRENCY", c.as_str()),
        ("OPENAI_BASE_URL", model_url.as_str()),
        ("OPENAI_API_KEY", "stand-in"),
        ("EMBEDDING_MODEL", "local"),
        ("LLM_TIMEOUT_SECONDS", "60"),
        ("AGENT_HEARTBEAT_SECONDS", "10"),
        ("AGENT_HEARTBEAT_TTL_SECONDS", "30"),
        ("AGENT_DRAIN_SECONDS", "1"),
        ("RUST_LOG", "warn"),
    ];
    let mut agent = AgentProc::spawn(&bin, &ns, &format!("density-{tag}"), &extra);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle_kb = status_kb(agent.pid(), "VmRSS");

    let envelopes: Vec<(String, Vec<u8>)> =
        submitted.iter().map(|t| (t.id.to_string(), t.envelope().to_json())).collect();
    publish_all(&channel, &ns.queue, envelopes, 64).await;
    futures_util::stream::iter(submitted.iter())
        .map(|task| {
            let store = store.clone();
            async move { assert!(store.confirm(task).await.expect("confirm"), "confirm refused") }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;

    // Warm-up: every slot busy (or all tasks, when fewer), then one more model delay so the
    // window starts in the steady state, not in the first wave of claims.
    let full = concurrency.min(tasks);
    let started = Instant::now();
    while stand_in.counters.peak.load(Ordering::SeqCst) < full
        && started.elapsed() < delay * 3 + Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(delay).await;
    stand_in.counters.peak.store(stand_in.counters.waiting.load(Ordering::SeqCst), Ordering::SeqCst);
    let (cpu0, calls0, t0) = (cpu_ns(agent.pid()), stand_in.counters.answered.load(Ordering::SeqCst), Instant::now());
    tokio::time::sleep(window).await;
    let (cpu1, calls1, t1) = (cpu_ns(agent.pid()), stand_in.counters.answered.load(Ordering::SeqCst), Instant::now());
    let peak = stand_in.counters.peak.load(Ordering::SeqCst);
    let hwm_kb = status_kb(agent.pid(), "VmHWM");
    let alive = !agent.exited();

    agent.sigterm();
    let stopped = agent.wait_exit(Duration::from_secs(30)).await;
    let log = agent.log_text();
    testkit::purge(&ns).await;
    let _ = amqp.close(200, "done".into()).await;

    assert!(alive, "the agent exited during the run; log:\n{log}");
    assert!(stopped.is_some(), "the agent did not stop; log {:?}", agent.log);
    let calls = calls1.saturating_sub(calls0);
    assert!(calls > 0, "no model call answered in the window; log:\n{log}");
    let cpu_us = cpu1.saturating_sub(cpu0) as f64 / 1e3;
    let secs = t1.duration_since(t0).as_secs_f64();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "density: in_flight_peak={peak} ticks_per_s={:.1} agent_cpu_us_per_tick={:.0} rss_mb={:.1} \
             rss_kb_per_task={:.0} concurrency={concurrency} model_delay_ms={delay_ms} ticks={ticks} tasks={tasks} \
             window_s={secs:.1}",
            calls as f64 / secs,
            cpu_us / calls as f64,
            hwm_kb as f64 / 1024.0,
            hwm_kb.saturating_sub(idle_kb) as f64 / peak.max(1) as f64,
        );
    }
}
