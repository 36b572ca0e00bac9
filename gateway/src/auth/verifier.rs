//! Token verification (Supabase-style JWTs).
//!
//! Accepted: ES256, RS256 and EdDSA with a `kid` found in the JWKS (the algorithm must fit
//! the key type), and HS256 with `SUPABASE_JWT_SECRET` or, during a rotation,
//! `SUPABASE_JWT_SECRET_PREVIOUS`. Everything else (`none`, HS384, PS256, …) is refused, and
//! so is any token with a `crit` header (we implement no extensions).
//!
//! Claims: `exp` and `sub` required, `nbf` enforced, 30 s leeway on both; `aud` must equal
//! `AUTH_AUDIENCE`; `iss`, when `AUTH_ISSUER` is set, must be one string equal to it (not
//! an array that contains it); `role` must be `authenticated`, which refuses Supabase's
//! `anon` and `service_role` keys; `is_anonymous: true` is refused unless allowed, because
//! anyone can mint anonymous users and each would get a fresh quota.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::jwks::{Jwks, KeyMiss};
use super::token_cache::{self, TokenCache};
use crate::config::{AuthSettings, OperatorClaim};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;
const MAX_SUB_BYTES: usize = 255;

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    /// Required and checked by jsonwebtoken; kept for [`TokenCache`]. A NumericDate may
    /// have a fraction.
    exp: f64,
    #[serde(default)]
    role: Option<String>,
    /// A string only: an array fails to deserialize and the token is refused.
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    is_anonymous: bool,
    /// Where the operator role is read from (`OPERATOR_CLAIM`), e.g. `app_metadata`.
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// Who a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub sub: String,
    /// Its claims carry the operator role (`OPERATOR_CLAIM`).
    pub operator: bool,
}

/// Why a token was refused. Only [`Rejection::Anonymous`] is told apart to the client (403);
/// the rest are one 401, with the reason in the debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Invalid(&'static str),
    Anonymous,
}

pub struct Verifier {
    hs256: Vec<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    base: Validation,
    issuer: Option<String>,
    allow_anonymous: bool,
    operator: Option<OperatorClaim>,
    cache: TokenCache,
}

impl Verifier {
    pub fn new(auth: &AuthSettings, jwks: Option<Arc<Jwks>>) -> Self {
        let mut base = Validation::new(Algorithm::HS256);
        base.leeway = LEEWAY_SECONDS;
        base.validate_nbf = true;
        base.set_audience(&[&auth.audience]);
        // `iss` is checked by us (one string, exact), so jsonwebtoken leaves it alone.
        base.set_required_spec_claims(&["exp", "sub", "aud"]);
        Self {
            hs256: auth.hs256_secrets.iter().map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes())).collect(),
            jwks,
            base,
            issuer: auth.issuer.clone(),
            allow_anonymous: auth.allow_anonymous,
            operator: auth.operator_claim.clone(),
            cache: TokenCache::new(token_cache::MAX_ENTRIES, LEEWAY_SECONDS),
        }
    }

    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// The user id (`sub`) of a valid token.
    pub async fn verify(&self, token: &str) -> Result<String, Rejection> {
        Ok(self.identify(token).await?.sub)
    }

    /// Who a valid token names, and whether it is an operator's.
    pub async fn identify(&self, token: &str) -> Result<Identity, Rejection> {
        // Read before verifying: a key set replaced meanwhile leaves the entry stale, not
        // wrongly fresh.
        let generation = self.jwks.as_ref().map_or(0, |j| j.generation());
        let key = TokenCache::key(token);
        if let Some(who) = self.cache.get(&key, generation, chrono::Utc::now().timestamp()) {
            return Ok(who);
        }
        let (who, exp) = self.verify_uncached(token).await?;
        self.cache.insert(key, &who, exp, generation);
        Ok(who)
    }

    /// The identity and `exp` of a valid token, checked in full.
    async fn verify_uncached(&self, token: &str) -> Result<(Identity, i64), Rejection> {
        let header = decode_header(token).map_err(|_| Rejection::Invalid("malformed token"))?;
        if header.crit.is_some() {
            return Err(Rejection::Invalid("crit header"));
        }
        let mut validation = self.base.clone();
        validation.algorithms = vec![header.alg];
        let claims = match header.alg {
            Algorithm::HS256 => self.verify_hs256(token, &validation)?,
            Algorithm::ES256 | Algorithm::RS256 | Algorithm::EdDSA => {
                let jwks =
                    self.jwks.as_ref().ok_or(Rejection::Invalid("no signing keys configured for this algorithm"))?;
                let kid = header.kid.as_deref().filter(|k| !k.is_empty()).ok_or(Rejection::Invalid("no kid"))?;
                let key = jwks.key(kid, header.alg).await.map_err(|m| match m {
                    KeyMiss::UnknownKid => Rejection::Invalid("unknown kid"),
                    KeyMiss::WrongKeyType => Rejection::Invalid("algorithm does not fit the key"),
                })?;
                decode::<Claims>(token, &key, &validation).map_err(reason)?.claims
            }
            _ => return Err(Rejection::Invalid("algorithm not accepted")),
        };
        let exp = claims.exp.floor() as i64;
        Ok((self.check(claims)?, exp))
    }

    fn verify_hs256(&self, token: &str, validation: &Validation) -> Result<Claims, Rejection> {
        let mut last = Rejection::Invalid("no HS256 secret configured");
        for key in &self.hs256 {
            match decode::<Claims>(token, key, validation) {
                Ok(data) => return Ok(data.claims),
                // Only a bad signature means "maybe the other secret"; an expired token is
                // expired under both.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => last = reason(e),
                Err(e) => return Err(reason(e)),
            }
        }
        Err(last)
    }

    fn check(&self, c: Claims) -> Result<Identity, Rejection> {
        if let Some(want) = &self.issuer
            && c.iss.as_deref() != Some(want.as_str())
        {
            return Err(Rejection::Invalid("wrong or missing iss"));
        }
        if c.role.as_deref() != Some("authenticated") {
            return Err(Rejection::Invalid("role is not authenticated"));
        }
        if c.sub.is_empty() || c.sub.len() > MAX_SUB_BYTES || c.sub.chars().any(char::is_control) {
            return Err(Rejection::Invalid("bad sub"));
        }
        if c.is_anonymous && !self.allow_anonymous {
            return Err(Rejection::Anonymous);
        }
        let operator = self.operator.as_ref().is_some_and(|o| o.holds(&c.rest));
        Ok(Identity { sub: c.sub, operator })
    }
}

