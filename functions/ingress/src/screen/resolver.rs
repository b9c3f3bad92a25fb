//! The blocklists' resolver: hickory over `INGRESS_DNS_SERVERS` (UDP and TCP each) or the
//! system's. Hickory's cache keeps each answer (listed or not) for its TTL, so a client that
//! reconnects costs no new lookup.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use super::dnsbl::{Blocklists, Lookup};

/// [`Blocklists`] on hickory.
pub struct HickoryBlocklists(TokioResolver);

impl HickoryBlocklists {
    /// With `servers`, or the system resolver when empty.
    pub fn new(servers: &[SocketAddr]) -> Result<Self, ResolveError> {
        let mut builder = if servers.is_empty() {
            TokioResolver::builder_tokio()?
        } else {
            let mut config = ResolverConfig::new();
            for s in servers {
                config.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(*s, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.use_hosts_file = ResolveHosts::Never;
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        // Answers are cached for their TTL; a negative answer for its SOA minimum.
        opts.cache_size = 4096;
        Ok(Self(builder.build()))
    }
}

#[async_trait]
impl Blocklists for HickoryBlocklists {
    async fn a(&self, name: &str) -> Lookup {
        match self.0.ipv4_lookup(name).await {
            Ok(l) => Lookup::Records(l.iter().map(|a| a.0).collect()),
            Err(e) => classify(&e),
        }
    }
}

fn classify(e: &ResolveError) -> Lookup {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code: ResponseCode::NXDomain, .. }) => Lookup::NxDomain,
        Some(ProtoErrorKind::NoRecordsFound { response_code: ResponseCode::NoError, .. }) => Lookup::Records(vec![]),
        _ => Lookup::Failed(e.to_string()),
    }
}
