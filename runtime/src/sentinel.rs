//! Following a Redis primary across a failover: Redis Sentinel (`REDIS_SENTINELS`,
//! `REDIS_SENTINEL_MASTER`) and the check that a connection is not on a replica.
//!
//! The `redis` crate's connection manager reconnects by itself, but always to the address
//! its client was built with, and it has no hook to choose another. So with sentinels each
//! process runs a relay on loopback and builds its clients against it: every connection a
//! manager opens is relayed to the primary the sentinels name at that moment, and a watcher
//! asks them every few seconds and closes every relayed connection the moment the primary
//! changes, so the managers reconnect, through the relay, to the new one. The application
//! keeps its one `ConnectionManager` type and its reconnect behaviour. `rediss://` is kept
//! on the wire: the relay speaks TLS to the primary (and to the sentinels), verified
//! against the name in `REDIS_URL` with the system roots plus `REDIS_CA_FILE`; only the hop
//! inside the process, on loopback, is plaintext, and it still carries `REDIS_URL`'s AUTH.
//!
//! Without sentinels (a single Redis, or a managed primary endpoint whose DNS name moves
//! on failover, as ElastiCache's does) every reconnect resolves the name again (the crate
//! resolves per connection). What neither covers is a connection that stays open to a node
//! that was demoted to a replica: its writes fail with `READONLY`. [`watch_role`] asks the
//! node its role every [`ROLE_CHECK`] and, on a replica, has the server close that
//! connection (`CLIENT KILL ID … SKIPME no`), so the manager reconnects and resolves again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

use crate::tls::{self, PrivateCa};

/// How often the relay's watcher asks the sentinels, and [`watch_role`] the node its role.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);
pub const ROLE_CHECK: Duration = Duration::from_secs(2);
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

type Primary = (String, u16);

/// `REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER` and `REDIS_SENTINEL_PASSWORD`, and the
/// process's relay once started (shared by every clone of the endpoint).
pub struct Sentinels {
    addrs: Vec<String>,
    master: String,
    password: Option<String>,
    relay: Mutex<Option<SocketAddr>>,
}

impl std::fmt::Debug for Sentinels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinels")
            .field("addrs", &self.addrs)
            .field("master", &self.master)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Sentinels {
    pub fn new(addrs: Vec<String>, master: String, password: Option<String>) -> Self {
        Self { addrs, master, password, relay: Mutex::new(None) }
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    pub fn master(&self) -> &str {
        &self.master
    }

    /// The `REDIS_SENTINELS` value: `host:port,host:port`.
    pub fn list(&self) -> String {
        self.addrs.join(",")
    }
}

/// TLS on the wire: the name the data nodes' certificate carries (`REDIS_URL`'s host) and
/// the private CA, if any, besides the system roots.
pub struct TlsTarget {
    pub host: String,
    pub ca: Option<PrivateCa>,
}

/// The upstream side of the relay: TLS or not, and the name to verify.
#[derive(Clone)]
struct Upstream {
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    sentinel_scheme: &'static str,
    ca: Option<PrivateCa>,
}

/// The loopback address of these sentinels' relay, started on first use on the current
/// Tokio runtime.
pub fn relay_addr(sentinels: &Arc<Sentinels>, tls: Option<TlsTarget>) -> std::io::Result<SocketAddr> {
    let mut relay = sentinels.relay.lock().map_err(|_| std::io::Error::other("relay lock poisoned"))?;
    if let Some(addr) = *relay {
        return Ok(addr);
    }
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| std::io::Error::other("REDIS_SENTINELS needs a Tokio runtime to relay connections"))?;
    let upstream = upstream(tls)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel::<Option<Primary>>(None);
    let s = sentinels.clone();
    let up = upstream.clone();
    handle.spawn(
        async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => accept_loop(listener, s, up, rx).await,
                Err(e) => tracing::error!(error = %e, "redis sentinel relay could not listen"),
            }
        }
        .instrument(tracing::info_span!("redis_sentinel_relay")),
    );
    let s = sentinels.clone();
    handle.spawn(
        async move { watch_primary(s, upstream, tx).await }.instrument(tracing::info_span!("redis_sentinel_watch")),
    );
    tracing::info!(sentinels = %sentinels.list(), master = %sentinels.master, relay = %addr, "redis through sentinels");
    *relay = Some(addr);
    Ok(addr)
}

