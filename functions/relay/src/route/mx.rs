//! Where mail for a domain goes by MX (RFC 5321 §5.1, RFC 7505).
//!
//! [`targets`] turns the resolver's answers into the ordered list of addresses one attempt tries:
//! MX by preference with equal preferences shuffled, the domain itself as implicit MX when it has
//! no MX records, NXDOMAIN and null MX as permanent failures, anything else that goes wrong as
//! temporary. Before the addresses are looked up, the [`loops`](super::loops) rule drops this
//! relay and every MX no better than it: a domain whose best MX is us bounces (`5.4.6`); as a
//! backup MX we try only the better hosts, and when none of them has an address the mail waits
//! (`4.4.4`, Postfix's "unable to find primary relay") instead of bouncing.
//!
//! It is [`exchanges`] (host names) then [`addresses`], so that the route stage can drop hosts in
//! between (an MTA-STS policy) before the address limit is spent on them.

use std::net::IpAddr;

use rand::Rng;
use rand::seq::SliceRandom;

use super::dns::{Lookup, Resolver};
use super::loops::{self, SelfMx};
use super::{Hop, Target};
use crate::vocab::TlsRequirement;
use crate::vocab::Verdict;

/// Addresses tried per attempt, across all hosts (Postfix's `smtp_mx_address_limit` is 5).
pub const MAX_ADDRESSES: usize = 6;

/// Order MX exchanges: ascending preference, equal preferences in random order.
pub fn order_mx(mut records: Vec<(u16, String)>, rng: &mut impl Rng) -> Vec<String> {
    records.shuffle(rng);
    records.sort_by_key(|(pref, _)| *pref); // stable: the shuffle survives within a preference
    let mut hosts: Vec<String> = Vec::with_capacity(records.len());
    for (_, h) in records {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    hosts
}

/// The addresses to try for `domain`, or the verdict for every recipient when there are none.
/// `own_names` are the names this relay is known by ([`loops`]).
pub async fn targets(
    resolver: &dyn Resolver,
    domain: &str,
    port: u16,
    own_names: &[String],
) -> Result<Vec<Target>, Verdict> {
    if let Some(literal) = literal(domain, port) {
        return literal;
    }
    let exchanges = exchanges(resolver, domain, own_names).await?;
    addresses(resolver, domain, exchanges, port, TlsRequirement::Default).await
}

/// An address literal (`user@[192.0.2.1]`, `user@[IPv6:2001:db8::1]`) names the host itself:
/// its one target, or a permanent failure when it is no address; `None` for a domain name.
pub fn literal(domain: &str, port: u16) -> Option<Result<Vec<Target>, Verdict>> {
    let literal = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']'))?;
    let ip = literal.get(..5).filter(|p| p.eq_ignore_ascii_case("IPv6:")).map_or(literal, |_| &literal[5..]);
    Some(match ip.parse::<IpAddr>() {
        Ok(ip) => Ok(vec![Target::new(domain, (ip, port).into(), Hop::Mx)]),
        Err(_) => Err(Verdict::failed("5.1.2", format!("{domain} is not an address literal"))),
    })
}

/// The mail exchangers of a domain to try, in order, after the loop rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchanges {
    pub hosts: Vec<String>,
    /// This relay is a backup MX of the domain: the hosts are the better ones.
    pub backup: bool,
}

