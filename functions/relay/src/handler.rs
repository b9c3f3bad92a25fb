//! The relay's one entry point: a batch of SQS records in, the records to redeliver out.
//!
//! Per job: wait if it is early; with a state table, take the job's delivery [`lease`] (another
//! worker holding it: put this copy back for a moment, see `share::lease`); read its state object
//! ([`fence`] decides: proceed, redo the tail of an unacknowledged run, or drop a superseded
//! job); look its pending recipients up in the suppression list (one request; listed ones are
//! not attempted, see [`suppress`](crate::decide::suppress)); fetch the message (gone = a sole
//! job already completed); route (a route, the smarthost or MX), deliver, list the recipients
//! whose mailbox the remote said does not exist, then carry out the
//! [`plan`](crate::decide::plan) in the order that keeps a redelivered job safe:
//!
//! 1. DSN messages to S3;
//! 2. **one** conditional state write carrying sent + bounced + deferred and the retry job
//!    (skipped on the free path, see [`record`]); on a lost race, re-read and [`merge`](record::merge);
//! 3. the DSN jobs and the retry job in one SendMessageBatch;
//! 4. a sole job with nothing pending deletes its message: the completion marker;
//! 5. the lease is released (renewed meanwhile while the job runs long).
//!
//! A crash before 2 repeats the attempt (the window every MTA has between the remote `250` and
//! its record); after 2, a redelivered copy finds `written_by` = its id and only redoes 3–4.
//! Once an attempt was made these writes are retried with backoff for `RELAY_STORE_RETRY`
//! (within the Lambda deadline), so an S3/SQS outage of a minute does not fail the job — failing
//! it would make SQS redeliver it and the message go out twice. Only S3/SQS failures — and jobs
//! that cannot be read, so the DLQ gets them — become `batchItemFailures`; delivery problems
//! are handled by re-enqueueing.
//!
//! Each recipient outcome also becomes a delivery [`Event`]; a batch's events are counted into
//! the [`metrics`](crate::metrics) and published once, at the end of the batch, when an events
//! queue is configured. A Delivery is reported as soon as the remote accepted; the other
//! outcomes only once their plan was carried out in full — a job whose plan failed part-way
//! comes back from SQS and reports them then, so they are not reported twice.

use std::sync::Arc;
use std::time::Duration;

use crate::config::RelayConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use shared::metrics::Metrics;
use shared::state::JobState;
use shared::{Job, RcptState, queue_id};
use tokio::time::Instant;

use crate::decide::backoff::store_retry_wait;
use crate::decide::dsn;
use crate::decide::events::{self, Event};
use crate::decide::fence::{self, Check};
use crate::decide::plan::{self, Plan};
use crate::decide::record;
use crate::decide::suppress;
use crate::deliver::Transport;
use crate::route::{self, MtaSts, Resolver};
use crate::share::lease::{self, Lease, Leases, Outcome};
use crate::store::{EventSink, Expect, Queue, Spool, StoreError, Stored};
use crate::suppression;
use crate::vocab::Attempt;
use shared::suppression::SuppressionList;

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
    /// The suppression list in `STATE_TABLE`, when set.
    pub suppression: Option<Box<dyn SuppressionList>>,
    /// Delivery leases in the state table (`STATE_TABLE`); `None`: each worker on its own.
    pub leases: Option<Leases>,
}

