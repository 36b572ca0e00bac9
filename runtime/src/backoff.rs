//! Capped exponential backoff with full jitter, for every reconnect and retry loop.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap, attempt: 0 }
    }

    /// The default for broker and cache reconnects: 100 ms doubling up to 10 s.
    pub fn reconnect() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// The ceiling of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay: uniform in `[ceiling/2, ceiling]`, so a fleet that lost the
    /// same broker does not reconnect in lockstep, yet never retries in a hot loop.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(fastrand::u64(0..=spread))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_until_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let ceilings: Vec<_> = (0..5)
            .map(|_| {
                let c = b.ceiling();
                b.next_delay();
                c.as_millis()
            })
            .collect();
        assert_eq!(ceilings, vec![100, 200, 400, 500, 500]);
    }

    proptest! {
        #[test]
        fn delay_stays_within_half_and_full_ceiling(base in 1u64..1000, cap in 1u64..60_000, steps in 0usize..80) {
            let mut b = Backoff::new(Duration::from_millis(base), Duration::from_millis(cap));
            for _ in 0..steps { b.next_delay(); }
            let ceiling = b.ceiling();
            let d = b.next_delay();
            prop_assert!(d <= ceiling);
            prop_assert!(d >= ceiling / 2);
            prop_assert!(ceiling <= Duration::from_millis(cap.max(base).min(cap)));
        }
    }
}
