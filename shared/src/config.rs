//! Configuration from the environment (the contract's variable tables).
//!
//! Each setting is read through [`Vars`], parsed, and checked; a bad value stops the program at
//! start with a [`ConfigError`] naming the variable and the reason. The lists
//! [`INGRESS_VARS`] and [`RELAY_VARS`] enumerate every variable read, so tests can check that
//! deploy templates only set variables the binaries know.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

fn err(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { var, reason: reason.into() }
}

/// Where variables come from: the process environment in production, a map in tests.
pub trait Vars {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Vars for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Typed readers over a [`Vars`] source; empty values count as unset.
struct Reader<'a>(&'a dyn Vars);

impl Reader<'_> {
    fn opt(&self, var: &'static str) -> Option<String> {
        self.0.var(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.opt(var).ok_or_else(|| err(var, "must be set"))
    }

    fn parse<T: std::str::FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.opt(var) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| err(var, format!("cannot parse {v:?}: {e}"))),
        }
    }

    fn bool(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.opt(var).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(err(var, format!("expected true or false, got {v:?}"))),
        }
    }

    fn duration(&self, var: &'static str, default: &str) -> Result<Duration, ConfigError> {
        let v = self.opt(var).unwrap_or_else(|| default.to_string());
        parse_duration(&v).map_err(|e| err(var, e))
    }

    fn list(&self, var: &'static str) -> Vec<String> {
        self.opt(var)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }

    fn addrs(&self, var: &'static str, default: Option<&str>) -> Result<Vec<SocketAddr>, ConfigError> {
        let items = match (self.list(var), default) {
            (l, Some(d)) if l.is_empty() => vec![d.to_string()],
            (l, _) => l,
        };
        items
            .iter()
            .map(|a| a.parse::<SocketAddr>().map_err(|e| err(var, format!("{a:?} is not ip:port: {e}"))))
            .collect()
    }

    fn path(&self, var: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        match self.opt(var) {
            None => Ok(None),
            Some(p) if std::path::Path::new(&p).is_file() => Ok(Some(PathBuf::from(p))),
            Some(p) => Err(err(var, format!("{p} is not a readable file"))),
        }
    }
}

/// Parse a humantime duration; a bare `0` is zero.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    if v.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(v.trim()).map_err(|e| format!("{v:?} is not a duration like 90s, 5m, 4h or 5d: {e}"))
}

fn system_hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

fn check_hostname(var: &'static str, name: String) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok { Ok(name) } else { Err(err(var, format!("{name:?} is not a valid host name"))) }
}

/// Settings both programs need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub bucket: String,
    pub queue_url: String,
}

impl SpoolConfig {
    fn read(r: &Reader) -> Result<Self, ConfigError> {
        Ok(Self { bucket: r.required("SPOOL_BUCKET")?, queue_url: r.required("SPOOL_QUEUE_URL")? })
    }
}

/// Every variable the ingress reads (besides the standard AWS ones).
pub const INGRESS_VARS: &[&str] = &[
    "SPOOL_BUCKET",
    "SPOOL_QUEUE_URL",
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
];

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
}

/// `INGRESS_SPOOL`: S3 + SQS, or (benchmarks of the protocol path only) nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolMode {
    S3,
    /// Accept and drop every message. Never for real mail: `250` would be a lie.
    Discard,
}

impl IngressConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&ProcessEnv)
    }

    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let r = Reader(vars);
        let hostname = check_hostname("INGRESS_HOSTNAME", r.opt("INGRESS_HOSTNAME").unwrap_or_else(system_hostname))?;
        let relay_networks = r
            .list("RELAY_NETWORKS")
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|e| err("RELAY_NETWORKS", format!("{n:?} is not a CIDR: {e}")))
            })
            .collect::<Result<_, _>>()?;
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
        let timeout = r.duration("INGRESS_TIMEOUT", "5m")?;
        if timeout.is_zero() {
            return Err(err("INGRESS_TIMEOUT", "must be greater than zero"));
        }
        Ok(Self {
            spool: SpoolConfig::read(&r)?,
            listen: r.addrs("INGRESS_LISTEN", Some("0.0.0.0:25"))?,
            submission_listen,
            tls_listen,
            postmaster: r.opt("INGRESS_POSTMASTER").unwrap_or_else(|| format!("postmaster@{hostname}")),
            hostname,
            tls_cert,
            tls_key,
            relay_domains: r
                .list("RELAY_DOMAINS")
                .iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
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
            spool_mode: match r.opt("INGRESS_SPOOL").as_deref() {
                None | Some("s3") => SpoolMode::S3,
                Some("discard") => SpoolMode::Discard,
                Some(o) => return Err(err("INGRESS_SPOOL", format!("expected s3 or discard, got {o:?}"))),
            },
        })
    }
}

