//! Where mail for a domain goes by MX (RFC 5321 §5.1, RFC 7505), and a smarthost's addresses.
//!
//! [`targets`] turns the resolver's answers into the ordered list of addresses one attempt tries:
//! MX by preference with equal preferences shuffled, the domain itself as implicit MX when it has
//! no MX records, NXDOMAIN and null MX as permanent failures, anything else that goes wrong as
//! temporary. It is [`exchanges`] (host names) then [`addresses`], so that the route stage can
//! drop hosts in between (an MTA-STS policy) before the address limit is spent on them.

use std::net::IpAddr;

use rand::Rng;
use rand::seq::SliceRandom;

use super::dns::{Lookup, Resolver};
use super::{Target, TlsRequirement};
use crate::decide::outcome::Verdict;

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
pub async fn targets(resolver: &dyn Resolver, domain: &str, port: u16) -> Result<Vec<Target>, Verdict> {
    if let Some(literal) = literal(domain, port) {
        return literal;
    }
    let hosts = exchanges(resolver, domain).await?;
    addresses(resolver, domain, hosts, port, TlsRequirement::Default).await
}

/// An address literal (`user@[192.0.2.1]`, `user@[IPv6:2001:db8::1]`) names the host itself:
/// its one target, or a permanent failure when it is no address; `None` for a domain name.
pub fn literal(domain: &str, port: u16) -> Option<Result<Vec<Target>, Verdict>> {
    let literal = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']'))?;
    let ip = literal.get(..5).filter(|p| p.eq_ignore_ascii_case("IPv6:")).map_or(literal, |_| &literal[5..]);
    Some(match ip.parse::<IpAddr>() {
        Ok(ip) => Ok(vec![Target::new(domain, (ip, port).into())]),
        Err(_) => Err(Verdict::failed("5.1.2", format!("{domain} is not an address literal"))),
    })
}

/// The mail exchangers of `domain` in the order to try them: MX hosts by preference, or the
/// domain itself when it has no MX records.
pub async fn exchanges(resolver: &dyn Resolver, domain: &str) -> Result<Vec<String>, Verdict> {
    match resolver.mx(domain).await {
        Lookup::Found(records) if records.len() == 1 && records[0].1.is_empty() => {
            Err(Verdict::failed("5.1.10", format!("{domain} does not accept mail (null MX, RFC 7505)")))
        }
        // A null MX among real ones is a misconfiguration; the real ones still count.
        Lookup::Found(records) => {
            Ok(order_mx(records.into_iter().filter(|(_, h)| !h.is_empty()).collect(), &mut rand::rng()))
        }
        Lookup::NoData => Ok(vec![domain.to_string()]),
        Lookup::NxDomain => Err(Verdict::failed("5.1.2", format!("domain {domain} does not exist (NXDOMAIN)"))),
        Lookup::Failed(e) => Err(Verdict::deferred("4.4.3", format!("MX lookup for {domain} failed: {e}"))),
    }
}

