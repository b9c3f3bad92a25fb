//! Delivery status notifications (RFC 3464 reports for RFC 3461 requests), built with
//! mail-builder: a `multipart/report; report-type=delivery-status` with a human-readable part,
//! the machine-readable `message/delivery-status`, and the returned message — whole
//! (`message/rfc822`) for failures unless RET=HDRS or it is large, otherwise its header
//! (`text/rfc822-headers`), as Postfix does.

use crate::config::RelayConfig;
use chrono::DateTime;
use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;
use shared::job::domain_of;
use shared::meta::MessageMeta;
use shared::{BodyType, Job, Recipient, Ret};

use crate::decide::plan::{Action, Report};

/// Failures return the whole message only up to this size (Postfix's `bounce_size_limit`
/// is 50 kB; returning a little more is friendlier and still bounded).
pub const RETURN_LIMIT: usize = 256 * 1024;

fn date(ts: i64) -> String {
    DateTime::from_timestamp(ts, 0).unwrap_or_default().to_rfc2822()
}

/// Header fields carry no line breaks and nothing outside printable ASCII.
fn field(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

/// The header section of a message (up to the first empty line).
pub fn header_section(message: &[u8]) -> &[u8] {
    let crlf = message.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 2);
    let lf = message.windows(2).position(|w| w == b"\n\n").map(|p| p + 1);
    match (crlf, lf) {
        (Some(a), Some(b)) => &message[..a.min(b)],
        (Some(a), None) | (None, Some(a)) => &message[..a],
        (None, None) => message,
    }
}

/// The `message/delivery-status` body.
pub fn delivery_status(report: &Report, job: &Job, cfg: &RelayConfig, now: i64) -> String {
    let mut s = format!("Reporting-MTA: dns; {}\r\n", cfg.helo_name);
    if let Some(envid) = &job.dsn.envid {
        s.push_str(&format!("Original-Envelope-Id: {}\r\n", field(envid)));
    }
    s.push_str(&format!("X-Relay-Queue-ID: {}\r\n", job.queue_id));
    s.push_str(&format!("Arrival-Date: {}\r\n", date(job.first_seen)));
    for line in &report.lines {
        s.push_str(&format!("\r\nFinal-Recipient: rfc822; {}\r\n", field(&line.address)));
        if let Some(orcpt) = &line.orcpt {
            let (kind, addr) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
            s.push_str(&format!("Original-Recipient: {}; {}\r\n", field(kind.trim()), field(addr.trim())));
        }
        s.push_str(&format!("Action: {}\r\n", report.action.as_str()));
        s.push_str(&format!("Status: {}\r\n", line.verdict.status));
        match (&line.verdict.reply, &report.remote) {
            (Some(reply), Some(remote)) => {
                s.push_str(&format!("Remote-MTA: dns; {}\r\n", field(&remote.host)));
                s.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", field(&reply.one_line())));
            }
            (Some(reply), None) => s.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", field(&reply.one_line()))),
            (None, _) => s.push_str(&format!("Diagnostic-Code: X-Relay; {}\r\n", field(&line.verdict.detail))),
        }
        s.push_str(&format!("Last-Attempt-Date: {}\r\n", date(now)));
        if let Some(until) = report.retry_until {
            s.push_str(&format!("Will-Retry-Until: {}\r\n", date(until)));
        }
    }
    s
}

fn human(report: &Report, cfg: &RelayConfig) -> (&'static str, String) {
    let (subject, intro) = match report.action {
        Action::Failed => (
            "Undelivered Mail Returned to Sender",
            "I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients. It's attached below.",
        ),
        Action::Delayed => (
            "Delayed Mail (still being retried)",
            "Your message could not be delivered yet to one or more recipients.\r\nDelivery will be retried; no action is needed on your part.",
        ),
        Action::Relayed => (
            "Successful Mail Relay Report",
            "Your message was relayed to the following recipients. The next\r\nmail system does not send delivery notifications of its own.",
        ),
    };
    let mut text = format!("This is the mail system at host {}.\r\n\r\n{intro}\r\n\r\n", cfg.helo_name);
    for line in &report.lines {
        text.push_str(&format!("<{}>: {}\r\n", line.address, line.verdict.text()));
    }
    if let Some(until) = report.retry_until {
        text.push_str(&format!("\r\nThe mail system will keep trying until {}.\r\n", date(until)));
    }
    (subject, text)
}

