//! Finding a spooled message by its queue id — also after its only job deleted it: the bucket
//! is versioned, so the message stays readable as the newest noncurrent version behind a delete
//! marker until the lifecycle rule expires it (`RELAY_QUEUE_LIFETIME` + 2 days). `relayctl`
//! reads messages this way, and so does the ingress when a report comes back about one.
//!
//! Two requests: ListObjectVersions of the key (what versions and delete markers it has), then
//! HeadObject of the newest version for its envelope metadata ([`crate::meta`]). A message stored
//! before the hashed key layout is looked for under its old key when the new one has nothing
//! ([`keys::message_keys`]).

use aws_sdk_s3::error::DisplayErrorContext;

use crate::keys;
use crate::meta::{self, MessageMeta};

/// A message object as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The ingress's envelope metadata (`None`: written before it existed).
    pub meta: Option<MessageMeta>,
    /// Object size in bytes.
    pub size: u64,
    /// When a delete marker hid it (Unix seconds): its sole job completed then.
    pub deleted_at: Option<i64>,
    /// Where it was found: the hashed layout, or the old one for a message stored before it.
    pub key: String,
    /// The version holding it.
    pub version: Option<String>,
}

/// The message `queue_id` in `bucket`: the newest version of its object, deleted or not;
/// `None` when no version is left under either key layout.
pub async fn find(s3: &aws_sdk_s3::Client, bucket: &str, queue_id: &str) -> Result<Option<Found>, String> {
    for key in keys::message_keys(queue_id) {
        if let Some(found) = find_at(s3, bucket, key).await? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The newest version of the object at `key`, deleted or not.
async fn find_at(s3: &aws_sdk_s3::Client, bucket: &str, key: String) -> Result<Option<Found>, String> {
    let epoch = |t: Option<&aws_sdk_s3::primitives::DateTime>| t.map(|t| t.secs());
    let out = s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(&key)
        .send()
        .await
        .map_err(|e| format!("ListObjectVersions {key}: {}", DisplayErrorContext(e)))?;
    let newest = out
        .versions()
        .iter()
        .filter(|v| v.key() == Some(key.as_str()))
        .max_by_key(|v| (v.is_latest() == Some(true), epoch(v.last_modified())));
    let Some(version) = newest else { return Ok(None) };
    let deleted_at = out
        .delete_markers()
        .iter()
        .filter(|d| d.key() == Some(key.as_str()) && d.is_latest() != Some(false))
        .filter_map(|d| epoch(d.last_modified()))
        .max();
    let id = version.version_id().map(String::from).filter(|v| v != "null");
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(&key)
        .set_version_id(id.clone())
        .send()
        .await
        .map_err(|e| format!("HeadObject {key}: {}", DisplayErrorContext(e)))?;
    Ok(Some(Found {
        meta: head.metadata().and_then(meta::decode),
        size: version.size().unwrap_or_default() as u64,
        deleted_at,
        key,
        version: id,
    }))
}