/// The addresses of `hosts` in order, at most [`MAX_ADDRESSES`], each target with `tls`.
pub async fn addresses(
    resolver: &dyn Resolver,
    domain: &str,
    hosts: Vec<String>,
    port: u16,
    tls: TlsRequirement,
) -> Result<Vec<Target>, Verdict> {
    let mut out = Vec::new();
    let mut temporary = None;
    for host in hosts {
        match resolver.ips(&host).await {
            Lookup::Found(ips) => {
                out.extend(ips.into_iter().map(|ip| Target { host: host.clone(), addr: (ip, port).into(), tls }))
            }
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
        (true, None) => Err(Verdict::failed("5.4.4", format!("no address for any mail exchanger of {domain}"))),
    }
}

/// The smarthost's addresses (a literal IP, or a name looked up like an MX host).
pub async fn smarthost_targets(resolver: &dyn Resolver, host: &str, port: u16) -> Result<Vec<Target>, Verdict> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![Target::new(host, (ip, port).into())]);
    }
    match resolver.ips(host).await {
        Lookup::Found(ips) => Ok(ips.into_iter().map(|ip| Target::new(host, (ip, port).into())).collect()),
        // A smarthost that does not resolve is an operator's problem: keep the mail.
        other => Err(Verdict::deferred("4.4.3", format!("smarthost {host} does not resolve: {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::SeedableRng;

    use async_trait::async_trait;

    use super::*;
    use crate::decide::outcome::Class;

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

    struct Table {
        mx: HashMap<&'static str, Lookup<Vec<(u16, String)>>>,
        ips: HashMap<&'static str, Lookup<Vec<IpAddr>>>,
    }

    #[async_trait]
    impl Resolver for Table {
        async fn mx(&self, d: &str) -> Lookup<Vec<(u16, String)>> {
            self.mx.get(d).cloned().unwrap_or(Lookup::NxDomain)
        }
        async fn ips(&self, h: &str) -> Lookup<Vec<IpAddr>> {
            self.ips.get(h).cloned().unwrap_or(Lookup::NxDomain)
        }
    }

    fn table() -> Table {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        Table {
            mx: HashMap::from([
                ("two.test", Lookup::Found(vec![(20, "mx2.two.test".into()), (10, "mx1.two.test".into())])),
                ("null.test", Lookup::Found(vec![(0, String::new())])),
                ("implicit.test", Lookup::NoData),
                ("servfail.test", Lookup::Failed("SERVFAIL".into())),
                ("dangling.test", Lookup::Found(vec![(10, "nowhere.test".into())])),
                ("flaky.test", Lookup::Found(vec![(10, "flaky-host.test".into())])),
            ]),
            ips: HashMap::from([
                ("mx1.two.test", Lookup::Found(vec![ip("2001:db8::1"), ip("192.0.2.1")])),
                ("mx2.two.test", Lookup::Found(vec![ip("192.0.2.2")])),
                ("implicit.test", Lookup::Found(vec![ip("192.0.2.9")])),
                ("flaky-host.test", Lookup::Failed("timeout".into())),
            ]),
        }
    }

    #[tokio::test]
    async fn routes() {
        let t = table();
        let got = targets(&t, "two.test", 2525).await.unwrap();
        let addrs: Vec<String> = got.iter().map(|t| format!("{} {}", t.host, t.addr)).collect();
        assert_eq!(
            addrs,
            ["mx1.two.test [2001:db8::1]:2525", "mx1.two.test 192.0.2.1:2525", "mx2.two.test 192.0.2.2:2525"]
        );

        let implicit = targets(&t, "implicit.test", 25).await.unwrap();
        assert_eq!(implicit, vec![Target::new("implicit.test", "192.0.2.9:25".parse().unwrap())]);

        let lit = targets(&t, "[IPv6:2001:db8::5]", 25).await.unwrap();
        assert_eq!(lit[0].addr, "[2001:db8::5]:25".parse().unwrap());
        assert_eq!(targets(&t, "[192.0.2.5]", 26).await.unwrap()[0].addr, "192.0.2.5:26".parse().unwrap());

        let cases = [
            ("[300.1.1.1]", Class::Failed, "5.1.2"),
            ("null.test", Class::Failed, "5.1.10"),
            ("nx.test", Class::Failed, "5.1.2"),
            ("servfail.test", Class::Deferred, "4.4.3"),
            ("dangling.test", Class::Failed, "5.4.4"),
            ("flaky.test", Class::Deferred, "4.4.3"),
        ];
        for (domain, class, status) in cases {
            let v = targets(&t, domain, 25).await.unwrap_err();
            assert_eq!((v.class, v.status.as_str()), (class, status), "{domain}: {v:?}");
        }
    }

    #[tokio::test]
    async fn smarthost_literal_and_name() {
        let t = table();
        let lit = smarthost_targets(&t, "127.0.0.1", 465).await.unwrap();
        assert_eq!(lit[0].addr, "127.0.0.1:465".parse().unwrap());
        assert_eq!(smarthost_targets(&t, "mx2.two.test", 587).await.unwrap()[0].addr, "192.0.2.2:587".parse().unwrap());
        assert_eq!(smarthost_targets(&t, "gone.test", 587).await.unwrap_err().class, Class::Deferred);
    }
}