/// A part written as-is: 7bit when ASCII, 8bit otherwise (never re-encoded).
fn raw_part(content_type: &'static str, body: Vec<u8>) -> MimePart<'static> {
    let cte = if body.is_ascii() { "7bit" } else { "8bit" };
    MimePart::new(ContentType::new(content_type), body).transfer_encoding(cte)
}

/// The whole DSN message.
pub fn build(report: &Report, job: &Job, original: &[u8], cfg: &RelayConfig, now: i64, id: &str) -> Vec<u8> {
    let (subject, text) = human(report, cfg);
    let full = report.action == Action::Failed && job.dsn.ret != Some(Ret::Hdrs) && original.len() <= RETURN_LIMIT;
    let returned = if full {
        raw_part("message/rfc822", original.to_vec())
    } else {
        raw_part("text/rfc822-headers", header_section(original).to_vec())
    };
    let parts = vec![
        MimePart::new(ContentType::new("text/plain").attribute("charset", "utf-8"), text),
        raw_part("message/delivery-status", delivery_status(report, job, cfg, now).into_bytes()),
        returned,
    ];
    MessageBuilder::new()
        .from(("Mail Delivery System", cfg.bounce_from.as_str()))
        .to(job.sender.as_str())
        .subject(subject)
        .date(now)
        .message_id(format!("{id}@{}", cfg.helo_name))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(MimePart::new(ContentType::new("multipart/report").attribute("report-type", "delivery-status"), parts))
        .write_to_vec()
        .expect("writing to a Vec cannot fail")
}

/// The DSN for `report` on `job` as a message of its own: its bytes and the job that delivers
/// it from `<>` to the sender (a sole job under the new queue id `id`).
pub fn report_job(
    report: &Report,
    job: &Job,
    original: &[u8],
    cfg: &RelayConfig,
    now: i64,
    id: &str,
) -> (Job, Vec<u8>) {
    let bytes = build(report, job, original, cfg, now, id);
    let recipients = vec![Recipient::new(job.sender.clone())];
    let dsn_job = Job {
        body: if bytes.is_ascii() { BodyType::SevenBit } else { BodyType::EightBitMime },
        smtputf8: !job.sender.is_ascii(),
        received_from: format!("{} (delivery status notification)", cfg.helo_name),
        // The relay wrote it: mail of our own, signed when RELAY_BOUNCE_FROM's domain has a key.
        trusted: true,
        ..Job::first_attempt(id, "", domain_of(&job.sender), recipients, bytes.len() as u64, now)
    };
    (dsn_job, bytes)
}

/// The envelope metadata of a DSN message (as the ingress writes it for mail it accepts).
pub fn report_meta(dsn_job: &Job) -> MessageMeta {
    MessageMeta {
        sender: String::new(),
        received: dsn_job.first_seen,
        size: dsn_job.size,
        jobs: 1,
        recipients: dsn_job.recipients.iter().map(|r| r.address.clone()).collect(),
        omitted: 0,
    }
}

#[cfg(test)]
mod tests {
    use shared::{Notify, Reply};

    use super::*;
    use crate::decide::plan::ReportLine;
    use crate::testkit;
    use crate::vocab::{Remote, Verdict};

    fn cfg() -> RelayConfig {
        testkit::config(&[])
    }

    fn job() -> Job {
        let mut j = testkit::job("b.test", &["bob@b.test"], 1_700_000_000);
        j.recipients[0].notify = Some(Notify::DEFAULT);
        j.dsn.envid = Some("env-1".into());
        j
    }

    const ORIGINAL: &[u8] = b"From: alice@a.test\r\nSubject: hi\r\n\r\nbody line\r\n";

    fn report(action: Action, verdict: Verdict) -> Report {
        Report {
            action,
            lines: vec![ReportLine { address: "bob@b.test".into(), orcpt: Some("rfc822;Bob@B.test".into()), verdict }],
            remote: Some(Remote { host: "mx.b.test".into(), ..Remote::default() }),
            retry_until: None,
        }
    }

    #[test]
    fn failure_report_has_the_three_parts_and_fields() {
        let r = report(Action::Failed, Verdict::from_reply(Reply::parse(550, "5.1.1 no such user")));
        let out = String::from_utf8(build(&r, &job(), ORIGINAL, &cfg(), 1_700_000_100, "ID")).unwrap();
        assert!(out.contains("Content-Type: multipart/report; report-type=\"delivery-status\""), "{out}");
        assert!(out.contains("To: <alice@a.test>"), "{out}");
        assert!(out.contains("Subject: Undelivered Mail Returned to Sender"));
        assert!(out.contains("Auto-Submitted: auto-replied"));
        let ds_at = out.find("Content-Type: message/delivery-status").expect("status part");
        let rfc822_at = out.find("Content-Type: message/rfc822").expect("returned message");
        assert!(out.find("Content-Type: text/plain").unwrap() < ds_at && ds_at < rfc822_at);
        for f in [
            "Reporting-MTA: dns; relay.test\r\n",
            "Original-Envelope-Id: env-1\r\n",
            "Final-Recipient: rfc822; bob@b.test\r\n",
            "Original-Recipient: rfc822; Bob@B.test\r\n",
            "Action: failed\r\n",
            "Status: 5.1.1\r\n",
            "Remote-MTA: dns; mx.b.test\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n",
            "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n",
            "Last-Attempt-Date: Tue, 14 Nov 2023 22:15:00 +0000\r\n",
        ] {
            assert!(out.contains(f), "missing {f:?} in\n{out}");
        }
        assert!(out.contains("\r\nbody line\r\n"), "whole message returned");
    }

    #[test]
    fn local_reasons_headers_only_and_delays() {
        let mut j = job();
        j.dsn.ret = Some(Ret::Hdrs);
        let r = report(Action::Failed, Verdict::failed("5.1.10", "b.test does not accept mail (null MX)"));
        let out = String::from_utf8(build(&r, &j, ORIGINAL, &cfg(), 1_700_000_100, "ID")).unwrap();
        assert!(out.contains("Status: 5.1.10\r\n") && out.contains("Diagnostic-Code: X-Relay; b.test does not"));
        assert!(!out.contains("Remote-MTA"), "no remote said anything");
        assert!(out.contains("Content-Type: text/rfc822-headers") && !out.contains("body line"));

        let mut d = report(Action::Delayed, Verdict::deferred("4.4.1", "connection refused"));
        d.retry_until = Some(1_700_432_000);
        let out = String::from_utf8(build(&d, &job(), ORIGINAL, &cfg(), 1_700_000_100, "ID")).unwrap();
        assert!(out.contains("Action: delayed\r\nStatus: 4.4.1\r\n") && out.contains("Will-Retry-Until: "));
        assert!(out.contains("Content-Type: text/rfc822-headers"), "delays return headers only");
    }

    #[test]
    fn a_mail_parser_reads_it_as_a_report_with_the_message_nested() {
        use mail_parser::{MessageParser, MimeHeaders, PartType};
        let r = report(Action::Failed, Verdict::from_reply(Reply::parse(550, "5.1.1 no such user")));
        let bytes = build(&r, &job(), ORIGINAL, &cfg(), 1_700_000_100, "ID");
        let msg = MessageParser::default().parse(&bytes).expect("parses");
        let root = msg.content_type().expect("content type");
        assert_eq!((root.ctype(), root.subtype()), ("multipart", Some("report")));
        assert_eq!(root.attribute("report-type"), Some("delivery-status"));
        let PartType::Multipart(ids) = &msg.parts[0].body else { panic!("not multipart") };
        let types: Vec<String> = ids
            .iter()
            .map(|&i| {
                let ct = msg.parts[i as usize].content_type().expect("part type");
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
            })
            .collect();
        assert_eq!(types, ["text/plain", "message/delivery-status", "message/rfc822"]);
        let nested = msg.parts[ids[2] as usize].message().expect("nested message");
        assert_eq!(nested.subject(), Some("hi"));
    }

    #[test]
    fn header_section_handles_both_line_ends() {
        assert_eq!(header_section(b"A: b\r\n\r\nbody"), b"A: b\r\n");
        assert_eq!(header_section(b"A: b\n\nbody"), b"A: b\n");
        assert_eq!(header_section(b"A: b"), b"A: b");
    }
}
