//! The one HTTP accept loop every Euglena listener uses (the gateway's API and each
//! process's ops listener), hardened against clients that hold connections open.
//!
//! Guarantees:
//! - a connection that has not sent complete request headers within `header_timeout` is
//!   closed. hyper starts that timer whenever it waits for a request head, so it also closes
//!   idle keep-alive connections after the same time;
//! - at most `max_connections` connections are served by the app at once; past that, a
//!   listener with a [`Reserve`] serves up to `reserve.connections` more with the reserve's
//!   app (the gateway's answers `/health` and `/ready` and sheds the rest with a fast `503`),
//!   one request each, so probes never wait behind a full cap. Past both, new connections wait
//!   in the kernel's accept backlog instead of taking file descriptors from live ones;
//! - one peer address holds at most `max_connections_per_peer` connections; more are closed
//!   as soon as they are accepted. Trusted proxies (a load balancer, whose connections carry
//!   many clients) are exempt;
//! - on shutdown the listener closes at once, idle connections are closed, and requests in
//!   flight get `grace` to finish (logged either way).
//!
//! HTTP/1.1 only: load balancers (the ALB) and browsers speak it to plaintext upstreams, and
//! it keeps one timeout model for every connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// Limits of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSettings {
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// Connections one peer address may hold at once; 0 = no per-peer limit.
    pub max_connections_per_peer: usize,
    /// Peers whose connections carry other clients' requests (load balancers, reverse
    /// proxies): exempt from the per-peer limit, and trusted for `X-Forwarded-For`.
    pub trusted_proxies: Vec<IpNet>,
}

impl EdgeSettings {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// Connections served beyond the cap by a small app of their own.
pub struct Reserve {
    pub app: Router,
    pub connections: usize,
}

/// Ops listeners (`/health`, `/metrics`) serve a scraper and a health check, not the public.
pub const OPS_MAX_CONNECTIONS: usize = 256;
/// A connection in the reserve must send its request head within this, whatever the
/// listener's own header timeout: a probe sends it at once.
const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `app` on `listener` until `shutdown` resolves, then drains for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    reserve: Option<Reserve>,
    edge: EdgeSettings,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let main_slots = Arc::new(Semaphore::new(edge.max_connections));
    let reserve_slots = Arc::new(Semaphore::new(reserve.as_ref().map_or(0, |r| r.connections)));
    let peers = PeerCounts::default();
    let graceful = GracefulShutdown::new();
    let mut main_http = http1::Builder::new();
    main_http.timer(TokioTimer::new()).header_read_timeout(edge.header_timeout);
    let mut reserve_http = http1::Builder::new();
    reserve_http
        .timer(TokioTimer::new())
        .header_read_timeout(edge.header_timeout.min(RESERVE_HEADER_TIMEOUT))
        .keep_alive(false);
    tokio::pin!(shutdown);
    loop {
        // A main slot when one is free, else a reserve slot; with neither, the backlog waits.
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = main_slots.clone().acquire_owned() => slot.map(Slot::Main),
            slot = reserve_slots.clone().acquire_owned(), if reserve.is_some() => slot.map(Slot::Reserve),
        };
        let Ok(mut slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the listener stays.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A main slot may have freed while this one waited in accept.
        if matches!(slot, Slot::Reserve(_))
            && let Ok(main) = main_slots.clone().try_acquire_owned()
        {
            slot = Slot::Main(main);
        }
        let peer_guard = if edge.max_connections_per_peer == 0 || edge.trusts(peer.ip()) {
            None
        } else {
            match peers.enter(peer.ip(), edge.max_connections_per_peer) {
                Some(guard) => Some(guard),
                None => {
                    metrics::counter!("http_connections_refused_total", "reason" => "peer_limit").increment(1);
                    tracing::debug!(peer = %peer.ip(), "connection refused: per-peer limit");
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (app, http) = match (&slot, &reserve) {
            (Slot::Reserve(_), Some(r)) => {
                metrics::counter!("http_connections_reserve_total").increment(1);
                (&r.app, &reserve_http)
            }
            _ => (&app, &main_http),
        };
        let service = TowerToHyperService::new(with_peer(app.clone(), peer));
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors here are the client's (reset, header timeout, malformed request).
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
            drop(peer_guard);
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

/// Each request carries the TCP peer as axum's `ConnectInfo`.
fn with_peer(
    app: Router,
    peer: SocketAddr,
) -> impl tower::Service<
    Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    app.map_request(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    })
}

enum Slot {
    Main(#[allow(dead_code)] OwnedSemaphorePermit),
    Reserve(#[allow(dead_code)] OwnedSemaphorePermit),
}

/// Open connections per peer address; an address leaves the map with its last connection.
#[derive(Default, Clone)]
struct PeerCounts(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct PeerGuard {
    counts: PeerCounts,
    ip: IpAddr,
}

impl PeerCounts {
    fn enter(&self, ip: IpAddr, max: usize) -> Option<PeerGuard> {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerGuard { counts: self.clone(), ip })
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the nearest
/// address in `X-Forwarded-For` that is not itself a trusted proxy (the rightmost entries
/// are the ones our own proxies appended; anything left of them is the client's to write).
pub fn client_ip(edge: &EdgeSettings, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
    if !edge.trusts(peer) {
        return peer;
    }
    let Some(list) = forwarded_for else { return peer };
    let mut client = peer;
    for hop in list.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !edge.trusts(ip) {
                    break;
                }
            }
            // A malformed hop ends what can be believed.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(trusted: &[&str]) -> EdgeSettings {
        EdgeSettings {
            header_timeout: Duration::from_secs(10),
            max_connections: 10,
            max_connections_per_peer: 0,
            trusted_proxies: trusted.iter().map(|s| s.parse().expect("net")).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let e = edge(&["10.0.0.0/8"]);
        // An untrusted peer's header is ignored.
        assert_eq!(client_ip(&e, ip("203.0.113.9"), Some("1.2.3.4")), ip("203.0.113.9"));
        // The balancer appended the client; what the client wrote before it is not believed.
        assert_eq!(client_ip(&e, ip("10.1.2.3"), Some("6.6.6.6, 198.51.100.7")), ip("198.51.100.7"));
        // Two of our proxies in a row.
        assert_eq!(client_ip(&e, ip("10.1.2.3"), Some("198.51.100.7, 10.9.9.9")), ip("198.51.100.7"));
        // No header, or garbage: the peer.
        assert_eq!(client_ip(&e, ip("10.1.2.3"), None), ip("10.1.2.3"));
        assert_eq!(client_ip(&e, ip("10.1.2.3"), Some("not-an-ip")), ip("10.1.2.3"));
    }

    #[test]
    fn peer_counts_bound_and_forget() {
        let counts = PeerCounts::default();
        let a = ip("127.0.0.2");
        let g1 = counts.enter(a, 2).expect("first");
        let g2 = counts.enter(a, 2).expect("second");
        assert!(counts.enter(a, 2).is_none(), "third refused");
        assert!(counts.enter(ip("127.0.0.3"), 2).is_some(), "another peer is not affected");
        drop(g1);
        assert!(counts.enter(a, 2).is_some(), "a slot freed");
        drop(g2);
        assert!(counts.0.lock().expect("lock").is_empty(), "no entry outlives its connections");
    }
}
