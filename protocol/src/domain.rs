//! Domain types: what a store records.
//!
//! These are the validated forms. Text enters through [`crate::validate`], which is the only
//! place that turns JSON into these types; JSON leaves through the `to_json` methods, which
//! produce the camelCase shape of design.md, unknown fields included.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::ids::{AdjustmentId, AlertId, RegisterId, ScanId, Sku, StoreId, TransactionId};
use crate::money::Money;
use crate::time::EventTime;

/// What a POS transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TransactionKind {
    /// A sale; quantities are positive.
    Sale,
    /// A return; quantities may be negative (the POS's sign convention) or positive, the
    /// stock effect is always goods coming back.
    Return,
    /// A voided (cancelled) transaction: recorded, counted as a void, no revenue or stock.
    Void,
}

impl TransactionKind {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionKind::Sale => "sale",
            TransactionKind::Return => "return",
            TransactionKind::Void => "void",
        }
    }

    /// Parses the JSON spelling.
    pub fn parse(s: &str) -> Option<TransactionKind> {
        match s {
            "sale" => Some(TransactionKind::Sale),
            "return" => Some(TransactionKind::Return),
            "void" => Some(TransactionKind::Void),
            _ => None,
        }
    }
}

/// One line of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LineItem {
    /// The item (`itemId`).
    pub sku: Sku,
    /// Units; never zero, negative only in returns.
    pub quantity: i32,
    /// Unit price, non-negative.
    pub price: Money,
}

impl LineItem {
    /// `quantity × price`.
    pub fn amount(&self) -> Money {
        self.price.times(i64::from(self.quantity))
    }
}

/// A POS transaction, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transaction {
    /// The POS's id, unique per tenant.
    pub transaction_id: TransactionId,
    /// The store it happened in.
    pub store_id: StoreId,
    /// When it happened.
    pub timestamp: EventTime,
    /// Lines, at least one.
    pub items: Vec<LineItem>,
    /// The total the POS charged (negative for refunds).
    pub total_amount: Money,
    /// How it was paid (`card`, `cash`, ...); free text, normalized to lower case.
    pub payment_method: String,
    /// Sale, return or void.
    pub kind: TransactionKind,
    /// The register, when the POS says.
    pub register_id: Option<RegisterId>,
    /// The cashier, when the POS says.
    pub cashier_id: Option<String>,
    /// The customer, when the POS says.
    pub customer_id: Option<String>,
    /// ISO 4217 code, when the POS says.
    pub currency: Option<String>,
    /// Fields this version does not know, as (name, canonical JSON text), sorted by name.
    /// They are kept and handed back unchanged.
    pub extra: Vec<(String, String)>,
}

impl Transaction {
    /// Units sold (returns count negative).
    pub fn units(&self) -> i64 {
        self.items.iter().map(|i| i64::from(i.quantity)).sum()
    }

    /// Sum of `quantity × price` over the lines.
    pub fn items_amount(&self) -> Money {
        self.items
            .iter()
            .fold(Money::ZERO, |acc, item| acc + item.amount())
    }

    /// The JSON object of design.md (camelCase), with unknown fields restored.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{Map, Value};
        let mut map = Map::new();
        for (name, raw) in &self.extra {
            if let Ok(value) = serde_json::from_str::<Value>(raw) {
                map.insert(name.clone(), value);
            }
        }
        map.insert("transactionId".into(), self.transaction_id.as_str().into());
        map.insert("storeId".into(), self.store_id.as_str().into());
        map.insert("timestamp".into(), self.timestamp.to_rfc3339().into());
        let items: Vec<Value> = self
            .items
            .iter()
            .map(|item| {
                let mut line = Map::new();
                line.insert("itemId".into(), item.sku.as_str().into());
                line.insert("quantity".into(), item.quantity.into());
                line.insert("price".into(), money_json(item.price));
                Value::Object(line)
            })
            .collect();
        map.insert("items".into(), Value::Array(items));
        map.insert("totalAmount".into(), money_json(self.total_amount));
        map.insert("paymentMethod".into(), self.payment_method.as_str().into());
        map.insert("kind".into(), self.kind.as_str().into());
        if let Some(register) = &self.register_id {
            map.insert("registerId".into(), register.as_str().into());
        }
        if let Some(cashier) = &self.cashier_id {
            map.insert("cashierId".into(), cashier.as_str().into());
        }
        if let Some(customer) = &self.customer_id {
            map.insert("customerId".into(), customer.as_str().into());
        }
        if let Some(currency) = &self.currency {
            map.insert("currency".into(), currency.as_str().into());
        }
        Value::Object(map)
    }
}

