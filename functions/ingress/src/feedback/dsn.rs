//! The fields of an RFC 3464 `message/delivery-status` body (and RFC 6533's
//! `message/global-delivery-status`, the same with UTF-8): a block of per-message fields, then
//! one block per recipient, blocks separated by empty lines, each block in header syntax. No
//! crate reads these, so this is a small pure parser, forgiving the way real reports need it to
//! be: LF or CRLF, folded lines, any case in field names, comments after values, a missing
//! per-message block, leading or repeated empty lines, lines that are not fields (skipped). A
//! recipient block without a recipient is dropped; nothing here fails.

/// What a report says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecipientStatus {
    /// `Final-Recipient` (or, without one, `Original-Recipient`), its address type removed.
    pub recipient: String,
    /// `Action`, lower case: `failed`, `delayed`, `delivered`, `relayed`, `expanded`.
    pub action: String,
    /// `Status`: an RFC 3463 code (`5.1.1`), `None` when absent or not one.
    pub status: Option<String>,
    /// `Diagnostic-Code` as given (`smtp; 550 5.1.1 no such user`).
    pub diagnostic: Option<String>,
    /// `Remote-MTA`, its type removed.
    pub remote_mta: Option<String>,
}

impl RecipientStatus {
    /// A permanent failure: `Action: failed` with a `5.x.x` status (or no status at all — an
    /// action of `failed` is itself final).
    pub fn failed_permanently(&self) -> bool {
        self.action == "failed" && self.status.as_deref().is_none_or(|s| s.starts_with('5'))
    }

    /// The SMTP reply code in the diagnostic (`smtp; 550 …`), if there is one.
    pub fn reply_code(&self) -> Option<u16> {
        let d = self.diagnostic.as_deref()?;
        let (kind, text) = d.split_once(';')?;
        if !kind.trim().eq_ignore_ascii_case("smtp") {
            return None;
        }
        text.trim().get(..3).and_then(|c| c.parse().ok()).filter(|c| (200..600).contains(c))
    }

    /// The diagnostic's text after its type (`550 5.1.1 no such user`).
    pub fn diagnostic_text(&self) -> &str {
        let d = self.diagnostic.as_deref().unwrap_or_default();
        d.split_once(';').map_or(d, |(_, t)| t).trim()
    }
}

/// A whole delivery-status body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryStatus {
    /// `Reporting-MTA`, its type removed.
    pub reporting_mta: Option<String>,
    pub recipients: Vec<RecipientStatus>,
}

/// Parse a delivery-status body.
pub fn parse(body: &str) -> DeliveryStatus {
    let mut out = DeliveryStatus::default();
    for (i, block) in blocks(body).into_iter().enumerate() {
        let get = |name: &str| block.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        let recipient = get("Final-Recipient").or_else(|| get("Original-Recipient")).map(typed_value);
        match recipient.filter(|r| !r.is_empty()) {
            Some(recipient) => out.recipients.push(RecipientStatus {
                recipient,
                action: get("Action").map(first_word).unwrap_or_default().to_ascii_lowercase(),
                status: get("Status").map(first_word).filter(|s| is_status(s)).map(String::from),
                diagnostic: get("Diagnostic-Code").map(|d| d.trim().to_string()),
                remote_mta: get("Remote-MTA").map(typed_value),
            }),
            None if i == 0 => out.reporting_mta = get("Reporting-MTA").map(typed_value),
            None => {}
        }
    }
    out
}

/// The blocks of fields, unfolded: `(name, value)` pairs, values trimmed.
fn blocks(body: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks: Vec<Vec<(String, String)>> = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in body.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.trim().is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':')
            && !name.trim().is_empty()
            && !name.contains(' ')
        {
            current.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    blocks
}

/// `rfc822; <Bob@B.test> (comment)` → `Bob@B.test`: the type removed, then a comment and angle
/// brackets.
fn typed_value(v: &str) -> String {
    let v = v.split_once(';').map_or(v, |(_, a)| a);
    let v = v.split_once('(').map_or(v, |(a, _)| a);
    v.trim().trim_start_matches('<').trim_end_matches('>').trim().to_string()
}

/// The first word of a value (`5.1.1 (bad mailbox)` → `5.1.1`).
fn first_word(v: &str) -> &str {
    v.split(|c: char| c.is_whitespace() || c == '(').find(|w| !w.is_empty()).unwrap_or_default()
}

