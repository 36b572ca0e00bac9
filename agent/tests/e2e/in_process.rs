//! The agent's core in process: [`agent::delivery::handle`] and the tick loop
//! ([`agent::tick::Run`]) driven directly with a scripted [`Model`], against a namespaced
//! real Redis, in paused time (a one-hour hang or a minute of outage backoff takes no
//! wall-clock time). No broker and no agent process: what is checked is what the core
//! writes to the task record and which [`Outcome`] it settles the delivery with.
//!
//! Paused time and real I/O: the runtime jumps to the next timer whenever it is idle, so
//! the store here uses a Redis connection without response or connect timeouts (a
//! timeout timer would fire while a reply is on its way), and what the script does to
//! the record mid-call (a user's cancel, another agent's claim) runs [`elsewhere`], on a
//! blocking thread, which holds the clock still: the run is then inside a call raced
//! against its deadline, and the deadline must only fire where a test means it to.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::checkpoint::{LoopState, Step};
use agent::config::Settings;
use agent::delivery::{self, Outcome, Received};
use agent::embedding::LocalEmbedder;
use agent::memory::Memory;
use agent::memory::redis::RedisStore;
use agent::meter::{Meter, Usage};
use agent::model::{Action, Decision, Model, ModelError, View};
use agent::tick::{Run, RunEnd};
use agent::tools::Tools;
use agent::worker::{Intelligence, Worker};
use async_trait::async_trait;
use proto::store::{Limits, MemoryCleanup, NewTask, SubmitOutcome, Takeover, TaskStore};
use proto::{Keys, TaskEnvelope, TaskId, TaskRecord, TaskResult, TaskStatus};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use runtime::config::Env;
use testkit::Namespace;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the scripted model does on one `decide` call.
enum Reply {
    Act(Action),
    /// The act, with a deliverable.
    Deliver(Action, &'static str),
    /// The model API stayed down through the client's retries.
    Outage,
    /// Never answers (until an hour has passed).
    Hang,
    /// A user cancels while this tick runs; then the act.
    CancelThen(Action),
    /// A user cancels during an outage.
    OutageAndCancel,
    /// The broker redelivered the task and another agent claimed it meanwhile; then the act.
    ClaimedElsewhereThen(Action),
}

/// A model that answers from a script (then `exit`), records the tick each call saw, and
/// can act on the task's record the way a user or another agent would.
struct Scripted {
    replies: Mutex<VecDeque<Reply>>,
    /// `state.tick` (ticks finished) at each `decide`.
    seen: Mutex<Vec<u32>>,
    ns: Namespace,
    envelope: TaskEnvelope,
}

impl Scripted {
    fn new(core: &Core, replies: Vec<Reply>) -> Arc<Self> {
        Arc::new(Self {
            replies: Mutex::new(replies.into()),
            seen: Mutex::default(),
            ns: core.ns.clone(),
            envelope: core.envelope.clone(),
        })
    }

    fn seen(&self) -> Vec<u32> {
        self.seen.lock().expect("lock").clone()
    }

    /// A user cancels the task.
    async fn cancel(&self) {
        let task = self.envelope.correlation_id;
        elsewhere(&self.ns, move |store| async move {
            let rec = store.get(task).await.expect("redis").expect("record");
            store.cancel(&rec).await.expect("cancel");
        })
        .await;
    }

    /// Another agent claims the task (the broker redelivered it).
    async fn claim_elsewhere(&self) {
        let envelope = self.envelope.clone();
        let claimed = elsewhere(&self.ns, move |store| async move {
            store.take_over(&envelope, "another-agent", 5).await.expect("take over")
        })
        .await;
        assert!(matches!(claimed, Takeover::Claimed(_)), "{claimed:?}");
    }
}

/// Runs `op` on a store of its own, on a blocking thread with a runtime of its own; paused
/// time does not advance while a blocking task runs.
async fn elsewhere<T, F, Fut>(ns: &Namespace, op: F) -> T
where
    T: Send + 'static,
    F: FnOnce(TaskStore) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let ns = ns.clone();
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move { op(store(&ns).await).await })
    })
    .await
    .expect("the store operation")
}

