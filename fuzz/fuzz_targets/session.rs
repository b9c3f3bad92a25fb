//! Fuzz the SMTP session state machine: arbitrary bytes, split into arbitrary reads, must never
//! panic; every stored message (its parts joined) must be CRLF-clean and NUL-free; and no
//! upload may be left open when the connection ends.

#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use ingress::session::budget::MemoryBudget;
use ingress::policy::Policy;
use ingress::session::{Action, ListenerKind, Session, SessionConfig, TlsInfo};
use ingress::policy::tables::{LiveTables, Tables};
use ingress::spool::upload::{Content, PartTag, Upload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let cfg = Arc::new(SessionConfig {
        hostname: "mx.fuzz.test".into(),
        policy: Policy { relay_domains: vec!["example.test".into()], relay_networks: vec![], postmaster: "postmaster@mx.fuzz.test".into() },
        max_message_size: 4096,
        max_recipients: 100,
        max_errors: 20,
        tls_available: true,
        auth_available: true,
        budget: MemoryBudget::new(1 << 20),
        // Small parts, so messages are streamed in many of them.
        part_size: usize::from(split >> 4) * 16 + 1,
        tables: Arc::new(LiveTables::fixed(Tables::default())),
        rate_limit: None,
    });
    let mut s = Session::new(cfg, ListenerKind::Mta, "192.0.2.1".parse().unwrap(), None);
    let step = usize::from(split % 16) + 1;
    let mut open: HashMap<String, Vec<u8>> = HashMap::new();
    for chunk in rest.chunks(step) {
        s.receive(chunk);
        while let Some(action) = s.next_action() {
            match action {
                Action::BeginUpload(env) => {
                    let id = format!("u{}", open.len());
                    open.insert(id.clone(), Vec::new());
                    s.upload_begun(Ok(Upload { queue_id: env.queue_id.clone(), key: "k".into(), id }));
                }
                Action::UploadPart(p) => {
                    open.get_mut(&p.upload.id).expect("part of an open upload").extend_from_slice(&p.bytes);
                    s.part_uploaded(Ok(PartTag { number: p.number, etag: "e".into(), crc32: None }));
                }
                Action::AbortUpload(u) => assert!(open.remove(&u.id).is_some()),
                Action::Store(m) => {
                    let message = match &m.content {
                        Content::Whole(b) => b.clone(),
                        Content::Multipart { upload, last, .. } => {
                            let mut b = open.remove(&upload.id).expect("completion of an open upload");
                            b.extend_from_slice(last);
                            b
                        }
                    };
                    for (i, b) in message.iter().enumerate() {
                        assert!(*b != 0);
                        if *b == b'\n' {
                            assert_eq!(message[i - 1], b'\r');
                        }
                        if *b == b'\r' {
                            assert_eq!(message.get(i + 1), Some(&b'\n'));
                        }
                    }
                    s.stored(&m.env.queue_id, Ok(()));
                }
                Action::StartTls => s.tls_started(TlsInfo { version: "TLSv1_3".into(), cipher: "x".into() }),
                Action::Authenticate { user, .. } => s.auth_result(&user, user == "alice"),
                Action::Reply(_) | Action::Close => {}
            }
        }
    }
    for u in s.connection_lost() {
        assert!(open.remove(&u.id).is_some());
    }
    assert!(open.is_empty(), "uploads left open");
});
