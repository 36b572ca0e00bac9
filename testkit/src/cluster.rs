//! Private multi-node servers for the cluster chaos suite: a RabbitMQ cluster of three
//! nodes joined with `rabbitmqctl join_cluster`, a Redis primary with a replica and three
//! Sentinels, and HAProxy in front of gateways. All on loopback, on free ports, with their
//! own node names, distribution ports and data directories under one run directory; never
//! the machine's shared services. Every server is stopped when its handle drops, and each
//! writes its pid to `<run dir>/pids/` so a script's exit trap can stop what a crashed
//! driver left behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

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

fn wait_port(port: u16, open: bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while port_open(port) != open {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Where a run keeps its servers' data, logs and pid files.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn new(base: Option<PathBuf>) -> Self {
        let dir = base.unwrap_or_else(|| {
            let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
            std::env::temp_dir().join(format!("euglena-cluster-{tag}"))
        });
        std::fs::create_dir_all(dir.join("pids")).expect("run dir");
        Self(dir)
    }

    fn sub(&self, name: &str) -> PathBuf {
        let d = self.0.join(name);
        std::fs::create_dir_all(&d).expect("server dir");
        d
    }

    /// Records a pid for the exit trap (`<run dir>/pids/<name>`).
    fn note_pid(&self, name: &str, pid: u32) {
        let _ = std::fs::write(self.0.join("pids").join(name), pid.to_string());
    }
}

/// One node of the private RabbitMQ cluster.
pub struct RabbitNode {
    pub node: String,
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
    /// Shared by the cluster's nodes: `HOME` holds the Erlang cookie they must agree on.
    home: PathBuf,
    run: RunDir,
    pub up: bool,
}

impl RabbitNode {
    fn command(&self, bin: &str) -> Command {
        let mut c = Command::new(format!("{RABBIT_BIN}/{bin}"));
        c.env("HOME", &self.home)
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
        self.ctl_output(args).is_some()
    }

    /// `rabbitmqctl -n <node> args…`'s standard output, `None` on failure.
    pub fn ctl_output(&self, args: &[&str]) -> Option<String> {
        let out =
            self.command("rabbitmqctl").arg("-n").arg(&self.node).args(args).stderr(Stdio::null()).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn launch(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("rabbit.pid"));
        let status = self.command("rabbitmq-server").arg("-detached").stdout(Stdio::null()).status().expect("rabbitmq");
        assert!(status.success(), "rabbitmq-server -detached failed for {}", self.node);
        self.up = true;
    }

    fn await_startup(&mut self) {
        // `await_startup` gives up at once while the node has not registered with epmd yet.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.ctl(&["await_startup", "--timeout", "60"]) {
            assert!(
                Instant::now() < deadline,
                "rabbitmq node {} did not start; logs in {}",
                self.node,
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        if let Some(pid) = self.pid() {
            self.run.note_pid(&format!("rabbit-{}", self.port), pid);
        }
    }

    fn pid(&self) -> Option<u32> {
        read_pid(&self.dir.join("rabbit.pid"), Duration::from_secs(5))
    }

    /// SIGKILL of the node's VM: no goodbye to clients or peers.
    pub fn kill9(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, "KILL");
        }
        wait_port(self.port, false, Duration::from_secs(10));
        self.up = false;
    }

    /// A clean stop of the whole node (`rabbitmqctl shutdown`).
    pub fn shutdown(&mut self) {
        if !self.ctl(&["shutdown"])
            && let Some(pid) = self.pid()
        {
            signal(pid, "KILL");
        }
        wait_port(self.port, false, Duration::from_secs(10));
        self.up = false;
    }

    /// Starts the node again on its ports and data: it rejoins its cluster.
    pub fn start(&mut self) {
        self.launch();
        self.await_startup();
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if self.up {
            if let Some(pid) = read_pid(&self.dir.join("rabbit.pid"), Duration::from_millis(200)) {
                signal(pid, "CONT");
            }
            self.shutdown();
        }
    }
}

/// Three RabbitMQ nodes clustered: the first started, the others joined to it.
pub struct RabbitCluster {
    pub nodes: Vec<RabbitNode>,
}

