//! Private TLS servers for the TLS suite: a CA and a `localhost` server certificate made at
//! test time (rcgen), a `redis-server` with only a TLS port, and a RabbitMQ node with only
//! a TLS listener. Each has its own ports, directories and node name, never the machine's
//! shared servers, and is shut down when dropped, even when the test panicked.
//!
//! The server certificate names `localhost` only, so the same server reached as
//! `127.0.0.1` presents a certificate for the wrong host.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use runtime::connect::Endpoint;

use crate::Services;

/// Ports given to this suite (see the engineering notes): Redis 6450-6499, RabbitMQ
/// 5750-5799 with distribution ports 25750-25799.
const REDIS_PORTS: (u16, u16) = (6450, 6499);
const RABBIT_PORTS: (u16, u16) = (5750, 5799);
const DIST_PORT_OFFSET: u16 = 20000;
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("euglena-tls-{tag}-{}", short_id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// A test CA, the `localhost` certificate it signed, and an unrelated CA (for "trusts
/// some private CA, but not the server's").
#[derive(Debug)]
pub struct Pki {
    pub ca_file: PathBuf,
    pub other_ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    _dir: TempDir,
}

impl Pki {
    pub fn generate() -> Self {
        let dir = TempDir::new("pki");
        let ca = new_ca("Euglena test CA");
        let other = new_ca("Euglena unrelated CA");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &*ca).expect("sign server cert");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write pem");
            path
        };
        Self {
            ca_file: write("ca.pem", &ca.pem()),
            other_ca_file: write("other-ca.pem", &other.pem()),
            cert_file: write("server.pem", &cert.pem()),
            key_file: write("server.key", &key.serialize_pem()),
            _dir: dir,
        }
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("self-sign ca")
}

/// A free port in `range`, tried from a per-process rotating start so parallel tests in
/// one binary do not race for the same one.
/// `also` (an offset, e.g. RabbitMQ's distribution port) must be free as well.
fn free_port_in(range: (u16, u16), next: &AtomicU16, also: Option<u16>) -> u16 {
    let span = range.1 - range.0 + 1;
    let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
    for _ in 0..span {
        let port = range.0 + next.fetch_add(1, Ordering::Relaxed) % span;
        if free(port) && also.is_none_or(|offset| free(port + offset)) {
            return port;
        }
    }
    panic!("no free port in {}..={}", range.0, range.1);
}

