//! The subcommands: each reads what it needs through [`Store`] (and the relay's own S3/SQS
//! edges), decides with the pure parts ([`crate::trace`], [`crate::fence`]) and prints a table
//! or one JSON object.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_sqs::types::QueueAttributeName;
use base64::Engine;
use relay::decide::dsn;
use relay::decide::plan::{Action, Report, ReportLine};
use relay::store::{Expect, Queue, Spool, Stored};
use relay::vocab::Verdict;
use serde_json::json;
use shared::job::domain_of;
use shared::state::JobState;
use shared::{Job, Recipient, queue_id};

use crate::config::CtlConfig;
use crate::fence;
use crate::render::{self, Out, age};
use crate::spool::Store;
use crate::trace;

/// Spooled messages looked at, oldest first, to find the oldest pending one.
const OLDEST_SCAN: usize = 1000;
/// Conditional writes lost in a row before `cancel` / `retry` give up.
const RACES: usize = 5;

fn count(a: &std::collections::HashMap<QueueAttributeName, String>, n: QueueAttributeName) -> u64 {
    a.get(&n).and_then(|v| v.parse().ok()).unwrap_or_default()
}

/// `queue`: SQS's approximate counts of the queue and its DLQ, and the age of the oldest message
/// with work left. SQS has no such attribute (and a re-enqueued retry is a new SQS message), so
/// it comes from the spool: queue ids are ULIDs, which sort by time, so the first spooled
/// message in queue-id order ([`Store::spooled`]) that still has a job pending is the oldest.
pub async fn queue(store: &Store, out: &Out, as_json: bool, now: i64) -> Result<()> {
    use QueueAttributeName::*;
    let names =
        [ApproximateNumberOfMessages, ApproximateNumberOfMessagesNotVisible, ApproximateNumberOfMessagesDelayed];
    let q = store.attributes(&store.queue_url, &names).await?;
    let (_, dlq_url, _) = store.dlq().await?;
    let d = store.attributes(&dlq_url, &names).await?;
    let dlq: u64 = names.iter().map(|n| count(&d, n.clone())).sum();
    let mut oldest = None;
    for id in store.spooled(OLDEST_SCAN).await? {
        let info = store.message(&id).await?;
        let states: Vec<JobState> = store.states(&id).await?.into_iter().map(|s| s.state).collect();
        if trace::pending(info.as_ref().and_then(|i| i.meta.as_ref()).map(|m| m.jobs), &states) {
            oldest = queue_id::created_at(&id).map(|t| (id, (now - t).max(0)));
            break;
        }
    }
    let (queued, in_flight, delayed) = (
        count(&q, ApproximateNumberOfMessages),
        count(&q, ApproximateNumberOfMessagesNotVisible),
        count(&q, ApproximateNumberOfMessagesDelayed),
    );
    if as_json {
        let v = json!({"queued": queued, "in_flight": in_flight, "delayed": delayed, "dlq": dlq,
            "oldest_age_s": oldest.as_ref().map(|o| o.1), "oldest_queue_id": oldest.as_ref().map(|o| &o.0)});
        return Ok(render::json(out, &v)?);
    }
    let oldest = oldest.map(|(id, a)| format!("{} ({id})", age(a))).unwrap_or_else(|| "-".into());
    let rows = [
        ("queued", queued.to_string()),
        ("in flight", in_flight.to_string()),
        ("delayed", delayed.to_string()),
        ("dead-letter", dlq.to_string()),
        ("oldest", oldest),
    ];
    Ok(render::pairs(out, &rows)?)
}

/// `trace <queue id>`.
pub async fn trace(store: &Store, id: &str, out: &Out, as_json: bool, now: i64) -> Result<()> {
    let info = store.message(id).await?;
    let states: Vec<JobState> = store.states(id).await?.into_iter().map(|s| s.state).collect();
    let t = trace::trace(id, info.as_ref(), &states).ok_or_else(|| anyhow!("no message with queue id {id}"))?;
    if as_json { Ok(render::json(out, &t)?) } else { Ok(render::trace(out, &t, now)?) }
}

