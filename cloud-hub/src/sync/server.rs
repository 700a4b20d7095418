//! The hub's QUIC sync server: one task per connection drives a [`HubSession`].
//!
//! # Stream layout
//!
//! One QUIC connection per device. ALPN `storesync/1` (sync): the device presents its
//! certificate and opens one bidirectional stream that carries protocol frames both ways;
//! large event batches arrive as compressed frames. ALPN `storesync-enroll/1`: one stream,
//! one request frame ([`EnrollRequest`] or [`RenewRequest`]) and one answer. The server
//! accepts one bidirectional stream per connection and no unidirectional ones; receive
//! windows are sized so that a few thousand idle connections fit in a small memory budget.
//!
//! # Trust
//!
//! Clients must chain to a tenant CA; the certificate's URI names tenant, store and device,
//! and the hello must claim exactly that. Every tenant CA signs a CRL that the server
//! regenerates every [`ServerOptions::crl_refresh`], valid for [`ServerOptions::crl_validity`]:
//! a hub that cannot refresh stops accepting devices rather than trusting stale status
//! (unknown revocation status denies). A revoked device's live connections close within
//! [`ServerOptions::revocation_check`]; every connection closes at
//! [`ServerOptions::connection_age_max`], so certificate rotation and revocation reach
//! long-lived sessions. 0-RTT is off.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use storesync_protocol::event::{Event, StreamHead, StreamId};
use storesync_protocol::ids::TenantId;
use storesync_protocol::session::{
    Alarm, CommitOutcome as SessionOutcome, HubAction, HubSession, PeerIdentity, SessionConfig,
};
use storesync_protocol::wire::{
    self, Decoded, EnrollRequest, Enrolled, ErrorCode, ErrorMsg, Message, RenewRequest,
};
use tokio::sync::{mpsc, watch};

use super::pki::{self, Authority, DeviceIdentity};
use crate::store::{CommitGate, DeviceContact, GateOpener, Store};

/// ALPN of sync connections.
pub const ALPN_SYNC: &[u8] = b"storesync/1";
/// ALPN of enrollment connections.
pub const ALPN_ENROLL: &[u8] = b"storesync-enroll/1";

/// Longest enrollment request.
const ENROLL_BYTES_MAX: usize = 64 * 1024;
/// A renewal request's clock may differ from the hub's by at most this much.
const RENEW_CLOCK_TOLERANCE_MS: i64 = 15 * 60 * 1000;

/// Tunables of the sync server. Every limit is explicit.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Extra DNS names for the server certificate (the internal name is always there).
    pub server_names: Vec<String>,
    /// Session limits.
    pub session: SessionConfig,
    /// Validity of device certificates, from their issue.
    pub device_cert_validity: Duration,
    /// How long after expiry a device may still renew with its old key.
    pub renew_grace: Duration,
    /// Validity of enrollment tokens.
    pub enroll_token_ttl_ms: i64,
    /// Validity of each CRL; devices are refused once the newest CRL is older.
    pub crl_validity: Duration,
    /// How often CRLs are re-signed.
    pub crl_refresh: Duration,
    /// How often revocations and new tenant CAs are looked up.
    pub revocation_check: Duration,
    /// Connections close after this long, so rotation and revocation reach them.
    pub connection_age_max: Duration,
    /// Concurrent connections.
    pub connections_max: usize,
    /// Fleet alerts: not syncing (checked periodically by this server) and clock skew
    /// (judged at every handshake).
    pub fleet: crate::fleet::FleetOptions,
    /// Events of consecutive batches merged into one store transaction at most (a batch is
    /// never split; 1 commits every batch on its own).
    pub commit_events_max: usize,
    /// Store transactions of one session under way at once (at least 1): a run that
    /// continues the one being committed starts beside it, behind a
    /// [`CommitGate`](crate::store::CommitGate).
    pub commits_in_flight_max: usize,
}

impl ServerOptions {
    /// Defaults listening on `listen`.
    pub fn new(listen: SocketAddr) -> ServerOptions {
        ServerOptions {
            listen,
            server_names: Vec::new(),
            session: SessionConfig::default(),
            device_cert_validity: Duration::from_secs(90 * 86_400),
            renew_grace: Duration::from_secs(60 * 86_400),
            enroll_token_ttl_ms: 7 * 86_400_000,
            crl_validity: Duration::from_secs(3600),
            crl_refresh: Duration::from_secs(600),
            revocation_check: Duration::from_secs(2),
            connection_age_max: Duration::from_secs(24 * 3600),
            connections_max: 10_000,
            fleet: crate::fleet::FleetOptions::default(),
            commit_events_max: 16 * 1024,
            commits_in_flight_max: 2,
        }
    }
}

