//! TLS for STARTTLS and the implicit-TLS listener: a rustls acceptor built from the PEM files
//! named by `INGRESS_TLS_CERT` / `INGRESS_TLS_KEY`.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::session::TlsInfo;

/// Load the certificate chain and key; errors name the file.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut open(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("INGRESS_TLS_CERT: {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("INGRESS_TLS_CERT: {}: no certificate found", cert.display()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut open(key)?)
        .map_err(|e| format!("INGRESS_TLS_KEY: {}: {e}", key.display()))?
        .ok_or_else(|| format!("INGRESS_TLS_KEY: {}: no private key found", key.display()))?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("INGRESS_TLS_KEY: key does not match certificate: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>, String> {
    std::fs::File::open(path).map(std::io::BufReader::new).map_err(|e| format!("{}: {e}", path.display()))
}

/// Version and cipher of an established server-side stream.
pub fn info<IO>(stream: &TlsStream<IO>) -> TlsInfo {
    let (_, conn) = stream.get_ref();
    TlsInfo {
        version: conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default(),
        cipher: conn.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())).unwrap_or_default(),
    }
}
