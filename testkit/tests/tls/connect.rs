//! The connection functions every process uses, one link at a time.

use redis::AsyncCommands;
use runtime::connect::{self, AmqpConnectError, Endpoint};
use testkit::tls::{Pki, TlsRedis};

async fn redis_error(endpoint: &Endpoint) -> String {
    let mut conn = connect::redis(endpoint).expect("client");
    connect::ping_redis(&mut conn, endpoint).await.expect_err("the server must be refused")
}

#[tokio::test]
async fn redis_over_tls_with_the_private_ca() {
    let pki = Pki::generate();
    let server = TlsRedis::start(&pki);
    let endpoint = server.endpoint(Some(&pki.ca_file));
    let mut conn = connect::redis(&endpoint).expect("client");
    connect::ping_redis(&mut conn, &endpoint).await.expect("ping over TLS");
    let key = format!("tls-test:{}", uuid::Uuid::new_v4());
    let _: () = conn.set_ex(&key, "over tls", 60).await.expect("set");
    let back: String = conn.get(&key).await.expect("get");
    assert_eq!(back, "over tls");
}

#[tokio::test]
async fn redis_refuses_a_server_it_cannot_verify() {
    let pki = Pki::generate();
    let server = TlsRedis::start(&pki);
    let host = format!("localhost:{}", server.port);

    // System roots only: the private CA is unknown.
    let e = redis_error(&server.endpoint(None)).await;
    assert!(e.contains(&format!("redis: TLS handshake with {host} failed")), "{e}");
    assert!(e.contains("not signed by a trusted CA"), "{e}");

    // Some other private CA does not help either.
    let e = redis_error(&server.endpoint(Some(&pki.other_ca_file))).await;
    assert!(e.contains(&format!("TLS handshake with {host} failed")) && e.contains("UnknownIssuer"), "{e}");

    // The right CA, but the certificate names localhost, not 127.0.0.1.
    let e = redis_error(&server.wrong_host_endpoint(&pki.ca_file)).await;
    assert!(e.contains(&format!("TLS handshake with 127.0.0.1:{} failed", server.port)), "{e}");
    assert!(e.contains("not valid for this host name"), "{e}");
}

#[tokio::test]
async fn a_plain_client_gets_nothing_from_a_tls_only_server() {
    let pki = Pki::generate();
    let server = TlsRedis::start(&pki);
    // redis:// to the TLS port: no silent success, the command fails.
    let endpoint = Endpoint::new(format!("redis://localhost:{}", server.port));
    let mut conn = connect::redis(&endpoint).expect("client");
    assert!(connect::ping_redis(&mut conn, &endpoint).await.is_err());
}

/// The RabbitMQ half runs in `processes.rs` on the one private node that suite starts;
/// these check what the AMQP error says.
pub(crate) async fn amqp_error(endpoint: &Endpoint) -> AmqpConnectError {
    match connect::amqp(endpoint, "tls-test").await {
        Ok(_) => panic!("the broker at {} must be refused", endpoint.host_port()),
        Err(e) => e,
    }
}

/// `REDIS_SENTINELS` with `rediss://`: the Sentinel is asked over TLS, and the relay speaks
/// TLS to the primary it names, verified against `REDIS_URL`'s host with the private CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_through_a_tls_sentinel() {
    let pki = Pki::generate();
    let primary = TlsRedis::start(&pki);
    let port = testkit::free_port().port();
    let dir = testkit::tls::TempDir::new("sentinel");
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port 0\ntls-port {port}\nbind 127.0.0.1\ndir {d}\ntls-cert-file {cert}\ntls-key-file {key}\n\
             tls-ca-cert-file {ca}\ntls-auth-clients no\ntls-replication yes\nsentinel monitor t 127.0.0.1 {p} 1\n",
            d = dir.path().display(),
            cert = pki.cert_file.display(),
            key = pki.key_file.display(),
            ca = pki.ca_file.display(),
            p = primary.port,
        ),
    )
    .expect("sentinel.conf");
    let mut sentinel = std::process::Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server --sentinel");
    let sentinels = runtime::sentinel::Sentinels::new(vec![format!("localhost:{port}")], "t".into(), None);
    let endpoint = primary.endpoint(Some(&pki.ca_file)).with_sentinels(sentinels);
    let mut conn = connect::redis(&endpoint).expect("client");
    let key = format!("tls-sentinel-test:{}", uuid::Uuid::new_v4());
    let mut written = false;
    for _ in 0..100 {
        if conn.set_ex::<_, _, ()>(&key, "via the sentinel", 60).await.is_ok() {
            written = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = sentinel.kill();
    let _ = sentinel.wait();
    assert!(written, "no write through the TLS sentinel relay");
    let back: String = conn.get(&key).await.expect("get");
    assert_eq!(back, "via the sentinel");
}
