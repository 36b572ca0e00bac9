//! Agent intelligence tests: the model client against a wiremock OpenAI server, the search
//! and visit tools (SSRF rules and limits), task memory, and whole tasks through the
//! in-process gateway and real agent processes (see `testkit`). Each test has its own key
//! prefix, queue and servers, so they run in parallel.
//!
//! The Qdrant test runs only when `QDRANT_URL` is set (see `qdrant.rs`); `qdrant_wire.rs`
//! checks what the Qdrant store sends against a fake gRPC endpoint, always.

mod approvals;
mod budgets;
mod memory;
mod model_client;
mod offline;
mod qdrant;
mod qdrant_tls;
mod qdrant_wire;
mod scripted;
mod ssrf;
mod steering;
mod support;
mod tools;
mod visit_limits;

use std::time::Duration;

pub const AGENT: &str = env!("CARGO_BIN_EXE_agent");

/// Generous bounds for "eventually": correctness limits, not speed targets.
pub const SOON: Duration = Duration::from_secs(60);
