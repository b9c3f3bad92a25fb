//! Fetching a domain's MTA-STS policy file (RFC 8461 §3.3): the [`Fetcher`] edge and its HTTPS
//! implementation on hyper (HTTP/1.1 client connection) over rustls.
//!
//! `GET https://mta-sts.<domain>/.well-known/mta-sts.txt`, the host resolved with the relay's
//! own [`Resolver`] (`RELAY_DNS_SERVERS`), its certificate verified for that name against the
//! web PKI roots plus `RELAY_TLS_CA`. Only a `200` with a `text/plain` body counts; redirects are
//! not followed (§3.3 forbids it) and no HTTP cache is used. The whole exchange has a time limit
//! ([`FETCH_TIMEOUT`]) and the body a size limit ([`MAX_POLICY_BYTES`]).
//!
//! hyper's low-level connection API rather than a ready-made client: it lets the connection use
//! the relay's resolver and TLS roots directly, and hyper, hyper-util and rustls are already in
//! the relay through the AWS SDK, so nothing new is compiled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::route::{Lookup, Resolver};

/// Where the policy lives on `mta-sts.<domain>` (§3.3).
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";
/// Time for the whole fetch: address lookup, connect, TLS, request and body. Long enough for a
/// slow web server, short enough not to hold up a Lambda batch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest policy body accepted (§3.3 suggests a limit; real policies are a few hundred bytes).
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// The HTTPS port; §3.3 names no other.
const POLICY_PORT: u16 = 443;
/// Addresses of the policy host tried, in the resolver's order, when connecting fails.
const MAX_ADDRESSES: usize = 2;

/// The policy file of a domain, as text.
#[async_trait]
pub trait Fetcher: Send + Sync {
    /// The body of the policy file of `domain`, or why it cannot be had.
    async fn fetch(&self, domain: &str, resolver: &dyn Resolver) -> Result<String, String>;
}

/// [`Fetcher`] over HTTPS.
pub struct HttpsFetcher {
    tls: TlsConnector,
}

impl HttpsFetcher {
    /// Trusting `roots` (web PKI + `RELAY_TLS_CA`), on port 443.
    pub fn new(roots: Arc<RootCertStore>) -> Self {
        Self { tls: crate::deliver::tls::verifying_connector(roots) }
    }
}

#[async_trait]
impl Fetcher for HttpsFetcher {
    async fn fetch(&self, domain: &str, resolver: &dyn Resolver) -> Result<String, String> {
        let host = format!("mta-sts.{domain}");
        let url = format!("https://{host}{POLICY_PATH}");
        tokio::time::timeout(FETCH_TIMEOUT, self.get(&host, resolver))
            .await
            .map_err(|_| format!("{url}: no answer within {}s", FETCH_TIMEOUT.as_secs()))?
            .map_err(|e| format!("{url}: {e}"))
    }
}

impl HttpsFetcher {
    async fn get(&self, host: &str, resolver: &dyn Resolver) -> Result<String, String> {
        let ips = match resolver.ips(host).await {
            Lookup::Found(ips) => ips,
            Lookup::NoData | Lookup::NxDomain => return Err(format!("{host} has no address")),
            Lookup::Failed(e) => return Err(format!("address lookup for {host} failed: {e}")),
        };
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
        let mut last = String::new();
        for ip in ips.into_iter().take(MAX_ADDRESSES) {
            let addr = SocketAddr::new(ip, POLICY_PORT);
            match TcpStream::connect(addr).await {
                Ok(tcp) => return self.exchange(host, name, tcp).await,
                Err(e) => last = format!("connect to {addr}: {e}"),
            }
        }
        Err(last)
    }

