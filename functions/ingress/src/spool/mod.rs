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
//!
//! Writing the object ([`Spool::persist`]) and queueing its jobs ([`Spool::enqueue`]) are two
//! steps, because a streamed message from an untrusted client is judged between them, from the
//! stored object read back ([`ReadBack`]). A refused one is withdrawn; one whose header section
//! the judge edited is rewritten ([`Spool::replace_header`]): a new multipart upload whose first
//! part is the new header section and the first 5 MiB of the body (one ranged GET), and whose
//! second part is the rest of the body copied inside S3 (UploadPartCopy), no byte of it
//! passing through the ingress; the old version is then deleted. That costs a streamed,
//! judged message about six requests more than a stored one; mail that fits in a part is judged
//! in memory before its one PUT.

pub mod upload;

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::StreamExt;
use shared::job::domain_of;
use shared::meta::{self, MessageMeta};
use shared::{Job, aws::Clients, keys};

use crate::judge::HeaderChange;
use crate::judge::source::{Chunks, ReadBack};
use crate::session::{Envelope, Incoming};
use crate::spool::upload::{Content, Part, PartTag, Stored, Upload};

/// S3's smallest part (all but the last part of an upload).
pub const MIN_PART: u64 = 5 * 1024 * 1024;

/// S3's largest part, and so the largest range one UploadPartCopy copies.
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

/// Storage for accepted messages.
#[async_trait]
pub trait Spool: ReadBack + Send + Sync {
    /// Open the multipart upload of a message too large for one part.
    async fn begin(&self, env: &Envelope) -> Result<Upload, String>;

    /// Upload one full part of it.
    async fn upload_part(&self, part: Part) -> Result<PartTag, String>;

    /// Abandon an upload whose message will not be accepted. A failure is logged, not
    /// returned: the bucket's lifecycle rule removes incomplete uploads after a day.
    async fn abort(&self, upload: Upload);

    /// Write the message object (its PUT, or its last part and the completion of its upload);
    /// `size` is the message's. On `Err` nothing of it is left: an open upload is aborted.
    async fn persist(&self, env: &Envelope, content: Content, size: u64) -> Result<Stored, String>;

    /// Replace the header section of a stored message no job points at yet (its first
    /// `change.old_len` bytes) with `change.new`, then delete the old version. On `Err` the old
    /// object is still there, and nothing else is.
    async fn replace_header(&self, env: &Envelope, stored: Stored, change: HeaderChange) -> Result<Stored, String>;

    /// Delete a stored message no job points at: the version written, when known (in a
    /// versioned bucket a plain delete would leave a marker that reads like a completion). A
    /// failure is logged.
    async fn withdraw(&self, stored: Stored);

    /// Queue the jobs of a stored message; `Ok` means the relay now owns it. On `Err`, a
    /// message none of whose jobs went out is withdrawn.
    async fn enqueue(&self, msg: &Incoming, stored: Stored) -> Result<(), String>;

    /// [`persist`](Self::persist), then [`enqueue`](Self::enqueue): mail that is not judged,
    /// or was judged in memory.
    async fn store(&self, mut msg: Incoming) -> Result<(), String> {
        let content = msg.take_content();
        let stored = self.persist(&msg.env, content, msg.size).await?;
        msg.size = stored.size;
        self.enqueue(&msg, stored).await
    }
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
        self.complete_upload(upload, &parts).await
    }

    /// Complete `upload` from `parts` and return the version made; on failure the upload is
    /// aborted and anything a late failure may still have made is deleted.
    async fn complete_upload(&self, upload: Upload, parts: &[PartTag]) -> Result<Option<String>, String> {
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
                self.delete(&key, None).await;
                Err(reason)
            }
        }
    }

    /// Delete `key` (the version given, when known).
    /// A multipart upload of `env`'s message to `key`, with CRC32 checksums per part.
    async fn open_upload(&self, env: &Envelope, key: String) -> Result<Upload, String> {
        let out = object_request!(self.clients.s3.create_multipart_upload(), &self.bucket, &key, env)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| format!("S3 create upload {key}: {}", DisplayErrorContext(e)))?;
        let id = out.upload_id().ok_or_else(|| format!("S3 create upload {key}: no upload id"))?.to_string();
        Ok(Upload { queue_id: env.queue_id.clone(), key, id })
    }

    async fn delete(&self, key: &str, version: Option<String>) {
        let delete = self.clients.s3.delete_object().bucket(&self.bucket).key(key).set_version_id(version);
        if let Err(d) = delete.send().await {
            tracing::error!(key, error = %DisplayErrorContext(d), "could not withdraw message");
        }
    }
}

