//! Session reuse, per-destination limits and throttling, against the scripted server of
//! `client_tests` counting connections at its end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::super::client::tests::{PIPELINED, Script, Seen, Transport, job, server, target, transport};
use super::*;
use crate::vocab::Remote;

fn jobs(n: usize) -> Vec<Job> {
    (0..n).map(|i| job(&[format!("r{i}@b.test").as_str()])).collect()
}

/// Each job after the previous one finished, as the jobs of one message group run.
async fn one_by_one(t: &SmtpTransport, targets: &[Target], jobs: &[Job]) -> Vec<Attempt> {
    let mut out = Vec::new();
    for j in jobs {
        out.push(t.deliver(targets, j, b"Subject: x\r\n\r\nbody\r\n").await);
    }
    out
}

/// Every job at once, as the handler runs a batch.
async fn all_at_once(t: &SmtpTransport, targets: &[Target], jobs: &[Job]) -> Vec<Attempt> {
    futures::future::join_all(jobs.iter().map(|j| t.deliver(targets, j, b"Subject: x\r\n\r\nbody\r\n"))).await
}

/// Ten jobs, one after the other, over one session at a time to a server following `script`.
async fn ten_over_one_session(script: Script) -> (Vec<Job>, Vec<Attempt>, Arc<Mutex<Seen>>) {
    let (addr, seen) = server(script).await;
    let t = transport(&[("RELAY_DESTINATION_CONCURRENCY", "1")]);
    let batch = jobs(10);
    let attempts = one_by_one(&t, &[target(addr)], &batch).await;
    (batch, attempts, seen)
}

fn classes(attempts: &[Attempt]) -> Vec<Class> {
    attempts.iter().map(|a| a.outcomes[0].1.class).collect()
}

/// The recipients the server accepted, sorted, and how many messages each connection carried.
fn accepted(seen: &Mutex<Seen>) -> (Vec<String>, Vec<usize>) {
    let seen = seen.lock().unwrap();
    let mut rcpts: Vec<String> = seen.accepted.iter().flat_map(|(_, r)| r.clone()).collect();
    rcpts.sort();
    let mut per_conn = vec![0; seen.connections];
    for (conn, _) in &seen.accepted {
        per_conn[conn - 1] += 1;
    }
    (rcpts, per_conn)
}

fn sorted(jobs: &[Job]) -> Vec<String> {
    let mut all: Vec<String> = jobs.iter().map(|j| j.recipients[0].address.clone()).collect();
    all.sort();
    all
}

