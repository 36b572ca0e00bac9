//! Asymmetric signing keys from a JWKS (ARCHITECTURE §2 "Auth"): ES256 and RS256 accepted with a
//! `kid` from the set, an unknown `kid` refetches the set exactly once, added keys are
//! picked up on first use, removed keys are refused after the refresh, the algorithm must
//! fit the key type, and a JWKS server that hangs does not hang requests.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use testkit::Harness;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::{claims, header, problem, wait_serving};

const EC_PEM: &[u8] = include_bytes!("../fixtures/ec-p256.pem");
const RSA_PEM: &[u8] = include_bytes!("../fixtures/rsa-2048.pem");
const ED_PEM: &[u8] = include_bytes!("../fixtures/ed25519.pem");
const JWKS_PATH: &str = "/auth/v1/.well-known/jwks.json";

fn public_key(name: &str) -> Value {
    let all: Value = serde_json::from_str(include_str!("../fixtures/jwks-keys.json")).expect("fixture");
    all[name].clone()
}

fn jwks(names: &[&str]) -> Value {
    json!({"keys": names.iter().map(|n| public_key(n)).collect::<Vec<_>>()})
}

fn sign(alg: Algorithm, kid: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC_PEM),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RSA_PEM),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED_PEM),
        other => panic!("no fixture key for {other:?}"),
    }
    .expect("fixture key");
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// A JWKS server serving `names`; `serve` swaps what it serves.
struct KeyServer {
    server: MockServer,
}

impl KeyServer {
    async fn start(names: &[&str]) -> Self {
        let ks = Self { server: MockServer::start().await };
        ks.serve(names).await;
        ks
    }

