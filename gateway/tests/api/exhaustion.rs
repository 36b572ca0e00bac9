//! One client cannot take the service down (ARCHITECTURE §8 "No single client exhausts a
//! shared resource"): each test is a finding of the hostile-user audit, replayed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use testkit::{Harness, Namespace, Services};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::common::{detail, header, problem, wait_serving};

/// `/health` answers within a second, several times over `span`.
async fn health_keeps_answering(app: &Harness, span: Duration) {
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let until = Instant::now() + span;
    while Instant::now() < until {
        let started = Instant::now();
        let resp = fresh.get(app.url("/health")).timeout(Duration::from_secs(1)).send().await;
        assert!(matches!(&resp, Ok(r) if r.status() == 200), "/health did not answer within 1 s: {resp:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_streams_are_bounded_and_health_still_answers() {
    let app = Harness::start(&[("GATEWAY_MAX_CONNECTIONS", "64"), ("GATEWAY_MAX_CONNECTIONS_PER_PEER", "0")]).await;
    let id = app.submit_ok("streamer", "a queued task to follow", 5).await;
    let token = app.token_for("streamer");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..64 {
        let resp =
            client.get(app.url(&format!("/tasks/{id}/events"))).bearer_auth(&token).send().await.expect("answered");
        match resp.status().as_u16() {
            200 => open.push(resp),
            429 => {
                assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
                let (_, body) = problem(resp, 429).await;
                assert!(detail(&body).contains("8 event streams"), "{body}");
                refused += 1;
            }
            other => panic!("stream answered {other}"),
        }
    }
    assert_eq!((open.len(), refused), (8, 56), "SSE_MAX_STREAMS_PER_USER defaults to 8");
    health_keeps_answering(&app, Duration::from_secs(2)).await;
    // Another user is not affected by this user's allowance.
    let other = app.submit_ok("bystander", "mine", 1).await;
    let resp = client
        .get(app.url(&format!("/tasks/{other}/events")))
        .bearer_auth(app.token_for("bystander"))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    // A closed stream gives its place back.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = client.get(app.url(&format!("/tasks/{id}/events"))).bearer_auth(&token).send().await.expect("answered");
        if r.status() == 200 {
            open.push(r);
            break;
        }
        assert!(Instant::now() < deadline, "a closed stream's place was not given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_bounded_across_replicas() {
    let mut app = Harness::start(&[("SSE_MAX_STREAMS_PER_USER", "2")]).await;
    let replica = app.start_replica(&[("SSE_MAX_STREAMS_PER_USER", "2")]).await;
    let id = app.submit_ok("roamer", "follow me", 5).await;
    let token = app.token_for("roamer");
    let url = |base: String| format!("{base}/tasks/{id}/events");
    let a = app.http.get(url(app.url(""))).bearer_auth(&token).send().await.expect("a");
    let b = app.http.get(url(format!("http://{replica}"))).bearer_auth(&token).send().await.expect("b");
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let c = app.http.get(url(format!("http://{replica}"))).bearer_auth(&token).send().await.expect("c");
    assert_eq!(c.status(), 429, "the second replica counts the first one's stream");
    drop((a, b));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_wide_stream_share_stays_below_the_connection_cap() {
    let app = Harness::start(&[("GATEWAY_MAX_CONNECTIONS", "8"), ("GATEWAY_MAX_CONNECTIONS_PER_PEER", "0")]).await;
    let mut open = Vec::new();
    let mut unavailable = 0;
    for n in 0..6 {
        let user = format!("u{n}");
        let id = app.submit_ok(&user, "follow", 1).await;
        let resp = app
            .http
            .get(app.url(&format!("/tasks/{id}/events")))
            .bearer_auth(app.token_for(&user))
            .send()
            .await
            .expect("answered");
        match resp.status().as_u16() {
            200 => open.push(resp),
            503 => unavailable += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!((open.len(), unavailable), (4, 2), "SSE_MAX_STREAMS defaults to half the connection cap");
    app.cleanup().await;
}

/// Idle sockets from one address (127.0.0.2) cannot starve a client at another (127.0.0.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_of_one_peer_do_not_stop_health() {
    let app = Harness::start(&[("GATEWAY_MAX_CONNECTIONS", "64"), ("GATEWAY_MAX_CONNECTIONS_PER_PEER", "16")]).await;
    wait_serving(&app).await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.2:0".parse().expect("addr")).expect("bind 127.0.0.2");
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), socket.connect(app.addr)).await {
            idle.push(s);
        }
    }
    health_keeps_answering(&app, Duration::from_secs(3)).await;
    drop(idle);
    app.cleanup().await;
}

/// The audit's scenario without a per-peer limit (everyone behind one address): 64 idle
/// sockets fill the cap and `/health` still answers from the probe reserve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_filling_the_cap_do_not_stop_health() {
    let app = Harness::start(&[("GATEWAY_MAX_CONNECTIONS", "64"), ("GATEWAY_MAX_CONNECTIONS_PER_PEER", "0")]).await;
    wait_serving(&app).await;
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    health_keeps_answering(&app, Duration::from_secs(3)).await;
    let ready = reqwest::Client::new().get(app.url("/ready")).timeout(Duration::from_secs(2)).send().await;
    assert!(matches!(&ready, Ok(r) if r.status() == 200), "/ready answers from the reserve too: {ready:?}");
    drop(idle);
    app.cleanup().await;
}

fn series(metrics: &str) -> Vec<&str> {
    metrics.lines().filter(|l| l.starts_with("http_requests_total{")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_do_not_grow_metrics() {
    let app = Harness::start(&[]).await;
    let client = reqwest::Client::new();
    let send = |m: String| {
        let method = Method::from_bytes(m.as_bytes()).expect("method");
        client.request(method, app.url("/no/such/route")).send()
    };
    // One made-up method first, so its series exists before the count.
    let _ = send("WARMUP".into()).await.expect("answered");
    let before = app.http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    for n in 0..5000 {
        let _ = send(format!("M{n}{}", "X".repeat(200))).await.expect("answered");
    }
    let after = app.http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(!after.contains("M4999X"), "a made-up method became a label");
    let known = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "other"];
    for line in series(&after) {
        let method = line.split("method=\"").nth(1).and_then(|r| r.split('"').next()).expect("method label");
        assert!(known.contains(&method), "{line}");
    }
    // The recorder is shared by the tests running beside this one, which may add a few
    // series of their own routes; 5,000 methods would add 5,000.
    let grew = series(&after).len().saturating_sub(series(&before).len());
    assert!(grew < 50, "{grew} new series");
    app.cleanup().await;
}

/// `/ops/samples` under 200 requests a second costs Redis one read per cache period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_samples_reads_redis_once_per_interval() {
    let redis = testkit::private::PrivateRedis::start(false);
    let services = Services { redis: runtime::connect::Endpoint::new(redis.url()), ..Services::shared() };
    let app = Harness::start_in(Namespace::on(services), &[("OPS_SAMPLES_CACHE_SECONDS", "2")]).await;
    let keys = proto::Keys::new(app.ns.prefix.clone());
    let mut conn = app.redis.clone();
    let now = chrono::Utc::now().timestamp_millis();
    for i in 0..50 {
        let s = proto::samples::Sample { at: now - (50 - i) * 10_000, ready: Some(i as u64), ..Default::default() };
        proto::samples::append(&mut conn, &keys, &s, 10_000).await.expect("append");
    }
    let xrange_calls = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_xrange:calls="))
            .and_then(|r| r.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let stats = || async {
        let info: String =
            redis::cmd("INFO").arg("commandstats").query_async(&mut app.redis.clone()).await.expect("info");
        xrange_calls(info)
    };
    let before = stats().await;
    let started = Instant::now();
    let mut answered = 0;
    // 200 requests a second for 4 s: two cache periods.
    while started.elapsed() < Duration::from_secs(4) {
        let tick = Instant::now();
        let batch = (0..20).map(|_| app.http.get(app.url("/ops/samples?minutes=60")).send());
        for resp in futures_util::future::join_all(batch).await {
            let resp = resp.expect("answered");
            assert_eq!(resp.status(), 200);
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed())).await;
    }
    let reads = stats().await - before;
    assert!(answered >= 400, "{answered} answered");
    assert!((1..=3).contains(&reads), "{reads} XRANGE calls for {answered} requests over two periods");
    // The answer is the samples, oldest first.
    let body: serde_json::Value =
        app.http.get(app.url("/ops/samples?minutes=60")).send().await.expect("get").json().await.expect("json");
    let samples = body["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 50);
    assert_eq!(samples[0]["ready"], 0);
    app.cleanup().await;
}

/// A TCP listener that only counts the connections it gets.
async fn recording_proxy() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (format!("http://{addr}"), seen)
}

/// Gives a queued task a webhook URL the submit-time check would have refused (as if its
/// name resolved elsewhere then), then cancels it so its webhook is due.
async fn end_with_webhook(app: &Harness, base: &str, user: &str, url: &str) -> proto::TaskId {
    let resp = app
        .http
        .post(format!("{base}/tasks"))
        .bearer_auth(app.token_for(user))
        .json(&serde_json::json!({"mandate": "call me", "max_ticks": 1}))
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 202);
    let id: proto::TaskId = resp.json::<serde_json::Value>().await.expect("json")["correlation_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let key = proto::Keys::new(app.ns.prefix.clone()).task(id);
    let _: () = redis::AsyncCommands::hset(&mut app.redis.clone(), key, "webhook_url", url).await.expect("hset");
    let resp = app
        .http
        .post(format!("{base}/tasks/{id}/cancel"))
        .bearer_auth(app.token_for(user))
        .send()
        .await
        .expect("cancel");
    assert_eq!(resp.status(), 202);
    id
}

async fn gives_up_refused(app: &Harness, id: proto::TaskId) {
    let key = proto::Keys::new(app.ns.prefix.clone()).task(id);
    app.eventually("webhook given up", Duration::from_secs(15), || async {
        let state: Option<String> =
            redis::AsyncCommands::hget(&mut app.redis.clone(), &key, "webhook_state").await.expect("redis");
        state.as_deref() == Some("gave_up")
    })
    .await;
    let last: String = redis::AsyncCommands::hget(&mut app.redis.clone(), &key, "webhook_last").await.expect("redis");
    assert_eq!(last, "refused: not a public address");
}

const HOOK_SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC10ZXN0LXdlYmhvb2stc2U=";

/// Proxy variables in the environment are not followed: a proxy would resolve and connect
/// past the address policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_ignore_proxy_variables_and_give_up_on_private_targets() {
    let (proxy, seen) = recording_proxy().await;
    let app = Harness::start(&[]).await;
    let gw = testkit::GatewayProc::spawn(
        env!("CARGO_BIN_EXE_gateway"),
        &app.ns,
        &[
            ("WEBHOOK_SECRET", HOOK_SECRET),
            ("HTTP_PROXY", &proxy),
            ("HTTPS_PROXY", &proxy),
            ("ALL_PROXY", &proxy),
            ("http_proxy", &proxy),
        ],
    )
    .await;
    let id = end_with_webhook(&app, &gw.url(""), "hooked", "http://localhost:9/hook").await;
    gives_up_refused(&app, id).await;
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the proxy saw a connection");
    drop(gw);
    app.cleanup().await;
}

