//! Validation: the only way text becomes a domain value.
//!
//! Every rule below is checked on every input path (HTTP, CSV, bridge frames, and again by
//! the hub for events arriving over sync). A failure names the field by its path
//! (`items[2].price`) and the reason, and all failures of a record are reported at once.
//!
//! # Rules for a transaction
//!
//! | field | rule |
//! | --- | --- |
//! | `transactionId`, `storeId`, `registerId`, `items[i].itemId` | required (`registerId` optional); 1–64 characters from `A-Z a-z 0-9 . _ : -` |
//! | `storeId` | equals the receiving store when the context names one |
//! | `timestamp` | required; RFC 3339 with an offset; not after `now + future_skew_max_ms`; not before 2000-01-01 |
//! | `items` | required; 1 to [`Limits::items_max`] lines |
//! | `items[i].quantity` | required; an integer, not zero, `abs ≤ quantity_abs_max`; negative only when `kind` is `return` |
//! | `items[i].price` | required; a finite number, `≥ 0`, `≤ price_max_e4`, at most 4 decimals |
//! | `totalAmount` | required; finite, at most 4 decimals; within the tolerance of Σ quantity × price |
//! | `paymentMethod` | required; 1–32 printable characters; stored lower-case |
//! | `kind` | optional, `sale` (default), `return` or `void` |
//! | `cashierId`, `customerId` | optional strings of at most [`Limits::text_len_max`] bytes |
//! | `currency` | optional, three upper-case letters |
//! | anything else | kept as is; at most [`Limits::extra_fields_max`] fields and [`Limits::extra_bytes_max`] bytes |
//!
//! **Total tolerance**: `|totalAmount − Σ quantity × price| ≤ max(0.01, 0.005 × lines)`, i.e.
//! half a cent of rounding per line and never less than a cent. For a return the sign of the
//! total may follow either convention (`Σ` or `−Σ`).
//!
//! A `null` optional field is the same as an absent one. JSON nesting deeper than 128 levels
//! is refused by the parser, and a record longer than [`Limits::record_bytes_max`] is refused
//! before parsing.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde_json::{Map, Value};

use crate::domain::{
    AdjustmentSource, Gtin, LineItem, ScanEvent, ScanPurpose, StockAdjustment, Transaction,
    TransactionKind,
};
use crate::ids::{AdjustmentId, RegisterId, ScanId, Sku, StoreId, TransactionId, check_id};
use crate::money::{MONEY_SCALE, Money};
use crate::time::{EventTime, UnixMillis};

/// 2000-01-01T00:00:00Z: nothing a store sells happened before.
pub const TIMESTAMP_MIN_MS: i64 = 946_684_800_000;

/// The limits validation enforces. Every one is named in the error it causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Lines per transaction.
    pub items_max: usize,
    /// Largest absolute quantity of one line.
    pub quantity_abs_max: i32,
    /// Largest unit price, in ten-thousandths.
    pub price_max_e4: i64,
    /// Largest absolute total, in ten-thousandths.
    pub total_abs_max_e4: i64,
    /// How far after `now` a timestamp may be, in milliseconds.
    pub future_skew_max_ms: i64,
    /// Longest free-text field, in bytes.
    pub text_len_max: usize,
    /// Unknown fields kept per record.
    pub extra_fields_max: usize,
    /// Total JSON bytes of the unknown fields of one record.
    pub extra_bytes_max: usize,
    /// Longest raw record, in bytes.
    pub record_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            items_max: 500,
            quantity_abs_max: 10_000,
            price_max_e4: 1_000_000 * MONEY_SCALE,
            total_abs_max_e4: 100_000_000 * MONEY_SCALE,
            future_skew_max_ms: 5 * 60 * 1000,
            text_len_max: 256,
            extra_fields_max: 32,
            extra_bytes_max: 4096,
            record_bytes_max: 256 * 1024,
        }
    }
}

