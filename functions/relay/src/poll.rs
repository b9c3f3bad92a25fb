//! `relay poll`: the Lambda handler driven by a long-poll SQS consumer, for running the relay
//! as a plain process (containers, tests). Receive up to 10, handle them, delete all but the
//! reported failures (SQS redelivers those after the visibility timeout). While a batch is in
//! hand its visibility is extended every half timeout, so a slow server never lets a second
//! consumer pick up a job that is still being delivered. The queue's visibility timeout is read
//! while the first receive is already waiting, so start-up costs no round trip. SIGTERM or
//! SIGINT stops the loop between batches: the batch in hand is finished first, and jobs a long
//! poll receives while the signal arrives are handed back at once rather than left invisible.

use std::collections::HashSet;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message, QueueAttributeName,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::handler::{Deps, handle};

/// The SQS event the Lambda service would have built for these messages.
pub fn to_event(messages: &[Message]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|m| {
            let mut r = SqsMessage::default();
            r.message_id = m.message_id.clone();
            r.receipt_handle = m.receipt_handle.clone();
            r.body = m.body.clone();
            r
        })
        .collect();
    event
}

/// Poll until SIGTERM/SIGINT.
pub async fn run(deps: &Deps, sqs: &aws_sdk_sqs::Client) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let url = &deps.config.spool.queue_url;
    let wait = deps.config.poll_wait.as_secs() as i32;
    let mut lookup = tokio::spawn(visibility_timeout(sqs.clone(), url.clone()));
    let mut visibility = None;
    tracing::info!(queue = %url, "polling");
    loop {
        let receive = sqs.receive_message().queue_url(url).max_number_of_messages(10).wait_time_seconds(wait).send();
        tokio::pin!(receive);
        let received = tokio::select! {
            biased;
            _ = term.recv() => {
                release_pending(sqs, url, &mut receive, wait).await;
                break;
            }
            _ = int.recv() => {
                release_pending(sqs, url, &mut receive, wait).await;
                break;
            }
            r = &mut receive => r,
        };
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "ReceiveMessage failed");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let visibility = match visibility {
            Some(v) => v,
            None => *visibility.insert((&mut lookup).await.unwrap_or(30)),
        };
        let work = handle(to_event(&messages), deps);
        tokio::pin!(work);
        let period = Duration::from_secs((visibility / 2).max(1));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let response = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = heartbeat.tick() => extend(sqs, url, &messages, visibility).await,
            }
        };
        let failed: HashSet<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        delete_done(sqs, url, &messages, &failed).await;
    }
    tracing::info!("stopping on signal");
    deps.transport.shutdown().await;
    Ok(())
}

/// On a signal during a long poll: let the receive in flight finish (it may already hold jobs
/// SQS counts as received) and hand whatever it got straight back (visibility 0), instead of
/// leaving those jobs invisible for the visibility timeout after this process is gone.
async fn release_pending<F>(sqs: &aws_sdk_sqs::Client, url: &str, receive: &mut std::pin::Pin<&mut F>, wait: i32)
where
    F: std::future::Future<
            Output = Result<
                aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput,
                aws_sdk_sqs::error::SdkError<aws_sdk_sqs::operation::receive_message::ReceiveMessageError>,
            >,
        >,
{
    let limit = Duration::from_secs(wait.max(0) as u64 + 2);
    let Ok(Ok(out)) = tokio::time::timeout(limit, receive.as_mut()).await else { return };
    let messages = out.messages.unwrap_or_default();
    if !messages.is_empty() {
        extend(sqs, url, &messages, 0).await;
        tracing::info!(jobs = messages.len(), "stopping: jobs received during shutdown handed back");
    }
}

/// The queue's visibility timeout in seconds (30, SQS's default, if it cannot be read).
async fn visibility_timeout(sqs: aws_sdk_sqs::Client, url: String) -> u64 {
    let attrs =
        sqs.get_queue_attributes().queue_url(&url).attribute_names(QueueAttributeName::VisibilityTimeout).send();
    match attrs.await {
        Ok(out) => {
            let v = out.attributes.and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout)?.parse().ok());
            let v = v.unwrap_or(30);
            tracing::info!(visibility_timeout = v, "queue visibility timeout read");
            v
        }
        Err(e) => {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "cannot read the visibility timeout");
            30
        }
    }
}

/// Keep the batch in hand invisible for another `seconds`.
async fn extend(sqs: &aws_sdk_sqs::Client, url: &str, messages: &[Message], seconds: u64) {
    let entries: Vec<_> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .set_receipt_handle(m.receipt_handle.clone())
                .visibility_timeout(seconds.min(43_200) as i32)
                .build()
                .ok()
        })
        .collect();
    let sent = sqs.change_message_visibility_batch().queue_url(url).set_entries(Some(entries)).send().await;
    if let Err(e) = sent {
        tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "ChangeMessageVisibilityBatch failed");
    }
}

async fn delete_done(sqs: &aws_sdk_sqs::Client, url: &str, messages: &[Message], failed: &HashSet<&str>) {
    let entries: Vec<_> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| !failed.contains(m.message_id.as_deref().unwrap_or_default()))
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .set_receipt_handle(m.receipt_handle.clone())
                .build()
                .ok()
        })
        .collect();
    if entries.is_empty() {
        return;
    }
    match sqs.delete_message_batch().queue_url(url).set_entries(Some(entries)).send().await {
        Ok(out) if !out.failed.is_empty() => {
            tracing::error!(failed = out.failed.len(), "DeleteMessageBatch left messages; they will be redelivered")
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "DeleteMessageBatch failed"),
    }
}
