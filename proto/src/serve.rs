//! The one HTTP accept loop every Euglena listener uses (the gateway's API and each
//! process's ops listener), hardened against clients that hold connections open.
//!
//! Guarantees:
//! - a connection that has not sent complete request headers within `header_timeout` is
//!   closed. hyper starts that timer whenever it waits for a request head, so it also closes
//!   idle keep-alive connections after the same time;
//! - at most `max_connections` connections are served at once; past that, new connections
//!   wait in the kernel's accept backlog instead of taking file descriptors from live ones;
//! - on shutdown the listener closes at once, idle connections are closed, and requests in
//!   flight get `grace` to finish (logged either way).
//!
//! HTTP/1.1 only: load balancers (the ALB) and browsers speak it to plaintext upstreams, and
//! it keeps one timeout model for every connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeSettings {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Ops listeners (`/health`, `/metrics`) serve a scraper and a health check, not the public.
pub const OPS_MAX_CONNECTIONS: usize = 256;

/// Serves `app` on `listener` until `shutdown` resolves, then drains for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    edge: EdgeSettings,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(edge.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(edge.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the listener stays.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors here are the client's (reset, header timeout, malformed request).
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("all connections drained"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_s = grace.as_secs(), "shutdown grace elapsed with requests in flight; closing");
        }
    }
}
