//! A signing key from PEM bytes (pure): RSA as PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8
//! (`BEGIN PRIVATE KEY`), or Ed25519 as PKCS#8 — what `openssl genpkey` writes.
//!
//! RSA keys must have 2048 to 4096 bits: 2048 is the floor RFC 8301 sets for signers (and ring
//! refuses smaller keys); 4096 is ring's ceiling, and larger keys do not fit a 255-byte TXT
//! string without splitting anyway.

use mail_auth::common::crypto::{Algorithm, DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

/// The key in a PEM file, or why it cannot sign.
pub fn parse_pem(pem: &[u8]) -> Result<DkimKey, String> {
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no PEM private key found ({e})"))?;
    match der {
        PrivateKeyDer::Pkcs1(_) => rsa(der),
        PrivateKeyDer::Pkcs8(ref pkcs8) => match Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der()) {
            Ok(ed) => Ok(DkimKey::Ed25519(ed)),
            Err(_) => rsa(der),
        },
        _ => Err("not an RSA or Ed25519 key (DKIM signs with rsa-sha256 or ed25519-sha256)".into()),
    }
}

fn rsa(der: PrivateKeyDer<'_>) -> Result<DkimKey, String> {
    RsaKey::<Sha256>::from_key_der(der).map(DkimKey::Rsa).map_err(|e| {
        // ring's reasons are terse names; say what they mean for a DKIM key.
        let e = e.to_string();
        if e.contains("TooSmall") {
            "the RSA key is smaller than 2048 bits (RFC 8301 requires at least 2048)".into()
        } else if e.contains("TooLarge") {
            "the RSA key is larger than 4096 bits".into()
        } else if e.contains("WrongAlgorithm") {
            "not an RSA or Ed25519 key (DKIM signs with rsa-sha256 or ed25519-sha256)".into()
        } else {
            format!("not a usable RSA key: {e}")
        }
    })
}

/// The `a=` name of a key's algorithm.
pub fn algorithm(key: &DkimKey) -> &'static str {
    match key.algorithm() {
        Algorithm::Ed25519Sha256 => "ed25519-sha256",
        Algorithm::RsaSha256 => "rsa-sha256",
        Algorithm::RsaSha1 => "rsa-sha1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA2048: &[u8] = include_bytes!("testdata/rsa2048.pem");
    const RSA2048_PKCS1: &[u8] = include_bytes!("testdata/rsa2048-pkcs1.pem");
    const RSA1024: &[u8] = include_bytes!("testdata/rsa1024.pem");
    const ED25519: &[u8] = include_bytes!("testdata/ed25519.pem");

    #[test]
    fn rsa_and_ed25519_keys_load_in_the_formats_openssl_writes() {
        assert_eq!(algorithm(&parse_pem(RSA2048).unwrap()), "rsa-sha256");
        assert_eq!(algorithm(&parse_pem(RSA2048_PKCS1).unwrap()), "rsa-sha256");
        assert_eq!(algorithm(&parse_pem(ED25519).unwrap()), "ed25519-sha256");
    }

    #[test]
    fn unusable_keys_are_refused_with_the_reason() {
        let cases: &[(&[u8], &str)] = &[
            (RSA1024, "smaller than 2048 bits"),
            (b"just some text\n", "no PEM private key"),
            (b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "no PEM private key"),
            (b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n", "not"),
        ];
        for (pem, why) in cases {
            let e = parse_pem(pem).err().unwrap_or_else(|| panic!("accepted {:?}", String::from_utf8_lossy(pem)));
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn an_ec_key_is_not_a_dkim_key() {
        // openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256
        let e = parse_pem(include_bytes!("testdata/ec-p256.pem")).err().unwrap();
        assert!(e.contains("not an RSA or Ed25519 key"), "{e}");
    }
}
