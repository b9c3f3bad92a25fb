//! The relay's settings (the contract's relay table) and their parsing.
//!
//! [`RELAY_VARS`] lists every variable read, so the deploy-template test can check that the
//! template sets only variables the relay knows.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use shared::config::{
    ConfigError, ProcessEnv, Reader, SpoolConfig, Vars, err, parse_duration, parse_host_port, valid_hostname,
};
#[cfg(test)]
use shared::signing::KeySource;
use shared::signing::KeySpec;
use shared::suppression::AutoSuppress;

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
    "STATE_TABLE",
    "RELAY_HELO_NAME",
    "RELAY_DNS_SERVERS",
    "RELAY_MX_PORT",
    "RELAY_SMARTHOST",
    "RELAY_SMARTHOST_USER",
    "RELAY_SMARTHOST_PASSWORD",
    // The smarthost password read from Secrets Manager or SSM at start (issue 21).
    "RELAY_SMARTHOST_PASSWORD_SECRET",
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
    // Inbound gateway: per-domain next hops and the names loop detection knows us by.
    "RELAY_ROUTES",
    "RELAY_LOCAL_NAMES",
    // MTA-STS and verified TLS to MX hosts
    "RELAY_MTA_STS",
    "RELAY_TLS_CA",
    // Observability: delivery events and the metrics' namespace.
    "RELAY_EVENTS_QUEUE_URL",
    "METRICS_NAMESPACE",
    // Connection reuse and throttling (deliver::pool, deliver::throttle).
    "RELAY_DESTINATION_CONCURRENCY",
    "RELAY_MAX_MESSAGES_PER_CONNECTION",
    "RELAY_CONNECTION_IDLE",
    "RELAY_THROTTLE_BACKOFF",
    // DKIM signing (dkim/)
    "RELAY_DKIM_KEYS",
    // Sender reputation: automatic suppressions, the return path in the feedback domain.
    "RELAY_SUPPRESSION",
    "FEEDBACK_DOMAIN",
];

/// Where the smarthost password is kept (`RELAY_SMARTHOST_PASSWORD_SECRET`): read at start and
/// once more after a refused AUTH, so a rotated password is picked up without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// A Secrets Manager secret (its ARN): the secret string, or its `password` field when it
    /// is a JSON object (as the console's "other type of secret" key/value pairs store it).
    SecretsManager(String),
    /// An SSM Parameter Store parameter (its ARN), usually a SecureString, read decrypted.
    Ssm(String),
}

impl SecretRef {
    /// `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>` or
    /// `arn:<partition>:ssm:<region>:<account>:parameter/<name>`.
    pub fn parse(arn: &str) -> Result<Self, String> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        match parts[..] {
            ["arn", p, "secretsmanager", r, a, rest]
                if ok(p, r, a) && rest.len() > 7 && rest.starts_with("secret:") =>
            {
                Ok(Self::SecretsManager(arn.to_string()))
            }
            ["arn", p, "ssm", r, a, rest] if ok(p, r, a) && rest.len() > 10 && rest.starts_with("parameter/") => {
                Ok(Self::Ssm(arn.to_string()))
            }
            _ => Err(format!(
                "{arn:?}: expected the ARN of a Secrets Manager secret (arn:aws:secretsmanager:<region>:<account>:secret:<name>) \
                 or of an SSM parameter (arn:aws:ssm:<region>:<account>:parameter/<name>)"
            )),
        }
    }

    /// The ARN.
    pub fn arn(&self) -> &str {
        match self {
            Self::SecretsManager(a) | Self::Ssm(a) => a,
        }
    }
}

/// Partition, region and account of an ARN are present.
fn ok(partition: &str, region: &str, account: &str) -> bool {
    partition.starts_with("aws")
        && !region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
}

