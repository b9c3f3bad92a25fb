//! The handler against the in-memory spool and queue and fakes of DNS and SMTP, with a clock the
//! tests move: completion by delete, state writes, the fence, redo, the 412 merge, and the order
//! of side effects with the store failing at each step.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use shared::state::Delivery;
use shared::suppression::MemoryList;
use shared::{Job, Reply, keys};

use super::*;
use crate::route::{Lookup, Target};
use crate::store::memory::{Ledger, MemoryEvents, MemoryQueue, MemorySpool};
use crate::testkit::{self, FakeFetcher, QID};
use crate::vocab::TlsRequirement;
use crate::vocab::{Remote, Verdict};

const NOW: i64 = 1_800_000_000;

struct FakeDns;

#[async_trait]
impl Resolver for FakeDns {
    async fn mx(&self, domain: &str) -> Lookup<Vec<(u16, String)>> {
        match domain {
            "null.test" => Lookup::Found(vec![(0, String::new())]),
            _ => Lookup::Found(vec![(10, format!("mx.{domain}"))]),
        }
    }
    async fn ips(&self, _host: &str) -> Lookup<Vec<IpAddr>> {
        Lookup::Found(vec!["192.0.2.1".parse().unwrap()])
    }
    async fn txt(&self, name: &str) -> Lookup<Vec<String>> {
        match name {
            "_mta-sts.sts.test" | "_mta-sts.unlisted.test" => Lookup::Found(vec!["v=STSv1; id=1".into()]),
            _ => Lookup::NxDomain,
        }
    }
}