/// The token-signing key the hub hands to enrolling devices.
#[derive(Debug, Clone)]
pub struct TokenKey {
    /// Public key, PEM.
    pub pem: String,
    /// `iss` of the hub's tokens.
    pub issuer: String,
    /// `aud` of the hub's tokens.
    pub audience: String,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Loads the hub CA, creating it on first use (replicas agree on the first one stored).
pub async fn hub_ca(store: &dyn Store) -> anyhow::Result<Authority> {
    let pki = store.pki();
    if let Some(bytes) = pki.pki_get("hub-ca").await? {
        return Ok(Authority::from_bytes(&bytes)?);
    }
    let fresh = Authority::generate("storesync hub CA", 20)?;
    let stored = pki
        .pki_put_if_absent("hub-ca", &fresh.to_bytes(), now_ms())
        .await?;
    Ok(Authority::from_bytes(&stored)?)
}

/// Loads a tenant's CA, creating it on first use.
pub async fn tenant_ca(store: &dyn Store, tenant: &TenantId) -> anyhow::Result<Authority> {
    let name = format!("tenant-ca/{tenant}");
    let pki = store.pki();
    if let Some(bytes) = pki.pki_get(&name).await? {
        return Ok(Authority::from_bytes(&bytes)?);
    }
    let fresh = Authority::generate(&format!("storesync tenant {tenant} CA"), 20)?;
    let stored = pki
        .pki_put_if_absent(&name, &fresh.to_bytes(), now_ms())
        .await?;
    Ok(Authority::from_bytes(&stored)?)
}

/// Creates a one-time enrollment token for a store: `ss1~tenant~store~secret~fingerprint`.
pub async fn enroll_token(
    store: &dyn Store,
    tenant: &TenantId,
    store_id: &storesync_protocol::ids::StoreId,
    ttl_ms: i64,
) -> anyhow::Result<String> {
    let hub = hub_ca(store).await?;
    tenant_ca(store, tenant).await?;
    let secret: [u8; 24] = rand::random();
    let secret = hex(&secret);
    let fingerprint = hex(blake3::hash(hub.cert_der().as_ref()).as_bytes());
    store
        .pki()
        .enroll_token_insert(
            tenant,
            store_id,
            blake3::hash(secret.as_bytes()).as_bytes(),
            now_ms() + ttl_ms,
        )
        .await?;
    Ok(format!("ss1~{tenant}~{store_id}~{secret}~{fingerprint}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A live sync connection: whose certificate, and how to close it.
type LiveConnection = (TenantId, Vec<u8>, watch::Sender<Option<String>>);

/// What every connection task shares.
struct Shared {
    store: Arc<dyn Store>,
    options: ServerOptions,
    token_key: TokenKey,
    hub: Authority,
    /// Live sync connections by id.
    connections: std::sync::Mutex<BTreeMap<u64, LiveConnection>>,
    next_id: std::sync::atomic::AtomicU64,
    refresh: tokio::sync::Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("listen", &self.options.listen)
            .finish()
    }
}

/// A running sync server.
#[derive(Debug)]
pub struct SyncServer {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    hub_ca_der: Vec<u8>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SyncServer {
    /// Binds and starts accepting devices.
    pub async fn start(
        store: Arc<dyn Store>,
        token_key: TokenKey,
        options: ServerOptions,
    ) -> anyhow::Result<SyncServer> {
        let hub = hub_ca(store.as_ref()).await?;
        let hub_ca_der = hub.cert_der().to_vec();
        let shared = Arc::new(Shared {
            store,
            options: options.clone(),
            token_key,
            hub,
            connections: std::sync::Mutex::new(BTreeMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
            refresh: tokio::sync::Notify::new(),
        });
        let (config, trust) = server_config(&shared, 1).await?;
        let endpoint = quinn::Endpoint::server(config, options.listen)
            .with_context(|| format!("binding the sync port {}", options.listen))?;
        let local_addr = endpoint.local_addr()?;
        tracing::info!(%local_addr, "sync server listening");
        let accept = tokio::spawn(accept_loop(endpoint.clone(), Arc::clone(&shared)));
        let refresh = tokio::spawn(refresh_loop(endpoint.clone(), Arc::clone(&shared), trust));
        // Every replica runs the check; the alerts' stable ids make that idempotent.
        let fleet = tokio::spawn(crate::fleet::run_checks(
            Arc::clone(&shared.store),
            options.fleet.clone(),
        ));
        Ok(SyncServer {
            endpoint,
            local_addr,
            hub_ca_der,
            tasks: vec![accept, refresh, fleet],
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The hub CA devices pin (DER).
    pub fn hub_ca_der(&self) -> &[u8] {
        &self.hub_ca_der
    }

    /// Closes every connection and stops.
    pub async fn shutdown(self) {
        self.endpoint.close(0u32.into(), b"hub shutting down");
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
    }
}

/// What the trust configuration was built from, to notice changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct TrustState {
    tenants: Vec<String>,
    revoked: BTreeMap<String, Vec<Vec<u8>>>,
}

async fn trust_state(shared: &Shared) -> anyhow::Result<TrustState> {
    let pki = shared.store.pki();
    let tenants = pki.pki_names("tenant-ca/").await?;
    let mut revoked = BTreeMap::new();
    for name in &tenants {
        let Some(tenant) = name
            .strip_prefix("tenant-ca/")
            .and_then(|t| TenantId::new(t).ok())
        else {
            continue;
        };
        revoked.insert(
            tenant.to_string(),
            pki.revoked_serials(&tenant, now_ms()).await?,
        );
    }
    Ok(TrustState { tenants, revoked })
}

/// Builds the QUIC server config: hub certificate, client verifier over every tenant CA
/// with freshly signed CRLs.
async fn server_config(
    shared: &Shared,
    crl_number: u64,
) -> anyhow::Result<(quinn::ServerConfig, TrustState)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let state = trust_state(shared).await?;
    let mut roots = rustls::RootCertStore::empty();
    let mut crls = Vec::new();
    for (tenant, revoked) in &state.revoked {
        let Ok(tenant) = TenantId::new(tenant.as_str()) else {
            continue;
        };
        let ca = tenant_ca(shared.store.as_ref(), &tenant).await?;
        roots.add(ca.cert_der().clone())?;
        let crl = ca.crl(
            revoked,
            crl_number,
            SystemTime::now() - Duration::from_secs(60),
            shared.options.crl_validity,
        )?;
        crls.push(rustls::pki_types::CertificateRevocationListDer::from(crl));
    }
    let verifier = if roots.is_empty() {
        rustls::server::WebPkiClientVerifier::no_client_auth()
    } else {
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .with_crls(crls)
        .enforce_revocation_expiration()
        .allow_unauthenticated()
        .build()?
    };
    let mut names = vec![pki::HUB_SERVER_NAME.to_string()];
    names.extend(shared.options.server_names.iter().cloned());
    let (chain, key) = shared.hub.issue_server(&names, 30)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN_SYNC.to_vec(), ALPN_ENROLL.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1u8.into());
    transport.max_concurrent_uni_streams(0u8.into());
    // Windows sized to a memory budget: a few thousand idle devices fit in well under 1 GiB.
    transport.stream_receive_window((2u32 * 1024 * 1024).into());
    transport.receive_window((4u32 * 1024 * 1024).into());
    transport.send_window(4 * 1024 * 1024);
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(30)) {
        transport.max_idle_timeout(Some(idle));
    }
    config.transport_config(Arc::new(transport));
    config.max_incoming(shared.options.connections_max);
    Ok((config, state))
}

async fn refresh_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>, mut current: TrustState) {
    let mut crl_number = 1u64;
    let mut last_build = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.options.revocation_check) => {}
            _ = shared.refresh.notified() => {}
        }
        let state = match trust_state(&shared).await {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(error = %e, "sync: reading trust state failed");
                continue;
            }
        };
        // Close live connections of newly revoked certificates.
        let revoked: std::collections::BTreeSet<(String, Vec<u8>)> = state
            .revoked
            .iter()
            .flat_map(|(t, serials)| serials.iter().map(move |s| (t.clone(), s.clone())))
            .collect();
        if let Ok(connections) = shared.connections.lock() {
            for (tenant, serial, close) in connections.values() {
                if revoked.contains(&(tenant.to_string(), serial.clone()))
                    && close.borrow().is_none()
                {
                    tracing::info!(%tenant, "sync: closing a session: certificate revoked");
                    let _ = close.send(Some("certificate revoked".into()));
                }
            }
        }
        if state != current || last_build.elapsed() >= shared.options.crl_refresh {
            crl_number += 1;
            match server_config(&shared, crl_number).await {
                Ok((config, state)) => {
                    endpoint.set_server_config(Some(config));
                    current = state;
                    last_build = Instant::now();
                }
                Err(e) => {
                    tracing::error!(error = %e, "sync: rebuilding the TLS configuration failed")
                }
            }
        }
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let live = shared.connections.lock().map(|c| c.len()).unwrap_or(0);
        if live >= shared.options.connections_max {
            incoming.refuse();
            continue;
        }
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            match incoming.await {
                Ok(connection) => handle_connection(connection, shared).await,
                Err(e) => tracing::debug!(error = %e, "sync: handshake failed"),
            }
        });
    }
}

