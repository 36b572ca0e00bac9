//! The JSON body extractor: our problem schema for every way a body can be wrong.
//! 415 wrong content type, 413 too large, 400 not JSON, 422 valid JSON of the wrong shape
//! (with the offending field's path).

use std::collections::HashMap;
use std::ops::RangeInclusive;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::edge::BodyLimit;
use crate::problem::ApiError;

pub struct JsonBody<T>(pub T);

fn is_json(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !is_json(content_type) {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be JSON (Content-Type: application/json)".into(),
            ));
        }
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                match limit {
                    Some(limit) => crate::edge::too_large(limit),
                    None => ApiError::PayloadTooLarge("the request body is too large".into()),
                }
            } else {
                ApiError::BadRequest("the request body could not be read".into())
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// A JSON body that may be left out: no body and no `Content-Type` is `T::default()`;
/// anything else is read as [`JsonBody`] reads it.
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty = req.headers().get(header::CONTENT_TYPE).is_none()
            && req.headers().get(header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0")
            && req.headers().get(header::TRANSFER_ENCODING).is_none();
        if empty {
            return Ok(Self(T::default()));
        }
        Ok(Self(JsonBody::from_request(req, state).await?.0))
    }
}

/// Refuses query parameters other than `allowed` (400), so a typo is not silently ignored.
pub fn only_params(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::BadRequest(format!("unknown query parameter {unknown:?}"))),
        None => Ok(()),
    }
}

/// An integer query parameter within `range` (422 naming it otherwise), `default` when absent.
pub fn ranged_param(
    q: &HashMap<String, String>,
    name: &str,
    default: i64,
    range: RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    let Some(raw) = q.get(name) else { return Ok(default) };
    raw.parse::<i64>().ok().filter(|n| range.contains(n)).ok_or_else(|| {
        ApiError::Unprocessable(format!("{name}: must be an integer between {} and {}", range.start(), range.end()))
    })
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde reads a struct from a JSON array too (`["x", 1]`); our bodies are objects.
    let object = bytes.iter().find(|b| !b.is_ascii_whitespace()).is_none_or(|b| *b == b'{');
    if !object && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(ApiError::Unprocessable("the body must be a JSON object".into()));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." { String::new() } else { format!("{path}: ") };
                ApiError::Unprocessable(format!("{field}{inner}"))
            }
            _ => ApiError::BadRequest(format!("malformed JSON: {inner}")),
        }
    })?;
    // One JSON value and nothing after it: `{..} trailing` or `{..}{..}` is malformed.
    de.end().map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        mandate: String,
        max_ticks: Option<i64>,
    }

    #[test]
    fn classifies_errors() {
        assert!(matches!(parse::<Req>(b"{nope"), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse::<Req>(b""), Err(ApiError::BadRequest(_))));
        match parse::<Req>(br#"{"mandate":"x","max_ticks":"5"}"#) {
            Err(ApiError::Unprocessable(m)) => assert!(m.starts_with("max_ticks: "), "{m}"),
            other => panic!("{other:?}"),
        }
        match parse::<Req>(br#"{"mandate":"x","extra":1}"#) {
            Err(ApiError::Unprocessable(m)) => assert!(m.contains("extra"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(parse::<Req>(br#"{"mandate":"x"}"#).is_ok());
        assert!(parse::<Req>(b"  \n{\"mandate\":\"x\"}").is_ok());
        for not_an_object in [&br#"["x",1]"#[..], b"\"x\"", b"42", b"null", b"true"] {
            match parse::<Req>(not_an_object) {
                Err(ApiError::Unprocessable(m)) => assert_eq!(m, "the body must be a JSON object"),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(not_an_object)),
            }
        }
        assert!(matches!(parse::<Req>(br#"{"mandate":"x"} trailing"#), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse::<Req>(br#"{"mandate":"x"}{"mandate":"y"}"#), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}
