//! [`DocStore`] on SQLite: the store's single writer serializes edits.

use async_trait::async_trait;
use sqlx::Row as _;
use storesync_protocol::ids::{DeviceId, TenantId};

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::docs::{DocEdit, DocRow, DocStore, doc_change};

#[async_trait]
impl DocStore for SqliteStore {
    async fn doc_edit(
        &self,
        tenant: &TenantId,
        doc_key: &str,
        device: Option<&DeviceId>,
        edit: DocEdit<'_>,
    ) -> Result<i64, StoreError> {
        let now = crate::store::now_ms();
        let (_guard, mut tx) = self.begin_write().await?;
        let row =
            sqlx::query("SELECT bytes, version FROM sync_docs WHERE tenant_id = ? AND doc_key = ?")
                .bind(tenant.as_str())
                .bind(doc_key)
                .fetch_optional(&mut *tx)
                .await?;
        let (bytes, version): (Option<Vec<u8>>, i64) = match row {
            Some(r) => (Some(r.get(0)), r.get(1)),
            None => (None, 0),
        };
        let peer_state = match device {
            Some(device) => sqlx::query(
                "SELECT state FROM sync_doc_peers WHERE tenant_id = ? AND doc_key = ? AND device_id = ?",
            )
            .bind(tenant.as_str())
            .bind(doc_key)
            .bind(device.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0)),
            None => None,
        };
        let write = edit(DocRow {
            bytes: bytes.filter(|_| version > 0),
            version,
            peer_state,
        })?;
        let mut new_version = version;
        if let Some(bytes) = &write.bytes {
            new_version = version + 1;
            sqlx::query(
                "INSERT INTO sync_docs (tenant_id, doc_key, bytes, version, updated_ms) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (tenant_id, doc_key) DO UPDATE SET bytes = excluded.bytes, version = excluded.version, updated_ms = excluded.updated_ms",
            )
            .bind(tenant.as_str())
            .bind(doc_key)
            .bind(bytes.as_slice())
            .bind(new_version)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if let (Some(device), Some(state)) = (device, &write.peer_state) {
            sqlx::query(
                "INSERT INTO sync_doc_peers (tenant_id, doc_key, device_id, state, updated_ms) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (tenant_id, doc_key, device_id) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
            )
            .bind(tenant.as_str())
            .bind(doc_key)
            .bind(device.as_str())
            .bind(state.as_slice())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if write.bytes.is_some() {
            let _ = self.changes.send(doc_change(tenant, doc_key));
        }
        Ok(new_version)
    }

    async fn doc_get(
        &self,
        tenant: &TenantId,
        doc_key: &str,
    ) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT bytes, version FROM sync_docs WHERE tenant_id = ? AND doc_key = ? AND version > 0",
        )
        .bind(tenant.as_str())
        .bind(doc_key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    async fn doc_versions(
        &self,
        tenant: &TenantId,
        doc_keys: &[String],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut out = Vec::new();
        for key in doc_keys {
            if let Some((_, version)) = self.doc_get(tenant, key).await? {
                out.push((key.clone(), version));
            }
        }
        Ok(out)
    }
}
