//! Relay policy: who may send to whom (this file), as whom ([`senders`], with the credentials of
//! [`auth`], and an address that keeps guessing passwords locked out by [`lockout`]), to which
//! existing recipients ([`recipients`]) and how much ([`rate`]); [`tables`] holds the files
//! re-read on SIGHUP; [`addresses`] is the lookup both tables share; [`feedback`] decides on
//! recipients in the feedback domain.
//!
//! Recipients in `RELAY_DOMAINS` are accepted from anyone; any recipient is accepted from a
//! client in `RELAY_NETWORKS` or one that authenticated ("trusted"); everything else is
//! `554 5.7.1`. Sender-specified routing in the local part (`%`, `!`, a quoted `@`) is refused
//! from untrusted clients, as Postfix's `allow_untrusted_routing = no` does, so none of the old
//! tricks opens the relay. The null recipient `<postmaster>` is always accepted.
//!
//! When an `INGRESS_RECIPIENTS_FILE` is loaded, a recipient in a relay domain must also be in
//! it (`550 5.1.1`), whoever the client is — trusted clients included, since mail they send to
//! a non-existent local user would only turn into a bounce. Recipients outside the relay
//! domains are not looked up (relay policy alone governs them), nor is `<postmaster>`.

pub mod addresses;
pub mod auth;
pub mod feedback;
pub mod lockout;
pub mod rate;
pub mod recipients;
pub mod senders;
pub mod tables;

use std::net::IpAddr;

use ipnet::IpNet;
use shared::Reply;

use crate::session::replies;
use recipients::RecipientTable;

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub relay_domains: Vec<String>,
    pub relay_networks: Vec<IpNet>,
    pub postmaster: String,
}

impl Policy {
    /// A client that may relay anywhere.
    pub fn is_trusted(&self, ip: IpAddr, authenticated: bool) -> bool {
        authenticated || self.relay_networks.iter().any(|n| n.contains(&canonical(ip)))
    }

    /// Decide on a forward-path as smtp-proto parsed it (`""` means `<postmaster>`), with the
    /// relay recipient table when one is loaded; on acceptance returns the address to deliver to.
    pub fn check_rcpt(
        &self,
        address: &str,
        trusted: bool,
        recipients: Option<&RecipientTable>,
    ) -> Result<String, Reply> {
        if address.is_empty() {
            return Ok(self.postmaster.clone());
        }
        let (local, domain) = address.rsplit_once('@').ok_or_else(|| replies::bad_address(address))?;
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if local.is_empty() || domain.is_empty() || !valid_domain(&domain) {
            return Err(replies::bad_address(address));
        }
        if local.eq_ignore_ascii_case("postmaster") && self.is_local(&domain) {
            return Ok(self.postmaster.clone());
        }
        if !trusted {
            if local.contains(['%', '!', '@']) {
                return Err(replies::routing_denied());
            }
            if !self.relay_domains.contains(&domain) {
                return Err(replies::relay_denied());
            }
        }
        if let Some(table) = recipients
            && self.relay_domains.contains(&domain)
            && !table.accepts(local, &domain)
        {
            return Err(replies::unknown_recipient(address));
        }
        Ok(format!("{}@{domain}", quote_local(local)))
    }

    fn is_local(&self, domain: &str) -> bool {
        self.postmaster.rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// A domain we can route: dot-separated labels of letters, digits, hyphens or UTF-8 (RFC 6531).
pub(crate) fn valid_domain(d: &str) -> bool {
    d.len() <= 255
        && d.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// The local part as it must appear on the wire: a dot-atom as-is, anything else quoted.
pub fn quote_local(local: &str) -> String {
    let atext = |c: char| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    let dot_atom = !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c == '.' || atext(c));
    if dot_atom {
        return local.to_string();
    }
    let mut q = String::with_capacity(local.len() + 2);
    q.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            relay_domains: vec!["example.test".into()],
            relay_networks: vec!["10.0.0.0/8".parse().unwrap()],
            postmaster: "postmaster@mx.example.test".into(),
        }
    }