async fn handle_connection(connection: quinn::Connection, shared: Arc<Shared>) {
    let alpn = connection
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol);
    match alpn.as_deref() {
        Some(ALPN_ENROLL) => enroll_connection(connection, &shared).await,
        Some(ALPN_SYNC) => {
            if let Err(reason) = sync_connection(&connection, &shared).await {
                tracing::info!(remote = %connection.remote_address(), %reason, "sync: connection refused");
                connection.close(1u32.into(), reason.as_bytes());
            }
        }
        _ => connection.close(1u32.into(), b"unknown ALPN"),
    }
}

// ---- enrollment -------------------------------------------------------------------------

async fn enroll_connection(connection: quinn::Connection, shared: &Shared) {
    let work = async {
        let (mut send, mut recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
        let request = recv
            .read_to_end(ENROLL_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())?;
        let answer = match wire::decode_frame(&request, ENROLL_BYTES_MAX) {
            Ok(Some((Decoded::Message(Message::EnrollRequest(r)), _))) => enroll(shared, r).await,
            Ok(Some((Decoded::Message(Message::RenewRequest(r)), _))) => renew(shared, r).await,
            _ => Err("expected an enrollment or renewal request".to_string()),
        };
        let message = match answer {
            Ok(enrolled) => Message::Enrolled(enrolled),
            Err(reason) => {
                tracing::warn!(remote = %connection.remote_address(), %reason, "sync: enrollment refused");
                Message::Error(ErrorMsg {
                    code: ErrorCode::Identity,
                    message: reason,
                })
            }
        };
        let frame = message.encode().map_err(|e| e.to_string())?;
        send.write_all(&frame).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    };
    match tokio::time::timeout(Duration::from_secs(20), work).await {
        Ok(Ok(())) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
        }
        Ok(Err(e)) => connection.close(1u32.into(), e.as_bytes()),
        Err(_) => connection.close(1u32.into(), b"timeout"),
    }
}

