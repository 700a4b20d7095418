//! Alerts the hub raises itself about its fleet (a store that stopped syncing, a device
//! whose clock is far off), stored in the same `alerts` table as the alerts stores send.
//!
//! A fleet alert has a stable id per subject and condition (see [`crate::fleet`]), so
//! raising it again while the condition lasts changes nothing, and several hub replicas
//! running the same periodic check raise it once: both backends insert with
//! `ON CONFLICT (tenant_id, alert_id)`. When the condition clears the hub resolves the alert;
//! when it comes back the same alert reopens with its new facts.

use async_trait::async_trait;
use storesync_protocol::domain::Alert;
use storesync_protocol::ids::{AlertId, TenantId};
use storesync_protocol::time::UnixMillis;

use super::StoreError;

/// Who resolves a fleet alert whose condition cleared (the `changed_by` of the alert).
pub const HUB_ACTOR: &str = "hub";

/// Hub-raised alerts, deduplicated by id. Both methods announce a change on the store's
/// change feed (the live stream) only when they changed a row.
#[async_trait]
pub trait FleetAlertStore: Send + Sync {
    /// Stores `alert` (state open) unless an alert with its id is open or acknowledged
    /// already; a resolved one reopens with the new time, message and facts. Whether a row
    /// was inserted or reopened.
    async fn fleet_alert_raise(
        &self,
        tenant: &TenantId,
        alert: &Alert,
        now_ms: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// Resolves the alerts of `alert_ids` (by [`HUB_ACTOR`]) that are neither resolved nor
    /// absent, in one statement. How many changed.
    async fn fleet_alerts_clear(
        &self,
        tenant: &TenantId,
        alert_ids: &[AlertId],
        now_ms: UnixMillis,
    ) -> Result<usize, StoreError>;
}
