//! The feedback token's key: 32 random bytes in the state table, made once by whichever program
//! starts first (a conditional put, so two starting together cannot make two keys) and read at
//! start by both. No secret in the environment or the template; the table's encryption at rest
//! and IAM guard it.
//!
//! **Item**: `pk` = [`PK`] (`feedback-key`), `sk` = [`SK`] (`hmac-sha256`), `secret` (B, 32
//! bytes), `created` (N, Unix seconds); no `ttl`. Deleting the item rotates the key at the next
//! start of each program — and tokens of mail already sent stop verifying, so their reports are
//! then refused like forged ones.

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use ring::rand::{SecureRandom, SystemRandom};

use crate::table::{self, StateTable};

/// The partition key of the key item.
pub const PK: &str = "feedback-key";
/// Its sort key (the algorithm the secret is for).
pub const SK: &str = "hmac-sha256";
/// Bytes of secret.
pub const LEN: usize = 32;

/// The secret, made first when the table has none.
pub async fn load_or_create(t: &StateTable, now: i64) -> Result<Vec<u8>, String> {
    if let Some(secret) = read(t).await? {
        return Ok(secret);
    }
    let mut secret = vec![0u8; LEN];
    SystemRandom::new().fill(&mut secret).map_err(|_| "no random bytes from the system".to_string())?;
    let mut item = table::key(PK, SK);
    item.insert("secret".into(), AttributeValue::B(Blob::new(secret.clone())));
    item.insert("created".into(), table::n(now));
    let put = t
        .client
        .put_item()
        .table_name(&t.name)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    match put {
        Ok(_) => {
            tracing::info!(event = "feedback_key", table = %t.name, "feedback token key created");
            Ok(secret)
        }
        // Another program made it between our read and our put: theirs stands.
        Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
            read(t).await?.ok_or_else(|| "the key item exists but has no usable secret".to_string())
        }
        Err(e) => Err(format!("PutItem {PK}: {}", DisplayErrorContext(e))),
    }
}

/// The stored secret, if there is a usable one.
async fn read(t: &StateTable) -> Result<Option<Vec<u8>>, String> {
    let out = t
        .client
        .get_item()
        .table_name(&t.name)
        .set_key(Some(table::key(PK, SK)))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| format!("GetItem {PK}: {}", DisplayErrorContext(e)))?;
    let Some(item) = out.item() else { return Ok(None) };
    match item.get("secret").and_then(|v| v.as_b().ok()) {
        Some(b) if b.as_ref().len() == LEN => Ok(Some(b.as_ref().to_vec())),
        _ => Err(format!("the {PK} item has no {LEN}-byte secret: delete it to make a new one")),
    }
}
