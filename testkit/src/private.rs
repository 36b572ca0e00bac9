//! Private servers for fault tests: a Redis (with or without AOF) and a RabbitMQ node that a
//! test may stall, stop, kill or restart, and a TCP proxy that can freeze a link. Never the
//! machine's shared services. Every server listens on loopback, on free ports, with its own
//! data directory, and is shut down when its handle drops (also when the test panicked).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::free_port;

fn scratch(kind: &str) -> PathBuf {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let dir = std::env::temp_dir().join(format!("euglena-chaos-{kind}-{tag}"));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

fn read_pid(file: &Path, limit: Duration) -> Option<u32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(pid) = std::fs::read_to_string(file).ok().and_then(|s| s.trim().parse().ok()) {
            return Some(pid);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200)).is_ok()
}

/// A private `redis-server`. With `aof`, writes survive [`PrivateRedis::kill`] + restart
/// (`appendfsync always`, so a test's counts do not depend on a one-second window).
pub struct PrivateRedis {
    pub port: u16,
    pub aof: bool,
    dir: PathBuf,
    pid: Option<u32>,
}

impl PrivateRedis {
    pub fn start(aof: bool) -> Self {
        let mut r = Self { port: free_port().port(), aof, dir: scratch("redis"), pid: None };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let pidfile = self.dir.join("redis.pid");
        let _ = std::fs::remove_file(&pidfile);
        let status = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }, "--appendfsync", "always"])
            .args(["--daemonize", "yes", "--pidfile"])
            .arg(&pidfile)
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdout(Stdio::null())
            .status()
            .expect("redis-server is installed");
        assert!(status.success(), "redis-server did not start");
        self.pid = read_pid(&pidfile, Duration::from_secs(10));
        assert!(self.pid.is_some(), "redis-server wrote no pid file");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port_open(self.port) {
            assert!(Instant::now() < deadline, "private redis did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: the socket stays open and nothing answers.
    pub fn stall(&self) {
        if let Some(pid) = self.pid {
            signal(pid, "STOP");
        }
    }

    pub fn resume(&self) {
        if let Some(pid) = self.pid {
            signal(pid, "CONT");
        }
    }

    /// SIGKILL: what is not in the AOF is lost.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            signal(pid, "CONT");
            signal(pid, "KILL");
            let deadline = Instant::now() + Duration::from_secs(5);
            while port_open(self.port) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

/// A private RabbitMQ node (`euglena-chaos-…@localhost`) on free ports with its own mnesia,
/// logs and config, started with the unwrapped `rabbitmq-server` so it never touches the
/// shared node. Starting takes several seconds.
pub struct PrivateRabbit {
    pub node: String,
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
    up: bool,
}

impl PrivateRabbit {
    pub fn start() -> Self {
        let dir = scratch("rabbit");
        let tag = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x").rsplit('-').next().unwrap_or("x").to_owned();
        let port = free_port().port();
        let dist_port = free_port().port();
        let r = Self { node: format!("euglena-chaos-{tag}@localhost"), port, dist_port, dir, up: false };
        std::fs::write(
            r.dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
        )
        .expect("rabbitmq.conf");
        std::fs::write(r.dir.join("enabled_plugins"), "[].\n").expect("enabled_plugins");
        std::fs::write(r.dir.join("rabbitmq-env.conf"), "").expect("rabbitmq-env.conf");
        let mut r = r;
        let status = r.command("rabbitmq-server").arg("-detached").stdout(Stdio::null()).status().expect("rabbitmq");
        assert!(status.success(), "rabbitmq-server -detached failed");
        r.up = true;
        // `await_startup` gives up at once while the node has not registered with epmd yet.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !r.ctl(&["await_startup", "--timeout", "60"]) {
            assert!(
                Instant::now() < deadline,
                "private rabbitmq node {} did not start; logs in {}",
                r.node,
                r.dir.display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        r
    }

    fn command(&self, bin: &str) -> Command {
        let mut c = Command::new(format!("{RABBIT_BIN}/{bin}"));
        c.env("HOME", &self.dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.dir.join("rabbit.pid"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("enabled_plugins"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        c
    }

    /// `rabbitmqctl -n <node> args…`; true on success.
    pub fn ctl(&self, args: &[&str]) -> bool {
        self.command("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn pid(&self) -> Option<u32> {
        read_pid(&self.dir.join("rabbit.pid"), Duration::from_secs(5))
    }

    /// An outage: the node stays up, the broker application (and every connection) stops.
    pub fn stop_app(&self) {
        assert!(self.ctl(&["stop_app"]), "stop_app");
    }

    pub fn start_app(&self) {
        assert!(self.ctl(&["start_app"]), "start_app");
        assert!(self.ctl(&["await_startup", "--timeout", "60"]), "await_startup after start_app");
    }

    /// SIGSTOP of the whole node: sockets stay open, nothing answers.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "STOP");
        }
    }

    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT");
        }
    }

    /// Raises a memory alarm: the broker blocks every publishing connection.
    pub fn block_publishers(&self) {
        assert!(self.ctl(&["set_vm_memory_high_watermark", "0.0000001"]), "set watermark");
    }

    pub fn unblock_publishers(&self) {
        assert!(self.ctl(&["set_vm_memory_high_watermark", "0.4"]), "reset watermark");
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if self.up {
            self.thaw();
            if !self.ctl(&["shutdown"])
                && let Some(pid) = self.pid()
            {
                signal(pid, "KILL");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `host:port` of an `amqp://` URL (for a [`Proxy`] in front of a broker).
pub fn amqp_addr(url: &str) -> SocketAddr {
    let uri: lapin::uri::AMQPUri = url.parse().expect("amqp url");
    let host = if uri.authority.host == "localhost" { "127.0.0.1".to_owned() } else { uri.authority.host.clone() };
    format!("{host}:{}", uri.authority.port).parse().expect("a loopback ip:port")
}

/// A TCP forwarder to `upstream` that can be frozen: while frozen it forwards nothing in
/// either direction but keeps every socket open, as a stalled peer or a black-holed link
/// does. Runs on the current Tokio runtime; stops with its handle.
pub struct Proxy {
    pub addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let f = f.clone();
                links.spawn(async move {
                    let Ok(Ok(server)) =
                        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream)).await
                    else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, f.clone()), pump(sr, cw, f));
                });
            }
        });
        Self { addr, frozen, task }
    }

    /// For clients that take a URL: `redis://127.0.0.1:{port}` and the like.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every link.
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Bytes that arrived while frozen are held until the thaw.
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
