//! The autoscaler Lambda (`provided.al2023`): EventBridge `rate(1 minute)` → one decision.
//! Settings and AWS clients are built once per container, before the runtime loop.

use std::sync::Arc;

use autoscaler::config::LambdaSettings;
use autoscaler::lambda::Scaler;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use runtime::config::{Env, cli_args, exit_on_config_error};

const HELP: &str = "\
The Euglena autoscaler Lambda handler (runs under the Lambda runtime, or `cargo lambda watch`).
Reads QueueDepth/InFlight/BusySlots over SCALE_IN_WINDOW_SECONDS from CloudWatch, the
ECS service (ECS_CLUSTER, ECS_SERVICE), and sets its desired count (not with DRY_RUN=true).
See the README's configuration table.";

#[tokio::main]
async fn main() -> Result<(), Error> {
    let _ = cli_args("bootstrap", HELP);
    let settings =
        LambdaSettings::from_env(&Env::from_process()).unwrap_or_else(|e| exit_on_config_error("bootstrap", &e));
    runtime::telemetry::init();
    let sdk = metrics_sidecar::aws::load().await;
    let scaler = Arc::new(Scaler::new(settings, &sdk));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<EventBridgeEvent>| {
        let scaler = scaler.clone();
        async move { scaler.handle(event).await }
    }))
    .await
}
