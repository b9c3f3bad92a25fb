//! Failed AUTHs counted in the state table, shared by every ingress task: one item per address,
//! `pk = authfail#<address>`, `sk = -`, with `failures` (N), `since` (N, the window's first
//! failure, Unix seconds) and `ttl` (the window's end).
//!
//! A failure is one conditional `UpdateItem` (`failures + 1` while the window is open, the new
//! tally returned), so concurrent tasks never lose a count and exactly one of them sees the
//! N-th. When there is no item or its window has passed, a conditional `PutItem` starts a new
//! window (if another task started it first, the increment is tried again). A check is one
//! strongly consistent `GetItem`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use shared::table::{self, StateTable};

use super::{Failures, LockoutSpec, Tally};

const FAILURES: &str = "failures";
const SINCE: &str = "since";

/// The lockout's counters in the state table.
#[derive(Clone, Debug)]
pub struct DynamoFailures(pub StateTable);

fn pk(key: &str) -> String {
    format!("authfail#{key}")
}

fn tally_of(item: &HashMap<String, AttributeValue>) -> Option<Tally> {
    Some(Tally { failures: table::get_n(item, FAILURES)?.try_into().ok()?, since: table::get_n(item, SINCE)? })
}

fn is_condition<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

impl DynamoFailures {
    /// `failures + 1` if the window that began at `since` is still open at `now`.
    async fn increment(&self, key: &str, spec: &LockoutSpec, now: i64) -> Result<Option<Tally>, String> {
        let cut = now - spec.window.as_secs() as i64;
        let sent = self
            .0
            .client
            .update_item()
            .table_name(&self.0.name)
            .set_key(Some(table::key(pk(key), "-")))
            .update_expression("SET #f = #f + :one")
            .condition_expression("#s > :cut")
            .expression_attribute_names("#f", FAILURES)
            .expression_attribute_names("#s", SINCE)
            .expression_attribute_values(":one", table::n(1))
            .expression_attribute_values(":cut", table::n(cut))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match sent {
            Ok(out) => Ok(out.attributes().and_then(tally_of)),
            Err(e) if e.as_service_error().is_some_and(is_condition) => Ok(None),
            Err(e) => Err(DisplayErrorContext(e).to_string()),
        }
    }

    /// The first failure of a new window, unless another task began one meanwhile.
    async fn begin(&self, key: &str, spec: &LockoutSpec, now: i64) -> Result<bool, String> {
        let mut item = table::key(pk(key), "-");
        item.insert(FAILURES.into(), table::n(1));
        item.insert(SINCE.into(), table::n(now));
        item.insert(table::TTL.into(), table::n(now + spec.window.as_secs() as i64));
        let sent = self
            .0
            .client
            .put_item()
            .table_name(&self.0.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR #s <= :cut")
            .expression_attribute_names("#s", SINCE)
            .expression_attribute_values(":cut", table::n(now - spec.window.as_secs() as i64))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(is_condition) => Ok(false),
            Err(e) => Err(DisplayErrorContext(e).to_string()),
        }
    }
}

#[async_trait]
impl Failures for DynamoFailures {
    async fn get(&self, key: &str) -> Result<Option<Tally>, String> {
        let out = self
            .0
            .client
            .get_item()
            .table_name(&self.0.name)
            .set_key(Some(table::key(pk(key), "-")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
        Ok(out.item().and_then(tally_of))
    }

    async fn add(&self, key: &str, spec: &LockoutSpec, now: i64) -> Result<Tally, String> {
        for _ in 0..3 {
            if let Some(t) = self.increment(key, spec, now).await? {
                return Ok(t);
            }
            if self.begin(key, spec, now).await? {
                return Ok(Tally { failures: 1, since: now });
            }
        }
        Err(format!("the failure count of {key} keeps changing"))
    }
}
