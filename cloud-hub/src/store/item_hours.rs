//! Item sales by hour, summed from line items when they are read.
//!
//! The hub keeps item rollup rows by day only (see [`crate::ingest::stored`]): an item's
//! hour holds about one line item in typical store data, so item-hour rows cost ingest as
//! much as the line items themselves and compress nothing. Reads of items by hour (hourly
//! item and category series, the hours at the ends of a top-items range) sum the line items
//! instead,
//! with the same figures the protocol's rollup gives them (voids count nothing for items; a
//! sale line counts one transaction, a return line one refund).
//!
//! Both backends run one statement that groups line items by store zone (and store, value)
//! and by 15-minute UTC slot; here each slot goes to the local hour of its store's zone and
//! slots of one hour are summed. A slot lies inside one local hour for every zone whose
//! offsets fall on quarter hours and change at a quarter hour or by whole hours, which every
//! zone of the time zone database has done since 1980 (a test checks it). When
//! the bucket is not kept apart (top items), line items from an hour after the range's start
//! to its end need no slot: the statement sums them as one row per group (slot [`INSIDE`]).
//!
//! Line items are kept for `retention_days`; item rows by day for ever. So hourly item
//! figures reach back as far as the line items (older hours read as no sales; item rows by
//! day cover the older history), and use the store's current zone.

use std::collections::{BTreeMap, HashMap};

use storesync_protocol::ids::StoreId;
use storesync_protocol::rollup::{Granularity, SalesFigures, bucket_start};

use super::{DimKind, RollupQuery, RollupRow, StoreError, time_zone};

/// The width of a slot.
pub(crate) const SLOT_MS: i64 = 900_000;

/// The slot of line items that lie wholly inside the range (when buckets are summed); no
/// line item's own slot, as validation refuses business times before 2000.
pub(crate) const INSIDE: i64 = -1;

const HOUR_MS: i64 = 3_600_000;

/// Slot rows that can make one result row, at most, per zone: 4 slots an hour, or, with the
/// buckets summed, the inside row and up to 5 slots at each end of the range (an end off a
/// quarter hour). The bound counts slot rows read, and slots of hours outside the range are
/// read too, so a read near the bound may be refused with fewer result rows than the limit.
const SLOTS_PER_ROW: u64 = 11;

/// Whether `q` is answered from line items rather than stored rollup rows.
pub(crate) fn from_lines(q: &RollupQuery) -> bool {
    q.dim == DimKind::Item && q.granularity == Granularity::Hour
}

/// What the slot statement reads: line items at `[from_ms, to_ms)`, those at
/// `[inside_from, inside_to)` as one row per group (never, when buckets are kept apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineRange {
    pub from_ms: i64,
    pub to_ms: i64,
    pub inside_from: i64,
    pub inside_to: i64,
}

impl LineRange {
    /// The line items whose local hour can start in `[q.from_ms, q.to_ms)`: an hour starts
    /// at or before every instant in it and less than an hour before. So a line before
    /// `from` is never in, one an hour or more after `from` and before `to` always is, and
    /// one up to an hour after `to` may be.
    pub(crate) fn of(q: &RollupQuery) -> LineRange {
        let (inside_from, inside_to) = if q.by_bucket {
            (0, 0)
        } else {
            (q.from_ms.saturating_add(HOUR_MS), q.to_ms)
        };
        LineRange {
            from_ms: q.from_ms,
            to_ms: q.to_ms.saturating_add(HOUR_MS),
            inside_from,
            inside_to,
        }
    }
}

/// The most slot rows a read of `q` takes, `zones` being the number of time zones among
/// the stores read (slot rows of different zones sum into one result row when stores are
/// not kept apart): enough for `q.limit` result rows. A read that would take more is refused
/// with [`too_many_slots`].
pub(crate) fn slot_limit(q: &RollupQuery, zones: u64) -> Option<u64> {
    let zones = if q.by_store { 1 } else { zones.max(1) };
    q.limit
        .map(|n| n.saturating_mul(SLOTS_PER_ROW).saturating_mul(zones))
}

/// The refusal of a read that reached its [`slot_limit`].
pub(crate) fn too_many_slots(limit: u64) -> StoreError {
    StoreError::Invalid(format!(
        "too many rows: hourly item figures would sum more than {limit} line-item rows; \
         narrow the range, use a coarser bucket or filter by stores or items"
    ))
}

