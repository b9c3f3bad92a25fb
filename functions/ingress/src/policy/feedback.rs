//! Recipients in the feedback domain (`FEEDBACK_DOMAIN`), decided at RCPT: the only addresses
//! there are the return paths the relay gives mail of our own (`fb-<token>@`, the token
//! verified with the key — no request, no state), `fbl@` (the address to register with
//! mailbox providers' feedback loops: their reports name our message by what they quote) and
//! `postmaster@`. Anything else is `550 5.1.1` at once, from whoever sends it: a token that is not
//! ours goes no further. Reports are accepted from anyone (the MX of the domain is ours), at most
//! [`REPORT_RATE`] per client address (`451 4.7.1` past it), each at most [`REPORT_MAX_SIZE`]
//! (a report is small; this also keeps it within one part, so it is always whole in memory), one
//! report per transaction and never mixed with other recipients (`452 4.5.3`: the client sends
//! the rest in a transaction of its own). Nothing is ever relayed to this domain.

use std::net::IpAddr;

use shared::Reply;
use shared::feedback::ReturnPath;

use super::rate::{RateKey, RateLimit, RateSpec};
use crate::session::replies;

/// The largest report accepted (bytes): a DSN returns the message or its headers, an ARF
/// report the message; a report larger than this is refused with `552 5.3.4`.
pub const REPORT_MAX_SIZE: u64 = 1024 * 1024;

/// Reports per client address (IPv6: per /64).
pub const REPORT_RATE: &str = "100/1m";

/// The local part for feedback loops (registered with mailbox providers).
pub const FBL_LOCAL: &str = "fbl";

/// What a recipient in (or outside) the feedback domain is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rcpt {
    /// Not in the feedback domain: the relay policy decides.
    Elsewhere,
    /// `postmaster@` the feedback domain: the postmaster's, as for every domain we take mail for.
    Postmaster,
    /// A report recipient, as it will be recorded.
    Report(String),
    Refused(Reply),
}

/// The feedback domain's intake.
#[derive(Debug)]
pub struct Intake {
    pub return_path: ReturnPath,
    rate: RateLimit,
}

impl Intake {
    pub fn new(return_path: ReturnPath) -> Self {
        let spec = RateSpec::parse(REPORT_RATE).expect("a valid constant");
        Self { return_path, rate: RateLimit::new(spec) }
    }

    /// True when `address` is a report recipient (so its transaction carries a report).
    pub fn is_report(&self, address: &str) -> bool {
        self.return_path.in_domain(address)
    }

    /// Decide on a forward-path from `client`.
    pub fn check(&self, address: &str, client: IpAddr) -> Rcpt {
        if !self.return_path.in_domain(address) {
            return Rcpt::Elsewhere;
        }
        let (local, _) = address.rsplit_once('@').expect("in a domain");
        let report = format!("{}@{}", local.to_ascii_lowercase(), self.return_path.domain());
        if local.eq_ignore_ascii_case("postmaster") {
            return Rcpt::Postmaster;
        }
        if !local.eq_ignore_ascii_case(FBL_LOCAL) && self.return_path.verify_address(address).is_none() {
            return Rcpt::Refused(replies::not_a_return_path(address));
        }
        let key = RateKey::of(None, client);
        match self.rate.check(&key) {
            Ok(()) => Rcpt::Report(report),
            Err(wait) => Rcpt::Refused(replies::rate_limited(&key.to_string(), REPORT_RATE, wait)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QID: &str = "01JQUEUEID0000000000000000";

    #[test]
    fn only_our_return_paths_fbl_and_postmaster() {
        let rp = ReturnPath::new("fb.example.org", &[3u8; 32]);
        let ours = rp.address(QID);
        let intake = Intake::new(rp.clone());
        let other = ReturnPath::new("fb.example.org", &[4u8; 32]).address(QID);
        let client: IpAddr = "192.0.2.9".parse().unwrap();
        let refused = |a: &str| Rcpt::Refused(replies::not_a_return_path(a));
        let cases: Vec<(String, Rcpt)> = vec![
            (ours.clone(), Rcpt::Report(ours.clone())),
            (ours.to_uppercase(), Rcpt::Report(ours.clone())),
            ("FBL@FB.example.org".into(), Rcpt::Report("fbl@fb.example.org".into())),
            ("Postmaster@fb.example.org".into(), Rcpt::Postmaster),
            (other.clone(), refused(&other)),
            ("bob@fb.example.org".into(), refused("bob@fb.example.org")),
            ("fb-@fb.example.org".into(), refused("fb-@fb.example.org")),
            ("bob@example.org".into(), Rcpt::Elsewhere),
            (ours.replace("fb.example.org", "example.org"), Rcpt::Elsewhere),
        ];
        for (address, want) in cases {
            assert_eq!(intake.check(&address, client), want, "{address}");
        }
        assert!(intake.is_report(&ours) && intake.is_report("fbl@fb.example.org") && !intake.is_report("a@b.org"));
    }

    #[test]
    fn reports_are_rate_limited_per_client() {
        let rp = ReturnPath::new("fb.example.org", &[3u8; 32]);
        let intake = Intake::new(rp.clone());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let n = REPORT_RATE.split('/').next().unwrap().parse::<usize>().unwrap();
        for _ in 0..n {
            assert!(matches!(intake.check(&rp.address(QID), a), Rcpt::Report(_)));
        }
        let Rcpt::Refused(r) = intake.check(&rp.address(QID), a) else { panic!("over the limit") };
        assert_eq!((r.code, r.status.as_deref()), (451, Some("4.7.1")));
        assert!(matches!(intake.check(&rp.address(QID), b), Rcpt::Report(_)), "another client has its own");
        // A forged token is refused before it counts.
        assert!(matches!(intake.check("fb-x@fb.example.org", b), Rcpt::Refused(r) if r.code == 550));
    }
}
