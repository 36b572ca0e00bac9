//! Shared request state: settings, clients built once at start.

use std::sync::Arc;

use proto::store::TaskStore;
use redis::aio::ConnectionManager;

use crate::auth::JwtVerifier;
use crate::config::Settings;
use crate::publisher::Publisher;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub store: TaskStore,
    pub redis: ConnectionManager,
    pub publisher: Publisher,
    pub verifier: JwtVerifier,
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
