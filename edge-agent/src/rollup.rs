//! Local rollups: per minute, hour and day, by store, item, payment method and register.
//!
//! The figures and buckets come from `storesync_protocol::rollup` so the hub computes the
//! same numbers from the same events. The writer sums a batch's contribution per key in
//! memory and adds it with one upsert (one row per key, in key order) inside the ingest
//! transaction; [`recompute`] rebuilds them from the event log, which is how tests (and an
//! operator) check them.
//!
//! Only hour buckets are stored by item. Minute buckets by item are the largest set by far
//! (a batch of transactions touches a minute row per item sold), and nothing in the agent
//! reads them: a query for them is answered from the sales log. Day buckets by item cost
//! every commit as many upserts as the hour rows (a commit of 64 transactions touches
//! about 200 of each, against about 30 store, payment and register rows), and a store day
//! is a whole number of its local hours, so a query for them sums the hour rows
//! ([`query`]). The API is unchanged.
//!
//! Hour rows by item are not upserted by every commit either: a commit of 64 single-sale
//! requests touches about 190 of them against about 30 store, payment and register rows,
//! and their upserts were a fifth of such a commit's cost. Each commit stores its item-hour
//! increments in the same transaction as one row of `item_deltas` (a few kilobytes,
//! appended), and the writer folds the delta rows into the hour rows, deleting them in the
//! same transaction, every `ITEM_FOLD_TRANSACTIONS` sales, every `ITEM_FOLD_AGE_MS`, at
//! each tick, at start and at shutdown. Every reader of the hour rows by item adds the delta
//! rows in the same read transaction (`item_deltas`), so what it answers equals a
//! recomputation from the log at every commit, as for the rows a commit upserts itself.

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;

use serde::Serialize;
use sqlx::{Arguments, Row, SqliteConnection, SqlitePool};
use storesync_protocol::rollup::{
    Dimension, DimensionRef, Granularity, SalesFigures, bucket_start, for_each_rollup_row,
};
use storesync_protocol::{EventBody, EventClass, Transaction};

use crate::store::{Store, StoreError};
use crate::writer::values;

/// Whether the agent stores rows of `dimension` at `granularity` (see the module docs).
fn stored(granularity: Granularity, dimension: &DimensionRef<'_>) -> bool {
    !matches!(dimension, DimensionRef::Item(_)) || granularity == Granularity::Hour
}

/// Sales whose item-hour delta rows wait before the writer folds them in.
pub(crate) const ITEM_FOLD_TRANSACTIONS: usize = 2_048;

/// The longest the writer leaves a sale's item-hour delta row unfolded while it commits.
pub(crate) const ITEM_FOLD_AGE_MS: i64 = 10_000;

/// A rollup row's key as stored, `(granularity, bucket_ms, dim_kind, dim_value)`, its text
/// borrowed from the transaction it counts.
pub(crate) type RowKey<'a> = (i64, i64, i64, &'a str);

/// Rollup increments summed per row a commit upserts (store, payment and register rows:
/// minute, hour and day for each transaction), so its hasher is a fast one (seeded per
/// process).
pub(crate) type Delta<'a> = HashMap<RowKey<'a>, SalesFigures, foldhash::fast::RandomState>;

/// An empty [`Delta`] with room for the rows of `transactions` transactions of a few items.
pub(crate) fn delta<'a>(transactions: usize) -> Delta<'a> {
    Delta::with_capacity_and_hasher(transactions.saturating_mul(6), Default::default())
}

/// The stored form of a row's key.
fn row_key(granularity: Granularity, bucket_ms: i64, dimension: DimensionRef<'_>) -> RowKey<'_> {
    let granularity = match granularity {
        Granularity::Minute => 0,
        Granularity::Hour => 1,
        Granularity::Day => 2,
        Granularity::Week => 3,
    };
    let (kind, value) = match dimension {
        DimensionRef::Store => (0, ""),
        DimensionRef::Item(sku) => (1, sku.as_str()),
        DimensionRef::Payment(method) => (2, method),
        DimensionRef::Register(register) => (3, register.as_str()),
    };
    (granularity, bucket_ms, kind, value)
}

/// Item-hour increments, `(bucket_ms, sku)`, keys borrowed from the transactions counted.
pub(crate) type ItemDelta<'a> = HashMap<(i64, &'a str), SalesFigures, foldhash::fast::RandomState>;