/// How to reach the smarthost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smarthost {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    /// `RELAY_SMARTHOST_PASSWORD` (for local use: it is a plain environment variable).
    pub password: Option<String>,
    /// `RELAY_SMARTHOST_PASSWORD_SECRET`: where the password is read from instead.
    pub password_secret: Option<SecretRef>,
    /// TLS from the first byte (465) instead of STARTTLS.
    pub implicit_tls: bool,
    /// PEM file of extra trust anchors for the smarthost's certificate (a private CA); the
    /// public web PKI roots are trusted either way.
    pub ca: Option<PathBuf>,
}

/// One `RELAY_ROUTES` entry (Postfix's `transport_maps` with `smtp:[host]:port`): recipients of
/// `domain` go to `host:port`, found by A/AAAA (or an address literal), never by MX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Lower case, without a trailing dot; matched exactly (no subdomains).
    pub domain: String,
    /// A host name or an IP address (brackets of an IPv6 literal removed).
    pub host: String,
    pub port: u16,
}

/// The variable of the DKIM keys (named in every error about one).
pub const DKIM_KEYS: &str = "RELAY_DKIM_KEYS";

/// `RELAY_DKIM_KEYS`: a comma list of `domain:selector:source` entries
/// ([`KeySpec::parse`]); mail whose `From:` domain is `domain` is signed with that key under
/// `selector`. Only the syntax is checked here; the keys are read and parsed at start by
/// `dkim::load`.
fn dkim_keys(r: &Reader) -> Result<Vec<KeySpec>, ConfigError> {
    let mut specs: Vec<KeySpec> = Vec::new();
    for entry in r.list(DKIM_KEYS) {
        let spec = KeySpec::parse(DKIM_KEYS, &entry)?;
        if specs.iter().any(|s| s.domain == spec.domain && s.selector.eq_ignore_ascii_case(&spec.selector)) {
            return Err(err(DKIM_KEYS, format!("{entry}: the same domain and selector appear twice")));
        }
        specs.push(spec);
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
    /// Per-domain next hops; a route wins over the smarthost and over MX for its domain.
    pub routes: Vec<Route>,
    /// `RELAY_HELO_NAME` and the `RELAY_LOCAL_NAMES`, lower case without a trailing dot: the
    /// names an MX host is recognised as this relay by ([`crate::route::loops`]).
    pub own_names: Vec<String>,
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
    /// Apply the MTA-STS policies of recipient domains to MX delivery (`RELAY_MTA_STS`).
    pub mta_sts: bool,
    /// PEM file of extra trust anchors for the certificates the relay verifies besides the
    /// smarthost's: MTA-STS policy hosts and MX hosts under an `enforce` policy (`RELAY_TLS_CA`).
    pub tls_ca: Option<PathBuf>,
    /// SQS queue that receives a delivery event per recipient outcome.
    pub events_queue_url: Option<String>,
    /// CloudWatch namespace of the EMF metrics.
    pub metrics_namespace: String,
    /// SMTP sessions open at once per next hop in this process (`route::next_hop`).
    pub destination_concurrency: usize,
    /// Transactions one session carries before it is closed (1 = no reuse).
    pub max_messages_per_connection: u32,
    /// How long `relay poll` keeps an idle session for the next batch; under Lambda, zero:
    /// sessions are closed at the end of each invocation.
    pub connection_idle: Duration,
    /// How long a destination that asked us to slow down is left alone, per consecutive
    /// throttling episode; the last entry repeats.
    pub throttle_backoff: Vec<Duration>,
    /// DKIM keys to load at start; empty when nothing is signed.
    pub dkim_keys: Vec<KeySpec>,
    /// `RELAY_SUPPRESSION`: which permanent failures put a recipient on the suppression list
    /// (read before every attempt when `STATE_TABLE` is set).
    pub suppression: AutoSuppress,
    /// `FEEDBACK_DOMAIN`: mail of our own leaves with a return path there (with `STATE_TABLE`).
    pub feedback_domain: Option<String>,
}

impl RelayConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&ProcessEnv)
    }

    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let r = Reader(vars);
        let helo_name = r.hostname("RELAY_HELO_NAME")?;
        let dns_servers = r.addrs("RELAY_DNS_SERVERS", None)?;
        let retry_schedule = schedule(&r, "RELAY_RETRY_SCHEDULE", "2m,5m,10m,15m,30m,1h,2h,4h")?;
        let smarthost = match r.opt("RELAY_SMARTHOST") {
            None => None,
            Some(hp) => {
                let (host, port) = parse_host_port(&hp).map_err(|e| err("RELAY_SMARTHOST", e))?;
                if (host.as_str(), port).to_socket_addrs().is_err() && host.parse::<std::net::IpAddr>().is_err() {
                    tracing::warn!(smarthost = %hp, "smarthost name does not resolve now; will retry at delivery");
                }
                let user = r.opt("RELAY_SMARTHOST_USER");
                let password = r.opt("RELAY_SMARTHOST_PASSWORD");
                let password_secret = r
                    .opt("RELAY_SMARTHOST_PASSWORD_SECRET")
                    .map(|arn| SecretRef::parse(&arn).map_err(|e| err("RELAY_SMARTHOST_PASSWORD_SECRET", e)))
                    .transpose()?;
                if password.is_some() && password_secret.is_some() {
                    return Err(err(
                        "RELAY_SMARTHOST_PASSWORD_SECRET",
                        "set RELAY_SMARTHOST_PASSWORD or RELAY_SMARTHOST_PASSWORD_SECRET, not both",
                    ));
                }
                if user.is_some() != (password.is_some() || password_secret.is_some()) {
                    return Err(err(
                        "RELAY_SMARTHOST_PASSWORD",
                        "RELAY_SMARTHOST_USER and RELAY_SMARTHOST_PASSWORD (or RELAY_SMARTHOST_PASSWORD_SECRET) must be set together",
                    ));
                }
                let implicit_tls =
                    r.choice("RELAY_SMARTHOST_TLS", port == 465, &[("starttls", false), ("implicit", true)])?;
                let ca = r.path("RELAY_SMARTHOST_CA")?;
                Some(Smarthost { host, port, user, password, password_secret, implicit_tls, ca })
            }
        };
        let own_names = own_names(&helo_name, &r.list("RELAY_LOCAL_NAMES"))?;
        let routes = match r.opt("RELAY_ROUTES") {
            None => Vec::new(),
            Some(v) => parse_routes(&v, &own_names).map_err(|e| err("RELAY_ROUTES", e))?,
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
            routes,
            own_names,
            tls,
            retry_schedule,
            queue_lifetime,
            delay_warning,
            connect_timeout: r.duration("RELAY_CONNECT_TIMEOUT", "30s")?,
            command_timeout: r.duration("RELAY_COMMAND_TIMEOUT", "5m")?,
            data_timeout: r.duration("RELAY_DATA_TIMEOUT", "10m")?,
            poll_wait,
            store_retry: r.duration("RELAY_STORE_RETRY", "60s")?,
            mta_sts: r.choice("RELAY_MTA_STS", true, &[("on", true), ("off", false)])?,
            tls_ca: r.path("RELAY_TLS_CA")?,
            events_queue_url: r.opt("RELAY_EVENTS_QUEUE_URL"),
            metrics_namespace: shared::metrics::namespace(&r)?,
            destination_concurrency: at_least_one(&r, "RELAY_DESTINATION_CONCURRENCY", 5)?,
            max_messages_per_connection: at_least_one(&r, "RELAY_MAX_MESSAGES_PER_CONNECTION", 100)?,
            connection_idle: r.duration("RELAY_CONNECTION_IDLE", "5s")?,
            throttle_backoff: schedule(&r, "RELAY_THROTTLE_BACKOFF", "1m,2m,4m,8m,16m,30m")?,
            dkim_keys: dkim_keys(&r)?,
            suppression: AutoSuppress::read(&r)?,
            feedback_domain: shared::feedback::read_domain(&r)?,
        })
    }
}

