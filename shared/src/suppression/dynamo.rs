//! The suppression list in the state table.
//!
//! **Item layout**: every entry is one item under the same partition key, [`PK`]
//! (`suppressed`), with the lower-cased address as sort key:
//!
//! | attribute | |
//! |---|---|
//! | `pk` | `suppressed` |
//! | `sk` | the address in lower case |
//! | `address` | the address as first seen |
//! | `reason` | `bounce` or `complaint` |
//! | `since` | when it was added, Unix seconds |
//! | `queue_id` | the message that caused it (absent for an operator's entry) |
//! | `diagnostic` | what was said |
//!
//! No `ttl`: an entry stays until it is removed. With the full key computable from an address,
//! a job's pending recipients are **one BatchGetItem** (up to 100 keys; more recipients, one more
//! request per 100), eventually consistent — half a read unit per entry of under 4 KB — and a job
//! whose recipients are not listed writes nothing. With one partition key the whole list is one
//! item collection that Query pages through in address order, never touching other features'
//! items. One partition key serves about 3,000 read units a second before DynamoDB splits it by
//! sort key (the table has no local secondary index, so the collection may split): some 6,000
//! recipient lookups a second.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue};

use super::{Entry, ListError, Page, Reason, SuppressionList, distinct_keys, key};
use crate::table::{self, PK as PK_ATTR, SK, StateTable};

/// The partition key of every suppression entry.
pub const PK: &str = "suppressed";

/// BatchGetItem takes at most 100 keys.
pub const MAX_BATCH_KEYS: usize = 100;

/// Rounds of re-asking for keys DynamoDB left unprocessed (throttling) before giving up.
const UNPROCESSED_ROUNDS: u32 = 4;

/// The item of `entry`.
pub fn to_item(entry: &Entry) -> HashMap<String, AttributeValue> {
    let mut item = table::key(PK, key(&entry.address));
    item.insert("address".into(), table::s(&entry.address));
    item.insert("reason".into(), table::s(entry.reason.as_str()));
    item.insert("since".into(), table::n(entry.since));
    if let Some(q) = &entry.queue_id {
        item.insert("queue_id".into(), table::s(q));
    }
    item.insert("diagnostic".into(), table::s(&entry.diagnostic));
    item
}

/// The entry an item holds; `None` for an item that is not one (or is damaged).
pub fn from_item(item: &HashMap<String, AttributeValue>) -> Option<Entry> {
    if table::get_s(item, PK_ATTR) != Some(PK) {
        return None;
    }
    let address = table::get_s(item, "address").or_else(|| table::get_s(item, SK))?.to_string();
    Some(Entry {
        address,
        reason: table::get_s(item, "reason").and_then(Reason::parse).unwrap_or(Reason::Bounce),
        since: table::get_n(item, "since").unwrap_or_default(),
        queue_id: table::get_s(item, "queue_id").map(String::from),
        diagnostic: table::get_s(item, "diagnostic").unwrap_or_default().to_string(),
    })
}

/// The list in the state table.
#[derive(Clone, Debug)]
pub struct DynamoList {
    pub table: StateTable,
}

fn fail<E: std::error::Error + 'static, R: std::fmt::Debug>(
    op: &'static str,
) -> impl FnOnce(aws_sdk_dynamodb::error::SdkError<E, R>) -> ListError {
    move |e| ListError { op, reason: DisplayErrorContext(e).to_string() }
}

