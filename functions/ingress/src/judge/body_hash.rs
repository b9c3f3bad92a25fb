//! DKIM and ARC body hashes computed while the body streams past, so a message of any size is
//! verified without being held: one incremental hasher (mail-auth's [`BodyHasher`]) per
//! canonicalization and algorithm the message's signatures name.
//!
//! **The relaxed body-hash defect.** mail-auth 0.13.3 hashes the relaxed body wrongly when it
//! ends in whitespace-only lines (`"text\r\n \r\n"` comes out as `"text\r\n\r\n"` instead of
//! `"text\r\n"`), so a valid signature on such a message failed to verify (`neutral`). By
//! RFC 6376 §3.4.4 the relaxed canonical body is the same as that of the body cut after its
//! last byte that is not SP, HTAB, CR or LF, plus CRLF (whitespace at line ends goes, then
//! empty lines at the end). [`Relaxed`] feeds the hasher exactly that: a run of whitespace is
//! held back until a byte that is not whitespace follows it, and dropped at the end. The run is
//! held as counts, not bytes (its relaxed form is "a space" or "n line breaks, then perhaps a
//! space"), so a body of megabytes of blank lines costs no memory. The relay's signer avoids
//! the same defect on the signing side (`relay::dkim::sign`).
//!
//! Input is the ingress's stored message, whose every line ends in CRLF (bare CR and LF are
//! normalised on the way in), so a line break is counted at its LF and a CR is dropped.

use mail_auth::common::crypto::{HashAlgorithm, HashContext, HashImpl, Sha1, Sha256};
use mail_auth::dkim::Canonicalization;
use mail_auth::dkim::canonicalize::BodyHasher;

/// A hash context (ring's, for SHA-1 and SHA-256 alike).
type Context = <Sha256 as HashImpl>::Context;

/// One body hash as mail-auth keeps it in `AuthenticatedMessage::body_hashes`:
/// canonicalization, algorithm, length limit (always 0: `l=` signatures are refused), digest.
pub type BodyHash = (Canonicalization, HashAlgorithm, u64, Vec<u8>);

/// The hashes of one body, fed in pieces split anywhere.
pub struct BodyHashes {
    entries: Vec<Entry>,
}

struct Entry {
    canonicalization: Canonicalization,
    algorithm: HashAlgorithm,
    hasher: BodyHasher<Context>,
    /// Relaxed bodies go through the trailing-whitespace holdback.
    relaxed: Option<Relaxed>,
}

impl BodyHashes {
    /// Hashers for each distinct `(canonicalization, algorithm)`.
    pub fn new(wanted: impl IntoIterator<Item = (Canonicalization, HashAlgorithm)>) -> Self {
        let mut entries: Vec<Entry> = Vec::new();
        for (c, a) in wanted {
            if entries.iter().any(|e| e.canonicalization == c && e.algorithm == a) {
                continue;
            }
            let context = match a {
                HashAlgorithm::Sha1 => <Sha1 as HashImpl>::hasher(),
                HashAlgorithm::Sha256 => <Sha256 as HashImpl>::hasher(),
            };
            entries.push(Entry {
                canonicalization: c,
                algorithm: a,
                hasher: BodyHasher::new(context, c, 0),
                relaxed: (c == Canonicalization::Relaxed).then(Relaxed::default),
            });
        }
        Self { entries }
    }

    /// True when no hash is computed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next bytes of the body.
    pub fn write(&mut self, bytes: &[u8]) {
        for e in &mut self.entries {
            match &mut e.relaxed {
                Some(r) => r.write(bytes, &mut e.hasher),
                None => e.hasher.write(bytes),
            }
        }
    }

    /// The digests, in mail-auth's form.
    pub fn finish(self) -> Vec<BodyHash> {
        self.entries
            .into_iter()
            .map(|mut e| {
                if let Some(r) = e.relaxed.take() {
                    r.finish(&mut e.hasher);
                }
                let (context, _) = e.hasher.finish();
                (e.canonicalization, e.algorithm, 0, context.complete().as_ref().to_vec())
            })
            .collect()
    }
}

/// What of a run of whitespace is still held back (see the module doc).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Relaxed {
    /// Some content was written: the body is not empty when it ends.
    content: bool,
    /// SP or HTAB after the last content, on its line.
    space: bool,
    /// Line breaks since the last content.
    breaks: u64,
    /// SP or HTAB after the last of those line breaks.
    space_after_break: bool,
}