impl RabbitCluster {
    pub fn start(run: &RunDir, count: usize) -> Self {
        let home = run.sub("rabbit-home");
        let tag =
            run.0.file_name().and_then(|n| n.to_str()).unwrap_or("x").rsplit('-').next().unwrap_or("x").to_owned();
        let mut nodes: Vec<RabbitNode> = (0..count)
            .map(|i| {
                let (port, dist_port) = (free_port().port(), free_port().port());
                let dir = run.sub(&format!("rabbit-{i}"));
                std::fs::write(
                    dir.join("rabbitmq.conf"),
                    format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
                )
                .expect("rabbitmq.conf");
                std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("enabled_plugins");
                std::fs::write(dir.join("rabbitmq-env.conf"), "").expect("rabbitmq-env.conf");
                RabbitNode {
                    node: format!("euglena-cluster-{tag}-{i}@localhost"),
                    port,
                    dist_port,
                    dir,
                    home: home.clone(),
                    run: run.clone(),
                    up: false,
                }
            })
            .collect();
        // The first node writes the cookie; the others start after it so they read it.
        nodes[0].launch();
        nodes[0].await_startup();
        for n in nodes.iter_mut().skip(1) {
            n.launch();
        }
        let first = nodes[0].node.clone();
        for n in nodes.iter_mut().skip(1) {
            n.await_startup();
            assert!(n.ctl(&["stop_app"]), "stop_app {}", n.node);
            assert!(n.ctl(&["join_cluster", &first]), "join_cluster {} {first}", n.node);
            assert!(n.ctl(&["start_app"]), "start_app {}", n.node);
            assert!(n.ctl(&["await_startup", "--timeout", "60"]), "await_startup {}", n.node);
        }
        Self { nodes }
    }

    /// `RABBITMQ_URL` for the cluster: every node, comma-separated.
    pub fn url(&self) -> String {
        self.nodes.iter().map(RabbitNode::url).collect::<Vec<_>>().join(",")
    }

    /// A node that is up, to ask the cluster.
    pub fn any_up(&self) -> Option<&RabbitNode> {
        self.nodes.iter().find(|n| n.up)
    }

    /// The index of the node that leads `queue`, and its online members.
    pub fn queue_leader(&self, queue: &str) -> Option<(usize, usize)> {
        let out =
            self.any_up()?.ctl_output(&["list_queues", "-q", "--no-table-headers", "name", "leader", "online"])?;
        let line = out.lines().find(|l| l.split_whitespace().next() == Some(queue))?;
        let mut cols = line.split('\t');
        let _ = cols.next();
        let leader = cols.next()?.trim().to_owned();
        let online = cols.next().map(|o| o.matches('@').count()).unwrap_or(0);
        let i = self.nodes.iter().position(|n| n.node == leader)?;
        Some((i, online))
    }

    /// Waits until `queue` has a leader and `members` online members.
    pub fn wait_queue_online(&self, queue: &str, members: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.queue_leader(queue).is_some_and(|(_, online)| online >= members) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// One `redis-server` (a data node or a Sentinel) run as a daemon.
pub struct RedisNode {
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    run: RunDir,
    pid: Option<u32>,
}

impl RedisNode {
    fn launch(&mut self) {
        let pidfile = self.dir.join("redis.pid");
        let _ = std::fs::remove_file(&pidfile);
        let status = Command::new("redis-server")
            .args(&self.args)
            .args(["--daemonize", "yes", "--pidfile"])
            .arg(&pidfile)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdout(Stdio::null())
            .status()
            .expect("redis-server is installed");
        assert!(status.success(), "redis-server did not start in {}", self.dir.display());
        self.pid = read_pid(&pidfile, Duration::from_secs(10));
        if let Some(pid) = self.pid {
            self.run.note_pid(&format!("redis-{}", self.port), pid);
        }
        assert!(wait_port(self.port, true, Duration::from_secs(10)), "redis did not listen on {}", self.port);
    }

    pub fn kill9(&mut self) {
        if let Some(pid) = self.pid.take() {
            signal(pid, "KILL");
            wait_port(self.port, false, Duration::from_secs(5));
        }
    }

    /// Starts again as configured (a data node comes back as it was started; the
    /// sentinels then make a returning old primary a replica of the new one).
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A Redis primary, one replica and three Sentinels monitoring them as [`RedisHa::MASTER`].
pub struct RedisHa {
    /// Index 0 started as the primary, 1 as its replica.
    pub data: Vec<RedisNode>,
    pub sentinels: Vec<RedisNode>,
}

impl RedisHa {
    pub const MASTER: &'static str = "euglena";

    pub fn start(run: &RunDir) -> Self {
        let node = |name: &str, port: u16, args: Vec<String>| {
            let dir = run.sub(name);
            let mut all = args;
            all.extend(["--dir".to_owned(), dir.display().to_string()]);
            RedisNode { port, dir, args: all, run: run.clone(), pid: None }
        };
        let data_args = |port: u16| -> Vec<String> {
            ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        };
        let p0 = free_port().port();
        let p1 = free_port().port();
        let mut primary = node("redis-0", p0, data_args(p0));
        primary.launch();
        let mut replica_args = data_args(p1);
        replica_args.extend(["--replicaof".to_owned(), "127.0.0.1".to_owned(), p0.to_string()]);
        let mut replica = node("redis-1", p1, replica_args);
        replica.launch();
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port().port();
            let dir = run.sub(&format!("sentinel-{i}"));
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {m} 127.0.0.1 {p0} 2\n\
                     sentinel down-after-milliseconds {m} 1000\n\
                     sentinel failover-timeout {m} 5000\n\
                     sentinel parallel-syncs {m} 1\n",
                    dir = dir.display(),
                    m = Self::MASTER,
                ),
            )
            .expect("sentinel.conf");
            let mut s = RedisNode {
                port,
                dir: dir.clone(),
                args: vec![conf.display().to_string(), "--sentinel".to_owned()],
                run: run.clone(),
                pid: None,
            };
            s.launch();
            sentinels.push(s);
        }
        Self { data: vec![primary, replica], sentinels }
    }

