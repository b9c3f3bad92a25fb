//! SPF, DKIM and DMARC as a judge check, the pure half: from the DMARC facts of a message and
//! `INGRESS_AUTH_CHECKS` to a [`Verdict`] (the reply, and the one `Authentication-Results` we
//! write in place of every one claiming our authserv-id). The DNS half is
//! [`authenticate`](super::authenticate).

use shared::Reply;

use super::{Edits, Outcome, Removal, Verdict};

/// The header field we write and strip.
pub const AUTH_RESULTS: &str = "Authentication-Results";

/// `INGRESS_AUTH_CHECKS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Verify, record, and apply the sender domain's DMARC policy.
    Enforce,
    /// Verify and record only.
    Monitor,
    /// No checks, no header.
    Off,
}

/// The DMARC result (RFC 7489 §11.2 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dmarc {
    Pass,
    Fail,
    /// No `From:` domain, or it publishes no DMARC record.
    None,
    /// DNS trouble, or the lookups' deadline passed.
    TempError,
    /// A broken record: treated as no record (RFC 7489 §6.6.3).
    PermError,
}

impl Dmarc {
    /// The `Result` dimension of `AuthChecked`.
    pub fn metric(self) -> &'static str {
        match self {
            Dmarc::Pass => "pass",
            Dmarc::Fail => "fail",
            Dmarc::None | Dmarc::PermError => "none",
            Dmarc::TempError => "temperror",
        }
    }
}

/// The policy that applies to the `From:` domain (`p`, or `sp`/`np` for a subdomain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    None,
    Quarantine,
    Reject,
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub dmarc: Dmarc,
    pub policy: Policy,
    /// The `From:` domain (empty when there is none).
    pub domain: String,
    /// The results after our authserv-id, as RFC 8601 resinfo: `;\r\n\tspf=… ;\r\n\tdkim=…`.
    pub results: String,
    /// The latest sealer of an ARC chain that validated, when it is in
    /// `INGRESS_ARC_TRUSTED_SEALERS`.
    pub trusted_sealer: Option<String>,
}

/// The reply and marking under `mode` (`Off` never gets here, but accepts). A valid ARC chain
/// from a trusted sealer overrides a DMARC failure's policy.
pub fn outcome(mode: AuthMode, dmarc: Dmarc, policy: Policy, domain: &str, trusted_arc: bool) -> (Outcome, bool) {
    if mode != AuthMode::Enforce {
        return (Outcome::Accept, false);
    }
    match (dmarc, policy) {
        (Dmarc::Fail, _) if trusted_arc => (Outcome::Accept, false),
        (Dmarc::Fail, Policy::Reject) => (
            Outcome::Reject(Reply::new(
                550,
                "5.7.1",
                format!("Message rejected: it fails the DMARC policy of {domain} (SPF and DKIM not aligned)"),
            )),
            false,
        ),
        (Dmarc::Fail, Policy::Quarantine) => (Outcome::Accept, true),
        (Dmarc::TempError, _) => (
            Outcome::TempFail(Reply::new(
                451,
                "4.7.0",
                "Temporary failure checking SPF, DKIM or DMARC: try again later",
            )),
            false,
        ),
        _ => (Outcome::Accept, false),
    }
}

