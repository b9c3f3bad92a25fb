//! The HTTP edge: `POST /checkv2` to rspamd's normal worker on hyper (HTTP/1.1), through
//! hyper-util's pooling client, so connections are kept alive and reused across messages (no
//! connect per message). Plain HTTP only: rspamd runs beside the ingress (a sidecar port
//! private to the task, or the loopback), and neither TLS nor OpenSSL is involved.
//!
//! The envelope goes in rspamd's request headers: `IP`, `Helo`, `From`, one `Rcpt` per
//! recipient, `Queue-Id`, `MTA-Name`. `Hostname` is left out: the ingress does no reverse
//! lookups, and the value MTAs send then (`unknown`) is read by rspamd as "the client has no
//! reverse DNS" (HFILTER_HOSTNAME_UNKNOWN, RDNS_NONE) — a penalty on every message — whereas
//! without the header rspamd looks the name up itself.
//!
//! A message in memory is sent whole; a streamed one is sent as it is read back from the spool,
//! with its `Content-Length`, so no copy of it is held (rspamd reads a request body of known
//! length; chunked requests are not needed).

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Frame;
use hyper::header::CONTENT_LENGTH;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::verdict::{self, Mapped};
use crate::judge::source::Chunks;

/// A request body: what hyper sends, from memory or a stream.
type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Largest answer read (rspamd's are a few KiB, with every symbol).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// What rspamd is told about one message.
#[derive(Debug)]
pub struct ScanRequest<'a> {
    pub client: IpAddr,
    pub helo: &'a str,
    /// Empty for the null sender.
    pub sender: &'a str,
    pub recipients: Vec<&'a str>,
    pub queue_id: &'a str,
    /// Our `INGRESS_HOSTNAME`.
    pub mta_name: &'a str,
    pub message: ScanBody,
}

/// The message rspamd is to scan.
pub enum ScanBody {
    Memory(Bytes),
    /// A stored message as it is read back: `len` bytes in `chunks`.
    Stream {
        len: u64,
        chunks: Chunks,
    },
}

impl std::fmt::Debug for ScanBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanBody::Memory(b) => write!(f, "Memory({} bytes)", b.len()),
            ScanBody::Stream { len, .. } => write!(f, "Stream({len} bytes)"),
        }
    }
}

impl ScanBody {
    fn len(&self) -> u64 {
        match self {
            ScanBody::Memory(b) => b.len() as u64,
            ScanBody::Stream { len, .. } => *len,
        }
    }

    fn into_body(self) -> Body {
        match self {
            ScanBody::Memory(b) => Full::new(b).map_err(|never| match never {}).boxed_unsync(),
            ScanBody::Stream { chunks, .. } => {
                let frames = chunks.map(|c| c.map(Frame::data).map_err(|e| e.into()));
                StreamBody::new(frames).boxed_unsync()
            }
        }
    }
}

/// A spam scanner: rspamd over HTTP, or a table in tests.
#[async_trait]
pub trait Scanner: Send + Sync {
    /// rspamd's judgement, or why there is none (down, slow, unreadable answer).
    async fn scan(&self, req: ScanRequest<'_>) -> Result<Mapped, String>;
}

/// [`Scanner`] over HTTP with pooled connections.
pub struct RspamdClient {
    authority: String,
    timeout: Duration,
    http: Client<HttpConnector, Body>,
}

impl RspamdClient {
    /// For rspamd at `authority` (`host:port`), each scan within `timeout`.
    pub fn new(authority: String, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let http = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector);
        Self { authority, timeout, http }
    }

    async fn post(&self, req: ScanRequest<'_>) -> Result<Mapped, String> {
        let mut b = Request::post(format!("http://{}/checkv2", self.authority))
            .header("IP", req.client.to_string())
            .header("Helo", header_value(req.helo))
            .header("From", header_value(req.sender))
            .header("Queue-Id", header_value(req.queue_id))
            .header("MTA-Name", header_value(req.mta_name))
            .header(CONTENT_LENGTH, req.message.len());
        for r in &req.recipients {
            b = b.header("Rcpt", header_value(r));
        }
        let request = b.body(req.message.into_body()).map_err(|e| format!("request: {e}"))?;
        let response = self.http.request(request).await.map_err(|e| format!("rspamd at {}: {e}", self.authority))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("rspamd answer: {e}"))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!("rspamd answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)])));
        }
        verdict::map(&body)
    }
}

/// Header values are the client's words (HELO, addresses): keep them printable.
fn header_value(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

#[async_trait]
impl Scanner for RspamdClient {
    async fn scan(&self, req: ScanRequest<'_>) -> Result<Mapped, String> {
        match tokio::time::timeout(self.timeout, self.post(req)).await {
            Ok(r) => r,
            Err(_) => Err(format!("rspamd at {}: no answer within {:?}", self.authority, self.timeout)),
        }
    }
}