    /// TLS, one request, the checked body. The connection is driven in this task (not spawned),
    /// so the fetch's time limit ends it too.
    async fn exchange(&self, host: &str, name: ServerName<'static>, tcp: TcpStream) -> Result<String, String> {
        let tls = self.tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("HTTP: {e}"))?;
        let request = Request::get(POLICY_PATH)
            .header(HOST, host)
            .header(USER_AGENT, concat!("smtp-relay/", env!("CARGO_PKG_VERSION")))
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .expect("a static request is well-formed");
        let exchange = async {
            let response = sender.send_request(request).await.map_err(|e| format!("HTTP: {e}"))?;
            let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
            check_response(response.status(), content_type.as_deref())?;
            read_body(response.into_body(), MAX_POLICY_BYTES).await
        };
        let (mut conn, mut exchange) = (std::pin::pin!(conn), std::pin::pin!(exchange));
        tokio::select! {
            result = &mut exchange => result,
            // The server may close as soon as it has sent the response: the body is buffered.
            closed = &mut conn => {
                closed.map_err(|e| format!("HTTP: {e}"))?;
                exchange.await
            }
        }
    }
}

/// Only `200` with a `text/plain` body is a policy (§3.3).
pub fn check_response(status: StatusCode, content_type: Option<&str>) -> Result<(), String> {
    if status.is_redirection() {
        return Err(format!("HTTP {status}: redirects are not followed (RFC 8461 §3.3)"));
    }
    if status != StatusCode::OK {
        return Err(format!("HTTP {status}"));
    }
    let media_type = content_type.and_then(|t| t.split(';').next()).map(str::trim).unwrap_or_default();
    if !media_type.eq_ignore_ascii_case("text/plain") {
        return Err(format!("content type {:?} is not text/plain", content_type.unwrap_or_default()));
    }
    Ok(())
}

/// The body as UTF-8 text, at most `limit` bytes.
pub async fn read_body<B>(body: B, limit: usize) -> Result<String, String>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bytes = Limited::new(body, limit).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            format!("policy larger than {limit} bytes")
        } else {
            format!("reading the body: {e}")
        }
    })?;
    String::from_utf8(bytes.to_bytes().to_vec()).map_err(|_| "policy is not UTF-8 text".to_string())
}

#[cfg(test)]
mod tests {
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;

    use super::*;

    #[test]
    fn only_200_text_plain_is_a_policy() {
        let ok = [Some("text/plain"), Some("text/plain; charset=utf-8"), Some("TEXT/PLAIN ;charset=us-ascii")];
        for ct in ok {
            assert_eq!(check_response(StatusCode::OK, ct), Ok(()), "{ct:?}");
        }
        let bad = [
            (StatusCode::MOVED_PERMANENTLY, Some("text/plain"), "redirects are not followed"),
            (StatusCode::FOUND, None, "redirects are not followed"),
            (StatusCode::NOT_FOUND, Some("text/plain"), "HTTP 404"),
            (StatusCode::NO_CONTENT, Some("text/plain"), "HTTP 204"),
            (StatusCode::OK, Some("text/html"), "not text/plain"),
            (StatusCode::OK, Some("text/plainish"), "not text/plain"),
            (StatusCode::OK, None, "not text/plain"),
        ];
        for (status, ct, why) in bad {
            let e = check_response(status, ct).unwrap_err();
            assert!(e.contains(why), "{status} {ct:?}: {e}");
        }
    }

    #[tokio::test]
    async fn bodies_are_limited_and_must_be_text() {
        let policy = "version: STSv1\nmode: enforce\n";
        assert_eq!(read_body(Full::new(Bytes::from(policy)), 64).await.unwrap(), policy);
        assert_eq!(read_body(Full::new(Bytes::from(vec![b'x'; 64])), 64).await.unwrap().len(), 64);

        let e = read_body(Full::new(Bytes::from(vec![b'x'; 65])), 64).await.unwrap_err();
        assert_eq!(e, "policy larger than 64 bytes");
        // A body that arrives in chunks (no length known up front) is cut off just the same.
        let chunks = (0..10).map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'y'; 10]))));
        let e = read_body(StreamBody::new(futures::stream::iter(chunks)), 64).await.unwrap_err();
        assert_eq!(e, "policy larger than 64 bytes");

        let e = read_body(Full::new(Bytes::from_static(b"\xff\xfe")), 64).await.unwrap_err();
        assert_eq!(e, "policy is not UTF-8 text");
    }
}
