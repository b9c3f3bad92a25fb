//! The spool bucket and the job queue as the relay sees them, behind two small traits so the
//! handler can be tested without AWS; [`S3Spool`] and [`SqsQueue`] are the real ones.
//!
//! Every error here is an infrastructure failure: the handler reports the SQS record as a
//! batch item failure so SQS redelivers it (and the DLQ catches it if it never succeeds).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use shared::Job;
use shared::keys::record_key;

/// An S3 or SQS call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} {target}: {reason}")]
pub struct StoreError {
    pub op: &'static str,
    pub target: String,
    pub reason: String,
}

impl StoreError {
    fn new(op: &'static str, target: &str, reason: impl std::fmt::Display) -> Self {
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

/// [`Spool`] on S3.
pub struct S3Spool {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
}

fn sdk_error<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    aws_sdk_s3::error::DisplayErrorContext(e).to_string()
}

#[async_trait]
impl Spool for S3Spool {
    async fn get_message(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StoreError::new("GetObject", key, sdk_error(&e)))?;
        let body = out.body.collect().await.map_err(|e| StoreError::new("GetObject", key, e))?;
        Ok(body.into_bytes().to_vec())
    }

    async fn record_exists(&self, queue_id: &str, recipient: &str) -> Result<bool, StoreError> {
        let key = record_key(queue_id, recipient);
        match self.client.head_object().bucket(&self.bucket).key(&key).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
            Err(e) => Err(StoreError::new("HeadObject", &key, sdk_error(&e))),
        }
    }

    async fn put_record_if_absent(&self, queue_id: &str, recipient: &str, body: &str) -> Result<bool, StoreError> {
        let key = record_key(queue_id, recipient);
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .if_none_match("*")
            .content_type("text/plain")
            .body(ByteStream::from(body.as_bytes().to_vec()))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            // 412: it exists; 409: a concurrent conditional write of the same key is in flight.
            Err(e) if e.raw_response().is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) => Ok(false),
            Err(e) => Err(StoreError::new("PutObject", &key, sdk_error(&e))),
        }
    }

    async fn put_message(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("message/rfc822")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::new("PutObject", key, sdk_error(&e)))
    }
}

/// [`Queue`] on SQS.
pub struct SqsQueue {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, job: &Job, delay: Duration) -> Result<(), StoreError> {
        let secs = delay.as_secs().min(crate::backoff::MAX_SQS_DELAY) as i32;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(job.to_json())
            .delay_seconds(secs)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::new("SendMessage", &job.queue_id, aws_sdk_sqs::error::DisplayErrorContext(&e)))
    }
}
