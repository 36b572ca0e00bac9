//! AWS SDK configuration shared with the autoscaler: the default provider chain (which
//! honours `AWS_REGION` and `AWS_ENDPOINT_URL`, so a local `moto_server` stands in for
//! AWS), with timeouts on every call, and the check that decides log-only mode.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_cloudwatch::config::ProvideCredentials;

/// Connect, per-attempt and whole-operation bounds for every AWS call.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(15))
        .build()
}

/// Loads the SDK configuration from the process environment, once per process.
pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts()).load().await
}

/// Whether the provider chain yields credentials; bounded, since the chain may probe the
/// EC2/ECS metadata endpoints, which do not exist off AWS.
pub async fn has_credentials(config: &SdkConfig) -> Result<(), String> {
    let Some(provider) = config.credentials_provider() else {
        return Err("no credentials provider configured".to_owned());
    };
    match tokio::time::timeout(Duration::from_secs(10), provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("looking up credentials timed out".to_owned()),
    }
}