async fn enroll(shared: &Shared, request: EnrollRequest) -> Result<Enrolled, String> {
    let parts: Vec<&str> = request.token.split('~').collect();
    let [_, tenant, store_id, secret, _] = parts.as_slice() else {
        return Err("malformed token".into());
    };
    let tenant = TenantId::new(*tenant).map_err(|_| "malformed token".to_string())?;
    let store_id = storesync_protocol::ids::StoreId::new(*store_id)
        .map_err(|_| "malformed token".to_string())?;
    let now = now_ms();
    let bound = shared
        .store
        .pki()
        .enroll_token_use(&tenant, blake3::hash(secret.as_bytes()).as_bytes(), now)
        .await
        .map_err(|e| e.to_string())?;
    // One answer for unknown, used, expired and mismatched tokens: nothing to probe.
    if bound.as_ref() != Some(&store_id) {
        return Err("the token is unknown, used or expired".into());
    }
    let identity = DeviceIdentity {
        tenant,
        store: store_id,
        device: request.device,
    };
    // A device id already bound to another store is refused.
    let existing = shared
        .store
        .pki()
        .device_certs(&identity.tenant)
        .await
        .map_err(|e| e.to_string())?;
    if existing
        .iter()
        .any(|(_, r)| r.device == identity.device && r.store != identity.store)
    {
        return Err(format!(
            "device {} belongs to another store",
            identity.device
        ));
    }
    issue(shared, &identity, &request.csr_der).await
}

async fn issue(
    shared: &Shared,
    identity: &DeviceIdentity,
    csr_der: &[u8],
) -> Result<Enrolled, String> {
    let now = now_ms();
    let ca = tenant_ca(shared.store.as_ref(), &identity.tenant)
        .await
        .map_err(|e| e.to_string())?;
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    // Valid from a little before now (device clocks run a bit behind), for the configured
    // validity from now.
    let backdate = Duration::from_secs(300);
    let validity = shared.options.device_cert_validity + backdate;
    let not_before = SystemTime::now() - backdate;
    let cert = ca
        .issue_device(csr_der, identity, &serial, not_before, validity)
        .map_err(|e| format!("the certificate request is not usable: {e}"))?;
    let parsed = pki::parse_device_cert(cert.as_ref()).map_err(|e| e.to_string())?;
    shared
        .store
        .pki()
        .device_cert_insert(
            &identity.tenant,
            &parsed.serial,
            &crate::store::pki::DeviceCertRecord {
                store: identity.store.clone(),
                device: identity.device.clone(),
                not_after_ms: parsed.not_after_ms,
                revoked_ms: None,
                cert_hash: blake3::hash(cert.as_ref()).as_bytes().to_vec(),
            },
            now,
        )
        .await
        .map_err(|e| e.to_string())?;
    shared.refresh.notify_one();
    tracing::info!(tenant = %identity.tenant, store = %identity.store, device = %identity.device, "sync: certificate issued");
    Ok(Enrolled {
        tenant: identity.tenant.clone(),
        store: identity.store.clone(),
        device: identity.device.clone(),
        cert_der: cert.to_vec(),
        tenant_ca_der: ca.cert_der().to_vec(),
        hub_ca_der: shared.hub.cert_der().to_vec(),
        token_key_pem: shared.token_key.pem.clone(),
        token_issuer: shared.token_key.issuer.clone(),
        token_audience: shared.token_key.audience.clone(),
        not_after_ms: parsed.not_after_ms,
    })
}

