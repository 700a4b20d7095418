//! rustls client configurations for the agent.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The one crypto provider of the process: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 client config for sync: the hub must chain to `hub_ca`; the agent presents its
/// certificate. 0-RTT is off.
pub fn sync_config(
    hub_ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(hub_ca)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    config.enable_early_data = false;
    Ok(config)
}

/// TLS 1.3 client config for enrollment: the hub's chain must contain a CA whose BLAKE3
/// fingerprint the token carries, and the server certificate must chain to it. The agent
/// presents no certificate.
pub fn enroll_config(
    fingerprint: [u8; 32],
    client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(FingerprintPin { fingerprint }));
    let mut config = match client {
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![super::ALPN_ENROLL.to_vec()];
    config.enable_early_data = false;
    Ok(config)
}

/// Accepts a server whose chain holds the pinned CA and verifies against it.
#[derive(Debug)]
struct FingerprintPin {
    fingerprint: [u8; 32],
}

impl FingerprintPin {
    fn verifier(
        &self,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let pinned = intermediates
            .iter()
            .find(|cert| *blake3::hash(cert.as_ref()).as_bytes() == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General("the hub's CA does not match the enrollment token".into())
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pinned.clone().into_owned())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl ServerCertVerifier for FingerprintPin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The pinned CA is the root: drop it from the intermediates handed to webpki.
        let rest: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|cert| *blake3::hash(cert.as_ref()).as_bytes() != self.fingerprint)
            .cloned()
            .collect();
        self.verifier(intermediates)?.verify_server_cert(
            end_entity,
            &rest,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// QUIC transport limits of the agent's side: no streams from the hub, modest windows.
pub fn transport() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(0u8.into());
    transport.max_concurrent_uni_streams(0u8.into());
    transport.stream_receive_window((4u32 * 1024 * 1024).into());
    transport.receive_window((8u32 * 1024 * 1024).into());
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(5)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(std::time::Duration::from_secs(30)) {
        transport.max_idle_timeout(Some(idle));
    }
    transport
}
