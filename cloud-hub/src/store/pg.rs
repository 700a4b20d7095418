//! The PostgreSQL backend: tokio-postgres over a deadpool connection pool.
//!
//! Schema (see `schema/pg_v1.sql`, then `schema/pg_v2.sql`, which hash-partitions
//! `sales_rollups` by store, `schema/pg_v3.sql`, which gives store-level rollup rows one
//! table per granularity so that the all-stores daily read is dense, and
//! `schema/pg_v4.sql`, which leaves event identity to `event_keys` alone, and
//! `schema/pg_v5.sql`, which drops item rows by hour (summed from line items when read,
//! see `item_hours`); migrations are
//! numbered in `schema_version`, an applied one is never edited, and each applies on its
//! own: v4 may already be in place when v3 runs): `tenant_id` leads every key. Event tables
//! (`transactions`, `line_items`, `stock_movements`, `other_events`) are range-partitioned
//! by business time (`at_ms`) in 7-day partitions, created ahead of time by
//! [`PgStore::migrate`] and the maintenance task and on demand before an ingest that needs
//! one (through the `SECURITY DEFINER` function `storesync_ensure_partitions`, so the hub's
//! role needs no DDL rights), and detached and dropped by retention
//! (`storesync_drop_partitions_before`), all but those of `stock_movements`, which inventory
//! reads in full (they are few beside sales). When the `timescaledb` extension can be created at
//! the first migration the same tables become hypertables instead (installed but not
//! preloaded, the hub falls back to native partitions with a warning); later starts follow
//! what the schema was created with. That path is written but cannot be exercised on
//! machines without TimescaleDB.
//!
//! Tenancy: row-level security is enabled and FORCEd on every table with a `tenant_id`, with
//! one policy `tenant_id = current_setting('storesync.tenant_id', true)`. The hub connects as
//! a role that owns nothing and has no BYPASSRLS, and every transaction starts with
//! `SET LOCAL storesync.tenant_id = '…'` (tenant ids are validated to `[A-Za-z0-9._:-]`, so
//! the literal needs no escaping). A session that never sets it sees no rows.
//!
//! Ingest ([`Store::commit_events`], in `pg/commit.rs`) is one transaction: the run's rows
//! are computed in the hub and sent as binary arrays (`unnest`), every statement pipelined on
//! one connection (`BEGIN`, one round trip of statements, `COMMIT`): `INSERT … ON CONFLICT DO
//! NOTHING` into `event_keys` and the transaction-id registry, the event tables, the rollups
//! (updated from the new events only, in the same transaction, so rollups are exactly as
//! fresh as the events), the stream head, and a `NOTIFY` that other hub processes receive
//! after the commit. Rows are planned as if every event were new; when the key or registry
//! insert reports fewer rows than were sent, that transaction is rolled back and the run is
//! committed the careful way, deciding duplicates and conflicts before planning rows.

mod commit;
mod docs;
mod fleet;
mod pki;
mod views;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::StreamExt;
use jiff::tz::TimeZone;
use storesync_protocol::domain::{Alert, AlertKind, AlertState, Severity};
use storesync_protocol::event::{
    Epoch, Event, EventClass, EventKey, Hash, SeqNo, StreamHead, StreamId,
};
use storesync_protocol::ids::{AlertId, DeviceId, Sku, StoreId, TenantId};
use storesync_protocol::rollup::SalesFigures;
use storesync_protocol::time::{EventTime, UnixMillis};
use tokio::sync::broadcast;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls};

use super::item_hours;
use super::{
    AlertQuery, AlertRecord, Change, CommitOutcome, DeadLetter, DeviceContact, DeviceStatus,
    DimKind, Principal, RefreshRecord, RefreshUse, RollupQuery, RollupRow, StockLevel, StockWindow,
    Store, StoreError, StoreInfo, UnitsSold, granularity_code, now_ms, time_zone,
};
use crate::ingest::alert_state_rank;

/// Width of one event-table partition: seven days.
pub const PARTITION_WIDTH_MS: i64 = 7 * 86_400_000;

/// The NOTIFY channel of committed changes.
pub const CHANGES_CHANNEL: &str = "storesync_changes";

/// Settings of a rollup read's transaction: JIT off. PostgreSQL plans a prepared
/// statement for its values in its first five executions on a connection, and for the
/// 100-store, 30-day daily read that plan is estimated dear enough (cost 360,000) to be
/// JIT-compiled: 535 ms of compilation for a read that takes 17-28 ms warm. Every new
/// pooled connection paid it five times, which set the uncached p99.
const ROLLUP_READ_SETTINGS: &str = "SET LOCAL jit = off; ";

/// Settings of the line-item read behind items by hour (`item_hours`): as a rollup read, and
/// room to group its rows in a hash table. With the default 4 MB PostgreSQL sorted a week of
/// a chain's line items (777,000 rows) to group them, 741 ms against 344 ms hashed.
const LINE_READ_SETTINGS: &str = "SET LOCAL jit = off; SET LOCAL work_mem = '64MB'; ";

/// Tables partitioned by time.
const PARTITIONED: [&str; 4] = [
    "transactions",
    "line_items",
    "stock_movements",
    "other_events",
];

/// A rollup read's store and value filters, as statement parameters.
fn filter_values(q: &RollupQuery) -> (Option<Vec<&str>>, Option<Vec<&str>>) {
    (
        q.stores
            .as_ref()
            .map(|s| s.iter().map(|s| s.as_str()).collect()),
        q.values
            .as_ref()
            .map(|v| v.iter().map(String::as_str).collect()),
    )
}

/// The six sales figures of a row, from column `first` on.
fn figures_at(r: &tokio_postgres::Row, first: usize) -> SalesFigures {
    SalesFigures {
        revenue_e4: r.get(first),
        units: r.get(first + 1),
        transactions: r.get(first + 2),
        refunds: r.get(first + 3),
        refund_amount_e4: r.get(first + 4),
        voids: r.get(first + 5),
    }
}

const SCHEMA_V1: &str = include_str!("schema/pg_v1.sql");
const SCHEMA_V2: &str = include_str!("schema/pg_v2.sql");
const SCHEMA_V3: &str = include_str!("schema/pg_v3.sql");
const SCHEMA_V4: &str = include_str!("schema/pg_v4.sql");
const SCHEMA_V5: &str = include_str!("schema/pg_v5.sql");