/// The MX hosts of `domain` by preference (the domain itself when it has no MX records), this
/// relay and every host no better than it dropped.
pub async fn exchanges(resolver: &dyn Resolver, domain: &str, own_names: &[String]) -> Result<Exchanges, Verdict> {
    let records = match resolver.mx(domain).await {
        Lookup::Found(records) if records.len() == 1 && records[0].1.is_empty() => {
            return Err(Verdict::failed("5.1.10", format!("{domain} does not accept mail (null MX, RFC 7505)")));
        }
        // A null MX among real ones is a misconfiguration; the real ones still count.
        Lookup::Found(records) => records.into_iter().filter(|(_, h)| !h.is_empty()).collect(),
        // The implicit MX (RFC 5321 §5.1) counts as preference 0 for the loop rule too.
        Lookup::NoData => vec![(0, domain.to_string())],
        Lookup::NxDomain => return Err(Verdict::failed("5.1.2", format!("domain {domain} does not exist (NXDOMAIN)"))),
        Lookup::Failed(e) => return Err(Verdict::deferred("4.4.3", format!("MX lookup for {domain} failed: {e}"))),
    };
    let (records, backup) = match loops::drop_self(records, own_names) {
        SelfMx::Unlisted(records) => (records, false),
        SelfMx::Backup(better) => (better, true),
        SelfMx::Best => return Err(loops::loops_back(domain)),
    };
    Ok(Exchanges { hosts: order_mx(records, &mut rand::rng()), backup })
}

