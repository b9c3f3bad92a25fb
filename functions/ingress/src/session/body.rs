//! A message's bytes as they arrive in DATA or BDAT, cut into parts for the spool.
//!
//! End of DATA and dot-unstuffing are smtp-proto's `DataReceiver`: only `<CRLF>.<CRLF>` ends the
//! data. Everything it passes through lands in a [`Body`], which applies our hostile-input
//! policy as the bytes stream past, whatever the read, chunk or part boundaries:
//!
//! * bare LF and bare CR are **normalised** to CRLF (as Postfix's `smtpd_forbid_bare_newline =
//!   normalize` does), so no stored message holds a line ending another MTA could read
//!   differently — and, since they never end the data, the bytes after them stay message text;
//! * NUL fails the message (`550 5.6.0` at its end);
//! * the header section is tracked ([`HeaderSection`]): more than [`MAX_HOPS`] `Received:`
//!   fields fail the message (`554 5.4.6`);
//! * the size limit and the global memory budget are checked as the body grows.
//!
//! The first failure is final: the body keeps counting what arrives but stores nothing more,
//! so the session can stop the upload at once and give the error reply at the end.
//!
//! Memory is one part: the stored bytes (our trace field first) collect in a buffer, and once
//! it holds more than `part_size` bytes, [`Body::take_part`] hands exactly `part_size` of them
//! out for upload. What is left at the end is the last part — or, for a message that never
//! outgrew one part, the whole message for a single PUT.

use memchr::memchr3;

use crate::session::budget::Reservation;
use crate::session::header::{HeaderSection, MAX_HOPS};

/// Client bytes pushed at once at most. With normalisation (a bare LF becomes two bytes) one
/// push adds at most twice this, so the buffer never exceeds a part by more than that.
pub const MAX_PUSH: usize = 64 * 1024;

/// Why a body cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooBig,
    MemoryFull,
    Nul,
    TooManyHops,
    /// The spool failed to take a part (or to open the upload).
    Storage,
}

#[derive(Debug)]
pub struct Body {
    buf: Vec<u8>,
    part_size: usize,
    /// Bytes of client data accepted so far (after normalisation).
    size: u64,
    /// Bytes stored so far: our prefix and the client data.
    stored: u64,
    limit: u64,
    pending_cr: bool,
    error: Option<BodyError>,
    header: HeaderSection,
    reservation: Reservation,
}

/// A body that reached its end without failing.
#[derive(Debug)]
pub struct Finished {
    /// The bytes not handed out as parts: the whole message if none were.
    pub last: Vec<u8>,
    /// Bytes of the stored message (prefix and client data, all parts).
    pub size: u64,
    pub header: HeaderSection,
    /// Holds the last bytes against the memory budget until the spool is done with them.
    pub reservation: Reservation,
}

impl Body {
    /// A body that starts with `prefix` (the trace field), accepts at most `limit` bytes of
    /// client data, and hands out parts of `part_size` bytes.
    pub fn new(prefix: &[u8], limit: u64, part_size: usize, reservation: Reservation) -> Self {
        let mut body = Self {
            buf: Vec::new(),
            part_size: part_size.max(1),
            size: 0,
            stored: 0,
            limit,
            pending_cr: false,
            error: None,
            header: HeaderSection::default(),
            reservation,
        };
        body.store(prefix);
        body
    }

    /// Client bytes to push at once at most (see [`MAX_PUSH`]).
    pub fn max_push(&self) -> usize {
        MAX_PUSH.min(self.part_size)
    }

