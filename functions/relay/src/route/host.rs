//! The addresses of a host the operator named — a route's host (`RELAY_ROUTES`) or the
//! smarthost — as Postfix treats `[host]:port`: no MX lookup, an IP address used as it is, a name
//! looked up by A/AAAA. A name that gives no address is a deferral, never a bounce: the
//! operator's configuration is wrong or their DNS is down, and the mail waits until it is fixed.

use std::net::IpAddr;

use super::dns::{Lookup, Resolver};
use super::{Hop, Target};
use crate::vocab::Verdict;

/// The addresses of `host`, each on `port`, tagged with `hop`.
pub async fn targets(resolver: &dyn Resolver, host: &str, port: u16, hop: Hop) -> Result<Vec<Target>, Verdict> {
    let target = |ip: IpAddr| Target::new(host, (ip, port).into(), hop);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![target(ip)]);
    }
    let what = if hop == Hop::Smarthost { "smarthost" } else { "route host" };
    match resolver.ips(host).await {
        Lookup::Found(ips) => Ok(ips.into_iter().map(target).collect()),
        Lookup::NoData => Err(Verdict::deferred("4.4.3", format!("{what} {host} has no A or AAAA record"))),
        Lookup::NxDomain => Err(Verdict::deferred("4.4.3", format!("{what} {host} does not exist (NXDOMAIN)"))),
        Lookup::Failed(e) => Err(Verdict::deferred("4.4.3", format!("address lookup for {what} {host} failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::StaticDns;
    use crate::vocab::Class;

    #[tokio::test]
    async fn literals_names_and_deferrals() {
        let dns = StaticDns::default()
            .ips("mail.internal", Lookup::Found(vec!["10.0.0.5".parse().unwrap(), "2001:db8::5".parse().unwrap()]))
            .ips("nodata.internal", Lookup::NoData)
            .ips("flaky.internal", Lookup::Failed("SERVFAIL".into()));
        let lit = targets(&dns, "127.0.0.1", 465, Hop::Smarthost).await.unwrap();
        assert_eq!(lit, [Target::new("127.0.0.1", "127.0.0.1:465".parse().unwrap(), Hop::Smarthost)]);
        assert_eq!(
            targets(&dns, "2001:db8::9", 25, Hop::Route).await.unwrap()[0].addr,
            "[2001:db8::9]:25".parse().unwrap()
        );
        assert!(dns.asked().is_empty(), "address literals need no DNS");

        let named: Vec<String> = targets(&dns, "mail.internal", 2525, Hop::Route)
            .await
            .unwrap()
            .iter()
            .map(|t| t.addr.to_string())
            .collect();
        assert_eq!(named, ["10.0.0.5:2525", "[2001:db8::5]:2525"]);
        assert_eq!(dns.asked(), ["A/AAAA mail.internal"], "A/AAAA only, no MX");

        for (host, says) in [
            ("gone.internal", "route host gone.internal does not exist (NXDOMAIN)"),
            ("nodata.internal", "route host nodata.internal has no A or AAAA record"),
            ("flaky.internal", "address lookup for route host flaky.internal failed: SERVFAIL"),
        ] {
            let v = targets(&dns, host, 25, Hop::Route).await.unwrap_err();
            assert_eq!((v.class, v.status.as_str(), v.detail.as_str()), (Class::Deferred, "4.4.3", says));
        }
        let v = targets(&dns, "gone.internal", 587, Hop::Smarthost).await.unwrap_err();
        assert_eq!(
            (v.class, v.detail.as_str()),
            (Class::Deferred, "smarthost gone.internal does not exist (NXDOMAIN)")
        );
    }
}
