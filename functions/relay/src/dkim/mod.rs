//! DKIM signing (RFC 6376; Ed25519 per RFC 8463) of what the relay delivers.
//!
//! Keys come from `RELAY_DKIM_KEYS` (parsed in [`crate::config`]), are read once at start by
//! [`load`] (file or S3, through [`shared::signing`], which the ingress's ARC sealer shares).
//! [`sign`] is the pure step the
//! SMTP client calls, once per transaction, on the bytes that server will receive — after any
//! 7-bit conversion, so the signature verifies as delivered. Only mail of our own is signed
//! (`Job::trusted`: from an authenticated client or `RELAY_NETWORKS`, or a DSN the relay wrote),
//! never inbound mail for `RELAY_DOMAINS`, whose `From:` anyone can forge. Such a message is
//! signed with every key of its `From:` domain; DSNs are signed the same way when the domain of
//! `RELAY_BOUNCE_FROM` has a key.
//!
//! Library: `mail-auth` 0.13.3 with its `ring` backend (ring is already linked for rustls). It
//! is the last release that builds on rustc 1.95 (≥ 0.14 needs mail-parser 1.x). Its relaxed
//! body hash is wrong for bodies ending in whitespace-only lines (fixed in 0.15); [`sign`] gives
//! it an equivalent input that avoids the defect, so every message keeps `c=relaxed/relaxed`.

pub mod load;
pub mod sign;

pub use sign::{Key, Signatures, Signer};
