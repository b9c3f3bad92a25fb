//! What the authentication checks need of a message, read once: its header section as
//! received, and the body hashes its DKIM signatures and ARC message signatures name (plus
//! any the ARC sealer needs), computed while the body streams past ([`super::body_hash`]).
//! The body itself is never kept, so a streamed message is judged in bounded memory.
//!
//! A header section longer than [`MAX_HEADER_SECTION`] cannot be judged: fields past any
//! limit could hide the `From:` that DMARC must see. The judge refuses such a message
//! (`552 5.3.4`), as Exim does past its header limit.

use futures::StreamExt;
use mail_auth::AuthenticatedMessage;
use mail_auth::common::crypto::HashAlgorithm;
use mail_auth::dkim::Canonicalization;

use super::body_hash::{BodyHash, BodyHashes};
use super::source::Source;

/// The longest header section judged.
pub const MAX_HEADER_SECTION: usize = 1024 * 1024;

/// The header section and body hashes of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The header section through the CRLF of its last field, then CRLF (the empty line): what
    /// mail-auth parses as a message with an empty body.
    head: Vec<u8>,
    /// Where the fields end, in `head` and in the message: the header section's length.
    header_len: usize,
    body_hashes: Vec<BodyHash>,
}

/// Why there is no evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    HeaderTooLong,
    /// The stored message could not be read back.
    Read(String),
}

/// Where the header section of the bytes seen so far ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// The header section's length, and where the body starts (after the empty line).
    At(usize, usize),
    /// No empty line yet, within the limit.
    NotYet,
    TooLong,
}

/// Look for the empty line in `message`, from `from` on (what was searched before).
fn split(message: &[u8], from: usize) -> Split {
    if message.starts_with(b"\r\n") {
        return Split::At(0, 2);
    }
    let start = from.saturating_sub(3);
    match memchr::memmem::find(&message[start..], b"\r\n\r\n").map(|i| start + i) {
        Some(i) if i + 2 <= MAX_HEADER_SECTION => Split::At(i + 2, i + 4),
        Some(_) => Split::TooLong,
        None if message.len() > MAX_HEADER_SECTION + 2 => Split::TooLong,
        None => Split::NotYet,
    }
}

/// Collects the evidence as the message passes.
struct Reading {
    evidence: Evidence,
    hashes: BodyHashes,
}

impl Reading {
    /// After the header section: hashers for what its signatures name and for `also` — none
    /// when `also` is `None` (no body hashes wanted at all).
    fn new(header: &[u8], also: Option<&[(Canonicalization, HashAlgorithm)]>) -> Self {
        let mut head = Vec::with_capacity(header.len() + 2);
        head.extend_from_slice(header);
        head.extend_from_slice(b"\r\n");
        let mut wanted: Vec<(Canonicalization, HashAlgorithm)> = also.unwrap_or_default().to_vec();
        if also.is_some()
            && let Some(parsed) = AuthenticatedMessage::parse(&head)
        {
            wanted.extend(parsed.body_hashes.iter().map(|(c, a, _, _)| (*c, *a)));
        }
        let evidence = Evidence { header_len: header.len(), head, body_hashes: Vec::new() };
        Self { evidence, hashes: BodyHashes::new(wanted) }
    }

    fn finish(self) -> Evidence {
        Evidence { body_hashes: self.hashes.finish(), ..self.evidence }
    }
}

impl Evidence {
    /// Read `source`: its header section, then its body through hashers for every
    /// canonicalization and algorithm its signatures name, and those in `also`. With `also`
    /// `None` no body hash is computed, and a stored message is read no further than its
    /// header section.
    pub async fn read(
        source: &Source<'_>,
        also: Option<&[(Canonicalization, HashAlgorithm)]>,
    ) -> Result<Self, Unreadable> {
        if let Source::Memory(bytes) = source {
            let (header_len, body_start) = match split(bytes, 0) {
                Split::At(h, b) => (h, b),
                Split::NotYet => (bytes.len(), bytes.len()),
                Split::TooLong => return Err(Unreadable::HeaderTooLong),
            };
            let mut reading = Reading::new(&bytes[..header_len], also);
            reading.hashes.write(&bytes[body_start..]);
            return Ok(reading.finish());
        }
        let mut chunks = source.chunks().await.map_err(Unreadable::Read)?;
        let mut head: Vec<u8> = Vec::new();
        let (header_len, body_start) = loop {
            let searched = head.len();
            match chunks.next().await {
                Some(Ok(chunk)) => head.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(Unreadable::Read(e)),
                None => break (head.len(), head.len()),
            }
            match split(&head, searched) {
                Split::At(h, b) => break (h, b),
                Split::NotYet => {}
                Split::TooLong => return Err(Unreadable::HeaderTooLong),
            }
        };
        let mut reading = Reading::new(&head[..header_len], also);
        reading.hashes.write(&head[body_start.min(head.len())..]);
        drop(head);
        if reading.hashes.is_empty() {
            return Ok(reading.finish()); // nothing wants the body: stop reading it
        }
        while let Some(chunk) = chunks.next().await {
            reading.hashes.write(&chunk.map_err(Unreadable::Read)?);
        }
        Ok(reading.finish())
    }

    /// The header section as received (through the CRLF of its last field).
    pub fn header(&self) -> &[u8] {
        &self.head[..self.header_len]
    }

    /// The body hashes computed from the real body.
    pub fn body_hashes(&self) -> &[BodyHash] {
        &self.body_hashes
    }

    /// mail-auth's view of the message: the header section, with the body hashes computed
    /// from the real body (`None` when there is no header field at all).
    pub fn parse(&self) -> Option<AuthenticatedMessage<'_>> {
        parse_with(&self.head, &self.body_hashes)
    }
}

