//! Which permanent failures put a recipient on the suppression list: those that say the mailbox
//! does not exist — nothing else. Pure, shared by the relay (a remote's reply at RCPT or after
//! DATA) and the ingress (an asynchronous bounce's `Status` and `Diagnostic-Code`).
//!
//! * **An RFC 3463 status decides when there is one**: class 5 and one of [`NO_EMAIL`] — `x.1.1`
//!   bad destination mailbox, `x.1.2` bad destination system (the domain), `x.1.3` bad mailbox
//!   syntax, `x.1.6` mailbox moved with no forwarding address, `x.1.10` null MX (RFC 7505). These
//!   are SES's `NoEmail` bounces. Not `x.1.4` (ambiguous), `x.1.5` (a success code), `x.1.7` and
//!   `x.1.8` (they are about the *sender's* address), `x.1.0` (unspecified), and never a policy
//!   block (`5.7.x`), a full mailbox (`5.2.2`), a disabled one (`5.2.1`) or anything temporary.
//! * **A bare reply code** (no enhanced status, or only the unspecific `5.0.0`): only `550`,
//!   `551` or `553` whose text says in so many words that the user is unknown ("user unknown",
//!   "no such user", "does not exist", qmail's "no mailbox here by that name", …) and does not
//!   also mention a policy (spam, block, listed, reputation, policy, …). Older servers answer
//!   unknown users this way; a bare `550` with any other text is as likely a policy refusal and
//!   is left alone.
//! * **4xx never**: a temporary failure says nothing lasting about the mailbox.

/// The `subject.detail` of the RFC 3463 statuses that mean "this address has no mailbox".
pub const NO_EMAIL: &[&str] = &["1.1", "1.2", "1.3", "1.6", "1.10"];

/// Phrases that say the user is unknown, for replies without a usable enhanced status.
const USER_UNKNOWN: &[&str] = &[
    "user unknown",
    "unknown user",
    "no such user",
    "user not found",
    "unknown recipient",
    "recipient unknown",
    "no such recipient",
    "recipient not found",
    "no such mailbox",
    "mailbox not found",
    "mailbox does not exist",
    "address does not exist",
    "user does not exist",
    "account does not exist",
    "no mailbox here by that name",
    "invalid recipient",
];

/// Words that make a refusal a policy decision whatever else it says.
const POLICY: &[&str] =
    &["spam", "block", "listed", "reputation", "policy", "denied", "rate limit", "abuse", "virus", "dmarc", "spf"];

/// A permanent failure that says the mailbox does not exist. `code` is the SMTP reply code when
/// the failure is a reply (`None` for a DSN that gives only a `Status`), `status` the RFC 3463
/// status (the reply's enhanced code, or the DSN's `Status`), `text` the reply text or the
/// diagnostic.
pub fn mailbox_does_not_exist(code: Option<u16>, status: Option<&str>, text: &str) -> bool {
    if code.is_some_and(|c| !(500..600).contains(&c)) {
        return false;
    }
    match status.map(str::trim).filter(|s| specific(s)) {
        Some(s) => match s.split_once('.') {
            Some(("5", detail)) => NO_EMAIL.contains(&detail),
            _ => false,
        },
        None => {
            let text = text.to_lowercase();
            matches!(code, None | Some(550 | 551 | 553))
                && USER_UNKNOWN.iter().any(|p| text.contains(p))
                && !POLICY.iter().any(|p| text.contains(p))
        }
    }
}

/// An RFC 3463 status that says more than "something failed" (`x.0.0`).
fn specific(status: &str) -> bool {
    let mut parts = status.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(c), Some(s), Some(d), None) => {
            let digits = |p: &str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
            digits(c) && digits(s) && digits(d) && !(s == "0" && d == "0")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_failures_suppress() {
        // (reply code, status, text, suppresses)
        let cases: &[(Option<u16>, Option<&str>, &str, bool)] = &[
            // The mailbox or the address does not exist.
            (Some(550), Some("5.1.1"), "no such user", true),
            (Some(550), Some("5.1.1"), "The email account that you tried to reach does not exist.", true),
            (Some(554), Some("5.1.2"), "Host or domain name not found", true),
            (Some(553), Some("5.1.3"), "Bad recipient address syntax", true),
            (Some(550), Some("5.1.6"), "mailbox has moved", true),
            (Some(556), Some("5.1.10"), "Recipient address has null MX", true),
            (None, Some("5.1.1"), "smtp; 550 5.1.1 user unknown", true),
            // Enhanced status of something else: not suppressed, whatever the text says.
            (Some(550), Some("5.7.1"), "user unknown", false),
            (Some(550), Some("5.7.1"), "Message rejected as spam", false),
            (Some(554), Some("5.7.26"), "Unauthenticated email is not accepted (DMARC)", false),
            (Some(552), Some("5.2.2"), "Mailbox full", false),
            (Some(550), Some("5.2.1"), "The email account that you tried to reach is disabled", false),
            (Some(550), Some("5.1.7"), "Bad sender address", false),
            (Some(550), Some("5.1.8"), "Sender domain does not exist", false),
            (Some(550), Some("5.1.4"), "Ambiguous destination mailbox", false),
            (Some(550), Some("5.1.0"), "Address rejected", false),
            (Some(554), Some("5.4.6"), "mail loops", false),
            // Temporary: never.
            (Some(450), Some("4.1.1"), "user unknown (try later)", false),
            (Some(450), None, "user unknown", false),
            (None, Some("4.1.1"), "smtp; 450 4.1.1 later", false),
            (Some(250), None, "user unknown", false),
            // A bare code: only an unmistakable "user unknown" text, with no policy word.
            (Some(550), None, "<bob@b.test>: Recipient address rejected: User unknown in local recipient table", true),
            (Some(550), None, "sorry, no mailbox here by that name. (#5.1.1)", true),
            (Some(551), None, "User not found", true),
            (Some(550), Some("5.0.0"), "No such user here", true),
            (None, Some("5.0.0"), "smtp; 550 Requested action not taken: mailbox does not exist", true),
            (Some(550), None, "Requested action not taken: mailbox unavailable", false),
            (Some(550), None, "user unknown or blocked by policy", false),
            (Some(550), None, "Service unavailable; client host blocked using zen.spamhaus.org", false),
            (Some(554), None, "no such user", false),
            (Some(550), None, "", false),
            (None, None, "", false),
            // Malformed statuses fall back to the text.
            (Some(550), Some("5.1"), "no such user", true),
            (Some(550), Some("five.one.one"), "mailbox unavailable", false),
        ];
        for (code, status, text, want) in cases {
            assert_eq!(mailbox_does_not_exist(*code, *status, text), *want, "{code:?} {status:?} {text:?}");
        }
    }
}
