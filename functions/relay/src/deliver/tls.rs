//! The TLS clients used for STARTTLS and implicit TLS, and what each session proves.
//!
//! To MX hosts without an MTA-STS `enforce` policy certificates are not required to verify: MX
//! hosts are found through unauthenticated DNS, so checking the certificate against the MX name
//! proves nothing (RFC 7672 §1.3; the reason Postfix's default `may` level does not check). TLS
//! still protects against passive eavesdropping, and handshake signatures are checked. Such a
//! session is still checked after the handshake, so the delivery log can say whether its
//! certificate was valid for the MX name ([`TlsClient::opportunistic`]).
//!
//! A certificate must verify in the handshake ([`TlsClient::verifying`]) when the relay has a
//! reason to trust the name: a smarthost is named by the operator and receives credentials, and an
//! MTA-STS `enforce` policy (RFC 8461 §4.2) names the MX hosts that must prove their identity.
//! Trust anchors are the public web PKI roots plus an operator's PEM file ([`roots`]).

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The public web PKI roots plus the PEM certificates in `extra` (a private CA, a test CA).
pub fn roots(extra: Option<&Path>) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra {
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate in it", path.display()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder(provider: Arc<CryptoProvider>) -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
}

/// A connector that verifies the certificate chain and name against `roots` in the handshake.
pub fn verifying_connector(roots: Arc<RootCertStore>) -> TlsConnector {
    TlsConnector::from(Arc::new(builder(provider()).with_root_certificates(roots).with_no_client_auth()))
}

/// A TLS client configuration and what a session it opens proves.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    /// `None`: the connector verifies in the handshake, so every session it opens is verified.
    /// `Some`: the connector accepts any certificate; this verifier checks it afterwards.
    after: Option<Arc<WebPkiServerVerifier>>,
}

impl TlsClient {
    /// Certificates must verify against `roots` for the name, or the handshake fails.
    pub fn verifying(roots: Arc<RootCertStore>) -> Self {
        Self { connector: verifying_connector(roots), after: None }
    }

    /// Any certificate is accepted (handshake signatures are checked); whether it was valid for
    /// the name against `roots` is reported by [`TlsClient::connect`].
    pub fn opportunistic(roots: Arc<RootCertStore>) -> Self {
        let provider = provider();
        let config = builder(provider.clone())
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
            .with_no_client_auth();
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .expect("the web PKI root store is never empty");
        Self { connector: TlsConnector::from(Arc::new(config)), after: Some(verifier) }
    }

    /// The handshake as `name`; the stream and whether the certificate is valid for `name`.
    pub async fn connect<IO>(&self, name: ServerName<'static>, io: IO) -> std::io::Result<(TlsStream<IO>, bool)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = self.connector.connect(name.clone(), io).await?;
        let verified = match &self.after {
            None => true,
            Some(verifier) => {
                let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
                chain.split_first().is_some_and(|(leaf, intermediates)| {
                    verifier.verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now()).is_ok()
                })
            }
        };
        Ok((stream, verified))
    }
}

/// The name sent in SNI: the host name, or the address when the name is not a DNS name.
pub fn server_name(host: &str, addr: std::net::IpAddr) -> ServerName<'static> {
    ServerName::try_from(host.to_string()).unwrap_or_else(|_| ServerName::IpAddress(addr.into()))
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
