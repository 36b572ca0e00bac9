//! The tick loop's dealings with the task's owner: the owner's messages, read at the start
//! of a tick; a tool call that needs the owner's approval, which parks the task (checkpoint
//! and pending call in one fenced write, see `proto::store::park`); and the parked tick,
//! completed once the decision resumes the task. MCP calls made now are here too, since an
//! approved call is one of them.

use proto::store::{ParkOutcome, Parking};
use proto::task::{RequiredAction, Verdict};
use tracing::Instrument;

use super::{Run, RunEnd, TickStep};
use crate::checkpoint::{LoopState, PendingCall};
use crate::model::{Action, Decision};
use crate::text::clip;
use crate::tools::Outcome;

/// Characters of a tool's result in the tick's event.
const EVENT_OUTPUT_CHARS: usize = 500;

impl Run<'_> {
    /// The owner's messages after those the state has read; a failure leaves them for the
    /// next tick (they are counted by index, so none is lost or read twice).
    pub(super) async fn read_messages(&self, state: &mut LoopState) {
        let from = u32::try_from(state.owner_messages.len()).unwrap_or(u32::MAX);
        match self.store.messages(self.record.id, from).await {
            Ok(new) => {
                tracing::info!(count = new.len(), "owner messages read");
                state.owner_messages.extend(new);
            }
            Err(e) => tracing::warn!(error = %e, "could not read the owner's messages; trying again next tick"),
        }
    }

    /// Calls the tool of a `tool` action now (its policy needs no approval).
    pub(super) async fn call_tool(
        &self,
        tick: u32,
        tool: &str,
        arguments: &serde_json::Value,
    ) -> (Outcome, Option<(String, String)>) {
        let outcome = crate::tools::mcp::call(&self.tools.mcp, self.record.id, tick, tool, arguments).await;
        let output = clip(&outcome.observation, EVENT_OUTPUT_CHARS);
        (outcome, Some((tool.to_owned(), output)))
    }

    /// The tick a parked call belongs to, completed with its owner's decision.
    pub(super) async fn decided(&self, pending: PendingCall) -> TickStep {
        let decision = self.record.decision.as_ref().filter(|d| d.call_id == pending.call_id);
        let arguments = decision.and_then(|d| d.arguments.clone()).unwrap_or_else(|| pending.arguments.clone());
        let (outcome, tool) = match decision.map(|d| d.decision) {
            Some(Verdict::Approve) => {
                tracing::info!(call_id = %pending.call_id, "owner approved the tool call; making it");
                // Under the resumed tick's span, as a call made at once is (see `tool_span!`).
                let span =
                    tracing::info_span!("tool.call", tool = pending.tool.as_str(), outcome = tracing::field::Empty);
                self.call_tool(pending.tick, &pending.tool, &arguments).instrument(span).await
            }
            other => {
                let why = match other {
                    Some(Verdict::Deny) => "the owner denied it",
                    Some(Verdict::Expired) => "nobody approved it in time (it expired)",
                    _ => "no decision about it was found",
                };
                tracing::info!(call_id = %pending.call_id, why, "tool call not made");
                let observation = format!(
                    "the call to {} was not made: {why}. Do not repeat it; choose something else.",
                    pending.tool
                );
                (
                    Outcome { observation: observation.clone(), ..Outcome::default() },
                    Some((pending.tool.clone(), observation)),
                )
            }
        };
        let decision = Decision {
            thought: pending.thought,
            action: Action::Tool { tool: pending.tool, arguments },
            notes: pending.notes,
            deliverable: pending.deliverable,
            remember: pending.remember,
        };
        TickStep { decision: Some(decision), outcome, tool }
    }

    /// Saves the checkpoint with the pending call and parks the task on it.
    pub(super) async fn park(
        &self,
        mut state: LoopState,
        d: Decision,
        tick: u32,
        schema: &serde_json::Value,
    ) -> RunEnd {
        let Action::Tool { tool, arguments } = d.action else { unreachable!("only tool calls park") };
        let call_id = format!("call_{tick}");
        let expires = chrono::Utc::now() + chrono::Duration::from_std(self.approval_timeout).unwrap_or_default();
        let action = RequiredAction {
            call_id: call_id.clone(),
            tool: tool.clone(),
            arguments: arguments.clone(),
            expires_at: proto::time::rfc3339(expires),
        };
        state.pending = Some(PendingCall {
            call_id,
            tick,
            tool,
            arguments,
            thought: d.thought,
            notes: d.notes,
            deliverable: d.deliverable,
            remember: d.remember,
        });
        state.usage = self.meter.total();
        let mut partial = state.partial_result("cancelled while waiting for the owner's approval");
        partial.usage = Some(state.usage);
        let partial = serde_json::to_value(partial).unwrap_or_default();
        let checkpoint = state.encode();
        let parking = Parking {
            action: &action,
            expires_ms: expires.timestamp_millis(),
            schema,
            partial: &partial,
            checkpoint: &checkpoint,
        };
        let parked =
            crate::retry::redis_unless_stopped(self.stop, || self.store.park(self.record, self.attempt, &parking))
                .await;
        match parked {
            Ok(ParkOutcome::Parked) => {
                tracing::info!(call_id = %action.call_id, tool = %action.tool, "parked: the tool call needs the owner's approval");
                metrics::counter!("agent_tasks_parked_total").increment(1);
                RunEnd::Parked
            }
            Ok(ParkOutcome::CancelRequested) => {
                state.pending = None;
                RunEnd::Cancelled(state.partial_result("cancelled by the user"), state.tick)
            }
            Ok(ParkOutcome::Fenced) => RunEnd::Fenced,
            Ok(ParkOutcome::Missing) => RunEnd::Missing,
            Err(e) => RunEnd::Store(e),
        }
    }
}