type Hook = Arc<dyn Fn() + Send + Sync>;
type Replies = HashMap<String, Vec<(u16, &'static str)>>;

/// Replies per recipient address, used up in order (then 250); records who was sent what, to
/// which targets, and the batches ended; runs `during` while "delivering" (to change the store
/// under a job's feet).
#[derive(Clone, Default)]
struct FakeSmtp {
    replies: Arc<Mutex<Replies>>,
    calls: Arc<Mutex<Vec<Vec<String>>>>,
    during: Arc<Mutex<Option<Hook>>>,
    targets: Arc<Mutex<Vec<Vec<Target>>>>,
    batches_ended: Arc<Mutex<usize>>,
}

#[async_trait]
impl Transport for FakeSmtp {
    async fn deliver(&self, targets: &[Target], job: &Job, _message: &[u8]) -> Attempt {
        let rcpts: Vec<String> = job.pending().map(|r| r.address.clone()).collect();
        self.calls.lock().unwrap().push(rcpts.clone());
        self.targets.lock().unwrap().push(targets.to_vec());
        if let Some(hook) = self.during.lock().unwrap().take() {
            hook();
        }
        let mut replies = self.replies.lock().unwrap();
        let outcomes = rcpts
            .into_iter()
            .map(|a| {
                let next = replies.get_mut(&a).filter(|v| !v.is_empty()).map(|v| v.remove(0));
                let (code, text) = next.unwrap_or((250, "2.0.0 ok"));
                (a, Verdict::from_reply(Reply::parse(code, text)))
            })
            .collect();
        let remote =
            Remote { host: targets[0].host.clone(), addr: Some(targets[0].addr), tls: true, ..Remote::default() };
        Attempt { outcomes, remote: Some(remote), throttled: None }
    }

    async fn end_batch(&self) {
        *self.batches_ended.lock().unwrap() += 1;
    }
}

struct TestClock(Arc<AtomicI64>);

impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct World {
    spool: MemorySpool,
    queue: MemoryQueue,
    ledger: Ledger,
    smtp: FakeSmtp,
    clock: Arc<AtomicI64>,
    events: MemoryEvents,
    emf: shared::metrics::Memory,
    list: MemoryList,
    deps: Deps,
}

impl World {
    fn smtp_calls(&self) -> usize {
        self.smtp.calls.lock().unwrap().len()
    }
    fn sent(&self) -> Vec<(Job, Duration)> {
        self.queue.0.lock().unwrap().clone()
    }
    fn has(&self, key: &str) -> bool {
        self.spool.0.lock().unwrap().contains_key(key)
    }
    fn state(&self, domain: &str) -> Option<shared::state::JobState> {
        self.spool.state(QID, domain)
    }
    fn at(&self, t: i64) {
        self.clock.store(t, Ordering::SeqCst);
    }
}

fn world(replies: &[(&str, u16, &'static str)]) -> World {
    world_with(replies, &[])
}

fn world_with(replies: &[(&str, u16, &'static str)], vars: &[(&str, &str)]) -> World {
    let ledger = Ledger::default();
    let spool = MemorySpool(Default::default(), ledger.clone());
    let queue = MemoryQueue(Default::default(), ledger.clone());
    let mut map = Replies::new();
    for (a, c, t) in replies {
        map.entry(a.to_string()).or_default().push((*c, *t));
    }
    let smtp = FakeSmtp { replies: Arc::new(Mutex::new(map)), ..FakeSmtp::default() };
    let clock = Arc::new(AtomicI64::new(NOW));
    let events = MemoryEvents::default();
    let (metrics, emf) = shared::metrics::Metrics::memory(crate::metrics::SERVICE, crate::metrics::METRICS);
    let list = MemoryList::default();
    let fetcher = FakeFetcher::default();
    fetcher.set("sts.test", Ok("version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n"));
    fetcher.set("unlisted.test", Ok("version: STSv1\nmode: enforce\nmx: elsewhere.test\nmax_age: 86400\n"));
    let deps = Deps {
        config: testkit::config(&[&[("RELAY_RETRY_SCHEDULE", "1m,5m")], vars].concat()),
        mta_sts: testkit::mta_sts(&spool, &fetcher),
        spool: Box::new(spool.clone()),
        queue: Box::new(queue.clone()),
        resolver: Box::new(FakeDns),
        transport: Box::new(smtp.clone()),
        clock: Box::new(TestClock(clock.clone())),
        events: Some(Box::new(events.clone())),
        metrics,
        suppression: Some(Box::new(list.clone())),
        leases: None,
    };
    spool.0.lock().unwrap().insert(keys::message_key(QID), b"Subject: hi\r\n\r\nbody\r\n".to_vec());
    World { spool, queue, ledger, smtp, clock, events, emf, list, deps }
}

fn job(domain: &str, rcpts: &[&str]) -> Job {
    testkit::job(domain, rcpts, NOW - 10)
}

fn event(bodies: &[String]) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut m = SqsMessage::default();
            m.message_id = Some(format!("m{i}"));
            m.body = Some(b.clone());
            m
        })
        .collect();
    e
}

async fn run(w: &World, jobs: &[&Job]) -> Vec<String> {
    let r = handle(event(&jobs.iter().map(|j| j.to_json()).collect::<Vec<_>>()), &w.deps).await;
    r.batch_item_failures.into_iter().map(|f| f.item_identifier).collect()
}

const MIXED: &[(&str, u16, &str)] = &[("later@b.test", 450, "4.2.0 busy"), ("no@b.test", 550, "5.1.1 unknown")];

#[tokio::test]
async fn first_attempt_success_only_deletes_and_a_duplicate_sends_nothing() {
    let w = world(&[]);
    let j = job("b.test", &["bob@b.test"]);
    assert!(run(&w, &[&j]).await.is_empty());
    assert_eq!(
        w.ledger.calls(),
        [
            format!("GetState {}", keys::state_key(QID, "b.test")),
            format!("GetMessage {}", j.message_key),
            format!("DeleteMessage {}", j.message_key),
        ],
        "one GET of the state, one of the message, a free DELETE: no PUT, no SQS send"
    );
    assert!(!w.has(&j.message_key) && w.state("b.test").is_none() && w.sent().is_empty());

    assert!(run(&w, &[&j]).await.is_empty(), "the duplicate is acknowledged");
    assert_eq!(w.smtp_calls(), 1, "the duplicate must not reach SMTP");
    assert_eq!((w.ledger.count("PutState"), w.ledger.count("SendMessageBatch")), (0, 0));
    assert_eq!(*w.smtp.batches_ended.lock().unwrap(), 2, "the transport hears the end of every batch");
}

#[tokio::test]
async fn a_job_sharing_its_message_marks_completion_with_its_state() {
    let w = world(&[]);
    let j = Job { jobs: 2, ..job("b.test", &["bob@b.test"]) };
    assert!(run(&w, &[&j]).await.is_empty());
    let s = w.state("b.test").expect("state is the marker");
    assert_eq!((s.job_id.clone(), s.written_by.clone()), (None, j.job_id.clone()));
    let bob = s.recipient("bob@b.test").unwrap();
    assert_eq!((bob.state, bob.attempts, bob.last_reply.as_deref()), (Delivery::Sent, 1, Some("250 2.0.0 ok")));
    assert_eq!(bob.remote.as_deref(), Some("mx.b.test [192.0.2.1:25]"));
    assert!(w.has(&j.message_key), "the other job still needs the message");

    assert!(run(&w, &[&j]).await.is_empty());
    assert_eq!(w.smtp_calls(), 1, "a redelivered copy finds written_by = its id and delivers nothing");
    assert!(w.sent().is_empty());
}

#[tokio::test]
async fn mixed_replies_write_one_state_then_send_dsn_and_retry_in_one_batch() {
    let w = world(MIXED);
    let j = job("b.test", &["ok@b.test", "later@b.test", "no@b.test"]);
    assert!(run(&w, &[&j]).await.is_empty());

    let ops: Vec<String> = w.ledger.calls().iter().map(|c| c.split(' ').next().unwrap().to_string()).collect();
    assert_eq!(ops, ["GetState", "GetMessage", "PutMessage", "PutState", "SendMessageBatch"], "order of side effects");
    let s = w.state("b.test").unwrap();
    let states: Vec<_> = s.recipients.iter().map(|r| (r.address.as_str(), r.state)).collect();
    assert_eq!(
        states,
        [("ok@b.test", Delivery::Sent), ("later@b.test", Delivery::Deferred), ("no@b.test", Delivery::Bounced)]
    );
    assert_eq!(s.recipient("later@b.test").unwrap().next_attempt, Some(NOW + 60));
    assert_eq!(s.recipient("no@b.test").unwrap().last_reply.as_deref(), Some("550 5.1.1 unknown"));

    let sent = w.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let (dsn_job, d0) = &sent[0];
    assert_eq!(
        (dsn_job.sender.as_str(), dsn_job.domain.as_str(), *d0, dsn_job.jobs),
        ("", "a.test", Duration::ZERO, 1)
    );
    assert_eq!(s.reports, std::slice::from_ref(dsn_job), "the state lists the DSN job for a redo");
    let dsn = String::from_utf8(w.spool.0.lock().unwrap()[&dsn_job.message_key].clone()).unwrap();
    assert!(dsn.contains("Final-Recipient: rfc822; no@b.test") && dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(!dsn.contains("later@b.test"), "the deferred recipient is not in the bounce");

    let (retry, d1) = &sent[1];
    assert_eq!(retry.recipients.iter().map(|r| r.address.as_str()).collect::<Vec<_>>(), ["later@b.test"]);
    assert_eq!((retry.attempt, retry.not_before, *d1), (1, NOW + 60, Duration::from_secs(60)));
    assert_ne!(retry.job_id, j.job_id, "each retry has its own id");
    assert_eq!(s.job_id.as_deref(), Some(retry.job_id.as_str()));
    assert_eq!(s.written_by, j.job_id);
    assert!(w.has(&j.message_key), "something is pending");

    // The retry succeeds: the state says so and the sole job deletes its message.
    w.at(NOW + 61);
    assert!(run(&w, &[retry]).await.is_empty());
    assert_eq!(w.smtp.calls.lock().unwrap().last().unwrap(), &["later@b.test"], "only the deferred one again");
    let s = w.state("b.test").unwrap();
    let later = s.recipient("later@b.test").unwrap();
    assert_eq!((later.state, later.attempts, s.job_id.clone()), (Delivery::Sent, 2, None));
    assert!(!w.has(&j.message_key), "completed");

    // A stale copy of the first job now finds itself superseded.
    assert!(run(&w, &[&j]).await.is_empty());
    assert_eq!(w.smtp_calls(), 2);
}

#[tokio::test]
async fn an_unacknowledged_job_redoes_only_its_tail_under_a_fresh_retry_id() {
    let w = world(MIXED);
    let j = job("b.test", &["ok@b.test", "later@b.test", "no@b.test"]);
    run(&w, &[&j]).await;
    let first_retry = w.sent()[1].0.clone();

    assert!(run(&w, &[&j]).await.is_empty());
    assert_eq!(w.smtp_calls(), 1, "no delivery is repeated");
    let sent = w.sent();
    assert_eq!(sent.len(), 4, "DSN job and retry job sent again: {sent:?}");
    assert_eq!(sent[2].0, sent[0].0, "the same DSN job (it converges: a sole job)");
    let again = &sent[3].0;
    assert_ne!(again.job_id, first_retry.job_id, "re-issued under a fresh id");
    assert_eq!(w.state("b.test").unwrap().job_id.as_deref(), Some(again.job_id.as_str()));

    // Had the first retry gone out after all, it is fenced off; the re-issued one runs.
    w.at(NOW + 61);
    run(&w, &[&first_retry]).await;
    assert_eq!(w.smtp_calls(), 1, "the fenced copy delivers nothing");
    run(&w, &[again]).await;
    assert_eq!(w.smtp_calls(), 2);
    assert_eq!(w.state("b.test").unwrap().recipient("later@b.test").unwrap().state, Delivery::Sent);
}

#[tokio::test]
async fn early_job_is_re_enqueued_without_delivery() {
    let w = world(&[]);
    let mut j = job("b.test", &["bob@b.test"]);
    j.not_before = NOW + 3600;
    run(&w, &[&j]).await;
    assert_eq!(w.smtp_calls(), 0);
    let queued = w.sent();
    assert_eq!(queued[0].0, j, "unchanged");
    assert_eq!(queued[0].1, Duration::from_secs(900), "capped; the rest is chained");
    assert_eq!(w.ledger.count("GetState"), 0, "no S3 request while waiting");
}

#[tokio::test]
async fn only_io_failures_and_unreadable_jobs_are_batch_failures() {
    let w = world(&[("no@b.test", 550, "5.1.1 unknown")]);
    let lost = Job { message_key: "spool/missing.eml".into(), jobs: 2, ..job("c.test", &["x@c.test"]) };
    let bodies = [
        "{not json".to_string(),
        job("b.test", &["no@b.test"]).to_json(),
        lost.to_json(),
        Job { queue_id: "01JOTHERQUEUEID00000000000".into(), ..job("null.test", &["y@null.test"]) }.to_json(),
    ];
    let r = handle(event(&bodies), &w.deps).await;
    let ids: Vec<_> = r.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(ids, ["m0", "m2"], "a shared message that is missing is an error, not a completion");
}

#[tokio::test]
async fn null_mx_bounces_without_smtp_and_bounces_are_never_bounced() {
    let w = world(&[]);
    run(&w, &[&job("null.test", &["y@null.test"])]).await;
    assert_eq!(w.smtp_calls(), 0);
    let queued = w.sent();
    assert_eq!(queued.len(), 1);
    let dsn = String::from_utf8(w.spool.0.lock().unwrap()[&queued[0].0.message_key].clone()).unwrap();
    assert!(dsn.contains("Status: 5.1.10"), "{dsn}");
    assert_eq!(w.state("null.test").unwrap().recipients[0].state, Delivery::Bounced);

    let w = world(&[("alice@a.test", 550, "5.1.1 gone")]);
    let bounce = Job { sender: String::new(), ..job("a.test", &["alice@a.test"]) };
    assert!(run(&w, &[&bounce]).await.is_empty());
    assert!(w.sent().is_empty(), "nothing is sent to <>");
    assert_eq!(w.state("a.test").unwrap().recipients[0].state, Delivery::Bounced, "trace still sees it");
    assert!(!w.has(&bounce.message_key), "nothing pending: a sole job deletes its message");
}

#[tokio::test]
async fn two_copies_in_one_batch_reach_smtp_once() {
    let w = world(&[]);
    let j = job("b.test", &["bob@b.test"]);
    let other = Job { queue_id: "01JOTHERQUEUEID00000000000".into(), ..job("b.test", &["carol@b.test"]) };
    w.spool.0.lock().unwrap().insert(keys::message_key(&other.queue_id), b"x".to_vec());
    let other = Job { message_key: keys::message_key(&other.queue_id), ..other };
    assert!(run(&w, &[&j, &other, &j]).await.is_empty());
    let mut calls = w.smtp.calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls, [vec!["bob@b.test".to_string()], vec!["carol@b.test".to_string()]]);
}

/// A cancel as `relayctl cancel` writes it: pending recipients cancelled, nothing expected.
fn cancel(spool: &MemorySpool, job: &Job) {
    let mut s = spool.state(QID, &job.domain).unwrap_or_else(|| shared::state::JobState::untouched(job, NOW));
    for r in s.recipients.iter_mut().filter(|r| !r.state.is_final()) {
        r.state = Delivery::Cancelled;
    }
    (s.job_id, s.retry, s.written_by) = (None, None, "relayctl-TEST".into());
    spool.0.lock().unwrap().insert(keys::state_key(QID, &job.domain), s.to_json().into_bytes());
}

#[tokio::test]
async fn a_cancelled_job_delivers_nothing() {
    let w = world(&[]);
    let j = job("b.test", &["bob@b.test"]);
    cancel(&w.spool, &j);
    assert!(run(&w, &[&j]).await.is_empty());
    assert_eq!(w.smtp_calls(), 0);
    assert!(w.sent().is_empty());
}

#[tokio::test]
async fn a_cancel_during_delivery_is_merged_after_the_412() {
    let w = world(&[("later@b.test", 450, "4.2.0 busy")]);
    let j = job("b.test", &["ok@b.test", "later@b.test"]);
    let (spool, jc) = (w.spool.clone(), j.clone());
    *w.smtp.during.lock().unwrap() = Some(Arc::new(move || cancel(&spool, &jc)));
    assert!(run(&w, &[&j]).await.is_empty());
    let s = w.state("b.test").unwrap();
    let states: Vec<_> = s.recipients.iter().map(|r| r.state).collect();
    assert_eq!(states, [Delivery::Sent, Delivery::Cancelled], "the delivery is a fact; the cancel stands");
    assert_eq!(s.job_id, None);
    assert!(w.sent().is_empty(), "no retry for a cancelled recipient");
    assert_eq!(w.ledger.calls().iter().filter(|c| c.starts_with("PutState")).count(), 2, "lost once, then merged");
}

#[tokio::test]
async fn v1_jobs_still_honour_legacy_records_and_keep_their_message() {
    let w = world(&[]);
    let mut j = job("b.test", &["done@b.test", "new@b.test"]);
    (j.v, j.job_id, j.jobs) = (1, String::new(), 0);
    w.spool.0.lock().unwrap().insert(keys::record_key(QID, "done@b.test"), b"sent".to_vec());
    assert!(run(&w, &[&j]).await.is_empty());
    assert_eq!(w.smtp.calls.lock().unwrap()[0], ["new@b.test"]);
    let s = w.state("b.test").unwrap();
    assert_eq!(s.written_by, j.id());
    assert!(w.has(&j.message_key), "a v1 job may share its message");
    run(&w, &[&j]).await;
    assert_eq!(w.smtp_calls(), 1, "copies of a v1 job agree on its id");
}

/// The mixed job with `op` failing: `times` failures, then (for `u32::MAX`) healed after the
/// job was given back; returns the world and the first run's batch failures.
async fn mixed_with_failing(op: &'static str, times: u32) -> (World, Job, Vec<String>) {
    let w = world_with(&[MIXED, MIXED].concat(), &[("RELAY_STORE_RETRY", "20s")]);
    let j = job("b.test", &["ok@b.test", "later@b.test", "no@b.test"]);
    w.ledger.fail(op, times);
    let failed = run(&w, &[&j]).await;
    (w, j, failed)
}

#[tokio::test(start_paused = true)]
async fn store_failures_after_a_delivery_are_retried_and_each_effect_happens_once() {
    for op in ["PutMessage", "PutState", "SendMessageBatch"] {
        let (w, _, failed) = mixed_with_failing(op, 5).await;
        assert!(failed.is_empty(), "{op}: retried within the window, not given back");
        assert_eq!(w.ledger.count(op), 1, "{op}");
        assert_eq!(w.sent().len(), 2, "{op}: DSN + retry, once each");
        assert_eq!(w.smtp_calls(), 1);
    }
    let w = world_with(&[], &[("RELAY_STORE_RETRY", "20s")]);
    w.ledger.fail("DeleteMessage", 5);
    assert!(run(&w, &[&job("b.test", &["bob@b.test"])]).await.is_empty());
    assert!(!w.has(&keys::message_key(QID)));
}

#[tokio::test(start_paused = true)]
async fn a_store_outage_past_the_window_gives_the_job_back_and_the_redelivery_is_safe() {
    // (failing step, deliveries after the redelivery): a failure before the state write repeats
    // the attempt (the window every MTA has); from the state write on, nothing is delivered twice.
    for (op, deliveries) in [("PutMessage", 2), ("PutState", 2), ("SendMessageBatch", 1)] {
        let (w, j, failed) = mixed_with_failing(op, u32::MAX).await;
        assert_eq!(failed, ["m0"], "{op}: given back after the window");
        w.ledger.heal();
        assert!(run(&w, &[&j]).await.is_empty(), "{op}");
        assert_eq!(w.smtp_calls(), deliveries, "{op}");
        let s = w.state("b.test").unwrap();
        let retry = w.sent().into_iter().rev().find(|(r, _)| r.sender == j.sender).expect("a retry went out").0;
        assert_eq!(s.job_id.as_deref(), Some(retry.job_id.as_str()), "{op}: the state names the retry that went out");
    }
    // The free path has no state: a DELETE that never succeeds repeats the delivery.
    let w = world_with(&[], &[("RELAY_STORE_RETRY", "20s")]);
    let j = job("b.test", &["bob@b.test"]);
    w.ledger.fail("DeleteMessage", u32::MAX);
    assert_eq!(run(&w, &[&j]).await, ["m0"]);
    w.ledger.heal();
    run(&w, &[&j]).await;
    assert_eq!((w.smtp_calls(), w.has(&j.message_key)), (2, false));
}

#[tokio::test(start_paused = true)]
async fn the_lambda_deadline_caps_the_store_retries() {
    let w = world_with(MIXED, &[("RELAY_STORE_RETRY", "10m")]);
    w.ledger.fail("PutState", u32::MAX);
    let start = Instant::now();
    let j = job("b.test", &["ok@b.test", "later@b.test", "no@b.test"]);
    let r = handle_until(event(&[j.to_json()]), &w.deps, Some(start + Duration::from_secs(30))).await;
    assert_eq!(r.batch_item_failures.len(), 1);
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(26) && took <= Duration::from_secs(28), "{took:?}: deadline minus the margin");
}

#[tokio::test]
async fn a_domain_whose_best_mx_is_this_relay_bounces_once_without_smtp() {
    let mut w = world(&[]);
    // FakeDns answers MX 10 mx.<domain>: name that host as ours.
    w.deps.config = testkit::config(&[("RELAY_LOCAL_NAMES", "mx.in.test")]);
    let r = handle(event(&[job("in.test", &["bob@in.test", "carol@in.test"]).to_json()]), &w.deps).await;
    assert!(r.batch_item_failures.is_empty());
    assert!(w.smtp.calls.lock().unwrap().is_empty(), "never delivered to ourselves");
    let queued = w.queue.0.lock().unwrap();
    assert_eq!(queued.len(), 1, "one DSN and no retry job: {queued:?}");
    let (dsn_job, _) = &queued[0];
    assert_eq!((dsn_job.sender.as_str(), dsn_job.recipients[0].address.as_str()), ("", "alice@a.test"));
    let spool = w.spool.0.lock().unwrap();
    let dsn = String::from_utf8(spool[&dsn_job.message_key].clone()).unwrap();
    assert!(dsn.contains("Status: 5.4.6") && dsn.contains("mail for in.test loops back to myself"), "{dsn}");
    assert!(
        dsn.contains("Final-Recipient: rfc822; bob@in.test") && dsn.contains("Final-Recipient: rfc822; carol@in.test")
    );
    drop(spool);
    assert_eq!(w.state("in.test").unwrap().recipient("bob@in.test").unwrap().state, Delivery::Bounced);
}

/// Failed SQS: every send is refused.
/// `(eventType, recipient)` of each published event, per publication.
fn published(w: &World) -> Vec<Vec<(String, String)>> {
    let batches = w.events.0.lock().unwrap().clone();
    batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|e| {
                    let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
                    let rcpt = [&v["delivery"]["recipients"][0], &v["bounce"]["bouncedRecipients"][0]["emailAddress"]]
                        .into_iter()
                        .chain([&v["deliveryDelay"]["delayedRecipients"][0]["emailAddress"]])
                        .find_map(|r| r.as_str())
                        .unwrap()
                        .to_string();
                    (v["eventType"].as_str().unwrap().to_string(), rcpt)
                })
                .collect()
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test]
async fn each_outcome_is_one_event_and_one_count_published_once_per_batch() {
    let w = world(&[("later@b.test", 450, "4.2.0 busy"), ("no@b.test", 550, "5.1.1 unknown")]);
    let other = Job { queue_id: "01JOTHERQUEUEID00000000000".into(), ..job("c.test", &["carol@c.test"]) };
    let ev = event(&[job("b.test", &["ok@b.test", "later@b.test", "no@b.test"]).to_json(), other.to_json()]);
    assert!(handle(ev, &w.deps).await.batch_item_failures.is_empty());
    let mut events = published(&w);
    assert_eq!(events.len(), 1, "one publication for the batch");
    events[0].sort();
    assert_eq!(
        events[0],
        pairs(&[
            ("Bounce", "no@b.test"),
            ("Delivery", "carol@c.test"),
            ("Delivery", "ok@b.test"),
            ("DeliveryDelay", "later@b.test")
        ])
    );

    w.deps.metrics.flush();
    let lines = w.emf.0.lock().unwrap().clone();
    let emf: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!((&emf["Sent"], &emf["Deferred"], &emf["Bounced"]), (&2.into(), &1.into(), &1.into()));
    assert_eq!(emf["DeliveryDelay"], serde_json::json!([10.0, 10.0]), "first seen 10 s before NOW");
    assert_eq!(emf["Service"], "relay");

    // The same jobs again: every recipient is done or re-enqueued, so nothing new to report.
    let again = event(&[job("b.test", &["ok@b.test", "no@b.test"]).to_json()]);
    handle(again, &w.deps).await;
    assert_eq!(published(&w).len(), 1, "no events for recipients skipped by their records");
}

