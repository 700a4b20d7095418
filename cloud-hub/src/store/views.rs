//! Saved views of the UI's explorer, per user: a name and the user's choices (metric,
//! grouping, range, stores) as a small JSON document the hub stores without interpreting.
//! Both backends implement [`ViewStore`]; `saved_views` leads with `tenant_id` and carries
//! the same row-level security as every tenant table.

use async_trait::async_trait;
use storesync_protocol::ids::TenantId;

use super::StoreError;

/// The DDL, shared by both backends.
pub(crate) const SCHEMA_VIEWS: &str = "
CREATE TABLE IF NOT EXISTS saved_views (
    tenant_id  text NOT NULL,
    owner      text NOT NULL,
    view_id    text NOT NULL,
    name       text NOT NULL,
    body       text NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (tenant_id, owner, view_id)
);
";

/// One saved view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedViewRecord {
    /// Id chosen by the client (`[A-Za-z0-9_-]`, at most 64).
    pub view_id: String,
    /// Name shown in the list.
    pub name: String,
    /// The view's settings, a JSON object as text.
    pub body: String,
    /// Last save, Unix ms.
    pub updated_ms: i64,
}

/// Saved views, per tenant and owner (the principal's name).
#[async_trait]
pub trait ViewStore: Send + Sync {
    /// The owner's views, most recently saved first.
    async fn views_list(
        &self,
        tenant: &TenantId,
        owner: &str,
    ) -> Result<Vec<SavedViewRecord>, StoreError>;

    /// Creates or replaces a view. A new view beyond `views_max` for this owner is refused
    /// with [`StoreError::Invalid`]; replacing one is always allowed.
    async fn view_put(
        &self,
        tenant: &TenantId,
        owner: &str,
        view: &SavedViewRecord,
        views_max: u32,
    ) -> Result<(), StoreError>;

    /// Deletes a view; whether it existed.
    async fn view_delete(
        &self,
        tenant: &TenantId,
        owner: &str,
        view_id: &str,
    ) -> Result<bool, StoreError>;
}

/// The refusal of a view beyond the owner's limit.
pub(crate) fn too_many(views_max: u32) -> StoreError {
    StoreError::Invalid(format!("view: at most {views_max} saved views per user"))
}
