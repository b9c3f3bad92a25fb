//! In-memory [`Spool`] and [`Queue`] (and [`MemoryEvents`], the shared in-memory events queue):
//! the unit tests' S3 and SQS, and the store behind the
//! delivery-engine benchmark (`examples/engine_bench.rs`), which measures the relay's own
//! delivery rate without a storage service in the way. Not for production: nothing persists.
//!
//! Both keep a [`Ledger`] (shared when the tests give them the same one): every call in order,
//! and failures to inject per operation, so a test can break the store at any step of a job.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shared::meta::MessageMeta;
use shared::state::JobState;
use shared::{Job, keys};

pub use shared::events::MemoryEvents;

use crate::store::{BatchError, Expect, PolicyStore, Queue, Spool, StoreError, Stored};

/// Calls made, and failures to inject: `fail("PutState", n)` makes the next `n` such calls fail.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<LedgerInner>>);

#[derive(Default)]
struct LedgerInner {
    calls: Vec<String>,
    failures: HashMap<&'static str, u32>,
}

impl Ledger {
    /// Fail the next `times` calls of `op` (`u32::MAX`: until [`Ledger::heal`]).
    pub fn fail(&self, op: &'static str, times: u32) {
        self.0.lock().unwrap().failures.insert(op, times);
    }

    /// Stop injecting failures.
    pub fn heal(&self) {
        self.0.lock().unwrap().failures.clear();
    }

    /// Every call so far as `"Op target"`, failed ones marked `" (failed)"`.
    pub fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().calls.clone()
    }

    /// Calls of `op` that succeeded.
    pub fn count(&self, op: &str) -> usize {
        self.calls().iter().filter(|c| c.split(' ').next() == Some(op) && !c.ends_with("(failed)")).count()
    }

    fn call(&self, op: &'static str, target: &str) -> Result<(), StoreError> {
        let mut inner = self.0.lock().unwrap();
        let fail = match inner.failures.get_mut(op) {
            Some(n) if *n > 0 => {
                *n = n.saturating_sub(u32::from(*n != u32::MAX));
                true
            }
            _ => false,
        };
        inner.calls.push(if fail { format!("{op} {target} (failed)") } else { format!("{op} {target}") });
        if fail { Err(StoreError::new(op, target, "injected failure")) } else { Ok(()) }
    }
}

/// Objects by key (messages, states, records, MTA-STS policies), and the ledger.
#[derive(Clone, Default)]
pub struct MemorySpool(pub Arc<Mutex<HashMap<String, Vec<u8>>>>, pub Ledger);

/// The ETag of some bytes (S3's is their MD5; any content hash does here).
fn etag(bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

impl MemorySpool {
    /// The stored state of `queue_id`'s job for `domain`, if any.
    pub fn state(&self, queue_id: &str, domain: &str) -> Option<JobState> {
        let objects = self.0.lock().unwrap();
        objects
            .get(&keys::state_key(queue_id, domain))
            .map(|b| JobState::from_json(&String::from_utf8_lossy(b)).unwrap())
    }
}

#[async_trait]
impl Spool for MemorySpool {
    async fn get_message(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.1.call("GetMessage", key)?;
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    async fn put_message(&self, key: &str, bytes: Vec<u8>, _meta: &MessageMeta) -> Result<(), StoreError> {
        self.1.call("PutMessage", key)?;
        self.0.lock().unwrap().insert(key.into(), bytes);
        Ok(())
    }
    async fn delete_message(&self, key: &str) -> Result<(), StoreError> {
        self.1.call("DeleteMessage", key)?;
        self.0.lock().unwrap().remove(key);
        Ok(())
    }
    async fn get_state(&self, queue_id: &str, domain: &str) -> Result<Option<Stored>, StoreError> {
        let key = keys::state_key(queue_id, domain);
        self.1.call("GetState", &key)?;
        let objects = self.0.lock().unwrap();
        let Some(bytes) = objects.get(&key) else { return Ok(None) };
        let state =
            JobState::from_json(&String::from_utf8_lossy(bytes)).map_err(|e| StoreError::new("GetState", &key, e))?;
        Ok(Some(Stored { state, etag: etag(bytes) }))
    }
    async fn put_state(&self, state: &JobState, expect: Expect<'_>) -> Result<Option<String>, StoreError> {
        let key = keys::state_key(&state.queue_id, &state.domain);
        self.1.call("PutState", &key)?;
        let mut objects = self.0.lock().unwrap();
        let holds = match (expect, objects.get(&key)) {
            (Expect::Absent, None) => true,
            (Expect::Etag(e), Some(b)) => etag(b) == e,
            _ => false,
        };
        if !holds {
            return Ok(None);
        }
        let bytes = state.to_json().into_bytes();
        let tag = etag(&bytes);
        objects.insert(key, bytes);
        Ok(Some(tag))
    }
    async fn record_exists(&self, queue_id: &str, recipient: &str) -> Result<bool, StoreError> {
        let key = keys::record_key(queue_id, recipient);
        self.1.call("HeadRecord", &key)?;
        Ok(self.0.lock().unwrap().contains_key(&key))
    }
}

#[async_trait]
impl PolicyStore for MemorySpool {
    async fn get_policy(&self, domain: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.lock().unwrap().get(&keys::mta_sts_key(domain)).cloned())
    }
    async fn put_policy(&self, domain: &str, json: Vec<u8>) -> Result<(), StoreError> {
        self.0.lock().unwrap().insert(keys::mta_sts_key(domain), json);
        Ok(())
    }
}

/// Every job sent, with its delay, in order; and the ledger.
#[derive(Clone, Default)]
pub struct MemoryQueue(pub Arc<Mutex<Vec<(Job, Duration)>>>, pub Ledger);

#[async_trait]
impl Queue for MemoryQueue {
    async fn send(&self, job: &Job, delay: Duration) -> Result<(), StoreError> {
        self.1.call("SendMessage", &job.queue_id)?;
        self.0.lock().unwrap().push((job.clone(), delay));
        Ok(())
    }
    async fn send_batch(&self, jobs: &[(Job, Duration)]) -> Result<(), BatchError> {
        let target = jobs.iter().map(|(j, _)| j.queue_id.as_str()).collect::<Vec<_>>().join(",");
        self.1
            .call("SendMessageBatch", &target)
            .map_err(|error| BatchError { unsent: (0..jobs.len()).collect(), error })?;
        self.0.lock().unwrap().extend(jobs.iter().cloned());
        Ok(())
    }
}