/// `show <queue id>`: the stored bytes, exactly (`--envelope` first prints the envelope).
pub async fn show(store: &Store, id: &str, envelope: bool, out: &Out, as_json: bool) -> Result<()> {
    let info = store.message(id).await?.ok_or_else(|| anyhow!("no message with queue id {id}"))?;
    let bytes = store.message_bytes(&info).await?;
    let meta = info.meta.clone().unwrap_or_default();
    if as_json {
        let v = json!({"queue_id": id, "size": bytes.len(), "sender": info.meta.as_ref().map(|m| &m.sender),
            "recipients": info.meta.as_ref().map(|m| &m.recipients), "deleted": info.deleted_at.is_some(),
            "message_base64": base64::engine::general_purpose::STANDARD.encode(&bytes)});
        return Ok(render::json(out, &v)?);
    }
    if envelope {
        let mut head = format!("*** ENVELOPE {id} ***\nsender: <{}>\n", meta.sender);
        for r in &meta.recipients {
            head.push_str(&format!("recipient: <{r}>\n"));
        }
        if meta.omitted > 0 {
            head.push_str(&format!("({} more recipients)\n", meta.omitted));
        }
        head.push_str("*** MESSAGE ***\n");
        out.bytes(head.as_bytes())?;
    }
    Ok(out.bytes(&bytes)?)
}

