//! The hub's certificate authority: a hub CA for its own server certificate, one CA per
//! tenant for device certificates, certificate revocation lists, and device identity.
//!
//! A device certificate binds the device to its tenant and store with one URI subject
//! alternative name, `storesync://<tenant>/<store>/<device>`, and is valid for client
//! authentication only. The hub trusts only tenant CAs for clients; a device pins the hub
//! CA for the server. Keys are ECDSA P-256.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType,
    SerialNumber,
};
use rustls::pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use storesync_protocol::ids::{DeviceId, StoreId, TenantId};
use thiserror::Error;

/// The DNS name in the hub's server certificate; devices connect with it as server name.
pub const HUB_SERVER_NAME: &str = "hub.storesync.internal";
/// URI scheme of device identities.
const DEVICE_URI_PREFIX: &str = "storesync://";

/// Why a certificate operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PkiError {
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The certificate could not be parsed.
    #[error("certificate does not parse: {0}")]
    Parse(String),
    /// The certificate carries no valid storesync identity.
    #[error("certificate carries no storesync device identity")]
    NoIdentity,
    /// Stored key material is malformed.
    #[error("stored key material is malformed: {0}")]
    Material(String),
}

/// A CA: its certificate and key.
#[derive(Debug)]
pub struct Authority {
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl Authority {
    /// A new self-signed CA named `name`, valid for `years`.
    pub fn generate(name: &str, years: u64) -> Result<Authority, PkiError> {
        let key = KeyPair::generate()?;
        let params = ca_params(name, years);
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Serializes certificate and key for the store: postcard of (certificate DER,
    /// PKCS#8 key DER).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(&(self.cert_der.as_ref(), self.key.serialize_der()))
            .unwrap_or_default()
    }

    /// Reads what [`Authority::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Authority, PkiError> {
        let (cert, key): (Vec<u8>, Vec<u8>) =
            postcard::from_bytes(bytes).map_err(|e| PkiError::Material(e.to_string()))?;
        let key = KeyPair::try_from(key.as_slice())?;
        Ok(Authority {
            cert_der: CertificateDer::from(cert),
            key,
        })
    }

    /// The CA's key, for signing checks in tests.
    pub fn key(&self) -> &KeyPair {
        &self.key
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_der(&self.cert_der, &self.key)?)
    }

    /// A server certificate for the hub (chain: leaf, this CA) and its key.
    pub fn issue_server(
        &self,
        names: &[String],
        days: u64,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, HUB_SERVER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(
            &mut params,
            SystemTime::now(),
            Duration::from_secs(days * 86_400),
        );
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((
            vec![cert.der().clone(), self.cert_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ))
    }

    /// Signs a device's CSR: only its public key is taken; identity, validity and usage
    /// are the hub's.
    pub fn issue_device(
        &self,
        csr_der: &[u8],
        identity: &DeviceIdentity,
        serial: &[u8],
        not_before: SystemTime,
        validity: Duration,
    ) -> Result<CertificateDer<'static>, PkiError> {
        let mut request = CertificateSigningRequestParams::from_der(
            &CertificateSigningRequestDer::from(csr_der.to_vec()),
        )?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.device.as_str());
        params
            .distinguished_name
            .push(DnType::OrganizationName, identity.tenant.as_str());
        params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(SerialNumber::from_slice(serial));
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, not_before, validity);
        request.params = params;
        Ok(request.signed_by(&self.issuer()?)?.der().clone())
    }

    /// A CRL listing `revoked` serials, valid from `now` for `validity`.
    pub fn crl(
        &self,
        revoked: &[Vec<u8>],
        crl_number: u64,
        now: SystemTime,
        validity: Duration,
    ) -> Result<Vec<u8>, PkiError> {
        let this_update = time::OffsetDateTime::from(now);
        let next_update = time::OffsetDateTime::from(now + validity);
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: this_update,
                    reason_code: Some(RevocationReason::Unspecified),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer()?)?.der().to_vec())
    }
}

fn ca_params(name: &str, years: u64) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(
        &mut params,
        SystemTime::now() - Duration::from_secs(3600),
        Duration::from_secs(years * 365 * 86_400),
    );
    params
}

fn set_validity(params: &mut CertificateParams, not_before: SystemTime, validity: Duration) {
    params.not_before = time::OffsetDateTime::from(not_before);
    params.not_after = time::OffsetDateTime::from(not_before + validity);
}

/// Who a device certificate says the device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Tenant.
    pub tenant: TenantId,
    /// Store.
    pub store: StoreId,
    /// Device.
    pub device: DeviceId,
}

impl DeviceIdentity {
    fn uri(&self) -> String {
        format!(
            "{DEVICE_URI_PREFIX}{}/{}/{}",
            self.tenant, self.store, self.device
        )
    }
}

/// What the hub reads out of a device certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCert {
    /// Identity from the URI SAN.
    pub identity: DeviceIdentity,
    /// Serial number bytes.
    pub serial: Vec<u8>,
    /// Expiry, Unix milliseconds.
    pub not_after_ms: i64,
}

/// Parses a device certificate's identity, serial and expiry (no signature check: the TLS
/// handshake or the caller has verified the chain).
pub fn parse_device_cert(der: &[u8]) -> Result<DeviceCert, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    let mut identity = None;
    for ext in cert.extensions() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) =
            ext.parsed_extension()
        {
            for name in &san.general_names {
                if let x509_parser::extensions::GeneralName::URI(uri) = name {
                    identity = parse_uri(uri);
                }
            }
        }
    }
    let identity = identity.ok_or(PkiError::NoIdentity)?;
    Ok(DeviceCert {
        identity,
        serial: cert.raw_serial().to_vec(),
        not_after_ms: cert.validity().not_after.timestamp().saturating_mul(1000),
    })
}

fn parse_uri(uri: &str) -> Option<DeviceIdentity> {
    let rest = uri.strip_prefix(DEVICE_URI_PREFIX)?;
    let mut parts = rest.split('/');
    let tenant = TenantId::new(parts.next()?).ok()?;
    let store = StoreId::new(parts.next()?).ok()?;
    let device = DeviceId::new(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(DeviceIdentity {
        tenant,
        store,
        device,
    })
}
