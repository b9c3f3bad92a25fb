//! The SMTP client's bytes, with no I/O: reply framing, EHLO keywords, MAIL/RCPT commands with
//! their ESMTP parameters, xtext, and the DATA transparency procedure.
//!
//! EHLO keywords are smtp-proto's [`EhloResponse`]. Reply framing is ours, written down here
//! because smtp-proto's `ResponseReceiver` (0.2) does not fit a relay: it keeps each part of the
//! enhanced status code in a `u8` and saturates three-digit details (`5.7.515` and Microsoft's
//! `4.7.652` both come out as `x.7.255`), it drops the code from the text so the original cannot
//! be quoted in a DSN, and it takes the first line's reply code without checking the others.

use shared::job::BodyType;
use shared::{Job, Recipient, Reply, Ret};
use smtp_proto::EhloResponse;

/// A reply longer than this is a broken or hostile server.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Take one complete reply off the front of `buf`: `Ok(None)` when more bytes are needed.
pub fn take_reply(buf: &mut Vec<u8>) -> Result<Option<Reply>, String> {
    let mut start = 0;
    let mut code = None;
    let mut text = Vec::new();
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        let raw = &buf[start..start + nl];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        start += nl + 1;
        let garbled = || format!("unparseable reply line {:?}", String::from_utf8_lossy(line));
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(garbled());
        }
        let this: u16 = std::str::from_utf8(&line[..3]).map_err(|_| garbled())?.parse().map_err(|_| garbled())?;
        if *code.get_or_insert(this) != this {
            return Err(garbled());
        }
        text.push(String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned());
        match line.get(3) {
            None | Some(b' ') => {
                buf.drain(..start);
                return Ok(Some(Reply::parse(this, &text.join("\n"))));
            }
            Some(b'-') => {}
            Some(_) => return Err(garbled()),
        }
    }
    if buf.len() > MAX_REPLY_BYTES {
        return Err("reply too long".into());
    }
    Ok(None)
}

/// What the server said it supports in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub pipelining: bool,
    pub starttls: bool,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    /// SIZE was advertised; `Some(0)` means no stated limit.
    pub size: Option<u64>,
    /// AUTH mechanisms offered, as smtp-proto's `AUTH_*` bits.
    pub auth: u64,
}

impl Extensions {
    /// The keywords of a positive EHLO reply; a reply smtp-proto cannot read offers nothing.
    pub fn parse(reply: &Reply) -> Self {
        // EhloResponse reads the reply as it was on the wire.
        let n = reply.lines.len();
        let wire: String = reply
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{}{}{l}\r\n", reply.code, if i + 1 == n { ' ' } else { '-' }))
            .collect();
        let Ok(ehlo) = EhloResponse::parse(&mut wire.as_bytes().iter()) else { return Self::default() };
        let has = |ext: u32| ehlo.capabilities & ext != 0;
        Self {
            pipelining: has(smtp_proto::EXT_PIPELINING),
            starttls: has(smtp_proto::EXT_START_TLS),
            eightbitmime: has(smtp_proto::EXT_8BIT_MIME),
            smtputf8: has(smtp_proto::EXT_SMTP_UTF8),
            dsn: has(smtp_proto::EXT_DSN),
            size: has(smtp_proto::EXT_SIZE).then_some(ehlo.size as u64),
            auth: if has(smtp_proto::EXT_AUTH) { ehlo.auth_mechanisms } else { 0 },
        }
    }

    /// The server offers this `smtp_proto::AUTH_*` mechanism.
    pub fn offers_auth(&self, mechanism: u64) -> bool {
        self.auth & mechanism != 0
    }
}

/// RFC 3461 xtext: `+HH` for anything outside `!`..`~`, and for `+` and `=`.
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// True when an address can go between angle brackets without changing the command.
pub fn safe_address(a: &str) -> bool {
    !a.chars().any(|c| c.is_control() || c == '<' || c == '>')
}

