//! Token accounting. [`Usage`] (the counts a result reports) is part of the result
//! contract in `proto`; [`Meter`] is one task's running total, shared by reference with
//! the model and the embedder, so usage is counted even when a call's reply turns out to
//! be unusable. The total is checkpointed each tick, so a resumed task keeps counting.
//! [`counted`] counts the HTTP requests behind one client call, retries and failures
//! included.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use proto::Usage;

/// One task's running total, and its token budget (`max_tokens`), if any.
#[derive(Debug, Default)]
pub struct Meter {
    usage: Mutex<Usage>,
    budget: Option<u64>,
    /// The most tokens one call took so far: what the next call is expected to take.
    largest: AtomicU64,
}

/// The next model call would take the task past its token budget; it is not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget;

impl Meter {
    /// A meter that goes on from `usage` (a resumed task's checkpoint); a call expected to
    /// cross `budget` is refused by [`Self::admit`]. Until a call of this run is seen, a
    /// call is expected to take the average of the earlier ones.
    pub fn starting_at(usage: Usage, budget: Option<u64>) -> Self {
        let average = usage.total_tokens.checked_div(usage.model_calls).unwrap_or(0);
        Self { usage: Mutex::new(usage), budget, largest: AtomicU64::new(average) }
    }

    pub fn add(&self, usage: Usage) {
        self.largest.fetch_max(usage.total_tokens, Ordering::Relaxed);
        self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner).add(usage);
    }

    pub fn total(&self) -> Usage {
        *self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a model call may start: one that would start past the budget, or is expected
    /// (by the largest call so far) to end past it, is not made. The size of a call is known
    /// only after it, so a call larger than any before can still cross the budget, by its own
    /// size at most.
    pub fn admit(&self) -> Result<(), OverBudget> {
        let Some(budget) = self.budget else { return Ok(()) };
        let spent = self.total().total_tokens;
        if spent >= budget || spent + self.largest.load(Ordering::Relaxed) > budget {
            return Err(OverBudget);
        }
        Ok(())
    }
}

/// Requests sent while a [`counted`] future ran, and how many of them failed.
#[derive(Debug, Default)]
pub struct Attempts {
    sent: AtomicU64,
    failed: AtomicU64,
}

impl Attempts {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

tokio::task_local! {
    // The calling task's counter: the transport is shared by every task of the process, and
    // async-openai gives it no per-call context, but it runs inside the caller's future.
    static ATTEMPTS: Arc<Attempts>;
}

/// Counts one request the model transport is about to send, for the task running it (if
/// any): counted before it goes out, so a request the server saw counts even when the task's
/// deadline drops the call mid-flight.
pub fn count_sent() {
    let _ = ATTEMPTS.try_with(|a| a.sent.fetch_add(1, Ordering::Relaxed));
}

/// Counts a sent request that brought no usable reply.
pub fn count_failed() {
    let _ = ATTEMPTS.try_with(|a| a.failed.fetch_add(1, Ordering::Relaxed));
}

/// Adds the requests counted so far to the meter when dropped: when the call completes,
/// and also when it is dropped unfinished (a deadline, a stop).
struct Tally<'m> {
    meter: &'m Meter,
    attempts: Arc<Attempts>,
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        let (sent, failed) = (self.attempts.sent(), self.attempts.failed());
        self.meter.add(Usage { model_calls: sent, failed_calls: failed, ..Usage::default() });
    }
}

/// Runs `f` (one client call), adding the requests the transport sends for it to `meter`
/// (`model_calls`, `failed_calls`), whether `f` finishes or is dropped; the caller adds the
/// tokens of the reply.
pub async fn counted<F: Future>(meter: &Meter, f: F) -> F::Output {
    let tally = Tally { meter, attempts: Arc::new(Attempts::default()) };
    ATTEMPTS.scope(tally.attempts.clone(), f).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_count_even_when_the_call_is_dropped_mid_flight() {
        let meter = Meter::default();
        let done = counted(&meter, async {
            count_sent();
            count_failed();
            count_sent();
        });
        done.await;
        let dropped = counted(&meter, async {
            count_sent();
            std::future::pending::<()>().await;
        });
        assert!(tokio::time::timeout(std::time::Duration::from_millis(10), dropped).await.is_err());
        assert_eq!((meter.total().model_calls, meter.total().failed_calls), (3, 1));
    }

    #[test]
    fn a_call_expected_to_cross_the_budget_is_not_made() {
        let call =
            Usage { prompt_tokens: 80, completion_tokens: 20, total_tokens: 100, model_calls: 1, failed_calls: 0 };
        let m = Meter::starting_at(Usage::default(), Some(350));
        let mut made = 0;
        while m.admit().is_ok() {
            m.add(call);
            made += 1;
        }
        assert_eq!((made, m.total().total_tokens), (3, 300), "the fourth would end at 400");
        // A resumed run expects the average of the earlier calls before it sees one.
        let resumed = Meter::starting_at(m.total(), Some(450));
        assert!(resumed.admit().is_ok());
        assert_eq!(Meter::starting_at(m.total(), Some(399)).admit(), Err(OverBudget));
        assert!(Meter::starting_at(m.total(), None).admit().is_ok(), "no budget, no limit");
    }

    proptest::proptest! {
        #[test]
        fn never_starts_past_the_budget(budget in 1u64..5000, sizes in proptest::collection::vec(1u64..400, 1..60)) {
            let m = Meter::starting_at(Usage::default(), Some(budget));
            for size in sizes {
                if m.admit().is_err() {
                    break;
                }
                let before = m.total().total_tokens;
                proptest::prop_assert!(before < budget);
                m.add(Usage { total_tokens: size, ..Usage::default() });
            }
        }
    }

    #[test]
    fn meter_sums_from_its_start() {
        let start =
            Usage { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12, model_calls: 1, failed_calls: 0 };
        let m = Meter::starting_at(start, None);
        m.add(Usage { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6, model_calls: 1, failed_calls: 0 });
        assert_eq!(
            m.total(),
            Usage { prompt_tokens: 15, completion_tokens: 3, total_tokens: 18, model_calls: 2, failed_calls: 0 }
        );
    }
}
