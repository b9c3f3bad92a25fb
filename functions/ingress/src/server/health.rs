//! `ingress health`: the container's health check. The runtime image is distroless (no shell,
//! no nc or curl), so the binary checks itself: it connects to its own MTA listener (the first
//! `INGRESS_LISTEN` address, a wildcard address reached over loopback), sends a PROXY v2
//! `LOCAL` header first when `INGRESS_PROXY_PROTOCOL` is on — as the load balancer's own health
//! checks do — and waits for the greeting.
//!
//! Healthy: a `220` greeting, or `421` (the server is at `INGRESS_MAX_CONNECTIONS`: alive and
//! answering, and replacing it would drop every session it holds). Unhealthy: no connection, no
//! reply within [`TIMEOUT`], or any other reply. Exit status 0 or 1; one line on stderr either way.
//!
//! The network load balancer's TCP checks only see that the port accepts; this check also sees
//! that the accept loop and the runtime still serve a session.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ppp::v2::{Addresses, Builder, Command, Protocol, Version};
use shared::config::{ConfigError, Reader, Vars};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The whole check: connect, greeting, QUIT.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub addr: SocketAddr,
    pub proxy_protocol: bool,
}

impl Probe {
    /// From the ingress's own variables (only the two it needs, so a check never fails on the
    /// rest of the configuration).
    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let r = Reader(vars);
        let listen = r.addrs("INGRESS_LISTEN", Some("0.0.0.0:25"))?;
        Ok(Self { addr: target(listen[0]), proxy_protocol: r.bool("INGRESS_PROXY_PROTOCOL", false)? })
    }
}

/// Where to connect to reach a listener bound to `listen`.
pub fn target(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port()),
        _ => listen,
    }
}

/// Judge the server's first reply line: `Ok` with the line when it shows a live server.
pub fn judge(first_line: &str) -> Result<String, String> {
    let line = first_line.trim_end().to_string();
    match line.get(..4) {
        Some("220 " | "220-") => Ok(line),
        Some("421 " | "421-") => Ok(format!("{line} (at its connection limit, still serving)")),
        _ => Err(format!("unexpected greeting {line:?}")),
    }
}

/// Run the check.
pub async fn check(probe: &Probe) -> Result<String, String> {
    let run = async {
        let mut s = TcpStream::connect(probe.addr).await.map_err(|e| format!("connect {}: {e}", probe.addr))?;
        if probe.proxy_protocol {
            let header =
                Builder::with_addresses(Version::Two | Command::Local, Protocol::Unspecified, Addresses::Unspecified)
                    .build()
                    .map_err(|e| format!("PROXY header: {e}"))?;
            s.write_all(&header).await.map_err(|e| format!("write: {e}"))?;
        }
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!("{} closed the connection without a greeting", probe.addr));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let first = String::from_utf8_lossy(buf.split(|&b| b == b'\n').next().unwrap_or_default()).into_owned();
        let verdict = judge(&first);
        let _ = s.write_all(b"QUIT\r\n").await;
        verdict
    };
    tokio::time::timeout(TIMEOUT, run)
        .await
        .map_err(|_| format!("no greeting from {} within {TIMEOUT:?}", probe.addr))?
}

#[cfg(test)]
mod tests {
    use shared::config::vars_with_spool;

    use super::*;

    #[test]
    fn probes_the_first_mta_listener_over_loopback() {
        let p = |pairs: &[(&str, &str)]| Probe::from_vars(&vars_with_spool(pairs));
        assert_eq!(p(&[]).unwrap(), Probe { addr: "127.0.0.1:25".parse().unwrap(), proxy_protocol: false });
        let q = p(&[("INGRESS_LISTEN", "[::]:2525,127.0.0.1:26"), ("INGRESS_PROXY_PROTOCOL", "true")]).unwrap();
        assert_eq!(q, Probe { addr: "[::1]:2525".parse().unwrap(), proxy_protocol: true });
        assert_eq!(target("10.0.0.5:2525".parse().unwrap()), "10.0.0.5:2525".parse().unwrap());
        assert_eq!(p(&[("INGRESS_LISTEN", "nowhere")]).unwrap_err().var, "INGRESS_LISTEN");
    }

    #[test]
    fn greetings() {
        assert!(judge("220 mx.example.org ESMTP ready\r").is_ok());
        assert!(judge("220-mx.example.org ESMTP").is_ok());
        assert!(judge("421 4.7.0 Too many connections, try again later").unwrap().contains("connection limit"));
        for bad in ["554 5.7.1 go away", "", "22", "HTTP/1.1 400 Bad Request"] {
            assert!(judge(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_silent_or_absent_server_is_unhealthy() {
        // Nothing listens on a port we just released.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(check(&Probe { addr, proxy_protocol: false }).await.unwrap_err().contains("connect"));
        // A server that closes at once.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            drop(s);
        });
        assert!(check(&Probe { addr, proxy_protocol: false }).await.unwrap_err().contains("without a greeting"));
    }
}
