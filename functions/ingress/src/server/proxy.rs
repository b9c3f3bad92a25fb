//! PROXY protocol v2 (`INGRESS_PROXY_PROTOCOL=true`): the real client address when a network
//! load balancer sits in front.
//!
//! The header is read with exact-length reads — 16 fixed bytes, then the length they announce
//! — so not one byte of the SMTP stream is consumed with it, and parsed by the `ppp` crate.
//! A missing, slow or malformed header closes the connection: behind a PROXY-speaking load
//! balancer, anything else is not our client. `LOCAL` (health checks) keeps the socket peer.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2::{Addresses, Command, Header, PROTOCOL_PREFIX};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The fixed part: signature (12), version/command, family/protocol, length (2).
const FIXED: usize = 16;
/// How long a load balancer may take to send the header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Read the header and return the client address it names (`peer` for `LOCAL`).
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R, peer: SocketAddr) -> Result<SocketAddr, String> {
    let read = async {
        let mut buf = vec![0u8; FIXED];
        r.read_exact(&mut buf).await.map_err(|e| format!("reading PROXY header: {e}"))?;
        if buf[..12] != PROTOCOL_PREFIX[..] {
            return Err("no PROXY v2 signature".to_string());
        }
        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        buf.resize(FIXED + len, 0);
        r.read_exact(&mut buf[FIXED..]).await.map_err(|e| format!("reading PROXY addresses: {e}"))?;
        parse(&buf, peer)
    };
    tokio::time::timeout(HEADER_TIMEOUT, read).await.map_err(|_| "PROXY header timed out".to_string())?
}

/// Parse a complete header.
pub fn parse(bytes: &[u8], peer: SocketAddr) -> Result<SocketAddr, String> {
    let header = Header::try_from(bytes).map_err(|e| format!("malformed PROXY header: {e}"))?;
    if header.command == Command::Local {
        return Ok(peer);
    }
    match header.addresses {
        Addresses::IPv4(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::IPv6(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
        other => Err(format!("unsupported PROXY address family {:?}", other.address_family())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, IPv4, Protocol, Version};

    fn header(cmd: Command) -> Vec<u8> {
        let addrs: Addresses = IPv4::new([198, 51, 100, 7], [10, 0, 0, 1], 40000, 25).into();
        Builder::with_addresses(Version::Two | cmd, Protocol::Stream, addrs).build().unwrap()
    }

    #[tokio::test]
    async fn reads_exactly_the_header_and_no_smtp_bytes() {
        let mut input = header(Command::Proxy);
        input.extend_from_slice(b"EHLO x\r\n");
        let mut r = input.as_slice();
        let peer: SocketAddr = "10.0.0.9:1234".parse().unwrap();
        let client = read_header(&mut r, peer).await.unwrap();
        assert_eq!(client, "198.51.100.7:40000".parse().unwrap());
        assert_eq!(r, b"EHLO x\r\n");
    }

    #[tokio::test]
    async fn local_keeps_the_peer_and_garbage_is_refused() {
        let peer: SocketAddr = "10.0.0.9:1234".parse().unwrap();
        assert_eq!(read_header(&mut header(Command::Local).as_slice(), peer).await.unwrap(), peer);
        let err = read_header(&mut &b"EHLO client.example.org\r\n"[..], peer).await.unwrap_err();
        assert!(err.contains("signature"), "{err}");
        let mut truncated = header(Command::Proxy);
        truncated.truncate(20);
        assert!(read_header(&mut truncated.as_slice(), peer).await.is_err());
        let mut bad_version = header(Command::Proxy);
        bad_version[12] = 0x11;
        assert!(parse(&bad_version, peer).is_err());
    }
}
