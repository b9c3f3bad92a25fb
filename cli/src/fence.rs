//! What `cancel` and `retry` write into a job's state (pure). Both move the state's `job_id`, so
//! the job that was expected — already in SQS, perhaps in a chain of delays — finds itself
//! superseded when it arrives and delivers nothing.
//!
//! `retry` re-issues the pending job under a fresh id due now, instead of sending a second copy
//! with the same id: two copies of one id would both be due and could run side by side.

use shared::Job;
use shared::job::domain_of;
use shared::meta::MessageMeta;
use shared::state::{Delivery, JobState, RcptStatus, STATE_SCHEMA_VERSION};

/// The state of a job nobody has attempted yet, from the message's metadata.
pub fn from_meta(queue_id: &str, domain: &str, meta: &MessageMeta, now: i64) -> JobState {
    let recipients =
        meta.recipients.iter().filter(|a| domain_of(a) == domain).map(|a| RcptStatus::queued(a.clone(), now)).collect();
    JobState {
        v: STATE_SCHEMA_VERSION,
        queue_id: queue_id.to_string(),
        domain: domain.to_string(),
        sender: meta.sender.clone(),
        first_seen: meta.received,
        size: meta.size,
        recipients,
        job_id: None,
        written_by: String::new(),
        retry: None,
        reports: Vec::new(),
        updated: now,
    }
}

/// `state` with every pending recipient cancelled and no job expected; `None` when nothing was
/// pending. Returns the cancelled addresses too.
pub fn cancel(state: &JobState, by: &str, now: i64) -> Option<(JobState, Vec<String>)> {
    let mut next = state.clone();
    let mut cancelled = Vec::new();
    for r in next.recipients.iter_mut().filter(|r| !r.state.is_final()) {
        r.state = Delivery::Cancelled;
        r.next_attempt = None;
        r.updated = now;
        cancelled.push(r.address.clone());
    }
    if cancelled.is_empty() && state.job_id.is_none() {
        return None;
    }
    (next.job_id, next.retry, next.reports, next.written_by, next.updated) =
        (None, None, Vec::new(), by.to_string(), now);
    Some((next, cancelled))
}

/// `state` expecting a copy of its pending retry job under `fresh_id`, due `now`; `None` when no
/// retry is pending. Returns the new job and the recipients it will attempt.
pub fn bring_forward(state: &JobState, by: &str, fresh_id: &str, now: i64) -> Option<(JobState, Job, Vec<String>)> {
    state.job_id.as_ref()?;
    let retry = state.retry.as_ref()?;
    let job = Job { job_id: fresh_id.to_string(), not_before: now, ..retry.clone() };
    let mut next = state.clone();
    let addresses: Vec<String> = job.pending().map(|r| r.address.clone()).collect();
    for r in next.recipients.iter_mut().filter(|r| addresses.contains(&r.address) && !r.state.is_final()) {
        r.next_attempt = Some(now);
    }
    (next.job_id, next.retry, next.reports, next.written_by, next.updated) =
        (Some(fresh_id.to_string()), Some(job.clone()), Vec::new(), by.to_string(), now);
    Some((next, job, addresses))
}

#[cfg(test)]
mod tests {
    use relay::decide::fence::{Check, check};
    use shared::Recipient;

    use super::*;

    fn deferred() -> (JobState, Job) {
        let first = Job::first_attempt(
            "Q",
            "a@a.test",
            "b.test",
            vec![Recipient::new("s@b.test"), Recipient::new("d@b.test")],
            9,
            100,
        );
        let retry = Job {
            job_id: "J2".into(),
            attempt: 1,
            not_before: 5000,
            recipients: vec![Recipient::new("d@b.test")],
            ..first.clone()
        };
        let mut s = JobState::untouched(&first, 100);
        s.recipients[0].state = Delivery::Sent;
        s.recipients[1].state = Delivery::Deferred;
        s.recipients[1].next_attempt = Some(5000);
        (s.job_id, s.retry, s.written_by) = (Some("J2".into()), Some(retry.clone()), first.job_id.clone());
        (s, retry)
    }

    #[test]
    fn cancel_fences_every_later_job() {
        let (s, retry) = deferred();
        let (c, addrs) = cancel(&s, "relayctl-C", 200).unwrap();
        assert_eq!(addrs, ["d@b.test"]);
        assert_eq!(c.recipients.iter().map(|r| r.state).collect::<Vec<_>>(), [Delivery::Sent, Delivery::Cancelled]);
        assert_eq!((c.job_id.clone(), c.retry.clone()), (None, None));
        assert_eq!(check(Some(&c), &retry.job_id), Check::Superseded, "the queued retry delivers nothing");
        assert!(cancel(&c, "relayctl-C2", 300).is_none(), "nothing left to cancel");
    }

    #[test]
    fn bring_forward_re_issues_the_retry_under_a_fresh_id() {
        let (s, retry) = deferred();
        let (next, job, addrs) = bring_forward(&s, "relayctl-R", "J3", 200).unwrap();
        assert_eq!((addrs, job.not_before, job.attempt), (vec!["d@b.test".to_string()], 200, 1));
        assert_eq!(check(Some(&next), "J3"), Check::Proceed);
        assert_eq!(check(Some(&next), &retry.job_id), Check::Superseded, "the old copy, when due, is dropped");
        assert_eq!(next.recipient("d@b.test").unwrap().next_attempt, Some(200));
        let (done, _) = cancel(&s, "x", 1).unwrap();
        assert!(bring_forward(&done, "relayctl-R", "J4", 200).is_none());
    }

    #[test]
    fn a_state_from_metadata_lists_that_domains_recipients() {
        let meta = MessageMeta {
            sender: "a@a.test".into(),
            received: 7,
            size: 3,
            jobs: 2,
            recipients: vec!["x@b.test".into(), "y@c.test".into()],
            omitted: 0,
        };
        let s = from_meta("Q", "c.test", &meta, 9);
        assert_eq!((s.recipients.len(), s.recipients[0].address.as_str(), s.first_seen), (1, "y@c.test", 7));
    }
}