const CRLFS: &[u8; 64] = b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n";

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl Relaxed {
    fn write(&mut self, bytes: &[u8], out: &mut BodyHasher<Context>) {
        match bytes.iter().rposition(|&b| !is_space(b)) {
            None => self.hold(bytes),
            Some(last) => {
                // Everything up to the last content byte goes out as is (whitespace inside it
                // is followed by content, which is what the hasher gets right), the held run
                // in its relaxed-equivalent form first.
                let first = bytes.iter().position(|&b| !is_space(b)).expect("there is content");
                self.hold(&bytes[..first]);
                self.release(out);
                out.write(&bytes[first..=last]);
                self.content = true;
                self.hold(&bytes[last + 1..]);
            }
        }
    }

    fn hold(&mut self, run: &[u8]) {
        for &b in run {
            match b {
                b'\n' => {
                    self.breaks += 1;
                    self.space_after_break = false;
                }
                b' ' | b'\t' if self.breaks == 0 => self.space = true,
                b' ' | b'\t' => self.space_after_break = true,
                _ => {} // CR: its LF counts the break.
            }
        }
    }

    /// Content follows the held run: write what it stands for.
    fn release(&mut self, out: &mut BodyHasher<Context>) {
        if self.breaks == 0 {
            if self.space {
                out.write(b" ");
            }
        } else {
            let mut left = self.breaks;
            while left > 0 {
                let n = left.min(CRLFS.len() as u64 / 2);
                out.write(&CRLFS[..n as usize * 2]);
                left -= n;
            }
            if self.space_after_break {
                out.write(b" ");
            }
        }
        *self = Self { content: self.content, ..Self::default() };
    }

    /// The body ended: the held run is dropped; a body with content ends in CRLF.
    fn finish(self, out: &mut BodyHasher<Context>) {
        if self.content {
            out.write(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use mail_auth::common::crypto::HashOutput;

    use super::*;

    /// mail-auth's own one-shot hash of `body`.
    fn reference(c: Canonicalization, a: HashAlgorithm, body: &[u8]) -> Vec<u8> {
        let out: HashOutput = a.hash(c.canonical_body(body, 0));
        out.as_ref().to_vec()
    }

    fn streamed(c: Canonicalization, a: HashAlgorithm, pieces: &[&[u8]]) -> Vec<u8> {
        let mut h = BodyHashes::new([(c, a)]);
        for p in pieces {
            h.write(p);
        }
        h.finish().remove(0).3
    }

    /// Bodies and an equivalent one without trailing whitespace lines, which mail-auth hashes
    /// correctly (the defect needs whitespace-only lines at the end).
    const RELAXED_CASES: &[(&str, &str)] = &[
        ("text\r\n \r\n", "text\r\n"),
        ("text\r\n\t\r\n  \r\n\r\n", "text\r\n"),
        ("text  \r\n \t \r\n", "text\r\n"),
        ("a\r\n \r\nb\r\n", "a\r\n\r\nb\r\n"),
        ("a  b\t\tc \r\n\r\n\r\n", "a b c\r\n"),
        ("  lead\r\n", " lead\r\n"),
        ("\r\n\r\nafter blank lines\r\n", "\r\n\r\nafter blank lines\r\n"),
        ("no final line break", "no final line break\r\n"),
        ("x\r\n \r\n \r\n y \r\n", "x\r\n\r\n\r\n y\r\n"),
        ("", ""),
        (" \r\n\r\n \t", ""),
    ];

    #[test]
    fn relaxed_hashes_match_the_rfc_form_of_bodies_ending_in_whitespace() {
        for a in [HashAlgorithm::Sha256, HashAlgorithm::Sha1] {
            for (body, equivalent) in RELAXED_CASES {
                let want = reference(Canonicalization::Relaxed, a, equivalent.as_bytes());
                assert_eq!(streamed(Canonicalization::Relaxed, a, &[body.as_bytes()]), want, "{body:?}");
            }
        }
    }

    #[test]
    fn the_library_still_has_the_defect() {
        // When this fails, mail-auth hashes such bodies right itself and `Relaxed` can go.
        let body = b"text\r\n \r\n";
        assert_ne!(
            reference(Canonicalization::Relaxed, HashAlgorithm::Sha256, body),
            reference(Canonicalization::Relaxed, HashAlgorithm::Sha256, b"text\r\n")
        );
    }

    #[test]
    fn any_split_gives_the_same_hash_and_simple_is_the_librarys() {
        let body = b"Hello  \r\nworld\t\r\n\r\n \r\n..x\r\n   \r\n\r\n";
        for c in [Canonicalization::Relaxed, Canonicalization::Simple] {
            let whole = streamed(c, HashAlgorithm::Sha256, &[body]);
            for i in 0..=body.len() {
                for j in i..=body.len() {
                    let got = streamed(c, HashAlgorithm::Sha256, &[&body[..i], &body[i..j], &body[j..]]);
                    assert_eq!(got, whole, "{c:?} split at {i}, {j}");
                }
            }
        }
        let simple = streamed(Canonicalization::Simple, HashAlgorithm::Sha256, &[body]);
        assert_eq!(simple, reference(Canonicalization::Simple, HashAlgorithm::Sha256, body));
    }

    #[test]
    fn a_long_run_of_blank_lines_is_counted_not_kept() {
        let mut h = BodyHashes::new([(Canonicalization::Relaxed, HashAlgorithm::Sha256)]);
        h.write(b"start\r\n");
        for _ in 0..10_000 {
            h.write(b" \r\n\r\n");
        }
        assert_eq!(h.entries[0].relaxed.as_ref().unwrap().breaks, 20_001);
        h.write(b"end\r\n");
        let mut want = b"start\r\n".to_vec();
        want.extend(std::iter::repeat_n(&b"\r\n"[..], 20_000).flatten());
        want.extend_from_slice(b"end\r\n");
        let got = h.finish().remove(0).3;
        assert_eq!(got, reference(Canonicalization::Relaxed, HashAlgorithm::Sha256, &want));
    }

    #[test]
    fn one_hasher_per_distinct_pair() {
        let r = (Canonicalization::Relaxed, HashAlgorithm::Sha256);
        let s = (Canonicalization::Simple, HashAlgorithm::Sha256);
        let got: Vec<_> = BodyHashes::new([r, s, r]).finish().into_iter().map(|(c, a, l, _)| (c, a, l)).collect();
        assert_eq!(got, [(r.0, r.1, 0), (s.0, s.1, 0)]);
    }
}
