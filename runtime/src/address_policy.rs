//! The one address policy for every outbound request a user can aim (the agent's `visit`
//! tool, the gateway's webhook sender): the public internet only. A model steered by a
//! hostile page, or a user's webhook URL, must not reach our own network: cloud metadata
//! (`169.254.169.254`, ECS's `169.254.170.2`), Redis, RabbitMQ, other services.
//!
//! Enforcement has two halves:
//! - [`GuardedResolver`] is the HTTP client's DNS resolver. It resolves a name, refuses it
//!   if *any* address is not public, and otherwise hands exactly the checked addresses to
//!   the connector, so the address checked is the address connected to (no second lookup
//!   a rebinding DNS server could answer differently).
//! - IP-literal hosts never reach a resolver, so [`Policy::check`] is applied to them
//!   before each request, after the URL parser has normalised decimal, octal and hex forms
//!   (`http://2130706433/`, `http://0177.0.0.1/`) to dotted quads.
//!
//! A refusal's message names the host and says only "not a public address": it reaches task
//! results and API clients, and naming the kind of address (or the address) a name resolved
//! to would let a client map our internal DNS. Callers log the address and its class.
//!
//! Every client that follows the policy is built by [`guarded_client`]: no proxy from the
//! environment (a proxy would resolve and connect on our behalf, past the resolver), and an
//! explicit proxy only with the target checked before each request.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// Resolution is part of the visit's time budget, but a stuck resolver must not hold the
/// tick on its own.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an IPv4 address is not public, or `None` if it is.
fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "reserved",
        (198, 18..=19, _) => "benchmarking",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() || a >= 240 => "reserved",
        _ => return None,
    })
}

/// Why an address is not public, or `None` if it is. IPv6 forms that embed an IPv4
/// address (mapped, compatible, NAT64, 6to4) are judged by the embedded address.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    let v6 = match ip {
        IpAddr::V4(v4) => return classify_v4(v4),
        IpAddr::V6(v6) => v6,
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let seg = v6.segments();
    let embedded_low = || Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8);
    Some(match seg {
        _ if v6.is_unspecified() => "unspecified",
        _ if v6.is_loopback() => "loopback",
        // ::a.b.c.d (deprecated IPv4-compatible), ::ffff:0:a.b.c.d (IPv4-translated, RFC 2765)
        // and 64:ff9b::a.b.c.d (NAT64).
        [0, 0, 0, 0, 0, 0, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => {
            return classify_v4(embedded_low());
        }
        [0x2002, hi, lo, ..] => {
            return classify_v4(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8));
        }
        [0x64, 0xff9b, 1, ..] => "NAT64 (local use)",
        [0x100, 0, 0, 0, ..] => "discard-only",
        [0x2001, 0, ..] => "Teredo",
        [0x2001, 0xdb8, ..] => "documentation",
        [s, ..] if s & 0xfe00 == 0xfc00 => "unique-local",
        [s, ..] if s & 0xffc0 == 0xfe80 => "link-local",
        [s, ..] if s & 0xffc0 == 0xfec0 => "site-local",
        [s, ..] if s & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("refused {host}: not a public address")]
pub struct Blocked {
    pub host: String,
    pub ip: IpAddr,
    pub class: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `VISIT_ALLOW_PRIVATE` / `WEBHOOK_ALLOW_PRIVATE`: for tests and local use only.
    pub allow_private: bool,
    /// Addresses treated as public. Not configurable from the environment: tests use it to
    /// stand a loopback server in for "the internet" while everything else stays refused.
    pub exempt: Vec<IpAddr>,
}

impl Policy {
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Blocked> {
        if self.allow_private || self.exempt.contains(&ip) {
            return Ok(());
        }
        match classify(ip) {
            None => Ok(()),
            Some(class) => Err(Blocked { host: host.to_owned(), ip, class }),
        }
    }
}

/// Name resolution, replaceable so tests can make a name resolve anywhere.
#[async_trait]
pub trait Lookup: Send + Sync {
    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>>;
}

pub struct SystemLookup;

#[async_trait]
impl Lookup for SystemLookup {
    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let addrs = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, 0)))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "DNS lookup timed out"))??;
        Ok(addrs.map(|a| a.ip()).collect())
    }
}

pub struct GuardedResolver {
    pub lookup: Arc<dyn Lookup>,
    pub policy: Policy,
    /// Names resolved without the check: the operator's own proxy, which may well be private.
    pub exempt_hosts: Vec<String>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let lookup = self.lookup.clone();
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        let exempt = self.exempt_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host));
        Box::pin(async move {
            let ips = lookup.lookup(&host).await?;
            if ips.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("{host} has no addresses")).into());
            }
            if !exempt {
                for ip in &ips {
                    policy.check(&host, *ip)?;
                }
            }
            let addrs: Vec<SocketAddr> = ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client for requests a user can aim: names resolved through [`GuardedResolver`],