#[tokio::test(start_paused = true)]
async fn a_plan_that_fails_part_way_reports_only_its_deliveries() {
    // The state write never succeeds: the outcomes are not recorded, the job comes back.
    let w = world_with(
        &[("later@b.test", 450, "4.2.0 busy"), ("no@b.test", 550, "5.1.1 unknown")],
        &[("RELAY_STORE_RETRY", "5s")],
    );
    w.ledger.fail("PutState", u32::MAX);
    let ev = event(&[job("b.test", &["ok@b.test", "later@b.test", "no@b.test"]).to_json()]);
    let r = handle(ev, &w.deps).await;
    assert_eq!(r.batch_item_failures.len(), 1, "SQS will bring the job back");
    assert_eq!(published(&w), [pairs(&[("Delivery", "ok@b.test")])], "the bounce and the delay come with the retry");
    w.deps.metrics.flush();
    let emf: serde_json::Value = serde_json::from_str(&w.emf.0.lock().unwrap()[0]).unwrap();
    assert_eq!((&emf["Sent"], &emf["Deferred"], &emf["Bounced"]), (&1.into(), &0.into(), &0.into()));
}

#[tokio::test]
async fn without_an_events_queue_metrics_still_count() {
    let mut w = world(&[]);
    w.deps.events = None;
    handle(event(&[job("b.test", &["bob@b.test"]).to_json()]), &w.deps).await;
    assert!(w.events.0.lock().unwrap().is_empty());
    w.deps.metrics.flush();
    let emf: serde_json::Value = serde_json::from_str(&w.emf.0.lock().unwrap()[0]).unwrap();
    assert_eq!(emf["Sent"], 1);
}