impl RelayConfig {
    /// The route of `domain`, if one is configured (case-insensitive, trailing dot ignored).
    pub fn route_for(&self, domain: &str) -> Option<&Route> {
        let domain = normalise(domain);
        self.routes.iter().find(|r| r.domain == domain)
    }
}

/// A DNS name as configuration and loop detection compare it: lower case, no trailing dot.
pub fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `RELAY_HELO_NAME` first, then each `RELAY_LOCAL_NAMES` entry once, normalised.
fn own_names(helo: &str, local: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut names = vec![normalise(helo)];
    for name in local {
        let n = normalise(name);
        if !valid_hostname(&n) {
            return Err(err("RELAY_LOCAL_NAMES", format!("{name:?} is not a host name")));
        }
        if !names.contains(&n) {
            names.push(n);
        }
    }
    Ok(names)
}

/// `domain=host:port,...`: every domain once, every host a name or an address, and no route
/// pointing back at this relay (that mail would come straight back).
fn parse_routes(value: &str, own_names: &[String]) -> Result<Vec<Route>, String> {
    let mut routes: Vec<Route> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (domain, hop) = item.split_once('=').ok_or_else(|| format!("{item:?} is not domain=host:port"))?;
        let domain = normalise(domain);
        if !valid_hostname(&domain) {
            return Err(format!("{item:?}: {domain:?} is not a domain name"));
        }
        let (host, port) = parse_host_port(hop.trim()).map_err(|e| format!("{item:?}: {e}"))?;
        let host = if host.parse::<IpAddr>().is_ok() { host } else { normalise(&host) };
        if host.parse::<IpAddr>().is_err() && !valid_hostname(&host) {
            return Err(format!("{item:?}: {host:?} is neither a host name nor an IP address"));
        }
        if port == 0 {
            return Err(format!("{item:?}: port 0"));
        }
        if own_names.contains(&host) {
            return Err(format!(
                "{item:?}: {host} is this relay (RELAY_HELO_NAME or RELAY_LOCAL_NAMES); the mail would loop"
            ));
        }
        if routes.iter().any(|r| r.domain == domain) {
            return Err(format!("{domain} has more than one route"));
        }
        routes.push(Route { domain, host, port });
    }
    Ok(routes)
}

