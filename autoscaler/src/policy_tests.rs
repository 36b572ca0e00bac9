//! Table tests for the cases operators ask about, property tests for the invariants.

use proptest::prelude::*;

use super::*;

/// name, window, current, busy, bounds → expected desired, reason.
type Case = (&'static str, Vec<Sample>, u32, Option<u64>, Bounds, u32, Reason);

/// One slot per agent at full utilisation: the Python design, where slots and agents coincide.
const B: Bounds = Bounds { min: 1, max: 11, slots_per_agent: 1, utilisation_permille: 1000 };

fn run(window: &[Sample], current: u32, busy_slots: Option<u64>, bounds: Bounds) -> Decision {
    decide(&Inputs { window, current, busy_slots, bounds })
}

fn flat(n: usize, ready: u64, in_flight: u64) -> Vec<Sample> {
    vec![Sample::new(ready, in_flight); n]
}

#[test]
fn table() {
    let s = Sample::new;
    let m = Sample::MISSING;
    let zero_min = Bounds { min: 0, ..B };
    let tpw3 = Bounds { slots_per_agent: 3, ..B };
    let dense = Bounds { min: 1, max: 11, slots_per_agent: 10, utilisation_permille: 800 };
    let dense_zero = Bounds { min: 0, ..dense };
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("burst scales out at once",            vec![s(0, 1), s(0, 1), s(7, 1)], 1, Some(1), B, 8, Reason::ScaleOut),
        ("burst beyond max is clamped",         vec![s(0, 0), s(40, 2)],         2, Some(2), B, 11, Reason::ScaleOut),
        ("at max: hold",                        vec![s(40, 11)],                11, Some(11), B, 11, Reason::Steady),
        ("slots per agent divide, rounds up",  vec![s(5, 2)],                   1, Some(1), tpw3, 3, Reason::ScaleOut),
        ("slots at 80 %: 16 tasks, 2 agents",  vec![s(10, 6)],                  1, Some(6), dense, 2, Reason::ScaleOut),
        ("slots at 80 %: 17 tasks, 3 agents",  vec![s(11, 6)],                  1, Some(6), dense, 3, Reason::ScaleOut),
        ("one task wakes a zero fleet",        vec![s(0, 0), s(1, 0)],          0, Some(0), dense_zero, 1, Reason::ScaleOut),
        ("busy slots floor the scale-in",      flat(5, 0, 2),                   4, Some(19), dense, 2, Reason::ScaleIn),
        ("slots free up: scale in to demand",  flat(5, 0, 7),                   3, Some(7), dense, 1, Reason::ScaleIn),
        ("trickle: one worker suffices",        vec![s(1, 0), s(0, 1), s(0, 0)], 1, Some(0), B, 1, Reason::Steady),
        ("window remembers the peak",           vec![s(5, 0), s(0, 1), s(0, 0)], 5, Some(1), B, 5, Reason::Steady),
        ("scale in after a quiet window",       flat(5, 0, 2),                   5, Some(2), B, 2, Reason::ScaleIn),
        ("long tasks, empty queue: keep busy",  flat(5, 0, 3),                   6, Some(3), B, 3, Reason::ScaleIn),
        ("busy above demand floor",             flat(5, 0, 1),                   4, Some(7), tpw3, 3, Reason::ScaleIn),
        ("busy workers are never scaled in",    flat(5, 0, 4),                   4, Some(4), B, 4, Reason::Steady),
        ("min 0 scales to zero",                flat(5, 0, 0),                   3, Some(0), zero_min, 0, Reason::ScaleIn),
        ("min 0, work arrives",                 vec![s(0, 0), s(1, 0)],          0, Some(0), zero_min, 1, Reason::ScaleOut),
        ("min 1 floors an idle fleet",          flat(5, 0, 0),                   3, Some(0), B, 1, Reason::ScaleIn),
        ("metric gap: hold",                    vec![m, m, m],                   4, None, B, 4, Reason::NoData),
        ("empty window: hold",                  vec![],                          4, Some(0), B, 4, Reason::NoData),
        ("half a sample is no sample",          vec![Sample { ready: Some(0), in_flight: None }], 4, Some(0), B, 4, Reason::NoData),
        ("gap blocks scale-in",                 vec![s(0, 0), m, s(0, 0)],       4, Some(0), B, 4, Reason::GapInWindow),
        ("gap does not block scale-out",        vec![s(0, 0), m, s(9, 0)],       4, None, B, 9, Reason::ScaleOut),
        ("busy unknown blocks scale-in",        flat(3, 0, 0),                   4, None, B, 4, Reason::BusyUnknown),
        ("no data below min: raise to min",     vec![m],                         0, None, B, 1, Reason::Bounds),
        ("max lowered below current",           flat(3, 20, 0),                 15, Some(0), B, 11, Reason::Bounds),
    ];
    for (name, window, current, busy, bounds, desired, reason) in cases {
        let d = run(&window, current, busy, bounds);
        assert_eq!((d.desired, d.reason), (desired, reason), "{name}: {d:?}");
    }
}

