//! The embedded backend: one SQLite file through sqlx, for single-machine installs and the
//! demo.
//!
//! Same tables as PostgreSQL (see `schema/sqlite_v1.sql`), without partitions or row-level
//! security: every statement filters by `tenant_id`. The database runs in WAL mode with
//! `synchronous=FULL`, so a commit that returned survives power loss. Writers are
//! serialized by a process-local lock and `BEGIN IMMEDIATE`; readers run concurrently.
//! Ingest follows the PostgreSQL steps (identity, transaction registry, event tables,
//! rollups, stream head) in one transaction, with multi-row statements.

mod docs;
mod fleet;
mod pki;
mod views;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use jiff::tz::TimeZone;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite};
use storesync_protocol::domain::AlertState;
use storesync_protocol::event::{
    Epoch, Event, EventBody, EventClass, Hash, SeqNo, StreamHead, StreamId,
};
use storesync_protocol::ids::{AlertId, DeviceId, Sku, StoreId, TenantId};
use storesync_protocol::rollup::SalesFigures;
use storesync_protocol::time::UnixMillis;
use tokio::sync::{Mutex, broadcast};

use super::item_hours;
use super::pg::alert_from_parts;
use super::{
    AlertQuery, AlertRecord, Change, CommitOutcome, DeadLetter, DeviceContact, DeviceStatus,
    Principal, RefreshRecord, RefreshUse, Role, RollupQuery, RollupRow, StockLevel, StockWindow,
    Store, StoreError, StoreInfo, UnitsSold, granularity_code, key_text, now_ms, time_zone,
};
use crate::ingest::{self, Plan, alert_state_rank, body_kind, body_time, event_bytes};

const SCHEMA_V1: &str = include_str!("schema/sqlite_v1.sql");

/// Rows per multi-row statement (SQLite allows 32766 bound variables).
const ROWS_PER_STATEMENT_MAX: usize = 1000;

/// The embedded store.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    write: Mutex<()>,
    zones: super::ZoneCache,
    changes: broadcast::Sender<Change>,
}

type Tx = sqlx::Transaction<'static, Sqlite>;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn hash_of(bytes: &[u8]) -> Result<Hash, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(Hash)
        .map_err(|_| corrupt("hash is not 32 bytes"))
}

