//! Failed AUTHs counted in this task: a bounded LRU map (as the rate limit keeps its state), so
//! a flood of addresses can only make the task forget addresses that went quiet.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use async_trait::async_trait;
use lru::LruCache;

use super::{Failures, LockoutSpec, Tally, count};

/// Addresses whose failures are kept; the least recently used beyond this is forgotten.
pub const MAX_KEYS: usize = 100_000;

pub struct MemoryFailures(Mutex<LruCache<String, Tally>>);

impl Default for MemoryFailures {
    fn default() -> Self {
        Self::with_capacity(NonZeroUsize::new(MAX_KEYS).expect("non-zero"))
    }
}

impl MemoryFailures {
    pub fn with_capacity(keys: NonZeroUsize) -> Self {
        Self(Mutex::new(LruCache::new(keys)))
    }
}

#[async_trait]
impl Failures for MemoryFailures {
    async fn get(&self, key: &str) -> Result<Option<Tally>, String> {
        Ok(self.0.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied())
    }

    async fn add(&self, key: &str, spec: &LockoutSpec, now: i64) -> Result<Tally, String> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let next = count(map.get(key).copied(), spec, now);
        map.put(key.to_string(), next);
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded() {
        let m = MemoryFailures::with_capacity(NonZeroUsize::new(2).unwrap());
        let spec = LockoutSpec::DEFAULT;
        for k in ["a", "b", "a", "c"] {
            m.add(k, &spec, 100).await.unwrap();
        }
        assert_eq!(m.get("a").await.unwrap().map(|t| t.failures), Some(2));
        assert_eq!(m.get("b").await.unwrap(), None, "the least recently used went");
    }
}
