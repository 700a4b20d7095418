//! Inventory on hand per SKU, from the shared fold in `storesync_protocol::inventory`.
//!
//! The writer keeps every SKU's [`OnHand`] cell in memory and applies a batch's movements
//! incrementally; when the order matters (a delta at or before the SKU's last stock count,
//! a count at or before its latest movement), that SKU is refolded from the event log with
//! `storesync_protocol::inventory::fold`, inside the same transaction. The refold sees only
//! the retained log: after acknowledged events were pruned, a late movement is folded onto
//! the last count the log still holds.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use sqlx::{Row, SqliteConnection, SqlitePool};
use storesync_protocol::inventory::{Movement, OnHand, StockChange, fold, movements};
use storesync_protocol::{EventBody, EventClass, Sku};

use crate::store::StoreError;

pub(crate) async fn load_on_hand(
    conn: &mut SqliteConnection,
) -> Result<HashMap<Sku, OnHand>, StoreError> {
    let rows = sqlx::query("SELECT sku, quantity, last_count_ms, last_move_ms FROM on_hand")
        .fetch_all(&mut *conn)
        .await?;
    let mut map = HashMap::with_capacity(rows.len());
    for r in rows {
        if let Ok(sku) = Sku::new(r.get::<String, _>(0)) {
            map.insert(
                sku,
                OnHand {
                    quantity: r.get(1),
                    last_count_ms: r.get(2),
                    last_move_ms: r.get(3),
                },
            );
        }
    }
    Ok(map)
}

/// Applies `batch` to `cells`; returns the cells of the SKUs it touched, which the caller
/// stores in the same transaction. A SKU with a movement older than its last count is
/// refolded from the retained log, which must already hold the events of `batch` (the
/// writer inserts them first, in the same transaction).
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    cells: &mut HashMap<Sku, OnHand>,
    mut batch: Vec<Movement>,
) -> Result<Vec<(Sku, OnHand)>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    batch.sort_by(|a, b| {
        (
            a.at_ms,
            matches!(a.change, StockChange::Count(_)),
            &a.source_id,
        )
            .cmp(&(
                b.at_ms,
                matches!(b.change, StockChange::Count(_)),
                &b.source_id,
            ))
    });
    let mut refold: HashSet<Sku> = HashSet::new();
    let mut touched: BTreeMap<Sku, ()> = BTreeMap::new();
    for m in &batch {
        touched.insert(m.sku.clone(), ());
        if refold.contains(&m.sku) {
            continue;
        }
        let cell = cells.entry(m.sku.clone()).or_default();
        if !cell.apply(m.change, m.at_ms) {
            refold.insert(m.sku.clone());
        }
    }
    if !refold.is_empty() {
        let folded = refold_skus(conn, &refold).await?;
        for sku in refold {
            let cell = folded.get(&sku).copied().unwrap_or_default();
            cells.insert(sku, cell);
        }
    }
    Ok(touched
        .into_keys()
        .map(|sku| {
            let cell = cells.get(&sku).copied().unwrap_or_default();
            (sku, cell)
        })
        .collect())
}

/// Folds the given SKUs from the retained log.
async fn refold_skus(
    conn: &mut SqliteConnection,
    skus: &HashSet<Sku>,
) -> Result<HashMap<Sku, OnHand>, StoreError> {
    let rows = sqlx::query("SELECT body FROM events WHERE class IN (?, ?)")
        .bind(EventClass::Sales as i64)
        .bind(EventClass::Scans as i64)
        .fetch_all(&mut *conn)
        .await?;
    let mut relevant = Vec::new();
    for r in rows {
        let bytes: Vec<u8> = r.get(0);
        let Ok(body) = postcard::from_bytes::<EventBody>(&bytes) else {
            continue;
        };
        relevant.extend(
            movements(&body)
                .into_iter()
                .filter(|m| skus.contains(&m.sku)),
        );
    }
    let last_count: HashMap<Sku, i64> = relevant
        .iter()
        .filter(|m| matches!(m.change, StockChange::Count(_)))
        .fold(HashMap::new(), |mut acc, m| {
            let e = acc.entry(m.sku.clone()).or_insert(m.at_ms);
            *e = (*e).max(m.at_ms);
            acc
        });
    let last_move: HashMap<Sku, i64> = relevant.iter().fold(HashMap::new(), |mut acc, m| {
        let e = acc.entry(m.sku.clone()).or_insert(m.at_ms);
        *e = (*e).max(m.at_ms);
        acc
    });
    Ok(fold(relevant)
        .into_iter()
        .map(|(sku, quantity)| {
            let last_count_ms = last_count.get(&sku).copied();
            let last_move_ms = last_move.get(&sku).copied();
            (
                sku,
                OnHand {
                    quantity,
                    last_count_ms,
                    last_move_ms,
                },
            )
        })
        .collect())
}

/// One SKU's stock for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StockRow {
    /// The item.
    pub sku: String,
    /// Units on hand.
    pub on_hand: i64,
    /// When the last stock count was, Unix ms.
    pub last_count_ms: Option<i64>,
}

/// On-hand stock, optionally of one SKU, at most `limit` rows ordered by SKU.
pub async fn list(
    pool: &SqlitePool,
    sku: Option<&str>,
    limit: usize,
) -> Result<Vec<StockRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT sku, quantity, last_count_ms FROM on_hand WHERE (?1 IS NULL OR sku = ?1) ORDER BY sku LIMIT ?2",
    )
    .bind(sku.map(str::to_owned))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| StockRow {
            sku: r.get(0),
            on_hand: r.get(1),
            last_count_ms: r.get(2),
        })
        .collect())
}
