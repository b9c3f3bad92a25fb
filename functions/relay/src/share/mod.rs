//! What every relay worker shares through the state table (`STATE_TABLE`, `shared::table`):
//! every Lambda instance and every `relay poll` sees the same items, so a rule kept here holds
//! across all of them, not per process.
//!
//! - [`lease`]: one worker at a time delivers a job's pending recipients. A copy of the job that
//!   arrives meanwhile (its SQS visibility ran out, or SQS delivered it twice) is put back on the
//!   queue for a moment instead of being delivered beside the first.
//! - [`slots`]: `RELAY_DESTINATION_CONCURRENCY` sessions per next hop across all workers, and a
//!   destination's "slow down" hold seen by every worker.
//!
//! Both are **claims**: an item that one holder owns until a time, after which anyone may take
//! it, so whatever a crashed worker held frees itself ([`Table`]). The decisions are pure
//! functions of the items read and the clock; the table sits behind [`Table`] ([`dynamo`] is
//! DynamoDB, [`memory`] an in-memory one for tests). Item layout: docs/architecture.md#dynamodb.
//!
//! When the table cannot be reached these features fail **open** — the job is delivered
//! without a lease, the session opened under the process's own limit — and say so in the log:
//! the per-job state in S3 stays the record of what was delivered, so an outage of the table
//! only reopens the rare window these close, where failing closed would stop all delivery.

use std::collections::BTreeMap;

use async_trait::async_trait;

pub mod dynamo;
pub mod lease;
pub mod memory;
pub mod slots;

pub use dynamo::DynamoTable;
pub use lease::Leases;
pub use slots::SharedSlots;

/// One item a holder claims for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub pk: String,
    pub sk: String,
    /// Who holds it: a token unique to this holding (renewals and the release name it).
    pub owner: String,
    /// Unix milliseconds; from then on anyone may take it.
    pub until_ms: i64,
    /// What else the item records, for operators (the job id of a lease).
    pub note: BTreeMap<String, String>,
}

/// An item as read back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row {
    pub sk: String,
    pub owner: Option<String>,
    /// Unix milliseconds.
    pub until_ms: i64,
    pub note: BTreeMap<String, String>,
}

impl Row {
    /// Still in force at `now_ms`.
    pub fn live(&self, now_ms: i64) -> bool {
        self.until_ms > now_ms
    }
}

/// What a [`Table::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The claim is ours.
    Yes,
    /// Someone else holds it (their item, when the table said).
    No(Option<Row>),
}

/// A call to the state table that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} {key}: {reason}")]
pub struct TableError {
    pub op: &'static str,
    pub key: String,
    pub reason: String,
}

impl TableError {
    pub fn new(op: &'static str, key: &str, reason: impl std::fmt::Display) -> Self {
        Self { op, key: key.to_string(), reason: reason.to_string() }
    }
}

/// The state table as the relay uses it: claims with an owner and an expiry, and the items of
/// one partition.
#[async_trait]
pub trait Table: Send + Sync {
    /// Write `claim` unless a live claim of another owner is there (one conditional write).
    async fn claim(&self, claim: &Claim, now_ms: i64) -> Result<Taken, TableError>;
    /// Move our claim's expiry to `claim.until_ms`; `false` when it is no longer ours.
    async fn renew(&self, claim: &Claim) -> Result<bool, TableError>;
    /// Delete our claim (nothing happens when it is no longer ours).
    async fn release(&self, claim: &Claim) -> Result<(), TableError>;
    /// Every item of partition `pk` (one strongly consistent query).
    async fn query(&self, pk: &str) -> Result<Vec<Row>, TableError>;
    /// Write an ownerless item unless one that lasts longer is there (a hold).
    async fn raise(&self, pk: &str, row: &Row) -> Result<(), TableError>;
}

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The `ttl` (Unix seconds) of an item in force until `until_ms`: DynamoDB removes it some time
/// after that (readers compare `until` themselves).
pub fn ttl_of(until_ms: i64) -> i64 {
    until_ms.div_euclid(1000) + 1
}