/// `redrive`: a StartMessageMoveTask from the DLQ back to the queue, followed to its end.
pub async fn redrive(store: &Store, out: &Out, as_json: bool) -> Result<()> {
    let (queue_arn, _, dlq_arn) = store.dlq().await?;
    let task = store
        .sqs
        .start_message_move_task()
        .source_arn(&dlq_arn)
        .destination_arn(&queue_arn)
        .send()
        .await
        .map_err(|e| anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))
        .context("StartMessageMoveTask")?;
    let handle = task.task_handle.unwrap_or_default();
    let moved = loop {
        let tasks = store
            .sqs
            .list_message_move_tasks()
            .source_arn(&dlq_arn)
            .max_results(10)
            .send()
            .await
            .map_err(|e| anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)))
            .context("ListMessageMoveTasks")?;
        let ours =
            tasks.results().iter().find(|t| t.task_handle() == Some(handle.as_str())).or(tasks.results().first());
        match ours.and_then(|t| t.status()) {
            Some("COMPLETED") => break ours.map(|t| t.approximate_number_of_messages_moved()).unwrap_or_default(),
            Some(s @ ("FAILED" | "CANCELLED")) => {
                bail!("the move task ended {s}: {}", ours.and_then(|t| t.failure_reason()).unwrap_or("no reason given"))
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    if as_json {
        Ok(render::json(out, &json!({"moved": moved}))?)
    } else {
        Ok(out.line(&format!("moved {moved} jobs from the dead-letter queue back to the queue"))?)
    }
}

/// The domains of a message's jobs: from its metadata and from its state objects.
fn domains(meta: Option<&shared::meta::MessageMeta>, states: &[Stored]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let all = meta.map(|m| m.recipients.iter().map(|a| domain_of(a)).collect::<Vec<_>>()).unwrap_or_default();
    for d in all.into_iter().chain(states.iter().map(|s| s.state.domain.clone())) {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// Read-modify-write of one job's state with `change`, retried when someone wrote between.
async fn rewrite<T>(
    store: &Store,
    id: &str,
    domain: &str,
    base: impl Fn() -> Option<JobState>,
    change: impl Fn(&JobState) -> Option<(JobState, T)>,
) -> Result<Option<T>> {
    let spool = store.spool();
    for _ in 0..RACES {
        let stored = spool.get_state(id, domain).await?;
        let Some(current) = stored.as_ref().map(|s| s.state.clone()).or_else(&base) else { return Ok(None) };
        let Some((next, result)) = change(&current) else { return Ok(None) };
        let expect = stored.as_ref().map_or(Expect::Absent, |s| Expect::Etag(&s.etag));
        if spool.put_state(&next, expect).await?.is_some() {
            return Ok(Some(result));
        }
    }
    bail!("the state of {id} for {domain} keeps changing; try again")
}

/// `cancel <queue id> [--bounce]`: every pending recipient cancelled, every job of the message
/// fenced; with `--bounce` the sender gets a failure DSN for them.
pub async fn cancel(
    store: &Store,
    cfg: &CtlConfig,
    id: &str,
    bounce: bool,
    out: &Out,
    as_json: bool,
    now: i64,
) -> Result<()> {
    let info = store.message(id).await?;
    let states = store.states(id).await?;
    if info.is_none() && states.is_empty() {
        bail!("no message with queue id {id}");
    }
    let meta = info.as_ref().and_then(|i| i.meta.clone());
    let by = format!("relayctl-{}", queue_id::new_queue_id());
    let mut cancelled: Vec<(JobState, Vec<String>)> = Vec::new();
    for domain in domains(meta.as_ref(), &states) {
        let base = || meta.as_ref().map(|m| fence::from_meta(id, &domain, m, now));
        let change = |s: &JobState| fence::cancel(s, &by, now).map(|(n, a)| (n.clone(), (n, a)));
        if let Some(done) = rewrite(store, id, &domain, base, change).await? {
            cancelled.push(done);
        }
    }
    let addresses: Vec<String> = cancelled.iter().flat_map(|(_, a)| a.clone()).collect();
    let mut dsn_id = None;
    if bounce && !addresses.is_empty() {
        dsn_id = bounce_cancelled(store, cfg, id, info.as_ref(), &cancelled, now).await?;
    }
    if as_json {
        return Ok(render::json(out, &json!({"queue_id": id, "cancelled": addresses, "bounce_queue_id": dsn_id}))?);
    }
    if addresses.is_empty() {
        return Ok(out.line(&format!("{id}: nothing pending to cancel"))?);
    }
    out.line(&format!("{id}: cancelled {}", addresses.join(", ")))?;
    match dsn_id {
        Some(d) => Ok(out.line(&format!("{id}: delivery status notification queued as {d}"))?),
        None if bounce => Ok(out.line(&format!("{id}: no notification (null sender)"))?),
        None => Ok(()),
    }
}

/// Queue one failure DSN for the cancelled recipients (never to `<>`), like the relay's own.
async fn bounce_cancelled(
    store: &Store,
    cfg: &CtlConfig,
    id: &str,
    info: Option<&crate::spool::MessageInfo>,
    cancelled: &[(JobState, Vec<String>)],
    now: i64,
) -> Result<Option<String>> {
    let (first, _) = &cancelled[0];
    if first.sender.is_empty() {
        return Ok(None);
    }
    let original = match info {
        Some(i) => store.message_bytes(i).await?,
        None => Vec::new(),
    };
    // The envelope the relay keeps (ORCPT, RET, ENVID) is in a pending retry job, when there is one.
    let template = cancelled.iter().find_map(|(s, _)| s.retry.clone());
    let rcpts: Vec<Recipient> =
        cancelled.iter().flat_map(|(_, a)| a.iter().map(|a| Recipient::new(a.clone()))).collect();
    let job = template.unwrap_or_else(|| {
        Job::first_attempt(id, first.sender.clone(), first.domain.clone(), rcpts.clone(), first.size, first.first_seen)
    });
    let lines = rcpts
        .iter()
        .map(|r| ReportLine {
            address: r.address.clone(),
            orcpt: job.recipients.iter().find(|j| j.address == r.address).and_then(|j| j.orcpt.clone()),
            verdict: Verdict::failed("5.0.0", "delivery cancelled by the administrator"),
        })
        .collect();
    let report = Report { action: Action::Failed, lines, remote: None, retry_until: None };
    let dsn_id = queue_id::new_queue_id();
    let (dsn_job, bytes) = dsn::report_job(&report, &job, &original, &cfg.relay_config(), now, &dsn_id);
    store.spool().put_message(&dsn_job.message_key, bytes, &dsn::report_meta(&dsn_job)).await?;
    store.queue().send(&dsn_job, Duration::ZERO).await?;
    Ok(Some(dsn_id))
}

/// `retry <queue id>`: every deferred job re-issued under a fresh id, due now; the copy waiting
/// in SQS is superseded, so no recipient is delivered twice.
pub async fn retry(store: &Store, id: &str, out: &Out, as_json: bool, now: i64) -> Result<()> {
    let states = store.states(id).await?;
    if states.is_empty() && store.message(id).await?.is_none() {
        bail!("no message with queue id {id}");
    }
    let by = format!("relayctl-{}", queue_id::new_queue_id());
    let mut retried = Vec::new();
    for s in &states {
        let fresh = queue_id::new_queue_id();
        let change = |st: &JobState| fence::bring_forward(st, &by, &fresh, now).map(|(n, j, a)| (n, (j, a)));
        if let Some((job, addrs)) = rewrite(store, id, &s.state.domain, || None, change).await? {
            store.queue().send(&job, Duration::ZERO).await?;
            retried.extend(addrs);
        }
    }
    if as_json {
        return Ok(render::json(out, &json!({"queue_id": id, "retried": retried}))?);
    }
    if retried.is_empty() {
        Ok(out.line(&format!("{id}: nothing deferred"))?)
    } else {
        Ok(out.line(&format!("{id}: retrying now {}", retried.join(", ")))?)
    }
}
