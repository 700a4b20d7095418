//! The inventory fold: stock on hand per SKU from events, identical on edge and hub.
//!
//! On hand = the last stock count + receipts + returns + adjustments − sales since.
//! Movements are ordered by (time, counts after other movements of the same millisecond,
//! id), so the result depends only on the set of events, never on arrival order.
//!
//! Which events move stock: sale transactions (−quantity per line), return transactions
//! (+|quantity|), receiving scans (+quantity), stock-count scans (set to quantity) and stock
//! adjustments (+delta). Voids move nothing. Sale and return *scans* move nothing either:
//! the POS transaction of the same basket carries the movement, and counting both would
//! count it twice.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::domain::{ScanPurpose, TransactionKind};
use crate::event::EventBody;
use crate::ids::Sku;
use crate::time::UnixMillis;

/// One change of stock of one SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// The item.
    pub sku: Sku,
    /// When.
    pub at_ms: UnixMillis,
    /// The id of the event it came from, for a total order.
    pub source_id: String,
    /// What it does.
    pub change: StockChange,
}

/// What a movement does to on-hand stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockChange {
    /// Adds (or with a negative value removes) units.
    Delta(i64),
    /// A count: on hand is exactly this.
    Count(i64),
}

/// The movements an event causes.
pub fn movements(body: &EventBody) -> Vec<Movement> {
    match body {
        EventBody::Transaction(tx) => {
            let sign = match tx.kind {
                TransactionKind::Sale => -1,
                TransactionKind::Return => 1,
                TransactionKind::Void => return Vec::new(),
            };
            tx.items
                .iter()
                .map(|item| Movement {
                    sku: item.sku.clone(),
                    at_ms: tx.timestamp.unix_ms(),
                    source_id: String::from(tx.transaction_id.as_str()),
                    change: StockChange::Delta(sign * i64::from(item.quantity).abs()),
                })
                .collect()
        }
        EventBody::Scan(scan) => {
            let change = match scan.purpose {
                ScanPurpose::Receiving => StockChange::Delta(i64::from(scan.quantity)),
                ScanPurpose::StockCount => StockChange::Count(i64::from(scan.quantity)),
                ScanPurpose::Sale | ScanPurpose::Return => return Vec::new(),
            };
            alloc::vec![Movement {
                sku: scan.sku.clone(),
                at_ms: scan.timestamp.unix_ms(),
                source_id: String::from(scan.scan_id.as_str()),
                change,
            }]
        }
        EventBody::Adjustment(adj) => alloc::vec![Movement {
            sku: adj.sku.clone(),
            at_ms: adj.timestamp.unix_ms(),
            source_id: String::from(adj.adjustment_id.as_str()),
            change: StockChange::Delta(i64::from(adj.delta)),
        }],
        EventBody::Alert(_) | EventBody::Telemetry(_) => Vec::new(),
    }
}

fn order_key(m: &Movement) -> (UnixMillis, bool, &str) {
    (
        m.at_ms,
        matches!(m.change, StockChange::Count(_)),
        m.source_id.as_str(),
    )
}

/// On hand per SKU from a set of movements (any order).
pub fn fold(mut movements: Vec<Movement>) -> BTreeMap<Sku, i64> {
    movements.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
    let mut on_hand = BTreeMap::new();
    for m in movements {
        let cell = on_hand.entry(m.sku).or_insert(0i64);
        match m.change {
            StockChange::Delta(d) => *cell = cell.saturating_add(d),
            StockChange::Count(c) => *cell = c,
        }
    }
    on_hand
}

/// Incremental on-hand for one SKU, for a shell that sees movements mostly in time order.
///
/// [`OnHand::apply`] answers `false` when the order of movements could change the result:
/// a delta at or before the last count applied, or a count at or before the latest
/// movement applied. The shell then recomputes that SKU with [`fold`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnHand {
    /// Current on-hand.
    pub quantity: i64,
    /// Time of the last count applied, if any.
    pub last_count_ms: Option<UnixMillis>,
    /// Time of the latest movement applied, if any.
    pub last_move_ms: Option<UnixMillis>,
}

impl OnHand {
    /// Applies one movement; `false` means "refold this SKU".
    #[must_use]
    pub fn apply(&mut self, change: StockChange, at_ms: UnixMillis) -> bool {
        // A delta at a count's instant comes before it; a count decides only over what
        // came before it (and counts at one instant go by source id).
        let out_of_order = match change {
            StockChange::Delta(_) => self.last_count_ms.is_some_and(|c| at_ms <= c),
            StockChange::Count(_) => self.last_move_ms.is_some_and(|m| at_ms <= m),
        };
        if out_of_order {
            return false;
        }
        match change {
            StockChange::Delta(d) => self.quantity = self.quantity.saturating_add(d),
            StockChange::Count(c) => {
                self.quantity = c;
                self.last_count_ms = Some(at_ms);
            }
        }
        self.last_move_ms = Some(self.last_move_ms.map_or(at_ms, |m| m.max(at_ms)));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(sku: &str, at: i64, id: &str, change: StockChange) -> Movement {
        Movement {
            sku: Sku::new(sku).unwrap(),
            at_ms: at,
            source_id: id.into(),
            change,
        }
    }

    #[test]
    fn count_then_movements() {
        use StockChange::*;
        let moves = alloc::vec![
            mv("a", 10, "r1", Delta(5)),
            mv("a", 20, "c1", Count(100)),
            mv("a", 30, "t1", Delta(-3)),
            mv("a", 20, "t0", Delta(-1)), // same ms as the count: before it
            mv("b", 5, "t2", Delta(-2)),
        ];
        let mut reversed = moves.clone();
        reversed.reverse();
        let on_hand = fold(moves);
        assert_eq!(on_hand[&Sku::new("a").unwrap()], 97);
        assert_eq!(on_hand[&Sku::new("b").unwrap()], -2);
        assert_eq!(fold(reversed), on_hand);
    }

    #[test]
    fn incremental_asks_for_refold() {
        let mut cell = OnHand::default();
        assert!(cell.apply(StockChange::Delta(4), 1));
        assert!(cell.apply(StockChange::Count(10), 5));
        assert!(cell.apply(StockChange::Delta(-1), 6));
        assert_eq!(cell.quantity, 9);
        assert!(!cell.apply(StockChange::Delta(-1), 4));
        // A delta at the count's instant came before it; a count before a movement applied
        // does not override that movement.
        assert!(!cell.apply(StockChange::Delta(-1), 5));
        assert!(!cell.apply(StockChange::Count(3), 6));
    }
}