/// `MAIL FROM:<reverse_path>` (the job's sender, or its return path in the feedback domain) with
/// the parameters the server supports.
pub fn mail_from(job: &Job, reverse_path: &str, ext: &Extensions, size: usize) -> String {
    let mut cmd = format!("MAIL FROM:<{reverse_path}>");
    if ext.size.is_some() {
        cmd.push_str(&format!(" SIZE={size}"));
    }
    if job.body != BodyType::SevenBit && ext.eightbitmime {
        cmd.push_str(" BODY=8BITMIME");
    }
    if job.smtputf8 && ext.smtputf8 {
        cmd.push_str(" SMTPUTF8");
    }
    if ext.dsn {
        match job.dsn.ret {
            Some(Ret::Full) => cmd.push_str(" RET=FULL"),
            Some(Ret::Hdrs) => cmd.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &job.dsn.envid {
            cmd.push_str(&format!(" ENVID={}", xtext(envid)));
        }
    }
    cmd
}

/// `RCPT TO` with NOTIFY and ORCPT when the server supports DSN.
pub fn rcpt_to(r: &Recipient, dsn: bool) -> String {
    let mut cmd = format!("RCPT TO:<{}>", r.address);
    if dsn {
        if let Some(n) = r.notify {
            cmd.push_str(&format!(" NOTIFY={}", n.to_param()));
        }
        if let Some(o) = &r.orcpt {
            let (kind, addr) = o.split_once(';').unwrap_or(("rfc822", o));
            cmd.push_str(&format!(" ORCPT={};{}", kind.trim(), xtext(addr.trim())));
        }
    }
    cmd
}

/// The message as sent after `DATA`: every line ending CRLF (bare CR and bare LF become CRLF,
/// so nothing downstream can read a different end of data), leading dots doubled, and the
/// terminating `.` line.
pub fn data_block(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 50 + 5);
    let mut at_line_start = true;
    let mut i = 0;
    while i < message.len() {
        let b = message[i];
        match b {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                // CRLF is one line end; a bare CR or bare LF is one too.
                i += if b == b'\r' && message.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                at_line_start = true;
                continue;
            }
            b'.' if at_line_start => out.extend_from_slice(b".."),
            _ => out.push(b),
        }
        at_line_start = false;
        i += 1;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{DsnParams, Notify};

    #[test]
    fn replies_frame_across_reads_and_pipelined_batches() {
        let mut buf = b"250-mx.test hi\r\n250-PIPE".to_vec();
        assert_eq!(take_reply(&mut buf), Ok(None));
        buf.extend_from_slice(b"LINING\r\n250 SIZE 100\r\n550 5.1.1 no\r\n354 go\r\n");
        let r = take_reply(&mut buf).unwrap().unwrap();
        assert_eq!((r.code, r.lines.len()), (250, 3));
        let r = take_reply(&mut buf).unwrap().unwrap();
        assert_eq!((r.code, r.status.as_deref()), (550, Some("5.1.1")));
        assert_eq!(take_reply(&mut buf).unwrap().unwrap().code, 354);
        assert!(buf.is_empty());
        for bad in [&b"hello\r\n"[..], b"250-a\r\n251 b\r\n", b"250xok\r\n"] {
            assert!(take_reply(&mut bad.to_vec()).is_err(), "{bad:?}");
        }
        assert_eq!(take_reply(&mut b"221\r\n".to_vec()).unwrap().unwrap().code, 221);
    }

    #[test]
    fn ehlo_keywords() {
        let r =
            Reply::parse(250, "mx.test\nPIPELINING\nsize 1000\n8BITMIME\nDSN\nSMTPUTF8\nAUTH plain LOGIN\nSTARTTLS");
        let e = Extensions::parse(&r);
        assert!(e.pipelining && e.starttls && e.eightbitmime && e.smtputf8 && e.dsn);
        assert_eq!(e.size, Some(1000));
        assert!(e.offers_auth(smtp_proto::AUTH_PLAIN) && e.offers_auth(smtp_proto::AUTH_LOGIN));
        assert!(!e.offers_auth(smtp_proto::AUTH_CRAM_MD5));
        assert_eq!(Extensions::parse(&Reply::parse(250, "mx.test\nSIZE")).size, Some(0));
        assert_eq!(Extensions::parse(&Reply::parse(250, "mx.test")), Extensions::default());
    }

    fn job() -> Job {
        let mut j = crate::testkit::job("b.test", &["bob@b.test"], 0);
        j.body = BodyType::EightBitMime;
        j.dsn = DsnParams { ret: Some(Ret::Hdrs), envid: Some("id+1=2 x".into()) };
        j
    }

    #[test]
    fn parameters_only_when_offered() {
        let j = job();
        assert_eq!(mail_from(&j, &j.sender, &Extensions::default(), 10), "MAIL FROM:<alice@a.test>");
        let all = Extensions { size: Some(0), eightbitmime: true, dsn: true, smtputf8: true, ..Default::default() };
        assert_eq!(
            mail_from(&j, "fb-x@fb.a.test", &all, 10),
            "MAIL FROM:<fb-x@fb.a.test> SIZE=10 BODY=8BITMIME RET=HDRS ENVID=id+2B1+3D2+20x"
        );
        let r = Recipient {
            notify: Some(Notify { success: true, failure: true, delay: false }),
            orcpt: Some("rfc822;B@y.test".into()),
            ..Recipient::new("b@y.test")
        };
        assert_eq!(rcpt_to(&r, false), "RCPT TO:<b@y.test>");
        assert_eq!(rcpt_to(&r, true), "RCPT TO:<b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B@y.test");
        assert!(safe_address("a@b.test") && !safe_address("a@b\r\nRSET") && !safe_address("a>b"));
    }

    #[test]
    fn data_is_crlf_only_and_dot_stuffed() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"A: b\r\n\r\nbody\r\n", b"A: b\r\n\r\nbody\r\n.\r\n"),
            (b"A: b\r\n\r\n.\r\n..x\r\n", b"A: b\r\n\r\n..\r\n...x\r\n.\r\n"),
            (b"no newline", b"no newline\r\n.\r\n"),
            (b"bare\nlf\rcr\r\r\n.", b"bare\r\nlf\r\ncr\r\n\r\n..\r\n.\r\n"),
            (b".lead", b"..lead\r\n.\r\n"),
            (b"x\n.\nMAIL FROM:<e@vil>\r\n", b"x\r\n..\r\nMAIL FROM:<e@vil>\r\n.\r\n"),
            ("caf\u{e9}\r\n".as_bytes(), "caf\u{e9}\r\n.\r\n".as_bytes()),
            (b"", b".\r\n"),
        ];
        for (input, want) in cases {
            assert_eq!(String::from_utf8_lossy(&data_block(input)), String::from_utf8_lossy(want), "{input:?}");
        }
    }
}
