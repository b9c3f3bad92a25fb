//! End-of-DATA judgement of untrusted mail: the stage between the session's
//! [`Action::Store`](crate::session::Action::Store) and the spool.
//!
//! Only a message from an untrusted client ([`Envelope::trusted`] false: neither
//! authenticated nor from `RELAY_NETWORKS`) is judged; our own mail goes to the spool
//! untouched. Each [`Check`] looks at the message and returns a [`Verdict`]: an [`Outcome`]
//! (accept, tempfail with a reply, reject with a reply) and the [`Edits`] it wants made to the
//! header section. [`combine`] (pure) merges the checks' verdicts into one: the first reject
//! wins, else the first tempfail, else accept with every check's edits. The connection shell
//! then either sends the refusal (nothing is stored, an open upload is aborted) or applies the
//! edits with [`edits::apply`] and stores.
//!
//! Adding a check (rspamd, say): implement [`Check`] in its own file of this folder, returning
//! its verdict (a reply for a refusal, and headers to prepend, remove, a Subject to set, or
//! `spam` for `X-Spam: Yes`), and push it onto [`Judge::new`]'s list. Checks run in order; a
//! later one does not see an earlier one's edits, and all see the message as the client sent
//! it (after our trace field).
//!
//! Streamed messages: a message larger than one part (`INGRESS_PART_SIZE`, 5 MiB by default)
//! has its first part, with the header section, already uploaded by the end of DATA. This
//! version does not judge such messages (they are stored as they came, logged with
//! `judged = false`), so their header section is not edited either. Judging them needs the
//! session to hold back its first part until the end of DATA; that is the known limit.

pub mod auth;
pub mod authenticate;
pub mod edits;
pub mod spam;

use std::net::IpAddr;

use async_trait::async_trait;
use shared::Reply;

use crate::session::{Envelope, Incoming};
use crate::spool::upload::Content;

/// What the message a check judges is: the envelope, who sent it, and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Judged<'a> {
    pub env: &'a Envelope,
    /// The client's address (PROXY v2's source when enabled).
    pub client: IpAddr,
    /// The HELO/EHLO name it gave.
    pub helo: &'a str,
    /// The message as it would be stored (our trace field first).
    pub message: &'a [u8],
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

/// The checks the ingress runs, in order.
pub struct Judge {
    checks: Vec<Box<dyn Check>>,
}

impl Judge {
    pub fn new(checks: Vec<Box<dyn Check>>) -> Self {
        Self { checks }
    }

    /// No checks: everything is accepted unedited (tests, `INGRESS_AUTH_CHECKS=off`).
    pub fn none() -> Self {
        Self::new(Vec::new())
    }

    /// Judge an incoming message: `None` to store it (its header section edited), or the
    /// refusal to send instead (the caller aborts any upload and stores nothing).
    pub async fn incoming(&self, msg: &mut Incoming) -> Option<Reply> {
        if msg.env.trusted || self.checks.is_empty() {
            return None;
        }
        let Content::Whole(bytes) = &mut msg.content else {
            tracing::info!(event = "judged", queue_id = %msg.env.queue_id, client = %msg.client, judged = false, reason = "streamed");
            return None;
        };
        let judged = Judged { env: &msg.env, client: msg.client, helo: &msg.helo, message: bytes };
        let verdict = self.judge(&judged).await;
        match verdict.outcome {
            Outcome::Accept => {
                edits::apply(bytes, &verdict.edits);
                msg.size = bytes.len() as u64;
                None
            }
            Outcome::TempFail(r) | Outcome::Reject(r) => Some(r),
        }
    }

    /// Every check's verdict on `msg`, combined.
    pub async fn judge(&self, msg: &Judged<'_>) -> Verdict {
        let mut verdicts = Vec::with_capacity(self.checks.len());
        for c in &self.checks {
            verdicts.push(c.check(msg).await);
        }
        combine(verdicts)
    }
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
