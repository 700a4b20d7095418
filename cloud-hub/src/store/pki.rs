//! Persistence of the sync server's trust material: CAs, device certificates, revocations
//! and one-time enrollment tokens. Both backends implement [`PkiStore`].
//!
//! `pki_objects` holds hub-level key material by name (no tenant: the hub CA, and the
//! tenant CAs under `tenant-ca/<tenant>`). `device_certs` and `enroll_tokens` lead with
//! `tenant_id` and carry the same row-level security as every tenant table. Tokens are
//! stored as BLAKE3 hashes of their secret, never in clear.

use async_trait::async_trait;
use storesync_protocol::ids::{DeviceId, StoreId, TenantId};

use super::StoreError;

/// The DDL, shared by both backends (plain SQL types they both accept).
pub(crate) const SCHEMA_PKI: &str = "
CREATE TABLE IF NOT EXISTS pki_objects (
    name       text PRIMARY KEY,
    value      BYTEA_TYPE NOT NULL,
    created_ms bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS device_certs (
    tenant_id    text NOT NULL,
    serial       BYTEA_TYPE NOT NULL,
    store_id     text NOT NULL,
    device_id    text NOT NULL,
    not_after_ms bigint NOT NULL,
    issued_ms    bigint NOT NULL,
    revoked_ms   bigint,
    cert_hash    BYTEA_TYPE NOT NULL,
    PRIMARY KEY (tenant_id, serial)
);
CREATE INDEX IF NOT EXISTS device_certs_device ON device_certs (tenant_id, device_id);
CREATE TABLE IF NOT EXISTS enroll_tokens (
    tenant_id  text NOT NULL,
    token_hash BYTEA_TYPE NOT NULL,
    store_id   text NOT NULL,
    expires_ms bigint NOT NULL,
    used_ms    bigint,
    PRIMARY KEY (tenant_id, token_hash)
);
";

/// A device certificate as the hub recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCertRecord {
    /// Store it binds.
    pub store: StoreId,
    /// Device it binds.
    pub device: DeviceId,
    /// Expiry, Unix ms.
    pub not_after_ms: i64,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<i64>,
    /// BLAKE3 of the certificate (DER): renewal presents the certificate itself.
    pub cert_hash: Vec<u8>,
}

/// Trust material of the sync server.
#[async_trait]
pub trait PkiStore: Send + Sync {
    /// Hub-level key material by name.
    async fn pki_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Names of hub-level objects starting with `prefix`.
    async fn pki_names(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Stores `value` under `name` unless something is there; returns what is stored, so
    /// that replicas racing to create a CA agree on one.
    async fn pki_put_if_absent(
        &self,
        name: &str,
        value: &[u8],
        now_ms: i64,
    ) -> Result<Vec<u8>, StoreError>;

    /// Records a one-time enrollment token (by hash) for a store.
    async fn enroll_token_insert(
        &self,
        tenant: &TenantId,
        store: &StoreId,
        token_hash: &[u8],
        expires_ms: i64,
    ) -> Result<(), StoreError>;

    /// Uses a token: the store it binds if it exists, is unused and unexpired; it is then
    /// marked used, atomically.
    async fn enroll_token_use(
        &self,
        tenant: &TenantId,
        token_hash: &[u8],
        now_ms: i64,
    ) -> Result<Option<StoreId>, StoreError>;

    /// Records an issued device certificate.
    async fn device_cert_insert(
        &self,
        tenant: &TenantId,
        serial: &[u8],
        record: &DeviceCertRecord,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// The certificate with this serial, if the hub issued it.
    async fn device_cert(
        &self,
        tenant: &TenantId,
        serial: &[u8],
    ) -> Result<Option<DeviceCertRecord>, StoreError>;

    /// Revokes every certificate of a device; returns how many were revoked now.
    async fn device_revoke(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        now_ms: i64,
    ) -> Result<u64, StoreError>;

    /// Serial numbers of revoked certificates that have not expired yet, for the CRL.
    async fn revoked_serials(
        &self,
        tenant: &TenantId,
        now_ms: i64,
    ) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Every device certificate of the tenant, newest first, with its serial.
    async fn device_certs(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(Vec<u8>, DeviceCertRecord)>, StoreError>;

    /// Every device holding a certificate that is neither revoked nor expired at `now_ms`,
    /// with when its first such certificate was issued (its enrollment).
    async fn enrolled_devices(
        &self,
        tenant: &TenantId,
        now_ms: i64,
    ) -> Result<Vec<Enrollment>, StoreError>;
}

/// A device enrolled with a certificate that is still valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// Store it binds.
    pub store: StoreId,
    /// Device.
    pub device: DeviceId,
    /// When its oldest valid certificate was issued, Unix ms.
    pub issued_ms: i64,
}

/// The SQL of [`PkiStore::enrolled_devices`]; `$1` tenant, `$2` now.
pub(crate) const ENROLLED_DEVICES: &str = "SELECT store_id, device_id, min(issued_ms) FROM device_certs \
     WHERE tenant_id = $1 AND revoked_ms IS NULL AND not_after_ms > $2 GROUP BY store_id, device_id";

pub(crate) fn enrollment(
    store: &str,
    device: &str,
    issued_ms: i64,
) -> Result<Enrollment, StoreError> {
    let (store, device) = ids(store, device)?;
    Ok(Enrollment {
        store,
        device,
        issued_ms,
    })
}

/// A stored row's store and device ids.
fn ids(store: &str, device: &str) -> Result<(StoreId, DeviceId), StoreError> {
    Ok((
        StoreId::new(store).map_err(|e| StoreError::Corrupt(format!("store id: {e}")))?,
        DeviceId::new(device).map_err(|e| StoreError::Corrupt(format!("device id: {e}")))?,
    ))
}

pub(crate) fn record(
    store: &str,
    device: &str,
    not_after_ms: i64,
    revoked_ms: Option<i64>,
    cert_hash: Vec<u8>,
) -> Result<DeviceCertRecord, StoreError> {
    let (store, device) = ids(store, device)?;
    Ok(DeviceCertRecord {
        store,
        device,
        not_after_ms,
        revoked_ms,
        cert_hash,
    })
}