fn upstream(target: Option<TlsTarget>) -> std::io::Result<Upstream> {
    let Some(target) = target else {
        return Ok(Upstream { tls: None, sentinel_scheme: "redis", ca: None });
    };
    tls::install_crypto_provider();
    let host = target.host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let name = ServerName::try_from(host).map_err(|e| std::io::Error::other(format!("REDIS_URL host: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = &target.ca {
        for cert in CertificateDer::pem_slice_iter(ca.pem().as_bytes()).flatten() {
            let _ = roots.add(cert);
        }
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Ok(Upstream { tls: Some((connector, name)), sentinel_scheme: "rediss", ca: target.ca })
}

/// A client for one sentinel, with the data nodes' TLS (and CA) when they use TLS.
fn sentinel_client(url: String, upstream: &Upstream) -> redis::RedisResult<redis::Client> {
    match &upstream.ca {
        Some(ca) => {
            let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(ca.with_system_roots()) };
            redis::Client::build_with_tls(url, certs)
        }
        None => redis::Client::open(url),
    }
}

/// The primary's address as the first sentinel that answers names it.
async fn ask(sentinels: &Sentinels, upstream: &Upstream) -> Option<Primary> {
    for addr in &sentinels.addrs {
        let auth = sentinels.password.as_ref().map(|p| format!(":{}@", urlencode(p))).unwrap_or_default();
        let url = format!("{}://{auth}{addr}", upstream.sentinel_scheme);
        let Ok(client) = sentinel_client(url, upstream) else { continue };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(SENTINEL_TIMEOUT))
            .set_response_timeout(Some(SENTINEL_TIMEOUT));
        let answer = async {
            let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&sentinels.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        match tokio::time::timeout(SENTINEL_TIMEOUT * 2, answer).await {
            Ok(Ok(Some(primary))) => return Some(primary),
            Ok(Ok(None)) => {
                tracing::warn!(sentinel = %addr, master = %sentinels.master, "sentinel does not know this master")
            }
            Ok(Err(e)) => tracing::debug!(sentinel = %addr, error = %e, "sentinel did not answer"),
            Err(_) => tracing::debug!(sentinel = %addr, "sentinel timed out"),
        }
    }
    None
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// Asks the sentinels every [`WATCH_INTERVAL`] and publishes the primary when it changes.
async fn watch_primary(sentinels: Arc<Sentinels>, upstream: Upstream, tx: watch::Sender<Option<Primary>>) {
    loop {
        if let Some(primary) = ask(&sentinels, &upstream).await {
            let changed = tx.borrow().as_ref() != Some(&primary);
            if changed {
                let previous = tx.send_replace(Some(primary.clone()));
                if let Some((host, port)) = previous {
                    tracing::warn!(from = %format!("{host}:{port}"), to = %format!("{}:{}", primary.0, primary.1), "redis primary moved; closing relayed connections");
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    sentinels: Arc<Sentinels>,
    upstream: Upstream,
    rx: watch::Receiver<Option<Primary>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (s, up, rx) = (sentinels.clone(), upstream.clone(), rx.clone());
        let span = tracing::Span::current();
        tokio::spawn(async move {
            // Asked afresh: the watcher's answer may be a few seconds old.
            let Some(primary) = ask(&s, &up).await else {
                tracing::warn!(master = %s.master, "no sentinel named the redis primary");
                return;
            };
            let connect = TcpStream::connect((primary.0.as_str(), primary.1));
            let server = match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, connect).await {
                Ok(Ok(server)) => server,
                Ok(Err(e)) => {
                    tracing::warn!(primary = %format!("{}:{}", primary.0, primary.1), error = %e, "redis primary not reachable");
                    return;
                }
                Err(_) => return,
            };
            let _ = server.set_nodelay(true);
            let _ = client.set_nodelay(true);
            match &up.tls {
                None => relay(client, server, rx, primary).await,
                Some((connector, name)) => {
                    match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, connector.connect(name.clone(), server)).await
                    {
                        Ok(Ok(tls)) => relay(client, tls, rx, primary).await,
                        Ok(Err(e)) => tracing::warn!(error = %e, "redis: TLS handshake with the primary failed"),
                        Err(_) => tracing::warn!("redis: TLS handshake with the primary timed out"),
                    }
                }
            }
        }.instrument(span));
    }
}

/// Copies both ways until either side closes or the primary moves away from `primary`.
async fn relay<S>(mut client: TcpStream, mut server: S, mut rx: watch::Receiver<Option<Primary>>, primary: Primary)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let moved = async {
        loop {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if rx.borrow().as_ref().is_some_and(|p| *p != primary) {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        () = moved => {}
    }
}

/// Every [`ROLE_CHECK`], asks the node behind `conn` its role; on a replica (a demoted
/// primary whose connection stayed open), has the server close this connection so the
/// manager reconnects and finds the primary again. Runs until the runtime ends.
pub fn watch_role(conn: ConnectionManager) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
    handle.spawn(
        async move {
            loop {
                tokio::time::sleep(ROLE_CHECK).await;
                if let Ok(true) = on_replica(&mut conn.clone()).await {
                    tracing::warn!("redis connection is on a replica (a demoted primary); reconnecting");
                    let mut c = conn.clone();
                    let close = async {
                        let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut c).await?;
                        redis::cmd("CLIENT")
                            .arg("KILL")
                            .arg("ID")
                            .arg(id)
                            .arg("SKIPME")
                            .arg("no")
                            .query_async::<redis::Value>(&mut c)
                            .await
                    };
                    let _ = close.await;
                }
            }
        }
        .instrument(tracing::info_span!("redis_role_check")),
    );
}

/// `ROLE`'s first element is `master`, `slave` or `sentinel`.
async fn on_replica(conn: &mut ConnectionManager) -> redis::RedisResult<bool> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await?;
    let first = role.first().map(|v| redis::from_redis_value::<String>(v.clone()));
    Ok(matches!(first, Some(Ok(r)) if r == "slave" || r == "replica"))
}
