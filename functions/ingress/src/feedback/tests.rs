//! The feedback stage against in-memory edges: what each report leads to, in which order, and
//! that a failure of the list or the spool answers 451 with nothing half done that matters.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use shared::events::{Event, MemoryEvents};
use shared::meta::MessageMeta;
use shared::suppression::{MemoryList, Reason};
use shared::{DsnParams, Recipient};

use super::origin::MemoryOrigins;
use super::*;
use crate::judge::HeaderChange;
use crate::judge::source::{Chunks, ReadBack};
use crate::session::budget::MemoryBudget;
use crate::spool::upload::{Part, PartTag, Stored, Upload};

const QID: &str = "01JQUEUEID0000000000000000";
const REPORT: &str = "01JREPORT00000000000000000";

/// Records what it is asked to store; fails when told to. Reports are whole: the streaming
/// half of the spool is never called.
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<Incoming>>>, Arc<std::sync::atomic::AtomicBool>);

#[async_trait]
impl Spool for Recorded {
    async fn begin(&self, _env: &Envelope) -> Result<Upload, String> {
        unreachable!("reports are whole")
    }
    async fn upload_part(&self, _part: Part) -> Result<PartTag, String> {
        unreachable!("reports are whole")
    }
    async fn abort(&self, _upload: Upload) {}
    async fn persist(&self, _env: &Envelope, _content: Content, _size: u64) -> Result<Stored, String> {
        unreachable!("store is whole here")
    }
    async fn replace_header(&self, _env: &Envelope, _stored: Stored, _change: HeaderChange) -> Result<Stored, String> {
        unreachable!("reports are not judged")
    }
    async fn withdraw(&self, _stored: Stored) {}
    async fn enqueue(&self, _msg: &Incoming, _stored: Stored) -> Result<(), String> {
        unreachable!("store is whole here")
    }
    async fn store(&self, msg: Incoming) -> Result<(), String> {
        if self.1.load(Ordering::SeqCst) {
            return Err("S3 down".into());
        }
        self.0.lock().unwrap().push(msg);
        Ok(())
    }
}

#[async_trait]
impl ReadBack for Recorded {
    async fn read(&self, _stored: &Stored) -> Result<Chunks, String> {
        unreachable!("reports are not judged")
    }
}

struct World {
    rp: ReturnPath,
    list: MemoryList,
    origins: MemoryOrigins,
    events: MemoryEvents,
    spool: Recorded,
    emf: shared::metrics::Memory,
    feedback: Feedback,
}

fn world() -> World {
    let rp = ReturnPath::new("fb.test", &[5u8; 32]);
    let (list, origins, events, spool) =
        (MemoryList::default(), MemoryOrigins::default(), MemoryEvents::default(), Recorded::default());
    origins.messages.lock().unwrap().insert(
        QID.into(),
        MessageMeta {
            sender: "alice@a.test".into(),
            received: 1_800_000_000,
            size: 100,
            jobs: 1,
            recipients: vec!["bob@b.test".into()],
            omitted: 0,
        },
    );
    let (metrics, emf) = shared::metrics::Metrics::memory(crate::metrics::SERVICE, crate::metrics::METRICS);
    let feedback = Feedback {
        return_path: rp.clone(),
        origins: Box::new(origins.clone()),
        list: Box::new(list.clone()),
        auto: AutoSuppress::default(),
        events: Some(Box::new(events.clone())),
        spool: Arc::new(spool.clone()),
        metrics,
    };
    World { rp, list, origins, events, spool, emf, feedback }
}

fn report(to: &str, bytes: String) -> Incoming {
    Incoming {
        env: Envelope {
            queue_id: REPORT.into(),
            sender: String::new(),
            recipients: vec![Recipient::new(to)],
            dsn: DsnParams::default(),
            body_type: shared::BodyType::SevenBit,
            smtputf8: false,
            trusted: false,
        },
        received_from: "mx.b.test ([192.0.2.25])".into(),
        client: "192.0.2.25".parse().unwrap(),
        helo: "mx.b.test".into(),
        size: bytes.len() as u64,
        content: Content::Whole(bytes.into_bytes()),
        reservation: MemoryBudget::new(1 << 20).reservation(),
    }
}

