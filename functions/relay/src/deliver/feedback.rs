//! What the feedback domain (`FEEDBACK_DOMAIN`) changes in a message of ours as it leaves: the
//! return path becomes the message's own address in that domain (VERP), and a reference header
//! carrying the same token goes on top of the message, before DKIM signing, so the signature
//! covers it and a complaint that quotes only the headers still names the message. Pure.
//!
//! Only mail of our own with a real sender gets either (`job.trusted`: what a client allowed to
//! relay submitted): a DSN keeps `<>` (never bounce a bounce), and inbound mail relayed for
//! `RELAY_DOMAINS` keeps the original sender, whose own bounces it must reach.

use std::borrow::Cow;

use shared::Job;
use shared::feedback::{REF_HEADER, ReturnPath};

/// The return path's feedback domain applies to this job.
fn applies(job: &Job) -> bool {
    job.trusted && !job.sender.is_empty()
}

/// The reverse-path of MAIL FROM.
pub fn reverse_path<'j>(rp: Option<&ReturnPath>, job: &'j Job) -> Cow<'j, str> {
    match rp {
        Some(rp) if applies(job) => Cow::Owned(rp.address(&job.queue_id)),
        _ => Cow::Borrowed(&job.sender),
    }
}

/// `message` with the reference header on top when the feedback domain applies.
pub fn with_reference<'m>(rp: Option<&ReturnPath>, job: &Job, message: Cow<'m, [u8]>) -> Cow<'m, [u8]> {
    match rp {
        Some(rp) if applies(job) => {
            let mut out = format!("{REF_HEADER}: {}\r\n", rp.token(&job.queue_id)).into_bytes();
            out.extend_from_slice(&message);
            Cow::Owned(out)
        }
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn only_our_own_mail_with_a_sender_changes() {
        let rp = ReturnPath::new("fb.a.test", &[1u8; 32]);
        let mut job = testkit::job("b.test", &["bob@b.test"], 0);
        job.trusted = true;
        let msg: &[u8] = b"From: alice@a.test\r\n\r\nhi\r\n";
        let path = reverse_path(Some(&rp), &job);
        assert_eq!(rp.verify_address(&path).as_deref(), Some(testkit::QID));
        let out = with_reference(Some(&rp), &job, Cow::Borrowed(msg));
        let want = format!("X-Relay-Ref: {}\r\nFrom: alice@a.test\r\n\r\nhi\r\n", rp.token(testkit::QID));
        assert_eq!(String::from_utf8_lossy(&out), want);

        let unchanged = |job: &Job, rp: Option<&ReturnPath>| {
            reverse_path(rp, job) == job.sender.as_str()
                && matches!(with_reference(rp, job, Cow::Borrowed(msg)), Cow::Borrowed(_))
        };
        assert!(unchanged(&job, None), "no FEEDBACK_DOMAIN");
        let inbound = Job { trusted: false, ..job.clone() };
        assert!(unchanged(&inbound, Some(&rp)), "inbound mail keeps its sender");
        let dsn = Job { sender: String::new(), ..job };
        assert!(unchanged(&dsn, Some(&rp)), "a bounce stays <>");
    }
}
