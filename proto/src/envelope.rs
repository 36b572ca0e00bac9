//! The `TaskEnvelope` on the input queue. JSON, compatible with the Python Euglena:
//! an envelope with only `correlation_id`, `mandate` and `max_ticks` is valid.

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::ShortString;
use serde::{Deserialize, Serialize};

use crate::domain::TaskId;

/// The newest envelope version this build understands.
pub const ENVELOPE_VERSION: u32 = 1;
/// Sanity bounds for envelopes that did not come through the gateway.
pub const MAX_ENVELOPE_MANDATE_CHARS: usize = 100_000;
pub const MAX_ENVELOPE_TICKS: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEnvelope {
    pub correlation_id: TaskId,
    pub mandate: String,
    pub max_ticks: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u32>,
    /// Which enqueue of the task this is: 0 at submit, one more each time a parked task
    /// is put back on the queue. A delivery whose `seq` is below the record's is a stale
    /// copy (a re-publish won the race) and is acked without running.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a valid envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("invalid envelope: {0}")]
    Invalid(&'static str),
    #[error("unsupported envelope version {0}")]
    Version(u32),
}

impl TaskEnvelope {
    pub fn parse(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let env: Self = serde_json::from_slice(bytes)?;
        if let Some(v) = env.v.filter(|v| *v > ENVELOPE_VERSION) {
            return Err(EnvelopeError::Version(v));
        }
        if env.mandate.trim().is_empty() {
            return Err(EnvelopeError::Invalid("empty mandate"));
        }
        if env.mandate.chars().count() > MAX_ENVELOPE_MANDATE_CHARS {
            return Err(EnvelopeError::Invalid("mandate too long"));
        }
        if !(1..=MAX_ENVELOPE_TICKS).contains(&env.max_ticks) {
            return Err(EnvelopeError::Invalid("max_ticks out of range"));
        }
        Ok(env)
    }

    /// Best effort: the task id of a message that failed to parse, so its record can be
    /// marked failed. Looks at the JSON body first, then at the AMQP `message_id`.
    pub fn salvage_id(bytes: &[u8], message_id: Option<&str>) -> Option<TaskId> {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("correlation_id").and_then(|c| c.as_str()).and_then(|s| s.parse().ok()))
            .or_else(|| message_id.and_then(|m| m.parse().ok()))
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The message properties a task envelope is published with: persistent, JSON, and the task
/// id as message and correlation id (the agent reads the message id).
pub fn properties(task_id: &str) -> BasicProperties {
    let id: ShortString = task_id.into();
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(id.clone())
        .with_correlation_id(id)
        .with_timestamp(u64::try_from(Utc::now().timestamp()).unwrap_or(0))
}

/// The AMQP header carrying the task's W3C trace context (ARCHITECTURE §3).
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// `props` with the `traceparent` header, when the task has one.
pub fn with_traceparent(props: BasicProperties, traceparent: Option<&str>) -> BasicProperties {
    let Some(tp) = traceparent else { return props };
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(TRACEPARENT_HEADER.into(), lapin::types::AMQPValue::LongString(tp.into()));
    props.with_headers(headers)
}

/// The `traceparent` header of a delivery, if it has one.
pub fn traceparent(props: &BasicProperties) -> Option<String> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(TRACEPARENT_HEADER)? {
        lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
        lapin::types::AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_envelope_is_valid() {
        let raw = br#"{"correlation_id":"6f1c1f0e-8d3a-4c1b-9a57-3f2e4f0a9b11","mandate":"find x","max_ticks":5}"#;
        let e = TaskEnvelope::parse(raw).expect("valid");
        assert_eq!(e.max_ticks, 5);
        assert_eq!(e.user_id, None);
    }

    #[test]
    fn round_trip() {
        let e = TaskEnvelope {
            correlation_id: TaskId::new(),
            mandate: "m".into(),
            max_ticks: 3,
            user_id: Some("u".into()),
            submitted_at: Some(Utc::now()),
            v: Some(1),
            seq: 0,
        };
        assert_eq!(TaskEnvelope::parse(&e.to_json()).expect("valid"), e);
        assert!(!String::from_utf8_lossy(&e.to_json()).contains("seq"), "the first enqueue's envelope is unchanged");
        let resumed = TaskEnvelope { seq: 2, ..e };
        assert_eq!(TaskEnvelope::parse(&resumed.to_json()).expect("valid").seq, 2);
    }

    #[test]
    fn invalid_envelopes() {
        let id = "6f1c1f0e-8d3a-4c1b-9a57-3f2e4f0a9b11";
        for raw in [
            "not json".to_owned(),
            format!(r#"{{"correlation_id":"{id}","mandate":"","max_ticks":5}}"#),
            format!(r#"{{"correlation_id":"{id}","mandate":"x","max_ticks":0}}"#),
            format!(r#"{{"correlation_id":"{id}","mandate":"x","max_ticks":5,"v":9}}"#),
            r#"{"correlation_id":"nope","mandate":"x","max_ticks":5}"#.to_owned(),
        ] {
            assert!(TaskEnvelope::parse(raw.as_bytes()).is_err(), "{raw}");
        }
        let salvaged = TaskEnvelope::salvage_id(format!(r#"{{"correlation_id":"{id}"}}"#).as_bytes(), None);
        assert_eq!(salvaged.map(|t| t.to_string()).as_deref(), Some(id));
        assert_eq!(TaskEnvelope::salvage_id(b"garbage", Some(id)).map(|t| t.to_string()).as_deref(), Some(id));
        assert!(TaskEnvelope::salvage_id(b"garbage", None).is_none());
    }
}