/// An explicit `WEBHOOK_PROXY` is used, but the target is still checked first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_webhook_proxy_still_applies_the_policy() {
    let (proxy, seen) = recording_proxy().await;
    let app = Harness::start(&[("WEBHOOK_SECRET", HOOK_SECRET), ("WEBHOOK_PROXY", &proxy)]).await;
    let id = end_with_webhook(&app, &app.url(""), "hooked", "http://localhost:9/hook").await;
    gives_up_refused(&app, id).await;
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the proxy saw a connection");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_webhook_url_does_not_say_what_it_resolves_to() {
    let app = Harness::start(&[("WEBHOOK_SECRET", HOOK_SECRET)]).await;
    let resp = app
        .submit("nosy", serde_json::json!({"mandate": "m", "max_ticks": 1, "webhook_url": "http://localhost:9/x"}))
        .await;
    let (_, body) = problem(resp, 422).await;
    assert_eq!(detail(&body), "webhook_url: its host is not a public address");
    app.cleanup().await;
}

/// One user's slow receivers delay only that user's webhooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_receivers_of_one_user_do_not_delay_another() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(8)))
        .mount(&receiver)
        .await;
    Mock::given(method("POST")).and(path("/fast")).respond_with(ResponseTemplate::new(204)).mount(&receiver).await;
    let app = Harness::start(&[
        ("WEBHOOK_SECRET", HOOK_SECRET),
        ("WEBHOOK_ALLOW_PRIVATE", "true"),
        ("WEBHOOK_TIMEOUT_SECONDS", "10"),
    ])
    .await;
    let slow = format!("{}/slow", receiver.uri());
    for _ in 0..32 {
        end_with_webhook(&app, &app.url(""), "slowpoke", &slow).await;
    }
    let at = |p: &'static str| {
        let receiver = &receiver;
        async move { receiver.received_requests().await.unwrap_or_default().iter().filter(|r| r.url.path() == p).count() }
    };
    app.eventually("the slow receivers busy", Duration::from_secs(10), || async { at("/slow").await >= 4 }).await;
    let started = Instant::now();
    end_with_webhook(&app, &app.url(""), "quick", &format!("{}/fast", receiver.uri())).await;
    app.eventually("the other user's webhook", Duration::from_secs(20), || async { at("/fast").await == 1 }).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "another user's webhook waited {took:?} behind slow receivers");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_are_not_sniffed_or_cached_and_request_ids_are_checked() {
    let app = Harness::start(&[]).await;
    let resp = app.http.get(app.url("/agents/count")).header("x-request-id", "req-123.abc").send().await.expect("get");
    assert_eq!(header(resp.headers(), "x-content-type-options"), "nosniff");
    assert_eq!(header(resp.headers(), "cache-control"), "no-store");
    assert_eq!(header(resp.headers(), "x-request-id"), "req-123.abc", "a well-formed id is kept");
    let forged = format!("{}<script>", "x".repeat(100));
    let resp = app.http.get(app.url("/health")).header("x-request-id", forged.as_str()).send().await.expect("get");
    let id = header(resp.headers(), "x-request-id");
    assert!(id != forged && id.len() == 36, "a malformed id is replaced: {id}");
    // Problems too.
    let resp = app.http.get(app.url("/tasks")).send().await.expect("get");
    assert_eq!(header(resp.headers(), "cache-control"), "no-store");
    // The console's assets keep their own caching.
    let resp = app.http.get(app.url("/console/app.js")).send().await.expect("get");
    assert_eq!(header(resp.headers(), "cache-control"), "public, max-age=300");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_bearer_token_is_named() {
    let app = Harness::start(&[]).await;
    for value in ["Bearer ", "Bearer"] {
        let resp = app.http.get(app.url("/tasks")).header("authorization", value).send().await.expect("get");
        let (_, body) = problem(resp, 401).await;
        assert!(detail(&body).starts_with("the bearer token is empty"), "{body}");
    }
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_tokens_only_for_this_machine() {
    let app = Harness::start(&[("CONSOLE_DEV_TOKENS", "true")]).await;
    let body = serde_json::json!({"sub": "dev"});
    let resp = app.http.post(app.url("/dev/token")).json(&body).send().await.expect("post");
    assert_eq!(resp.status(), 200, "a loopback client gets one");
    for (name, value) in [("x-forwarded-for", "203.0.113.5"), ("forwarded", "for=203.0.113.5")] {
        let resp = app.http.post(app.url("/dev/token")).header(name, value).json(&body).send().await.expect("post");
        let (_, problem_body) = problem(resp, 403).await;
        assert!(detail(&problem_body).contains("own machine"), "{problem_body}");
    }
    app.cleanup().await;
}
