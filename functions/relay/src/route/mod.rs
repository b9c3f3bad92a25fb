//! Stage 1 of a job: where its mail goes. [`next_hop`] picks the kind of next hop — the
//! domain's route (`RELAY_ROUTES`), else the smarthost, else the domain's MX hosts — and
//! [`route`] resolves it through the [`dns`] edge into the ordered [`Target`]s one attempt tries
//! ([`host`] for hosts the operator named, [`mx`] with the [`loops`] rule for MX, as far as the
//! domain's MTA-STS policy allows: [`mta_sts`]), or a verdict for every recipient when there is
//! nowhere to go. [`destination`] names what those targets belong to, the unit the SMTP client
//! pools, limits and throttles its sessions by.

use std::net::SocketAddr;

use shared::Job;

use crate::config::{RelayConfig, Route, Smarthost};
use crate::vocab::{TlsRequirement, Verdict};

pub mod dns;
pub mod host;
pub mod loops;
pub mod mta_sts;
pub mod mx;

pub use dns::{HickoryResolver, Lookup, Resolver};
pub use mta_sts::MtaSts;

/// What kind of next hop a target is; the SMTP client treats only the smarthost differently
/// (verified TLS, AUTH, no plaintext fallback). A route is delivered to exactly like an MX host
/// without an MTA-STS policy (that is the target's [`TlsRequirement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hop {
    Mx,
    Route,
    Smarthost,
}

/// One address to connect to, with the name it was found under, its kind of hop, and what its
/// connection must prove. Sessions are only interchangeable between equal targets (a pooled
/// session opened without verification never serves a [`TlsRequirement::Verified`] target).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
    pub hop: Hop,
    pub tls: TlsRequirement,
}

impl Target {
    /// A target with no TLS requirement of its own.
    pub fn new(host: impl Into<String>, addr: SocketAddr, hop: Hop) -> Self {
        Self { host: host.into(), addr, hop, tls: TlsRequirement::Default }
    }
}

