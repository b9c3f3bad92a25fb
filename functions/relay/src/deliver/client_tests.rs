//! The SMTP client against a scripted server on loopback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;
pub(crate) use crate::deliver::Transport;

/// What the scripted server does: its greeting (default `220 scripted ESMTP`), its EHLO reply
/// and HELO reply (default `250 ok`), its replies per RCPT address, its reply to MAIL (closing the
/// connection after a 4xx/5xx one), and whether STARTTLS leads to garbage. For session reuse: a
/// wait before each reply to the end of DATA, closing each session after its Nth message
/// (`close_after`) or in its Nth DATA without a reply (`drop_in_data`), and the reply to the Nth
/// end of DATA over all sessions (`data_reply`; the server closes after a 421 one).
#[derive(Clone, Default)]
pub(crate) struct Script {
    pub(crate) greeting: Option<&'static str>,
    pub(crate) ehlo: &'static str,
    pub(crate) helo: Option<&'static str>,
    pub(crate) rcpt: HashMap<&'static str, &'static str>,
    pub(crate) mail: Option<&'static str>,
    pub(crate) broken_starttls: bool,
    pub(crate) data_wait: Duration,
    pub(crate) close_after: Option<usize>,
    pub(crate) drop_in_data: Option<usize>,
    pub(crate) data_reply: Option<(usize, &'static str)>,
}

impl Script {
    pub(crate) fn ehlo(ehlo: &'static str) -> Self {
        Self { ehlo, ..Self::default() }
    }
}

/// Commands and DATA bytes the server saw, over all connections; for session reuse, the
/// connections open now and at most, and every accepted message as (connection number, its
/// recipients).
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) commands: Vec<String>,
    pub(crate) data: Vec<u8>,
    pub(crate) connections: usize,
    pub(crate) open: usize,
    pub(crate) max_open: usize,
    pub(crate) ends_of_data: usize,
    pub(crate) accepted: Vec<(usize, Vec<String>)>,
}

pub(crate) async fn server(script: Script) -> (std::net::SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let n = {
                let mut s = log.lock().unwrap();
                s.connections += 1;
                s.open += 1;
                s.max_open = s.max_open.max(s.open);
                s.connections
            };
            let (script, log) = (script.clone(), log.clone());
            tokio::spawn(async move {
                session(sock, script, log.clone(), n).await;
                log.lock().unwrap().open -= 1;
            });
        }
    });
    (addr, seen)
}