#[async_trait]
impl Spool for AwsSpool {
    async fn begin(&self, env: &Envelope) -> Result<Upload, String> {
        self.open_upload(env, keys::message_key(&env.queue_id)).await
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

    async fn persist(&self, env: &Envelope, content: Content, size: u64) -> Result<Stored, String> {
        let key = keys::message_key(&env.queue_id);
        let version = match content {
            Content::Whole(bytes) => {
                object_request!(self.clients.s3.put_object(), &self.bucket, &key, env)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .map_err(|e| format!("S3 put {key}: {}", DisplayErrorContext(e)))?
                    .version_id
            }
            Content::Multipart { upload, parts, last } => self.complete(upload, parts, last).await?,
        };
        Ok(Stored { key, version, size })
    }

    async fn replace_header(&self, env: &Envelope, stored: Stored, change: HeaderChange) -> Result<Stored, String> {
        let old_len = change.old_len as u64;
        let rest = stored.size.saturating_sub(old_len);
        // The new first part: the new header section and up to S3's smallest part of the body,
        // so it is a valid part whatever the header's length; the rest is copied inside S3.
        let first_rest = rest.min(MIN_PART);
        let mut first = change.new;
        let new_size = first.len() as u64 + rest;
        if first_rest > 0 {
            self.read_range(&stored, old_len, old_len + first_rest, &mut first).await?;
        }
        let version = if first_rest == rest {
            object_request!(self.clients.s3.put_object(), &self.bucket, &stored.key, env)
                .body(ByteStream::from(first))
                .send()
                .await
                .map_err(|e| format!("S3 put {}: {}", stored.key, DisplayErrorContext(e)))?
                .version_id
        } else {
            self.copy_after(env, &stored, first, old_len + first_rest).await?
        };
        if stored.version.is_some() && stored.version != version {
            self.delete(&stored.key, stored.version).await;
        }
        Ok(Stored { key: stored.key, version, size: new_size })
    }

    async fn withdraw(&self, stored: Stored) {
        self.delete(&stored.key, stored.version).await;
    }

    async fn enqueue(&self, msg: &Incoming, stored: Stored) -> Result<(), String> {
        let jobs = jobs_for(msg, chrono::Utc::now().timestamp());
        let Err(e) = self.send_jobs(&jobs).await else { return Ok(()) };
        let qid = &msg.env.queue_id;
        if e.queued > 0 {
            tracing::error!(queue_id = %qid, key = %stored.key, queued = e.queued, jobs = jobs.len(), error = %e.reason,
                "jobs partly queued; message kept for them (the client's retry may duplicate those domains)");
        } else {
            self.withdraw(stored).await;
        }
        Err(e.reason)
    }
}

#[async_trait]
impl ReadBack for AwsSpool {
    async fn read(&self, stored: &Stored) -> Result<Chunks, String> {
        let out = self
            .clients
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&stored.key)
            .set_version_id(stored.version.clone())
            .send()
            .await
            .map_err(|e| format!("S3 get {}: {}", stored.key, DisplayErrorContext(e)))?;
        let key = stored.key.clone();
        let chunks = futures::stream::unfold(Some(out.body), move |body| {
            let key = key.clone();
            async move {
                let mut body = body?;
                match body.next().await {
                    None => None,
                    Some(Ok(chunk)) => Some((Ok(chunk), Some(body))),
                    Some(Err(e)) => Some((Err(format!("S3 get {key}: {e}")), None)),
                }
            }
        });
        Ok(chunks.boxed())
    }
}

