//! Connections to Redis and RabbitMQ: every call has a timeout, and waiting for a
//! dependency retries with capped, jittered backoff until the process is told to stop.
//!
//! `rediss://` and `amqps://` URLs connect over TLS, verified against the system roots
//! plus the endpoint's private CA (see [`crate::tls`]). A TLS failure is reported as
//! such, naming the host; there is no plaintext fallback and no way to skip verification.
//!
//! A RabbitMQ endpoint may name several nodes (`RABBITMQ_URL` as a comma-separated list,
//! see [`crate::nodes`]): each connect tries them in a fresh random order, recently failed
//! ones last. A Redis endpoint may name sentinels (`REDIS_SENTINELS`, see
//! [`crate::sentinel`]): its clients then reach whichever node the sentinels call primary.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties, DefaultConnectionBuilder};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use crate::backoff::{self, Backoff};
use crate::config::ConfigError;
use crate::nodes::{self, Nodes};
use crate::sentinel::{self, Sentinels};
use crate::tls::{self, PrivateCa};

/// Where a service is, and the private CA (if any) its TLS certificate chains to.
#[derive(Clone)]
pub struct Endpoint {
    /// As configured: one URL, or (RabbitMQ) a comma-separated list of a cluster's nodes.
    url: String,
    nodes: Arc<Nodes>,
    ca: Option<PrivateCa>,
    /// Redis only: the sentinels that name the primary.
    sentinels: Option<Arc<Sentinels>>,
}

/// Without the URL's credentials: settings are logged with `{:?}`.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.url.split_once("://").map_or("", |(s, _)| s);
        f.debug_struct("Endpoint")
            .field("url", &format!("{scheme}://{}", self.host_port()))
            .field("ca", &self.ca)
            .field("sentinels", &self.sentinels)
            .finish()
    }
}

impl Endpoint {
    /// A URL without a private CA (system roots only for `rediss://` / `amqps://`).
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let mut list = nodes::split_urls(&url);
        if list.is_empty() {
            list.push(url.clone());
        }
        Self { url, nodes: Arc::new(Nodes::new(list)), ca: None, sentinels: None }
    }

    /// `url` (read from `url_var`) with the PEM file `ca_file` (read from `ca_var`). A CA
    /// file with a plaintext URL is refused: it means the operator expects TLS that is not on.
    /// A list of nodes must be all TLS or all plaintext.
    pub fn configured(url: String, url_var: &str, ca_file: Option<String>, ca_var: &str) -> Result<Self, ConfigError> {
        if nodes::split_urls(&url).is_empty() {
            return Err(ConfigError::new(url_var, "is empty"));
        }
        let endpoint = Self::new(url);
        let tls = endpoint.nodes.urls().iter().filter(|u| is_tls_url(u)).count();
        if tls != 0 && tls != endpoint.nodes.len() {
            return Err(ConfigError::new(url_var, "lists TLS and plaintext nodes together; use one scheme for all"));
        }
        match ca_file {
            None => Ok(endpoint),
            Some(_) if !endpoint.is_tls() => Err(ConfigError::new(
                ca_var,
                format!("is set but {url_var} is not a rediss:// or amqps:// URL, so the CA would never be used"),
            )),
            Some(path) => endpoint.with_ca_file(ca_var, Path::new(&path)),
        }
    }

    /// With the CA in this PEM file (`var` names it in errors). Only for a TLS URL.
    pub fn with_ca_file(mut self, var: &str, path: &Path) -> Result<Self, ConfigError> {
        if !self.is_tls() {
            return Err(ConfigError::new(var, "a CA file needs a rediss:// or amqps:// URL"));
        }
        self.ca = Some(PrivateCa::load(var, path)?);
        Ok(self)
    }

    /// Redis behind sentinels: clients connect through the process's relay to whichever
    /// node the sentinels name primary (see [`crate::sentinel`]).
    pub fn with_sentinels(mut self, sentinels: Sentinels) -> Self {
        self.sentinels = Some(Arc::new(sentinels));
        self
    }

    /// The setting as configured (for a RabbitMQ cluster, the whole list).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every node's URL (one for a single server).
    pub fn urls(&self) -> &[String] {
        self.nodes.urls()
    }

    pub fn sentinels(&self) -> Option<&Sentinels> {
        self.sentinels.as_deref()
    }

    pub fn ca(&self) -> Option<&PrivateCa> {
        self.ca.as_ref()
    }

    /// `host:port` for messages (comma-separated for several nodes); never the credentials.
    pub fn host_port(&self) -> String {
        self.nodes.urls().iter().map(|u| host_port(u)).collect::<Vec<_>>().join(",")
    }

    /// The variable that adds a private CA for this kind of URL.
    fn ca_var(&self) -> &'static str {
        if self.url.to_ascii_lowercase().starts_with("amqp") { "RABBITMQ_CA_FILE" } else { "REDIS_CA_FILE" }
    }

    pub fn is_tls(&self) -> bool {
        self.nodes.urls().first().is_some_and(|u| is_tls_url(u))
    }

    /// An error from this endpoint in words: a TLS failure says so and names the host.
    pub fn describe(&self, service: &str, err: &(dyn std::error::Error + 'static)) -> String {
        match tls::rustls_error(err) {
            Some(t) => {
                format!("{service}: TLS handshake with {} failed: {}", self.host_port(), tls::explain(t, self.ca_var()))
            }
            None => format!("{service} at {}: {err}", self.host_port()),
        }
    }
}

