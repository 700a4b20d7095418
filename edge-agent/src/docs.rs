//! The agent's replicas of the automerge documents (see [`storesync_protocol::docs`]).
//!
//! [`Docs`] holds the store's document (alert marks, tasks, settings, adjustments HQ sends
//! down) and the tenant document (catalog and alert rules, read-only here), the automerge
//! sync state towards the hub for each, and applies what arrives:
//!
//! - an alert acknowledged or resolved at the hub is moved to that state here (through the
//!   writer, so it is also recorded as an alert event); states only move forward;
//! - a stock adjustment or transfer leg entered at HQ is submitted to the writer like any
//!   adjustment, keyed by its `adjustmentId`: the writer's idempotency makes a second
//!   submission a duplicate, so it is applied exactly once in effect, even across restarts.
//!
//! Storage: its own SQLite database, `<data_dir>/docs.db` (WAL, `synchronous=FULL`), with
//! one connection owned by this module: the event database keeps its single writer. A
//! document is saved whole after every change (automerge's `save` compacts, so every save
//! is a compaction); the sync states are saved after every exchange, so a reconnect sends
//! only what is missing. The actor is random at every process start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection};
use storesync_protocol::docs::{self as schema, AutoCommit, DocError, SyncPeer};
use storesync_protocol::domain::AlertState;
use storesync_protocol::wire::{DocId, DocSync};
use tokio::sync::{Mutex, Notify};

use crate::config::Settings;
use crate::store::StoreError;
use crate::writer::{Outcome, Record, Submission, WriterHandle};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS docs (doc TEXT PRIMARY KEY, bytes BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS peers (doc TEXT PRIMARY KEY, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, at_ms INTEGER NOT NULL);
";

fn doc_name(id: DocId) -> &'static str {
    match id {
        DocId::Tenant => "tenant",
        DocId::Store => "store",
    }
}

struct Replica {
    doc: AutoCommit,
    peer: SyncPeer,
}

struct Inner {
    conn: SqliteConnection,
    store: Replica,
    tenant: Replica,
}

impl Inner {
    fn replica(&mut self, id: DocId) -> &mut Replica {
        match id {
            DocId::Store => &mut self.store,
            DocId::Tenant => &mut self.tenant,
        }
    }

    async fn save_doc(&mut self, id: DocId) -> Result<(), StoreError> {
        let bytes = self.replica(id).doc.save();
        sqlx::query("INSERT INTO docs (doc, bytes) VALUES (?, ?) ON CONFLICT (doc) DO UPDATE SET bytes = excluded.bytes")
            .bind(doc_name(id))
            .bind(bytes)
            .execute(&mut self.conn)
            .await
            .map_err(StoreError::Database)?;
        Ok(())
    }

    async fn save_peer(&mut self, id: DocId) -> Result<(), StoreError> {
        let state = self.replica(id).peer.encode();
        sqlx::query("INSERT INTO peers (doc, state) VALUES (?, ?) ON CONFLICT (doc) DO UPDATE SET state = excluded.state")
            .bind(doc_name(id))
            .bind(state)
            .execute(&mut self.conn)
            .await
            .map_err(StoreError::Database)?;
        Ok(())
    }

    async fn is_applied(&mut self, key: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM applied WHERE key = ?")
            .bind(key)
            .fetch_optional(&mut self.conn)
            .await
            .map_err(StoreError::Database)?
            .is_some())
    }

    async fn set_applied(&mut self, key: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT OR IGNORE INTO applied (key, at_ms) VALUES (?, ?)")
            .bind(key)
            .bind(now_ms)
            .execute(&mut self.conn)
            .await
            .map_err(StoreError::Database)?;
        Ok(())
    }
}

/// What the tenant document says that the agent applies (see
/// [`crate::config::Settings::low_stock_threshold`] and `Settings::milestones`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocRules {
    /// Reorder threshold per SKU, from the catalog.
    pub thresholds: std::collections::HashMap<String, i64>,
    /// The `lowStockDefault` rule.
    pub low_stock_default: Option<i64>,
    /// The `salesMilestones` rule, ten-thousandths, ascending.
    pub milestones_e4: Option<Vec<i64>>,
    /// Whether the catalog has any entry (unknown-SKU warnings only make sense then).
    pub has_catalog: bool,
}

/// [`DocRules`] shared between the documents and the writer's alert rules.
#[derive(Debug, Clone, Default)]
pub struct SharedRules(Arc<std::sync::RwLock<DocRules>>);

impl SharedRules {
    /// The current rules.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, DocRules> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, rules: DocRules) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    /// Whether `sku` is unknown to a non-empty catalog.
    pub fn is_unknown_sku(&self, sku: &str) -> bool {
        let rules = self.read();
        rules.has_catalog && !rules.thresholds.contains_key(sku)
    }
}

fn rules_of(doc: &AutoCommit) -> DocRules {
    let catalog = schema::catalog(doc);
    let rules = schema::alert_rules(doc);
    DocRules {
        has_catalog: !catalog.is_empty(),
        thresholds: catalog
            .into_iter()
            .map(|(sku, item)| (sku, item.reorder_threshold))
            .collect(),
        low_stock_default: rules.low_stock_default,
        milestones_e4: rules.sales_milestones_e4,
    }
}

