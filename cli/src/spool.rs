//! What relayctl reads from S3 and SQS beyond the relay's own edges (which it reuses for state
//! reads, conditional state writes, DSN messages and sends): a message's metadata and bytes —
//! also after its job deleted it, from the newest noncurrent version of the versioned bucket —,
//! the states of a message, the spool in queue-id order, queue counts and the DLQ move task.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow};
use aws_sdk_sqs::types::QueueAttributeName;
use futures::StreamExt;
use relay::store::{S3Spool, Spool, SqsQueue, Stored};
use shared::keys;

/// A message object as found (by [`shared::spooled::find`]).
pub type MessageInfo = shared::spooled::Found;

/// Folder listings of [`Store::spooled`] in flight at once.
const FOLDER_LISTS_AT_ONCE: usize = 16;

/// The S3 and SQS clients with the spool's names.
pub struct Store {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub bucket: String,
    pub queue_url: String,
}

fn s3_err<E: std::error::Error + 'static, R: std::fmt::Debug>(e: aws_sdk_s3::error::SdkError<E, R>) -> anyhow::Error {
    anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(e))
}

fn sqs_err<E: std::error::Error + 'static, R: std::fmt::Debug>(e: aws_sdk_sqs::error::SdkError<E, R>) -> anyhow::Error {
    anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e))
}

impl Store {
    /// The relay's S3 edge on the same bucket.
    pub fn spool(&self) -> S3Spool {
        S3Spool { client: self.s3.clone(), bucket: self.bucket.clone() }
    }

    /// The relay's SQS edge on the same queue.
    pub fn queue(&self) -> SqsQueue {
        SqsQueue { client: self.sqs.clone(), queue_url: self.queue_url.clone() }
    }

    /// The message `queue_id`: the current object, or the newest version behind a delete marker,
    /// under the hashed layout or, for a message stored before it, the old one.
    pub async fn message(&self, queue_id: &str) -> Result<Option<MessageInfo>> {
        shared::spooled::find(&self.s3, &self.bucket, queue_id).await.map_err(|e| anyhow!(e))
    }