fn is_tls_url(url: &str) -> bool {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
    scheme == "rediss" || scheme == "amqps"
}

/// One URL's `host:port`, without credentials.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_owned()
}

pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
pub const AMQP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Redis connection manager that connects lazily and reconnects by itself; commands
/// fail fast (after [`REDIS_TIMEOUT`]) while Redis is down instead of hanging. Inside a
/// Tokio runtime, [`sentinel::watch_role`] moves it off a node demoted to a replica.
pub fn redis(endpoint: &Endpoint) -> redis::RedisResult<ConnectionManager> {
    let client = redis_client(endpoint)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let conn = ConnectionManager::new_lazy_with_config(client, config)?;
    sentinel::watch_role(conn.clone());
    Ok(conn)
}

/// The client for an endpoint; a `rediss://` URL gets rustls with the system roots plus
/// the endpoint's CA. With sentinels, the client connects to the process's relay on
/// loopback (plaintext; the relay keeps TLS on the wire) with `REDIS_URL`'s credentials.
pub fn redis_client(endpoint: &Endpoint) -> redis::RedisResult<redis::Client> {
    let info = redis::IntoConnectionInfo::into_connection_info(endpoint.url())?;
    if let Some(sentinels) = &endpoint.sentinels {
        let tls = endpoint
            .is_tls()
            .then(|| sentinel::TlsTarget { host: info_host(&info).unwrap_or_default(), ca: endpoint.ca().cloned() });
        let relay = sentinel::relay_addr(sentinels, tls).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "REDIS_SENTINELS", e.to_string()))
        })?;
        let info = info.set_addr(redis::ConnectionAddr::Tcp(relay.ip().to_string(), relay.port()));
        return redis::Client::open(info);
    }
    if let redis::ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
        // `#insecure` would turn certificate verification off.
        return Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "REDIS_URL: #insecure is not supported; use REDIS_CA_FILE for a private CA",
        )));
    }
    match (endpoint.is_tls(), endpoint.ca()) {
        (true, Some(ca)) => {
            tls::install_crypto_provider();
            let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(ca.with_system_roots()) };
            redis::Client::build_with_tls(info, certs)
        }
        (true, None) => {
            tls::install_crypto_provider();
            redis::Client::open(info)
        }
        (false, _) => redis::Client::open(info),
    }
}

fn info_host(info: &redis::ConnectionInfo) -> Option<String> {
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => Some(host.clone()),
        _ => None,
    }
}

/// One `PING`; its error names TLS and the host when the handshake failed.
pub async fn ping_redis(conn: &mut ConnectionManager, endpoint: &Endpoint) -> Result<(), String> {
    match redis::cmd("PING").query_async::<String>(conn).await {
        Ok(_) => Ok(()),
        Err(e) => Err(endpoint.describe("redis", &e)),
    }
}

