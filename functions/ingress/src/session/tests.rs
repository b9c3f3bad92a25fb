//! Table tests of the session state machine: every command in every state, the hostile DATA
//! sequences, STARTTLS injection, AUTH and BDAT, and large messages streamed in parts — all
//! without a socket.

use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::session::budget::MemoryBudget;

const HOST: &str = "mx.example.test";

fn cfg(kind_tls: bool, auth: bool) -> Arc<SessionConfig> {
    cfg_parts(kind_tls, auth, 1 << 20)
}

fn cfg_parts(kind_tls: bool, auth: bool, part_size: usize) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        hostname: HOST.into(),
        policy: Policy {
            relay_domains: vec!["example.test".into()],
            relay_networks: vec!["10.0.0.0/8".parse().unwrap()],
            postmaster: format!("postmaster@{HOST}"),
        },
        max_message_size: 1000,
        max_recipients: 100,
        max_errors: 10,
        tls_available: kind_tls,
        auth_available: auth,
        budget: MemoryBudget::new(1 << 20),
        part_size,
        tables: Arc::new(LiveTables::fixed(Tables::default())),
        rate_limit: None,
        feedback: None,
    })
}

/// The spool as the driver plays it: multipart uploads by id, with their parts.
#[derive(Default)]
struct FakeSpool {
    open: HashMap<String, Vec<(i32, Vec<u8>)>>,
    aborted: Vec<String>,
    completed: Vec<String>,
    /// Every action the spool was asked to carry out, in order (`begin`, `part N`, `abort`,
    /// `store`).
    log: Vec<String>,
    /// Fail the upload of this part number.
    fail_part: Option<i32>,
    /// Fail to open uploads.
    fail_begin: bool,
}

impl FakeSpool {
    fn begin(&mut self, env: &Envelope) -> Result<Upload, String> {
        self.log.push("begin".into());
        if self.fail_begin {
            return Err("S3 down".into());
        }
        let id = format!("u{}", self.open.len() + self.aborted.len() + self.completed.len());
        self.open.insert(id.clone(), Vec::new());
        Ok(Upload { queue_id: env.queue_id.clone(), key: shared::keys::message_key(&env.queue_id), id })
    }

    fn part(&mut self, part: Part) -> Result<PartTag, String> {
        self.log.push(format!("part {}", part.number));
        let parts = self.open.get_mut(&part.upload.id).expect("a part for an open upload");
        assert_eq!(part.number as usize, parts.len() + 1, "parts in order");
        if self.fail_part == Some(part.number) {
            return Err("S3 down".into());
        }
        parts.push((part.number, part.bytes));
        Ok(PartTag { number: part.number, etag: format!("e{}", part.number), crc32: None })
    }

    fn abort(&mut self, upload: Upload) {
        self.log.push("abort".into());
        assert!(self.open.remove(&upload.id).is_some(), "abort of an open upload");
        self.aborted.push(upload.id);
    }

    /// The stored bytes of a message: its parts (checked against the tags) and the rest.
    fn complete(&mut self, content: &Content) -> Vec<u8> {
        self.log.push("store".into());
        match content {
            Content::Whole(bytes) => bytes.clone(),
            Content::Multipart { upload, parts, last } => {
                let uploaded = self.open.remove(&upload.id).expect("completion of an open upload");
                let numbers: Vec<i32> = parts.iter().map(|t| t.number).collect();
                assert_eq!(numbers, (1..=uploaded.len() as i32).collect::<Vec<_>>(), "every part named once");
                self.completed.push(upload.id.clone());
                uploaded.into_iter().flat_map(|(_, b)| b).chain(last.iter().copied()).collect()
            }
        }
    }
}

/// A session driven the way the shell drives it: stores succeed, AUTH accepts alice/secret,
/// STARTTLS "succeeds" instantly, parts go to a [`FakeSpool`]. Keeps the transcript of replies,
/// what was stored, and each stored message's bytes.
struct Driver {
    s: Session,
    replies: Vec<String>,
    stored: Vec<Incoming>,
    messages: Vec<Vec<u8>>,
    spool: FakeSpool,
    store_ok: bool,
    closed: bool,
}

impl Driver {
    fn new(kind: ListenerKind, peer: &str, tls: bool, auth: bool) -> Self {
        Self::with(cfg(tls, auth), kind, peer)
    }

    fn with(cfg: Arc<SessionConfig>, kind: ListenerKind, peer: &str) -> Self {
        let s = Session::new(cfg, kind, peer.parse().unwrap(), None);
        let mut d = Self {
            s,
            replies: Vec::new(),
            stored: Vec::new(),
            messages: Vec::new(),
            spool: FakeSpool::default(),
            store_ok: true,
            closed: false,
        };
        d.pump();
        d
    }

    fn mta() -> Self {
        Self::new(ListenerKind::Mta, "192.0.2.1", false, false)
    }

    /// An MTA session, after EHLO, whose messages (up to 10 000 bytes) are cut into parts of
    /// `part_size` bytes.
    fn streaming(part_size: usize) -> Self {
        let mut c = Arc::try_unwrap(cfg_parts(false, false, part_size)).unwrap();
        c.max_message_size = 10_000;
        let mut d = Self::with(Arc::new(c), ListenerKind::Mta, "192.0.2.1");
        assert_eq!(d.codes(b"EHLO client.example\r\n"), [250]);
        d
    }

    fn pump(&mut self) {
        while let Some(a) = self.s.next_action() {
            match a {
                Action::Reply(r) => self.replies.push(r.to_string()),
                Action::Close => self.closed = true,
                Action::StartTls => {
                    self.s.tls_started(TlsInfo { version: "TLSv1_3".into(), cipher: "TLS13_AES_128_GCM_SHA256".into() })
                }
                Action::Authenticate { user, password } => {
                    let ok = user == "alice" && password.0 == "secret";
                    self.s.auth_result(&user, ok)
                }
                Action::BeginUpload(env) => {
                    let upload = self.spool.begin(&env);
                    self.s.upload_begun(upload)
                }
                Action::UploadPart(part) => {
                    let result = self.spool.part(*part);
                    self.s.part_uploaded(result)
                }
                Action::AbortUpload(upload) => self.spool.abort(upload),
                Action::Store(m) => {
                    let id = m.env.queue_id.clone();
                    let ok = self.store_ok;
                    let bytes = self.spool.complete(&m.content);
                    assert_eq!(m.size, bytes.len() as u64, "size of the stored message");
                    self.messages.push(bytes);
                    self.stored.push(*m);
                    self.s.stored(&id, if ok { Ok(()) } else { Err("S3 down".into()) })
                }
            }
        }
    }

    /// The connection drops: abort what the session leaves open. Then no upload is left.
    fn hang_up(&mut self) {
        for u in self.s.connection_lost() {
            self.spool.abort(u);
        }
        assert!(self.spool.open.is_empty(), "uploads left open: {:?}", self.spool.open.keys());
    }

    /// Feed bytes; return the replies they produced, one per string.
    fn send(&mut self, bytes: &[u8]) -> Vec<String> {
        let before = self.replies.len();
        self.s.receive(bytes);
        self.pump();
        self.replies[before..].to_vec()
    }