/// Adds the rows of `tx` a commit stores to `delta` and its item-hour rows to `items`, keys
/// borrowed from `tx` (no allocation per row).
pub(crate) fn add_transaction<'a>(
    delta: &mut Delta<'a>,
    items: &mut ItemDelta<'a>,
    tx: &'a Transaction,
    tz: &jiff::tz::TimeZone,
) {
    for_each_rollup_row(tx, tz, |granularity, bucket_ms, dimension, figures| {
        if let DimensionRef::Item(sku) = dimension {
            if granularity == Granularity::Hour {
                items
                    .entry((bucket_ms, sku.as_str()))
                    .or_default()
                    .add(&figures);
            }
        } else if stored(granularity, &dimension) {
            delta
                .entry(row_key(granularity, bucket_ms, dimension))
                .or_default()
                .add(&figures);
        }
    });
}

/// When the writer folds the delta rows: how many sales wait in them, since when, and
/// when a failed fold may be tried again.
#[derive(Debug, Default)]
pub(crate) struct FoldDue {
    transactions: usize,
    since_ms: Option<i64>,
    retry_ms: i64,
}

impl FoldDue {
    /// A commit stored the increments of `transactions` sales.
    pub(crate) fn committed(&mut self, transactions: usize, now_ms: i64) {
        self.transactions += transactions;
        if transactions > 0 {
            self.waiting(now_ms);
        }
    }

    /// Delta rows wait (a start whose fold failed).
    pub(crate) fn waiting(&mut self, now_ms: i64) {
        self.since_ms.get_or_insert(now_ms);
    }

    /// Whether enough waits, or for long enough, to fold.
    pub(crate) fn due(&self, now_ms: i64) -> bool {
        let enough = self.transactions >= ITEM_FOLD_TRANSACTIONS
            || self
                .since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) >= ITEM_FOLD_AGE_MS);
        enough && now_ms >= self.retry_ms
    }

    /// Whether anything waits at all.
    pub(crate) fn any(&self) -> bool {
        self.since_ms.is_some()
    }

    /// The rows were folded.
    pub(crate) fn folded(&mut self) {
        *self = FoldDue::default();
    }

    /// The fold failed: the next try waits [`ITEM_FOLD_AGE_MS`].
    pub(crate) fn failed(&mut self, now_ms: i64) {
        self.retry_ms = now_ms.saturating_add(ITEM_FOLD_AGE_MS);
    }
}

/// One item-hour increment as a commit stores it in its delta row.
#[derive(Serialize, serde::Deserialize)]
struct DeltaRow<'a> {
    hour: i64,
    sku: &'a str,
    figures: SalesFigures,
}

/// Adds to `batch` the insert of a commit's item-hour increments as one `item_deltas` row
/// (nothing when it sold no item).
pub(crate) fn push_item_delta(
    batch: &mut values::Batch,
    items: &ItemDelta<'_>,
) -> Result<(), StoreError> {
    if items.is_empty() {
        return Ok(());
    }
    let rows: Vec<DeltaRow<'_>> = items
        .iter()
        .map(|(&(hour, sku), figures)| DeltaRow {
            hour,
            sku,
            figures: *figures,
        })
        .collect();
    let body = postcard::to_allocvec(&rows)
        .map_err(|e| StoreError::Identity(format!("encode item deltas: {e}")))?;
    batch.push_sql("INSERT INTO item_deltas (body) VALUES (?)");
    batch.bind(body)
}

/// Calls `visit` with every increment of the unfolded delta rows and returns the last
/// row's id (0 when there is none). Run inside the transaction that reads the rows, so the
/// two see one state.
async fn item_deltas(
    conn: &mut SqliteConnection,
    mut visit: impl FnMut(i64, &str, &SalesFigures),
) -> Result<i64, StoreError> {
    let mut rows = sqlx::query("SELECT id, body FROM item_deltas ORDER BY id").fetch(&mut *conn);
    let mut last = 0;
    while let Some(row) = rows.try_next().await? {
        last = row.get(0);
        let body: &[u8] = row.get(1);
        let deltas: Vec<DeltaRow<'_>> = postcard::from_bytes(body).map_err(|e| {
            StoreError::Database(sqlx::Error::Decode(
                format!("item delta row {last}: {e}").into(),
            ))
        })?;
        for d in &deltas {
            visit(d.hour, d.sku, &d.figures);
        }
    }
    Ok(last)
}