fn reason(e: jsonwebtoken::errors::Error) -> Rejection {
    Rejection::Invalid(match e.kind() {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid (nbf)",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAudience => "wrong aud",
        ErrorKind::MissingRequiredClaim(_) => "missing required claim",
        ErrorKind::InvalidAlgorithm => "algorithm does not fit the key",
        ErrorKind::Json(_) => "claims of the wrong type",
        _ => "invalid token",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::dev_token;
    use runtime::config::Env;
    use serde_json::{Value, json};

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
    const PREVIOUS: &str = "previous-previous-previous-previous-0000";

    fn settings(extra: &[(&str, &str)]) -> AuthSettings {
        let mut env = Env::from_pairs([("SUPABASE_JWT_SECRET", SECRET), ("AUTH_ISSUER", "https://issuer.test")]);
        for (k, v) in extra {
            env = env.with(k, *v);
        }
        AuthSettings::from_env(&env).expect("settings")
    }

    fn verifier() -> Verifier {
        Verifier::new(&settings(&[]), None)
    }

    fn sign_with(claims: &serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    }

    fn sign(claims: &serde_json::Value) -> String {
        sign_with(claims, SECRET)
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn good() -> serde_json::Value {
        json!({"sub": "alice", "aud": "authenticated", "role": "authenticated", "exp": now() + 600, "iss": "https://issuer.test"})
    }

    fn with(key: &str, value: serde_json::Value) -> serde_json::Value {
        let mut c = good();
        c[key] = value;
        c
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[tokio::test]
    async fn accepts_a_valid_token() {
        assert_eq!(verifier().verify(&sign(&good())).await, Ok("alice".to_owned()));
        let minted =
            dev_token::hs256(SECRET.as_bytes(), "bob", "authenticated", Some("https://issuer.test"), 60).expect("mint");
        assert_eq!(verifier().verify(&minted).await, Ok("bob".to_owned()));
        // Inside the leeway either way.
        assert!(verifier().verify(&sign(&with("nbf", json!(now() + 20)))).await.is_ok());
        assert!(verifier().verify(&sign(&with("exp", json!(now() - 20)))).await.is_ok());
    }

    #[tokio::test]
    async fn rejects_each_broken_claim() {
        let v = verifier();
        let mut cases: Vec<(&str, serde_json::Value)> = vec![
            ("expired", with("exp", json!(now() - 120))),
            ("nbf in the future", with("nbf", json!(now() + 120))),
            ("wrong aud", with("aud", json!("other"))),
            ("anon role", with("role", json!("anon"))),
            ("service role", with("role", json!("service_role"))),
            ("wrong iss", with("iss", json!("https://evil.test"))),
            ("iss array containing the issuer", with("iss", json!(["https://issuer.test", "https://evil.test"]))),
            ("empty sub", with("sub", json!(""))),
            ("sub not a string", with("sub", json!(42))),
        ];
        for missing in ["exp", "sub", "aud", "role", "iss"] {
            let mut c = good();
            c.as_object_mut().expect("object").remove(missing);
            cases.push((missing, c));
        }
        for (name, claims) in cases {
            assert!(matches!(v.verify(&sign(&claims)).await, Err(Rejection::Invalid(_))), "{name} must be rejected");
        }
    }

    #[tokio::test]
    async fn anonymous_users_are_refused_unless_allowed() {
        let anon = sign(&with("is_anonymous", json!(true)));
        assert_eq!(verifier().verify(&anon).await, Err(Rejection::Anonymous));
        let role = OperatorClaim::parse("app_metadata.euglena_role=operator").expect("claim");
        let claims = |v: Value| serde_json::from_value::<serde_json::Map<String, Value>>(v).expect("map");
        assert!(role.holds(&claims(json!({"app_metadata": {"euglena_role": "operator"}}))));
        assert!(!role.holds(&claims(json!({"app_metadata": {"euglena_role": "user"}}))));
        assert!(!role.holds(&claims(json!({"user_metadata": {"euglena_role": "operator"}}))));
        assert!(!role.holds(&claims(json!({"app_metadata": "operator"}))));
        let allowing = Verifier::new(&settings(&[("AUTH_ALLOW_ANONYMOUS", "true")]), None);
        assert_eq!(allowing.verify(&anon).await, Ok("alice".to_owned()));
        assert!(verifier().verify(&sign(&with("is_anonymous", json!(false)))).await.is_ok());
    }

    #[tokio::test]
    async fn the_previous_secret_is_accepted_during_rotation_and_a_wrong_one_never() {
        let token = sign_with(&good(), PREVIOUS);
        assert!(verifier().verify(&token).await.is_err(), "previous secret not configured");
        let rotating = Verifier::new(&settings(&[("SUPABASE_JWT_SECRET_PREVIOUS", PREVIOUS)]), None);
        assert_eq!(rotating.verify(&token).await, Ok("alice".to_owned()));
        assert!(rotating.verify(&sign(&good())).await.is_ok(), "the current secret still works");
        let wrong = sign_with(&good(), "another-secret-another-secret-another");
        assert_eq!(rotating.verify(&wrong).await, Err(Rejection::Invalid("bad signature")));
        // An expired token signed with the previous secret stays expired.
        let expired = sign_with(&with("exp", json!(now() - 120)), PREVIOUS);
        assert_eq!(rotating.verify(&expired).await, Err(Rejection::Invalid("expired")));
    }

    #[tokio::test]
    async fn rejects_crit_alg_none_other_algorithms_and_garbage() {
        let v = verifier();
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp".into()]);
        let crit = jsonwebtoken::encode(&header, &good(), &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()))
            .expect("sign");
        assert_eq!(v.verify(&crit).await, Err(Rejection::Invalid("crit header")));
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&good().to_string()));
        assert!(v.verify(&unsigned).await.is_err());
        let hs512 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS512),
            &good(),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign");
        assert_eq!(v.verify(&hs512).await, Err(Rejection::Invalid("algorithm not accepted")));
        // ES256 without any JWKS configured.
        let es = format!("{}.{}.c2ln", b64(r#"{"alg":"ES256","kid":"k"}"#), b64(&good().to_string()));
        assert!(v.verify(&es).await.is_err());
        assert!(v.verify("garbage").await.is_err());
    }

    #[tokio::test]
    async fn a_verified_token_is_answered_from_the_cache_and_a_refusal_never_is() {
        let mut v = verifier();
        let token = sign(&good());
        assert_eq!(v.verify(&token).await, Ok("alice".into()));
        // Real verification of anything signed with SECRET now fails: only a hit can accept.
        v.hs256 = vec![DecodingKey::from_secret(b"another-secret-another-secret-0000")];
        assert_eq!(v.verify(&token).await, Ok("alice".into()), "answered from the cache");
        assert_eq!(v.verify(&sign(&with("sub", json!("bob")))).await, Err(Rejection::Invalid("bad signature")));

        let v = verifier();
        let anonymous = sign(&with("is_anonymous", json!(true)));
        for _ in 0..2 {
            assert_eq!(v.verify(&anonymous).await, Err(Rejection::Anonymous), "refused every time");
        }
    }

    #[tokio::test]
    async fn an_exp_with_a_fraction_is_a_numeric_date() {
        let v = verifier();
        assert_eq!(v.verify(&sign(&with("exp", json!(now() as f64 + 600.5)))).await, Ok("alice".into()));
    }
}
