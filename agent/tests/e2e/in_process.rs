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
use proto::config::Env;
use proto::store::{
    Finish, FinishOutcome, Limits, MemoryCleanup, NewTask, ProgressOutcome, SubmitOutcome, Takeover, TaskStore,
};
use proto::{Keys, TaskEnvelope, TaskId, TaskRecord, TaskResult, TaskStatus};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
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
        view.meter.add(Usage { prompt_tokens: 10, completion_tokens: 1, total_tokens: 11, model_calls: 1 });
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
    let client = proto::connect::redis_client(&ns.services.redis).expect("redis url");
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
        Tools::new(self.settings.search.clone(), self.settings.visit.clone()).expect("tools")
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
    before.usage = Usage { prompt_tokens: 1000, completion_tokens: 100, total_tokens: 1100, model_calls: 2 };
    core.store.progress(&rec, 1, 2, "think", &before.encode()).await.expect("progress");

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

// The claim and finish scripts carry what used to be separate round trips: the claim reads
// the record and the checkpoint in the step that fences, and the agent's terminal writes
// forget the task's Redis memories themselves.

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

/// A delivery of the task's envelope takes it over.
async fn take(core: &Core, store: &TaskStore, worker: &str, max: u32) -> Takeover {
    store.take_over(&core.envelope, worker, max).await.expect("take over")
}

#[tokio::test(start_paused = true)]
async fn the_claim_returns_the_record_and_the_checkpoint_of_the_attempt_it_fences() {
    let core = Core::start(5, Duration::from_secs(900)).await;
    let Takeover::Claimed(first) = take(&core, &core.store, "agent-a", 5).await else { panic!("claim") };
    assert_eq!((first.attempt, first.checkpoint.as_deref()), (1, None), "nothing recorded yet");
    assert_eq!((first.record.status, first.record.attempt), (TaskStatus::InProgress, 1), "{:#?}", first.record);
    assert_eq!(first.record.worker_id.as_deref(), Some("agent-a"));
    assert!(first.record.started_at.is_some());
    assert_eq!(first.record, core.record().await, "the record as the claim left it");
    let quota_key = core.store.quota_key("alice", core.envelope.submitted_at.expect("at"));
    assert_eq!(first.record.quota_key, Some(quota_key), "the envelope names the record's owner");

    let cp = LoopState { tick: 1, notes: vec!["after tick 1".into()], ..LoopState::default() }.encode();
    let fenced = &first.record;
    assert_eq!(core.store.progress(fenced, 1, 1, "think", &cp).await.expect("progress"), ProgressOutcome::Continue);
    let Takeover::Claimed(second) = take(&core, &core.store, "agent-b", 5).await else { panic!("claim") };
    assert_eq!(second.attempt, 2);
    assert_eq!(second.checkpoint.as_deref(), Some(cp.as_str()), "resumes from what attempt 1 recorded");
    assert_eq!((second.record.attempt, second.record.tick), (2, Some(1)), "{:#?}", second.record);
    assert_eq!(second.record.worker_id.as_deref(), Some("agent-b"));
    assert_eq!(second.record.started_at, first.record.started_at, "started once");

    // The fenced attempt can no longer move the checkpoint the next claim would read.
    let stale = LoopState { tick: 2, ..LoopState::default() }.encode();
    assert_eq!(core.store.progress(fenced, 1, 2, "think", &stale).await.expect("progress"), ProgressOutcome::Fenced);
    let Takeover::Claimed(third) = take(&core, &core.store, "agent-c", 5).await else { panic!("claim") };
    assert_eq!((third.attempt, third.checkpoint.as_deref()), (3, Some(cp.as_str())));
}

#[tokio::test(start_paused = true)]
async fn a_wrong_owner_guess_writes_nothing_under_its_keys() {
    let core = Core::start(5, Duration::from_secs(900)).await;
    let Takeover::Claimed(claimed) = take(&core, &core.store, "agent-a", 5).await else { panic!("claim") };
    let rec = claimed.record;
    assert_eq!(core.store.cancel(&rec).await.expect("cancel"), proto::store::CancelOutcome::Requested);
    let keys = core.store.keys().clone();
    let mut conn = core.store.connection();
    let quota = rec.quota_key.clone().expect("quota key");
    let reserved: i64 = conn.get(&quota).await.expect("quota");

    // The delivery that ends the cancelled task has an envelope naming someone else: it ends
    // it under the record's own keys (the active slot and the reservation are alice's).
    let at = "2026-01-01T12:00:00Z".parse().expect("a time");
    let mallorys = TaskEnvelope { user_id: Some("mallory".into()), submitted_at: Some(at), ..core.envelope.clone() };
    let got = core.store.take_over(&mallorys, "agent-b", 5).await.expect("take over");
    assert!(matches!(got, Takeover::Terminal(TaskStatus::Cancelled)), "{got:?}");
    let refunded: i64 = conn.get(&quota).await.expect("quota");
    assert_eq!(reserved - refunded, 5, "alice's unused ticks refunded");
    let active: bool = conn.sismember(keys.active("alice"), core.id().to_string()).await.expect("active");
    assert!(!active, "alice's slot released");
    for k in [keys.active("mallory"), keys.user_tasks("mallory"), keys.quota("mallory", "20260101")] {
        let exists: bool = conn.exists(&k).await.expect("exists");
        assert!(!exists, "{k} written");
    }
}

