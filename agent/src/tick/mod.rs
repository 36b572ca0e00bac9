//! The tick loop of one task. Each tick: recall memories near the current step, ask the
//! model for an action, run its tool, store what was learned, and write `tick`, an event
//! and the checkpoint ([`crate::checkpoint`]), fenced by the delivery's attempt, so a
//! redelivered task resumes at the first tick that had not been recorded. On `exit` or
//! the last tick, one synthesis call writes the result.
//!
//! Model, tool and memory calls all race the task deadline and the stop signal. Memory is
//! an aid: when it fails the loop goes on without it.

mod owner;

use std::time::Duration;

use proto::TaskResult;
use proto::store::{ProgressOutcome, StoreError, TaskStore, Tick};
use proto::task::{IncompleteReason, TaskRecord};
use runtime::telemetry::Chain;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::checkpoint::{LoopState, Step};
use crate::memory::{Kind, Memory, NewMemory, Recalled, Scope};
use crate::meter::Meter;
use crate::model::{Action, Decision, Model, ModelError, ToolOffer, View};
use crate::text::clip;
use crate::tools::{Outcome, Tools};

/// What to look up in memory before the next tick: the mandate and the latest step.
fn recall_query(state: &LoopState, mandate: &str) -> String {
    match state.history.last() {
        Some(s) => format!("{}\n{}\n{}", clip(mandate, 1000), s.thought, clip(&s.observation, 500)),
        None => clip(mandate, 1000),
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum RunEnd {
    Completed(TaskResult, u32),
    Cancelled(TaskResult, u32),
    TimedOut(TaskResult, u32),
    Failed(String, TaskResult, u32),
    /// Stopped at its token budget, or at its tick budget without exiting: the checkpoint
    /// is kept, and an extend resumes it.
    Incomplete(IncompleteReason, TaskResult, u32),
    /// A newer delivery owns the task: stop without writing anything.
    Fenced,
    /// The record vanished under the run (Redis lost its data): nobody owns the task.
    Missing,
    /// Told to stop (drain ended or the broker link dropped): the checkpoint is saved.
    Interrupted,
    /// Parked on a tool call that needs its owner's approval: the checkpoint and the
    /// pending call are saved, the delivery is done (a decision re-enqueues the task).
    Parked,
    /// Redis stayed unreachable; the delivery should be requeued.
    Store(StoreError),
}

pub struct Run<'a> {
    pub store: &'a TaskStore,
    pub model: &'a dyn Model,
    pub tools: &'a Tools,
    pub memory: &'a Memory,
    pub record: &'a TaskRecord,
    pub attempt: u32,
    pub timeout: Duration,
    pub stop: &'a CancellationToken,
    /// Token usage, seeded from the checkpoint; read it after [`Run::execute`].
    pub meter: Meter,
    /// How long a parked call waits for its owner (`APPROVAL_TIMEOUT_SECONDS`).
    pub approval_timeout: Duration,
}

/// What a tick did, before it is recorded.
pub(crate) struct TickStep {
    pub(crate) decision: Option<Decision>,
    pub(crate) outcome: Outcome,
    /// The MCP tool called, and what it returned (for the tick's event).
    pub(crate) tool: Option<(String, String)>,
}

enum Race<T> {
    Done(T),
    TimedOut,
    Stopped,
    /// The user cancelled while the run was waiting out a model outage.
    Cancelled,
}

/// Leaves `execute` when a raced call did not finish.
/// A `model.call` span: what a model call's trace shows (see `Run::traced_model`).
macro_rules! model_span {
    ($parent:expr, $kind:expr, $run:expr) => {
        tracing::info_span!(
            parent: $parent,
            "model.call",
            kind = $kind,
            model = $run.model.name(),
            attempt = $run.attempt,
            prompt_tokens = tracing::field::Empty,
            completion_tokens = tracing::field::Empty,
            finish_reason = tracing::field::Empty,
            outcome = tracing::field::Empty,
        )
    };
}

/// A `tool.call` span under the tick's: the tool's name and (recorded by the call) its
/// outcome; never its arguments or its result.
macro_rules! tool_span {
    ($tick:expr, $tool:expr) => {
        tracing::info_span!(parent: $tick, "tool.call", tool = $tool, outcome = tracing::field::Empty)
    };
}

macro_rules! raced {
    ($state:ident, $race:expr) => {
        match $race {
            Race::Done(v) => v,
            Race::TimedOut => return RunEnd::TimedOut($state.partial_result("timed out"), $state.tick),
            Race::Stopped => return RunEnd::Interrupted,
            Race::Cancelled => {
                return RunEnd::Cancelled($state.partial_result("cancelled by the user"), $state.tick);
            }
        }
    };
}

impl Run<'_> {
    async fn race<T>(&self, deadline: Instant, f: impl Future<Output = T>) -> Race<T> {
        tokio::select! {
            v = f => Race::Done(v),
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(limit_s = self.timeout.as_secs(), "task deadline reached (TASK_TIMEOUT_SECONDS); ending it with what it has");
                Race::TimedOut
            }
            () = self.stop.cancelled() => Race::Stopped,
        }
    }

    /// A model call that rides out an outage. Transient errors (the client already
    /// retried) wait with backoff and try again until the task's deadline instead of
    /// requeueing the delivery: a requeue would spend one of the task's
    /// `AGENT_MAX_DELIVERIES` (and one of the broker's) on an outage that is not the
    /// task's fault. A cancel requested meanwhile is honoured.
    async fn model_call<T, F, Fut>(&self, deadline: Instant, mut call: F) -> Race<Result<T, ModelError>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ModelError>>,
    {
        let mut backoff = runtime::backoff::Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
        loop {
            match self.race(deadline, call()).await {
                Race::Done(Err(e @ ModelError::Transient { .. })) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error.cause_chain = %Chain(&e), retry_in_s = delay.as_secs(), "model unavailable; waiting for it");
                    metrics::counter!("agent_model_outage_waits_total").increment(1);
                    match self.race(deadline, tokio::time::sleep(delay)).await {
                        Race::Done(()) => {}
                        Race::TimedOut => return Race::TimedOut,
                        Race::Stopped => return Race::Stopped,
                        Race::Cancelled => return Race::Cancelled,
                    }
                    if let Ok(Some(rec)) = self.store.get(self.record.id).await
                        && rec.cancel_requested
                    {
                        return Race::Cancelled;
                    }
                }
                other => return other,
            }
        }
    }

    /// One model call in a `model.call` span (a child of `parent`, the tick's, or of the
    /// delivery's for the synthesis): the model's name, the tokens it used (the meter's
    /// growth over the call: a task's calls are sequential), its finish reason (recorded by
    /// the client) and the outcome. Never the prompt or the reply.
    async fn traced_model<T>(
        &self,
        parent: Option<&tracing::Span>,
        kind: &'static str,
        call: impl Future<Output = Result<T, ModelError>>,
    ) -> Result<T, ModelError> {
        let span = match parent {
            Some(p) => model_span!(p, kind, self),
            None => model_span!(tracing::Span::current(), kind, self),
        };
        let before = self.meter.total();
        let result = call.instrument(span.clone()).await;
        let after = self.meter.total();
        span.record("prompt_tokens", after.prompt_tokens.saturating_sub(before.prompt_tokens));
        span.record("completion_tokens", after.completion_tokens.saturating_sub(before.completion_tokens));
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ModelError::Malformed(_)) => "malformed",
            Err(ModelError::Transient { .. }) => "unavailable",
            Err(ModelError::Permanent { .. }) => "failed",
            Err(ModelError::OverBudget) => "over_budget",
        };
        span.record("outcome", outcome);
        result
    }

    /// What the model sees: the task, the loop state, the memories recalled for this step,
    /// the MCP tools on offer.
    fn view<'v>(&'v self, state: &'v LoopState, memories: &'v [Recalled], tools: &'v ToolOffer) -> View<'v> {
        View {
            mandate: &self.record.mandate,
            max_ticks: self.record.max_ticks,
            state,
            memories,
            meter: &self.meter,
            search: self.tools.can_search(),
            tools,
        }
    }

    fn scope(&self) -> Scope {
        Scope { task: self.record.id, user: self.record.user_id.clone() }
    }

    async fn recall(&self, state: &LoopState, query: &str) -> Vec<Recalled> {
        if state.memories == 0 {
            return Vec::new();
        }
        self.memory.recall(&self.scope(), query, &self.meter).await.unwrap_or_else(|e| {
            tracing::warn!(error.cause_chain = %Chain(&e), "memory recall failed; going on without memories");
            Vec::new()
        })
    }

    async fn remember(&self, items: Vec<NewMemory>) -> u32 {
        match self.memory.remember(&self.scope(), items, &self.meter).await {
            Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
            Err(e) => {
                tracing::warn!(error.cause_chain = %Chain(&e), "storing memories failed; going on without them");
                0
            }
        }
    }

    pub async fn execute(&self, mut state: LoopState) -> RunEnd {
        let deadline = Instant::now() + self.timeout;
        let max_ticks = self.record.max_ticks;
        let mandate = self.record.mandate.as_str();
        let mut messages = self.record.messages;
        let mut exited = false;
        while state.tick < max_ticks || state.pending.is_some() {
            // Ends when this iteration does; the model and tool calls of the tick are its
            // children. Its number and the attempt say which run of which tick it was.
            let tick_span = tracing::info_span!(
                "tick",
                tick = state.tick + 1,
                attempt = self.attempt,
                action = tracing::field::Empty
            );
            if messages as usize > state.owner_messages.len() {
                self.read_messages(&mut state).await;
            }
            let step = match state.pending.take() {
                Some(pending) => raced!(
                    state,
                    self.race(deadline, Box::pin(self.decided(pending).instrument(tick_span.clone()))).await
                ),
                None => {
                    let memories =
                        raced!(state, self.race(deadline, self.recall(&state, &recall_query(&state, mandate))).await);
                    let offer = if self.record.tools.is_empty() {
                        ToolOffer::default()
                    } else {
                        Box::pin(crate::tools::mcp::offer(&self.tools.mcp, &self.record.tools)).await
                    };
                    let view = self.view(&state, &memories, &offer);
                    let decided = raced!(
                        state,
                        self.model_call(deadline, || self.traced_model(
                            Some(&tick_span),
                            "decide",
                            self.model.decide(&view)
                        ))
                        .await
                    );
                    let tick = state.tick + 1;
                    match decided {
                        Ok(d) => match &d.action {
                            Action::Tool { tool, arguments } => match offer.get(tool) {
                                Some(info) if info.needs_approval => {
                                    let schema = info.input_schema.clone();
                                    return Box::pin(self.park(state, d, tick, &schema)).await;
                                }
                                Some(_) => {
                                    let (tool, arguments) = (tool.clone(), arguments.clone());
                                    let (outcome, tool) = raced!(
                                        state,
                                        self.race(
                                            deadline,
                                            self.call_tool(tick, &tool, &arguments)
                                                .instrument(tool_span!(&tick_span, tool.as_str()))
                                        )
                                        .await
                                    );
                                    TickStep { decision: Some(d), outcome, tool }
                                }
                                // Not chosen for this task, or its server is down: never called.
                                None => {
                                    let observation = format!("tool {tool} is not available to this task right now");
                                    TickStep {
                                        decision: Some(d),
                                        outcome: Outcome { observation, ..Outcome::default() },
                                        tool: None,
                                    }
                                }
                            },
                            action => {
                                // `think` and `exit` call nothing: no tool span.
                                let span = match action {
                                    Action::Search { .. } | Action::Visit { .. } => {
                                        tool_span!(&tick_span, action.name())
                                    }
                                    _ => tracing::Span::none(),
                                };
                                let outcome = raced!(
                                    state,
                                    self.race(deadline, self.tools.run(action, tick).instrument(span)).await
                                );
                                TickStep { decision: Some(d), outcome, tool: None }
                            }
                        },
                        Err(ModelError::Malformed(reason)) => {
                            tracing::warn!(tick, %reason, "model reply unusable after the repair retry; tick failed");
                            TickStep { decision: None, outcome: Outcome::default(), tool: None }
                        }
                        Err(ModelError::OverBudget) => return self.over_budget(&state),
                        Err(e) => return self.model_failure(e, &state),
                    }
                }
            };
            let TickStep { decision, outcome, tool } = step;
            let tick = state.tick + 1;
            state.tick = tick;
            let action_name = decision.as_ref().map_or("invalid", |d| d.action.name());
            tick_span.record("action", action_name);
            let mut learned = outcome.memories;
            let thought = match decision {
                Some(d) => {
                    if let Some(n) = d.notes {
                        state.notes.push(n);
                    }
                    if let Some(x) = d.deliverable
                        && crate::vet::new_deliverable(&state.deliverables, &x)
                    {
                        state.deliverables.push(x);
                    }
                    learned.extend(d.remember.into_iter().map(|text| NewMemory {
                        text,
                        kind: Kind::Fact,
                        tick,
                        url: None,
                    }));
                    d.thought
                }
                None => String::new(),
            };
            state.memories += raced!(state, self.race(deadline, self.remember(learned)).await);
            if let Some(page) = outcome.page {
                state.add_page(page);
            }
            state.add_shown(outcome.shown);
            let observation = if action_name == "invalid" {
                "the reply was not a valid action; this tick was lost".into()
            } else {
                outcome.observation
            };
            state.push_step(Step { tick, action: action_name.to_owned(), thought, observation });
            state.usage = self.meter.total();
            metrics::counter!("agent_ticks_total", "action" => action_name).increment(1);
            let tool = tool.as_ref().map(|(t, o)| (t.as_str(), o.as_str()));
            match self.record_tick(&state, action_name, tool).await {
                Ok(ProgressOutcome::Continue { messages: sent }) => messages = sent,
                Ok(ProgressOutcome::CancelRequested) => {
                    return RunEnd::Cancelled(state.partial_result("cancelled by the user"), state.tick);
                }
                Ok(ProgressOutcome::Fenced) => return RunEnd::Fenced,
                Ok(ProgressOutcome::Missing) => return RunEnd::Missing,
                Err(e) => return RunEnd::Store(e),
            }
            if action_name == "exit" {
                exited = true;
                break;
            }
        }
        let memories = raced!(state, self.race(deadline, self.recall(&state, mandate)).await);
        let view = self.view(&state, &memories, ToolOffer::none());
        match raced!(
            state,
            self.model_call(deadline, || self.traced_model(None, "synthesize", self.model.synthesize(&view))).await
        ) {
            Ok(mut result) => {
                // A model that forgets the lists still delivered what the loop collected.
                if result.deliverables.is_empty() {
                    result.deliverables = state.deliverables.clone();
                }
                if result.sources.is_empty() {
                    result.sources = state.sources.clone();
                }
                let result = crate::vet::result(result, &state);
                if exited {
                    RunEnd::Completed(result, state.tick)
                } else {
                    // The synthesis of what it has, but the mandate may be unfinished: an
                    // extend with more ticks resumes it from the checkpoint.
                    RunEnd::Incomplete(IncompleteReason::MaxTicks, result, state.tick)
                }
            }
            Err(ModelError::Malformed(reason)) => {
                let notes =
                    format!("the model's final answer was unusable ({reason}); these are the collected deliverables");
                if exited {
                    RunEnd::Completed(state.partial_result(&notes), state.tick)
                } else {
                    RunEnd::Incomplete(IncompleteReason::MaxTicks, state.partial_result(&notes), state.tick)
                }
            }
            Err(ModelError::OverBudget) => self.over_budget(&state),
            Err(e) => self.model_failure(e, &state),
        }
    }

    /// The next model call would take the task past its token budget.
    fn over_budget(&self, state: &LoopState) -> RunEnd {
        let used = self.meter.total().total_tokens;
        tracing::info!(tick = state.tick, tokens = used, budget = ?self.record.max_tokens, "token budget reached; the task stops incomplete");
        let notes = format!("stopped at its token budget ({used} tokens spent); extend it to go on");
        RunEnd::Incomplete(IncompleteReason::MaxTokens, state.partial_result(&notes), state.tick)
    }

    /// A model error that ends the task (transient ones never get here: `model_call`
    /// waits them out until the deadline). Logged here, once, with its cause chain; the
    /// task's `error` gets the reason only.
    fn model_failure(&self, e: ModelError, state: &LoopState) -> RunEnd {
        tracing::warn!(error.cause_chain = %Chain(&e), tick = state.tick, "the model failed; failing the task");
        RunEnd::Failed(e.reason().to_owned(), state.partial_result("the model failed"), state.tick)
    }

    /// Writes the tick and checkpoint, riding out short Redis outages.
    async fn record_tick(
        &self,
        state: &LoopState,
        action: &str,
        tool: Option<(&str, &str)>,
    ) -> Result<ProgressOutcome, StoreError> {
        let checkpoint = state.encode();
        let tick =
            Tick { tick: state.tick, action, checkpoint: &checkpoint, tool, tokens_used: state.usage.total_tokens };
        crate::retry::redis_unless_stopped(self.stop, || self.store.progress(self.record, self.attempt, &tick)).await
    }
}
