//! Message bodies as they arrive in DATA or BDAT.
//!
//! End of DATA and dot-unstuffing are smtp-proto's `DataReceiver`: only `<CRLF>.<CRLF>` ends the
//! data. Everything it passes through lands in a [`Body`], which enforces our hostile-input
//! policy before a byte is stored:
//!
//! * bare LF and bare CR are **normalised** to CRLF (as Postfix's `smtpd_forbid_bare_newline =
//!   normalize` does), so no stored message holds a line ending another MTA could read
//!   differently — and, since they never end the data, the bytes after them stay message text;
//! * NUL is dropped and the message rejected at the end (`550 5.6.0`);
//! * the size limit and the global memory budget are checked as the body grows; once exceeded
//!   the body keeps counting but stops storing, and the end of data gets the error reply.

use memchr::memchr3;

use crate::budget::Reservation;

/// Why a body cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooBig,
    MemoryFull,
    Nul,
}

#[derive(Debug)]
pub struct Body {
    buf: Vec<u8>,
    /// Bytes of client data accepted so far (after normalisation).
    size: u64,
    limit: u64,
    pending_cr: bool,
    error: Option<BodyError>,
    nul: bool,
    reservation: Reservation,
}

impl Body {
    /// A body that starts with `prefix` (the trace header) and accepts at most `limit` bytes of
    /// client data.
    pub fn new(prefix: Vec<u8>, limit: u64, mut reservation: Reservation) -> Self {
        let error = (!reservation.ensure(prefix.len() as u64)).then_some(BodyError::MemoryFull);
        Self { buf: prefix, size: 0, limit, pending_cr: false, error, nul: false, reservation }
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
                        _ => self.nul = true,
                    }
                    chunk = &chunk[i + 1..];
                }
            }
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.error.is_some() {
            return;
        }
        if self.size > self.limit {
            self.error = Some(BodyError::TooBig);
        } else if !self.reservation.ensure((self.buf.len() + bytes.len()) as u64) {
            self.error = Some(BodyError::MemoryFull);
        } else {
            self.buf.extend_from_slice(bytes);
        }
        if self.error.is_some() {
            self.buf = Vec::new();
        }
    }

    /// Client bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The stored bytes (prefix and normalised client data), or why there are none.
    pub fn finish(mut self) -> Result<(Vec<u8>, Reservation), BodyError> {
        if self.pending_cr {
            self.pending_cr = false;
            self.emit(b"\r\n");
        }
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.nul {
            return Err(BodyError::Nul);
        }
        Ok((self.buf, self.reservation))
    }
}

/// Number of `Received:` fields in the header section of `message`.
pub fn count_received(message: &[u8]) -> usize {
    message
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .filter(|l| l.len() >= 9 && l[..9].eq_ignore_ascii_case(b"received:"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;

    fn body(limit: u64) -> Body {
        Body::new(b"X: 1\r\n".to_vec(), limit, MemoryBudget::new(1 << 30).reservation())
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
            let mut b = body(1000);
            for c in *chunks {
                b.push(c);
            }
            let (got, _) = b.finish().unwrap();
            assert_eq!(&got[6..], *want, "{chunks:?}");
        }
    }

    #[test]
    fn nul_rejects_the_message() {
        let mut b = body(1000);
        b.push(b"a\0b\r\n");
        assert_eq!(b.finish().unwrap_err(), BodyError::Nul);
    }

    #[test]
    fn size_limit_counts_client_bytes_only() {
        let mut b = body(4);
        b.push(b"abcd");
        assert_eq!(b.size(), 4);
        let mut over = body(4);
        over.push(b"abcde");
        assert_eq!(over.finish().unwrap_err(), BodyError::TooBig);
    }

    #[test]
    fn memory_budget_is_enforced() {
        let budget = MemoryBudget::new(crate::budget::STEP);
        let _hog = {
            let mut r = budget.reservation();
            assert!(r.ensure(1));
            r
        };
        let mut b = Body::new(Vec::new(), 1 << 20, budget.reservation());
        b.push(b"x");
        assert_eq!(b.finish().unwrap_err(), BodyError::MemoryFull);
    }

    #[test]
    fn counts_received_headers_in_the_header_section_only() {
        let m = b"Received: a\r\nreceived: b\r\n\tcont\r\nSubject: x\r\n\r\nReceived: body\r\n";
        assert_eq!(count_received(m), 2);
    }
}
