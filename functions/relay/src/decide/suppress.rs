//! The suppression list in a job's life, decided without I/O: which pending recipients are not
//! attempted and the verdict they get ([`split`], [`join`]), and which failures of an attempt put
//! a recipient on the list ([`additions`]).
//!
//! A listed recipient is not attempted: it bounces at once with `5.7.1` and a diagnostic saying it
//! is on the suppression list (why, and since when), so the sender gets one DSN listing it with
//! any other bounce of the attempt, and the delivery event is a `Bounce` with `bounceSubType`
//! `OnAccountSuppressionList` (`Verdict::suppressed`). The status is a refusal of ours, not the
//! remote's `5.1.1`: a complaint-suppressed mailbox may well exist. A DSN to a listed address is
//! dropped like any bounce that bounces (never bounce a bounce).
//!
//! Additions come only from a remote's own reply (our DNS verdicts — NXDOMAIN, null MX — may be a
//! resolver's mistake) that says the mailbox does not exist
//! ([`shared::suppression::classify`]), and only as `RELAY_SUPPRESSION` allows.

use chrono::DateTime;
use shared::suppression::classify::mailbox_does_not_exist;
use shared::suppression::{AutoSuppress, Entry, Reason, key};
use shared::{Job, RcptState};

use crate::vocab::{Attempt, Class, Verdict};

/// The status of a recipient not attempted because it is listed.
pub const STATUS: &str = "5.7.1";

/// The verdict of a listed recipient.
pub fn verdict(entry: &Entry) -> Verdict {
    let since = DateTime::from_timestamp(entry.since, 0).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default();
    let detail =
        format!("recipient is on the suppression list ({} since {since}); not attempted", entry.reason.as_str());
    Verdict { suppressed: true, ..Verdict::failed(STATUS, detail) }
}

/// The job to deliver — `job` without its listed recipients — and the verdicts of those.
pub fn split(job: &Job, listed: &[Entry]) -> (Job, Vec<(String, Verdict)>) {
    let mut deliver = job.clone();
    let mut suppressed = Vec::new();
    if listed.is_empty() {
        return (deliver, suppressed);
    }
    for r in deliver.recipients.iter_mut().filter(|r| r.state == RcptState::Pending) {
        if let Some(e) = listed.iter().find(|e| key(&e.address) == key(&r.address)) {
            suppressed.push((r.address.clone(), verdict(e)));
            r.state = RcptState::Failed;
        }
    }
    (deliver, suppressed)
}

/// The attempt of the job as a whole: the delivery's verdicts and the listed recipients', in the
/// job's order.
pub fn join(job: &Job, delivered: Attempt, suppressed: Vec<(String, Verdict)>) -> Attempt {
    if suppressed.is_empty() {
        return delivered;
    }
    let mut outcomes = delivered.outcomes;
    outcomes.extend(suppressed);
    let order = |a: &String| job.recipients.iter().position(|r| &r.address == a).unwrap_or(usize::MAX);
    outcomes.sort_by_key(|(a, _)| order(a));
    Attempt { outcomes, ..delivered }
}

/// The recipients `attempt` shows to have no mailbox, as entries to add (when `auto` adds bounces).
pub fn additions(job: &Job, attempt: &Attempt, auto: AutoSuppress, now: i64) -> Vec<Entry> {
    if !auto.adds(Reason::Bounce) {
        return Vec::new();
    }
    attempt
        .outcomes
        .iter()
        .filter(|(_, v)| v.class == Class::Failed && !v.suppressed)
        .filter_map(|(address, v)| {
            let reply = v.reply.as_ref()?;
            let text = reply.lines.join(" ");
            mailbox_does_not_exist(Some(reply.code), reply.status.as_deref(), &text).then(|| Entry {
                address: address.clone(),
                reason: Reason::Bounce,
                since: now,
                queue_id: Some(job.queue_id.clone()),
                diagnostic: v.text(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use shared::Reply;

    use super::*;
    use crate::testkit;

    const T0: i64 = 1_800_000_000;

    fn entry(address: &str, reason: Reason) -> Entry {
        Entry { address: address.into(), reason, since: T0, queue_id: None, diagnostic: String::new() }
    }

    fn reply(code: u16, text: &str) -> Verdict {
        Verdict::from_reply(Reply::parse(code, text))
    }

    #[test]
    fn listed_recipients_are_taken_out_and_bounce_in_the_jobs_order() {
        let mut job = testkit::job("b.test", &["a@b.test", "Bob@B.test", "done@b.test", "c@b.test"], T0);
        job.recipients[2].state = RcptState::Delivered;
        let listed = [entry("bob@b.test", Reason::Complaint), entry("done@b.test", Reason::Bounce)];
        let (deliver, suppressed) = split(&job, &listed);
        let pending: Vec<&str> = deliver.pending().map(|r| r.address.as_str()).collect();
        assert_eq!(pending, ["a@b.test", "c@b.test"]);
        let [(address, v)] = &suppressed[..] else { panic!("{suppressed:?}") };
        assert_eq!(address, "Bob@B.test", "as the job has it; a finished recipient is left alone");
        assert!(v.suppressed && v.class == Class::Failed && v.status == STATUS && v.reply.is_none());
        assert_eq!(v.text(), "5.7.1 recipient is on the suppression list (complaint since 2027-01-15); not attempted");

        let delivered = Attempt {
            outcomes: vec![("a@b.test".into(), reply(250, "ok")), ("c@b.test".into(), reply(250, "ok"))],
            ..Attempt::default()
        };
        let all = join(&job, delivered, suppressed);
        let order: Vec<&str> = all.outcomes.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(order, ["a@b.test", "Bob@B.test", "c@b.test"]);

        let (same, none) = split(&job, &[]);
        assert_eq!((same, none.len()), (job, 0));
    }

    #[test]
    fn only_a_remotes_no_such_mailbox_adds() {
        let job = testkit::job("b.test", &["a@b.test"], T0);
        // (verdict, added)
        let cases = [
            (reply(550, "5.1.1 no such user"), true),
            (reply(550, "Recipient address rejected: User unknown in local recipient table"), true),
            (reply(550, "5.7.1 rejected as spam"), false),
            (reply(552, "5.2.2 mailbox full"), false),
            (reply(450, "4.1.1 user unknown, try later"), false),
            (reply(250, "2.0.0 ok"), false),
            (Verdict::failed("5.1.2", "b.test does not exist (NXDOMAIN)"), false),
            (Verdict::failed("5.1.10", "b.test accepts no mail (null MX)"), false),
            (verdict(&entry("a@b.test", Reason::Bounce)), false),
        ];
        for (v, added) in cases {
            let text = v.text();
            let a = Attempt { outcomes: vec![("a@b.test".into(), v)], ..Attempt::default() };
            let got = additions(&job, &a, AutoSuppress::default(), T0 + 5);
            assert_eq!(got.len(), usize::from(added), "{text}");
            if added {
                assert_eq!(
                    got[0],
                    Entry {
                        address: "a@b.test".into(),
                        reason: Reason::Bounce,
                        since: T0 + 5,
                        queue_id: Some(testkit::QID.into()),
                        diagnostic: text,
                    }
                );
            }
            let off = AutoSuppress { bounce: false, complaint: true };
            assert!(additions(&job, &a, off, T0).is_empty(), "RELAY_SUPPRESSION without bounce");
        }
    }
}
