//! [`PkiStore`] on PostgreSQL.

use async_trait::async_trait;
use storesync_protocol::ids::{DeviceId, StoreId, TenantId};

use super::PgStore;
use crate::store::StoreError;
use crate::store::pki::{
    DeviceCertRecord, ENROLLED_DEVICES, Enrollment, PkiStore, enrollment, record,
};

#[async_trait]
impl PkiStore for PgStore {
    async fn pki_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT value FROM pki_objects WHERE name = $1", &[&name])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn pki_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name FROM pki_objects WHERE starts_with(name, $1) ORDER BY name",
                &[&prefix],
            )
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn pki_put_if_absent(
        &self,
        name: &str,
        value: &[u8],
        now_ms: i64,
    ) -> Result<Vec<u8>, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO pki_objects (name, value, created_ms) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                &[&name, &value, &now_ms],
            )
            .await?;
        let row = client
            .query_one("SELECT value FROM pki_objects WHERE name = $1", &[&name])
            .await?;
        Ok(row.get(0))
    }

    async fn enroll_token_insert(
        &self,
        tenant: &TenantId,
        store: &StoreId,
        token_hash: &[u8],
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.tenant_execute(
            tenant.as_str(),
            "INSERT INTO enroll_tokens (tenant_id, token_hash, store_id, expires_ms) VALUES ($1, $2, $3, $4)",
            &[&tenant.as_str(), &token_hash, &store.as_str(), &expires_ms],
        )
        .await?;
        Ok(())
    }

    async fn enroll_token_use(
        &self,
        tenant: &TenantId,
        token_hash: &[u8],
        now_ms: i64,
    ) -> Result<Option<StoreId>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "UPDATE enroll_tokens SET used_ms = $3 WHERE tenant_id = $1 AND token_hash = $2 \
                 AND used_ms IS NULL AND expires_ms > $3 RETURNING store_id",
                &[&tenant.as_str(), &token_hash, &now_ms],
            )
            .await?;
        match rows.first() {
            Some(row) => {
                let store: String = row.get(0);
                Ok(Some(
                    StoreId::new(store).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                ))
            }
            None => Ok(None),
        }
    }

    async fn device_cert_insert(
        &self,
        tenant: &TenantId,
        serial: &[u8],
        r: &DeviceCertRecord,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.tenant_execute(
            tenant.as_str(),
            "INSERT INTO device_certs (tenant_id, serial, store_id, device_id, not_after_ms, issued_ms, cert_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&tenant.as_str(), &serial, &r.store.as_str(), &r.device.as_str(), &r.not_after_ms, &now_ms, &r.cert_hash],
        )
        .await?;
        Ok(())
    }

    async fn device_cert(
        &self,
        tenant: &TenantId,
        serial: &[u8],
    ) -> Result<Option<DeviceCertRecord>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "SELECT store_id, device_id, not_after_ms, revoked_ms, cert_hash FROM device_certs WHERE tenant_id = $1 AND serial = $2",
                &[&tenant.as_str(), &serial],
            )
            .await?;
        match rows.first() {
            Some(row) => Ok(Some(record(
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
            )?)),
            None => Ok(None),
        }
    }

    async fn device_revoke(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        self.tenant_execute(
            tenant.as_str(),
            "UPDATE device_certs SET revoked_ms = $3 WHERE tenant_id = $1 AND device_id = $2 AND revoked_ms IS NULL",
            &[&tenant.as_str(), &device.as_str(), &now_ms],
        )
        .await
    }

    async fn revoked_serials(
        &self,
        tenant: &TenantId,
        now_ms: i64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "SELECT serial FROM device_certs WHERE tenant_id = $1 AND revoked_ms IS NOT NULL AND not_after_ms > $2 ORDER BY serial",
                &[&tenant.as_str(), &now_ms],
            )
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn enrolled_devices(
        &self,
        tenant: &TenantId,
        now_ms: i64,
    ) -> Result<Vec<Enrollment>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                ENROLLED_DEVICES,
                &[&tenant.as_str(), &now_ms],
            )
            .await?;
        rows.iter()
            .map(|row| enrollment(row.get(0), row.get(1), row.get(2)))
            .collect()
    }

    async fn device_certs(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(Vec<u8>, DeviceCertRecord)>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "SELECT serial, store_id, device_id, not_after_ms, revoked_ms, cert_hash FROM device_certs WHERE tenant_id = $1 ORDER BY issued_ms DESC",
                &[&tenant.as_str()],
            )
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok((
                    row.get(0),
                    record(row.get(1), row.get(2), row.get(3), row.get(4), row.get(5))?,
                ))
            })
            .collect()
    }
}