/// The check's verdict: the outcome, our `Authentication-Results` at the top, and every one
/// claiming `hostname` removed.
pub fn verdict(mode: AuthMode, hostname: &str, facts: &Facts) -> Verdict {
    let trusted_arc = facts.trusted_sealer.is_some();
    let (outcome, spam) = outcome(mode, facts.dmarc, facts.policy, &facts.domain, trusted_arc);
    let mut results = if facts.results.is_empty() { "; none".to_string() } else { facts.results.clone() };
    if let (Some(sealer), Dmarc::Fail) = (&facts.trusted_sealer, facts.dmarc) {
        // A comment on the last resinfo, the DMARC one: why a failure was not refused.
        results.push_str(&format!(" (policy overridden: valid ARC chain sealed by trusted {sealer})"));
    }
    Verdict {
        outcome,
        edits: Edits {
            prepend: vec![format!("{AUTH_RESULTS}: {hostname}{results}")],
            remove: vec![Removal::AuthservId { name: AUTH_RESULTS.into(), id: hostname.into() }],
            subject: None,
            spam,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combination of mode, DMARC result and policy.
    #[test]
    fn outcome_table() {
        use Dmarc as D;
        use Policy as P;
        let modes = [AuthMode::Enforce, AuthMode::Monitor, AuthMode::Off];
        let results = [D::Pass, D::Fail, D::None, D::TempError, D::PermError];
        let policies = [P::None, P::Quarantine, P::Reject];
        let mut seen = 0;
        for mode in modes {
            for d in results {
                for p in policies {
                    for arc in [false, true] {
                        let (out, spam) = outcome(mode, d, p, "example.com", arc);
                        // (code, status, X-Spam)
                        let want: (u16, &str, bool) = match (mode, d, p) {
                            (AuthMode::Enforce, D::Fail, _) if arc => (250, "", false),
                            (AuthMode::Enforce, D::Fail, P::Reject) => (550, "5.7.1", false),
                            (AuthMode::Enforce, D::Fail, P::Quarantine) => (250, "", true),
                            (AuthMode::Enforce, D::TempError, _) => (451, "4.7.0", false),
                            _ => (250, "", false),
                        };
                        let got = match &out {
                            Outcome::Accept => (250, "", spam),
                            Outcome::TempFail(r) | Outcome::Reject(r) => {
                                (r.code, r.status.as_deref().unwrap_or(""), spam)
                            }
                        };
                        assert_eq!(got, want, "{mode:?} {d:?} {p:?}");
                        if let Outcome::Reject(r) = &out {
                            assert!(r.one_line().contains("example.com"), "names the domain: {}", r.one_line());
                        }
                        seen += 1;
                    }
                }
            }
        }
        assert_eq!(seen, 90);
    }

    #[test]
    fn verdict_writes_one_header_and_strips_ours() {
        let facts = Facts {
            dmarc: Dmarc::Pass,
            policy: Policy::Reject,
            domain: "example.com".into(),
            results: ";\r\n\tdmarc=pass header.from=example.com".into(),
            trusted_sealer: None,
        };
        let v = verdict(AuthMode::Enforce, "mx.example.org", &facts);
        assert_eq!(v.outcome, Outcome::Accept);
        assert_eq!(
            v.edits.prepend,
            ["Authentication-Results: mx.example.org;\r\n\tdmarc=pass header.from=example.com"]
        );
        assert_eq!(v.edits.remove, [Removal::AuthservId { name: AUTH_RESULTS.into(), id: "mx.example.org".into() }]);
        let none = Facts { results: String::new(), ..facts };
        assert_eq!(verdict(AuthMode::Monitor, "h", &none).edits.prepend, ["Authentication-Results: h; none"]);
        let overridden = Facts {
            dmarc: Dmarc::Fail,
            results: ";\r\n\tdmarc=fail".into(),
            trusted_sealer: Some("lists.example".into()),
            ..none
        };
        let v = verdict(AuthMode::Enforce, "h", &overridden);
        assert_eq!(v.outcome, Outcome::Accept);
        assert_eq!(
            v.edits.prepend,
            [
                "Authentication-Results: h;\r\n\tdmarc=fail (policy overridden: valid ARC chain sealed by trusted lists.example)"
            ]
        );
    }

    #[test]
    fn metric_results_are_the_contracts() {
        let got: Vec<_> =
            [Dmarc::Pass, Dmarc::Fail, Dmarc::None, Dmarc::TempError, Dmarc::PermError].map(Dmarc::metric).into();
        assert_eq!(got, ["pass", "fail", "none", "temperror", "none"]);
    }
}
