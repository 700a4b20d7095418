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

/// A rollup row's key as stored, `(granularity, bucket_ms, dim_kind, dim_value)`, its text
/// borrowed from the transaction it counts.
pub(crate) type RowKey<'a> = (i64, i64, i64, &'a str);

/// Rollup increments summed per stored row. A commit adds about nine rows per transaction
/// to it, so its hasher is a fast one (seeded per process).
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

/// Adds the stored rows of `tx` to `delta`, keys borrowed from `tx` (no allocation per row).
pub(crate) fn add_transaction<'a>(
    delta: &mut Delta<'a>,
    tx: &'a Transaction,
    tz: &jiff::tz::TimeZone,
) {
    for_each_rollup_row(tx, tz, |granularity, bucket_ms, dimension, figures| {
        if stored(granularity, &dimension) {
            delta
                .entry(row_key(granularity, bucket_ms, dimension))
                .or_default()
                .add(&figures);
        }
    });
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
    let rows = sqlx::query(
        "SELECT bucket_ms, dim_value, revenue_e4, units, transactions, refunds, refund_amount_e4, voids FROM rollups \
         WHERE granularity = ? AND dim_kind = ? AND bucket_ms >= ? AND bucket_ms < ? ORDER BY bucket_ms, dim_value LIMIT ?",
    )
    .bind(stored)
    .bind(grouping.kind())
    .bind(from_ms)
    .bind(to_ms)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
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
    let mut rows = sqlx::query(
        "SELECT bucket_ms, dim_value, revenue_e4, units, transactions, refunds, refund_amount_e4, voids FROM rollups \
         WHERE granularity = 1 AND dim_kind = 1 AND bucket_ms >= ? AND bucket_ms < ? ORDER BY bucket_ms, dim_value",
    )
    .bind(from_ms)
    .bind(hours_to)
    .fetch(pool);
    let mut days: BTreeMap<(i64, String), SalesFigures> = BTreeMap::new();
    let mut current = None;
    while let Some(r) = rows.try_next().await? {
        let day = bucket_start(r.get(0), Granularity::Day, tz);
        if day < from_ms {
            continue;
        }
        // Rows come in hour order, so days do too: when a day begins, the groups of the
        // days before are complete, and if they are `limit` already none after counts.
        if current != Some(day) {
            if day >= to_ms || days.len() >= limit {
                break;
            }
            current = Some(day);
        }
        days.entry((day, r.get(1)))
            .or_default()
            .add(&figures_from(&r, 2));
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

/// The items with the most revenue (or units) in `[from_ms, to_ms)`, from hour rollups.
pub async fn top_items(
    pool: &SqlitePool,
    from_ms: i64,
    to_ms: i64,
    by_units: bool,
    limit: usize,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let order = if by_units { "units" } else { "revenue_e4" };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT dim_value, SUM(revenue_e4) AS revenue_e4, SUM(units) AS units, SUM(transactions) FROM rollups \
         WHERE granularity = 1 AND dim_kind = 1 AND bucket_ms >= ? AND bucket_ms < ? \
         GROUP BY dim_value ORDER BY {order} DESC, dim_value LIMIT ?"
    )))
    .bind(from_ms)
    .bind(to_ms)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "itemId": r.get::<String, _>(0),
                "revenue": money(r.get(1)),
                "units": r.get::<i64, _>(2),
                "transactions": r.get::<i64, _>(3),
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
    let pool = store.reader();
    let mut expected: HashMap<(i64, i64, i64, String), SalesFigures> = HashMap::new();
    let mut transactions = 0u64;
    let rows = sqlx::query(
        "SELECT epoch, class, seq, prev, content_hash, body FROM events WHERE class = ?",
    )
    .bind(EventClass::Sales as i64)
    .fetch_all(pool)
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
    .fetch_all(pool)
    .await?;
    let mut mismatches = Vec::new();
    let stored_rows = stored.len();
    for r in &stored {
        let key = (
            r.get::<i64, _>(0),
            r.get::<i64, _>(1),
            r.get::<i64, _>(2),
            r.get::<String, _>(3),
        );
        let got = figures_from(r, 4);
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