/// What validation needs from its caller: the clock, the limits and the receiving store.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The caller's clock, for the future-skew rule.
    pub now_ms: UnixMillis,
    /// The limits.
    pub limits: &'a Limits,
    /// When set, `storeId` must equal it.
    pub store: Option<&'a StoreId>,
}

/// One failed rule: which field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, e.g. `items[2].price`; `$` is the record itself.
    pub field: String,
    /// Why, in words.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// A record that failed validation, with every failed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// At least one.
    pub errors: Vec<FieldError>,
}

impl Rejection {
    fn one(field: &str, reason: impl Into<String>) -> Rejection {
        Rejection {
            errors: alloc::vec![FieldError {
                field: field.to_owned(),
                reason: reason.into(),
            }],
        }
    }

    /// Whether some error names `field`.
    pub fn names(&self, field: &str) -> bool {
        self.errors.iter().any(|e| e.field == field)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Rejection {}

/// Parses one JSON record, refusing it before parsing when it is too long.
pub fn parse_json(bytes: &[u8], limits: &Limits) -> Result<Value, Rejection> {
    if bytes.len() > limits.record_bytes_max {
        return Err(Rejection::one(
            "$",
            format!(
                "record is {} bytes, more than record_bytes_max = {}",
                bytes.len(),
                limits.record_bytes_max
            ),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| Rejection::one("$", format!("invalid JSON: {e}")))
}

/// Parses and validates one transaction from JSON bytes.
pub fn parse_transaction(bytes: &[u8], ctx: &Context<'_>) -> Result<Transaction, Rejection> {
    transaction_from_json(&parse_json(bytes, ctx.limits)?, ctx)
}

/// Collects errors while fields are read.
struct Checker<'a> {
    ctx: &'a Context<'a>,
    errors: Vec<FieldError>,
}

impl<'a> Checker<'a> {
    fn fail(&mut self, field: &str, reason: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_owned(),
            reason: reason.into(),
        });
    }

    fn present<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'v Value> {
        match obj.get(key) {
            None | Some(Value::Null) => {
                self.fail(path, "is required");
                None
            }
            Some(v) => Some(v),
        }
    }

    fn optional<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn string<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v str> {
        match value {
            Value::String(s) => Some(s),
            _ => {
                self.fail(path, "must be a string");
                None
            }
        }
    }

    fn id<T>(
        &mut self,
        value: Option<&Value>,
        path: &str,
        make: fn(String) -> Result<T, crate::ids::IdError>,
    ) -> Option<T> {
        let s = self.string(value?, path)?;
        match check_id(s) {
            Ok(()) => make(s.to_owned()).ok(),
            Err(e) => {
                self.fail(path, e.to_string());
                None
            }
        }
    }

    fn text(&mut self, value: Option<&Value>, path: &str, len_max: usize) -> Option<String> {
        let s = self.string(value?, path)?;
        if s.len() > len_max {
            self.fail(path, format!("longer than {len_max} bytes"));
            return None;
        }
        if s.chars().any(char::is_control) {
            self.fail(path, "contains control characters");
            return None;
        }
        Some(s.to_owned())
    }

    fn timestamp(&mut self, value: Option<&Value>, path: &str) -> Option<EventTime> {
        let s = self.string(value?, path)?;
        let time = match EventTime::parse_rfc3339(s) {
            Ok(t) => t,
            Err(e) => {
                self.fail(path, e.to_string());
                return None;
            }
        };
        let skew_max = self.ctx.limits.future_skew_max_ms;
        if time.unix_ms() > self.ctx.now_ms.saturating_add(skew_max) {
            self.fail(
                path,
                format!("is in the future by more than future_skew_max_ms = {skew_max}"),
            );
            return None;
        }
        if time.unix_ms() < TIMESTAMP_MIN_MS {
            self.fail(path, "is before 2000-01-01");
            return None;
        }
        Some(time)
    }

