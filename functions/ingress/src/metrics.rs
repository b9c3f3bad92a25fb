//! The ingress's metrics (names are a contract) and what each counts.
//!
//! | metric | counts |
//! |---|---|
//! | `Accepted` | messages queued: one per `250 … queued as <id>` (S3 and SQS both succeeded) |
//! | `Rejected` | permanent refusals: each 5xx reply to a well-formed MAIL, RCPT, DATA or BDAT command or to the end of a message (a refused recipient counts once, a refused message once) |
//! | `AuthChecked` | judged messages by `Result`, their DMARC result: `pass`, `fail`, `none` (no policy, or a broken one), `temperror` (DNS trouble or the lookups' deadline) |
//! | `Blocklisted` | connections from clients whose DNS blocklist weights reached `INGRESS_DNSBL_THRESHOLD` (each of their recipients is also a `Rejected`); a client refused for talking before the greeting counts as one `Rejected` |
//! | `SpamRejected` | messages rspamd judged `reject` (`554 5.7.1` at the end of DATA; also a `Rejected`) |
//! | `FilterUnavailable` | messages rspamd did not judge in time (down, slow, unreadable answer): delivered unchecked or `451 4.7.1` per `INGRESS_RSPAMD_FAILURE` |
//! | `AsyncBounces` | recipients a report to the feedback domain says failed permanently after their server accepted the message (one per `Bounce` event the ingress publishes) |
//! | `Complaints` | spam complaints (ARF reports) about a message of ours that name its recipient (one per `Complaint` event) |
//! | `AuthLockouts` | client addresses locked out of AUTH: the `INGRESS_AUTH_LOCKOUT`-th failed AUTH of a window (every AUTH from the address then gets `454 4.7.0` until the window has passed) |
//! | `TempFailed` | temporary refusals: each 4xx reply to the same (storage failure `451 4.3.0`, memory `451 4.3.1`, too many recipients `452 4.5.3`, rate limit `451 4.7.1`, …), plus each connection turned away at a connection limit (`421 4.7.0`) |
//!
//! Not counted: replies to syntax errors and other commands (a client's bug, not mail refused),
//! and the `421`s that end a session for its own sake (idle timeout, too many errors, shutdown).
//! The session counts into a [`Tally`] (pure); the connection shell adds it to the [`Metrics`].

use shared::metrics::{Metric, Metrics};

pub const ACCEPTED: &str = "Accepted";
pub const REJECTED: &str = "Rejected";
pub const TEMP_FAILED: &str = "TempFailed";
pub const AUTH_CHECKED: &str = "AuthChecked";
pub const BLOCKLISTED: &str = "Blocklisted";
pub const SPAM_REJECTED: &str = "SpamRejected";
pub const FILTER_UNAVAILABLE: &str = "FilterUnavailable";
pub const ASYNC_BOUNCES: &str = "AsyncBounces";
pub const COMPLAINTS: &str = "Complaints";
pub const AUTH_LOCKOUTS: &str = "AuthLockouts";

/// Every metric the ingress emits.
pub static METRICS: &[Metric] = &[
    Metric::counter(ACCEPTED),
    Metric::counter(REJECTED),
    Metric::counter(TEMP_FAILED),
    Metric::counter_by(AUTH_CHECKED, "Result", &["pass", "fail", "none", "temperror"]),
    Metric::counter(BLOCKLISTED),
    Metric::counter(SPAM_REJECTED),
    Metric::counter(FILTER_UNAVAILABLE),
    Metric::counter(ASYNC_BOUNCES),
    Metric::counter(COMPLAINTS),
    Metric::counter(AUTH_LOCKOUTS),
];

/// The `Service` dimension of the ingress's metrics.
pub const SERVICE: &str = "ingress";

/// What a session has counted since the shell last took it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub accepted: u64,
    pub rejected: u64,
    pub temp_failed: u64,
}

impl Tally {
    /// A reply to a mail command (MAIL, RCPT, DATA, BDAT) or to the end of a message.
    pub fn reply(&mut self, code: u16) {
        match code {
            400..=499 => self.temp_failed += 1,
            500..=599 => self.rejected += 1,
            _ => {}
        }
    }

    /// Add to `metrics`.
    pub fn record(self, metrics: &Metrics) {
        metrics.count(ACCEPTED, self.accepted);
        metrics.count(REJECTED, self.rejected);
        metrics.count(TEMP_FAILED, self.temp_failed);
    }
}
