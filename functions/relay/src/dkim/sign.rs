//! The pure signing step: message bytes + keys → the `DKIM-Signature` fields to prepend.
//!
//! **Which keys.** Every key whose domain is the domain of an address in the message's `From:`
//! header (read with mail-parser; compared without case). A key for `example.org` does not sign
//! mail from `sub.example.org`: configure the subdomain itself. Several keys of one domain (RSA +
//! Ed25519, or an old and a new selector while rotating) each add a signature.
//!
//! **Which header fields (`h=`).** [`shared::signing::fields`]: the fields of RFC 6376 §5.4.1
//! that are present, plus Message-ID and the MIME fields (a signed body under an unsigned
//! Content-Type could be re-labelled); never Received, Return-Path or the trace fields, which
//! change in transit. From, Subject, To and Date are over-signed: `h=` names each once more than
//! the message has it (once when it has none), so a verifier treats the extra one as an empty
//! field and a copy added in transit breaks the signature (RFC 6376 §8.15).
//!
//! **Canonicalization: `c=relaxed/relaxed` for every message.** Relaxed survives the header
//! re-folding and whitespace changes of forwarders. mail-auth 0.13.3 hashes the relaxed body
//! wrongly when the body ends in whitespace-only lines (`"text\r\n \r\n"` comes out as
//! `"text\r\n\r\n"` instead of `"text\r\n"`; fixed in 0.15, which needs a newer rustc). Rather
//! than fall back to `simple` for those bodies, [`signing_view`] hands mail-auth the message cut
//! after its last body byte that is not whitespace, plus CRLF. By RFC 6376 §3.4.4 that input has
//! the same relaxed canonical body as the message (whitespace at line ends is dropped, then empty
//! lines at the end), and it never reaches the defect. The message itself is sent unchanged; the
//! view is a prefix of it (no copy) unless the last content line ends in whitespace.

use std::borrow::Cow;

use mail_auth::common::crypto::DkimKey;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use mail_parser::{Message, MessageParser};
use shared::signing::fields::signed_fields;
use shared::signing::{KeyRef, pem};

/// One signing key: `d=domain`, `s=selector`.
pub struct Key {
    /// Lowercase.
    pub domain: String,
    pub selector: String,
    pub key: DkimKey,
}

/// Every configured key; empty when `RELAY_DKIM_KEYS` is unset.
#[derive(Default)]
pub struct Signer {
    keys: Vec<Key>,
}

/// What signing one message produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Signatures {
    /// `DKIM-Signature:` fields, folded, each ending in CRLF: prepend them to the message.
    pub fields: Vec<u8>,
    /// `d=… s=… a=…` of each signature, for the log.
    pub signed_by: Vec<String>,
}

impl Signer {
    pub fn new(keys: Vec<Key>) -> Self {
        Self { keys }
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The keys that sign this message: those of its `From:` domains.
    pub fn keys_for(&self, message: &[u8]) -> Vec<&Key> {
        match MessageParser::new().parse_headers(message) {
            Some(parsed) if !self.keys.is_empty() => self.keys_for_parsed(&parsed),
            _ => Vec::new(),
        }
    }

    fn keys_for_parsed(&self, parsed: &Message) -> Vec<&Key> {
        let domains = from_domains(parsed);
        self.keys.iter().filter(|k| domains.contains(&k.domain)).collect()
    }

    /// The `DKIM-Signature` fields for `message` (none when no key applies). `message` must be
    /// exactly the bytes the next hop receives.
    pub fn sign(&self, message: &[u8]) -> Result<Signatures, String> {
        let mut out = Signatures::default();
        if self.keys.is_empty() {
            return Ok(out);
        }
        let Some(parsed) = MessageParser::new().parse_headers(message) else { return Ok(out) };
        let keys = self.keys_for_parsed(&parsed);
        if keys.is_empty() {
            return Ok(out);
        }
        let present: Vec<&str> = parsed.headers().iter().map(|h| h.name.as_str()).collect();
        let headers = signed_fields(&present);
        let view = signing_view(message);
        for k in keys {
            let signature = DkimSigner::from_key(KeyRef(&k.key))
                .domain(&k.domain)
                .selector(&k.selector)
                .headers(headers.iter().copied())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed)
                .sign(&view)
                .map_err(|e| format!("DKIM signing with d={} s={} failed: {e}", k.domain, k.selector))?;
            out.fields.extend_from_slice(signature.to_header().as_bytes());
            out.signed_by.push(format!("d={} s={} a={}", k.domain, k.selector, pem::algorithm(&k.key)));
        }
        Ok(out)
    }

    /// `message` with its signatures prepended (borrowed as is when no key applies).
    pub fn signed<'m>(&self, message: Cow<'m, [u8]>) -> Result<(Cow<'m, [u8]>, Vec<String>), String> {
        let Signatures { mut fields, signed_by } = self.sign(&message)?;
        if fields.is_empty() {
            return Ok((message, signed_by));
        }
        fields.extend_from_slice(&message);
        Ok((Cow::Owned(fields), signed_by))
    }
}

/// The lowercase domains of the `From:` addresses.
fn from_domains(parsed: &Message) -> Vec<String> {
    let Some(from) = parsed.from() else { return Vec::new() };
    from.iter()
        .filter_map(|a| a.address())
        .filter_map(|a| a.rsplit_once('@'))
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .collect()
}

/// What mail-auth signs: the message up to its last body byte that is not SP, HTAB, CR or LF,
/// then CRLF (the whole header section when the body is only whitespace). See the module doc.
/// The body starts after the first empty line, as mail-auth reads it (the relay sends CRLF only).
fn signing_view(message: &[u8]) -> Cow<'_, [u8]> {
    let Some(blank) = message.windows(4).position(|w| w == b"\r\n\r\n") else { return Cow::Borrowed(message) };
    let body_start = blank + 4;
    let body = &message[body_start..];
    let Some(last) = body.iter().rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')) else {
        return Cow::Borrowed(&message[..body_start]);
    };
    let end = body_start + last + 1;
    if message[end..].starts_with(b"\r\n") {
        Cow::Borrowed(&message[..end + 2])
    } else {
        let mut view = message[..end].to_vec();
        view.extend_from_slice(b"\r\n");
        Cow::Owned(view)
    }
}

#[cfg(test)]
#[path = "sign_tests.rs"]
mod tests;
