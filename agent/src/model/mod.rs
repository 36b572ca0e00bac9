//! The model interface the tick loop talks to. Each tick the model sees the mandate and
//! the loop state and answers with one [`Decision`]; at the end it writes the result.

pub mod offline;

use async_trait::async_trait;
use proto::TaskResult;
use serde::{Deserialize, Serialize};

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
}

/// What the model sees on a tick.
pub struct View<'a> {
    pub mandate: &'a str,
    pub max_ticks: u32,
    pub state: &'a LoopState,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Retrying cannot help (bad credentials, unknown model): the task fails.
    #[error("model error: {0}")]
    Permanent(String),
    /// Worth another delivery (the service is down): the task is requeued.
    #[error("model unavailable: {0}")]
    Transient(String),
}

#[async_trait]
pub trait Model: Send + Sync {
    fn name(&self) -> &str;
    async fn decide(&self, view: &View<'_>) -> Result<Decision, ModelError>;
    async fn synthesize(&self, view: &View<'_>) -> Result<TaskResult, ModelError>;
}
