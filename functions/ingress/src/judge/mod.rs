//! End-of-DATA judgement of untrusted mail: the stage between the session's
//! [`Action::Store`](crate::session::Action::Store) and the spool.
//!
//! Only a message from an untrusted client ([`Envelope::trusted`] false: neither
//! authenticated nor from `RELAY_NETWORKS`) is judged; our own mail goes to the spool
//! untouched. The [`Judge`] reads the message's [`Evidence`] once (its header section, and the
//! DKIM/ARC body hashes computed as the body streams past), runs the authentication check
//! ([`authenticate`]) and then each content [`Check`] (rspamd), and combines their
//! [`Verdict`]s with [`combine`] (pure): the first reject wins, else the first tempfail, else
//! accept with every check's [`Edits`] to the header section. Accepted mail leaves with its
//! header section edited ([`edits`]) and, when `INGRESS_ARC_SEAL` is set, our ARC set on top.
//!
//! Every message is judged, whatever its size: one that fitted in a part is judged in memory
//! ([`Source::Memory`]); a streamed one is judged from the stored object, read back in chunks
//! ([`Source::Stored`]), so a session never holds more than one part. The connection shell
//! (`server::accept`) carries the judgement out: a refusal withdraws whatever was stored; a
//! header change is applied in memory, or by the spool rewriting the stored object's header.
//!
//! Adding a check: implement [`Check`] in its own file of this folder, returning its verdict (a
//! reply for a refusal, and headers to prepend, remove, a Subject to set, or `spam` for
//! `X-Spam: Yes`), and push it onto [`Judge::new`]'s list. Checks run in order and see the
//! message as the client sent it (after our trace field), not each other's edits.

pub mod auth;
pub mod authenticate;
pub mod body_hash;
pub mod edits;
pub mod evidence;
pub mod source;
pub mod spam;

use std::net::IpAddr;

use async_trait::async_trait;
use shared::Reply;

use crate::session::Envelope;
use authenticate::Authenticate;
use evidence::{Evidence, Unreadable};
pub use source::Source;

/// What the message a check judges is: the envelope, who sent it, and its bytes.
#[derive(Clone, Copy)]
pub struct Judged<'a> {
    pub env: &'a Envelope,
    /// The client's address (PROXY v2's source when enabled).
    pub client: IpAddr,
    /// The HELO/EHLO name it gave.
    pub helo: &'a str,
    /// The message as it would be stored (our trace field first).
    pub source: Source<'a>,
}

/// What happens to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    /// A 4xx reply: the client may try again later.
    TempFail(Reply),
    /// A 5xx reply: refused for good, and no bounce (the client gets the reply).
    Reject(Reply),
}

/// Which header fields to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Every field of this name (case-insensitive).
    Named(String),
    /// Every `Authentication-Results` (or other field of this name) whose authserv-id is
    /// this one, whatever its case, comments or folding (RFC 8601 §5).
    AuthservId { name: String, id: String },
}

/// Changes to the header section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    /// Whole fields (`Name: value`, folded as wished, without the final CRLF), added at the
    /// top in this order.
    pub prepend: Vec<String>,
    pub remove: Vec<Removal>,
    /// A new Subject (replaces every Subject field, or is added).
    pub subject: Option<String>,
    /// Mark as spam: any `X-Spam` the sender wrote goes, `X-Spam: Yes` comes at the top.
    pub spam: bool,
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        *self == Edits::default()
    }

    /// `other`'s edits after these.
    fn merge(&mut self, other: Edits) {
        self.prepend.extend(other.prepend);
        self.remove.extend(other.remove);
        if self.subject.is_none() {
            self.subject = other.subject;
        }
        self.spam |= other.spam;
    }
}

/// One check's judgement, or all checks' combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub edits: Edits,
}

impl Verdict {
    pub fn accept() -> Self {
        Self { outcome: Outcome::Accept, edits: Edits::default() }
    }
}

/// The checks' verdicts as one: the first reject, else the first tempfail, else accept. The
/// edits of every check are kept in order (they only matter when the message is accepted).
pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    let mut out = Verdict::accept();
    for v in verdicts {
        out.outcome = match (out.outcome, v.outcome) {
            (r @ Outcome::Reject(_), _) => r,
            (_, r @ Outcome::Reject(_)) => r,
            (t @ Outcome::TempFail(_), _) => t,
            (_, t) => t,
        };
        out.edits.merge(v.edits);
    }
    out
}

/// One check of untrusted mail.
#[async_trait]
pub trait Check: Send + Sync {
    async fn check(&self, msg: &Judged<'_>) -> Verdict;
}

/// The judgement of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Store it, with its header section replaced when there is a change.
    Accept(Option<HeaderChange>),
    /// Send this reply instead; nothing of the message may remain.
    Refuse(Reply),
}

/// The new header section of an accepted message: its first `old_len` bytes (the header
/// section as received) give way to `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderChange {
    pub old_len: usize,
    pub new: Vec<u8>,
}

