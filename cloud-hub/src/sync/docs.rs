//! The automerge documents over a device's sync connection (hub side).
//!
//! A [`DocLink`] belongs to one connection. It keeps the automerge sync state of the
//! device's two documents — its store's document (read-write) and the tenant document
//! (read-only: what a device sends for it is never applied) — and persists it with every
//! exchange, in the same transaction and under the same row lock as the document
//! ([`crate::store::docs::DocStore::doc_edit`]), so a reconnect starts from the heads both
//! sides share. A device can name no other document: the [`DocId`] of a message only says
//! *which of its own two* it is for.
//!
//! Call order: [`DocLink::connected`] when the session is established, then
//! [`DocLink::receive`] for every [`DocSync`] and [`DocLink::refresh`] when the change
//! feed says one of the two documents may have changed. Each returns the messages to send.

use std::collections::BTreeMap;

use storesync_protocol::docs::{self as schema, DocError, SyncPeer};
use storesync_protocol::ids::{DeviceId, StoreId, TenantId};
use storesync_protocol::wire::{DocId, DocSync};

use crate::store::docs::{DocWrite, TENANT_DOC_KEY, store_doc_key};
use crate::store::{Change, Store, StoreError};

/// Why a document exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The device sent something the hub refuses (too large, malformed): an alarm.
    #[error("document {doc:?}: {error}")]
    Refused {
        /// The document.
        doc: DocId,
        /// Why.
        error: DocError,
    },
    /// The hub's store failed.
    #[error("document store: {0}")]
    Store(#[from] StoreError),
}

struct PeerDoc {
    key: String,
    read_only: bool,
    /// `None` until loaded from the persisted state.
    peer: Option<SyncPeer>,
    /// The document version last synced from.
    version: i64,
}

/// The document side of one device connection.
pub struct DocLink {
    tenant: TenantId,
    store: StoreId,
    device: DeviceId,
    docs: BTreeMap<DocId, PeerDoc>,
}

impl std::fmt::Debug for DocLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocLink")
            .field("store", &self.store)
            .field("device", &self.device)
            .finish()
    }
}

impl DocLink {
    /// The link of a device of `store`.
    pub fn new(tenant: TenantId, store: StoreId, device: DeviceId) -> DocLink {
        let mut docs = BTreeMap::new();
        docs.insert(
            DocId::Store,
            PeerDoc {
                key: store_doc_key(&store),
                read_only: false,
                peer: None,
                version: -1,
            },
        );
        docs.insert(
            DocId::Tenant,
            PeerDoc {
                key: TENANT_DOC_KEY.to_owned(),
                read_only: true,
                peer: None,
                version: -1,
            },
        );
        DocLink {
            tenant,
            store,
            device,
            docs,
        }
    }

    /// Whether a change from the feed may concern this link's documents.
    pub fn concerns(&self, change: &Change) -> bool {
        change.tenant == self.tenant.as_str()
            && change.sales.is_empty()
            && change.alerts.is_empty()
            && (change.stores.is_empty() || change.stores.iter().any(|s| s == self.store.as_str()))
    }

    /// The session is established: open both exchanges.
    pub async fn connected(&mut self, store: &dyn Store) -> Result<Vec<DocSync>, LinkError> {
        for doc in self.docs.values_mut() {
            if let Some(peer) = &mut doc.peer {
                peer.reset();
            }
        }
        let mut out = Vec::new();
        for id in [DocId::Store, DocId::Tenant] {
            out.extend(self.exchange(store, id, None).await?);
        }
        Ok(out)
    }

    /// A message from the device.
    pub async fn receive(
        &mut self,
        store: &dyn Store,
        message: DocSync,
    ) -> Result<Vec<DocSync>, LinkError> {
        self.exchange(store, message.doc, Some(&message.data)).await
    }

    /// One of the documents may have changed (the change feed): send what is new.
    pub async fn refresh(&mut self, store: &dyn Store) -> Result<Vec<DocSync>, LinkError> {
        let keys: Vec<String> = self.docs.values().map(|d| d.key.clone()).collect();
        let versions = store.docs().doc_versions(&self.tenant, &keys).await?;
        let mut out = Vec::new();
        for (key, version) in versions {
            let Some(id) = self
                .docs
                .iter()
                .find(|(_, d)| d.key == key && d.version != version)
                .map(|(id, _)| *id)
            else {
                continue;
            };
            out.extend(self.exchange(store, id, None).await?);
        }
        Ok(out)
    }

    /// Receives `incoming` (if any) and generates the answer, under the document's lock.
    async fn exchange(
        &mut self,
        store: &dyn Store,
        id: DocId,
        incoming: Option<&[u8]>,
    ) -> Result<Vec<DocSync>, LinkError> {
        let Some(entry) = self.docs.get_mut(&id) else {
            return Ok(Vec::new());
        };
        let mut refused = None;
        let mut outgoing = Vec::new();
        let mut marks = Vec::new();
        let key = entry.key.clone();
        let read_only = entry.read_only;
        let peer_slot = &mut entry.peer;
        let version = store
            .docs()
            .doc_edit(&self.tenant, &key, Some(&self.device), &mut |row| {
                let mut doc = match crate::docs::open(row.bytes.as_deref()) {
                    Ok(doc) => doc,
                    Err(e) => return Err(StoreError::Corrupt(format!("document {key}: {e}"))),
                };
                let peer = peer_slot
                    .get_or_insert_with(|| SyncPeer::decode(row.peer_state.as_deref(), read_only));
                let before = doc.get_heads();
                let marks_before = (id == DocId::Store).then(|| schema::alert_states(&doc));
                if let Some(data) = incoming
                    && let Err(e) = peer.receive(&mut doc, data)
                {
                    refused = Some(e);
                    return Ok(DocWrite::default());
                }
                if let Some(message) = peer.generate(&mut doc) {
                    outgoing.push(message);
                }
                let changed = doc.get_heads() != before;
                if changed && let Some(marks_before) = marks_before {
                    for (alert, (state, mark)) in schema::alert_states(&doc) {
                        if marks_before.get(&alert).map(|(s, _)| *s) != Some(state) {
                            marks.push((alert, state, mark));
                        }
                    }
                }
                Ok(DocWrite {
                    bytes: changed.then(|| doc.save()),
                    peer_state: Some(peer.encode()),
                })
            })
            .await?;
        entry.version = version;
        if let Some(error) = refused {
            return Err(LinkError::Refused { doc: id, error });
        }
        if !marks.is_empty() {
            crate::docs::apply_alert_marks(store, &self.tenant, marks).await;
        }
        Ok(outgoing
            .into_iter()
            .map(|data| DocSync { doc: id, data })
            .collect())
    }
}
