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

#[derive(Debug, Default)]
pub struct Meter(Mutex<Usage>);

impl Meter {
    pub fn starting_at(usage: Usage) -> Self {
        Self(Mutex::new(usage))
    }

    pub fn add(&self, usage: Usage) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).add(usage);
    }

    pub fn total(&self) -> Usage {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

/// Counts one request the model transport sent, for the task running it (if any).
pub fn count_request(failed: bool) {
    let _ = ATTEMPTS.try_with(|a| {
        a.sent.fetch_add(1, Ordering::Relaxed);
        if failed {
            a.failed.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Runs `f` (one client call), counting the requests the transport sends for it.
pub async fn counted<F: Future>(f: F) -> (F::Output, Arc<Attempts>) {
    let attempts = Arc::new(Attempts::default());
    let out = ATTEMPTS.scope(attempts.clone(), f).await;
    (out, attempts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_sums_from_its_start() {
        let start =
            Usage { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12, model_calls: 1, failed_calls: 0 };
        let m = Meter::starting_at(start);
        m.add(Usage { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6, model_calls: 1, failed_calls: 0 });
        assert_eq!(
            m.total(),
            Usage { prompt_tokens: 15, completion_tokens: 3, total_tokens: 18, model_calls: 2, failed_calls: 0 }
        );
    }
}
