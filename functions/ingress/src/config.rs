//! The ingress's settings (the contract's ingress table) and their parsing.
//!
//! [`INGRESS_VARS`] lists every variable read, so the deploy-template test can check that the
//! template sets only variables the ingress knows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use shared::config::{ConfigError, ProcessEnv, Reader, SpoolConfig, Vars, err};
use shared::signing::KeySpec;
use shared::suppression::AutoSuppress;

use crate::policy::lockout::LockoutSpec;
use crate::policy::rate::RateSpec;
use crate::rspamd::{self, OnFailure, RspamdConfig};
use crate::screen::dnsbl::{self, Zone};

/// Every variable the ingress reads (besides the standard AWS ones).
pub const INGRESS_VARS: &[&str] = &[
    "SPOOL_BUCKET",
    "SPOOL_QUEUE_URL",
    "STATE_TABLE",
    "INGRESS_LISTEN",
    "INGRESS_SUBMISSION_LISTEN",
    "INGRESS_TLS_LISTEN",
    "INGRESS_HOSTNAME",
    "INGRESS_TLS_CERT",
    "INGRESS_TLS_KEY",
    "RELAY_DOMAINS",
    "RELAY_NETWORKS",
    "INGRESS_AUTH_FILE",
    "INGRESS_POSTMASTER",
    "INGRESS_MAX_MESSAGE_SIZE",
    "INGRESS_MAX_RECIPIENTS",
    "INGRESS_MAX_CONNECTIONS",
    "INGRESS_MAX_CONNECTIONS_PER_IP",
    "INGRESS_TIMEOUT",
    "INGRESS_PROXY_PROTOCOL",
    "INGRESS_MAX_ERRORS",
    "INGRESS_MEMORY_LIMIT",
    "INGRESS_SHUTDOWN_GRACE",
    "INGRESS_SPOOL",
    // Streaming large messages to S3 (multipart upload).
    "INGRESS_PART_SIZE",
    // Sender ownership, rate limit, recipient validation (policy/).
    "INGRESS_RECIPIENTS_FILE",
    "INGRESS_RATE_LIMIT",
    // Failed AUTHs per client address (policy/lockout/).
    "INGRESS_AUTH_LOCKOUT",
    // Judgement of untrusted mail at end of DATA (judge/).
    "INGRESS_DNS_SERVERS",
    "INGRESS_AUTH_CHECKS",
    "INGRESS_ARC_TRUSTED_SEALERS",
    "INGRESS_ARC_SEAL",
    // Observability: the namespace of the EMF metrics (shared with the relay).
    "METRICS_NAMESPACE",
    // The connect-time screen (screen/).
    "INGRESS_DNSBL",
    "INGRESS_DNSBL_THRESHOLD",
    "INGRESS_GREET_PAUSE",
    // rspamd at the end of DATA (rspamd/).
    "INGRESS_RSPAMD_URL",
    "INGRESS_RSPAMD_TIMEOUT",
    "INGRESS_RSPAMD_FAILURE",
    // Sender reputation (feedback/): reports to the feedback domain, their suppressions and events.
    "FEEDBACK_DOMAIN",
    "RELAY_SUPPRESSION",
    "RELAY_EVENTS_QUEUE_URL",
];

/// S3's smallest part of a multipart upload (all but the last), and the default part size.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts in one upload.
pub const MAX_PARTS: u64 = 10_000;

