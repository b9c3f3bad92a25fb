//! How the relay recognises itself as a next hop, so mail for a domain it is the MX of never
//! comes back to it: Postfix's two rules, as pure functions.
//!
//! - **By MX name** ([`drop_self`]): an MX host named `RELAY_HELO_NAME` or in
//!   `RELAY_LOCAL_NAMES` is this relay; it and every MX of equal or worse preference are
//!   dropped (delivering to a worse MX than ourselves would send the mail away from its
//!   destination). Nothing left means we are the best MX: the mail loops (`5.4.6`, permanent).
//!   Something left means we are a backup MX: only the better hosts are tried.
//!   The rule works on `(preference, host)` lists before any address lookup, so other filters
//!   over the same list (an MTA-STS policy's `mx` patterns) compose with it in either order —
//!   but it must see the whole list, since what it drops depends on our own preference.
//! - **By the peer's own name** ([`own_name_in`]): a server whose greeting or EHLO/HELO reply
//!   gives `RELAY_HELO_NAME` as its name is this relay reached under another name or address.
//!   Only `RELAY_HELO_NAME` counts here, as in Postfix (`myhostname`): an internal server often
//!   carries the public MX name of its domain (split-horizon DNS), and taking that for a loop
//!   would bounce every message routed to it.
//!
//! Names compare case-insensitively with any trailing dot ignored ([`normalise`]).

use shared::Reply;

pub use crate::config::normalise;
use crate::vocab::Verdict;

/// What the MX rule leaves of a domain's MX records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelfMx {
    /// No record names this relay: every record stands.
    Unlisted(Vec<(u16, String)>),
    /// This relay is a backup MX: the records of strictly better preference.
    Backup(Vec<(u16, String)>),
    /// This relay is (one of) the best MX of the domain.
    Best,
}

/// Apply the MX rule to `records`; `own_names` are normalised ([`RelayConfig::own_names`]).
///
/// [`RelayConfig::own_names`]: crate::config::RelayConfig::own_names
pub fn drop_self(records: Vec<(u16, String)>, own_names: &[String]) -> SelfMx {
    let mine = records.iter().filter(|(_, host)| own_names.contains(&normalise(host))).map(|(pref, _)| *pref).min();
    let Some(mine) = mine else { return SelfMx::Unlisted(records) };
    let better: Vec<_> = records.into_iter().filter(|(pref, _)| *pref < mine).collect();
    if better.is_empty() { SelfMx::Best } else { SelfMx::Backup(better) }
}

/// The verdict when this relay is the best MX of `domain` (the contract's wording).
pub fn loops_back(domain: &str) -> Verdict {
    Verdict::failed("5.4.6", format!("mail for {domain} loops back to myself"))
}

/// When `reply` — a greeting or an EHLO/HELO reply — names `helo` as the server's own name
/// (its first word): the permanent verdict that ends the attempt.
pub fn own_name_in(reply: &Reply, helo: &str) -> Option<Verdict> {
    let name = reply.lines.first()?.split_whitespace().next()?;
    (normalise(name) == normalise(helo)).then(|| {
        Verdict::failed("5.4.6", format!("mail loops back to myself: the server calls itself {name}, our own name"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Class;

    fn recs(list: &[(u16, &str)]) -> Vec<(u16, String)> {
        list.iter().map(|(p, h)| (*p, h.to_string())).collect()
    }

    #[test]
    fn the_mx_rule() {
        let own = vec!["relay.example.org".to_string(), "mx.example.org".to_string()];
        type Case<'a> = (&'a str, &'a [(u16, &'a str)], Option<SelfMx>);
        let cases: &[Case] = &[
            ("not listed: unchanged", &[(10, "mx1.other.test"), (20, "mx2.other.test")], None),
            ("only MX is us (a local name)", &[(10, "mx.example.org")], Some(SelfMx::Best)),
            ("only MX is us (the HELO name)", &[(10, "relay.example.org")], Some(SelfMx::Best)),
            ("case and trailing dot ignored", &[(10, "MX.Example.ORG.")], Some(SelfMx::Best)),
            ("us and a worse MX", &[(10, "mx.example.org"), (20, "backup.other.test")], Some(SelfMx::Best)),
            ("us and an equal MX: dropped too", &[(10, "mx.example.org"), (10, "peer.other.test")], Some(SelfMx::Best)),
            (
                "backup: only the better ones",
                &[(30, "worse.test"), (20, "mx.example.org"), (10, "primary.test"), (5, "first.test")],
                Some(SelfMx::Backup(recs(&[(10, "primary.test"), (5, "first.test")]))),
            ),
            (
                "listed twice: the best of our preferences counts",
                &[(40, "relay.example.org"), (20, "mx.example.org"), (10, "primary.test"), (30, "mid.test")],
                Some(SelfMx::Backup(recs(&[(10, "primary.test")]))),
            ),
            (
                "an equal-preference peer of a backup MX is dropped",
                &[(10, "primary.test"), (20, "mx.example.org"), (20, "peer.test")],
                Some(SelfMx::Backup(recs(&[(10, "primary.test")]))),
            ),
            ("a name that only contains ours is not ours", &[(10, "mx.example.org.evil.test")], None),
            ("no records", &[], None),
        ];
        for (what, records, want) in cases {
            let want = want.clone().unwrap_or_else(|| SelfMx::Unlisted(recs(records)));
            assert_eq!(drop_self(recs(records), &own), want, "{what}");
        }
    }

    #[test]
    fn a_peer_that_calls_itself_by_our_name() {
        let cases: &[(u16, &str, bool)] = &[
            (220, "relay.example.org ESMTP ready", true),
            (220, "RELAY.example.org. ESMTP", true),
            (220, "2.0.0 relay.example.org ESMTP (an enhanced code before the name)", true),
            (250, "relay.example.org Hello relay.example.org\nPIPELINING\nSIZE 1000", true),
            (220, "mx.other.test ESMTP relay.example.org", false),
            (250, "mx.other.test greets relay.example.org\nPIPELINING", false),
            (220, "relay.example.org.other.test ESMTP", false),
            (220, "", false),
        ];
        for (code, text, looped) in cases {
            let v = own_name_in(&Reply::parse(*code, text), "relay.example.org");
            assert_eq!(v.is_some(), *looped, "{code} {text:?}");
            if let Some(v) = v {
                assert_eq!((v.class, v.status.as_str()), (Class::Failed, "5.4.6"));
                assert!(v.detail.contains("loops back to myself"), "{v:?}");
            }
        }
        assert_eq!(loops_back("in.test").text(), "5.4.6 mail for in.test loops back to myself");
    }
}
