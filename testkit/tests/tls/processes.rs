//! One private TLS RabbitMQ node (it takes seconds to start) and one TLS Redis for the
//! whole story, in order: the AMQP client's refusals, every process's refusals, then a
//! task through gateway and agent over TLS on both links.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use proto::TaskStatus;
use runtime::connect::{AmqpConnectError, Endpoint};
use testkit::binaries::workspace_bin;
use testkit::tls::{Pki, TempDir, TlsRabbit, TlsRedis};
use testkit::{Harness, Namespace, Services, free_port};

use crate::SOON;
use crate::connect::amqp_error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_links() {
    let pki = Pki::generate();
    let redis = TlsRedis::start(&pki);
    let rabbit = TlsRabbit::start(&pki);

    amqp_refusals(&rabbit, &pki).await;
    every_process_refuses(&redis, &rabbit, &pki).await;
    assert_eq!(rabbit.connection_count(), 0, "a refused client must never get an AMQP connection");
    task_completes_over_tls(&redis, &rabbit, &pki).await;
}

async fn amqp_refusals(rabbit: &TlsRabbit, pki: &Pki) {
    let host = format!("localhost:{}", rabbit.port);
    for (what, endpoint) in
        [("system roots only", rabbit.endpoint(None)), ("unrelated CA", rabbit.endpoint(Some(&pki.other_ca_file)))]
    {
        match amqp_error(&endpoint).await {
            AmqpConnectError::Tls { host: h, reason } => {
                assert_eq!(h, host, "{what}");
                assert!(reason.contains("UnknownIssuer"), "{what}: {reason}");
            }
            other => panic!("{what}: expected a TLS error, got {other}"),
        }
    }
    let e = amqp_error(&rabbit.wrong_host_endpoint(&pki.ca_file)).await;
    let text = e.to_string();
    assert!(matches!(e, AmqpConnectError::Tls { .. }), "{text}");
    assert!(text.contains(&format!("TLS handshake with 127.0.0.1:{} failed", rabbit.port)), "{text}");
    assert!(text.contains("not valid for this host name"), "{text}");

    // With the CA the same node answers, and a plaintext client gets nothing from it.
    let conn = runtime::connect::amqp(&rabbit.endpoint(Some(&pki.ca_file)), "tls-test").await.expect("amqps");
    conn.close(200, "done".into()).await.expect("close");
    let plain = Endpoint::new(format!("amqp://guest:guest@localhost:{}/%2f", rabbit.port));
    assert!(runtime::connect::amqp(&plain, "tls-test").await.is_err(), "plaintext must not connect");
}

/// A service binary run with the test's environment; stderr goes to a file.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, bin: &Path, args: &[&str], env: &[(String, String)], logs: &Path) -> Self {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Self { name: name.to_owned(), child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each process, once with Redis and once with RabbitMQ lacking the CA file (the other
/// link trusted, so the process gets as far as the refused one), must log a TLS refusal
/// naming the host, and must keep refusing rather than carry on in plaintext.
async fn every_process_refuses(redis: &TlsRedis, rabbit: &TlsRabbit, pki: &Pki) {
    let logs = TempDir::new("logs");
    let agent = workspace_bin("agent", "agent");
    let cases = [
        (
            "redis",
            Services { redis: redis.endpoint(None), rabbitmq: rabbit.endpoint(Some(&pki.ca_file)) },
            format!("redis: TLS handshake with localhost:{} failed", redis.port),
        ),
        (
            "rabbitmq",
            Services { redis: redis.endpoint(Some(&pki.ca_file)), rabbitmq: rabbit.endpoint(None) },
            format!("rabbitmq: TLS handshake with localhost:{} failed", rabbit.port),
        ),
    ];
    let mut procs = Vec::new();
    for (link, services, _) in &cases {
        let ns = Namespace::on(services.clone());
        let env = ns.env();
        let port = || free_port().to_string();
        let with = |extra: &[(&str, String)]| {
            let mut e = env.clone();
            e.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            e
        };
        let runs = [
            ("gateway", workspace_bin("gateway", "gateway"), vec![], with(&[("GATEWAY_ADDR", port())])),
            (
                "agent",
                agent.clone(),
                vec![],
                with(&[("AGENT_ID", format!("tls-{link}")), ("AGENT_HEALTH_ADDR", port())]),
            ),
            (
                "metrics-sidecar",
                workspace_bin("metrics-sidecar", "metrics-sidecar"),
                vec![],
                with(&[
                    ("METRICS_SIDECAR_ADDR", port()),
                    ("CLOUDWATCH_ENABLED", "false".into()),
                    ("METRICS_INTERVAL_SECONDS", "1".into()),
                ]),
            ),
            (
                "autoscaler-local",
                workspace_bin("autoscaler", "autoscaler"),
                vec!["local"],
                with(&[
                    ("AUTOSCALER_INTERVAL_SECONDS", "1".into()),
                    ("MIN_WORKERS", "0".into()),
                    ("AGENT_BIN", agent.display().to_string()),
                ]),
            ),
        ];
        for (name, bin, args, env) in runs {
            procs.push((link, Proc::spawn(&format!("{name}-{link}"), &bin, &args, &env, logs.path())));
        }
    }
    for (link, proc) in &procs {
        let (_, _, expected) = cases.iter().find(|(l, _, _)| l == *link).expect("case");
        let deadline = tokio::time::Instant::now() + SOON;
        while !proc.log_text().contains(expected.as_str()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not log {expected:?} within {SOON:?}; its log:\n{}",
                proc.name,
                proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Still refusing a while later: no process fell back to plaintext or gave up silently.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (link, proc) in &mut procs {
        let text = proc.log_text();
        let (_, _, expected) = cases.iter().find(|(l, _, _)| l == *link).expect("case");
        assert!(text.contains("not signed by a trusted CA"), "{}: {text}", proc.name);
        assert!(text.matches(expected.as_str()).count() >= 1, "{}: {text}", proc.name);
        assert!(proc.child.try_wait().expect("wait").is_none(), "{} exited instead of retrying: {text}", proc.name);
    }
}

async fn task_completes_over_tls(redis: &TlsRedis, rabbit: &TlsRabbit, pki: &Pki) {
    let services = testkit::tls::services(redis, rabbit, pki);
    let mut app = Harness::start_on(services, &[]).await;
    app.spawn_agent(
        workspace_bin("agent", "agent").to_str().expect("utf-8 path"),
        "tls-agent",
        &[("OFFLINE_TICK_DELAY_MS", "50"), ("OFFLINE_THINK_TICKS", "2")],
    );
    let id = app.submit_ok("alice", "summarise the offline model over TLS", 10).await;
    let rec = app.wait_for(id, SOON, |r| r.status.is_terminal()).await;
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:#?}\nagent log:\n{}", app.agent(0).log_text());
    let body: serde_json::Value = app.get_task("alice", id).await.json().await.expect("json");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["result"]["success"], true, "{body}");
    // The gateway's publisher, the harness and the agent's consumer all sit on the TLS
    // node (it has no plaintext listener).
    let connections = rabbit.connection_count();
    assert!(connections >= 3, "connections: {connections}");
    // For the record (`-- --nocapture`): what ran over which link.
    eprintln!(
        "task {id} {} over {} and {} ({connections} AMQPS connections on the TLS-only node): {}",
        body["status"],
        app.ns.services.redis.url(),
        app.ns.services.rabbitmq.host_port(),
        body["result"]
    );
    app.cleanup().await;
}