async fn settle(seen: &Mutex<Seen>, what: impl Fn(&Seen) -> bool) -> bool {
    for _ in 0..100 {
        if what(&seen.lock().unwrap()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn a_batch_shares_sessions_up_to_the_destination_limit() {
    let (addr, seen) = server(Script { data_wait: Duration::from_millis(20), ..Script::ehlo(PIPELINED) }).await;
    let t = transport(&[("RELAY_DESTINATION_CONCURRENCY", "3")]);
    let batch = jobs(20);
    let attempts = all_at_once(&t, &[target(addr)], &batch).await;
    assert!(classes(&attempts).iter().all(|c| *c == Class::Sent), "{attempts:?}");
    let (rcpts, per_conn) = accepted(&seen);
    assert_eq!(rcpts, sorted(&batch), "every recipient exactly once");
    assert_eq!(per_conn.len(), 3, "three sessions carried twenty messages: {per_conn:?}");
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.max_open, 3);
        assert_eq!(s.commands.iter().filter(|c| *c == "RSET").count(), 17, "RSET before each reuse");
        assert!(!s.commands.iter().any(|c| c == "QUIT"), "idle sessions wait for the next job");
    }
    let uses: Vec<u32> = attempts.iter().map(|a| a.remote.as_ref().unwrap().conn_use).collect();
    assert_eq!(uses.iter().filter(|u| **u == 1).count(), 3, "{uses:?}");
    t.shutdown().await;
    assert!(settle(&seen, |s| s.open == 0).await, "shutdown closes the idle sessions");
    assert_eq!(seen.lock().unwrap().commands.iter().filter(|c| *c == "QUIT").count(), 3);
}

#[tokio::test]
async fn a_session_carries_at_most_the_configured_messages() {
    let (addr, seen) = server(Script::ehlo(PIPELINED)).await;
    let t = transport(&[("RELAY_DESTINATION_CONCURRENCY", "1"), ("RELAY_MAX_MESSAGES_PER_CONNECTION", "3")]);
    let attempts = one_by_one(&t, &[target(addr)], &jobs(7)).await;
    assert!(classes(&attempts).iter().all(|c| *c == Class::Sent));
    assert_eq!(accepted(&seen).1, [3, 3, 1]);
    let uses: Vec<u32> = attempts.iter().map(|a| a.remote.as_ref().unwrap().conn_use).collect();
    assert_eq!(uses, [1, 2, 3, 1, 2, 3, 1]);
    assert_eq!(seen.lock().unwrap().commands.iter().filter(|c| *c == "QUIT").count(), 2, "full sessions say QUIT");

    // 1 = no reuse: a session per job, each closed after its transaction.
    let (addr, seen) = server(Script::ehlo(PIPELINED)).await;
    let t = transport(&[("RELAY_MAX_MESSAGES_PER_CONNECTION", "1")]);
    one_by_one(&t, &[target(addr)], &jobs(3)).await;
    assert_eq!(accepted(&seen).1, [1, 1, 1]);
    assert!(!seen.lock().unwrap().commands.iter().any(|c| c == "RSET"));
}

#[tokio::test]
async fn idle_sessions_wait_for_the_next_batch_then_close() {
    let (addr, seen) = server(Script::ehlo(PIPELINED)).await;
    let t = transport(&[("RELAY_CONNECTION_IDLE", "300ms")]);
    let batch = jobs(3);
    t.deliver(&[target(addr)], &batch[0], b"x\r\n").await;
    t.end_batch().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = t.deliver(&[target(addr)], &batch[1], b"x\r\n").await;
    assert_eq!(a.remote.unwrap().conn_use, 2, "the next batch, within the idle time, reuses the session");
    t.end_batch().await;
    assert_eq!(seen.lock().unwrap().open, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(settle(&seen, |s| s.open == 0).await, "closed once idle for RELAY_CONNECTION_IDLE");
    assert!(seen.lock().unwrap().commands.iter().any(|c| c == "QUIT"));
    let a = t.deliver(&[target(addr)], &batch[2], b"x\r\n").await;
    assert_eq!((a.outcomes[0].1.class, a.remote.unwrap().conn_use), (Class::Sent, 1));
    assert_eq!(seen.lock().unwrap().connections, 2);

    // Lambda (idle 0): the end of the invocation closes every session.
    let (addr, seen) = server(Script::ehlo(PIPELINED)).await;
    let t = transport(&[("RELAY_CONNECTION_IDLE", "0")]);
    all_at_once(&t, &[target(addr)], &jobs(4)).await;
    assert!(seen.lock().unwrap().open > 0);
    t.end_batch().await;
    assert!(settle(&seen, |s| s.open == 0).await);
    let s = seen.lock().unwrap();
    assert_eq!(s.commands.iter().filter(|c| *c == "QUIT").count(), s.connections);
}

#[tokio::test]
async fn a_session_the_server_closes_after_its_third_message_loses_and_duplicates_nothing() {
    let (batch, attempts, seen) =
        ten_over_one_session(Script { close_after: Some(3), ..Script::ehlo(PIPELINED) }).await;
    assert!(
        classes(&attempts).iter().all(|c| *c == Class::Sent),
        "found closed at RSET: retried at once, {attempts:?}"
    );
    let (rcpts, per_conn) = accepted(&seen);
    assert_eq!(rcpts, sorted(&batch));
    assert_eq!(per_conn, [3, 3, 3, 1]);

    // The same with two sessions at once.
    let (addr, seen) = server(Script { close_after: Some(3), ..Script::ehlo(PIPELINED) }).await;
    let t = transport(&[("RELAY_DESTINATION_CONCURRENCY", "2")]);
    let attempts = all_at_once(&t, &[target(addr)], &batch).await;
    assert!(classes(&attempts).iter().all(|c| *c == Class::Sent));
    assert_eq!(accepted(&seen).0, sorted(&batch));
}

#[tokio::test]
async fn a_session_dropped_in_data_defers_that_job_and_the_rest_go_to_a_fresh_one() {
    let (_, attempts, seen) = ten_over_one_session(Script { drop_in_data: Some(4), ..Script::ehlo(PIPELINED) }).await;
    let deferred: Vec<usize> = (0..10).filter(|&i| attempts[i].outcomes[0].1.class == Class::Deferred).collect();
    assert_eq!(deferred, [3, 7], "the message in flight is not known to be delivered: it waits");
    for i in deferred {
        let v = &attempts[i].outcomes[0].1;
        assert_eq!(v.status, "4.4.2", "{v:?}");
        assert!(attempts[i].throttled.is_none());
    }
    assert_eq!(accepted(&seen).1, [3, 3, 2]);
}

#[tokio::test]
async fn a_421_at_the_second_transaction_defers_the_destination_without_new_connections() {
    let script =
        Script { data_reply: Some((2, "421 4.7.28 [127.0.0.1] temporarily rate limited")), ..Script::ehlo(PIPELINED) };
    let (addr, seen) = server(script).await;
    let t = transport(&[("RELAY_DESTINATION_CONCURRENCY", "1"), ("RELAY_THROTTLE_BACKOFF", "1m,5m")]);
    let attempts = one_by_one(&t, &[target(addr)], &jobs(6)).await;
    assert_eq!(attempts[0].outcomes[0].1.class, Class::Sent);
    let v = &attempts[1].outcomes[0].1;
    assert_eq!((v.class, v.text().as_str()), (Class::Deferred, "421 4.7.28 [127.0.0.1] temporarily rate limited"));
    assert_eq!(attempts[1].throttled, Some(Duration::from_secs(60)));
    for a in &attempts[2..] {
        let v = &a.outcomes[0].1;
        assert_eq!((v.class, v.status.as_str(), a.remote.as_ref()), (Class::Deferred, "4.7.28", None));
        assert!(v.detail.contains("b.test asked to slow down"), "{v:?}");
        assert!(a.throttled.is_some_and(|d| d <= Duration::from_secs(60) && d > Duration::from_secs(55)));
    }
    assert_eq!(seen.lock().unwrap().connections, 1, "no new connection for the held jobs");
    // Another destination behind the same address is not held.
    let other = crate::testkit::job("c.test", &["x@c.test"], 0);
    assert_eq!(t.deliver(&[target(addr)], &other, b"x\r\n").await.outcomes[0].1.class, Class::Sent);
    assert_eq!(seen.lock().unwrap().connections, 2);
}

#[tokio::test]
async fn a_throttle_stops_a_concurrent_batch_at_the_sessions_already_open() {
    let script = Script {
        data_wait: Duration::from_millis(30),
        data_reply: Some((
            2,
            "451 4.7.652 The mail server [127.0.0.1] has exceeded the maximum number of connections.",
        )),
        ..Script::ehlo(PIPELINED)
    };
    let (addr, seen) = server(script).await;
    let t = transport(&[("RELAY_DESTINATION_CONCURRENCY", "3")]);
    let attempts = all_at_once(&t, &[target(addr)], &jobs(10)).await;
    let (sent, held): (Vec<&Attempt>, Vec<&Attempt>) =
        attempts.iter().partition(|a| a.outcomes[0].1.class == Class::Sent);
    assert!(held.iter().all(|a| a.throttled.is_some()), "{held:?}");
    assert!(held.len() >= 7 && !sent.is_empty(), "sent {} held {}", sent.len(), held.len());
    assert_eq!(seen.lock().unwrap().connections, 3, "the closed sessions were not replaced");
    assert_eq!(accepted(&seen).0.len(), sent.len());
}

#[tokio::test]
async fn a_421_greeting_holds_the_destination_and_its_other_addresses_are_not_tried() {
    let (busy, busy_seen) =
        server(Script { greeting: Some("421 4.7.0 too many connections from 127.0.0.1"), ..Script::ehlo(PIPELINED) })
            .await;
    let (fine, fine_seen) = server(Script::ehlo(PIPELINED)).await;
    let t = transport(&[]);
    let targets = [target(busy), target(fine)];
    let batch = jobs(2);
    let first = t.deliver(&targets, &batch[0], b"x\r\n").await;
    let v = &first.outcomes[0].1;
    assert_eq!((v.class, v.text().as_str()), (Class::Deferred, "421 4.7.0 too many connections from 127.0.0.1"));
    assert_eq!(first.throttled, Some(Duration::from_secs(60)), "RELAY_THROTTLE_BACKOFF's first entry");
    assert_eq!(first.remote.as_ref().map(|r| r.addr), Some(Some(busy)));
    let second = t.deliver(&targets, &batch[1], b"x\r\n").await;
    assert!(second.throttled.is_some() && second.remote.is_none());
    assert_eq!((busy_seen.lock().unwrap().connections, fine_seen.lock().unwrap().connections), (1, 0));
}

#[tokio::test]
async fn a_quota_5xx_defers_instead_of_bouncing_and_the_accepted_recipient_is_sent() {
    let rcpt = HashMap::from([("q@b.test", "550 5.4.5 Daily sending quota exceeded")]);
    let (addr, _) = server(Script { rcpt, ..Script::ehlo(PIPELINED) }).await;
    let t = transport(&[]);
    let a = t.deliver(&[target(addr)], &job(&["ok@b.test", "q@b.test"]), b"x\r\n").await;
    let got: Vec<_> = a.outcomes.iter().map(|(r, v)| (r.as_str(), v.class, v.status.as_str())).collect();
    assert_eq!(got, [("ok@b.test", Class::Sent, "2.0.0"), ("q@b.test", Class::Deferred, "4.4.5")]);
    assert!(a.throttled.is_some());
    assert_eq!(a.remote, Some(Remote { host: "mx.b.test".into(), addr: Some(addr), conn_use: 1, ..Remote::default() }));
}

/// Two workers' transports sharing one state table.
fn two_workers(vars: &[(&str, &str)]) -> (SmtpTransport, SmtpTransport, Arc<crate::share::memory::MemoryTable>) {
    let table = Arc::new(crate::share::memory::MemoryTable::default());
    let limit = transport(vars).pool.limits().sessions;
    let worker = || transport(vars).with_shared_slots(crate::share::SharedSlots::new(table.clone(), limit));
    (worker(), worker(), table)
}

#[tokio::test]
async fn two_workers_never_open_more_sessions_than_the_limit_between_them() {
    let (addr, seen) = server(Script { data_wait: Duration::from_millis(30), ..Script::ehlo(PIPELINED) }).await;
    let vars = [("RELAY_DESTINATION_CONCURRENCY", "2"), ("RELAY_MAX_MESSAGES_PER_CONNECTION", "1")];
    let (a, b, table) = two_workers(&vars);
    let (batch_a, batch_b) = (jobs(6), jobs(6));
    let targets = [target(addr)];
    let (ra, rb) = tokio::join!(all_at_once(&a, &targets, &batch_a), all_at_once(&b, &targets, &batch_b));
    assert!(classes(&ra).iter().chain(&classes(&rb)).all(|c| *c == Class::Sent), "{ra:?} {rb:?}");
    let (rcpts, per_conn) = accepted(&seen);
    assert_eq!(rcpts.len(), 12);
    assert_eq!(per_conn, [1; 12], "one message per session, as configured");
    assert_eq!(seen.lock().unwrap().max_open, 2, "2 across both workers, not 2 each");
    a.shutdown().await;
    b.shutdown().await;
    assert!(table.rows("dest#b.test").is_empty(), "every slot released: {:?}", table.rows("dest#b.test"));
    let writes = table.calls().iter().filter(|c| **c == "claim").count();
    assert_eq!(writes, 12, "one slot claim per session opened");
}

#[tokio::test]
async fn a_throttle_seen_by_one_worker_holds_the_destination_for_the_other() {
    let script =
        Script { data_reply: Some((1, "421 4.7.28 [127.0.0.1] temporarily rate limited")), ..Script::ehlo(PIPELINED) };
    let (addr, seen) = server(script).await;
    let (a, b, _table) = two_workers(&[("RELAY_DESTINATION_CONCURRENCY", "1"), ("RELAY_THROTTLE_BACKOFF", "1m")]);
    let targets = [target(addr)];
    let first = a.deliver(&targets, &jobs(1)[0], b"x\r\n").await;
    assert_eq!(first.throttled, Some(Duration::from_secs(60)));
    let other = b.deliver(&targets, &jobs(1)[0], b"x\r\n").await;
    let v = &other.outcomes[0].1;
    assert_eq!((v.class, v.status.as_str(), other.remote.as_ref()), (Class::Deferred, "4.7.28", None));
    assert!(other.throttled.is_some_and(|d| d > Duration::from_secs(55)), "{other:?}");
    assert_eq!(seen.lock().unwrap().connections, 1, "the other worker did not connect");
    let again = b.deliver(&targets, &jobs(1)[0], b"x\r\n").await;
    assert!(again.throttled.is_some(), "adopted: held locally too");
}
