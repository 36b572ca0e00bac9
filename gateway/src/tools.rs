//! The MCP tools a task may use: a client names configured servers (`<server>`, all its
//! tools) or single tools (`<server>/<tool>`), checked against the servers' tool lists
//! (cached, listed again on a miss). Nothing a client sends can add a server.

use runtime::mcp::{McpClients, McpError, split_tool};

use crate::problem::ApiError;

/// Most entries in a task's `tools`.
pub const MAX_CHOICES: usize = 32;

/// The task's tool choice, de-duplicated in order; `422` naming an unknown entry, `503`
/// when a named tool's server cannot be listed to check it.
pub async fn check_choice(mcp: &McpClients, raw: &[String]) -> Result<Vec<String>, ApiError> {
    if raw.len() > MAX_CHOICES {
        return Err(ApiError::Unprocessable(format!("tools: at most {MAX_CHOICES} entries")));
    }
    let mut chosen: Vec<String> = Vec::with_capacity(raw.len());
    for entry in raw {
        let entry = entry.trim();
        if chosen.iter().any(|c| c == entry) {
            continue;
        }
        match split_tool(entry) {
            None if mcp.servers().get(entry).is_some() => {}
            None => return Err(unknown(entry)),
            Some((server, tool)) => match mcp.tool(server, tool).await {
                Ok(_) => {}
                Err(McpError::UnknownServer(_) | McpError::UnknownTool { .. }) => return Err(unknown(entry)),
                Err(e) => {
                    tracing::warn!(server, error = %e, "tool server unavailable while checking a task's tools");
                    return Err(ApiError::Unavailable {
                        detail: format!(
                            "tools: the tool server {server:?} is unavailable, so {entry:?} cannot be checked; try again"
                        ),
                        retry_after: 5,
                    });
                }
            },
        }
        chosen.push(entry.to_owned());
    }
    Ok(chosen)
}

fn unknown(entry: &str) -> ApiError {
    ApiError::Unprocessable(format!("tools: {entry:?} is not a configured tool server or tool"))
}