    /// Append client bytes, normalising line endings.
    pub fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            if self.pending_cr {
                self.pending_cr = false;
                self.emit(b"\r\n");
                if chunk[0] == b'\n' {
                    chunk = &chunk[1..];
                    continue;
                }
            }
            match memchr3(b'\r', b'\n', 0, chunk) {
                None => {
                    self.emit(chunk);
                    return;
                }
                Some(i) => {
                    self.emit(&chunk[..i]);
                    match chunk[i] {
                        b'\r' => self.pending_cr = true,
                        b'\n' => self.emit(b"\r\n"),
                        _ => self.fail(BodyError::Nul),
                    }
                    chunk = &chunk[i + 1..];
                }
            }
        }
    }

    /// Client bytes, normalised.
    fn emit(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.size > self.limit {
            self.fail(BodyError::TooBig);
        }
        self.store(bytes);
    }

    fn store(&mut self, bytes: &[u8]) {
        if self.error.is_some() || bytes.is_empty() {
            return;
        }
        self.header.feed(bytes);
        // Our own trace field is one of them, hence the + 1.
        if self.header.received() > MAX_HOPS + 1 {
            return self.fail(BodyError::TooManyHops);
        }
        let held = self.buf.len() + bytes.len() + self.header.held();
        if !self.reservation.ensure(held as u64) {
            return self.fail(BodyError::MemoryFull);
        }
        self.grow(bytes.len());
        self.buf.extend_from_slice(bytes);
        self.stored += bytes.len() as u64;
    }

    /// Make room for `more` bytes: doubling like `Vec`, but never past one part and what one
    /// push adds, so a 5 MiB part is not an 8 MiB allocation.
    fn grow(&mut self, more: usize) {
        let need = self.buf.len() + more;
        if need > self.buf.capacity() {
            let cap = (self.buf.capacity() * 2).max(4096).min(self.full_capacity()).max(need);
            self.buf.reserve_exact(cap - self.buf.len());
        }
    }

    /// A part and what one push can add to it (a pending CR, then twice the push).
    fn full_capacity(&self) -> usize {
        self.part_size + 2 * self.max_push() + 2
    }

    /// Stop storing: the message will be refused (the first reason is the one given).
    pub fn fail(&mut self, e: BodyError) {
        self.error.get_or_insert(e);
        self.buf = Vec::new();
    }

    /// Why the message will be refused, once it is known.
    pub fn error(&self) -> Option<BodyError> {
        self.error
    }

    /// The buffer holds more than a part: [`take_part`](Self::take_part) has one.
    pub fn has_part(&self) -> bool {
        self.error.is_none() && self.buf.len() > self.part_size
    }

    /// The next part (exactly `part_size` bytes), when the buffer holds more than one.
    pub fn take_part(&mut self) -> Option<Vec<u8>> {
        if !self.has_part() {
            return None;
        }
        // Parts keep coming: the next buffer gets its full size at once.
        let mut next = Vec::with_capacity(self.full_capacity());
        next.extend_from_slice(&self.buf[self.part_size..]);
        self.buf.truncate(self.part_size);
        Some(std::mem::replace(&mut self.buf, next))
    }

    /// Client bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The end of the message: what is left to store, or why nothing is.
    pub fn finish(mut self) -> Result<Finished, BodyError> {
        if self.pending_cr {
            self.pending_cr = false;
            self.emit(b"\r\n");
        }
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(Finished { last: self.buf, size: self.stored, header: self.header, reservation: self.reservation })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::budget::MemoryBudget;

    fn body(limit: u64) -> Body {
        Body::new(b"X: 1\r\n", limit, 1 << 20, MemoryBudget::new(1 << 30).reservation())
    }

    /// Push `chunks`, taking parts as they fill; the parts and the finished rest.
    fn parts_of(mut b: Body, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Result<Finished, BodyError>) {
        let mut parts = Vec::new();
        for c in chunks {
            b.push(c);
            while let Some(p) = b.take_part() {
                parts.push(p);
            }
        }
        (parts, b.finish())
    }

    #[test]
    fn normalises_bare_line_endings_across_chunks() {
        let cases: &[(&[&[u8]], &[u8])] = &[
            (&[b"a\r\nb\r\n"], b"a\r\nb\r\n"),
            (&[b"a\nb\n"], b"a\r\nb\r\n"),
            (&[b"a\rb\r"], b"a\r\nb\r\n"),
            (&[b"a\r", b"\nb"], b"a\r\nb"),
            (&[b"a\r", b"b"], b"a\r\nb"),
            (&[b"a\r\r\n"], b"a\r\n\r\n"),
            (&[b"\xc3\xa9t\xc3\xa9\r\n"], b"\xc3\xa9t\xc3\xa9\r\n"),
        ];
        for (chunks, want) in cases {
            let (_, done) = parts_of(body(1000), chunks);
            assert_eq!(&done.unwrap().last[6..], *want, "{chunks:?}");
        }
    }

    #[test]
    fn parts_are_exactly_part_size_and_join_to_the_message() {
        // A CR at the very end of a part, its LF in the next: normalised across the cut.
        let b = Body::new(b"P: 1\r\n", 1000, 8, MemoryBudget::new(1 << 20).reservation());
        let (parts, done) = parts_of(b, &[b"ab\r", b"\ncdefgh\nij\rkl", b"m\r"]);
        let done = done.unwrap();
        assert!(parts.iter().all(|p| p.len() == 8), "{parts:?}");
        let joined: Vec<u8> = parts.concat().into_iter().chain(done.last.iter().copied()).collect();
        assert_eq!(joined, b"P: 1\r\nab\r\ncdefgh\r\nij\r\nklm\r\n");
        assert_eq!(done.size, joined.len() as u64);
        assert!(!done.last.is_empty() && done.last.len() <= 8);
    }

    #[test]
    fn a_message_of_exactly_one_part_is_stored_whole() {
        let b = Body::new(b"", 1000, 8, MemoryBudget::new(1 << 20).reservation());
        let (parts, done) = parts_of(b, &[b"12345678"]);
        assert!(parts.is_empty());
        assert_eq!(done.unwrap().last, b"12345678");
    }

    #[test]
    fn the_buffer_never_outgrows_a_part_plus_one_push() {
        let part = 1 << 16;
        let mut b = Body::new(b"", u64::MAX, part, MemoryBudget::new(1 << 30).reservation());
        let lf = vec![b'\n'; b.max_push()];
        for _ in 0..10 {
            b.push(&lf);
            assert!(b.buf.capacity() <= b.full_capacity(), "{}", b.buf.capacity());
            // As the session does: every full part out before the next push.
            while b.take_part().is_some() {}
        }
    }

    #[test]
    fn nul_fails_the_message_and_stops_storing() {
        let mut b = body(1000);
        b.push(b"a\0b\r\n");
        assert_eq!(b.error(), Some(BodyError::Nul));
        b.push(b"more\r\n");
        assert!(!b.has_part());
        assert_eq!(b.size(), 10, "still counted");
        assert_eq!(b.finish().unwrap_err(), BodyError::Nul);
    }

    #[test]
    fn size_limit_counts_client_bytes_only() {
        let mut b = body(4);
        b.push(b"abcd");
        assert_eq!(b.size(), 4);
        assert_eq!(b.error(), None);
        let mut over = body(4);
        over.push(b"abcde");
        assert_eq!(over.finish().unwrap_err(), BodyError::TooBig);
    }

    #[test]
    fn too_many_hops_fail_as_soon_as_counted_even_after_parts() {
        let b = Body::new(b"Received: ours\r\n", 1 << 20, 64, MemoryBudget::new(1 << 20).reservation());
        let hops = b"Received: x\r\n".repeat(MAX_HOPS);
        let (parts, done) = parts_of(b, &[&hops, b"Subject: s\r\n\r\nbody\r\n"]);
        assert!(!parts.is_empty(), "the header spans several parts");
        assert!(done.is_ok(), "{} fields and ours is the limit", MAX_HOPS);

        let mut b = Body::new(b"Received: ours\r\n", 1 << 20, 64, MemoryBudget::new(1 << 20).reservation());
        b.push(&hops);
        b.push(b"Recei");
        assert_eq!(b.error(), None);
        b.push(b"ved: one too many\r\n");
        assert_eq!(b.error(), Some(BodyError::TooManyHops));
        assert!(!b.has_part());
    }

    #[test]
    fn received_in_the_body_is_not_a_hop() {
        let mut b = body(1 << 20);
        b.push(b"Subject: s\r\n\r\n");
        b.push(&b"Received: x\r\n".repeat(MAX_HOPS + 5));
        let done = b.finish().unwrap();
        assert_eq!(done.header.received(), 0);
        assert_eq!(done.header.bytes(), b"X: 1\r\nSubject: s\r\n\r\n");
    }

    #[test]
    fn memory_budget_is_enforced() {
        let budget = MemoryBudget::new(crate::session::budget::STEP);
        let _hog = {
            let mut r = budget.reservation();
            assert!(r.ensure(1));
            r
        };
        let mut b = Body::new(b"", 1 << 20, 1 << 20, budget.reservation());
        b.push(b"x");
        assert_eq!(b.finish().unwrap_err(), BodyError::MemoryFull);
    }

    #[test]
    fn a_storage_failure_stops_the_parts() {
        let mut b = Body::new(b"", 1000, 4, MemoryBudget::new(1 << 20).reservation());
        b.push(b"0123456789");
        assert!(b.has_part());
        b.fail(BodyError::Storage);
        assert!(b.take_part().is_none());
        assert_eq!(b.finish().unwrap_err(), BodyError::Storage);
    }
}
