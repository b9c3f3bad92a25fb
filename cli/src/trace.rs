//! What `trace` shows, put together without I/O from the message object's metadata, its
//! deletion (a sole job's completion marker) and the job states; and whether a message is still
//! pending (for the age of the oldest one in `queue`).

use serde::Serialize;
use shared::job::domain_of;
use shared::state::{Delivery, JobState};

use crate::spool::MessageInfo;

/// One recipient as trace shows it (the contract's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RcptView {
    pub address: String,
    pub state: Delivery,
    pub attempts: u32,
    pub last_reply: Option<String>,
    pub remote: Option<String>,
    /// RFC 3339.
    pub next_attempt: Option<String>,
    /// RFC 3339.
    pub updated: Option<String>,
}

/// `relayctl trace --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trace {
    pub queue_id: String,
    pub sender: Option<String>,
    pub size: Option<u64>,
    /// RFC 3339.
    pub received: Option<String>,
    pub recipients: Vec<RcptView>,
    /// Recipients the message's metadata had no room for (not listed unless a state has them).
    pub recipients_omitted: usize,
    /// When the message was deleted on completion (RFC 3339), if it was.
    pub completed: Option<String>,
}

/// Unix seconds as RFC 3339 UTC.
pub fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn view(r: &shared::state::RcptStatus) -> RcptView {
    RcptView {
        address: r.address.clone(),
        state: r.state,
        attempts: r.attempts,
        last_reply: r.last_reply.clone(),
        remote: r.remote.clone(),
        next_attempt: r.next_attempt.map(rfc3339),
        updated: Some(rfc3339(r.updated)),
    }
}

/// The trace of `queue_id` from what was found (`None` when neither a message nor a state).
pub fn trace(queue_id: &str, info: Option<&MessageInfo>, states: &[JobState]) -> Option<Trace> {
    if info.is_none() && states.is_empty() {
        return None;
    }
    let meta = info.and_then(|i| i.meta.as_ref());
    let first = states.first();
    let completed = info.and_then(|i| i.deleted_at);
    let sole = meta.is_some_and(|m| m.jobs == 1);
    let mut recipients: Vec<RcptView> = Vec::new();
    for address in meta.map(|m| m.recipients.as_slice()).unwrap_or_default() {
        let domain = domain_of(address);
        let state = states.iter().find(|s| s.domain == domain);
        let found = state.and_then(|s| s.recipient(address));
        recipients.push(match (found, completed) {
            (Some(r), _) => view(r),
            // A sole job completed on its first attempt writes no state; its delete is the record.
            (None, Some(at)) if sole && state.is_none() => RcptView {
                address: address.clone(),
                state: Delivery::Sent,
                attempts: 1,
                last_reply: None,
                remote: None,
                next_attempt: None,
                updated: Some(rfc3339(at)),
            },
            _ => RcptView {
                address: address.clone(),
                state: Delivery::Queued,
                attempts: 0,
                last_reply: None,
                remote: None,
                next_attempt: None,
                updated: None,
            },
        });
    }
    for s in states {
        for r in &s.recipients {
            if !recipients.iter().any(|v| v.address == r.address) {
                recipients.push(view(r));
            }
        }
    }
    Some(Trace {
        queue_id: queue_id.to_string(),
        sender: meta.map(|m| m.sender.clone()).or_else(|| first.map(|s| s.sender.clone())),
        size: info.map(|i| i.size).or_else(|| first.map(|s| s.size)),
        received: meta.map(|m| m.received).or_else(|| first.map(|s| s.first_seen)).map(rfc3339),
        recipients,
        recipients_omitted: meta.map(|m| m.omitted).unwrap_or_default(),
        completed: completed.map(rfc3339),
    })
}

/// Whether a message still present in the spool has work left: some job without a state (not
/// attempted yet, or its first attempt in flight) or a state that expects a job.
pub fn pending(jobs: Option<u32>, states: &[JobState]) -> bool {
    let done = states.iter().filter(|s| s.job_id.is_none()).count();
    match jobs {
        Some(n) if n > 0 => done < n as usize,
        // No metadata (an object from before it existed): pending unless every state is done.
        _ => states.is_empty() || done < states.len(),
    }
}