/// The 15-minute UTC slot of a line item `l` (floored), the same text on both backends. The
/// statement reads it as [`INSIDE`] where the line lies in `[inside_from, inside_to)`.
pub(crate) const SLOT_OF_LINE: &str = "(l.at_ms - ((l.at_ms % 900000) + 900000) % 900000) / 900000";

/// The figures of the line items `l` of a group, as the protocol's item rollup counts each
/// line (the statement leaves out voids, kind 2): a sale line (kind 0) adds its units and
/// revenue and one transaction, a return line (kind 1) takes them away and adds one refund
/// and its amount. The same text on both backends.
pub(crate) const LINE_FIGURES: &str = "\
    CAST(sum(CASE WHEN l.kind = 1 THEN -1 ELSE 1 END * abs(CAST(l.quantity AS bigint)) * l.price_e4) AS bigint), \
    CAST(sum(CASE WHEN l.kind = 1 THEN -1 ELSE 1 END * abs(CAST(l.quantity AS bigint))) AS bigint), \
    CAST(sum(CASE WHEN l.kind = 0 THEN 1 ELSE 0 END) AS bigint), \
    CAST(sum(CASE WHEN l.kind = 1 THEN 1 ELSE 0 END) AS bigint), \
    CAST(sum(CASE WHEN l.kind = 1 THEN abs(CAST(l.quantity AS bigint) * l.price_e4) ELSE 0 END) AS bigint), \
    CAST(0 AS bigint)";

/// The store column and the `GROUP BY` list of the slot statement, whose columns are
/// store, zone, value, slot: stores apart, zones apart (the least store), or summed.
pub(crate) fn store_grouping(q: &RollupQuery) -> (&'static str, &'static str) {
    match (q.by_store, q.by_zone) {
        (true, false) => ("l.store_id", "1, 2, 3, 4"),
        (true, true) => ("min(l.store_id)", "2, 3, 4"),
        (false, _) => ("''", "2, 3, 4"),
    }
}

/// One row of the slot statement.
#[derive(Debug, Clone)]
pub(crate) struct SlotRow {
    /// The store, or the least store of the zone with `by_zone`, or `""`.
    pub store_id: String,
    /// The store's time zone.
    pub time_zone: String,
    /// SKU, category or `""`.
    pub value: String,
    /// Start of the slot / [`SLOT_MS`], or [`INSIDE`].
    pub slot: i64,
    /// Sums.
    pub figures: SalesFigures,
}

