use std::time::{Duration, SystemTime};

use autoscaler::ecs::EcsError;
use autoscaler::lambda::ScaleError;
use autoscaler::policy::Reason;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{Context, Diagnostic, LambdaEvent};

use crate::aws::{create_service, desired_count, ecs, publish, publish_window, queue, scaler};
use crate::moto::{Moto, read_metric};

fn scheduled_event() -> LambdaEvent<EventBridgeEvent> {
    let fixture = include_str!("../../fixtures/scheduled-event.json");
    let event: EventBridgeEvent = serde_json::from_str(fixture).expect("fixture parses");
    assert_eq!(event.detail_type, "Scheduled Event");
    LambdaEvent::new(event, Context::default())
}

#[tokio::test]
async fn a_burst_scales_the_service_out_and_a_quiet_window_back_in() {
    let moto = Moto::start();
    let ecs = ecs(&moto);
    create_service(&ecs, 1).await;
    let q = queue();
    let scaler = scaler(&moto, &q, 5, false);

    // 6 waiting + 1 running wants 7 workers; max is 5.
    publish(&scaler.cloudwatch, &q, SystemTime::now(), (6, 1, 1)).await;
    let out = scaler.handle(scheduled_event()).await.expect("invocation");
    assert_eq!((out.current, out.decision.desired, out.decision.reason), (1, 5, Reason::ScaleOut));
    assert!(out.updated);
    assert_eq!(desired_count(&ecs).await, 5);
    let desired = read_metric(&scaler.cloudwatch, crate::aws::NAMESPACE, &q, "DesiredWorkers").await;
    assert_eq!(desired.last(), Some(&5.0), "DesiredWorkers published");

    // Same data again: no change, no UpdateService.
    let again = scaler.evaluate(SystemTime::now()).await.expect("invocation");
    assert_eq!((again.decision.desired, again.updated), (5, false));

    // An hour later: five quiet minutes with 2 tasks in 2 busy slots (one each) → scale in to 2.
    let later = SystemTime::now() + Duration::from_secs(3600);
    publish_window(&scaler.cloudwatch, &q, later, (0, 2, 2)).await;
    let quiet = scaler.evaluate(later).await.expect("invocation");
    assert_eq!((quiet.decision.desired, quiet.decision.reason, quiet.updated), (2, Reason::ScaleIn, true));
    assert_eq!(desired_count(&ecs).await, 2);
}

#[tokio::test]
async fn dry_run_decides_but_changes_nothing() {
    let moto = Moto::start();
    let ecs = ecs(&moto);
    create_service(&ecs, 1).await;
    let q = queue();
    let scaler = scaler(&moto, &q, 11, true);
    publish(&scaler.cloudwatch, &q, SystemTime::now(), (3, 0, 0)).await;
    let out = scaler.handle(scheduled_event()).await.expect("invocation");
    assert_eq!((out.decision.desired, out.updated, out.dry_run), (3, false, true));
    assert_eq!(desired_count(&ecs).await, 1, "DRY_RUN must not touch the service");
}

#[tokio::test]
async fn missing_metrics_hold_the_current_count() {
    let moto = Moto::start();
    let ecs = ecs(&moto);
    create_service(&ecs, 4).await;
    let scaler = scaler(&moto, &queue(), 11, false);
    let out = scaler.handle(scheduled_event()).await.expect("invocation");
    assert_eq!((out.decision.desired, out.decision.reason, out.updated), (4, Reason::NoData, false));
    assert_eq!(desired_count(&ecs).await, 4);
}

#[tokio::test]
async fn an_ecs_error_fails_the_invocation() {
    let moto = Moto::start();
    // No cluster, no service.
    let q = queue();
    let scaler = scaler(&moto, &q, 11, false);
    publish(&scaler.cloudwatch, &q, SystemTime::now(), (3, 0, 0)).await;
    let err = scaler.handle(scheduled_event()).await.expect_err("must fail");
    assert!(matches!(err, ScaleError::Ecs(_)), "{err:?}");
    let diagnostic = Diagnostic::from(err);
    assert!(diagnostic.error_type.starts_with("Ecs"), "{diagnostic:?}");
    assert!(diagnostic.error_message.contains("agents"), "names the service: {diagnostic:?}");

    // The cluster exists, the service does not.
    let ecs = ecs(&moto);
    ecs.create_cluster().cluster_name(crate::aws::CLUSTER).send().await.expect("create cluster");
    let err = scaler.evaluate(SystemTime::now()).await.expect_err("must fail");
    assert!(matches!(err, ScaleError::Ecs(EcsError::NotFound { .. })), "{err:?}");
    assert_eq!(Diagnostic::from(err).error_type, "EcsServiceNotFound");
}

#[tokio::test]
async fn a_metrics_error_fails_the_invocation_with_its_cause() {
    // Nothing listens on port 1: the CloudWatch read fails before ECS is asked.
    let moto = Moto::start();
    let mut scaler = scaler(&moto, &queue(), 11, false);
    scaler.cloudwatch = crate::moto::cloudwatch_at("http://127.0.0.1:1");
    let err = scaler.handle(scheduled_event()).await.expect_err("must fail");
    assert!(matches!(err, ScaleError::Metrics(_)), "{err:?}");
    assert!(std::error::Error::source(&err).is_some(), "the SDK error is kept as the source: {err:?}");
    let diagnostic = Diagnostic::from(err);
    assert_eq!(diagnostic.error_type, "MetricsReadFailed");
    let message = &diagnostic.error_message;
    assert!(message.starts_with("reading metrics from CloudWatch failed: "), "{message}");
    assert!(message.len() > "reading metrics from CloudWatch failed: ".len() + 10, "says why: {message}");
}
