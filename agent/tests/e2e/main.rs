//! End-to-end tests: the in-process gateway, real agent processes, the local Redis and
//! RabbitMQ. Each test has its own key prefix and queue (see `testkit`). `in_process`
//! drives the agent's core (delivery handling and the tick loop) directly, with a
//! scripted model and paused time.

mod cancel;
mod crash;
mod in_process;
mod missing;
mod operators;
mod pipeline;
mod poison;
mod presence;
mod protection;
mod shutdown;
mod trace;

use std::time::Duration;

pub const AGENT: &str = env!("CARGO_BIN_EXE_agent");

/// Generous bounds for "eventually": correctness limits, not speed targets.
pub const SOON: Duration = Duration::from_secs(30);

/// Offline pacing for tests: fast ticks, a set number of thinking steps.
pub fn pace(delay_ms: u32, think_ticks: u32) -> Vec<(&'static str, String)> {
    vec![("OFFLINE_TICK_DELAY_MS", delay_ms.to_string()), ("OFFLINE_THINK_TICKS", think_ticks.to_string())]
}

pub fn env_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, val)| (*k, val.as_str())).collect()
}