    fn integer(&mut self, value: Option<&Value>, path: &str) -> Option<i64> {
        match value? {
            Value::Number(n) => match n.as_i64() {
                Some(i) => Some(i),
                None => {
                    self.fail(path, "must be an integer");
                    None
                }
            },
            _ => {
                self.fail(path, "must be a number");
                None
            }
        }
    }

    fn money(
        &mut self,
        value: Option<&Value>,
        path: &str,
        abs_max_e4: i64,
        limit_name: &str,
    ) -> Option<Money> {
        let f = match value? {
            Value::Number(n) => match n.as_f64() {
                Some(f) => f,
                None => {
                    self.fail(path, "must be a finite number");
                    return None;
                }
            },
            Value::String(s)
                if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity" | "nan" | "inf") =>
            {
                self.fail(path, "must be a finite number");
                return None;
            }
            _ => {
                self.fail(path, "must be a number");
                return None;
            }
        };
        if !f.is_finite() {
            self.fail(path, "must be a finite number");
            return None;
        }
        if f.abs() * MONEY_SCALE as f64 > abs_max_e4 as f64 {
            self.fail(
                path,
                format!("exceeds {limit_name} = {}", Money::from_e4(abs_max_e4)),
            );
            return None;
        }
        match Money::from_f64_exact(f, abs_max_e4) {
            Some(m) => Some(m),
            None => {
                self.fail(path, "has more than 4 decimals");
                None
            }
        }
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, Rejection> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ if !self.errors.is_empty() => Err(Rejection {
                errors: self.errors,
            }),
            _ => Err(Rejection::one("$", "invalid record")),
        }
    }
}

const TRANSACTION_FIELDS: [&str; 11] = [
    "transactionId",
    "storeId",
    "timestamp",
    "items",
    "totalAmount",
    "paymentMethod",
    "kind",
    "registerId",
    "cashierId",
    "customerId",
    "currency",
];