/// The addresses of the exchangers in order, at most [`MAX_ADDRESSES`], each target with `tls`.
pub async fn addresses(
    resolver: &dyn Resolver,
    domain: &str,
    exchanges: Exchanges,
    port: u16,
    tls: TlsRequirement,
) -> Result<Vec<Target>, Verdict> {
    let mut out = Vec::new();
    let mut temporary = None;
    for host in exchanges.hosts {
        match resolver.ips(&host).await {
            Lookup::Found(ips) => out.extend(
                ips.into_iter().map(|ip| Target { tls, ..Target::new(host.clone(), (ip, port).into(), Hop::Mx) }),
            ),
            Lookup::Failed(e) => temporary = Some(format!("address lookup for {host} failed: {e}")),
            Lookup::NoData | Lookup::NxDomain => {}
        }
        if out.len() >= MAX_ADDRESSES {
            break;
        }
    }
    out.truncate(MAX_ADDRESSES);
    match (out.is_empty(), temporary) {
        (false, _) => Ok(out),
        (true, Some(e)) => Err(Verdict::deferred("4.4.3", e)),
        // As a backup MX, holding the mail is our job while the primaries are unreachable.
        (true, None) if exchanges.backup => {
            Err(Verdict::deferred("4.4.4", format!("unable to find primary relay for {domain}")))
        }
        (true, None) => Err(Verdict::failed("5.4.4", format!("no address for any mail exchanger of {domain}"))),
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::testkit::StaticDns;
    use crate::vocab::Class;

    #[test]
    fn order_sorts_by_preference_and_shuffles_ties() {
        let recs = vec![(20, "c".to_string()), (10, "a".to_string()), (10, "b".to_string()), (30, "d".to_string())];
        let mut seen_first = std::collections::HashSet::new();
        for seed in 0..50 {
            let order = order_mx(recs.clone(), &mut rand::rngs::StdRng::seed_from_u64(seed));
            assert_eq!(&order[2..], ["c", "d"]);
            seen_first.insert(order[0].clone());
        }
        assert_eq!(seen_first.len(), 2, "equal preferences must be shuffled");
    }

    fn table() -> StaticDns {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mx = |list: &[(u16, &str)]| Lookup::Found(list.iter().map(|(p, h)| (*p, h.to_string())).collect());
        StaticDns::default()
            .mx("two.test", mx(&[(20, "mx2.two.test"), (10, "mx1.two.test")]))
            .mx("null.test", mx(&[(0, "")]))
            .mx("implicit.test", Lookup::NoData)
            .mx("servfail.test", Lookup::Failed("SERVFAIL".into()))
            .mx("dangling.test", mx(&[(10, "nowhere.test")]))
            .mx("flaky.test", mx(&[(10, "flaky-host.test")]))
            // Loops: this relay is relay.test (RELAY_HELO_NAME) and mx.relay.test (a local name).
            .mx("self.test", mx(&[(10, "mx.relay.test"), (20, "mx2.two.test")]))
            .mx("backup.test", mx(&[(30, "worse.test"), (20, "Relay.Test."), (10, "mx2.two.test")]))
            .mx("backup-dangling.test", mx(&[(20, "relay.test"), (10, "nowhere.test")]))
            .mx("relay.test", Lookup::NoData)
            .ips("mx1.two.test", Lookup::Found(vec![ip("2001:db8::1"), ip("192.0.2.1")]))
            .ips("mx2.two.test", Lookup::Found(vec![ip("192.0.2.2")]))
            .ips("worse.test", Lookup::Found(vec![ip("192.0.2.3")]))
            .ips("implicit.test", Lookup::Found(vec![ip("192.0.2.9")]))
            .ips("relay.test", Lookup::Found(vec![ip("192.0.2.10")]))
            .ips("mx.relay.test", Lookup::Found(vec![ip("192.0.2.10")]))
            .ips("flaky-host.test", Lookup::Failed("timeout".into()))
    }

    const OWN: &[&str] = &["relay.test", "mx.relay.test"];

    async fn addrs(t: &StaticDns, domain: &str, port: u16) -> Vec<String> {
        let own: Vec<String> = OWN.iter().map(|s| s.to_string()).collect();
        targets(t, domain, port, &own).await.unwrap().iter().map(|t| format!("{} {}", t.host, t.addr)).collect()
    }

    #[tokio::test]
    async fn routes() {
        let t = table();
        assert_eq!(
            addrs(&t, "two.test", 2525).await,
            ["mx1.two.test [2001:db8::1]:2525", "mx1.two.test 192.0.2.1:2525", "mx2.two.test 192.0.2.2:2525"]
        );
        let implicit = targets(&t, "implicit.test", 25, &[]).await.unwrap();
        assert_eq!(implicit, vec![Target::new("implicit.test", "192.0.2.9:25".parse().unwrap(), Hop::Mx)]);

        let lit = targets(&t, "[IPv6:2001:db8::5]", 25, &[]).await.unwrap();
        assert_eq!(lit[0].addr, "[2001:db8::5]:25".parse().unwrap());
        assert_eq!(targets(&t, "[192.0.2.5]", 26, &[]).await.unwrap()[0].addr, "192.0.2.5:26".parse().unwrap());

        // Backup MX: only the better host is looked up and tried; ours and the worse one are not.
        assert_eq!(addrs(&t, "backup.test", 25).await, ["mx2.two.test 192.0.2.2:25"]);
        assert!(!t.asked().iter().any(|q| q.contains("worse.test") || q.contains("relay.test")), "{:?}", t.asked());
    }

    #[tokio::test]
    async fn verdicts_when_there_is_nowhere_to_go() {
        let t = table();
        let own: Vec<String> = OWN.iter().map(|s| s.to_string()).collect();
        let cases = [
            ("[300.1.1.1]", Class::Failed, "5.1.2"),
            ("null.test", Class::Failed, "5.1.10"),
            ("nx.test", Class::Failed, "5.1.2"),
            ("servfail.test", Class::Deferred, "4.4.3"),
            ("dangling.test", Class::Failed, "5.4.4"),
            ("flaky.test", Class::Deferred, "4.4.3"),
            // Our own best MX (a worse one exists and must not be used), and the implicit MX
            // of a domain named like us.
            ("self.test", Class::Failed, "5.4.6"),
            ("relay.test", Class::Failed, "5.4.6"),
            // Backup MX whose primary has no address: wait for it, do not bounce.
            ("backup-dangling.test", Class::Deferred, "4.4.4"),
        ];
        for (domain, class, status) in cases {
            let v = targets(&t, domain, 25, &own).await.unwrap_err();
            assert_eq!((v.class, v.status.as_str()), (class, status), "{domain}: {v:?}");
        }
        let v = targets(&t, "self.test", 25, &own).await.unwrap_err();
        assert_eq!(v.text(), "5.4.6 mail for self.test loops back to myself");
        // Without our names the same records are an ordinary domain.
        assert_eq!(targets(&t, "self.test", 25, &[]).await.unwrap()[0].host, "mx.relay.test");
    }
}