impl SqliteStore {
    /// Opens (creating) the database file at `path`.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        Self::with_options(options, 8).await
    }

    /// A private in-memory database (tests).
    pub async fn in_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.shared_cache(false);
        // One connection: every connection to ":memory:" would be its own database.
        Self::with_options(options, 1).await
    }

    async fn with_options(
        options: SqliteConnectOptions,
        connections: u32,
    ) -> Result<SqliteStore, StoreError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(connections)
            .connect_with(options)
            .await?;
        let (changes, _) = broadcast::channel(1024);
        Ok(SqliteStore {
            pool,
            write: Mutex::new(()),
            zones: super::ZoneCache::new(super::ZONE_TTL),
            changes,
        })
    }

    /// Keeps each store's time zone, once looked up, for `ttl` instead of
    /// [`ZONE_TTL`](super::ZONE_TTL).
    pub fn with_zone_ttl(mut self, ttl: Duration) -> Self {
        self.zones = super::ZoneCache::new(ttl);
        self
    }

    async fn begin_write(&self) -> Result<(tokio::sync::MutexGuard<'_, ()>, Tx), StoreError> {
        let guard = self.write.lock().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok((guard, tx))
    }

    async fn zone(&self, tenant: &str, store: &str) -> Result<TimeZone, StoreError> {
        if let Some(tz) = self.zones.get(tenant, store) {
            return Ok(tz);
        }
        let generation = self.zones.generation();
        let row = sqlx::query("SELECT time_zone FROM stores WHERE tenant_id = ? AND store_id = ?")
            .bind(tenant)
            .bind(store)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("store {store} of tenant {tenant}")))?;
        let tz = time_zone(row.try_get::<&str, _>(0)?)?;
        self.zones.insert(tenant, store, tz.clone(), generation);
        Ok(tz)
    }

    #[tracing::instrument(name = "commit_events", level = "info", skip_all, fields(
        tenant = %stream.tenant, store = %stream.store, events = events.len(), inserted = tracing::field::Empty
    ))]
    async fn commit_inner(
        &self,
        stream: &StreamId,
        events: &[Event],
        new_head: StreamHead,
    ) -> Result<CommitOutcome, StoreError> {
        let tenant = stream.tenant.as_str();
        let store = stream.store.as_str();
        let device = stream.device.as_str();
        let epoch = stream.epoch.0 as i64;
        let class = stream.class as i16;
        let tz = self.zone(tenant, store).await?;
        let now = now_ms();
        let started = std::time::Instant::now();
        let (_guard, mut tx) = self.begin_write().await?;
        let mut outcome = CommitOutcome::default();

        // 1. Event identity.
        // A duplicate has the same content and the same link: the chain hash covers `prev`,
        // so a fork that repeats a key and its content is still a conflict.
        let mut stored: HashMap<i64, (Vec<u8>, Vec<u8>)> = HashMap::new();
        if let (Some(lo), Some(hi)) = (
            events.iter().map(|e| e.key.seq.0).min(),
            events.iter().map(|e| e.key.seq.0).max(),
        ) {
            let rows = sqlx::query(
                "SELECT seq, content_hash, chain_hash FROM event_keys WHERE tenant_id = ? AND device_id = ? AND epoch = ? AND class = ? AND seq BETWEEN ? AND ?",
            )
            .bind(tenant)
            .bind(device)
            .bind(epoch)
            .bind(class)
            .bind(lo as i64)
            .bind(hi as i64)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                stored.insert(row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?));
            }
        }
        let mut new_seqs: HashSet<i64> = HashSet::new();
        let mut fresh_keys: Vec<&Event> = Vec::new();
        let mut key_conflicts: Vec<(usize, String)> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let seq = event.key.seq.0 as i64;
            match stored.get(&seq) {
                Some((content, chain))
                    if content.as_slice() == &event.content_hash.0[..]
                        && chain.as_slice() == &event.chain_hash().0[..] =>
                {
                    outcome.duplicates += 1
                }
                Some(_) => {
                    outcome.conflicts.push(event.key.clone());
                    key_conflicts.push((
                        index,
                        ingest::conflict_reason(event, "key already stored with other content"),
                    ));
                }
                None => {
                    if new_seqs.insert(seq) {
                        fresh_keys.push(event);
                    } else {
                        outcome.duplicates += 1;
                    }
                }
            }
        }
        for chunk in fresh_keys.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO event_keys (tenant_id, device_id, epoch, class, seq, content_hash, chain_hash) ",
            );
            qb.push_values(chunk, |mut b, e| {
                b.push_bind(tenant.to_owned())
                    .push_bind(device.to_owned())
                    .push_bind(epoch)
                    .push_bind(class)
                    .push_bind(e.key.seq.0 as i64)
                    .push_bind(e.content_hash.0.to_vec())
                    .push_bind(e.chain_hash().0.to_vec());
            });
            qb.build().execute(&mut *tx).await?;
        }

        // 2. Screening and the transaction registry.
        let mut seen_new: HashSet<i64> = HashSet::new();
        let screened = ingest::screen(events, stream, |e| {
            let seq = e.key.seq.0 as i64;
            new_seqs.contains(&seq) && seen_new.insert(seq)
        });
        outcome.inserted += screened.inserted;
        outcome.duplicates += screened.duplicates;
        let mut dead = key_conflicts;
        dead.extend(screened.dead);
        for &i in &screened.conflicts {
            outcome.conflicts.push(events[i].key.clone());
        }
        let txn_ids: Vec<&str> = screened
            .candidates
            .iter()
            .filter_map(|&i| match &events[i].body {
                EventBody::Transaction(t) => Some(t.transaction_id.as_str()),
                _ => None,
            })
            .collect();
        let mut known: HashMap<String, Vec<u8>> = HashMap::new();
        for chunk in txn_ids.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT transaction_id, content_hash FROM transaction_ids WHERE tenant_id = ",
            );
            qb.push_bind(tenant.to_owned())
                .push(" AND transaction_id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind((*id).to_owned());
            }
            qb.push(")");
            for row in qb.build().fetch_all(&mut *tx).await? {
                known.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        let mut apply = Vec::new();
        for &index in &screened.candidates {
            let event = &events[index];
            if let EventBody::Transaction(t) = &event.body
                && let Some(hash) = known.get(t.transaction_id.as_str())
            {
                {
                    if hash.as_slice() == &event.content_hash.0[..] {
                        outcome.duplicates += 1;
                    } else {
                        outcome.conflicts.push(event.key.clone());
                        dead.push((
                            index,
                            ingest::conflict_reason(
                                event,
                                "transaction id reused with other content",
                            ),
                        ));
                    }
                    continue;
                }
            }
            apply.push(index);
        }
        outcome.inserted += apply.len() as u64;
        let plan = Plan::new(events, &apply, &tz, now);
        for r in &plan.rejected {
            dead.push((r.index, r.reason.clone()));
        }

        // 3. Event tables.
        for chunk in plan.transactions.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO transaction_ids (tenant_id, transaction_id, content_hash) ",
            );
            qb.push_values(chunk, |mut b, &i| {
                if let EventBody::Transaction(t) = &events[i].body {
                    b.push_bind(tenant.to_owned())
                        .push_bind(t.transaction_id.as_str().to_owned())
                        .push_bind(events[i].content_hash.0.to_vec());
                }
            });
            qb.build().execute(&mut *tx).await?;
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO transactions (tenant_id, at_ms, device_id, epoch, seq, store_id, transaction_id, kind, total_e4, payment_method, register_id, event) ",
            );
            qb.push_values(chunk, |mut b, &i| {
                if let EventBody::Transaction(t) = &events[i].body {
                    b.push_bind(tenant.to_owned())
                        .push_bind(t.timestamp.unix_ms())
                        .push_bind(device.to_owned())
                        .push_bind(epoch)
                        .push_bind(events[i].key.seq.0 as i64)
                        .push_bind(store.to_owned())
                        .push_bind(t.transaction_id.as_str().to_owned())
                        .push_bind(ingest::txn_kind_code(t.kind))
                        .push_bind(t.total_amount.e4())
                        .push_bind(t.payment_method.clone())
                        .push_bind(t.register_id.as_ref().map(|r| r.as_str().to_owned()))
                        .push_bind(event_bytes(&events[i]));
                }
            });
            qb.build().execute(&mut *tx).await?;
        }
        for chunk in plan.lines.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO line_items (tenant_id, at_ms, device_id, epoch, seq, line_no, store_id, transaction_id, sku, quantity, price_e4, kind) ",
            );
            qb.push_values(chunk, |mut b, l| {
                b.push_bind(tenant.to_owned())
                    .push_bind(l.at_ms)
                    .push_bind(device.to_owned())
                    .push_bind(epoch)
                    .push_bind(l.seq)
                    .push_bind(l.line_no)
                    .push_bind(store.to_owned())
                    .push_bind(l.transaction_id.clone())
                    .push_bind(l.sku.clone())
                    .push_bind(l.quantity)
                    .push_bind(l.price_e4)
                    .push_bind(l.kind);
            });
            qb.build().execute(&mut *tx).await?;
        }
        for chunk in plan.others.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT OR IGNORE INTO other_events (tenant_id, at_ms, device_id, epoch, class, seq, store_id, kind, event) ",
            );
            qb.push_values(chunk, |mut b, &i| {
                let e = &events[i];
                b.push_bind(tenant.to_owned())
                    .push_bind(body_time(&e.body))
                    .push_bind(device.to_owned())
                    .push_bind(epoch)
                    .push_bind(class)
                    .push_bind(e.key.seq.0 as i64)
                    .push_bind(store.to_owned())
                    .push_bind(body_kind(&e.body))
                    .push_bind(event_bytes(e));
            });
            qb.build().execute(&mut *tx).await?;
        }
        for chunk in plan.movements.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT OR IGNORE INTO stock_movements (tenant_id, at_ms, device_id, epoch, class, seq, store_id, sku, source_id, is_count, quantity) ",
            );
            qb.push_values(chunk, |mut b, m| {
                b.push_bind(tenant.to_owned())
                    .push_bind(m.at_ms)
                    .push_bind(device.to_owned())
                    .push_bind(epoch)
                    .push_bind(m.class)
                    .push_bind(m.seq)
                    .push_bind(store.to_owned())
                    .push_bind(m.sku.clone())
                    .push_bind(m.source_id.clone())
                    .push_bind(m.is_count)
                    .push_bind(m.quantity);
            });
            qb.build().execute(&mut *tx).await?;
        }
        let mut changed_alerts = Vec::new();
        for &index in &plan.alerts {
            if let EventBody::Alert(alert) = &events[index].body {
                upsert_alert(&mut tx, tenant, alert, now).await?;
                changed_alerts.push(alert.alert_id.as_str().to_owned());
            }
        }
        for (index, reason) in &dead {
            let event = &events[*index];
            sqlx::query("INSERT INTO dead_letters (tenant_id, store_id, event_key, reason, raw, received_ms) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(tenant)
                .bind(store)
                .bind(key_text(&event.key))
                .bind(reason)
                .bind(event_bytes(event))
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        for key in &outcome.conflicts {
            if let Some(alert) = ingest::conflict_alert(key, now) {
                upsert_alert(&mut tx, tenant, &alert, now).await?;
                changed_alerts.push(alert.alert_id.as_str().to_owned());
            }
        }

        // 4. Rollups and the stream head.
        let rollups: Vec<_> = plan.rollups.iter().collect();
        for chunk in rollups.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO sales_rollups (tenant_id, granularity, bucket_ms, store_id, dim, dim_value, revenue_e4, units, transactions, refunds, refund_amount_e4, voids) ",
            );
            qb.push_values(chunk, |mut b, ((g, bucket, s, d, v), f)| {
                b.push_bind(tenant.to_owned())
                    .push_bind(*g)
                    .push_bind(*bucket)
                    .push_bind(s.clone())
                    .push_bind(*d)
                    .push_bind(v.clone())
                    .push_bind(f.revenue_e4)
                    .push_bind(f.units)
                    .push_bind(f.transactions)
                    .push_bind(f.refunds)
                    .push_bind(f.refund_amount_e4)
                    .push_bind(f.voids);
            });
            qb.push(
                " ON CONFLICT (tenant_id, granularity, dim, store_id, dim_value, bucket_ms) DO UPDATE SET \
                 revenue_e4 = revenue_e4 + excluded.revenue_e4, units = units + excluded.units, \
                 transactions = transactions + excluded.transactions, refunds = refunds + excluded.refunds, \
                 refund_amount_e4 = refund_amount_e4 + excluded.refund_amount_e4, voids = voids + excluded.voids",
            );
            qb.build().execute(&mut *tx).await?;
        }
        let last_event_ms = events.iter().map(|e| body_time(&e.body)).max();
        sqlx::query(
            "INSERT INTO stream_heads (tenant_id, device_id, epoch, class, store_id, seq, hash, last_event_ms, last_commit_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (tenant_id, device_id, epoch, class) DO UPDATE SET \
               hash = CASE WHEN excluded.seq >= seq THEN excluded.hash ELSE hash END, \
               seq = max(seq, excluded.seq), \
               last_event_ms = max(coalesce(last_event_ms, excluded.last_event_ms), coalesce(excluded.last_event_ms, last_event_ms)), \
               last_commit_ms = excluded.last_commit_ms",
        )
        .bind(tenant)
        .bind(device)
        .bind(epoch)
        .bind(class)
        .bind(store)
        .bind(new_head.seq.0 as i64)
        .bind(new_head.hash.0.to_vec())
        .bind(last_event_ms)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::Span::current().record("inserted", outcome.inserted);
        crate::metrics::global().record_commit(
            started.elapsed().as_secs_f64(),
            outcome.inserted,
            plan.lines.len() as u64,
            outcome.duplicates,
            outcome.conflicts.len() as u64,
        );
        if !plan.ticks.is_empty() || !changed_alerts.is_empty() || !plan.movements.is_empty() {
            let _ = self.changes.send(Change {
                tenant: tenant.to_owned(),
                sales: plan.ticks,
                alerts: changed_alerts,
                stores: vec![store.to_owned()],
            });
        }
        Ok(outcome)
    }
}

