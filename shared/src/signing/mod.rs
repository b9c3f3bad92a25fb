//! Keys that sign mail — the relay's DKIM keys (`RELAY_DKIM_KEYS`) and the ingress's ARC
//! sealing key (`INGRESS_ARC_SEAL`) — and what their signatures cover.
//!
//! Both are configured as `domain:selector:source`, `source` a PEM file path or
//! `s3://bucket/key` ([`KeySpec::parse`], pure), read once at start by [`load`] (the only I/O
//! here) and parsed by [`pem`]: RSA 2048–4096 or Ed25519. [`fields`] is the header fields a
//! signature covers (RFC 6376 §5.4), shared by DKIM signatures and ARC message signatures.

pub mod fields;
pub mod load;
pub mod pem;

use std::path::PathBuf;

use mail_auth::common::crypto::{Algorithm, DkimKey, Sha256, SigningKey};
use mail_auth::common::headers::Writable;

use crate::config::{ConfigError, err, valid_hostname};

/// A key as mail-auth's signers take one: they take keys by value, and ours are loaded once
/// and kept for the life of the process.
pub struct KeyRef<'k>(pub &'k DkimKey);

impl SigningKey for KeyRef<'_> {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

/// Where a key's PEM is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    S3 { bucket: String, key: String },
}

/// One `domain:selector:source` entry: the key signs as `d=domain`, `s=selector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Lowercase, without a trailing dot.
    pub domain: String,
    pub selector: String,
    pub source: KeySource,
    /// The entry as written, for messages that name it.
    pub entry: String,
}

impl KeySpec {
    /// Parse one entry of `var` (the source may itself contain `:`; the first two separate
    /// the fields). Only the syntax is checked; [`load`] reads and parses the key.
    pub fn parse(var: &'static str, entry: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| err(var, format!("{entry}: {why}"));
        let mut parts = entry.splitn(3, ':').map(str::trim);
        let (Some(domain), Some(selector), Some(source)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected domain:selector:source"));
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !valid_hostname(&domain) {
            return Err(bad("the domain is not a valid domain name"));
        }
        if !valid_hostname(selector) {
            return Err(bad("the selector must be dot-separated labels of letters, digits and hyphens"));
        }
        let source = match source.strip_prefix("s3://") {
            Some(rest) => match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
                    KeySource::S3 { bucket: bucket.to_string(), key: key.to_string() }
                }
                _ => return Err(bad("an S3 source is s3://bucket/key")),
            },
            None if source.is_empty() => return Err(bad("the key source (a PEM file or s3://bucket/key) is missing")),
            None => KeySource::File(PathBuf::from(source)),
        };
        Ok(Self { domain, selector: selector.to_string(), source, entry: entry.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_bad_ones_name_the_variable_and_the_entry() {
        let s = KeySpec::parse("V", "Example.ORG.:rsa2026:/etc/dkim/rsa.pem").unwrap();
        assert_eq!((s.domain.as_str(), s.selector.as_str()), ("example.org", "rsa2026"));
        assert_eq!(s.source, KeySource::File("/etc/dkim/rsa.pem".into()));
        let s = KeySpec::parse("V", "example.org:s1:s3://keys/dkim/s1.pem").unwrap();
        assert_eq!(s.source, KeySource::S3 { bucket: "keys".into(), key: "dkim/s1.pem".into() });
        let s = KeySpec::parse("V", "example.org:s1:C:\\keys\\a.pem").unwrap();
        assert_eq!(s.source, KeySource::File("C:\\keys\\a.pem".into()), "the source keeps its colons");
        for (entry, why) in [
            ("example.org:s1", "expected domain:selector:source"),
            ("bad_domain:s1:/k.pem", "not a valid domain"),
            ("example.org:bad selector:/k.pem", "selector"),
            ("example.org:s1:", "missing"),
            ("example.org:s1:s3://bucket", "s3://bucket/key"),
            ("example.org:s1:s3:///key", "s3://bucket/key"),
        ] {
            let e = KeySpec::parse("V", entry).unwrap_err();
            assert_eq!(e.var, "V");
            assert!(e.reason.starts_with(entry) && e.reason.contains(why), "{entry}: {e}");
        }
    }
}
