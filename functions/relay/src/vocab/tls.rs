//! What a target's connection must prove about TLS: the route stage decides it (MTA-STS), the
//! SMTP client enforces it, and the outcome of an attempt records it.

/// What the route stage requires of a target's TLS, on top of the transport's own rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TlsRequirement {
    /// Nothing more: `RELAY_TLS` and the smarthost settings decide.
    #[default]
    Default,
    /// Deliver as [`Default`](Self::Default), but log a session that is not TLS with a
    /// certificate valid for the host as a policy failure (MTA-STS `testing`).
    Report,
    /// TLS with a certificate valid for the host name (web PKI + `RELAY_TLS_CA`), never
    /// plaintext; otherwise the recipients are deferred (MTA-STS `enforce`, RFC 8461 §4.2).
    Verified,
}

impl TlsRequirement {
    /// The name in the `delivery` log line's `tls_policy` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Report => "mta-sts-testing",
            Self::Verified => "mta-sts-enforce",
        }
    }
}
