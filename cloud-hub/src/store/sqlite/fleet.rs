//! [`FleetAlertStore`] on SQLite: one statement per raise or clear under the single writer;
//! the change is announced in process after the commit.

use async_trait::async_trait;
use sqlx::Row as _;
use storesync_protocol::domain::{Alert, AlertState};
use storesync_protocol::ids::{AlertId, TenantId};
use storesync_protocol::time::UnixMillis;

use super::SqliteStore;
use crate::ingest::alert_state_rank;
use crate::store::fleet::{FleetAlertStore, HUB_ACTOR};
use crate::store::{Change, StoreError};

impl SqliteStore {
    fn announce(&self, tenant: &TenantId, alert_id: &str, store_id: String) {
        let _ = self
            .changes
            .send(Change::alert(tenant.as_str(), alert_id, &store_id));
    }
}

#[async_trait]
impl FleetAlertStore for SqliteStore {
    async fn fleet_alert_raise(
        &self,
        tenant: &TenantId,
        alert: &Alert,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let facts = serde_json::to_string(&alert.facts).unwrap_or_else(|_| "[]".into());
        let (guard, mut tx) = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO alerts (tenant_id, alert_id, store_id, kind, severity, subject, raised_ms, raised_offset_min, \
               state, changed_by, message, facts, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?) \
             ON CONFLICT (tenant_id, alert_id) DO UPDATE SET state = excluded.state, changed_by = NULL, \
               raised_ms = excluded.raised_ms, raised_offset_min = excluded.raised_offset_min, \
               message = excluded.message, facts = excluded.facts, updated_ms = excluded.updated_ms \
             WHERE alerts.state = ? \
             RETURNING alert_id",
        )
        .bind(tenant.as_str())
        .bind(alert.alert_id.as_str())
        .bind(alert.store_id.as_str())
        .bind(alert.kind.as_str())
        .bind(alert.severity.as_str())
        .bind(&alert.subject)
        .bind(alert.raised_at.unix_ms())
        .bind(alert.raised_at.offset_minutes())
        .bind(alert_state_rank(AlertState::Open))
        .bind(&alert.message)
        .bind(facts)
        .bind(now)
        .bind(alert_state_rank(AlertState::Resolved))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        drop(guard);
        let changed = row.is_some();
        if changed {
            self.announce(
                tenant,
                alert.alert_id.as_str(),
                alert.store_id.as_str().to_owned(),
            );
        }
        Ok(changed)
    }

    async fn fleet_alerts_clear(
        &self,
        tenant: &TenantId,
        alert_ids: &[AlertId],
        now: UnixMillis,
    ) -> Result<usize, StoreError> {
        if alert_ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = alert_ids.iter().map(AlertId::as_str).collect();
        let ids = serde_json::to_string(&ids).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let resolved = alert_state_rank(AlertState::Resolved);
        let (guard, mut tx) = self.begin_write().await?;
        let rows = sqlx::query(
            "UPDATE alerts SET state = ?, changed_by = ?, updated_ms = ? \
             WHERE tenant_id = ? AND alert_id IN (SELECT value FROM json_each(?)) AND state < ? \
             RETURNING alert_id, store_id",
        )
        .bind(resolved)
        .bind(HUB_ACTOR)
        .bind(now)
        .bind(tenant.as_str())
        .bind(ids)
        .bind(resolved)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        drop(guard);
        for row in &rows {
            let alert_id: String = row.try_get(0)?;
            self.announce(tenant, &alert_id, row.try_get(1)?);
        }
        Ok(rows.len())
    }
}
