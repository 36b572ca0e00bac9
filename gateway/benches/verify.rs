//! What a bearer token costs the gateway per request: `Verifier::verify` for HS256, ES256
//! and RS256 (the test fixture keys), once for a token seen before (a client reusing its
//! access token: a verified-token cache hit) and once for a fresh token each time (the full
//! check). `cargo bench -p gateway --bench verify`; under `cargo test` a few rounds as a
//! smoke test.

use std::sync::Arc;
use std::time::Instant;

use gateway::auth::{Jwks, Verifier};
use gateway::config::AuthSettings;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use runtime::config::Env;

const SECRET: &str = "bench-secret-bench-secret-bench-secret-00";
const EC_PEM: &[u8] = include_bytes!("../tests/fixtures/ec-p256.pem");
const RSA_PEM: &[u8] = include_bytes!("../tests/fixtures/rsa-2048.pem");

fn token(alg: Algorithm, n: usize) -> String {
    let (key, kid) = match alg {
        Algorithm::HS256 => (EncodingKey::from_secret(SECRET.as_bytes()), None),
        Algorithm::ES256 => (EncodingKey::from_ec_pem(EC_PEM).expect("fixture"), Some("test-ec-1")),
        _ => (EncodingKey::from_rsa_pem(RSA_PEM).expect("fixture"), Some("test-rsa-1")),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let claims = serde_json::json!({
        "sub": format!("user-{n}"), "aud": "authenticated", "role": "authenticated",
        "exp": chrono::Utc::now().timestamp() + 3600,
    });
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

fn verifier(alg: Algorithm) -> Verifier {
    let env = Env::from_pairs([("SUPABASE_JWT_SECRET", SECRET)]);
    let settings = AuthSettings::from_env(&env).expect("settings");
    let jwks = match alg {
        Algorithm::HS256 => None,
        other => {
            let all: serde_json::Value =
                serde_json::from_str(include_str!("../tests/fixtures/jwks-keys.json")).expect("fixture");
            let name = if other == Algorithm::ES256 { "ec" } else { "rsa" };
            let jwk = serde_json::from_value(all[name].clone()).expect("jwk");
            Some(Arc::new(Jwks::fixed(&jwk).expect("key")))
        }
    };
    Verifier::new(&settings, jwks)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds = if std::env::args().any(|a| a == "--bench") { 20_000 } else { 20 };
    for alg in [Algorithm::HS256, Algorithm::ES256, Algorithm::RS256] {
        let fresh: Vec<String> = (0..rounds).map(|n| token(alg, n)).collect();
        let v = verifier(alg);
        let started = Instant::now();
        for t in &fresh {
            v.verify(t).await.expect("a valid token");
        }
        let full = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        let started = Instant::now();
        for _ in 0..rounds {
            v.verify(&fresh[0]).await.expect("a valid token");
        }
        let hit = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        #[allow(clippy::print_stdout)]
        {
            println!("verify {alg:?}: full check {full:.1} us, token seen before {hit:.2} us ({rounds} rounds)");
        }
    }
}
