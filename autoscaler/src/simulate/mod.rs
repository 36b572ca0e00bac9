//! `autoscaler simulate`: replays a demand trace through the same policy the Lambda and the
//! local loop run, so `SCALE_IN_WINDOW_SECONDS`, `AGENT_CONCURRENCY` (slots per agent),
//! `TARGET_SLOT_UTILISATION`, `MIN_WORKERS` and `MAX_WORKERS` can be tuned before deploying.
//!
//! The model: every `step` seconds, finished tasks leave, the trace's arrivals join the
//! queue, free slots (`AGENT_CONCURRENCY` per agent) take tasks in arrival order, the
//! policy decides on the sampled queue depth, in-flight count and busy slots, and the fleet
//! follows: new agents serve after `startup`, and scale-in removes only agents with every
//! slot free (as ECS does with task protection held while any slot is busy).

pub mod chart;

use std::collections::VecDeque;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::policy::{self, Bounds, Inputs, Sample};

/// One trace row: `arrivals` tasks arriving at `time_s`, each running `task_duration_s`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
pub struct TraceRow {
    pub time_s: f64,
    pub arrivals: u32,
    pub task_duration_s: f64,
}

/// One decision row of the output CSV.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub time_s: u64,
    pub arrivals: u32,
    pub queue_depth: u64,
    pub in_flight: u64,
    pub busy_workers: u32,
    pub current_workers: u32,
    pub desired_workers: u32,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct SimParams {
    pub bounds: Bounds,
    pub window_s: u64,
    pub step_s: u64,
    pub startup_s: u64,
}

struct Worker {
    ready_at: u64,
    /// Remaining seconds of each running task.
    tasks: Vec<f64>,
}

pub fn read_trace(path: &Path) -> anyhow::Result<Vec<TraceRow>> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).comment(Some(b'#')).from_path(path)?;
    let mut rows: Vec<TraceRow> = reader.deserialize().collect::<Result<_, _>>()?;
    if let Some(bad) = rows.iter().find(|r| r.time_s < 0.0 || r.task_duration_s <= 0.0) {
        anyhow::bail!("{}: negative time or non-positive duration in {bad:?}", path.display());
    }
    rows.sort_by(|a, b| a.time_s.total_cmp(&b.time_s));
    Ok(rows)
}

pub fn replay(trace: &[TraceRow], p: &SimParams) -> Vec<Row> {
    let step = p.step_s.max(1);
    let tpw = p.bounds.slots_per_agent.max(1) as usize;
    let slots = usize::try_from(p.window_s.div_ceil(step)).unwrap_or(usize::MAX).max(1);
    let last_arrival = trace.last().map_or(0.0, |r| r.time_s);
    let mut queue: VecDeque<f64> = VecDeque::new();
    let mut workers: Vec<Worker> = (0..p.bounds.min).map(|_| Worker { ready_at: 0, tasks: Vec::new() }).collect();
    let mut history: VecDeque<Sample> = VecDeque::new();
    let mut next = 0;
    let mut rows = Vec::new();
    let mut t = 0u64;
    loop {
        for w in &mut workers {
            w.tasks.iter_mut().for_each(|r| *r -= step as f64);
            w.tasks.retain(|r| *r > 1e-9);
        }
        let mut arrivals = 0;
        while next < trace.len() && trace[next].time_s <= t as f64 {
            arrivals += trace[next].arrivals;
            queue.extend(std::iter::repeat_n(trace[next].task_duration_s, trace[next].arrivals as usize));
            next += 1;
        }
        for w in workers.iter_mut().filter(|w| w.ready_at <= t) {
            while w.tasks.len() < tpw {
                let Some(d) = queue.pop_front() else { break };
                w.tasks.push(d);
            }
        }
        let in_flight = workers.iter().map(|w| w.tasks.len() as u64).sum();
        let busy = workers.iter().filter(|w| !w.tasks.is_empty()).count() as u32;
        // Every running task holds one slot.
        let busy_slots = in_flight;
        history.push_back(Sample::new(queue.len() as u64, in_flight));
        if history.len() > slots {
            history.pop_front();
        }
        let window: Vec<Sample> = history.iter().copied().collect();
        let current = workers.len() as u32;
        let d = policy::decide(&Inputs { window: &window, current, busy_slots: Some(busy_slots), bounds: p.bounds });
        if d.desired > current {
            workers.extend((current..d.desired).map(|_| Worker { ready_at: t + p.startup_s, tasks: Vec::new() }));
        } else {
            let mut excess = (current - d.desired) as usize;
            workers.retain(|w| {
                let remove = excess > 0 && w.tasks.is_empty();
                excess -= usize::from(remove);
                !remove
            });
        }
        rows.push(Row {
            time_s: t,
            arrivals,
            queue_depth: queue.len() as u64,
            in_flight,
            busy_workers: busy,
            current_workers: current,
            desired_workers: d.desired,
            reason: d.reason.as_str(),
        });
        let drained = next >= trace.len() && queue.is_empty() && in_flight == 0;
        if (drained && t as f64 >= last_arrival && workers.len() as u32 == p.bounds.min) || rows.len() > 1_000_000 {
            break;
        }
        t += step;
    }
    rows
}

