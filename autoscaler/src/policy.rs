//! The scaling policy (ARCHITECTURE §6): one pure function shared by the Lambda, the local loop
//! and the simulator, so what operators tune in `simulate` is what runs in production.
//!
//! Guarantees, checked by the table and property tests in `policy_tests.rs`:
//! - the result lies in `[min, max]`;
//! - capacity is counted in slots: an agent holds `AGENT_CONCURRENCY` tasks, and the fleet
//!   is sized so demand fills `TARGET_SLOT_UTILISATION` of its slots;
//! - scale-out is immediate, to `min(want, max)`;
//! - scale-in goes no lower than the peak demand of the whole window, the agents the busy
//!   slots need and `min`, and only when every period of the window has data;
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

/// Fleet bounds and sizing; validated by the settings parsers (`min <= max`,
/// `slots_per_agent >= 1`, `utilisation_permille` in 1..=1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
    /// `AGENT_CONCURRENCY`: the tasks one agent runs at once.
    pub slots_per_agent: u32,
    /// `TARGET_SLOT_UTILISATION` in thousandths, so the sizing is exact integer arithmetic
    /// (a float `0.8 × 10` need not be 8).
    pub utilisation_permille: u32,
}

impl Bounds {
    /// Agents whose slots at the target utilisation hold `demand` tasks.
    pub fn agents_for(&self, demand: u64) -> u32 {
        let capacity = u64::from(self.slots_per_agent.max(1)) * u64::from(self.utilisation_permille.clamp(1, 1000));
        u32::try_from(demand.saturating_mul(1000).div_ceil(capacity)).unwrap_or(u32::MAX)
    }

    /// The fewest agents that can hold `busy_slots` running tasks (every slot full): the
    /// floor below which scale-in would have to stop an agent with a task.
    pub fn agents_holding(&self, busy_slots: u64) -> u32 {
        u32::try_from(busy_slots.div_ceil(u64::from(self.slots_per_agent.max(1)))).unwrap_or(u32::MAX)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs<'a> {
    /// One sample per period covering the scale-in window, oldest first.
    pub window: &'a [Sample],
    /// Workers the fleet has now (ECS desired count, or live local children).
    pub current: u32,
    /// Slots running a task across the fleet; `None` when the metric is missing.
    pub busy_slots: Option<u64>,
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
    /// The busy-slot metric is missing: scale-in held, as it could stop busy agents.
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
    /// `ceil(latest demand / (slots × utilisation))`, when any period has data.
    pub want: Option<u32>,
    /// `ceil(peak demand over the window / (slots × utilisation))`, when any period has data.
    pub window_want: Option<u32>,
}

impl Decision {
    pub fn changes(&self, current: u32) -> bool {
        self.desired != current
    }
}

/// The one scaling decision.
pub fn decide(inputs: &Inputs<'_>) -> Decision {
    let bounds = inputs.bounds;
    let Bounds { min, max, .. } = bounds;
    let clamp = |n: u32| n.clamp(min, max.max(min));
    let current = inputs.current;
    let demands: Vec<Option<u64>> = inputs.window.iter().map(Sample::demand).collect();
    let Some(latest) = demands.iter().rev().flatten().next().copied() else {
        let desired = clamp(current);
        let reason = if desired == current { Reason::NoData } else { Reason::Bounds };
        return Decision { desired, reason, want: None, window_want: None };
    };
    let peak = demands.iter().flatten().copied().max().unwrap_or(latest);
    let want = bounds.agents_for(latest);
    let window_want = bounds.agents_for(peak);
    let decision =
        |desired: u32, reason: Reason| Decision { desired, reason, want: Some(want), window_want: Some(window_want) };

    if want > current {
        let desired = clamp(want);
        // At max already (or max lowered below current): nothing to add.
        return if desired > current { decision(desired, Reason::ScaleOut) } else { hold(current, clamp, decision) };
    }
    let floor = window_want.max(bounds.agents_holding(inputs.busy_slots.unwrap_or(0)));
    if floor >= current {
        return hold(current, clamp, decision);
    }
    // Demand fits in fewer workers; shrink only on complete information.
    if demands.iter().any(Option::is_none) {
        return with_reason(hold(current, clamp, decision), Reason::GapInWindow);
    }
    if inputs.busy_slots.is_none() {
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