/// mail-auth's view of a header section (ending in its empty line) whose body hashes are
/// `body_hashes`: in place of those it computed over the (empty) body it was given, and beside
/// them (mail-auth's ARC sealer looks its own body hash up there first).
pub fn parse_with<'x>(head: &'x [u8], body_hashes: &[BodyHash]) -> Option<AuthenticatedMessage<'x>> {
    let mut parsed = AuthenticatedMessage::parse(head)?;
    for known in body_hashes {
        let (c, a, l, digest) = known;
        match parsed.body_hashes.iter_mut().find(|(pc, pa, pl, _)| pc == c && pa == a && pl == l) {
            Some(entry) => entry.3.clone_from(digest),
            None => parsed.body_hashes.push(known.clone()),
        }
    }
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use bytes::Bytes;
    use futures::stream::{self, StreamExt};

    use super::*;
    use crate::judge::source::{Chunks, ReadBack};
    use crate::spool::upload::Stored;

    /// A stored message served in chunks of `chunk` bytes.
    struct Served {
        bytes: Vec<u8>,
        chunk: usize,
        fail: bool,
    }

    #[async_trait]
    impl ReadBack for Served {
        async fn read(&self, _stored: &Stored) -> Result<Chunks, String> {
            let mut pieces: Vec<Result<Bytes, String>> =
                self.bytes.chunks(self.chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            if self.fail {
                pieces.push(Err("connection reset".into()));
            }
            Ok(stream::iter(pieces).boxed())
        }
    }

    const SIGNED: &str = "Received: from x\r\nDKIM-Signature: v=1; a=rsa-sha256; c=simple/relaxed; d=a.example; s=s;\r\n h=from; bh=AAAA; b=AAAA\r\nFrom: a@a.example\r\n\r\nbody \r\n \r\n";

    async fn stored(bytes: &[u8], chunk: usize) -> Result<Evidence, Unreadable> {
        let spool = Served { bytes: bytes.to_vec(), chunk, fail: false };
        let object = Stored { key: "k".into(), version: None, size: bytes.len() as u64 };
        Evidence::read(&Source::Stored { spool: &spool, object: &object }, Some(&[])).await
    }

    #[tokio::test]
    async fn memory_and_any_chunking_of_a_stored_message_agree() {
        let also = [(Canonicalization::Relaxed, HashAlgorithm::Sha256)];
        let whole = Evidence::read(&Source::Memory(SIGNED.as_bytes()), Some(&also)).await.unwrap();
        assert!(whole.header().ends_with(b"From: a@a.example\r\n"));
        assert!(whole.header().starts_with(b"Received: from x\r\n"));
        let pairs: Vec<_> = whole.body_hashes().iter().map(|(c, a, ..)| (*c, *a)).collect();
        assert_eq!(pairs, [also[0]], "the signature's relaxed/sha256 and the sealer's are one hasher");
        let also_simple = [(Canonicalization::Simple, HashAlgorithm::Sha256)];
        let two = Evidence::read(&Source::Memory(SIGNED.as_bytes()), Some(&also_simple)).await.unwrap();
        assert_eq!(two.body_hashes().len(), 2);
        let seen: Vec<_> = two.parse().unwrap().body_hashes.iter().map(|(c, a, ..)| (*c, *a)).collect();
        assert!(seen.contains(&also_simple[0]), "a hash no signature names is there for the sealer: {seen:?}");
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let spool = Served { bytes: SIGNED.as_bytes().to_vec(), chunk, fail: false };
            let object = Stored { key: "k".into(), version: None, size: SIGNED.len() as u64 };
            let got = Evidence::read(&Source::Stored { spool: &spool, object: &object }, Some(&also)).await.unwrap();
            assert_eq!(got, whole, "chunks of {chunk}");
        }
        // What the parse sees: the signature's body hash is the real body's.
        let parsed = whole.parse().unwrap();
        assert_eq!(parsed.body_hashes[0].3, whole.body_hashes()[0].3);
        assert_eq!(parsed.dkim_headers.len(), 1);
    }

    #[tokio::test]
    async fn header_only_messages_and_the_header_limit() {
        let e = stored(b"From: a@b\r\nSubject: no body", 5).await.unwrap();
        assert_eq!(e.header(), b"From: a@b\r\nSubject: no body");
        let mut long = b"X-Pad: ".to_vec();
        long.resize(MAX_HEADER_SECTION + 10, b'a');
        long.extend_from_slice(b"\r\nFrom: hidden@example.com\r\n\r\nbody\r\n");
        assert_eq!(stored(&long, 65536).await, Err(Unreadable::HeaderTooLong));
        assert_eq!(Evidence::read(&Source::Memory(&long), None).await, Err(Unreadable::HeaderTooLong));
        let mut fits = b"X-Pad: ".to_vec();
        fits.resize(MAX_HEADER_SECTION - 100, b'a');
        fits.extend_from_slice(b"\r\n\r\nbody\r\n");
        assert_eq!(stored(&fits, 65536).await.unwrap().header().len(), MAX_HEADER_SECTION - 98);
    }

    #[tokio::test]
    async fn a_failed_read_is_reported() {
        let spool = Served { bytes: SIGNED.as_bytes().to_vec(), chunk: 10, fail: true };
        let object = Stored { key: "k".into(), version: None, size: 0 };
        let got = Evidence::read(&Source::Stored { spool: &spool, object: &object }, Some(&[])).await;
        assert_eq!(got, Err(Unreadable::Read("connection reset".into())));
        // Without body hashes, reading stops at the header section: the failure is never met.
        let got = Evidence::read(&Source::Stored { spool: &spool, object: &object }, None).await.unwrap();
        assert!(got.body_hashes().is_empty());
    }
}
