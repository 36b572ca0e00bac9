//! Publishing one interval's reading to CloudWatch: one `PutMetricData` call carrying every
//! known value (a failed read is left out, never sent as zero), retried with backoff until
//! the next interval is due, then logged and dropped. Never fatal: the fleet keeps running
//! on stale metrics, and the autoscaler holds when they stop arriving.

use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use proto::metric_names::{
    BUSY_SLOTS, BUSY_WORKERS, DEAD_LETTER_DEPTH, IN_FLIGHT, QUEUE_DEPTH, QUEUE_NAME, TOTAL_SLOTS, WORKERS,
};
use runtime::backoff::{self, Backoff};
use tokio::time::Instant;

use crate::probe::Reading;

/// The named values of a reading that are known, in a fixed order.
pub fn values(reading: &Reading) -> Vec<(&'static str, u64)> {
    let agents = reading.agents;
    [
        (QUEUE_DEPTH, reading.ready.map(u64::from)),
        (IN_FLIGHT, agents.map(|a| a.running_tasks)),
        (WORKERS, agents.map(|a| a.count)),
        (BUSY_WORKERS, agents.map(|a| a.busy)),
        (BUSY_SLOTS, agents.map(|a| a.running_tasks)),
        (TOTAL_SLOTS, agents.map(|a| a.slots)),
        (DEAD_LETTER_DEPTH, reading.dlq_ready.map(u64::from)),
    ]
    .into_iter()
    .filter_map(|(name, v)| Some((name, v?)))
    .collect()
}

/// A `Count` datum with the `QueueName` dimension.
pub fn datum(queue: &str, name: &str, value: u64, at: SystemTime) -> MetricDatum {
    MetricDatum::builder()
        .metric_name(name)
        .dimensions(Dimension::builder().name(QUEUE_NAME).value(queue).build())
        .value(value as f64)
        .unit(StandardUnit::Count)
        .timestamp(DateTime::from(at))
        .build()
}

/// Where readings go: CloudWatch, or only the log.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: Option<Client>,
    namespace: String,
}

impl Publisher {
    pub fn cloudwatch(client: Client, namespace: &str) -> Self {
        Self { client: Some(client), namespace: namespace.to_owned() }
    }

    pub fn log_only(namespace: &str) -> Self {
        Self { client: None, namespace: namespace.to_owned() }
    }

    pub fn is_log_only(&self) -> bool {
        self.client.is_none()
    }

    /// Publishes `values` in one call, retrying until `deadline`; `Err` carries the last error.
    pub async fn publish(&self, queue: &str, values: &[(&str, u64)], deadline: Instant) -> Result<(), String> {
        let Some(client) = &self.client else { return Ok(()) };
        if values.is_empty() {
            return Ok(());
        }
        let now = SystemTime::now();
        let data: Vec<MetricDatum> = values.iter().map(|(name, v)| datum(queue, name, *v, now)).collect();
        let put = || async {
            let call = client.put_metric_data().namespace(&self.namespace).set_metric_data(Some(data.clone())).send();
            call.await.map(|_| ()).map_err(|e| {
                metrics::counter!("euglena_cloudwatch_put_errors_total").increment(1);
                aws_sdk_cloudwatch::error::DisplayErrorContext(e).to_string()
            })
        };
        let again = |error: &String, delay: Duration, attempt: u32| {
            if Instant::now() + delay >= deadline {
                return false;
            }
            tracing::warn!(error = %error, attempt, retry_in_ms = delay.as_millis() as u64,
                "PutMetricData failed; retrying");
            true
        };
        backoff::retry(Backoff::new(Duration::from_millis(500), Duration::from_secs(5)), None, put, again).await
    }
}

#[cfg(test)]
mod tests {
    use proto::presence::AgentCount;

    use super::*;

    #[test]
    fn missing_reads_are_left_out_not_zeroed() {
        let full = Reading {
            ready: Some(3),
            consumers: Some(1),
            dlq_ready: Some(2),
            agents: Some(AgentCount { count: 2, busy: 1, idle: 1, running_tasks: 2, slots: 8 }),
        };
        assert_eq!(
            values(&full),
            vec![
                (QUEUE_DEPTH, 3),
                (IN_FLIGHT, 2),
                (WORKERS, 2),
                (BUSY_WORKERS, 1),
                (BUSY_SLOTS, 2),
                (TOTAL_SLOTS, 8),
                (DEAD_LETTER_DEPTH, 2)
            ]
        );
        let broker_down = Reading { ready: None, consumers: None, dlq_ready: None, ..full };
        assert_eq!(
            values(&broker_down),
            vec![(IN_FLIGHT, 2), (WORKERS, 2), (BUSY_WORKERS, 1), (BUSY_SLOTS, 2), (TOTAL_SLOTS, 8)]
        );
        assert!(values(&Reading::default()).is_empty());
    }

    #[test]
    fn datum_has_the_contract_shape() {
        let d = datum("agent.mandates", QUEUE_DEPTH, 7, SystemTime::now());
        assert_eq!(d.metric_name(), Some("QueueDepth"));
        assert_eq!(d.unit(), Some(&StandardUnit::Count));
        assert_eq!(d.value(), Some(7.0));
        let dim = &d.dimensions()[0];
        assert_eq!((dim.name(), dim.value()), (Some("QueueName"), Some("agent.mandates")));
    }
}