    #[test]
    fn relay_table() {
        let p = policy();
        let denied = replies::relay_denied();
        let routing = replies::routing_denied();
        let cases: &[(&str, bool, Result<&str, &Reply>)] = &[
            ("bob@example.test", false, Ok("bob@example.test")),
            ("bob@EXAMPLE.test.", false, Ok("bob@example.test")),
            ("bob@other.test", false, Err(&denied)),
            ("bob@other.test", true, Ok("bob@other.test")),
            ("", false, Ok("postmaster@mx.example.test")),
            ("PostMaster@mx.example.test", false, Ok("postmaster@mx.example.test")),
            // Percent hack, bang path and quoted @ never open the relay.
            ("bob%other.test@example.test", false, Err(&routing)),
            ("other.test!bob@example.test", false, Err(&routing)),
            ("bob@other.test@example.test", false, Err(&routing)),
            ("bob%other.test@example.test", true, Ok("bob%other.test@example.test")),
            ("john doe@example.test", false, Ok("\"john doe\"@example.test")),
        ];
        for (addr, trusted, want) in cases {
            let got = p.check_rcpt(addr, *trusted, None);
            match want {
                Ok(a) => assert_eq!(got.as_deref(), Ok(*a), "{addr}"),
                Err(r) => assert_eq!(got.unwrap_err(), **r, "{addr}"),
            }
        }
    }

    #[test]
    fn trusted_networks_and_auth() {
        let p = policy();
        assert!(p.is_trusted("10.1.2.3".parse().unwrap(), false));
        assert!(p.is_trusted("::ffff:10.1.2.3".parse().unwrap(), false));
        assert!(!p.is_trusted("192.0.2.1".parse().unwrap(), false));
        assert!(p.is_trusted("192.0.2.1".parse().unwrap(), true));
    }

    #[test]
    fn bad_domains_are_syntax_errors() {
        let p = policy();
        assert_eq!(p.check_rcpt("bob@[127.0.0.1]", true, None).unwrap_err().code, 501);
        assert_eq!(p.check_rcpt("bob@-x.test", true, None).unwrap_err().code, 501);
    }

    #[test]
    fn recipient_table_governs_relay_domains_only() {
        let p = Policy {
            relay_domains: vec!["example.test".into(), "catchall.test".into(), "mx.example.test".into()],
            ..policy()
        };
        let table = RecipientTable::parse("bob@example.test\n@catchall.test\n").unwrap();
        let unknown = |a: &str| {
            Err(format!("550 5.1.1 <{a}>: Recipient address rejected: User unknown in relay recipient table"))
        };
        let cases: &[(&str, bool, Result<&str, String>)] = &[
            ("bob@example.test", false, Ok("bob@example.test")),
            ("bob@Example.TEST", false, Ok("bob@example.test")),
            ("bob+lists@example.test", false, Ok("bob+lists@example.test")),
            ("Bob@example.test", false, unknown("Bob@example.test")),
            ("carol@example.test", false, unknown("carol@example.test")),
            // Trusted clients (RELAY_NETWORKS, AUTH) are checked too.
            ("carol@example.test", true, unknown("carol@example.test")),
            ("anyone@catchall.test", false, Ok("anyone@catchall.test")),
            // Outside the relay domains: relay policy as before, no lookup.
            ("carol@other.test", true, Ok("carol@other.test")),
            ("carol@other.test", false, Err("554 5.7.1 Relay access denied".into())),
            // <postmaster> and postmaster@<our host> as before, listed or not.
            ("", false, Ok("postmaster@mx.example.test")),
            ("postmaster@mx.example.test", false, Ok("postmaster@mx.example.test")),
        ];
        for (addr, trusted, want) in cases {
            let got = p.check_rcpt(addr, *trusted, Some(&table)).map_err(|r| r.one_line());
            assert_eq!(got, want.clone().map(String::from), "{addr} trusted={trusted}");
        }
    }
}
