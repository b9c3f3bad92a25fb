//! [`Spool`] on S3 and [`Queue`] on SQS: the production edges.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use shared::Job;
use shared::keys::{mta_sts_key, record_key};

use super::{PolicyStore, Queue, Spool, StoreError};

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

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, job: &Job, delay: Duration) -> Result<(), StoreError> {
        let secs = delay.as_secs().min(crate::decide::backoff::MAX_SQS_DELAY) as i32;
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
