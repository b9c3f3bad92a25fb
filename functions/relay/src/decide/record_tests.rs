//! The state after an attempt and the merge after a lost conditional write.

use shared::Reply;
use shared::state::{Delivery, JobState};

use super::*;
use crate::decide::plan;
use crate::testkit;
use crate::vocab::{Remote, Verdict};

const T0: i64 = 1_800_000_000;

fn attempt(job: &Job, replies: &[(u16, &str)]) -> Attempt {
    Attempt {
        outcomes: job
            .pending()
            .map(|r| r.address.clone())
            .zip(replies.iter().map(|(c, t)| Verdict::from_reply(Reply::parse(*c, t))))
            .collect(),
        remote: Some(Remote {
            host: "mx.b.test".into(),
            addr: Some("192.0.2.1:25".parse().unwrap()),
            tls: true,
            ..Remote::default()
        }),
        throttled: None,
    }
}

fn effects(prev: Option<&JobState>, job: &Job, replies: &[(u16, &str)], reports: &[Job]) -> Effects {
    let a = attempt(job, replies);
    let cfg = testkit::config(&[("RELAY_RETRY_SCHEDULE", "1m")]);
    let p = plan::plan(job, &a, T0, &cfg);
    after_attempt(prev, job, &a, &p, reports, "RETRY", T0)
}

#[test]
fn the_free_path_writes_nothing() {
    let j = testkit::job("b.test", &["x@b.test", "y@b.test"], T0);
    let e = effects(None, &j, &[(250, "ok"), (251, "ok")], &[]);
    assert_eq!((e.state, e.retry), (None, None));
    assert!(completes(&j, None));
    // Anything else writes: shared message, a deferral, a bounce, a report, a prior state.
    let shared = Job { jobs: 3, ..j.clone() };
    assert!(effects(None, &shared, &[(250, "ok"), (250, "ok")], &[]).state.is_some());
    assert!(!completes(&shared, None));
    assert!(effects(None, &j, &[(250, "ok"), (450, "later")], &[]).state.is_some());
    assert!(effects(None, &j, &[(250, "ok"), (550, "no")], &[]).state.is_some());
    assert!(effects(None, &j, &[(250, "ok"), (250, "ok")], std::slice::from_ref(&j)).state.is_some());
    let prev = JobState::untouched(&j, T0 - 60);
    assert!(effects(Some(&prev), &j, &[(250, "ok"), (250, "ok")], &[]).state.is_some());
}

#[test]
fn the_written_state_carries_every_recipient_and_names_the_retry() {
    let j = testkit::job("b.test", &["s@b.test", "d@b.test", "b@b.test"], T0);
    let e = effects(None, &j, &[(250, "2.0.0 ok"), (451, "4.3.0 later"), (550, "5.1.1 no")], &[]);
    let s = e.state.unwrap();
    let retry = e.retry.unwrap();
    assert_eq!((retry.job_id.as_str(), retry.v, retry.attempt), ("RETRY", shared::job::JOB_SCHEMA_VERSION, 1));
    assert_eq!((s.job_id.as_deref(), s.written_by.as_str()), (Some("RETRY"), j.job_id.as_str()));
    assert_eq!(s.retry.as_ref(), Some(&retry));
    let got: Vec<_> =
        s.recipients.iter().map(|r| (r.state, r.attempts, r.next_attempt, r.last_reply.clone().unwrap())).collect();
    assert_eq!(
        got,
        [
            (Delivery::Sent, 1, None, "250 2.0.0 ok".to_string()),
            (Delivery::Deferred, 1, Some(T0 + 60), "451 4.3.0 later".to_string()),
            (Delivery::Bounced, 1, None, "550 5.1.1 no".to_string()),
        ]
    );
    assert!(s.recipients.iter().all(|r| r.remote.as_deref() == Some("mx.b.test [192.0.2.1:25]") && r.updated == T0));
    assert_eq!(sends(&s, Some("RETRY"), T0).len(), 1);
    assert!(sends(&s, Some("OTHER"), T0).is_empty(), "a retry the state does not name is not sent");

    // The second attempt updates the deferred recipient and keeps the others as they were.
    let mut again = retry.clone();
    again.job_id = "RETRY".into();
    let e2 = after_attempt(
        Some(&s),
        &again,
        &attempt(&again, &[(250, "ok")]),
        &plan::plan(&again, &attempt(&again, &[(250, "ok")]), T0 + 61, &testkit::config(&[])),
        &[],
        "R2",
        T0 + 61,
    );
    let s2 = e2.state.unwrap();
    assert_eq!(
        s2.recipients.iter().map(|r| (r.state, r.attempts)).collect::<Vec<_>>(),
        [(Delivery::Sent, 1), (Delivery::Sent, 2), (Delivery::Bounced, 1)]
    );
    assert_eq!((s2.job_id, s2.retry, e2.retry), (None, None, None));
    assert!(completes(&again, Some(&JobState { job_id: None, ..JobState::untouched(&again, 0) })));
}

fn with(base: &JobState, states: &[Delivery], job_id: Option<&str>, by: &str) -> JobState {
    let mut s = base.clone();
    for (r, d) in s.recipients.iter_mut().zip(states) {
        r.state = *d;
    }
    (s.job_id, s.written_by) = (job_id.map(String::from), by.to_string());
    s
}

#[test]
fn merge_after_a_lost_race() {
    use Delivery::*;
    let j = testkit::job("b.test", &["a@b.test", "b@b.test", "c@b.test"], T0);
    let base = JobState::untouched(&j, T0);
    let mut ours = with(&base, &[Sent, Deferred, Bounced], Some("MINE"), "J");
    ours.retry = Some(Job { job_id: "MINE".into(), recipients: vec![shared::Recipient::new("b@b.test")], ..j.clone() });
    ours.reports = vec![j.clone()];

    // A cancel came in: the delivery stands, the cancel stands, our retry is dropped.
    let cancelled = with(&base, &[Cancelled, Cancelled, Cancelled], None, "relayctl-X");
    let m = merge(&ours, &cancelled, "J");
    assert_eq!(m.recipients.iter().map(|r| r.state).collect::<Vec<_>>(), [Sent, Cancelled, Bounced]);
    assert_eq!((m.job_id.clone(), m.retry.clone()), (None, None));
    assert_eq!((m.written_by.as_str(), m.reports.len()), ("J", 1), "our DSN is still ours to send");
    assert!(sends(&m, Some("MINE"), T0).iter().all(|(r, _)| r.job_id != "MINE"));

    // A retry brought forward: its job stands, our deliveries are recorded.
    let mut forward = with(&base, &[Deferred, Deferred, Deferred], Some("NOW"), "relayctl-R");
    forward.retry = Some(Job { job_id: "NOW".into(), ..j.clone() });
    let m = merge(&ours, &forward, "J");
    assert_eq!(m.recipients.iter().map(|r| r.state).collect::<Vec<_>>(), [Sent, Deferred, Bounced]);
    assert_eq!(m.job_id.as_deref(), Some("NOW"));

    // A write that still expects us (nothing fenced): our retry stands, minus what became final.
    let mut other = with(&base, &[Queued, Sent, Queued], Some("J"), "J-copy");
    other.updated = T0 - 5;
    let m = merge(&ours, &other, "J");
    assert_eq!(m.recipients.iter().map(|r| r.state).collect::<Vec<_>>(), [Sent, Sent, Bounced]);
    assert_eq!((m.job_id, m.retry), (None, None), "b was delivered by the other writer: nothing left to retry");
    assert_eq!(m.updated, ours.updated);
}
