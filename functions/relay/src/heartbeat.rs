//! A batch stays invisible while it runs: its receipt handles get `ChangeMessageVisibility`
//! every half of the queue's visibility timeout, so a slow destination never lets SQS hand a
//! job still being delivered to another worker. `relay poll` and the Lambda entry point both
//! run their batch through [`keep_invisible`].
//!
//! Under Lambda the event source mapping received the batch before the invocation started
//! (batching window, throttled invocations retried), so the template keeps the queue's
//! visibility at least six times the function's timeout, as AWS asks; the heartbeat covers a
//! batch that runs longer than half of it (a raised timeout, a lowered visibility). The
//! timeout is read once per process (`GetQueueAttributes`), while the first batch already runs.

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, QueueAttributeName};
use tokio::sync::OnceCell;

/// SQS's default visibility timeout, used when the queue's cannot be read.
const DEFAULT_VISIBILITY: u64 = 30;

/// The queue a batch came from, and its visibility timeout once read.
pub struct Visibility {
    sqs: aws_sdk_sqs::Client,
    url: String,
    timeout: OnceCell<u64>,
}

impl Visibility {
    pub fn new(sqs: aws_sdk_sqs::Client, url: String) -> Self {
        Self { sqs, url, timeout: OnceCell::new() }
    }

    /// The queue's visibility timeout in seconds (read on first use).
    pub async fn timeout(&self) -> u64 {
        *self.timeout.get_or_init(|| visibility_timeout(&self.sqs, &self.url)).await
    }

    /// Keep `receipts` invisible for another `seconds` (0 hands them back at once).
    pub async fn extend(&self, receipts: &[String], seconds: u64) {
        let entries: Vec<_> = receipts
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .visibility_timeout(seconds.min(43_200) as i32)
                    .build()
                    .ok()
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        let sent = self.sqs.change_message_visibility_batch().queue_url(&self.url).set_entries(Some(entries)).send();
        match sent.await {
            Ok(out) if !out.failed.is_empty() => {
                tracing::warn!(failed = out.failed.len(), "visibility not extended for some jobs")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "ChangeMessageVisibilityBatch failed")
            }
        }
    }
}

/// The receipt handles of a batch.
pub fn receipts(event: &SqsEvent) -> Vec<String> {
    event.records.iter().filter_map(|r| r.receipt_handle.clone()).collect()
}

/// Run `work` (the handling of a batch with these `receipts`), extending their visibility every
/// half timeout until it is done.
pub async fn keep_invisible<F: Future>(work: F, visibility: &Visibility, receipts: &[String]) -> F::Output {
    tokio::pin!(work);
    let timeout = tokio::select! {
        biased;
        done = &mut work => return done,
        t = visibility.timeout() => t,
    };
    let period = Duration::from_secs((timeout / 2).max(1));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = heartbeat.tick() => visibility.extend(receipts, timeout).await,
        }
    }
}

async fn visibility_timeout(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let attrs = sqs.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::VisibilityTimeout).send();
    match attrs.await {
        Ok(out) => {
            let v = out.attributes.and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout)?.parse().ok());
            let v = v.unwrap_or(DEFAULT_VISIBILITY);
            tracing::info!(visibility_timeout = v, "queue visibility timeout read");
            v
        }
        Err(e) => {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "cannot read the visibility timeout");
            DEFAULT_VISIBILITY
        }
    }
}
