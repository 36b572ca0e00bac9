//! Table tests for the cases operators ask about, property tests for the invariants.

use proptest::prelude::*;

use super::*;

/// name, window, current, busy, bounds → expected desired, reason.
type Case = (&'static str, Vec<Sample>, u32, Option<u32>, Bounds, u32, Reason);

const B: Bounds = Bounds { min: 1, max: 11, tasks_per_worker: 1 };

fn run(window: &[Sample], current: u32, busy: Option<u32>, bounds: Bounds) -> Decision {
    decide(&Inputs { window, current, busy, bounds })
}

fn flat(n: usize, ready: u64, in_flight: u64) -> Vec<Sample> {
    vec![Sample::new(ready, in_flight); n]
}

#[test]
fn table() {
    let s = Sample::new;
    let m = Sample::MISSING;
    let zero_min = Bounds { min: 0, ..B };
    let tpw3 = Bounds { tasks_per_worker: 3, ..B };
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("burst scales out at once",            vec![s(0, 1), s(0, 1), s(7, 1)], 1, Some(1), B, 8, Reason::ScaleOut),
        ("burst beyond max is clamped",         vec![s(0, 0), s(40, 2)],         2, Some(2), B, 11, Reason::ScaleOut),
        ("at max: hold",                        vec![s(40, 11)],                11, Some(11), B, 11, Reason::Steady),
        ("tasks per worker divides, rounds up", vec![s(5, 2)],                   1, Some(1), tpw3, 3, Reason::ScaleOut),
        ("trickle: one worker suffices",        vec![s(1, 0), s(0, 1), s(0, 0)], 1, Some(0), B, 1, Reason::Steady),
        ("window remembers the peak",           vec![s(5, 0), s(0, 1), s(0, 0)], 5, Some(1), B, 5, Reason::Steady),
        ("scale in after a quiet window",       flat(5, 0, 2),                   5, Some(2), B, 2, Reason::ScaleIn),
        ("long tasks, empty queue: keep busy",  flat(5, 0, 3),                   6, Some(3), B, 3, Reason::ScaleIn),
        ("busy above demand floor",             flat(5, 0, 1),                   4, Some(3), tpw3, 3, Reason::ScaleIn),
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
        let decision = run(window, current, Some(u32::try_from((d - d / 2).min(4)).expect("small")), B);
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
    (0u32..5, 0u32..20, 1u32..5).prop_map(|(min, span, tasks_per_worker)| Bounds {
        min,
        max: min + span,
        tasks_per_worker,
    })
}

proptest! {
    #[test]
    fn invariants(window in prop::collection::vec(sample(), 0..12), current in 0u32..30,
                  busy in prop::option::weighted(0.8, 0u32..30), bounds in bounds()) {
        let busy = busy.map(|b| b.min(current));
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
        // Scale-in: never below the window's peak, the busy workers (unless max forbids), or min,
        // and only with complete data.
        if d.desired < current && current <= bounds.max {
            prop_assert!(demands.iter().all(Option::is_some));
            let busy = busy.expect("scale-in needs the busy count");
            prop_assert!(d.desired >= busy.min(bounds.max));
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
