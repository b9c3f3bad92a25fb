//! The durable hand-off: the message to S3, then its jobs to SQS — and only then `250`.
//!
//! [`Spool`] is the edge the connection shell talks to; [`AwsSpool`] is the production one.
//! Jobs are split per destination domain ([`jobs_for`], pure) and sent in batches of ten; entries
//! SQS refuses inside a batch are sent again (twice) before giving up. When jobs cannot all be
//! sent the client gets `451` and will send again. If none went out, the message object is
//! deleted (that version, so a versioned bucket keeps no trace that looks like a completed
//! message). If some did, the object stays for them — those domains may then get the message
//! twice, which SMTP prefers to losing it — and the log line says so.
//!
//! The object carries the envelope as user metadata ([`message_metadata`]) so `relayctl trace`
//! can show a message no relay has touched, and each job says how many jobs the message has
//! (`jobs`): the only job of a message marks completion by deleting it.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use shared::job::domain_of;
use shared::meta::{self, MessageMeta};
use shared::{Job, aws::Clients, keys};

use crate::session::Incoming;

/// Storage for accepted messages.
#[async_trait]
pub trait Spool: Send + Sync {
    /// Make the message durable and queue its delivery; `Ok` means the relay now owns it.
    async fn store(&self, msg: Incoming) -> Result<(), String>;
}

/// One job per destination domain, recipients in the order given, each with its own id and
/// the number of jobs of the message.
pub fn jobs_for(msg: &Incoming, now: i64) -> Vec<Job> {
    let mut by_domain: BTreeMap<String, Vec<shared::Recipient>> = BTreeMap::new();
    for r in &msg.env.recipients {
        by_domain.entry(domain_of(&r.address)).or_default().push(r.clone());
    }
    let jobs = by_domain.len() as u32;
    by_domain
        .into_iter()
        .map(|(domain, recipients)| Job {
            dsn: msg.env.dsn.clone(),
            body: msg.env.body_type,
            smtputf8: msg.env.smtputf8,
            received_from: msg.received_from.clone(),
            jobs,
            ..Job::first_attempt(&msg.env.queue_id, &msg.env.sender, domain, recipients, msg.message.len() as u64, now)
        })
        .collect()
}

/// The message object's user metadata: the envelope as `relayctl trace` reads it (sender,
/// received time, size, job count, recipients in job order — truncated with a count past S3's
/// 2 KB). One function for every way the object is written (single PUT or multipart upload).
pub fn message_metadata(jobs: &[Job], size: u64, received: i64) -> HashMap<String, String> {
    let m = MessageMeta {
        sender: jobs.first().map(|j| j.sender.clone()).unwrap_or_default(),
        received,
        size,
        jobs: jobs.len() as u32,
        recipients: jobs.iter().flat_map(|j| j.recipients.iter().map(|r| r.address.clone())).collect(),
        omitted: 0,
    };
    meta::encode(&m).into_iter().collect()
}

/// S3 + SQS.
pub struct AwsSpool {
    pub clients: Clients,
    pub bucket: String,
    pub queue_url: String,
}

/// SQS takes at most ten entries per batch.
const SQS_BATCH: usize = 10;

/// Sends of a batch's refused entries before the enqueue fails.
const SQS_ENTRY_TRIES: usize = 3;

/// Jobs could not all be queued; `queued` of them were.
struct EnqueueError {
    queued: usize,
    reason: String,
}

impl AwsSpool {
    async fn send_jobs(&self, jobs: &[Job]) -> Result<(), EnqueueError> {
        let mut queued = 0;
        for batch in jobs.chunks(SQS_BATCH) {
            let mut entries = batch
                .iter()
                .enumerate()
                .map(|(i, job)| {
                    SendMessageBatchRequestEntry::builder().id(format!("j{i}")).message_body(job.to_json()).build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EnqueueError { queued, reason: e.to_string() })?;
            for attempt in 1..=SQS_ENTRY_TRIES {
                let sent = entries.len();
                let out = self
                    .clients
                    .sqs
                    .send_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(entries.clone()))
                    .send()
                    .await
                    .map_err(|e| EnqueueError {
                        queued,
                        reason: format!("SQS send: {}", aws_sdk_sqs::error::DisplayErrorContext(e)),
                    })?;
                let failed = out.failed();
                queued += sent - failed.len();
                if let Some(f) = failed.first() {
                    let reason = format!("SQS send: entry {} failed: {}", f.id(), f.message().unwrap_or(f.code()));
                    if attempt == SQS_ENTRY_TRIES || f.sender_fault() {
                        return Err(EnqueueError { queued, reason });
                    }
                    entries.retain(|e| failed.iter().any(|f| f.id() == e.id()));
                } else {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Spool for AwsSpool {
    async fn store(&self, msg: Incoming) -> Result<(), String> {
        let now = chrono::Utc::now().timestamp();
        let jobs = jobs_for(&msg, now);
        let key = keys::message_key(&msg.env.queue_id);
        let put = self
            .clients
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("message/rfc822")
            .set_metadata(Some(message_metadata(&jobs, msg.message.len() as u64, now)))
            .body(ByteStream::from(msg.message))
            .send()
            .await
            .map_err(|e| format!("S3 put {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let Err(e) = self.send_jobs(&jobs).await else { return Ok(()) };
        let qid = &msg.env.queue_id;
        if e.queued > 0 {
            tracing::error!(queue_id = %qid, key, queued = e.queued, jobs = jobs.len(), error = %e.reason,
                "jobs partly queued; message kept for them (the client's retry may duplicate those domains)");
        } else if let Err(d) =
            self.clients.s3.delete_object().bucket(&self.bucket).key(&key).set_version_id(put.version_id).send().await
        {
            tracing::error!(queue_id = %qid, key, error = %aws_sdk_s3::error::DisplayErrorContext(d),
                "could not withdraw message after failed enqueue");
        }
        Err(e.reason)
    }
}

/// Accepts everything and keeps nothing (`INGRESS_SPOOL=discard`): for benchmarks of the
/// protocol path alone.
pub struct DiscardSpool;

#[async_trait]
impl Spool for DiscardSpool {
    async fn store(&self, _msg: Incoming) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
