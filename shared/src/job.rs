//! The relay job: the small JSON document that travels through SQS.
//!
//! One job exists per (message, destination domain). It points at the spooled message in S3 —
//! the body never travels in SQS — and carries the envelope plus per-recipient delivery state,
//! so a retry re-sends only to the recipients still pending. The document is versioned by `v`;
//! a reader rejects versions it does not know instead of guessing.
//!
//! Version 2 added `job_id` (each job, and each retry of it, has its own id: the relay's state
//! object names the one job allowed to proceed, see `shared::state`) and `jobs` (how many jobs
//! the message has, so the only job of a message may mark completion by deleting it). Both have
//! serde defaults, so version-1 jobs still in flight during an upgrade are read too: they get a
//! stable synthetic id ([`Job::id`]) and count as sharing their message.

use serde::{Deserialize, Serialize};

/// The schema version this build writes.
pub const JOB_SCHEMA_VERSION: u32 = 2;

/// The oldest schema version this build still reads (v1: no `job_id`, no `jobs`).
pub const MIN_JOB_SCHEMA_VERSION: u32 = 1;

/// A unit of relay work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Schema version ([`JOB_SCHEMA_VERSION`]).
    pub v: u32,
    /// Queue id of the message (the id in the ingress's `250 ... queued as` reply).
    pub queue_id: String,
    /// S3 key of the message bytes.
    pub message_key: String,
    /// Envelope sender; empty for the null sender `<>` (bounces).
    pub sender: String,
    /// Destination domain shared by every recipient of this job (lower case).
    pub domain: String,
    /// Recipients with their own state.
    pub recipients: Vec<Recipient>,
    /// Delivery attempts made so far.
    #[serde(default)]
    pub attempt: u32,
    /// When the ingress accepted the message (Unix seconds): the start of the queue lifetime.
    pub first_seen: i64,
    /// Do not attempt delivery before this time (Unix seconds).
    #[serde(default)]
    pub not_before: i64,
    /// RFC 3461 envelope parameters (RET, ENVID).
    #[serde(default)]
    pub dsn: DsnParams,
    /// Body type declared at MAIL (RFC 6152 / RFC 3030).
    #[serde(default)]
    pub body: BodyType,
    /// The transaction used SMTPUTF8 (RFC 6531).
    #[serde(default)]
    pub smtputf8: bool,
    /// Message size in bytes, as stored.
    #[serde(default)]
    pub size: u64,
    /// A "delayed" DSN was already sent for this job.
    #[serde(default)]
    pub delay_warned: bool,
    /// Client address and name the message came from, for DSNs and logs.
    #[serde(default)]
    pub received_from: String,
    /// This job's id (a ULID); every retry job gets a new one. Empty in v1 jobs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job_id: String,
    /// How many jobs the ingress queued for this message: `1` means this job alone owns the
    /// message object (DSN jobs too); `0` means unknown (v1 jobs).
    #[serde(default)]
    pub jobs: u32,
    /// The message is mail of our own: it came from a client allowed to relay (authenticated,
    /// or in `RELAY_NETWORKS`), or the relay wrote it (a DSN). Only such mail is DKIM-signed.
    /// False for what the ingress accepted from anyone for `RELAY_DOMAINS` (inbound mail), so a
    /// forged `From:` of a signing domain never gets our signature; false in older jobs too.
    #[serde(default)]
    pub trusted: bool,
}

/// One envelope recipient and what has happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The forward-path, without angle brackets.
    pub address: String,
    /// RFC 3461 ORCPT as given (`rfc822;addr`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    /// RFC 3461 NOTIFY; `None` means the default (failure and delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    #[serde(default)]
    pub state: RcptState,
    /// The last reply or error seen for this recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply: Option<String>,
}

impl Recipient {
    /// A pending recipient with no DSN parameters.
    pub fn new(address: impl Into<String>) -> Self {
        Self { address: address.into(), orcpt: None, notify: None, state: RcptState::Pending, last_reply: None }
    }
}

/// Per-recipient delivery state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RcptState {
    #[default]
    Pending,
    Delivered,
    Failed,
}

/// RFC 3461 NOTIFY. `never` excludes the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    #[serde(default)]
    pub success: bool,
    #[serde(default)]
    pub failure: bool,
    #[serde(default)]
    pub delay: bool,
}

impl Notify {
    /// NOTIFY=NEVER.
    pub const NEVER: Notify = Notify { success: false, failure: false, delay: false };
    /// What applies when NOTIFY was not given: failure and delay.
    pub const DEFAULT: Notify = Notify { success: false, failure: true, delay: true };

    /// The effective value of an optional NOTIFY.
    pub fn effective(n: Option<Notify>) -> Notify {
        n.unwrap_or(Self::DEFAULT)
    }

    /// The ESMTP parameter value (`SUCCESS,FAILURE`, `NEVER`, ...).
    pub fn to_param(self) -> String {
        let mut parts = Vec::new();
        if self.success {
            parts.push("SUCCESS");
        }
        if self.failure {
            parts.push("FAILURE");
        }
        if self.delay {
            parts.push("DELAY");
        }
        if parts.is_empty() { "NEVER".to_string() } else { parts.join(",") }
    }
}

/// RFC 3461 RET: what a failure DSN returns of the original message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ret {
    Full,
    Hdrs,
}

/// RFC 3461 envelope parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DsnParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// ENVID, xtext-decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
}

/// Body type of the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// Why a job document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job is not valid JSON for this schema: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "job schema version {0} is not supported (this build reads {MIN_JOB_SCHEMA_VERSION} to {JOB_SCHEMA_VERSION})"
    )]
    Version(u32),
    #[error("job has no recipients")]
    NoRecipients,
}

