//! In-memory [`Spool`], [`Queue`] and [`EventSink`]: the unit tests' S3 and SQS, and the store behind the
//! delivery-engine benchmark (`examples/engine_bench.rs`), which measures the relay's own
//! delivery rate without a storage service in the way. Not for production: nothing persists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shared::{Job, keys};

use crate::decide::events::Event;
use crate::store::{EventSink, PolicyStore, Queue, Spool, StoreError};

/// Objects by key: messages at their message keys, delivery records at their record keys, MTA-STS
/// policies at their policy keys.
#[derive(Clone, Default)]
pub struct MemorySpool(pub Arc<Mutex<HashMap<String, Vec<u8>>>>);

#[async_trait]
impl Spool for MemorySpool {
    async fn get_message(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let missing = || StoreError { op: "GetObject", target: key.into(), reason: "NoSuchKey".into() };
        self.0.lock().unwrap().get(key).cloned().ok_or_else(missing)
    }
    async fn record_exists(&self, queue_id: &str, recipient: &str) -> Result<bool, StoreError> {
        Ok(self.0.lock().unwrap().contains_key(&keys::record_key(queue_id, recipient)))
    }
    async fn put_record_if_absent(&self, queue_id: &str, recipient: &str, body: &str) -> Result<bool, StoreError> {
        let mut objects = self.0.lock().unwrap();
        let key = keys::record_key(queue_id, recipient);
        if objects.contains_key(&key) {
            return Ok(false);
        }
        objects.insert(key, body.as_bytes().to_vec());
        Ok(true)
    }
    async fn put_message(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.0.lock().unwrap().insert(key.into(), bytes);
        Ok(())
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

/// Every job sent, with its delay, in order.
#[derive(Clone, Default)]
pub struct MemoryQueue(pub Arc<Mutex<Vec<(Job, Duration)>>>);

#[async_trait]
impl Queue for MemoryQueue {
    async fn send(&self, job: &Job, delay: Duration) -> Result<(), StoreError> {
        self.0.lock().unwrap().push((job.clone(), delay));
        Ok(())
    }
}

/// Every publication of delivery events (one per batch), in order.
#[derive(Clone, Default)]
pub struct MemoryEvents(pub Arc<Mutex<Vec<Vec<Event>>>>);

#[async_trait]
impl EventSink for MemoryEvents {
    async fn publish(&self, events: Vec<Event>) {
        self.0.lock().unwrap().push(events);
    }
}
