//! An in-memory [`Table`] with DynamoDB's conditional semantics, a ledger of the calls made
//! (what each feature costs in requests) and an outage switch, for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use super::{Claim, Row, Table, TableError, Taken};

type Key = (String, String);

#[derive(Default)]
pub struct MemoryTable {
    rows: Mutex<BTreeMap<Key, Row>>,
    calls: Mutex<Vec<&'static str>>,
    down: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryTable {
    /// Every call fails while `down`.
    pub fn fail(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The item at `key`, if any.
    pub fn row(&self, key: &(String, String)) -> Option<Row> {
        lock(&self.rows).get(key).cloned()
    }

    /// Items of partition `pk`.
    pub fn rows(&self, pk: &str) -> Vec<Row> {
        lock(&self.rows).iter().filter(|((p, _), _)| p == pk).map(|(_, r)| r.clone()).collect()
    }

    /// The calls made so far, by operation (`claim`, `renew`, `release`, `query`, `raise`).
    pub fn calls(&self) -> Vec<&'static str> {
        lock(&self.calls).clone()
    }

    fn call(&self, op: &'static str, key: &str) -> Result<(), TableError> {
        lock(&self.calls).push(op);
        if self.down.load(Ordering::SeqCst) {
            return Err(TableError::new(op, key, "the table is down"));
        }
        Ok(())
    }
}

fn row_of(claim: &Claim) -> Row {
    Row { sk: claim.sk.clone(), owner: Some(claim.owner.clone()), until_ms: claim.until_ms, note: claim.note.clone() }
}

#[async_trait]
impl Table for MemoryTable {
    async fn claim(&self, claim: &Claim, now_ms: i64) -> Result<Taken, TableError> {
        self.call("claim", &claim.pk)?;
        let mut rows = lock(&self.rows);
        let key = (claim.pk.clone(), claim.sk.clone());
        match rows.get(&key) {
            Some(r) if r.live(now_ms) && r.owner.as_deref() != Some(&claim.owner) => Ok(Taken::No(Some(r.clone()))),
            _ => {
                rows.insert(key, row_of(claim));
                Ok(Taken::Yes)
            }
        }
    }

    async fn renew(&self, claim: &Claim) -> Result<bool, TableError> {
        self.call("renew", &claim.pk)?;
        let mut rows = lock(&self.rows);
        match rows.get_mut(&(claim.pk.clone(), claim.sk.clone())) {
            Some(r) if r.owner.as_deref() == Some(&claim.owner) => {
                r.until_ms = claim.until_ms;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, claim: &Claim) -> Result<(), TableError> {
        self.call("release", &claim.pk)?;
        let mut rows = lock(&self.rows);
        let key = (claim.pk.clone(), claim.sk.clone());
        if rows.get(&key).is_some_and(|r| r.owner.as_deref() == Some(&claim.owner)) {
            rows.remove(&key);
        }
        Ok(())
    }

    async fn query(&self, pk: &str) -> Result<Vec<Row>, TableError> {
        self.call("query", pk)?;
        Ok(self.rows(pk))
    }

    async fn raise(&self, pk: &str, row: &Row) -> Result<(), TableError> {
        self.call("raise", pk)?;
        let mut rows = lock(&self.rows);
        let key = (pk.to_string(), row.sk.clone());
        if rows.get(&key).is_none_or(|r| r.until_ms < row.until_ms) {
            rows.insert(key, row.clone());
        }
        Ok(())
    }
}
