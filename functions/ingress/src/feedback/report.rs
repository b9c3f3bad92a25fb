//! What a message sent to the feedback domain is, read without I/O: an RFC 3464 delivery status
//! notification (its `message/delivery-status` part found with mail-parser, its fields read by
//! [`dsn`]), an RFC 5965 ARF report (mail-auth's `Feedback::parse_rfc5322`), or anything else
//! (an auto-reply, a person's answer, a bounce in prose) — and what it quotes of our message:
//! the tokens and addresses that may name it (our [`REF_HEADER`], the `Return-Path` a receiving
//! server added, the ARF `Original-Mail-From`) and the quoted message's `To`/`Cc` addresses.
//! Nothing here is trusted yet: the caller verifies every candidate token.

use mail_auth::report::{Feedback, FeedbackType};
use mail_parser::{Address, Message, MessageParser, MimeHeaders, PartType};
use shared::feedback::REF_HEADER;

use super::dsn::{self, DeliveryStatus};

/// An ARF report's fields that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complaint {
    /// `Feedback-Type`: `abuse`, `fraud`, `virus`, `other`, `not-spam`, `auth-failure`.
    pub feedback_type: &'static str,
    pub user_agent: Option<String>,
    /// `Arrival-Date` (Unix seconds).
    pub arrival_date: Option<i64>,
    /// `Original-Rcpt-To`, angle brackets removed.
    pub original_rcpt_to: Option<String>,
}

impl Complaint {
    /// A spam complaint (SES counts `abuse`, `fraud`, `virus` and `other`; `not-spam` is the
    /// opposite and `auth-failure` a DMARC failure report, RFC 6591).
    pub fn is_complaint(&self) -> bool {
        matches!(self.feedback_type, "abuse" | "fraud" | "virus" | "other")
    }
}

/// What the message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Delivery(DeliveryStatus),
    Arf(Complaint),
    Other,
}

/// A message to the feedback domain, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub kind: Kind,
    /// Tokens or addresses that may name our message, in the order found (top of each quoted
    /// header section first).
    pub references: Vec<String>,
    /// `To` and `Cc` addresses of the quoted message.
    pub quoted_recipients: Vec<String>,
}

/// Read `message`.
pub fn read(message: &[u8]) -> Read {
    let mut out = Read { kind: Kind::Other, references: Vec::new(), quoted_recipients: Vec::new() };
    let Some(parsed) = MessageParser::default().parse(message) else { return out };
    for part in &parsed.parts {
        let ct = part.content_type();
        let is = |t: &str, s: &str| {
            ct.is_some_and(|c| {
                c.ctype().eq_ignore_ascii_case(t) && c.subtype().is_some_and(|x| x.eq_ignore_ascii_case(s))
            })
        };
        if is("message", "delivery-status") || is("message", "global-delivery-status") {
            if out.kind == Kind::Other {
                out.kind = Kind::Delivery(dsn::parse(&String::from_utf8_lossy(part.contents())));
            }
        } else if let PartType::Message(quoted) = &part.body {
            quoted_fields(quoted, &mut out);
        } else if is("text", "rfc822-headers")
            && let Some(headers) = MessageParser::new().parse_headers(part.contents())
        {
            quoted_fields(&headers, &mut out);
        }
    }
    if let Ok(f) = Feedback::parse_rfc5322(message) {
        if let Some(from) = f.original_mail_from() {
            out.references.push(unbracket(from));
        }
        out.kind = Kind::Arf(Complaint {
            feedback_type: feedback_type(f.feedback_type()),
            user_agent: f.user_agent().map(String::from),
            arrival_date: f.arrival_date(),
            original_rcpt_to: f.original_rcpt_to().map(unbracket),
        });
    }
    out
}

/// The references and recipients a quoted message (or header section) gives.
fn quoted_fields(quoted: &Message, out: &mut Read) {
    for (name, value) in quoted.headers_raw() {
        if name.eq_ignore_ascii_case(REF_HEADER) || name.eq_ignore_ascii_case("Return-Path") {
            out.references.push(unbracket(value));
        }
    }
    for list in [quoted.to(), quoted.cc()].into_iter().flatten() {
        out.quoted_recipients.extend(addresses(list));
    }
}

fn addresses(list: &Address) -> Vec<String> {
    list.iter().filter_map(|a| a.address()).map(String::from).collect()
}

fn unbracket(v: &str) -> String {
    v.trim().trim_start_matches('<').trim_end_matches('>').trim().to_string()
}

fn feedback_type(t: FeedbackType) -> &'static str {
    match t {
        FeedbackType::Abuse => "abuse",
        FeedbackType::AuthFailure => "auth-failure",
        FeedbackType::Fraud => "fraud",
        FeedbackType::NotSpam => "not-spam",
        FeedbackType::Other => "other",
        FeedbackType::Virus => "virus",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::testdata;

    #[test]
    fn a_dsn_with_the_returned_message() {
        let r = read(
            testdata::dsn("fb-tok@fb.test", "bob@b.test", "5.1.1", "smtp; 550 5.1.1 no such user", true).as_bytes(),
        );
        let Kind::Delivery(ds) = &r.kind else { panic!("{r:?}") };
        assert_eq!(ds.reporting_mta.as_deref(), Some("mx.b.test"));
        assert_eq!(ds.recipients[0].recipient, "bob@b.test");
        assert_eq!(r.references, ["fb-tok@fb.test", "tok-ref"], "in the order quoted");
        assert_eq!(r.quoted_recipients, ["bob@b.test"]);
    }

    #[test]
    fn a_dsn_with_headers_only() {
        let r =
            read(testdata::dsn("fb-tok@fb.test", "bob@b.test", "5.1.1", "smtp; 550 5.1.1 unknown", false).as_bytes());
        assert!(matches!(r.kind, Kind::Delivery(_)));
        assert_eq!(r.references, ["fb-tok@fb.test", "tok-ref"]);
    }

    #[test]
    fn an_arf_report() {
        let r = read(testdata::arf("abuse", Some("bob@b.test"), Some("fb-tok@fb.test"), "tok-ref").as_bytes());
        let Kind::Arf(c) = &r.kind else { panic!("{r:?}") };
        assert!(c.is_complaint());
        assert_eq!(c.feedback_type, "abuse");
        assert_eq!(c.user_agent.as_deref(), Some("SomeGenerator/1.0"));
        assert_eq!(c.original_rcpt_to.as_deref(), Some("bob@b.test"));
        assert!(c.arrival_date.is_some());
        assert!(r.references.contains(&"tok-ref".to_string()) && r.references.contains(&"fb-tok@fb.test".to_string()));
        assert_eq!(r.quoted_recipients, ["bob@b.test"]);
        let not_spam = read(testdata::arf("not-spam", None, None, "tok-ref").as_bytes());
        assert!(matches!(not_spam.kind, Kind::Arf(ref c) if !c.is_complaint()));
    }

    #[test]
    fn anything_else_is_other() {
        for m in [
            "From: bob@b.test\r\nSubject: Out of office\r\n\r\nI am away.\r\n",
            "From: MAILER-DAEMON@b.test\r\nSubject: failure notice\r\n\r\n<bob@b.test>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n",
            "",
            "\u{0}\u{1}garbage",
        ] {
            let r = read(m.as_bytes());
            assert_eq!((r.kind, r.references.len()), (Kind::Other, 0), "{m:?}");
        }
    }
}
