//! The durable hand-off: the message to S3, then its jobs to SQS — and only then `250`.
//!
//! [`Spool`] is the edge the connection shell talks to; [`AwsSpool`] is the production one.
//! A message that fits in one part is stored with one PUT at its end. A larger one is streamed
//! while it arrives: a multipart upload opened when it outgrows one part, each full part
//! uploaded as it fills, and at the end the last part and the completion. An upload whose
//! message is refused, cut off or fails is aborted (and the bucket's lifecycle rule removes
//! any that an abort missed after a day), so an object under `spool/` always is a whole,
//! accepted message.
//!
//! Jobs are split per destination domain ([`jobs_for`], pure) and sent in batches of ten; entries
//! SQS refuses inside a batch are sent again (twice) before giving up. When jobs cannot all be
//! sent the client gets `451` and will send again. If none went out, the message object is
//! deleted. If some did, the object stays for them — those domains may then get the message
//! twice, which SMTP prefers to losing it — and the log line says so. The withdrawal deletes the
//! version it wrote, so a versioned bucket keeps nothing that looks like a completed message.
//!
//! The object carries the envelope as user metadata ([`message_metadata`]) so `relayctl trace`
//! can show a message no relay has touched, and each job says how many jobs the message has
//! (`jobs`): the only job of a message marks completion by deleting it.

pub mod upload;

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use shared::job::domain_of;
use shared::meta::{self, MessageMeta};
use shared::{Job, aws::Clients, keys};

use crate::session::{Envelope, Incoming};
use crate::spool::upload::{Content, Part, PartTag, Upload};

/// Storage for accepted messages.
#[async_trait]
pub trait Spool: Send + Sync {
    /// Open the multipart upload of a message too large for one part.
    async fn begin(&self, env: &Envelope) -> Result<Upload, String>;

    /// Upload one full part of it.
    async fn upload_part(&self, part: Part) -> Result<PartTag, String>;

    /// Abandon an upload whose message will not be accepted. A failure is logged, not
    /// returned: the bucket's lifecycle rule removes incomplete uploads after a day.
    async fn abort(&self, upload: Upload);

    /// Make the message durable (its PUT, or its last part and the completion of its upload)
    /// and queue its delivery; `Ok` means the relay now owns it. On `Err` nothing of the
    /// message is left to deliver: an open upload is aborted.
    async fn store(&self, msg: Incoming) -> Result<(), String>;
}

/// The envelope's recipients by destination domain: one job each.
fn by_domain(env: &Envelope) -> BTreeMap<String, Vec<shared::Recipient>> {
    let mut by_domain: BTreeMap<String, Vec<shared::Recipient>> = BTreeMap::new();
    for r in &env.recipients {
        by_domain.entry(domain_of(&r.address)).or_default().push(r.clone());
    }
    by_domain
}

/// One job per destination domain, recipients in the order given, each with its own id and
/// the number of jobs of the message.
pub fn jobs_for(msg: &Incoming, now: i64) -> Vec<Job> {
    let groups = by_domain(&msg.env);
    let jobs = groups.len() as u32;
    groups
        .into_iter()
        .map(|(domain, recipients)| Job {
            dsn: msg.env.dsn.clone(),
            body: msg.env.body_type,
            smtputf8: msg.env.smtputf8,
            received_from: msg.received_from.clone(),
            jobs,
            trusted: msg.env.trusted,
            ..Job::first_attempt(&msg.env.queue_id, &msg.env.sender, domain, recipients, msg.size, now)
        })
        .collect()
}

/// The message object's user metadata: the envelope as `relayctl trace` reads it (sender,
/// accepted at `received`, job count, recipients in job order — truncated with a count past
/// S3's 2 KB). Written when the object is created, before its size is known for a streamed
/// message: trace takes the size from the object itself.
pub fn message_metadata(env: &Envelope, received: i64) -> HashMap<String, String> {
    let groups = by_domain(env);
    let m = MessageMeta {
        sender: env.sender.clone(),
        received,
        size: 0,
        jobs: groups.len() as u32,
        recipients: groups.into_values().flatten().map(|r| r.address).collect(),
        omitted: 0,
    };
    meta::encode(&m).into_iter().collect()
}

