//! The edge a report's message is looked up by: its envelope metadata (sender, recipients), from
//! the message object in the spool bucket — current, or the newest version behind the delete
//! marker its job left ([`shared::spooled`]: ListObjectVersions and HeadObject). A message whose
//! noncurrent version has expired (the lifecycle keeps it `RELAY_QUEUE_LIFETIME` + 2 days) is
//! no longer known, and a report about it changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use shared::meta::MessageMeta;

/// Where messages of ours are found.
#[async_trait]
pub trait Origins: Send + Sync {
    /// The metadata of the message `queue_id`; `None` when it is not (or no longer) known.
    async fn find(&self, queue_id: &str) -> Result<Option<MessageMeta>, String>;
}

/// The spool bucket.
pub struct S3Origins {
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
}

#[async_trait]
impl Origins for S3Origins {
    async fn find(&self, queue_id: &str) -> Result<Option<MessageMeta>, String> {
        Ok(shared::spooled::find(&self.s3, &self.bucket, queue_id).await?.and_then(|f| f.meta))
    }
}

/// Messages in memory, for tests; `fail` makes every lookup fail.
#[derive(Clone, Default)]
pub struct MemoryOrigins {
    pub messages: Arc<Mutex<HashMap<String, MessageMeta>>>,
    pub fail: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl Origins for MemoryOrigins {
    async fn find(&self, queue_id: &str) -> Result<Option<MessageMeta>, String> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("ListObjectVersions: injected failure".into());
        }
        Ok(self.messages.lock().unwrap().get(queue_id).cloned())
    }
}