/// Validates one transaction object.
pub fn transaction_from_json(value: &Value, ctx: &Context<'_>) -> Result<Transaction, Rejection> {
    let Value::Object(obj) = value else {
        return Err(Rejection::one("$", "must be a JSON object"));
    };
    let mut c = Checker {
        ctx,
        errors: Vec::new(),
    };
    let limits = ctx.limits;

    let transaction_id = {
        let v = c.present(obj, "transactionId", "transactionId");
        c.id(v, "transactionId", TransactionId::new)
    };
    let store_id = store_field(&mut c, obj);
    let timestamp = {
        let v = c.present(obj, "timestamp", "timestamp");
        c.timestamp(v, "timestamp")
    };
    let kind = match Checker::optional(obj, "kind") {
        None => Some(TransactionKind::Sale),
        Some(v) => match c.string(v, "kind") {
            Some(s) => match TransactionKind::parse(s) {
                Some(k) => Some(k),
                None => {
                    c.fail("kind", "must be one of sale, return, void");
                    None
                }
            },
            None => None,
        },
    };
    let items = match c.present(obj, "items", "items") {
        Some(Value::Array(lines)) => {
            if lines.is_empty() {
                c.fail("items", "must hold at least one line");
                None
            } else if lines.len() > limits.items_max {
                c.fail(
                    "items",
                    format!(
                        "has {} lines, more than items_max = {}",
                        lines.len(),
                        limits.items_max
                    ),
                );
                None
            } else {
                let mut items = Vec::with_capacity(lines.len());
                for (i, line) in lines.iter().enumerate() {
                    if let Some(item) = line_item(&mut c, line, i, kind) {
                        items.push(item);
                    }
                }
                (items.len() == lines.len()).then_some(items)
            }
        }
        Some(_) => {
            c.fail("items", "must be an array");
            None
        }
        None => None,
    };
    let total_amount = {
        let v = c.present(obj, "totalAmount", "totalAmount");
        c.money(
            v,
            "totalAmount",
            limits.total_abs_max_e4,
            "total_abs_max_e4",
        )
    };
    let payment_method = {
        let v = c.present(obj, "paymentMethod", "paymentMethod");
        match v.and_then(|v| c.string(v, "paymentMethod")) {
            Some(s) if s.is_empty() || s.len() > 32 => {
                c.fail("paymentMethod", "must be 1 to 32 characters");
                None
            }
            Some(s) if s.chars().any(char::is_control) => {
                c.fail("paymentMethod", "contains control characters");
                None
            }
            Some(s) => Some(s.to_lowercase()),
            None => None,
        }
    };
    let register_id = match Checker::optional(obj, "registerId") {
        None => Some(None),
        v => c.id(v, "registerId", RegisterId::new).map(Some),
    };
    let cashier_id = match Checker::optional(obj, "cashierId") {
        None => Some(None),
        v => c.text(v, "cashierId", limits.text_len_max).map(Some),
    };
    let customer_id = match Checker::optional(obj, "customerId") {
        None => Some(None),
        v => c.text(v, "customerId", limits.text_len_max).map(Some),
    };
    let currency = match Checker::optional(obj, "currency") {
        None => Some(None),
        Some(v) => match c.string(v, "currency") {
            Some(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) => {
                Some(Some(s.to_owned()))
            }
            Some(_) => {
                c.fail("currency", "must be three upper-case letters (ISO 4217)");
                None
            }
            None => None,
        },
    };
    let extra = extra_fields(&mut c, obj, &TRANSACTION_FIELDS);

    let (
        Some(transaction_id),
        Some(store_id),
        Some(timestamp),
        Some(kind),
        Some(items),
        Some(total_amount),
        Some(payment_method),
        Some(register_id),
        Some(cashier_id),
        Some(customer_id),
        Some(currency),
        Some(extra),
    ) = (
        transaction_id,
        store_id,
        timestamp,
        kind,
        items,
        total_amount,
        payment_method,
        register_id,
        cashier_id,
        customer_id,
        currency,
        extra,
    )
    else {
        return c.finish(None);
    };
    let tx = Transaction {
        transaction_id,
        store_id,
        timestamp,
        items,
        total_amount,
        payment_method,
        kind,
        register_id,
        cashier_id,
        customer_id,
        currency,
        extra,
    };
    if let Err(e) = check_total(&tx) {
        c.errors.push(e);
    }
    c.finish(Some(tx))
}

fn store_field(c: &mut Checker<'_>, obj: &Map<String, Value>) -> Option<StoreId> {
    let v = c.present(obj, "storeId", "storeId");
    let store = c.id(v, "storeId", StoreId::new)?;
    if let Some(expected) = c.ctx.store
        && &store != expected
    {
        c.fail(
            "storeId",
            format!("is {store}, but this agent serves store {expected}"),
        );
        return None;
    }
    Some(store)
}

fn line_item(
    c: &mut Checker<'_>,
    line: &Value,
    i: usize,
    kind: Option<TransactionKind>,
) -> Option<LineItem> {
    let base = format!("items[{i}]");
    let Value::Object(obj) = line else {
        c.fail(&base, "must be an object");
        return None;
    };
    let sku = {
        let path = format!("{base}.itemId");
        let v = c.present(obj, "itemId", &path);
        c.id(v, &path, Sku::new)
    };
    let quantity = {
        let path = format!("{base}.quantity");
        let v = c.present(obj, "quantity", &path);
        let q = c.integer(v, &path);
        let max = i64::from(c.ctx.limits.quantity_abs_max);
        match q {
            Some(0) => {
                c.fail(&path, "must not be zero");
                None
            }
            Some(q) if q.abs() > max => {
                c.fail(&path, format!("exceeds quantity_abs_max = {max}"));
                None
            }
            Some(q) if q < 0 && kind != Some(TransactionKind::Return) => {
                c.fail(&path, "is negative, which only a return may be");
                None
            }
            Some(q) => i32::try_from(q).ok(),
            None => None,
        }
    };
    let price = {
        let path = format!("{base}.price");
        let v = c.present(obj, "price", &path);
        match c.money(v, &path, c.ctx.limits.price_max_e4, "price_max_e4") {
            Some(p) if p < Money::ZERO => {
                c.fail(&path, "must not be negative");
                None
            }
            p => p,
        }
    };
    Some(LineItem {
        sku: sku?,
        quantity: quantity?,
        price: price?,
    })
}

