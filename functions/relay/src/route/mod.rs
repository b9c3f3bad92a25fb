//! Stage 1 of a job: where its mail goes. The smarthost when one is configured, otherwise the
//! destination domain's MX hosts ([`mx`]), all resolved through the [`dns`] edge into the ordered
//! [`Target`]s one attempt tries — or a verdict for every recipient when there is nowhere to go.
//! [`next_hop`] names the destination those targets belong to, the unit the SMTP client limits and
//! pools its sessions by.

use std::net::SocketAddr;

use shared::Job;

use crate::config::{RelayConfig, Smarthost};
use crate::decide::outcome::Verdict;

pub mod dns;
pub mod mx;

pub use dns::{HickoryResolver, Lookup, Resolver};

/// One address to connect to, with the name it was found under. The SMTP client pools its
/// sessions by the whole `Target` (`Hash`/`Eq`), so a session is reused only by jobs whose target
/// is equal in every field, including any requirement a field adds on how it must be reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
}

/// The destination `job`'s mail goes to, as the unit of `RELAY_DESTINATION_CONCURRENCY`, session
/// reuse and throttling: the smarthost (`host:port`) when one is configured, since every job goes
/// there; otherwise the recipient domain, lowercased — whether its mail goes to the domain's MX
/// hosts or to a host configured for it. Two domains served by the same MX host are two next hops
/// (as in Postfix, whose destination concurrency is per next-hop domain); they share no sessions.
pub fn next_hop(job: &Job, smarthost: Option<&Smarthost>) -> String {
    match smarthost {
        Some(sh) => format!("{}:{}", sh.host.to_ascii_lowercase(), sh.port),
        None => job.domain.to_ascii_lowercase(),
    }
}

/// The addresses to try for `job`, in order.
pub async fn route(job: &Job, cfg: &RelayConfig, resolver: &dyn Resolver) -> Result<Vec<Target>, Verdict> {
    match &cfg.smarthost {
        Some(sh) => mx::smarthost_targets(resolver, &sh.host, sh.port).await,
        None => mx::targets(resolver, &job.domain, cfg.mx_port).await,
    }
}
