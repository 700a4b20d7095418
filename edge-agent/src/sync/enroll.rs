//! Enrollment and renewal.
//!
//! `storesync-hub enroll-token --tenant T --store S` prints a one-time token
//! `ss1~<tenant>~<store>~<secret>~<hub CA fingerprint>`. `storesync-edge enroll` makes a
//! P-256 key on the device, sends a CSR with the token, checks that the hub's certificate
//! chains to the CA the token names, and stores what the hub answers in `<data_dir>/sync/`.
//!
//! A certificate close to expiry (or past it, after weeks offline) is renewed over the same
//! enrollment ALPN by a request signed with the current key; the hub accepts it within its
//! grace period unless the device was revoked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair, SigningKey as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use storesync_protocol::ids::{DeviceId, StoreId, TenantId};
use storesync_protocol::wire::{self, Decoded, EnrollRequest, Enrolled, Message, RenewRequest};

use super::{Enrollment, HUB_SERVER_NAME, Paths, tls, write_private};

/// Longest answer accepted from the hub.
const ANSWER_BYTES_MAX: usize = 256 * 1024;
/// How long an enrollment exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why enrollment or renewal failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// The token is malformed.
    #[error("token: {0}")]
    Token(String),
    /// The token is for another tenant or store than this agent's configuration.
    #[error("the token is for {token}, but this agent is configured for {configured}")]
    WrongStore {
        /// What the token says.
        token: String,
        /// What the config says.
        configured: String,
    },
    /// The hub could not be reached or the exchange failed.
    #[error("hub {hub}: {reason}")]
    Hub {
        /// Address.
        hub: String,
        /// Why.
        reason: String,
    },
    /// The hub refused.
    #[error("the hub refused: {0}")]
    Refused(String),
    /// Key or certificate handling failed.
    #[error("key material: {0}")]
    Material(String),
    /// Writing the material failed.
    #[error("writing {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Error.
        source: std::io::Error,
    },
}

/// A parsed enrollment token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Tenant.
    pub tenant: TenantId,
    /// Store.
    pub store: StoreId,
    /// The whole token text, sent to the hub.
    pub text: String,
    /// BLAKE3 of the hub CA certificate (DER).
    pub hub_ca_fingerprint: [u8; 32],
}

impl std::str::FromStr for Token {
    type Err = EnrollError;

