//! DNS blocklists, postscreen's model: each zone of `INGRESS_DNSBL` is asked about the client's
//! address (in parallel), the weights of the zones that list it are summed, and a sum at or above
//! `INGRESS_DNSBL_THRESHOLD` makes the client blocklisted.
//!
//! The pure part — the zone list, the query name, what an answer means, the sum — is here with
//! its table tests; the question itself goes through the [`Blocklists`] trait (hickory in
//! production, whose cache keeps each answer for its TTL). An answer in 127.255.255.0/24 is the
//! list telling us it refused the query (Spamhaus answers 127.255.255.254 to queries that come
//! through public or cloud resolvers): it is logged as an error and never counts as a listing. So
//! is any answer outside 127.0.0.0/8, and a lookup that failed or ran out of time.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use async_trait::async_trait;

/// One zone of `INGRESS_DNSBL` and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Lower case, no trailing dot.
    pub name: String,
    pub weight: i32,
}

/// Parse `zone[*weight],…` (weight default 1; a negative weight allow-lists, as in postscreen).
pub fn parse_zones(items: &[String]) -> Result<Vec<Zone>, String> {
    items
        .iter()
        .map(|item| {
            let (name, weight) = match item.split_once('*') {
                Some((n, w)) => {
                    (n, w.trim().parse::<i32>().map_err(|_| format!("{item:?}: weight {w:?} is not an integer"))?)
                }
                None => (item.as_str(), 1),
            };
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = !name.is_empty()
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !valid {
                return Err(format!("{item:?}: {name:?} is not a DNS zone"));
            }
            Ok(Zone { name, weight })
        })
        .collect()
}

/// The name to ask: reversed IPv4 octets, or the 32 reversed nibbles of an IPv6 address, then
/// the zone. An IPv4-mapped IPv6 address is asked as the IPv4 address it is.
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(64 + zone.len() + 1);
            for byte in v6.octets().iter().rev() {
                name.push(char::from_digit((byte & 0xf) as u32, 16).expect("nibble"));
                name.push('.');
                name.push(char::from_digit((byte >> 4) as u32, 16).expect("nibble"));
                name.push('.');
            }
            name.push_str(zone);
            name.push('.');
            name
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The A records a zone returned for one question, reduced to what they mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// NXDOMAIN or NODATA: not listed.
    NotListed,
    /// Listed, with the return codes (127.0.0.x) the zone gave.
    Listed(Vec<Ipv4Addr>),
    /// The zone refused the query or the lookup failed: logged, never a listing.
    Error(String),
}

/// What a lookup returned before it is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A records (possibly none: NODATA).
    Records(Vec<Ipv4Addr>),
    NxDomain,
    Failed(String),
}

/// Judge a lookup: 127.255.255.0/24 is the list's error range, anything outside 127.0.0.0/8 is
/// not a list answer (a wildcard or hijacking resolver); both are errors, never listings.
pub fn classify(lookup: Lookup) -> Answer {
    match lookup {
        Lookup::NxDomain => Answer::NotListed,
        Lookup::Failed(e) => Answer::Error(e),
        Lookup::Records(rs) if rs.is_empty() => Answer::NotListed,
        Lookup::Records(rs) => {
            if let Some(bad) = rs.iter().find(|a| a.octets()[..3] == [127, 255, 255]) {
                return Answer::Error(format!("the list refused the query (answer {bad})"));
            }
            if let Some(bad) = rs.iter().find(|a| a.octets()[0] != 127) {
                return Answer::Error(format!("answer {bad} is outside 127.0.0.0/8"));
            }
            Answer::Listed(rs)
        }
    }
}

/// The outcome over every zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The listed weights summed.
    pub score: i32,
    /// The zones that list the client, heaviest first.
    pub listed_by: Vec<String>,
    /// At or above the threshold.
    pub blocked: bool,
}

/// Sum the weights of the zones that list the client and compare with `threshold`.
pub fn judge(answers: &[(Zone, Answer)], threshold: i32) -> Verdict {
    let mut listed: Vec<&Zone> =
        answers.iter().filter(|(_, a)| matches!(a, Answer::Listed(_))).map(|(z, _)| z).collect();
    let score = listed.iter().map(|z| z.weight).sum();
    listed.sort_by_key(|z| std::cmp::Reverse(z.weight));
    let listed_by: Vec<String> = listed.iter().map(|z| z.name.clone()).collect();
    Verdict { blocked: !listed_by.is_empty() && score >= threshold, score, listed_by }
}

/// The A-record question blocklists are asked.
#[async_trait]
pub trait Blocklists: Send + Sync {
    /// A records of the fully-qualified `name`.
    async fn a(&self, name: &str) -> Lookup;
}

