//! SPF, DKIM, DMARC and ARC, the DNS half: mail-auth's verifiers over a hickory resolver
//! pointed at `INGRESS_DNS_SERVERS` (UDP, then TCP; short per-query timeouts; hickory's cache
//! on), all lookups of one message under one [`DEADLINE`]. Past it, or when the resolver cannot
//! be built or answers with errors, DMARC is `temperror`: a dead resolver costs a session a few
//! seconds, never `INGRESS_TIMEOUT`. The pure half (facts → reply and header) is [`super::auth`].
//!
//! Verification works on the message's [`Evidence`] — its header section and the body hashes
//! computed as it streamed — so a streamed message is judged like any other. SPF checks the
//! MAIL FROM identity, or the HELO identity for the null sender, with the client's real
//! address. DKIM checks every signature (RSA and Ed25519); a body-hash mismatch comes back
//! `neutral`, never `pass`. DMARC aligns both with the `From:` domain and picks `p`/`sp`/`np`.
//! ARC validates the chain (`arc=`); when it passes and its latest sealer (the highest
//! instance's ARC-Seal `d=`) is in `INGRESS_ARC_TRUSTED_SEALERS`, a DMARC failure's policy is
//! not applied (mailing lists and forwarders break SPF and DKIM).
//!
//! **Our ARC seal** (`INGRESS_ARC_SEAL`, RFC 8617): once every check has had its say and the
//! header section is edited, [`Authenticate::seal`] adds our ARC set (instance n + 1) over the
//! message as it leaves: `ARC-Authentication-Results` carries our results, the
//! `ARC-Message-Signature` covers the edited header fields and the body, and the `ARC-Seal`'s
//! `cv=` is the chain's validation as the message arrived. The verifiers are run again for it
//! (their DNS answers come from hickory's cache) because mail-auth's results borrow the parsed
//! message they describe. A chain that is structurally broken, or whose latest seal already
//! says `cv=fail`, is not sealed (RFC 8617 §5.1.2): that is logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::arc::{ArcSealer, Set};
use mail_auth::common::crypto::{DkimKey, HashAlgorithm};
use mail_auth::common::headers::{Header, HeaderWriter};
use mail_auth::dkim::Canonicalization;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput, DmarcResult,
    MessageAuthenticator, SpfOutput,
};
use shared::metrics::Metrics;
use shared::signing::KeyRef;
use shared::signing::fields::signed_fields;

use super::auth::{self, AuthMode, Dmarc, Facts, Policy};
use super::evidence::{Evidence, parse_with};
use super::{Judged, Verdict};
use crate::metrics::AUTH_CHECKED;

/// All DNS lookups of one message together.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// One query to one server.
const QUERY_TIMEOUT: Duration = Duration::from_millis(1500);

/// `INGRESS_ARC_SEAL`: the key our ARC sets are signed with, as `d=` and `s=`.
pub struct SealKey {
    pub domain: String,
    pub selector: String,
    pub key: DkimKey,
}

/// The SPF/DKIM/DMARC/ARC check, and our ARC sealer.
pub struct Authenticate {
    authenticator: MessageAuthenticator,
    hostname: String,
    mode: AuthMode,
    /// Lower-case domains without a trailing dot.
    trusted_sealers: Vec<String>,
    deadline: Duration,
    metrics: Arc<Metrics>,
    seal_key: Option<SealKey>,
}