/// Rank of an alert state: states only move forward.
fn rank(state: AlertState) -> u8 {
    match state {
        AlertState::Open => 0,
        AlertState::Acknowledged => 1,
        AlertState::Resolved => 2,
    }
}

/// The agent's document replicas; cheap to clone.
#[derive(Clone)]
pub struct Docs {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
    writer: WriterHandle,
    settings: Arc<Settings>,
    reader: sqlx::SqlitePool,
}

impl std::fmt::Debug for Docs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docs").finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    crate::ingest::now_ms()
}

impl Docs {
    /// Opens (creating) `<data_dir>/docs.db` and loads both documents with a fresh random
    /// actor. `reader` is the event store's read pool (for alert states).
    pub async fn open(
        data_dir: &Path,
        settings: Arc<Settings>,
        writer: WriterHandle,
        reader: sqlx::SqlitePool,
    ) -> Result<Docs, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join("docs.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(StoreError::Database)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&mut conn)
            .await
            .map_err(StoreError::Database)?;
        let actor: [u8; 16] = rand::random();
        let mut load = async |id: DocId| -> Result<Replica, StoreError> {
            let bytes: Option<Vec<u8>> = sqlx::query("SELECT bytes FROM docs WHERE doc = ?")
                .bind(doc_name(id))
                .fetch_optional(&mut conn)
                .await
                .map_err(StoreError::Database)?
                .map(|r| r.get(0));
            let state: Option<Vec<u8>> = sqlx::query("SELECT state FROM peers WHERE doc = ?")
                .bind(doc_name(id))
                .fetch_optional(&mut conn)
                .await
                .map_err(StoreError::Database)?
                .map(|r| r.get(0));
            let doc = match bytes {
                Some(bytes) => match schema::load(&bytes, &actor) {
                    Ok(doc) => doc,
                    Err(e) => {
                        // The hub holds every change: start empty and sync again.
                        tracing::error!(doc = doc_name(id), error = %e, "docs: saved document unreadable; starting over");
                        schema::new_doc(&actor)
                    }
                },
                None => schema::new_doc(&actor),
            };
            Ok(Replica {
                doc,
                peer: SyncPeer::decode(state.as_deref(), false),
            })
        };
        let store = load(DocId::Store).await?;
        let tenant = load(DocId::Tenant).await?;
        settings.doc_rules.set(rules_of(&tenant.doc));
        Ok(Docs {
            inner: Arc::new(Mutex::new(Inner {
                conn,
                store,
                tenant,
            })),
            changed: Arc::new(Notify::new()),
            writer,
            settings,
            reader,
        })
    }

