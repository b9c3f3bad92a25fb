//! The I/O edge of signing keys: reading each key once, at start, from its file or S3 object.
//! A key that cannot be read or parsed stops the program with a message naming the variable
//! and the entry, rather than a program that starts and then cannot sign.

use aws_sdk_s3::Client;
use mail_auth::common::crypto::DkimKey;

use super::{KeySource, KeySpec, pem};
use crate::config::{ConfigError, err};

/// Larger than any PEM key: anything bigger is not a key, and is not read whole.
pub const MAX_PEM: u64 = 64 * 1024;

/// Read and parse the key of one entry of `var`; `s3` is used only for `s3://` sources.
pub async fn load(var: &'static str, spec: &KeySpec, s3: &Client) -> Result<DkimKey, ConfigError> {
    let fail = |why: String| err(var, format!("{}: {why}", spec.entry));
    let bytes = match &spec.source {
        KeySource::File(path) => read_file(path).map_err(fail)?,
        KeySource::S3 { bucket, key } => read_s3(s3, bucket, key).await.map_err(fail)?,
    };
    let key = pem::parse_pem(&bytes).map_err(fail)?;
    tracing::info!(var, domain = %spec.domain, selector = %spec.selector, algorithm = pem::algorithm(&key), "signing key loaded");
    Ok(key)
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
        let dir = env!("CARGO_MANIFEST_DIR").to_string() + "/src/signing/testdata";
        for (file, algorithm) in [("rsa2048.pem", "rsa-sha256"), ("ed25519.pem", "ed25519-sha256")] {
            let spec = KeySpec::parse("V", &format!("example.org:s:{dir}/{file}")).unwrap();
            assert_eq!(pem::algorithm(&load("V", &spec, &no_s3()).await.unwrap()), algorithm);
        }
        let big = std::env::temp_dir().join(format!("signing-big-{}.pem", std::process::id()));
        std::fs::write(&big, vec![b'A'; MAX_PEM as usize + 1]).unwrap();
        for (entry, why) in [
            (format!("example.org:s:{dir}/missing.pem"), "cannot read"),
            (format!("example.org:s:{dir}/rsa1024.pem"), "smaller than 2048 bits"),
            (format!("example.org:s:{}/src/signing/load.rs", env!("CARGO_MANIFEST_DIR")), "no PEM private key"),
            (format!("example.org:s:{}", big.display()), "not a PEM key"),
        ] {
            let spec = KeySpec::parse("V", &entry).unwrap();
            let e = load("V", &spec, &no_s3()).await.err().unwrap();
            assert_eq!(e.var, "V");
            assert!(e.reason.starts_with(&entry) && e.reason.contains(why), "{e}");
        }
        std::fs::remove_file(big).unwrap();
    }
}