/// A connection of its own for blocking reads (`XREAD BLOCK`), which would stall every
/// other command on a shared multiplexed connection; its response timeout allows for `block`.
pub fn redis_blocking(endpoint: &Endpoint, block: Duration) -> redis::RedisResult<ConnectionManager> {
    let client = redis_client(endpoint)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(block + REDIS_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// The one reconnect loop: runs `attempt` until it succeeds, waiting between failures
/// with capped, jittered backoff ([`Backoff::reconnect`]) and logging each one as a
/// warning naming `service`. `None` once `stop` is cancelled (checked between attempts;
/// every attempt is bounded by its own timeouts, and a half-open connection is never
/// dropped mid-handshake).
pub async fn until_connected<T, E, F, Fut>(service: &str, stop: &CancellationToken, attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    if stop.is_cancelled() {
        return None;
    }
    let again = |e: &E, delay: Duration, _| {
        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{service} not reachable");
        true
    };
    backoff::retry(Backoff::reconnect(), Some(stop), attempt, again).await.ok()
}

/// Waits until Redis answers `PING`, or the token is cancelled (then `false`).
pub async fn wait_for_redis(conn: &mut ConnectionManager, endpoint: &Endpoint, stop: &CancellationToken) -> bool {
    until_connected("redis", stop, || {
        let mut conn = conn.clone();
        async move { ping_redis(&mut conn, endpoint).await }
    })
    .await
    .is_some()
}

#[derive(Debug, thiserror::Error)]
pub enum AmqpConnectError {
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("rabbitmq: TLS handshake with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("rabbitmq: connection timed out after {0:?}")]
    Timeout(Duration),
}

/// Opens a connection; an `amqps://` URL is verified against the system roots plus the
/// endpoint's CA. With several nodes, tries each in this attempt's order (a fresh shuffle,
/// recently failed nodes last) and returns the first connection; each node gets
/// [`AMQP_CONNECT_TIMEOUT`] divided among the nodes, at least [`AMQP_NODE_TIMEOUT_MIN`].
pub async fn amqp(endpoint: &Endpoint, name: &str) -> Result<Connection, AmqpConnectError> {
    if endpoint.is_tls() {
        tls::install_crypto_provider();
    }
    let nodes = &endpoint.nodes;
    let per_node = match u32::try_from(nodes.len()) {
        Ok(n) if n > 1 => (AMQP_CONNECT_TIMEOUT / n).max(AMQP_NODE_TIMEOUT_MIN),
        _ => AMQP_CONNECT_TIMEOUT,
    };
    let mut last = AmqpConnectError::Timeout(per_node);
    for i in nodes.order() {
        let url = &nodes.urls()[i];
        match amqp_node(endpoint, url, name, per_node).await {
            Ok(c) => {
                nodes.connected(i);
                if nodes.len() > 1 {
                    tracing::info!(connection = name, node = %host_port(url), "rabbitmq connected");
                }
                return Ok(c);
            }
            Err(e) => {
                nodes.failed(i);
                if nodes.len() > 1 {
                    tracing::debug!(connection = name, node = %host_port(url), error = %e, "rabbitmq node not reachable");
                }
                last = e;
            }
        }
    }
    Err(last)
}

/// The least a node of a list gets to connect.
pub const AMQP_NODE_TIMEOUT_MIN: Duration = Duration::from_secs(2);

async fn amqp_node(
    endpoint: &Endpoint,
    url: &str,
    name: &str,
    limit: Duration,
) -> Result<Connection, AmqpConnectError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let tls_config = OwnedTLSConfig { identity: None, cert_chain: endpoint.ca().map(|ca| ca.pem().to_owned()) };
    let connect = async {
        DefaultConnectionBuilder::new()?
            .with_uri_str(url.to_owned())
            .with_properties(props)
            .with_tls_config(tls_config)
            .connect()
            .await
    };
    match tokio::time::timeout(limit, connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => match tls::rustls_error(&e) {
            Some(t) => Err(AmqpConnectError::Tls { host: host_port(url), reason: tls::explain(t, endpoint.ca_var()) }),
            None => Err(e.into()),
        },
        Err(_) => Err(AmqpConnectError::Timeout(limit)),
    }
}

/// Connects with backoff until it succeeds or the token is cancelled (then `None`).
pub async fn amqp_with_backoff(endpoint: &Endpoint, name: &str, stop: &CancellationToken) -> Option<Connection> {
    until_connected("rabbitmq", stop, || amqp(endpoint, name)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_never_shows_credentials() {
        let e = Endpoint::new("amqps://user:secret@mq.example.com:5671/%2f?heartbeat=10");
        assert_eq!(e.host_port(), "mq.example.com:5671");
        assert_eq!(Endpoint::new("rediss://:pw@cache.example:6379/0").host_port(), "cache.example:6379");
        let debug = format!("{e:?}");
        assert!(!debug.contains("secret") && debug.contains("amqps://mq.example.com:5671"), "{debug}");
    }

    #[test]
    fn a_ca_file_with_a_plaintext_url_is_refused() {
        let e = Endpoint::configured(
            "redis://127.0.0.1:6379".into(),
            "REDIS_URL",
            Some("/tmp/ca.pem".into()),
            "REDIS_CA_FILE",
        )
        .unwrap_err();
        assert_eq!(e.var, "REDIS_CA_FILE");
    }

    #[test]
    fn redis_insecure_fragment_is_refused() {
        let e = redis_client(&Endpoint::new("rediss://127.0.0.1:6380/#insecure")).expect_err("insecure");
        assert!(e.to_string().contains("#insecure is not supported"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn until_connected_retries_with_backoff_and_stops_on_cancel() {
        let stop = CancellationToken::new();
        let mut calls = 0;
        let started = tokio::time::Instant::now();
        let got = until_connected("test", &stop, || {
            calls += 1;
            let n = calls;
            async move { if n < 4 { Err("refused") } else { Ok(n) } }
        })
        .await;
        assert_eq!(got, Some(4));
        // Three waits of at least half of 100, 200 and 400 ms.
        assert!(started.elapsed() >= Duration::from_millis(350), "{:?}", started.elapsed());

        stop.cancel();
        let never = until_connected("test", &stop, || async { Ok::<_, &str>(()) }).await;
        assert_eq!(never, None, "a cancelled token makes no attempt");
    }
}

/// Against real `redis-server`s on free loopback ports (never the shared Redis): a primary,
/// its replica and one Sentinel.
#[cfg(test)]
mod failover_tests {
    use std::process::{Command, Stdio};

    use redis::aio::ConnectionManager;

    use super::*;
    use crate::sentinel::{ROLE_CHECK, Sentinels};

    struct Server {
        port: u16,
        dir: std::path::PathBuf,
    }

    impl Server {
        fn start(args: &[&str]) -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
            let dir = std::env::temp_dir().join(format!("euglena-sentinel-test-{port}"));
            std::fs::create_dir_all(&dir).expect("dir");
            let mut cmd = Command::new("redis-server");
            cmd.args(args)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--daemonize", "yes"])
                .arg("--pidfile")
                .arg(dir.join("pid"))
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null());
            assert!(cmd.status().expect("redis-server is installed").success());
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "redis did not listen");
                std::thread::sleep(Duration::from_millis(50));
            }
            Self { port, dir }
        }

        fn kill(&self) {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.kill();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn client_id(conn: &mut ConnectionManager) -> Option<i64> {
        redis::cmd("CLIENT").arg("ID").query_async(conn).await.ok()
    }

    async fn eventually<F: AsyncFnMut() -> bool>(limit: Duration, mut check: F) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if check().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// A connection whose node is made a replica is closed and reopened within the check.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_on_a_demoted_primary_is_reopened() {
        let other = Server::start(&[]);
        let node = Server::start(&[]);
        let mut conn =
            crate::connect::redis(&Endpoint::new(format!("redis://127.0.0.1:{}", node.port))).expect("client");
        let first = client_id(&mut conn).await.expect("connected");
        let _: () =
            redis::cmd("REPLICAOF").arg("127.0.0.1").arg(other.port).query_async(&mut conn).await.expect("replicaof");
        let moved = eventually(ROLE_CHECK * 4, async || client_id(&mut conn).await.is_some_and(|id| id != first)).await;
        assert!(moved, "the connection to the replica was not reopened");
    }

    /// Through the Sentinel relay, writes reach the replica the Sentinel promoted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sentinel_clients_follow_the_promoted_replica() {
        // With passwords everywhere: REDIS_URL's for the data nodes, the Sentinel's own.
        let auth = ["--requirepass", "data-pw", "--masterauth", "data-pw"];
        let primary = Server::start(&auth);
        let port = primary.port.to_string();
        let replica = Server::start(&[&auth[..], &["--replicaof", "127.0.0.1", &port]].concat());
        let sentinel_port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let dir = std::env::temp_dir().join(format!("euglena-sentinel-test-s{sentinel_port}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndaemonize yes\npidfile {pid}\ndir {d}\n\
                 requirepass sentinel-pw\nsentinel monitor t 127.0.0.1 {p} 1\nsentinel auth-pass t data-pw\n\
                 sentinel down-after-milliseconds t 500\nsentinel failover-timeout t 3000\n",
                pid = dir.join("pid").display(),
                d = dir.display(),
                p = primary.port
            ),
        )
        .expect("conf");
        assert!(Command::new("redis-server").arg(&conf).arg("--sentinel").status().expect("sentinel").success());
        let sentinel = Server { port: sentinel_port, dir };

        let endpoint = Endpoint::new(format!("redis://:data-pw@127.0.0.1:{}", primary.port)).with_sentinels(
            Sentinels::new(vec![format!("127.0.0.1:{}", sentinel.port)], "t".into(), Some("sentinel-pw".into())),
        );
        let mut conn = crate::connect::redis(&endpoint).expect("client");
        let set = async |conn: &mut ConnectionManager| {
            redis::cmd("SET").arg("sentinel-test").arg("x").query_async::<()>(conn).await.is_ok()
        };
        assert!(
            eventually(Duration::from_secs(10), async || set(&mut conn).await).await,
            "no write before the failover"
        );
        // The Sentinel needs to have seen the replica before it can promote it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        primary.kill();
        assert!(
            eventually(Duration::from_secs(30), async || set(&mut conn).await).await,
            "no write after the failover"
        );
        let port: u16 =
            redis::cmd("CONFIG").arg("GET").arg("port").query_async::<Vec<String>>(&mut conn).await.expect("config")[1]
                .parse()
                .expect("port");
        assert_eq!(port, replica.port, "writes go to the promoted replica");
    }
}
