//! Token accounting. [`Usage`] (the counts a result reports) is part of the result
//! contract in `proto`; [`Meter`] is one task's running total, shared by reference with
//! the model and the embedder, so usage is counted even when a call's reply turns out to
//! be unusable. The total is checkpointed each tick, so a resumed task keeps counting.

use std::sync::Mutex;

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