/// Sets the stored object's attributes on its request — the single PUT and the
/// CreateMultipartUpload alike, so this is the one place to add one (user metadata is a
/// `.metadata(name, value)` line; `$env` is the message's [`Envelope`]). A macro because the
/// SDK's two request builders share these method names but no trait.
macro_rules! object_request {
    ($request:expr, $bucket:expr, $key:expr, $env:expr) => {
        $request
            .bucket($bucket)
            .key($key)
            .content_type("message/rfc822")
            .set_metadata(Some(message_metadata($env, chrono::Utc::now().timestamp())))
    };
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

impl AwsSpool {
    /// The last part, then the completion of the upload; on failure the upload is aborted.
    async fn complete(&self, upload: Upload, mut parts: Vec<PartTag>, last: Vec<u8>) -> Result<Option<String>, String> {
        let number = parts.len() as i32 + 1;
        match self.upload_part(Part { upload: upload.clone(), number, bytes: last }).await {
            Ok(tag) => parts.push(tag),
            Err(e) => {
                self.abort(upload).await;
                return Err(e);
            }
        }
        let completed = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(&p.etag)
                    .set_checksum_crc32(p.crc32.clone())
                    .build()
            })
            .collect();
        let done = self
            .clients
            .s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&upload.key)
            .upload_id(&upload.id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .send()
            .await;
        match done {
            Ok(out) => Ok(out.version_id),
            Err(e) => {
                let reason = format!("S3 complete {}: {}", upload.key, DisplayErrorContext(e));
                // A completion that failed late (a timeout) may still have made the object.
                let key = upload.key.clone();
                self.abort(upload).await;
                self.withdraw(&key, None).await;
                Err(reason)
            }
        }
    }

    /// Delete a stored message no job refers to: the version written, when known (in a
    /// versioned bucket a plain delete would leave a marker that reads like a completion).
    async fn withdraw(&self, key: &str, version: Option<String>) {
        let delete = self.clients.s3.delete_object().bucket(&self.bucket).key(key).set_version_id(version);
        if let Err(d) = delete.send().await {
            tracing::error!(key, error = %DisplayErrorContext(d), "could not withdraw message");
        }
    }
}

#[async_trait]
impl Spool for AwsSpool {
    async fn begin(&self, env: &Envelope) -> Result<Upload, String> {
        let key = keys::message_key(&env.queue_id);
        let out = object_request!(self.clients.s3.create_multipart_upload(), &self.bucket, &key, env)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| format!("S3 create upload {key}: {}", DisplayErrorContext(e)))?;
        let id = out.upload_id().ok_or_else(|| format!("S3 create upload {key}: no upload id"))?.to_string();
        Ok(Upload { queue_id: env.queue_id.clone(), key, id })
    }

    async fn upload_part(&self, part: Part) -> Result<PartTag, String> {
        let Part { upload, number, bytes } = part;
        let out = self
            .clients
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(&upload.key)
            .upload_id(&upload.id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| format!("S3 upload part {number} of {}: {}", upload.key, DisplayErrorContext(e)))?;
        let etag = out.e_tag().ok_or_else(|| format!("S3 upload part {number} of {}: no ETag", upload.key))?;
        Ok(PartTag { number, etag: etag.to_string(), crc32: out.checksum_crc32().map(str::to_string) })
    }

    async fn abort(&self, upload: Upload) {
        let Upload { queue_id, key, id } = upload;
        match self.clients.s3.abort_multipart_upload().bucket(&self.bucket).key(&key).upload_id(&id).send().await {
            Ok(_) => tracing::info!(event = "upload", queue_id, key, result = "aborted"),
            Err(e) => {
                tracing::error!(event = "upload", queue_id, key, result = "abort failed", error = %DisplayErrorContext(e),
                "the bucket's lifecycle rule removes the incomplete upload after a day")
            }
        }
    }

    async fn store(&self, msg: Incoming) -> Result<(), String> {
        let jobs = jobs_for(&msg, chrono::Utc::now().timestamp());
        let key = keys::message_key(&msg.env.queue_id);
        let version = match msg.content {
            Content::Whole(bytes) => {
                object_request!(self.clients.s3.put_object(), &self.bucket, &key, &msg.env)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .map_err(|e| format!("S3 put {key}: {}", DisplayErrorContext(e)))?
                    .version_id
            }
            Content::Multipart { upload, parts, last } => self.complete(upload, parts, last).await?,
        };
        let Err(e) = self.send_jobs(&jobs).await else { return Ok(()) };
        let qid = &msg.env.queue_id;
        if e.queued > 0 {
            tracing::error!(queue_id = %qid, key, queued = e.queued, jobs = jobs.len(), error = %e.reason,
                "jobs partly queued; message kept for them (the client's retry may duplicate those domains)");
        } else {
            self.withdraw(&key, version).await;
        }
        Err(e.reason)
    }
}

/// Accepts everything and keeps nothing (`INGRESS_SPOOL=discard`): for benchmarks of the
/// protocol path alone. Parts are dropped as they are handed over, so a session still holds
/// one part at most, as with S3.
pub struct DiscardSpool;

#[async_trait]
impl Spool for DiscardSpool {
    async fn begin(&self, env: &Envelope) -> Result<Upload, String> {
        Ok(Upload { queue_id: env.queue_id.clone(), key: keys::message_key(&env.queue_id), id: "discard".into() })
    }

    async fn upload_part(&self, part: Part) -> Result<PartTag, String> {
        Ok(PartTag { number: part.number, etag: "discarded".into(), crc32: None })
    }

    async fn abort(&self, _upload: Upload) {}

    async fn store(&self, _msg: Incoming) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
