//! Shared request state: settings, clients built once at start.

use std::sync::Arc;

use axum::extract::FromRef;
use proto::TaskId;
use proto::address_policy::Lookup;
use proto::group_commit::GroupCommit;
use proto::store::{Limits, NewTask, SubmitOutcome, TaskStore};
use redis::aio::ConnectionManager;

use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::config::Settings;
use crate::event_hub::EventHub;
use crate::publisher::Publisher;
use crate::routes::samples::SamplesCache;
use crate::streams::StreamLimits;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub store: TaskStore,
    pub redis: ConnectionManager,
    pub publisher: Publisher,
    pub verifier: Arc<Verifier>,
    /// Admissions (the submit script), batched across concurrent submissions.
    pub submits: GroupCommit<NewTask, SubmitOutcome>,
    /// Confirmed marks, batched across concurrent submissions.
    pub confirms: GroupCommit<TaskId, bool>,
    /// The admission settings as the store's script takes them.
    pub limits: Limits,
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
