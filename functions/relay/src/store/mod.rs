//! The edges a job touches: the spool bucket and the job queue as the relay sees them, behind
//! small traits so the handler can be tested without AWS (and the MTA-STS policies the route
//! stage keeps in the same bucket, [`PolicyStore`]). [`aws`] holds the real ones (S3, SQS),
//! [`memory`] the in-memory ones for tests and the engine benchmark. Delivery events leave by
//! their own edge, [`events`], which never fails a job.
//!
//! Every error here is an infrastructure failure: the handler reports the SQS record as a
//! batch item failure so SQS redelivers it (and the DLQ catches it if it never succeeds).

use std::time::Duration;

use async_trait::async_trait;
use shared::Job;

pub mod aws;
pub mod events;
pub mod memory;

pub use aws::{S3Spool, SqsQueue};
pub use events::{EventSink, SqsEvents};

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

/// Messages and delivery records in the spool bucket.
#[async_trait]
pub trait Spool: Send + Sync {
    /// The message bytes at `key`.
    async fn get_message(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// True when a delivery record exists for this recipient of this message.
    async fn record_exists(&self, queue_id: &str, recipient: &str) -> Result<bool, StoreError>;
    /// Write the record unless it exists; `Ok(false)` when it already did.
    async fn put_record_if_absent(&self, queue_id: &str, recipient: &str, body: &str) -> Result<bool, StoreError>;
    /// Store a new message (a DSN) at `key`.
    async fn put_message(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError>;
}

/// The job queue.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Enqueue `job`, invisible for `delay` (at most 900 s).
    async fn send(&self, job: &Job, delay: Duration) -> Result<(), StoreError>;
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
