//! The ECS side of the Lambda: read the agent service's counts, set its desired count.

use aws_sdk_ecs::Client;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCounts {
    pub desired: u32,
    pub running: u32,
    pub pending: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    #[error("ECS service {service} not found in cluster {cluster}: {reason}")]
    NotFound { cluster: String, service: String, reason: String },
    #[error("ECS {call} for service {service} in cluster {cluster} failed: {message}")]
    Api { call: &'static str, cluster: String, service: String, message: String },
}

fn api(call: &'static str, cluster: &str, service: &str) -> impl FnOnce(aws_sdk_ecs::Error) -> EcsError {
    move |e| EcsError::Api {
        call,
        cluster: cluster.to_owned(),
        service: service.to_owned(),
        message: aws_sdk_ecs::error::DisplayErrorContext(e).to_string(),
    }
}

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

pub async fn describe(ecs: &Client, cluster: &str, service: &str) -> Result<ServiceCounts, EcsError> {
    let out = ecs
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .map_err(|e| api("DescribeServices", cluster, service)(e.into()))?;
    let not_found =
        |reason: String| EcsError::NotFound { cluster: cluster.to_owned(), service: service.to_owned(), reason };
    if let Some(failure) = out.failures().first() {
        return Err(not_found(failure.reason().unwrap_or("unknown").to_owned()));
    }
    // A deleted service is still described for a while, with status INACTIVE.
    let svc = out
        .services()
        .iter()
        .find(|s| s.status() != Some("INACTIVE"))
        .ok_or_else(|| not_found("no active service".to_owned()))?;
    Ok(ServiceCounts {
        desired: count(svc.desired_count()),
        running: count(svc.running_count()),
        pending: count(svc.pending_count()),
    })
}

pub async fn set_desired(ecs: &Client, cluster: &str, service: &str, desired: u32) -> Result<(), EcsError> {
    // MAX_WORKERS is at most 1000, far inside i32.
    let count = i32::try_from(desired).unwrap_or(i32::MAX);
    ecs.update_service()
        .cluster(cluster)
        .service(service)
        .desired_count(count)
        .send()
        .await
        .map_err(|e| api("UpdateService", cluster, service)(e.into()))?;
    Ok(())
}