/// The destination `job`'s `targets` belong to, as the unit of `RELAY_DESTINATION_CONCURRENCY`,
/// session reuse and throttling: the smarthost or the route host (`host:port`, whatever domain the
/// mail is for, since all of it goes there), or for MX delivery the recipient domain, lowercased.
/// Two domains served by the same MX host are two destinations, as in Postfix (whose destination
/// concurrency is per next-hop domain); they share no sessions.
pub fn destination(job: &Job, targets: &[Target]) -> String {
    match targets.first() {
        Some(t) if t.hop != Hop::Mx => format!("{}:{}", t.host.to_ascii_lowercase(), t.addr.port()),
        _ => job.domain.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// The next hop of a destination domain, before any DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop<'c> {
    Route(&'c Route),
    Smarthost(&'c Smarthost),
    Mx,
}

/// The precedence, as Postfix's `transport_maps` over `relayhost`: a route wins for its domain,
/// the smarthost takes every other domain, and MX is used only when there is neither.
pub fn next_hop<'c>(domain: &str, cfg: &'c RelayConfig) -> NextHop<'c> {
    match (cfg.route_for(domain), &cfg.smarthost) {
        (Some(route), _) => NextHop::Route(route),
        (None, Some(sh)) => NextHop::Smarthost(sh),
        (None, None) => NextHop::Mx,
    }
}

/// The addresses to try for `job`, in order. MTA-STS applies to MX delivery only: a route or the
/// smarthost is the operator's choice of next hop, not the recipient domain's.
pub async fn route(
    job: &Job,
    cfg: &RelayConfig,
    resolver: &dyn Resolver,
    mta_sts: &MtaSts,
    now: i64,
) -> Result<Vec<Target>, Verdict> {
    match next_hop(&job.domain, cfg) {
        NextHop::Route(r) => host::targets(resolver, &r.host, r.port, Hop::Route).await,
        NextHop::Smarthost(sh) => host::targets(resolver, &sh.host, sh.port, Hop::Smarthost).await,
        NextHop::Mx => {
            if let Some(literal) = mx::literal(&job.domain, cfg.mx_port) {
                return literal;
            }
            let mut exchanges = mx::exchanges(resolver, &job.domain, &cfg.own_names).await?;
            let tls = match cfg.mta_sts {
                true => {
                    let (hosts, tls) = mta_sts.restrict(job, exchanges.hosts, resolver, now).await?;
                    exchanges.hosts = hosts;
                    tls
                }
                false => TlsRequirement::Default,
            };
            mx::addresses(resolver, &job.domain, exchanges, cfg.mx_port, tls).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn route_wins_then_smarthost_then_mx() {
        let routes = ("RELAY_ROUTES", "in.test=mail.internal:25,other.test=10.0.0.9:2525");
        let smarthost = ("RELAY_SMARTHOST", "smtp.provider.test:587");
        let both = testkit::config(&[routes, smarthost]);
        let only_routes = testkit::config(&[routes]);
        let only_smarthost = testkit::config(&[smarthost]);
        let neither = testkit::config(&[]);
        let kind = |h: NextHop| match h {
            NextHop::Route(r) => format!("route {}:{}", r.host, r.port),
            NextHop::Smarthost(s) => format!("smarthost {}", s.host),
            NextHop::Mx => "mx".into(),
        };
        let cases: &[(&RelayConfig, &str, &str)] = &[
            (&both, "in.test", "route mail.internal:25"),
            (&both, "IN.test.", "route mail.internal:25"),
            (&both, "other.test", "route 10.0.0.9:2525"),
            (&both, "elsewhere.test", "smarthost smtp.provider.test"),
            (&both, "sub.in.test", "smarthost smtp.provider.test"),
            (&only_routes, "in.test", "route mail.internal:25"),
            (&only_routes, "elsewhere.test", "mx"),
            (&only_smarthost, "in.test", "smarthost smtp.provider.test"),
            (&neither, "in.test", "mx"),
        ];
        for (cfg, domain, want) in cases {
            assert_eq!(kind(next_hop(domain, cfg)), *want, "{domain}");
        }
    }

    #[test]
    fn destinations_are_the_operator_named_host_or_the_recipient_domain() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let job = |domain: &str| testkit::job(domain, &["x@y"], 0);
        let smarthost = [Target::new("Smtp.Provider.test", addr("192.0.2.1:587"), Hop::Smarthost)];
        let route = [Target::new("mail.internal", addr("10.0.0.9:2525"), Hop::Route)];
        let mx = [Target::new("mx1.b.test", addr("192.0.2.2:25"), Hop::Mx)];
        let cases: &[(&str, &[Target], &str)] = &[
            ("a.test", &smarthost, "smtp.provider.test:587"),
            ("b.test", &smarthost, "smtp.provider.test:587"), // every domain shares the smarthost
            ("in.test", &route, "mail.internal:2525"),
            ("B.Test.", &mx, "b.test"),
            ("c.test", &mx, "c.test"), // same MX host, another destination
            ("d.test", &[], "d.test"),
        ];
        for (domain, targets, want) in cases {
            assert_eq!(destination(&job(domain), targets), *want, "{domain}");
        }
    }

    #[tokio::test]
    async fn a_routed_domain_is_not_looked_up_by_mx() {
        let dns = testkit::StaticDns::default()
            .mx("in.test", Lookup::Found(vec![(10, "relay.test".into())]))
            .ips("mail.internal", Lookup::Found(vec!["192.0.2.7".parse().unwrap()]));
        let cfg = testkit::config(&[("RELAY_ROUTES", "in.test=mail.internal:2525")]);
        let sts = testkit::mta_sts(&Default::default(), &Default::default());
        let got = route(&testkit::job("in.test", &["bob@in.test"], 0), &cfg, &dns, &sts, 0).await.unwrap();
        assert_eq!(got, [Target::new("mail.internal", "192.0.2.7:2525".parse().unwrap(), Hop::Route)]);
        assert_eq!(dns.asked(), ["A/AAAA mail.internal"], "no MX query for a routed domain");

        // The same domain without the route: its only MX is this relay (RELAY_HELO_NAME).
        let looped = route(&testkit::job("in.test", &["bob@in.test"], 0), &testkit::config(&[]), &dns, &sts, 0).await;
        assert_eq!(looped.unwrap_err().status, "5.4.6");
    }
}