fn extra_fields(
    c: &mut Checker<'_>,
    obj: &Map<String, Value>,
    known: &[&str],
) -> Option<Vec<(String, String)>> {
    let mut extra = Vec::new();
    let mut bytes = 0usize;
    for (name, value) in obj {
        if known.contains(&name.as_str()) {
            continue;
        }
        let text = value.to_string();
        bytes = bytes.saturating_add(name.len() + text.len());
        extra.push((name.clone(), text));
    }
    if extra.len() > c.ctx.limits.extra_fields_max {
        c.fail(
            "$",
            format!(
                "has {} unknown fields, more than extra_fields_max = {}",
                extra.len(),
                c.ctx.limits.extra_fields_max
            ),
        );
        return None;
    }
    if bytes > c.ctx.limits.extra_bytes_max {
        c.fail(
            "$",
            format!(
                "unknown fields take {bytes} bytes, more than extra_bytes_max = {}",
                c.ctx.limits.extra_bytes_max
            ),
        );
        return None;
    }
    extra.sort();
    Some(extra)
}

/// The tolerance between `totalAmount` and the lines, in ten-thousandths.
pub fn total_tolerance_e4(lines: usize) -> i64 {
    let per_line = 50 * i64::try_from(lines).unwrap_or(i64::MAX / 100);
    per_line.max(100)
}

fn check_total(tx: &Transaction) -> Result<(), FieldError> {
    let sum = tx.items_amount();
    let tolerance = total_tolerance_e4(tx.items.len());
    let off = (tx.total_amount - sum).e4().abs();
    let off_negated = (tx.total_amount + sum).e4().abs();
    let ok = off <= tolerance || (tx.kind == TransactionKind::Return && off_negated <= tolerance);
    if ok {
        Ok(())
    } else {
        Err(FieldError {
            field: "totalAmount".into(),
            reason: format!(
                "is {} but the items sum to {} (tolerance {})",
                tx.total_amount,
                sum,
                Money::from_e4(tolerance)
            ),
        })
    }
}

/// Re-checks a transaction that arrived already typed (over sync): the rules that types do
/// not carry. The hub runs it on every event it ingests.
pub fn check_transaction(tx: &Transaction, ctx: &Context<'_>) -> Result<(), Rejection> {
    let json = tx.to_json();
    transaction_from_json(&json, ctx).map(|_| ())
}

const SCAN_FIELDS: [&str; 8] = [
    "scanId",
    "storeId",
    "gtin",
    "sku",
    "purpose",
    "quantity",
    "timestamp",
    "registerId",
];