#[test]
fn no_flapping_on_a_noisy_steady_load() {
    // Demand wanders between 4 and 7 around a steady mean, its peak recurring within every
    // 5-period window: the fleet settles at the peak and stays there.
    let noise = [5u64, 7, 4, 6, 5, 4, 7, 6, 5, 4, 6, 7, 5, 4, 5, 6, 7, 4, 5, 6, 4, 7, 5, 6, 5, 7, 6, 7, 4, 5];
    let mut history: Vec<Sample> = Vec::new();
    let mut current = 1;
    let mut changes = 0;
    for (i, d) in noise.iter().enumerate() {
        history.push(Sample::new(d / 2, d - d / 2));
        let window = &history[history.len().saturating_sub(5)..];
        let decision = run(window, current, Some((d - d / 2).min(4)), B);
        if decision.desired != current {
            changes += 1;
            assert!(decision.desired > current || i < 5, "scaled in at period {i}: {decision:?}");
        }
        current = decision.desired;
    }
    assert!(changes <= 2, "{changes} changes on a steady load");
    assert_eq!(current, 7);
}

fn sample() -> impl Strategy<Value = Sample> {
    (prop::option::weighted(0.9, 0u64..60), prop::option::weighted(0.9, 0u64..30))
        .prop_map(|(ready, in_flight)| Sample { ready, in_flight })
}

fn bounds() -> impl Strategy<Value = Bounds> {
    (0u32..5, 0u32..20, prop::sample::select(vec![1u32, 2, 3, 16, 64, 256]), 1u32..=1000).prop_map(
        |(min, span, slots_per_agent, utilisation_permille)| Bounds {
            min,
            max: min + span,
            slots_per_agent,
            utilisation_permille,
        },
    )
}

proptest! {
    #[test]
    fn invariants(window in prop::collection::vec(sample(), 0..12), current in 0u32..30,
                  busy in prop::option::weighted(0.8, 0u64..2000), bounds in bounds()) {
        // No more busy slots than the current agents have.
        let busy = busy.map(|b| b.min(u64::from(current) * u64::from(bounds.slots_per_agent)));
        let d = run(&window, current, busy, bounds);
        let demands: Vec<Option<u64>> = window.iter().map(Sample::demand).collect();
        // Always within bounds.
        prop_assert!(d.desired >= bounds.min && d.desired <= bounds.max, "{d:?}");
        // No data at all: hold (within bounds), never read as zero.
        if demands.iter().all(Option::is_none) {
            prop_assert_eq!(d.desired, current.clamp(bounds.min, bounds.max));
        }
        // Scale-out reaches min(want, max) at once.
        if let Some(want) = d.want.filter(|w| *w > current) {
            prop_assert!(d.desired >= want.min(bounds.max), "{d:?}");
        }
        // Scale-in: never below the window's peak, the agents the busy slots need (unless max
        // forbids), or min, and only with complete data.
        if d.desired < current && current <= bounds.max {
            prop_assert!(demands.iter().all(Option::is_some));
            let busy = busy.expect("scale-in needs the busy count");
            prop_assert!(d.desired >= bounds.agents_holding(busy).min(bounds.max));
            prop_assert!(d.desired >= d.window_want.expect("data").min(bounds.max));
        }
    }

    #[test]
    fn decisions_are_stable(window in prop::collection::vec(sample(), 1..8), current in 0u32..20, bounds in bounds()) {
        // Applying a decision and deciding again on the same data does not move again.
        let first = run(&window, current, Some(0), bounds);
        let second = run(&window, first.desired, Some(0), bounds);
        prop_assert_eq!(second.desired, first.desired, "{:?} then {:?}", first, second);
    }
}

proptest! {
    #[test]
    fn agents_for_is_the_fewest_that_hold_demand_at_the_target(demand in 0u64..1_000_000,
                                                                bounds in bounds()) {
        // n agents hold n × slots × utilisation tasks; agents_for is the least such n.
        let n = u64::from(bounds.agents_for(demand));
        let capacity = u64::from(bounds.slots_per_agent) * u64::from(bounds.utilisation_permille);
        prop_assert!(n * capacity >= demand * 1000, "{n} agents for {demand}");
        prop_assert!(n == 0 || (n - 1) * capacity < demand * 1000, "{n} agents for {demand}: one too many");
        // Never fewer than the agents with every slot full.
        prop_assert!(n >= u64::from(bounds.agents_holding(demand)));
    }

    #[test]
    fn scale_out_holds_the_latest_demand_at_the_target(ready in 0u64..5000, in_flight in 0u64..5000,
                                                        current in 0u32..5, bounds in bounds()) {
        let d = run(&[Sample::new(ready, in_flight)], current, Some(0), Bounds { max: 1000, ..bounds });
        // (Unless max caps it: then the fleet is as large as allowed, which the other test checks.)
        if d.reason == Reason::ScaleOut && d.want.is_some_and(|w| w <= 1000) {
            let capacity = u64::from(d.desired) * u64::from(bounds.slots_per_agent) * u64::from(bounds.utilisation_permille);
            prop_assert!(capacity >= (ready + in_flight) * 1000, "{d:?}");
        }
    }
}