/// How to reach PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// Connection string of the hub's own (non-owner, no BYPASSRLS) role.
    pub url: String,
    /// Connection string of the schema owner, used only by [`Store::migrate`]. When absent
    /// the hub's role runs migrations, and owns the tables (RLS stays FORCEd, but an owner
    /// could switch it off: give the hub a separate role in production).
    pub admin_url: Option<String>,
    /// The hub's role name, granted access by migrations (`None`: the role of `url`).
    pub app_role: Option<String>,
    /// Pooled connections.
    pub pool_size_max: usize,
    /// Listen for other hub processes' changes.
    pub listen: bool,
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    config: PgConfig,
    zones: super::ZoneCache,
    partitions: Mutex<HashSet<i64>>,
    changes: broadcast::Sender<Change>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool_size_max", &self.config.pool_size_max)
            .finish()
    }
}

fn pg_config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| StoreError::Invalid(format!("database url: {e}")))
}

fn tenant_sql(tenant: &str) -> String {
    // Ids are validated to [A-Za-z0-9._:-]; this assertion guards the literal below.
    assert!(
        storesync_protocol::ids::check_id(tenant).is_ok(),
        "tenant id was validated"
    );
    format!("SET LOCAL storesync.tenant_id = '{tenant}'")
}

fn hash_of(bytes: &[u8]) -> Result<Hash, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(Hash)
        .map_err(|_| StoreError::Corrupt("hash is not 32 bytes".into()))
}

impl PgStore {
    /// Connects a pool (connections are opened lazily) and, when configured, the listener
    /// for other hub processes' changes.
    pub async fn connect(config: PgConfig) -> Result<PgStore, StoreError> {
        let pg = pg_config(&config.url)?;
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size_max.max(1))
            .wait_timeout(Some(Duration::from_secs(30)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Postgres(e.to_string()))?;
        let (changes, _) = broadcast::channel(1024);
        let store = PgStore {
            pool,
            config,
            zones: super::ZoneCache::new(super::ZONE_TTL),
            partitions: Mutex::new(HashSet::new()),
            changes,
        };
        if store.config.listen {
            store.spawn_listener();
        }
        Ok(store)
    }

    /// Keeps each store's time zone, once looked up, for `ttl` instead of
    /// [`ZONE_TTL`](super::ZONE_TTL).
    pub fn with_zone_ttl(mut self, ttl: Duration) -> Self {
        self.zones = super::ZoneCache::new(ttl);
        self
    }