    /// Feed bytes; return the reply codes they produced.
    fn codes(&mut self, bytes: &[u8]) -> Vec<u16> {
        self.send(bytes).iter().map(|r| r[..3].parse().unwrap()).collect()
    }
}

/// A stored message without our trace field (its first field, with its continuation lines).
fn client_data(message: &[u8]) -> &[u8] {
    assert!(message.starts_with(b"Received: "));
    let mut at = 0;
    loop {
        at += message[at..].windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        if message.get(at) != Some(&b'\t') {
            return &message[at..];
        }
    }
}

/// Every line of `message` ends in CRLF, and it holds no NUL.
fn assert_clean(message: &[u8], what: &str) {
    for (i, b) in message.iter().enumerate() {
        assert!(*b != 0, "{what}: NUL stored");
        if *b == b'\n' {
            assert_eq!(message[i - 1], b'\r', "{what}: bare LF stored");
        }
        if *b == b'\r' {
            assert_eq!(message.get(i + 1), Some(&b'\n'), "{what}: bare CR stored");
        }
    }
}

fn ready() -> Driver {
    let mut d = Driver::mta();
    assert_eq!(d.codes(b"EHLO client.example\r\n"), [250]);
    d
}

#[test]
fn greeting_and_ehlo_capabilities() {
    let mut d = Driver::new(ListenerKind::Mta, "192.0.2.1", true, true);
    assert_eq!(d.replies[0], format!("220 {HOST} ESMTP ready\r\n"));
    let ehlo = d.send(b"ehlo client.example\r\n").join("");
    for kw in ["PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN", "CHUNKING", "STARTTLS"]
    {
        assert!(ehlo.contains(kw), "{kw} missing from {ehlo}");
    }
    assert!(!ehlo.contains("AUTH"), "AUTH must not be offered without TLS");
    assert_eq!(d.send(b"HELO client.example\r\n"), [format!("250 {HOST}\r\n")]);
}

#[test]
fn every_command_before_helo() {
    let cases: &[(&[u8], &str)] = &[
        (b"MAIL FROM:<a@example.org>\r\n", "503 5.5.1"),
        (b"RCPT TO:<b@example.test>\r\n", "503 5.5.1"),
        (b"DATA\r\n", "503 5.5.1"),
        (b"RSET\r\n", "250 2.0.0"),
        (b"NOOP\r\n", "250 2.0.0"),
        (b"VRFY bob\r\n", "252 2.0.0"),
        (b"VRFY\r\n", "501 5.5.4"),
        (b"EXPN list\r\n", "502 5.5.1"),
        (b"HELP\r\n", "214-2.0.0"),
        (b"SEND FROM:<a@b>\r\n", "502 5.5.1"),
        (b"SOML FROM:<a@b>\r\n", "502 5.5.1"),
        (b"SAML FROM:<a@b>\r\n", "502 5.5.1"),
        (b"TURN\r\n", "502 5.5.1"),
        (b"STARTTLS\r\n", "502 5.5.1"),
        (b"AUTH PLAIN\r\n", "502 5.5.1"),
        (b"FOO bar\r\n", "500 5.5.2"),
        (b"EHLO\r\n", "501 5.5.4"),
        (b"QUIT\r\n", "221 2.0.0"),
    ];
    for (cmd, want) in cases {
        let mut d = Driver::mta();
        let got = d.send(cmd);
        assert!(got[0].starts_with(want), "{:?} -> {got:?}", String::from_utf8_lossy(cmd));
    }
}

