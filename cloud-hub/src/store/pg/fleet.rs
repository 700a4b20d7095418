//! [`FleetAlertStore`] on PostgreSQL: one statement per raise or clear, with the change
//! announced by `NOTIFY` in the same transaction.

use async_trait::async_trait;
use storesync_protocol::domain::{Alert, AlertState};
use storesync_protocol::ids::{AlertId, TenantId};
use storesync_protocol::time::UnixMillis;

use super::{PgStore, notify, tenant_sql};
use crate::ingest::alert_state_rank;
use crate::store::fleet::{FleetAlertStore, HUB_ACTOR};
use crate::store::{Change, StoreError};

#[async_trait]
impl FleetAlertStore for PgStore {
    async fn fleet_alert_raise(
        &self,
        tenant: &TenantId,
        alert: &Alert,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let facts = serde_json::to_value(&alert.facts).unwrap_or(serde_json::Value::Null);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&tenant_sql(tenant.as_str())).await?;
        let row = tx
            .query_opt(
                "INSERT INTO alerts (tenant_id, alert_id, store_id, kind, severity, subject, raised_ms, raised_offset_min, \
                   state, changed_by, message, facts, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11, $12) \
                 ON CONFLICT (tenant_id, alert_id) DO UPDATE SET state = excluded.state, changed_by = NULL, \
                   raised_ms = excluded.raised_ms, raised_offset_min = excluded.raised_offset_min, \
                   message = excluded.message, facts = excluded.facts, updated_ms = excluded.updated_ms \
                 WHERE alerts.state = $13 \
                 RETURNING alert_id",
                &[
                    &tenant.as_str(),
                    &alert.alert_id.as_str(),
                    &alert.store_id.as_str(),
                    &alert.kind.as_str(),
                    &alert.severity.as_str(),
                    &alert.subject,
                    &alert.raised_at.unix_ms(),
                    &alert.raised_at.offset_minutes(),
                    &alert_state_rank(AlertState::Open),
                    &alert.message,
                    &facts,
                    &now,
                    &alert_state_rank(AlertState::Resolved),
                ],
            )
            .await?;
        let changed = row.is_some();
        if changed {
            notify(
                &tx,
                &Change::alert(
                    tenant.as_str(),
                    alert.alert_id.as_str(),
                    alert.store_id.as_str(),
                ),
            )
            .await?;
        }
        tx.commit().await?;
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
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&tenant_sql(tenant.as_str())).await?;
        let resolved = alert_state_rank(AlertState::Resolved);
        let rows = tx
            .query(
                "UPDATE alerts SET state = $3, changed_by = $4, updated_ms = $5 \
                 WHERE tenant_id = $1 AND alert_id = ANY($2) AND state < $3 RETURNING alert_id, store_id",
                &[&tenant.as_str(), &ids, &resolved, &HUB_ACTOR, &now],
            )
            .await?;
        for row in &rows {
            notify(&tx, &Change::alert(tenant.as_str(), row.get(0), row.get(1))).await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}
