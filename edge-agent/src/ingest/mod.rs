//! Ingest paths. Each turns bytes into [`Submission`]s through the protocol crate's
//! validation and hands them to the writer; none of them writes to the database itself.
//!
//! - [`json`]: one JSON object, a JSON array, or NDJSON (HTTP bodies).
//! - [`csv`]: CSV files, one row per line item (HTTP import and the drop folder).
//! - [`bridge`]: the TCP listener for firmware-bridge frames.

pub mod bridge;
pub mod csv;
pub mod json;

use storesync_protocol::StoreId;
use storesync_protocol::validate::{Context, Limits};

use crate::writer::Submission;

/// What kind of record a body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// POS transactions.
    Transaction,
    /// Scanner events.
    Scan,
    /// Stock adjustments.
    Adjustment,
}

impl RecordKind {
    /// The dead-letter kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Transaction => "transaction",
            RecordKind::Scan => "scan",
            RecordKind::Adjustment => "adjustment",
        }
    }

    /// Parses a dead-letter kind name (`csv` rows are transactions).
    pub fn parse(s: &str) -> Option<RecordKind> {
        match s {
            "transaction" | "csv" => Some(RecordKind::Transaction),
            "scan" | "frame" => Some(RecordKind::Scan),
            "adjustment" => Some(RecordKind::Adjustment),
            _ => None,
        }
    }
}

/// The validation context of this agent at `now_ms`.
pub fn context<'a>(now_ms: i64, limits: &'a Limits, store: &'a StoreId) -> Context<'a> {
    Context {
        now_ms,
        limits,
        store: Some(store),
    }
}

/// The wall clock in Unix milliseconds; the one place ingest reads time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Ingest input that is refused as a whole (nothing is recorded, nothing dead-lettered
/// except where noted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// More records than a limit allows.
    #[error("{what}: {count} records, more than {limit_name} = {limit}")]
    TooMany {
        /// Which part of the input.
        what: &'static str,
        /// How many were found (at least).
        count: usize,
        /// The limit's name.
        limit_name: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The input is structurally unusable (e.g. a CSV without the required columns).
    #[error("{field}: {reason}")]
    Malformed {
        /// The field or part.
        field: String,
        /// Why.
        reason: String,
    },
}

pub(crate) fn submission(
    source: &str,
    kind: RecordKind,
    raw: Vec<u8>,
    parsed: Result<crate::writer::Record, Vec<storesync_protocol::validate::FieldError>>,
) -> Submission {
    Submission {
        source: source.to_owned(),
        kind: kind.as_str(),
        raw,
        parsed,
        resubmit_of: None,
    }
}
