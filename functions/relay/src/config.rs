//! The relay's settings (the contract's relay table) and their parsing.
//!
//! [`RELAY_VARS`] lists every variable read, so the deploy-template test can check that the
//! template sets only variables the relay knows.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use shared::config::{
    ConfigError, ProcessEnv, Reader, SpoolConfig, Vars, err, parse_duration, parse_host_port, valid_hostname,
};

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
    // DKIM signing (dkim/)
    "RELAY_DKIM_KEYS",
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

/// Where a DKIM private key is read from, once, at start (`dkim::load`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    S3 { bucket: String, key: String },
}

/// One `RELAY_DKIM_KEYS` entry: mail whose `From:` domain is `domain` is signed with this key
/// under `selector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimKeySpec {
    /// Lowercase.
    pub domain: String,
    pub selector: String,
    pub source: KeySource,
    /// The entry as written, for messages that name it.
    pub entry: String,
}

/// `RELAY_DKIM_KEYS`: a comma list of `domain:selector:source`, `source` a PEM file path or
/// `s3://bucket/key` (the source may itself contain `:`; the first two separate the fields).
/// Only the syntax is checked here; the keys are read and parsed at start by `dkim::load`.
fn dkim_keys(r: &Reader) -> Result<Vec<DkimKeySpec>, ConfigError> {
    const VAR: &str = "RELAY_DKIM_KEYS";
    let mut specs: Vec<DkimKeySpec> = Vec::new();
    for entry in r.list(VAR) {
        let bad = |why: &str| err(VAR, format!("{entry}: {why}"));
        let mut parts = entry.splitn(3, ':').map(str::trim);
        let (Some(domain), Some(selector), Some(source)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected domain:selector:source"));
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !valid_hostname(&domain) {
            return Err(bad("the domain is not a valid domain name"));
        }
        if !valid_hostname(selector) {
            return Err(bad("the selector must be dot-separated labels of letters, digits and hyphens"));
        }
        let source = match source.strip_prefix("s3://") {
            Some(rest) => match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
                    KeySource::S3 { bucket: bucket.to_string(), key: key.to_string() }
                }
                _ => return Err(bad("an S3 source is s3://bucket/key")),
            },
            None if source.is_empty() => return Err(bad("the key source (a PEM file or s3://bucket/key) is missing")),
            None => KeySource::File(PathBuf::from(source)),
        };
        if specs.iter().any(|s| s.domain == domain && s.selector.eq_ignore_ascii_case(selector)) {
            return Err(bad("the same domain and selector appear twice"));
        }
        specs.push(DkimKeySpec { domain, selector: selector.to_string(), source, entry: entry.clone() });
    }
    Ok(specs)
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
    /// DKIM keys to load at start; empty when nothing is signed.
    pub dkim_keys: Vec<DkimKeySpec>,
}

impl RelayConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&ProcessEnv)
    }

    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let r = Reader(vars);
        let helo_name = r.hostname("RELAY_HELO_NAME")?;
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
                let (host, port) = parse_host_port(&hp).map_err(|e| err("RELAY_SMARTHOST", e))?;
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
                let implicit_tls =
                    r.choice("RELAY_SMARTHOST_TLS", port == 465, &[("starttls", false), ("implicit", true)])?;
                let ca = r.path("RELAY_SMARTHOST_CA")?;
                Some(Smarthost { host, port, user, password, implicit_tls, ca })
            }
        };
        let tls = r.choice(
            "RELAY_TLS",
            TlsMode::Opportunistic,
            &[("opportunistic", TlsMode::Opportunistic), ("required", TlsMode::Required)],
        )?;
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
            dkim_keys: dkim_keys(&r)?,
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
            (&[("RELAY_DKIM_KEYS", "example.org:sel")], "RELAY_DKIM_KEYS"),
        ];
        for (pairs, var) in cases {
            let e = RelayConfig::from_vars(&vars(pairs)).unwrap_err();
            assert_eq!(e.var, *var, "{pairs:?} -> {e}");
        }
    }

    #[test]
    fn dkim_keys_entries() {
        let c = RelayConfig::from_vars(&vars(&[(
            "RELAY_DKIM_KEYS",
            " Example.ORG.:rsa2026:/etc/dkim/rsa.pem , example.org:ed:s3://keys-bucket/dkim/ed.pem,b.test:s1:C:/x",
        )]))
        .unwrap();
        let got: Vec<_> = c.dkim_keys.iter().map(|s| (s.domain.as_str(), s.selector.as_str(), &s.source)).collect();
        assert_eq!(
            got,
            [
                ("example.org", "rsa2026", &KeySource::File("/etc/dkim/rsa.pem".into())),
                ("example.org", "ed", &KeySource::S3 { bucket: "keys-bucket".into(), key: "dkim/ed.pem".into() }),
                ("b.test", "s1", &KeySource::File("C:/x".into())),
            ]
        );
        assert_eq!(c.dkim_keys[0].entry, "Example.ORG.:rsa2026:/etc/dkim/rsa.pem");
        assert!(RelayConfig::from_vars(&vars(&[])).unwrap().dkim_keys.is_empty());

        for (value, why) in [
            ("example.org", "expected domain:selector:source"),
            ("example.org:sel:", "source"),
            ("bad domain:sel:/k.pem", "domain"),
            ("example.org:se_l:/k.pem", "selector"),
            ("example.org:sel:s3://bucket", "s3://bucket/key"),
            ("example.org:sel:s3:///key", "s3://bucket/key"),
            ("example.org:sel:/a.pem,EXAMPLE.org:SEL:/b.pem", "twice"),
        ] {
            let e = RelayConfig::from_vars(&vars(&[("RELAY_DKIM_KEYS", value)])).unwrap_err();
            assert_eq!(e.var, "RELAY_DKIM_KEYS", "{value}");
            assert!(e.reason.contains(why), "{value}: {e}");
            // The message names the entry at fault (the second one when it repeats the first).
            assert!(e.reason.starts_with(value.split(',').next_back().unwrap()), "{value}: {e}");
        }
    }
}
