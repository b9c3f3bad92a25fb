//! The state table on DynamoDB: [`Table`] as conditional writes.
//!
//! Every item of `share` has `owner` (S, absent on a hold), `until` (N, Unix milliseconds: the
//! expiry readers compare with their clock), `ttl` (N, Unix seconds, for DynamoDB's own
//! removal) and note attributes (S). Attribute names go through placeholders: `owner`, `until`
//! and `ttl` are DynamoDB reserved words.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use shared::table::{self, StateTable};

use super::{Claim, Row, Table, TableError, Taken, ttl_of};

const OWNER: &str = "owner";
const UNTIL: &str = "until";

/// The state table named by `STATE_TABLE`.
#[derive(Clone, Debug)]
pub struct DynamoTable(pub StateTable);

type Item = HashMap<String, AttributeValue>;

fn item_of(pk: &str, row: &Row) -> Item {
    let mut item = table::key(pk, row.sk.as_str());
    if let Some(o) = &row.owner {
        item.insert(OWNER.into(), table::s(o.as_str()));
    }
    item.insert(UNTIL.into(), table::n(row.until_ms));
    item.insert(table::TTL.into(), table::n(ttl_of(row.until_ms)));
    for (k, v) in &row.note {
        item.insert(k.clone(), table::s(v.as_str()));
    }
    item
}

fn row_of(item: &Item) -> Row {
    let reserved = [table::PK, table::SK, table::TTL, OWNER, UNTIL];
    let note = item
        .iter()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
        .filter_map(|(k, v)| Some((k.clone(), v.as_s().ok()?.clone())))
        .collect();
    Row {
        sk: table::get_s(item, table::SK).unwrap_or_default().to_string(),
        owner: table::get_s(item, OWNER).map(String::from),
        until_ms: table::get_n(item, UNTIL).unwrap_or_default(),
        note,
    }
}

fn claim_row(c: &Claim) -> Row {
    Row { sk: c.sk.clone(), owner: Some(c.owner.clone()), until_ms: c.until_ms, note: c.note.clone() }
}

fn failed<E, R>(op: &'static str, key: &str, e: SdkError<E, R>) -> TableError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    TableError::new(op, key, DisplayErrorContext(e))
}

/// True when `e` is the table saying the write's condition did not hold.
fn condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}

#[async_trait]
impl Table for DynamoTable {
    async fn claim(&self, claim: &Claim, now_ms: i64) -> Result<Taken, TableError> {
        let sent = self
            .0
            .client
            .put_item()
            .table_name(&self.0.name)
            .set_item(Some(item_of(&claim.pk, &claim_row(claim))))
            .condition_expression("attribute_not_exists(pk) OR #u <= :now OR #o = :owner")
            .expression_attribute_names("#u", UNTIL)
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_values(":now", table::n(now_ms))
            .expression_attribute_values(":owner", table::s(claim.owner.as_str()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Taken::Yes),
            Err(e) if condition_failed(&e) => {
                let holder = match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => c.item().map(row_of),
                    _ => None,
                };
                Ok(Taken::No(holder))
            }
            Err(e) => Err(failed("PutItem", &claim.pk, e)),
        }
    }

    async fn renew(&self, claim: &Claim) -> Result<bool, TableError> {
        let sent = self
            .0
            .client
            .update_item()
            .table_name(&self.0.name)
            .set_key(Some(table::key(claim.pk.as_str(), claim.sk.as_str())))
            .update_expression("SET #u = :until, #t = :ttl")
            .condition_expression("#o = :owner")
            .expression_attribute_names("#u", UNTIL)
            .expression_attribute_names("#t", table::TTL)
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_values(":until", table::n(claim.until_ms))
            .expression_attribute_values(":ttl", table::n(ttl_of(claim.until_ms)))
            .expression_attribute_values(":owner", table::s(claim.owner.as_str()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(failed("UpdateItem", &claim.pk, e)),
        }
    }

    async fn release(&self, claim: &Claim) -> Result<(), TableError> {
        let sent = self
            .0
            .client
            .delete_item()
            .table_name(&self.0.name)
            .set_key(Some(table::key(claim.pk.as_str(), claim.sk.as_str())))
            .condition_expression("#o = :owner")
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_values(":owner", table::s(claim.owner.as_str()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(failed("DeleteItem", &claim.pk, e)),
        }
    }

    async fn query(&self, pk: &str) -> Result<Vec<Row>, TableError> {
        let mut rows = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .0
                .client
                .query()
                .table_name(&self.0.name)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", table::s(pk))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| failed("Query", pk, e))?;
            rows.extend(out.items().iter().map(row_of));
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(rows);
            }
        }
    }

    async fn raise(&self, pk: &str, row: &Row) -> Result<(), TableError> {
        let sent = self
            .0
            .client
            .put_item()
            .table_name(&self.0.name)
            .set_item(Some(item_of(pk, row)))
            .condition_expression("attribute_not_exists(pk) OR #u < :until")
            .expression_attribute_names("#u", UNTIL)
            .expression_attribute_values(":until", table::n(row.until_ms))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()), // a longer hold is in force
            Err(e) => Err(failed("PutItem", pk, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip() {
        let row = Row {
            sk: "slot#1".into(),
            owner: Some("01OWNER".into()),
            until_ms: 1_700_000_000_500,
            note: [("job_id".to_string(), "01JOB".to_string())].into(),
        };
        let item = item_of("dest#b.test", &row);
        assert_eq!(table::get_s(&item, table::PK), Some("dest#b.test"));
        assert_eq!(table::get_n(&item, table::TTL), Some(1_700_000_001));
        assert_eq!(row_of(&item), row);
        let hold = Row { sk: "hold".into(), owner: None, ..row };
        assert_eq!(row_of(&item_of("dest#b.test", &hold)), hold);
    }
}