impl DynamoList {
    /// One BatchGetItem for up to [`MAX_BATCH_KEYS`] distinct keys, re-asking for what DynamoDB
    /// left unprocessed.
    async fn batch(&self, keys: &[String]) -> Result<Vec<Entry>, ListError> {
        let mut pending: Vec<HashMap<String, AttributeValue>> = keys.iter().map(|k| table::key(PK, k)).collect();
        let mut found = Vec::new();
        for round in 0..UNPROCESSED_ROUNDS {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(pending))
                .build()
                .map_err(|e| ListError { op: "BatchGetItem", reason: e.to_string() })?;
            let out = self
                .table
                .client
                .batch_get_item()
                .request_items(&self.table.name, request)
                .send()
                .await
                .map_err(fail("BatchGetItem"))?;
            let items = out.responses().and_then(|r| r.get(&self.table.name));
            found.extend(items.into_iter().flatten().filter_map(from_item));
            pending = out
                .unprocessed_keys()
                .and_then(|u| u.get(&self.table.name))
                .map(|k| k.keys().to_vec())
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(found);
            }
            tokio::time::sleep(Duration::from_millis(50 << round)).await;
        }
        Err(ListError { op: "BatchGetItem", reason: format!("{} keys left unprocessed", pending.len()) })
    }
}

impl DynamoList {
    /// PutItem of `entry`, under `condition` if any: false when the condition failed.
    async fn put(&self, entry: &Entry, condition: Option<&str>) -> Result<bool, ListError> {
        let put = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(to_item(entry)))
            .set_condition_expression(condition.map(String::from))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(fail("PutItem")(e)),
        }
    }
}

#[async_trait]
impl SuppressionList for DynamoList {
    async fn lookup(&self, addresses: &[&str]) -> Result<Vec<Entry>, ListError> {
        let mut found = Vec::new();
        for chunk in distinct_keys(addresses).chunks(MAX_BATCH_KEYS) {
            found.extend(self.batch(chunk).await?);
        }
        Ok(found)
    }

    async fn add(&self, entry: &Entry) -> Result<bool, ListError> {
        self.put(entry, Some("attribute_not_exists(pk)")).await
    }

    async fn set(&self, entry: &Entry) -> Result<(), ListError> {
        self.put(entry, None).await.map(|_| ())
    }

    async fn get(&self, address: &str) -> Result<Option<Entry>, ListError> {
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .set_key(Some(table::key(PK, key(address))))
            .consistent_read(true)
            .send()
            .await
            .map_err(fail("GetItem"))?;
        Ok(out.item().and_then(from_item))
    }

    async fn remove(&self, address: &str) -> Result<bool, ListError> {
        let out = self
            .table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .set_key(Some(table::key(PK, key(address))))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(fail("DeleteItem"))?;
        Ok(out.attributes().is_some_and(|a| !a.is_empty()))
    }

    async fn page(&self, after: Option<&str>, limit: usize) -> Result<Page, ListError> {
        let out = self
            .table
            .client
            .query()
            .table_name(&self.table.name)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", table::s(PK))
            .set_exclusive_start_key(after.map(|a| table::key(PK, a)))
            .limit(limit.clamp(1, 1000) as i32)
            .consistent_read(true)
            .send()
            .await
            .map_err(fail("Query"))?;
        let next = out.last_evaluated_key().and_then(|k| table::get_s(k, SK)).map(String::from);
        Ok(Page { entries: out.items().iter().filter_map(from_item).collect(), next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_foreign_items_are_not_entries() {
        let e = Entry {
            address: "Bob@B.test".into(),
            reason: Reason::Complaint,
            since: 1_800_000_000,
            queue_id: Some("01JQUEUEID0000000000000000".into()),
            diagnostic: "abuse".into(),
        };
        let item = to_item(&e);
        assert_eq!(table::get_s(&item, PK_ATTR), Some("suppressed"));
        assert_eq!(table::get_s(&item, SK), Some("bob@b.test"));
        assert!(!item.contains_key(table::TTL), "entries never expire");
        assert_eq!(from_item(&item), Some(e.clone()));
        let manual = Entry { queue_id: None, ..e };
        assert_eq!(from_item(&to_item(&manual)), Some(manual));
        assert_eq!(from_item(&table::key("lease#x", "y")), None);
        // An entry written by hand with only its key still reads (as a bounce).
        let bare = from_item(&table::key(PK, "carol@c.test")).unwrap();
        assert_eq!((bare.address.as_str(), bare.reason), ("carol@c.test", Reason::Bounce));
    }
}