async fn session(sock: tokio::net::TcpStream, script: Script, log: Arc<Mutex<Seen>>, conn: usize) {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    let greeting = script.greeting.unwrap_or("220 scripted ESMTP");
    w.write_all(format!("{greeting}\r\n").as_bytes()).await.unwrap();
    let (mut rcpts, mut messages) = (Vec::new(), 0);
    let mut line = String::new();
    while r.read_line(&mut line).await.unwrap_or(0) > 0 {
        let cmd = line.trim_end().to_string();
        line.clear();
        log.lock().unwrap().commands.push(cmd.clone());
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("MAIL") || upper == "RSET" {
            rcpts.clear();
        }
        let reply = if upper.starts_with("EHLO") {
            script.ehlo.to_string()
        } else if let Some(helo) = script.helo.filter(|_| upper.starts_with("HELO")) {
            format!("{helo}\r\n")
        } else if upper == "STARTTLS" && script.broken_starttls {
            let _ = w.write_all(b"220 go ahead\r\nthis is not a TLS handshake\r\n").await;
            return;
        } else if let Some(reply) = script.mail.filter(|_| upper.starts_with("MAIL")) {
            let _ = w.write_all(format!("{reply}\r\n").as_bytes()).await;
            if !reply.starts_with('2') {
                return;
            }
            continue;
        } else if upper.starts_with("RCPT TO:<") {
            let addr = cmd[9..].split('>').next().unwrap();
            let reply = script.rcpt.get(addr).copied().unwrap_or("250 2.1.5 ok");
            if reply.starts_with('2') {
                rcpts.push(addr.to_string());
            }
            reply.to_string() + "\r\n"
        } else if upper == "DATA" {
            w.write_all(b"354 go\r\n").await.unwrap();
            let mut data = Vec::new();
            while !data.ends_with(b"\r\n.\r\n") {
                let mut b = [0u8; 1];
                if r.read_exact(&mut b).await.is_err() {
                    return;
                }
                data.push(b[0]);
            }
            messages += 1;
            if script.drop_in_data == Some(messages) {
                return;
            }
            tokio::time::sleep(script.data_wait).await;
            let nth = {
                let mut s = log.lock().unwrap();
                s.ends_of_data += 1;
                s.ends_of_data
            };
            if let Some((_, reply)) = script.data_reply.filter(|(n, _)| *n == nth) {
                let _ = w.write_all(format!("{reply}\r\n").as_bytes()).await;
                if reply.starts_with("421") {
                    return;
                }
                rcpts.clear();
                continue;
            }
            {
                let mut s = log.lock().unwrap();
                s.data = data;
                s.accepted.push((conn, std::mem::take(&mut rcpts)));
            }
            if w.write_all(b"250 2.0.0 queued\r\n").await.is_err() || script.close_after == Some(messages) {
                return;
            }
            continue;
        } else if upper == "QUIT" {
            let _ = w.write_all(b"221 bye\r\n").await;
            return;
        } else {
            "250 ok\r\n".into()
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

pub(crate) fn transport(pairs: &[(&str, &str)]) -> SmtpTransport {
    SmtpTransport::new(&crate::testkit::config(pairs)).unwrap()
}

pub(crate) fn job(rcpts: &[&str]) -> Job {
    crate::testkit::job("b.test", rcpts, 0)
}

pub(crate) fn target(addr: std::net::SocketAddr) -> Target {
    Target::new("mx.b.test", addr, Hop::Mx)
}

pub(crate) const PIPELINED: &str = "250-scripted\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 1000\r\n";

#[tokio::test]
async fn per_recipient_verdicts_from_a_pipelined_session() {
    let rcpt = HashMap::from([("later@b.test", "450 4.2.0 busy"), ("no@b.test", "550 5.1.1 unknown")]);
    let (addr, seen) = server(Script { rcpt, ..Script::ehlo(PIPELINED) }).await;
    let j = job(&["ok@b.test", "later@b.test", "no@b.test"]);
    let a = transport(&[]).deliver(&[target(addr)], &j, b"Subject: x\r\n\r\n.dot\nbare lf\r\n").await;
    let got: Vec<_> = a.outcomes.iter().map(|(r, v)| (r.as_str(), v.class, v.status.as_str())).collect();
    assert_eq!(
        got,
        [
            ("ok@b.test", Class::Sent, "2.0.0"),
            ("later@b.test", Class::Deferred, "4.2.0"),
            ("no@b.test", Class::Failed, "5.1.1")
        ]
    );
    let remote = a.remote.unwrap();
    assert!(!remote.tls && !remote.dsn);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.commands[1], "MAIL FROM:<alice@a.test> SIZE=28");
    assert_eq!(seen.data, b"Subject: x\r\n\r\n..dot\r\nbare lf\r\n.\r\n");
}

#[tokio::test]
async fn refused_connection_moves_to_the_next_address() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap(); // closed on drop
    let (addr, seen) = server(Script::ehlo(PIPELINED)).await;
    let a = transport(&[]).deliver(&[target(dead), target(addr)], &job(&["ok@b.test"]), b"x\r\n").await;
    assert_eq!(a.outcomes[0].1.class, Class::Sent);
    assert_eq!(a.remote.unwrap().addr, Some(addr));
    assert!(seen.lock().unwrap().commands.iter().any(|c| c == "DATA"));
}

#[tokio::test]
async fn all_addresses_down_defers_everyone() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let a = transport(&[]).deliver(&[target(dead)], &job(&["a@b.test", "c@b.test"]), b"x\r\n").await;
    assert!(a.outcomes.iter().all(|(_, v)| v.class == Class::Deferred && v.status == "4.4.1"), "{a:?}");
}

#[tokio::test]
async fn helo_fallback_without_pipelining_and_limits() {
    let (addr, seen) = server(Script::ehlo("502 5.5.1 no EHLO here\r\n")).await;
    let a = transport(&[]).deliver(&[target(addr)], &job(&["ok@b.test"]), b"x\r\n").await;
    assert_eq!(a.outcomes[0].1.class, Class::Sent);
    assert!(seen.lock().unwrap().commands.iter().any(|c| c == "HELO relay.test"));

    // SIZE 1000 advertised: a larger message fails permanently without a transaction.
    let (addr, seen) = server(Script::ehlo(PIPELINED)).await;
    let big = vec![b'x'; 2000];
    let a = transport(&[]).deliver(&[target(addr)], &job(&["ok@b.test"]), &big).await;
    assert_eq!((a.outcomes[0].1.class, a.outcomes[0].1.status.as_str()), (Class::Failed, "5.3.4"));
    assert!(!seen.lock().unwrap().commands.iter().any(|c| c.starts_with("MAIL")));

    // SMTPUTF8 needed but not offered: 5.6.7.
    let (addr, _) = server(Script::ehlo(PIPELINED)).await;
    let mut j = job(&["ok@b.test"]);
    j.smtputf8 = true;
    let a = transport(&[]).deliver(&[target(addr)], &j, b"x\r\n").await;
    assert_eq!(a.outcomes[0].1.status, "5.6.7");
}