fn decision(action: Action, deliverable: Option<&str>) -> Decision {
    Decision {
        thought: format!("scripted {}", action.name()),
        action,
        notes: None,
        deliverable: deliverable.map(str::to_owned),
        remember: Vec::new(),
    }
}

#[async_trait]
impl Model for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn decide(&self, view: &View<'_>) -> Result<Decision, ModelError> {
        self.seen.lock().expect("lock").push(view.state.tick);
        // Every call that reaches the model costs tokens, failed ones too.
        view.meter.add(Usage {
            prompt_tokens: 10,
            completion_tokens: 1,
            total_tokens: 11,
            model_calls: 1,
            failed_calls: 0,
        });
        let reply = self.replies.lock().expect("lock").pop_front().unwrap_or(Reply::Act(Action::Exit));
        match reply {
            Reply::Act(a) => Ok(decision(a, None)),
            Reply::Deliver(a, d) => Ok(decision(a, Some(d))),
            Reply::Outage => Err(ModelError::transient("HTTP 503 after retries: scripted outage")),
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(decision(Action::Think, None))
            }
            Reply::CancelThen(a) => {
                self.cancel().await;
                Ok(decision(a, None))
            }
            Reply::OutageAndCancel => {
                self.cancel().await;
                Err(ModelError::transient("HTTP 503 after retries: scripted outage"))
            }
            Reply::ClaimedElsewhereThen(a) => {
                self.claim_elsewhere().await;
                Ok(decision(a, None))
            }
        }
    }

    async fn synthesize(&self, view: &View<'_>) -> Result<TaskResult, ModelError> {
        Ok(TaskResult {
            success: true,
            deliverables: vec![format!("done after {} ticks", view.state.tick)],
            notes: "scripted synthesis".into(),
            sources: Vec::new(),
            usage: None,
        })
    }
}

/// A namespace on the shared Redis, its store, and a submitted task. Purges its keys when
/// dropped, also after a failed assertion.
struct Core {
    ns: Namespace,
    store: TaskStore,
    settings: Settings,
    envelope: TaskEnvelope,
}

impl Drop for Core {
    fn drop(&mut self) {
        let ns = self.ns.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(testkit::purge(&ns));
            }
        })
        .join();
    }
}

/// The namespace's task store on a connection without timeouts, for paused time (see the
/// module doc).
async fn store(ns: &Namespace) -> TaskStore {
    let client = runtime::connect::redis_client(&ns.services.redis).expect("redis url");
    let config = ConnectionManagerConfig::new().set_response_timeout(None).set_connection_timeout(None);
    let conn = ConnectionManager::new_with_config(client, config).await.expect("redis");
    TaskStore::new(conn, Keys::new(ns.prefix.clone()), Duration::from_secs(900))
}

impl Core {
    /// A task of `max_ticks` submitted by alice; the agent's timeout is `timeout`.
    async fn start(max_ticks: u32, timeout: Duration) -> Self {
        let ns = Namespace::new();
        let store = store(&ns).await;
        let task = NewTask::new("alice", "scripted mandate", max_ticks);
        let submitted = store.submit(&task, &Limits::NONE).await.expect("submit");
        assert!(matches!(submitted, SubmitOutcome::Accepted { .. }), "{submitted:?}");
        let env = Env::from_pairs(ns.env())
            .with("AGENT_ID", "core-test")
            .with("TASK_TIMEOUT_SECONDS", timeout.as_secs().to_string());
        let settings = Settings::from_env(&env).expect("settings");
        let envelope = TaskEnvelope {
            correlation_id: task.id,
            mandate: task.mandate.clone(),
            max_ticks,
            user_id: Some(task.user_id.clone()),
            submitted_at: Some(task.created_at),
            v: Some(1),
            seq: 0,
        };
        Self { ns, store, settings, envelope }
    }

