//! Shared request state: settings, clients built once at start.

use std::sync::Arc;

use axum::extract::FromRef;
use proto::store::TaskStore;
use redis::aio::ConnectionManager;
use runtime::address_policy::Lookup;

use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::config::Settings;
use crate::event_hub::EventHub;
use crate::samples_cache::SamplesCache;
use crate::streams::StreamLimits;
use crate::submission::Submissions;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub store: TaskStore,
    pub redis: ConnectionManager,
    pub verifier: Arc<Verifier>,
    /// Admit → publish → confirm, or undo; and the broker link.
    pub submissions: Submissions,
    /// The one reader that tells task followers their streams grew.
    pub hub: EventHub,
    /// Cancelled when the gateway shuts down, so event streams end cleanly.
    pub shutdown: CancellationToken,
    /// Per-user and per-gateway bounds on open event streams.
    pub streams: StreamLimits,
    /// `GET /ops/samples`, read from Redis at most once per cache period.
    pub samples: SamplesCache,
    /// Name resolution for checking webhook URLs at submit.
    pub lookup: Arc<dyn Lookup>,
    /// The operator's MCP servers, listed to check the tools a task chooses.
    pub mcp: Arc<runtime::mcp::McpClients>,
    /// The dead-letter queue, for the operators' redrive.
    pub dead_letters: Arc<crate::dead_letters::DeadLetterQueue>,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
