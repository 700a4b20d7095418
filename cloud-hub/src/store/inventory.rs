//! On hand per store and SKU, without reading every sale ever made.
//!
//! On hand is what [`storesync_protocol::inventory::fold`] makes of all movements: the last
//! stock count (latest time, then greatest source id) sets it, and every later movement adds
//! to it; a movement at the count's own instant comes before it. Sales are most movements
//! by far, so they are not read one by one: a sale is in its store's daily item rollup. For
//! a (store, SKU):
//!
//! - without a count: every stock delta, plus the units returned minus the units sold over
//!   all its daily rollups;
//! - with its last count at `t`: the count, the stock deltas after `t`, the daily rollups
//!   of the days that start after `t`, and the line items after `t` and before the first of
//!   those days (all line items after `t` when there is none).
//!
//! The day boundary is read from the stored rollups, not from the store's time zone, so
//! daylight-saving days and a zone changed since are what ingest bucketed. Only a zone
//! changed on the count's own day (two overlapping day buckets) could split a sale out.
//!
//! Retention keeps stock movements (they are few); it drops line items. A count older than
//! the line-item retention therefore misses the sales between it and the end of its day, and
//! on hand reads that much too high. Two counts of one SKU at one instant with one source id
//! (a scan id reused by two devices) are taken in the order the database returns them, as
//! the fold takes them in arrival order.

use std::collections::BTreeMap;

use storesync_protocol::ids::{Sku, StoreId, TenantId};

use super::{StockWindow, Store, StoreError};

/// On hand per store and SKU of the given stores (all when `None`), of one SKU when given,
/// sorted by store and SKU.
pub async fn on_hand(
    store: &dyn Store,
    tenant: &TenantId,
    stores: Option<&[StoreId]>,
    sku: Option<&Sku>,
) -> Result<Vec<(StoreId, Sku, i64)>, StoreError> {
    let levels = store.stock_levels(tenant, stores, sku).await?;
    let mut on_hand: BTreeMap<(StoreId, Sku), i64> = BTreeMap::new();
    // Per counted (store, SKU): the count's time, and the start of the first day summed
    // after it (none: no sale on a later day).
    let mut counted: BTreeMap<(StoreId, Sku), (i64, Option<i64>)> = BTreeMap::new();
    for level in levels {
        let base = level.count.map_or(0, |(_, q)| q);
        let key = (level.store, level.sku);
        if let Some((at, _)) = level.count {
            counted.insert(key.clone(), (at, None));
        }
        on_hand.insert(key, base.saturating_add(level.delta));
    }
    let after: Vec<(StoreId, Sku, i64)> = counted
        .iter()
        .map(|((st, k), (at, _))| (st.clone(), k.clone(), *at))
        .collect();
    for sold in store.units_sold_by_day(tenant, stores, sku, &after).await? {
        let key = (sold.store, sold.sku);
        if let Some((_, first_day)) = counted.get_mut(&key) {
            *first_day = Some(sold.first_day_ms);
        }
        let q = on_hand.entry(key).or_insert(0);
        *q = q.saturating_sub(sold.units);
    }
    // Between a count and the first day summed after it, the line items themselves.
    let windows: Vec<StockWindow> = counted
        .into_iter()
        .map(|((store, sku), (at, first_day))| StockWindow {
            store,
            sku,
            after_ms: at,
            before_ms: first_day.unwrap_or(i64::MAX),
        })
        .collect();
    let changes = store.sales_change_in(tenant, &windows).await?;
    for (window, change) in windows.into_iter().zip(changes) {
        if let Some(q) = on_hand.get_mut(&(window.store, window.sku)) {
            *q = q.saturating_add(change);
        }
    }
    Ok(on_hand
        .into_iter()
        .map(|((st, sku), q)| (st, sku, q))
        .collect())
}
