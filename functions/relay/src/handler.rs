//! The relay's one entry point: a batch of SQS records in, the records to redeliver out.
//!
//! Per job: wait if it is early, skip recipients with a delivery record, fetch the message,
//! route (a route, the smarthost or MX), deliver, then carry out the [`plan`](crate::decide::plan). Only S3/SQS
//! failures — and jobs that cannot be read, so the DLQ gets them — become
//! `batchItemFailures`; delivery problems are handled by re-enqueueing.
//!
//! Each recipient outcome also becomes a delivery [`Event`]; a batch's events are counted into
//! the [`metrics`](crate::metrics) and published once, at the end of the batch, when an events
//! queue is configured. A Delivery is reported as soon as the remote accepted; the other
//! outcomes only once their plan was carried out in full — a job whose plan failed part-way
//! comes back from SQS and reports them then, so they are not reported twice.

use std::sync::Arc;

use crate::config::RelayConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use shared::job::{BodyType, domain_of};
use shared::metrics::Metrics;
use shared::{Job, RcptState, Recipient, queue_id};

use crate::decide::dsn;
use crate::decide::events::{self, Event};
use crate::decide::outcome::Attempt;
use crate::decide::plan::{self, Plan, Report};
use crate::deliver::Transport;
use crate::route::{self, MtaSts, Resolver};
use crate::store::{EventSink, Queue, Spool, StoreError};

/// Unix seconds, injectable for tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> i64;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        chrono::Utc::now().timestamp()
    }
}

/// Everything the handler talks to.
pub struct Deps {
    pub config: RelayConfig,
    pub spool: Box<dyn Spool>,
    pub queue: Box<dyn Queue>,
    pub resolver: Box<dyn Resolver>,
    /// MTA-STS policies of recipient domains (used when `config.mta_sts` is on).
    pub mta_sts: MtaSts,
    pub transport: Box<dyn Transport>,
    pub clock: Box<dyn Clock>,
    /// `RELAY_EVENTS_QUEUE_URL`'s queue, when set.
    pub events: Option<Box<dyn EventSink>>,
    pub metrics: Arc<Metrics>,
}

/// Why a record goes back to SQS.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("unreadable job (left for the dead-letter queue): {0}")]
    Poison(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Process a batch; the response names the records SQS should deliver again.
///
/// Records run concurrently, except that records of the same message run one after the other:
/// two copies of one job (SQS is at-least-once) must not both pass the record check before
/// either writes its record.
pub async fn handle(event: SqsEvent, deps: &Deps) -> SqsBatchResponse {
    let mut groups: Vec<(String, Vec<&SqsMessage>)> = Vec::new();
    for record in &event.records {
        let key = group_key(record);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(record),
            None => groups.push((key, vec![record])),
        }
    }
    let results = futures::future::join_all(groups.into_iter().map(|(_, records)| async move {
        let (mut failed, mut events) = (Vec::new(), Vec::new());
        for record in records {
            let id = record.message_id.clone().unwrap_or_default();
            if let Err(e) = process_record(record, deps, &mut events).await {
                tracing::error!(message_id = %id, error = %e, "job failed; SQS will redeliver it");
                failed.push(id);
            }
        }
        (failed, events)
    }))
    .await;
    let (failures, events): (Vec<_>, Vec<_>) = results.into_iter().unzip();
    let events: Vec<Event> = events.into_iter().flatten().collect();
    crate::metrics::record(&deps.metrics, &events);
    if let (Some(sink), false) = (&deps.events, events.is_empty()) {
        sink.publish(events).await;
    }
    deps.transport.end_batch().await;
    let mut response = SqsBatchResponse::default();
    response.set_failures(failures.into_iter().flatten());
    response
}

/// The queue id of a record's job, or its own id when the body is not a job.
fn group_key(record: &SqsMessage) -> String {
    #[derive(serde::Deserialize)]
    struct Id {
        queue_id: String,
    }
    let body = record.body.as_deref().unwrap_or_default();
    serde_json::from_str::<Id>(body)
        .map(|j| j.queue_id)
        .unwrap_or_else(|_| record.message_id.clone().unwrap_or_default())
}

async fn process_record(record: &SqsMessage, deps: &Deps, out: &mut Vec<Event>) -> Result<(), Failure> {
    let job = Job::from_json(record.body.as_deref().unwrap_or_default()).map_err(|e| Failure::Poison(e.to_string()))?;
    if !queue_id::is_queue_id(&job.queue_id) {
        return Err(Failure::Poison(format!("bad queue id {:?}", job.queue_id)));
    }
    process(job, deps, out).await.map_err(Failure::from)
}