#[tokio::test]
async fn an_enforce_policy_reaches_the_transport_as_verified_targets_of_listed_hosts_only() {
    let w = world(&[]);
    handle(event(&[job("sts.test", &["bob@sts.test"]).to_json()]), &w.deps).await;
    let targets = w.smtp.targets.lock().unwrap().clone();
    assert_eq!(targets.len(), 1);
    assert!(targets[0].iter().all(|t| t.host == "mx.sts.test" && t.tls == TlsRequirement::Verified), "{targets:?}");
    assert!(w.spool.0.lock().unwrap().contains_key("mta-sts/sts.test.json"), "the policy is stored for cold starts");

    // No listed MX host: nothing is tried, the recipient waits (never bounced for the policy).
    let w = world(&[]);
    handle(event(&[job("unlisted.test", &["bob@unlisted.test"]).to_json()]), &w.deps).await;
    assert!(w.smtp.calls.lock().unwrap().is_empty(), "an unlisted MX is not tried");
    let queued = w.queue.0.lock().unwrap().clone();
    let [(retry, _)] = &queued[..] else { panic!("one retry job: {queued:?}") };
    assert!(retry.recipients[0].last_reply.as_deref().is_some_and(|r| r.starts_with("4.7.0 MTA-STS")), "{retry:?}");

    // RELAY_MTA_STS=off: delivery as without a policy.
    let w = world_with(&[], &[("RELAY_MTA_STS", "off")]);
    handle(event(&[job("unlisted.test", &["bob@unlisted.test"]).to_json()]), &w.deps).await;
    let targets = w.smtp.targets.lock().unwrap().clone();
    assert_eq!(targets[0][0].tls, TlsRequirement::Default);
}