    fn id(&self) -> TaskId {
        self.envelope.correlation_id
    }

    fn memory(&self) -> Memory {
        let vectors = RedisStore::new(self.store.connection(), self.store.keys().clone(), Duration::from_secs(900));
        Memory::new(Arc::new(vectors), Arc::new(LocalEmbedder), 6, None)
    }

    fn tools(&self) -> Tools {
        let mcp = runtime::mcp::McpClients::new(self.settings.mcp.clone(), self.settings.mcp_limits);
        Tools::new(self.settings.search.clone(), self.settings.visit.clone(), mcp).expect("tools")
    }

    fn worker(&self, model: Arc<Scripted>) -> Worker {
        let parts = Intelligence { model, tools: self.tools(), memory: self.memory() };
        Worker::new(self.settings.clone(), self.store.clone(), parts)
    }

    /// One delivery of the task's envelope, handled to its outcome.
    async fn deliver(&self, model: Arc<Scripted>, delivery_count: i64) -> Outcome {
        let worker = self.worker(model);
        let data = self.envelope.to_json();
        let id = self.id().to_string();
        let msg = Received { data: &data, message_id: Some(&id), delivery_count };
        delivery::handle(&worker, msg, &CancellationToken::new()).await
    }

    async fn record(&self) -> TaskRecord {
        self.store.get(self.id()).await.expect("redis").expect("record")
    }

    async fn checkpoint(&self) -> Option<LoopState> {
        let raw = self.store.checkpoint(self.id()).await.expect("redis")?;
        Some(LoopState::decode(&raw).expect("a readable checkpoint"))
    }
}

/// A delivery of the task's envelope takes it over.
async fn take(core: &Core, store: &TaskStore, worker: &str, max: u32) -> Takeover {
    store.take_over(&core.envelope, worker, max).await.expect("take over")
}

fn result(rec: &TaskRecord) -> TaskResult {
    serde_json::from_value(rec.result.clone().expect("a result")).expect("a TaskResult")
}

#[tokio::test(start_paused = true)]
async fn a_redelivered_task_resumes_from_its_checkpoint() {
    let core = Core::start(5, Duration::from_secs(900)).await;
    // A first agent claimed the task, recorded two ticks and died.
    let Takeover::Claimed(claimed) = take(&core, &core.store, "crashed-agent", 5).await else { panic!("claim") };
    assert_eq!(claimed.attempt, 1);
    let rec = claimed.record;
    let mut before = LoopState { tick: 2, notes: vec!["from the first run".into()], ..LoopState::default() };
    for tick in 1..=2 {
        before.push_step(Step {
            tick,
            action: "think".into(),
            thought: format!("t{tick}"),
            observation: String::new(),
        });
    }
    before.deliverables.push("found by the first run".into());
    before.usage =
        Usage { prompt_tokens: 1000, completion_tokens: 100, total_tokens: 1100, model_calls: 2, failed_calls: 0 };
    core.store
        .progress(
            &rec,
            1,
            &proto::store::Tick { tick: 2, action: "think", checkpoint: &before.encode(), tool: None, tokens_used: 0 },
        )
        .await
        .expect("progress");

    let model = Scripted::new(&core, vec![Reply::Act(Action::Think), Reply::Act(Action::Exit)]);
    assert_eq!(core.deliver(model.clone(), 1).await, Outcome::Acked);
    assert_eq!(model.seen(), vec![2, 3], "resumed at the first tick not recorded");
    let rec = core.record().await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:#?}");
    assert_eq!((rec.tick, rec.attempt), (Some(4), 2), "two ticks before the crash, two after, second attempt");
    let usage = result(&rec).usage.expect("usage");
    assert_eq!(usage.prompt_tokens, 1000 + 2 * 10, "the checkpoint's usage carries over: {usage:?}");
    assert!(core.checkpoint().await.is_none(), "the checkpoint is deleted at the end");
}

