//! Fuzz the SMTP session state machine: arbitrary bytes, split into arbitrary reads, must never
//! panic, and every stored message must be CRLF-clean and NUL-free.

#![no_main]

use std::sync::Arc;

use ingress::budget::MemoryBudget;
use ingress::policy::Policy;
use ingress::session::{Action, ListenerKind, Session, SessionConfig, TlsInfo};
use ingress::tables::{LiveTables, Tables};
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
        tables: Arc::new(LiveTables::fixed(Tables::default())),
        rate_limit: None,
    });
    let mut s = Session::new(cfg, ListenerKind::Mta, "192.0.2.1".parse().unwrap(), None);
    let step = usize::from(split % 16) + 1;
    for chunk in rest.chunks(step) {
        s.receive(chunk);
        while let Some(action) = s.next_action() {
            match action {
                Action::Store(m) => {
                    for (i, b) in m.message.iter().enumerate() {
                        assert!(*b != 0);
                        if *b == b'\n' {
                            assert_eq!(m.message[i - 1], b'\r');
                        }
                        if *b == b'\r' {
                            assert_eq!(m.message.get(i + 1), Some(&b'\n'));
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
});
