//! Agent throughput, measured like the raw baseline (`raw_consume`): `BENCH_TASKS` (5000)
//! real tasks are pre-filled the way the gateway submits them (the `submit` script through
//! `proto::store::TaskStore` with every limit off, a persistent publish with a confirm, the
//! `confirm` script), then `BENCH_AGENTS` (1) agent processes (`AGENT_BIN`, default the
//! `agent` binary of this build) start with `AGENT_CONCURRENCY` = `BENCH_CONCURRENCY` (1),
//! the offline model at zero delay and `BENCH_THINK_TICKS` (0) thinking ticks, a mandate
//! without URLs (nothing is fetched), and the time until every record is terminal is taken
//! by polling the owner's active-task set (`SCARD`; every terminal transition leaves it).
//!
//! Prints (scripts/bench-agent.sh reads these lines):
//! - `agent_throughput: …` the steady rate (10 % → 90 % of the tasks done, so process start
//!   and the tail are left out) and the whole-run rate (spawn → last terminal record);
//! - `cpu agent_throughput: …` CPU per task over the same steady window, of the agents
//!   (summed) and of `BENCH_CPU_PIDS` (`redis=PID,rabbitmq=PID`);
//! - `redis_calls: …` Redis commands per task from `INFO commandstats` before the agents
//!   start and after they stopped, minus this driver's own (exact on a private Redis;
//!   commands run inside Lua scripts are counted too, under their own names);
//! - `driver_addr: …` this driver's Redis client address (to tell it apart in a MONITOR,
//!   where it sends `ECHO abench:agents-start` before the agents start and
//!   `ECHO abench:agents-stopped` once they have exited).
//!
//! Under `cargo test` it runs 5 tasks through one debug agent as a smoke test.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use proto::store::{Limits, NewTask, SubmitOutcome, TaskStore};
use proto::topology::Topology;
use proto::{Keys, TaskId};
use redis::aio::ConnectionManager;
use runtime::connect::Endpoint;
use testkit::{AgentProc, Namespace, Services};

use common::{cpu_report, cpu_ticks, env_num, named_pids, publish_all, seconds};

const USER: &str = "abench-user";