/// The unfolded item-hour increments with an hour in `[from_ms, to_ms)`.
async fn item_deltas_in(
    conn: &mut SqliteConnection,
    from_ms: i64,
    to_ms: i64,
) -> Result<BTreeMap<(i64, String), SalesFigures>, StoreError> {
    let mut tail: BTreeMap<(i64, String), SalesFigures> = BTreeMap::new();
    item_deltas(conn, |hour, sku, f| {
        if hour >= from_ms && hour < to_ms {
            tail.entry((hour, sku.to_owned())).or_default().add(f);
        }
    })
    .await?;
    Ok(tail)
}

/// Folds every delta row into the item-hour rows and deletes them, in one transaction;
/// on failure nothing changed (the rows stay for the next fold, readers count them).
pub(crate) async fn fold_item_deltas(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let result = async {
        let mut sums: BTreeMap<(i64, String), SalesFigures> = BTreeMap::new();
        let last = item_deltas(&mut *conn, |hour, sku, f| {
            sums.entry((hour, sku.to_owned())).or_default().add(f);
        })
        .await?;
        let mut rows = delta(0);
        for ((hour, sku), f) in &sums {
            rows.insert((1, *hour, 1, sku.as_str()), *f);
        }
        let mut batch = values::Batch::default();
        upsert(&mut batch, &rows)?;
        batch.push_sql("DELETE FROM item_deltas WHERE id <= ?");
        batch.bind(last)?;
        batch.push_sql("COMMIT");
        batch.execute(&mut *conn).await
    }
    .await;
    if result.is_err() {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    result
}

/// The batch statement that adds a commit's rollup increments (see [`values`]).
static UPSERT: values::Shape = values::Shape::new(
    "INSERT INTO rollups (granularity, bucket_ms, dim_kind, dim_value, revenue_e4, units, \
     transactions, refunds, refund_amount_e4, voids) \
     SELECT * FROM (VALUES {rows}) WHERE column1 IS NOT NULL \
     ON CONFLICT(granularity, bucket_ms, dim_kind, dim_value) DO UPDATE SET \
     revenue_e4 = revenue_e4 + excluded.revenue_e4, units = units + excluded.units, \
     transactions = transactions + excluded.transactions, refunds = refunds + excluded.refunds, \
     refund_amount_e4 = refund_amount_e4 + excluded.refund_amount_e4, voids = voids + excluded.voids",
    10,
);

/// Adds to `batch` the upserts that add `delta` to the stored rows, in key order
/// (neighbouring keys share pages).
pub(crate) fn upsert(batch: &mut values::Batch, delta: &Delta<'_>) -> Result<(), StoreError> {
    let mut rows: Vec<(&RowKey<'_>, &SalesFigures)> = delta.iter().collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
    UPSERT.push(batch, rows, |args, (key, f)| {
        let (granularity, bucket_ms, kind, value) = *key;
        args.add(granularity)?;
        args.add(bucket_ms)?;
        args.add(kind)?;
        args.add(value.to_owned())?;
        args.add(f.revenue_e4)?;
        args.add(f.units)?;
        args.add(f.transactions)?;
        args.add(f.refunds)?;
        args.add(f.refund_amount_e4)?;
        args.add(f.voids)
    })
}

/// The newest minute bucket per register since `since_ms`.
pub(crate) async fn load_register_last_seen(
    conn: &mut SqliteConnection,
    since_ms: i64,
) -> Result<HashMap<String, i64>, StoreError> {
    let rows = sqlx::query(
        "SELECT dim_value, MAX(bucket_ms) FROM rollups WHERE granularity = 0 AND dim_kind = 3 AND bucket_ms >= ? GROUP BY dim_value",
    )
    .bind(since_ms)
    .fetch_all(&mut *conn)
    .await?;
    let mut seen: HashMap<String, i64> = rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect();
    if seen.is_empty() {
        // A POS that sends no register ids: the store's own minute rows say when it last
        // sold (see `alerts::STORE_POS`).
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(bucket_ms) FROM rollups WHERE granularity = 0 AND dim_kind = 0 AND bucket_ms >= ?",
        )
        .bind(since_ms)
        .fetch_one(&mut *conn)
        .await?;
        if let Some(last) = last {
            seen.insert(crate::alerts::STORE_POS.to_owned(), last);
        }
    }
    Ok(seen)
}

/// The store-dimension figures of one bucket.
pub(crate) async fn store_figures(
    conn: &mut SqliteConnection,
    granularity: i64,
    bucket_ms: i64,
) -> Result<Option<SalesFigures>, StoreError> {
    let row = sqlx::query(
        "SELECT revenue_e4, units, transactions, refunds, refund_amount_e4, voids FROM rollups \
         WHERE granularity = ? AND bucket_ms = ? AND dim_kind = 0 AND dim_value = ''",
    )
    .bind(granularity)
    .bind(bucket_ms)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| figures_from(&r, 0)))
}

