//! Reports as mailbox providers send them, for the unit tests: an RFC 3464 DSN (returning the
//! whole message or its headers) and an RFC 5965 ARF report, each quoting a message of ours.

/// The message of ours a report quotes: `Return-Path` as the receiving server added it, then our
/// reference header.
fn quoted(return_path: &str, recipient: &str, reference: &str) -> String {
    format!(
        "Return-Path: <{return_path}>\r\nX-Relay-Ref: {reference}\r\nFrom: alice@a.test\r\nTo: {recipient}\r\n\
         Subject: hello\r\nMessage-ID: <1@a.test>\r\n\r\nHello.\r\n"
    )
}

/// A DSN about `recipient` from mx.b.test, to `return_path`; `full`: the whole message returned
/// (`message/rfc822`), else its headers (`text/rfc822-headers`).
pub fn dsn(return_path: &str, recipient: &str, status: &str, diagnostic: &str, full: bool) -> String {
    let q = quoted(return_path, recipient, "tok-ref");
    let returned = if full {
        format!("Content-Type: message/rfc822\r\n\r\n{q}")
    } else {
        let headers = q.split("\r\n\r\n").next().unwrap();
        format!("Content-Type: text/rfc822-headers\r\n\r\n{headers}\r\n")
    };
    format!(
        "From: MAILER-DAEMON@mx.b.test\r\nTo: <{return_path}>\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; mx.b.test\r\nArrival-Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n\r\n\
         Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n\
         Diagnostic-Code: {diagnostic}\r\n\r\n\
         --B\r\n{returned}\r\n--B--\r\n"
    )
}

/// An ARF report of `feedback_type` quoting a message whose reference header is `reference`.
pub fn arf(feedback_type: &str, rcpt_to: Option<&str>, mail_from: Option<&str>, reference: &str) -> String {
    let mut fields = format!(
        "Feedback-Type: {feedback_type}\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n\
         Arrival-Date: Mon, 7 Dec 2026 10:00:00 +0000\r\nSource-IP: 192.0.2.25\r\nReported-Domain: a.test\r\n"
    );
    if let Some(m) = mail_from {
        fields.push_str(&format!("Original-Mail-From: <{m}>\r\n"));
    }
    if let Some(r) = rcpt_to {
        fields.push_str(&format!("Original-Rcpt-To: <{r}>\r\n"));
    }
    let q = quoted(mail_from.unwrap_or("somebody@a.test"), rcpt_to.unwrap_or("bob@b.test"), reference);
    format!(
        "From: fbl@isp.test\r\nTo: fbl@fb.test\r\nSubject: FW: hello\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"A\"\r\n\r\n\
         --A\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n\r\n\
         --A\r\nContent-Type: message/feedback-report\r\n\r\n{fields}\r\n\
         --A\r\nContent-Type: message/rfc822\r\n\r\n{q}\r\n--A--\r\n"
    )
}
