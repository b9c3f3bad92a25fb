//! Whether a job may run, decided from its state object alone (pure). SQS delivers at least
//! once, `relayctl` may cancel or bring a retry forward, and a crash can leave a job processed
//! but unacknowledged; the state's `job_id` / `written_by` pair tells these apart with the one
//! GET every job starts with.

use shared::state::{Delivery, JobState};
use shared::{Job, RcptState};

/// What a job does, given the state it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// No state (a first attempt), or the state expects this job: deliver, skipping the
    /// recipients the state has final.
    Proceed,
    /// This job wrote the state but was not acknowledged (crash, failed delete, timeout): do
    /// only what follows the state write again — never the deliveries.
    Redo,
    /// A newer job, a cancel or a retry brought forward replaced this one: drop it.
    Superseded,
}

/// The check for the job `job_id` against the state it read.
pub fn check(state: Option<&JobState>, job_id: &str) -> Check {
    match state {
        None => Check::Proceed,
        Some(s) if s.job_id.as_deref() == Some(job_id) => Check::Proceed,
        Some(s) if s.written_by == job_id => Check::Redo,
        Some(_) => Check::Superseded,
    }
}

/// Mark the job's pending recipients that `state` has final as done, so only the others are
/// attempted; returns their addresses.
pub fn skip_final(job: &mut Job, state: &JobState) -> Vec<String> {
    let mut skipped = Vec::new();
    for r in job.recipients.iter_mut().filter(|r| r.state == RcptState::Pending) {
        let done = match state.recipient(&r.address).map(|s| s.state) {
            Some(Delivery::Sent) => RcptState::Delivered,
            Some(Delivery::Bounced | Delivery::Cancelled) => RcptState::Failed,
            _ => continue,
        };
        r.state = done;
        skipped.push(r.address.clone());
    }
    skipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn state(job_id: Option<&str>, written_by: &str) -> JobState {
        let job = testkit::job("b.test", &["x@b.test"], 0);
        JobState { job_id: job_id.map(String::from), written_by: written_by.into(), ..JobState::untouched(&job, 0) }
    }

    #[test]
    fn proceed_redo_or_drop() {
        let cases: &[(Option<JobState>, Check)] = &[
            (None, Check::Proceed),
            (Some(state(Some("J1"), "J0")), Check::Proceed),
            (Some(state(Some("J2"), "J1")), Check::Redo),
            (Some(state(None, "J1")), Check::Redo),
            (Some(state(Some("J3"), "J2")), Check::Superseded),
            (Some(state(None, "relayctl-C")), Check::Superseded),
            (Some(state(Some("J9"), "relayctl-R")), Check::Superseded),
        ];
        for (s, want) in cases {
            assert_eq!(check(s.as_ref(), "J1"), *want, "{s:?}");
        }
    }

    #[test]
    fn final_recipients_are_skipped_the_rest_attempted() {
        let mut job =
            testkit::job("b.test", &["sent@b.test", "bounced@b.test", "gone@b.test", "later@b.test", "new@b.test"], 0);
        let mut s = JobState::untouched(&job, 0);
        s.recipients.pop();
        for (r, d) in
            s.recipients.iter_mut().zip([Delivery::Sent, Delivery::Bounced, Delivery::Cancelled, Delivery::Deferred])
        {
            r.state = d;
        }
        assert_eq!(skip_final(&mut job, &s), ["sent@b.test", "bounced@b.test", "gone@b.test"]);
        let pending: Vec<_> = job.pending().map(|r| r.address.as_str()).collect();
        assert_eq!(pending, ["later@b.test", "new@b.test"]);
    }
}
