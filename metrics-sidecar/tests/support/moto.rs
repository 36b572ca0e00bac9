//! A private `moto_server` per test: a local AWS (CloudWatch, ECS) on a free port, killed
//! on drop. Found through `MOTO_SERVER_BIN`, then `PATH`, then the workspace's `.venv/`;
//! missing moto fails the test loudly (these tests never skip silently).
//!
//! Shared by the metrics-sidecar and autoscaler test binaries (`#[path]` include).

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const INSTALL: &str =
    "scripts/test-deps.sh  (or: python3 -m venv .venv && .venv/bin/pip install 'moto[server]==5.2.5')";
pub(crate) const REGION: &str = "us-east-1";

pub(crate) struct Moto {
    child: Child,
    pub endpoint: String,
}

fn find_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MOTO_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("moto_server")).find(|c| c.is_file()))
        .unwrap_or_default();
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    on_path.or_else(|| venv.is_file().then_some(venv)).unwrap_or_else(|| {
        panic!("moto_server not found (MOTO_SERVER_BIN, PATH, .venv/bin). Install it with: {INSTALL}")
    })
}

impl Moto {
    pub(crate) fn start() -> Self {
        let bin = find_bin();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}. Install moto with: {INSTALL}", bin.display()));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost the port race, or moto is broken: try again
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Self { child, endpoint: format!("http://{addr}") };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto_server ({}) did not start; reinstall with: {INSTALL}", bin.display());
    }

    pub(crate) fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        cloudwatch_at(&self.endpoint)
    }
}

fn credentials() -> aws_sdk_cloudwatch::config::Credentials {
    aws_sdk_cloudwatch::config::Credentials::new("testing", "testing", None, None, "moto")
}

/// A CloudWatch client for `endpoint`, SDK retries off so tests see every failure.
pub(crate) fn cloudwatch_at(endpoint: &str) -> aws_sdk_cloudwatch::Client {
    use aws_sdk_cloudwatch::config::{BehaviorVersion, Region, retry::RetryConfig};
    let config = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials())
        .retry_config(RetryConfig::disabled())
        .timeout_config(metrics_sidecar::aws::timeouts())
        .build();
    aws_sdk_cloudwatch::Client::from_conf(config)
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The maximum of each datapoint of a metric with `QueueName = queue`, oldest first.
pub(crate) async fn read_metric(cw: &aws_sdk_cloudwatch::Client, namespace: &str, queue: &str, name: &str) -> Vec<f64> {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
    let now = std::time::SystemTime::now();
    let metric = Metric::builder()
        .namespace(namespace)
        .metric_name(name)
        .dimensions(Dimension::builder().name("QueueName").value(queue).build())
        .build();
    let query = MetricDataQuery::builder()
        .id("m")
        .metric_stat(MetricStat::builder().metric(metric).period(60).stat("Maximum").build())
        .build();
    let out = cw
        .get_metric_data()
        .metric_data_queries(query)
        .start_time(DateTime::from(now - Duration::from_secs(600)))
        .end_time(DateTime::from(now + Duration::from_secs(60)))
        .scan_by(ScanBy::TimestampAscending)
        .send()
        .await
        .expect("GetMetricData");
    out.metric_data_results().first().map(|r| r.values().to_vec()).unwrap_or_default()
}
