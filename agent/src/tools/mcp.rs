//! MCP tools for a task (ARCHITECTURE §5 "Tools"): which of the operator's tools a task may
//! call this tick ([`offer`]), the check of a call's arguments against the tool's input
//! schema, and the call itself ([`call`]), whose result the model reads next tick and
//! memory keeps. A server that is down or slow fails the call (an observation), never
//! the agent.

use proto::TaskId;
use runtime::mcp::{McpClients, McpError, split_tool};
use serde_json::Value;

use super::Outcome;
use crate::memory::{Kind, NewMemory};
use crate::model::ToolOffer;
use crate::text::clip;

/// Characters of a tool's result the model reads next tick (the call itself keeps up to
/// `MCP_RESULT_MAX_CHARS`; memory keeps passages of it).
pub const OBSERVATION_CHARS: usize = 6000;

/// The tools of `chosen` (`<server>` or `<server>/<tool>` entries) that can be listed now.
pub async fn offer(mcp: &McpClients, chosen: &[String]) -> ToolOffer {
    let mut offer = ToolOffer::default();
    let mut servers: Vec<&str> = Vec::new();
    for entry in chosen {
        let server = split_tool(entry).map_or(entry.as_str(), |(s, _)| s);
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    for server in servers {
        match mcp.tools(server, false).await {
            Ok(tools) => offer
                .tools
                .extend(tools.iter().filter(|t| chosen.iter().any(|c| c == server || *c == t.full_name)).cloned()),
            Err(e) => {
                tracing::warn!(server, error = %e, "MCP server unavailable; its tools are not offered this tick");
                offer.unavailable.push(format!("the tools of {server:?} are unavailable right now ({})", reason(&e)));
            }
        }
    }
    offer
}

/// The key a call carries in `_meta`: the same for a call repeated after a crash (the task
/// and its tick do not change across deliveries), different for every other call.
pub fn idempotency_key(task: TaskId, tick: u32) -> String {
    format!("euglena:{task}:{tick}:1")
}

/// Calls `tool` (`<server>/<tool>`) for tick `tick` of `task`.
pub async fn call(mcp: &McpClients, task: TaskId, tick: u32, tool: &str, arguments: &Value) -> Outcome {
    let Some((server, name)) = split_tool(tool) else {
        return Outcome { observation: format!("tool {tool:?} failed: not a tool name"), ..Outcome::default() };
    };
    let args = arguments.as_object().cloned().unwrap_or_default();
    let started = std::time::Instant::now();
    match mcp.call(server, name, args, &idempotency_key(task, tick)).await {
        Ok(out) => {
            tracing::Span::current().record("outcome", if out.is_error { "tool_error" } else { "ok" });
            metrics::counter!("agent_tool_calls_total", "outcome" => if out.is_error { "tool_error" } else { "ok" })
                .increment(1);
            tracing::info!(
                server,
                tool = name,
                is_error = out.is_error,
                ms = started.elapsed().as_millis() as u64,
                "tool called"
            );
            let cut = if out.truncated { " (cut at the size limit)" } else { "" };
            let head = if out.is_error { "reported an error" } else { "returned" };
            let memories = if out.is_error || out.text.is_empty() {
                Vec::new()
            } else {
                vec![NewMemory {
                    text: format!("{tool}: {}", clip(&out.text, 1000)),
                    kind: Kind::Tool,
                    tick,
                    url: None,
                }]
            };
            Outcome {
                observation: format!("tool {tool} {head}{cut}:\n{}", clip(&out.text, OBSERVATION_CHARS)),
                memories,
                ..Outcome::default()
            }
        }
        Err(e) => {
            tracing::Span::current().record("outcome", "failed");
            metrics::counter!("agent_tool_calls_total", "outcome" => "failed").increment(1);
            tracing::warn!(server, tool = name, error = %e, "tool call failed");
            Outcome { observation: format!("tool {tool} failed: {}", reason(&e)), ..Outcome::default() }
        }
    }
}

/// What the model is told of a failure: the kind, without the transport's internals.
fn reason(e: &McpError) -> String {
    match e {
        McpError::Timeout { secs, .. } => format!("no answer within {secs} s"),
        McpError::Unavailable { .. } => "the tool server is unavailable".into(),
        McpError::UnknownServer(_) | McpError::UnknownTool { .. } => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_per_task_and_tick() {
        let t = TaskId::new();
        assert_eq!(idempotency_key(t, 3), idempotency_key(t, 3));
        assert_ne!(idempotency_key(t, 3), idempotency_key(t, 4));
        assert_ne!(idempotency_key(t, 3), idempotency_key(TaskId::new(), 3));
    }
}
