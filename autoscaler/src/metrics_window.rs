//! Reads the scale-in window from CloudWatch for the Lambda: `QueueDepth`, `InFlight` and
//! `BusySlots` (statistic `Maximum`, so a spike inside a minute still counts) in one
//! `GetMetricData` call, bucketed into one [`Sample`] per period, oldest first.
//!
//! A period without a datapoint stays missing (`None`), never zero. The newest period is
//! still being filled, so it is dropped when empty rather than reported as a gap; CloudWatch
//! ingestion lag would otherwise block every scale-in.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use proto::metric_names::{BUSY_SLOTS, IN_FLIGHT, QUEUE_DEPTH, QUEUE_NAME};

use crate::policy::Sample;

/// CloudWatch's standard resolution: the sidecar's 10 s datapoints aggregate per minute.
pub const PERIOD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub samples: Vec<Sample>,
    /// The highest `BusySlots` of the two newest periods; `None` when neither has one.
    pub busy_slots: Option<u64>,
}

/// Period-aligned `[start, end)` with `slots` periods, the last one containing `now`.
pub fn bounds(now: SystemTime, slots: usize) -> (SystemTime, SystemTime) {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let period = PERIOD.as_secs();
    let end = UNIX_EPOCH + Duration::from_secs((secs / period + 1) * period);
    let start = end - PERIOD * u32::try_from(slots).unwrap_or(u32::MAX);
    (start, end)
}

fn query(id: &str, namespace: &str, queue: &str, name: &str) -> MetricDataQuery {
    let metric = Metric::builder()
        .namespace(namespace)
        .metric_name(name)
        .dimensions(Dimension::builder().name(QUEUE_NAME).value(queue).build())
        .build();
    let stat = MetricStat::builder().metric(metric).period(PERIOD.as_secs() as i32).stat("Maximum").build();
    MetricDataQuery::builder().id(id).metric_stat(stat).return_data(true).build()
}

pub async fn read(
    cw: &Client,
    namespace: &str,
    queue: &str,
    slots: usize,
    now: SystemTime,
) -> Result<Window, aws_sdk_cloudwatch::Error> {
    let (start, end) = bounds(now, slots);
    // slot → (ready, in_flight, busy)
    let mut by_slot: BTreeMap<usize, [Option<u64>; 3]> = BTreeMap::new();
    let mut next_token: Option<String> = None;
    loop {
        let out = cw
            .get_metric_data()
            .metric_data_queries(query("ready", namespace, queue, QUEUE_DEPTH))
            .metric_data_queries(query("flight", namespace, queue, IN_FLIGHT))
            .metric_data_queries(query("busy", namespace, queue, BUSY_SLOTS))
            .start_time(DateTime::from(start))
            .end_time(DateTime::from(end))
            .scan_by(ScanBy::TimestampAscending)
            .set_next_token(next_token.take())
            .send()
            .await?;
        for result in out.metric_data_results() {
            let column = match result.id() {
                Some("ready") => 0,
                Some("flight") => 1,
                _ => 2,
            };
            for (ts, value) in result.timestamps().iter().zip(result.values()) {
                let Some(slot) = slot_of(start, ts, slots) else { continue };
                let cell = &mut by_slot.entry(slot).or_default()[column];
                let v = value.max(0.0).round() as u64;
                *cell = Some(cell.map_or(v, |c| c.max(v)));
            }
        }
        next_token = out.next_token().map(str::to_owned);
        if next_token.is_none() {
            break;
        }
    }
    let mut cells: Vec<[Option<u64>; 3]> = (0..slots).map(|s| by_slot.get(&s).copied().unwrap_or_default()).collect();
    if cells.last().is_some_and(|c| c.iter().all(Option::is_none)) {
        cells.pop();
    }
    let busy_slots = cells.iter().rev().take(2).filter_map(|c| c[2]).max();
    let samples = cells.iter().map(|c| Sample { ready: c[0], in_flight: c[1] }).collect();
    Ok(Window { samples, busy_slots })
}

fn slot_of(start: SystemTime, ts: &DateTime, slots: usize) -> Option<usize> {
    let start = start.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let ts = u64::try_from(ts.secs()).ok()?;
    let slot = usize::try_from(ts.checked_sub(start)? / PERIOD.as_secs()).ok()?;
    (slot < slots).then_some(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_period_aligned_and_contains_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_030);
        let (start, end) = bounds(now, 5);
        assert_eq!(end.duration_since(UNIX_EPOCH).expect("epoch").as_secs(), 1_000_080);
        assert_eq!(start.duration_since(UNIX_EPOCH).expect("epoch").as_secs(), 1_000_080 - 300);
        assert!(now < end && now >= end - PERIOD);
        let ts = DateTime::from_secs(1_000_020);
        assert_eq!(slot_of(start, &ts, 5), Some(4));
        assert_eq!(slot_of(start, &DateTime::from_secs(1_000_080), 5), None);
    }
}
