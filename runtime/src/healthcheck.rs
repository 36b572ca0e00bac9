//! `<binary> healthcheck`: the container health check, so the image needs no shell, curl or
//! any other probe tool.
//!
//! Each binary calls [`exit`] with the address its own settings say it listens on
//! (GATEWAY_ADDR, AGENT_HEALTH_ADDR, METRICS_SIDECAR_ADDR), so a container whose port was
//! moved is still probed where it listens. It sends one `GET /health` over plain HTTP/1.1 and
//! exits 0 on a 200, 1 on anything else (refused, timeout, another status). Blocking std I/O:
//! a one-shot probe needs no runtime, and every step has a deadline, so the probe ends before
//! the engine's own timeout (3 s in the Dockerfile, 5 s in compose).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The whole probe's budget: connect, send, read the status line.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Where to connect for a listener bound to `bound`: a wildcard address (0.0.0.0, ::) is
/// reached on the loopback of the same family; a specific address is used as it is.
pub fn probe_addr(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// One `GET /health` on the listener bound to `bound`, within `timeout`.
pub fn probe(bound: SocketAddr, timeout: Duration) -> Result<(), String> {
    let addr = probe_addr(bound);
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
    let request =
        format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: euglena-healthcheck\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("send to {addr}: {e}"))?;
    // Only the status line matters; read until it is complete or the peer closes.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        stream.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read from {addr}: {e}")),
        }
    }
    status_ok(&head).map_err(|line| format!("GET http://{addr}/health: {line}"))
}

/// Whether a response starts with a 200 status line; the line (or what came) otherwise.
fn status_ok(head: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().next().unwrap_or("").trim();
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some("200")) if version.starts_with("HTTP/1.") => Ok(()),
        _ if line.is_empty() => Err("no response".to_owned()),
        _ => Err(format!("answered {line:?}")),
    }
}

/// Probes and exits the process: 0 when healthy, 1 (with one line on stderr) when not.
pub fn exit(binary: &str, bound: SocketAddr) -> ! {
    match probe(bound, TIMEOUT) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{binary} healthcheck: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_probed_on_loopback_of_their_family() {
        let cases = [
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("[::]:8081", "[::1]:8081"),
            ("127.0.0.1:9000", "127.0.0.1:9000"),
            ("10.1.2.3:8082", "10.1.2.3:8082"),
            ("[fd00::5]:8082", "[fd00::5]:8082"),
        ];
        for (bound, want) in cases {
            assert_eq!(probe_addr(bound.parse().unwrap()), want.parse().unwrap(), "{bound}");
        }
    }

    #[test]
    fn only_a_200_status_line_is_healthy() {
        assert!(status_ok(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_ok());
        assert!(status_ok(b"HTTP/1.0 200 OK\r\n").is_ok());
        assert!(status_ok(b"HTTP/1.1 503 Service Unavailable\r\n").is_err());
        assert!(status_ok(b"HTTP/1.1 2000 OK\r\n").is_err());
        assert!(status_ok(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert_eq!(status_ok(b"").unwrap_err(), "no response");
    }

    #[test]
    fn probes_a_live_listener_and_fails_on_a_closed_port() {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut line = String::new();
            std::io::BufReader::new(conn.try_clone().unwrap()).read_line(&mut line).unwrap();
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
            line
        });
        // Bound to the wildcard, reached on loopback.
        probe(SocketAddr::from(([0, 0, 0, 0], addr.port())), TIMEOUT).unwrap();
        assert_eq!(server.join().unwrap(), "GET /health HTTP/1.1\r\n");

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(probe(closed, TIMEOUT).unwrap_err().starts_with("connect 127.0.0.1:"));
    }

    #[test]
    fn a_silent_listener_times_out_within_the_budget() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let started = Instant::now();
        let err = probe(listener.local_addr().unwrap(), Duration::from_millis(300)).unwrap_err();
        assert!(err.starts_with("read from"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