impl AwsSpool {
    /// Append bytes `from..to` of a stored message to `out`, chunk by chunk (no other copy of
    /// them is made: this is the one part a rewrite holds).
    async fn read_range(&self, stored: &Stored, from: u64, to: u64, out: &mut Vec<u8>) -> Result<(), String> {
        let what = || format!("S3 get {} bytes {from}-{}", stored.key, to - 1);
        let resp = self
            .clients
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&stored.key)
            .set_version_id(stored.version.clone())
            .range(format!("bytes={from}-{}", to - 1))
            .send()
            .await
            .map_err(|e| format!("{}: {}", what(), DisplayErrorContext(e)))?;
        let start = out.len();
        out.reserve((to - from) as usize);
        let mut body = resp.body;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.map_err(|e| format!("{}: {e}", what()))?);
        }
        match (out.len() - start) as u64 == to - from {
            true => Ok(()),
            false => Err(format!("{}: {} bytes came", what(), out.len() - start)),
        }
    }

    /// A new version of `stored`'s key: `first` as its first part, then `stored`'s bytes from
    /// `from` on, copied inside S3. The upload is aborted on failure.
    async fn copy_after(
        &self,
        env: &Envelope,
        stored: &Stored,
        first: Vec<u8>,
        from: u64,
    ) -> Result<Option<String>, String> {
        let upload = self.open_upload(env, stored.key.clone()).await?;
        let parts = match self.copy_parts(&upload, stored, first, from).await {
            Ok(parts) => parts,
            Err(e) => {
                self.abort(upload).await;
                return Err(e);
            }
        };
        self.complete_upload(upload, &parts).await
    }

    /// Part 1 uploaded from `first`, the others copied from `stored`'s bytes `from..`.
    async fn copy_parts(
        &self,
        upload: &Upload,
        stored: &Stored,
        first: Vec<u8>,
        from: u64,
    ) -> Result<Vec<PartTag>, String> {
        let mut parts = vec![self.upload_part(Part { upload: upload.clone(), number: 1, bytes: first }).await?];
        let mut source = format!("{}/{}", self.bucket, stored.key);
        if let Some(v) = &stored.version {
            source.push_str(&format!("?versionId={v}"));
        }
        let mut start = from;
        while start < stored.size {
            let end = stored.size.min(start + MAX_PART);
            let number = parts.len() as i32 + 1;
            let out = self
                .clients
                .s3
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(&upload.key)
                .upload_id(&upload.id)
                .part_number(number)
                .copy_source(&source)
                .copy_source_range(format!("bytes={start}-{}", end - 1))
                .send()
                .await
                .map_err(|e| format!("S3 copy part {number} of {}: {}", upload.key, DisplayErrorContext(e)))?;
            let result = out.copy_part_result();
            let etag = result.and_then(|r| r.e_tag()).ok_or_else(|| format!("S3 copy part {number}: no ETag"))?;
            let crc32 = result.and_then(|r| r.checksum_crc32()).map(str::to_string);
            parts.push(PartTag { number, etag: etag.to_string(), crc32 });
            start = end;
        }
        Ok(parts)
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

    async fn persist(&self, env: &Envelope, _content: Content, size: u64) -> Result<Stored, String> {
        Ok(Stored { key: keys::message_key(&env.queue_id), version: None, size })
    }

    async fn replace_header(&self, _env: &Envelope, stored: Stored, change: HeaderChange) -> Result<Stored, String> {
        let size = stored.size - change.old_len as u64 + change.new.len() as u64;
        Ok(Stored { size, ..stored })
    }

    async fn withdraw(&self, _stored: Stored) {}

    async fn enqueue(&self, _msg: &Incoming, _stored: Stored) -> Result<(), String> {
        Ok(())
    }
}

#[async_trait]
impl ReadBack for DiscardSpool {
    /// Nothing was kept: a streamed message from an untrusted client cannot be judged here
    /// (benchmark the discard spool with trusted clients, or with the checks off).
    async fn read(&self, stored: &Stored) -> Result<Chunks, String> {
        Err(format!("INGRESS_SPOOL=discard keeps no message to read back ({})", stored.key))
    }
}

#[cfg(test)]
mod tests;