/// `class.subject.detail`, class 2, 4 or 5.
fn is_status(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..].iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpt(recipient: &str, action: &str, status: Option<&str>, diagnostic: Option<&str>) -> RecipientStatus {
        RecipientStatus {
            recipient: recipient.into(),
            action: action.into(),
            status: status.map(String::from),
            diagnostic: diagnostic.map(String::from),
            remote_mta: None,
        }
    }

    #[test]
    fn reports_as_sent_and_as_found() {
        // (body, reporting MTA, recipients)
        type Case = (&'static str, Option<&'static str>, Vec<RecipientStatus>);
        let cases: Vec<Case> = vec![
            // Postfix, CRLF.
            (
                "Reporting-MTA: dns; mx.b.test\r\nX-Postfix-Queue-ID: 4F2\r\nArrival-Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n\r\n\
                 Final-Recipient: rfc822; bob@b.test\r\nOriginal-Recipient: rfc822;bob@b.test\r\nAction: failed\r\n\
                 Status: 5.1.1\r\nRemote-MTA: dns; inbox.b.test\r\nDiagnostic-Code: smtp; 550 5.1.1 <bob@b.test>: no such user\r\n",
                Some("mx.b.test"),
                vec![RecipientStatus {
                    remote_mta: Some("inbox.b.test".into()),
                    ..rcpt("bob@b.test", "failed", Some("5.1.1"), Some("smtp; 550 5.1.1 <bob@b.test>: no such user"))
                }],
            ),
            // Two recipients, LF only, folded diagnostic, odd case, comments, angle brackets.
            (
                "reporting-mta: dns;mx.b.test\n\nFINAL-RECIPIENT: RFC822; <Carol@B.test>\naction: Failed\n\
                 status: 5.2.2 (mailbox full)\ndiagnostic-code: smtp; 552 5.2.2 over quota\n  for carol\n\n\n\
                 Final-Recipient: rfc822; dave@b.test (Dave)\nAction: delayed\nStatus: 4.4.1\n",
                Some("mx.b.test"),
                vec![
                    rcpt("Carol@B.test", "failed", Some("5.2.2"), Some("smtp; 552 5.2.2 over quota for carol")),
                    rcpt("dave@b.test", "delayed", Some("4.4.1"), None),
                ],
            ),
            // No per-message block; no Final-Recipient but an Original-Recipient; a bad status.
            (
                "\r\n\r\nOriginal-Recipient: rfc822; erin@b.test\r\nAction: failed\r\nStatus: five\r\n",
                None,
                vec![rcpt("erin@b.test", "failed", None, None)],
            ),
            // RFC 6533 (UTF-8 address type), and a block with no recipient dropped.
            (
                "Reporting-MTA: dns; mx.b.test\n\nAction: failed\nStatus: 5.1.1\n\n\
                 Final-Recipient: utf-8; jörg@bücher.test\nAction: failed\nStatus: 5.1.1\n",
                Some("mx.b.test"),
                vec![rcpt("jörg@bücher.test", "failed", Some("5.1.1"), None)],
            ),
            // Not a delivery status at all: prose, a lone line, nothing.
            ("Your message could not be delivered.\nSorry.\n", None, vec![]),
            ("Final-Recipient:\nAction: failed\n", None, vec![]),
            ("", None, vec![]),
        ];
        for (body, mta, recipients) in cases {
            let got = parse(body);
            assert_eq!(got.reporting_mta.as_deref(), mta, "{body:?}");
            assert_eq!(got.recipients, recipients, "{body:?}");
        }
    }

    #[test]
    fn permanence_and_the_reply_in_the_diagnostic() {
        let failed = rcpt("a@b.test", "failed", Some("5.1.1"), Some("smtp; 550 5.1.1 no such user"));
        assert!(failed.failed_permanently());
        assert_eq!((failed.reply_code(), failed.diagnostic_text()), (Some(550), "550 5.1.1 no such user"));
        assert!(rcpt("a@b.test", "failed", None, None).failed_permanently(), "failed without a status is final");
        assert!(!rcpt("a@b.test", "failed", Some("4.4.7"), None).failed_permanently());
        assert!(!rcpt("a@b.test", "delayed", Some("5.1.1"), None).failed_permanently());
        assert!(!rcpt("a@b.test", "delivered", Some("2.0.0"), None).failed_permanently());
        let x = rcpt("a@b.test", "failed", Some("5.0.0"), Some("X-Postfix; host said: no"));
        assert_eq!((x.reply_code(), x.diagnostic_text()), (None, "host said: no"));
        let bare = rcpt("a@b.test", "failed", None, Some("550 user unknown"));
        assert_eq!((bare.reply_code(), bare.diagnostic_text()), (None, "550 user unknown"));
    }
}
