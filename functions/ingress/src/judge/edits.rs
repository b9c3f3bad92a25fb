//! Applying a verdict's [`Edits`] to the header section of a message: pure, on the header
//! section alone (through the CRLF of its last field), so the same edit serves a message in
//! memory and a stored one whose header section is rewritten in the spool.
//!
//! A field is its first line and every continuation line (starting with SP or HT). Removed
//! fields go, the Subject is replaced, and the prepended fields (then `X-Spam: Yes`) come
//! first; the body is never touched.

use super::{Edits, Removal};

/// The header section `header` with `edits` applied.
pub fn edited(header: &[u8], edits: &Edits) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(header.len() + 256);
    for line in &edits.prepend {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if edits.spam {
        out.extend_from_slice(b"X-Spam: Yes\r\n");
    }
    let mut subject_done = false;
    for field in fields(header) {
        let name = field_name(field);
        if edits.spam && name.eq_ignore_ascii_case(b"X-Spam") {
            continue;
        }
        if edits.remove.iter().any(|r| removes(r, name, field)) {
            continue;
        }
        if let Some(s) = &edits.subject
            && name.eq_ignore_ascii_case(b"Subject")
        {
            if !subject_done {
                out.extend_from_slice(format!("Subject: {s}\r\n").as_bytes());
                subject_done = true;
            }
            continue;
        }
        out.extend_from_slice(field);
    }
    if let (Some(s), false) = (&edits.subject, subject_done) {
        out.extend_from_slice(format!("Subject: {s}\r\n").as_bytes());
    }
    out
}

/// Each field of a header section, with its continuation lines and final CRLF.
fn fields(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = header;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        loop {
            end += rest[end..].iter().position(|&b| b == b'\n').map_or(rest.len() - end, |i| i + 1);
            if end >= rest.len() || !matches!(rest[end], b' ' | b'\t') {
                break;
            }
        }
        let (field, tail) = rest.split_at(end);
        rest = tail;
        Some(field)
    })
}

fn field_name(field: &[u8]) -> &[u8] {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    field[..colon].trim_ascii()
}

fn removes(r: &Removal, name: &[u8], field: &[u8]) -> bool {
    match r {
        Removal::Named(n) => name.eq_ignore_ascii_case(n.as_bytes()),
        Removal::AuthservId { name: n, id } => {
            name.eq_ignore_ascii_case(n.as_bytes())
                && authserv_id(field).is_some_and(|got| got.eq_ignore_ascii_case(id.trim_end_matches('.')))
        }
    }
}

/// The authserv-id of an `Authentication-Results` field: the first token of its value, after
/// unfolding and dropping comments (RFC 8601 §2.2), without a trailing dot.
pub fn authserv_id(field: &[u8]) -> Option<String> {
    let colon = field.iter().position(|&b| b == b':')?;
    let value = String::from_utf8_lossy(&field[colon + 1..]);
    let mut plain = String::with_capacity(value.len());
    let mut depth = 0usize;
    let mut escaped = false;
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if depth > 0 => escaped = true,
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            '\r' | '\n' | '\t' => plain.push(' '),
            _ => plain.push(c),
        }
    }
    let token = plain.split(';').next()?.split_whitespace().next()?;
    let token = token.trim_matches('"').trim_end_matches('.');
    (!token.is_empty()).then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &str = "Received: from x\r\nSubject: hello\r\nAuthentication-Results: MX.Example.ORG;\r\n\tdmarc=pass\r\nAuthentication-Results: (forged) mx.example.org. ; spf=pass\r\nAuthentication-Results: other.example; dkim=pass\r\nX-Spam: No\r\nFrom: a@b.example\r\n\r\nbody\r\nAuthentication-Results: mx.example.org; none\r\n";

    /// `message` with its header section (up to the empty line) edited.
    fn apply(message: &[u8], edits: &Edits) -> Vec<u8> {
        let end = if message.starts_with(b"\r\n") {
            0
        } else {
            message.windows(4).position(|w| w == b"\r\n\r\n").map_or(message.len(), |i| i + 2)
        };
        let mut out = edited(&message[..end], edits);
        out.extend_from_slice(&message[end..]);
        out
    }

    fn run(edits: Edits) -> String {
        String::from_utf8(apply(MSG.as_bytes(), &edits)).unwrap()
    }

    #[test]
    fn no_edits_change_nothing() {
        assert_eq!(run(Edits::default()), MSG);
    }

    #[test]
    fn removes_our_authserv_id_in_any_case_comment_or_folding_and_keeps_others_and_the_body() {
        let out = run(Edits {
            prepend: vec!["Authentication-Results: mx.example.org;\r\n\tdmarc=fail".into()],
            remove: vec![Removal::AuthservId { name: "Authentication-Results".into(), id: "mx.example.org".into() }],
            ..Edits::default()
        });
        assert_eq!(
            out,
            "Authentication-Results: mx.example.org;\r\n\tdmarc=fail\r\nReceived: from x\r\nSubject: hello\r\nAuthentication-Results: other.example; dkim=pass\r\nX-Spam: No\r\nFrom: a@b.example\r\n\r\nbody\r\nAuthentication-Results: mx.example.org; none\r\n"
        );
    }

    #[test]
    fn spam_mark_replaces_the_senders_and_subject_is_replaced_once() {
        let out = run(Edits { spam: true, subject: Some("[SPAM] hello".into()), ..Edits::default() });
        assert!(out.starts_with("X-Spam: Yes\r\nReceived: from x\r\nSubject: [SPAM] hello\r\n"), "{out}");
        assert_eq!(out.matches("X-Spam:").count(), 1);
        assert_eq!(out.matches("Subject:").count(), 1);
    }

    #[test]
    fn subject_is_added_when_missing_and_named_removal_works() {
        let m = apply(
            b"From: a@b\r\nX-Foo: 1\r\n  continued\r\n\r\nx",
            &Edits { subject: Some("s".into()), remove: vec![Removal::Named("x-foo".into())], ..Edits::default() },
        );
        assert_eq!(m, b"From: a@b\r\nSubject: s\r\n\r\nx");
    }

    #[test]
    fn a_message_without_body_or_header() {
        let m = apply(b"From: a@b\r\n", &Edits { prepend: vec!["A: 1".into()], ..Edits::default() });
        assert_eq!(m, b"A: 1\r\nFrom: a@b\r\n");
        let m = apply(b"\r\nbody", &Edits { prepend: vec!["A: 1".into()], ..Edits::default() });
        assert_eq!(m, b"A: 1\r\n\r\nbody");
    }

    #[test]
    fn authserv_id_table() {
        for (field, want) in [
            ("Authentication-Results: mx.example.org; spf=pass", Some("mx.example.org")),
            ("Authentication-Results:mx.example.org;spf=pass", Some("mx.example.org")),
            ("Authentication-Results: (c (nested)) MX.example.org.\r\n ; none", Some("MX.example.org")),
            ("Authentication-Results:\r\n\tmx.example.org 1; none", Some("mx.example.org")),
            ("Authentication-Results: ; none", None),
        ] {
            assert_eq!(authserv_id(field.as_bytes()).as_deref(), want, "{field}");
        }
    }
}