/// One job; its events go to `out`.
async fn process(mut job: Job, deps: &Deps, out: &mut Vec<Event>) -> Result<(), StoreError> {
    let now = deps.clock.now();
    if let Some(delay) = plan::wait(&job, now) {
        deps.queue.send(&job, delay).await?;
        tracing::info!(queue_id = %job.queue_id, not_before = job.not_before, delay = delay.as_secs(), "not due yet; re-enqueued");
        return Ok(());
    }
    for r in job.recipients.iter_mut().filter(|r| r.state == RcptState::Pending) {
        if deps.spool.record_exists(&job.queue_id, &r.address).await? {
            r.state = RcptState::Delivered;
            tracing::info!(queue_id = %job.queue_id, recipient = %r.address, "already done (record exists); skipped");
        }
    }
    if job.pending().next().is_none() {
        return Ok(());
    }
    let message = deps.spool.get_message(&job.message_key).await?;
    let routed = route::route(&job, &deps.config, deps.resolver.as_ref(), &deps.mta_sts, now).await;
    let attempt = match routed {
        Ok(targets) => deps.transport.deliver(&targets, &job, &message).await,
        Err(verdict) => Attempt::all(&job, &verdict, None),
    };
    let now = deps.clock.now();
    let plan = plan::plan(&job, &attempt, now, &deps.config);
    log(&job, &attempt, &plan);
    let outcomes = events::build(&job, &attempt, &plan, now, &deps.config);
    let carried_out = execute(&job, &message, plan, deps, now).await;
    out.extend(outcomes.into_iter().filter(|e| carried_out.is_ok() || e.is_delivery()));
    carried_out
}

/// One line per recipient outcome, like Postfix's `status=` lines.
fn log(job: &Job, attempt: &Attempt, plan: &Plan) {
    let remote = attempt.remote.clone().unwrap_or_default();
    let addr = remote.addr.map(|a| a.to_string()).unwrap_or_default();
    for l in &plan.log {
        tracing::info!(
            queue_id = %job.queue_id,
            recipient = %l.recipient,
            relay = %remote.host,
            addr = %addr,
            tls = remote.tls,
            tls_verified = remote.tls_verified,
            tls_policy = remote.tls_policy.as_str(),
            conn_use = remote.conn_use,
            throttled = attempt.throttled.is_some(),
            reply = %l.reply,
            attempt = job.attempt + 1,
            delay = l.delay,
            status = l.status,
            "delivery"
        );
    }
}

/// Carry out a plan in the order that makes a redelivered job safe (see [`crate::decide::plan`]).
async fn execute(job: &Job, message: &[u8], plan: Plan, deps: &Deps, now: i64) -> Result<(), StoreError> {
    for r in &plan.sent {
        deps.spool.put_record_if_absent(&job.queue_id, r, "sent").await?;
    }
    for report in &plan.reports {
        queue_report(report, job, message, deps, now).await?;
    }
    if job.is_bounce() && !plan.bounced.is_empty() {
        tracing::warn!(queue_id = %job.queue_id, "undeliverable bounce dropped (null sender)");
    }
    for r in &plan.bounced {
        deps.spool.put_record_if_absent(&job.queue_id, r, "bounced").await?;
    }
    if let Some((retry, delay)) = &plan.retry {
        deps.queue.send(retry, *delay).await?;
    }
    Ok(())
}

/// Store a DSN and queue it from `<>` to the sender, through the same relay.
async fn queue_report(report: &Report, job: &Job, message: &[u8], deps: &Deps, now: i64) -> Result<(), StoreError> {
    let id = queue_id::new_queue_id();
    let bytes = dsn::build(report, job, message, &deps.config, now, &id);
    let recipients = vec![Recipient::new(job.sender.clone())];
    let dsn_job = Job {
        body: if bytes.is_ascii() { BodyType::SevenBit } else { BodyType::EightBitMime },
        smtputf8: !job.sender.is_ascii(),
        received_from: format!("{} (delivery status notification)", deps.config.helo_name),
        ..Job::first_attempt(&id, "", domain_of(&job.sender), recipients, bytes.len() as u64, now)
    };
    deps.spool.put_message(&dsn_job.message_key, bytes).await?;
    deps.queue.send(&dsn_job, std::time::Duration::ZERO).await?;
    tracing::info!(queue_id = %job.queue_id, dsn_queue_id = %id, action = report.action.as_str(),
        recipients = report.lines.len(), to = %job.sender, "delivery status notification queued");
    Ok(())
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;
