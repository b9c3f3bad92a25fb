//! Stage 1 of a job: where its mail goes. The smarthost when one is configured, otherwise the
//! destination domain's MX hosts ([`mx`]) as far as the domain's MTA-STS policy ([`mta_sts`])
//! allows, all resolved through the [`dns`] edge into the ordered [`Target`]s one attempt tries —
//! or a verdict for every recipient when there is nowhere to go.

use std::net::SocketAddr;

use shared::Job;

use crate::config::RelayConfig;
use crate::decide::outcome::Verdict;

pub mod dns;
pub mod mta_sts;
pub mod mx;

pub use dns::{HickoryResolver, Lookup, Resolver};
pub use mta_sts::MtaSts;

/// One address to connect to, with the name it was found under and what its connection must
/// prove. Sessions are only interchangeable between equal targets (a pooled session opened
/// without verification never serves a [`TlsRequirement::Verified`] target).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
    pub tls: TlsRequirement,
}

impl Target {
    /// A target with no requirement of its own.
    pub fn new(host: impl Into<String>, addr: SocketAddr) -> Self {
        Self { host: host.into(), addr, tls: TlsRequirement::Default }
    }
}

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

/// The addresses to try for `job`, in order. MTA-STS applies to MX delivery only: a smarthost is
/// the operator's choice of next hop, not the recipient domain's.
pub async fn route(
    job: &Job,
    cfg: &RelayConfig,
    resolver: &dyn Resolver,
    mta_sts: &MtaSts,
    now: i64,
) -> Result<Vec<Target>, Verdict> {
    if let Some(sh) = &cfg.smarthost {
        return mx::smarthost_targets(resolver, &sh.host, sh.port).await;
    }
    if let Some(literal) = mx::literal(&job.domain, cfg.mx_port) {
        return literal;
    }
    let hosts = mx::exchanges(resolver, &job.domain).await?;
    let (hosts, tls) = match cfg.mta_sts {
        true => mta_sts.restrict(job, hosts, resolver, now).await?,
        false => (hosts, TlsRequirement::Default),
    };
    mx::addresses(resolver, &job.domain, hosts, cfg.mx_port, tls).await
}
