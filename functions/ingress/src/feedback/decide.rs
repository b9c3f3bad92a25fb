//! What a report does, decided without I/O: which message of ours it is about ([`reference`]),
//! then ([`effects`]) the events, suppressions and forward it leads to.
//!
//! * **Which message**: the token of the return path it was sent to; for a report to `fbl@`,
//!   the first token it quotes that verifies (our reference header, the `Return-Path` a server
//!   added, the ARF `Original-Mail-From`). A token that does not verify names nothing.
//! * **Which recipients**: only recipients of that message, as its metadata lists them — a
//!   report cannot suppress an address we did not send that message to. A DSN names them; an
//!   ARF report by its `Original-Rcpt-To`, else the one quoted `To`/`Cc` address that is a
//!   recipient, else the message's only recipient. (A message with more recipients than its
//!   metadata holds — about fifty — has the rest unknown here: reports about them change nothing.)
//! * **Effects**: a permanent failure (`Action: failed`, `5.x.x`) is a `Bounce` event
//!   (`mail.messageId` = our queue id, `feedbackId` = the report's) and, when it says the mailbox
//!   does not exist and `RELAY_SUPPRESSION` has `bounce`, a suppression; a spam complaint is a
//!   `Complaint` event and, with `complaint`, a suppression of each complained recipient. Delays
//!   and successes change nothing.
//! * **Forward**: whatever it is, a report about a message of ours goes on to that message's
//!   envelope sender (from `<>`), as it would have without the feedback domain — never to an
//!   address in the feedback domain itself.

use shared::Reply;
use shared::events::{
    Bounce, BouncedRecipient, ComplainedRecipient, Complaint, Event, MAX_DESTINATION, Mail, Report, bounce_sub_type,
    iso,
};
use shared::feedback::ReturnPath;
use shared::meta::MessageMeta;
use shared::suppression::classify::mailbox_does_not_exist;
use shared::suppression::{AutoSuppress, Entry, Reason};

use super::dsn::RecipientStatus;
use super::report::{self, Kind, Read};

/// The queue id of the message of ours a report is about: the return path's token when it came
/// to one (`rcpt`), else the first verifying token it quotes.
pub fn reference(rcpt: &str, read: &Read, rp: &ReturnPath) -> Option<String> {
    rp.verify_address(rcpt)
        .or_else(|| read.references.iter().find_map(|r| rp.verify(r).or_else(|| rp.verify_address(r))))
}

/// What the report is looked at against.
pub struct Context<'a> {
    /// Our message's queue id and metadata.
    pub queue_id: &'a str,
    pub origin: &'a MessageMeta,
    /// The report's own queue id.
    pub report_id: &'a str,
    pub now: i64,
    pub auto: AutoSuppress,
    pub return_path: &'a ReturnPath,
}

/// What follows a report.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    pub suppress: Vec<Entry>,
    pub events: Vec<Event>,
    /// Recipients that bounced after acceptance (`AsyncBounces`).
    pub bounced: u64,
    /// Complaint reports (`Complaints`).
    pub complaints: u64,
    /// Where the report goes on to: our message's envelope sender.
    pub forward_to: Option<String>,
    /// Addresses the report named that are not recipients of the message, for the log.
    pub strangers: Vec<String>,
}

/// The effects of `read` on the message of `ctx`.
pub fn effects(read: &Read, ctx: &Context) -> Effects {
    let mut out = Effects::default();
    let sender = &ctx.origin.sender;
    if !sender.is_empty() && !ctx.return_path.in_domain(sender) {
        out.forward_to = Some(sender.clone());
    }
    match &read.kind {
        Kind::Delivery(ds) => {
            for r in ds.recipients.iter().filter(|r| r.failed_permanently()) {
                let Some(address) = recipient_of(ctx.origin, &r.recipient) else {
                    out.strangers.push(r.recipient.clone());
                    continue;
                };
                out.bounced += 1;
                out.events.push(bounce_event(ctx, &address, r, ds.reporting_mta.as_deref()));
                let (code, status) = reply_of(r);
                if ctx.auto.adds(Reason::Bounce) && mailbox_does_not_exist(code, status.as_deref(), r.diagnostic_text())
                {
                    out.suppress.push(entry(ctx, &address, Reason::Bounce, r.diagnostic.clone().unwrap_or_default()));
                }
            }
        }
        Kind::Arf(c) if c.is_complaint() => {
            let recipients = complained(ctx.origin, read, c);
            if recipients.is_empty() {
                out.strangers.extend(c.original_rcpt_to.clone());
                return out;
            }
            out.complaints += 1;
            if ctx.auto.adds(Reason::Complaint) {
                let why = format!("complaint: {}", c.feedback_type);
                out.suppress.extend(recipients.iter().map(|a| entry(ctx, a, Reason::Complaint, why.clone())));
            }
            out.events.push(complaint_event(ctx, recipients, c));
        }
        Kind::Arf(_) | Kind::Other => {}
    }
    out
}

