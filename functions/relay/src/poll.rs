//! `relay poll`: the Lambda handler driven by a long-poll SQS consumer, for running the relay
//! as a plain process (containers, tests). Receive up to 10, handle them, delete all but the
//! reported failures (SQS redelivers those after the visibility timeout). While a batch is in
//! hand its visibility is extended every half timeout ([`heartbeat`](crate::heartbeat)), so a
//! slow server never lets a second consumer pick up a job that is still being delivered. The
//! queue's visibility timeout is read while the first batch already runs, so start-up costs no
//! round trip. SIGTERM or
//! SIGINT stops the loop between batches: the batch in hand is finished first, and jobs a long
//! poll receives while the signal arrives are handed back at once rather than left invisible.

use std::collections::HashSet;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message};
use tokio::signal::unix::{SignalKind, signal};

use crate::handler::{Deps, handle};
use crate::heartbeat::{self, Visibility};

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
    let visibility = Visibility::new(sqs.clone(), url.clone());
    tracing::info!(queue = %url, "polling");
    loop {
        let receive = sqs.receive_message().queue_url(url).max_number_of_messages(10).wait_time_seconds(wait).send();
        tokio::pin!(receive);
        let received = tokio::select! {
            biased;
            _ = term.recv() => {
                release_pending(&visibility, &mut receive, wait).await;
                break;
            }
            _ = int.recv() => {
                release_pending(&visibility, &mut receive, wait).await;
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
        let event = to_event(&messages);
        let receipts = heartbeat::receipts(&event);
        let response = heartbeat::keep_invisible(handle(event, deps), &visibility, &receipts).await;
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
async fn release_pending<F>(visibility: &Visibility, receive: &mut std::pin::Pin<&mut F>, wait: i32)
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
        visibility.extend(&heartbeat::receipts(&to_event(&messages)), 0).await;
        tracing::info!(jobs = messages.len(), "stopping: jobs received during shutdown handed back");
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