#[tokio::test]
async fn required_tls_refuses_a_plaintext_server() {
    let (addr, seen) = server(Script::ehlo(PIPELINED)).await;
    let a = transport(&[("RELAY_TLS", "required")]).deliver(&[target(addr)], &job(&["ok@b.test"]), b"x\r\n").await;
    assert_eq!((a.outcomes[0].1.class, a.outcomes[0].1.status.as_str()), (Class::Deferred, "4.7.4"));
    assert!(!seen.lock().unwrap().commands.iter().any(|c| c.starts_with("MAIL")));
}

const STARTTLS: &str = "250-scripted\r\n250-PIPELINING\r\n250 STARTTLS\r\n";

#[tokio::test]
async fn broken_starttls_falls_back_to_plaintext_unless_tls_is_required() {
    let script = Script { broken_starttls: true, ..Script::ehlo(STARTTLS) };
    let (addr, seen) = server(script.clone()).await;
    let a = transport(&[]).deliver(&[target(addr)], &job(&["ok@b.test"]), b"x\r\n").await;
    assert_eq!(a.outcomes[0].1.class, Class::Sent, "{a:?}");
    assert!(!a.remote.unwrap().tls);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.connections, 2);
        assert_eq!(seen.commands.iter().filter(|c| *c == "STARTTLS").count(), 1, "no STARTTLS on the retry");
    }

    let (addr, seen) = server(script).await;
    let a = transport(&[("RELAY_TLS", "required")]).deliver(&[target(addr)], &job(&["ok@b.test"]), b"x\r\n").await;
    assert_eq!((a.outcomes[0].1.class, a.outcomes[0].1.status.as_str()), (Class::Deferred, "4.7.5"));
    assert_eq!(seen.lock().unwrap().connections, 1);
}

#[tokio::test]
async fn a_421_before_the_close_is_kept_for_every_recipient() {
    let (addr, _) = server(Script { mail: Some("421 4.3.2 shutting down"), ..Script::ehlo(PIPELINED) }).await;
    let a = transport(&[]).deliver(&[target(addr)], &job(&["a@b.test", "c@b.test"]), b"x\r\n").await;
    for (_, v) in &a.outcomes {
        assert_eq!((v.class, v.text().as_str()), (Class::Deferred, "421 4.3.2 shutting down"));
    }
    let (addr, _) = server(Script { mail: Some("550 5.7.1 go away"), ..Script::ehlo("250 plain\r\n") }).await;
    let a = transport(&[]).deliver(&[target(addr)], &job(&["a@b.test"]), b"x\r\n").await;
    assert_eq!((a.outcomes[0].1.class, a.outcomes[0].1.status.as_str()), (Class::Failed, "5.7.1"));
}

#[tokio::test]
async fn a_server_calling_itself_by_our_name_is_a_loop_and_ends_the_attempt() {
    // relay.test is RELAY_HELO_NAME in the test kit's configuration.
    let by_greeting = Script { greeting: Some("220 Relay.Test. ESMTP"), ..Script::ehlo(PIPELINED) };
    let by_ehlo = Script::ehlo("250-relay.test hello\r\n250 PIPELINING\r\n");
    let by_helo = Script { helo: Some("250 relay.test"), ..Script::ehlo("502 5.5.1 no EHLO\r\n") };
    for (what, script) in [("greeting", by_greeting), ("EHLO", by_ehlo), ("HELO", by_helo)] {
        let (looped, seen) = server(script).await;
        let (good, good_seen) = server(Script::ehlo(PIPELINED)).await;
        let a =
            transport(&[]).deliver(&[target(looped), target(good)], &job(&["a@b.test", "c@b.test"]), b"x\r\n").await;
        for (_, v) in &a.outcomes {
            assert_eq!((v.class, v.status.as_str()), (Class::Failed, "5.4.6"), "{what}: {v:?}");
            assert!(v.detail.contains("loops back to myself"), "{what}: {v:?}");
        }
        assert_eq!(a.remote.unwrap().addr, Some(looped), "{what}");
        assert!(!seen.lock().unwrap().commands.iter().any(|c| c.starts_with("MAIL")), "{what}: no transaction");
        assert_eq!(good_seen.lock().unwrap().connections, 0, "{what}: no other address tried after a loop");
    }
    // Our name after the server's own, as many servers greet their client: no loop.
    let (addr, _) = server(Script::ehlo("250-mx.b.test Hello relay.test\r\n250 PIPELINING\r\n")).await;
    let a = transport(&[]).deliver(&[target(addr)], &job(&["a@b.test"]), b"x\r\n").await;
    assert_eq!(a.outcomes[0].1.class, Class::Sent, "{a:?}");
}

