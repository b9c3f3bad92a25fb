//! SPF, DKIM and DMARC as a judge check, the DNS half: mail-auth's verifiers over a hickory
//! resolver pointed at `INGRESS_DNS_SERVERS` (UDP, then TCP; short per-query timeouts; hickory's
//! cache on), all lookups of one message under one [`DEADLINE`]. Past it, or when the resolver
//! cannot be built or answers with errors, DMARC is `temperror`: a dead resolver costs a
//! session a few seconds, never `INGRESS_TIMEOUT`.
//!
//! SPF checks the MAIL FROM identity, or the HELO identity for the null sender, with the
//! client's real address. DKIM checks every signature (RSA and Ed25519); a body-hash mismatch
//! comes back `neutral`, never `pass`. DMARC aligns both with the `From:` domain and picks
//! `p`/`sp`/`np`. ARC validates the chain (`arc=`); when it passes and its latest sealer (the
//! highest instance's ARC-Seal `d=`) is in `INGRESS_ARC_TRUSTED_SEALERS`, a DMARC failure's
//! policy is not applied (mailing lists and forwarders break SPF and DKIM).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
};
use shared::metrics::Metrics;

use super::auth::{self, AuthMode, Dmarc, Facts, Policy};
use super::{Check, Judged, Verdict};
use crate::metrics::AUTH_CHECKED;

/// All DNS lookups of one message together.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// One query to one server.
const QUERY_TIMEOUT: Duration = Duration::from_millis(1500);

/// The SPF/DKIM/DMARC check.
pub struct Authenticate {
    authenticator: MessageAuthenticator,
    hostname: String,
    mode: AuthMode,
    /// Lower-case domains without a trailing dot.
    trusted_sealers: Vec<String>,
    deadline: Duration,
    metrics: Arc<Metrics>,
}

impl Authenticate {
    /// A check resolving through `servers` (the system's resolvers when empty).
    pub fn new(
        servers: &[SocketAddr],
        hostname: &str,
        mode: AuthMode,
        trusted_sealers: &[String],
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let (config, mut opts) = if servers.is_empty() {
            mail_auth::hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("INGRESS_DNS_SERVERS unset and the system resolver is unusable: {e}"))?
        } else {
            let servers = servers.iter().map(|s| name_server(*s)).collect();
            (ResolverConfig::from_name_servers(servers), ResolverOpts::default())
        };
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = 1;
        opts.cache_size = 4096;
        opts.ndots = 0;
        let authenticator = MessageAuthenticator::new(config, opts).map_err(|e| format!("INGRESS_DNS_SERVERS: {e}"))?;
        let trusted_sealers = trusted_sealers.iter().map(|d| d.trim_end_matches('.').to_ascii_lowercase()).collect();
        Ok(Self { authenticator, hostname: hostname.to_string(), mode, trusted_sealers, deadline: DEADLINE, metrics })
    }

    /// The same with another deadline (tests).
    pub fn with_deadline(self, deadline: Duration) -> Self {
        Self { deadline, ..self }
    }

    async fn verify(&self, msg: &Judged<'_>) -> Facts {
        let Some(parsed) = AuthenticatedMessage::parse(msg.message) else {
            return Facts {
                dmarc: Dmarc::None,
                policy: Policy::None,
                domain: String::new(),
                results: String::new(),
                trusted_sealer: None,
            };
        };
        let a = &self.authenticator;
        let host = self.hostname.as_str();
        let sender = msg.env.sender.as_str();
        let spf = if sender.is_empty() {
            a.verify_spf(SpfParameters::verify_ehlo(msg.client, msg.helo, host)).await
        } else {
            a.verify_spf(SpfParameters::verify_mail_from(msg.client, msg.helo, host, sender)).await
        };
        let dkim = a.verify_dkim(&parsed).await;
        let arc = a.verify_arc(&parsed).await;
        let mail_from_domain = sender.rsplit_once('@').map_or(msg.helo, |(_, d)| d);
        let dmarc = a.verify_dmarc(DmarcParameters::new(&parsed, &dkim, mail_from_domain, &spf)).await;
        let spf_results = AuthenticationResults::new(host);
        let spf_results = if sender.is_empty() {
            spf_results.with_spf_ehlo_result(&spf, msg.client, msg.helo)
        } else {
            spf_results.with_spf_mailfrom_result(&spf, msg.client, sender, msg.helo)
        };
        // mail-auth writes nothing for a message without signatures: RFC 8601 says `dkim=none`.
        let dkim_results = match dkim.is_empty() {
            true => ";\r\n\tdkim=none".to_string(),
            false => {
                resinfo(&AuthenticationResults::new(host).with_dkim_results(&dkim, parsed.from()).to_string(), host)
            }
        };
        let rest = AuthenticationResults::new(host).with_arc_result(&arc, msg.client).with_dmarc_result(&dmarc);
        let results = [spf_results.to_string(), rest.to_string()].map(|r| resinfo(&r, host));
        let results = format!("{}{dkim_results}{}", results[0], results[1]);
        Facts {
            dmarc: match dmarc.result() {
                DmarcResult::Pass => Dmarc::Pass,
                DmarcResult::Fail(_) => Dmarc::Fail,
                DmarcResult::TempError(_) => Dmarc::TempError,
                DmarcResult::PermError(_) => Dmarc::PermError,
                DmarcResult::None => Dmarc::None,
            },
            policy: match dmarc.policy() {
                mail_auth::dmarc::Policy::Reject => Policy::Reject,
                mail_auth::dmarc::Policy::Quarantine => Policy::Quarantine,
                mail_auth::dmarc::Policy::None | mail_auth::dmarc::Policy::Unspecified => Policy::None,
            },
            domain: dmarc.domain().to_string(),
            results,
            trusted_sealer: self.trusted_sealer(&arc),
        }
    }
}