fn figures_from(r: &sqlx::sqlite::SqliteRow, at: usize) -> SalesFigures {
    SalesFigures {
        revenue_e4: r.get(at),
        units: r.get(at + 1),
        transactions: r.get(at + 2),
        refunds: r.get(at + 3),
        refund_amount_e4: r.get(at + 4),
        voids: r.get(at + 5),
    }
}

/// What a rollup query groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// The whole store.
    Store,
    /// Item.
    Item,
    /// Payment method.
    Payment,
    /// Register.
    Register,
}

impl Grouping {
    /// Parses the API name.
    pub fn parse(s: &str) -> Option<Grouping> {
        match s {
            "store" => Some(Grouping::Store),
            "item" => Some(Grouping::Item),
            "payment" | "paymentMethod" => Some(Grouping::Payment),
            "register" => Some(Grouping::Register),
            _ => None,
        }
    }

    fn kind(self) -> i64 {
        match self {
            Grouping::Store => 0,
            Grouping::Item => 1,
            Grouping::Payment => 2,
            Grouping::Register => 3,
        }
    }
}

/// One row of a rollup answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollupRow {
    /// Bucket start, RFC 3339 in the store's time zone.
    pub bucket: String,
    /// Bucket start, Unix milliseconds.
    pub bucket_ms: i64,
    /// Group value (`""` for the store).
    pub group: String,
    /// Revenue in currency units.
    pub revenue: f64,
    /// Units.
    pub units: i64,
    /// Sale transactions.
    pub transactions: i64,
    /// Return transactions.
    pub refunds: i64,
    /// Refunded amount in currency units.
    pub refund_amount: f64,
    /// Voids.
    pub voids: i64,
    /// Units per sale transaction.
    pub basket_units: Option<f64>,
    /// Revenue per sale transaction.
    pub basket_revenue: Option<f64>,
}

fn money(e4: i64) -> f64 {
    storesync_protocol::Money::from_e4(e4).to_f64()
}