impl Job {
    /// A first-attempt, due-now job for the message stored under `queue_id`'s key (7-bit, no DSN
    /// parameters, no SMTPUTF8 until the caller says otherwise with struct-update syntax).
    pub fn first_attempt(
        queue_id: &str,
        sender: impl Into<String>,
        domain: impl Into<String>,
        recipients: Vec<Recipient>,
        size: u64,
        now: i64,
    ) -> Job {
        Job {
            v: JOB_SCHEMA_VERSION,
            queue_id: queue_id.to_string(),
            message_key: crate::keys::message_key(queue_id),
            sender: sender.into(),
            domain: domain.into(),
            recipients,
            attempt: 0,
            first_seen: now,
            not_before: now,
            dsn: DsnParams::default(),
            body: BodyType::SevenBit,
            smtputf8: false,
            size,
            delay_warned: false,
            received_from: String::new(),
            job_id: crate::queue_id::new_queue_id(),
            jobs: 1,
            trusted: false,
        }
    }

    /// Parse and validate a job document.
    pub fn from_json(s: &str) -> Result<Job, JobError> {
        let job: Job = serde_json::from_str(s)?;
        if !(MIN_JOB_SCHEMA_VERSION..=JOB_SCHEMA_VERSION).contains(&job.v) {
            return Err(JobError::Version(job.v));
        }
        if job.recipients.is_empty() {
            return Err(JobError::NoRecipients);
        }
        Ok(job)
    }

    /// Serialise for SQS.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Job always serialises")
    }

    /// Recipients still waiting for delivery.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients.iter().filter(|r| r.state == RcptState::Pending)
    }

    /// The job's id; for a v1 job (no `job_id`), one derived from what distinguishes its
    /// successive jobs, so every copy of one v1 job gets the same id.
    pub fn id(&self) -> String {
        if self.job_id.is_empty() { format!("v1-{}-{}", self.attempt, self.not_before) } else { self.job_id.clone() }
    }

    /// True when no other job shares this job's message object, so completing this job may
    /// delete it.
    pub fn is_sole(&self) -> bool {
        self.jobs == 1
    }

    /// True when the sender is the null reverse-path (this message is itself a bounce).
    pub fn is_bounce(&self) -> bool {
        self.sender.is_empty()
    }
}

/// The domain part of an address, lower-cased (`""` when there is none).
pub fn domain_of(address: &str) -> String {
    address.rsplit_once('@').map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Job {
        Job {
            v: JOB_SCHEMA_VERSION,
            queue_id: "01JD0000000000000000000000".into(),
            message_key: "spool/01JD0000000000000000000000.eml".into(),
            sender: "alice@example.org".into(),
            domain: "example.net".into(),
            recipients: vec![Recipient {
                notify: Some(Notify { success: true, failure: true, delay: false }),
                orcpt: Some("rfc822;bob@example.net".into()),
                ..Recipient::new("bob@example.net")
            }],
            attempt: 0,
            first_seen: 1_700_000_000,
            not_before: 0,
            dsn: DsnParams { ret: Some(Ret::Hdrs), envid: Some("abc".into()) },
            body: BodyType::EightBitMime,
            smtputf8: false,
            size: 42,
            delay_warned: false,
            received_from: "client.example.org [192.0.2.1]".into(),
            job_id: "01JD0000000000000000000001".into(),
            jobs: 2,
            trusted: true,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let job = sample();
        assert_eq!(Job::from_json(&job.to_json()).unwrap(), job);
    }

    #[test]
    fn rejects_unknown_version_and_garbage() {
        let mut job = sample();
        job.v = 99;
        assert!(matches!(Job::from_json(&job.to_json()), Err(JobError::Version(99))));
        assert!(matches!(Job::from_json("{\"v\":2}"), Err(JobError::Json(_))));
        let mut empty = sample();
        empty.recipients.clear();
        assert!(matches!(Job::from_json(&empty.to_json()), Err(JobError::NoRecipients)));
    }

    #[test]
    fn v1_jobs_are_read_with_a_stable_synthetic_id_and_an_unknown_job_count() {
        let v1 = r#"{"v":1,"queue_id":"01JD0000000000000000000000","message_key":"spool/x.eml","sender":"a@b",
            "domain":"c.test","recipients":[{"address":"d@c.test"}],"attempt":2,"first_seen":5,"not_before":9}"#;
        let job = Job::from_json(v1).unwrap();
        assert_eq!((job.job_id.as_str(), job.jobs), ("", 0));
        assert_eq!(job.id(), "v1-2-9");
        assert_eq!(Job::from_json(v1).unwrap().id(), job.id(), "copies agree");
        assert!(!job.is_sole(), "a v1 job may share its message");
        let fresh = Job::first_attempt("Q", "a@b", "c.test", vec![Recipient::new("d@c.test")], 1, 5);
        assert_eq!((fresh.v, fresh.jobs), (JOB_SCHEMA_VERSION, 1));
        assert_eq!(fresh.id(), fresh.job_id);
        assert!(crate::queue_id::is_queue_id(&fresh.job_id));
    }

    #[test]
    fn notify_params() {
        assert_eq!(Notify::NEVER.to_param(), "NEVER");
        assert_eq!(Notify::DEFAULT.to_param(), "FAILURE,DELAY");
        assert_eq!(Notify::effective(None), Notify::DEFAULT);
    }

    #[test]
    fn domains() {
        assert_eq!(domain_of("Bob@Example.NET."), "example.net");
        assert_eq!(domain_of("postmaster"), "");
        assert_eq!(domain_of("\"a@b\"@c.org"), "c.org");
    }
}