    /// `REDIS_SENTINELS`.
    pub fn sentinel_list(&self) -> String {
        self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect::<Vec<_>>().join(",")
    }

    /// `REDIS_URL`: names the server for its credentials and database; the sentinels say
    /// where it is.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.data[0].port)
    }

    /// The data node the sentinels call primary now.
    pub fn primary(&self) -> Option<usize> {
        for s in &self.sentinels {
            let out = Command::new("redis-cli")
                .args(["-p", &s.port.to_string(), "SENTINEL", "get-master-addr-by-name", Self::MASTER])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(port) = text.lines().nth(1).and_then(|p| p.trim().parse::<u16>().ok()) {
                return self.data.iter().position(|d| d.port == port);
            }
        }
        None
    }

    /// Waits until the sentinels know the replica and each other (a failover needs both).
    pub fn wait_ready(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let ok = self.sentinels.iter().all(|s| {
                Command::new("redis-cli")
                    .args(["-p", &s.port.to_string(), "SENTINEL", "master", Self::MASTER])
                    .output()
                    .map(|o| {
                        let t = String::from_utf8_lossy(&o.stdout).into_owned();
                        let field = |name: &str| {
                            let mut lines = t.lines();
                            while let Some(l) = lines.next() {
                                if l.trim() == name {
                                    return lines.next().and_then(|v| v.trim().parse::<u32>().ok()).unwrap_or(0);
                                }
                            }
                            0
                        };
                        field("num-slaves") >= 1 && field("num-other-sentinels") >= 2
                    })
                    .unwrap_or(false)
            });
            if ok {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// HAProxy (Debian's package) in TCP mode on loopback, round robin over `backends`, each
/// checked with `GET /ready` every 500 ms (out after 2 failures, back after 1 success).
pub struct Haproxy {
    pub port: u16,
    child: Child,
}

impl Haproxy {
    pub fn start(run: &RunDir, backends: &[SocketAddr]) -> Self {
        let port = free_port().port();
        let dir = run.sub("haproxy");
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, a)| format!("  server gw{i} {a} check inter 500ms fall 2 rise 1\n"))
            .collect();
        let cfg = format!(
            "global\n  maxconn 4000\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  retries 2\n  option redispatch\n\
             frontend api\n  bind 127.0.0.1:{port}\n  default_backend gateways\n\
             backend gateways\n  balance roundrobin\n  option httpchk GET /ready\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("haproxy.cfg");
        let log = std::fs::File::create(dir.join("haproxy.log")).expect("haproxy log");
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("haproxy is installed (apt-get install haproxy)");
        run.note_pid("haproxy", child.id());
        assert!(wait_port(port, true, Duration::from_secs(10)), "haproxy did not listen on {port}");
        Self { port, child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
