//! [`Spool`] on S3 and [`Queue`] on SQS: the production edges.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use shared::Job;
use shared::keys::{mta_sts_key, record_key, state_key};
use shared::meta::{self, MessageMeta};
use shared::state::JobState;

use super::{BatchError, Expect, PolicyStore, Queue, Spool, StoreError, Stored};

/// [`Spool`] on S3.
#[derive(Clone)]
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

/// The HTTP status of a failed call, when the service answered.
fn status<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

impl S3Spool {
    /// The object's bytes and ETag; `None` on 404.
    async fn get(&self, op: &'static str, key: &str) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(StoreError::new(op, key, sdk_error(&e))),
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body = out.body.collect().await.map_err(|e| StoreError::new(op, key, e))?;
        Ok(Some((body.into_bytes().to_vec(), etag)))
    }
}

#[async_trait]
impl Spool for S3Spool {
    async fn get_message(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get("GetObject", key).await?.map(|(bytes, _)| bytes))
    }

    async fn put_message(&self, key: &str, bytes: Vec<u8>, meta: &MessageMeta) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("message/rfc822")
            .set_metadata(Some(meta::encode(meta).into_iter().collect()))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::new("PutObject", key, sdk_error(&e)))
    }

    async fn delete_message(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::new("DeleteObject", key, sdk_error(&e)))
    }

    async fn get_state(&self, queue_id: &str, domain: &str) -> Result<Option<Stored>, StoreError> {
        let key = state_key(queue_id, domain);
        let Some((bytes, etag)) = self.get("GetObject", &key).await? else { return Ok(None) };
        let state =
            JobState::from_json(&String::from_utf8_lossy(&bytes)).map_err(|e| StoreError::new("GetObject", &key, e))?;
        Ok(Some(Stored { state, etag }))
    }

    async fn put_state(&self, state: &JobState, expect: Expect<'_>) -> Result<Option<String>, StoreError> {
        let key = state_key(&state.queue_id, &state.domain);
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(ByteStream::from(state.to_json().into_bytes()));
        let put = match expect {
            Expect::Absent => put.if_none_match("*"),
            Expect::Etag(etag) => put.if_match(etag),
        };
        match put.send().await {
            Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
            // 412: someone wrote first; 409: a concurrent conditional write is in flight; 404:
            // the object we read is gone. Either way: re-read and merge.
            Err(e) if matches!(status(&e), Some(404 | 409 | 412)) => Ok(None),
            Err(e) => Err(StoreError::new("PutObject", &key, sdk_error(&e))),
        }
    }

    async fn record_exists(&self, queue_id: &str, recipient: &str) -> Result<bool, StoreError> {
        let key = record_key(queue_id, recipient);
        match self.client.head_object().bucket(&self.bucket).key(&key).send().await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(StoreError::new("HeadObject", &key, sdk_error(&e))),
        }
    }
}

#[async_trait]
impl PolicyStore for S3Spool {
    async fn get_policy(&self, domain: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = mta_sts_key(domain);
        match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(out) => {
                let body = out.body.collect().await.map_err(|e| StoreError::new("GetObject", &key, e))?;
                Ok(Some(body.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(StoreError::new("GetObject", &key, sdk_error(&e))),
        }
    }

    async fn put_policy(&self, domain: &str, json: Vec<u8>) -> Result<(), StoreError> {
        let key = mta_sts_key(domain);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(ByteStream::from(json))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::new("PutObject", &key, sdk_error(&e)))
    }
}

/// [`Queue`] on SQS.
pub struct SqsQueue {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

fn delay_seconds(delay: Duration) -> i32 {
    delay.as_secs().min(crate::decide::backoff::MAX_SQS_DELAY) as i32
}

/// SQS takes at most ten entries per batch.
const SQS_BATCH: usize = 10;

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, job: &Job, delay: Duration) -> Result<(), StoreError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(job.to_json())
            .delay_seconds(delay_seconds(delay))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::new("SendMessage", &job.queue_id, aws_sdk_sqs::error::DisplayErrorContext(&e)))
    }

    async fn send_batch(&self, jobs: &[(Job, Duration)]) -> Result<(), BatchError> {
        let mut unsent = Vec::new();
        let mut error = None;
        for (chunk_no, chunk) in jobs.chunks(SQS_BATCH).enumerate() {
            let base = chunk_no * SQS_BATCH;
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, (job, delay))| {
                    SendMessageBatchRequestEntry::builder()
                        .id((base + i).to_string())
                        .message_body(job.to_json())
                        .delay_seconds(delay_seconds(*delay))
                        .build()
                        .ok()
                })
                .collect();
            let sent =
                self.client.send_message_batch().queue_url(&self.queue_url).set_entries(Some(entries)).send().await;
            match sent {
                Ok(out) => {
                    for f in out.failed() {
                        unsent.extend(f.id().parse::<usize>().ok());
                        let why = format!("entry {}: {}", f.code(), f.message().unwrap_or_default());
                        error.get_or_insert(StoreError::new("SendMessageBatch", &chunk[0].0.queue_id, why));
                    }
                }
                Err(e) => {
                    unsent.extend(base..base + chunk.len());
                    let why = aws_sdk_sqs::error::DisplayErrorContext(&e);
                    error.get_or_insert(StoreError::new("SendMessageBatch", &chunk[0].0.queue_id, why));
                }
            }
        }
        match error {
            None => Ok(()),
            Some(error) => Err(BatchError { unsent, error }),
        }
    }
}