async fn commandstats(conn: &mut ConnectionManager) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.expect("INFO commandstats");
    // cmdstat_evalsha:calls=12,usec=…
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (tasks, agents, concurrency) = if benching {
        (env_num("BENCH_TASKS", 5000), env_num("BENCH_AGENTS", 1), env_num("BENCH_CONCURRENCY", 1))
    } else {
        (5, 1, 2)
    };
    let think_ticks = env_num("BENCH_THINK_TICKS", 0);
    let bin = std::env::var("AGENT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_agent").to_owned());
    let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let ns = Namespace {
        prefix: format!("abench:{tag}:"),
        queue: format!("abench.{tag}"),
        services: Services {
            redis: Endpoint::new(testkit::redis_url()),
            rabbitmq: Endpoint::new(testkit::rabbitmq_url()),
        },
    };

    let mut redis = runtime::connect::redis(&ns.services.redis).expect("redis");
    let store = TaskStore::new(redis.clone(), Keys::new(ns.prefix.clone()), Duration::from_secs(900));
    store.load_scripts().await.expect("load scripts");
    let amqp = runtime::connect::amqp(&ns.services.rabbitmq, "euglena-bench-agent-prefill").await.expect("rabbitmq");
    let channel = amqp.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let topology = Topology::new(ns.queue.clone(), 5);
    topology.declare(&channel).await.expect("declare");

    // Pre-fill as POST /tasks does: submit (record, active set, events), publish, confirm.
    let mandate = "benchmark mandate: think about nothing in particular";
    let ids: Vec<TaskId> = futures_util::stream::iter(0..tasks)
        .map(|_| {
            let (store, channel, queue) = (store.clone(), channel.clone(), ns.queue.clone());
            async move {
                let task = NewTask::new(USER, mandate, 5);
                let accepted = store.submit(&task, &Limits::NONE).await.expect("submit");
                assert!(matches!(accepted, SubmitOutcome::Accepted { .. }), "{accepted:?}");
                let envelope = task.envelope();
                publish_all(&channel, &queue, vec![(task.id.to_string(), envelope.to_json())], 1).await;
                assert!(store.confirm(&task).await.expect("confirm"), "confirm refused");
                task.id
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let (ready, _) = Topology::depth(&channel, &ns.queue).await.expect("depth");
    assert_eq!(u64::from(ready), tasks, "every task is in the queue");

    let client: String = redis::cmd("CLIENT").arg("INFO").query_async(&mut redis).await.expect("CLIENT INFO");
    let driver_addr = client.split_whitespace().find_map(|kv| kv.strip_prefix("addr=")).unwrap_or("?").to_owned();
    let active = store.keys().active(USER);
    let stats_before = commandstats(&mut redis).await;
    let _: String = redis::cmd("ECHO").arg("abench:agents-start").query_async(&mut redis).await.expect("echo");

    let pids = named_pids();
    let (c, t) = (concurrency.to_string(), think_ticks.to_string());
    let extra = [
        ("AGENT_CONCURRENCY", c.as_str()),
        ("OFFLINE_TICK_DELAY_MS", "0"),
        ("OFFLINE_THINK_TICKS", t.as_str()),
        ("RUST_LOG", "warn"),
        ("AGENT_HEARTBEAT_SECONDS", "10"),
        ("AGENT_HEARTBEAT_TTL_SECONDS", "30"),
    ];
    let spawned = Instant::now();
    let mut procs: Vec<AgentProc> =
        (0..agents).map(|i| AgentProc::spawn(&bin, &ns, &format!("abench-{tag}-{i}"), &extra)).collect();
    let snapshot = |procs: &[AgentProc]| -> Vec<u64> {
        std::iter::once(procs.iter().map(|p| cpu_ticks(p.pid())).sum())
            .chain(pids.iter().map(|(_, p)| cpu_ticks(*p)))
            .collect()
    };

    // Poll until every task is terminal; mark 10 % and 90 % done for the steady window.
    let (low, high) = (tasks - tasks / 10, tasks / 10);
    let mut marks: Vec<(Instant, Vec<u64>)> = Vec::new();
    let mut polls = 0u64;
    let limit = Duration::from_secs(120 + tasks / 20);
    loop {
        let remaining: u64 = redis::cmd("SCARD").arg(&active).query_async(&mut redis).await.expect("SCARD");
        polls += 1;
        if marks.is_empty() && remaining <= low {
            marks.push((Instant::now(), snapshot(&procs)));
        }
        if marks.len() == 1 && remaining <= high {
            marks.push((Instant::now(), snapshot(&procs)));
        }
        if remaining == 0 {
            break;
        }
        assert!(
            spawned.elapsed() < limit,
            "{remaining} of {tasks} tasks still not terminal after {limit:?}; agent logs: {:?}",
            procs.iter().map(|p| p.log.display().to_string()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let whole = spawned.elapsed();
    let _: String = redis::cmd("ECHO").arg("abench:agents-done").query_async(&mut redis).await.expect("echo");

    // Stop the agents (drain, deregister), then read what the run cost Redis.
    for p in &procs {
        p.sigterm();
    }
    for p in &mut procs {
        assert!(p.wait_exit(Duration::from_secs(30)).await.is_some(), "agent did not stop; log {:?}", p.log);
    }
    let _: String = redis::cmd("ECHO").arg("abench:agents-stopped").query_async(&mut redis).await.expect("echo");
    let stats_after = commandstats(&mut redis).await;

    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.hget(store.keys().task(*id), "status");
    }
    let statuses: Vec<Option<String>> = pipe.query_async(&mut redis).await.expect("statuses");
    let completed = statuses.iter().filter(|s| s.as_deref() == Some("completed")).count() as u64;
    let (left, _) = Topology::depth(&channel, &ns.queue).await.expect("depth");

    // The driver's own commands between the two INFO calls.
    let mut own: BTreeMap<&str, u64> = BTreeMap::new();
    own.insert("scard", polls);
    own.insert("echo", 3);
    own.insert("info", 1);
    let calls: Vec<String> = stats_after
        .iter()
        .filter_map(|(name, after)| {
            let n = after.saturating_sub(stats_before.get(name).copied().unwrap_or(0));
            let n = n.saturating_sub(own.get(name.as_str()).copied().unwrap_or(0));
            (n > 0).then(|| format!("{name} {:.2}", n as f64 / tasks as f64))
        })
        .collect();

    let [(t_low, cpu_low), (t_high, cpu_high)] = &marks[..] else { panic!("progress marks missing") };
    let steady_tasks = (low - high).max(1);
    let steady = t_high.duration_since(*t_low);
    let names: Vec<String> = std::iter::once("agent".to_owned()).chain(pids.iter().map(|(n, _)| n.clone())).collect();
    let parts: Vec<(String, u64, u64)> =
        names.into_iter().zip(cpu_low.iter().zip(cpu_high)).map(|(n, (b, a))| (n, *b, *a)).collect();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "agent_throughput: {:.0} tasks/s steady (10-90 %), {:.0} tasks/s whole run ({:.2} s spawn to last terminal), \
             agents {agents}, concurrency {concurrency}, think_ticks {think_ticks}, {tasks} tasks, completed {completed}/{tasks}",
            steady_tasks as f64 / seconds(steady),
            tasks as f64 / seconds(whole),
            whole.as_secs_f64(),
        );
        println!("cpu agent_throughput: {}", cpu_report(&parts, steady_tasks));
        println!("redis_calls per task: {}", calls.join(", "));
        println!("driver_addr: {driver_addr}");
    }
    testkit::purge(&ns).await;
    let _ = amqp.close(200, "done".into()).await;
    assert_eq!(completed, tasks, "every task completed");
    assert_eq!(left, 0, "the queue is empty");
}