    /// The pool, for benchmarks and tests.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    fn spawn_listener(&self) {
        let url = self.config.url.clone();
        let sender = self.changes.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = listen_once(&url, &sender).await {
                    tracing::warn!(error = %e, "change listener lost its connection; reconnecting");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Creates the partitions covering `[from_ms, to_ms]` that this process has not seen.
    pub async fn ensure_partitions(&self, from_ms: i64, to_ms: i64) -> Result<(), StoreError> {
        let first = from_ms.div_euclid(PARTITION_WIDTH_MS);
        let last = to_ms.div_euclid(PARTITION_WIDTH_MS);
        let missing: Vec<i64> = {
            let known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            (first..=last).filter(|n| !known.contains(n)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        for n in &missing {
            let start = n * PARTITION_WIDTH_MS;
            client
                .execute(
                    "SELECT storesync_ensure_partitions($1, $2)",
                    &[&start, &start],
                )
                .await?;
        }
        let mut known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(missing);
        Ok(())
    }

    /// Detaches and drops partitions that end at or before `cutoff_ms`; returns how many.
    pub async fn drop_partitions_before(&self, cutoff_ms: i64) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT storesync_drop_partitions_before($1)", &[&cutoff_ms])
            .await?;
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(row.get(0))
    }

    async fn zone(&self, tenant: &str, store: &str) -> Result<TimeZone, StoreError> {
        if let Some(tz) = self.zones.get(tenant, store) {
            return Ok(tz);
        }
        let generation = self.zones.generation();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&tenant_sql(tenant)).await?;
        let row = tx
            .query_opt(
                "SELECT time_zone FROM stores WHERE tenant_id = $1 AND store_id = $2",
                &[&tenant, &store],
            )
            .await?;
        tx.commit().await?;
        let name: String = row
            .ok_or_else(|| StoreError::NotFound(format!("store {store} of tenant {tenant}")))?
            .get(0);
        let tz = time_zone(&name)?;
        self.zones.insert(tenant, store, tz.clone(), generation);
        Ok(tz)
    }

    async fn migrate_with(&self, client: &tokio_postgres::Client) -> Result<(), StoreError> {
        client
            .batch_execute("SELECT pg_advisory_lock(7401); CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, applied_ms bigint NOT NULL)")
            .await?;
        let result = self.migrate_locked(client).await;
        let unlock = client
            .batch_execute("SELECT pg_advisory_unlock(7401)")
            .await;
        result?;
        unlock?;
        Ok(())
    }

    async fn migrate_locked(&self, client: &tokio_postgres::Client) -> Result<(), StoreError> {
        let applied = client
            .query_opt("SELECT 1 FROM schema_version WHERE version = 1", &[])
            .await?
            .is_some();
        // Hypertables when the server offers TimescaleDB at the first migration; later, what
        // the schema was created with, whatever the server offers now.
        let timescale = if applied {
            client
                .query_opt(
                    "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'",
                    &[],
                )
                .await?
                .is_some()
                && client
                    .query_opt(
                        "SELECT 1 FROM timescaledb_information.hypertables \
                         WHERE hypertable_name = 'line_items'",
                        &[],
                    )
                    .await?
                    .is_some()
        } else if client
            .query_opt(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'",
                &[],
            )
            .await?
            .is_some()
        {
            match client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                .await
            {
                Ok(()) => true,
                Err(e) => {
                    // Installed but not loaded (`shared_preload_libraries`): native
                    // partitions serve the same queries.
                    tracing::warn!(error = %e, "timescaledb cannot be created here; using native partitions");
                    false
                }
            }
        } else {
            false
        };
        if !applied {
            if timescale {
                client
                    .batch_execute(&SCHEMA_V1.replace("{partition}", ""))
                    .await?;
                // Hypertables on the integer time column, chunked like the native partitions.
                client
                    .batch_execute(
                        "CREATE OR REPLACE FUNCTION storesync_now_ms() RETURNS bigint LANGUAGE sql STABLE AS \
                         $$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$",
                    )
                    .await?;
                for table in PARTITIONED {
                    client
                        .batch_execute(&format!(
                            "SELECT create_hypertable('{table}', 'at_ms', chunk_time_interval => {PARTITION_WIDTH_MS}, if_not_exists => true); \
                             SELECT set_integer_now_func('{table}', 'storesync_now_ms', replace_if_exists => true);"
                        ))
                        .await?;
                }
            } else {
                client
                    .batch_execute(&SCHEMA_V1.replace("{partition}", "PARTITION BY RANGE (at_ms)"))
                    .await?;
            }
            client
                .execute(
                    "INSERT INTO schema_version VALUES (1, $1) ON CONFLICT DO NOTHING",
                    &[&now_ms()],
                )
                .await?;
        }
        // Each a simple-query string: one implicit transaction, schema_version row included.
        for (version, sql) in [
            (2, SCHEMA_V2),
            (3, SCHEMA_V3),
            (4, SCHEMA_V4),
            (5, SCHEMA_V5),
        ] {
            let applied = client
                .query_opt(
                    "SELECT 1 FROM schema_version WHERE version = $1",
                    &[&version],
                )
                .await?
                .is_some();
            if !applied {
                client.batch_execute(sql).await?;
            }
        }
        // Trust material of the sync server; idempotent, so it runs on every migrate.
        client
            .batch_execute(&crate::store::pki::SCHEMA_PKI.replace("BYTEA_TYPE", "bytea"))
            .await?;
        client
            .batch_execute(crate::store::views::SCHEMA_VIEWS)
            .await?;
        client
            .batch_execute(&crate::store::docs::SCHEMA_DOCS.replace("BYTEA_TYPE", "bytea"))
            .await?;
        client
            .batch_execute(&partition_functions(timescale))
            .await?;
        // Row-level security on every table that has a tenant_id. Partitions are reached
        // only through their parent: the grants below are revoked on every partition, so
        // the parent's policy always applies.
        let tables = client
            .query(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' \
                 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
                &[],
            )
            .await?;
        for row in tables {
            let table: String = row.get(0);
            client
                .batch_execute(&format!(
                    "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; ALTER TABLE {table} FORCE ROW LEVEL SECURITY; \
                     DROP POLICY IF EXISTS tenant_isolation ON {table}; \
                     CREATE POLICY tenant_isolation ON {table} \
                       USING (tenant_id = current_setting('storesync.tenant_id', true)) \
                       WITH CHECK (tenant_id = current_setting('storesync.tenant_id', true));"
                ))
                .await?;
        }
        if let Some(role) = self.app_role().await? {
            let own: String = client
                .query_one("SELECT current_user::text", &[])
                .await?
                .get(0);
            if own != role {
                storesync_protocol::ids::check_id(&role)
                    .map_err(|e| StoreError::Invalid(format!("app role {role:?}: {e}")))?;
                client
                    .batch_execute(&format!(
                        "GRANT USAGE ON SCHEMA {schema} TO \"{role}\"; \
                         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO \"{role}\"; \
                         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO \"{role}\"; \
                         REVOKE ALL ON FUNCTION storesync_ensure_partitions(bigint, bigint) FROM PUBLIC; \
                         REVOKE ALL ON FUNCTION storesync_drop_partitions_before(bigint) FROM PUBLIC; \
                         GRANT EXECUTE ON FUNCTION storesync_ensure_partitions(bigint, bigint) TO \"{role}\"; \
                         GRANT EXECUTE ON FUNCTION storesync_drop_partitions_before(bigint) TO \"{role}\"; \
                         DO $$ DECLARE r record; BEGIN \
                           FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                             WHERE n.nspname = '{schema}' AND c.relispartition AND c.relkind IN ('r', 'p') LOOP \
                             EXECUTE format('REVOKE ALL ON %I FROM %I', r.relname, '{role}'); \
                           END LOOP; END $$;",
                        schema = "public"
                    ))
                    .await?;
            }
        }
        // Partitions from eight weeks back to four weeks ahead.
        let now = now_ms();
        client
            .execute(
                "SELECT storesync_ensure_partitions($1, $2)",
                &[
                    &(now - 8 * PARTITION_WIDTH_MS),
                    &(now + 4 * PARTITION_WIDTH_MS),
                ],
            )
            .await?;
        Ok(())
    }

    async fn app_role(&self) -> Result<Option<String>, StoreError> {
        if let Some(role) = &self.config.app_role {
            return Ok(Some(role.clone()));
        }
        Ok(pg_config(&self.config.url)?.get_user().map(str::to_owned))
    }

    /// Items by hour, summed from line items ([`item_hours`]).
    async fn item_hours(
        &self,
        tenant: &TenantId,
        q: &RollupQuery,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let tenant_id = tenant.as_str();
        let (stores, values) = filter_values(q);
        let zones = if q.limit.is_some() && !q.by_store {
            let rows = self
                .tenant_query(
                    tenant_id,
                    "SELECT count(DISTINCT time_zone) FROM stores WHERE tenant_id = $1 \
                       AND ($2::text[] IS NULL OR store_id = ANY($2))",
                    &[&tenant_id, &stores],
                )
                .await?;
            rows.first().map_or(1, |r| r.get::<_, i64>(0).max(1) as u64)
        } else {
            1
        };
        let bound = item_hours::slot_limit(q, zones);
        let range = item_hours::LineRange::of(q);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &tenant_id,
            &range.from_ms,
            &range.to_ms,
            &range.inside_from,
            &range.inside_to,
        ];
        let (store_col, group_by) = item_hours::store_grouping(q);
        let value_col = match (q.by_value, q.by_category) {
            (false, _) => "''",
            (true, false) => "l.sku",
            (true, true) => super::CATEGORY_COLUMN,
        };
        let mut from =
            "line_items l JOIN stores s ON s.tenant_id = l.tenant_id AND s.store_id = l.store_id"
                .to_owned();
        if q.by_category {
            from.push_str(" LEFT JOIN items i ON i.tenant_id = l.tenant_id AND i.sku = l.sku");
        }
        let mut filters = String::new();
        if let Some(stores) = &stores {
            params.push(stores);
            filters.push_str(&format!(" AND l.store_id = ANY(${})", params.len()));
        }
        if let Some(values) = &values {
            params.push(values);
            filters.push_str(&format!(" AND l.sku = ANY(${})", params.len()));
        }
        let read_max = bound.map(|n| i64::try_from(n.saturating_add(1)).unwrap_or(i64::MAX));
        let mut limit_clause = String::new();
        if let Some(read_max) = &read_max {
            params.push(read_max);
            limit_clause = format!(" LIMIT ${}", params.len());
        }
        let sql = format!(
            "SELECT {store_col}::text, s.time_zone, {value_col}::text, \
               CASE WHEN l.at_ms >= $4 AND l.at_ms < $5 THEN {} ELSE {} END, {} \
             FROM {from} WHERE l.tenant_id = $1 AND l.at_ms >= $2 AND l.at_ms < $3 AND l.kind <> 2{filters} \
             GROUP BY {group_by}{limit_clause}",
            item_hours::INSIDE,
            item_hours::SLOT_OF_LINE,
            item_hours::LINE_FIGURES,
        );
        let rows = self
            .tenant_query_with(tenant_id, &sql, &params, LINE_READ_SETTINGS)
            .await?;
        if let Some(bound) = bound
            && rows.len() as u64 > bound
        {
            return Err(item_hours::too_many_slots(bound));
        }
        let slots = rows
            .iter()
            .map(|r| item_hours::SlotRow {
                store_id: r.get(0),
                time_zone: r.get(1),
                value: r.get(2),
                slot: r.get(3),
                figures: figures_at(r, 4),
            })
            .collect();
        item_hours::sum_slots(q, slots)
    }

