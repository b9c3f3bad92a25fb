//! rspamd as a judge check: the message and its envelope go to rspamd ([`crate::rspamd`]), its
//! mapped answer becomes the [`Verdict`]. Every checked message loses any `X-Spam` and
//! `X-Spam-Score` field the sender wrote (a forged `X-Spam: No` or `Yes` means nothing) and
//! gains our `X-Spam-Score`; spam is marked `X-Spam: Yes`. When rspamd cannot answer,
//! `INGRESS_RSPAMD_FAILURE` decides and `FilterUnavailable` is counted; the message is then
//! left as it came (unchecked, so no score). A streamed message goes to rspamd as it is read
//! back from the spool, with its length given, so no copy of it is ever held whole.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use shared::metrics::Metrics;

use super::{Check, Edits, Judged, Outcome, Removal, Source, Verdict};
use crate::metrics::{FILTER_UNAVAILABLE, SPAM_REJECTED};
use crate::rspamd::client::{ScanBody, ScanRequest, Scanner};
use crate::rspamd::verdict::{Disposition, Mapped};
use crate::rspamd::{Decision, OnFailure, decide};

/// The rspamd check.
pub struct Spam {
    scanner: Box<dyn Scanner>,
    on_failure: OnFailure,
    hostname: String,
    metrics: Arc<Metrics>,
}

impl Spam {
    pub fn new(scanner: Box<dyn Scanner>, on_failure: OnFailure, hostname: &str, metrics: Arc<Metrics>) -> Self {
        Self { scanner, on_failure, hostname: hostname.to_string(), metrics }
    }
}

fn outcome(d: Disposition) -> Outcome {
    match d {
        Disposition::Accept => Outcome::Accept,
        Disposition::TempFail(r) => Outcome::TempFail(r),
        Disposition::Reject(r) => Outcome::Reject(r),
    }
}

/// The verdict of a scanned message (pure).
pub fn verdict(m: Mapped) -> Verdict {
    let mut remove: Vec<Removal> = m.remove.into_iter().map(Removal::Named).collect();
    if !remove.iter().any(|r| matches!(r, Removal::Named(n) if n.eq_ignore_ascii_case("X-Spam"))) {
        remove.push(Removal::Named("X-Spam".into()));
    }
    Verdict {
        outcome: outcome(m.disposition),
        edits: Edits { prepend: m.add, remove, subject: m.subject, spam: m.spam },
    }
}

#[async_trait]
impl Check for Spam {
    async fn check(&self, msg: &Judged<'_>) -> Verdict {
        let queue_id = &msg.env.queue_id;
        let message = match msg.source {
            Source::Memory(bytes) => Ok(ScanBody::Memory(Bytes::copy_from_slice(bytes))),
            Source::Stored { .. } => {
                msg.source.chunks().await.map(|chunks| ScanBody::Stream { len: msg.source.len(), chunks })
            }
        };
        let scanned = match message {
            Ok(message) => {
                let req = ScanRequest {
                    client: msg.client,
                    helo: msg.helo,
                    sender: &msg.env.sender,
                    recipients: msg.env.recipients.iter().map(|r| r.address.as_str()).collect(),
                    queue_id,
                    mta_name: &self.hostname,
                    message,
                };
                self.scanner.scan(req).await
            }
            Err(e) => Err(format!("reading the stored message back: {e}")),
        };
        match decide(scanned, self.on_failure) {
            Decision::Scanned(m) => {
                tracing::info!(event = "spam_checked", queue_id = %queue_id, client = %msg.client, action = %m.action, score = m.score);
                if matches!(m.disposition, Disposition::Reject(_)) {
                    self.metrics.count(SPAM_REJECTED, 1);
                }
                verdict(m)
            }
            Decision::Unavailable { error, disposition } => {
                tracing::warn!(event = "filter_unavailable", queue_id = %queue_id, client = %msg.client, error = %error, on_failure = ?self.on_failure);
                self.metrics.count(FILTER_UNAVAILABLE, 1);
                Verdict { outcome: outcome(disposition), edits: Edits::default() }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rspamd::verdict::map;

    #[test]
    fn scanned_mail_loses_forged_spam_fields_and_gets_a_score() {
        let v = verdict(map(br#"{"action":"no action","score":1.5}"#).unwrap());
        assert_eq!(v.outcome, Outcome::Accept);
        assert!(!v.edits.spam);
        assert_eq!(v.edits.prepend, vec!["X-Spam-Score: 1.50"]);
        assert_eq!(v.edits.remove, vec![Removal::Named("X-Spam-Score".into()), Removal::Named("X-Spam".into())]);
        let v = verdict(map(br#"{"action":"rewrite subject","score":8,"subject":"[SPAM] hi","milter":{"remove_headers":{"x-spam":0}}}"#).unwrap());
        assert!(v.edits.spam);
        assert_eq!(v.edits.subject.as_deref(), Some("[SPAM] hi"));
        assert_eq!(v.edits.remove.len(), 2, "X-Spam named once: {:?}", v.edits.remove);
        let v =
            verdict(map(br#"{"action":"reject","score":999,"messages":{"smtp_message":"Gtube pattern"}}"#).unwrap());
        assert_eq!(v.outcome, Outcome::Reject(shared::Reply::new(554, "5.7.1", "Gtube pattern")));
    }
}
