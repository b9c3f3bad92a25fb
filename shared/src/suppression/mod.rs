//! The suppression list (SES's account-level list, self-hosted): recipients the relay no longer
//! attempts, because their mailbox does not exist (a permanent failure, [`classify`]) or they
//! complained, or because an operator said so. An entry stays until it is removed.
//!
//! Addresses compare without case: an entry is keyed by the address in lower case ([`key`]) and
//! keeps the address as first seen for display. The list lives in the state table
//! ([`dynamo`]: one item per address under one partition key, so a job's recipients are one
//! BatchGetItem and the whole list pages with Query); [`memory`] is the in-memory one for tests.
//!
//! Who adds: the relay (a remote's permanent "no such mailbox" reply), the ingress (an
//! asynchronous bounce or a complaint that came back through the feedback domain), both as
//! `RELAY_SUPPRESSION` allows ([`AutoSuppress`]); and `relayctl suppress add`. Who reads: the
//! relay before every attempt, and `relayctl`.

use async_trait::async_trait;

use crate::config::{ConfigError, Reader, err};

pub mod classify;
pub mod dynamo;
pub mod memory;

pub use dynamo::DynamoList;
pub use memory::MemoryList;

/// Why an address is on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A permanent failure said the mailbox does not exist (or an operator said it bounces).
    Bounce,
    /// The recipient reported a message as spam (or an operator said so).
    Complaint,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Bounce => "bounce",
            Reason::Complaint => "complaint",
        }
    }

    /// `bounce` or `complaint`, without case.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "bounce" => Some(Reason::Bounce),
            "complaint" => Some(Reason::Complaint),
            _ => None,
        }
    }
}

/// One suppressed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// As first seen (the key is its lower case).
    pub address: String,
    pub reason: Reason,
    /// When it was added (Unix seconds).
    pub since: i64,
    /// The message that caused it, when one did.
    pub queue_id: Option<String>,
    /// What was said: the remote's reply, the report's diagnostic, the complaint's feedback type,
    /// or the operator's note.
    pub diagnostic: String,
}

/// The key an address is listed under: its lower case (Unicode-aware, for SMTPUTF8 addresses).
pub fn key(address: &str) -> String {
    address.trim().to_lowercase()
}

/// The keys of `addresses`, each once, in key order (BatchGetItem refuses a request that names
/// one key twice).
pub fn distinct_keys(addresses: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = addresses.iter().map(|a| key(a)).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// `RELAY_SUPPRESSION`: which reasons add a recipient automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoSuppress {
    pub bounce: bool,
    pub complaint: bool,
}

impl Default for AutoSuppress {
    fn default() -> Self {
        Self { bounce: true, complaint: true }
    }
}

impl AutoSuppress {
    /// Nothing is added automatically (the list is still read).
    pub const OFF: AutoSuppress = AutoSuppress { bounce: false, complaint: false };

    /// Whether `reason` adds a recipient automatically.
    pub fn adds(self, reason: Reason) -> bool {
        match reason {
            Reason::Bounce => self.bounce,
            Reason::Complaint => self.complaint,
        }
    }

    /// `bounce,complaint` (the default), either one, or `off`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut out = Self::OFF;
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match (item.to_ascii_lowercase().as_str(), Reason::parse(item)) {
                ("off", _) if value.trim().eq_ignore_ascii_case("off") => return Ok(Self::OFF),
                (_, Some(Reason::Bounce)) => out.bounce = true,
                (_, Some(Reason::Complaint)) => out.complaint = true,
                _ => return Err(format!("{item:?}: expected bounce, complaint (comma-separated) or off")),
            }
        }
        Ok(out)
    }

    /// `RELAY_SUPPRESSION`, both programs.
    pub fn read(r: &Reader) -> Result<Self, ConfigError> {
        const VAR: &str = "RELAY_SUPPRESSION";
        match r.opt(VAR) {
            None => Ok(Self::default()),
            Some(v) => Self::parse(&v).map_err(|e| err(VAR, e)),
        }
    }
}

/// A state-table call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} on the suppression list: {reason}")]
pub struct ListError {
    pub op: &'static str,
    pub reason: String,
}

/// One page of the list, in address order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// Where the next page starts (the last key of this one); `None` at the end.
    pub next: Option<String>,
}

/// The suppression list.
#[async_trait]
pub trait SuppressionList: Send + Sync {
    /// The entries of those of `addresses` that are listed, in as few requests as the store
    /// allows (the relay asks once per job: one BatchGetItem for up to 100 addresses).
    async fn lookup(&self, addresses: &[&str]) -> Result<Vec<Entry>, ListError>;
    /// Add `entry` unless its address is listed already (the first reason stays); true when added.
    async fn add(&self, entry: &Entry) -> Result<bool, ListError>;
    /// Add or replace `entry` (an operator's word wins).
    async fn set(&self, entry: &Entry) -> Result<(), ListError>;
    /// The entry of `address`, if listed.
    async fn get(&self, address: &str) -> Result<Option<Entry>, ListError>;
    /// Take `address` off the list; true when it was listed.
    async fn remove(&self, address: &str) -> Result<bool, ListError>;
    /// Up to `limit` entries whose key sorts after `after` (from the start when `None`).
    async fn page(&self, after: Option<&str>, limit: usize) -> Result<Page, ListError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_suppression_values() {
        let both = AutoSuppress { bounce: true, complaint: true };
        let cases: &[(&str, Result<AutoSuppress, ()>)] = &[
            ("bounce,complaint", Ok(both)),
            (" Complaint , BOUNCE ", Ok(both)),
            ("bounce", Ok(AutoSuppress { bounce: true, complaint: false })),
            ("complaint", Ok(AutoSuppress { bounce: false, complaint: true })),
            ("off", Ok(AutoSuppress::OFF)),
            ("OFF", Ok(AutoSuppress::OFF)),
            ("bounce,off", Err(())),
            ("bounces", Err(())),
            ("manual", Err(())),
        ];
        for (value, want) in cases {
            assert_eq!(AutoSuppress::parse(value).map_err(|_| ()), *want, "{value}");
        }
        let unset = crate::config::vars_with_spool(&[]);
        assert_eq!(AutoSuppress::read(&Reader(&unset)).unwrap(), both);
        let bad = crate::config::vars_with_spool(&[("RELAY_SUPPRESSION", "sometimes")]);
        assert_eq!(AutoSuppress::read(&Reader(&bad)).unwrap_err().var, "RELAY_SUPPRESSION");
        assert!(both.adds(Reason::Complaint) && !AutoSuppress::OFF.adds(Reason::Bounce));
    }

    #[test]
    fn keys_ignore_case_and_reasons_read_back() {
        assert_eq!(key(" Bob@Example.COM "), "bob@example.com");
        assert_eq!(key("JÖRG@Bücher.DE"), "jörg@bücher.de");
        for r in [Reason::Bounce, Reason::Complaint] {
            assert_eq!(Reason::parse(&r.as_str().to_uppercase()), Some(r));
        }
        assert_eq!(Reason::parse("manual"), None);
    }
}
