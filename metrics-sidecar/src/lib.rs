//! The Euglena metrics sidecar (ARCHITECTURE §6).
//!
//! # Layout
//! - [`config`]: settings from the environment.
//! - [`probe`]: reads queue depths (passive declares) and agent presence; failures are `None`.
//! - [`cloudwatch`]: one `PutMetricData` per interval, retried, never fatal; or log-only.
//! - [`aws`]: the SDK configuration (timeouts, `AWS_ENDPOINT_URL`) shared with the autoscaler.
//!
//! [`run`] publishes every `METRICS_INTERVAL_SECONDS` until its shutdown future resolves,
//! and serves `/health` and `/metrics` (the same values as Prometheus gauges) meanwhile, as
//! a `runtime::lifecycle` stage stopped after the loop.

pub mod aws;
pub mod cloudwatch;
pub mod config;
pub mod probe;

use std::time::Duration;

use proto::Keys;
use runtime::lifecycle::Background;
use tokio::net::TcpListener;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::cloudwatch::Publisher;
use crate::config::Settings;
use crate::probe::{Probe, Reading};

/// Chooses CloudWatch or log-only mode and says which, and why, once at start.
pub async fn publisher(settings: &Settings) -> Publisher {
    if !settings.cloudwatch_enabled {
        tracing::warn!("CLOUDWATCH_ENABLED=false: LOG-ONLY MODE, no metrics are published");
        return Publisher::log_only(&settings.namespace);
    }
    let sdk = aws::load().await;
    if let Err(reason) = aws::has_credentials(&sdk).await {
        tracing::warn!(%reason, "no AWS credentials: LOG-ONLY MODE, no metrics are published");
        return Publisher::log_only(&settings.namespace);
    }
    tracing::info!(
        namespace = %settings.namespace,
        region = sdk.region().map(ToString::to_string),
        endpoint = sdk.endpoint_url(),
        "publishing to CloudWatch"
    );
    Publisher::cloudwatch(aws_sdk_cloudwatch::Client::new(&sdk), &settings.namespace)
}

/// Runs the sampling loop until `shutdown` resolves; `listener` serves `/health` and
/// `/metrics` until the loop has stopped.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    publisher: Publisher,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = runtime::lifecycle::cancel_on(shutdown);
    let mut background = Background::new();
    let ops = background.stage("health endpoint", OPS_GRACE);
    ops.track(runtime::ops::spawn(listener, settings.common.http_header_timeout, ops.token()));
    let result = sample(&settings, &publisher, &shutdown).await;
    background.stop().await;
    tracing::info!("metrics sidecar stopped");
    result
}

/// A scrape or health check in flight at shutdown.
const OPS_GRACE: Duration = Duration::from_secs(5);

/// One sample every interval until `shutdown`.
async fn sample(settings: &Settings, publisher: &Publisher, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let redis = runtime::connect::redis(&settings.common.redis)?;
    let keys = Keys::new(settings.common.key_prefix.clone());
    let mut history = redis.clone();
    // About a day of samples for the console's chart.
    let keep = (86_400 / settings.interval.as_secs().max(1)).max(60) as usize;
    let mut probe = Probe::new(
        &settings.common.rabbitmq,
        &settings.common.redis,
        proto::topology::Topology::new(settings.common.input_queue.clone(), settings.common.max_deliveries),
        redis,
        keys.clone(),
        settings.common.heartbeat_ttl,
    );
    tracing::info!(
        queue = %settings.common.input_queue,
        interval_s = settings.interval.as_secs(),
        log_only = publisher.is_log_only(),
        "metrics sidecar started"
    );
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        // Retries stop before the next sample is due, so intervals never pile up.
        let deadline = Instant::now() + settings.interval.saturating_sub(Duration::from_millis(200));
        tokio::select! {
            () = shutdown.cancelled() => break,
            reading = sample_once(&mut probe, publisher, deadline) => record(&mut history, &keys, &reading, keep).await,
        }
    }
    probe.close().await;
    Ok(())
}

/// Appends the reading to `metrics:samples` for the console; a failure costs one point of
/// the chart, nothing else.
async fn record(conn: &mut redis::aio::ConnectionManager, keys: &Keys, r: &Reading, keep: usize) {
    let sample = proto::samples::Sample {
        at: chrono::Utc::now().timestamp_millis(),
        ready: r.ready.map(u64::from),
        in_flight: r.agents.map(|a| a.running_tasks),
        workers: r.agents.map(|a| a.count),
        busy: r.agents.map(|a| a.busy),
        dead_letter: r.dlq_ready.map(u64::from),
    };
    if let Err(e) = proto::samples::append(conn, keys, &sample, keep).await {
        tracing::warn!(error = %e, "could not record the sample for the console");
    }
}

/// One interval: read, log, expose as gauges, publish.
pub async fn sample_once(probe: &mut Probe, publisher: &Publisher, deadline: Instant) -> Reading {
    let reading = probe.read().await;
    let values = cloudwatch::values(&reading);
    for (name, value) in &values {
        metrics::gauge!("euglena_queue_metric", "metric" => *name, "queue" => probe.queue().to_owned())
            .set(*value as f64);
    }
    tracing::info!(
        queue = probe.queue(),
        ready = reading.ready,
        consumers = reading.consumers,
        dlq_ready = reading.dlq_ready,
        workers = reading.agents.map(|a| a.count),
        busy = reading.agents.map(|a| a.busy),
        busy_slots = reading.agents.map(|a| a.running_tasks),
        total_slots = reading.agents.map(|a| a.slots),
        in_flight = reading.agents.map(|a| a.running_tasks),
        log_only = publisher.is_log_only(),
        "queue metrics"
    );
    if let Err(error) = publisher.publish(probe.queue(), &values, deadline).await {
        tracing::error!(%error, "PutMetricData failed; this interval's metrics are lost");
    }
    reading
}