fn row_of(bucket_ms: i64, group: String, f: &SalesFigures, tz: &jiff::tz::TimeZone) -> RollupRow {
    let bucket = jiff::Timestamp::from_millisecond(bucket_ms)
        .map(|ts| {
            ts.to_zoned(tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        })
        .unwrap_or_default();
    RollupRow {
        bucket,
        bucket_ms,
        group,
        revenue: money(f.revenue_e4),
        units: f.units,
        transactions: f.transactions,
        refunds: f.refunds,
        refund_amount: money(f.refund_amount_e4),
        voids: f.voids,
        basket_units: f.basket_units(),
        basket_revenue: (f.transactions > 0).then(|| money(f.revenue_e4) / f.transactions as f64),
    }
}

/// Rollup rows of `granularity` in `[from_ms, to_ms)` grouped by `grouping`, at most `limit`.
/// Weeks are summed from days, days by item from hours.
pub async fn query(
    pool: &SqlitePool,
    tz: &jiff::tz::TimeZone,
    granularity: Granularity,
    grouping: Grouping,
    from_ms: i64,
    to_ms: i64,
    limit: usize,
) -> Result<Vec<RollupRow>, StoreError> {
    if granularity == Granularity::Minute && grouping == Grouping::Item {
        return minute_items_from_log(pool, tz, from_ms, to_ms, limit).await;
    }
    if grouping == Grouping::Item && granularity != Granularity::Hour {
        return day_items_from_hours(pool, tz, granularity, from_ms, to_ms, limit).await;
    }
    let stored = match granularity {
        Granularity::Minute => 0,
        Granularity::Hour => 1,
        Granularity::Day | Granularity::Week => 2,
    };
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT bucket_ms, dim_value, revenue_e4, units, transactions, refunds, refund_amount_e4, voids FROM rollups \
         WHERE granularity = ? AND dim_kind = ? AND bucket_ms >= ? AND bucket_ms < ? ORDER BY bucket_ms, dim_value LIMIT ?",
    )
    .bind(stored)
    .bind(grouping.kind())
    .bind(from_ms)
    .bind(to_ms)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *tx)
    .await?;
    if grouping == Grouping::Item {
        // Hours by item: the stored rows and the unfolded delta rows, one state of both.
        let mut merged = item_deltas_in(&mut tx, from_ms, to_ms).await?;
        tx.commit().await?;
        // Rows past the last stored one the limit let through may be missing: the deltas'
        // keys after it wait for the next page.
        let cut = (rows.len() >= limit)
            .then(|| {
                rows.last()
                    .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
            })
            .flatten();
        if let Some(cut) = &cut {
            merged.retain(|key, _| key <= cut);
        }
        for r in &rows {
            merged
                .entry((r.get(0), r.get(1)))
                .or_default()
                .add(&figures_from(r, 2));
        }
        return Ok(merged
            .into_iter()
            .take(limit)
            .map(|((b, g), f)| row_of(b, g, &f, tz))
            .collect());
    }
    tx.commit().await?;
    let mut merged: BTreeMap<(i64, String), SalesFigures> = BTreeMap::new();
    for r in &rows {
        let mut bucket: i64 = r.get(0);
        if granularity == Granularity::Week {
            bucket = bucket_start(bucket, Granularity::Week, tz);
        }
        merged
            .entry((bucket, r.get(1)))
            .or_default()
            .add(&figures_from(r, 2));
    }
    Ok(merged
        .into_iter()
        .map(|((b, g), f)| row_of(b, g, &f, tz))
        .collect())
}

/// Day-by-item rows whose day starts in `[from_ms, to_ms)`, summed from the hour rows (a
/// local day is a whole number of local hours, 23 to 25), at most `limit`; by week when
/// asked, summing those days as [`query`] sums stored days.
async fn day_items_from_hours(
    pool: &SqlitePool,
    tz: &jiff::tz::TimeZone,
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
    limit: usize,
) -> Result<Vec<RollupRow>, StoreError> {
    // The hours of the last day that starts before `to_ms` run up to 25 h past it.
    let hours_to = to_ms.saturating_add(25 * 3_600_000);
    let mut tx = pool.begin().await?;
    let tail = item_deltas_in(&mut tx, from_ms, hours_to).await?;
    let mut rows = sqlx::query(
        "SELECT bucket_ms, dim_value, revenue_e4, units, transactions, refunds, refund_amount_e4, voids FROM rollups \
         WHERE granularity = 1 AND dim_kind = 1 AND bucket_ms >= ? AND bucket_ms < ? ORDER BY bucket_ms, dim_value",
    )
    .bind(from_ms)
    .bind(hours_to)
    .fetch(&mut *tx);
    let mut days: BTreeMap<(i64, String), SalesFigures> = BTreeMap::new();
    let mut current = None;
    // The days the stored rows reached; a day past them has no stored row, only deltas.
    let mut complete_before = i64::MAX;
    while let Some(r) = rows.try_next().await? {
        let day = bucket_start(r.get(0), Granularity::Day, tz);
        if day < from_ms {
            continue;
        }
        // Rows come in hour order, so days do too: when a day begins, the groups of the
        // days before are complete, and if they are `limit` already none after counts.
        if current != Some(day) {
            if day >= to_ms || days.len() >= limit {
                complete_before = day;
                break;
            }
            current = Some(day);
        }
        days.entry((day, r.get(1)))
            .or_default()
            .add(&figures_from(&r, 2));
    }
    drop(rows);
    tx.commit().await?;
    for ((hour, sku), f) in tail {
        let day = bucket_start(hour, Granularity::Day, tz);
        if day >= from_ms && day < to_ms && day < complete_before {
            days.entry((day, sku)).or_default().add(&f);
        }
    }
    let mut merged: BTreeMap<(i64, String), SalesFigures> = BTreeMap::new();
    for ((day, sku), f) in days.into_iter().take(limit) {
        let bucket = if granularity == Granularity::Week {
            bucket_start(day, Granularity::Week, tz)
        } else {
            day
        };
        merged.entry((bucket, sku)).or_default().add(&f);
    }
    Ok(merged
        .into_iter()
        .map(|((b, g), f)| row_of(b, g, &f, tz))
        .collect())
}

