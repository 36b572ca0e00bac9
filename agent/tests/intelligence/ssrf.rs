//! The visit tool's address rules with `VISIT_ALLOW_PRIVATE` off: every private form is
//! refused before a connection is made. Servers on loopback count their connections, so
//! "refused" also means "never reached".

use std::sync::Arc;
use std::time::Duration;

use agent::tools::visit::{VisitError, VisitSettings, Visitor};
use runtime::address_policy::{Lookup, SystemLookup};

use crate::support::{FakeDns, Reply, Server};

fn settings() -> VisitSettings {
    VisitSettings { max_bytes: 1 << 20, timeout: Duration::from_secs(5), allow_private: false }
}

#[tokio::test]
async fn private_targets_in_every_spelling_are_refused_without_connecting() {
    let target = Server::start("127.0.0.1", |_| Reply::html("<p>secret</p>")).await.expect("server");
    let v6 = Server::start("::1", |_| Reply::html("<p>secret</p>")).await.ok();
    let p = target.port();
    let dns = FakeDns::new(&[
        ("private.test", &["10.1.2.3"]),
        ("loopback.test", &["127.0.0.1"]),
        // One public and one private address: refused as a whole (DNS rebinding).
        ("mixed.test", &["93.184.216.34", "127.0.0.1"]),
        ("meta.test", &["169.254.169.254"]),
        ("mapped.test", &["::ffff:127.0.0.1"]),
    ]);
    let visitor = Visitor::new(settings(), dns, Vec::new()).expect("visitor");
    let system = Visitor::new(settings(), Arc::new(SystemLookup) as Arc<dyn Lookup>, Vec::new()).expect("visitor");
    let v6_port = v6.as_ref().map_or(p, Server::port);
    let blocked = [
        format!("http://127.0.0.1:{p}/"),
        format!("http://[::1]:{v6_port}/"),
        format!("http://10.0.0.1:{p}/"),
        format!("http://172.16.0.1:{p}/"),
        format!("http://192.168.1.1:{p}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://169.254.170.2/v2/credentials".to_owned(),
        format!("http://0.0.0.0:{p}/"),
        format!("http://[::ffff:127.0.0.1]:{p}/"),
        format!("http://[::ffff:7f00:1]:{p}/"),
        format!("http://2130706433:{p}/"),
        format!("http://0177.0.0.1:{p}/"),
        format!("http://0x7f.0.0.1:{p}/"),
        format!("http://127.1:{p}/"),
        format!("http://[fd00::1]:{p}/"),
        format!("http://[fe80::1]:{p}/"),
        format!("http://private.test:{p}/"),
        format!("http://loopback.test:{p}/"),
        format!("http://mixed.test:{p}/"),
        format!("http://meta.test:{p}/"),
        format!("http://mapped.test:{p}/"),
    ];
    for url in &blocked {
        let r = visitor.visit(url).await;
        assert!(matches!(r, Err(VisitError::Blocked(_))), "{url}: {r:?}");
    }
    // `localhost` through the real system resolver.
    let r = system.visit(&format!("http://localhost:{p}/")).await;
    assert!(matches!(r, Err(VisitError::Blocked(_))), "localhost: {r:?}");
    for url in
        ["file:///etc/passwd".to_owned(), format!("gopher://127.0.0.1:{p}/_INFO"), format!("ftp://127.0.0.1:{p}/")]
    {
        let r = visitor.visit(&url).await;
        assert!(matches!(r, Err(VisitError::Scheme(_))), "{url}: {r:?}");
    }
    assert_eq!(target.connections(), 0, "nothing reached the IPv4 loopback server");
    assert_eq!(v6.as_ref().map_or(0, Server::connections), 0, "nothing reached the IPv6 loopback server");
}

#[tokio::test]
async fn redirects_are_checked_hop_by_hop() {
    // 127.0.0.2 stands in for a public site (exempted); 127.0.0.3 is the private target.
    let inside = Server::start("127.0.0.3", |_| Reply::html("<p>internal admin</p>")).await.expect("server");
    let ip = inside.port();
    let public = Server::start("127.0.0.2", move |path| match path {
        "/to-ip" => Reply::redirect(&format!("http://127.0.0.3:{ip}/admin")),
        "/to-name" => Reply::redirect(&format!("http://internal.test:{ip}/admin")),
        "/to-metadata" => Reply::redirect("http://169.254.169.254/latest/meta-data/iam/"),
        "/to-file" => Reply::redirect("file:///etc/passwd"),
        "/loop" => Reply::redirect("/loop"),
        "/hop" => Reply::redirect("/page"),
        _ => Reply::html("<title>Public</title><p>A public page with a long enough first paragraph.</p>"),
    })
    .await
    .expect("server");
    let dns = FakeDns::new(&[("public.test", &["127.0.0.2"]), ("internal.test", &["127.0.0.3"])]);
    let visitor = Visitor::new(settings(), dns, vec!["127.0.0.2".parse().expect("ip")]).expect("visitor");
    let base = format!("http://public.test:{}", public.port());

    let ok = visitor.visit(&format!("{base}/hop")).await.expect("a redirect inside the public site is followed");
    assert_eq!(ok.url, format!("{base}/page"));
    assert_eq!(ok.title.as_deref(), Some("Public"));

    for path in ["/to-ip", "/to-name", "/to-metadata"] {
        let r = visitor.visit(&format!("{base}{path}")).await;
        assert!(matches!(r, Err(VisitError::Blocked(_))), "{path}: {r:?}");
    }
    let r = visitor.visit(&format!("{base}/to-file")).await;
    assert!(matches!(r, Err(VisitError::Scheme(_))), "{r:?}");
    let r = visitor.visit(&format!("{base}/loop")).await;
    assert!(matches!(r, Err(VisitError::TooManyRedirects)), "{r:?}");
    assert!(public.connections() > 0, "the public stand-in was reached");
    assert_eq!(inside.connections(), 0, "the redirect targets were never connected to");
}
