//! MCP tools for agents (ARCHITECTURE §5 "Tools"): the operator's servers ([`config`]) and
//! the calls to them ([`client`]). The gateway uses the tool lists to check a task's
//! choice; the agent lists and calls.

pub mod client;
pub mod config;

pub use client::{CallOutput, IDEMPOTENCY_META, McpClients, McpError, McpLimits, ToolInfo};
pub use config::{Approval, McpServer, McpServers, Policy, split_tool};