#[tokio::test(start_paused = true)]
async fn finish_forgets_the_tasks_memories_in_the_same_step() {
    let core = Core::start(5, Duration::from_secs(900)).await;
    // The gateway's store (Leave) and a Qdrant agent's never touch memory:{id}.
    let key = remember(&core).await;
    assert!(matches!(take(&core, &core.store, "agent-a", 1).await, Takeover::Claimed(_)));
    assert!(matches!(take(&core, &core.store, "agent-a", 1).await, Takeover::GaveUp { attempts: 1 }));
    assert!(ttl(&core, &key).await > 0, "left alone without cleanup");

    // The agent's store: the terminal write deletes them, no DEL of its own.
    let core = Core::start(5, Duration::from_secs(900)).await;
    let key = remember(&core).await;
    let agent = core.store.clone().with_memory_cleanup(MemoryCleanup::Delete);
    let Takeover::Claimed(c) = take(&core, &agent, "agent-a", 5).await else { panic!("claim") };
    assert_eq!(ttl(&core, &key).await, 900, "kept while running");
    let fin = Finish { status: TaskStatus::Completed, result: None, error: None, ticks_used: Some(1) };
    assert_eq!(agent.finish(&c.record, Some(1), &fin).await.expect("finish"), FinishOutcome::Written);
    assert_eq!(ttl(&core, &key).await, -2, "deleted with the terminal write");

    // MEMORY_RETENTION_SECONDS: kept that long after the end instead.
    let core = Core::start(5, Duration::from_secs(900)).await;
    let key = remember(&core).await;
    let agent = core.store.clone().with_memory_cleanup(MemoryCleanup::Retain(Duration::from_secs(60)));
    let Takeover::Claimed(c) = take(&core, &agent, "agent-a", 5).await else { panic!("claim") };
    assert_eq!(agent.finish(&c.record, Some(1), &fin).await.expect("finish"), FinishOutcome::Written);
    let left = ttl(&core, &key).await;
    assert!((1..=60).contains(&left), "retained 60 s, TTL {left}");
}

#[tokio::test(start_paused = true)]
async fn the_claims_own_endings_forget_the_memories_too() {
    // Gave up on the claim.
    let core = Core::start(5, Duration::from_secs(900)).await;
    let agent = core.store.clone().with_memory_cleanup(MemoryCleanup::Delete);
    assert!(matches!(take(&core, &agent, "agent-a", 1).await, Takeover::Claimed(_)));
    let key = remember(&core).await;
    assert!(matches!(take(&core, &agent, "agent-b", 1).await, Takeover::GaveUp { attempts: 1 }));
    assert_eq!(ttl(&core, &key).await, -2, "gave up: deleted");
    // A redelivery of a task that ended elsewhere (memories written after, or left by a
    // crash of an older agent).
    let key = remember(&core).await;
    let got = take(&core, &agent, "agent-c", 5).await;
    assert!(matches!(got, Takeover::Terminal(TaskStatus::Failed)), "{got:?}");
    assert_eq!(ttl(&core, &key).await, -2, "terminal: deleted");

    // Cancelled while its run was interrupted.
    let core = Core::start(5, Duration::from_secs(900)).await;
    let agent = core.store.clone().with_memory_cleanup(MemoryCleanup::Delete);
    let Takeover::Claimed(c) = take(&core, &agent, "agent-a", 5).await else { panic!("claim") };
    core.store.cancel(&c.record).await.expect("cancel");
    let key = remember(&core).await;
    let got = take(&core, &agent, "agent-b", 5).await;
    assert!(matches!(got, Takeover::Terminal(TaskStatus::Cancelled)), "{got:?}");
    assert_eq!(ttl(&core, &key).await, -2, "cancelled: deleted");
}

#[tokio::test(start_paused = true)]
async fn a_stale_attempts_finish_deletes_and_writes_nothing() {
    let core = Core::start(5, Duration::from_secs(900)).await;
    let agent = core.store.clone().with_memory_cleanup(MemoryCleanup::Delete);
    let Takeover::Claimed(old) = take(&core, &agent, "agent-a", 5).await else { panic!("claim") };
    let cp = LoopState { tick: 1, ..LoopState::default() }.encode();
    agent.progress(&old.record, 1, 1, "think", &cp).await.expect("progress");
    let Takeover::Claimed(new) = take(&core, &agent, "agent-b", 5).await else { panic!("claim") };
    let key = remember(&core).await;
    let mut conn = core.store.connection();
    let quota = old.record.quota_key.clone().expect("quota key");
    let reserved: i64 = conn.get(&quota).await.expect("quota");
    let events: usize = conn.xlen(core.store.keys().events(core.id())).await.expect("events");
    let before = core.record().await;

    let fin = Finish { status: TaskStatus::Completed, result: None, error: None, ticks_used: Some(1) };
    assert_eq!(agent.finish(&old.record, Some(1), &fin).await.expect("finish"), FinishOutcome::Refused);
    assert_eq!(core.record().await, before, "the record is untouched");
    assert_eq!(ttl(&core, &key).await, 900, "the memories are untouched");
    assert_eq!(core.store.checkpoint(core.id()).await.expect("redis"), Some(cp), "so is the checkpoint");
    assert_eq!(conn.get::<_, i64>(&quota).await.expect("quota"), reserved, "nothing refunded");
    assert_eq!(conn.xlen::<_, usize>(core.store.keys().events(core.id())).await.expect("events"), events);
    let active: bool = conn.sismember(core.store.keys().active("alice"), core.id().to_string()).await.expect("active");
    assert!(active, "the slot stays taken");

    // The owner's finish does it all.
    assert_eq!(agent.finish(&new.record, Some(2), &fin).await.expect("finish"), FinishOutcome::Written);
    assert_eq!(ttl(&core, &key).await, -2);
    assert!(core.checkpoint().await.is_none());
}

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