#[path = "handler_suppression_tests.rs"]
mod suppression;
/// A world whose handler takes delivery leases in an in-memory state table.
fn leased(replies: &[(&str, u16, &'static str)]) -> (World, Arc<crate::share::memory::MemoryTable>) {
    let mut w = world(replies);
    let table = Arc::new(crate::share::memory::MemoryTable::default());
    w.deps.leases = Some(Leases::new(table.clone()));
    (w, table)
}

#[tokio::test]
async fn a_leased_job_costs_one_claim_and_one_release_and_leaves_no_lease() {
    let (w, table) = leased(&[]);
    let j = job("b.test", &["bob@b.test"]);
    assert!(run(&w, &[&j]).await.is_empty());
    assert_eq!(table.calls(), ["claim", "release"]);
    assert_eq!(w.ledger.calls().len(), 3, "the S3 requests of the free path are unchanged");
    assert!(table.row(&lease::key(&j)).is_none(), "released");
    assert_eq!(w.smtp_calls(), 1);
}

#[tokio::test]
async fn a_copy_that_finds_the_job_leased_goes_back_to_the_queue_without_reading_or_delivering() {
    let (w, table) = leased(&[]);
    let j = job("b.test", &["bob@b.test"]);
    let (pk, sk) = lease::key(&j);
    let other = crate::share::Claim {
        pk,
        sk,
        owner: "another-worker".into(),
        until_ms: (NOW + 12) * 1000,
        note: [("job_id".to_string(), j.id())].into(),
    };
    crate::share::Table::claim(table.as_ref(), &other, NOW * 1000).await.unwrap();
    assert!(run(&w, &[&j]).await.is_empty(), "deferred, not failed");
    assert_eq!(w.smtp_calls(), 0);
    assert!(w.ledger.calls().iter().all(|c| !c.starts_with("Get")), "no S3 read: {:?}", w.ledger.calls());
    let sent = w.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!((&sent[0].0, sent[0].1), (&j, Duration::from_secs(12)), "the same job, back when the lease ends");
    assert_eq!(table.row(&lease::key(&j)).unwrap().owner.as_deref(), Some("another-worker"));

    // The other worker's lease lapsed (it crashed): the next copy delivers.
    w.at(NOW + 12);
    assert!(run(&w, &[&j]).await.is_empty());
    assert_eq!(w.smtp_calls(), 1);
    assert!(table.row(&lease::key(&j)).is_none());
}

#[tokio::test]
async fn an_unreachable_state_table_does_not_stop_delivery() {
    let (w, table) = leased(&[]);
    table.fail(true);
    let j = job("b.test", &["bob@b.test"]);
    assert!(run(&w, &[&j]).await.is_empty());
    assert_eq!(w.smtp_calls(), 1, "delivered without a lease");
    assert!(!w.has(&j.message_key));
}