impl Authenticate {
    /// The latest sealer of a chain that validated, if we trust it.
    fn trusted_sealer(&self, arc: &ArcOutput<'_>) -> Option<String> {
        if *arc.result() != DkimResult::Pass {
            return None;
        }
        let latest = arc.sets().iter().max_by_key(|s| s.seal.header.i)?;
        let d = latest.seal.header.d.trim_end_matches('.').to_ascii_lowercase();
        self.trusted_sealers.contains(&d).then_some(d)
    }
}

/// One resolver at `addr`, over UDP and TCP on its port.
fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    ns.connections = vec![udp, tcp];
    ns
}

/// mail-auth's `host;\r\n\t…` without the host (the verdict writes it).
fn resinfo(rendered: &str, host: &str) -> String {
    rendered.strip_prefix(host).unwrap_or(rendered).to_string()
}

#[async_trait]
impl Check for Authenticate {
    async fn check(&self, msg: &Judged<'_>) -> Verdict {
        let facts = match tokio::time::timeout(self.deadline, self.verify(msg)).await {
            Ok(f) => f,
            Err(_) => {
                tracing::warn!(event = "auth_deadline", queue_id = %msg.env.queue_id, client = %msg.client, seconds = self.deadline.as_secs_f64());
                Facts {
                    dmarc: Dmarc::TempError,
                    policy: Policy::None,
                    domain: String::new(),
                    results: ";\r\n\tdmarc=temperror (DNS lookups timed out)".into(),
                    trusted_sealer: None,
                }
            }
        };
        tracing::info!(event = "authenticated", queue_id = %msg.env.queue_id, client = %msg.client, dmarc = facts.dmarc.metric(), policy = ?facts.policy, domain = %facts.domain);
        self.metrics.count_by(AUTH_CHECKED, facts.dmarc.metric(), 1);
        auth::verdict(self.mode, &self.hostname, &facts)
    }
}
