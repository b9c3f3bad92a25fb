//! Builders shared by the unit tests: a configuration from a few variables and a job.

use std::collections::HashMap;

use crate::config::RelayConfig;
use shared::{Job, Recipient};

/// The queue id of [`job`]s.
pub const QID: &str = "01JQUEUEID0000000000000000";

/// A relay configuration: spool settings, `RELAY_HELO_NAME=relay.test`, then `pairs`.
pub fn config(pairs: &[(&str, &str)]) -> RelayConfig {
    let base = [("SPOOL_BUCKET", "b"), ("SPOOL_QUEUE_URL", "http://q"), ("RELAY_HELO_NAME", "relay.test")];
    let vars: HashMap<String, String> = base.iter().chain(pairs).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    RelayConfig::from_vars(&vars).unwrap()
}

/// A first-attempt job from `alice@a.test` to pending `rcpts` at `domain`.
pub fn job(domain: &str, rcpts: &[&str], first_seen: i64) -> Job {
    Job::first_attempt(QID, "alice@a.test", domain, rcpts.iter().map(|r| Recipient::new(*r)).collect(), 10, first_seen)
}
