//! [`ViewStore`] on SQLite.

use async_trait::async_trait;
use sqlx::Row as _;
use storesync_protocol::ids::TenantId;

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::views::{SavedViewRecord, ViewStore, too_many};

#[async_trait]
impl ViewStore for SqliteStore {
    async fn views_list(
        &self,
        tenant: &TenantId,
        owner: &str,
    ) -> Result<Vec<SavedViewRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT view_id, name, body, updated_ms FROM saved_views \
             WHERE tenant_id = ? AND owner = ? ORDER BY updated_ms DESC, view_id",
        )
        .bind(tenant.as_str())
        .bind(owner)
        .fetch_all(&self.pool)
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
        let (_guard, mut tx) = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT count(*), coalesce(sum(view_id = ?), 0) FROM saved_views WHERE tenant_id = ? AND owner = ?",
        )
        .bind(&view.view_id)
        .bind(tenant.as_str())
        .bind(owner)
        .fetch_one(&mut *tx)
        .await?;
        let (count, exists): (i64, i64) = (row.get(0), row.get(1));
        if exists == 0 && count >= i64::from(views_max) {
            return Err(too_many(views_max));
        }
        sqlx::query(
            "INSERT INTO saved_views (tenant_id, owner, view_id, name, body, updated_ms) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (tenant_id, owner, view_id) DO UPDATE SET name = excluded.name, body = excluded.body, updated_ms = excluded.updated_ms",
        )
        .bind(tenant.as_str())
        .bind(owner)
        .bind(&view.view_id)
        .bind(&view.name)
        .bind(&view.body)
        .bind(view.updated_ms)
        .execute(&mut *tx)
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
        let (_guard, mut tx) = self.begin_write().await?;
        let done = sqlx::query(
            "DELETE FROM saved_views WHERE tenant_id = ? AND owner = ? AND view_id = ?",
        )
        .bind(tenant.as_str())
        .bind(owner)
        .bind(view_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }
}