    async fn serve(&self, names: &[&str]) {
        self.server.reset().await;
        Mock::given(method("GET"))
            .and(path(JWKS_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(jwks(names)))
            .mount(&self.server)
            .await;
    }

    fn url(&self) -> String {
        format!("{}{JWKS_PATH}", self.server.uri())
    }

    async fn fetches(&self) -> usize {
        self.server.received_requests().await.unwrap_or_default().iter().filter(|r| r.url.path() == JWKS_PATH).count()
    }
}

async fn get_tasks(app: &Harness, token: &str) -> reqwest::Response {
    app.http.get(app.url("/tasks")).bearer_auth(token).send().await.expect("request")
}

async fn assert_401(app: &Harness, token: &str, what: &str) {
    let (headers, body) = problem(get_tasks(app, token).await, 401).await;
    assert_eq!(header(&headers, "www-authenticate"), "Bearer error=\"invalid_token\"", "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_and_rs256_tokens_from_the_jwks_are_accepted() {
    let keys = KeyServer::start(&["ec", "rsa"]).await;
    let app = Harness::start(&[("SUPABASE_JWKS_URL", &keys.url())]).await;
    wait_serving(&app).await;
    for (alg, kid) in [(Algorithm::ES256, "test-ec-1"), (Algorithm::RS256, "test-rsa-1")] {
        let token = sign(alg, kid, &claims("alice"));
        let resp = app
            .http
            .post(app.url("/tasks"))
            .bearer_auth(&token)
            .json(&json!({"mandate": format!("signed with {alg:?}"), "max_ticks": 1}))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 202, "{alg:?}: {:?}", resp.text().await);
        assert_eq!(get_tasks(&app, &token).await.status(), 200);
    }
    // The legacy secret still works beside the JWKS (projects migrating to signing keys).
    assert_eq!(get_tasks(&app, &app.token_for("alice")).await.status(), 200);
    assert_eq!(keys.fetches().await, 1, "one fetch at start, none per request");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_is_refused_after_exactly_one_refetch() {
    let keys = KeyServer::start(&["ec"]).await;
    let app = Harness::start(&[("SUPABASE_JWKS_URL", &keys.url())]).await;
    wait_serving(&app).await;
    assert_eq!(keys.fetches().await, 1);
    let forged = sign(Algorithm::ES256, "no-such-kid", &claims("mallory"));
    let concurrent = futures_util::future::join_all((0..8).map(|_| get_tasks(&app, &forged))).await;
    for resp in concurrent {
        assert_eq!(resp.status(), 401);
    }
    assert_401(&app, &forged, "unknown kid, again").await;
    assert_eq!(keys.fetches().await, 2, "concurrent and repeated misses share one refetch");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_added_to_the_set_is_picked_up_on_its_first_use() {
    let keys = KeyServer::start(&["ec"]).await;
    let app = Harness::start(&[("SUPABASE_JWKS_URL", &keys.url())]).await;
    wait_serving(&app).await;
    keys.serve(&["ec", "ed"]).await;
    let token = sign(Algorithm::EdDSA, "test-ed-1", &claims("alice"));
    assert_eq!(get_tasks(&app, &token).await.status(), 200, "EdDSA key added after start");
    assert_eq!(keys.fetches().await, 1, "the reset server counts only the refetch");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_set_is_refused_after_the_refresh() {
    let keys = KeyServer::start(&["ec", "rsa"]).await;
    let app = Harness::start(&[("SUPABASE_JWKS_URL", &keys.url()), ("JWKS_CACHE_SECONDS", "1")]).await;
    wait_serving(&app).await;
    let rsa = sign(Algorithm::RS256, "test-rsa-1", &claims("alice"));
    let ec = sign(Algorithm::ES256, "test-ec-1", &claims("alice"));
    assert_eq!(get_tasks(&app, &rsa).await.status(), 200);
    keys.serve(&["ec"]).await;
    app.eventually("the removed RSA key is refused", Duration::from_secs(10), || async {
        get_tasks(&app, &rsa).await.status() == 401
    })
    .await;
    assert_eq!(get_tasks(&app, &ec).await.status(), 200, "the key that stayed still works");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_the_last_good_set_and_is_counted() {
    let keys = KeyServer::start(&["ec"]).await;
    let app = Harness::start(&[("SUPABASE_JWKS_URL", &keys.url()), ("JWKS_CACHE_SECONDS", "1")]).await;
    wait_serving(&app).await;
    keys.server.reset().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(500)).mount(&keys.server).await;
    app.eventually("a refresh failure shows in /metrics", Duration::from_secs(10), || async {
        let text = app.http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        text.lines().any(|l| l.starts_with("gateway_jwks_refresh_failures_total") && !l.ends_with(" 0"))
    })
    .await;
    let ec = sign(Algorithm::ES256, "test-ec-1", &claims("alice"));
    assert_eq!(get_tasks(&app, &ec).await.status(), 200, "the last good set is kept");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_algorithm_must_fit_the_key_type() {
    let keys = KeyServer::start(&["ec", "rsa"]).await;
    let app = Harness::start(&[("SUPABASE_JWKS_URL", &keys.url())]).await;
    wait_serving(&app).await;
    // Signed with the RSA key but naming the EC key, and the other way round.
    assert_401(&app, &sign(Algorithm::RS256, "test-ec-1", &claims("mallory")), "RS256 naming an EC key").await;
    assert_401(&app, &sign(Algorithm::ES256, "test-rsa-1", &claims("mallory")), "ES256 naming an RSA key").await;
    // An HS256 token naming a public key's kid, signed with that key's public JWK text as
    // the secret (the classic key-confusion attack).
    let confused =
        crate::common::sign_with(&claims("mallory"), public_key("rsa").to_string().as_bytes(), Algorithm::HS256);
    assert_401(&app, &confused, "HS256 signed with a public key").await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_server_that_hangs_does_not_hang_requests() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks(&["ec"])).set_delay(Duration::from_secs(120)))
        .mount(&server)
        .await;
    let url = format!("{}{JWKS_PATH}", server.uri());
    let app = Harness::start(&[("SUPABASE_JWKS_URL", &url)]).await;
    wait_serving(&app).await;
    let token = sign(Algorithm::ES256, "test-ec-1", &claims("alice"));
    let started = Instant::now();
    let resp = get_tasks(&app, &token).await;
    // 401 (the fetch timed out, the key is unknown), not the request deadline's 503.
    problem(resp, 401).await;
    assert!(started.elapsed() < Duration::from_secs(9), "took {:?}", started.elapsed());
    // HS256 requests never wait on the key server at all.
    let started = Instant::now();
    assert_eq!(get_tasks(&app, &app.token_for("alice")).await.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2), "HS256 waited {:?}", started.elapsed());
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_url_gives_the_jwks_url_and_the_issuer() {
    let keys = KeyServer::start(&["ec"]).await;
    let project = keys.server.uri();
    let app = Harness::start(&[("SUPABASE_URL", &project)]).await;
    wait_serving(&app).await;
    let mut good = claims("alice");
    good["iss"] = json!(format!("{project}/auth/v1"));
    assert_eq!(get_tasks(&app, &sign(Algorithm::ES256, "test-ec-1", &good)).await.status(), 200);
    assert_eq!(keys.fetches().await, 1, "keys came from {project}{JWKS_PATH}");
    assert_401(&app, &sign(Algorithm::ES256, "test-ec-1", &claims("alice")), "no iss").await;
    let mut other = good.clone();
    other["iss"] = json!("https://other.supabase.co/auth/v1");
    assert_401(&app, &sign(Algorithm::ES256, "test-ec-1", &other), "another project's iss").await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_static_jwk_instead_of_a_url() {
    let jwk = public_key("ed").to_string();
    let app = Harness::start(&[("SUPABASE_JWT_PUBLIC_JWK", &jwk)]).await;
    wait_serving(&app).await;
    assert_eq!(get_tasks(&app, &sign(Algorithm::EdDSA, "test-ed-1", &claims("alice"))).await.status(), 200);
    assert_401(&app, &sign(Algorithm::EdDSA, "other-kid", &claims("alice")), "kid not the static key's").await;
    app.cleanup().await;
}
