//! Rollup bucketing and the figures a transaction contributes, identical on edge and hub.
//!
//! Buckets are in the store's time zone: a minute or hour bucket starts at the local wall
//! clock's minute or hour *in the offset the instant has* (so the two 01:00 hours of a DST
//! fall-back are two buckets), a day bucket at local midnight (or the first instant of the
//! day where midnight does not exist), a week bucket at Monday's day start (ISO weeks).
//!
//! Revenue is what was charged (`totalAmount`): positive for sales, negative for returns,
//! zero for voids. Per-item figures use `quantity × price` of each line.

use alloc::string::String;
use alloc::vec::Vec;

use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::domain::{Transaction, TransactionKind};
use crate::ids::{RegisterId, Sku};
use crate::time::UnixMillis;

/// Width of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Granularity {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One local day.
    Day,
    /// One ISO week, from Monday.
    Week,
}

impl Granularity {
    /// The granularities kept as rollup tables; weeks are summed from days.
    pub const STORED: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

    /// The lower-case name used in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Week => "week",
        }
    }

    /// Parses the API name.
    pub fn parse(s: &str) -> Option<Granularity> {
        match s {
            "minute" => Some(Granularity::Minute),
            "hour" => Some(Granularity::Hour),
            "day" => Some(Granularity::Day),
            "week" => Some(Granularity::Week),
            _ => None,
        }
    }
}

/// The start (Unix milliseconds) of the bucket of `granularity` holding `at_ms` in `tz`.
pub fn bucket_start(at_ms: UnixMillis, granularity: Granularity, tz: &TimeZone) -> UnixMillis {
    let Ok(ts) = jiff::Timestamp::from_millisecond(at_ms) else {
        return at_ms;
    };
    let offset_ms = i64::from(tz.to_offset(ts).seconds()) * 1000;
    let floor_local = |width_ms: i64| {
        let local = at_ms.saturating_add(offset_ms);
        local - local.rem_euclid(width_ms) - offset_ms
    };
    match granularity {
        Granularity::Minute => floor_local(60_000),
        Granularity::Hour => floor_local(3_600_000),
        Granularity::Day => day_start(ts, tz, 0).unwrap_or_else(|| floor_local(86_400_000)),
        Granularity::Week => {
            let zoned = ts.to_zoned(tz.clone());
            let back = i64::from(zoned.date().weekday().to_monday_zero_offset());
            day_start(ts, tz, back).unwrap_or_else(|| floor_local(86_400_000))
        }
    }
}

fn day_start(ts: jiff::Timestamp, tz: &TimeZone, days_back: i64) -> Option<UnixMillis> {
    let zoned = ts.to_zoned(tz.clone());
    let date = zoned
        .date()
        .checked_sub(jiff::Span::new().days(days_back))
        .ok()?;
    let start = date.to_zoned(tz.clone()).ok()?.start_of_day().ok()?;
    Some(start.timestamp().as_millisecond())
}

/// Sales figures of a bucket; all sums, so buckets merge by addition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SalesFigures {
    /// Revenue in ten-thousandths.
    pub revenue_e4: i64,
    /// Units sold minus units returned.
    pub units: i64,
    /// Sale transactions.
    pub transactions: i64,
    /// Return transactions.
    pub refunds: i64,
    /// Amount refunded, positive, in ten-thousandths.
    pub refund_amount_e4: i64,
    /// Voided transactions.
    pub voids: i64,
}

impl SalesFigures {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &SalesFigures) {
        self.revenue_e4 = self.revenue_e4.saturating_add(other.revenue_e4);
        self.units = self.units.saturating_add(other.units);
        self.transactions = self.transactions.saturating_add(other.transactions);
        self.refunds = self.refunds.saturating_add(other.refunds);
        self.refund_amount_e4 = self.refund_amount_e4.saturating_add(other.refund_amount_e4);
        self.voids = self.voids.saturating_add(other.voids);
    }

    /// Units per sale transaction, if there was one.
    pub fn basket_units(&self) -> Option<f64> {
        (self.transactions > 0).then(|| self.units as f64 / self.transactions as f64)
    }
}

/// What a rollup row is grouped by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Dimension {
    /// The whole store.
    Store,
    /// One item.
    Item(Sku),
    /// One payment method.
    Payment(String),
    /// One register (transactions without one are under `Store` only).
    Register(RegisterId),
}

/// The key of a rollup row of one store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RollupKey {
    /// Width.
    pub granularity: Granularity,
    /// Bucket start, Unix milliseconds.
    pub bucket_ms: UnixMillis,
    /// Grouping.
    pub dimension: Dimension,
}

/// The figures a transaction adds to the store, payment and register dimensions.
pub fn transaction_figures(tx: &Transaction) -> SalesFigures {
    match tx.kind {
        TransactionKind::Sale => SalesFigures {
            revenue_e4: tx.total_amount.e4(),
            units: tx.units(),
            transactions: 1,
            ..SalesFigures::default()
        },
        TransactionKind::Return => {
            let amount = tx.total_amount.abs().e4();
            SalesFigures {
                revenue_e4: -amount,
                units: -tx.units().abs(),
                refunds: 1,
                refund_amount_e4: amount,
                ..SalesFigures::default()
            }
        }
        TransactionKind::Void => SalesFigures {
            voids: 1,
            ..SalesFigures::default()
        },
    }
}

