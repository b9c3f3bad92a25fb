//! Stage 1 of a job: where its mail goes. The smarthost when one is configured, otherwise the
//! destination domain's MX hosts ([`mx`]), all resolved through the [`dns`] edge into the ordered
//! [`Target`]s one attempt tries — or a verdict for every recipient when there is nowhere to go.

use std::net::SocketAddr;

use shared::Job;

use crate::config::RelayConfig;
use crate::decide::outcome::Verdict;

pub mod dns;
pub mod mx;

pub use dns::{HickoryResolver, Lookup, Resolver};

/// One address to connect to, with the name it was found under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub addr: SocketAddr,
}

/// The addresses to try for `job`, in order.
pub async fn route(job: &Job, cfg: &RelayConfig, resolver: &dyn Resolver) -> Result<Vec<Target>, Verdict> {
    match &cfg.smarthost {
        Some(sh) => mx::smarthost_targets(resolver, &sh.host, sh.port).await,
        None => mx::targets(resolver, &job.domain, cfg.mx_port).await,
    }
}
