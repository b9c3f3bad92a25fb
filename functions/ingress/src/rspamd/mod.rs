//! rspamd, the spam filter of judged mail at the end of DATA, over its HTTP protocol.
//!
//! [`client`] asks rspamd's normal worker (`POST /checkv2`, the message as the body, the
//! envelope in request headers) over a pooled hyper connection; [`verdict`] (pure) turns its
//! JSON answer into what happens to the message: `reject` → `554 5.7.1` with rspamd's
//! `smtp_message`, `soft reject` / `greylist` → `451 4.7.1`, `add header` / `rewrite subject` →
//! accepted and marked `X-Spam: Yes` (with the new subject), `no action` → accepted; its
//! `milter.add_headers` / `remove_headers` are applied, and checked mail carries
//! `X-Spam-Score`. When rspamd cannot answer within `INGRESS_RSPAMD_TIMEOUT`,
//! `INGRESS_RSPAMD_FAILURE` decides: `accept` (deliver unchecked) or `tempfail` (`451 4.7.1`).

pub mod client;
pub mod verdict;

use std::time::Duration;

use shared::Reply;

use verdict::{Disposition, Mapped};

/// `INGRESS_RSPAMD_FAILURE`: what to do when rspamd does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Deliver unchecked (counted as `FilterUnavailable`).
    Accept,
    /// `451 4.7.1`: the client tries again later.
    TempFail,
}

/// The rspamd settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RspamdConfig {
    /// `http://host:port` of the normal worker (no path).
    pub url: String,
    pub timeout: Duration,
    pub on_failure: OnFailure,
}

/// Split `http://host:port[/]` into the authority; only plain HTTP (rspamd sits beside the
/// ingress: a sidecar in the same task, or the loopback).
pub fn parse_url(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url:?}: only http://host:port is supported (rspamd's normal worker beside the ingress)")
    })?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        return Err(format!("{url:?}: expected http://host:port with no path"));
    }
    Ok(authority.to_string())
}

/// The reply under `INGRESS_RSPAMD_FAILURE=tempfail`.
pub fn unavailable() -> Reply {
    Reply::new(451, "4.7.1", "Content filter unavailable, try again later")
}

/// What becomes of a message after the scan (or its failure).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// rspamd judged it.
    Scanned(Mapped),
    /// rspamd did not answer: deliver unchecked, or tempfail, per [`OnFailure`].
    Unavailable { error: String, disposition: Disposition },
}

/// The scan's result under the failure policy (pure).
pub fn decide(result: Result<Mapped, String>, on_failure: OnFailure) -> Decision {
    match result {
        Ok(m) => Decision::Scanned(m),
        Err(error) => Decision::Unavailable {
            error,
            disposition: match on_failure {
                OnFailure::Accept => Disposition::Accept,
                OnFailure::TempFail => Disposition::TempFail(unavailable()),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_follow_the_policy() {
        let ok = verdict::map(br#"{"action":"no action","score":0}"#).unwrap();
        assert_eq!(decide(Ok(ok.clone()), OnFailure::TempFail), Decision::Scanned(ok));
        let cases =
            [(OnFailure::Accept, Disposition::Accept), (OnFailure::TempFail, Disposition::TempFail(unavailable()))];
        for (policy, want) in cases {
            match decide(Err("down".into()), policy) {
                Decision::Unavailable { disposition, .. } => assert_eq!(disposition, want, "{policy:?}"),
                d => panic!("{d:?}"),
            }
        }
    }

    #[test]
    fn urls() {
        assert_eq!(parse_url("http://127.0.0.1:11333").unwrap(), "127.0.0.1:11333");
        assert_eq!(parse_url("http://localhost:11333/").unwrap(), "localhost:11333");
        for bad in ["https://rspamd:11333", "127.0.0.1:11333", "http://", "http://h:1/checkv2", "http://u@h:1"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