/// Minute-by-item rows in `[from_ms, to_ms)`, computed from the retained sales log (what
/// is pruned after `retention.acked_days` is no longer counted). A sale is recorded at most
/// `limits.future_skew_max_ms` (at most a day) before its own time, so only events recorded
/// since a day before `from_ms` are decoded, one at a time as SQLite reads them.
async fn minute_items_from_log(
    pool: &SqlitePool,
    tz: &jiff::tz::TimeZone,
    from_ms: i64,
    to_ms: i64,
    limit: usize,
) -> Result<Vec<RollupRow>, StoreError> {
    let mut rows = sqlx::query("SELECT body FROM events WHERE class = ? AND recorded_ms >= ?")
        .bind(EventClass::Sales as i64)
        .bind(from_ms.saturating_sub(crate::config::FUTURE_SKEW_MAX_MS_LIMIT))
        .fetch(pool);
    let mut merged: BTreeMap<(i64, String), SalesFigures> = BTreeMap::new();
    while let Some(row) = rows.try_next().await? {
        let bytes: Vec<u8> = row.get(0);
        let Ok(EventBody::Transaction(tx)) = postcard::from_bytes::<EventBody>(&bytes) else {
            continue;
        };
        let at = tx.timestamp.unix_ms();
        if at < from_ms || at >= to_ms {
            continue;
        }
        for (key, f) in storesync_protocol::rollup::rollup_rows(&tx, tz) {
            if let (Granularity::Minute, Dimension::Item(sku)) = (key.granularity, &key.dimension) {
                merged
                    .entry((key.bucket_ms, sku.as_str().to_owned()))
                    .or_default()
                    .add(&f);
            }
        }
    }
    Ok(merged
        .into_iter()
        .take(limit)
        .map(|((b, g), f)| row_of(b, g, &f, tz))
        .collect())
}

/// The items with the most revenue (or units) in `[from_ms, to_ms)`, from hour rollups and
/// the unfolded delta rows.
pub async fn top_items(
    pool: &SqlitePool,
    from_ms: i64,
    to_ms: i64,
    by_units: bool,
    limit: usize,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let order = if by_units { "units" } else { "revenue_e4" };
    let mut tx = pool.begin().await?;
    let tail = item_deltas_in(&mut tx, from_ms, to_ms).await?;
    // With deltas in the range any item may move up, so every item's sum is read.
    let rows_max = if tail.is_empty() { limit } else { usize::MAX };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT dim_value, SUM(revenue_e4) AS revenue_e4, SUM(units) AS units, SUM(transactions) FROM rollups \
         WHERE granularity = 1 AND dim_kind = 1 AND bucket_ms >= ? AND bucket_ms < ? \
         GROUP BY dim_value ORDER BY {order} DESC, dim_value LIMIT ?"
    )))
    .bind(from_ms)
    .bind(to_ms)
    .bind(i64::try_from(rows_max).unwrap_or(i64::MAX))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut items: HashMap<String, SalesFigures> = rows
        .iter()
        .map(|r| {
            let f = SalesFigures {
                revenue_e4: r.get(1),
                units: r.get(2),
                transactions: r.get(3),
                ..SalesFigures::default()
            };
            (r.get::<String, _>(0), f)
        })
        .collect();
    for ((_, sku), f) in tail {
        items.entry(sku).or_default().add(&f);
    }
    let mut ranked: Vec<(String, SalesFigures)> = items.into_iter().collect();
    ranked.sort_unstable_by(|(a, fa), (b, fb)| {
        let (ka, kb) = if by_units {
            (fa.units, fb.units)
        } else {
            (fa.revenue_e4, fb.revenue_e4)
        };
        kb.cmp(&ka).then_with(|| a.cmp(b))
    });
    Ok(ranked
        .into_iter()
        .take(limit)
        .map(|(sku, f)| {
            serde_json::json!({
                "itemId": sku,
                "revenue": money(f.revenue_e4),
                "units": f.units,
                "transactions": f.transactions,
            })
        })
        .collect())
}

