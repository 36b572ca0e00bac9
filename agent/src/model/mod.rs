//! The model interface the tick loop talks to. Each tick the model sees the mandate, the
//! loop state and the memories retrieved for this tick, and answers with one [`Decision`];
//! at the end it writes the result.
//!
//! - [`openai`]: any OpenAI-compatible API (`OPENAI_API_KEY` / `OPENAI_BASE_URL`).
//! - [`offline`]: the OFFLINE DEMO MODEL, used when neither is configured.
//! - [`http`]: the model API's transport: timeouts, retries, `Retry-After`.
//! - [`prompt`]: the prompt files (`agent/prompts/`) and their rendering from a [`View`].
//! - [`parse`]: turning a model's text into a [`Decision`] or a result, with reasons a
//!   repair prompt can quote.

pub mod http;
pub mod offline;
pub mod openai;
pub mod parse;
pub mod prompt;

use async_trait::async_trait;
use proto::TaskResult;
use serde::{Deserialize, Serialize};

use crate::checkpoint::LoopState;
use crate::memory::Recalled;
use crate::meter::Meter;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Search {
        query: String,
    },
    Visit {
        url: String,
    },
    /// An MCP tool, `<server>/<tool>`, with arguments its input schema accepts.
    Tool {
        tool: String,
        arguments: serde_json::Value,
    },
    Think,
    Exit,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Search { .. } => "search",
            Self::Visit { .. } => "visit",
            Self::Tool { .. } => "tool",
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
    /// Whether a search provider is configured: without one, `search` is not offered.
    pub search: bool,
    /// The MCP tools the task may call this tick (none: `tool` is not offered).
    pub tools: &'a ToolOffer,
}

/// The MCP tools on offer for one tick, and the servers whose tools could not be listed
/// (the model is told they are unavailable for now).
#[derive(Debug, Clone, Default)]
pub struct ToolOffer {
    pub tools: Vec<runtime::mcp::ToolInfo>,
    pub unavailable: Vec<String>,
}

impl ToolOffer {
    /// No MCP tools.
    pub fn none() -> &'static Self {
        static NONE: ToolOffer = ToolOffer { tools: Vec::new(), unavailable: Vec::new() };
        &NONE
    }

    pub fn get(&self, full_name: &str) -> Option<&runtime::mcp::ToolInfo> {
        self.tools.iter().find(|t| t.full_name == full_name)
    }
}

/// What caused a model error: the client's error, kept for the log's cause chain.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Retrying cannot help (bad credentials, unknown model): the task fails with `reason`.
    #[error("{reason}")]
    Permanent {
        reason: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The service stayed down through the client's retries: the tick loop waits for it
    /// (with backoff, until the task's deadline) rather than requeueing the delivery.
    #[error("model unavailable: {reason}")]
    Transient {
        reason: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The reply was not a valid action even after the repair retry: this tick fails,
    /// the loop goes on.
    #[error("the model's reply was not a valid action: {0}")]
    Malformed(String),
    /// The call would take the task past its token budget: not made; the task stops
    /// `incomplete`.
    #[error("the task's token budget is spent")]
    OverBudget,
}

impl ModelError {
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent { reason: reason.into(), cause: None }
    }

    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient { reason: reason.into(), cause: None }
    }

    /// The same error, remembering what caused it.
    #[must_use]
    pub fn caused_by(self, e: impl Into<Cause>) -> Self {
        match self {
            Self::Permanent { reason, .. } => Self::Permanent { reason, cause: Some(e.into()) },
            Self::Transient { reason, .. } => Self::Transient { reason, cause: Some(e.into()) },
            other @ (Self::Malformed(_) | Self::OverBudget) => other,
        }
    }

    /// The text a task's `error` shows: written for the user, without the cause's
    /// internals (those go to the log).
    pub fn reason(&self) -> &str {
        match self {
            Self::Permanent { reason, .. } | Self::Transient { reason, .. } | Self::Malformed(reason) => reason,
            Self::OverBudget => "the task's token budget is spent",
        }
    }
}

#[async_trait]
pub trait Model: Send + Sync {
    fn name(&self) -> &str;
    async fn decide(&self, view: &View<'_>) -> Result<Decision, ModelError>;
    async fn synthesize(&self, view: &View<'_>) -> Result<TaskResult, ModelError>;
}
