//! [`ViewStore`] on PostgreSQL.

use async_trait::async_trait;
use storesync_protocol::ids::TenantId;

use super::{PgStore, tenant_sql};
use crate::store::StoreError;
use crate::store::views::{SavedViewRecord, ViewStore, too_many};

#[async_trait]
impl ViewStore for PgStore {
    async fn views_list(
        &self,
        tenant: &TenantId,
        owner: &str,
    ) -> Result<Vec<SavedViewRecord>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "SELECT view_id, name, body, updated_ms FROM saved_views \
                 WHERE tenant_id = $1 AND owner = $2 ORDER BY updated_ms DESC, view_id",
                &[&tenant.as_str(), &owner],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| SavedViewRecord {
                view_id: r.get(0),
                name: r.get(1),
                body: r.get(2),
                updated_ms: r.get(3),
            })
            .collect())
    }

    async fn view_put(
        &self,
        tenant: &TenantId,
        owner: &str,
        view: &SavedViewRecord,
        views_max: u32,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&tenant_sql(tenant.as_str())).await?;
        // One writer per owner at a time, so two concurrent saves cannot both pass the limit.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7402))",
            &[&format!("{}/{owner}", tenant.as_str())],
        )
        .await?;
        let row = tx
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE view_id = $3) FROM saved_views WHERE tenant_id = $1 AND owner = $2",
                &[&tenant.as_str(), &owner, &view.view_id],
            )
            .await?;
        let (count, exists): (i64, i64) = (row.get(0), row.get(1));
        if exists == 0 && count >= i64::from(views_max) {
            return Err(too_many(views_max));
        }
        tx.execute(
            "INSERT INTO saved_views (tenant_id, owner, view_id, name, body, updated_ms) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, owner, view_id) DO UPDATE SET name = excluded.name, body = excluded.body, updated_ms = excluded.updated_ms",
            &[&tenant.as_str(), &owner, &view.view_id, &view.name, &view.body, &view.updated_ms],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn view_delete(
        &self,
        tenant: &TenantId,
        owner: &str,
        view_id: &str,
    ) -> Result<bool, StoreError> {
        let n = self
            .tenant_execute(
                tenant.as_str(),
                "DELETE FROM saved_views WHERE tenant_id = $1 AND owner = $2 AND view_id = $3",
                &[&tenant.as_str(), &owner, &view_id],
            )
            .await?;
        Ok(n > 0)
    }
}