/// Why a record goes back to SQS.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("unreadable job (left for the dead-letter queue): {0}")]
    Poison(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Time kept back from a Lambda deadline for answering the batch.
const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

/// Process a batch; the response names the records SQS should deliver again.
///
/// Records run concurrently, except that records of the same message run one after the other:
/// two copies of one job (SQS is at-least-once) must not both pass the state check before
/// either writes its state.
pub async fn handle(event: SqsEvent, deps: &Deps) -> SqsBatchResponse {
    handle_until(event, deps, None).await
}

/// [`handle`] with a hard deadline (the Lambda invocation's): store writes after a delivery are
/// retried until `RELAY_STORE_RETRY` has passed or the deadline is near, whichever comes first.
pub async fn handle_until(event: SqsEvent, deps: &Deps, deadline: Option<Instant>) -> SqsBatchResponse {
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
            if let Err(e) = process_record(record, deps, deadline, &mut events).await {
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

async fn process_record(
    record: &SqsMessage,
    deps: &Deps,
    deadline: Option<Instant>,
    out: &mut Vec<Event>,
) -> Result<(), Failure> {
    let job = Job::from_json(record.body.as_deref().unwrap_or_default()).map_err(|e| Failure::Poison(e.to_string()))?;
    if !queue_id::is_queue_id(&job.queue_id) {
        return Err(Failure::Poison(format!("bad queue id {:?}", job.queue_id)));
    }
    process(job, deps, deadline, out).await.map_err(Failure::from)
}

/// One job; its events go to `out`.
async fn process(job: Job, deps: &Deps, deadline: Option<Instant>, out: &mut Vec<Event>) -> Result<(), StoreError> {
    let now = deps.clock.now();
    if let Some(delay) = plan::wait(&job, now) {
        deps.queue.send(&job, delay).await?;
        tracing::info!(queue_id = %job.queue_id, not_before = job.not_before, delay = delay.as_secs(), "not due yet; re-enqueued");
        return Ok(());
    }
    let Some(leases) = &deps.leases else { return run(job, deps, deadline, out).await };
    // Under Lambda the lease ends with the invocation (plus a margin), in the clock's terms.
    let deadline_ms = deadline.map(|d| now * 1000 + d.saturating_duration_since(Instant::now()).as_millis() as i64);
    match leases.take(&job, queue_id::new_queue_id(), now * 1000, deadline_ms).await {
        Outcome::Taken(mut held) => {
            let done = renewing(run(job.clone(), deps, deadline, out), leases, &mut held, deps, deadline_ms).await;
            if let Err(e) = leases.release(held).await {
                tracing::warn!(queue_id = %job.queue_id, error = %e, "lease not released; it lapses by itself");
            }
            done
        }
        Outcome::Held { defer, holder } => {
            deps.queue.send(&job, defer).await?;
            tracing::info!(queue_id = %job.queue_id, job_id = %job.id(), domain = %job.domain,
                holder = holder.as_ref().and_then(|h| h.note.get("job_id")).map(String::as_str).unwrap_or("unknown"),
                delay = defer.as_secs(), "being delivered by another worker; re-enqueued");
            Ok(())
        }
        Outcome::Unavailable(e) => {
            tracing::warn!(queue_id = %job.queue_id, error = %e, "state table unreachable: delivering without a lease");
            run(job, deps, deadline, out).await
        }
    }
}

/// `work` (a job under `held`), renewing the lease every [`lease::RENEW_EVERY`] until it is done.
async fn renewing<F: std::future::Future>(
    work: F,
    leases: &Leases,
    held: &mut Lease,
    deps: &Deps,
    deadline_ms: Option<i64>,
) -> F::Output {
    tokio::pin!(work);
    let every = lease::RENEW_EVERY;
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = tick.tick() => match leases.renew(held, deps.clock.now() * 1000, deadline_ms).await {
                Ok(true) => {}
                Ok(false) => tracing::error!(owner = held.owner(), "lease lapsed and was taken by another worker"),
                Err(e) => tracing::warn!(error = %e, "lease not renewed"),
            },
        }
    }
}

/// One job under its lease (or without one): from the state read on.
async fn run(mut job: Job, deps: &Deps, deadline: Option<Instant>, out: &mut Vec<Event>) -> Result<(), StoreError> {
    let now = deps.clock.now();
    let id = job.id();
    let stored = deps.spool.get_state(&job.queue_id, &job.domain).await?;
    match fence::check(stored.as_ref().map(|s| &s.state), &id) {
        Check::Proceed => {}
        Check::Redo => {
            return redo(&job, stored.expect("redo implies a state"), deps, Retrier::new(deps, deadline)).await;
        }
        Check::Superseded => {
            let state = stored.as_ref().map(|s| &s.state);
            tracing::info!(queue_id = %job.queue_id, job_id = %id, domain = %job.domain,
                expected = state.and_then(|s| s.job_id.as_deref()).unwrap_or("none"),
                written_by = state.map(|s| s.written_by.as_str()).unwrap_or_default(),
                "superseded (cancelled, brought forward or followed by a newer job); dropped");
            return Ok(());
        }
    }
    if let Some(s) = &stored {
        for r in fence::skip_final(&mut job, &s.state) {
            tracing::info!(queue_id = %job.queue_id, recipient = %r, "already final in the job's state; skipped");
        }
    }
    if job.v == 1 {
        legacy_records(&mut job, deps).await?;
    }
    if job.pending().next().is_none() {
        return Ok(());
    }
    let message = match deps.spool.get_message(&job.message_key).await? {
        Some(m) => m,
        None if stored.is_none() && job.is_sole() => {
            tracing::info!(queue_id = %job.queue_id, job_id = %id, "already completed (message deleted); acknowledged");
            return Ok(());
        }
        None => return Err(StoreError::new("GetObject", &job.message_key, "no such message")),
    };
    let listed = suppression::listed(&job, deps.suppression.as_deref()).await;
    let (to_deliver, suppressed) = suppress::split(&job, &listed);
    let attempt = if to_deliver.pending().next().is_none() {
        Attempt::default()
    } else {
        match route::route(&to_deliver, &deps.config, deps.resolver.as_ref(), &deps.mta_sts, now).await {
            Ok(targets) => deps.transport.deliver(&targets, &to_deliver, &message).await,
            Err(verdict) => Attempt::all(&to_deliver, &verdict, None),
        }
    };
    let attempt = suppress::join(&job, attempt, suppressed);
    let now = deps.clock.now();
    let gone = suppress::additions(&job, &attempt, deps.config.suppression, now);
    suppression::add(&job, gone, deps.suppression.as_deref()).await;
    let plan = plan::plan(&job, &attempt, now, &deps.config);
    log(&job, &attempt, &plan);
    let outcomes = events::build(&job, &attempt, &plan, now, &deps.config);
    let mut recorded = false;
    let retrier = Retrier::new(deps, deadline);
    let carried_out = execute(&job, &message, &attempt, plan, stored, deps, retrier, now, &mut recorded).await;
    // Once the state is written the outcomes stand: a redelivered copy only redoes the tail and
    // reports nothing, so they are reported now.
    out.extend(outcomes.into_iter().filter(|e| carried_out.is_ok() || recorded || e.is_delivery()));
    carried_out
}

/// Schema-1 jobs were guarded by per-recipient records: skip recipients that have one.
/// (Remove once no v1 job can be in flight: see the relay README.)
async fn legacy_records(job: &mut Job, deps: &Deps) -> Result<(), StoreError> {
    for r in job.recipients.iter_mut().filter(|r| r.state == RcptState::Pending) {
        if deps.spool.record_exists(&job.queue_id, &r.address).await? {
            r.state = RcptState::Delivered;
            tracing::info!(queue_id = %job.queue_id, recipient = %r.address, "already done (legacy record exists); skipped");
        }
    }
    Ok(())
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

/// Retries of store calls after a delivery: backoff until the job's deadline.
struct Retrier {
    until: Instant,
}

impl Retrier {
    fn new(deps: &Deps, hard: Option<Instant>) -> Self {
        let soft = Instant::now() + deps.config.store_retry;
        let until = match hard {
            Some(h) => soft.min(h.checked_sub(DEADLINE_MARGIN).unwrap_or(h)),
            None => soft,
        };
        Self { until }
    }

    /// After the `failures`-th failure of a call: wait and return true to try again, or false
    /// when the deadline has come.
    async fn again(&self, failures: u32, e: &StoreError) -> bool {
        let Some(wait) = store_retry_wait(failures, self.until.saturating_duration_since(Instant::now())) else {
            return false;
        };
        tracing::warn!(op = e.op, target = %e.target, error = %e.reason, failures, retry_in_ms = wait.as_millis() as u64,
            "store call failed after delivery; retrying");
        tokio::time::sleep(wait).await;
        true
    }

    /// `call` until it succeeds or the deadline has come.
    async fn run<T, F, Fut>(&self, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut failures = 0;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    failures += 1;
                    if !self.again(failures, &e).await {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Carry out an attempt's plan in the order described at the top of this file.
#[allow(clippy::too_many_arguments)]
async fn execute(
    job: &Job,
    message: &[u8],
    attempt: &Attempt,
    plan: Plan,
    stored: Option<Stored>,
    deps: &Deps,
    retrier: Retrier,
    now: i64,
    recorded: &mut bool,
) -> Result<(), StoreError> {
    if job.is_bounce() && !plan.bounced.is_empty() {
        tracing::warn!(queue_id = %job.queue_id, "undeliverable bounce dropped (null sender)");
    }
    let reports: Vec<(Job, Vec<u8>)> = plan
        .reports
        .iter()
        .map(|r| dsn::report_job(r, job, message, &deps.config, now, &queue_id::new_queue_id()))
        .collect();
    for (dsn_job, bytes) in &reports {
        let meta = dsn::report_meta(dsn_job);
        retrier.run(|| deps.spool.put_message(&dsn_job.message_key, bytes.clone(), &meta)).await?;
    }
    let report_jobs: Vec<Job> = reports.iter().map(|(j, _)| j.clone()).collect();
    let prev = stored.as_ref().map(|s| &s.state);
    let effects = record::after_attempt(prev, job, attempt, &plan, &report_jobs, &queue_id::new_queue_id(), now);
    let ours = effects.retry.as_ref().map(|r| r.job_id.clone());
    let written = match effects.state {
        Some(state) => Some(write_state(job, state, stored.map(|s| s.etag), deps, &retrier).await?),
        None => None,
    };
    *recorded = written.is_some();
    if let Some(state) = &written {
        send_all(record::sends(state, ours.as_deref(), now), deps, &retrier).await?;
    }
    for (r, (dsn_job, _)) in plan.reports.iter().zip(&reports) {
        tracing::info!(queue_id = %job.queue_id, dsn_queue_id = %dsn_job.queue_id, action = r.action.as_str(),
            recipients = r.lines.len(), to = %job.sender, "delivery status notification queued");
    }
    if record::completes(job, written.as_ref()) {
        retrier.run(|| deps.spool.delete_message(&job.message_key)).await?;
        tracing::info!(queue_id = %job.queue_id, job_id = %job.id(), "completed; message deleted");
    }
    Ok(())
}

/// Write `state` conditionally; when someone wrote first, re-read, merge, and write again.
async fn write_state(
    job: &Job,
    mut state: JobState,
    mut etag: Option<String>,
    deps: &Deps,
    retrier: &Retrier,
) -> Result<JobState, StoreError> {
    let id = job.id();
    for _ in 0..MAX_STATE_RACES {
        let expect = etag.as_deref().map_or(Expect::Absent, Expect::Etag);
        if retrier.run(|| deps.spool.put_state(&state, expect)).await?.is_some() {
            return Ok(state);
        }
        let theirs = retrier.run(|| deps.spool.get_state(&job.queue_id, &job.domain)).await?;
        match theirs {
            Some(t) => {
                tracing::info!(queue_id = %job.queue_id, job_id = %id, written_by = %t.state.written_by,
                    "state changed meanwhile; merged");
                state = record::merge(&state, &t.state, &id);
                etag = Some(t.etag);
            }
            None => etag = None,
        }
    }
    Err(StoreError::new("PutObject", &shared::keys::state_key(&job.queue_id, &job.domain), "state keeps changing"))
}

/// Conditional writes lost in a row before the job is given back to SQS.
const MAX_STATE_RACES: usize = 8;

/// Enqueue `jobs` in batches, sending again only what did not go out.
async fn send_all(mut jobs: Vec<(Job, Duration)>, deps: &Deps, retrier: &Retrier) -> Result<(), StoreError> {
    let mut failures = 0;
    while !jobs.is_empty() {
        match deps.queue.send_batch(&jobs).await {
            Ok(()) => break,
            Err(e) => {
                jobs = e.unsent.iter().filter_map(|&i| jobs.get(i).cloned()).collect();
                failures += 1;
                if !retrier.again(failures, &e.error).await {
                    return Err(e.error);
                }
            }
        }
    }
    Ok(())
}

/// A copy of a job that already wrote its state: do what follows the state write again. A retry
/// job is re-issued under a fresh id (one conditional write), so the first copy — if it went
/// out after all — finds itself superseded instead of running beside this one.
async fn redo(job: &Job, stored: Stored, deps: &Deps, retrier: Retrier) -> Result<(), StoreError> {
    let now = deps.clock.now();
    let mut state = stored.state;
    let mut ours = None;
    if let (Some(_), Some(retry)) = (&state.job_id, &state.retry) {
        let fresh = Job { job_id: queue_id::new_queue_id(), ..retry.clone() };
        let next = JobState { job_id: Some(fresh.job_id.clone()), retry: Some(fresh), updated: now, ..state.clone() };
        if retrier.run(|| deps.spool.put_state(&next, Expect::Etag(&stored.etag))).await?.is_none() {
            let key = shared::keys::state_key(&job.queue_id, &job.domain);
            return Err(StoreError::new("PutObject", &key, "state changed during a redo; SQS will redeliver"));
        }
        ours = next.job_id.clone();
        state = next;
    }
    send_all(record::sends(&state, ours.as_deref(), now), deps, &retrier).await?;
    if record::completes(job, Some(&state)) {
        retrier.run(|| deps.spool.delete_message(&job.message_key)).await?;
    }
    tracing::info!(queue_id = %job.queue_id, job_id = %job.id(), next_job_id = ours.as_deref().unwrap_or("none"),
        "processed before but not acknowledged; tail redone");
    Ok(())
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;