/// `address` as the message's metadata lists it, if it is one of its recipients.
fn recipient_of(origin: &MessageMeta, address: &str) -> Option<String> {
    origin.recipients.iter().find(|r| r.eq_ignore_ascii_case(address.trim())).cloned()
}

/// The complained recipients: `Original-Rcpt-To`, else the one quoted recipient that is one of
/// ours, else the message's only recipient.
fn complained(origin: &MessageMeta, read: &Read, c: &report::Complaint) -> Vec<String> {
    if let Some(rcpt) = &c.original_rcpt_to {
        return recipient_of(origin, rcpt).into_iter().collect();
    }
    let mut quoted: Vec<String> = read.quoted_recipients.iter().filter_map(|a| recipient_of(origin, a)).collect();
    quoted.dedup();
    if quoted.len() == 1 {
        return quoted;
    }
    match &origin.recipients[..] {
        [only] if origin.omitted == 0 && quoted.is_empty() => vec![only.clone()],
        _ => Vec::new(),
    }
}

/// The reply code and the most specific RFC 3463 status a report gives: its `Status`, or the
/// enhanced code in an SMTP diagnostic when the `Status` says only `x.0.0`.
fn reply_of(r: &RecipientStatus) -> (Option<u16>, Option<String>) {
    let code = r.reply_code();
    let from_reply = code.and_then(|c| Reply::parse(c, r.diagnostic_text().get(3..)?.trim_start()).status);
    let status = match &r.status {
        Some(s) if !s.ends_with(".0.0") => Some(s.clone()),
        other => from_reply.or_else(|| other.clone()),
    };
    (code, status)
}

fn mail(ctx: &Context) -> Mail {
    Mail {
        timestamp: iso(ctx.origin.received),
        message_id: ctx.queue_id.to_string(),
        source: ctx.origin.sender.clone(),
        source_ip: None,
        destination: ctx.origin.recipients.iter().take(MAX_DESTINATION).cloned().collect(),
    }
}

fn entry(ctx: &Context, address: &str, reason: Reason, diagnostic: String) -> Entry {
    Entry { address: address.to_string(), reason, since: ctx.now, queue_id: Some(ctx.queue_id.to_string()), diagnostic }
}

fn bounce_event(ctx: &Context, address: &str, r: &RecipientStatus, reporting_mta: Option<&str>) -> Event {
    let status = reply_of(r).1.unwrap_or_else(|| "5.0.0".into());
    Event::Bounce {
        mail: mail(ctx),
        bounce: Bounce {
            bounce_type: "Permanent",
            bounce_sub_type: bounce_sub_type(&status),
            bounced_recipients: vec![BouncedRecipient {
                email_address: address.to_string(),
                action: "failed",
                status,
                diagnostic_code: r.diagnostic.clone().unwrap_or_default(),
            }],
            feedback_id: Some(ctx.report_id.to_string()),
            report: Report {
                timestamp: iso(ctx.now),
                remote_mta_ip: None,
                reporting_mta: reporting_mta.map(|m| format!("dns; {m}")).unwrap_or_default(),
            },
        },
    }
}

