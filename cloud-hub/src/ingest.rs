//! Turning a verified run of events into rows: the part of ingest both backends share.
//!
//! A backend first learns which events are new (their key was not stored) and which of
//! those carry a transaction id the tenant already holds; [`Plan::new`] then decomposes the
//! remaining events into table rows and the rollup deltas they add, computed with the
//! protocol's own rows ([`for_each_rollup_row`], what `rollup_rows` gives the edge) in the
//! store's time zone so that hub and edge figures are equal. Rollup deltas come out sorted by key, so that concurrent writers lock rollup rows
//! in one order and cannot deadlock.

use std::collections::{BTreeMap, HashMap};

use jiff::tz::TimeZone;
use storesync_protocol::domain::{AlertState, ScanPurpose, TransactionKind};
use storesync_protocol::event::{Event, EventBody};
use storesync_protocol::inventory::{StockChange, movements};
use storesync_protocol::rollup::{
    Dimension, DimensionRef, Granularity, SalesFigures, for_each_rollup_row, transaction_figures,
};
use storesync_protocol::time::UnixMillis;
use storesync_protocol::validate::{Context, Limits, check_transaction};

use crate::store::{StoreTick, granularity_code, key_text};

/// Stored number of an event's kind.
pub fn body_kind(body: &EventBody) -> i16 {
    match body {
        EventBody::Transaction(_) => 0,
        EventBody::Adjustment(_) => 1,
        EventBody::Scan(_) => 2,
        EventBody::Alert(_) => 3,
        EventBody::Telemetry(_) => 4,
    }
}

/// Business time of an event.
pub fn body_time(body: &EventBody) -> UnixMillis {
    match body {
        EventBody::Transaction(t) => t.timestamp.unix_ms(),
        EventBody::Adjustment(a) => a.timestamp.unix_ms(),
        EventBody::Scan(s) => s.timestamp.unix_ms(),
        EventBody::Alert(a) => a.raised_at.unix_ms(),
        EventBody::Telemetry(t) => t.at.unix_ms(),
    }
}

/// The store an event's body names, if it names one.
pub fn body_store(body: &EventBody) -> Option<&str> {
    match body {
        EventBody::Transaction(t) => Some(t.store_id.as_str()),
        EventBody::Adjustment(a) => Some(a.store_id.as_str()),
        EventBody::Scan(s) => Some(s.store_id.as_str()),
        EventBody::Alert(a) => Some(a.store_id.as_str()),
        EventBody::Telemetry(_) => None,
    }
}

/// Stored number of a transaction kind.
pub fn txn_kind_code(kind: TransactionKind) -> i16 {
    match kind {
        TransactionKind::Sale => 0,
        TransactionKind::Return => 1,
        TransactionKind::Void => 2,
    }
}

/// Rank of an alert state: states only move forward when replicas merge.
pub fn alert_state_rank(state: AlertState) -> i16 {
    match state {
        AlertState::Open => 0,
        AlertState::Acknowledged => 1,
        AlertState::Resolved => 2,
    }
}

/// The key of a rollup row: (granularity, bucket, store, dimension kind, dimension value).
pub type RollupKeyRow = (i16, i64, String, i16, String);

/// One line item row.
#[derive(Debug, Clone)]
pub struct LineRow {
    /// Sequence of the transaction's event.
    pub seq: i64,
    /// Position in the transaction.
    pub line_no: i16,
    /// Business time.
    pub at_ms: i64,
    /// Transaction id.
    pub transaction_id: String,
    /// Item.
    pub sku: String,
    /// Units as the POS sent them.
    pub quantity: i32,
    /// Unit price, ten-thousandths.
    pub price_e4: i64,
    /// Transaction kind code.
    pub kind: i16,
}

/// One stock movement from a scan or an adjustment.
#[derive(Debug, Clone)]
pub struct MovementRow {
    /// Event class code.
    pub class: i16,
    /// Event sequence.
    pub seq: i64,
    /// Item.
    pub sku: String,
    /// Business time.
    pub at_ms: i64,
    /// Id of the source record.
    pub source_id: String,
    /// A count (sets) rather than a delta.
    pub is_count: bool,
    /// Units.
    pub quantity: i64,
}

/// A record that will not be applied, kept with its reason.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Position in the run.
    pub index: usize,
    /// Why.
    pub reason: String,
}

/// The rows a set of new events adds.
#[derive(Debug, Default)]
pub struct Plan {
    /// Indexes (into the run) of transaction events applied.
    pub transactions: Vec<usize>,
    /// Line items of those.
    pub lines: Vec<LineRow>,
    /// Stock movements from scans and adjustments.
    pub movements: Vec<MovementRow>,
    /// Indexes of alert events.
    pub alerts: Vec<usize>,
    /// Indexes of other non-transaction events (scans, adjustments, alerts, telemetry).
    pub others: Vec<usize>,
    /// Rollup deltas, sorted by key.
    pub rollups: BTreeMap<RollupKeyRow, SalesFigures>,
    /// Per-store sales added, for live streams.
    pub ticks: Vec<StoreTick>,
    /// Events refused by re-validation; kept as dead letters.
    pub rejected: Vec<Rejected>,
}