/// Money as a JSON number. [`Money`] is an integer, so this is always finite.
pub fn money_json(money: Money) -> serde_json::Value {
    serde_json::Number::from_f64(money.to_f64())
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

/// Why a barcode was scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ScanPurpose {
    /// Scanned at a till; the POS transaction carries the stock effect.
    Sale,
    /// Scanned at a return desk; the POS transaction carries the stock effect.
    Return,
    /// Goods received: adds `quantity` to stock.
    Receiving,
    /// A stock count: sets stock to `quantity`.
    StockCount,
}

impl ScanPurpose {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanPurpose::Sale => "sale",
            ScanPurpose::Return => "return",
            ScanPurpose::Receiving => "receiving",
            ScanPurpose::StockCount => "stockCount",
        }
    }

    /// Parses the JSON spelling.
    pub fn parse(s: &str) -> Option<ScanPurpose> {
        match s {
            "sale" => Some(ScanPurpose::Sale),
            "return" => Some(ScanPurpose::Return),
            "receiving" => Some(ScanPurpose::Receiving),
            "stockCount" | "stock_count" => Some(ScanPurpose::StockCount),
            _ => None,
        }
    }
}

/// A GTIN (8, 12, 13 or 14 digits) whose check digit is valid.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Gtin(String);

/// Serialized as its digits, without the copy `into = "String"` would make.
impl Serialize for Gtin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Why a text is not a GTIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GtinError {
    /// Not 8, 12, 13 or 14 characters.
    #[error("must have 8, 12, 13 or 14 digits")]
    Length,
    /// A character that is not a digit.
    #[error("must contain digits only")]
    NotDigits,
    /// The last digit does not match the GS1 check digit of the others.
    #[error("check digit is wrong (expected {expected})")]
    CheckDigit {
        /// The check digit the other digits call for.
        expected: u8,
    },
}

impl Gtin {
    /// Validates length, digits and the GS1 mod-10 check digit.
    pub fn new(text: impl Into<String>) -> Result<Gtin, GtinError> {
        let text = text.into();
        if !matches!(text.len(), 8 | 12 | 13 | 14) {
            return Err(GtinError::Length);
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(GtinError::NotDigits);
        }
        let digits: Vec<u8> = text.bytes().map(|b| b - b'0').collect();
        let (body, check) = match digits.split_last() {
            Some((check, body)) => (body, *check),
            None => return Err(GtinError::Length),
        };
        let expected = gs1_check_digit(body);
        if expected != check {
            return Err(GtinError::CheckDigit { expected });
        }
        Ok(Gtin(text))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The GS1 mod-10 check digit of `body` (all digits but the last).
pub fn gs1_check_digit(body: &[u8]) -> u8 {
    // Weights alternate 3, 1, 3, ... from the rightmost digit of the body.
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| u32::from(*d) * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

impl TryFrom<String> for Gtin {
    type Error = GtinError;
    fn try_from(s: String) -> Result<Gtin, GtinError> {
        Gtin::new(s)
    }
}

impl From<Gtin> for String {
    fn from(g: Gtin) -> String {
        g.0
    }
}

impl core::fmt::Debug for Gtin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Gtin({})", self.0)
    }
}

/// A barcode scan from a scanner or a firmware bridge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScanEvent {
    /// Idempotency key of the scan.
    pub scan_id: ScanId,
    /// The store.
    pub store_id: StoreId,
    /// The barcode.
    pub gtin: Gtin,
    /// The SKU the stock effect applies to: the `sku` field when given, else the GTIN.
    pub sku: Sku,
    /// Why it was scanned.
    pub purpose: ScanPurpose,
    /// Units (counted units for a stock count, which may be zero).
    pub quantity: i32,
    /// When.
    pub timestamp: EventTime,
    /// The register or scanner station, when known.
    pub register_id: Option<RegisterId>,
}

impl ScanEvent {
    /// The JSON object (camelCase).
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert("scanId".into(), self.scan_id.as_str().into());
        map.insert("storeId".into(), self.store_id.as_str().into());
        map.insert("gtin".into(), self.gtin.as_str().into());
        map.insert("sku".into(), self.sku.as_str().into());
        map.insert("purpose".into(), self.purpose.as_str().into());
        map.insert("quantity".into(), self.quantity.into());
        map.insert("timestamp".into(), self.timestamp.to_rfc3339().into());
        if let Some(register) = &self.register_id {
            map.insert("registerId".into(), register.as_str().into());
        }
        serde_json::Value::Object(map)
    }
}

/// Where a stock adjustment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AdjustmentSource {
    /// Entered at HQ (corrections, write-offs).
    Hq,
    /// One leg of a transfer between stores.
    Transfer,
    /// Entered in the store.
    Store,
}