/// Ingress settings.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    pub spool: SpoolConfig,
    pub listen: Vec<SocketAddr>,
    pub submission_listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub hostname: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Lower-case recipient domains accepted from anyone.
    pub relay_domains: Vec<String>,
    pub relay_networks: Vec<IpNet>,
    pub auth_file: Option<PathBuf>,
    pub postmaster: String,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub timeout: Duration,
    pub proxy_protocol: bool,
    /// Errors in one session before `421 4.7.0` and close.
    pub max_errors: u32,
    /// Message bytes held in memory across all sessions before `451 4.3.1`.
    pub memory_limit: u64,
    /// How long in-flight sessions may run after SIGTERM.
    pub shutdown_grace: Duration,
    /// Where accepted mail goes.
    pub spool_mode: SpoolMode,
    /// Messages up to this size are stored with one PUT; larger ones are streamed as a
    /// multipart upload of parts this size, one held in memory per session at a time.
    pub part_size: usize,
    /// The valid recipients of the relay domains (re-read on SIGHUP).
    pub recipients_file: Option<PathBuf>,
    /// Messages per user (or client address) and duration.
    pub rate_limit: Option<RateSpec>,
    /// `INGRESS_AUTH_LOCKOUT`: failed AUTHs per client address and window; `None` is off.
    pub auth_lockout: Option<LockoutSpec>,
    /// CloudWatch namespace of the EMF metrics.
    pub metrics_namespace: String,
    /// The resolver(s) of every judgement lookup (blocklists, SPF, DKIM, DMARC, ARC); empty:
    /// the system resolver.
    pub dns_servers: Vec<SocketAddr>,
    /// What SPF, DKIM and DMARC do to untrusted mail.
    pub auth_checks: AuthMode,
    /// `INGRESS_DNSBL`: the blocklists and their weights.
    pub dnsbl: Vec<Zone>,
    /// `INGRESS_DNSBL_THRESHOLD`: the summed weight that blocks a client.
    pub dnsbl_threshold: i32,
    /// `INGRESS_GREET_PAUSE`: how long the greeting waits (the pregreet test); zero is off.
    pub greet_pause: Duration,
    /// `INGRESS_RSPAMD_URL` and its companions; `None`: no spam filter.
    pub rspamd: Option<RspamdConfig>,
    /// Sealers whose valid ARC chain overrides a DMARC failure's policy.
    pub arc_trusted_sealers: Vec<String>,
    /// `INGRESS_ARC_SEAL`: our ARC sealing key (read at start); `None`: judged mail is not sealed.
    pub arc_seal: Option<KeySpec>,
    /// `FEEDBACK_DOMAIN`: reports about our mail are accepted there (with `STATE_TABLE`).
    pub feedback_domain: Option<String>,
    /// `RELAY_SUPPRESSION`: which reports put a recipient on the suppression list.
    pub suppression: AutoSuppress,
    /// `RELAY_EVENTS_QUEUE_URL`: where the events of reports go.
    pub events_queue_url: Option<String>,
}

/// `INGRESS_SPOOL`: S3 + SQS, or (benchmarks of the protocol path only) nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolMode {
    S3,
    /// Accept and drop every message. Never for real mail: `250` would be a lie.
    Discard,
}

pub use crate::judge::auth::AuthMode;