/// Sums slot rows into the rows `q` asks for (at most `q.limit` of them).
pub(crate) fn sum_slots(
    q: &RollupQuery,
    slots: Vec<SlotRow>,
) -> Result<Vec<RollupRow>, StoreError> {
    let mut zones: HashMap<String, jiff::tz::TimeZone> = HashMap::new();
    // With `by_zone`, the zone keeps rows apart and the least store stands for it.
    let mut zone_store: HashMap<String, String> = HashMap::new();
    if q.by_zone && q.by_store {
        for s in &slots {
            let least = zone_store
                .entry(s.time_zone.clone())
                .or_insert_with(|| s.store_id.clone());
            if s.store_id < *least {
                least.clone_from(&s.store_id);
            }
        }
    }
    let mut sums: BTreeMap<(i64, String, String), SalesFigures> = BTreeMap::new();
    for s in slots {
        let bucket_ms = if s.slot == INSIDE {
            0
        } else {
            let tz = match zones.get(&s.time_zone) {
                Some(tz) => tz,
                None => zones
                    .entry(s.time_zone.clone())
                    .or_insert(time_zone(&s.time_zone)?),
            };
            let start = s.slot.saturating_mul(SLOT_MS);
            let bucket = bucket_start(start, Granularity::Hour, tz);
            if bucket < q.from_ms || bucket >= q.to_ms {
                continue;
            }
            if q.by_bucket { bucket } else { 0 }
        };
        let store = match zone_store.get(&s.time_zone) {
            Some(least) => least.clone(),
            None if q.by_store => s.store_id,
            None => String::new(),
        };
        sums.entry((bucket_ms, store, s.value))
            .or_default()
            .add(&s.figures);
    }
    let mut rows = Vec::with_capacity(sums.len());
    for ((bucket_ms, store, value), figures) in sums {
        rows.push(RollupRow {
            store_id: if q.by_store {
                Some(StoreId::new(store).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            } else {
                None
            },
            value,
            bucket_ms,
            figures,
        });
    }
    if let Some(limit) = q.limit {
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(by_bucket: bool) -> RollupQuery {
        RollupQuery {
            granularity: Granularity::Hour,
            dim: DimKind::Item,
            from_ms: 10 * HOUR_MS,
            to_ms: 20 * HOUR_MS,
            stores: None,
            values: None,
            by_store: false,
            by_zone: false,
            by_value: true,
            by_category: false,
            by_bucket,
            limit: None,
        }
    }

    fn slot(zone: &str, slot: i64, units: i64) -> SlotRow {
        SlotRow {
            store_id: String::new(),
            time_zone: zone.into(),
            value: "sku-1".into(),
            slot,
            figures: SalesFigures {
                units,
                ..SalesFigures::default()
            },
        }
    }

    #[test]
    fn slots_go_to_their_zones_local_hour_and_the_range_is_by_hour_start() {
        // Kabul is UTC+4:30. 09:45 and 10:00 UTC are 14:15 and 14:30 there, in the local hour
        // that starts at 09:30 UTC, before the range; 10:30 UTC starts the next local hour.
        // 20:00 UTC starts an hour at the range's end, excluded.
        let q = query(true);
        let rows = sum_slots(
            &q,
            vec![
                slot("UTC", 10 * 4, 1),
                slot("UTC", 10 * 4 + 3, 2),
                slot("Asia/Kabul", 10 * 4 - 1, 4),
                slot("Asia/Kabul", 10 * 4, 32),
                slot("Asia/Kabul", 10 * 4 + 2, 8),
                slot("UTC", 20 * 4, 16),
            ],
        )
        .unwrap();
        let got: Vec<(i64, i64)> = rows
            .iter()
            .map(|r| (r.bucket_ms, r.figures.units))
            .collect();
        assert_eq!(
            got,
            vec![(10 * HOUR_MS, 3), (10 * HOUR_MS + HOUR_MS / 2, 8)]
        );
    }

    #[test]
    fn summed_buckets_add_the_inside_row_to_the_edge_slots() {
        let q = query(false);
        let rows = sum_slots(
            &q,
            vec![
                slot("UTC", INSIDE, 1),
                slot("UTC", 20 * 4 + 1, 2),
                slot("Asia/Kabul", INSIDE, 4),
                slot("Asia/Kabul", 20 * 4, 8),
            ],
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].bucket_ms, rows[0].figures.units), (0, 13));
    }

    /// What makes a slot lie inside one local hour: since 1980, every zone of the time zone
    /// database has had offsets on quarter hours, and has changed them either at a quarter
    /// hour or by whole hours (which moves no hour's start: Newfoundland changed at 00:01
    /// until 2011).
    #[test]
    fn every_zone_since_1980_starts_its_hours_on_slot_boundaries() {
        let since = jiff::Timestamp::from_second(315_532_800).unwrap();
        let until = jiff::Timestamp::from_second(2_524_608_000).unwrap();
        let db = jiff::tz::db();
        let mut zones = 0;
        for name in db.available() {
            let Ok(tz) = db.get(name.as_str()) else {
                continue;
            };
            zones += 1;
            let mut offset = i64::from(tz.to_offset(since).seconds());
            assert_eq!(offset % 900, 0, "{name}: offset {offset} s in 1980");
            for change in tz.following(since) {
                if change.timestamp() > until {
                    break;
                }
                let at = change.timestamp().as_second();
                let next = i64::from(change.offset().seconds());
                assert_eq!(next % 900, 0, "{name}: offset {next} s");
                assert!(
                    at % 900 == 0 || (next - offset) % 3600 == 0,
                    "{name}: change from {offset} s to {next} s at {}",
                    change.timestamp()
                );
                offset = next;
            }
        }
        assert!(zones > 300, "{zones} zones");
    }

    #[test]
    fn the_slot_expression_is_the_slot_width() {
        assert_eq!(SLOT_OF_LINE.matches(&SLOT_MS.to_string()).count(), 4);
    }

    #[test]
    fn the_read_bound_grows_with_zones_only_when_stores_are_summed() {
        let mut q = query(true);
        assert_eq!(slot_limit(&q, 3), None);
        q.limit = Some(10);
        assert_eq!(slot_limit(&q, 3), Some(10 * SLOTS_PER_ROW * 3));
        q.by_store = true;
        assert_eq!(slot_limit(&q, 3), Some(10 * SLOTS_PER_ROW));
    }
}
