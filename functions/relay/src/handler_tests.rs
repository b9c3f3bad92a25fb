//! The handler against the in-memory spool and queue and fakes of DNS and SMTP, with a fixed clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use shared::{Job, Reply, keys};

use super::*;
use crate::decide::outcome::{Remote, Verdict};
use crate::route::{Lookup, Target, TlsRequirement};
use crate::store::memory::{MemoryEvents, MemoryQueue, MemorySpool};
use crate::testkit::{self, FakeFetcher, QID};

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

/// Replies per recipient address (default 250); records who was sent what, to which targets, and
/// the batches ended.
#[derive(Clone, Default)]
struct FakeSmtp {
    replies: HashMap<String, (u16, &'static str)>,
    calls: Arc<Mutex<Vec<Vec<String>>>>,
    targets: Arc<Mutex<Vec<Vec<Target>>>>,
    batches_ended: Arc<Mutex<usize>>,
}

#[async_trait]
impl Transport for FakeSmtp {
    async fn deliver(&self, targets: &[Target], job: &Job, _message: &[u8]) -> Attempt {
        let rcpts: Vec<String> = job.pending().map(|r| r.address.clone()).collect();
        self.calls.lock().unwrap().push(rcpts.clone());
        self.targets.lock().unwrap().push(targets.to_vec());
        let outcomes = rcpts
            .into_iter()
            .map(|a| {
                let (code, text) = self.replies.get(&a).copied().unwrap_or((250, "2.0.0 ok"));
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

struct Fixed(i64);

impl Clock for Fixed {
    fn now(&self) -> i64 {
        self.0
    }
}

struct World {
    spool: MemorySpool,
    queue: MemoryQueue,
    smtp: FakeSmtp,
    events: MemoryEvents,
    emf: shared::metrics::Memory,
    deps: Deps,
}

fn world(replies: &[(&str, u16, &'static str)]) -> World {
    world_with(replies, &[])
}

fn world_with(replies: &[(&str, u16, &'static str)], settings: &[(&str, &str)]) -> World {
    let spool = MemorySpool::default();
    let queue = MemoryQueue::default();
    let smtp = FakeSmtp {
        replies: replies.iter().map(|(a, c, t)| (a.to_string(), (*c, *t))).collect(),
        ..FakeSmtp::default()
    };
    let events = MemoryEvents::default();
    let (metrics, emf) = shared::metrics::Metrics::memory(crate::metrics::SERVICE, crate::metrics::METRICS);
    let fetcher = FakeFetcher::default();
    fetcher.set("sts.test", Ok("version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n"));
    fetcher.set("unlisted.test", Ok("version: STSv1\nmode: enforce\nmx: elsewhere.test\nmax_age: 86400\n"));
    let deps = Deps {
        config: testkit::config(&[&[("RELAY_RETRY_SCHEDULE", "1m,5m")], settings].concat()),
        mta_sts: testkit::mta_sts(&spool, &fetcher),
        spool: Box::new(spool.clone()),
        queue: Box::new(queue.clone()),
        resolver: Box::new(FakeDns),
        transport: Box::new(smtp.clone()),
        clock: Box::new(Fixed(NOW)),
        events: Some(Box::new(events.clone())),
        metrics,
    };
    spool.0.lock().unwrap().insert(keys::message_key(QID), b"Subject: hi\r\n\r\nbody\r\n".to_vec());
    World { spool, queue, smtp, events, emf, deps }
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

#[tokio::test]
async fn delivers_records_and_a_duplicate_sends_nothing() {
    let w = world(&[]);
    let ev = event(&[job("b.test", &["bob@b.test"]).to_json()]);
    assert!(handle(ev.clone(), &w.deps).await.batch_item_failures.is_empty());
    assert!(handle(ev, &w.deps).await.batch_item_failures.is_empty());
    assert_eq!(w.smtp.calls.lock().unwrap().len(), 1, "the duplicate must not reach SMTP");
    assert_eq!(*w.smtp.batches_ended.lock().unwrap(), 2, "the transport hears the end of every batch");
    assert_eq!(w.spool.0.lock().unwrap().get(&keys::record_key(QID, "bob@b.test")).unwrap(), b"sent");
    assert!(w.queue.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn mixed_replies_retry_one_bounce_one_record_one() {
    let w = world(&[("later@b.test", 450, "4.2.0 busy"), ("no@b.test", 550, "5.1.1 unknown")]);
    let ev = event(&[job("b.test", &["ok@b.test", "later@b.test", "no@b.test"]).to_json()]);
    assert!(handle(ev, &w.deps).await.batch_item_failures.is_empty());

    let spool = w.spool.0.lock().unwrap();
    assert_eq!(spool.get(&keys::record_key(QID, "ok@b.test")).unwrap(), b"sent");
    assert_eq!(spool.get(&keys::record_key(QID, "no@b.test")).unwrap(), b"bounced");
    assert!(!spool.contains_key(&keys::record_key(QID, "later@b.test")));

    let queued = w.queue.0.lock().unwrap();
    assert_eq!(queued.len(), 2, "{queued:?}");
    let (dsn_job, d0) = &queued[0];
    assert_eq!((dsn_job.sender.as_str(), dsn_job.domain.as_str(), *d0), ("", "a.test", Duration::ZERO));
    assert_eq!(dsn_job.recipients[0].address, "alice@a.test");
    let dsn = String::from_utf8(spool.get(&dsn_job.message_key).unwrap().clone()).unwrap();
    assert!(dsn.contains("Final-Recipient: rfc822; no@b.test") && dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(!dsn.contains("later@b.test"), "the deferred recipient is not in the bounce");

    let (retry, d1) = &queued[1];
    assert_eq!(retry.recipients.len(), 1);
    assert_eq!(
        (retry.recipients[0].address.as_str(), retry.attempt, *d1),
        ("later@b.test", 1, Duration::from_secs(60))
    );
    assert_eq!(retry.not_before, NOW + 60);
}

#[tokio::test]
async fn early_job_is_re_enqueued_without_delivery() {
    let w = world(&[]);
    let mut j = job("b.test", &["bob@b.test"]);
    j.not_before = NOW + 3600;
    handle(event(&[j.to_json()]), &w.deps).await;
    assert!(w.smtp.calls.lock().unwrap().is_empty());
    let queued = w.queue.0.lock().unwrap();
    assert_eq!(queued[0].0, j, "unchanged");
    assert_eq!(queued[0].1, Duration::from_secs(900), "capped; the rest is chained");
}

#[tokio::test]
async fn only_io_failures_and_unreadable_jobs_are_batch_failures() {
    let w = world(&[("no@b.test", 550, "5.1.1 unknown")]);
    let mut lost = job("b.test", &["x@b.test"]);
    lost.message_key = "spool/missing.eml".into();
    let bodies = [
        "{not json".to_string(),
        job("b.test", &["no@b.test"]).to_json(),
        lost.to_json(),
        job("null.test", &["y@null.test"]).to_json(),
    ];
    let r = handle(event(&bodies), &w.deps).await;
    let ids: Vec<_> = r.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(ids, ["m0", "m2"]);
}

#[tokio::test]
async fn null_mx_bounces_without_smtp_and_bounces_are_never_bounced() {
    let w = world(&[]);
    handle(event(&[job("null.test", &["y@null.test"]).to_json()]), &w.deps).await;
    assert!(w.smtp.calls.lock().unwrap().is_empty());
    {
        let queued = w.queue.0.lock().unwrap();
        assert_eq!(queued.len(), 1);
        let dsn = String::from_utf8(w.spool.0.lock().unwrap()[&queued[0].0.message_key].clone()).unwrap();
        assert!(dsn.contains("Status: 5.1.10"), "{dsn}");
    }

    let w = world(&[("alice@a.test", 550, "5.1.1 gone")]);
    let mut bounce = job("a.test", &["alice@a.test"]);
    bounce.sender = String::new();
    assert!(handle(event(&[bounce.to_json()]), &w.deps).await.batch_item_failures.is_empty());
    assert!(w.queue.0.lock().unwrap().is_empty(), "nothing is sent to <>");
    assert!(w.spool.0.lock().unwrap().contains_key(&keys::record_key(QID, "alice@a.test")));
}

#[tokio::test]
async fn two_copies_in_one_batch_reach_smtp_once() {
    let w = world(&[]);
    let body = job("b.test", &["bob@b.test"]).to_json();
    let other = Job { queue_id: "01JOTHERQUEUEID00000000000".into(), ..job("b.test", &["carol@b.test"]) };
    let r = handle(event(&[body.clone(), other.to_json(), body]), &w.deps).await;
    assert!(r.batch_item_failures.is_empty());
    let mut calls = w.smtp.calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls, [vec!["bob@b.test".to_string()], vec!["carol@b.test".to_string()]]);
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
    assert_eq!(spool[&keys::record_key(QID, "bob@in.test")], b"bounced");
}

/// Failed SQS: every send is refused.
struct DownQueue;

#[async_trait]
impl Queue for DownQueue {
    async fn send(&self, job: &Job, _delay: Duration) -> Result<(), StoreError> {
        Err(StoreError::new("SendMessage", &job.queue_id, "service unavailable"))
    }
}

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

#[tokio::test]
async fn a_plan_that_fails_part_way_reports_only_its_deliveries() {
    let mut w = world(&[("later@b.test", 450, "4.2.0 busy"), ("no@b.test", 550, "5.1.1 unknown")]);
    w.deps.queue = Box::new(DownQueue);
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