#[test]
fn a_full_transaction_with_dot_unstuffing_and_8bit() {
    let mut d = ready();
    assert_eq!(d.codes(b"MAIL FROM:<alice@example.org> BODY=8BITMIME\r\n"), [250]);
    assert_eq!(d.codes(b"RCPT TO:<bob@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.test\r\n"), [250]);
    assert_eq!(d.codes(b"DATA\r\n"), [354]);
    let r = d.send("Subject: hi\r\n\r\n..leading dot\r\nh\u{e9}llo\r\n.\r\n".as_bytes());
    assert_eq!(r.len(), 1);
    assert!(r[0].starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    let m = &d.stored[0];
    assert!(r[0].contains(&m.env.queue_id));
    let text = String::from_utf8(d.messages[0].clone()).unwrap();
    assert!(text.starts_with("Received: from client.example ([192.0.2.1])\r\n\tby mx.example.test"), "{text}");
    assert!(text.ends_with("Subject: hi\r\n\r\n.leading dot\r\nh\u{e9}llo\r\n"), "{text}");
    assert_eq!(m.env.sender, "alice@example.org");
    assert_eq!(m.env.body_type, BodyType::EightBitMime);
    let rcpt = &m.env.recipients[0];
    assert_eq!(rcpt.address, "bob@example.test");
    assert_eq!(rcpt.orcpt.as_deref(), Some("rfc822;bob@example.test"));
    assert_eq!(rcpt.notify, Some(shared::Notify { success: true, failure: true, delay: false }));
    // The transaction is over: a new MAIL is fine, RCPT without MAIL is not.
    assert_eq!(d.codes(b"RCPT TO:<bob@example.test>\r\n"), [503]);
}

#[test]
fn transaction_state_errors() {
    let mut d = ready();
    assert_eq!(d.codes(b"MAIL FROM:<a@example.org>\r\n"), [250]);
    assert_eq!(d.codes(b"MAIL FROM:<a@example.org>\r\n"), [503], "nested MAIL");
    assert_eq!(d.codes(b"DATA\r\n"), [554], "no recipients");
    assert_eq!(d.codes(b"RCPT TO:<x@elsewhere.test>\r\n"), [554], "relay denied");
    assert_eq!(d.codes(b"RCPT TO:<postmaster>\r\n"), [250]);
    assert_eq!(d.codes(b"EHLO again\r\n"), [250]);
    assert_eq!(d.codes(b"DATA\r\n"), [503], "EHLO reset the transaction");
    assert_eq!(d.codes(b"MAIL FROM:<>\r\n"), [250], "null sender");
    assert_eq!(d.codes(b"RCPT TO:<@a.example,@b.example:bob@example.test>\r\n"), [250], "source route ignored");
    assert_eq!(d.codes(b"RSET\r\n"), [250]);
    assert_eq!(d.codes(b"RCPT TO:<bob@example.test>\r\n"), [503], "RSET cleared MAIL");
}

#[test]
fn postmaster_is_routed_to_the_configured_address() {
    let mut d = ready();
    d.send(b"MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\nSubject: x\r\n\r\n.\r\n");
    assert_eq!(d.stored[0].env.recipients[0].address, format!("postmaster@{HOST}"));
}

#[test]
fn parameters() {
    let cases: &[(&[u8], u16)] = &[
        (b"MAIL FROM:<a@example.org> SIZE=1000\r\n", 250),
        (b"MAIL FROM:<a@example.org> SIZE=1001\r\n", 552),
        (b"MAIL FROM:<a@example.org> FOO=BAR\r\n", 555),
        (b"MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n", 555),
        (b"MAIL FROM:<a@example.org> BODY=9BIT\r\n", 501),
        (b"MAIL FROM:<a@example.org> RET=HDRS ENVID=abc+2Bdef\r\n", 250),
        (b"MAIL FROM:<j\xc3\xb6rg@example.org>\r\n", 553),
        (b"MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8\r\n", 250),
        (b"MAIL FROM:<a@example.org> REQUIRETLS\r\n", 555),
        (b"MAIL FROM:a@example.org\r\n", 501),
    ];
    for (cmd, want) in cases {
        let mut d = ready();
        assert_eq!(d.codes(cmd), [*want], "{}", String::from_utf8_lossy(cmd));
    }
    let mut d = ready();
    d.send(b"MAIL FROM:<a@example.org> RET=HDRS ENVID=abc+2Bdef\r\n");
    let txn = d.s.txn.as_ref().unwrap();
    assert_eq!(txn.env.dsn.ret, Some(shared::Ret::Hdrs));
    assert_eq!(txn.env.dsn.envid.as_deref(), Some("abc+def"));
    assert_eq!(d.codes(b"RCPT TO:<b@example.test> NOTIFY=NEVER,SUCCESS\r\n"), [501]);
    assert_eq!(d.codes(b"RCPT TO:<b@example.test> XYZ=1\r\n"), [555]);
    assert_eq!(d.codes(b"RCPT TO:<b\xc3\xb6@example.test>\r\n"), [553]);
    assert_eq!(d.codes(b"RCPT TO:<b@example.test> NOTIFY=NEVER\r\n"), [250]);
    assert_eq!(d.s.txn.as_ref().unwrap().env.recipients[0].notify, Some(shared::Notify::NEVER));
}

#[test]
fn recipient_limit_is_452() {
    let mut d = ready();
    d.send(b"MAIL FROM:<a@example.org>\r\n");
    for i in 0..100 {
        assert_eq!(d.codes(format!("RCPT TO:<u{i}@example.test>\r\n").as_bytes()), [250]);
    }
    assert_eq!(d.send(b"RCPT TO:<u100@example.test>\r\n"), ["452 4.5.3 Too many recipients\r\n"]);
}

#[test]
fn trusted_networks_relay_anywhere_and_routing_is_refused_for_others() {
    let mut d = Driver::new(ListenerKind::Mta, "10.1.2.3", false, false);
    d.send(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    assert_eq!(d.codes(b"RCPT TO:<x@anywhere.test>\r\n"), [250]);
    assert!(d.s.txn.as_ref().unwrap().env.trusted, "RELAY_NETWORKS mail is ours (DKIM-signed)");
    let mut d = ready();
    d.send(b"MAIL FROM:<a@example.org>\r\n");
    assert!(!d.s.txn.as_ref().unwrap().env.trusted, "mail from anyone for our domains is inbound: never signed");
    for rcpt in ["x%evil.test@example.test", "evil.test!x@example.test", "\"x@evil.test\"@example.test"] {
        assert_eq!(
            d.send(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())[0],
            "554 5.7.1 Sender-specified routing (%, ! or @ in local part) not allowed\r\n",
            "{rcpt}"
        );
    }
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let mut d = ready();
    let codes = d.codes(
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@nope.test>\r\nDATA\r\nSubject: p\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<d@example.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(codes, [250, 250, 554, 354, 250, 250, 250, 354, 250, 221]);
    assert_eq!(d.stored.len(), 2);
    assert!(d.closed);
}

#[test]
fn pipelined_input_waits_for_storage() {
    let mut d = ready();
    d.s.receive(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n");
    let mut seen = Vec::new();
    let store = loop {
        match d.s.next_action() {
            Some(Action::Reply(r)) => seen.push(r.code),
            Some(Action::Store(m)) => break m,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(seen, [250, 250, 354]);
    assert!(d.s.next_action().is_none(), "NOOP must wait until the message is stored");
    d.s.stored(&store.env.queue_id, Ok(()));
    let codes: Vec<u16> = std::iter::from_fn(|| d.s.next_action())
        .map(|a| match a {
            Action::Reply(r) => r.code,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(codes, [250, 250]);
}

#[test]
fn storage_failure_is_451_4_3_0() {
    let mut d = ready();
    d.store_ok = false;
    let r = d.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(r.last().unwrap(), "451 4.3.0 Temporary failure storing message, try again later\r\n");
}

/// A message whose body holds `seq` between two lines; returns the replies after DATA and the
/// stored client data (after our trace field).
fn data_with(seq: &[u8]) -> (Vec<String>, Option<Vec<u8>>) {
    let mut d = ready();
    d.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n");
    let mut body = b"Subject: t\r\n\r\nline1".to_vec();
    body.extend_from_slice(seq);
    body.extend_from_slice(b"MAIL FROM:<evil@example.org>\r\nline2\r\n.\r\n");
    let r = d.send(&body);
    let stored = d.messages.first().map(|s| {
        let start = s.windows(11).position(|w| w == b"Subject: t\r").unwrap();
        s[start..].to_vec()
    });
    (r, stored)
}

#[test]
fn hostile_end_of_data_sequences_never_end_the_data() {
    let seqs: &[&[u8]] = &[
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r",
        b"\r\n.\r",
        b"\r.\n",
        b"\n.\r",
        b"\r\n.\n",
        b"\r.\r\n",
        b"\r\n\0.\r\n",
        b"\r\n.\0\r\n",
    ];
    for seq in seqs {
        let (replies, stored) = data_with(seq);
        // Exactly one reply: the end of data. The smuggled MAIL was never a command.
        assert_eq!(replies.len(), 1, "{seq:?}: {replies:?}");
        if seq.contains(&0) {
            assert!(replies[0].starts_with("550 5.6.0"), "{seq:?}: {replies:?}");
            continue;
        }
        assert!(replies[0].starts_with("250 2.0.0"), "{seq:?}: {replies:?}");
        let stored = stored.unwrap();
        assert!(stored.windows(28).any(|w| w == b"MAIL FROM:<evil@example.org>"), "{seq:?}");
        assert_clean(&stored, &format!("{seq:?}"));
    }
}

#[test]
fn size_limit_at_end_of_data_and_the_session_goes_on() {
    let mut d = ready();
    d.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n");
    let mut big = vec![b'x'; 1500];
    big.extend_from_slice(b"\r\n.\r\n");
    assert_eq!(d.send(&big), ["552 5.3.4 Message size exceeds fixed limit\r\n"]);
    assert!(d.stored.is_empty());
    assert_eq!(d.codes(b"NOOP\r\n"), [250]);
}

#[test]
fn hop_count_limit() {
    let mut d = ready();
    d.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n");
    let mut msg = b"Received: x\r\n".repeat(51);
    msg.extend_from_slice(b"\r\nbody\r\n.\r\n");
    // The size limit is 1000 in these tests; 51 short fields fit.
    assert_eq!(d.send(&msg), ["554 5.4.6 Too many hops (mail loop?)\r\n"]);
    let mut d = ready();
    d.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n");
    let mut msg = b"Received: x\r\n".repeat(50);
    msg.extend_from_slice(b"\r\nbody\r\n.\r\n");
    assert_eq!(d.codes(&msg), [250]);
}

#[test]
fn bad_command_lines() {
    let mut d = ready();
    let mut long = vec![b'N'; MAX_LINE + 10];
    long.extend_from_slice(b"\r\n");
    assert_eq!(d.send(&long), ["500 5.5.2 Line too long\r\n"]);
    // Over-long line arriving in pieces.
    d.send(&vec![b'x'; MAX_LINE + 1]);
    assert_eq!(d.send(b"yyy\r\nNOOP\r\n"), ["500 5.5.2 Line too long\r\n", "250 2.0.0 Ok\r\n"]);
    assert_eq!(d.codes(b"NOOP\rRSET\r\n"), [500], "bare CR in a command");
    assert_eq!(d.codes(b"NO\0OP\r\n"), [500], "NUL in a command");
    assert_eq!(d.codes(b"NOOP\n"), [250], "bare LF ends a command line");
}

#[test]
fn too_many_errors_closes_with_421() {
    let mut d = ready();
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.extend(d.codes(b"BOGUS\r\n"));
    }
    assert_eq!(codes.last(), Some(&421));
    assert_eq!(codes.iter().filter(|c| **c == 500).count(), 10);
    assert!(d.closed);
    assert!(d.send(b"NOOP\r\n").is_empty(), "nothing after close");
}

#[test]
fn timeout_and_shutdown_replies() {
    let mut d = ready();
    d.s.timeout();
    d.pump();
    assert_eq!(d.replies.last().unwrap(), "421 4.4.2 Timeout exceeded, closing connection\r\n");
    assert!(d.closed);
    let mut d = ready();
    d.s.shutdown();
    d.pump();
    assert_eq!(d.replies.last().unwrap(), "421 4.3.2 Service shutting down, try again later\r\n");
}

#[test]
fn starttls_discards_pipelined_plaintext_and_resets() {
    let mut d = Driver::new(ListenerKind::Mta, "192.0.2.1", true, true);
    d.send(b"EHLO c\r\n");
    let r = d.send(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n");
    assert_eq!(r, ["220 2.0.0 Ready to start TLS\r\n"], "injected command must not be answered");
    assert!(d.s.tls.is_some());
    assert_eq!(d.codes(b"MAIL FROM:<a@example.org>\r\n"), [503], "EHLO required again after TLS");
    let ehlo = d.send(b"EHLO c\r\n").join("");
    assert!(!ehlo.contains("STARTTLS") && ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert_eq!(d.codes(b"STARTTLS\r\n"), [502], "no second STARTTLS");
}

#[test]
fn auth_plain_and_login() {
    use base64::Engine;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut d = Driver::new(ListenerKind::Submission, "192.0.2.1", true, true);
    d.send(b"EHLO c\r\n");
    assert_eq!(d.codes(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), [538], "AUTH needs TLS");
    assert_eq!(d.codes(b"MAIL FROM:<a@example.org>\r\n"), [530], "submission needs TLS first");
    d.send(b"STARTTLS\r\n");
    d.send(b"EHLO c\r\n");
    assert_eq!(d.codes(b"MAIL FROM:<a@example.org>\r\n"), [530], "submission needs AUTH");
    assert_eq!(d.codes(format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0wrong")).as_bytes()), [535]);
    assert_eq!(d.codes(b"AUTH PLAIN\r\n*\r\n"), [334, 501], "cancelled");
    assert_eq!(d.codes(b"AUTH PLAIN !!!\r\n"), [501], "bad base64");
    assert_eq!(d.codes(b"AUTH CRAM-MD5\r\n"), [504]);
    let login = format!("AUTH LOGIN\r\n{}\r\n{}\r\n", b64(b"alice"), b64(b"secret"));
    assert_eq!(d.codes(login.as_bytes()), [334, 334, 235]);
    assert_eq!(d.codes(b"AUTH PLAIN\r\n"), [503], "already authenticated");
    assert_eq!(
        d.codes(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<x@anywhere.test>\r\n"),
        [250, 250],
        "authenticated users relay"
    );
    assert!(d.s.txn.as_ref().unwrap().env.trusted, "an authenticated user's mail is ours (DKIM-signed)");
    let mut d = Driver::new(ListenerKind::ImplicitTls, "192.0.2.1", true, true);
    d.s.tls = Some(TlsInfo { version: "TLSv1_3".into(), cipher: "x".into() });
    d.send(b"EHLO c\r\n");
    assert_eq!(d.codes(format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0secret")).as_bytes()), [235]);
}

#[test]
fn bdat_chunks_last_and_errors() {
    let mut d = ready();
    d.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n");
    assert_eq!(d.send(b"BDAT 14\r\nSubject: x\r\n\r\n"), ["250 2.0.0 14 octets received\r\n"]);
    assert_eq!(d.codes(b"DATA\r\n"), [503], "DATA during BDAT");
    let r = d.send(b"BDAT 6 LAST\r\nhello\n");
    assert!(r[0].starts_with("250 2.0.0 Ok: queued as"), "{r:?}");
    assert!(d.messages[0].ends_with(b"Subject: x\r\n\r\nhello\r\n"));

    // BDAT without a transaction: the chunk is read and dropped, then 503.
    assert_eq!(d.codes(b"BDAT 5 LAST\r\nNOOP\n"), [503]);
    assert_eq!(d.codes(b"NOOP\r\n"), [250]);

    // Too big: every later chunk gets the error, LAST ends the transaction.
    d.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n");
    let mut chunk = b"BDAT 1200\r\n".to_vec();
    chunk.extend(vec![b'x'; 1200]);
    assert_eq!(d.codes(&chunk), [552]);
    assert_eq!(d.codes(b"BDAT 2 LAST\r\nab"), [552]);
    assert_eq!(d.codes(b"RCPT TO:<b@example.test>\r\n"), [503], "transaction over");

    // Malformed BDAT closes the session.
    let r = d.send(b"BDAT ten\r\n");
    assert_eq!(r, ["421 4.7.0 Malformed BDAT, closing connection\r\n"]);
    assert!(d.closed);
}

#[test]
fn memory_budget_exhaustion_is_451_4_3_1() {
    let budget = MemoryBudget::new(crate::session::budget::STEP);
    let mut c = Arc::try_unwrap(cfg(false, false)).unwrap();
    c.budget = budget.clone();
    c.max_message_size = 1 << 20;
    let mut hog = budget.reservation();
    assert!(hog.ensure(1));
    let mut s = Session::new(Arc::new(c), ListenerKind::Mta, "192.0.2.1".parse().unwrap(), None);
    s.receive(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nx\r\n.\r\n");
    let last = std::iter::from_fn(|| s.next_action()).last().unwrap();
    match last {
        Action::Reply(r) => assert_eq!(r.to_string(), "451 4.3.1 Insufficient system resources, try again later\r\n"),
        other => panic!("{other:?}"),
    }
}

/// Random scripts built from SMTP fragments, hostile sequences and noise: the session never
/// panics, stores only CRLF-clean messages, and gives the same replies and stores the same
/// bytes however the input is split into reads and however the message is cut into parts
/// (framing must depend on neither packet nor part boundaries). No upload is left open.
#[test]
fn random_scripts_are_framing_independent_and_store_clean_messages() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const FRAGMENTS: &[&[u8]] = &[
        b"EHLO c\r\n",
        b"HELO c\r\n",
        b"MAIL FROM:<a@example.org>\r\n",
        b"MAIL FROM:<> BODY=8BITMIME SMTPUTF8\r\n",
        b"RCPT TO:<b@example.test>\r\n",
        b"RCPT TO:<x@nowhere.test>\r\n",
        b"DATA\r\n",
        b"BDAT 7\r\n",
        b"BDAT 3 LAST\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"STARTTLS\r\n",
        b"AUTH PLAIN\r\n",
        b"line of text\r\n",
        b"Received: x\r\n",
        b".\r\n",
        b"..\r\n",
        b"\r\n.\r\n",
        b"\n.\n",
        b"\r.\r",
        b"\r\n.\n",
        b"\0",
        b"\r",
        b"\n",
        b"\xff\xfe",
        b"QUIT\r\n",
    ];
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for round in 0..400 {
        let mut script = Vec::new();
        for _ in 0..rng.random_range(1..60) {
            script.extend_from_slice(FRAGMENTS[rng.random_range(0..FRAGMENTS.len())]);
        }
        let run = |chunks: &[&[u8]], part_size: usize| {
            let mut d = Driver::with(cfg_parts(false, false, part_size), ListenerKind::Mta, "192.0.2.1");
            for c in chunks {
                d.send(c);
            }
            d.hang_up();
            for m in &d.messages {
                assert_clean(m, &format!("round {round}"));
            }
            // Queue ids and dates differ between runs; everything else must not.
            let replies: Vec<String> =
                d.replies.iter().map(|r| r.split("queued as").next().unwrap_or_default().to_string()).collect();
            let data: Vec<Vec<u8>> = d.messages.iter().map(|m| client_data(m).to_vec()).collect();
            (replies, data)
        };
        let whole = run(&[&script], 1 << 20);
        let mut pieces = Vec::new();
        let mut rest = script.as_slice();
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len().min(9));
            let (a, b) = rest.split_at(n);
            pieces.push(a);
            rest = b;
        }
        let what = String::from_utf8_lossy(&script);
        assert_eq!(whole, run(&pieces, 1 << 20), "round {round}: split reads: {what:?}");
        let part_size = rng.random_range(1..48);
        assert_eq!(whole, run(&pieces, part_size), "round {round}: parts of {part_size}: {what:?}");
    }
}

/// A message of `lines` lines of text, sent with DATA in one piece.
fn data_message(lines: usize) -> Vec<u8> {
    let mut m = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..lines {
        m.extend_from_slice(format!("line {i:04} of the message\r\n").as_bytes());
    }
    m
}

fn begin_data(d: &mut Driver) {
    assert_eq!(d.codes(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"), [250, 250, 354]);
}

#[test]
fn a_message_larger_than_a_part_streams_in_parts_and_is_stored_the_same() {
    let msg = data_message(30);
    let mut whole = Driver::streaming(1 << 20);
    begin_data(&mut whole);
    assert_eq!(whole.codes(&[msg.as_slice(), b".\r\n"].concat()), [250]);
    assert!(matches!(whole.stored[0].content, Content::Whole(_)));
    assert_eq!(whole.spool.log, ["store"]);

    let mut d = Driver::streaming(100);
    begin_data(&mut d);
    assert_eq!(d.codes(&[msg.as_slice(), b".\r\n"].concat()), [250]);
    let Content::Multipart { parts, last, .. } = &d.stored[0].content else { panic!("multipart expected") };
    assert_eq!(parts.len() * 100 + last.len(), d.messages[0].len(), "parts of 100 bytes, then the rest");
    // The last part is what was left at the end: at most a part and the last push.
    assert!(!last.is_empty() && last.len() <= 3 * 100 + 2, "{}", last.len());
    assert_eq!(d.spool.log[0], "begin");
    assert_eq!(d.spool.log.last().unwrap(), "store");
    assert_eq!(client_data(&d.messages[0]), client_data(&whole.messages[0]));
    assert_eq!(client_data(&d.messages[0]), msg.as_slice());
    assert_eq!(d.spool.completed.len(), 1);
}

#[test]
fn input_waits_while_a_part_is_with_the_shell() {
    let mut s = Session::new(cfg_parts(false, false, 64), ListenerKind::Mta, "192.0.2.1".parse().unwrap(), None);
    s.receive(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n");
    while let Some(Action::Reply(_)) = s.next_action() {}
    let mut msg = b"DATA\r\n".to_vec();
    msg.extend_from_slice(&data_message(20));
    msg.extend_from_slice(b".\r\nNOOP\r\n");
    s.receive(&msg);
    let env = loop {
        match s.next_action() {
            Some(Action::Reply(r)) => assert_eq!(r.code, 354),
            Some(Action::BeginUpload(env)) => break env,
            other => panic!("the upload opens first, got {other:?}"),
        }
    };
    assert!(s.next_action().is_none(), "nothing more until the upload is open");
    let upload = Upload { queue_id: env.queue_id.clone(), key: "spool/x.eml".into(), id: "u".into() };
    s.upload_begun(Ok(upload.clone()));
    for n in 1..=3 {
        match s.next_action() {
            Some(Action::UploadPart(p)) => {
                assert_eq!((p.number, p.bytes.len(), &p.upload), (n, 64, &upload));
            }
            other => panic!("part {n} expected, got {other:?}"),
        }
        assert!(s.next_action().is_none(), "input waits for part {n}");
        s.part_uploaded(Ok(PartTag { number: n, etag: format!("e{n}"), crc32: None }));
    }
}

#[test]
fn a_failed_part_aborts_the_upload_and_the_end_of_data_is_451() {
    let mut d = Driver::streaming(100);
    d.spool.fail_part = Some(2);
    begin_data(&mut d);
    let r = d.send(&[data_message(40).as_slice(), b".\r\n"].concat());
    assert_eq!(r, ["451 4.3.0 Temporary failure storing message, try again later\r\n"]);
    assert_eq!(d.spool.log, ["begin", "part 1", "part 2", "abort"], "no part after the failure");
    assert!(d.stored.is_empty());
    assert_eq!(d.codes(b"NOOP\r\n"), [250], "the session goes on");
}

#[test]
fn a_failure_to_open_the_upload_is_451_and_leaves_nothing() {
    let mut d = Driver::streaming(100);
    d.spool.fail_begin = true;
    begin_data(&mut d);
    let r = d.send(&[data_message(40).as_slice(), b".\r\n"].concat());
    assert_eq!(r, ["451 4.3.0 Temporary failure storing message, try again later\r\n"]);
    assert_eq!(d.spool.log, ["begin"], "tried once, nothing after");
    assert!(d.spool.open.is_empty() && d.stored.is_empty());
}

/// A message of several parts with `bad` in its third part: the upload is aborted as soon as
/// `bad` arrives, before the end of the data, and the end of data gets `want`.
fn refused_mid_stream(bad: &[u8], want: &str) {
    let mut d = Driver::streaming(100);
    begin_data(&mut d);
    let mut head = b"Subject: big\r\n".to_vec();
    head.extend(b"X-Pad: 0123456789012345678901234567890123456789\r\n".repeat(5));
    d.send(&head);
    assert!(d.spool.log.len() >= 3 && !d.spool.log.contains(&"abort".to_string()), "{:?}", d.spool.log);
    let before = d.spool.log.len();
    d.send(bad);
    assert_eq!(d.spool.log.last().unwrap(), "abort", "aborted at once: {:?}", d.spool.log);
    let after = d.spool.log.len();
    let r = d.send(&[data_message(30).as_slice(), b".\r\n"].concat());
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].starts_with(want), "{r:?}");
    assert_eq!(d.spool.log.len(), after, "nothing after the abort: {:?}", &d.spool.log[before..]);
    assert!(d.spool.open.is_empty());
}

#[test]
fn nul_after_the_first_parts_aborts_the_upload_at_once() {
    refused_mid_stream(b"X-Nul: a\0b\r\n", "550 5.6.0");
}

#[test]
fn too_many_hops_past_a_part_boundary_abort_the_upload_at_once() {
    refused_mid_stream(&b"Received: x\r\n".repeat(MAX_HOPS + 1), "554 5.4.6");
}

#[test]
fn the_size_limit_mid_stream_aborts_the_upload_at_once() {
    refused_mid_stream(&[b'x'; 10_000], "552 5.3.4");
}

/// A BDAT transaction with its first chunk spanning two parts; the upload is open.
fn bdat_in_parts() -> Driver {
    let mut d = Driver::streaming(50);
    d.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n");
    let chunk = data_message(5);
    let r = d.send(&[format!("BDAT {}\r\n", chunk.len()).as_bytes(), &chunk].concat());
    assert_eq!(r, [format!("250 2.0.0 {} octets received\r\n", chunk.len())]);
    assert!(d.spool.log.starts_with(&["begin".into(), "part 1".into()]), "{:?}", d.spool.log);
    d
}

#[test]
fn bdat_streams_in_parts() {
    let mut d = bdat_in_parts();
    let r = d.send(b"BDAT 6 LAST\r\nhello\n");
    assert!(r[0].starts_with("250 2.0.0 Ok: queued as"), "{r:?}");
    assert!(matches!(d.stored[0].content, Content::Multipart { .. }));
    assert!(client_data(&d.messages[0]).ends_with(b"line 0004 of the message\r\nhello\r\n"));
}

#[test]
fn ending_the_transaction_mid_bdat_aborts_the_upload() {
    for cmd in [&b"RSET\r\n"[..], b"EHLO again\r\n", b"QUIT\r\n"] {
        let mut d = bdat_in_parts();
        d.send(cmd);
        assert_eq!(d.spool.log.last().unwrap(), "abort", "{}", String::from_utf8_lossy(cmd));
        assert!(d.spool.open.is_empty());
    }
    let mut d = bdat_in_parts();
    d.s.timeout();
    d.pump();
    assert_eq!(d.spool.log.last().unwrap(), "abort", "idle timeout");
    assert!(d.closed);
}

#[test]
fn a_lost_connection_names_the_open_upload() {
    // Mid-DATA.
    let mut d = Driver::streaming(100);
    begin_data(&mut d);
    d.send(&data_message(20));
    assert_eq!(d.spool.open.len(), 1);
    d.hang_up();
    assert_eq!(d.spool.aborted.len(), 1);
    // Mid-BDAT, between chunks.
    let mut d = bdat_in_parts();
    d.hang_up();
    assert_eq!(d.spool.aborted.len(), 1);
    // A message whose Store the shell could not carry out (the client left first).
    let mut s = Session::new(cfg_parts(false, false, 100), ListenerKind::Mta, "192.0.2.1".parse().unwrap(), None);
    s.receive(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n");
    s.receive(&[data_message(20).as_slice(), b".\r\n"].concat());
    let upload = loop {
        match s.next_action().expect("actions up to the Store") {
            Action::BeginUpload(env) => {
                s.upload_begun(Ok(Upload { queue_id: env.queue_id.clone(), key: "k".into(), id: "u1".into() }))
            }
            Action::UploadPart(p) => s.part_uploaded(Ok(PartTag { number: p.number, etag: "e".into(), crc32: None })),
            Action::Store(m) => {
                let upload = m.content.upload().cloned().unwrap();
                s.unperformed(Action::Store(m));
                break upload;
            }
            Action::Reply(_) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(s.connection_lost(), [upload]);
    assert!(s.is_closed());
}

#[test]
fn the_end_marker_split_between_reads_ends_the_message_once() {
    // "\r\n.\r" in one read and "\n" in the next: the receiver takes the CR back only when
    // the LF arrives, so the stored message must not keep it.
    let msg: &[u8] = b"Subject: t\r\n\r\nx\r\n.\r\n";
    for cut in 1..msg.len() {
        for part_size in [1 << 20, 7] {
            let mut d = Driver::streaming(part_size);
            begin_data(&mut d);
            d.send(&msg[..cut]);
            assert_eq!(d.codes(&msg[cut..]), [250], "cut at {cut}");
            assert_eq!(client_data(&d.messages[0]), b"Subject: t\r\n\r\nx\r\n", "cut at {cut}, parts of {part_size}");
        }
    }
}

#[test]
fn smuggling_sequences_across_every_read_and_part_boundary() {
    let seqs: &[&[u8]] = &[b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\n", b"\r\n.\n", b"\r.\r\n"];
    for seq in seqs {
        let mut body = b"Subject: t\r\n\r\nline1".to_vec();
        body.extend_from_slice(seq);
        body.extend_from_slice(b"MAIL FROM:<evil@example.org>\r\nline2\r\n.\r\n");
        let reference = {
            let mut d = Driver::streaming(1 << 20);
            begin_data(&mut d);
            assert_eq!(d.codes(&body), [250]);
            client_data(&d.messages[0]).to_vec()
        };
        assert!(reference.windows(28).any(|w| w == b"MAIL FROM:<evil@example.org>"));
        for cut in 1..body.len() {
            for part_size in [3, 5, 8, 13] {
                let mut d = Driver::streaming(part_size);
                begin_data(&mut d);
                let mut r = d.send(&body[..cut]);
                r.extend(d.send(&body[cut..]));
                assert_eq!(r.len(), 1, "{seq:?} cut {cut} parts {part_size}: {r:?}");
                assert!(r[0].starts_with("250 2.0.0"), "{seq:?}: {r:?}");
                assert_eq!(client_data(&d.messages[0]), reference.as_slice(), "{seq:?} cut {cut} parts {part_size}");
                assert_clean(&d.messages[0], "smuggling");
            }
        }
    }
}

#[test]
fn metrics_count_queued_messages_and_refusals_of_mail_commands_only() {
    use crate::metrics::Tally;
    let tally = |accepted, rejected, temp_failed| Tally { accepted, rejected, temp_failed };
    let mut d = ready();
    // Protocol errors and other commands are not refusals of mail.
    d.send(b"NOOP\r\nFOO\r\nMAIL FROM alice\r\nVRFY bob\r\nTURN\r\n");
    d.send(&[b'X'; MAX_LINE + 10]);
    d.send(b"\r\n");
    assert_eq!(d.s.take_tally(), tally(0, 0, 0));

    // 554 at RCPT (relay denied) counts once; the accepted message once.
    assert_eq!(
        d.codes(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<x@elsewhere.example>\r\nRCPT TO:<b@example.test>\r\n"),
        [250, 554, 250]
    );
    assert_eq!(d.codes(b"DATA\r\n"), [354]);
    assert_eq!(d.codes(b"Subject: x\r\n\r\nhi\r\n.\r\n"), [250]);
    assert_eq!(d.s.take_tally(), tally(1, 1, 0));
    assert_eq!(d.s.take_tally(), tally(0, 0, 0), "taking resets");

    // A failed hand-off is a 451: TempFailed, not Accepted. A refusal after it still counts.
    d.store_ok = false;
    d.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n");
    assert_eq!(d.codes(b"hi\r\n.\r\n"), [451]);
    assert_eq!(d.codes(b"DATA\r\n"), [503]);
    assert_eq!(d.s.take_tally(), tally(0, 1, 1));

    // Too big at the end of BDAT LAST: a rejected message.
    let mut d = ready();
    d.store_ok = true;
    d.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\n");
    let mut chunk = b"BDAT 1100 LAST\r\n".to_vec();
    chunk.extend_from_slice(&[b'a'; 1100]);
    assert_eq!(d.codes(&chunk), [552]);
    assert_eq!(d.s.take_tally(), tally(0, 1, 0));
}

// ---- Sender ownership, the rate limit and the recipient table (policy/) -----------------------

use crate::policy::auth::AuthDb;
use crate::policy::rate::{RateLimit, RateSpec};
use crate::policy::recipients::RecipientTable;
use crate::policy::tables::{LiveTables, Tables};

/// The test configuration with other tables or a rate limit.
fn cfg_with(tables: Tables, rate: Option<&str>) -> Arc<SessionConfig> {
    let mut c = Arc::try_unwrap(cfg(true, true)).unwrap();
    c.tables = Arc::new(LiveTables::fixed(tables));
    c.rate_limit = rate.map(|r| RateLimit::new(RateSpec::parse(r).unwrap()));
    Arc::new(c)
}

/// Tables whose AUTH file gives alice (the driver's one valid user) this third field.
fn alice_may_send_as(senders: Option<&str>) -> Tables {
    let hash = bcrypt::hash("secret", 4).unwrap();
    let line = match senders {
        Some(list) => format!("alice:{hash}:{list}\n"),
        None => format!("alice:{hash}\n"),
    };
    Tables { auth: Some(Arc::new(AuthDb::parse(&line).unwrap())), recipients: None }
}

/// A submission session, STARTTLS done and alice authenticated.
fn submission_as_alice(cfg: Arc<SessionConfig>) -> Driver {
    use base64::Engine;
    let mut d = Driver::with(cfg, ListenerKind::Submission, "192.0.2.1");
    d.send(b"EHLO c\r\nSTARTTLS\r\n");
    let auth = format!("AUTH PLAIN {}\r\n", base64::engine::general_purpose::STANDARD.encode(b"\0alice\0secret"));
    assert_eq!(d.codes(format!("EHLO c\r\n{auth}").as_bytes()), [250, 235]);
    d
}

#[test]
fn a_user_with_a_sender_list_is_held_to_it_at_mail() {
    let mut d = submission_as_alice(cfg_with(alice_may_send_as(Some("alice@example.org,@alice.test")), None));
    assert_eq!(
        d.send(b"MAIL FROM:<bob@example.org>\r\n"),
        ["553 5.7.1 <bob@example.org>: Sender address rejected: not owned by user alice\r\n"]
    );
    assert!(d.s.txn.is_none(), "no transaction after a refused MAIL");
    assert_eq!(d.codes(b"MAIL FROM:<Alice@Example.ORG>\r\nRSET\r\n"), [250, 250]);
    assert_eq!(d.codes(b"MAIL FROM:<anyone@alice.test>\r\nRSET\r\n"), [250, 250]);
    assert_eq!(d.codes(b"MAIL FROM:<>\r\nRSET\r\n"), [250, 250], "the null sender as before");
    // Without a list, as before: any sender.
    let mut d = submission_as_alice(cfg_with(alice_may_send_as(None), None));
    assert_eq!(d.codes(b"MAIL FROM:<bob@example.org>\r\n"), [250]);
}

#[test]
fn a_user_with_a_sender_list_is_held_to_it_in_from() {
    let mut d = submission_as_alice(cfg_with(alice_may_send_as(Some("alice@example.org,@alice.test")), None));
    let envelope = b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<x@anywhere.test>\r\nDATA\r\n";
    let cases: &[(&[u8], &str)] = &[
        (
            b"From: Bob <bob@example.org>\r\n\r\nhi\r\n.\r\n",
            "550 5.7.1 <bob@example.org>: From: header address rejected: not owned by user alice\r\n",
        ),
        (b"From: alice@example.org, eve@evil.test\r\n\r\nhi\r\n.\r\n", "550 5.7.1 <eve@evil.test>: From:"),
        (b"Subject: no from\r\n\r\nFrom: alice@example.org\r\n.\r\n", "550 5.7.1 No From: header address; user alice"),
        (b"From: Alice\r\n\r\nhi\r\n.\r\n", "550 5.7.1 No From: header address"),
        (b"From: Alice <alice@example.org>\r\n\r\nhi\r\n.\r\n", "250 2.0.0 Ok: queued as"),
        (b"From: <boss@ALICE.test>, alice+x@example.org\r\n\r\nhi\r\n.\r\n", "250 2.0.0 Ok: queued as"),
    ];
    for (message, want) in cases {
        let mut replies = d.send(envelope);
        replies.extend(d.send(message));
        assert!(replies[3].starts_with(want), "{:?}: {replies:?}", String::from_utf8_lossy(message));
    }
    assert_eq!(d.stored.len(), 2, "refused messages are not stored");
    // BDAT ends through the same check; the null sender does not exempt the From: header.
    d.send(b"MAIL FROM:<>\r\nRCPT TO:<x@anywhere.test>\r\n");
    let r = d.send(b"BDAT 24 LAST\r\nFrom: eve@evil.test\r\n\r\nx\r\n");
    assert!(r[0].starts_with("550 5.7.1 <eve@evil.test>"), "{r:?}");
    assert_eq!(d.stored.len(), 2);
    // A user without a list: any From: as before.
    let mut d = submission_as_alice(cfg_with(alice_may_send_as(None), None));
    d.send(envelope);
    assert_eq!(d.codes(b"From: eve@evil.test\r\n\r\nhi\r\n.\r\n"), [250]);
}

#[test]
fn rate_limit_is_checked_at_mail_per_client_and_per_user() {
    let cfg = cfg_with(alice_may_send_as(Some("alice@example.org")), Some("2/1h"));
    let mut d = Driver::with(cfg.clone(), ListenerKind::Mta, "192.0.2.1");
    d.send(b"EHLO c\r\n");
    // Refused MAIL commands do not count.
    assert_eq!(d.codes(b"MAIL FROM:<a@example.org> FOO=1\r\n"), [555]);
    assert_eq!(
        d.codes(b"MAIL FROM:<a@example.org>\r\nRSET\r\nMAIL FROM:<a@example.org>\r\nRSET\r\n"),
        [250, 250, 250, 250]
    );
    assert_eq!(
        d.send(b"MAIL FROM:<a@example.org>\r\n"),
        ["451 4.7.1 Too much mail from client 192.0.2.1 (limit 2/1h), try again in 30m\r\n"]
    );
    assert!(d.s.txn.is_none());
    assert_eq!(d.codes(b"RCPT TO:<b@example.test>\r\n"), [503], "nothing to add recipients to");
    // The count is the client's, not the session's.
    let mut again = Driver::with(cfg.clone(), ListenerKind::Mta, "192.0.2.1");
    assert_eq!(again.codes(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n"), [250, 451]);
    let mut other = Driver::with(cfg.clone(), ListenerKind::Mta, "192.0.2.2");
    assert_eq!(other.codes(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n"), [250, 250]);
    // Authenticated from the same address: alice's own count. A sender she does not own is
    // refused before the limit is consulted, so it costs her nothing.
    let mut alice = submission_as_alice(cfg);
    assert_eq!(alice.codes(b"MAIL FROM:<bob@example.org>\r\n"), [553]);
    assert_eq!(
        alice.codes(b"MAIL FROM:<alice@example.org>\r\nRSET\r\nMAIL FROM:<alice@example.org>\r\nRSET\r\n"),
        [250, 250, 250, 250]
    );
    let r = alice.send(b"MAIL FROM:<alice@example.org>\r\n");
    assert!(r[0].starts_with("451 4.7.1 Too much mail from user alice (limit 2/1h)"), "{r:?}");
}

#[test]
fn recipient_table_is_checked_at_rcpt_for_every_client() {
    let table = RecipientTable::parse("bob@example.test\n").unwrap();
    let cfg = cfg_with(Tables { auth: None, recipients: Some(Arc::new(table)) }, None);
    let mut d = Driver::with(cfg.clone(), ListenerKind::Mta, "192.0.2.1");
    d.send(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    assert_eq!(
        d.send(b"RCPT TO:<carol@example.test>\r\n"),
        ["550 5.1.1 <carol@example.test>: Recipient address rejected: User unknown in relay recipient table\r\n"]
    );
    assert_eq!(d.codes(b"RCPT TO:<bob+tag@example.test>\r\nRCPT TO:<postmaster>\r\n"), [250, 250]);
    assert_eq!(d.codes(b"RCPT TO:<carol@elsewhere.test>\r\n"), [554], "relay policy as before");
    assert_eq!(d.s.txn.as_ref().unwrap().env.recipients.len(), 2);
    // RELAY_NETWORKS clients: the table applies in relay domains, nowhere else.
    let mut d = Driver::with(cfg, ListenerKind::Mta, "10.1.2.3");
    d.send(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    assert_eq!(d.codes(b"RCPT TO:<carol@example.test>\r\nRCPT TO:<carol@elsewhere.test>\r\n"), [550, 250]);
}

#[test]
fn a_session_keeps_the_tables_it_started_with() {
    let dir = std::env::temp_dir().join(format!("session-tables-{}", std::process::id()));
    std::fs::write(&dir, "bob@example.test\n").unwrap();
    let live = Arc::new(LiveTables::load(None, Some(&dir)).unwrap());
    let mut c = Arc::try_unwrap(cfg(false, false)).unwrap();
    c.tables = live.clone();
    let cfg = Arc::new(c);
    let mut old = Driver::with(cfg.clone(), ListenerKind::Mta, "192.0.2.1");
    old.send(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    std::fs::write(&dir, "carol@example.test\n").unwrap();
    assert_eq!(live.reload(), 0);
    std::fs::remove_file(&dir).unwrap();
    let mut new = Driver::with(cfg, ListenerKind::Mta, "192.0.2.1");
    new.send(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n");
    assert_eq!(old.codes(b"RCPT TO:<bob@example.test>\r\nRCPT TO:<carol@example.test>\r\n"), [250, 550]);
    assert_eq!(new.codes(b"RCPT TO:<bob@example.test>\r\nRCPT TO:<carol@example.test>\r\n"), [550, 250]);
    assert_eq!(old.codes(b"DATA\r\nSubject: x\r\n\r\n.\r\n"), [354, 250], "the old session completes");
}

/// Alice, with a sender list, on a session whose messages go in parts of `part_size` bytes.
fn alice_streaming(senders: Option<&str>, part_size: usize) -> Driver {
    let mut c = Arc::try_unwrap(cfg_with(alice_may_send_as(senders), None)).unwrap();
    c.part_size = part_size;
    c.max_message_size = 1 << 20;
    let mut d = submission_as_alice(Arc::new(c));
    let r = d.codes(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<x@anywhere.test>\r\nDATA\r\n");
    assert_eq!(r, [250, 250, 354]);
    d
}

#[test]
fn the_from_check_covers_a_header_section_that_spanned_parts() {
    let mut d = alice_streaming(Some("alice@example.org"), 64);
    let mut header = [b"X-Pad: ".as_slice(), &[b'p'; 500]].concat();
    header.extend_from_slice(b"\r\nFrom: Eve <eve@evil.test>\r\n\r\nhi\r\n.\r\n");
    let r = d.send(&header);
    assert!(r[0].starts_with("550 5.7.1 <eve@evil.test>: From:"), "{r:?}");
    assert!(d.spool.log.iter().filter(|l| l.starts_with("part")).count() > 5, "{:?}", d.spool.log);
    assert_eq!(d.spool.log.last().unwrap(), "abort");
    assert!(d.stored.is_empty() && d.spool.open.is_empty());
}

#[test]
fn a_header_section_too_long_to_check_is_refused_only_for_users_with_a_list() {
    let mut long = b"From: alice@example.org\r\n".to_vec();
    let filler = [b"X-Filler: ".as_slice(), &[b'y'; 988], b"\r\n"].concat();
    while long.len() <= crate::session::header::MAX_HEADER_SECTION {
        long.extend_from_slice(&filler);
    }
    long.extend_from_slice(b"From: eve@evil.test\r\n\r\nhi\r\n.\r\n");
    let mut d = alice_streaming(Some("alice@example.org"), 64 * 1024);
    let r = d.send(&long);
    assert_eq!(r, ["550 5.7.1 Header section over 131072 bytes: From: cannot be checked for user alice\r\n"]);
    assert_eq!(d.spool.log.last().unwrap(), "abort");
    let mut d = alice_streaming(None, 64 * 1024);
    assert_eq!(d.codes(&long), [250], "no list, no check");
}

#[test]
fn a_blocklisted_client_gets_554_at_each_rcpt_unless_it_authenticates() {
    let mut d = Driver::mta();
    d.s.blocklist("zen.example".into());
    assert_eq!(d.codes(b"EHLO bot.example\r\nMAIL FROM:<a@example.org>\r\n"), [250, 250]);
    assert_eq!(
        d.send(b"RCPT TO:<u@example.test>\r\nRCPT TO:<postmaster>\r\n"),
        [
            "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.example\r\n",
            "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.example\r\n",
        ]
    );
    assert_eq!(d.codes(b"DATA\r\n"), [554], "no recipient, no message");
    assert!(d.stored.is_empty());

    // Our own user on a listed address (a dynamic range): AUTH makes it trusted.
    let mut d = Driver::new(ListenerKind::Mta, "192.0.2.1", true, true);
    d.s.blocklist("zen.example".into());
    d.send(b"EHLO c\r\nSTARTTLS\r\n");
    d.send(b"EHLO c\r\n");
    assert_eq!(d.codes(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), [235]);
    assert_eq!(d.codes(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<x@anywhere.test>\r\n"), [250, 250]);
}

#[path = "feedback_tests.rs"]
mod feedback;