impl Plan {
    /// Decomposes `events[i]` for every `i` in `apply`. `tz` is the store's time zone and
    /// `now_ms` the hub clock for the future-skew rule of re-validation.
    pub fn new(events: &[Event], apply: &[usize], tz: &TimeZone, now_ms: UnixMillis) -> Plan {
        let limits = Limits::default();
        let mut plan = Plan::default();
        let mut ticks: BTreeMap<String, StoreTick> = BTreeMap::new();
        // Summed under keys borrowed from the events; owned (and sorted) once per row.
        let mut rollups: HashMap<(i16, UnixMillis, &str, i16, &str), SalesFigures> = HashMap::new();
        for &index in apply {
            let Some(event) = events.get(index) else {
                continue;
            };
            let store = &event.key.stream.store;
            if let Some(named) = body_store(&event.body)
                && named != store.as_str()
            {
                plan.rejected.push(Rejected {
                    index,
                    reason: format!("storeId: {named} is not the device's store {store}"),
                });
                continue;
            }
            let seq = event.key.seq.0 as i64;
            match &event.body {
                EventBody::Transaction(tx) => {
                    let ctx = Context {
                        now_ms,
                        limits: &limits,
                        store: Some(store),
                    };
                    if let Err(rejection) = check_transaction(tx, &ctx) {
                        let reason = rejection
                            .errors
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join("; ");
                        plan.rejected.push(Rejected { index, reason });
                        continue;
                    }
                    plan.transactions.push(index);
                    let at_ms = tx.timestamp.unix_ms();
                    for (line_no, item) in tx.items.iter().enumerate() {
                        plan.lines.push(LineRow {
                            seq,
                            line_no: line_no as i16,
                            at_ms,
                            transaction_id: tx.transaction_id.as_str().to_owned(),
                            sku: item.sku.as_str().to_owned(),
                            quantity: item.quantity,
                            price_e4: item.price.e4(),
                            kind: txn_kind_code(tx.kind),
                        });
                    }
                    for_each_rollup_row(tx, tz, |granularity, bucket_ms, dimension, figures| {
                        let (dim, value) = match dimension {
                            DimensionRef::Store => (0, ""),
                            DimensionRef::Item(sku) => (1, sku.as_str()),
                            DimensionRef::Payment(method) => (2, method),
                            DimensionRef::Register(register) => (3, register.as_str()),
                        };
                        if stored_code(granularity, dim) {
                            rollups
                                .entry((
                                    granularity_code(granularity),
                                    bucket_ms,
                                    store.as_str(),
                                    dim,
                                    value,
                                ))
                                .or_default()
                                .add(&figures);
                        }
                    });
                    let figures = transaction_figures(tx);
                    let tick =
                        ticks
                            .entry(store.as_str().to_owned())
                            .or_insert_with(|| StoreTick {
                                store: store.as_str().to_owned(),
                                revenue_e4: 0,
                                transactions: 0,
                                last_ms: at_ms,
                            });
                    tick.revenue_e4 = tick.revenue_e4.saturating_add(figures.revenue_e4);
                    tick.transactions += figures.transactions;
                    tick.last_ms = tick.last_ms.max(at_ms);
                }
                body => {
                    plan.others.push(index);
                    if matches!(body, EventBody::Alert(_)) {
                        plan.alerts.push(index);
                    }
                    let is_stock = match body {
                        EventBody::Scan(scan) => matches!(
                            scan.purpose,
                            ScanPurpose::Receiving | ScanPurpose::StockCount
                        ),
                        EventBody::Adjustment(_) => true,
                        _ => false,
                    };
                    if is_stock {
                        for m in movements(body) {
                            let (is_count, quantity) = match m.change {
                                StockChange::Delta(d) => (false, d),
                                StockChange::Count(c) => (true, c),
                            };
                            plan.movements.push(MovementRow {
                                class: event.key.stream.class as i16,
                                seq,
                                sku: m.sku.as_str().to_owned(),
                                at_ms: m.at_ms,
                                source_id: m.source_id,
                                is_count,
                                quantity,
                            });
                        }
                    }
                }
            }
        }
        plan.ticks = ticks.into_values().collect();
        plan.rollups = rollups
            .into_iter()
            .map(|((granularity, bucket_ms, store, dim, value), figures)| {
                (
                    (
                        granularity,
                        bucket_ms,
                        store.to_owned(),
                        dim,
                        value.to_owned(),
                    ),
                    figures,
                )
            })
            .collect();
        plan
    }
}

