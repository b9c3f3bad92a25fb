//! The DNS edge of routing: the questions routing asks ([`Resolver`]: MX, addresses, and TXT for
//! MTA-STS), their answers reduced to what routing needs ([`Lookup`]), and the hickory
//! implementation. Tests answer from a table.

use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

/// One DNS answer, reduced to what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    /// The name exists but has no records of this type.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// SERVFAIL, timeout, refused: try again later.
    Failed(String),
}

/// The DNS questions routing asks.
#[async_trait]
pub trait Resolver: Send + Sync {
    /// MX records as `(preference, exchange)`, exchange without the trailing dot (`""` for ".").
    async fn mx(&self, domain: &str) -> Lookup<Vec<(u16, String)>>;
    /// A and AAAA addresses of a host.
    async fn ips(&self, host: &str) -> Lookup<Vec<IpAddr>>;
    /// TXT records of a name, each record's strings joined as one (RFC 8461 §3.1), lossy UTF-8.
    /// The default answers "no records", for test resolvers that are not asked TXT questions.
    async fn txt(&self, name: &str) -> Lookup<Vec<String>> {
        let _ = name;
        Lookup::NoData
    }
}

/// [`Resolver`] on hickory.
pub struct HickoryResolver(TokioResolver);

impl HickoryResolver {
    /// With `servers` (UDP and TCP each, no system configuration), or the system resolver when empty.
    pub fn new(servers: &[SocketAddr]) -> Result<Self, ResolveError> {
        let provider = TokioConnectionProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder_tokio()?
        } else {
            let mut config = ResolverConfig::new();
            for s in servers {
                config.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(*s, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        opts.timeout = std::time::Duration::from_secs(5);
        opts.attempts = 2;
        Ok(Self(builder.build()))
    }
}

fn classify<T>(e: &ResolveError) -> Lookup<T> {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code: ResponseCode::NXDomain, .. }) => Lookup::NxDomain,
        Some(ProtoErrorKind::NoRecordsFound { response_code: ResponseCode::NoError, .. }) => Lookup::NoData,
        _ => Lookup::Failed(e.to_string()),
    }
}

/// A domain as DNS and TLS name it: A-labels (IDNA, so `bücher.de` is `xn--bcher-kva.de`), lower
/// case, no trailing dot. A name IDNA refuses is returned lower-cased as it is.
pub fn ascii_domain(domain: &str) -> String {
    let ascii = hickory_resolver::Name::from_utf8(domain).map(|n| n.to_ascii()).unwrap_or_else(|_| domain.to_string());
    ascii.trim_end_matches('.').to_ascii_lowercase()
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') { name.to_string() } else { format!("{name}.") }
}

#[async_trait]
impl Resolver for HickoryResolver {
    async fn mx(&self, domain: &str) -> Lookup<Vec<(u16, String)>> {
        match self.0.mx_lookup(fqdn(domain)).await {
            Ok(l) => Lookup::Found(
                l.iter()
                    .map(|mx| {
                        let name = mx.exchange().to_ascii();
                        (mx.preference(), name.trim_end_matches('.').to_ascii_lowercase())
                    })
                    .collect(),
            ),
            Err(e) => classify(&e),
        }
    }

    async fn ips(&self, host: &str) -> Lookup<Vec<IpAddr>> {
        match self.0.lookup_ip(fqdn(host)).await {
            Ok(l) => {
                let ips: Vec<IpAddr> = l.iter().collect();
                if ips.is_empty() { Lookup::NoData } else { Lookup::Found(ips) }
            }
            Err(e) => classify(&e),
        }
    }

    async fn txt(&self, name: &str) -> Lookup<Vec<String>> {
        match self.0.txt_lookup(fqdn(name)).await {
            Ok(l) => Lookup::Found(
                l.iter()
                    .map(|txt| txt.txt_data().iter().map(|part| String::from_utf8_lossy(part)).collect::<String>())
                    .collect(),
            ),
            Err(e) => classify(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_in_ascii() {
        assert_eq!(ascii_domain("Example.ORG."), "example.org");
        assert_eq!(ascii_domain("bücher.de"), "xn--bcher-kva.de");
        assert_eq!(ascii_domain("xn--bcher-kva.de"), "xn--bcher-kva.de");
    }
}