/// The checks the ingress runs.
pub struct Judge {
    auth: Option<Authenticate>,
    checks: Vec<Box<dyn Check>>,
}

impl Judge {
    /// SPF/DKIM/DMARC/ARC when `auth` is given, then `checks` in order.
    pub fn new(auth: Option<Authenticate>, checks: Vec<Box<dyn Check>>) -> Self {
        Self { auth, checks }
    }

    /// No checks: everything is accepted unedited (tests, `INGRESS_AUTH_CHECKS=off`).
    pub fn none() -> Self {
        Self::new(None, Vec::new())
    }

    /// True when nothing is judged.
    pub fn is_off(&self) -> bool {
        self.auth.is_none() && self.checks.is_empty()
    }

    /// Judge a message from an untrusted client.
    pub async fn judge(&self, msg: &Judged<'_>) -> Judgement {
        let queue_id = &msg.env.queue_id;
        // Body hashes only for the authentication check (the content checks read the message
        // themselves); without it, reading stops after the header section.
        let hashes = self.auth.as_ref().map(|a| a.body_hashes_needed());
        let evidence = match Evidence::read(&msg.source, hashes).await {
            Ok(e) => e,
            Err(Unreadable::HeaderTooLong) => {
                tracing::warn!(event = "judged", queue_id = %queue_id, client = %msg.client, result = "header too long");
                return Judgement::Refuse(header_too_long());
            }
            Err(Unreadable::Read(e)) => {
                tracing::error!(event = "judged", queue_id = %queue_id, client = %msg.client, result = "unreadable", error = %e);
                return Judgement::Refuse(crate::session::replies::storage_failed());
            }
        };
        let mut verdicts = Vec::with_capacity(self.checks.len() + 1);
        if let Some(a) = &self.auth {
            verdicts.push(a.check(msg, &evidence).await);
        }
        for c in &self.checks {
            if verdicts.iter().any(|v: &Verdict| matches!(v.outcome, Outcome::Reject(_))) {
                break; // nothing undoes a reject: spare the other checks the work
            }
            verdicts.push(c.check(msg).await);
        }
        let verdict = combine(verdicts);
        let edits = match verdict.outcome {
            Outcome::Accept => verdict.edits,
            Outcome::Reject(r) | Outcome::TempFail(r) => return Judgement::Refuse(r),
        };
        let mut new = edits::edited(evidence.header(), &edits);
        if let Some(set) = match &self.auth {
            Some(a) => a.seal(msg, &evidence, &new).await,
            None => None,
        } {
            new.splice(..0, set.into_bytes());
        }
        match new == evidence.header() {
            true => Judgement::Accept(None),
            false => Judgement::Accept(Some(HeaderChange { old_len: evidence.header().len(), new })),
        }
    }
}

/// The reply to a message whose header section is too long to judge.
pub fn header_too_long() -> Reply {
    Reply::new(552, "5.3.4", format!("Message header section too large (over {} bytes)", evidence::MAX_HEADER_SECTION))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempfail() -> Outcome {
        Outcome::TempFail(Reply::new(451, "4.7.0", "later"))
    }
    fn reject(text: &str) -> Outcome {
        Outcome::Reject(Reply::new(550, "5.7.1", text))
    }
    fn v(outcome: Outcome, spam: bool, subject: Option<&str>) -> Verdict {
        Verdict { outcome, edits: Edits { spam, subject: subject.map(String::from), ..Edits::default() } }
    }

    #[test]
    fn combine_table() {
        let a = || Outcome::Accept;
        let cases: Vec<(Vec<Verdict>, Outcome)> = vec![
            (vec![], a()),
            (vec![v(a(), false, None)], a()),
            (vec![v(a(), false, None), v(tempfail(), false, None)], tempfail()),
            (vec![v(tempfail(), false, None), v(reject("x"), false, None)], reject("x")),
            (vec![v(reject("x"), false, None), v(tempfail(), false, None)], reject("x")),
            (vec![v(reject("first"), false, None), v(reject("second"), false, None)], reject("first")),
            (vec![v(tempfail(), false, None), v(a(), false, None)], tempfail()),
        ];
        for (input, want) in cases {
            assert_eq!(combine(input.clone()).outcome, want, "{input:?}");
        }
    }

    #[test]
    fn combine_keeps_every_checks_edits() {
        let mut first = v(Outcome::Accept, false, Some("[SPAM] hi"));
        first.edits.prepend.push("A: 1".into());
        let mut second = v(Outcome::Accept, true, Some("other"));
        second.edits.prepend.push("B: 2".into());
        second.edits.remove.push(Removal::Named("X-Foo".into()));
        let got = combine([first, second]).edits;
        assert_eq!(got.prepend, ["A: 1", "B: 2"]);
        assert_eq!(got.remove, [Removal::Named("X-Foo".into())]);
        assert_eq!(got.subject.as_deref(), Some("[SPAM] hi"));
        assert!(got.spam);
    }
}