async fn upsert_alert(
    tx: &mut Tx,
    tenant: &str,
    alert: &storesync_protocol::domain::Alert,
    now: i64,
) -> Result<(), StoreError> {
    let facts = serde_json::to_string(&alert.facts).unwrap_or_else(|_| "[]".into());
    sqlx::query(
        "INSERT INTO alerts (tenant_id, alert_id, store_id, kind, severity, subject, raised_ms, raised_offset_min, state, \
           changed_by, message, facts, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (tenant_id, alert_id) DO UPDATE SET state = excluded.state, changed_by = excluded.changed_by, \
           updated_ms = excluded.updated_ms WHERE alerts.state < excluded.state",
    )
    .bind(tenant)
    .bind(alert.alert_id.as_str())
    .bind(alert.store_id.as_str())
    .bind(alert.kind.as_str())
    .bind(alert.severity.as_str())
    .bind(&alert.subject)
    .bind(alert.raised_at.unix_ms())
    .bind(alert.raised_at.offset_minutes())
    .bind(alert_state_rank(alert.state))
    .bind(&alert.changed_by)
    .bind(&alert.message)
    .bind(facts)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn alert_of(row: &SqliteRow) -> Result<AlertRecord, StoreError> {
    let facts: String = row.try_get("facts")?;
    let facts: serde_json::Value = serde_json::from_str(&facts).unwrap_or(serde_json::Value::Null);
    Ok(AlertRecord {
        alert: alert_from_parts(
            row.try_get("alert_id")?,
            row.try_get("store_id")?,
            row.try_get::<&str, _>("kind")?,
            row.try_get::<&str, _>("severity")?,
            row.try_get("subject")?,
            row.try_get("raised_ms")?,
            row.try_get("raised_offset_min")?,
            row.try_get("state")?,
            row.try_get("changed_by")?,
            row.try_get("message")?,
            &facts,
        )?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

const ALERT_COLUMNS: &str = "alert_id, store_id, kind, severity, subject, raised_ms, raised_offset_min, state, changed_by, message, facts, updated_ms";

impl SqliteStore {
    /// Items by hour, summed from line items ([`item_hours`]).
    async fn item_hours(
        &self,
        tenant: &TenantId,
        q: &RollupQuery,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let stores: Option<Vec<String>> = q
            .stores
            .as_ref()
            .map(|s| s.iter().map(|s| s.as_str().to_owned()).collect());
        let zones = if q.limit.is_some() && !q.by_store {
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT count(DISTINCT time_zone) FROM stores WHERE tenant_id = ",
            );
            qb.push_bind(tenant.as_str().to_owned());
            if let Some(stores) = &stores {
                push_in(&mut qb, "store_id", stores);
            }
            let n: i64 = qb.build().fetch_one(&self.pool).await?.try_get(0)?;
            n.max(1) as u64
        } else {
            1
        };
        let bound = item_hours::slot_limit(q, zones);
        let range = item_hours::LineRange::of(q);
        let (store_col, group_by) = item_hours::store_grouping(q);
        let value_col = match (q.by_value, q.by_category) {
            (false, _) => "''",
            (true, false) => "l.sku",
            (true, true) => super::CATEGORY_COLUMN,
        };
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {store_col}, s.time_zone, {value_col}, CASE WHEN l.at_ms >= "
        ));
        qb.push_bind(range.inside_from)
            .push(" AND l.at_ms < ")
            .push_bind(range.inside_to)
            .push(format!(
                " THEN {} ELSE {} END, {} FROM line_items l \
                 JOIN stores s ON s.tenant_id = l.tenant_id AND s.store_id = l.store_id",
                item_hours::INSIDE,
                item_hours::SLOT_OF_LINE,
                item_hours::LINE_FIGURES,
            ));
        if q.by_category {
            qb.push(" LEFT JOIN items i ON i.tenant_id = l.tenant_id AND i.sku = l.sku");
        }
        qb.push(" WHERE l.tenant_id = ")
            .push_bind(tenant.as_str().to_owned())
            .push(" AND l.at_ms >= ")
            .push_bind(range.from_ms)
            .push(" AND l.at_ms < ")
            .push_bind(range.to_ms)
            .push(" AND l.kind <> 2");
        if let Some(stores) = &stores {
            push_in(&mut qb, "l.store_id", stores);
        }
        if let Some(values) = &q.values {
            push_in(&mut qb, "l.sku", values);
        }
        qb.push(format!(" GROUP BY {group_by}"));
        if let Some(bound) = bound {
            qb.push(" LIMIT ")
                .push_bind(i64::try_from(bound.saturating_add(1)).unwrap_or(i64::MAX));
        }
        let rows = qb.build().fetch_all(&self.pool).await?;
        if let Some(bound) = bound
            && rows.len() as u64 > bound
        {
            return Err(item_hours::too_many_slots(bound));
        }
        let mut slots = Vec::with_capacity(rows.len());
        for r in &rows {
            slots.push(item_hours::SlotRow {
                store_id: r.try_get(0)?,
                time_zone: r.try_get(1)?,
                value: r.try_get(2)?,
                slot: r.try_get(3)?,
                figures: figures_at(r, 4)?,
            });
        }
        item_hours::sum_slots(q, slots)
    }
}

/// The six sales figures of a row, from column `first` on.
fn figures_at(r: &sqlx::sqlite::SqliteRow, first: usize) -> Result<SalesFigures, sqlx::Error> {
    Ok(SalesFigures {
        revenue_e4: r.try_get(first)?,
        units: r.try_get(first + 1)?,
        transactions: r.try_get(first + 2)?,
        refunds: r.try_get(first + 3)?,
        refund_amount_e4: r.try_get(first + 4)?,
        voids: r.try_get(first + 5)?,
    })
}

fn push_in(qb: &mut QueryBuilder<Sqlite>, column: &str, values: &[String]) {
    qb.push(format!(" AND {column} IN ("));
    let mut sep = qb.separated(", ");
    for v in values {
        sep.push_bind(v.clone());
    }
    qb.push(")");
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let _guard = self.write.lock().await;
        sqlx::raw_sql(SCHEMA_V1).execute(&self.pool).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(
            crate::store::pki::SCHEMA_PKI.replace("BYTEA_TYPE", "BLOB"),
        ))
        .execute(&self.pool)
        .await?;
        sqlx::raw_sql(crate::store::views::SCHEMA_VIEWS)
            .execute(&self.pool)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(
            crate::store::docs::SCHEMA_DOCS.replace("BYTEA_TYPE", "BLOB"),
        ))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn pki(&self) -> &dyn crate::store::pki::PkiStore {
        self
    }

    fn views(&self) -> &dyn crate::store::views::ViewStore {
        self
    }

    fn docs(&self) -> &dyn crate::store::docs::DocStore {
        self
    }

    fn fleet(&self) -> &dyn crate::store::fleet::FleetAlertStore {
        self
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn create_tenant(&self, tenant: &TenantId, name: &str) -> Result<(), StoreError> {
        let (_g, mut tx) = self.begin_write().await?;
        sqlx::query("INSERT INTO tenants (tenant_id, name, created_ms) VALUES (?, ?, ?) ON CONFLICT (tenant_id) DO UPDATE SET name = excluded.name")
            .bind(tenant.as_str())
            .bind(name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn tenant_exists(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = ?")
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    async fn upsert_store(&self, tenant: &TenantId, store: &StoreInfo) -> Result<(), StoreError> {
        time_zone(&store.time_zone)?;
        if !self.tenant_exists(tenant).await? {
            return Err(StoreError::NotFound(format!("tenant {tenant}")));
        }
        let (_g, mut tx) = self.begin_write().await?;
        let before: Option<(String, String, String)> = sqlx::query_as(
            "SELECT name, region, time_zone FROM stores WHERE tenant_id = ? AND store_id = ?",
        )
        .bind(tenant.as_str())
        .bind(store.store_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO stores (tenant_id, store_id, name, region, time_zone) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (tenant_id, store_id) DO UPDATE SET name = excluded.name, region = excluded.region, time_zone = excluded.time_zone",
        )
        .bind(tenant.as_str())
        .bind(store.store_id.as_str())
        .bind(&store.name)
        .bind(&store.region)
        .bind(&store.time_zone)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.zones.remove(tenant.as_str(), store.store_id.as_str());
        // Series by region or week and the store list change with an edit or a new store
        // (see the PostgreSQL store).
        if before.is_none_or(|b| {
            b != (
                store.name.clone(),
                store.region.clone(),
                store.time_zone.clone(),
            )
        }) {
            let _ = self.changes.send(Change::stores_edited(tenant.as_str()));
        }
        Ok(())
    }

    async fn stores(&self, tenant: &TenantId) -> Result<Vec<StoreInfo>, StoreError> {
        let rows = sqlx::query("SELECT store_id, name, region, time_zone FROM stores WHERE tenant_id = ? ORDER BY store_id")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoreInfo {
                    store_id: StoreId::new(r.try_get::<String, _>(0)?).map_err(corrupt)?,
                    name: r.try_get(1)?,
                    region: r.try_get(2)?,
                    time_zone: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn set_item_category(
        &self,
        tenant: &TenantId,
        sku: &Sku,
        category: &str,
    ) -> Result<(), StoreError> {
        let (_g, mut tx) = self.begin_write().await?;
        let changed = sqlx::query(
            "INSERT INTO items (tenant_id, sku, category) VALUES (?, ?, ?) ON CONFLICT (tenant_id, sku) \
             DO UPDATE SET category = excluded.category WHERE items.category IS NOT excluded.category",
        )
        .bind(tenant.as_str())
        .bind(sku.as_str())
        .bind(category)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        // Series by category change with it (see the PostgreSQL store).
        if changed > 0 {
            let _ = self.changes.send(Change::catalog(tenant.as_str()));
        }
        Ok(())
    }

    async fn item_categories(
        &self,
        tenant: &TenantId,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let rows = sqlx::query("SELECT sku, category FROM items WHERE tenant_id = ?")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn upsert_principal(&self, tenant: &TenantId, p: &Principal) -> Result<(), StoreError> {
        if !self.tenant_exists(tenant).await? {
            return Err(StoreError::NotFound(format!("tenant {tenant}")));
        }
        let stores: Vec<&str> = p.stores.iter().map(|s| s.as_str()).collect();
        let (_g, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO principals (tenant_id, is_client, name, secret_hash, role, stores) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (tenant_id, is_client, name) DO UPDATE SET secret_hash = excluded.secret_hash, role = excluded.role, stores = excluded.stores",
        )
        .bind(tenant.as_str())
        .bind(p.is_client)
        .bind(&p.name)
        .bind(&p.secret_hash)
        .bind(p.role.as_str())
        .bind(serde_json::to_string(&stores).unwrap_or_else(|_| "[]".into()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn principal(
        &self,
        tenant: &TenantId,
        name: &str,
        is_client: bool,
    ) -> Result<Option<Principal>, StoreError> {
        let row = sqlx::query("SELECT name, secret_hash, role, stores FROM principals WHERE tenant_id = ? AND is_client = ? AND name = ?")
            .bind(tenant.as_str())
            .bind(is_client)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let role: String = r.try_get(2)?;
        let stores: String = r.try_get(3)?;
        let stores: Vec<String> = serde_json::from_str(&stores).map_err(corrupt)?;
        Ok(Some(Principal {
            name: r.try_get(0)?,
            is_client,
            secret_hash: r.try_get(1)?,
            role: Role::parse(&role).ok_or_else(|| corrupt(format!("role {role}")))?,
            stores: stores
                .into_iter()
                .filter_map(|s| StoreId::new(s).ok())
                .collect(),
        }))
    }

    async fn insert_refresh(&self, tenant: &TenantId, r: &RefreshRecord) -> Result<(), StoreError> {
        let (_g, mut tx) = self.begin_write().await?;
        sqlx::query("INSERT INTO refresh_tokens (tenant_id, token_hash, family, subject, is_client, expires_ms) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(tenant.as_str())
            .bind(&r.token_hash)
            .bind(&r.family)
            .bind(&r.subject)
            .bind(r.is_client)
            .bind(r.expires_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn use_refresh(
        &self,
        tenant: &TenantId,
        token_hash: &str,
        now: UnixMillis,
    ) -> Result<RefreshUse, StoreError> {
        let (_g, mut tx) = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT family, subject, is_client, expires_ms, used, revoked FROM refresh_tokens WHERE tenant_id = ? AND token_hash = ?",
        )
        .bind(tenant.as_str())
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(RefreshUse::Invalid);
        };
        let family: String = row.try_get(0)?;
        let used: bool = row.try_get(4)?;
        let revoked: bool = row.try_get(5)?;
        let expires_ms: i64 = row.try_get(3)?;
        if used {
            sqlx::query("UPDATE refresh_tokens SET revoked = 1 WHERE tenant_id = ? AND family = ?")
                .bind(tenant.as_str())
                .bind(&family)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(RefreshUse::Replayed);
        }
        if revoked || expires_ms <= now {
            return Ok(RefreshUse::Invalid);
        }
        sqlx::query("UPDATE refresh_tokens SET used = 1 WHERE tenant_id = ? AND token_hash = ?")
            .bind(tenant.as_str())
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RefreshUse::Fresh(RefreshRecord {
            token_hash: token_hash.to_owned(),
            family,
            subject: row.try_get(1)?,
            is_client: row.try_get(2)?,
            expires_ms,
        }))
    }

    async fn commit_events(
        &self,
        stream: &StreamId,
        events: &[Event],
        new_head: StreamHead,
    ) -> Result<CommitOutcome, StoreError> {
        self.commit_inner(stream, events, new_head).await
    }

    async fn stream_heads(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<Vec<(StreamId, StreamHead)>, StoreError> {
        let rows = sqlx::query(
            "SELECT store_id, epoch, class, seq, hash FROM stream_heads WHERE tenant_id = ? AND device_id = ? ORDER BY epoch, class",
        )
        .bind(tenant.as_str())
        .bind(device.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let class: i64 = r.try_get(2)?;
                Ok((
                    StreamId {
                        tenant: tenant.clone(),
                        store: StoreId::new(r.try_get::<String, _>(0)?).map_err(corrupt)?,
                        device: device.clone(),
                        epoch: Epoch(r.try_get::<i64, _>(1)? as u64),
                        class: EventClass::from_u8(class as u8)
                            .ok_or_else(|| corrupt(format!("class {class}")))?,
                    },
                    StreamHead {
                        seq: SeqNo(r.try_get::<i64, _>(3)? as u64),
                        hash: hash_of(r.try_get::<&[u8], _>(4)?)?,
                    },
                ))
            })
            .collect()
    }

    async fn chain_hash_at(
        &self,
        stream: &StreamId,
        seq: SeqNo,
    ) -> Result<Option<Hash>, StoreError> {
        let row = sqlx::query(
            "SELECT chain_hash FROM event_keys WHERE tenant_id = ? AND device_id = ? AND epoch = ? AND class = ? AND seq = ?",
        )
        .bind(stream.tenant.as_str())
        .bind(stream.device.as_str())
        .bind(stream.epoch.0 as i64)
        .bind(stream.class as i16)
        .bind(seq.0 as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| hash_of(r.try_get::<&[u8], _>(0)?)).transpose()
    }

    async fn record_contact(
        &self,
        tenant: &TenantId,
        store: &StoreId,
        device: &DeviceId,
        c: &DeviceContact,
    ) -> Result<(), StoreError> {
        let (_g, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO devices (tenant_id, device_id, store_id, last_seen_ms, backlog, clock_skew_ms) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (tenant_id, device_id) DO UPDATE SET store_id = excluded.store_id, last_seen_ms = excluded.last_seen_ms, \
               backlog = excluded.backlog, clock_skew_ms = excluded.clock_skew_ms",
        )
        .bind(tenant.as_str())
        .bind(device.as_str())
        .bind(store.as_str())
        .bind(c.now_ms)
        .bind(c.backlog as i64)
        .bind(c.clock_skew_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn device_status(&self, tenant: &TenantId) -> Result<Vec<DeviceStatus>, StoreError> {
        let rows = sqlx::query(
            "WITH heads AS (SELECT store_id, device_id, max(last_event_ms) AS last_event_ms, max(last_commit_ms) AS last_commit_ms \
               FROM stream_heads WHERE tenant_id = ?1 GROUP BY store_id, device_id), \
             ids AS (SELECT device_id FROM devices WHERE tenant_id = ?1 UNION SELECT device_id FROM heads) \
             SELECT coalesce(d.store_id, h.store_id), ids.device_id, d.last_seen_ms, coalesce(d.backlog, 0), coalesce(d.clock_skew_ms, 0), \
               h.last_event_ms, h.last_commit_ms \
             FROM ids LEFT JOIN devices d ON d.tenant_id = ?1 AND d.device_id = ids.device_id \
             LEFT JOIN heads h ON h.device_id = ids.device_id ORDER BY 1, 2",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceStatus {
                    store_id: StoreId::new(r.try_get::<String, _>(0)?).map_err(corrupt)?,
                    device_id: DeviceId::new(r.try_get::<String, _>(1)?).map_err(corrupt)?,
                    last_seen_ms: r.try_get(2)?,
                    backlog: r.try_get::<i64, _>(3)?.max(0) as u64,
                    clock_skew_ms: r.try_get(4)?,
                    last_event_ms: r.try_get(5)?,
                    last_commit_ms: r.try_get(6)?,
                })
            })
            .collect()
    }

    async fn rollups(
        &self,
        tenant: &TenantId,
        q: &RollupQuery,
    ) -> Result<Vec<RollupRow>, StoreError> {
        if item_hours::from_lines(q) {
            return self.item_hours(tenant, q).await;
        }
        let store_col = match (q.by_store, q.by_zone) {
            (false, _) => "''",
            (true, false) => "r.store_id",
            (true, true) => "min(r.store_id)",
        };
        let by_zone = q.by_store && q.by_zone;
        let value_col = match (q.by_value, q.by_category) {
            (false, _) => "''",
            (true, false) => "dim_value",
            (true, true) => super::CATEGORY_COLUMN,
        };
        let bucket_col = if q.by_bucket { "bucket_ms" } else { "0" };
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {store_col}, {value_col}, {bucket_col}, sum(revenue_e4), sum(units), sum(transactions), sum(refunds), \
             sum(refund_amount_e4), sum(voids) FROM sales_rollups r"
        ));
        if q.by_category {
            qb.push(" LEFT JOIN items i ON i.tenant_id = r.tenant_id AND i.sku = r.dim_value");
        }
        if by_zone {
            qb.push(" JOIN stores s ON s.tenant_id = r.tenant_id AND s.store_id = r.store_id");
        }
        qb.push(" WHERE r.tenant_id = ");
        qb.push_bind(tenant.as_str().to_owned())
            .push(" AND granularity = ")
            .push_bind(granularity_code(q.granularity))
            .push(" AND dim = ")
            .push_bind(q.dim as i16)
            .push(" AND bucket_ms >= ")
            .push_bind(q.from_ms)
            .push(" AND bucket_ms < ")
            .push_bind(q.to_ms);
        if let Some(stores) = &q.stores {
            let stores: Vec<String> = stores.iter().map(|s| s.as_str().to_owned()).collect();
            push_in(&mut qb, "r.store_id", &stores);
        }
        if let Some(values) = &q.values {
            push_in(&mut qb, "dim_value", values);
        }
        qb.push(if by_zone {
            " GROUP BY s.time_zone, 2, 3 ORDER BY 3, 1, 2"
        } else {
            " GROUP BY 1, 2, 3 ORDER BY 3, 1, 2"
        });
        if let Some(limit) = q.limit {
            qb.push(" LIMIT ")
                .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let store: String = r.try_get(0)?;
                Ok(RollupRow {
                    store_id: if q.by_store {
                        Some(StoreId::new(store).map_err(corrupt)?)
                    } else {
                        None
                    },
                    value: r.try_get(1)?,
                    bucket_ms: r.try_get(2)?,
                    figures: figures_at(r, 3)?,
                })
            })
            .collect()
    }

    async fn stock_levels(
        &self,
        tenant: &TenantId,
        stores: Option<&[StoreId]>,
        sku: Option<&Sku>,
    ) -> Result<Vec<StockLevel>, StoreError> {
        let stores: Option<Vec<String>> =
            stores.map(|s| s.iter().map(|s| s.as_str().to_owned()).collect());
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "WITH m AS (SELECT store_id, sku, at_ms, source_id, is_count, quantity FROM stock_movements WHERE tenant_id = ",
        );
        qb.push_bind(tenant.as_str().to_owned());
        if let Some(s) = &stores {
            push_in(&mut qb, "store_id", s);
        }
        if let Some(sku) = sku {
            qb.push(" AND sku = ").push_bind(sku.as_str().to_owned());
        }
        // Text compares bytewise here (BINARY), as the protocol's fold does.
        qb.push(
            "), c AS (SELECT store_id, sku, at_ms, quantity FROM (SELECT store_id, sku, at_ms, quantity, \
               row_number() OVER (PARTITION BY store_id, sku ORDER BY at_ms DESC, source_id DESC) AS n \
               FROM m WHERE is_count) WHERE n = 1) \
             SELECT m.store_id, m.sku, c.at_ms, c.quantity, \
               coalesce(sum(CASE WHEN NOT m.is_count AND (c.at_ms IS NULL OR m.at_ms > c.at_ms) THEN m.quantity ELSE 0 END), 0) \
             FROM m LEFT JOIN c ON c.store_id = m.store_id AND c.sku = m.sku \
             GROUP BY m.store_id, m.sku, c.at_ms, c.quantity ORDER BY m.store_id, m.sku",
        );
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let at: Option<i64> = r.try_get(2)?;
                let counted: Option<i64> = r.try_get(3)?;
                Ok(StockLevel {
                    store: StoreId::new(r.try_get::<String, _>(0)?).map_err(corrupt)?,
                    sku: Sku::new(r.try_get::<String, _>(1)?).map_err(corrupt)?,
                    count: at.zip(counted),
                    delta: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn sales_change_in(
        &self,
        tenant: &TenantId,
        windows: &[StockWindow],
    ) -> Result<Vec<i64>, StoreError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        // The windows go in as one JSON array, each probing the (store, SKU, time) index.
        let list = serde_json::to_string(
            &windows
                .iter()
                .map(|w| (w.store.as_str(), w.sku.as_str(), w.after_ms, w.before_ms))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| StoreError::Invalid(format!("stock windows: {e}")))?;
        let rows = sqlx::query(
            "SELECT w.key, coalesce(sum(CASE WHEN l.kind = 0 THEN -abs(l.quantity) ELSE abs(l.quantity) END), 0) \
             FROM json_each(?2) w LEFT JOIN line_items l ON l.tenant_id = ?1 \
               AND l.store_id = json_extract(w.value, '$[0]') AND l.sku = json_extract(w.value, '$[1]') \
               AND l.at_ms > json_extract(w.value, '$[2]') AND l.at_ms < json_extract(w.value, '$[3]') AND l.kind <> 2 \
             GROUP BY w.key",
        )
        .bind(tenant.as_str())
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        let mut changes = vec![0i64; windows.len()];
        for r in rows {
            let n: i64 = r.try_get(0)?;
            if let Some(c) = usize::try_from(n).ok().and_then(|i| changes.get_mut(i)) {
                *c = r.try_get(1)?;
            }
        }
        Ok(changes)
    }

    async fn units_sold_by_day(
        &self,
        tenant: &TenantId,
        stores: Option<&[StoreId]>,
        sku: Option<&Sku>,
        after: &[(StoreId, Sku, i64)],
    ) -> Result<Vec<UnitsSold>, StoreError> {
        let stores: Option<Vec<String>> =
            stores.map(|s| s.iter().map(|s| s.as_str().to_owned()).collect());
        let list = serde_json::to_string(
            &after
                .iter()
                .map(|(s, k, d)| (s.as_str(), k.as_str(), *d))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| StoreError::Invalid(format!("stock days: {e}")))?;
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "WITH f AS (SELECT json_extract(value, '$[0]') AS s, json_extract(value, '$[1]') AS k, \
               json_extract(value, '$[2]') AS d FROM json_each(",
        );
        qb.push_bind(list);
        qb.push(
            ")) SELECT r.store_id, r.dim_value, sum(r.units), min(r.bucket_ms) FROM sales_rollups r \
             LEFT JOIN f ON f.s = r.store_id AND f.k = r.dim_value WHERE r.tenant_id = ",
        );
        qb.push_bind(tenant.as_str().to_owned());
        qb.push(" AND r.granularity = ").push_bind(granularity_code(
            storesync_protocol::rollup::Granularity::Day,
        ));
        qb.push(" AND r.dim = ")
            .push_bind(super::DimKind::Item as i16);
        if let Some(s) = &stores {
            push_in(&mut qb, "r.store_id", s);
        }
        if let Some(sku) = sku {
            qb.push(" AND r.dim_value = ")
                .push_bind(sku.as_str().to_owned());
        }
        qb.push(" AND (f.d IS NULL OR r.bucket_ms > f.d) GROUP BY r.store_id, r.dim_value");
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(UnitsSold {
                    store: StoreId::new(r.try_get::<String, _>(0)?).map_err(corrupt)?,
                    sku: Sku::new(r.try_get::<String, _>(1)?).map_err(corrupt)?,
                    units: r.try_get(2)?,
                    first_day_ms: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn alerts(
        &self,
        tenant: &TenantId,
        q: &AlertQuery,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE tenant_id = "
        ));
        qb.push_bind(tenant.as_str().to_owned());
        if let Some(stores) = &q.stores {
            let stores: Vec<String> = stores.iter().map(|s| s.as_str().to_owned()).collect();
            push_in(&mut qb, "store_id", &stores);
        }
        if let Some(state) = q.state.as_deref().and_then(AlertState::parse) {
            qb.push(" AND state = ").push_bind(alert_state_rank(state));
        }
        if let Some(before) = q.before_ms {
            qb.push(" AND raised_ms < ").push_bind(before);
        }
        qb.push(" ORDER BY raised_ms DESC, alert_id LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(alert_of).collect()
    }

    async fn alert(
        &self,
        tenant: &TenantId,
        alert_id: &AlertId,
    ) -> Result<Option<AlertRecord>, StoreError> {
        let sql =
            format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE tenant_id = ? AND alert_id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(alert_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(alert_of).transpose()
    }

    async fn set_alert_state(
        &self,
        tenant: &TenantId,
        alert_id: &AlertId,
        state: AlertState,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<AlertRecord>, StoreError> {
        let (g, mut tx) = self.begin_write().await?;
        sqlx::query("UPDATE alerts SET state = max(state, ?), changed_by = ?, updated_ms = ? WHERE tenant_id = ? AND alert_id = ?")
            .bind(alert_state_rank(state))
            .bind(by)
            .bind(now)
            .bind(tenant.as_str())
            .bind(alert_id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        drop(g);
        let record = self.alert(tenant, alert_id).await?;
        if let Some(r) = &record {
            let _ = self.changes.send(Change::alert(
                tenant.as_str(),
                alert_id.as_str(),
                r.alert.store_id.as_str(),
            ));
        }
        Ok(record)
    }

    async fn dead_letters(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query("SELECT store_id, event_key, reason, raw, received_ms FROM dead_letters WHERE tenant_id = ? ORDER BY id DESC LIMIT ?")
            .bind(tenant.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    store_id: r.try_get(0)?,
                    event_key: r.try_get(1)?,
                    reason: r.try_get(2)?,
                    raw: r.try_get(3)?,
                    received_ms: r.try_get(4)?,
                })
            })
            .collect()
    }
}