    /// Runs one statement in its own transaction with the tenant set. The statement is
    /// prepared once per connection and pipelined behind `SET LOCAL`; dropping the future
    /// rolls the transaction back (so a cancelled request cannot leave a tenant set).
    async fn tenant_query(
        &self,
        tenant: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.tenant_query_with(tenant, sql, params, "").await
    }

    /// [`tenant_query`](Self::tenant_query) with `settings` (`SET LOCAL` statements, each
    /// ending with `;`) applied to its transaction.
    async fn tenant_query_with(
        &self,
        tenant: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        settings: &str,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let statement = tx.prepare_cached(sql).await?;
        let set = format!("{settings}{}", tenant_sql(tenant));
        let (set_result, rows) =
            futures::join!(tx.batch_execute(&set), tx.query(&statement, params));
        set_result?;
        let rows = rows?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn tenant_execute(
        &self,
        tenant: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let statement = tx.prepare_cached(sql).await?;
        let set = tenant_sql(tenant);
        let (set_result, n) =
            futures::join!(tx.batch_execute(&set), tx.execute(&statement, params));
        set_result?;
        let n = n?;
        tx.commit().await?;
        Ok(n)
    }
}

/// The NOTIFY payload of a change. Payloads are capped at 8000 bytes: a big change is
/// sent as "these stores changed" without the figures.
fn notify_payload(change: &Change) -> String {
    let payload = serde_json::to_string(change).unwrap_or_default();
    if payload.len() <= 7000 {
        return payload;
    }
    let slim = Change {
        tenant: change.tenant.clone(),
        sales: Vec::new(),
        alerts: Vec::new(),
        stores: change.stores.clone(),
    };
    serde_json::to_string(&slim).unwrap_or_default()
}

async fn notify(
    tx: &deadpool_postgres::Transaction<'_>,
    change: &Change,
) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANGES_CHANNEL, &notify_payload(change)],
    )
    .await?;
    Ok(())
}

async fn listen_once(url: &str, sender: &broadcast::Sender<Change>) -> Result<(), StoreError> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "listener connection failed");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
        .await?;
    while let Some(payload) = rx.recv().await {
        match serde_json::from_str::<Change>(&payload) {
            Ok(change) => {
                let _ = sender.send(change);
            }
            Err(e) => tracing::warn!(error = %e, "unreadable change notification"),
        }
    }
    driver.abort();
    drop(client);
    Err(StoreError::Postgres("listener connection closed".into()))
}

/// Tables retention drops partitions of: all partitioned ones but `stock_movements`, which
/// inventory reads back to each SKU's first movement (see `store::inventory`).
const RETENTION_DROPS: [&str; 3] = ["transactions", "line_items", "other_events"];

fn partition_functions(timescale: bool) -> String {
    let tables = PARTITIONED.map(|t| format!("'{t}'")).join(", ");
    let dropped_tables = RETENTION_DROPS.map(|t| format!("'{t}'")).join(", ");
    if timescale {
        // Hypertables create their own chunks; retention drops chunks.
        return format!(
            "CREATE OR REPLACE FUNCTION storesync_ensure_partitions(from_ms bigint, to_ms bigint) RETURNS void \
             LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$ SELECT $$; \
             CREATE OR REPLACE FUNCTION storesync_drop_partitions_before(cutoff_ms bigint) RETURNS bigint \
             LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$ \
             DECLARE t text; n bigint := 0; BEGIN \
               FOREACH t IN ARRAY ARRAY[{dropped_tables}] LOOP \
                 n := n + (SELECT count(*) FROM drop_chunks(t::regclass, older_than => cutoff_ms)); \
               END LOOP; RETURN n; END $$;"
        );
    }
    format!(
        "CREATE OR REPLACE FUNCTION storesync_ensure_partitions(from_ms bigint, to_ms bigint) RETURNS void \
         LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$ \
         DECLARE t text; w bigint := {PARTITION_WIDTH_MS}; n bigint; \
         BEGIN \
           IF to_ms - from_ms > 600 * w THEN RAISE EXCEPTION 'partition range too wide'; END IF; \
           n := floor(from_ms::numeric / w)::bigint; \
           WHILE n * w <= to_ms LOOP \
             FOREACH t IN ARRAY ARRAY[{tables}] LOOP \
               IF to_regclass(format('%I', t || '_w' || replace(n::text, '-', 'm'))) IS NULL THEN \
                 BEGIN \
                   EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)', \
                     t || '_w' || replace(n::text, '-', 'm'), t, n * w, (n + 1) * w); \
                 EXCEPTION WHEN duplicate_table OR unique_violation THEN NULL; \
                 END; \
               END IF; \
             END LOOP; \
             n := n + 1; \
           END LOOP; \
         END $$; \
         CREATE OR REPLACE FUNCTION storesync_drop_partitions_before(cutoff_ms bigint) RETURNS bigint \
         LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$ \
         DECLARE r record; dropped bigint := 0; w bigint := {PARTITION_WIDTH_MS}; \
         BEGIN \
           FOR r IN SELECT parent.relname AS parent, child.relname AS child FROM pg_inherits i \
               JOIN pg_class parent ON parent.oid = i.inhparent JOIN pg_class child ON child.oid = i.inhrelid \
               WHERE parent.relname = ANY(ARRAY[{dropped_tables}]) AND child.relname ~ '_w[0-9]+$' LOOP \
             IF (substring(r.child FROM '_w([0-9]+)$')::bigint + 1) * w <= cutoff_ms THEN \
               EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', r.parent, r.child); \
               EXECUTE format('DROP TABLE %I', r.child); \
               dropped := dropped + 1; \
             END IF; \
           END LOOP; \
           RETURN dropped; \
         END $$;"
    )
}