/// Store figures summed over minute buckets in `[from_ms, to_ms)`.
pub async fn store_total(
    pool: &SqlitePool,
    from_ms: i64,
    to_ms: i64,
) -> Result<SalesFigures, StoreError> {
    let row = sqlx::query(
        "SELECT COALESCE(SUM(revenue_e4),0), COALESCE(SUM(units),0), COALESCE(SUM(transactions),0), \
         COALESCE(SUM(refunds),0), COALESCE(SUM(refund_amount_e4),0), COALESCE(SUM(voids),0) FROM rollups \
         WHERE granularity = 0 AND dim_kind = 0 AND bucket_ms >= ? AND bucket_ms < ?",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_one(pool)
    .await?;
    Ok(figures_from(&row, 0))
}

/// Rollup figures as JSON numbers for the summary.
pub fn figures_json(f: &SalesFigures) -> serde_json::Value {
    serde_json::json!({
        "revenue": money(f.revenue_e4),
        "units": f.units,
        "transactions": f.transactions,
        "refunds": f.refunds,
        "refundAmount": money(f.refund_amount_e4),
        "voids": f.voids,
        "basketUnits": f.basket_units(),
    })
}

/// The result of comparing stored rollups with a recomputation from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recomputed {
    /// Sales events read.
    pub transactions: u64,
    /// Rollup rows stored.
    pub stored_rows: usize,
    /// Keys whose stored figures differ from the recomputed ones (at most 20 shown).
    pub mismatches: Vec<String>,
}

/// Recomputes every rollup from the transactions in the event log and compares with the
/// stored table. Only meaningful while no acknowledged event has been pruned.
pub async fn recompute(store: &Store, tz: &jiff::tz::TimeZone) -> Result<Recomputed, StoreError> {
    let mut tx = store.reader().begin().await?;
    let mut expected: HashMap<(i64, i64, i64, String), SalesFigures> = HashMap::new();
    let mut transactions = 0u64;
    let rows = sqlx::query(
        "SELECT epoch, class, seq, prev, content_hash, body FROM events WHERE class = ?",
    )
    .bind(EventClass::Sales as i64)
    .fetch_all(&mut *tx)
    .await?;
    for row in &rows {
        let event = crate::store::event_from_row(store.identity(), row)?;
        if let EventBody::Transaction(tx) = &event.body {
            transactions += 1;
            for_each_rollup_row(tx, tz, |granularity, bucket_ms, dimension, f| {
                if stored(granularity, &dimension) {
                    let (g, b, k, v) = row_key(granularity, bucket_ms, dimension);
                    expected.entry((g, b, k, v.to_owned())).or_default().add(&f);
                }
            });
        }
    }
    let stored = sqlx::query(
        "SELECT granularity, bucket_ms, dim_kind, dim_value, revenue_e4, units, transactions, refunds, refund_amount_e4, voids FROM rollups",
    )
    .fetch_all(&mut *tx)
    .await?;
    // The item-hour rows count what was folded; the delta rows are added, as every reader
    // of them does.
    let mut got: BTreeMap<(i64, i64, i64, String), SalesFigures> = stored
        .iter()
        .map(|r| {
            let key = (r.get(0), r.get(1), r.get(2), r.get(3));
            (key, figures_from(r, 4))
        })
        .collect();
    item_deltas(&mut tx, |hour, sku, f| {
        got.entry((1, hour, 1, sku.to_owned())).or_default().add(f);
    })
    .await?;
    tx.commit().await?;
    let mut mismatches = Vec::new();
    let stored_rows = stored.len();
    for (key, got) in got {
        let want = expected.remove(&key).unwrap_or_default();
        if got != want {
            mismatches.push(format!("{key:?}: stored {got:?}, recomputed {want:?}"));
        }
    }
    for (key, want) in expected {
        mismatches.push(format!("{key:?}: missing, recomputed {want:?}"));
    }
    mismatches.truncate(20);
    Ok(Recomputed {
        transactions,
        stored_rows,
        mismatches,
    })
}