fn complaint_event(ctx: &Context, recipients: Vec<String>, c: &report::Complaint) -> Event {
    Event::Complaint {
        mail: mail(ctx),
        complaint: Complaint {
            complained_recipients: recipients.into_iter().map(|a| ComplainedRecipient { email_address: a }).collect(),
            timestamp: iso(ctx.now),
            feedback_id: ctx.report_id.to_string(),
            complaint_feedback_type: c.feedback_type.to_string(),
            user_agent: c.user_agent.clone(),
            arrival_date: c.arrival_date.map(iso),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::feedback::report::read;
    use crate::feedback::testdata;

    const QID: &str = "01JQUEUEID0000000000000000";
    const REPORT: &str = "01JREPORT00000000000000000";
    const T0: i64 = 1_800_000_000;

    fn rp() -> ReturnPath {
        ReturnPath::new("fb.test", &[9u8; 32])
    }

    fn origin(recipients: &[&str]) -> MessageMeta {
        MessageMeta {
            sender: "alice@a.test".into(),
            received: T0,
            size: 100,
            jobs: 1,
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            omitted: 0,
        }
    }

    fn run(report: &str, origin: &MessageMeta, auto: AutoSuppress) -> Effects {
        let rp = rp();
        let ctx = Context { queue_id: QID, origin, report_id: REPORT, now: T0 + 3600, auto, return_path: &rp };
        effects(&read(report.as_bytes()), &ctx)
    }

    fn json(e: &Event) -> Value {
        serde_json::from_str(&e.to_json()).unwrap()
    }

    #[test]
    fn the_message_is_named_by_the_return_path_or_a_quoted_token() {
        let rp = rp();
        let ours = rp.address(QID);
        let other_msg = rp.token("01JQUEUEID0000000000000001");
        let forged = ReturnPath::new("fb.test", &[1u8; 32]).token(QID);
        // (sent to, quoted reference, message named)
        let cases = [
            (ours.clone(), "anything".to_string(), Some(QID)),
            (ours.clone(), other_msg.clone(), Some(QID)),
            ("fbl@fb.test".into(), rp.token(QID), Some(QID)),
            ("fbl@fb.test".into(), forged.clone(), None),
            ("fbl@fb.test".into(), "none".into(), None),
        ];
        for (to, quoted, want) in cases {
            let r = read(testdata::arf("abuse", None, None, &quoted).as_bytes());
            assert_eq!(reference(&to, &r, &rp).as_deref(), want, "{to} {quoted}");
        }
        // The quoted Return-Path and Original-Mail-From name it too.
        let r = read(testdata::arf("abuse", None, Some(&ours), "none").as_bytes());
        assert_eq!(reference("fbl@fb.test", &r, &rp).as_deref(), Some(QID));
    }

    #[test]
    fn a_hard_bounce_is_an_event_and_a_suppression_and_goes_on_to_the_sender() {
        let dsn = testdata::dsn("fb-x@fb.test", "Bob@B.test", "5.1.1", "smtp; 550 5.1.1 no such user", true);
        let e = run(&dsn, &origin(&["bob@b.test", "carol@b.test"]), AutoSuppress::default());
        assert_eq!((e.bounced, e.complaints, e.forward_to.as_deref()), (1, 0, Some("alice@a.test")));
        assert_eq!(
            e.suppress,
            [Entry {
                address: "bob@b.test".into(),
                reason: Reason::Bounce,
                since: T0 + 3600,
                queue_id: Some(QID.into()),
                diagnostic: "smtp; 550 5.1.1 no such user".into(),
            }]
        );
        assert_eq!(
            json(&e.events[0]),
            json!({"eventType": "Bounce",
                "mail": {"timestamp": "2027-01-15T08:00:00.000Z", "messageId": QID, "source": "alice@a.test",
                         "destination": ["bob@b.test", "carol@b.test"]},
                "bounce": {"bounceType": "Permanent", "bounceSubType": "NoEmail",
                    "bouncedRecipients": [{"emailAddress": "bob@b.test", "action": "failed", "status": "5.1.1",
                                           "diagnosticCode": "smtp; 550 5.1.1 no such user"}],
                    "feedbackId": REPORT, "timestamp": "2027-01-15T09:00:00.000Z", "reportingMTA": "dns; mx.b.test"}})
        );
    }

    #[test]
    fn which_bounces_suppress() {
        let o = origin(&["bob@b.test"]);
        // (status, diagnostic, bounced, suppressed)
        let cases = [
            ("5.1.1", "smtp; 550 5.1.1 no such user", 1, 1),
            ("5.0.0", "smtp; 550 5.1.1 no such user", 1, 1),
            ("5.0.0", "smtp; 550 user unknown", 1, 1),
            ("5.7.1", "smtp; 550 5.7.1 rejected as spam", 1, 0),
            ("5.2.2", "smtp; 552 5.2.2 mailbox full", 1, 0),
            ("5.0.0", "X-Postfix; delivery failed", 1, 0),
            ("4.4.7", "smtp; 451 4.4.7 delivery time expired", 0, 0),
        ];
        for (status, diag, bounced, suppressed) in cases {
            let e = run(&testdata::dsn("fb-x@fb.test", "bob@b.test", status, diag, false), &o, AutoSuppress::default());
            assert_eq!((e.bounced, e.suppress.len()), (bounced, suppressed), "{status} {diag}");
            assert_eq!(e.events.len() as u64, bounced);
        }
        let off = AutoSuppress { bounce: false, complaint: true };
        let e = run(&testdata::dsn("fb-x@fb.test", "bob@b.test", "5.1.1", "smtp; 550 5.1.1 x", true), &o, off);
        assert_eq!((e.bounced, e.suppress.len()), (1, 0), "RELAY_SUPPRESSION without bounce: the event only");
    }

    #[test]
    fn a_report_about_someone_else_changes_nothing() {
        let dsn = testdata::dsn("fb-x@fb.test", "mallory@b.test", "5.1.1", "smtp; 550 5.1.1 no such user", true);
        let e = run(&dsn, &origin(&["bob@b.test"]), AutoSuppress::default());
        assert!(e.events.is_empty() && e.suppress.is_empty() && e.bounced == 0);
        assert_eq!(e.strangers, ["mallory@b.test"]);
        assert_eq!(e.forward_to.as_deref(), Some("alice@a.test"), "still ours: the sender sees it");
        let arf = testdata::arf("abuse", Some("mallory@b.test"), None, "t");
        let e = run(&arf, &origin(&["bob@b.test"]), AutoSuppress::default());
        assert!(e.events.is_empty() && e.suppress.is_empty() && e.complaints == 0);
    }

    #[test]
    fn complaints_name_their_recipient() {
        let all = AutoSuppress::default();
        // (Original-Rcpt-To, quoted To, message recipients, complained)
        type Case<'a> = (Option<&'a str>, &'a str, &'a [&'a str], &'a [&'a str]);
        let cases: &[Case] = &[
            (Some("Bob@b.test"), "x@y.test", &["bob@b.test", "carol@b.test"], &["bob@b.test"]),
            (None, "carol@b.test", &["bob@b.test", "carol@b.test"], &["carol@b.test"]),
            (None, "list@lists.test", &["bob@b.test"], &["bob@b.test"]),
            (None, "list@lists.test", &["bob@b.test", "carol@b.test"], &[]),
        ];
        for (rcpt_to, quoted_to, recipients, want) in cases {
            let mut arf = testdata::arf("abuse", *rcpt_to, None, "t");
            if rcpt_to.is_none() {
                arf = arf.replace("To: bob@b.test", &format!("To: {quoted_to}"));
            }
            let e = run(&arf, &origin(recipients), all);
            let got: Vec<&str> = e.suppress.iter().map(|s| s.address.as_str()).collect();
            assert_eq!(got, *want, "{rcpt_to:?} {quoted_to}");
            assert_eq!(e.complaints, u64::from(!want.is_empty()));
        }
        let e = run(&testdata::arf("abuse", Some("bob@b.test"), None, "t"), &origin(&["bob@b.test"]), all);
        assert_eq!(e.suppress[0].reason, Reason::Complaint);
        let v = json(&e.events[0]);
        assert_eq!(v["eventType"], "Complaint");
        assert_eq!(v["complaint"]["complainedRecipients"], json!([{"emailAddress": "bob@b.test"}]));
        assert_eq!(v["complaint"]["complaintFeedbackType"], "abuse");
        assert_eq!(v["complaint"]["userAgent"], "SomeGenerator/1.0");
        assert_eq!(v["complaint"]["arrivalDate"], "2026-12-07T10:00:00.000Z");
        assert_eq!(v["complaint"]["feedbackId"], REPORT);
        assert_eq!(v["mail"]["messageId"], QID);
        // Not spam, auth failures and other mail: forwarded, nothing else.
        for m in
            [testdata::arf("not-spam", Some("bob@b.test"), None, "t"), "Subject: Out of office\r\n\r\nAway.\r\n".into()]
        {
            let e = run(&m, &origin(&["bob@b.test"]), all);
            assert!(e.events.is_empty() && e.suppress.is_empty());
            assert_eq!(e.forward_to.as_deref(), Some("alice@a.test"));
        }
        let off = AutoSuppress { bounce: true, complaint: false };
        let e = run(&testdata::arf("abuse", Some("bob@b.test"), None, "t"), &origin(&["bob@b.test"]), off);
        assert_eq!((e.events.len(), e.suppress.len()), (1, 0));
    }

    #[test]
    fn never_forwarded_to_nobody_or_to_the_feedback_domain() {
        let o = MessageMeta { sender: String::new(), ..origin(&["bob@b.test"]) };
        assert_eq!(run("Subject: x\r\n\r\n", &o, AutoSuppress::default()).forward_to, None);
        let o = MessageMeta { sender: "fb-loop@FB.test".into(), ..origin(&["bob@b.test"]) };
        assert_eq!(run("Subject: x\r\n\r\n", &o, AutoSuppress::default()).forward_to, None);
    }
}