    /// The bytes of a message found by [`Store::message`].
    pub async fn message_bytes(&self, info: &MessageInfo) -> Result<Vec<u8>> {
        let out = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&info.key)
            .set_version_id(info.version.clone())
            .send()
            .await
            .map_err(s3_err)?;
        Ok(out.body.collect().await.context("reading the message")?.into_bytes().to_vec())
    }

    /// Every state object of the message, by domain.
    pub async fn states(&self, queue_id: &str) -> Result<Vec<Stored>> {
        let prefix = keys::state_prefix(queue_id);
        let mut out = Vec::new();
        let mut pages = self.s3.list_objects_v2().bucket(&self.bucket).prefix(&prefix).into_paginator().send();
        let spool = self.spool();
        while let Some(page) = pages.next().await {
            for o in page.map_err(s3_err)?.contents() {
                let Some(k) = o.key() else { continue };
                let Some(domain) = k.strip_prefix(&prefix).and_then(|d| d.strip_suffix(".json")) else { continue };
                let domain = decode_key_part(domain);
                if let Some(s) = spool.get_state(queue_id, &domain).await? {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// Queue ids of the spooled messages still present, oldest first (ULIDs sort by time), at
    /// most `limit`. Keys sort by time only within one folder of the hashed layout, so the
    /// oldest `limit` of each folder are listed (one LIST per folder, in parallel) and merged,
    /// with the objects left under the old layout (directly under `spool/`, listed with the
    /// folders by one delimited LIST).
    pub async fn spooled(&self, limit: usize) -> Result<Vec<String>> {
        let page = limit.clamp(1, 1000) as i32;
        let (mut keys, folders) = self.legacy_and_folders(limit).await?;
        let mut lists = futures::stream::iter(folders.into_iter().map(|folder| async move {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&folder)
                .max_keys(page)
                .send()
                .await
                .map_err(s3_err)
                .with_context(|| format!("ListObjectsV2 {folder}"))?;
            Ok::<_, anyhow::Error>(out.contents().iter().filter_map(|o| o.key().map(String::from)).collect::<Vec<_>>())
        }))
        .buffer_unordered(FOLDER_LISTS_AT_ONCE);
        while let Some(found) = lists.next().await {
            keys.extend(found?);
        }
        let mut ids: Vec<String> = keys.iter().filter_map(|k| keys::queue_id_of(k)).map(String::from).collect();
        ids.sort();
        ids.dedup();
        ids.truncate(limit);
        Ok(ids)
    }

    /// The oldest `limit` objects stored under the old layout (`spool/<queue id>.eml`), and the
    /// folders of the hashed one, from one delimited listing of `spool/`.
    async fn legacy_and_folders(&self, limit: usize) -> Result<(Vec<String>, Vec<String>)> {
        let (mut legacy, mut folders) = (Vec::new(), Vec::new());
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(keys::SPOOL_PREFIX)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(s3_err)?;
            if legacy.len() < limit {
                legacy.extend(page.contents().iter().filter_map(|o| o.key().map(String::from)));
            }
            folders.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(String::from)));
        }
        Ok((legacy, folders))
    }

    /// Attributes of a queue.
    pub async fn attributes(
        &self,
        url: &str,
        names: &[QueueAttributeName],
    ) -> Result<HashMap<QueueAttributeName, String>> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(sqs_err)
            .with_context(|| format!("GetQueueAttributes {url}"))?;
        Ok(out.attributes.unwrap_or_default())
    }

    /// The queue's ARN and its dead-letter queue's (URL, ARN), from its `RedrivePolicy`.
    pub async fn dlq(&self) -> Result<(String, String, String)> {
        let a = self
            .attributes(&self.queue_url, &[QueueAttributeName::QueueArn, QueueAttributeName::RedrivePolicy])
            .await?;
        let arn = a.get(&QueueAttributeName::QueueArn).cloned().unwrap_or_default();
        let policy = a.get(&QueueAttributeName::RedrivePolicy).ok_or_else(|| {
            anyhow!("the queue {} has no RedrivePolicy: no dead-letter queue to read", self.queue_url)
        })?;
        let dlq_arn = dlq_arn(policy)?;
        let (account, name) = arn_parts(&dlq_arn)?;
        let out = self
            .sqs
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(sqs_err)?;
        Ok((arn, out.queue_url.unwrap_or_default(), dlq_arn))
    }
}

/// The `deadLetterTargetArn` of a RedrivePolicy document.
pub fn dlq_arn(policy: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(policy).context("RedrivePolicy is not JSON")?;
    v.get("deadLetterTargetArn")
        .and_then(|a| a.as_str())
        .map(String::from)
        .ok_or_else(|| anyhow!("RedrivePolicy has no deadLetterTargetArn"))
}

/// `(account, queue name)` of an SQS ARN `arn:aws:sqs:region:account:name`.
pub fn arn_parts(arn: &str) -> Result<(&str, &str)> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts[..] {
        [_, _, "sqs", _, account, name] => Ok((account, name)),
        _ => Err(anyhow!("{arn:?} is not an SQS queue ARN")),
    }
}

/// Undo the key encoding of `shared::keys` (percent-encoded bytes).
fn decode_key_part(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlq_from_the_redrive_policy() {
        let p = r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:jobs-dlq","maxReceiveCount":"5"}"#;
        let arn = dlq_arn(p).unwrap();
        assert_eq!(arn_parts(&arn).unwrap(), ("000000000000", "jobs-dlq"));
        assert!(dlq_arn("{}").is_err() && arn_parts("arn:aws:s3:::b").is_err());
    }

    #[test]
    fn state_keys_decode_back_to_domains() {
        let key = keys::state_key("Q", "bücher.de");
        let part = key.strip_prefix(&keys::state_prefix("Q")).unwrap().strip_suffix(".json").unwrap();
        assert_eq!(decode_key_part(part), "bücher.de");
    }
}

/// Builders for other modules' tests.
#[cfg(test)]
pub mod tests_support {
    use super::*;
    use shared::meta::MessageMeta;

    pub fn info(meta: Option<MessageMeta>, size: u64, deleted_at: Option<i64>) -> MessageInfo {
        MessageInfo { meta, size, deleted_at, key: String::new(), version: None }
    }
}
