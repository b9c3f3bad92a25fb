//! The state object after an attempt, and the merge when a conditional write finds that someone
//! wrote first (pure). The handler writes what [`after_attempt`] returns, sends what [`sends`]
//! lists, and on a lost race re-reads and writes [`merge`]'s result instead.
//!
//! The free path: the first attempt of a job that owns its message alone, every recipient sent,
//! nothing to report — no state at all; deleting the message marks completion.

use std::time::Duration;

use shared::Job;
use shared::job::JOB_SCHEMA_VERSION;
use shared::state::{Delivery, JobState, RcptStatus};

use crate::decide::backoff::sqs_delay;
use crate::decide::plan::Plan;
use crate::vocab::Attempt;

/// What an attempt leaves in the store, DSN messages aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects {
    /// The state to write; `None` on the free path.
    pub state: Option<JobState>,
    /// The retry job (its new id), when one was planned.
    pub retry: Option<Job>,
}

/// True when `job` completes its message: it owns it alone and nothing is pending in the state
/// it wrote (`None`: the free path wrote none). Deleting the message is then the marker.
pub fn completes(job: &Job, written: Option<&JobState>) -> bool {
    job.is_sole() && written.is_none_or(|s| s.job_id.is_none())
}

/// `name [ip:port]` of where an attempt ended.
fn remote_text(attempt: &Attempt) -> Option<String> {
    let r = attempt.remote.as_ref()?;
    Some(match r.addr {
        Some(a) => format!("{} [{a}]", r.host),
        None => r.host.clone(),
    })
}

/// The state after `attempt` of `job` (which read `prev`), `reports` being the DSN jobs the
/// plan's reports became and `retry_id` the id for the retry job.
pub fn after_attempt(
    prev: Option<&JobState>,
    job: &Job,
    attempt: &Attempt,
    plan: &Plan,
    reports: &[Job],
    retry_id: &str,
    now: i64,
) -> Effects {
    let retry =
        plan.retry.as_ref().map(|(r, _)| Job { v: JOB_SCHEMA_VERSION, job_id: retry_id.to_string(), ..r.clone() });
    let free = prev.is_none() && job.is_sole() && retry.is_none() && plan.bounced.is_empty() && reports.is_empty();
    if free {
        return Effects { state: None, retry };
    }
    let mut state = prev.cloned().unwrap_or_else(|| JobState::untouched(job, now));
    let remote = remote_text(attempt);
    for line in &plan.log {
        let idx = match state.recipients.iter().position(|r| r.address == line.recipient) {
            Some(i) => i,
            None => {
                let new = RcptStatus::queued(line.recipient.clone(), now);
                state.recipients.push(new);
                state.recipients.len() - 1
            }
        };
        let r = &mut state.recipients[idx];
        // A throttled attempt (the destination asked us to slow down) is not counted, as in the plan.
        r.attempts += u32::from(attempt.throttled.is_none());
        r.last_reply = Some(line.reply.clone());
        r.remote = remote.clone();
        r.updated = now;
        (r.state, r.next_attempt) = match line.status {
            "sent" => (Delivery::Sent, None),
            "bounced" => (Delivery::Bounced, None),
            _ => (Delivery::Deferred, retry.as_ref().map(|j| j.not_before)),
        };
    }
    state.job_id = retry.as_ref().map(|j| j.job_id.clone());
    state.retry = retry.clone();
    state.reports = reports.to_vec();
    state.written_by = job.id();
    state.updated = now;
    Effects { state: Some(state), retry }
}

/// The jobs to enqueue after `state` was written by the job whose retry id is `ours`: its DSN
/// jobs at once, and the retry job only if the state still names it (a cancel or a retry
/// brought forward may have replaced it).
pub fn sends(state: &JobState, ours: Option<&str>, now: i64) -> Vec<(Job, Duration)> {
    let mut out: Vec<(Job, Duration)> = state.reports.iter().map(|j| (j.clone(), Duration::ZERO)).collect();
    if let Some(retry) = state.retry.as_ref().filter(|_| ours.is_some() && state.job_id.as_deref() == ours) {
        out.push((retry.clone(), sqs_delay(retry.not_before - now)));
    }
    out
}

/// What wins for one recipient when two writers disagree: a delivery is a fact (sent stays
/// sent, even over a cancel that came too late), then a bounce (its DSN is on its way), then a
/// cancel (it stays cancelled: no retry); otherwise the side that decides what is pending
/// (`theirs` when we were fenced).
fn pick(ours: &RcptStatus, theirs: &RcptStatus, fenced: bool) -> RcptStatus {
    use Delivery::*;
    match (ours.state, theirs.state) {
        (_, Sent) => theirs.clone(),
        (Sent, _) => ours.clone(),
        (Bounced, _) => ours.clone(),
        (_, Bounced | Cancelled) => theirs.clone(),
        _ if fenced => theirs.clone(),
        _ => ours.clone(),
    }
}

/// The state to write when our conditional write of `ours` failed because `theirs` was written
/// meanwhile. We were fenced when `theirs` no longer expects our job (`our_id`): its pending job
/// (or none) stands and our retry is not sent; otherwise our retry stands, minus recipients that
/// became final. Our reports are ours to send either way.
pub fn merge(ours: &JobState, theirs: &JobState, our_id: &str) -> JobState {
    let fenced = theirs.job_id.as_deref() != Some(our_id);
    let mut merged = theirs.clone();
    for o in &ours.recipients {
        match merged.recipients.iter_mut().find(|t| t.address == o.address) {
            Some(t) => *t = pick(o, t, fenced),
            None => merged.recipients.push(o.clone()),
        }
    }
    if !fenced {
        let still = |a: &str| merged.recipients.iter().any(|r| r.address == a && !r.state.is_final());
        let retry = ours.retry.clone().map(|mut j| {
            j.recipients.retain(|r| still(&r.address));
            j
        });
        merged.retry = retry.filter(|j| !j.recipients.is_empty());
        merged.job_id = merged.retry.as_ref().map(|j| j.job_id.clone());
        for r in merged.recipients.iter_mut().filter(|r| r.state == Delivery::Deferred) {
            r.next_attempt = merged.retry.as_ref().map(|j| j.not_before);
        }
    }
    merged.reports = ours.reports.clone();
    merged.written_by = ours.written_by.clone();
    merged.updated = ours.updated;
    merged
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