fn wait_for_port(port: u16, what: &str, alive: impl Fn() -> bool) {
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(alive(), "{what} exited before listening on {port}");
        assert!(Instant::now() < deadline, "{what} not listening on {port} within {START_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `redis-server --port 0 --tls-port P`: TLS only, on 127.0.0.1.
pub struct TlsRedis {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl TlsRedis {
    pub fn start(pki: &Pki) -> Self {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let port = free_port_in(REDIS_PORTS, &NEXT, None);
        let dir = TempDir::new("redis");
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--tls-cert-file")
            .arg(&pki.cert_file)
            .arg("--tls-key-file")
            .arg(&pki.key_file)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca_file)
            .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (apt-get install redis-server)");
        let pid = child.id();
        wait_for_port(port, "redis-server", || Path::new(&format!("/proc/{pid}")).exists());
        if let Ok(Some(status)) = child.try_wait() {
            panic!("redis-server exited: {status}");
        }
        Self { port, child, _dir: dir }
    }

    /// `rediss://localhost:P`, trusting `ca` when given.
    pub fn endpoint(&self, ca: Option<&Path>) -> Endpoint {
        endpoint(format!("rediss://localhost:{}", self.port), "REDIS_CA_FILE", ca)
    }

    /// The same server as `127.0.0.1`, which its certificate does not name.
    pub fn wrong_host_endpoint(&self, ca: &Path) -> Endpoint {
        endpoint(format!("rediss://127.0.0.1:{}", self.port), "REDIS_CA_FILE", Some(ca))
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn endpoint(url: String, var: &str, ca: Option<&Path>) -> Endpoint {
    let e = Endpoint::new(url);
    match ca {
        Some(path) => e.with_ca_file(var, path).expect("ca file"),
        None => e,
    }
}

/// A private RabbitMQ node with one TLS listener on 127.0.0.1 and no plain one.
pub struct TlsRabbit {
    pub port: u16,
    node: String,
    dir: TempDir,
}

impl TlsRabbit {
    pub fn start(pki: &Pki) -> Self {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let port = free_port_in(RABBIT_PORTS, &NEXT, Some(DIST_PORT_OFFSET));
        let dist_port = port + DIST_PORT_OFFSET;
        let dir = TempDir::new("rabbit");
        let node = format!("euglena-tls-{}@localhost", short_id());
        let d = dir.path().to_owned();
        let conf = format!(
            "listeners.tcp = none\n\
             listeners.ssl.1 = 127.0.0.1:{port}\n\
             ssl_options.cacertfile = {}\n\
             ssl_options.certfile = {}\n\
             ssl_options.keyfile = {}\n\
             ssl_options.verify = verify_none\n\
             ssl_options.fail_if_no_peer_cert = false\n\
             loopback_users = none\n",
            pki.ca_file.display(),
            pki.cert_file.display(),
            pki.key_file.display(),
        );
        std::fs::write(d.join("rabbitmq.conf"), conf).expect("rabbitmq.conf");
        std::fs::write(d.join("rabbitmq-env.conf"), "").expect("env conf");
        std::fs::write(d.join("enabled_plugins"), "[].\n").expect("plugins");
        let rabbit = Self { port, node, dir };
        let status = rabbit
            .command("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .status()
            .expect("start rabbitmq-server (apt-get install rabbitmq-server)");
        assert!(status.success(), "rabbitmq-server -detached failed: {status}; logs in {}", d.display());
        // await_startup fails at once while the node is not yet registered: retry it.
        let deadline = Instant::now() + START_TIMEOUT;
        while !rabbit.ctl(&["await_startup"], Duration::from_secs(30)) {
            assert!(
                Instant::now() < deadline,
                "rabbitmq node {} did not start within {START_TIMEOUT:?}; log:\n{}",
                rabbit.node,
                rabbit.log_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        wait_for_port(port, "rabbitmq TLS listener", || true);
        rabbit
    }

    fn command(&self, program: &str) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new(format!("/usr/lib/rabbitmq/bin/{program}"));
        cmd.env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("rabbit.pid"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// `rabbitmqctl -n <node> args`, killed after `limit`.
    fn ctl(&self, args: &[&str], limit: Duration) -> bool {
        let Ok(mut child) = self.command("rabbitmqctl").args(["-n", &self.node]).args(args).spawn() else {
            return false;
        };
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = self.dir.path().join("log").join(format!("{}.log", self.node));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// How many AMQP connections the node holds right now.
    pub fn connection_count(&self) -> usize {
        let out = self
            .command("rabbitmqctl")
            .args(["-n", &self.node, "list_connections", "-q", "--no-table-headers", "name"])
            .stdout(Stdio::piped())
            .output()
            .expect("rabbitmqctl list_connections");
        assert!(out.status.success(), "list_connections failed");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count()
    }

    /// `amqps://guest:guest@localhost:P/%2f`, trusting `ca` when given.
    pub fn endpoint(&self, ca: Option<&Path>) -> Endpoint {
        endpoint(format!("amqps://guest:guest@localhost:{}/%2f", self.port), "RABBITMQ_CA_FILE", ca)
    }

    /// The same node as `127.0.0.1`, which its certificate does not name.
    pub fn wrong_host_endpoint(&self, ca: &Path) -> Endpoint {
        endpoint(format!("amqps://guest:guest@127.0.0.1:{}/%2f", self.port), "RABBITMQ_CA_FILE", Some(ca))
    }
}

impl Drop for TlsRabbit {
    fn drop(&mut self) {
        if !self.ctl(&["shutdown"], Duration::from_secs(60)) {
            // The node would not stop by itself: end it by the pid it wrote, which is ours.
            if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("rabbit.pid")) {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            }
        }
    }
}

/// Private TLS Redis and RabbitMQ that trust `pki`'s CA, as [`Services`] for a harness.
pub fn services(redis: &TlsRedis, rabbit: &TlsRabbit, pki: &Pki) -> Services {
    Services { redis: redis.endpoint(Some(&pki.ca_file)), rabbitmq: rabbit.endpoint(Some(&pki.ca_file)) }
}