    fn from_str(text: &str) -> Result<Token, EnrollError> {
        let bad = |why: &str| EnrollError::Token(why.to_string());
        let parts: Vec<&str> = text.trim().split('~').collect();
        let [version, tenant, store, secret, fingerprint] = parts.as_slice() else {
            return Err(bad("expected ss1~tenant~store~secret~fingerprint"));
        };
        if *version != "ss1" {
            return Err(bad("unknown token version"));
        }
        if secret.len() < 32 {
            return Err(bad("secret too short"));
        }
        let tenant =
            TenantId::new(*tenant).map_err(|e| EnrollError::Token(format!("tenant: {e}")))?;
        let store = StoreId::new(*store).map_err(|e| EnrollError::Token(format!("store: {e}")))?;
        let hub_ca_fingerprint =
            hex32(fingerprint).ok_or_else(|| bad("fingerprint must be 64 hex digits"))?;
        Ok(Token {
            tenant,
            store,
            text: text.trim().to_string(),
            hub_ca_fingerprint,
        })
    }
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Enrolls the device: key, CSR, exchange with the hub, files in `paths`.
pub async fn enroll(
    paths: &Paths,
    hub: &str,
    token: &Token,
    tenant: &TenantId,
    store: &StoreId,
    device: &DeviceId,
) -> Result<Enrollment, EnrollError> {
    if &token.tenant != tenant || &token.store != store {
        return Err(EnrollError::WrongStore {
            token: format!("{}/{}", token.tenant, token.store),
            configured: format!("{tenant}/{store}"),
        });
    }
    let key = KeyPair::generate().map_err(|e| EnrollError::Material(e.to_string()))?;
    let csr = csr(&key)?;
    let request = Message::EnrollRequest(EnrollRequest {
        token: token.text.clone(),
        device: device.clone(),
        csr_der: csr,
    });
    let enrolled = exchange(hub, token.hub_ca_fingerprint, request).await?;
    if &enrolled.tenant != tenant || &enrolled.store != store || &enrolled.device != device {
        return Err(EnrollError::Refused(format!(
            "the hub bound the certificate to {}/{}/{}",
            enrolled.tenant, enrolled.store, enrolled.device
        )));
    }
    save(paths, hub, &key, &enrolled)
}

/// Renews the certificate with a new key, signing the request with the current key.
pub async fn renew(
    paths: &Paths,
    enrollment: &Enrollment,
    now_ms: i64,
) -> Result<Enrollment, EnrollError> {
    let read = |path: std::path::PathBuf| {
        std::fs::read(&path).map_err(|source| EnrollError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let old_key_pem =
        String::from_utf8(read(paths.key())?).map_err(|e| EnrollError::Material(e.to_string()))?;
    let old_key =
        KeyPair::from_pem(&old_key_pem).map_err(|e| EnrollError::Material(e.to_string()))?;
    let cert_der = read(paths.cert())?;
    let hub_ca = read(paths.hub_ca())?;
    let key = KeyPair::generate().map_err(|e| EnrollError::Material(e.to_string()))?;
    let csr = csr(&key)?;
    let signature = old_key
        .sign(&RenewRequest::signed_bytes(&csr, now_ms))
        .map_err(|e| EnrollError::Material(e.to_string()))?;
    let request = Message::RenewRequest(RenewRequest {
        cert_der,
        csr_der: csr,
        now_ms,
        signature,
    });
    let enrolled = exchange(&enrollment.hub, *blake3::hash(&hub_ca).as_bytes(), request).await?;
    if enrolled.tenant.as_str() != enrollment.tenant
        || enrolled.store.as_str() != enrollment.store
        || enrolled.device.as_str() != enrollment.device
    {
        return Err(EnrollError::Refused(
            "the renewed certificate names another device".into(),
        ));
    }
    save(paths, &enrollment.hub, &key, &enrolled)
}

fn csr(key: &KeyPair) -> Result<Vec<u8>, EnrollError> {
    let params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| EnrollError::Material(e.to_string()))?;
    let request = params
        .serialize_request(key)
        .map_err(|e| EnrollError::Material(e.to_string()))?;
    Ok(request.der().to_vec())
}

/// Resolves `hub` (`host:port`).
pub async fn resolve(hub: &str) -> Result<SocketAddr, EnrollError> {
    tokio::net::lookup_host(hub)
        .await
        .map_err(|e| EnrollError::Hub {
            hub: hub.to_string(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| EnrollError::Hub {
            hub: hub.to_string(),
            reason: "no address".into(),
        })
}

/// A client endpoint on the unspecified address of `addr`'s family.
pub fn endpoint_for(addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let local: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse().map_err(std::io::Error::other)?
    } else {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    };
    quinn::Endpoint::client(local)
}

async fn exchange(
    hub: &str,
    fingerprint: [u8; 32],
    request: Message,
) -> Result<Enrolled, EnrollError> {
    let fail = |reason: String| EnrollError::Hub {
        hub: hub.to_string(),
        reason,
    };
    let addr = resolve(hub).await?;
    let tls = tls::enroll_config(fingerprint, None).map_err(|e| fail(e.to_string()))?;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| fail(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(tls::transport()));
    let endpoint = endpoint_for(addr).map_err(|e| fail(e.to_string()))?;
    let work = async {
        let connection = endpoint
            .connect_with(config, addr, HUB_SERVER_NAME)
            .map_err(|e| fail(e.to_string()))?
            .await
            .map_err(|e| fail(e.to_string()))?;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let frame = request.encode().map_err(|e| fail(e.to_string()))?;
        send.write_all(&frame)
            .await
            .map_err(|e| fail(e.to_string()))?;
        send.finish().map_err(|e| fail(e.to_string()))?;
        let answer = recv
            .read_to_end(ANSWER_BYTES_MAX)
            .await
            .map_err(|e| fail(e.to_string()))?;
        connection.close(0u32.into(), b"done");
        match wire::decode_frame(&answer, ANSWER_BYTES_MAX) {
            Ok(Some((Decoded::Message(Message::Enrolled(enrolled)), _))) => Ok(enrolled),
            Ok(Some((Decoded::Message(Message::Error(e)), _))) => {
                Err(EnrollError::Refused(e.message))
            }
            Ok(_) => Err(fail("unexpected answer".into())),
            Err((e, _)) => Err(fail(e.to_string())),
        }
    };
    let result = tokio::time::timeout(EXCHANGE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(fail("timed out".into())));
    endpoint.close(0u32.into(), b"");
    result
}

fn save(
    paths: &Paths,
    hub: &str,
    key: &KeyPair,
    enrolled: &Enrolled,
) -> Result<Enrollment, EnrollError> {
    let io = |path: std::path::PathBuf| {
        move |source| EnrollError::Io {
            path: path.display().to_string(),
            source,
        }
    };
    std::fs::create_dir_all(paths.dir()).map_err(io(paths.dir().to_path_buf()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(paths.dir(), std::fs::Permissions::from_mode(0o700))
            .map_err(io(paths.dir().to_path_buf()))?;
    }
    write_private(&paths.key(), key.serialize_pem().as_bytes()).map_err(io(paths.key()))?;
    write_private(&paths.cert(), &enrolled.cert_der).map_err(io(paths.cert()))?;
    write_private(&paths.hub_ca(), &enrolled.hub_ca_der).map_err(io(paths.hub_ca()))?;
    write_private(&paths.token_key(), enrolled.token_key_pem.as_bytes())
        .map_err(io(paths.token_key()))?;
    let enrollment = Enrollment {
        hub: hub.to_string(),
        tenant: enrolled.tenant.to_string(),
        store: enrolled.store.to_string(),
        device: enrolled.device.to_string(),
        not_after_ms: enrolled.not_after_ms,
        token_issuer: enrolled.token_issuer.clone(),
        token_audience: enrolled.token_audience.clone(),
    };
    let text = toml::to_string(&enrollment).map_err(|e| EnrollError::Material(e.to_string()))?;
    write_private(&paths.enrollment(), text.as_bytes()).map_err(io(paths.enrollment()))?;
    Ok(enrollment)
}

/// Loads the device's certificate and key for the sync connection.
pub fn credentials(
    paths: &Paths,
) -> Result<
    (
        CertificateDer<'static>,
        PrivateKeyDer<'static>,
        CertificateDer<'static>,
    ),
    EnrollError,
> {
    let read = |path: std::path::PathBuf| {
        std::fs::read(&path).map_err(|source| EnrollError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let key_pem =
        String::from_utf8(read(paths.key())?).map_err(|e| EnrollError::Material(e.to_string()))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| EnrollError::Material(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((
        CertificateDer::from(read(paths.cert())?),
        key,
        CertificateDer::from(read(paths.hub_ca())?),
    ))
}