/// How the relay treats TLS to the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS when offered, plaintext otherwise (certificates not verified, as MX TLS is).
    Opportunistic,
    /// Refuse to deliver without TLS.
    Required,
}

/// Every variable the relay reads (besides the standard AWS ones).
pub const RELAY_VARS: &[&str] = &[
    "SPOOL_BUCKET",
    "SPOOL_QUEUE_URL",
    "RELAY_HELO_NAME",
    "RELAY_DNS_SERVERS",
    "RELAY_MX_PORT",
    "RELAY_SMARTHOST",
    "RELAY_SMARTHOST_USER",
    "RELAY_SMARTHOST_PASSWORD",
    "RELAY_SMARTHOST_TLS",
    "RELAY_SMARTHOST_CA",
    "RELAY_TLS",
    "RELAY_RETRY_SCHEDULE",
    "RELAY_QUEUE_LIFETIME",
    "RELAY_DELAY_WARNING",
    "RELAY_BOUNCE_FROM",
    "RELAY_CONNECT_TIMEOUT",
    "RELAY_COMMAND_TIMEOUT",
    "RELAY_DATA_TIMEOUT",
    "RELAY_POLL_WAIT",
];

/// How to reach the smarthost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smarthost {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    /// TLS from the first byte (465) instead of STARTTLS.
    pub implicit_tls: bool,
    /// PEM file of extra trust anchors for the smarthost's certificate (a private CA); the
    /// public web PKI roots are trusted either way.
    pub ca: Option<PathBuf>,
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub spool: SpoolConfig,
    pub helo_name: String,
    pub dns_servers: Vec<SocketAddr>,
    pub mx_port: u16,
    pub smarthost: Option<Smarthost>,
    pub tls: TlsMode,
    pub retry_schedule: Vec<Duration>,
    pub queue_lifetime: Duration,
    /// `None` when delay warnings are off.
    pub delay_warning: Option<Duration>,
    pub bounce_from: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// Long-poll wait of `relay poll` (≤ 20 s).
    pub poll_wait: Duration,
}