pub fn write_rows(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    for r in rows {
        w.serialize(r)?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(min: u32, max: u32) -> SimParams {
        SimParams {
            bounds: Bounds { min, max, slots_per_agent: 1, utilisation_permille: 1000 },
            window_s: 60,
            step_s: 10,
            startup_s: 0,
        }
    }

    #[test]
    fn a_burst_scales_out_drains_and_returns_to_min() {
        let trace = [TraceRow { time_s: 10.0, arrivals: 8, task_duration_s: 30.0 }];
        let rows = replay(&trace, &params(1, 4));
        assert_eq!(rows.iter().map(|r| r.desired_workers).max(), Some(4), "clamped at max");
        assert!(rows.iter().all(|r| (1..=4).contains(&r.desired_workers)));
        let last = rows.last().expect("rows");
        assert_eq!((last.queue_depth, last.in_flight, last.desired_workers), (0, 0, 1));
        // Every scale-in keeps enough workers for the peak demand of the window before it.
        for (i, r) in rows.iter().enumerate().filter(|(_, r)| r.reason == "scale_in") {
            let window = rows[..=i].iter().rev().take(6);
            let peak = window.map(|w| w.queue_depth + w.in_flight).max().unwrap_or(0);
            assert!(u64::from(r.desired_workers) >= peak, "{r:?} below the window peak {peak}");
        }
    }

    #[test]
    fn slots_pack_a_burst_into_few_agents_and_never_stop_a_busy_one() {
        let trace = [TraceRow { time_s: 0.0, arrivals: 100, task_duration_s: 20.0 }];
        let single = replay(&trace, &SimParams { bounds: Bounds { max: 200, ..params(1, 1).bounds }, ..params(1, 1) });
        let dense = SimParams {
            bounds: Bounds { min: 1, max: 200, slots_per_agent: 64, utilisation_permille: 800 },
            ..params(1, 1)
        };
        let packed = replay(&trace, &dense);
        let peak = |rows: &[Row]| rows.iter().map(|r| r.desired_workers).max().unwrap_or(0);
        let agent_steps = |rows: &[Row]| rows.iter().map(|r| u64::from(r.current_workers)).sum::<u64>();
        assert_eq!(peak(&single), 100, "one task per agent");
        assert_eq!(peak(&packed), 2, "ceil(100 / (64 × 0.8))");
        assert!(
            agent_steps(&packed) * 10 < agent_steps(&single),
            "{} vs {}",
            agent_steps(&packed),
            agent_steps(&single)
        );
        // The fleet never drops below what its busy slots need: every task ran to its end.
        for r in &packed {
            assert!(u64::from(r.desired_workers) * 64 >= r.in_flight, "{r:?}");
        }
        assert_eq!(packed.last().map(|r| (r.queue_depth, r.in_flight)), Some((0, 0)));
    }

    #[test]
    fn an_empty_trace_holds_min() {
        let rows = replay(&[], &params(2, 5));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].desired_workers, 2);
    }
}
