//! Operational endpoints shared by the agent and the metrics sidecar: `/health` and
//! `/metrics` (Prometheus text). The recorder is process-global and installed once.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::serve::{EdgeSettings, OPS_MAX_CONNECTIONS, serve};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle; installs the global recorder on first use.
pub fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only when another recorder was installed first; then ours just renders empty.
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        upkeep.run_upkeep();
                    }
                });
            }
            handle
        })
        .clone()
}

pub async fn metrics_text() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], prometheus().render())
}

/// `/health` (liveness) and `/metrics`.
pub fn router() -> Router {
    prometheus();
    Router::new().route("/health", get(|| async { "ok" })).route("/metrics", get(metrics_text))
}

/// Serves [`router`] on `listener` through the hardened accept loop until `stop` is
/// cancelled; the agent and the metrics sidecar each run one.
pub fn spawn(listener: TcpListener, header_timeout: Duration, stop: CancellationToken) -> JoinHandle<()> {
    let edge = EdgeSettings {
        header_timeout,
        max_connections: OPS_MAX_CONNECTIONS,
        max_connections_per_peer: 0,
        trusted_proxies: Vec::new(),
    };
    tokio::spawn(serve(listener, router(), None, edge, OPS_GRACE, async move { stop.cancelled().await }))
}

/// A scrape or health check in flight at shutdown is short.
const OPS_GRACE: Duration = Duration::from_secs(2);
