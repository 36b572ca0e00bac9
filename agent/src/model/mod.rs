//! The model interface the tick loop talks to. Each tick the model sees the mandate, the
//! loop state and the memories retrieved for this tick, and answers with one [`Decision`];
//! at the end it writes the result.
//!
//! - [`openai`]: any OpenAI-compatible API (`OPENAI_API_KEY` / `OPENAI_BASE_URL`).
//! - [`offline`]: the OFFLINE DEMO MODEL, used when neither is configured.
//! - [`http`]: the model API's transport: timeouts, retries, `Retry-After`.
//! - [`parse`]: turning a model's text into a [`Decision`] or a result, with reasons a
//!   repair prompt can quote.

pub mod http;
pub mod offline;
pub mod openai;
pub mod parse;

use std::sync::Mutex;

use async_trait::async_trait;
use proto::TaskResult;
use serde::{Deserialize, Serialize};

use crate::memory::Recalled;
use crate::tick::LoopState;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Search { query: String },
    Visit { url: String },
    Think,
    Exit,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Search { .. } => "search",
            Self::Visit { .. } => "visit",
            Self::Think => "think",
            Self::Exit => "exit",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub thought: String,
    pub action: Action,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub deliverable: Option<String>,
    /// Facts the model wants kept as memories of this task.
    #[serde(default)]
    pub remember: Vec<String>,
}

/// What the model sees on a tick.
pub struct View<'a> {
    pub mandate: &'a str,
    pub max_ticks: u32,
    pub state: &'a LoopState,
    /// Memories of this task nearest to the current step, best first.
    pub memories: &'a [Recalled],
    /// Where the model adds the tokens each call used, failed calls included.
    pub meter: &'a Meter,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Retrying cannot help (bad credentials, unknown model): the task fails.
    #[error("{0}")]
    Permanent(String),
    /// The service stayed down through the client's retries: the tick loop waits for it
    /// (with backoff, until the task's deadline) rather than requeueing the delivery.
    #[error("model unavailable: {0}")]
    Transient(String),
    /// The reply was not a valid action even after the repair retry: this tick fails,
    /// the loop goes on.
    #[error("the model's reply was not a valid action: {0}")]
    Malformed(String),
}

/// Token usage lives in the result contract (`proto`); re-exported for the agent's parts.
pub use proto::Usage;

/// A task's running token count. Shared by reference with the model and the embedder,
/// so usage is counted even when a call's reply turns out to be unusable.
#[derive(Debug, Default)]
pub struct Meter(Mutex<Usage>);

impl Meter {
    pub fn starting_at(usage: Usage) -> Self {
        Self(Mutex::new(usage))
    }

    pub fn add(&self, usage: Usage) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).add(usage);
    }

    pub fn total(&self) -> Usage {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
pub trait Model: Send + Sync {
    fn name(&self) -> &str;
    async fn decide(&self, view: &View<'_>) -> Result<Decision, ModelError>;
    async fn synthesize(&self, view: &View<'_>) -> Result<TaskResult, ModelError>;
}