fn stream_of(
    tenant: &TenantId,
    row: &tokio_postgres::Row,
) -> Result<(StreamId, StreamHead), StoreError> {
    let class: i16 = row.get("class");
    let stream = StreamId {
        tenant: tenant.clone(),
        store: StoreId::new(row.get::<_, String>("store_id"))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        device: DeviceId::new(row.get::<_, String>("device_id"))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        epoch: Epoch(row.get::<_, i64>("epoch") as u64),
        class: EventClass::from_u8(class as u8)
            .ok_or_else(|| StoreError::Corrupt(format!("class {class}")))?,
    };
    let head = StreamHead {
        seq: SeqNo(row.get::<_, i64>("seq") as u64),
        hash: hash_of(row.get::<_, &[u8]>("hash"))?,
    };
    Ok((stream, head))
}

#[allow(clippy::too_many_arguments)] // one argument per stored column
pub(crate) fn alert_from_parts(
    alert_id: String,
    store_id: String,
    kind: &str,
    severity: &str,
    subject: String,
    raised_ms: i64,
    offset: i16,
    state: i16,
    changed_by: Option<String>,
    message: String,
    facts: &serde_json::Value,
) -> Result<Alert, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("alert {alert_id}: {what}"));
    Ok(Alert {
        alert_id: AlertId::new(alert_id.clone()).map_err(|_| corrupt("id"))?,
        kind: AlertKind::parse(kind).ok_or_else(|| corrupt("kind"))?,
        severity: match severity {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            _ => return Err(corrupt("severity")),
        },
        store_id: StoreId::new(store_id).map_err(|_| corrupt("store"))?,
        subject,
        raised_at: EventTime::from_unix_ms(raised_ms, offset),
        state: match state {
            0 => AlertState::Open,
            1 => AlertState::Acknowledged,
            _ => AlertState::Resolved,
        },
        changed_by,
        message,
        facts: serde_json::from_value(facts.clone()).unwrap_or_default(),
    })
}

fn alert_of(row: &tokio_postgres::Row) -> Result<AlertRecord, StoreError> {
    let facts: serde_json::Value = row.get("facts");
    Ok(AlertRecord {
        alert: alert_from_parts(
            row.get("alert_id"),
            row.get("store_id"),
            row.get::<_, &str>("kind"),
            row.get::<_, &str>("severity"),
            row.get("subject"),
            row.get("raised_ms"),
            row.get("raised_offset_min"),
            row.get("state"),
            row.get("changed_by"),
            row.get("message"),
            &facts,
        )?,
        updated_ms: row.get("updated_ms"),
    })
}

