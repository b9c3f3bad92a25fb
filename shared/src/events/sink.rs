//! The edge events leave by (`RELAY_EVENTS_QUEUE_URL`): [`EventSink`], and [`SqsEvents`], which
//! sends a batch's events with SendMessageBatch ([`MemoryEvents`] keeps them, for tests).
//!
//! Publishing is best effort by design: an event that cannot be sent is logged (with its queue
//! id, so the delivery log still tells the story) and dropped. It never fails, delays beyond
//! [`PUBLISH_TIMEOUT`] or repeats a delivery — the mail matters more than the report about it.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use super::Event;

/// SendMessageBatch takes at most 10 entries…
pub const MAX_BATCH_ENTRIES: usize = 10;
/// …and at most 256 KiB of message bodies per call (SQS's long-standing limit; queues that
/// allow 1 MiB messages still get batches within it).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// The longest publishing may hold up the end of a batch (all its calls together).
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where delivery events go.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Publish `events`; failures are logged here, never returned.
    async fn publish(&self, events: Vec<Event>);
}

/// Groups of consecutive bodies for SendMessageBatch (≤ [`MAX_BATCH_ENTRIES`] entries and
/// ≤ [`MAX_BATCH_BYTES`] each, in order), and the indexes of bodies too large to send at all.
pub fn batches(sizes: &[usize]) -> (Vec<Range<usize>>, Vec<usize>) {
    let (mut groups, mut oversize) = (Vec::new(), Vec::new());
    let (mut start, mut bytes) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        let full = i - start == MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES;
        if full && i > start {
            groups.push(start..i);
            (start, bytes) = (i, 0);
        }
        if size > MAX_BATCH_BYTES {
            oversize.push(i);
            start = i + 1;
            continue;
        }
        bytes += size;
    }
    if start < sizes.len() {
        groups.push(start..sizes.len());
    }
    (groups, oversize)
}

/// [`EventSink`] on an SQS queue.
pub struct SqsEvents {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

impl SqsEvents {
    /// Send one group; the queue ids of the events it could not send, with why.
    async fn send(&self, events: &[Event], bodies: &[String]) -> Result<(), (Vec<String>, String)> {
        let entries: Vec<_> = bodies
            .iter()
            .enumerate()
            .filter_map(|(i, b)| SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(b).build().ok())
            .collect();
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
            let ids = events.iter().map(|e| e.queue_id().to_string()).collect();
            (ids, aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
        })?;
        if out.failed.is_empty() {
            return Ok(());
        }
        let ids =
            out.failed.iter().filter_map(|f| f.id.parse::<usize>().ok()).map(|i| events[i].queue_id().to_string());
        let why = out.failed.iter().map(|f| format!("{}: {}", f.code, f.message.as_deref().unwrap_or(""))).collect();
        Err((ids.collect(), why))
    }
}

#[async_trait]
impl EventSink for SqsEvents {
    async fn publish(&self, events: Vec<Event>) {
        let bodies: Vec<String> = events.iter().map(Event::to_json).collect();
        let (groups, oversize) = batches(&bodies.iter().map(String::len).collect::<Vec<_>>());
        for i in oversize {
            tracing::error!(queue_id = %events[i].queue_id(), bytes = bodies[i].len(), "delivery event too large for SQS; dropped");
        }
        let sends = groups.iter().map(|g| self.send(&events[g.clone()], &bodies[g.clone()]));
        let results = match tokio::time::timeout(PUBLISH_TIMEOUT, futures::future::join_all(sends)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(queue = %self.queue_url, events = events.len(), timeout_s = PUBLISH_TIMEOUT.as_secs(),
                    "delivery events not published: timed out");
                return;
            }
        };
        for (ids, why) in results.into_iter().filter_map(Result::err) {
            tracing::error!(queue = %self.queue_url, events = ids.len(), queue_ids = %ids.join(","), error = %why,
                "delivery events not published");
        }
    }
}

/// Every publication of events (one per batch), in order: the unit tests' events queue.
#[derive(Clone, Default)]
pub struct MemoryEvents(pub Arc<Mutex<Vec<Vec<Event>>>>);

impl MemoryEvents {
    /// Every event published so far, in order.
    pub fn all(&self) -> Vec<Event> {
        self.0.lock().unwrap().iter().flatten().cloned().collect()
    }
}

#[async_trait]
impl EventSink for MemoryEvents {
    async fn publish(&self, events: Vec<Event>) {
        self.0.lock().unwrap().push(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_entries_bytes_and_order() {
        let kib = 1024;
        type Case = (Vec<usize>, Vec<(usize, usize)>, Vec<usize>);
        // (sizes, groups as start..end, oversize)
        let cases: Vec<Case> = vec![
            (vec![], vec![], vec![]),
            (vec![100; 3], vec![(0, 3)], vec![]),
            (vec![100; 25], vec![(0, 10), (10, 20), (20, 25)], vec![]),
            (vec![100 * kib; 3], vec![(0, 2), (2, 3)], vec![]),
            (vec![256 * kib, 1], vec![(0, 1), (1, 2)], vec![]),
            (vec![10, 300 * kib, 10, 10], vec![(0, 1), (2, 4)], vec![1]),
            (vec![300 * kib], vec![], vec![0]),
        ];
        for (sizes, groups, oversize) in cases {
            let (g, o) = batches(&sizes);
            let got: Vec<(usize, usize)> = g.iter().map(|r| (r.start, r.end)).collect();
            assert_eq!((got, o), (groups, oversize), "{sizes:?}");
            for r in &g {
                assert!(r.len() <= MAX_BATCH_ENTRIES && sizes[r.clone()].iter().sum::<usize>() <= MAX_BATCH_BYTES);
            }
        }
    }
}
