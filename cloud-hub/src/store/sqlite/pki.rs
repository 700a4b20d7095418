//! [`PkiStore`] on SQLite.

use async_trait::async_trait;
use sqlx::Row as _;
use storesync_protocol::ids::{DeviceId, StoreId, TenantId};

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::pki::{
    DeviceCertRecord, ENROLLED_DEVICES, Enrollment, PkiStore, enrollment, record,
};

#[async_trait]
impl PkiStore for SqliteStore {
    async fn pki_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT value FROM pki_objects WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn pki_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT name FROM pki_objects WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn pki_put_if_absent(
        &self,
        name: &str,
        value: &[u8],
        now_ms: i64,
    ) -> Result<Vec<u8>, StoreError> {
        let (_guard, mut tx) = self.begin_write().await?;
        sqlx::query("INSERT INTO pki_objects (name, value, created_ms) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT value FROM pki_objects WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.get(0))
    }

    async fn enroll_token_insert(
        &self,
        tenant: &TenantId,
        store: &StoreId,
        token_hash: &[u8],
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        let (_guard, mut tx) = self.begin_write().await?;
        sqlx::query("INSERT INTO enroll_tokens (tenant_id, token_hash, store_id, expires_ms) VALUES (?, ?, ?, ?)")
            .bind(tenant.as_str())
            .bind(token_hash)
            .bind(store.as_str())
            .bind(expires_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn enroll_token_use(
        &self,
        tenant: &TenantId,
        token_hash: &[u8],
        now_ms: i64,
    ) -> Result<Option<StoreId>, StoreError> {
        let (_guard, mut tx) = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE enroll_tokens SET used_ms = ?3 WHERE tenant_id = ?1 AND token_hash = ?2 \
             AND used_ms IS NULL AND expires_ms > ?3 RETURNING store_id",
        )
        .bind(tenant.as_str())
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        match row {
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
        let (_guard, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO device_certs (tenant_id, serial, store_id, device_id, not_after_ms, issued_ms, cert_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.as_str())
        .bind(serial)
        .bind(r.store.as_str())
        .bind(r.device.as_str())
        .bind(r.not_after_ms)
        .bind(now_ms)
        .bind(&r.cert_hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn device_cert(
        &self,
        tenant: &TenantId,
        serial: &[u8],
    ) -> Result<Option<DeviceCertRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT store_id, device_id, not_after_ms, revoked_ms, cert_hash FROM device_certs WHERE tenant_id = ? AND serial = ?",
        )
        .bind(tenant.as_str())
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        match row {
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
        let (_guard, mut tx) = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE device_certs SET revoked_ms = ? WHERE tenant_id = ? AND device_id = ? AND revoked_ms IS NULL",
        )
        .bind(now_ms)
        .bind(tenant.as_str())
        .bind(device.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn revoked_serials(
        &self,
        tenant: &TenantId,
        now_ms: i64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial FROM device_certs WHERE tenant_id = ? AND revoked_ms IS NOT NULL AND not_after_ms > ? ORDER BY serial",
        )
        .bind(tenant.as_str())
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn enrolled_devices(
        &self,
        tenant: &TenantId,
        now_ms: i64,
    ) -> Result<Vec<Enrollment>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(ENROLLED_DEVICES.replace('$', "?")))
            .bind(tenant.as_str())
            .bind(now_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let store: String = row.get(0);
                let device: String = row.get(1);
                enrollment(&store, &device, row.get(2))
            })
            .collect()
    }

    async fn device_certs(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(Vec<u8>, DeviceCertRecord)>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, store_id, device_id, not_after_ms, revoked_ms, cert_hash FROM device_certs WHERE tenant_id = ? ORDER BY issued_ms DESC",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let store: String = row.get(1);
                let device: String = row.get(2);
                Ok((
                    row.get(0),
                    record(&store, &device, row.get(3), row.get(4), row.get(5))?,
                ))
            })
            .collect()
    }
}
