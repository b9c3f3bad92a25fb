//! Configuration from the environment: what every program shares.
//!
//! Each program owns its settings and their parsing (`ingress::config`, `relay::config`,
//! `relayctl`'s); this module holds what they have in common: where variables come from
//! ([`Vars`]), the error that names a variable ([`ConfigError`]), the typed readers and value
//! parsers ([`read`]), and the spool settings every program needs ([`SpoolConfig`]). A bad value
//! stops the program at start with a [`ConfigError`].

use std::collections::HashMap;

pub mod read;

pub use read::{Reader, parse_duration, parse_host_port, valid_hostname};

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

/// A [`ConfigError`] for `var`.
pub fn err(var: &'static str, reason: impl Into<String>) -> ConfigError {
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

/// Settings every program needs: the spool bucket, the job queue, and the state table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub bucket: String,
    pub queue_url: String,
    /// `STATE_TABLE`: the DynamoDB table of [`crate::table`]; unset turns its features off.
    pub state_table: Option<String>,
}

/// The variables [`SpoolConfig`] reads.
pub const SPOOL_VARS: &[&str] = &["SPOOL_BUCKET", "SPOOL_QUEUE_URL", "STATE_TABLE"];

impl SpoolConfig {
    pub fn read(r: &Reader) -> Result<Self, ConfigError> {
        Ok(Self {
            bucket: r.required("SPOOL_BUCKET")?,
            queue_url: r.required("SPOOL_QUEUE_URL")?,
            state_table: r.opt("STATE_TABLE"),
        })
    }
}

/// Test helper: a variable map with the spool settings set, then `pairs`.
pub fn vars_with_spool(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    [("SPOOL_BUCKET", "b"), ("SPOOL_QUEUE_URL", "http://q")]
        .iter()
        .chain(pairs)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_settings_are_required() {
        let mut m = vars_with_spool(&[]);
        assert_eq!(SpoolConfig::read(&Reader(&m)).unwrap().bucket, "b");
        assert_eq!(SpoolConfig::read(&Reader(&m)).unwrap().state_table, None);
        m.insert("STATE_TABLE".into(), " relay-state ".into());
        assert_eq!(SpoolConfig::read(&Reader(&m)).unwrap().state_table.as_deref(), Some("relay-state"));
        m.remove("SPOOL_BUCKET");
        assert_eq!(SpoolConfig::read(&Reader(&m)).unwrap_err().to_string(), "SPOOL_BUCKET: must be set");
    }
}
