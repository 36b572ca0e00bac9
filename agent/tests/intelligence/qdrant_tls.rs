//! Qdrant over TLS (`QDRANT_URL=https://…`, `QDRANT_API_KEY`), as for Qdrant Cloud. No
//! Qdrant server runs here, so the TLS half is checked against a real local TLS listener
//! (a private TLS-only `redis-server` with a test CA): the client must do a verified
//! handshake and refuse a certificate the system roots do not vouch for.

use agent::memory::qdrant::QdrantStore;
use agent::memory::{MemorySettings, RecallQuery, Scope, VectorStore};
use proto::TaskId;
use runtime::config::Env;
use testkit::tls::{Pki, TlsRedis};

fn settings(url: &str, key: Option<&str>) -> Result<MemorySettings, runtime::config::ConfigError> {
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
    let e = store
        .search(&scope, RecallQuery { text: "q", vector: &[1.0, 0.0] }, 3)
        .await
        .expect_err("an unverifiable server must be refused");
    let text = e.to_string();
    assert!(text.contains("UnknownIssuer") || text.contains("invalid peer certificate"), "{text}");
    assert!(!text.contains("secret-key"), "the key must not appear in errors: {text}");
}

/// The other half: the client trusts a private CA (through `SSL_CERT_FILE`, which the
/// system-roots loader honours, so it runs in a child process with that variable set),
/// completes the verified handshake with a local TLS gRPC endpoint, and sends the API key
/// there. The endpoint records the first request and answers it with `UNIMPLEMENTED`.
#[tokio::test]
async fn https_with_a_trusted_ca_carries_the_api_key_over_tls() {
    let pki = Pki::generate();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(grpc_endpoint::serve_one(listener, grpc_endpoint::acceptor(&pki)));

    let exe = std::env::current_exe().expect("test exe");
    let child = tokio::process::Command::new(exe)
        .args(["qdrant_tls::child_search_over_tls", "--exact", "--ignored", "--nocapture"])
        .env("SSL_CERT_FILE", &pki.ca_file)
        .env("EUGLENA_TEST_QDRANT_URL", format!("https://localhost:{port}"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(crate::SOON, child).await.expect("child in time").expect("child ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let seen = tokio::time::timeout(crate::SOON, server).await.expect("server in time").expect("server task");
    let (path, key) = seen.expect("the endpoint got a request over TLS");
    assert!(path.starts_with("/qdrant."), "a Qdrant gRPC call: {path}");
    assert_eq!(key.as_deref(), Some(CHILD_KEY), "the API key travels in the request headers");
}

const CHILD_KEY: &str = "test-api-key-over-tls";

#[tokio::test]
#[ignore = "helper: run in a child process by https_with_a_trusted_ca_carries_the_api_key_over_tls"]
async fn child_search_over_tls() {
    let url = std::env::var("EUGLENA_TEST_QDRANT_URL").expect("run by its parent test");
    let s = settings(&url, Some(CHILD_KEY)).expect("settings");
    let store = QdrantStore::new(&s).expect("client").expect("configured");
    let scope = Scope { task: TaskId::new(), user: "alice".into() };
    let e = store
        .search(&scope, RecallQuery { text: "q", vector: &[1.0, 0.0] }, 3)
        .await
        .expect_err("the endpoint answers UNIMPLEMENTED");
    let text = e.to_string();
    // Past the handshake: the error is the endpoint's answer, not a certificate problem.
    assert!(text.contains("test endpoint"), "{text}");
    assert!(!text.contains("certificate"), "{text}");
}

mod grpc_endpoint {
    use std::sync::Arc;
    use std::time::Duration;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use testkit::tls::Pki;
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    pub(super) fn acceptor(pki: &Pki) -> TlsAcceptor {
        let certs = CertificateDer::pem_file_iter(&pki.cert_file).expect("cert").collect::<Result<Vec<_>, _>>();
        let key = PrivateKeyDer::from_pem_file(&pki.key_file).expect("key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs.expect("certs"), key)
            .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }

    /// The first request's path and `api-key` header; `None` if no request arrived.
    pub(super) async fn serve_one(listener: TcpListener, acceptor: TlsAcceptor) -> Option<(String, Option<String>)> {
        let (tcp, _) = listener.accept().await.ok()?;
        let tls = acceptor.accept(tcp).await.ok()?;
        let mut conn = h2::server::handshake(tls).await.ok()?;
        let (request, mut respond) = conn.accept().await?.ok()?;
        let path = request.uri().path().to_owned();
        let key = request.headers().get("api-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let response = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", "12")
            .header("grpc-message", "test endpoint")
            .body(())
            .expect("response");
        let _ = respond.send_response(response, true);
        // Keep driving the connection so the answer is flushed, until the client leaves.
        let _ = tokio::time::timeout(Duration::from_secs(10), async { while conn.accept().await.is_some() {} }).await;
        Some((path, key))
    }
}
