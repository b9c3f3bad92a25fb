//! Where the feedback domain meets the session: which recipients a transaction may take once it
//! carries a report, and the smaller size limit of a report (see `policy::feedback` for what
//! the domain accepts and why). The message itself goes to the `feedback` stage at its end.

use shared::Reply;

use crate::policy::feedback::{REPORT_MAX_SIZE, Rcpt};
use crate::session::{Session, replies};

impl Session {
    /// Decide on a forward-path: the feedback domain's intake first, then the relay policy.
    /// A transaction carries one report or other mail, never both.
    pub(crate) fn check_recipient(&self, address: &str, trusted: bool) -> Result<String, Reply> {
        let recipients = self.txn.as_ref().map_or(0, |t| t.env.recipients.len());
        let report_txn = self.carries_report();
        let address = match self.cfg.feedback.as_ref().map(|f| f.check(address, self.peer)) {
            Some(Rcpt::Report(a)) if recipients == 0 => return Ok(a),
            Some(Rcpt::Report(_)) => return Err(replies::report_alone()),
            Some(Rcpt::Refused(r)) => return Err(r),
            Some(Rcpt::Postmaster) => "",
            Some(Rcpt::Elsewhere) | None => address,
        };
        if report_txn {
            return Err(replies::report_alone());
        }
        self.cfg.policy.check_rcpt(address, trusted, self.tables.recipients.as_deref())
    }

    /// The transaction's recipient is a report recipient of the feedback domain.
    pub(crate) fn carries_report(&self) -> bool {
        let (Some(f), Some(t)) = (&self.cfg.feedback, &self.txn) else { return false };
        t.env.recipients.first().is_some_and(|r| f.is_report(&r.address))
    }

    /// The size limit of the message being started.
    pub(crate) fn size_limit(&self) -> u64 {
        if self.carries_report() { self.cfg.max_message_size.min(REPORT_MAX_SIZE) } else { self.cfg.max_message_size }
    }
}
