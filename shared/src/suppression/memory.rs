//! The suppression list in memory, for the unit tests of every program: entries by key, every
//! call counted (`BatchGetItem` counts once per 100 addresses, as the table's requests do), and
//! failures on demand.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::dynamo::MAX_BATCH_KEYS;
use super::{Entry, ListError, Page, SuppressionList, distinct_keys, key};

#[derive(Clone, Default)]
pub struct MemoryList {
    pub entries: Arc<Mutex<BTreeMap<String, Entry>>>,
    /// `"Op"` per request, in order.
    pub calls: Arc<Mutex<Vec<&'static str>>>,
    /// Every call fails while set.
    pub broken: Arc<AtomicBool>,
}

impl MemoryList {
    /// A list holding `entries`.
    pub fn with(entries: &[Entry]) -> Self {
        let list = Self::default();
        list.entries.lock().unwrap().extend(entries.iter().map(|e| (key(&e.address), e.clone())));
        list
    }

    /// The requests made so far.
    pub fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }

    /// The entry of `address`, if listed.
    pub fn entry(&self, address: &str) -> Option<Entry> {
        self.entries.lock().unwrap().get(&key(address)).cloned()
    }

    fn call(&self, op: &'static str) -> Result<(), ListError> {
        self.calls.lock().unwrap().push(op);
        if self.broken.load(Ordering::SeqCst) {
            return Err(ListError { op, reason: "injected failure".into() });
        }
        Ok(())
    }
}

#[async_trait]
impl SuppressionList for MemoryList {
    async fn lookup(&self, addresses: &[&str]) -> Result<Vec<Entry>, ListError> {
        let keys = distinct_keys(addresses);
        for _ in keys.chunks(MAX_BATCH_KEYS) {
            self.call("BatchGetItem")?;
        }
        let entries = self.entries.lock().unwrap();
        Ok(keys.iter().filter_map(|k| entries.get(k).cloned()).collect())
    }

    async fn add(&self, entry: &Entry) -> Result<bool, ListError> {
        self.call("PutItem")?;
        let mut entries = self.entries.lock().unwrap();
        let k = key(&entry.address);
        if entries.contains_key(&k) {
            return Ok(false);
        }
        entries.insert(k, entry.clone());
        Ok(true)
    }

    async fn set(&self, entry: &Entry) -> Result<(), ListError> {
        self.call("PutItem")?;
        self.entries.lock().unwrap().insert(key(&entry.address), entry.clone());
        Ok(())
    }

    async fn get(&self, address: &str) -> Result<Option<Entry>, ListError> {
        self.call("GetItem")?;
        Ok(self.entry(address))
    }

    async fn remove(&self, address: &str) -> Result<bool, ListError> {
        self.call("DeleteItem")?;
        Ok(self.entries.lock().unwrap().remove(&key(address)).is_some())
    }

    async fn page(&self, after: Option<&str>, limit: usize) -> Result<Page, ListError> {
        self.call("Query")?;
        let entries = self.entries.lock().unwrap();
        let rest = entries.iter().filter(|(k, _)| after.is_none_or(|a| k.as_str() > a));
        let mut page: Vec<(&String, &Entry)> = rest.take(limit.max(1) + 1).collect();
        let more = page.len() > limit.max(1);
        page.truncate(limit.max(1));
        let next = if more { page.last().map(|(k, _)| k.to_string()) } else { None };
        Ok(Page { entries: page.into_iter().map(|(_, e)| e.clone()).collect(), next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suppression::Reason;

    fn entry(a: &str) -> Entry {
        Entry { address: a.into(), reason: Reason::Bounce, since: 1, queue_id: None, diagnostic: String::new() }
    }

    #[tokio::test]
    async fn behaves_like_the_table() {
        let list = MemoryList::default();
        assert!(list.add(&entry("Bob@B.test")).await.unwrap());
        assert!(!list.add(&entry("bob@b.test")).await.unwrap(), "listed already: the first stays");
        assert_eq!(list.entry("BOB@b.test").unwrap().address, "Bob@B.test");
        let many: Vec<String> = (0..150).map(|i| format!("r{i}@x.test")).collect();
        let mut asked: Vec<&str> = many.iter().map(String::as_str).collect();
        asked.push("bob@B.TEST");
        asked.push("Bob@B.test");
        assert_eq!(list.lookup(&asked).await.unwrap().len(), 1);
        assert_eq!(list.calls().iter().filter(|c| **c == "BatchGetItem").count(), 2, "151 distinct keys: two requests");
        for a in ["a@x.test", "c@x.test", "d@x.test"] {
            list.set(&entry(a)).await.unwrap();
        }
        let p1 = list.page(None, 2).await.unwrap();
        assert_eq!(p1.entries.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(), ["a@x.test", "Bob@B.test"]);
        let p2 = list.page(p1.next.as_deref(), 2).await.unwrap();
        assert_eq!(p2.entries.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(), ["c@x.test", "d@x.test"]);
        assert_eq!(p2.next, None);
        assert!(list.remove("A@X.test").await.unwrap() && !list.remove("a@x.test").await.unwrap());
        list.broken.store(true, Ordering::SeqCst);
        assert!(list.lookup(&["x@y.test"]).await.is_err());
    }
}
