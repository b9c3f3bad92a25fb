//! The feedback domain in the session: what RCPT answers there, a report alone in its
//! transaction, the smaller size limit, and postmaster.

use shared::feedback::ReturnPath;

use super::*;
use crate::policy::feedback::Intake;

const QID: &str = "01JQUEUEID0000000000000000";

fn rp() -> ReturnPath {
    ReturnPath::new("fb.example.test", &[2u8; 32])
}

/// An MTA session after EHLO on a listener that takes reports for fb.example.test (messages up
/// to 3 MB, so the report limit is the one that bites).
fn driver() -> Driver {
    let mut c = Arc::try_unwrap(cfg(false, false)).unwrap();
    c.feedback = Some(Intake::new(rp()));
    c.max_message_size = 3 << 20;
    c.budget = MemoryBudget::new(8 << 20);
    let mut d = Driver::with(Arc::new(c), ListenerKind::Mta, "192.0.2.1");
    assert_eq!(d.codes(b"EHLO mx.b.test\r\n"), [250]);
    d
}

#[test]
fn rcpt_in_the_feedback_domain() {
    let ours = rp().address(QID);
    let forged = ReturnPath::new("fb.example.test", &[9u8; 32]).address(QID);
    // (recipient, reply)
    let cases = [
        (ours.as_str(), "250 2.1.5"),
        ("fbl@fb.example.test", "250 2.1.5"),
        ("postmaster@fb.example.test", "250 2.1.5"),
        (forged.as_str(), "550 5.1.1"),
        ("bob@fb.example.test", "550 5.1.1"),
    ];
    for (rcpt, want) in cases {
        let mut d = driver();
        let r = d.send(format!("MAIL FROM:<>\r\nRCPT TO:<{rcpt}>\r\n").as_bytes());
        assert!(r[1].starts_with(want), "{rcpt}: {r:?}");
    }
}

#[test]
fn a_report_goes_alone_and_is_stored_whole_for_the_feedback_stage() {
    let ours = rp().address(QID);
    let mut d = driver();
    let r = d.codes(
        format!("MAIL FROM:<>\r\nRCPT TO:<{ours}>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<fbl@fb.example.test>\r\n")
            .as_bytes(),
    );
    assert_eq!(r, [250, 250, 452, 452], "other recipients and a second report wait for their own transaction");
    assert_eq!(d.codes(b"DATA\r\nSubject: report\r\n\r\nx\r\n.\r\n"), [354, 250]);
    let m = d.stored.last().unwrap();
    assert_eq!(m.env.recipients.iter().map(|r| r.address.as_str()).collect::<Vec<_>>(), [ours.as_str()]);
    assert!(matches!(m.content, crate::spool::upload::Content::Whole(_)));

    // Mail first, then a report: the report waits.
    let r = d.codes(format!("MAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<{ours}>\r\n").as_bytes());
    assert_eq!(r, [250, 250, 452]);
    // postmaster@ the feedback domain is the postmaster, mail like any other.
    d.send(b"RSET\r\n");
    let r = d.codes(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<postmaster@fb.example.test>\r\nRCPT TO:<bob@example.test>\r\n");
    assert_eq!(r, [250, 250, 250]);
}

#[test]
fn a_report_has_a_smaller_size_limit() {
    let ours = rp().address(QID);
    let mut d = driver();
    d.send(format!("MAIL FROM:<>\r\nRCPT TO:<{ours}>\r\nDATA\r\n").as_bytes());
    let big = format!("Subject: big\r\n\r\n{}\r\n.\r\n", "x".repeat(1100 * 1024));
    assert_eq!(d.codes(big.as_bytes()), [552]);
    // Other mail keeps the listener's limit.
    d.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n");
    assert_eq!(d.codes(big.as_bytes()), [250]);
}