impl IngressConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&ProcessEnv)
    }

    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let r = Reader(vars);
        let hostname = r.hostname("INGRESS_HOSTNAME")?;
        let relay_networks = r.networks("RELAY_NETWORKS")?;
        let tls_cert = r.path("INGRESS_TLS_CERT")?;
        let tls_key = r.path("INGRESS_TLS_KEY")?;
        if tls_cert.is_some() != tls_key.is_some() {
            let var = if tls_cert.is_some() { "INGRESS_TLS_KEY" } else { "INGRESS_TLS_CERT" };
            return Err(err(var, "INGRESS_TLS_CERT and INGRESS_TLS_KEY must be set together"));
        }
        let submission_listen = r.addrs("INGRESS_SUBMISSION_LISTEN", None)?;
        let tls_listen = r.addrs("INGRESS_TLS_LISTEN", None)?;
        if tls_cert.is_none() {
            if !submission_listen.is_empty() {
                return Err(err("INGRESS_SUBMISSION_LISTEN", "needs INGRESS_TLS_CERT and INGRESS_TLS_KEY"));
            }
            if !tls_listen.is_empty() {
                return Err(err("INGRESS_TLS_LISTEN", "needs INGRESS_TLS_CERT and INGRESS_TLS_KEY"));
            }
        }
        let auth_file = r.path("INGRESS_AUTH_FILE")?;
        if auth_file.is_none() {
            // Both listeners require AUTH before MAIL: without users they could accept nothing.
            for (var, l) in [("INGRESS_SUBMISSION_LISTEN", &submission_listen), ("INGRESS_TLS_LISTEN", &tls_listen)] {
                if !l.is_empty() {
                    return Err(err(var, "needs INGRESS_AUTH_FILE (AUTH is required before MAIL there)"));
                }
            }
        }
        let max_recipients: usize = r.parse("INGRESS_MAX_RECIPIENTS", 100)?;
        if max_recipients < 100 {
            return Err(err(
                "INGRESS_MAX_RECIPIENTS",
                format!("must be at least 100 (RFC 5321 §4.5.3.1.8), got {max_recipients}"),
            ));
        }
        let max_message_size: u64 = r.parse("INGRESS_MAX_MESSAGE_SIZE", 26_214_400)?;
        if max_message_size < 1024 {
            return Err(err(
                "INGRESS_MAX_MESSAGE_SIZE",
                format!("must be at least 1024 bytes, got {max_message_size}"),
            ));
        }
        let memory_limit: u64 = r.parse("INGRESS_MEMORY_LIMIT", 512 * 1024 * 1024)?;
        let max_connections: usize = r.parse("INGRESS_MAX_CONNECTIONS", 1000)?;
        let max_connections_per_ip: usize = r.parse("INGRESS_MAX_CONNECTIONS_PER_IP", 20)?;
        for (var, v) in
            [("INGRESS_MAX_CONNECTIONS", max_connections), ("INGRESS_MAX_CONNECTIONS_PER_IP", max_connections_per_ip)]
        {
            if v == 0 {
                return Err(err(var, "must be at least 1"));
            }
        }
        let part_size: u64 = r.parse("INGRESS_PART_SIZE", MIN_PART_SIZE)?;
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
            return Err(err(
                "INGRESS_PART_SIZE",
                format!(
                    "must be between {MIN_PART_SIZE} (5 MiB) and {MAX_PART_SIZE} (5 GiB), S3's part sizes, got {part_size}"
                ),
            ));
        }
        if part_size > memory_limit {
            return Err(err("INGRESS_PART_SIZE", format!("must not exceed INGRESS_MEMORY_LIMIT ({memory_limit})")));
        }
        if max_message_size.div_ceil(part_size) > MAX_PARTS {
            return Err(err(
                "INGRESS_PART_SIZE",
                format!("INGRESS_MAX_MESSAGE_SIZE needs more than S3's {MAX_PARTS} parts of {part_size} bytes"),
            ));
        }
        let relay_domains: Vec<String> =
            r.list("RELAY_DOMAINS").iter().map(|d| d.trim_end_matches('.').to_ascii_lowercase()).collect();
        let recipients_file = r.path("INGRESS_RECIPIENTS_FILE")?;
        if recipients_file.is_some() && relay_domains.is_empty() {
            return Err(err("INGRESS_RECIPIENTS_FILE", "lists recipients of RELAY_DOMAINS, which is empty"));
        }
        let rate_limit = r
            .opt("INGRESS_RATE_LIMIT")
            .map(|v| RateSpec::parse(&v).map_err(|e| err("INGRESS_RATE_LIMIT", e)))
            .transpose()?;
        let auth_lockout = match r.opt("INGRESS_AUTH_LOCKOUT") {
            None => Some(LockoutSpec::DEFAULT),
            Some(v) => LockoutSpec::parse(&v).map_err(|e| err("INGRESS_AUTH_LOCKOUT", e))?,
        };
        let timeout = r.duration("INGRESS_TIMEOUT", "5m")?;
        if timeout.is_zero() {
            return Err(err("INGRESS_TIMEOUT", "must be greater than zero"));
        }
        let dnsbl = dnsbl::parse_zones(&r.list("INGRESS_DNSBL")).map_err(|e| err("INGRESS_DNSBL", e))?;
        let greet_pause = r.duration("INGRESS_GREET_PAUSE", "0s")?;
        if greet_pause >= timeout {
            return Err(err("INGRESS_GREET_PAUSE", "must be shorter than INGRESS_TIMEOUT"));
        }
        let rspamd_timeout = r.duration("INGRESS_RSPAMD_TIMEOUT", "15s")?;
        if rspamd_timeout.is_zero() {
            return Err(err("INGRESS_RSPAMD_TIMEOUT", "must be greater than zero"));
        }
        let on_failure = r.choice(
            "INGRESS_RSPAMD_FAILURE",
            OnFailure::Accept,
            &[("accept", OnFailure::Accept), ("tempfail", OnFailure::TempFail)],
        )?;
        let auth_checks = r.choice(
            "INGRESS_AUTH_CHECKS",
            AuthMode::Enforce,
            &[("enforce", AuthMode::Enforce), ("monitor", AuthMode::Monitor), ("off", AuthMode::Off)],
        )?;
        let arc_seal = r.opt("INGRESS_ARC_SEAL").map(|e| KeySpec::parse("INGRESS_ARC_SEAL", &e)).transpose()?;
        if arc_seal.is_some() && auth_checks == AuthMode::Off {
            return Err(err("INGRESS_ARC_SEAL", "seals our results: needs INGRESS_AUTH_CHECKS enforce or monitor"));
        }
        let feedback_domain = shared::feedback::read_domain(&r)?;
        if let Some(d) = feedback_domain.as_ref().filter(|d| relay_domains.contains(d)) {
            return Err(err(
                "FEEDBACK_DOMAIN",
                format!("{d} is also in RELAY_DOMAINS: mail there is reports, never relayed"),
            ));
        }
        let rspamd = r
            .opt("INGRESS_RSPAMD_URL")
            .map(|u| rspamd::parse_url(&u).map_err(|e| err("INGRESS_RSPAMD_URL", e)))
            .transpose()?
            .map(|url| RspamdConfig { url, timeout: rspamd_timeout, on_failure });
        Ok(Self {
            spool: SpoolConfig::read(&r)?,
            listen: r.addrs("INGRESS_LISTEN", Some("0.0.0.0:25"))?,
            submission_listen,
            tls_listen,
            postmaster: r.opt("INGRESS_POSTMASTER").unwrap_or_else(|| format!("postmaster@{hostname}")),
            hostname,
            tls_cert,
            tls_key,
            relay_domains,
            relay_networks,
            auth_file,
            max_message_size,
            max_recipients,
            max_connections,
            max_connections_per_ip,
            timeout,
            proxy_protocol: r.bool("INGRESS_PROXY_PROTOCOL", false)?,
            max_errors: r.parse("INGRESS_MAX_ERRORS", 10)?,
            memory_limit,
            shutdown_grace: r.duration("INGRESS_SHUTDOWN_GRACE", "30s")?,
            spool_mode: r.choice(
                "INGRESS_SPOOL",
                SpoolMode::S3,
                &[("s3", SpoolMode::S3), ("discard", SpoolMode::Discard)],
            )?,
            part_size: part_size as usize,
            recipients_file,
            rate_limit,
            auth_lockout,
            metrics_namespace: shared::metrics::namespace(&r)?,
            dns_servers: r.addrs("INGRESS_DNS_SERVERS", None)?,
            dnsbl,
            dnsbl_threshold: r.parse("INGRESS_DNSBL_THRESHOLD", 1)?,
            greet_pause,
            rspamd,
            auth_checks,
            arc_trusted_sealers: r.list("INGRESS_ARC_TRUSTED_SEALERS"),
            arc_seal,
            feedback_domain,
            suppression: AutoSuppress::read(&r)?,
            events_queue_url: r.opt("RELAY_EVENTS_QUEUE_URL"),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use shared::config::vars_with_spool;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        vars_with_spool(pairs)
    }

    #[test]
    fn ingress_defaults_match_the_contract() {
        let c = IngressConfig::from_vars(&vars(&[("INGRESS_HOSTNAME", "mx.example.org")])).unwrap();
        assert_eq!(c.listen, vec!["0.0.0.0:25".parse().unwrap()]);
        assert_eq!(c.max_message_size, 26_214_400);
        assert_eq!(c.max_recipients, 100);
        assert_eq!((c.max_connections, c.max_connections_per_ip), (1000, 20));
        assert_eq!(c.timeout, Duration::from_secs(300));
        assert_eq!(c.postmaster, "postmaster@mx.example.org");
        assert!(!c.proxy_protocol);
        assert_eq!(c.spool_mode, SpoolMode::S3);
        assert_eq!(c.part_size, 5 * 1024 * 1024);
        assert_eq!(c.metrics_namespace, "SmtpRelay");
        assert!(c.recipients_file.is_none() && c.rate_limit.is_none());
        assert_eq!(c.auth_lockout, Some(LockoutSpec::DEFAULT), "10/15m unless set");
        assert_eq!(c.auth_checks, AuthMode::Enforce);
        assert!(c.arc_trusted_sealers.is_empty());
        assert!(c.dns_servers.is_empty() && c.dnsbl.is_empty());
        assert_eq!((c.dnsbl_threshold, c.greet_pause), (1, Duration::ZERO));
        assert!(c.rspamd.is_none());
        assert_eq!((c.feedback_domain.as_deref(), c.suppression), (None, AutoSuppress::default()));
        let c =
            IngressConfig::from_vars(&vars(&[("FEEDBACK_DOMAIN", "FB.example.org."), ("RELAY_SUPPRESSION", "off")]));
        let c = c.unwrap();
        assert_eq!((c.feedback_domain.as_deref(), c.suppression), (Some("fb.example.org"), AutoSuppress::OFF));
        for pairs in [
            &[("FEEDBACK_DOMAIN", "fb.example.org"), ("RELAY_DOMAINS", "example.org,fb.example.org")][..],
            &[("FEEDBACK_DOMAIN", "not a domain")],
        ] {
            assert_eq!(IngressConfig::from_vars(&vars(pairs)).unwrap_err().var, "FEEDBACK_DOMAIN", "{pairs:?}");
        }
        let c = IngressConfig::from_vars(&vars(&[("INGRESS_RSPAMD_URL", "http://127.0.0.1:11333")])).unwrap();
        let want = RspamdConfig {
            url: "127.0.0.1:11333".into(),
            timeout: Duration::from_secs(15),
            on_failure: OnFailure::Accept,
        };
        assert_eq!(c.rspamd, Some(want));
    }

    #[test]
    fn screen_settings() {
        let c = IngressConfig::from_vars(&vars(&[
            ("INGRESS_DNS_SERVERS", "127.0.0.1:5353"),
            ("INGRESS_DNSBL", "zen.spamhaus.org*2,bl.example"),
            ("INGRESS_DNSBL_THRESHOLD", "3"),
            ("INGRESS_GREET_PAUSE", "6s"),
        ]))
        .unwrap();
        assert_eq!(c.dns_servers, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(
            c.dnsbl.iter().map(|z| (z.name.as_str(), z.weight)).collect::<Vec<_>>(),
            vec![("zen.spamhaus.org", 2), ("bl.example", 1)]
        );
        assert_eq!((c.dnsbl_threshold, c.greet_pause), (3, Duration::from_secs(6)));
    }

    #[test]
    fn judge_settings() {
        let c = IngressConfig::from_vars(&vars(&[
            ("INGRESS_DNS_SERVERS", "127.0.0.1:5353, [::1]:53"),
            ("INGRESS_AUTH_CHECKS", "monitor"),
            ("INGRESS_ARC_TRUSTED_SEALERS", "lists.example, fwd.example"),
        ]))
        .unwrap();
        assert_eq!(c.dns_servers, ["127.0.0.1:5353".parse().unwrap(), "[::1]:53".parse().unwrap()]);
        assert_eq!(c.auth_checks, AuthMode::Monitor);
        assert_eq!(c.arc_trusted_sealers, ["lists.example", "fwd.example"]);
        assert_eq!(c.arc_seal, None);
        let e = IngressConfig::from_vars(&vars(&[("INGRESS_AUTH_CHECKS", "strict")])).unwrap_err();
        assert!(e.to_string().contains("INGRESS_AUTH_CHECKS"), "{e}");
        let c = IngressConfig::from_vars(&vars(&[("INGRESS_ARC_SEAL", "Relay.Example:arc1:/etc/arc.pem")])).unwrap();
        let seal = c.arc_seal.unwrap();
        assert_eq!((seal.domain.as_str(), seal.selector.as_str()), ("relay.example", "arc1"));
        for (pairs, why) in [
            (&[("INGRESS_ARC_SEAL", "relay.example:arc1")][..], "expected domain:selector:source"),
            (&[("INGRESS_ARC_SEAL", "relay.example:a:/k.pem"), ("INGRESS_AUTH_CHECKS", "off")][..], "needs"),
        ] {
            let e = IngressConfig::from_vars(&vars(pairs)).unwrap_err();
            assert_eq!(e.var, "INGRESS_ARC_SEAL");
            assert!(e.reason.contains(why), "{e}");
        }
    }

    #[test]
    fn policy_settings() {
        let c = IngressConfig::from_vars(&vars(&[
            ("RELAY_DOMAINS", "example.test"),
            ("INGRESS_RECIPIENTS_FILE", "Cargo.toml"),
            ("INGRESS_RATE_LIMIT", "200/1m"),
        ]))
        .unwrap();
        assert_eq!(c.recipients_file.as_deref(), Some(std::path::Path::new("Cargo.toml")));
        let rate = c.rate_limit.unwrap();
        assert_eq!((rate.messages.get(), rate.per), (200, Duration::from_secs(60)));
    }

    #[test]
    fn ingress_errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("INGRESS_MAX_RECIPIENTS", "5")], "INGRESS_MAX_RECIPIENTS"),
            (&[("INGRESS_MAX_RECIPIENTS", "many")], "INGRESS_MAX_RECIPIENTS"),
            (&[("INGRESS_TIMEOUT", "soon")], "INGRESS_TIMEOUT"),
            (&[("INGRESS_LISTEN", "localhost")], "INGRESS_LISTEN"),
            (&[("RELAY_NETWORKS", "10.0.0.0/33")], "RELAY_NETWORKS"),
            (&[("INGRESS_PROXY_PROTOCOL", "maybe")], "INGRESS_PROXY_PROTOCOL"),
            (&[("INGRESS_TLS_CERT", "/nonexistent.pem")], "INGRESS_TLS_CERT"),
            (&[("INGRESS_HOSTNAME", "bad host")], "INGRESS_HOSTNAME"),
            (&[("INGRESS_SUBMISSION_LISTEN", "127.0.0.1:587")], "INGRESS_SUBMISSION_LISTEN"),
            (&[("INGRESS_SPOOL", "memory")], "INGRESS_SPOOL"),
            (&[("INGRESS_PART_SIZE", "1048576")], "INGRESS_PART_SIZE"),
            (&[("INGRESS_PART_SIZE", "6000000000")], "INGRESS_PART_SIZE"),
            (&[("INGRESS_PART_SIZE", "8388608"), ("INGRESS_MEMORY_LIMIT", "6291456")], "INGRESS_PART_SIZE"),
            (&[("INGRESS_MAX_MESSAGE_SIZE", "60000000000")], "INGRESS_PART_SIZE"),
            (&[("INGRESS_RATE_LIMIT", "200")], "INGRESS_RATE_LIMIT"),
            (&[("INGRESS_AUTH_LOCKOUT", "10")], "INGRESS_AUTH_LOCKOUT"),
            (&[("INGRESS_RATE_LIMIT", "0/1m")], "INGRESS_RATE_LIMIT"),
            (&[("INGRESS_RATE_LIMIT", "10/0s")], "INGRESS_RATE_LIMIT"),
            (&[("INGRESS_RECIPIENTS_FILE", "/nonexistent")], "INGRESS_RECIPIENTS_FILE"),
            // A recipient table without relay domains would govern nothing.
            (&[("INGRESS_RECIPIENTS_FILE", "Cargo.toml")], "INGRESS_RECIPIENTS_FILE"),
            (&[("METRICS_NAMESPACE", "AWS/Mail")], "METRICS_NAMESPACE"),
            (&[("INGRESS_DNS_SERVERS", "8.8.8.8")], "INGRESS_DNS_SERVERS"),
            (&[("INGRESS_DNSBL", "zen.spamhaus.org*many")], "INGRESS_DNSBL"),
            (&[("INGRESS_DNSBL_THRESHOLD", "one")], "INGRESS_DNSBL_THRESHOLD"),
            (&[("INGRESS_GREET_PAUSE", "soon")], "INGRESS_GREET_PAUSE"),
            (&[("INGRESS_RSPAMD_URL", "https://rspamd:11333")], "INGRESS_RSPAMD_URL"),
            (&[("INGRESS_RSPAMD_TIMEOUT", "0s")], "INGRESS_RSPAMD_TIMEOUT"),
            (&[("INGRESS_RSPAMD_FAILURE", "drop")], "INGRESS_RSPAMD_FAILURE"),
            (&[("INGRESS_GREET_PAUSE", "10m")], "INGRESS_GREET_PAUSE"),
            (
                &[
                    ("INGRESS_TLS_CERT", "Cargo.toml"),
                    ("INGRESS_TLS_KEY", "Cargo.toml"),
                    ("INGRESS_TLS_LISTEN", "127.0.0.1:465"),
                ],
                "INGRESS_TLS_LISTEN",
            ),
        ];
        for (pairs, var) in cases {
            let e = IngressConfig::from_vars(&vars(pairs)).unwrap_err();
            assert_eq!(e.var, *var, "{pairs:?} -> {e}");
        }
        let mut m = vars(&[]);
        m.remove("SPOOL_BUCKET");
        assert_eq!(IngressConfig::from_vars(&m).unwrap_err().to_string(), "SPOOL_BUCKET: must be set");
    }

    #[test]
    fn ingress_lists() {
        let c = IngressConfig::from_vars(&vars(&[
            ("RELAY_DOMAINS", "Example.ORG, example.net."),
            ("RELAY_NETWORKS", "10.0.0.0/8,192.0.2.7"),
            ("INGRESS_LISTEN", "127.0.0.1:2525,[::1]:2525"),
        ]))
        .unwrap();
        assert_eq!(c.relay_domains, vec!["example.org", "example.net"]);
        assert_eq!(c.relay_networks.len(), 2);
        assert!(c.relay_networks[1].contains(&"192.0.2.7".parse::<std::net::IpAddr>().unwrap()));
        assert_eq!(c.listen.len(), 2);
    }
}
