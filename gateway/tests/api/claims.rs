//! The claim checks beyond signature and expiry (ARCHITECTURE §2 "Auth"), over HTTP: `nbf`, `crit`,
//! `iss` as one string, anonymous sign-ins (403), secret rotation, and the messages a client
//! sees for a header that is not a bearer token.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use testkit::Harness;

use crate::common::{claims, detail, header, problem, sign, sign_with};

const ISSUER: &str = "https://project.supabase.test/auth/v1";
const PREVIOUS: &str = "previous-secret-previous-secret-previous-0";

async fn status_of(app: &Harness, authorization: &str) -> u16 {
    let resp = app.http.get(app.url("/tasks")).header("authorization", authorization).send().await.expect("request");
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_corpus() {
    let app = Harness::start(&[("AUTH_ISSUER", ISSUER), ("SUPABASE_JWT_SECRET_PREVIOUS", PREVIOUS)]).await;
    let now = chrono::Utc::now().timestamp();
    let with = |key: &str, value: serde_json::Value| {
        let mut c = claims("alice");
        c["iss"] = json!(ISSUER);
        c[key] = value;
        c
    };
    let good = with("iss", json!(ISSUER));
    assert_eq!(status_of(&app, &format!("Bearer {}", sign(&good))).await, 200, "control");

    let mut crit = Header::new(Algorithm::HS256);
    crit.crit = Some(vec!["b64".into()]);
    let crit = jsonwebtoken::encode(&crit, &good, &EncodingKey::from_secret(testkit::SECRET.as_bytes())).expect("sign");
    for (what, token) in [
        ("nbf two minutes ahead", sign(&with("nbf", json!(now + 120)))),
        ("crit header", crit),
        ("iss array containing the issuer", sign(&with("iss", json!([ISSUER, "https://evil.test"])))),
        ("no iss", {
            let mut c = good.clone();
            c.as_object_mut().expect("object").remove("iss");
            sign(&c)
        }),
        ("a wrong secret", sign_with(&good, b"wrong-secret-wrong-secret-wrong-secret-00", Algorithm::HS256)),
    ] {
        let (headers, _) =
            problem(app.http.get(app.url("/tasks")).bearer_auth(&token).send().await.expect("request"), 401).await;
        assert_eq!(header(&headers, "www-authenticate"), "Bearer error=\"invalid_token\"", "{what}");
    }
    assert_eq!(
        status_of(&app, &format!("Bearer {}", sign_with(&good, PREVIOUS.as_bytes(), Algorithm::HS256))).await,
        200,
        "the previous secret is accepted during rotation"
    );
    assert_eq!(status_of(&app, &format!("Bearer {}", sign(&with("nbf", json!(now + 10))))).await, 200, "within leeway");

    // Anonymous sign-ins: 403, with a message; allowed when configured.
    let anon = sign(&with("is_anonymous", json!(true)));
    let (_, body) =
        problem(app.http.get(app.url("/tasks")).bearer_auth(&anon).send().await.expect("request"), 403).await;
    assert!(detail(&body).contains("anonymous"), "{body}");
    app.cleanup().await;

    let allowing = Harness::start(&[("AUTH_ALLOW_ANONYMOUS", "true")]).await;
    let mut c = claims("guest");
    c["is_anonymous"] = json!(true);
    assert_eq!(status_of(&allowing, &format!("Bearer {}", sign(&c))).await, 200);
    allowing.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_401_names_the_bearer_scheme() {
    let app = Harness::start(&[]).await;
    let token = sign(&claims("alice"));
    for (authorization, says) in [
        (Some(format!("Basic {token}")), "Bearer scheme"),
        (Some(token.clone()), "Bearer scheme"),
        (Some("Bearer not-a-jwt".to_owned()), "invalid or expired"),
        (None, "Authorization: Bearer"),
    ] {
        let mut req = app.http.get(app.url("/tasks"));
        if let Some(a) = &authorization {
            req = req.header("authorization", a);
        }
        let (headers, body) = problem(req.send().await.expect("request"), 401).await;
        assert_eq!(header(&headers, "www-authenticate"), "Bearer error=\"invalid_token\"", "{authorization:?}");
        assert!(detail(&body).contains(says), "{authorization:?}: {body}");
    }
    app.cleanup().await;
}
