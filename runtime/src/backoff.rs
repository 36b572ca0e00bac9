//! Capped exponential backoff with full jitter, and [`retry`], the one loop that waits it
//! out between failed attempts.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

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

/// The one retry loop: runs `attempt` until it succeeds or `again` declines a failure,
/// waiting `backoff`'s next delay between failures. `again(&error, delay, tries)` is where
/// the caller logs, counts and decides (a budget, a deadline, the kind of error); `tries`
/// counts the attempts so far. A cancelled `stop` ends the wait at once, with the last error.
pub async fn retry<T, E, F, Fut>(
    mut backoff: Backoff,
    stop: Option<&CancellationToken>,
    mut attempt: F,
    mut again: impl FnMut(&E, Duration, u32) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut tries = 0u32;
    loop {
        tries = tries.saturating_add(1);
        let error = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        if !again(&error, delay, tries) {
            return Err(error);
        }
        match stop {
            Some(stop) => tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return Err(error),
            },
            None => tokio::time::sleep(delay).await,
        }
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

    fn quick() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_millis(500))
    }

    #[tokio::test(start_paused = true)]
    async fn retry_waits_between_failures_until_one_succeeds() {
        let mut calls = 0u32;
        let mut seen = Vec::new();
        let started = tokio::time::Instant::now();
        let result: Result<u32, &str> = retry(
            quick(),
            None,
            || {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err("down") } else { Ok(n) } }
            },
            |_, delay, tries| {
                seen.push(tries);
                assert!(delay >= Duration::from_millis(50));
                true
            },
        )
        .await;
        assert_eq!(result, Ok(3));
        assert_eq!(seen, vec![1, 2]);
        assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_ends_with_the_error_when_declined_or_stopped() {
        let declined: Result<(), &str> = retry(quick(), None, || async { Err("no") }, |_, _, tries| tries < 2).await;
        assert_eq!(declined, Err("no"));

        let stop = CancellationToken::new();
        stop.cancel();
        let stopped: Result<(), &str> = retry(quick(), Some(&stop), || async { Err("no") }, |_, _, _| true).await;
        assert_eq!(stopped, Err("no"));
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