/// A comma list of durations (a retry schedule); `default` when unset.
fn schedule(r: &Reader, var: &'static str, default: &str) -> Result<Vec<Duration>, ConfigError> {
    r.opt(var)
        .unwrap_or_else(|| default.to_string())
        .split(',')
        .map(|d| parse_duration(d).map_err(|e| err(var, e)))
        .collect()
}

/// A count that must be at least 1.
fn at_least_one<T: std::str::FromStr + PartialOrd + From<u8>>(
    r: &Reader,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let n = r.parse(var, default)?;
    if n < T::from(1) {
        return Err(err(var, "must be at least 1"));
    }
    Ok(n)
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
        assert!(c.mta_sts, "MTA-STS is on by default");
        assert_eq!(c.tls_ca, None);
        assert!(!RelayConfig::from_vars(&vars(&[("RELAY_MTA_STS", "off")])).unwrap().mta_sts);
        assert_eq!((c.events_queue_url.as_deref(), c.metrics_namespace.as_str()), (None, "SmtpRelay"));
        assert_eq!((c.destination_concurrency, c.max_messages_per_connection), (5, 100));
        assert_eq!(c.connection_idle, Duration::from_secs(5));
        assert_eq!(c.throttle_backoff.first(), Some(&Duration::from_secs(60)));
        assert_eq!(c.throttle_backoff.last(), Some(&Duration::from_secs(1800)));
        assert_eq!((c.suppression, c.feedback_domain.as_deref()), (AutoSuppress::default(), None));

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
            (&[("RELAY_SMARTHOST", "h:587"), ("RELAY_SMARTHOST_PASSWORD_SECRET", SM)], "RELAY_SMARTHOST_PASSWORD"),
            (
                &[
                    ("RELAY_SMARTHOST", "h:587"),
                    ("RELAY_SMARTHOST_USER", "u"),
                    ("RELAY_SMARTHOST_PASSWORD_SECRET", "pw"),
                ],
                "RELAY_SMARTHOST_PASSWORD_SECRET",
            ),
            (
                &[
                    ("RELAY_SMARTHOST", "h:587"),
                    ("RELAY_SMARTHOST_USER", "u"),
                    ("RELAY_SMARTHOST_PASSWORD", "p"),
                    ("RELAY_SMARTHOST_PASSWORD_SECRET", SM),
                ],
                "RELAY_SMARTHOST_PASSWORD_SECRET",
            ),
            (&[("RELAY_SMARTHOST", "h:587"), ("RELAY_SMARTHOST_CA", "/nonexistent.pem")], "RELAY_SMARTHOST_CA"),
            (&[("RELAY_DNS_SERVERS", "8.8.8.8")], "RELAY_DNS_SERVERS"),
            (&[("RELAY_QUEUE_LIFETIME", "0")], "RELAY_QUEUE_LIFETIME"),
            (&[("RELAY_POLL_WAIT", "1m")], "RELAY_POLL_WAIT"),
            (&[("RELAY_STORE_RETRY", "a while")], "RELAY_STORE_RETRY"),
            (&[("RELAY_MTA_STS", "enforce")], "RELAY_MTA_STS"),
            (&[("RELAY_TLS_CA", "/nonexistent.pem")], "RELAY_TLS_CA"),
            (&[("METRICS_NAMESPACE", "no spaces")], "METRICS_NAMESPACE"),
            (&[("RELAY_DESTINATION_CONCURRENCY", "0")], "RELAY_DESTINATION_CONCURRENCY"),
            (&[("RELAY_DESTINATION_CONCURRENCY", "many")], "RELAY_DESTINATION_CONCURRENCY"),
            (&[("RELAY_MAX_MESSAGES_PER_CONNECTION", "0")], "RELAY_MAX_MESSAGES_PER_CONNECTION"),
            (&[("RELAY_MAX_MESSAGES_PER_CONNECTION", "-1")], "RELAY_MAX_MESSAGES_PER_CONNECTION"),
            (&[("RELAY_CONNECTION_IDLE", "briefly")], "RELAY_CONNECTION_IDLE"),
            (&[("RELAY_THROTTLE_BACKOFF", "1m,later")], "RELAY_THROTTLE_BACKOFF"),
            (&[("RELAY_DKIM_KEYS", "example.org:sel")], "RELAY_DKIM_KEYS"),
            (&[("RELAY_SUPPRESSION", "always")], "RELAY_SUPPRESSION"),
            (&[("FEEDBACK_DOMAIN", "not a domain")], "FEEDBACK_DOMAIN"),
        ];
        for (pairs, var) in cases {
            let e = RelayConfig::from_vars(&vars(pairs)).unwrap_err();
            assert_eq!(e.var, *var, "{pairs:?} -> {e}");
        }
    }

    const SM: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:relay/smarthost-AbCdEf";

    #[test]
    fn secret_references() {
        let ssm = "arn:aws:ssm:eu-west-1:123456789012:parameter/relay/smarthost";
        assert_eq!(SecretRef::parse(SM), Ok(SecretRef::SecretsManager(SM.into())));
        assert_eq!(SecretRef::parse(ssm), Ok(SecretRef::Ssm(ssm.into())));
        let cn = "arn:aws-cn:ssm:cn-north-1:123456789012:parameter/pw";
        assert_eq!(SecretRef::parse(cn).map(|s| s.arn().to_string()), Ok(cn.into()));
        for bad in [
            "relay/smarthost",
            "{{resolve:secretsmanager:relay}}",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
            "arn:aws:ssm:us-east-1:123456789012:parameter/",
            "arn:aws:s3:::bucket/key",
            "arn:aws:ssm:us-east-1:1234:parameter/pw",
            "arn:aws:secretsmanager::123456789012:secret:x",
        ] {
            assert!(SecretRef::parse(bad).is_err(), "{bad}");
        }
        let sh = RelayConfig::from_vars(&vars(&[
            ("RELAY_SMARTHOST", "h:587"),
            ("RELAY_SMARTHOST_USER", "u"),
            ("RELAY_SMARTHOST_PASSWORD_SECRET", SM),
        ]))
        .unwrap()
        .smarthost
        .unwrap();
        assert_eq!((sh.password, sh.password_secret), (None, Some(SecretRef::SecretsManager(SM.into()))));
    }

    #[test]
    fn routes_and_local_names() {
        let c = RelayConfig::from_vars(&vars(&[
            ("RELAY_HELO_NAME", "Relay.Example.ORG"),
            ("RELAY_LOCAL_NAMES", "mx.example.org., MX.example.org, nlb-1.elb.amazonaws.com"),
            ("RELAY_ROUTES", " Example.ORG.=Mail.Internal:25 , b.test=[2001:db8::7]:2525,c.test=10.0.0.5:587,"),
        ]))
        .unwrap();
        assert_eq!(c.own_names, ["relay.example.org", "mx.example.org", "nlb-1.elb.amazonaws.com"]);
        let route = |d: &str, h: &str, p: u16| Route { domain: d.into(), host: h.into(), port: p };
        assert_eq!(
            c.routes,
            [
                route("example.org", "mail.internal", 25),
                route("b.test", "2001:db8::7", 2525),
                route("c.test", "10.0.0.5", 587)
            ]
        );
        assert_eq!(c.route_for("EXAMPLE.org."), Some(&c.routes[0]));
        assert_eq!(c.route_for("sub.example.org"), None, "no subdomain matching");

        let unset = RelayConfig::from_vars(&vars(&[("RELAY_HELO_NAME", "relay.example.org")])).unwrap();
        assert!(unset.routes.is_empty());
        assert_eq!(unset.own_names, ["relay.example.org"]);

        let refused = |var: &'static str, value: &str| {
            RelayConfig::from_vars(&vars(&[
                ("RELAY_HELO_NAME", "relay.example.org"),
                ("RELAY_LOCAL_NAMES", "mx.example.org"),
                (var, value),
            ]))
            .map(|_| ())
            .unwrap_err()
        };
        // Syntax: every entry is domain=host:port.
        let malformed = [
            ("example.org", "is not domain=host:port"),
            ("example.org=mail.internal", "is not host:port"),
            ("example.org=mail.internal:99999", "is not host:port"),
            ("example.org=:25", "is not host:port"),
            ("example.org=mail.internal:0", "port 0"),
            ("example.org=bad host:25", "neither a host name nor an IP address"),
            ("=mail.internal:25", "is not a domain name"),
            ("exa mple.org=mail.internal:25", "is not a domain name"),
        ];
        // Meaning: one route per domain, none pointing back at this relay.
        let contradictory = [
            ("a.test=h1:25,A.TEST.=h2:25", "a.test has more than one route"),
            ("a.test=relay.example.org.:25", "the mail would loop"),
            ("a.test=MX.example.org:25", "the mail would loop"),
        ];
        for (value, reason) in malformed.into_iter().chain(contradictory) {
            let e = refused("RELAY_ROUTES", value);
            assert!(e.var == "RELAY_ROUTES" && e.reason.contains(reason), "{value:?} -> {e}");
        }
        let e = refused("RELAY_LOCAL_NAMES", "mx.example.org,not a name");
        assert_eq!(e.to_string(), "RELAY_LOCAL_NAMES: \"not a name\" is not a host name");
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