const ALERT_COLUMNS: &str = "alert_id, store_id, kind, severity, subject, raised_ms, raised_offset_min, state, changed_by, message, facts, updated_ms";

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let url = self.config.admin_url.as_deref().unwrap_or(&self.config.url);
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        let driver = tokio::spawn(connection);
        let result = self.migrate_with(&client).await;
        drop(client);
        let _ = driver.await;
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        result
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
        let client = self.client().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn create_tenant(&self, tenant: &TenantId, name: &str) -> Result<(), StoreError> {
        self.tenant_execute(
            tenant.as_str(),
            "INSERT INTO tenants (tenant_id, name, created_ms) VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO UPDATE SET name = excluded.name",
            &[&tenant.as_str(), &name, &now_ms()],
        )
        .await?;
        Ok(())
    }

    async fn tenant_exists(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "SELECT 1 FROM tenants WHERE tenant_id = $1",
                &[&tenant.as_str()],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn upsert_store(&self, tenant: &TenantId, store: &StoreInfo) -> Result<(), StoreError> {
        time_zone(&store.time_zone)?;
        if !self.tenant_exists(tenant).await? {
            return Err(StoreError::NotFound(format!("tenant {tenant}")));
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&tenant_sql(tenant.as_str())).await?;
        let before = tx
            .query_opt(
                "SELECT name, region, time_zone FROM stores WHERE tenant_id = $1 AND store_id = $2 FOR UPDATE",
                &[&tenant.as_str(), &store.store_id.as_str()],
            )
            .await?;
        tx.execute(
            "INSERT INTO stores (tenant_id, store_id, name, region, time_zone) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, store_id) DO UPDATE SET name = excluded.name, region = excluded.region, time_zone = excluded.time_zone",
            &[&tenant.as_str(), &store.store_id.as_str(), &store.name, &store.region, &store.time_zone],
        )
        .await?;
        // Series by region or week and every replica's store list change with an edit or a
        // new store (items over a range are grouped by the listed stores' zones): announced
        // with the write.
        let edited = before.is_none_or(|r| {
            (
                r.get::<_, &str>(0),
                r.get::<_, &str>(1),
                r.get::<_, &str>(2),
            ) != (
                store.name.as_str(),
                store.region.as_str(),
                store.time_zone.as_str(),
            )
        });
        if edited {
            notify(&tx, &Change::stores_edited(tenant.as_str())).await?;
        }
        tx.commit().await?;
        self.zones.remove(tenant.as_str(), store.store_id.as_str());
        Ok(())
    }

    async fn stores(&self, tenant: &TenantId) -> Result<Vec<StoreInfo>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "SELECT store_id, name, region, time_zone FROM stores WHERE tenant_id = $1 ORDER BY store_id",
                &[&tenant.as_str()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoreInfo {
                    store_id: StoreId::new(r.get::<_, String>(0))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    name: r.get(1),
                    region: r.get(2),
                    time_zone: r.get(3),
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
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&tenant_sql(tenant.as_str())).await?;
        let changed = tx
            .execute(
                "INSERT INTO items (tenant_id, sku, category) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, sku) \
                 DO UPDATE SET category = excluded.category WHERE items.category IS DISTINCT FROM excluded.category",
                &[&tenant.as_str(), &sku.as_str(), &category],
            )
            .await?;
        // Series by category change with it: announced with the write, so no cache (of
        // any replica) keeps what was computed between a catalog edit and this commit.
        if changed > 0 {
            notify(&tx, &Change::catalog(tenant.as_str())).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn item_categories(
        &self,
        tenant: &TenantId,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "SELECT sku, category FROM items WHERE tenant_id = $1",
                &[&tenant.as_str()],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn upsert_principal(&self, tenant: &TenantId, p: &Principal) -> Result<(), StoreError> {
        if !self.tenant_exists(tenant).await? {
            return Err(StoreError::NotFound(format!("tenant {tenant}")));
        }
        let stores: Vec<&str> = p.stores.iter().map(|s| s.as_str()).collect();
        self.tenant_execute(
            tenant.as_str(),
            "INSERT INTO principals (tenant_id, is_client, name, secret_hash, role, stores) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, is_client, name) DO UPDATE SET secret_hash = excluded.secret_hash, role = excluded.role, stores = excluded.stores",
            &[&tenant.as_str(), &p.is_client, &p.name, &p.secret_hash, &p.role.as_str(), &stores],
        )
        .await?;
        Ok(())
    }

    async fn principal(
        &self,
        tenant: &TenantId,
        name: &str,
        is_client: bool,
    ) -> Result<Option<Principal>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "SELECT name, secret_hash, role, stores FROM principals WHERE tenant_id = $1 AND is_client = $2 AND name = $3",
                &[&tenant.as_str(), &is_client, &name],
            )
            .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let role: String = r.get(2);
        let stores: Vec<String> = r.get(3);
        Ok(Some(Principal {
            name: r.get(0),
            is_client,
            secret_hash: r.get(1),
            role: super::Role::parse(&role)
                .ok_or_else(|| StoreError::Corrupt(format!("role {role}")))?,
            stores: stores
                .into_iter()
                .filter_map(|s| StoreId::new(s).ok())
                .collect(),
        }))
    }

    async fn insert_refresh(&self, tenant: &TenantId, r: &RefreshRecord) -> Result<(), StoreError> {
        self.tenant_execute(
            tenant.as_str(),
            "INSERT INTO refresh_tokens (tenant_id, token_hash, family, subject, is_client, expires_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&tenant.as_str(), &r.token_hash, &r.family, &r.subject, &r.is_client, &r.expires_ms],
        )
        .await?;
        Ok(())
    }

    async fn use_refresh(
        &self,
        tenant: &TenantId,
        token_hash: &str,
        now: UnixMillis,
    ) -> Result<RefreshUse, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&tenant_sql(tenant.as_str())).await?;
        let row = tx
            .query_opt(
                "SELECT family, subject, is_client, expires_ms, used, revoked FROM refresh_tokens \
                 WHERE tenant_id = $1 AND token_hash = $2 FOR UPDATE",
                &[&tenant.as_str(), &token_hash],
            )
            .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(RefreshUse::Invalid);
        };
        let family: String = row.get(0);
        let used: bool = row.get(4);
        let revoked: bool = row.get(5);
        let expires_ms: i64 = row.get(3);
        if used {
            tx.execute(
                "UPDATE refresh_tokens SET revoked = true WHERE tenant_id = $1 AND family = $2",
                &[&tenant.as_str(), &family],
            )
            .await?;
            tx.commit().await?;
            return Ok(RefreshUse::Replayed);
        }
        if revoked || expires_ms <= now {
            tx.commit().await?;
            return Ok(RefreshUse::Invalid);
        }
        tx.execute(
            "UPDATE refresh_tokens SET used = true WHERE tenant_id = $1 AND token_hash = $2",
            &[&tenant.as_str(), &token_hash],
        )
        .await?;
        tx.commit().await?;
        Ok(RefreshUse::Fresh(RefreshRecord {
            token_hash: token_hash.to_owned(),
            family,
            subject: row.get(1),
            is_client: row.get(2),
            expires_ms,
        }))
    }

    async fn commit_events(
        &self,
        stream: &StreamId,
        events: &[Event],
        new_head: StreamHead,
    ) -> Result<CommitOutcome, StoreError> {
        let (outcome, _change) = self
            .commit_inner(stream, events, new_head, None, None)
            .await?;
        Ok(outcome)
    }

    async fn commit_events_in_order(
        &self,
        stream: &StreamId,
        events: &[Event],
        new_head: StreamHead,
        behind: Option<super::CommitGate>,
        ahead: super::GateOpener,
    ) -> Result<CommitOutcome, StoreError> {
        let result = self
            .commit_inner(stream, events, new_head, behind, Some(&ahead))
            .await;
        ahead.open(result.is_ok());
        Ok(result?.0)
    }

    async fn stream_heads(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<Vec<(StreamId, StreamHead)>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "SELECT store_id, device_id, epoch, class, seq, hash FROM stream_heads WHERE tenant_id = $1 AND device_id = $2 ORDER BY epoch, class",
                &[&tenant.as_str(), &device.as_str()],
            )
            .await?;
        rows.iter().map(|r| stream_of(tenant, r)).collect()
    }

    async fn chain_hash_at(
        &self,
        stream: &StreamId,
        seq: SeqNo,
    ) -> Result<Option<Hash>, StoreError> {
        let rows = self
            .tenant_query(
                stream.tenant.as_str(),
                "SELECT chain_hash FROM event_keys WHERE tenant_id = $1 AND device_id = $2 AND epoch = $3 AND class = $4 AND seq = $5",
                &[
                    &stream.tenant.as_str(),
                    &stream.device.as_str(),
                    &(stream.epoch.0 as i64),
                    &(stream.class as i16),
                    &(seq.0 as i64),
                ],
            )
            .await?;
        rows.first()
            .map(|r| hash_of(r.get::<_, &[u8]>(0)))
            .transpose()
    }

    async fn record_contact(
        &self,
        tenant: &TenantId,
        store: &StoreId,
        device: &DeviceId,
        c: &DeviceContact,
    ) -> Result<(), StoreError> {
        self.tenant_execute(
            tenant.as_str(),
            "INSERT INTO devices (tenant_id, device_id, store_id, last_seen_ms, backlog, clock_skew_ms) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, device_id) DO UPDATE SET store_id = excluded.store_id, last_seen_ms = excluded.last_seen_ms, \
               backlog = excluded.backlog, clock_skew_ms = excluded.clock_skew_ms",
            &[&tenant.as_str(), &device.as_str(), &store.as_str(), &c.now_ms, &(c.backlog as i64), &c.clock_skew_ms],
        )
        .await?;
        Ok(())
    }

    async fn device_status(&self, tenant: &TenantId) -> Result<Vec<DeviceStatus>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "WITH heads AS (SELECT store_id, device_id, max(last_event_ms) AS last_event_ms, max(last_commit_ms) AS last_commit_ms \
                   FROM stream_heads WHERE tenant_id = $1 GROUP BY store_id, device_id) \
                 SELECT coalesce(d.store_id, h.store_id), coalesce(d.device_id, h.device_id), d.last_seen_ms, coalesce(d.backlog, 0), \
                   coalesce(d.clock_skew_ms, 0), h.last_event_ms, h.last_commit_ms \
                 FROM (SELECT * FROM devices WHERE tenant_id = $1) d FULL JOIN heads h ON h.device_id = d.device_id \
                 ORDER BY 1, 2",
                &[&tenant.as_str()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceStatus {
                    store_id: StoreId::new(r.get::<_, String>(0))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    device_id: DeviceId::new(r.get::<_, String>(1))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    last_seen_ms: r.get(2),
                    backlog: r.get::<_, i64>(3).max(0) as u64,
                    clock_skew_ms: r.get(4),
                    last_event_ms: r.get(5),
                    last_commit_ms: r.get(6),
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
        let tenant_id = tenant.as_str();
        let store_col = match (q.by_store, q.by_zone) {
            (false, _) => "''::text",
            (true, false) => "r.store_id",
            (true, true) => "min(r.store_id)",
        };
        let group_by = if q.by_store && q.by_zone {
            "s.time_zone, 2, 3"
        } else {
            "1, 2, 3"
        };
        let value_col = match (q.by_value, q.by_category) {
            (false, _) => "''::text",
            (true, false) => "dim_value",
            (true, true) => super::CATEGORY_COLUMN,
        };
        let bucket_col = if q.by_bucket {
            "bucket_ms"
        } else {
            "0::bigint"
        };
        let (stores, values) = filter_values(q);
        // Only the filters in use appear in the statement, so a store filter probes the key
        // (tenant, granularity, dim, store, …) of one partition and a tenant-wide read uses
        // the bucket index. (A generic plan of the store-filtered statement would scan the
        // bucket index of all sixteen partitions, 16,885 buffers against 170; PostgreSQL
        // keeps planning it for its values because that plan's estimate is ten times lower.)
        let granularity = granularity_code(q.granularity);
        let dim = q.dim as i16;
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&tenant_id, &granularity, &dim, &q.from_ms, &q.to_ms];
        // Categories are the catalog's as it stands, joined where the rows are summed, so
        // only one row per category (and store and bucket) leaves the database.
        let mut from = "sales_rollups r".to_owned();
        if q.by_store && q.by_zone {
            from.push_str(
                " JOIN stores s ON s.tenant_id = r.tenant_id AND s.store_id = r.store_id",
            );
        }
        if q.by_category {
            from.push_str(
                " LEFT JOIN items i ON i.tenant_id = r.tenant_id AND i.sku = r.dim_value",
            );
        }
        let mut filters = String::new();
        if let Some(stores) = &stores {
            params.push(stores);
            filters.push_str(&format!(" AND r.store_id = ANY(${})", params.len()));
        }
        if let Some(values) = &values {
            params.push(values);
            filters.push_str(&format!(" AND dim_value = ANY(${})", params.len()));
        }
        let limit = q.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut limit_clause = String::new();
        if let Some(limit) = &limit {
            params.push(limit);
            limit_clause = format!(" LIMIT ${}", params.len());
        }
        // When every key column is kept apart, each stored row is already one result row
        // (store-level rows have an empty value): read them as they are. Summing them would
        // cost a hash table, numeric accumulators and a sort per read, for 3,000 rows in the
        // all-stores 30-day daily read. Callers do not depend on the order of rows.
        let unique = q.by_store
            && q.by_bucket
            && !q.by_category
            && !q.by_zone
            && (q.by_value || q.dim == DimKind::Store);
        let sql = if unique {
            format!(
                "SELECT r.store_id, dim_value, bucket_ms, revenue_e4, units, transactions, refunds, refund_amount_e4, voids \
                 FROM {from} WHERE r.tenant_id = $1 AND granularity = $2 AND dim = $3 AND bucket_ms >= $4 AND bucket_ms < $5{filters}{limit_clause}"
            )
        } else {
            format!(
                "SELECT {store_col}, {value_col}, {bucket_col}, sum(revenue_e4)::bigint, sum(units)::bigint, sum(transactions)::bigint, \
                   sum(refunds)::bigint, sum(refund_amount_e4)::bigint, sum(voids)::bigint \
                 FROM {from} WHERE r.tenant_id = $1 AND granularity = $2 AND dim = $3 AND bucket_ms >= $4 AND bucket_ms < $5{filters} \
                 GROUP BY {group_by}{limit_clause}"
            )
        };
        let rows = self
            .tenant_query_with(tenant.as_str(), &sql, &params, ROLLUP_READ_SETTINGS)
            .await?;
        rows.iter()
            .map(|r| {
                let store: String = r.get(0);
                Ok(RollupRow {
                    store_id: if q.by_store {
                        Some(StoreId::new(store).map_err(|e| StoreError::Corrupt(e.to_string()))?)
                    } else {
                        None
                    },
                    value: r.get(1),
                    bucket_ms: r.get(2),
                    figures: figures_at(r, 3),
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
        let stores: Option<Vec<&str>> = stores.map(|s| s.iter().map(|s| s.as_str()).collect());
        let sku = sku.map(|s| s.as_str());
        // Source ids compare in byte order (`COLLATE "C"`), as the protocol's fold does.
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "WITH m AS (SELECT store_id, sku, at_ms, source_id, is_count, quantity FROM stock_movements \
                   WHERE tenant_id = $1 AND ($2::text[] IS NULL OR store_id = ANY($2)) AND ($3::text IS NULL OR sku = $3)), \
                 c AS (SELECT DISTINCT ON (store_id, sku) store_id, sku, at_ms, quantity FROM m WHERE is_count \
                   ORDER BY store_id, sku, at_ms DESC, source_id COLLATE \"C\" DESC) \
                 SELECT m.store_id, m.sku, c.at_ms, c.quantity, \
                   coalesce(sum(m.quantity) FILTER (WHERE NOT m.is_count AND (c.at_ms IS NULL OR m.at_ms > c.at_ms)), 0)::bigint \
                 FROM m LEFT JOIN c ON c.store_id = m.store_id AND c.sku = m.sku \
                 GROUP BY m.store_id, m.sku, c.at_ms, c.quantity ORDER BY m.store_id, m.sku",
                &[&tenant.as_str(), &stores, &sku],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let at: Option<i64> = r.get(2);
                let counted: Option<i64> = r.get(3);
                Ok(StockLevel {
                    store: StoreId::new(r.get::<_, String>(0))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    sku: Sku::new(r.get::<_, String>(1))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    count: at.zip(counted),
                    delta: r.get(4),
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
        let stores: Vec<&str> = windows.iter().map(|w| w.store.as_str()).collect();
        let skus: Vec<&str> = windows.iter().map(|w| w.sku.as_str()).collect();
        let after: Vec<i64> = windows.iter().map(|w| w.after_ms).collect();
        let before: Vec<i64> = windows.iter().map(|w| w.before_ms).collect();
        // Each window probes the (store, SKU, time) index of the line items.
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "SELECT w.n, coalesce(sum(CASE WHEN l.kind = 0 THEN -abs(l.quantity) ELSE abs(l.quantity) END), 0)::bigint \
                 FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[]) WITH ORDINALITY AS w(s, k, a, b, n) \
                 LEFT JOIN line_items l ON l.tenant_id = $1 AND l.store_id = w.s AND l.sku = w.k \
                   AND l.at_ms > w.a AND l.at_ms < w.b AND l.kind <> 2 \
                 GROUP BY w.n",
                &[&tenant.as_str(), &stores, &skus, &after, &before],
            )
            .await?;
        let mut changes = vec![0i64; windows.len()];
        for r in rows {
            let n: i64 = r.get(0);
            if let Some(c) = usize::try_from(n - 1).ok().and_then(|i| changes.get_mut(i)) {
                *c = r.get(1);
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
        let stores: Option<Vec<&str>> = stores.map(|s| s.iter().map(|s| s.as_str()).collect());
        let sku = sku.map(|s| s.as_str());
        let after_stores: Vec<&str> = after.iter().map(|(s, _, _)| s.as_str()).collect();
        let after_skus: Vec<&str> = after.iter().map(|(_, k, _)| k.as_str()).collect();
        let after_ms: Vec<i64> = after.iter().map(|(_, _, t)| *t).collect();
        let granularity = granularity_code(storesync_protocol::rollup::Granularity::Day);
        let dim = DimKind::Item as i16;
        let rows = self
            .tenant_query_with(
                tenant.as_str(),
                "SELECT r.store_id, r.dim_value, sum(r.units)::bigint, min(r.bucket_ms) FROM sales_rollups r \
                 LEFT JOIN unnest($6::text[], $7::text[], $8::bigint[]) AS f(s, k, t) ON f.s = r.store_id AND f.k = r.dim_value \
                 WHERE r.tenant_id = $1 AND r.granularity = $2 AND r.dim = $3 \
                   AND ($4::text[] IS NULL OR r.store_id = ANY($4)) AND ($5::text IS NULL OR r.dim_value = $5) \
                   AND (f.t IS NULL OR r.bucket_ms > f.t) \
                 GROUP BY r.store_id, r.dim_value",
                &[
                    &tenant.as_str(),
                    &granularity,
                    &dim,
                    &stores,
                    &sku,
                    &after_stores,
                    &after_skus,
                    &after_ms,
                ],
                ROLLUP_READ_SETTINGS,
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(UnitsSold {
                    store: StoreId::new(r.get::<_, String>(0))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    sku: Sku::new(r.get::<_, String>(1))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    units: r.get(2),
                    first_day_ms: r.get(3),
                })
            })
            .collect()
    }

    async fn alerts(
        &self,
        tenant: &TenantId,
        q: &AlertQuery,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        let stores: Option<Vec<&str>> = q
            .stores
            .as_ref()
            .map(|s| s.iter().map(|s| s.as_str()).collect());
        let state: Option<i16> = q
            .state
            .as_deref()
            .and_then(AlertState::parse)
            .map(alert_state_rank);
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE tenant_id = $1 AND ($2::text[] IS NULL OR store_id = ANY($2)) \
             AND ($3::smallint IS NULL OR state = $3) AND ($4::bigint IS NULL OR raised_ms < $4) \
             ORDER BY raised_ms DESC, alert_id LIMIT $5"
        );
        let rows = self
            .tenant_query(
                tenant.as_str(),
                &sql,
                &[
                    &tenant.as_str(),
                    &stores,
                    &state,
                    &q.before_ms,
                    &i64::from(q.limit),
                ],
            )
            .await?;
        rows.iter().map(alert_of).collect()
    }

    async fn alert(
        &self,
        tenant: &TenantId,
        alert_id: &AlertId,
    ) -> Result<Option<AlertRecord>, StoreError> {
        let sql =
            format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE tenant_id = $1 AND alert_id = $2");
        let rows = self
            .tenant_query(
                tenant.as_str(),
                &sql,
                &[&tenant.as_str(), &alert_id.as_str()],
            )
            .await?;
        rows.first().map(alert_of).transpose()
    }

    async fn set_alert_state(
        &self,
        tenant: &TenantId,
        alert_id: &AlertId,
        state: AlertState,
        by: &str,
        now: UnixMillis,
    ) -> Result<Option<AlertRecord>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&tenant_sql(tenant.as_str())).await?;
        let sql = format!(
            "UPDATE alerts SET state = GREATEST(state, $3), changed_by = $4, updated_ms = $5 \
             WHERE tenant_id = $1 AND alert_id = $2 RETURNING {ALERT_COLUMNS}"
        );
        let row = tx
            .query_opt(
                &sql,
                &[
                    &tenant.as_str(),
                    &alert_id.as_str(),
                    &alert_state_rank(state),
                    &by,
                    &now,
                ],
            )
            .await?;
        let record = row.as_ref().map(alert_of).transpose()?;
        if let Some(r) = &record {
            notify(
                &tx,
                &Change::alert(
                    tenant.as_str(),
                    alert_id.as_str(),
                    r.alert.store_id.as_str(),
                ),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    async fn dead_letters(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = self
            .tenant_query(
                tenant.as_str(),
                "SELECT store_id, event_key, reason, raw, received_ms FROM dead_letters WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
                &[&tenant.as_str(), &i64::from(limit)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                store_id: r.get(0),
                event_key: r.get(1),
                reason: r.get(2),
                raw: r.get(3),
                received_ms: r.get(4),
            })
            .collect())
    }
}

/// Keeps the key type in use for readers of this module's signatures.
pub type Key = EventKey;
