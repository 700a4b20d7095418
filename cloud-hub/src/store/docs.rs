//! Persistence of the replicated automerge documents and of the per-device sync states.
//! Both backends implement [`DocStore`].
//!
//! `sync_docs` holds one saved (compacted) document per `(tenant_id, doc_key)` with a
//! version that grows by one at every write; `sync_doc_peers` holds the automerge sync
//! state of each device for each document, so a reconnect sends only what is missing. Both
//! lead with `tenant_id` and carry row-level security like every tenant table.
//!
//! [`DocStore::doc_edit`] is the only write path: it runs the caller's edit while holding
//! the document's row lock (`SELECT … FOR UPDATE` on PostgreSQL, the single writer on
//! SQLite), so merges of one document are serialized across hub replicas, and publishes a
//! [`super::Change`] naming the store (or no store, for the tenant document) after the
//! commit, which wakes the sync connections of every hub process.

use async_trait::async_trait;
use storesync_protocol::ids::{DeviceId, StoreId, TenantId};

use super::StoreError;

/// The DDL, shared by both backends (plain SQL types they both accept).
pub(crate) const SCHEMA_DOCS: &str = "
CREATE TABLE IF NOT EXISTS sync_docs (
    tenant_id  text NOT NULL,
    doc_key    text NOT NULL,
    bytes      BYTEA_TYPE NOT NULL,
    version    bigint NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (tenant_id, doc_key)
);
CREATE TABLE IF NOT EXISTS sync_doc_peers (
    tenant_id  text NOT NULL,
    doc_key    text NOT NULL,
    device_id  text NOT NULL,
    state      BYTEA_TYPE NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (tenant_id, doc_key, device_id)
);
";

/// The key of the tenant document.
pub const TENANT_DOC_KEY: &str = "tenant";

/// The key of a store's document.
pub fn store_doc_key(store: &StoreId) -> String {
    format!("store/{store}")
}

/// The store a document key names, `None` for the tenant document.
pub fn store_of_key(doc_key: &str) -> Option<&str> {
    doc_key.strip_prefix("store/")
}

/// What [`DocStore::doc_edit`] hands the edit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocRow {
    /// The saved document, `None` when it was never written.
    pub bytes: Option<Vec<u8>>,
    /// Its version (0 when never written).
    pub version: i64,
    /// The device's sync state, when a device was named and has one.
    pub peer_state: Option<Vec<u8>>,
}

/// What the edit wants written; `None` leaves a value as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocWrite {
    /// The new saved document.
    pub bytes: Option<Vec<u8>>,
    /// The device's new sync state.
    pub peer_state: Option<Vec<u8>>,
}

/// An edit of one document, run under its lock.
pub type DocEdit<'a> = &'a mut (dyn FnMut(DocRow) -> Result<DocWrite, StoreError> + Send);

/// The replicated documents of every tenant.
#[async_trait]
pub trait DocStore: Send + Sync {
    /// Runs `edit` on the document with every other writer of it (in any hub process) held
    /// off, writes what it returns and commits; returns the document's version after.
    async fn doc_edit(
        &self,
        tenant: &TenantId,
        doc_key: &str,
        device: Option<&DeviceId>,
        edit: DocEdit<'_>,
    ) -> Result<i64, StoreError>;

    /// The saved document and its version.
    async fn doc_get(
        &self,
        tenant: &TenantId,
        doc_key: &str,
    ) -> Result<Option<(Vec<u8>, i64)>, StoreError>;

    /// The versions of the named documents that exist.
    async fn doc_versions(
        &self,
        tenant: &TenantId,
        doc_keys: &[String],
    ) -> Result<Vec<(String, i64)>, StoreError>;
}

/// The change that announces a write of `doc_key`.
pub(crate) fn doc_change(tenant: &TenantId, doc_key: &str) -> super::Change {
    super::Change {
        tenant: tenant.as_str().to_owned(),
        sales: Vec::new(),
        alerts: Vec::new(),
        stores: store_of_key(doc_key)
            .map(|s| vec![s.to_owned()])
            .unwrap_or_default(),
    }
}
