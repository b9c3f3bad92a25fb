//! The I/O edge of DKIM: every `RELAY_DKIM_KEYS` key read once, at start, from its file or S3
//! object ([`shared::signing::load`]). Any key that cannot be read or parsed stops the relay
//! with a message naming `RELAY_DKIM_KEYS` and the entry.

use aws_sdk_s3::Client;
use shared::config::ConfigError;
use shared::signing::KeySpec;

use super::{Key, Signer};

/// Reads and parses every key; `s3` is used only for `s3://` sources.
pub async fn load(specs: &[KeySpec], s3: &Client) -> Result<Signer, ConfigError> {
    let mut keys = Vec::with_capacity(specs.len());
    for spec in specs {
        let key = shared::signing::load::load(crate::config::DKIM_KEYS, spec, s3).await?;
        keys.push(Key { domain: spec.domain.clone(), selector: spec.selector.clone(), key });
    }
    Ok(Signer::new(keys))
}