/// Renews a device's certificate: the request carries the certificate the hub issued
/// (possibly expired, after weeks offline) and is signed with its key. Refused when the
/// signature does not verify, and — telling the key's holder why — when the device is
/// revoked, when the certificate expired longer ago than [`ServerOptions::renew_grace`], or
/// when the device's clock is far off the hub's.
async fn renew(shared: &Shared, request: RenewRequest) -> Result<Enrolled, String> {
    let now = now_ms();
    let refused = || "renewal refused".to_string();
    let cert = pki::parse_device_cert(&request.cert_der).map_err(|_| refused())?;
    let record = shared
        .store
        .pki()
        .device_cert(&cert.identity.tenant, &cert.serial)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(refused)?;
    // The hub issued exactly this certificate, to this device.
    if record.cert_hash != blake3::hash(&request.cert_der).as_bytes().to_vec()
        || record.device != cert.identity.device
        || record.store != cert.identity.store
    {
        return Err(refused());
    }
    // Proof of possession of the old key; only its holder learns more below.
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&request.cert_der).map_err(|_| refused())?;
    let public_key = parsed.public_key().subject_public_key.data.to_vec();
    let signed = RenewRequest::signed_bytes(&request.csr_der, request.now_ms);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, public_key)
        .verify(&signed, &request.signature)
        .map_err(|_| refused())?;
    let device = &cert.identity.device;
    if record.revoked_ms.is_some() {
        return Err(format!(
            "renewal refused: device {device} is revoked; enroll it again with a new token"
        ));
    }
    let grace_ms = i64::try_from(shared.options.renew_grace.as_millis()).unwrap_or(i64::MAX);
    if now > record.not_after_ms.saturating_add(grace_ms) {
        return Err(format!(
            "renewal refused: the certificate of device {device} expired {} s ago, beyond the \
             renewal grace period of {} s; enroll it again with a new token",
            (now - record.not_after_ms) / 1000,
            grace_ms / 1000
        ));
    }
    let clock_off_ms = request.now_ms - now;
    if clock_off_ms.abs() > RENEW_CLOCK_TOLERANCE_MS {
        return Err(format!(
            "renewal refused: the device clock is {} s off the hub's (at most {} s); set the \
             device's clock",
            clock_off_ms / 1000,
            RENEW_CLOCK_TOLERANCE_MS / 1000
        ));
    }
    issue(shared, &cert.identity, &request.csr_der).await
}

// ---- sync ---------------------------------------------------------------------------------

struct Registration<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut connections) = self.shared.connections.lock() {
            connections.remove(&self.id);
        }
    }
}

type CommitJob = (u64, StreamId, Vec<Event>, StreamHead);