/// A change of stock on hand that is not a sale, return, receipt or count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StockAdjustment {
    /// Idempotency key.
    pub adjustment_id: AdjustmentId,
    /// The store whose stock changes.
    pub store_id: StoreId,
    /// The item.
    pub sku: Sku,
    /// Units added (negative: removed).
    pub delta: i32,
    /// Why, in words (at most [`crate::validate::Limits::text_len_max`] bytes).
    pub reason: String,
    /// Who or what made it.
    pub source: AdjustmentSource,
    /// When it takes effect.
    pub timestamp: EventTime,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AlertKind {
    /// Stock at or below the SKU's reorder threshold.
    LowStock,
    /// Stock at or below zero.
    OutOfStock,
    /// Today's revenue passed a milestone.
    SalesMilestone,
    /// Revenue far from the store's baseline for this hour of the week.
    RevenueAnomaly,
    /// Refunds and voids far above the baseline.
    RefundSpike,
    /// A register sent nothing during opening hours.
    PosSilent,
    /// A repeated id arrived with different content.
    ConflictingDuplicate,
    /// The disk is full; ingest refuses records.
    DiskFull,
    /// (hub) A store has not synced for too long.
    StoreNotSyncing,
    /// (hub) A device's clock is far off the hub's.
    ClockSkew,
    /// (hub) A device's hash chain is broken or its sequence went backwards.
    JournalIntegrity,
    /// (hub) An anomaly across the chain.
    ChainAnomaly,
    /// A sale named a SKU the tenant's catalog does not know; the sale was accepted.
    /// (Appended last: variants are encoded by position.)
    UnknownSku,
}

impl AlertKind {
    /// The snake_case spelling used in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::LowStock => "low_stock",
            AlertKind::OutOfStock => "out_of_stock",
            AlertKind::SalesMilestone => "sales_milestone",
            AlertKind::RevenueAnomaly => "revenue_anomaly",
            AlertKind::RefundSpike => "refund_spike",
            AlertKind::PosSilent => "pos_silent",
            AlertKind::ConflictingDuplicate => "conflicting_duplicate",
            AlertKind::DiskFull => "disk_full",
            AlertKind::StoreNotSyncing => "store_not_syncing",
            AlertKind::ClockSkew => "clock_skew",
            AlertKind::JournalIntegrity => "journal_integrity",
            AlertKind::ChainAnomaly => "chain_anomaly",
            AlertKind::UnknownSku => "unknown_sku",
        }
    }

    /// Every kind, for parsing and listings.
    pub const ALL: [AlertKind; 13] = [
        AlertKind::LowStock,
        AlertKind::OutOfStock,
        AlertKind::SalesMilestone,
        AlertKind::RevenueAnomaly,
        AlertKind::RefundSpike,
        AlertKind::PosSilent,
        AlertKind::ConflictingDuplicate,
        AlertKind::DiskFull,
        AlertKind::StoreNotSyncing,
        AlertKind::ClockSkew,
        AlertKind::JournalIntegrity,
        AlertKind::ChainAnomaly,
        AlertKind::UnknownSku,
    ];

    /// Parses the snake_case spelling.
    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    /// Good to know.
    Info,
    /// Needs attention today.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The lower-case spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlertState {
    /// Raised, nobody has looked.
    Open,
    /// Somebody has seen it.
    Acknowledged,
    /// Dealt with.
    Resolved,
}

impl AlertState {
    /// The lower-case spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    /// Parses the lower-case spelling.
    pub fn parse(s: &str) -> Option<AlertState> {
        match s {
            "open" => Some(AlertState::Open),
            "acknowledged" => Some(AlertState::Acknowledged),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// An alert, with the numbers that made it fire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Alert {
    /// Id, minted where the alert was raised.
    pub alert_id: AlertId,
    /// What it is about.
    pub kind: AlertKind,
    /// How urgent.
    pub severity: Severity,
    /// The store.
    pub store_id: StoreId,
    /// The SKU or metric it concerns.
    pub subject: String,
    /// When it was raised.
    pub raised_at: EventTime,
    /// Its state.
    pub state: AlertState,
    /// Who last changed the state, if anyone.
    pub changed_by: Option<String>,
    /// A sentence for people.
    pub message: String,
    /// The numbers that made it fire, as (name, value) with units in the name.
    pub facts: Vec<(String, i64)>,
}

/// A periodic measurement of the agent itself (backlog, disk, clock).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Telemetry {
    /// When it was measured.
    pub at: EventTime,
    /// (name, value) pairs with units in the names.
    pub metrics: Vec<(String, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<(), GtinError>) {
        assert_eq!(Gtin::new(text).map(|_| ()), expected, "{text}");
    }

    #[test]
    fn gtin_check_digits() {
        check("4006381333931", Ok(())); // EAN-13
        check("4006381333932", Err(GtinError::CheckDigit { expected: 1 }));
        check("96385074", Ok(())); // EAN-8
        check("036000291452", Ok(())); // UPC-A
        check("10614141000415", Ok(())); // GTIN-14
        check("400638133393", Err(GtinError::CheckDigit { expected: 0 }));
        check("40063813339a", Err(GtinError::NotDigits));
        check("1234", Err(GtinError::Length));
    }
}