#[tokio::test(start_paused = true)]
async fn a_cancel_stops_the_run_at_the_next_tick_boundary() {
    let core = Core::start(10, Duration::from_secs(900)).await;
    let model = Scripted::new(
        &core,
        vec![
            Reply::Deliver(Action::Think, "kept"),
            Reply::CancelThen(Action::Think),
            Reply::Act(Action::Think),
            Reply::Act(Action::Think),
        ],
    );
    assert_eq!(core.deliver(model.clone(), 0).await, Outcome::Acked);
    assert_eq!(model.seen(), vec![0, 1], "the tick during which the cancel came finished; no third");
    let rec = core.record().await;
    assert_eq!(rec.status, TaskStatus::Cancelled, "{rec:#?}");
    assert_eq!(rec.tick, Some(2));
    let r = result(&rec);
    assert!(!r.success);
    assert_eq!(r.notes, "cancelled by the user");
    assert_eq!(r.deliverables, vec!["kept".to_owned()], "a partial result");
}

#[tokio::test(start_paused = true)]
async fn a_task_past_its_deadline_fails_timed_out_with_what_it_had() {
    let core = Core::start(10, Duration::from_secs(60)).await;
    let model = Scripted::new(&core, vec![Reply::Deliver(Action::Think, "kept"), Reply::Hang]);
    let started = Instant::now();
    assert_eq!(core.deliver(model.clone(), 0).await, Outcome::Acked);
    let took = started.elapsed();
    assert!((Duration::from_secs(60)..Duration::from_secs(61)).contains(&took), "ended at the deadline: {took:?}");
    let rec = core.record().await;
    assert_eq!(rec.status, TaskStatus::Failed, "{rec:#?}");
    assert_eq!(rec.error.as_deref(), Some("timed out"));
    assert_eq!(rec.tick, Some(1));
    let r = result(&rec);
    assert_eq!((r.success, r.notes.as_str()), (false, "timed out"));
    assert_eq!(r.deliverables, vec!["kept".to_owned()]);
}

/// ARCHITECTURE §8: when the client's retries run out, the outage is waited out in place
/// (backoff until the task's deadline, cancel honoured) rather than requeued.
#[tokio::test(start_paused = true)]
async fn a_model_outage_is_waited_out_in_place_not_requeued() {
    let core = Core::start(5, Duration::from_secs(900)).await;
    let model = Scripted::new(
        &core,
        vec![Reply::Act(Action::Think), Reply::Outage, Reply::Outage, Reply::Outage, Reply::Act(Action::Exit)],
    );
    let started = Instant::now();
    assert_eq!(core.deliver(model.clone(), 0).await, Outcome::Acked, "never handed back to the broker");
    let waited = started.elapsed();
    // Backoff from 5 s doubling, each wait at least half its ceiling: 2.5 + 5 + 10 s.
    assert!(waited >= Duration::from_millis(17_500), "waited with backoff: {waited:?}");
    assert_eq!(model.seen(), vec![0, 1, 1, 1, 1], "the failed tick is retried, not skipped");
    let rec = core.record().await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:#?}");
    assert_eq!((rec.tick, rec.attempt), (Some(2), 1), "the same delivery finished it");
    assert_eq!(result(&rec).usage.expect("usage").model_calls, 5, "failed calls are counted too");
}

#[tokio::test(start_paused = true)]
async fn an_outage_longer_than_the_deadline_fails_the_task_timed_out() {
    let core = Core::start(5, Duration::from_secs(120)).await;
    let model = Scripted::new(&core, (0..100).map(|_| Reply::Outage).collect());
    assert_eq!(core.deliver(model.clone(), 0).await, Outcome::Acked);
    let rec = core.record().await;
    assert_eq!(rec.status, TaskStatus::Failed, "{rec:#?}");
    assert_eq!((rec.error.as_deref(), rec.attempt), (Some("timed out"), 1));
    assert!(model.seen().len() > 2, "retried more than once: {:?}", model.seen());
}

