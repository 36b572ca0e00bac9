//! Validated newtypes: a value of these types has passed its checks once, at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("mandate must not be empty")]
    EmptyMandate,
    #[error("mandate is {len} characters; the limit is {max}")]
    MandateTooLong { len: usize, max: usize },
    #[error("max_ticks must be between 1 and {max}, got {got}")]
    MaxTicksOutOfRange { got: i64, max: u32 },
    #[error("not a valid task id (expected a UUID)")]
    BadTaskId,
}

/// The text task, trimmed, 1..=limit characters (Unicode scalar values, not bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Mandate(String);

impl Mandate {
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, DomainError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(DomainError::EmptyMandate);
        }
        let len = trimmed.chars().count();
        if len > max_chars {
            return Err(DomainError::MandateTooLong { len, max: max_chars });
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The tick budget: 1..=limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MaxTicks(u32);

impl MaxTicks {
    pub fn parse(raw: i64, limit: u32) -> Result<Self, DomainError> {
        match u32::try_from(raw) {
            Ok(v) if (1..=limit).contains(&v) => Ok(Self(v)),
            _ => Err(DomainError::MaxTicksOutOfRange { got: raw, max: limit }),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// A task id: a UUID, also the envelope's `correlation_id` and AMQP `message_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(Uuid);

impl TaskId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for TaskId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self).map_err(|_| DomainError::BadTaskId)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mandate_is_trimmed_and_bounded() {
        assert_eq!(Mandate::parse("  hi \n", 10).expect("ok").as_str(), "hi");
        assert_eq!(Mandate::parse(" \t ", 10), Err(DomainError::EmptyMandate));
        assert_eq!(Mandate::parse("ééé", 2), Err(DomainError::MandateTooLong { len: 3, max: 2 }));
        assert!(Mandate::parse("ééé", 3).is_ok(), "limit counts characters, not bytes");
    }

    #[test]
    fn max_ticks_bounds() {
        assert!(MaxTicks::parse(0, 200).is_err());
        assert!(MaxTicks::parse(201, 200).is_err());
        assert!(MaxTicks::parse(-1, 200).is_err());
        assert!(MaxTicks::parse(i64::MAX, 200).is_err());
        assert_eq!(MaxTicks::parse(200, 200).expect("ok").get(), 200);
    }

    #[test]
    fn task_id_round_trips() {
        let id = TaskId::new();
        assert_eq!(id.to_string().parse::<TaskId>().expect("parse"), id);
        assert!("not-a-uuid".parse::<TaskId>().is_err());
    }

    proptest! {
        #[test]
        fn parsed_mandates_satisfy_their_invariants(s in ".{0,40}", max in 1usize..30) {
            if let Ok(m) = Mandate::parse(&s, max) {
                prop_assert!(!m.as_str().is_empty());
                prop_assert_eq!(m.as_str().trim(), m.as_str());
                prop_assert!(m.as_str().chars().count() <= max);
            }
        }
    }
}
