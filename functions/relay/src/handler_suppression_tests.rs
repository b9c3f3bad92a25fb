//! The handler and the suppression list: one lookup per job and no write on the happy path;
//! listed recipients not attempted, reported in the DSN and as `OnAccountSuppressionList`
//! bounces; a remote's "no such mailbox" added; a list that cannot be read never stops mail.

use std::sync::atomic::Ordering;

use shared::suppression::{Entry, Reason, SuppressionList};

use super::*;

fn listed(address: &str, reason: Reason) -> Entry {
    Entry { address: address.into(), reason, since: NOW - 86400, queue_id: None, diagnostic: "earlier".into() }
}

fn bounce_sub_types(w: &World) -> Vec<(String, String)> {
    w.events
        .all()
        .iter()
        .filter_map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
            let b = &v["bounce"];
            Some((b["bouncedRecipients"][0]["emailAddress"].as_str()?.to_string(), b["bounceSubType"].as_str()?.into()))
        })
        .collect()
}

#[tokio::test]
async fn the_happy_path_reads_the_list_once_and_writes_nothing() {
    let w = world(&[]);
    let j = job("b.test", &["a@b.test", "b@b.test", "c@b.test"]);
    assert!(run(&w, &[&j]).await.is_empty());
    assert_eq!(w.list.calls(), ["BatchGetItem"], "one read request for the job's recipients, no write");
    assert_eq!(w.smtp_calls(), 1);
}

#[tokio::test]
async fn a_listed_recipient_is_not_attempted_and_bounces_as_suppressed() {
    let w = world(&[]);
    w.list.set(&listed("Bob@B.test", Reason::Complaint)).await.unwrap();
    let j = job("b.test", &["alice@b.test", "bob@b.test"]);
    assert!(run(&w, &[&j]).await.is_empty());
    assert_eq!(w.smtp.calls.lock().unwrap().clone(), [vec!["alice@b.test".to_string()]], "bob is not attempted");
    let s = w.state("b.test").unwrap();
    assert_eq!(s.recipient("bob@b.test").unwrap().state, Delivery::Bounced);
    assert_eq!(s.recipient("alice@b.test").unwrap().state, Delivery::Sent);
    let (dsn_job, _) = &w.sent()[0];
    let dsn = String::from_utf8(w.spool.0.lock().unwrap()[&dsn_job.message_key].clone()).unwrap();
    assert!(dsn.contains("Final-Recipient: rfc822; bob@b.test") && dsn.contains("Status: 5.7.1"), "{dsn}");
    assert!(dsn.contains("recipient is on the suppression list (complaint since"), "{dsn}");
    assert!(!dsn.contains("Final-Recipient: rfc822; alice@b.test"));
    assert_eq!(bounce_sub_types(&w), [("bob@b.test".to_string(), "OnAccountSuppressionList".to_string())]);
    w.deps.metrics.flush();
    let emf: serde_json::Value = serde_json::from_str(&w.emf.0.lock().unwrap()[0]).unwrap();
    assert_eq!((&emf["Suppressed"], &emf["Bounced"], &emf["Sent"]), (&1.into(), &1.into(), &1.into()));
    assert_eq!(w.list.calls(), ["PutItem", "BatchGetItem"], "set by the test, then the job's one lookup");
}

#[tokio::test]
async fn a_job_of_listed_recipients_only_makes_no_connection() {
    let w = world(&[]);
    w.list.set(&listed("bob@b.test", Reason::Bounce)).await.unwrap();
    let j = job("b.test", &["bob@b.test"]);
    assert!(run(&w, &[&j]).await.is_empty());
    assert_eq!(w.smtp_calls(), 0);
    assert_eq!(w.sent().len(), 1, "the DSN");
    assert_eq!(w.state("b.test").unwrap().recipient("bob@b.test").unwrap().state, Delivery::Bounced);
    // A bounce to a listed sender is dropped like any bounce that bounces.
    let w = world(&[]);
    w.list.set(&listed("alice@a.test", Reason::Bounce)).await.unwrap();
    let dsn = Job { sender: String::new(), ..job("a.test", &["alice@a.test"]) };
    assert!(run(&w, &[&dsn]).await.is_empty());
    assert!(w.sent().is_empty() && w.smtp_calls() == 0, "no bounce of a bounce");
}

#[tokio::test]
async fn a_remotes_no_such_mailbox_lists_the_recipient_and_a_policy_block_does_not() {
    let w = world(&[("no@b.test", 550, "5.1.1 no such user"), ("spam@b.test", 550, "5.7.1 rejected as spam")]);
    let j = job("b.test", &["no@b.test", "spam@b.test", "ok@b.test"]);
    assert!(run(&w, &[&j]).await.is_empty());
    let e = w.list.entry("NO@b.test").expect("listed");
    assert_eq!((e.reason, e.queue_id.as_deref(), e.since), (Reason::Bounce, Some(QID), NOW));
    assert_eq!(e.diagnostic, "550 5.1.1 no such user");
    assert!(w.list.entry("spam@b.test").is_none() && w.list.entry("ok@b.test").is_none());
    assert_eq!(bounce_sub_types(&w).len(), 2);
    assert!(bounce_sub_types(&w).iter().all(|(_, t)| t != "OnAccountSuppressionList"), "these were attempted");

    // The next message to it is not attempted.
    let next = Job { queue_id: "01JNEXTQUEUEID000000000000".into(), ..job("b.test", &["no@b.test"]) };
    w.spool.0.lock().unwrap().insert(next.message_key.clone(), b"Subject: again\r\n\r\nx\r\n".to_vec());
    assert!(run(&w, &[&next]).await.is_empty());
    assert_eq!(w.smtp_calls(), 1, "no second attempt");

    // RELAY_SUPPRESSION=off: nothing is added (the list is still read).
    let w = world_with(&[("no@b.test", 550, "5.1.1 no such user")], &[("RELAY_SUPPRESSION", "off")]);
    run(&w, &[&job("b.test", &["no@b.test"])]).await;
    assert!(w.list.entry("no@b.test").is_none());
    assert_eq!(w.list.calls(), ["BatchGetItem"]);
}

#[tokio::test]
async fn a_list_that_cannot_be_read_or_written_never_stops_the_mail() {
    let w = world(&[("no@b.test", 550, "5.1.1 no such user")]);
    w.list.broken.store(true, Ordering::SeqCst);
    let j = job("b.test", &["ok@b.test", "no@b.test"]);
    assert!(run(&w, &[&j]).await.is_empty(), "no batch failure");
    assert_eq!(w.smtp_calls(), 1, "attempted as if nobody were listed");
    assert_eq!(w.sent().len(), 1, "the DSN for the bounce still goes");
    assert_eq!(w.list.calls(), ["BatchGetItem", "PutItem"]);

    let mut w = world(&[]);
    w.deps.suppression = None;
    assert!(run(&w, &[&job("b.test", &["ok@b.test"])]).await.is_empty());
    assert!(w.list.calls().is_empty(), "STATE_TABLE unset: no list at all");
}
