//! 8-bit to 7-bit conversion (RFC 6152 §3) for a server that does not offer 8BITMIME: every MIME
//! leaf whose body has 8-bit bytes and no transfer encoding is re-encoded — quoted-printable for
//! `text/*`, base64 for anything else — and its `Content-Transfer-Encoding` rewritten; nested
//! `message/rfc822` parts are converted the same way, inside out. Everything else stays byte for
//! byte: other parts, headers (8-bit header text cannot be converted and is left alone, as
//! Postfix does), preambles and boundaries. Pure: the SMTP client decides when to call it.
//!
//! Structure and offsets come from mail-parser, the encoders from mail-builder.

use std::borrow::Cow;

use mail_builder::encoders::base64::base64_encode_mime;
use mail_builder::encoders::quoted_printable::quoted_printable_encode;
use mail_parser::{Encoding, HeaderName, MessageParser, PartType};

/// The message with every 8-bit body converted; borrowed when nothing needed it.
pub fn seven_bit(message: &[u8]) -> Cow<'_, [u8]> {
    if message.is_ascii() {
        return Cow::Borrowed(message);
    }
    let mut edits = Vec::new();
    collect(message, 0, &mut edits);
    if edits.is_empty() {
        return Cow::Borrowed(message);
    }
    edits.sort_by_key(|e| (e.start, e.end));
    let mut out = Vec::with_capacity(message.len() + message.len() / 3);
    let mut at = 0;
    for e in edits {
        out.extend_from_slice(&message[at..e.start]);
        out.extend_from_slice(&e.with);
        at = e.end;
    }
    out.extend_from_slice(&message[at..]);
    Cow::Owned(out)
}

/// Replace `start..end` of the message with `with` (an insertion when the range is empty).
struct Edit {
    start: usize,
    end: usize,
    with: Vec<u8>,
}

/// The edits that convert `raw`, which sits at `base` in the whole message.
fn collect(raw: &[u8], base: usize, edits: &mut Vec<Edit>) {
    let Some(msg) = MessageParser::new().parse(raw) else { return };
    for (n, part) in msg.parts.iter().enumerate() {
        let (start, end) = (part.offset_body as usize, (part.offset_end as usize).min(raw.len()));
        let Some(body) = raw.get(start..end) else { continue };
        if body.is_ascii() || part.encoding != Encoding::None {
            continue;
        }
        let encoding = match &part.body {
            PartType::Multipart(_) => continue, // its children are parts of their own
            PartType::Message(_) => {
                collect(body, base + start, edits);
                continue;
            }
            PartType::Text(_) | PartType::Html(_) => "quoted-printable",
            PartType::Binary(_) | PartType::InlineBinary(_) => "base64",
        };
        let mut encoded = Vec::with_capacity(body.len() * 3 / 2);
        let written = if encoding == "base64" {
            base64_encode_mime(body, &mut encoded, false)
        } else {
            quoted_printable_encode(body, &mut encoded, true)
        };
        written.expect("writing to a Vec cannot fail");
        if !encoded.ends_with(b"\r\n") && body.ends_with(b"\r\n") {
            encoded.extend_from_slice(b"\r\n");
        }
        edits.push(Edit { start: base + start, end: base + end, with: encoded });
        let field = format!("Content-Transfer-Encoding: {encoding}\r\n").into_bytes();
        let old = part.headers.iter().filter(|h| h.name == HeaderName::ContentTransferEncoding);
        // A header's range runs from its name to the end of its line break.
        let old: Vec<_> = old.map(|h| (h.offset_field as usize, h.offset_end as usize)).collect();
        match old.split_first() {
            Some((&(s, e), rest)) => {
                edits.push(Edit { start: base + s, end: base + e, with: field });
                edits.extend(rest.iter().map(|&(s, e)| Edit { start: base + s, end: base + e, with: Vec::new() }));
            }
            None => {
                let header_end = header_end(raw, part.offset_header as usize, start);
                let mut with = field;
                if n == 0 && !part.headers.iter().any(|h| h.name == HeaderName::MimeVersion) {
                    with.splice(0..0, b"MIME-Version: 1.0\r\n".iter().copied());
                }
                edits.push(Edit { start: base + header_end, end: base + header_end, with });
            }
        }
    }
}

/// Where a part's header block ends: before the empty line that separates it from the body.
fn header_end(raw: &[u8], header_start: usize, body_start: usize) -> usize {
    let block = &raw[header_start..body_start];
    if block.ends_with(b"\r\n\r\n") || block == b"\r\n" {
        body_start - 2
    } else if block.ends_with(b"\n\n") || block == b"\n" {
        body_start - 1
    } else {
        body_start
    }
}

#[cfg(test)]
#[path = "downgrade_tests.rs"]
mod tests;