#[tokio::test(start_paused = true)]
async fn a_cancel_during_an_outage_is_honoured() {
    let core = Core::start(5, Duration::from_secs(900)).await;
    let model = Scripted::new(&core, vec![Reply::OutageAndCancel, Reply::Outage, Reply::Outage]);
    assert_eq!(core.deliver(model.clone(), 0).await, Outcome::Acked);
    assert_eq!(model.seen(), vec![0], "no model call after the cancel was seen");
    let rec = core.record().await;
    assert_eq!(rec.status, TaskStatus::Cancelled, "{rec:#?}");
    assert_eq!(rec.tick, None, "no tick was recorded");
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_attempt_was_taken_over_writes_nothing() {
    let core = Core::start(5, Duration::from_secs(900)).await;
    let Takeover::Claimed(claimed) = take(&core, &core.store, "slow-agent", 5).await else { panic!("claim") };
    assert_eq!(claimed.attempt, 1);
    let rec = claimed.record;
    let model = Scripted::new(&core, vec![Reply::ClaimedElsewhereThen(Action::Think), Reply::Act(Action::Think)]);
    let (tools, memory, stop) = (core.tools(), core.memory(), CancellationToken::new());
    let run = Run {
        store: &core.store,
        model: model.as_ref(),
        tools: &tools,
        memory: &memory,
        record: &rec,
        attempt: 1,
        timeout: Duration::from_secs(900),
        stop: &stop,
        meter: Meter::default(),
        approval_timeout: Duration::from_secs(3600),
    };
    let end = run.execute(LoopState::default()).await;
    assert!(matches!(end, RunEnd::Fenced), "{end:?}");
    assert_eq!(model.seen(), vec![0], "stopped at the refused write");
    let after = core.record().await;
    assert_eq!((after.status, after.attempt), (TaskStatus::InProgress, 2), "the new attempt owns it");
    assert_eq!(after.tick, None, "the stale tick was not recorded: {after:#?}");
    assert!(core.checkpoint().await.is_none(), "nor its checkpoint");

    // Its delivery is acked (the newer one will finish the task) with no terminal write.
    let model = Scripted::new(&core, vec![Reply::ClaimedElsewhereThen(Action::Exit)]);
    assert_eq!(core.deliver(model, 1).await, Outcome::Acked);
    let after = core.record().await;
    assert_eq!((after.status, after.attempt, after.tick), (TaskStatus::InProgress, 4, None), "{after:#?}");
}

/// A memory entry for the task, as the Redis memory store would have written it.
async fn remember(core: &Core) -> String {
    let key = core.store.keys().memory(core.id());
    let mut conn = core.store.connection();
    let _: i64 = redis::cmd("RPUSH").arg(&key).arg("{\"text\":\"x\"}").query_async(&mut conn).await.expect("rpush");
    let _: bool = redis::cmd("EXPIRE").arg(&key).arg(900).query_async(&mut conn).await.expect("expire");
    key
}

async fn ttl(core: &Core, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query_async(&mut core.store.connection()).await.expect("ttl")
}

// What the claim and finish scripts themselves write (the record and checkpoint read in the
// step that fences, the memories forgotten with the terminal status) is tested in proto's
// tests/store; here, that a delivery gets it.

#[tokio::test(start_paused = true)]
async fn a_delivery_leaves_no_memories_behind() {
    // Through the agent's delivery path: the worker wires its Redis memory store into the
    // task store, and the run's terminal write removes what earlier ticks stored.
    let core = Core::start(5, Duration::from_secs(900)).await;
    let key = remember(&core).await;
    let model = Scripted::new(&core, vec![Reply::Act(Action::Think), Reply::Act(Action::Exit)]);
    let worker = core.worker(model.clone());
    assert_eq!(worker.store.memory_cleanup(), MemoryCleanup::Delete);
    assert_eq!(core.deliver(model, 0).await, Outcome::Acked);
    assert_eq!(core.record().await.status, TaskStatus::Completed);
    assert_eq!(ttl(&core, &key).await, -2, "memories deleted");
}
