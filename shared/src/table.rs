//! The state table (`STATE_TABLE`): one DynamoDB table holding what must be shared by every
//! worker and survive any one of them — the suppression list, delivery leases, shared limits
//! and the AUTH lockout's counters.
//!
//! This module owns the table's shape and conventions, not its items: partition key `pk` (S),
//! sort key `sk` (S), TTL attribute `ttl` (N, epoch seconds), on-demand billing. Each feature
//! owns its own item layout (a `pk` prefix of its own, written down in `docs/architecture.md`).
//! An item whose `ttl` has passed may still be read until DynamoDB removes it (that takes up
//! to a few days), so readers compare `ttl` with the clock themselves ([`expired`]).
//!
//! Unset `STATE_TABLE` turns the features off; each program says so once at start
//! ([`StateTable::announce`]). The client honours the SDK's `AWS_ENDPOINT_URL_DYNAMODB` (tests
//! point it at moto's server).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// The partition key attribute.
pub const PK: &str = "pk";
/// The sort key attribute.
pub const SK: &str = "sk";
/// The TTL attribute (epoch seconds).
pub const TTL: &str = "ttl";

/// The table and a client for it, cheap to clone.
#[derive(Clone, Debug)]
pub struct StateTable {
    pub client: aws_sdk_dynamodb::Client,
    pub name: String,
}

impl StateTable {
    /// The table named by `STATE_TABLE`, or `None` when it is unset. Either way one line says
    /// so, naming what `program` does without it (`off`).
    pub fn announce(name: Option<&str>, client: &aws_sdk_dynamodb::Client, program: &str, off: &str) -> Option<Self> {
        match name {
            Some(name) => {
                tracing::info!(event = "state_table", table = name, program, "state table in use");
                Some(Self { client: client.clone(), name: name.to_string() })
            }
            None => {
                tracing::info!(event = "state_table", program, off, "STATE_TABLE unset: features off");
                None
            }
        }
    }
}

/// A string attribute.
pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The key of one item.
pub fn key(pk: impl Into<String>, sk: impl Into<String>) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

/// A string attribute of an item read back, if present.
pub fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// A number attribute of an item read back, if present and an integer.
pub fn get_n(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

/// True when the item has a `ttl` at or before `now` (DynamoDB deletes such items lazily).
pub fn expired(item: &HashMap<String, AttributeValue>, now: i64) -> bool {
    get_n(item, TTL).is_some_and(|t| t <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_attributes_round_trip() {
        let mut item = key("sup#a@example.com", "-");
        assert_eq!(get_s(&item, PK), Some("sup#a@example.com"));
        assert_eq!(get_s(&item, SK), Some("-"));
        assert_eq!(get_n(&item, TTL), None);
        assert!(!expired(&item, 100), "no ttl: never expires");
        item.insert(TTL.into(), n(100));
        assert_eq!(get_n(&item, TTL), Some(100));
        assert!(expired(&item, 100));
        assert!(!expired(&item, 99));
        item.insert("x".into(), s("not a number"));
        assert_eq!(get_n(&item, "x"), None);
    }
}
