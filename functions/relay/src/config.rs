//! The relay's settings (the contract's relay table) and their parsing.
//!
//! [`RELAY_VARS`] lists every variable read, so the deploy-template test can check that the
//! template sets only variables the relay knows.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use shared::config::{ConfigError, ProcessEnv, Reader, SpoolConfig, Vars, err, parse_duration, parse_host_port};

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
    // Durable records (issue 12 §4).
    "RELAY_STORE_RETRY",
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
    /// How long S3/SQS writes after a delivery are retried before the job goes back to SQS.
    pub store_retry: Duration,
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
            store_retry: r.duration("RELAY_STORE_RETRY", "60s")?,
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
        assert_eq!(c.store_retry, Duration::from_secs(60));

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
            (&[("RELAY_STORE_RETRY", "a while")], "RELAY_STORE_RETRY"),
        ];
        for (pairs, var) in cases {
            let e = RelayConfig::from_vars(&vars(pairs)).unwrap_err();
            assert_eq!(e.var, *var, "{pairs:?} -> {e}");
        }
    }
}
