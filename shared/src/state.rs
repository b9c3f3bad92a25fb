//! The per-job state object, `state/<queue id>/<domain>.json`: what the relay leaves in S3 so
//! `relayctl trace` can show every recipient (SQS cannot list delayed messages), and the fence
//! that keeps redelivered and superseded jobs from delivering twice.
//!
//! It is written only when something other than a first-attempt completion happens — a
//! deferral, a bounce, a report, a cancel, a retry brought forward, the completion of a job
//! that shares its message — so the common path costs no PUT. Writes are conditional
//! (`If-None-Match: *` or `If-Match: <etag>`), so two writers never overwrite each other
//! blindly: the loser re-reads and merges.
//!
//! * `job_id` names the one job allowed to proceed next (`None`: nothing is pending). A job with
//!   another id finds itself superseded and is dropped.
//! * `written_by` names the job that wrote this version: a redelivered copy of that job (it was
//!   processed but not acknowledged) only redoes the tail, never the deliveries.
//! * `retry` is the job `job_id` names, as enqueued; `reports` the DSN jobs queued with this
//!   write. Both are sent again by a redo.
//!
//! Versioned by `v` like the job.

use serde::{Deserialize, Serialize};

use crate::Job;

/// The schema version this build writes and reads.
pub const STATE_SCHEMA_VERSION: u32 = 1;

/// A job's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    /// Schema version ([`STATE_SCHEMA_VERSION`]).
    pub v: u32,
    pub queue_id: String,
    /// The job's destination domain (the key's last part).
    pub domain: String,
    /// Envelope sender; empty for `<>`.
    pub sender: String,
    /// When the ingress accepted the message (Unix seconds).
    pub first_seen: i64,
    /// Message size in bytes.
    pub size: u64,
    /// Every recipient of the job, final or not.
    pub recipients: Vec<RcptStatus>,
    /// The job expected next; `None` when nothing is pending.
    pub job_id: Option<String>,
    /// The job (or `relayctl-<id>`) that wrote this version.
    pub written_by: String,
    /// The job `job_id` names, when one was enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Job>,
    /// DSN jobs queued together with this version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<Job>,
    /// When this version was written (Unix seconds).
    pub updated: i64,
}

/// A recipient's state, as `relayctl trace` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Not attempted yet.
    Queued,
    /// Attempted, to be retried at `next_attempt`.
    Deferred,
    /// Accepted by the next hop.
    Sent,
    /// Given up on (a DSN went to the sender, NOTIFY permitting).
    Bounced,
    /// Stopped by `relayctl cancel`.
    Cancelled,
}

impl Delivery {
    /// No further attempt will be made.
    pub fn is_final(self) -> bool {
        matches!(self, Delivery::Sent | Delivery::Bounced | Delivery::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Queued => "queued",
            Delivery::Deferred => "deferred",
            Delivery::Sent => "sent",
            Delivery::Bounced => "bounced",
            Delivery::Cancelled => "cancelled",
        }
    }
}

/// One recipient in a [`JobState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptStatus {
    pub address: String,
    pub state: Delivery,
    /// Delivery attempts made for this recipient.
    #[serde(default)]
    pub attempts: u32,
    /// The last reply or error seen.
    #[serde(default)]
    pub last_reply: Option<String>,
    /// The host the last attempt reached (`name [ip:port]`).
    #[serde(default)]
    pub remote: Option<String>,
    /// When the next attempt is due (Unix seconds), for deferred recipients.
    #[serde(default)]
    pub next_attempt: Option<i64>,
    /// When this recipient's state last changed (Unix seconds).
    pub updated: i64,
}

impl RcptStatus {
    /// A recipient nobody has attempted yet.
    pub fn queued(address: impl Into<String>, now: i64) -> Self {
        RcptStatus {
            address: address.into(),
            state: Delivery::Queued,
            attempts: 0,
            last_reply: None,
            remote: None,
            next_attempt: None,
            updated: now,
        }
    }
}

/// Why a state document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state is not valid JSON for this schema: {0}")]
    Json(#[from] serde_json::Error),
    #[error("state schema version {0} is not supported (this build reads {STATE_SCHEMA_VERSION})")]
    Version(u32),
}

impl JobState {
    /// The state of a job nobody has touched: its pending recipients queued (those the job
    /// itself marks done — v1 legacy records — as sent or bounced), `job` expected.
    pub fn untouched(job: &Job, now: i64) -> JobState {
        JobState {
            v: STATE_SCHEMA_VERSION,
            queue_id: job.queue_id.clone(),
            domain: job.domain.clone(),
            sender: job.sender.clone(),
            first_seen: job.first_seen,
            size: job.size,
            recipients: job
                .recipients
                .iter()
                .map(|r| RcptStatus {
                    state: match r.state {
                        crate::RcptState::Pending => Delivery::Queued,
                        crate::RcptState::Delivered => Delivery::Sent,
                        crate::RcptState::Failed => Delivery::Bounced,
                    },
                    last_reply: r.last_reply.clone(),
                    ..RcptStatus::queued(r.address.clone(), now)
                })
                .collect(),
            job_id: Some(job.id()),
            written_by: String::new(),
            retry: None,
            reports: Vec::new(),
            updated: now,
        }
    }

    pub fn from_json(s: &str) -> Result<JobState, StateError> {
        let state: JobState = serde_json::from_str(s)?;
        if state.v != STATE_SCHEMA_VERSION {
            return Err(StateError::Version(state.v));
        }
        Ok(state)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a JobState always serialises")
    }

    /// The recipient with this address.
    pub fn recipient(&self, address: &str) -> Option<&RcptStatus> {
        self.recipients.iter().find(|r| r.address == address)
    }

    /// The recipient with this address, mutably.
    pub fn recipient_mut(&mut self, address: &str) -> Option<&mut RcptStatus> {
        self.recipients.iter_mut().find(|r| r.address == address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Recipient;

    #[test]
    fn round_trips_and_rejects_unknown_versions() {
        let job = Job::first_attempt("Q", "a@b.test", "c.test", vec![Recipient::new("d@c.test")], 7, 100);
        let mut s = JobState::untouched(&job, 100);
        s.retry = Some(job.clone());
        assert_eq!(JobState::from_json(&s.to_json()).unwrap(), s);
        assert_eq!(s.job_id.as_deref(), Some(job.job_id.as_str()));
        assert_eq!(s.recipient("d@c.test").unwrap().state, Delivery::Queued);
        s.v = 9;
        assert!(matches!(JobState::from_json(&s.to_json()), Err(StateError::Version(9))));
        assert!(JobState::from_json("{}").is_err());
    }

    #[test]
    fn final_states() {
        let finals: Vec<_> =
            [Delivery::Queued, Delivery::Deferred, Delivery::Sent, Delivery::Bounced, Delivery::Cancelled]
                .into_iter()
                .filter(|d| d.is_final())
                .map(Delivery::as_str)
                .collect();
        assert_eq!(finals, ["sent", "bounced", "cancelled"]);
    }
}