    /// Resolves when a local edit has something new for the hub.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Records a local alert state change in the store's document.
    pub async fn mark_alert(
        &self,
        alert_id: &str,
        state: AlertState,
        by: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mark = schema::AlertMark {
            by: by.to_owned(),
            at_ms: now_ms,
        };
        let mut inner = self.inner.lock().await;
        schema::mark_alert(&mut inner.store.doc, alert_id, state, &mark).map_err(|e| {
            StoreError::Io {
                context: "store document".into(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        inner.save_doc(DocId::Store).await?;
        inner
            .set_applied(&format!("alert:{alert_id}:{}", state.as_str()), now_ms)
            .await?;
        drop(inner);
        self.changed.notify_one();
        Ok(())
    }

    /// Applies a local edit (tasks, settings) to the store's document and saves it when it
    /// changed; the hub hears of it at the next exchange. The outer error is storage, the
    /// inner one the edit's (an invalid id or value, answered as a bad request).
    pub async fn edit_store<T>(
        &self,
        edit: impl FnOnce(&mut AutoCommit) -> Result<T, DocError>,
    ) -> Result<Result<T, DocError>, StoreError> {
        let mut inner = self.inner.lock().await;
        let before = inner.store.doc.get_heads();
        let out = match edit(&mut inner.store.doc) {
            Ok(out) => out,
            Err(e) => return Ok(Err(e)),
        };
        if inner.store.doc.get_heads() != before {
            inner.save_doc(DocId::Store).await?;
            drop(inner);
            self.changed.notify_one();
        }
        Ok(Ok(out))
    }

    /// The store document's tasks and settings, for the local API.
    pub async fn tasks_and_settings(
        &self,
    ) -> (BTreeMap<String, schema::Task>, BTreeMap<String, Value>) {
        let inner = self.inner.lock().await;
        (
            schema::tasks(&inner.store.doc),
            schema::settings(&inner.store.doc),
        )
    }

    /// A new session: forget what was in flight and open both exchanges.
    pub async fn connected(&self) -> Vec<DocSync> {
        let mut inner = self.inner.lock().await;
        inner.store.peer.reset();
        inner.tenant.peer.reset();
        Self::generate_all(&mut inner)
    }

    /// What local edits have for the hub.
    pub async fn outgoing(&self) -> Vec<DocSync> {
        let mut inner = self.inner.lock().await;
        Self::generate_all(&mut inner)
    }

    fn generate_all(inner: &mut Inner) -> Vec<DocSync> {
        let mut out = Vec::new();
        for id in [DocId::Store, DocId::Tenant] {
            let replica = inner.replica(id);
            if let Some(data) = replica.peer.generate(&mut replica.doc) {
                out.push(DocSync { doc: id, data });
            }
        }
        out
    }

    /// A message from the hub: applies it, persists document and sync state, applies its
    /// effects, and returns the answer. A refused message (too large, malformed) is an
    /// error the caller reports as an alarm.
    pub async fn receive(&self, message: DocSync) -> Result<Vec<DocSync>, DocError> {
        let id = message.doc;
        let mut inner = self.inner.lock().await;
        let replica = inner.replica(id);
        let before = replica.doc.get_heads();
        replica.peer.receive(&mut replica.doc, &message.data)?;
        let changed = replica.doc.get_heads() != before;
        let answer = replica.peer.generate(&mut replica.doc);
        let persisted = async {
            if changed {
                inner.save_doc(id).await?;
            }
            inner.save_peer(id).await
        }
        .await;
        if let Err(e) = persisted {
            tracing::warn!(error = %e, "docs: persisting a document failed; it syncs again");
        }
        if changed && id == DocId::Store {
            self.apply_store_doc(&mut inner).await;
        }
        if changed && id == DocId::Tenant {
            self.settings.doc_rules.set(rules_of(&inner.tenant.doc));
            tracing::info!(
                "docs: tenant document changed; catalog thresholds and alert rules applied"
            );
        }
        Ok(answer
            .into_iter()
            .map(|data| DocSync { doc: id, data })
            .collect())
    }

    /// Applies alert marks and adjustments not applied yet.
    async fn apply_store_doc(&self, inner: &mut Inner) {
        let now = now_ms();
        for (alert_id, (state, mark)) in schema::alert_states(&inner.store.doc) {
            let key = format!("alert:{alert_id}:{}", state.as_str());
            if inner.is_applied(&key).await.unwrap_or(true) {
                continue;
            }
            let local: Option<String> = sqlx::query("SELECT state FROM alerts WHERE alert_id = ?")
                .bind(&alert_id)
                .fetch_optional(&self.reader)
                .await
                .ok()
                .flatten()
                .map(|r| r.get(0));
            let behind = local
                .as_deref()
                .and_then(AlertState::parse)
                .is_some_and(|l| rank(l) < rank(state));
            if behind {
                match self
                    .writer
                    .set_alert_state(alert_id.clone(), state, mark.by.clone(), mark.at_ms)
                    .await
                {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(alert = %alert_id, error = %e, "docs: applying an alert mark failed; retried at the next change");
                        continue;
                    }
                }
            }
            let _ = inner.set_applied(&key, now).await;
        }
        for (adjustment_id, value) in schema::adjustments(&inner.store.doc) {
            let key = format!("adjustment:{adjustment_id}");
            if inner.is_applied(&key).await.unwrap_or(true) {
                continue;
            }
            let ctx =
                crate::ingest::context(now, &self.settings.record_limits, &self.settings.store);
            let parsed = storesync_protocol::validate::adjustment_from_json(&value, &ctx)
                .map(Record::Adjustment)
                .map_err(|r| r.errors);
            let submission = Submission {
                source: "hub:document".into(),
                kind: "adjustment",
                raw: value.to_string().into_bytes(),
                parsed,
                resubmit_of: None,
            };
            match self.writer.submit(vec![submission], now).await {
                Ok(outcomes) => {
                    if let Some(Outcome::Rejected { errors, .. }) = outcomes.first() {
                        tracing::warn!(adjustment = %adjustment_id, ?errors, "docs: an adjustment from the hub was rejected and kept as a dead letter");
                    }
                    let _ = inner.set_applied(&key, now).await;
                }
                Err(e) => {
                    tracing::warn!(adjustment = %adjustment_id, error = %e, "docs: submitting an adjustment failed; retried at the next change");
                }
            }
        }
    }

    /// The documents as this agent holds them, for the local API.
    pub async fn summary(&self) -> Value {
        let mut inner = self.inner.lock().await;
        let alerts: BTreeMap<String, Value> = schema::alert_states(&inner.store.doc)
            .into_iter()
            .map(|(id, (s, m))| {
                (
                    id,
                    json!({"state": s.as_str(), "by": m.by, "atMs": m.at_ms}),
                )
            })
            .collect();
        json!({
            "store": {
                "heads": schema::heads_hex(&mut inner.store.doc),
                "alerts": alerts,
                "tasks": schema::tasks(&inner.store.doc),
                "settings": schema::settings(&inner.store.doc),
                "adjustments": schema::adjustments(&inner.store.doc),
            },
            "tenant": {
                "heads": schema::heads_hex(&mut inner.tenant.doc),
                "catalog": schema::catalog(&inner.tenant.doc),
                "rules": schema::rules(&inner.tenant.doc),
            },
        })
    }
}
