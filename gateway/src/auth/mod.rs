//! Bearer JWT authentication: the [`AuthUser`] extractor over a [`Verifier`] whose keys
//! come from a JWKS ([`jwks`]) and/or the legacy HS256 secret.

pub mod dev_token;
pub mod jwks;
pub mod token_cache;
pub mod verifier;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

pub use self::jwks::Jwks;
pub use self::verifier::{Identity, Rejection, Verifier};
pub use crate::config::OperatorClaim;
use crate::problem::ApiError;

/// The authenticated caller (`sub`). Extracted from request parts, so it runs before any
/// body extractor: an unauthenticated request never has its body read.
#[derive(Debug, Clone)]
pub struct AuthUser(pub String);

/// An operator (a token whose claims carry `OPERATOR_CLAIM`): the `/admin` routes. Anyone
/// else gets `403`; a token that is not valid at all `401`, as everywhere.
#[derive(Debug, Clone)]
pub struct Operator(pub String);

impl<S> FromRequestParts<S> for Operator
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let who = identify(parts, state).await?;
        if !who.operator {
            metrics::counter!("gateway_operator_refusals_total").increment(1);
            return Err(ApiError::Forbidden("this route is for operators only".into()));
        }
        Ok(Self(who.sub))
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(identify(parts, state).await?.sub))
    }
}

async fn identify<S>(parts: &Parts, state: &S) -> Result<Identity, ApiError>
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    let header = parts.headers.get(AUTHORIZATION).ok_or(ApiError::MissingToken)?;
    let token = match bearer(header.as_bytes()) {
        Bearer::Token(token) => token,
        Bearer::Empty => return Err(ApiError::EmptyToken),
        Bearer::OtherScheme => return Err(ApiError::NotBearer),
    };
    let verifier = Arc::<Verifier>::from_ref(state);
    match verifier.identify(token).await {
        Ok(who) => Ok(who),
        Err(rejection) => {
            metrics::counter!("gateway_auth_failures_total").increment(1);
            match rejection {
                Rejection::Anonymous => Err(ApiError::Forbidden(
                    "anonymous sign-ins cannot submit or read tasks; sign in with an account".into(),
                )),
                Rejection::Invalid(reason) => {
                    tracing::debug!(reason, "token rejected");
                    Err(ApiError::InvalidToken)
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Bearer<'a> {
    Token(&'a str),
    /// `Bearer` with nothing after it: most often a shell variable that was never set.
    Empty,
    OtherScheme,
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(value: &[u8]) -> Bearer<'_> {
    let Ok(value) = std::str::from_utf8(value) else { return Bearer::OtherScheme };
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let token = token.trim();
    match (scheme.eq_ignore_ascii_case("bearer"), token.is_empty()) {
        (true, false) => Bearer::Token(token),
        (true, true) => Bearer::Empty,
        (false, _) => Bearer::OtherScheme,
    }
}

#[cfg(test)]
mod tests {
    use super::{Bearer, bearer};

    #[test]
    fn bearer_scheme() {
        assert_eq!(bearer(b"Bearer abc"), Bearer::Token("abc"));
        assert_eq!(bearer(b"bearer  abc "), Bearer::Token("abc"));
        assert_eq!(bearer(b"Basic abc"), Bearer::OtherScheme);
        assert_eq!(bearer(b"abc"), Bearer::OtherScheme);
        assert_eq!(bearer(b"Bearer "), Bearer::Empty);
        assert_eq!(bearer(b"Bearer"), Bearer::Empty);
        assert_eq!(bearer(b"Bearer \xff"), Bearer::OtherScheme);
    }
}
