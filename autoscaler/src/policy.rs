//! The scaling policy (ARCHITECTURE §6): one pure function shared by the Lambda, the local loop
//! and the simulator, so what operators tune in `simulate` is what runs in production.
//!
//! Guarantees, checked by the table and property tests in `policy_tests.rs`:
//! - the result lies in `[min, max]`;
//! - scale-out is immediate, to `min(want, max)`;
//! - scale-in goes no lower than the peak demand of the whole window, the busy workers
//!   and `min`, and only when every period of the window has data;
//! - a missing metric is never read as zero: no data at all holds the current count.

use serde::Serialize;

/// One period's metrics; `None` where the metric was not published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub ready: Option<u64>,
    pub in_flight: Option<u64>,
}

impl Sample {
    pub fn new(ready: u64, in_flight: u64) -> Self {
        Self { ready: Some(ready), in_flight: Some(in_flight) }
    }

    pub const MISSING: Self = Self { ready: None, in_flight: None };

    /// Tasks waiting or running; unknown unless both halves are known.
    pub fn demand(&self) -> Option<u64> {
        Some(self.ready?.saturating_add(self.in_flight?))
    }
}

/// Fleet bounds and sizing; validated by the settings parsers (`min <= max`, `tpw >= 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
    pub tasks_per_worker: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs<'a> {
    /// One sample per period covering the scale-in window, oldest first.
    pub window: &'a [Sample],
    /// Workers the fleet has now (ECS desired count, or live local children).
    pub current: u32,
    /// Workers running at least one task; `None` when the metric is missing.
    pub busy: Option<u32>,
    pub bounds: Bounds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Latest demand needs more workers than there are.
    ScaleOut,
    /// Demand over the whole window fits in fewer workers.
    ScaleIn,
    /// The fleet already matches demand (or the window still remembers a peak).
    Steady,
    /// Not one period of the window has both metrics: hold.
    NoData,
    /// Some period of the window has no data: scale-out allowed, scale-in held.
    GapInWindow,
    /// The busy-worker metric is missing: scale-in held, as it could stop busy workers.
    BusyUnknown,
    /// The current count lies outside `[min, max]` (bounds changed): moved inside.
    Bounds,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaleOut => "scale_out",
            Self::ScaleIn => "scale_in",
            Self::Steady => "steady",
            Self::NoData => "no_data",
            Self::GapInWindow => "gap_in_window",
            Self::BusyUnknown => "busy_unknown",
            Self::Bounds => "bounds",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub desired: u32,
    pub reason: Reason,
    /// `ceil(latest demand / tpw)`, when any period has data.
    pub want: Option<u32>,
    /// `ceil(peak demand over the window / tpw)`, when any period has data.
    pub window_want: Option<u32>,
}

impl Decision {
    pub fn changes(&self, current: u32) -> bool {
        self.desired != current
    }
}

fn workers_for(demand: u64, tasks_per_worker: u32) -> u32 {
    let tpw = u64::from(tasks_per_worker.max(1));
    u32::try_from(demand.div_ceil(tpw)).unwrap_or(u32::MAX)
}

/// The one scaling decision.
pub fn decide(inputs: &Inputs<'_>) -> Decision {
    let Bounds { min, max, tasks_per_worker } = inputs.bounds;
    let clamp = |n: u32| n.clamp(min, max.max(min));
    let current = inputs.current;
    let demands: Vec<Option<u64>> = inputs.window.iter().map(Sample::demand).collect();
    let Some(latest) = demands.iter().rev().flatten().next().copied() else {
        let desired = clamp(current);
        let reason = if desired == current { Reason::NoData } else { Reason::Bounds };
        return Decision { desired, reason, want: None, window_want: None };
    };
    let peak = demands.iter().flatten().copied().max().unwrap_or(latest);
    let want = workers_for(latest, tasks_per_worker);
    let window_want = workers_for(peak, tasks_per_worker);
    let decision =
        |desired: u32, reason: Reason| Decision { desired, reason, want: Some(want), window_want: Some(window_want) };

    if want > current {
        let desired = clamp(want);
        // At max already (or max lowered below current): nothing to add.
        return if desired > current { decision(desired, Reason::ScaleOut) } else { hold(current, clamp, decision) };
    }
    let floor = window_want.max(inputs.busy.unwrap_or(0));
    if floor >= current {
        return hold(current, clamp, decision);
    }
    // Demand fits in fewer workers; shrink only on complete information.
    if demands.iter().any(Option::is_none) {
        return with_reason(hold(current, clamp, decision), Reason::GapInWindow);
    }
    if inputs.busy.is_none() {
        return with_reason(hold(current, clamp, decision), Reason::BusyUnknown);
    }
    let desired = clamp(floor);
    if desired < current { decision(desired, Reason::ScaleIn) } else { hold(current, clamp, decision) }
}

/// Keeps `current`, unless the bounds moved away from it.
fn hold(current: u32, clamp: impl Fn(u32) -> u32, decision: impl Fn(u32, Reason) -> Decision) -> Decision {
    let desired = clamp(current);
    decision(desired, if desired == current { Reason::Steady } else { Reason::Bounds })
}

/// A hold keeps its more specific reason, unless the bounds forced a move.
fn with_reason(d: Decision, reason: Reason) -> Decision {
    if d.reason == Reason::Steady { Decision { reason, ..d } } else { d }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
