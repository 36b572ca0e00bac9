//! Development tokens the gateway accepts (`gateway token`, tests): HS256 with the legacy
//! secret, or ES256 / RS256 / EdDSA with a private key whose public half is in the JWKS.

use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// The claims of a development token for `sub`.
pub fn claims(sub: &str, audience: &str, issuer: Option<&str>, ttl_seconds: u64) -> anyhow::Result<serde_json::Value> {
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
    Ok(claims)
}

/// Gives `claims` the operator role as `OPERATOR_CLAIM` names it (`app_metadata.euglena_role`
/// by default: in Supabase, set by the server, never by the user).
pub fn make_operator(claims: &mut serde_json::Value, operator: &super::OperatorClaim) {
    let mut at = claims;
    for key in &operator.path {
        if !at.get(key).is_some_and(serde_json::Value::is_object) {
            at[key.as_str()] = serde_json::json!({});
        }
        at = &mut at[key.as_str()];
    }
    *at = serde_json::Value::from(operator.value.as_str());
}

/// Signs `claims` with HS256.
pub fn sign_hs256(secret: &[u8], claims: &serde_json::Value) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret))?)
}

pub fn hs256(
    secret: &[u8],
    sub: &str,
    audience: &str,
    issuer: Option<&str>,
    ttl_seconds: u64,
) -> anyhow::Result<String> {
    let header = Header::new(Algorithm::HS256);
    let claims = claims(sub, audience, issuer, ttl_seconds)?;
    Ok(jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))?)
}

/// Signs with a PEM private key; the algorithm follows the key (EC P-256 → ES256,
/// Ed25519 → EdDSA, RSA → RS256).
pub fn with_pem(
    pem: &[u8],
    kid: &str,
    sub: &str,
    audience: &str,
    issuer: Option<&str>,
    ttl_seconds: u64,
) -> anyhow::Result<String> {
    let (alg, key) = if let Ok(k) = EncodingKey::from_ec_pem(pem) {
        (Algorithm::ES256, k)
    } else if let Ok(k) = EncodingKey::from_ed_pem(pem) {
        (Algorithm::EdDSA, k)
    } else if let Ok(k) = EncodingKey::from_rsa_pem(pem) {
        (Algorithm::RS256, k)
    } else {
        anyhow::bail!("not an EC P-256, Ed25519 or RSA private key in PEM form");
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let claims = claims(sub, audience, issuer, ttl_seconds)?;
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}