const AUTH: &str = "250-scripted\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n";

#[tokio::test]
async fn a_route_gets_mx_treatment_even_with_a_smarthost_configured() {
    let cfg = [
        ("RELAY_SMARTHOST", "smtp.provider.test:465"),
        ("RELAY_SMARTHOST_USER", "user"),
        ("RELAY_SMARTHOST_PASSWORD", "secret"),
    ];
    // The route's server offers AUTH and a broken STARTTLS: like an MX, the relay falls back to
    // plaintext (no implicit TLS, no certificate check) and never sends the smarthost's password.
    let (addr, seen) = server(Script { broken_starttls: true, ..Script::ehlo(AUTH) }).await;
    let route = Target::new("mail.internal", addr, Hop::Route);
    let a = transport(&cfg).deliver(&[route], &job(&["ok@b.test"]), b"x\r\n").await;
    assert_eq!(a.outcomes[0].1.class, Class::Sent, "{a:?}");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.connections, 2, "plaintext retry after the failed handshake");
        assert!(!seen.commands.iter().any(|c| c.starts_with("AUTH")), "{:?}", seen.commands);
    }

    // The same server as the smarthost: implicit TLS (465) is attempted and fails; no fallback.
    let (addr, seen) = server(Script::ehlo(AUTH)).await;
    let smarthost = Target::new("smtp.provider.test", addr, Hop::Smarthost);
    let a = transport(&cfg).deliver(&[smarthost], &job(&["ok@b.test"]), b"x\r\n").await;
    assert_eq!((a.outcomes[0].1.class, a.outcomes[0].1.status.as_str()), (Class::Deferred, "4.7.5"), "{a:?}");
    assert!(seen.lock().unwrap().commands.is_empty(), "nothing sent in plaintext to the smarthost");
}

#[tokio::test]
async fn a_verified_target_gets_nothing_in_plaintext() {
    let verified = |addr| Target { tls: TlsRequirement::Verified, ..target(addr) };
    let (addr, seen) = server(Script::ehlo(PIPELINED)).await;
    let a = transport(&[]).deliver(&[verified(addr)], &job(&["ok@b.test"]), b"x\r\n").await;
    assert_eq!((a.outcomes[0].1.class, a.outcomes[0].1.status.as_str()), (Class::Deferred, "4.7.4"));
    assert!(a.outcomes[0].1.detail.contains("MTA-STS"), "{a:?}");
    let remote = a.remote.unwrap();
    assert_eq!((remote.tls, remote.tls_verified, remote.tls_policy), (false, false, TlsRequirement::Verified));
    assert!(!seen.lock().unwrap().commands.iter().any(|c| c.starts_with("MAIL")));

    // A failed handshake is not retried in plaintext, unlike opportunistic TLS.
    let (addr, seen) = server(Script { broken_starttls: true, ..Script::ehlo(STARTTLS) }).await;
    let a = transport(&[]).deliver(&[verified(addr)], &job(&["ok@b.test"]), b"x\r\n").await;
    assert_eq!((a.outcomes[0].1.class, a.outcomes[0].1.status.as_str()), (Class::Deferred, "4.7.5"));
    assert_eq!(seen.lock().unwrap().connections, 1);
}

#[tokio::test]
async fn only_mail_of_our_own_is_dkim_signed() {
    let key = || crate::dkim::Key {
        domain: "a.test".into(),
        selector: "s1".into(),
        key: shared::signing::pem::parse_pem(include_bytes!("../../../../shared/src/signing/testdata/ed25519.pem"))
            .unwrap(),
    };
    let message = b"From: alice@a.test\r\nTo: bob@b.test\r\nSubject: x\r\n\r\nhi\r\n";
    for (trusted, signed) in [(true, true), (false, false)] {
        let (addr, seen) = server(Script::ehlo(PIPELINED)).await;
        let t = transport(&[]).with_dkim(crate::dkim::Signer::new(vec![key()]));
        let j = Job { trusted, ..job(&["bob@b.test"]) };
        let a = t.deliver(&[target(addr)], &j, message).await;
        assert_eq!(a.outcomes[0].1.class, Class::Sent);
        let data = String::from_utf8(seen.lock().unwrap().data.clone()).unwrap();
        assert_eq!(data.starts_with("DKIM-Signature: "), signed, "trusted={trusted}: {data}");
        assert!(data.contains("From: alice@a.test\r\n"), "the message itself is unchanged");
    }
}
