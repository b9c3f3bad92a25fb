//! What to do after an attempt — pure: job + verdicts + now + configuration in, actions out.
//!
//! The handler executes a [`Plan`] in a fixed order (records of sent recipients, DSNs, records
//! of bounced recipients, the retry job) so that a crash or a failed S3/SQS call part-way leads
//! SQS to redeliver a job whose finished recipients are skipped by their records.

use std::time::Duration;

use crate::config::RelayConfig;
use shared::{Job, Notify, Recipient};

use crate::decide::backoff::{retry_delay, sqs_delay};
use crate::vocab::{Attempt, Class, Remote, Verdict};

/// RFC 3464 `Action` of a report; one report carries one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    /// Accepted by a next hop that does not do DSN (RFC 3461 §5.2.2.1 "relayed").
    Relayed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Relayed => "relayed",
        }
    }
}

/// One recipient's line in a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLine {
    pub address: String,
    pub orcpt: Option<String>,
    pub verdict: Verdict,
}

/// One DSN to send to the envelope sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub action: Action,
    pub lines: Vec<ReportLine>,
    pub remote: Option<Remote>,
    /// For delayed reports: when the relay gives up (Unix seconds).
    pub retry_until: Option<i64>,
}

/// One `status=` log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub recipient: String,
    pub status: &'static str,
    pub reply: String,
    /// Seconds until the next attempt, for deferred recipients.
    pub delay: Option<u64>,
}

/// The actions after one attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Recipients the next hop accepted: record at once.
    pub sent: Vec<String>,
    /// Recipients given up on: record after their report is queued.
    pub bounced: Vec<String>,
    pub reports: Vec<Report>,
    /// The job with the deferred recipients, and its SQS delay.
    pub retry: Option<(Job, Duration)>,
    pub log: Vec<LogLine>,
}

/// When a job arrives before its `not_before`: the delay to re-enqueue it with, unchanged.
pub fn wait(job: &Job, now: i64) -> Option<Duration> {
    (job.not_before > now).then(|| sqs_delay(job.not_before - now))
}

