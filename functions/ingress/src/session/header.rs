//! The header section of a message as it streams past: the hop count, and a bounded copy.
//!
//! A large message leaves memory part by part while it arrives, but two rules need its header
//! section: the hop count (more than [`MAX_HOPS`] `Received:` fields is a loop, Postfix's
//! `hopcount_limit`) and checks run at the end of the message over the header fields (the
//! policy's `From:` ownership). [`HeaderSection`] is fed the message's normalised bytes — every
//! line ends in CRLF — in pieces split anywhere, and
//!
//! * counts `Received:` fields as they pass, over the **whole** header section however long, so
//!   a loop is caught the moment the count is exceeded, even past a part boundary;
//! * keeps a copy of the header section (through its blank line) up to
//!   [`MAX_HEADER_SECTION`] bytes; past that the copy is marked truncated, like Postfix's
//!   `header_size_limit` (100 KiB), so memory per session stays bounded.
//!
//! The header section ends at the first empty line; a message without one is all header.

use memchr::memchr;

/// More `Received:` fields than this is a loop (Postfix's `hopcount_limit`).
pub const MAX_HOPS: usize = 50;

/// Bytes of the header section kept for end-of-message checks.
pub const MAX_HEADER_SECTION: usize = 128 * 1024;

const RECEIVED: &[u8; 9] = b"received:";

#[derive(Debug, Default)]
pub struct HeaderSection {
    kept: Vec<u8>,
    truncated: bool,
    /// The blank line was seen: what follows is the body.
    ended: bool,
    /// The first bytes of the current line (enough to recognise `Received:`).
    start: [u8; 9],
    /// Bytes of the current line seen so far, without its LF.
    line_len: usize,
    received: usize,
}

impl HeaderSection {
    /// Take the next normalised bytes of the message.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !self.ended && !bytes.is_empty() {
            let (piece, eol) = match memchr(b'\n', bytes) {
                Some(i) => (&bytes[..=i], true),
                None => (bytes, false),
            };
            bytes = &bytes[piece.len()..];
            self.keep(piece);
            let text = if eol { &piece[..piece.len() - 1] } else { piece };
            if self.line_len < RECEIVED.len() {
                let n = text.len().min(RECEIVED.len() - self.line_len);
                self.start[self.line_len..self.line_len + n].copy_from_slice(&text[..n]);
                if self.line_len + n == RECEIVED.len() && self.start.eq_ignore_ascii_case(RECEIVED) {
                    self.received += 1;
                }
            }
            self.line_len += text.len();
            if eol {
                // Only CRLF reaches us, so an empty line is a lone CR before its LF.
                self.ended = self.line_len == 0 || (self.line_len == 1 && self.start[0] == b'\r');
                self.line_len = 0;
            }
        }
    }

    fn keep(&mut self, piece: &[u8]) {
        let room = MAX_HEADER_SECTION - self.kept.len();
        if piece.len() > room {
            self.truncated = true;
        }
        self.kept.extend_from_slice(&piece[..piece.len().min(room)]);
    }

    /// `Received:` fields seen so far.
    pub fn received(&self) -> usize {
        self.received
    }

    /// The header section as kept: our trace field first, through the blank line when it came
    /// within [`MAX_HEADER_SECTION`] bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.kept
    }

    /// The header section was longer than [`MAX_HEADER_SECTION`]; [`bytes`](Self::bytes) holds
    /// its beginning only.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The blank line that ends the header section has been seen.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Bytes held in memory (for the memory budget).
    pub fn held(&self) -> usize {
        self.kept.len()
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn fed(pieces: &[&[u8]]) -> HeaderSection {
        let mut h = HeaderSection::default();
        for p in pieces {
            h.feed(p);
        }
        h
    }

    #[test]
    fn counts_received_fields_of_the_header_section_only() {
        let m: &[u8] = b"Received: a\r\nreceived: b\r\n\tcont Received: no\r\nX-Received: no\r\nRECEIVED:c\r\nSubject: x\r\n\r\nReceived: body\r\n";
        let h = fed(&[m]);
        assert_eq!(h.received(), 3);
        assert!(h.ended());
        assert_eq!(h.bytes(), &m[..m.len() - b"Received: body\r\n".len()]);
        assert!(!h.truncated());
    }

    #[test]
    fn the_same_count_however_the_bytes_are_split() {
        let m = b"Received: a\r\nReceived: b\r\nSubject: Received: x\r\nReceived: c\r\n\r\nReceived: d\r\n";
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let mut pieces = Vec::new();
            let mut rest = &m[..];
            while !rest.is_empty() {
                let (a, b) = rest.split_at(rng.random_range(1..=rest.len().min(5)));
                pieces.push(a);
                rest = b;
            }
            let h = fed(&pieces);
            assert_eq!((h.received(), h.ended()), (3, true), "{pieces:?}");
            assert_eq!(h.bytes(), &m[..m.len() - 13]);
        }
    }

    #[test]
    fn a_message_without_a_blank_line_is_all_header() {
        let h = fed(&[b"Received: a\r\nReceived: b"]);
        assert_eq!((h.received(), h.ended()), (2, false));
    }

    #[test]
    fn the_copy_is_bounded_but_the_count_goes_on() {
        let filler = b"X-Filler: ".iter().chain([b'y'; 1000].iter()).chain(b"\r\n").copied().collect::<Vec<u8>>();
        let mut h = HeaderSection::default();
        h.feed(b"Received: first\r\n");
        for _ in 0..(MAX_HEADER_SECTION / filler.len() + 10) {
            h.feed(&filler);
        }
        h.feed(b"Received: after the bound\r\n\r\n");
        assert_eq!(h.received(), 2);
        assert!(h.truncated() && h.ended());
        assert_eq!(h.held(), MAX_HEADER_SECTION);
        assert!(h.bytes().starts_with(b"Received: first\r\n"));
    }
}
