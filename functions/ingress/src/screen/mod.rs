//! The connect-time screen, run by the listener before the greeting: the pregreet test
//! ([`pregreet`], `INGRESS_GREET_PAUSE`) and the DNS blocklists ([`dnsbl`], `INGRESS_DNSBL`),
//! the two at once, so the pause costs no extra time on top of the lookups.
//!
//! Only untrusted clients on the MTA listener are screened. A client in `RELAY_NETWORKS` is
//! greeted at once and never looked up; the submission and implicit-TLS listeners require AUTH
//! before MAIL, so their clients are our own (and often sit on dynamic addresses that policy
//! lists such as Spamhaus PBL rightly list). A blocklisted client is not refused at the
//! greeting: it is greeted, and each `RCPT` from it gets `554 5.7.1 … blocked using <zone>`,
//! after its HELO and sender are logged — what postscreen's operators learn the most from. A
//! client that authenticates on port 25 (our own user, on a listed address) is not refused.

pub mod dnsbl;
pub mod pregreet;
pub mod resolver;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncRead;

use dnsbl::{Blocklists, Zone};

/// The longest the lookups may hold up a greeting (less when `INGRESS_TIMEOUT` is shorter).
pub const MAX_LOOKUP_TIME: Duration = Duration::from_secs(10);

/// The screen's settings and its resolver.
pub struct Screen {
    pub zones: Vec<Zone>,
    pub threshold: i32,
    pub greet_pause: Duration,
    /// Per-lookup deadline.
    pub deadline: Duration,
    pub dns: Arc<dyn Blocklists>,
}

/// What the screen found about one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Greet it.
    Clean,
    /// Greet it, refuse its recipients: the zone to name in the reply (the heaviest listing).
    Blocklisted { zone: String, score: i32 },
    /// It talked before the greeting: refuse it (`554 5.5.1`) and close.
    Pregreeted,
    /// It closed the connection during the pause.
    Gone,
}

impl Screen {
    /// Nothing to do: no zones and no pause.
    pub fn is_off(&self) -> bool {
        self.zones.is_empty() && self.greet_pause.is_zero()
    }

    /// Screen the client at `ip` on `stream` (before anything was written to it).
    pub async fn run<S: AsyncRead + Unpin + ?Sized>(&self, ip: IpAddr, stream: &mut S) -> Outcome {
        let lookups = async {
            if self.zones.is_empty() {
                return None;
            }
            Some(dnsbl::check(self.dns.as_ref(), &self.zones, self.threshold, ip, self.deadline).await)
        };
        let (pause, verdict) = tokio::join!(pregreet::wait(stream, self.greet_pause), lookups);
        match pause {
            pregreet::Pause::Talked(n) => {
                tracing::warn!(event = "pregreet", client = %ip, bytes = n, result = "rejected");
                return Outcome::Pregreeted;
            }
            pregreet::Pause::Closed => return Outcome::Gone,
            pregreet::Pause::Quiet => {}
        }
        match verdict {
            Some(v) if v.blocked => {
                tracing::warn!(event = "blocklisted", client = %ip, score = v.score, zones = %v.listed_by.join(","));
                Outcome::Blocklisted { zone: v.listed_by[0].clone(), score: v.score }
            }
            _ => Outcome::Clean,
        }
    }
}
