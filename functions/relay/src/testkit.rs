//! Builders shared by the unit tests: a configuration from a few variables, a job, a DNS
//! resolver answering from a table, and MTA-STS with a scripted policy fetcher.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::config::RelayConfig;
use crate::route::{Lookup, MtaSts, Resolver};
use crate::store::memory::MemorySpool;
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

/// A [`Resolver`] answering from tables (NXDOMAIN for names not in them), remembering the
/// questions it was asked.
#[derive(Default)]
pub struct StaticDns {
    mx: HashMap<String, Lookup<Vec<(u16, String)>>>,
    ips: HashMap<String, Lookup<Vec<IpAddr>>>,
    asked: Mutex<Vec<String>>,
}

impl StaticDns {
    pub fn mx(mut self, domain: &str, answer: Lookup<Vec<(u16, String)>>) -> Self {
        self.mx.insert(domain.to_string(), answer);
        self
    }

    pub fn ips(mut self, host: &str, answer: Lookup<Vec<IpAddr>>) -> Self {
        self.ips.insert(host.to_string(), answer);
        self
    }

    /// The questions so far, as `MX name` or `A/AAAA name`.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

#[async_trait]
impl Resolver for StaticDns {
    async fn mx(&self, domain: &str) -> Lookup<Vec<(u16, String)>> {
        self.asked.lock().unwrap().push(format!("MX {domain}"));
        self.mx.get(domain).cloned().unwrap_or(Lookup::NxDomain)
    }

    async fn ips(&self, host: &str) -> Lookup<Vec<IpAddr>> {
        self.asked.lock().unwrap().push(format!("A/AAAA {host}"));
        self.ips.get(host).cloned().unwrap_or(Lookup::NxDomain)
    }
}

/// A policy [`Fetcher`](crate::route::mta_sts::Fetcher) answering from a table (domain → policy
/// text or error; an unknown domain has no policy server), remembering every domain asked.
#[derive(Clone, Default)]
pub struct FakeFetcher {
    pub answers: Arc<Mutex<HashMap<String, Result<String, String>>>>,
    pub calls: Arc<Mutex<Vec<String>>>,
}

impl FakeFetcher {
    /// Answer `domain` with `answer` from now on.
    pub fn set(&self, domain: &str, answer: Result<&str, &str>) {
        let answer = answer.map(str::to_string).map_err(str::to_string);
        self.answers.lock().unwrap().insert(domain.to_string(), answer);
    }

    pub fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

#[async_trait]
impl crate::route::mta_sts::Fetcher for FakeFetcher {
    async fn fetch(&self, domain: &str, _resolver: &dyn Resolver) -> Result<String, String> {
        self.calls.lock().unwrap().push(domain.to_string());
        let answers = self.answers.lock().unwrap();
        answers.get(domain).cloned().unwrap_or_else(|| Err(format!("mta-sts.{domain}: connection refused")))
    }
}

/// MTA-STS over the in-memory spool with a [`FakeFetcher`].
pub fn mta_sts(spool: &MemorySpool, fetcher: &FakeFetcher) -> MtaSts {
    MtaSts::new(Box::new(spool.clone()), Box::new(fetcher.clone()))
}
