//! The Lambda handler (EventBridge `rate(1 minute)`): read the window from CloudWatch and
//! the service from ECS, decide, resize only on change (not under `DRY_RUN`), publish the
//! `DesiredWorkers` metric. Clients are built once per container and reused across
//! invocations; a failed metrics read or ECS call fails the invocation, so it shows up in
//! the function's error metric instead of being swallowed.

use std::time::SystemTime;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::LambdaEvent;
use metrics_sidecar::cloudwatch::datum;
use proto::metric_names::DESIRED_WORKERS;
use runtime::telemetry::Chain;
use serde::Serialize;

use crate::config::LambdaSettings;
use crate::decision_log::{self, Action};
use crate::ecs::{self, EcsError};
use crate::metrics_window;
use crate::policy::{self, Decision, Inputs};

#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("reading metrics from CloudWatch failed")]
    Metrics(#[source] aws_sdk_cloudwatch::Error),
    #[error(transparent)]
    Ecs(#[from] EcsError),
}

/// The invocation's error as Lambda reports it: a stable type per failure and the cause.
impl From<ScaleError> for lambda_runtime::Diagnostic {
    fn from(e: ScaleError) -> Self {
        let error_type = match &e {
            ScaleError::Metrics(_) => "MetricsReadFailed",
            ScaleError::Ecs(EcsError::NotFound { .. }) => "EcsServiceNotFound",
            ScaleError::Ecs(EcsError::Api { .. }) => "EcsCallFailed",
        };
        let message = Chain(&e).to_string();
        tracing::error!(error_type, error.cause_chain = %message, "scaling invocation failed");
        Self { error_type: error_type.to_owned(), error_message: message }
    }
}

/// What one invocation did; also the handler's JSON response.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub current: u32,
    pub running: u32,
    pub decision: Decision,
    pub updated: bool,
    pub dry_run: bool,
}

pub struct Scaler {
    pub settings: LambdaSettings,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub ecs: aws_sdk_ecs::Client,
}

impl Scaler {
    pub fn new(settings: LambdaSettings, sdk: &aws_config::SdkConfig) -> Self {
        Self { settings, cloudwatch: aws_sdk_cloudwatch::Client::new(sdk), ecs: aws_sdk_ecs::Client::new(sdk) }
    }

    /// The `lambda_runtime` entry point; the event's content does not matter, only its arrival.
    pub async fn handle(&self, event: LambdaEvent<EventBridgeEvent>) -> Result<Outcome, ScaleError> {
        tracing::debug!(detail_type = %event.payload.detail_type, request_id = %event.context.request_id, "invoked");
        self.evaluate(SystemTime::now()).await
    }

    pub async fn evaluate(&self, now: SystemTime) -> Result<Outcome, ScaleError> {
        let s = &self.settings;
        let slots = s.policy.slots(metrics_window::PERIOD);
        let window = metrics_window::read(&self.cloudwatch, &s.namespace, &s.queue, slots, now)
            .await
            .map_err(ScaleError::Metrics)?;
        let service = ecs::describe(&self.ecs, &s.cluster, &s.service).await?;
        let inputs = Inputs {
            window: &window.samples,
            current: service.desired,
            busy_slots: window.busy_slots,
            bounds: s.policy.bounds,
        };
        let decision = policy::decide(&inputs);
        let action = match (decision.changes(service.desired), s.dry_run) {
            (false, _) => Action::None,
            (true, true) => Action::DryRun,
            (true, false) => Action::Applied,
        };
        decision_log::log("lambda", &inputs, &decision, action);
        if action == Action::Applied {
            ecs::set_desired(&self.ecs, &s.cluster, &s.service, decision.desired).await?;
        }
        self.put_desired(decision.desired).await;
        Ok(Outcome {
            current: service.desired,
            running: service.running,
            decision,
            updated: action == Action::Applied,
            dry_run: s.dry_run,
        })
    }

    /// `DesiredWorkers` beside the sidecar's metrics, for the dashboard's desired-vs-running
    /// graph. A failure here is logged only: the resize already happened.
    async fn put_desired(&self, desired: u32) {
        let s = &self.settings;
        let put = self
            .cloudwatch
            .put_metric_data()
            .namespace(&s.namespace)
            .metric_data(datum(&s.queue, DESIRED_WORKERS, u64::from(desired), SystemTime::now()))
            .send()
            .await;
        if let Err(e) = put {
            tracing::warn!(error = %aws_sdk_cloudwatch::error::DisplayErrorContext(e), "cannot publish DesiredWorkers");
        }
    }
}
