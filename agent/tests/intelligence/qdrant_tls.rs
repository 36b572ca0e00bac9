//! Qdrant over TLS (`QDRANT_URL=https://…`, `QDRANT_API_KEY`), as for Qdrant Cloud. No
//! Qdrant server runs here, so the TLS half is checked against a real local TLS listener
//! (a private TLS-only `redis-server` with a test CA): the client must do a verified
//! handshake and refuse a certificate the system roots do not vouch for.

use agent::memory::qdrant::QdrantStore;
use agent::memory::{MemorySettings, Scope, VectorStore};
use proto::TaskId;
use proto::config::Env;
use testkit::tls::{Pki, TlsRedis};

fn settings(url: &str, key: Option<&str>) -> Result<MemorySettings, proto::config::ConfigError> {
    let mut env = Env::default().with("QDRANT_URL", url);
    if let Some(k) = key {
        env = env.with("QDRANT_API_KEY", k);
    }
    MemorySettings::from_env(&env)
}

#[test]
fn an_api_key_only_travels_over_tls_or_to_this_machine() {
    assert!(settings("https://xyz.cloud.qdrant.io:6334", Some("k")).is_ok());
    assert!(settings("http://127.0.0.1:6334", Some("k")).is_ok());
    assert!(settings("http://localhost:6334", Some("k")).is_ok());
    assert!(settings("http://qdrant.internal:6334", None).is_ok());
    let e = settings("http://qdrant.internal:6334", Some("k")).unwrap_err();
    assert_eq!(e.var, "QDRANT_API_KEY");
    assert_eq!(settings("grpc://qdrant:6334", None).unwrap_err().var, "QDRANT_URL");
}

#[tokio::test]
async fn https_verifies_the_server_certificate() {
    let pki = Pki::generate();
    let listener = TlsRedis::start(&pki);
    let s = settings(&format!("https://localhost:{}", listener.port), Some("secret-key")).expect("settings");
    let store = QdrantStore::new(&s).expect("client").expect("configured");
    let scope = Scope { task: TaskId::new(), user: "alice".into() };
    let e = store.search(&scope, &[1.0, 0.0], 3).await.expect_err("an unverifiable server must be refused");
    let text = e.to_string();
    assert!(text.contains("UnknownIssuer") || text.contains("invalid peer certificate"), "{text}");
    assert!(!text.contains("secret-key"), "the key must not appear in errors: {text}");
}