#[cfg(test)]
mod tests {
    use shared::meta::MessageMeta;
    use shared::{Job, Recipient};

    use super::*;

    fn info(rcpts: &[&str], jobs: u32, deleted_at: Option<i64>) -> MessageInfo {
        let meta = MessageMeta {
            sender: "alice@a.test".into(),
            received: 1000,
            size: 10,
            jobs,
            recipients: rcpts.iter().map(|r| r.to_string()).collect(),
            omitted: 1,
        };
        crate::spool::tests_support::info(Some(meta), 10, deleted_at)
    }

    fn state(domain: &str, rcpts: &[(&str, Delivery)], job_id: Option<&str>) -> JobState {
        let job = Job::first_attempt(
            "Q",
            "alice@a.test",
            domain,
            rcpts.iter().map(|(a, _)| Recipient::new(*a)).collect(),
            10,
            1000,
        );
        let mut s = JobState::untouched(&job, 1100);
        for (r, (_, d)) in s.recipients.iter_mut().zip(rcpts) {
            r.state = *d;
            r.attempts = 2;
        }
        s.job_id = job_id.map(String::from);
        s
    }

    #[test]
    fn untouched_messages_show_queued_recipients_from_metadata() {
        let t = trace("Q", Some(&info(&["b@b.test", "c@c.test"], 2, None)), &[]).unwrap();
        assert_eq!(
            t.recipients.iter().map(|r| (r.address.as_str(), r.state)).collect::<Vec<_>>(),
            [("b@b.test", Delivery::Queued), ("c@c.test", Delivery::Queued)]
        );
        assert_eq!(
            (t.sender.as_deref(), t.size, t.received.as_deref()),
            (Some("alice@a.test"), Some(10), Some("1970-01-01T00:16:40Z"))
        );
        assert_eq!(t.recipients_omitted, 1, "trace says the list was truncated");
    }

    #[test]
    fn states_and_the_completion_marker_decide_the_rest() {
        let i = info(&["b@b.test"], 1, Some(1200));
        let t = trace("Q", Some(&i), &[]).unwrap();
        assert_eq!(
            (t.recipients[0].state, t.recipients[0].attempts),
            (Delivery::Sent, 1),
            "deleted sole message = sent"
        );
        assert_eq!(t.completed.as_deref(), Some("1970-01-01T00:20:00Z"));

        let s = state("b.test", &[("b@b.test", Delivery::Deferred), ("x@b.test", Delivery::Bounced)], Some("J"));
        let t = trace("Q", Some(&info(&["b@b.test"], 1, None)), std::slice::from_ref(&s)).unwrap();
        assert_eq!(
            t.recipients.iter().map(|r| (r.address.as_str(), r.state, r.attempts)).collect::<Vec<_>>(),
            [("b@b.test", Delivery::Deferred, 2), ("x@b.test", Delivery::Bounced, 2)],
            "states add what metadata omitted"
        );
        assert!(trace("Q", None, &[]).is_none());
        assert_eq!(
            trace("Q", None, &[s]).unwrap().sender.as_deref(),
            Some("alice@a.test"),
            "state basics without metadata"
        );
    }

    #[test]
    fn pending_messages() {
        let done = state("b.test", &[("b@b.test", Delivery::Sent)], None);
        let waiting = state("c.test", &[("c@c.test", Delivery::Deferred)], Some("J"));
        assert!(pending(Some(1), &[]), "untouched or in flight");
        assert!(!pending(Some(1), std::slice::from_ref(&done)));
        assert!(pending(Some(2), std::slice::from_ref(&done)), "the other job has not run");
        assert!(pending(Some(2), &[done.clone(), waiting.clone()]));
        assert!(!pending(None, std::slice::from_ref(&done)) && pending(None, &[]) && pending(None, &[waiting]));
    }
}