async fn sync_connection(connection: &quinn::Connection, shared: &Shared) -> Result<(), String> {
    let certs = connection
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or("a device certificate is required")?;
    let leaf = certs.first().ok_or("a device certificate is required")?;
    let cert = pki::parse_device_cert(leaf.as_ref()).map_err(|e| e.to_string())?;
    let identity = cert.identity.clone();
    // Unknown revocation status denies: the hub must have issued this very certificate.
    let record = shared
        .store
        .pki()
        .device_cert(&identity.tenant, &cert.serial)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("unknown certificate")?;
    if record.revoked_ms.is_some() {
        return Err("certificate revoked".into());
    }
    if record.device != identity.device
        || record.store != identity.store
        || record.cert_hash != blake3::hash(leaf.as_ref()).as_bytes().to_vec()
    {
        return Err("certificate does not match the hub's records".into());
    }
    let (close_tx, mut close_rx) = watch::channel(None::<String>);
    let id = shared
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Ok(mut connections) = shared.connections.lock() {
        connections.insert(id, (identity.tenant.clone(), cert.serial.clone(), close_tx));
    }
    let _registration = Registration { shared, id };
    let (mut send, mut recv) =
        tokio::time::timeout(Duration::from_secs(10), connection.accept_bi())
            .await
            .map_err(|_| "no stream opened".to_string())?
            .map_err(|e| e.to_string())?;
    let options = &shared.options;
    let frame_len_max = options.session.frame_len_max;
    let store = Arc::clone(&shared.store);
    let mut session = HubSession::new(
        options.session.clone(),
        PeerIdentity {
            tenant: identity.tenant.clone(),
            store: identity.store.clone(),
            device: identity.device.clone(),
        },
        now_ms(),
    );
    // Commits run off the connection task and are acknowledged in order (see `commit_worker`).
    let window = options.session.window_batches_max.saturating_mul(2).max(1);
    let (commit_tx, commit_rx) = mpsc::channel::<CommitJob>(window);
    let (done_tx, mut done_rx) = mpsc::channel::<(u64, Result<SessionOutcome, String>)>(window);
    let worker = tokio::spawn(commit_worker(
        Arc::clone(&store),
        options.commit_events_max,
        options.commits_in_flight_max.max(1),
        commit_rx,
        done_tx,
    ));
    let mut doc_link = super::docs::DocLink::new(
        identity.tenant.clone(),
        identity.store.clone(),
        identity.device.clone(),
    );
    let mut doc_changes = store.subscribe();
    let age_deadline = tokio::time::Instant::now() + options.connection_age_max;
    let mut inbox = Vec::new();
    let mut last_contact = Instant::now() - Duration::from_secs(3600);
    // The skew measured at the handshake, repeated in later contacts (heartbeats carry none).
    let mut handshake_skew_ms = 0;
    let result = loop {
        let mut closed = None;
        loop {
            let mut progressed = false;
            while let Some(frame) = session.poll_transmit() {
                progressed = true;
                if let Err(e) = send.write_all(&frame).await {
                    closed = Some(Err(e.to_string()));
                    break;
                }
            }
            while let Some(action) = session.poll_action() {
                progressed = true;
                match action {
                    HubAction::LoadHeads {
                        request_id,
                        streams,
                    } => {
                        let heads = store.stream_heads(&identity.tenant, &identity.device).await;
                        match heads {
                            Ok(heads) => {
                                let answer = streams
                                    .into_iter()
                                    .map(|s| {
                                        let head =
                                            heads.iter().find(|(id, _)| *id == s).map(|(_, h)| *h);
                                        (s, head)
                                    })
                                    .collect();
                                session.heads_loaded(now_ms(), request_id, answer);
                            }
                            Err(e) => {
                                session.close(now_ms(), &format!("hub store unavailable: {e}"))
                            }
                        }
                    }
                    HubAction::Commit {
                        commit_id,
                        stream,
                        events,
                        new_head,
                    } => {
                        if commit_tx
                            .send((commit_id, stream, events, new_head))
                            .await
                            .is_err()
                        {
                            session.commit_failed(now_ms(), commit_id, "commit worker stopped");
                        }
                    }
                    HubAction::Connected {
                        version,
                        skew_ms,
                        backlog,
                        epoch,
                        link,
                    } => {
                        tracing::info!(tenant = %identity.tenant, store = %identity.store, device = %identity.device, version, skew_ms, backlog, epoch = epoch.0, forked = link.is_some(), "sync: device connected");
                        let contact = DeviceContact {
                            now_ms: now_ms(),
                            backlog,
                            clock_skew_ms: skew_ms,
                        };
                        if let Err(e) = store
                            .record_contact(
                                &identity.tenant,
                                &identity.store,
                                &identity.device,
                                &contact,
                            )
                            .await
                        {
                            tracing::warn!(error = %e, "sync: recording contact failed");
                        }
                        // After the contact is recorded, so a concurrent not-syncing check
                        // cannot reopen what this clears.
                        if let Err(e) = crate::fleet::on_connected(
                            &*store,
                            &identity.tenant,
                            &identity.store,
                            &identity.device,
                            skew_ms,
                            &options.fleet,
                            now_ms(),
                        )
                        .await
                        {
                            tracing::warn!(error = %e, "sync: fleet alerts at the handshake failed");
                        }
                        last_contact = Instant::now();
                        handshake_skew_ms = skew_ms;
                        let sent = doc_link.connected(&*store).await;
                        send_docs(&mut session, &identity, sent);
                    }
                    HubAction::Backlog(backlog) => {
                        if last_contact.elapsed() >= Duration::from_secs(5) {
                            let contact = DeviceContact {
                                now_ms: now_ms(),
                                backlog,
                                clock_skew_ms: handshake_skew_ms,
                            };
                            let _ = store
                                .record_contact(
                                    &identity.tenant,
                                    &identity.store,
                                    &identity.device,
                                    &contact,
                                )
                                .await;
                            last_contact = Instant::now();
                        }
                    }
                    HubAction::Alarm(alarm) => {
                        report_alarm(&identity, &alarm);
                        if let Err(e) = crate::fleet::on_alarm(
                            &*store,
                            &identity.tenant,
                            &identity.store,
                            &identity.device,
                            &alarm,
                            now_ms(),
                        )
                        .await
                        {
                            tracing::warn!(error = %e, "sync: storing the alarm's alert failed");
                        }
                    }
                    HubAction::Closed(reason) => {
                        while let Some(frame) = session.poll_transmit() {
                            let _ = send.write_all(&frame).await;
                        }
                        let _ = send.finish();
                        closed = Some(Ok(format!("{reason:?}")));
                    }
                    HubAction::DocSync(message) => {
                        let sent = doc_link.receive(&*store, message).await;
                        send_docs(&mut session, &identity, sent);
                    }
                    HubAction::Alert(_) => {}
                    _ => {}
                }
            }
            if closed.is_some() || !progressed {
                break;
            }
        }
        if let Some(outcome) = closed {
            break outcome;
        }
        let deadline = session.poll_timeout().map(|at| {
            let wait = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
            tokio::time::Instant::now() + Duration::from_millis(wait)
        });
        tokio::select! {
            chunk = recv.read_chunk(64 * 1024, true) => match chunk {
                Ok(Some(chunk)) => {
                    if let Err(e) = feed(&mut inbox, &chunk.bytes, &mut session, frame_len_max) {
                        session.close(now_ms(), &e);
                    }
                }
                Ok(None) | Err(_) => break Ok("the device went away".to_string()),
            },
            done = done_rx.recv() => match done {
                Some((commit_id, Ok(outcome))) => session.committed(now_ms(), commit_id, outcome),
                Some((commit_id, Err(e))) => {
                    tracing::error!(error = %e, "sync: commit failed");
                    session.commit_failed(now_ms(), commit_id, &e);
                }
                None => session.close(now_ms(), "commit worker stopped"),
            },
            _ = sleep_until(deadline) => session.handle_timeout(now_ms()),
            changed = close_rx.changed() => {
                let reason = close_rx.borrow().clone();
                match (changed, reason) {
                    (Ok(()), Some(reason)) => session.close(now_ms(), &reason),
                    (Err(_), _) => session.close(now_ms(), "hub shutting down"),
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(age_deadline) => session.close(now_ms(), "maximum connection age"),
            change = doc_changes.recv() => {
                let relevant = match &change {
                    Ok(change) => doc_link.concerns(change),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => false,
                };
                if relevant && session.is_connected() {
                    let sent = doc_link.refresh(&*store).await;
                    send_docs(&mut session, &identity, sent);
                }
            }
        }
    };
    // The worker finishes the commits under way; nobody reads their outcomes any more.
    drop(commit_tx);
    drop(done_rx);
    let _ = worker.await;
    match result {
        Ok(reason) => {
            tracing::info!(device = %identity.device, %reason, "sync: session ended");
            connection.close(0u32.into(), b"session ended");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Commits the session's batches in order. Batches that arrived while earlier transactions
/// ran, and that continue the same stream, are merged into the next one (up to `events_max`
/// events; a batch is never split): during a catch-up the per-transaction cost (round trips,
/// fsync) is paid once per burst instead of once per batch, while a live trickle still
/// commits each batch at once. Up to `in_flight_max` transactions run at once: a run that
/// continues the last one under way starts beside it, behind its [`CommitGate`], so the
/// database writes one run's rows while the other commits; any other run waits until
/// everything under way is done. Every batch is acknowledged only after its transaction
/// committed, in the order the batches came, and a failure fails every batch of its
/// transaction and of the ones behind it.
async fn commit_worker(
    store: Arc<dyn Store>,
    events_max: usize,
    in_flight_max: usize,
    mut jobs: mpsc::Receiver<CommitJob>,
    done: mpsc::Sender<(u64, Result<SessionOutcome, String>)>,
) {
    let mut carried: Option<CommitJob> = None;
    let mut under_way: VecDeque<InFlight> = VecDeque::new();
    let mut closed = false;
    let mut reporting = true;
    loop {
        // Start what can start.
        while under_way.len() < in_flight_max {
            let job = match carried.take() {
                Some(job) => job,
                None if closed => break,
                None if under_way.is_empty() => match jobs.recv().await {
                    Some(job) => job,
                    None => {
                        closed = true;
                        break;
                    }
                },
                None => match jobs.try_recv() {
                    Ok(job) => job,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                },
            };
            if let Some(last) = under_way.back()
                && !continues(&last.stream, last.head, &job)
            {
                carried = Some(job);
                break;
            }
            let (first_id, stream, mut events, mut head) = job;
            let mut ids = vec![first_id];
            while events.len() < events_max {
                match jobs.try_recv() {
                    Ok(next) if continues(&stream, head, &next) => {
                        ids.push(next.0);
                        events.extend(next.2);
                        head = next.3;
                    }
                    Ok(next) => {
                        carried = Some(next);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let gate = under_way.back_mut().and_then(|last| last.gate.take());
            let (opener, next_gate) = CommitGate::new(head);
            let task = tokio::spawn(commit_run(
                Arc::clone(&store),
                stream.clone(),
                events,
                head,
                gate,
                opener,
            ));
            under_way.push_back(InFlight {
                ids,
                stream,
                head,
                gate: Some(next_gate),
                task,
            });
            if carried.is_some() {
                break;
            }
        }
        let room = under_way.len() < in_flight_max && carried.is_none() && !closed;
        let Some(oldest) = under_way.front_mut() else {
            if closed && carried.is_none() {
                return;
            }
            continue;
        };
        tokio::select! {
            biased;
            result = &mut oldest.task => {
                let ids = under_way.pop_front().map(|f| f.ids).unwrap_or_default();
                let result = result.unwrap_or_else(|e| Err(format!("commit task failed: {e}")));
                if reporting && !report(&done, ids, result).await {
                    reporting = false;
                }
            }
            job = jobs.recv(), if room => match job {
                Some(job) => carried = Some(job),
                None => closed = true,
            },
        }
    }
}

/// A store transaction under way.
struct InFlight {
    /// The batches it acknowledges.
    ids: Vec<u64>,
    stream: StreamId,
    /// The head it stores.
    head: StreamHead,
    /// The gate the run that continues this one waits behind (taken by that run).
    gate: Option<CommitGate>,
    task: tokio::task::JoinHandle<Result<SessionOutcome, String>>,
}

/// Commits one (merged) run, behind `gate` when a run of the stream is still under way, and
/// tells the run behind it how it went.
async fn commit_run(
    store: Arc<dyn Store>,
    stream: StreamId,
    events: Vec<Event>,
    head: StreamHead,
    gate: Option<CommitGate>,
    opener: GateOpener,
) -> Result<SessionOutcome, String> {
    let result = store
        .commit_events_in_order(&stream, &events, head, gate, opener)
        .await;
    result
        .map(|o| SessionOutcome {
            inserted: o.inserted,
            duplicates: o.duplicates,
            conflicts: o.conflicts,
        })
        .map_err(|e| e.to_string())
}

/// Reports a transaction's outcome for each of its batches (the whole outcome with the
/// first; the others report nothing new); `false` once nobody listens.
async fn report(
    done: &mpsc::Sender<(u64, Result<SessionOutcome, String>)>,
    ids: Vec<u64>,
    result: Result<SessionOutcome, String>,
) -> bool {
    match result {
        Ok(outcome) => {
            let mut outcome = Some(outcome);
            for id in ids {
                let this = outcome.take().unwrap_or_default();
                if done.send((id, Ok(this))).await.is_err() {
                    return false;
                }
            }
        }
        Err(e) => {
            for id in ids {
                if done.send((id, Err(e.clone()))).await.is_err() {
                    return false;
                }
            }
        }
    }
    true
}

/// Queues document messages; a refused message from the device is an alarm and ends the
/// session, a store failure is logged (the next change or connection retries).
fn send_docs(
    session: &mut HubSession,
    identity: &DeviceIdentity,
    sent: Result<Vec<storesync_protocol::wire::DocSync>, super::docs::LinkError>,
) {
    match sent {
        Ok(messages) => {
            for message in messages {
                session.send_doc(now_ms(), message);
            }
        }
        Err(e @ super::docs::LinkError::Refused { .. }) => {
            tracing::error!(tenant = %identity.tenant, store = %identity.store, device = %identity.device, error = %e, "sync: alarm: document message refused");
            session.close(now_ms(), &e.to_string());
        }
        Err(e) => {
            tracing::warn!(device = %identity.device, error = %e, "sync: document exchange failed");
        }
    }
}

/// Whether `next` carries the events right after `head` of `stream`.
fn continues(stream: &StreamId, head: StreamHead, next: &CommitJob) -> bool {
    next.1 == *stream
        && next
            .2
            .first()
            .is_some_and(|e| e.key.seq.0 == head.seq.0.saturating_add(1))
}

fn report_alarm(identity: &DeviceIdentity, alarm: &Alarm) {
    tracing::error!(tenant = %identity.tenant, store = %identity.store, device = %identity.device, ?alarm, "sync: alarm");
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Splits received bytes into frames, inflating compressed ones (bounded by the frame
/// limit), and feeds the session.
fn feed(
    inbox: &mut Vec<u8>,
    bytes: &[u8],
    session: &mut HubSession,
    frame_len_max: usize,
) -> Result<(), String> {
    if inbox.len().saturating_add(bytes.len()) > frame_len_max.saturating_mul(2) {
        return Err("receive buffer over its limit".into());
    }
    inbox.extend_from_slice(bytes);
    let now = now_ms();
    let inflate = |payload: &[u8], capacity: usize| {
        zstd::bulk::decompress(payload, capacity)
            .map_err(|e| format!("a compressed frame does not inflate within the frame limit: {e}"))
    };
    wire::drain_frames(inbox, frame_len_max, inflate, |frame| {
        session.handle_bytes(now, frame)
    })
}