/// Ask every zone about `ip` in parallel, each within `deadline`, and judge the answers. Errors
/// are logged here, with the zone and the client.
pub async fn check(dns: &dyn Blocklists, zones: &[Zone], threshold: i32, ip: IpAddr, deadline: Duration) -> Verdict {
    let lookups = zones.iter().map(|z| async move {
        let name = query_name(ip, &z.name);
        let lookup = match tokio::time::timeout(deadline, dns.a(&name)).await {
            Ok(l) => l,
            Err(_) => Lookup::Failed(format!("no answer within {deadline:?}")),
        };
        let answer = classify(lookup);
        match &answer {
            Answer::Error(e) => tracing::warn!(event = "dnsbl_error", client = %ip, zone = %z.name, error = %e),
            Answer::Listed(codes) => {
                let codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
                tracing::info!(event = "dnsbl_listed", client = %ip, zone = %z.name, weight = z.weight, answer = %codes.join(","));
            }
            Answer::NotListed => {}
        }
        (z.clone(), answer)
    });
    let answers = futures::future::join_all(lookups).await;
    judge(&answers, threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones(s: &str) -> Result<Vec<Zone>, String> {
        parse_zones(&s.split(',').map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn zone_lists() {
        let z = zones("zen.spamhaus.org*3, bl.example.,Wl.Example*-2").unwrap();
        assert_eq!(
            z,
            vec![
                Zone { name: "zen.spamhaus.org".into(), weight: 3 },
                Zone { name: "bl.example".into(), weight: 1 },
                Zone { name: "wl.example".into(), weight: -2 },
            ]
        );
        for bad in ["zen.spamhaus.org*x", "*2", "bad zone", "a..b", "zone*"] {
            assert!(zones(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_names() {
        let cases = [
            ("192.0.2.99", "zen.spamhaus.org", "99.2.0.192.zen.spamhaus.org."),
            ("127.0.0.2", "bl.test", "2.0.0.127.bl.test."),
            ("::ffff:192.0.2.1", "bl.test", "1.2.0.192.bl.test."),
            (
                "2001:db8:1:2::abcd",
                "bl.test",
                "d.c.b.a.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test.",
            ),
        ];
        for (ip, zone, want) in cases {
            assert_eq!(query_name(ip.parse().unwrap(), zone), want, "{ip}");
        }
    }

    #[test]
    fn answers() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let cases = [
            (Lookup::NxDomain, "not"),
            (Lookup::Records(vec![]), "not"),
            (Lookup::Records(vec![ip("127.0.0.2")]), "listed"),
            (Lookup::Records(vec![ip("127.0.0.4"), ip("127.0.0.10")]), "listed"),
            (Lookup::Records(vec![ip("127.255.255.254")]), "error"),
            (Lookup::Records(vec![ip("127.255.255.252")]), "error"),
            (Lookup::Records(vec![ip("127.0.0.2"), ip("127.255.255.255")]), "error"),
            (Lookup::Records(vec![ip("10.0.0.1")]), "error"),
            (Lookup::Failed("SERVFAIL".into()), "error"),
        ];
        for (lookup, want) in cases {
            let got = match classify(lookup.clone()) {
                Answer::NotListed => "not",
                Answer::Listed(_) => "listed",
                Answer::Error(_) => "error",
            };
            assert_eq!(got, want, "{lookup:?}");
        }
    }

    #[test]
    fn weights_and_threshold() {
        let z = |n: &str, w| Zone { name: n.into(), weight: w };
        let listed = Answer::Listed(vec![Ipv4Addr::new(127, 0, 0, 2)]);
        let err = Answer::Error("refused".into());
        // (answers, threshold) -> (score, blocked, listed by)
        type Case = (Vec<(Zone, Answer)>, i32, i32, bool, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (vec![(z("a", 1), listed.clone())], 1, 1, true, vec!["a"]),
            (vec![(z("a", 1), listed.clone()), (z("b", 2), Answer::NotListed)], 2, 1, false, vec!["a"]),
            (vec![(z("a", 1), listed.clone()), (z("b", 2), listed.clone())], 3, 3, true, vec!["b", "a"]),
            // An error answer never counts, whatever its weight.
            (vec![(z("a", 5), err.clone()), (z("b", 1), listed.clone())], 2, 1, false, vec!["b"]),
            (vec![(z("a", 5), err)], 1, 0, false, vec![]),
            // An allow-list lowers the sum.
            (vec![(z("a", 2), listed.clone()), (z("wl", -2), listed.clone())], 1, 0, false, vec!["a", "wl"]),
            // Nothing listed is never blocked, even at a threshold of 0.
            (vec![(z("a", 1), Answer::NotListed)], 0, 0, false, vec![]),
        ];
        for (answers, threshold, score, blocked, by) in cases {
            let v = judge(&answers, threshold);
            assert_eq!(
                (v.score, v.blocked, v.listed_by.iter().map(String::as_str).collect::<Vec<_>>()),
                (score, blocked, by),
                "{answers:?}"
            );
        }
    }

    struct Table(Vec<(&'static str, Lookup)>);

    #[async_trait]
    impl Blocklists for Table {
        async fn a(&self, name: &str) -> Lookup {
            if name.starts_with("slow.") || name.ends_with(".slow.test.") {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            self.0.iter().find(|(n, _)| *n == name).map(|(_, l)| l.clone()).unwrap_or(Lookup::NxDomain)
        }
    }

    #[tokio::test]
    async fn check_asks_every_zone_within_the_deadline() {
        let dns = Table(vec![
            ("2.0.0.127.one.test.", Lookup::Records(vec![Ipv4Addr::new(127, 0, 0, 2)])),
            ("2.0.0.127.two.test.", Lookup::Records(vec![Ipv4Addr::new(127, 0, 0, 3)])),
            ("2.0.0.127.err.test.", Lookup::Records(vec![Ipv4Addr::new(127, 255, 255, 254)])),
        ]);
        let zones = zones("one.test*2,two.test,err.test*9,slow.test*9,none.test").unwrap();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let started = std::time::Instant::now();
        let v = check(&dns, &zones, 3, ip, Duration::from_millis(200)).await;
        assert!(started.elapsed() < Duration::from_secs(5), "zones are asked in parallel, within the deadline");
        assert_eq!((v.score, v.blocked), (3, true));
        assert_eq!(v.listed_by, vec!["one.test", "two.test"]);
        let v = check(&dns, &zones, 4, ip, Duration::from_millis(200)).await;
        assert!(!v.blocked);
    }
}