/// Validates one scanner event object.
///
/// `scanId`, `storeId`, `gtin` (valid check digit), `purpose` (`sale`, `return`,
/// `receiving`, `stockCount`) and `timestamp` are required; `quantity` defaults to 1 and
/// must be a positive integer within `quantity_abs_max`, except for a stock count, which
/// requires it and allows zero; `sku` defaults to the GTIN.
pub fn scan_from_json(value: &Value, ctx: &Context<'_>) -> Result<ScanEvent, Rejection> {
    let Value::Object(obj) = value else {
        return Err(Rejection::one("$", "must be a JSON object"));
    };
    let mut c = Checker {
        ctx,
        errors: Vec::new(),
    };
    let scan_id = {
        let v = c.present(obj, "scanId", "scanId");
        c.id(v, "scanId", ScanId::new)
    };
    let store_id = store_field(&mut c, obj);
    let gtin = {
        let v = c.present(obj, "gtin", "gtin");
        match v.and_then(|v| c.string(v, "gtin")) {
            Some(s) => match Gtin::new(s) {
                Ok(g) => Some(g),
                Err(e) => {
                    c.fail("gtin", e.to_string());
                    None
                }
            },
            None => None,
        }
    };
    let purpose = {
        let v = c.present(obj, "purpose", "purpose");
        match v.and_then(|v| c.string(v, "purpose")) {
            Some(s) => match ScanPurpose::parse(s) {
                Some(p) => Some(p),
                None => {
                    c.fail(
                        "purpose",
                        "must be one of sale, return, receiving, stockCount",
                    );
                    None
                }
            },
            None => None,
        }
    };
    let quantity = match (Checker::optional(obj, "quantity"), purpose) {
        (None, Some(ScanPurpose::StockCount)) => {
            c.fail("quantity", "is required for a stock count");
            None
        }
        (None, _) => Some(1),
        (v, purpose) => {
            let max = i64::from(ctx.limits.quantity_abs_max);
            match c.integer(v, "quantity") {
                Some(q) if q < 0 || (q == 0 && purpose != Some(ScanPurpose::StockCount)) => {
                    c.fail("quantity", "must be positive (zero only for a stock count)");
                    None
                }
                Some(q) if q > max => {
                    c.fail("quantity", format!("exceeds quantity_abs_max = {max}"));
                    None
                }
                Some(q) => i32::try_from(q).ok(),
                None => None,
            }
        }
    };
    let timestamp = {
        let v = c.present(obj, "timestamp", "timestamp");
        c.timestamp(v, "timestamp")
    };
    let sku = match Checker::optional(obj, "sku") {
        None => gtin.as_ref().and_then(|g| Sku::new(g.as_str()).ok()),
        v => c.id(v, "sku", Sku::new),
    };
    let register_id = match Checker::optional(obj, "registerId") {
        None => Some(None),
        v => c.id(v, "registerId", RegisterId::new).map(Some),
    };
    // Scanners send no free-form fields worth keeping; unknown ones are refused so a typo
    // in a field name is noticed instead of silently defaulted.
    for name in obj.keys() {
        if !SCAN_FIELDS.contains(&name.as_str()) {
            c.fail(name, "is not a field of a scan event");
        }
    }
    let built = (|| {
        Some(ScanEvent {
            scan_id: scan_id?,
            store_id: store_id?,
            gtin: gtin?,
            sku: sku?,
            purpose: purpose?,
            quantity: quantity?,
            timestamp: timestamp?,
            register_id: register_id?,
        })
    })();
    c.finish(built)
}