impl RelayConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&ProcessEnv)
    }

    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let r = Reader(vars);
        let helo_name = check_hostname("RELAY_HELO_NAME", r.opt("RELAY_HELO_NAME").unwrap_or_else(system_hostname))?;
        let dns_servers = r.addrs("RELAY_DNS_SERVERS", None)?;
        let retry_schedule = r
            .opt("RELAY_RETRY_SCHEDULE")
            .unwrap_or_else(|| "2m,5m,10m,15m,30m,1h,2h,4h".to_string())
            .split(',')
            .map(|d| parse_duration(d).map_err(|e| err("RELAY_RETRY_SCHEDULE", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let smarthost = match r.opt("RELAY_SMARTHOST") {
            None => None,
            Some(hp) => {
                let (host, port) = hp
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse::<u16>().ok()?)))
                    .filter(|(h, _)| !h.is_empty())
                    .ok_or_else(|| err("RELAY_SMARTHOST", format!("{hp:?} is not host:port")))?;
                if (host.as_str(), port).to_socket_addrs().is_err() && host.parse::<std::net::IpAddr>().is_err() {
                    tracing::warn!(smarthost = %hp, "smarthost name does not resolve now; will retry at delivery");
                }
                let user = r.opt("RELAY_SMARTHOST_USER");
                let password = r.opt("RELAY_SMARTHOST_PASSWORD");
                if user.is_some() != password.is_some() {
                    return Err(err(
                        "RELAY_SMARTHOST_PASSWORD",
                        "RELAY_SMARTHOST_USER and RELAY_SMARTHOST_PASSWORD must be set together",
                    ));
                }
                let implicit_tls = match r.opt("RELAY_SMARTHOST_TLS").as_deref() {
                    None => port == 465,
                    Some("implicit") => true,
                    Some("starttls") => false,
                    Some(o) => {
                        return Err(err("RELAY_SMARTHOST_TLS", format!("expected starttls or implicit, got {o:?}")));
                    }
                };
                let ca = r.path("RELAY_SMARTHOST_CA")?;
                Some(Smarthost { host, port, user, password, implicit_tls, ca })
            }
        };
        let tls = match r.opt("RELAY_TLS").as_deref() {
            None | Some("opportunistic") => TlsMode::Opportunistic,
            Some("required") => TlsMode::Required,
            Some(o) => return Err(err("RELAY_TLS", format!("expected opportunistic or required, got {o:?}"))),
        };
        let queue_lifetime = r.duration("RELAY_QUEUE_LIFETIME", "5d")?;
        if queue_lifetime.is_zero() {
            return Err(err("RELAY_QUEUE_LIFETIME", "must be greater than zero"));
        }
        let delay_warning = Some(r.duration("RELAY_DELAY_WARNING", "1d")?).filter(|d| !d.is_zero());
        let poll_wait = r.duration("RELAY_POLL_WAIT", "20s")?;
        if poll_wait > Duration::from_secs(20) {
            return Err(err("RELAY_POLL_WAIT", "SQS allows at most 20s"));
        }
        Ok(Self {
            spool: SpoolConfig::read(&r)?,
            bounce_from: r.opt("RELAY_BOUNCE_FROM").unwrap_or_else(|| format!("MAILER-DAEMON@{helo_name}")),
            helo_name,
            dns_servers,
            mx_port: r.parse("RELAY_MX_PORT", 25)?,
            smarthost,
            tls,
            retry_schedule,
            queue_lifetime,
            delay_warning,
            connect_timeout: r.duration("RELAY_CONNECT_TIMEOUT", "30s")?,
            command_timeout: r.duration("RELAY_COMMAND_TIMEOUT", "5m")?,
            data_timeout: r.duration("RELAY_DATA_TIMEOUT", "10m")?,
            poll_wait,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = [("SPOOL_BUCKET", "b"), ("SPOOL_QUEUE_URL", "http://q")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        m
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

    #[test]
    fn relay_defaults_and_errors() {
        let c = RelayConfig::from_vars(&vars(&[("RELAY_HELO_NAME", "relay.example.org")])).unwrap();
        assert_eq!(c.mx_port, 25);
        assert_eq!(c.retry_schedule.len(), 8);
        assert_eq!(c.retry_schedule[7], Duration::from_secs(4 * 3600));
        assert_eq!(c.queue_lifetime, Duration::from_secs(5 * 86400));
        assert_eq!(c.delay_warning, Some(Duration::from_secs(86400)));
        assert_eq!(c.bounce_from, "MAILER-DAEMON@relay.example.org");
        assert_eq!(c.tls, TlsMode::Opportunistic);
        assert!(c.smarthost.is_none());

        let off = RelayConfig::from_vars(&vars(&[("RELAY_DELAY_WARNING", "0")])).unwrap();
        assert_eq!(off.delay_warning, None);

        let sh = RelayConfig::from_vars(&vars(&[
            ("RELAY_SMARTHOST", "127.0.0.1:465"),
            ("RELAY_SMARTHOST_USER", "u"),
            ("RELAY_SMARTHOST_PASSWORD", "p"),
        ]))
        .unwrap()
        .smarthost
        .unwrap();
        assert!(sh.implicit_tls);
        assert_eq!(sh.port, 465);

        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("RELAY_RETRY_SCHEDULE", "1m,often")], "RELAY_RETRY_SCHEDULE"),
            (&[("RELAY_TLS", "sometimes")], "RELAY_TLS"),
            (&[("RELAY_MX_PORT", "70000")], "RELAY_MX_PORT"),
            (&[("RELAY_SMARTHOST", "nohostport")], "RELAY_SMARTHOST"),
            (&[("RELAY_SMARTHOST", "h:587"), ("RELAY_SMARTHOST_USER", "u")], "RELAY_SMARTHOST_PASSWORD"),
            (&[("RELAY_SMARTHOST", "h:587"), ("RELAY_SMARTHOST_CA", "/nonexistent.pem")], "RELAY_SMARTHOST_CA"),
            (&[("RELAY_DNS_SERVERS", "8.8.8.8")], "RELAY_DNS_SERVERS"),
            (&[("RELAY_QUEUE_LIFETIME", "0")], "RELAY_QUEUE_LIFETIME"),
            (&[("RELAY_POLL_WAIT", "1m")], "RELAY_POLL_WAIT"),
        ];
        for (pairs, var) in cases {
            let e = RelayConfig::from_vars(&vars(pairs)).unwrap_err();
            assert_eq!(e.var, *var, "{pairs:?} -> {e}");
        }
    }
}
