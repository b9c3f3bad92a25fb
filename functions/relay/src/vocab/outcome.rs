//! What one delivery attempt did to each recipient, as data.
//!
//! The SMTP client, the MX resolver and the planner all speak in [`Verdict`]s: a class
//! (sent / deferred / failed), an RFC 3463 status, and either the remote's reply or our own
//! diagnosis. Keeping this vocabulary in one place lets the planner stay pure.

use std::net::SocketAddr;
use std::time::Duration;

use shared::{Job, Reply};

use super::TlsRequirement;

/// The three fates of a recipient after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The next hop accepted responsibility (2xx).
    Sent,
    /// Try again later (4xx, network, TLS, DNS temporary).
    Deferred,
    /// Give up now (5xx, NXDOMAIN, null MX, ...).
    Failed,
}

/// One recipient's result with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub class: Class,
    /// RFC 3463 status: the remote's enhanced code when it gave one, otherwise ours.
    pub status: String,
    /// The remote's reply, when the verdict came from one.
    pub reply: Option<Reply>,
    /// Our own description when there is no reply (connection refused, null MX, ...).
    pub detail: String,
    /// Not attempted: the recipient is on the suppression list (`decide::suppress`).
    pub suppressed: bool,
}

impl Verdict {
    /// A verdict taken from a remote reply.
    pub fn from_reply(reply: Reply) -> Self {
        let (class, fallback) = match reply.code {
            200..=399 => (Class::Sent, "2.0.0"),
            400..=499 => (Class::Deferred, "4.0.0"),
            _ => (Class::Failed, "5.0.0"),
        };
        let status = reply.status.clone().unwrap_or_else(|| fallback.to_string());
        Self { class, status, reply: Some(reply), detail: String::new(), suppressed: false }
    }

    /// A verdict of our own making.
    pub fn local(class: Class, status: &str, detail: impl Into<String>) -> Self {
        Self { class, status: status.to_string(), reply: None, detail: detail.into(), suppressed: false }
    }

    /// Shorthand for a temporary local failure.
    pub fn deferred(status: &str, detail: impl Into<String>) -> Self {
        Self::local(Class::Deferred, status, detail)
    }

    /// Shorthand for a permanent local failure.
    pub fn failed(status: &str, detail: impl Into<String>) -> Self {
        Self::local(Class::Failed, status, detail)
    }

    /// One line for logs and the job's `last_reply`.
    pub fn text(&self) -> String {
        match &self.reply {
            Some(r) => r.one_line(),
            None => format!("{} {}", self.status, self.detail),
        }
    }
}

/// The host an attempt ended at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remote {
    /// MX or smarthost name.
    pub host: String,
    pub addr: Option<SocketAddr>,
    /// The session ran over TLS.
    pub tls: bool,
    /// The server's certificate was valid for `host` (web PKI roots plus `RELAY_TLS_CA`, or
    /// `RELAY_SMARTHOST_CA` for the smarthost). False without TLS.
    pub tls_verified: bool,
    /// What the route stage required of this session's TLS.
    pub tls_policy: TlsRequirement,
    /// The remote advertised DSN, so NOTIFY/ORCPT/RET/ENVID were passed on.
    pub dsn: bool,
    /// Transactions on this session so far, this one included (1 = a fresh session; Postfix's
    /// `conn_use`).
    pub conn_use: u32,
}

/// The result of one attempt for one job: a verdict for each pending recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempt {
    /// `(recipient address, verdict)` in the job's order.
    pub outcomes: Vec<(String, Verdict)>,
    /// Where the attempt ended, if it reached a host at all.
    pub remote: Option<Remote>,
    /// The destination asked us to slow down (`deliver::throttle`): its deferred recipients wait
    /// this long — the destination's backoff, not the job's retry schedule — and the attempt is
    /// not counted against them.
    pub throttled: Option<Duration>,
}

impl Attempt {
    /// The same verdict for every pending recipient of `job` (DNS failures, session failures).
    pub fn all(job: &Job, verdict: &Verdict, remote: Option<Remote>) -> Self {
        Self {
            outcomes: job.pending().map(|r| (r.address.clone(), verdict.clone())).collect(),
            remote,
            throttled: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_from_replies_keep_the_remote_status() {
        let v = Verdict::from_reply(Reply::parse(550, "5.1.1 no such user"));
        assert_eq!((v.class, v.status.as_str()), (Class::Failed, "5.1.1"));
        let v = Verdict::from_reply(Reply::parse(451, "try later"));
        assert_eq!((v.class, v.status.as_str()), (Class::Deferred, "4.0.0"));
        assert_eq!(v.text(), "451 try later");
        assert_eq!(Verdict::failed("5.1.10", "null MX").text(), "5.1.10 null MX");
    }
}
