//! The I/O edge of DKIM: reading each `RELAY_DKIM_KEYS` key once, at start, from its file or S3
//! object. Any key that cannot be read or parsed stops the relay with a message naming
//! `RELAY_DKIM_KEYS` and the entry, rather than a relay that starts and then cannot sign.

use aws_sdk_s3::Client;
use shared::config::{ConfigError, err};

use super::{Key, Signer, key};
use crate::config::{DkimKeySpec, KeySource};

const VAR: &str = "RELAY_DKIM_KEYS";

/// Larger than any PEM key: anything bigger is not a key, and is not read whole.
const MAX_PEM: u64 = 64 * 1024;

/// Reads and parses every key; `s3` is used only for `s3://` sources.
pub async fn load(specs: &[DkimKeySpec], s3: &Client) -> Result<Signer, ConfigError> {
    let mut keys = Vec::with_capacity(specs.len());
    for spec in specs {
        let fail = |why: String| err(VAR, format!("{}: {why}", spec.entry));
        let pem = match &spec.source {
            KeySource::File(path) => read_file(path).map_err(fail)?,
            KeySource::S3 { bucket, key } => read_s3(s3, bucket, key).await.map_err(fail)?,
        };
        let parsed = key::parse_pem(&pem).map_err(fail)?;
        tracing::info!(domain = %spec.domain, selector = %spec.selector, algorithm = key::algorithm(&parsed),
            "dkim key loaded");
        keys.push(Key { domain: spec.domain.clone(), selector: spec.selector.clone(), key: parsed });
    }
    Ok(Signer::new(keys))
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?.len();
    if len > MAX_PEM {
        return Err(format!("{} has {len} bytes: not a PEM key", path.display()));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

async fn read_s3(s3: &Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    let out = s3.get_object().bucket(bucket).key(key).send().await.map_err(|e| {
        let detail = aws_sdk_s3::error::DisplayErrorContext(&e);
        format!("cannot read s3://{bucket}/{key}: {detail}")
    })?;
    if out.content_length().unwrap_or(0) > MAX_PEM as i64 {
        return Err(format!("s3://{bucket}/{key} is larger than {MAX_PEM} bytes: not a PEM key"));
    }
    let body = out.body.collect().await.map_err(|e| format!("cannot read s3://{bucket}/{key}: {e}"))?;
    Ok(body.into_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RelayConfig;

    fn specs(value: &str) -> Vec<DkimKeySpec> {
        RelayConfig::from_vars(&shared::config::vars_with_spool(&[("RELAY_DKIM_KEYS", value)])).unwrap().dkim_keys
    }

    /// A client that never connects: file sources do not touch it.
    fn no_s3() -> Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new("x"))
            .build();
        Client::from_conf(conf)
    }

    #[tokio::test]
    async fn file_keys_load_and_bad_ones_name_the_variable_and_the_entry() {
        let dir = env!("CARGO_MANIFEST_DIR").to_string() + "/src/dkim/testdata";
        let good = format!("example.org:rsa:{dir}/rsa2048.pem,example.org:ed:{dir}/ed25519.pem");
        let signer = load(&specs(&good), &no_s3()).await.unwrap();
        let loaded: Vec<_> = signer.keys().iter().map(|k| (k.selector.as_str(), key::algorithm(&k.key))).collect();
        assert_eq!(loaded, [("rsa", "rsa-sha256"), ("ed", "ed25519-sha256")]);

        let big = std::env::temp_dir().join(format!("dkim-big-{}.pem", std::process::id()));
        std::fs::write(&big, vec![b'A'; MAX_PEM as usize + 1]).unwrap();
        for (entry, why) in [
            (format!("example.org:s:{dir}/missing.pem"), "cannot read"),
            (format!("example.org:s:{dir}/rsa1024.pem"), "smaller than 2048 bits"),
            (format!("example.org:s:{}/src/dkim/load.rs", env!("CARGO_MANIFEST_DIR")), "no PEM private key"),
            (format!("example.org:s:{}", big.display()), "not a PEM key"),
        ] {
            let e = load(&specs(&format!("{good},{entry}")), &no_s3()).await.err().unwrap();
            assert_eq!(e.var, "RELAY_DKIM_KEYS");
            assert!(e.reason.starts_with(&entry) && e.reason.contains(why), "{e}");
        }
        std::fs::remove_file(big).unwrap();
    }
}
