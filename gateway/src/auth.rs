//! Bearer JWT authentication (Supabase-style). The verifier pins the algorithm to the
//! key type (HS256 for the shared secret), requires `exp`, `sub` and `aud`, checks `iss`
//! when configured, and accepts only `role = authenticated`, which rejects Supabase's
//! `anon` and `service_role` keys signed with the same secret.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;

use crate::problem::ApiError;
use crate::state::AppState;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;
const MAX_SUB_BYTES: usize = 255;

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    role: Option<String>,
}

#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    pub fn hs256(secret: &[u8], audience: &str, issuer: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_audience(&[audience]);
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            // jsonwebtoken checks `iss` only when present unless it is also required.
            validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        } else {
            validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        }
        Self { key: DecodingKey::from_secret(secret), validation }
    }

    /// The user id (`sub`) of a valid token.
    pub fn verify(&self, token: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let data = decode::<Claims>(token, &self.key, &self.validation)?;
        let Claims { sub, role } = data.claims;
        let sub_ok = !sub.is_empty() && sub.len() <= MAX_SUB_BYTES && !sub.chars().any(char::is_control);
        if role.as_deref() != Some("authenticated") || !sub_ok {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidToken.into());
        }
        Ok(sub)
    }
}

/// The authenticated caller. Extracted from request parts, so it runs before any body
/// extractor: an unauthenticated request never has its body read.
#[derive(Debug, Clone)]
pub struct AuthUser(pub String);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or(ApiError::MissingToken)?;
        let value = header.to_str().map_err(|_| ApiError::InvalidToken)?;
        let (scheme, token) = value.split_once(' ').ok_or(ApiError::InvalidToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::InvalidToken);
        }
        match state.verifier.verify(token.trim()) {
            Ok(sub) => Ok(Self(sub)),
            Err(e) => {
                tracing::debug!(reason = ?e.kind(), "token rejected");
                metrics::counter!("gateway_auth_failures_total").increment(1);
                Err(ApiError::InvalidToken)
            }
        }
    }
}

/// Mints a token the gateway accepts, for development and tests (`gateway token`).
pub fn mint_dev_token(
    secret: &[u8],
    sub: &str,
    audience: &str,
    issuer: Option<&str>,
    ttl_seconds: u64,
) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let mut claims = serde_json::json!({
        "sub": sub,
        "aud": audience,
        "role": "authenticated",
        "iat": now,
        "exp": now + i64::try_from(ttl_seconds)?,
    });
    if let Some(iss) = issuer {
        claims["iss"] = serde_json::Value::from(iss);
    }
    let header = jsonwebtoken::Header::new(Algorithm::HS256);
    Ok(jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

    fn sign(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
        .expect("sign")
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::hs256(SECRET, "authenticated", Some("https://issuer.test"))
    }

    fn good() -> serde_json::Value {
        let exp = chrono::Utc::now().timestamp() + 600;
        json!({"sub": "alice", "aud": "authenticated", "role": "authenticated", "exp": exp, "iss": "https://issuer.test"})
    }

    #[test]
    fn accepts_a_valid_token() {
        assert_eq!(verifier().verify(&sign(good())).expect("valid"), "alice");
        let minted = mint_dev_token(SECRET, "bob", "authenticated", Some("https://issuer.test"), 60).expect("mint");
        assert_eq!(verifier().verify(&minted).expect("valid"), "bob");
    }

    #[test]
    fn rejects_each_broken_claim() {
        let v = verifier();
        let mut cases: Vec<(&str, serde_json::Value)> = Vec::new();
        for (name, key, value) in [
            ("expired", "exp", json!(chrono::Utc::now().timestamp() - 120)),
            ("wrong aud", "aud", json!("other")),
            ("anon role", "role", json!("anon")),
            ("service role", "role", json!("service_role")),
            ("wrong iss", "iss", json!("https://evil.test")),
            ("empty sub", "sub", json!("")),
        ] {
            let mut c = good();
            c[key] = value;
            cases.push((name, c));
        }
        for missing in ["exp", "sub", "aud", "role", "iss"] {
            let mut c = good();
            c.as_object_mut().expect("object").remove(missing);
            cases.push((missing, c));
        }
        for (name, claims) in cases {
            assert!(v.verify(&sign(claims)).is_err(), "{name} must be rejected");
        }
    }

    #[test]
    fn rejects_alg_none_and_other_keys() {
        let v = verifier();
        let b64 = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
        };
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&good().to_string()));
        assert!(v.verify(&unsigned).is_err());
        let other = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &good(),
            &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-another"),
        )
        .expect("sign");
        assert!(v.verify(&other).is_err());
        assert!(v.verify("garbage").is_err());
    }
}
