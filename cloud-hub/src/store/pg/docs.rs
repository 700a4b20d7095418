//! [`DocStore`] on PostgreSQL: one transaction per edit, the document row locked with
//! `SELECT … FOR UPDATE` (created empty first if missing, so there is always a row to lock).

use async_trait::async_trait;
use storesync_protocol::ids::{DeviceId, TenantId};

use super::{PgStore, notify, tenant_sql};
use crate::store::StoreError;
use crate::store::docs::{DocEdit, DocRow, DocStore, doc_change};

#[async_trait]
impl DocStore for PgStore {
    async fn doc_edit(
        &self,
        tenant: &TenantId,
        doc_key: &str,
        device: Option<&DeviceId>,
        edit: DocEdit<'_>,
    ) -> Result<i64, StoreError> {
        let now = crate::store::now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&tenant_sql(tenant.as_str())).await?;
        tx.execute(
            "INSERT INTO sync_docs (tenant_id, doc_key, bytes, version, updated_ms) \
             VALUES ($1, $2, '\\x'::bytea, 0, $3) ON CONFLICT DO NOTHING",
            &[&tenant.as_str(), &doc_key, &now],
        )
        .await?;
        let row = tx
            .query_one(
                "SELECT bytes, version FROM sync_docs WHERE tenant_id = $1 AND doc_key = $2 FOR UPDATE",
                &[&tenant.as_str(), &doc_key],
            )
            .await?;
        let bytes: Vec<u8> = row.get(0);
        let version: i64 = row.get(1);
        let peer_state = match device {
            Some(device) => tx
                .query_opt(
                    "SELECT state FROM sync_doc_peers WHERE tenant_id = $1 AND doc_key = $2 AND device_id = $3",
                    &[&tenant.as_str(), &doc_key, &device.as_str()],
                )
                .await?
                .map(|r| r.get(0)),
            None => None,
        };
        let write = edit(DocRow {
            bytes: (version > 0).then_some(bytes),
            version,
            peer_state,
        })?;
        let mut new_version = version;
        if let Some(bytes) = &write.bytes {
            new_version = version + 1;
            tx.execute(
                "UPDATE sync_docs SET bytes = $3, version = $4, updated_ms = $5 WHERE tenant_id = $1 AND doc_key = $2",
                &[&tenant.as_str(), &doc_key, bytes, &new_version, &now],
            )
            .await?;
            notify(&tx, &doc_change(tenant, doc_key)).await?;
        }
        if let (Some(device), Some(state)) = (device, &write.peer_state) {
            tx.execute(
                "INSERT INTO sync_doc_peers (tenant_id, doc_key, device_id, state, updated_ms) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (tenant_id, doc_key, device_id) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
                &[&tenant.as_str(), &doc_key, &device.as_str(), state, &now],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(new_version)
    }

    async fn doc_get(
        &self,
        tenant: &TenantId,
        doc_key: &str,
    ) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "SELECT bytes, version FROM sync_docs WHERE tenant_id = $1 AND doc_key = $2 AND version > 0",
                &[&tenant.as_str(), &doc_key],
            )
            .await?;
        Ok(rows.first().map(|r| (r.get(0), r.get(1))))
    }

    async fn doc_versions(
        &self,
        tenant: &TenantId,
        doc_keys: &[String],
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "SELECT doc_key, version FROM sync_docs WHERE tenant_id = $1 AND doc_key = ANY($2)",
                &[&tenant.as_str(), &doc_keys],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
