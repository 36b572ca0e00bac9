//! The tick loop of one task. After every tick the loop state is written as the task's
//! checkpoint together with `tick`, fenced by the delivery's attempt, so a redelivered
//! task resumes at the first tick that had not been recorded.

use std::time::Duration;

use proto::TaskResult;
use proto::store::{ProgressOutcome, StoreError, TaskStore};
use proto::task::TaskRecord;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::model::{Action, Model, ModelError, View};

/// History entries kept in the checkpoint (and shown to the model).
const HISTORY_LIMIT: usize = 50;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Ticks finished so far.
    pub tick: u32,
    pub notes: Vec<String>,
    pub history: Vec<Step>,
    pub deliverables: Vec<String>,
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub tick: u32,
    pub action: String,
    pub thought: String,
    pub observation: String,
}

impl LoopState {
    /// What a task that stops early (timeout, cancel) hands back.
    pub fn partial_result(&self, notes: &str) -> TaskResult {
        TaskResult {
            success: false,
            deliverables: self.deliverables.clone(),
            notes: notes.to_owned(),
            sources: self.sources.clone(),
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum RunEnd {
    Completed(TaskResult, u32),
    Cancelled(TaskResult, u32),
    TimedOut(TaskResult, u32),
    Failed(String, TaskResult, u32),
    /// A newer delivery owns the task: stop without writing anything.
    Fenced,
    /// Told to stop (drain ended or the broker link dropped): the checkpoint is saved.
    Interrupted,
    /// Redis stayed unreachable; the delivery should be requeued.
    Store(StoreError),
    /// The model is unavailable; the delivery should be requeued.
    Unavailable(String),
}

pub struct Run<'a> {
    pub store: &'a TaskStore,
    pub model: &'a dyn Model,
    pub record: &'a TaskRecord,
    pub attempt: u32,
    pub timeout: Duration,
    pub stop: &'a CancellationToken,
}

enum Race<T> {
    Done(T),
    TimedOut,
    Stopped,
}

impl Run<'_> {
    async fn race<T>(&self, deadline: Instant, f: impl Future<Output = T>) -> Race<T> {
        tokio::select! {
            v = f => Race::Done(v),
            () = tokio::time::sleep_until(deadline) => Race::TimedOut,
            () = self.stop.cancelled() => Race::Stopped,
        }
    }

    pub async fn execute(&self, mut state: LoopState) -> RunEnd {
        let deadline = Instant::now() + self.timeout;
        let max_ticks = self.record.max_ticks;
        let mandate = self.record.mandate.as_str();
        while state.tick < max_ticks {
            let view = View { mandate, max_ticks, state: &state };
            let decision = match self.race(deadline, self.model.decide(&view)).await {
                Race::Done(Ok(d)) => d,
                Race::Done(Err(e)) => return self.model_failure(e, &state),
                Race::TimedOut => return RunEnd::TimedOut(state.partial_result("timed out"), state.tick),
                Race::Stopped => return RunEnd::Interrupted,
            };
            let observation = match &decision.action {
                Action::Think | Action::Exit => String::new(),
                // Tools arrive with the agent-intelligence work; until then say so to the model.
                Action::Search { .. } | Action::Visit { .. } => {
                    format!("the {} tool is not available in this build", decision.action.name())
                }
            };
            state.tick += 1;
            if let Some(n) = decision.notes.filter(|n| !n.is_empty()) {
                state.notes.push(n);
            }
            if let Some(d) = decision.deliverable.filter(|d| !d.is_empty()) {
                state.deliverables.push(d);
            }
            state.history.push(Step {
                tick: state.tick,
                action: decision.action.name().to_owned(),
                thought: decision.thought,
                observation,
            });
            if state.history.len() > HISTORY_LIMIT {
                state.history.drain(..state.history.len() - HISTORY_LIMIT);
            }
            metrics::counter!("agent_ticks_total", "action" => decision.action.name()).increment(1);
            match self.record_tick(&state, decision.action.name()).await {
                Ok(ProgressOutcome::Continue) => {}
                Ok(ProgressOutcome::CancelRequested) => {
                    return RunEnd::Cancelled(state.partial_result("cancelled by the user"), state.tick);
                }
                Ok(ProgressOutcome::Fenced) => return RunEnd::Fenced,
                Err(e) => return RunEnd::Store(e),
            }
            if decision.action == Action::Exit {
                break;
            }
        }
        let view = View { mandate, max_ticks, state: &state };
        match self.race(deadline, self.model.synthesize(&view)).await {
            Race::Done(Ok(result)) => RunEnd::Completed(result, state.tick),
            Race::Done(Err(e)) => self.model_failure(e, &state),
            Race::TimedOut => RunEnd::TimedOut(state.partial_result("timed out"), state.tick),
            Race::Stopped => RunEnd::Interrupted,
        }
    }

    fn model_failure(&self, e: ModelError, state: &LoopState) -> RunEnd {
        match e {
            ModelError::Permanent(m) => RunEnd::Failed(m, state.partial_result("the model failed"), state.tick),
            ModelError::Transient(m) => RunEnd::Unavailable(m),
        }
    }

    /// Writes the tick and checkpoint, riding out short Redis outages.
    async fn record_tick(&self, state: &LoopState, action: &str) -> Result<ProgressOutcome, StoreError> {
        let checkpoint = serde_json::to_string(state).unwrap_or_default();
        crate::retry::redis(self.stop, || {
            self.store.progress(self.record, self.attempt, state.tick, action, &checkpoint)
        })
        .await
    }
}
