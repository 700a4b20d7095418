//! The hub's side of the replicated documents: edits from the API and the alert states
//! they carry.
//!
//! Every edit goes through [`edit`]: the document is loaded under its row lock
//! ([`DocStore::doc_edit`](crate::store::docs::DocStore::doc_edit)), changed with this
//! process's actor, saved whole (automerge's `save` compacts, so every write is a
//! compaction) and committed; sync connections of every hub process hear of it through the
//! store's change feed. The schema is [`storesync_protocol::docs`].

use std::sync::OnceLock;

use storesync_protocol::docs::{self as schema, AutoCommit, DocError};
use storesync_protocol::domain::AlertState;
use storesync_protocol::ids::{AlertId, StoreId, TenantId};

use crate::store::docs::{DocWrite, store_doc_key};
use crate::store::{Store, StoreError};

/// This process's automerge actor: random at every start, never derived from an id.
pub fn actor() -> &'static [u8; 16] {
    static ACTOR: OnceLock<[u8; 16]> = OnceLock::new();
    ACTOR.get_or_init(rand::random)
}

/// A saved document, or a new empty one.
pub fn open(bytes: Option<&[u8]>) -> Result<AutoCommit, DocError> {
    match bytes {
        Some(bytes) => schema::load(bytes, actor()),
        None => Ok(schema::new_doc(actor())),
    }
}

fn doc_error(e: DocError) -> StoreError {
    StoreError::Invalid(e.to_string())
}

/// Applies `change` to the document `doc_key` of `tenant` under its lock and saves it when
/// its heads moved.
pub async fn edit<T: Send>(
    store: &dyn Store,
    tenant: &TenantId,
    doc_key: &str,
    mut change: impl FnMut(&mut AutoCommit) -> Result<T, DocError> + Send,
) -> Result<T, StoreError> {
    let mut out = None;
    store
        .docs()
        .doc_edit(tenant, doc_key, None, &mut |row| {
            let mut doc = open(row.bytes.as_deref()).map_err(doc_error)?;
            let before = doc.get_heads();
            out = Some(change(&mut doc).map_err(doc_error)?);
            let bytes = (doc.get_heads() != before).then(|| doc.save());
            Ok(DocWrite {
                bytes,
                peer_state: None,
            })
        })
        .await?;
    out.ok_or_else(|| StoreError::Invalid("document edit did not run".into()))
}

/// The document as saved (an empty one when never written).
pub async fn read(
    store: &dyn Store,
    tenant: &TenantId,
    doc_key: &str,
) -> Result<AutoCommit, StoreError> {
    let saved = store.docs().doc_get(tenant, doc_key).await?;
    open(saved.as_ref().map(|(b, _)| b.as_slice())).map_err(doc_error)
}

/// Records an alert's new state in its store's document, so the store's agent shows it.
pub async fn mark_alert(
    store: &dyn Store,
    tenant: &TenantId,
    store_id: &StoreId,
    alert_id: &AlertId,
    state: AlertState,
    by: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let mark = schema::AlertMark {
        by: by.to_owned(),
        at_ms: now_ms,
    };
    edit(store, tenant, &store_doc_key(store_id), |doc| {
        schema::mark_alert(doc, alert_id.as_str(), state, &mark)
    })
    .await
}

/// Applies alert marks that arrived in a store's document to the hub's alerts (states only
/// move forward; an alert the hub has not received yet gets its state with its event).
pub async fn apply_alert_marks(
    store: &dyn Store,
    tenant: &TenantId,
    marks: Vec<(String, AlertState, schema::AlertMark)>,
) {
    for (id, state, mark) in marks {
        let Ok(alert_id) = AlertId::new(&id) else {
            tracing::warn!(alert = %id, "docs: an alert mark names an invalid alert id; skipped");
            continue;
        };
        if let Err(e) = store
            .set_alert_state(tenant, &alert_id, state, &mark.by, mark.at_ms)
            .await
        {
            tracing::warn!(alert = %id, error = %e, "docs: applying an alert mark failed");
        }
    }
}
