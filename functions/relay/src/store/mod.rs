//! The edges a job touches: the spool bucket and the job queue as the relay sees them, behind
//! small traits so the handler can be tested without AWS (and the MTA-STS policies the route
//! stage keeps in the same bucket, [`PolicyStore`]). [`aws`] holds the real ones (S3, SQS),
//! [`memory`] the in-memory ones for tests and the engine benchmark. Delivery events leave by
//! their own edge, [`EventSink`] (`shared::events::sink`, shared with the ingress), which never
//! fails a job. The smarthost password's secret is read through [`secrets`].
//!
//! Every error here is an infrastructure failure. Before a delivery the handler reports the SQS
//! record as a batch item failure so SQS redelivers it (and the DLQ catches it if it never
//! succeeds); after one, it first retries with backoff (see `handler`).

use std::time::Duration;

use async_trait::async_trait;
use shared::Job;
use shared::meta::MessageMeta;
use shared::state::JobState;

pub mod aws;
pub mod memory;
pub mod secrets;

pub use aws::{S3Spool, SqsQueue};
pub use shared::events::{EventSink, SqsEvents};

/// An S3 or SQS call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} {target}: {reason}")]
pub struct StoreError {
    pub op: &'static str,
    pub target: String,
    pub reason: String,
}

impl StoreError {
    pub(crate) fn new(op: &'static str, target: &str, reason: impl std::fmt::Display) -> Self {
        Self { op, target: target.to_string(), reason: reason.to_string() }
    }
}

/// A state object as read, with the ETag a conditional write must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub state: JobState,
    pub etag: String,
}

/// The precondition of a state write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect<'a> {
    /// There is no state object yet (`If-None-Match: *`).
    Absent,
    /// The object is still the version read with this ETag (`If-Match`).
    Etag(&'a str),
}

/// Messages, job states and (legacy) delivery records in the spool bucket.
#[async_trait]
pub trait Spool: Send + Sync {
    /// The message bytes at `key`; `None` when there is no such object (a sole job's message
    /// is deleted when it completes).
    async fn get_message(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Store a new message (a DSN) at `key`, its envelope as metadata.
    async fn put_message(&self, key: &str, bytes: Vec<u8>, meta: &MessageMeta) -> Result<(), StoreError>;
    /// Delete the message at `key` (the completion marker of a sole job); deleting a missing
    /// object succeeds.
    async fn delete_message(&self, key: &str) -> Result<(), StoreError>;
    /// The state of the job of `queue_id` for `domain`, if one was written.
    async fn get_state(&self, queue_id: &str, domain: &str) -> Result<Option<Stored>, StoreError>;
    /// Write `state` if `expect` still holds: `Ok(Some(etag))` when written, `Ok(None)` when
    /// someone else wrote first (re-read and merge).
    async fn put_state(&self, state: &JobState, expect: Expect<'_>) -> Result<Option<String>, StoreError>;
    /// True when a legacy delivery record exists for this recipient (v1 jobs only).
    async fn record_exists(&self, queue_id: &str, recipient: &str) -> Result<bool, StoreError>;
}

/// Jobs of a batch that did not go out, by index, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    pub unsent: Vec<usize>,
    pub error: StoreError,
}

/// The job queue.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Enqueue `job`, invisible for `delay` (at most 900 s).
    async fn send(&self, job: &Job, delay: Duration) -> Result<(), StoreError>;
    /// Enqueue several jobs in as few requests as possible (SendMessageBatch, ten a call); on
    /// failure, says which did not go out so only those are sent again.
    async fn send_batch(&self, jobs: &[(Job, Duration)]) -> Result<(), BatchError>;
}

/// Cached MTA-STS policies in the spool bucket, one JSON object per domain
/// (`mta-sts/<domain>.json`), so they survive a cold start (see `route::mta_sts`).
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// The stored policy of `domain`; `None` when there is none.
    async fn get_policy(&self, domain: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Store (replace) the policy of `domain`.
    async fn put_policy(&self, domain: &str, json: Vec<u8>) -> Result<(), StoreError>;
}