/// redirects not followed (each hop would need the policy again; callers that follow them
/// check each one), and no proxy unless `proxy` is given. Through a proxy the resolver never
/// sees the target, so callers must run [`check_target`] before each request
/// ([`Outbound::precheck`] does).
pub fn guarded_client(
    lookup: Arc<dyn Lookup>,
    policy: Policy,
    proxy: Option<&url::Url>,
) -> reqwest::Result<reqwest::ClientBuilder> {
    let mut exempt_hosts = Vec::new();
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy();
    if let Some(proxy) = proxy {
        if let Some(url::Host::Domain(name)) = proxy.host() {
            exempt_hosts.push(name.to_owned());
        }
        builder = builder.proxy(reqwest::Proxy::all(proxy.as_str())?);
    }
    Ok(builder.dns_resolver(Arc::new(GuardedResolver { lookup, policy, exempt_hosts })))
}

/// The policy as one outbound client applies it before each request.
#[derive(Clone)]
pub struct Outbound {
    pub policy: Policy,
    pub lookup: Arc<dyn Lookup>,
    /// A proxy is in use: the resolver will not see targets, so they are resolved here.
    pub proxied: bool,
}

impl Outbound {
    /// Refuses a target before any connection: an IP literal outside the policy always, and
    /// through a proxy also a name that resolves outside it now. (The proxy resolves again
    /// when it connects; a proxy that itself refuses private destinations closes that gap.)
    pub async fn precheck(&self, url: &url::Url) -> Result<(), TargetError> {
        if self.proxied {
            check_target(&self.policy, self.lookup.as_ref(), url).await
        } else {
            Ok(check_literal_host(&self.policy, url)?)
        }
    }
}

/// Checks a URL's host when it is an IP literal, which never reaches the resolver; names are
/// checked by [`GuardedResolver`] when the request connects.
pub fn check_literal_host(policy: &Policy, url: &url::Url) -> Result<(), Blocked> {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => policy.check(&ip.to_string(), IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => policy.check(&ip.to_string(), IpAddr::V6(ip)),
        _ => Ok(()),
    }
}

/// Why a URL may not be used as a target, checked up front (literal or resolved now). The
/// request itself is still made through [`GuardedResolver`]: DNS may answer differently later.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Blocked(#[from] Blocked),
    #[error("{0} does not resolve")]
    Unresolved(String),
}

pub async fn check_target(policy: &Policy, lookup: &dyn Lookup, url: &url::Url) -> Result<(), TargetError> {
    check_literal_host(policy, url)?;
    if let Some(url::Host::Domain(name)) = url.host() {
        let ips = lookup.lookup(name).await.map_err(|_| TargetError::Unresolved(name.to_owned()))?;
        if ips.is_empty() {
            return Err(TargetError::Unresolved(name.to_owned()));
        }
        for ip in ips {
            policy.check(name, ip)?;
        }
    }
    Ok(())
}

/// The [`Blocked`] refusal somewhere in an error's source chain, if that is what it was.
pub fn blocked_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Blocked> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<Blocked>() {
            return Some(b);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_table() {
        let refused = [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.170.2",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0:127.0.0.1",
            "::ffff:0:10.0.0.1",
            "::ffff:0:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
        ];
        for ip in refused {
            let ip: IpAddr = ip.parse().expect(ip);
            assert!(classify(ip).is_some(), "{ip} must be refused");
        }
        let public = [
            "93.184.216.34",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "::ffff:0:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ];
        for ip in public {
            let ip: IpAddr = ip.parse().expect(ip);
            assert_eq!(classify(ip), None, "{ip} is public");
        }
    }

    #[test]
    fn policy_switches() {
        let lo: IpAddr = "127.0.0.2".parse().expect("ip");
        assert!(Policy::default().check("h", lo).is_err());
        assert!(Policy { allow_private: true, exempt: vec![] }.check("h", lo).is_ok());
        assert!(Policy { allow_private: false, exempt: vec![lo] }.check("h", lo).is_ok());
        let e = Policy::default().check("meta", "169.254.169.254".parse().expect("ip")).expect_err("blocked");
        assert_eq!(e.to_string(), "refused meta: not a public address");
        assert!(!e.to_string().contains("169.254"), "the address stays in the logs");
        assert!(!e.to_string().contains("link-local"), "so does its class");
    }
}