/// Whether the hub keeps rollup rows of `dimension` at `granularity`.
///
/// Minute rows are kept by store and by payment method only, registers by hour and day,
/// items by day only. A row per item and minute or hour is about one row per line item in
/// store data (an item's hour holds about one sale), so it would cost ingest as much as the
/// line items themselves and sum nothing: reads of items by hour sum the line items instead
/// (`store::item_hours`), and the API refuses minute buckets for item series with a message
/// saying so.
pub fn stored(granularity: Granularity, dimension: &Dimension) -> bool {
    let dim = match dimension {
        Dimension::Store => 0,
        Dimension::Item(_) => 1,
        Dimension::Payment(_) => 2,
        Dimension::Register(_) => 3,
    };
    stored_code(granularity, dim)
}

/// Whether the hub answers reads of `dimension` at `granularity`: the rows it keeps
/// ([`stored`]), and items by hour, summed from line items when read.
pub fn served(granularity: Granularity, dimension: &Dimension) -> bool {
    stored(granularity, dimension)
        || (granularity == Granularity::Hour && matches!(dimension, Dimension::Item(_)))
}

/// [`stored`] by stored dimension number (0 store, 1 item, 2 payment, 3 register).
fn stored_code(granularity: Granularity, dim: i16) -> bool {
    match granularity {
        Granularity::Minute => dim == 0 || dim == 2,
        Granularity::Hour => dim != 1,
        Granularity::Day | Granularity::Week => true,
    }
}

/// Postcard bytes of an event, as kept in the event tables and dead letters.
pub fn event_bytes(event: &Event) -> Vec<u8> {
    postcard::to_allocvec(event).unwrap_or_default()
}

/// Decodes [`event_bytes`].
pub fn event_from_bytes(bytes: &[u8]) -> Option<Event> {
    postcard::from_bytes(bytes).ok()
}

/// A dead-letter reason for a conflicting event.
pub fn conflict_reason(event: &Event, what: &str) -> String {
    format!("conflict: {} {what}", key_text(&event.key))
}

/// The first sorting of a run's new events (those whose key the hub did not hold).
#[derive(Debug, Default)]
pub struct Screened {
    /// New events to check against the transaction-id registry and apply.
    pub candidates: Vec<usize>,
    /// New events kept as dead letters, with the reason.
    pub dead: Vec<(usize, String)>,
    /// New events that repeat a transaction earlier in the same run with the same content.
    pub duplicates: u64,
    /// New events that repeat a transaction earlier in the same run with other content.
    pub conflicts: Vec<usize>,
    /// Dead-lettered events that still count as inserted (their key is stored).
    pub inserted: u64,
}

/// Screens the new events `is_new` of a run: structural checks, then the same transaction
/// twice in one run (the first one counts).
pub fn screen(
    events: &[Event],
    stream: &storesync_protocol::event::StreamId,
    mut is_new: impl FnMut(&Event) -> bool,
) -> Screened {
    let mut out = Screened::default();
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (index, event) in events.iter().enumerate() {
        if !is_new(event) {
            continue;
        }
        if &event.key.stream != stream {
            out.dead.push((
                index,
                format!("event {} belongs to another stream", key_text(&event.key)),
            ));
            out.inserted += 1;
            continue;
        }
        if !event.content_ok() {
            out.dead.push((
                index,
                format!(
                    "event {}: content does not match its hash",
                    key_text(&event.key)
                ),
            ));
            out.inserted += 1;
            continue;
        }
        if let EventBody::Transaction(t) = &event.body {
            if let Some(&f) = first.get(t.transaction_id.as_str()) {
                if events.get(f).map(|e| e.content_hash) == Some(event.content_hash) {
                    out.duplicates += 1;
                } else {
                    out.conflicts.push(index);
                    out.dead.push((
                        index,
                        conflict_reason(event, "transaction id reused with other content"),
                    ));
                }
                continue;
            }
            first.insert(t.transaction_id.as_str(), index);
        }
        out.candidates.push(index);
    }
    out
}

/// The hub's alert for a conflicting event.
pub fn conflict_alert(
    key: &storesync_protocol::event::EventKey,
    now: UnixMillis,
) -> Option<storesync_protocol::domain::Alert> {
    use storesync_protocol::domain::{Alert, AlertKind, Severity};
    use storesync_protocol::ids::AlertId;
    let id = format!(
        "hub-conflict-{}-{}-{}-{}",
        key.stream.device, key.stream.epoch.0, key.stream.class as i16, key.seq.0
    );
    Some(Alert {
        alert_id: AlertId::new(id.chars().take(64).collect::<String>()).ok()?,
        kind: AlertKind::ConflictingDuplicate,
        severity: Severity::Warning,
        store_id: key.stream.store.clone(),
        subject: key_text(key),
        raised_at: storesync_protocol::time::EventTime::from_unix_ms(now, 0),
        state: AlertState::Open,
        changed_by: None,
        message: "an event arrived again with different content; the stored version was kept"
            .into(),
        facts: vec![("seq".into(), key.seq.0 as i64)],
    })
}