/// A [`Dimension`] borrowed from the transaction it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DimensionRef<'a> {
    /// The whole store.
    Store,
    /// One item.
    Item(&'a Sku),
    /// One payment method.
    Payment(&'a str),
    /// One register.
    Register(&'a RegisterId),
}

impl DimensionRef<'_> {
    /// The owned dimension.
    pub fn to_owned(self) -> Dimension {
        match self {
            DimensionRef::Store => Dimension::Store,
            DimensionRef::Item(sku) => Dimension::Item(sku.clone()),
            DimensionRef::Payment(method) => Dimension::Payment(String::from(method)),
            DimensionRef::Register(register) => Dimension::Register(register.clone()),
        }
    }
}

/// Calls `row(granularity, bucket_ms, dimension, figures)` for every rollup row of `tx`
/// at the stored granularities: the rows of [`rollup_rows`], in the same order, without
/// allocating (a hub plans them for runs of thousands of transactions).
pub fn for_each_rollup_row<'a>(
    tx: &'a Transaction,
    tz: &TimeZone,
    mut row: impl FnMut(Granularity, UnixMillis, DimensionRef<'a>, SalesFigures),
) {
    let figures = transaction_figures(tx);
    let at = tx.timestamp.unix_ms();
    for granularity in Granularity::STORED {
        let bucket_ms = bucket_start(at, granularity, tz);
        row(granularity, bucket_ms, DimensionRef::Store, figures);
        row(
            granularity,
            bucket_ms,
            DimensionRef::Payment(tx.payment_method.as_str()),
            figures,
        );
        if let Some(register) = &tx.register_id {
            row(
                granularity,
                bucket_ms,
                DimensionRef::Register(register),
                figures,
            );
        }
        if tx.kind != TransactionKind::Void {
            let sign = if tx.kind == TransactionKind::Return {
                -1
            } else {
                1
            };
            for item in &tx.items {
                let units = i64::from(item.quantity).abs() * sign;
                let item_figures = SalesFigures {
                    revenue_e4: item.price.e4().saturating_mul(units),
                    units,
                    transactions: i64::from(tx.kind == TransactionKind::Sale),
                    refunds: i64::from(tx.kind == TransactionKind::Return),
                    refund_amount_e4: if sign < 0 {
                        item.amount().abs().e4()
                    } else {
                        0
                    },
                    voids: 0,
                };
                row(
                    granularity,
                    bucket_ms,
                    DimensionRef::Item(&item.sku),
                    item_figures,
                );
            }
        }
    }
}

/// Every rollup row (for [`Granularity::STORED`]) that `tx` contributes to, with its
/// contribution. The edge adds these in the ingest transaction; the hub in its own.
pub fn rollup_rows(tx: &Transaction, tz: &TimeZone) -> Vec<(RollupKey, SalesFigures)> {
    let mut rows = Vec::new();
    for_each_rollup_row(tx, tz, |granularity, bucket_ms, dimension, figures| {
        rows.push((
            RollupKey {
                granularity,
                bucket_ms,
                dimension: dimension.to_owned(),
            },
            figures,
        ));
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(tz: &str, at: &str, granularity: Granularity, expected: &str) {
        let tz = TimeZone::get(tz).unwrap();
        let at: jiff::Timestamp = at.parse().unwrap();
        let expected: jiff::Timestamp = expected.parse().unwrap();
        let got = bucket_start(at.as_millisecond(), granularity, &tz);
        assert_eq!(
            got,
            expected.as_millisecond(),
            "{at} {granularity:?}: got {:?}",
            jiff::Timestamp::from_millisecond(got)
        );
    }

    #[test]
    fn buckets() {
        use Granularity::*;
        check(
            "Europe/Paris",
            "2026-11-22T09:30:45+01:00",
            Minute,
            "2026-11-22T09:30:00+01:00",
        );
        check(
            "Europe/Paris",
            "2026-11-22T09:30:45+01:00",
            Hour,
            "2026-11-22T09:00:00+01:00",
        );
        check(
            "Europe/Paris",
            "2026-11-22T00:30:00+01:00",
            Day,
            "2026-11-22T00:00:00+01:00",
        );
        // 2026-11-22 is a Sunday: its week started Monday 16th.
        check(
            "Europe/Paris",
            "2026-11-22T23:59:00+01:00",
            Week,
            "2026-11-16T00:00:00+01:00",
        );
        check(
            "Asia/Kolkata",
            "2026-11-22T09:10:00+05:30",
            Hour,
            "2026-11-22T09:00:00+05:30",
        );
        check(
            "Asia/Kolkata",
            "2026-11-22T03:10:00Z",
            Day,
            "2026-11-22T00:00:00+05:30",
        );
        // DST fall-back in New York: the two 01:xx hours are separate buckets.
        check(
            "America/New_York",
            "2026-11-01T01:30:00-04:00",
            Hour,
            "2026-11-01T01:00:00-04:00",
        );
        check(
            "America/New_York",
            "2026-11-01T01:30:00-05:00",
            Hour,
            "2026-11-01T01:00:00-05:00",
        );
        check(
            "America/New_York",
            "2026-11-01T12:00:00-05:00",
            Day,
            "2026-11-01T00:00:00-04:00",
        );
        // Midnight does not exist on this day in Santiago (DST starts at 00:00).
        check(
            "America/Santiago",
            "2026-09-06T12:00:00-03:00",
            Day,
            "2026-09-06T01:00:00-03:00",
        );
        check("UTC", "1999-12-31T23:59:59Z", Week, "1999-12-27T00:00:00Z");
    }
}
