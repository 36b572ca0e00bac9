//! Moto fixtures for the Lambda tests: an ECS cluster with a (non-awsvpc) service, and
//! CloudWatch datapoints placed in chosen minutes of the window.

use std::time::{Duration, SystemTime};

use autoscaler::config::{LambdaSettings, PolicySettings};
use autoscaler::lambda::Scaler;
use autoscaler::policy::Bounds;
use aws_sdk_ecs::types::ContainerDefinition;
use metrics_sidecar::cloudwatch::datum;

use crate::moto::{Moto, REGION};

pub(crate) const CLUSTER: &str = "euglena";
pub(crate) const SERVICE: &str = "agents";
pub(crate) const NAMESPACE: &str = "Euglena/RabbitMQ";

pub(crate) fn ecs(moto: &Moto) -> aws_sdk_ecs::Client {
    use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig};
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .retry_config(RetryConfig::disabled())
        .timeout_config(metrics_sidecar::aws::timeouts())
        .build();
    aws_sdk_ecs::Client::from_conf(config)
}

pub(crate) async fn create_service(ecs: &aws_sdk_ecs::Client, desired: i32) {
    // moto loads its ECS backend on the first call, which can outlast the client's 5 s
    // attempt timeout on a loaded machine: a setup step, so it may try again.
    let mut tries = 0;
    while let Err(e) = ecs.create_cluster().cluster_name(CLUSTER).send().await {
        tries += 1;
        assert!(tries < 5, "create cluster: {e:?}");
    }
    let container =
        ContainerDefinition::builder().name("agent").image("euglena/agent:test").memory(512).essential(true).build();
    ecs.register_task_definition()
        .family("agent")
        .container_definitions(container)
        .send()
        .await
        .expect("register task definition");
    ecs.create_service()
        .cluster(CLUSTER)
        .service_name(SERVICE)
        .task_definition("agent")
        .desired_count(desired)
        .send()
        .await
        .expect("create service");
}

pub(crate) async fn desired_count(ecs: &aws_sdk_ecs::Client) -> u32 {
    autoscaler::ecs::describe(ecs, CLUSTER, SERVICE).await.expect("describe").desired
}

/// Publishes `(ready, in_flight, busy slots)` at `at`, as the sidecar would.
pub(crate) async fn publish(cw: &aws_sdk_cloudwatch::Client, queue: &str, at: SystemTime, values: (u64, u64, u64)) {
    let (ready, in_flight, busy) = values;
    cw.put_metric_data()
        .namespace(NAMESPACE)
        .metric_data(datum(queue, "QueueDepth", ready, at))
        .metric_data(datum(queue, "InFlight", in_flight, at))
        .metric_data(datum(queue, "BusySlots", busy, at))
        .send()
        .await
        .expect("PutMetricData");
}

/// The same values in each of the window's five minutes up to `now`.
pub(crate) async fn publish_window(
    cw: &aws_sdk_cloudwatch::Client,
    queue: &str,
    now: SystemTime,
    values: (u64, u64, u64),
) {
    for minute in 0..5 {
        publish(cw, queue, now - Duration::from_secs(60 * minute), values).await;
    }
}

pub(crate) fn scaler(moto: &Moto, queue: &str, max: u32, dry_run: bool) -> Scaler {
    let settings = LambdaSettings {
        policy: PolicySettings {
            bounds: Bounds { min: 1, max, slots_per_agent: 1, utilisation_permille: 1000 },
            window: Duration::from_secs(300),
        },
        cluster: CLUSTER.to_owned(),
        service: SERVICE.to_owned(),
        dry_run,
        namespace: NAMESPACE.to_owned(),
        queue: queue.to_owned(),
    };
    Scaler { settings, cloudwatch: moto.cloudwatch(), ecs: ecs(moto) }
}

/// A queue name of this test's own, so datapoints never mix.
pub(crate) fn queue() -> String {
    format!("test.{}", uuid_like())
}

fn uuid_like() -> String {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{nanos:x}{:04x}", std::process::id() % 0xffff)
}
