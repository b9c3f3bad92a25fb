//! relayctl's settings: the spool bucket and queue (the same variables the relay reads), and the
//! names a DSN from `cancel --bounce` is signed with (the relay's, so it reads like the relay's
//! own bounces).

use shared::config::{ConfigError, ProcessEnv, Reader, SpoolConfig, Vars};

/// Every variable relayctl reads (besides the standard AWS ones); docs/configuration.md lists them.
#[cfg_attr(not(test), allow(dead_code))]
pub const CTL_VARS: &[&str] =
    &["SPOOL_BUCKET", "SPOOL_QUEUE_URL", "STATE_TABLE", "RELAY_HELO_NAME", "RELAY_BOUNCE_FROM"];

/// relayctl settings.
#[derive(Debug, Clone)]
pub struct CtlConfig {
    pub spool: SpoolConfig,
    /// `RELAY_HELO_NAME` (system host name when unset): Reporting-MTA of a cancel DSN.
    pub helo_name: String,
    /// `RELAY_BOUNCE_FROM` (`MAILER-DAEMON@<helo name>`): its From.
    pub bounce_from: String,
}

impl CtlConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&ProcessEnv)
    }

    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let r = Reader(vars);
        let helo_name = r.hostname("RELAY_HELO_NAME")?;
        Ok(Self {
            spool: SpoolConfig::read(&r)?,
            bounce_from: r.opt("RELAY_BOUNCE_FROM").unwrap_or_else(|| format!("MAILER-DAEMON@{helo_name}")),
            helo_name,
        })
    }

    /// The relay configuration DSNs are built with: these names, every other setting default.
    pub fn relay_config(&self) -> relay::config::RelayConfig {
        let vars: std::collections::HashMap<String, String> = [
            ("SPOOL_BUCKET", self.spool.bucket.as_str()),
            ("SPOOL_QUEUE_URL", self.spool.queue_url.as_str()),
            ("RELAY_HELO_NAME", self.helo_name.as_str()),
            ("RELAY_BOUNCE_FROM", self.bounce_from.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        relay::config::RelayConfig::from_vars(&vars).expect("defaults and checked names always parse")
    }
}

#[cfg(test)]
mod tests {
    use shared::config::vars_with_spool;

    use super::*;

    #[test]
    fn spool_is_required_and_names_follow_the_relay() {
        let c = CtlConfig::from_vars(&vars_with_spool(&[("RELAY_HELO_NAME", "relay.example.org")])).unwrap();
        assert_eq!(c.bounce_from, "MAILER-DAEMON@relay.example.org");
        assert_eq!(c.relay_config().helo_name, "relay.example.org");
        let e = CtlConfig::from_vars(&std::collections::HashMap::<String, String>::new()).unwrap_err();
        assert_eq!(e.var, "SPOOL_BUCKET");
        let e = CtlConfig::from_vars(&vars_with_spool(&[("RELAY_HELO_NAME", "bad name")])).unwrap_err();
        assert_eq!(e.var, "RELAY_HELO_NAME");
    }

    /// Records which variables are asked for.
    struct Asked(std::cell::RefCell<Vec<String>>);

    impl Vars for Asked {
        fn var(&self, name: &str) -> Option<String> {
            self.0.borrow_mut().push(name.to_string());
            Some("x.test".into())
        }
    }

    #[test]
    fn ctl_vars_lists_every_variable_read() {
        let asked = Asked(Default::default());
        CtlConfig::from_vars(&asked).unwrap();
        let mut read = asked.0.into_inner();
        read.sort();
        read.dedup();
        let mut listed: Vec<String> = CTL_VARS.iter().map(|v| v.to_string()).collect();
        listed.sort();
        assert_eq!(read, listed);
    }
}
