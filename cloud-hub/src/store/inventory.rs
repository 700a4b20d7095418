//! On hand per store and SKU, without reading every sale ever made.
//!
//! On hand is what [`storesync_protocol::inventory::fold`] makes of all movements: the last
//! stock count (latest time, then greatest source id) sets it, and every later movement adds
//! to it; a movement at the count's own instant comes before it. Sales are most movements
//! by far, so they are not read one by one: a sale is in its store's daily item rollup. For
//! a (store, SKU):
//!
//! - without a count: every stock movement plus the units returned minus the units sold,
//!   summed over all its daily rollups;
//! - with its last count at `t`: the count, the stock movements after `t`, the line items
//!   after `t` up to the end of `t`'s local day, and the daily rollups of the days after.
//!
//! Daily buckets start at the store's local midnight in its current time zone: a store whose
//! zone changed since its sales were recorded is split at the new zone's midnight.

use std::collections::BTreeMap;

use storesync_protocol::ids::{Sku, StoreId, TenantId};
use storesync_protocol::inventory::StockChange;
use storesync_protocol::rollup::{Granularity, bucket_start};

use super::{StockWindow, Store, StoreError, time_zone};

/// Stock movements (scans and adjustments) one inventory read takes at most.
pub const STOCK_MOVEMENTS_MAX: u32 = 2_000_000;

/// What is known of one store's SKU from its stock movements.
#[derive(Default)]
struct Stock {
    /// The last count: (time, source id, quantity).
    count: Option<(i64, String, i64)>,
    /// Deltas with their times.
    deltas: Vec<(i64, i64)>,
}

/// On hand per store and SKU of the given stores (all when `None`), of one SKU when given,
/// sorted by store and SKU.
pub async fn on_hand(
    store: &dyn Store,
    tenant: &TenantId,
    stores: Option<&[StoreId]>,
    sku: Option<&Sku>,
) -> Result<Vec<(StoreId, Sku, i64)>, StoreError> {
    let mut stock: BTreeMap<(StoreId, Sku), Stock> = BTreeMap::new();
    for (store_id, m) in store
        .stock_movements(tenant, stores, sku, STOCK_MOVEMENTS_MAX)
        .await?
    {
        let entry = stock.entry((store_id, m.sku)).or_default();
        match m.change {
            StockChange::Delta(d) => entry.deltas.push((m.at_ms, d)),
            StockChange::Count(c) => {
                let later = entry
                    .count
                    .as_ref()
                    .is_none_or(|(at, source, _)| (m.at_ms, &m.source_id) > (*at, source));
                if later {
                    entry.count = Some((m.at_ms, m.source_id, c));
                }
            }
        }
    }
    let zones: BTreeMap<StoreId, jiff::tz::TimeZone> = store
        .stores(tenant)
        .await?
        .into_iter()
        .map(|s| Ok((s.store_id, time_zone(&s.time_zone)?)))
        .collect::<Result<_, StoreError>>()?;
    let mut on_hand: BTreeMap<(StoreId, Sku), i64> = BTreeMap::new();
    let mut windows = Vec::new();
    let mut from_day = Vec::new();
    for ((store_id, sku), s) in &stock {
        let after = s.count.as_ref().map(|(at, _, _)| *at);
        let deltas: i64 = s
            .deltas
            .iter()
            .filter(|(at, _)| after.is_none_or(|t| *at > t))
            .fold(0i64, |sum, (_, d)| sum.saturating_add(*d));
        let base = s.count.as_ref().map_or(0, |(_, _, c)| *c);
        on_hand.insert((store_id.clone(), sku.clone()), base.saturating_add(deltas));
        if let Some(at) = after {
            let tz = zones
                .get(store_id)
                .cloned()
                .unwrap_or(jiff::tz::TimeZone::UTC);
            let next_day = next_day_start(at, &tz);
            windows.push(StockWindow {
                store: store_id.clone(),
                sku: sku.clone(),
                after_ms: at,
                before_ms: next_day,
            });
            from_day.push((store_id.clone(), sku.clone(), next_day));
        }
    }
    let changes = store.sales_change_in(tenant, &windows).await?;
    for (window, change) in windows.iter().zip(changes) {
        if let Some(q) = on_hand.get_mut(&(window.store.clone(), window.sku.clone())) {
            *q = q.saturating_add(change);
        }
    }
    for (store_id, sku, units) in store
        .units_sold_by_day(tenant, stores, sku, &from_day)
        .await?
    {
        let q = on_hand.entry((store_id, sku)).or_insert(0);
        *q = q.saturating_sub(units);
    }
    Ok(on_hand
        .into_iter()
        .map(|((st, sku), q)| (st, sku, q))
        .collect())
}

/// The start of the local day after the one holding `at_ms`. A day is 23 to 25 hours long,
/// so 25 hours past the day's start is inside the next day or at its very start.
fn next_day_start(at_ms: i64, tz: &jiff::tz::TimeZone) -> i64 {
    let day = bucket_start(at_ms, Granularity::Day, tz);
    bucket_start(day.saturating_add(25 * 3_600_000), Granularity::Day, tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_day_starts_at_local_midnight_across_daylight_saving_changes() {
        let paris = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
        let ms = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        // 23-hour day (clocks go forward on 2026-03-29), 25-hour day (back on 2026-10-25),
        // an ordinary one, and an instant at local midnight itself.
        assert_eq!(
            next_day_start(ms("2026-03-29T12:00:00Z"), &paris),
            ms("2026-03-29T22:00:00Z")
        );
        assert_eq!(
            next_day_start(ms("2026-10-25T12:00:00Z"), &paris),
            ms("2026-10-25T23:00:00Z")
        );
        assert_eq!(
            next_day_start(ms("2026-06-01T21:59:59Z"), &paris),
            ms("2026-06-01T22:00:00Z")
        );
        assert_eq!(
            next_day_start(ms("2026-06-01T22:00:00Z"), &paris),
            ms("2026-06-02T22:00:00Z")
        );
    }
}