fn hard_bounce(w: &World) -> Incoming {
    let to = w.rp.address(QID);
    report(&to, testdata::dsn(&to, "bob@b.test", "5.1.1", "smtp; 550 5.1.1 no such user", true))
}

#[tokio::test]
async fn a_hard_bounce_suppresses_reports_and_goes_on_to_the_sender() {
    let w = world();
    assert!(w.feedback.claims(&hard_bounce(&w).env));
    w.feedback.receive(hard_bounce(&w)).await.unwrap();
    let e = w.list.entry("bob@b.test").expect("suppressed");
    assert_eq!((e.reason, e.queue_id.as_deref()), (Reason::Bounce, Some(QID)));
    let stored = w.spool.0.lock().unwrap();
    let [fwd] = &stored[..] else { panic!("one forward") };
    assert_eq!((fwd.env.queue_id.as_str(), fwd.env.sender.as_str()), (REPORT, ""));
    assert_eq!(fwd.env.recipients.iter().map(|r| r.address.as_str()).collect::<Vec<_>>(), ["alice@a.test"]);
    assert!(!fwd.env.trusted, "not signed as ours");
    let Content::Whole(b) = &fwd.content else { panic!() };
    assert!(String::from_utf8_lossy(b).contains("Final-Recipient: rfc822; bob@b.test"), "the report as it came");
    let events = w.events.all();
    assert!(matches!(&events[..], [Event::Bounce { mail, .. }] if mail.message_id == QID));
    w.feedback.metrics.flush();
    let emf = w.emf.0.lock().unwrap().join("\n");
    assert!(emf.contains("\"AsyncBounces\":1"), "{emf}");
}

#[tokio::test]
async fn a_complaint_to_the_feedback_loop_address_names_the_message_by_its_quoted_token() {
    let w = world();
    let arf = testdata::arf("abuse", Some("bob@b.test"), None, &w.rp.token(QID));
    w.feedback.receive(report("fbl@fb.test", arf)).await.unwrap();
    assert_eq!(w.list.entry("bob@b.test").map(|e| e.reason), Some(Reason::Complaint));
    assert!(matches!(&w.events.all()[..], [Event::Complaint { .. }]));
    assert_eq!(w.spool.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn forged_and_unknown_reports_change_nothing() {
    let w = world();
    let forged = ReturnPath::new("fb.test", &[6u8; 32]);
    let cases = [
        report("fbl@fb.test", testdata::arf("abuse", Some("bob@b.test"), None, &forged.token(QID))),
        report("fbl@fb.test", testdata::arf("abuse", Some("bob@b.test"), Some(&forged.address(QID)), "none")),
        {
            let other = w.rp.address("01JQUEUEID0000000000000009");
            report(&other, testdata::dsn(&other, "bob@b.test", "5.1.1", "smtp; 550 5.1.1 x", true))
        },
    ];
    for r in cases {
        w.feedback.receive(r).await.expect("accepted and dropped");
    }
    assert!(w.list.entries.lock().unwrap().is_empty() && w.list.calls().is_empty());
    assert!(w.events.all().is_empty() && w.spool.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn failures_answer_451_before_the_forward() {
    let w = world();
    w.list.broken.store(true, Ordering::SeqCst);
    assert!(w.feedback.receive(hard_bounce(&w)).await.is_err());
    assert!(w.spool.0.lock().unwrap().is_empty() && w.events.all().is_empty(), "nothing forwarded or reported");

    let w = world();
    w.spool.1.store(true, Ordering::SeqCst);
    assert!(w.feedback.receive(hard_bounce(&w)).await.is_err());
    assert!(w.events.all().is_empty(), "the events wait for the forward");
    assert!(w.list.entry("bob@b.test").is_some(), "the suppression stands; sent again it adds nothing twice");
    w.spool.1.store(false, Ordering::SeqCst);
    w.feedback.receive(hard_bounce(&w)).await.unwrap();
    assert_eq!(w.list.entries.lock().unwrap().len(), 1);

    let w = world();
    w.origins.fail.store(true, Ordering::SeqCst);
    assert!(w.feedback.receive(hard_bounce(&w)).await.is_err());
}