/// Decide what follows `attempt` for `job` at `now`.
///
/// A throttled attempt (the destination asked us to slow down) is not counted: the retry keeps the
/// job's attempt number and waits out the destination's hold (plus a second) instead of the job's
/// schedule.
/// The queue lifetime still applies.
pub fn plan(job: &Job, attempt: &Attempt, now: i64, cfg: &RelayConfig) -> Plan {
    let (attempt_no, next) = match attempt.throttled {
        // Whole seconds, rounded up, and one more: the retry must not arrive while the hold lasts.
        Some(hold) => (job.attempt, Duration::from_secs(hold.as_millis().div_ceil(1000) as u64 + 1)),
        None => (job.attempt + 1, retry_delay(&cfg.retry_schedule, job.attempt + 1)),
    };
    let age = now - job.first_seen;
    let expired = age >= cfg.queue_lifetime.as_secs() as i64;
    let warn = !expired && !job.delay_warned && cfg.delay_warning.is_some_and(|w| age >= w.as_secs() as i64);
    let remote_dsn = attempt.remote.as_ref().is_some_and(|r| r.dsn);

    let mut plan = Plan::default();
    let (mut failed, mut delayed, mut relayed) = (Vec::new(), Vec::new(), Vec::new());
    let mut deferred: Vec<Recipient> = Vec::new();
    for (address, verdict) in &attempt.outcomes {
        let Some(rcpt) = job.recipients.iter().find(|r| &r.address == address) else { continue };
        let notify = Notify::effective(rcpt.notify);
        let line = ReportLine { address: address.clone(), orcpt: rcpt.orcpt.clone(), verdict: verdict.clone() };
        let (status, delay) = match verdict.class {
            Class::Sent => {
                plan.sent.push(address.clone());
                // A DSN-capable next hop got NOTIFY and now owns the success report.
                if notify.success && !remote_dsn {
                    relayed.push(line);
                }
                ("sent", None)
            }
            Class::Failed | Class::Deferred if verdict.class == Class::Failed || expired => {
                plan.bounced.push(address.clone());
                if notify.failure {
                    failed.push(line);
                }
                ("bounced", None)
            }
            Class::Failed | Class::Deferred => {
                deferred.push(Recipient { last_reply: Some(verdict.text()), ..rcpt.clone() });
                if warn && notify.delay {
                    delayed.push(line);
                }
                ("deferred", Some(next.as_secs()))
            }
        };
        let mut reply = verdict.text();
        if status == "bounced" && verdict.class == Class::Deferred {
            reply.push_str(" (queue lifetime expired)");
        }
        plan.log.push(LogLine { recipient: address.clone(), status, reply, delay });
    }

    if !deferred.is_empty() {
        let retry = Job {
            recipients: deferred,
            attempt: attempt_no,
            not_before: now + next.as_secs() as i64,
            delay_warned: job.delay_warned || warn,
            ..job.clone()
        };
        plan.retry = Some((retry, sqs_delay(next.as_secs() as i64)));
    }
    // Never report to the null sender: that is how bounce loops start.
    if !job.is_bounce() {
        let retry_until = Some(job.first_seen + cfg.queue_lifetime.as_secs() as i64);
        for (action, lines, until) in
            [(Action::Failed, failed, None), (Action::Delayed, delayed, retry_until), (Action::Relayed, relayed, None)]
        {
            if !lines.is_empty() {
                plan.reports.push(Report { action, lines, remote: attempt.remote.clone(), retry_until: until });
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use shared::Reply;

    use super::*;
    use crate::testkit;

    const T0: i64 = 1_800_000_000;

    fn cfg(pairs: &[(&str, &str)]) -> RelayConfig {
        let schedule =
            [("RELAY_RETRY_SCHEDULE", "1m,10m,1h"), ("RELAY_QUEUE_LIFETIME", "5d"), ("RELAY_DELAY_WARNING", "4h")];
        testkit::config(&[&schedule[..], pairs].concat())
    }

    fn job(rcpts: &[&str]) -> Job {
        testkit::job("b.test", rcpts, T0)
    }

    fn reply(code: u16, text: &str) -> Verdict {
        Verdict::from_reply(Reply::parse(code, text))
    }

    fn attempt(job: &Job, verdicts: &[Verdict], dsn: bool) -> Attempt {
        Attempt {
            outcomes: job.recipients.iter().map(|r| r.address.clone()).zip(verdicts.iter().cloned()).collect(),
            remote: Some(Remote { host: "mx.b.test".into(), tls: true, dsn, ..Remote::default() }),
            throttled: None,
        }
    }

    #[test]
    fn mixed_outcomes_split_into_record_retry_and_bounce() {
        let j = job(&["ok@b.test", "later@b.test", "no@b.test"]);
        let a = attempt(&j, &[reply(250, "2.0.0 ok"), reply(450, "4.2.0 busy"), reply(550, "5.1.1 unknown")], false);
        let p = plan(&j, &a, T0 + 5, &cfg(&[]));
        assert_eq!(p.sent, ["ok@b.test"]);
        assert_eq!(p.bounced, ["no@b.test"]);
        let (retry, delay) = p.retry.unwrap();
        assert_eq!(retry.recipients.iter().map(|r| r.address.as_str()).collect::<Vec<_>>(), ["later@b.test"]);
        assert_eq!(retry.recipients[0].last_reply.as_deref(), Some("450 4.2.0 busy"));
        assert_eq!((retry.attempt, retry.not_before, delay), (1, T0 + 65, Duration::from_secs(60)));
        assert_eq!(p.reports.len(), 1);
        assert_eq!(p.reports[0].action, Action::Failed);
        assert_eq!(p.reports[0].lines[0].verdict.status, "5.1.1");
        let statuses: Vec<_> = p.log.iter().map(|l| (l.status, l.delay)).collect();
        assert_eq!(statuses, [("sent", None), ("deferred", Some(60)), ("bounced", None)]);
    }

    #[test]
    fn backoff_follows_the_schedule_and_chains_past_sqs_limit() {
        // (attempts so far, wanted wait, wanted SQS delay)
        let cases = [(0, 60, 60), (1, 600, 600), (2, 3600, 900), (7, 3600, 900)];
        for (attempts, wait_s, sqs_s) in cases {
            let mut j = job(&["x@b.test"]);
            j.attempt = attempts;
            let p = plan(&j, &attempt(&j, &[reply(421, "busy")], false), T0 + 10, &cfg(&[]));
            let (r, d) = p.retry.unwrap();
            assert_eq!((r.not_before - (T0 + 10), d.as_secs()), (wait_s, sqs_s), "after {attempts}");
        }
    }

    #[test]
    fn early_jobs_wait_again_without_delivery() {
        let mut j = job(&["x@b.test"]);
        let cases = [(0, None), (T0 - 1, None), (T0, None), (T0 + 30, Some(30)), (T0 + 3600, Some(900))];
        for (not_before, want) in cases {
            j.not_before = not_before;
            assert_eq!(wait(&j, T0), want.map(Duration::from_secs), "{not_before}");
        }
    }

    #[test]
    fn expiry_turns_deferral_into_bounce() {
        let j = job(&["x@b.test"]);
        let p = plan(&j, &attempt(&j, &[reply(451, "4.3.0 later")], false), T0 + 5 * 86400, &cfg(&[]));
        assert!(p.retry.is_none());
        assert_eq!(p.bounced, ["x@b.test"]);
        assert_eq!(p.reports[0].action, Action::Failed);
        assert_eq!(p.reports[0].lines[0].verdict.status, "4.3.0");
        assert!(p.log[0].reply.contains("expired"));
    }

    #[test]
    fn delay_warning_once() {
        let j = job(&["x@b.test"]);
        let c = cfg(&[]);
        let a = attempt(&j, &[reply(451, "later")], false);
        assert!(plan(&j, &a, T0 + 3 * 3600, &c).reports.is_empty(), "too young");
        let p = plan(&j, &a, T0 + 5 * 3600, &c);
        assert_eq!(p.reports[0].action, Action::Delayed);
        assert_eq!(p.reports[0].retry_until, Some(T0 + 5 * 86400));
        let warned = p.retry.unwrap().0;
        assert!(warned.delay_warned);
        assert!(plan(&warned, &a, T0 + 6 * 3600, &c).reports.is_empty(), "only once");
        assert!(plan(&j, &a, T0 + 5 * 3600, &cfg(&[("RELAY_DELAY_WARNING", "0")])).reports.is_empty(), "off");
    }

    #[test]
    fn notify_decides_which_reports() {
        let mut j = job(&["s@b.test", "f@b.test", "d@b.test"]);
        let all = Notify { success: true, failure: true, delay: true };
        for r in &mut j.recipients {
            r.notify = Some(all);
        }
        let verdicts = [reply(250, "ok"), reply(550, "no"), reply(450, "later")];
        let at = T0 + 5 * 3600;
        let actions = |p: &Plan| p.reports.iter().map(|r| r.action).collect::<Vec<_>>();
        let c = cfg(&[]);
        assert_eq!(
            actions(&plan(&j, &attempt(&j, &verdicts, false), at, &c)),
            [Action::Failed, Action::Delayed, Action::Relayed]
        );
        // The remote speaks DSN and got NOTIFY=SUCCESS: it reports success, not us.
        assert_eq!(actions(&plan(&j, &attempt(&j, &verdicts, true), at, &c)), [Action::Failed, Action::Delayed]);
        for r in &mut j.recipients {
            r.notify = Some(Notify::NEVER);
        }
        let p = plan(&j, &attempt(&j, &verdicts, false), at, &c);
        assert!(p.reports.is_empty());
        assert_eq!(p.bounced, ["f@b.test"], "NEVER still ends the recipient");
    }

    #[test]
    fn null_sender_never_gets_reports() {
        let mut j = job(&["x@b.test"]);
        j.sender = String::new();
        let p = plan(&j, &attempt(&j, &[reply(550, "no")], false), T0, &cfg(&[]));
        assert!(p.reports.is_empty());
        assert_eq!(p.bounced, ["x@b.test"]);
    }

    #[test]
    fn already_finished_recipients_are_not_in_the_retry() {
        let mut j = job(&["done@b.test", "x@b.test"]);
        j.recipients[0].state = shared::RcptState::Delivered;
        let a = Attempt { outcomes: vec![("x@b.test".into(), reply(421, "later"))], ..Attempt::default() };
        let (r, _) = plan(&j, &a, T0, &cfg(&[])).retry.unwrap();
        assert_eq!(r.recipients.len(), 1);
        assert_eq!(r.recipients[0].address, "x@b.test");
    }

    #[test]
    fn a_throttled_attempt_waits_for_the_destination_and_is_not_counted() {
        // (attempts so far, the destination's hold, age, wanted: retry attempt, wait, SQS delay | bounced)
        let cases = [
            (0, 30_000, 5, Some((0, 31, 31))),
            (0, 29_001, 5, Some((0, 31, 31))), // rounded up, then a second more
            (3, 1_800_000, 5, Some((3, 1801, 900))),
            (1, 0, 5, Some((1, 1, 1))),   // a hold about to end still waits a second
            (2, 60_000, 5 * 86400, None), // the queue lifetime still applies
        ];
        for (attempts, hold_ms, age, want) in cases {
            let mut j = job(&["x@b.test", "y@b.test"]);
            j.attempt = attempts;
            let verdicts = [reply(421, "4.7.28 rate limited"), Verdict::deferred("4.7.28", "held")];
            let a = Attempt { throttled: Some(Duration::from_millis(hold_ms)), ..attempt(&j, &verdicts, false) };
            let p = plan(&j, &a, T0 + age, &cfg(&[]));
            match want {
                Some((n, wait_s, sqs_s)) => {
                    let (r, d) = p.retry.expect("a retry");
                    assert_eq!(
                        (r.attempt, r.not_before - (T0 + age), d.as_secs()),
                        (n, wait_s, sqs_s),
                        "{attempts} {hold_ms}"
                    );
                    assert_eq!(r.recipients.len(), 2);
                    assert!(p.bounced.is_empty() && p.reports.is_empty());
                    assert!(p.log.iter().all(|l| l.status == "deferred" && l.delay == Some(wait_s as u64)));
                }
                None => assert_eq!((p.retry, p.bounced.len()), (None, 2)),
            }
        }
    }
}