/// What mail-auth found, borrowing the parsed message.
struct Outputs<'x> {
    spf: SpfOutput,
    dkim: Vec<DkimOutput<'x>>,
    arc: ArcOutput<'x>,
    dmarc: DmarcOutput,
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
        Ok(Self {
            authenticator,
            hostname: hostname.to_string(),
            mode,
            trusted_sealers,
            deadline: DEADLINE,
            metrics,
            seal_key: None,
        })
    }

    /// The same with another deadline (tests).
    pub fn with_deadline(self, deadline: Duration) -> Self {
        Self { deadline, ..self }
    }

    /// The same, sealing judged mail with `key` (`INGRESS_ARC_SEAL`).
    pub fn with_seal(self, key: Option<SealKey>) -> Self {
        Self { seal_key: key, ..self }
    }

    /// The body hashes the sealer needs besides those the message's signatures name: our
    /// ARC-Message-Signature is relaxed/relaxed over SHA-256.
    pub fn body_hashes_needed(&self) -> &'static [(Canonicalization, HashAlgorithm)] {
        match self.seal_key {
            Some(_) => &[(Canonicalization::Relaxed, HashAlgorithm::Sha256)],
            None => &[],
        }
    }

    async fn outputs<'x>(&self, parsed: &'x AuthenticatedMessage<'x>, msg: &Judged<'_>) -> Outputs<'x> {
        let a = &self.authenticator;
        let host = self.hostname.as_str();
        let sender = msg.env.sender.as_str();
        let spf = if sender.is_empty() {
            a.verify_spf(SpfParameters::verify_ehlo(msg.client, msg.helo, host)).await
        } else {
            a.verify_spf(SpfParameters::verify_mail_from(msg.client, msg.helo, host, sender)).await
        };
        let dkim = a.verify_dkim(parsed).await;
        let arc = a.verify_arc(parsed).await;
        let mail_from_domain = sender.rsplit_once('@').map_or(msg.helo, |(_, d)| d);
        let dmarc = a.verify_dmarc(DmarcParameters::new(parsed, &dkim, mail_from_domain, &spf)).await;
        Outputs { spf, dkim, arc, dmarc }
    }

    /// mail-auth's rendering of the results, for the ARC-Authentication-Results.
    fn results<'x>(
        &'x self,
        o: &Outputs<'_>,
        parsed: &AuthenticatedMessage<'_>,
        msg: &Judged<'_>,
    ) -> AuthenticationResults<'x> {
        let r = AuthenticationResults::new(&self.hostname);
        let sender = msg.env.sender.as_str();
        let r = match sender.is_empty() {
            true => r.with_spf_ehlo_result(&o.spf, msg.client, msg.helo),
            false => r.with_spf_mailfrom_result(&o.spf, msg.client, sender, msg.helo),
        };
        r.with_dkim_results(&o.dkim, parsed.from()).with_arc_result(&o.arc, msg.client).with_dmarc_result(&o.dmarc)
    }

    /// The facts the verdict is made of, and the text of our `Authentication-Results`.
    fn facts(&self, o: &Outputs<'_>, parsed: &AuthenticatedMessage<'_>, msg: &Judged<'_>) -> Facts {
        let host = self.hostname.as_str();
        let sender = msg.env.sender.as_str();
        let spf_results = AuthenticationResults::new(host);
        let spf_results = match sender.is_empty() {
            true => spf_results.with_spf_ehlo_result(&o.spf, msg.client, msg.helo),
            false => spf_results.with_spf_mailfrom_result(&o.spf, msg.client, sender, msg.helo),
        };
        // mail-auth writes nothing for a message without signatures: RFC 8601 says `dkim=none`.
        let dkim_results = match o.dkim.is_empty() {
            true => ";\r\n\tdkim=none".to_string(),
            false => {
                resinfo(&AuthenticationResults::new(host).with_dkim_results(&o.dkim, parsed.from()).to_string(), host)
            }
        };
        let rest = AuthenticationResults::new(host).with_arc_result(&o.arc, msg.client).with_dmarc_result(&o.dmarc);
        let results = [spf_results.to_string(), rest.to_string()].map(|r| resinfo(&r, host));
        Facts {
            dmarc: match o.dmarc.result() {
                DmarcResult::Pass => Dmarc::Pass,
                DmarcResult::Fail(_) => Dmarc::Fail,
                DmarcResult::TempError(_) => Dmarc::TempError,
                DmarcResult::PermError(_) => Dmarc::PermError,
                DmarcResult::None => Dmarc::None,
            },
            policy: match o.dmarc.policy() {
                mail_auth::dmarc::Policy::Reject => Policy::Reject,
                mail_auth::dmarc::Policy::Quarantine => Policy::Quarantine,
                mail_auth::dmarc::Policy::None | mail_auth::dmarc::Policy::Unspecified => Policy::None,
            },
            domain: o.dmarc.domain().to_string(),
            results: format!("{}{dkim_results}{}", results[0], results[1]),
            trusted_sealer: self.trusted_sealer(&o.arc),
        }
    }

    /// The latest sealer of a chain that validated, if we trust it.
    fn trusted_sealer(&self, arc: &ArcOutput<'_>) -> Option<String> {
        if *arc.result() != DkimResult::Pass {
            return None;
        }
        let latest = arc.sets().iter().max_by_key(|s| s.seal.header.i)?;
        let d = latest.seal.header.d.trim_end_matches('.').to_ascii_lowercase();
        self.trusted_sealers.contains(&d).then_some(d)
    }

    /// The check: the verdict on the message these are the facts of.
    pub async fn check(&self, msg: &Judged<'_>, evidence: &Evidence) -> Verdict {
        let facts = match evidence.parse() {
            None => Facts {
                dmarc: Dmarc::None,
                policy: Policy::None,
                domain: String::new(),
                results: String::new(),
                trusted_sealer: None,
            },
            Some(parsed) => match tokio::time::timeout(self.deadline, self.outputs(&parsed, msg)).await {
                Ok(o) => self.facts(&o, &parsed, msg),
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
            },
        };
        tracing::info!(event = "authenticated", queue_id = %msg.env.queue_id, client = %msg.client, dmarc = facts.dmarc.metric(), policy = ?facts.policy, domain = %facts.domain);
        self.metrics.count_by(AUTH_CHECKED, facts.dmarc.metric(), 1);
        auth::verdict(self.mode, &self.hostname, &facts)
    }

    /// Our ARC set (`ARC-Seal`, `ARC-Message-Signature`, `ARC-Authentication-Results`, each
    /// ending in CRLF) for the message whose evidence this is, leaving with `header` (the
    /// header section after every edit); `None` when sealing is off or not possible.
    pub async fn seal(&self, msg: &Judged<'_>, evidence: &Evidence, header: &[u8]) -> Option<String> {
        let key = self.seal_key.as_ref()?;
        let queue_id = &msg.env.queue_id;
        let original = evidence.parse()?;
        let Ok(o) = tokio::time::timeout(self.deadline, self.outputs(&original, msg)).await else {
            tracing::warn!(event = "arc_seal", queue_id = %queue_id, result = "skipped", reason = "DNS lookups timed out");
            return None;
        };
        let results = self.results(&o, &original, msg);
        let mut head = Vec::with_capacity(header.len() + 2);
        head.extend_from_slice(header);
        head.extend_from_slice(b"\r\n");
        let leaving = parse_with(&head, evidence.body_hashes())?;
        let Some(chain) = chain(&leaving, o.arc.result()) else {
            tracing::warn!(event = "arc_seal", queue_id = %queue_id, result = "skipped", reason = "the ARC chain is broken");
            return None;
        };
        let present: Vec<&str> =
            leaving.headers.iter().filter_map(|(name, _)| std::str::from_utf8(name).ok()).map(str::trim).collect();
        let sealed = ArcSealer::from_key(KeyRef(&key.key))
            .domain(&key.domain)
            .selector(&key.selector)
            .headers(signed_fields(&present))
            .seal(&leaving, &results, &chain);
        match sealed {
            Ok(set) => {
                tracing::info!(event = "arc_seal", queue_id = %queue_id, result = "sealed", instance = set.seal.i, cv = ?set.seal.cv);
                Some(set.to_header())
            }
            Err(e) => {
                tracing::warn!(event = "arc_seal", queue_id = %queue_id, result = "skipped", reason = %e);
                None
            }
        }
    }
}

/// The ARC chain of the leaving message (its sets are the arriving message's, byte for byte)
/// with the validation result the arriving message got; `None` when its sets do not line up
/// (a broken chain mail-auth would number from 1) or the latest already says `cv=fail`.
fn chain<'x>(leaving: &'x AuthenticatedMessage<'x>, result: &DkimResult) -> Option<ArcOutput<'x>> {
    let n = leaving.as_headers.len();
    if leaving.has_arc_errors || leaving.ams_headers.len() != n || leaving.aar_headers.len() != n {
        return None;
    }
    let mut chain = ArcOutput::default().with_result(result.clone());
    for ((seal, signature), results) in leaving.as_headers.iter().zip(&leaving.ams_headers).zip(&leaving.aar_headers) {
        chain = chain.with_set(Set {
            signature: Header::new(signature.name, signature.value, &signature.header),
            seal: Header::new(seal.name, seal.value, &seal.header),
            results: Header::new(results.name, results.value, &results.header),
        });
    }
    chain.can_be_sealed().then_some(chain)
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