/// Validates one stock adjustment object: `adjustmentId`, `storeId`, `sku`, `delta` (a
/// non-zero integer within `quantity_abs_max`), `reason` (1 to `text_len_max` bytes),
/// `timestamp`, and optional `source` (`hq`, `transfer`, `store`; default `store`).
pub fn adjustment_from_json(
    value: &Value,
    ctx: &Context<'_>,
) -> Result<StockAdjustment, Rejection> {
    let Value::Object(obj) = value else {
        return Err(Rejection::one("$", "must be a JSON object"));
    };
    let mut c = Checker {
        ctx,
        errors: Vec::new(),
    };
    let adjustment_id = {
        let v = c.present(obj, "adjustmentId", "adjustmentId");
        c.id(v, "adjustmentId", AdjustmentId::new)
    };
    let store_id = store_field(&mut c, obj);
    let sku = {
        let v = c.present(obj, "sku", "sku");
        c.id(v, "sku", Sku::new)
    };
    let delta = {
        let v = c.present(obj, "delta", "delta");
        let max = i64::from(ctx.limits.quantity_abs_max);
        match c.integer(v, "delta") {
            Some(0) => {
                c.fail("delta", "must not be zero");
                None
            }
            Some(d) if d.abs() > max => {
                c.fail("delta", format!("exceeds quantity_abs_max = {max}"));
                None
            }
            Some(d) => i32::try_from(d).ok(),
            None => None,
        }
    };
    let reason = {
        let v = c.present(obj, "reason", "reason");
        match c.text(v, "reason", ctx.limits.text_len_max) {
            Some(r) if r.is_empty() => {
                c.fail("reason", "must not be empty");
                None
            }
            r => r,
        }
    };
    let source = match Checker::optional(obj, "source") {
        None => Some(AdjustmentSource::Store),
        Some(v) => match c.string(v, "source") {
            Some("hq") => Some(AdjustmentSource::Hq),
            Some("transfer") => Some(AdjustmentSource::Transfer),
            Some("store") => Some(AdjustmentSource::Store),
            Some(_) => {
                c.fail("source", "must be one of hq, transfer, store");
                None
            }
            None => None,
        },
    };
    let timestamp = {
        let v = c.present(obj, "timestamp", "timestamp");
        c.timestamp(v, "timestamp")
    };
    let built = (|| {
        Some(StockAdjustment {
            adjustment_id: adjustment_id?,
            store_id: store_id?,
            sku: sku?,
            delta: delta?,
            reason: reason?,
            source: source?,
            timestamp: timestamp?,
        })
    })();
    c.finish(built)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_795_336_200_000; // 2026-11-22T09:30:00+01:00

    fn valid() -> Value {
        json!({
            "transactionId": "t-1",
            "storeId": "s1",
            "timestamp": "2026-11-22T09:00:00+01:00",
            "items": [
                {"itemId": "sku-1", "quantity": 2, "price": 1.25},
                {"itemId": "sku-2", "quantity": 1, "price": 3.1}
            ],
            "totalAmount": 5.6,
            "paymentMethod": "Card",
            "loyaltyTier": "gold"
        })
    }

    /// Validates `value` and expects success, or a rejection naming `field`.
    fn check(value: Value, field: Option<&str>) {
        let limits = Limits::default();
        let store = StoreId::new("s1").unwrap();
        let ctx = Context {
            now_ms: NOW,
            limits: &limits,
            store: Some(&store),
        };
        match (transaction_from_json(&value, &ctx), field) {
            (Ok(_), None) => {}
            (Err(e), Some(field)) => assert!(e.names(field), "expected {field} in {e}"),
            (got, expected) => panic!("{value}: got {got:?}, expected error on {expected:?}"),
        }
    }

    fn with(path: &[&str], v: Value) -> Value {
        let mut value = valid();
        let mut cur = &mut value;
        for (i, key) in path.iter().enumerate() {
            if i + 1 == path.len() {
                if v.is_null() {
                    cur.as_object_mut().unwrap().remove(*key);
                } else {
                    cur[*key] = v.clone();
                }
                break;
            }
            cur = match key.parse::<usize>() {
                Ok(n) => &mut cur[n],
                Err(_) => &mut cur[*key],
            };
        }
        value
    }

    #[test]
    fn transaction_rules() {
        check(valid(), None);
        check(with(&["transactionId"], Value::Null), Some("transactionId"));
        check(
            with(&["transactionId"], json!("has space")),
            Some("transactionId"),
        );
        check(with(&["storeId"], json!("s2")), Some("storeId"));
        check(
            with(&["timestamp"], json!("2026-11-22 nine")),
            Some("timestamp"),
        );
        check(
            with(&["timestamp"], json!("2026-11-22T10:00:00+01:00")),
            Some("timestamp"),
        );
        check(
            with(&["timestamp"], json!("2026-11-22T09:34:00+01:00")),
            None,
        );
        check(with(&["items"], json!([])), Some("items"));
        check(
            with(&["items", "0", "quantity"], json!(0)),
            Some("items[0].quantity"),
        );
        check(
            with(&["items", "0", "quantity"], json!(-2)),
            Some("items[0].quantity"),
        );
        check(
            with(&["items", "0", "quantity"], json!(2.5)),
            Some("items[0].quantity"),
        );
        check(
            with(&["items", "0", "quantity"], json!(1_000_000)),
            Some("items[0].quantity"),
        );
        check(
            with(&["items", "1", "price"], json!(-3.1)),
            Some("items[1].price"),
        );
        check(
            with(&["items", "1", "price"], json!(3.10001)),
            Some("items[1].price"),
        );
        check(
            with(&["items", "1", "price"], json!("NaN")),
            Some("items[1].price"),
        );
        check(
            with(&["items", "1", "itemId"], Value::Null),
            Some("items[1].itemId"),
        );
        check(with(&["totalAmount"], json!(5.62)), Some("totalAmount"));
        check(with(&["totalAmount"], json!(5.61)), None);
        check(with(&["paymentMethod"], json!("")), Some("paymentMethod"));
        check(with(&["kind"], json!("gift")), Some("kind"));
        check(with(&["currency"], json!("eur")), Some("currency"));
        check(with(&["currency"], json!("EUR")), None);
        check(json!([1, 2]), Some("$"));
    }

    #[test]
    fn returns_may_be_negative() {
        let mut v = valid();
        v["kind"] = json!("return");
        v["items"][0]["quantity"] = json!(-2);
        v["items"][1]["quantity"] = json!(-1);
        v["totalAmount"] = json!(-5.6);
        check(v.clone(), None);
        v["totalAmount"] = json!(5.6);
        check(v, None);
    }

    #[test]
    fn unknown_fields_round_trip() {
        let limits = Limits::default();
        let ctx = Context {
            now_ms: NOW,
            limits: &limits,
            store: None,
        };
        let tx = transaction_from_json(&valid(), &ctx).unwrap();
        assert_eq!(
            tx.extra,
            alloc::vec![("loyaltyTier".into(), "\"gold\"".into())]
        );
        assert_eq!(tx.payment_method, "card");
        let back = tx.to_json();
        assert_eq!(back["loyaltyTier"], json!("gold"));
        assert_eq!(back["totalAmount"], json!(5.6));
        assert_eq!(transaction_from_json(&back, &ctx).unwrap(), tx);
    }

    #[test]
    fn hostile_json() {
        let limits = Limits::default();
        let ctx = Context {
            now_ms: NOW,
            limits: &limits,
            store: None,
        };
        let deep = "[".repeat(10_000);
        for bytes in [
            &b"{"[..],
            b"{\"totalAmount\": 1e400}",
            b"\xff\xfe",
            deep.as_bytes(),
            b"NaN",
        ] {
            let err = parse_transaction(bytes, &ctx).unwrap_err();
            assert!(err.names("$"), "{err}");
        }
        let big = alloc::vec![b' '; limits.record_bytes_max + 1];
        assert!(
            parse_transaction(&big, &ctx)
                .unwrap_err()
                .to_string()
                .contains("record_bytes_max")
        );
    }

    #[test]
    fn scans() {
        let limits = Limits::default();
        let ctx = Context {
            now_ms: NOW,
            limits: &limits,
            store: None,
        };
        let ok = json!({"scanId": "sc1", "storeId": "s1", "gtin": "4006381333931", "purpose": "receiving",
            "quantity": 12, "timestamp": "2026-11-22T08:00:00Z"});
        let scan = scan_from_json(&ok, &ctx).unwrap();
        assert_eq!(scan.sku.as_str(), "4006381333931");
        let mut bad = ok.clone();
        bad["gtin"] = json!("4006381333932");
        assert!(scan_from_json(&bad, &ctx).unwrap_err().names("gtin"));
        let mut bad = ok.clone();
        bad["purpose"] = json!("stockCount");
        bad.as_object_mut().unwrap().remove("quantity");
        assert!(scan_from_json(&bad, &ctx).unwrap_err().names("quantity"));
        let mut bad = ok;
        bad["qty"] = json!(1);
        assert!(scan_from_json(&bad, &ctx).unwrap_err().names("qty"));
    }
}
