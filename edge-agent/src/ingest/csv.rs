//! CSV import: `POST /api/v1/imports/csv` and the drop folder `<data_dir>/inbox/`.
//!
//! # Columns
//!
//! A header row is required; column order is free; names are case-sensitive.
//!
//! | column | required | meaning |
//! | --- | --- | --- |
//! | `transactionId` | yes | rows of one transaction are consecutive and share it |
//! | `storeId` | yes | must be this store |
//! | `timestamp` | yes | RFC 3339 with offset |
//! | `itemId` | yes | one line item per row |
//! | `quantity` | yes | integer |
//! | `price` | yes | unit price, at most 4 decimals |
//! | `totalAmount` | yes | the transaction's total (same on every row of it) |
//! | `paymentMethod` | yes | same on every row |
//! | `kind`, `registerId`, `cashierId`, `customerId`, `currency` | no | as in the JSON transaction |
//! | any other column | no | kept as an unknown field of the transaction (text) |
//!
//! Transaction-level columns must agree on every row of a transaction. Errors are reported
//! as `line N: column` with the reason; the whole transaction is rejected (and kept as a dead
//! letter holding the header and its rows). What cannot be read at all is kept as one dead
//! letter too, named in the report's `unreadDeadLetter`: the whole file when its header is
//! bad, else the file from the first unread row (past `limits.csv_rows_max`, or where the
//! reader failed) to its end. A drop-folder file moves to `processed/` when
//! every transaction was accepted or was a duplicate, otherwise to `failed/`; a
//! `<file>.report.json` is written beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use storesync_protocol::validate::{Context, FieldError};

use super::{RecordKind, context, now_ms, submission};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::writer::{ErrorView, Outcome, Submission, WriterHandle};

const REQUIRED: [&str; 8] = [
    "transactionId",
    "storeId",
    "timestamp",
    "itemId",
    "quantity",
    "price",
    "totalAmount",
    "paymentMethod",
];
const TX_LEVEL: [&str; 10] = [
    "transactionId",
    "storeId",
    "timestamp",
    "totalAmount",
    "paymentMethod",
    "kind",
    "registerId",
    "cashierId",
    "customerId",
    "currency",
];
const ITEM_LEVEL: [&str; 3] = ["itemId", "quantity", "price"];
/// Transactions submitted to the writer at once.
const GROUPS_PER_SUBMIT: usize = 1_000;

/// A transaction assembled from consecutive rows.
#[derive(Debug)]
struct Group {
    lines: Vec<u64>,
    transaction_id: String,
    submission: Submission,
}

/// One rejected transaction in a report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RowError {
    /// Lines of the file, `"3-5"`.
    pub lines: String,
    /// Its transactionId, as written.
    pub transaction_id: String,
    /// The dead letter holding its rows.
    pub dead_letter: Option<i64>,
    /// Field (`line N: column`) and reason.
    pub errors: Vec<ErrorView>,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CsvReport {
    /// File name or `http`.
    pub source: String,
    /// `processed` or `failed`.
    pub status: &'static str,
    /// Data rows read.
    pub rows: u64,
    /// Transactions assembled.
    pub transactions: u64,
    /// Newly recorded.
    pub accepted: u64,
    /// Already recorded.
    pub duplicates: u64,
    /// Rejected (each is a dead letter).
    pub rejected: u64,
    /// Why the file as a whole could not be read to the end, if so.
    pub fatal: Option<String>,
    /// The dead letter keeping what could not be read (the whole file for a bad header,
    /// else from the row where reading stopped to the end).
    pub unread_dead_letter: Option<i64>,
    /// Rejected transactions, at most 1,000 listed.
    pub errors: Vec<RowError>,
}

struct Columns {
    index: BTreeMap<String, usize>,
    extra: Vec<(String, usize)>,
}

fn number(s: &str) -> Value {
    if let Ok(i) = s.parse::<i64>() {
        return Value::from(i);
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::from(s)),
        _ => Value::from(s),
    }
}

fn line_error(line: u64, field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: format!("line {line}: {field}"),
        reason: reason.into(),
    }
}

/// Maps a validation path (`items[2].price`, `totalAmount`) to `line N: column`.
fn map_error(e: FieldError, lines: &[u64]) -> FieldError {
    let first = lines.first().copied().unwrap_or(0);
    if let Some((n, tail)) = e
        .field
        .strip_prefix("items[")
        .and_then(|rest| rest.split_once(']'))
    {
        let line = n
            .parse::<usize>()
            .ok()
            .and_then(|i| lines.get(i))
            .copied()
            .unwrap_or(first);
        let column = tail.strip_prefix('.').unwrap_or("items");
        return line_error(line, column, e.reason);
    }
    let column = if e.field == "$" {
        "row"
    } else {
        e.field.as_str()
    };
    line_error(first, column, e.reason)
}

fn build_group(
    cols: &Columns,
    rows: &[(u64, Vec<String>)],
    header_raw: &str,
    ctx: &Context<'_>,
    source: &str,
) -> Group {
    let lines: Vec<u64> = rows.iter().map(|(l, _)| *l).collect();
    let first_line = lines.first().copied().unwrap_or(0);
    let cell = |row: &[String], name: &str| -> Option<String> {
        let i = *cols.index.get(name)?;
        row.get(i)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let mut errors = Vec::new();
    let mut obj = Map::new();
    let transaction_id = rows
        .first()
        .and_then(|(_, r)| cell(r, "transactionId"))
        .unwrap_or_default();
    if let Some((_, first)) = rows.first() {
        for name in TX_LEVEL {
            let value = cell(first, name);
            for (line, row) in rows.iter().skip(1) {
                if cell(row, name) != value {
                    errors.push(line_error(
                        *line,
                        name,
                        format!("differs from line {first_line} of the same transaction"),
                    ));
                }
            }
            if let Some(value) = value {
                let json = if name == "totalAmount" {
                    number(&value)
                } else {
                    Value::from(value)
                };
                obj.insert(name.to_owned(), json);
            }
        }
        for (name, i) in &cols.extra {
            if let Some(value) = first.get(*i).filter(|s| !s.is_empty()) {
                obj.insert(name.clone(), Value::from(value.clone()));
            }
        }
    }
    let items: Vec<Value> = rows
        .iter()
        .map(|(_, row)| {
            let mut item = Map::new();
            for name in ITEM_LEVEL {
                if let Some(value) = cell(row, name) {
                    let json = if name == "itemId" {
                        Value::from(value)
                    } else {
                        number(&value)
                    };
                    item.insert(name.to_owned(), json);
                }
            }
            Value::Object(item)
        })
        .collect();
    obj.insert("items".into(), Value::Array(items));
    let mut raw = String::from(header_raw);
    for (_, row) in rows {
        raw.push('\n');
        let mut writer = ::csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        let _ = writer.write_record(row);
        if let Ok(bytes) = writer.into_inner() {
            raw.push_str(String::from_utf8_lossy(&bytes).trim_end());
        }
    }
    let value = Value::Object(obj);
    let parsed = if errors.is_empty() {
        super::json::validate(&value, RecordKind::Transaction, ctx)
            .map_err(|errors| errors.into_iter().map(|e| map_error(e, &lines)).collect())
    } else {
        Err(errors)
    };
    let last_line = lines.last().copied().unwrap_or(first_line);
    let source = format!("{source}:{first_line}-{last_line}");
    Group {
        lines,
        transaction_id,
        submission: Submission {
            source,
            kind: "csv",
            raw: raw.into_bytes(),
            parsed,
            resubmit_of: None,
        },
    }
}

/// Imports CSV bytes; `name` labels sources and the report.
pub async fn import(
    bytes: &[u8],
    name: &str,
    settings: &Settings,
    writer: &WriterHandle,
) -> Result<CsvReport, crate::store::StoreError> {
    let mut report = CsvReport {
        source: name.to_owned(),
        status: "processed",
        ..CsvReport::default()
    };
    let rows_max = settings.config.limits.csv_rows_max;
    let mut reader = ::csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes);
    let header = match reader.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            let reason = format!("cannot read the header: {e}");
            return keep_unread(report, bytes, 1, reason, settings, writer).await;
        }
    };
    let header_fields: Result<Vec<String>, _> = header
        .iter()
        .map(|f| std::str::from_utf8(f).map(|s| s.trim().to_owned()))
        .collect();
    let Ok(header_fields) = header_fields else {
        let reason = "the header is not valid UTF-8".to_owned();
        return keep_unread(report, bytes, 1, reason, settings, writer).await;
    };
    let mut index = BTreeMap::new();
    let mut extra = Vec::new();
    for (i, name) in header_fields.iter().enumerate() {
        if index.contains_key(name) {
            let reason = format!("column {name} appears twice");
            return keep_unread(report, bytes, 1, reason, settings, writer).await;
        }
        if !TX_LEVEL.contains(&name.as_str())
            && !ITEM_LEVEL.contains(&name.as_str())
            && !name.is_empty()
        {
            extra.push((name.clone(), i));
        }
        index.insert(name.clone(), i);
    }
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|c| !index.contains_key(*c))
        .collect();
    if !missing.is_empty() {
        let reason = format!("missing required column(s) {}", missing.join(", "));
        return keep_unread(report, bytes, 1, reason, settings, writer).await;
    }
    let cols = Columns { index, extra };
    let header_raw = header_fields.join(",");
    let tx_col = cols.index.get("transactionId").copied().unwrap_or(0);

    let mut groups: Vec<Group> = Vec::new();
    let mut current: Vec<(u64, Vec<String>)> = Vec::new();
    let mut record = ::csv::ByteRecord::new();
    let mut finished = false;
    // Where reading stopped early: the line and byte offset of the first row not read.
    let mut unread: Option<(u64, u64)> = None;
    while !finished {
        let now = now_ms();
        let ctx = context(now, &settings.record_limits, &settings.store);
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(false) => {
                    finished = true;
                    break;
                }
                Ok(true) => {}
                Err(e) => {
                    report.fatal = Some(match e.position() {
                        Some(p) => format!("line {}: {e}", p.line()),
                        None => e.to_string(),
                    });
                    unread = Some(
                        e.position()
                            .map_or((report.rows + 2, 0), |p| (p.line(), p.byte())),
                    );
                    finished = true;
                    break;
                }
            }
            report.rows += 1;
            if report.rows > rows_max as u64 {
                report.fatal = Some(format!(
                    "more than csv_rows_max = {rows_max} rows; the rest was not read"
                ));
                report.rows -= 1;
                unread = record.position().map(|p| (p.line(), p.byte()));
                finished = true;
                break;
            }
            let line = record
                .position()
                .map(|p| p.line())
                .unwrap_or(report.rows + 1);
            let fields: Result<Vec<String>, _> = record
                .iter()
                .map(|f| std::str::from_utf8(f).map(str::to_owned))
                .collect();
            let fields = match fields {
                Ok(f) => f,
                Err(_) => {
                    // Keep the row (lossily) so it is dead-lettered with the reason.
                    let lossy: Vec<String> = record
                        .iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect();
                    flush(&mut groups, &mut current, &cols, &header_raw, &ctx, name);
                    let mut group = build_group(&cols, &[(line, lossy)], &header_raw, &ctx, name);
                    group.submission.parsed =
                        Err(vec![line_error(line, "row", "is not valid UTF-8")]);
                    groups.push(group);
                    continue;
                }
            };
            let id = fields.get(tx_col).map(|s| s.trim()).unwrap_or("");
            let same = current.first().is_some_and(|(_, first)| {
                first.get(tx_col).map(|s| s.trim()) == Some(id) && !id.is_empty()
            });
            if !same {
                flush(&mut groups, &mut current, &cols, &header_raw, &ctx, name);
            }
            current.push((line, fields));
            if current.len() > settings.record_limits.items_max {
                // A run longer than items_max is one rejected transaction; do not buffer
                // an unbounded number of rows for it.
                flush(&mut groups, &mut current, &cols, &header_raw, &ctx, name);
            }
            if groups.len() >= GROUPS_PER_SUBMIT {
                break;
            }
        }
        if finished {
            flush(&mut groups, &mut current, &cols, &header_raw, &ctx, name);
        }
        submit_groups(std::mem::take(&mut groups), writer, &mut report, now).await?;
    }
    if let (Some((line, at)), Some(reason)) = (unread, report.fatal.clone()) {
        let rest = usize::try_from(at)
            .ok()
            .and_then(|at| bytes.get(at..))
            .unwrap_or(bytes);
        let reason = reason
            .strip_prefix(&format!("line {line}: "))
            .unwrap_or(&reason)
            .to_owned();
        report = keep_unread(report, rest, line, reason, settings, writer).await?;
    }
    if report.rejected > 0 || report.fatal.is_some() {
        report.status = "failed";
    }
    Ok(report)
}

/// Ends an import that could not read `rest` (from `line` on): the report fails with
/// `reason`, and `rest` is kept as one dead letter, so a fatal error loses nothing. At most
/// `limits.body_bytes_max` of it is kept (a drop-folder file keeps all of it in `failed/`);
/// the dead letter's reason says when it was cut.
async fn keep_unread(
    mut report: CsvReport,
    rest: &[u8],
    line: u64,
    reason: String,
    settings: &Settings,
    writer: &WriterHandle,
) -> Result<CsvReport, crate::store::StoreError> {
    report.status = "failed";
    report.fatal = Some(format!("line {line}: {reason}"));
    let cap = settings.config.limits.body_bytes_max;
    let (kept, reason) = match rest.get(..cap) {
        Some(kept) if kept.len() < rest.len() => (
            kept,
            format!(
                "{reason} (the first {cap} of {} unread bytes kept, limits.body_bytes_max)",
                rest.len()
            ),
        ),
        _ => (rest, reason),
    };
    let letter = submission(
        &format!("csv:{}", report.source),
        RecordKind::Transaction,
        kept.to_vec(),
        Err(vec![line_error(line, "file", reason)]),
    );
    let outcomes = writer.submit(vec![letter], now_ms()).await?;
    report.unread_dead_letter = outcomes.into_iter().find_map(|o| match o {
        Outcome::Rejected { dead_letter, .. } | Outcome::Conflict { dead_letter, .. } => {
            Some(dead_letter)
        }
        _ => None,
    });
    Ok(report)
}

fn flush(
    groups: &mut Vec<Group>,
    current: &mut Vec<(u64, Vec<String>)>,
    cols: &Columns,
    header_raw: &str,
    ctx: &Context<'_>,
    name: &str,
) {
    if !current.is_empty() {
        groups.push(build_group(cols, current, header_raw, ctx, name));
        current.clear();
    }
}

async fn submit_groups(
    groups: Vec<Group>,
    writer: &WriterHandle,
    report: &mut CsvReport,
    now: i64,
) -> Result<(), crate::store::StoreError> {
    if groups.is_empty() {
        return Ok(());
    }
    let mut meta = Vec::with_capacity(groups.len());
    let mut submissions = Vec::with_capacity(groups.len());
    for g in groups {
        let lines = match (g.lines.first(), g.lines.last()) {
            (Some(a), Some(b)) if a != b => format!("{a}-{b}"),
            (Some(a), _) => a.to_string(),
            _ => String::new(),
        };
        meta.push((lines, g.transaction_id));
        submissions.push(g.submission);
    }
    report.transactions += submissions.len() as u64;
    let outcomes = writer.submit(submissions, now).await?;
    for ((lines, transaction_id), outcome) in meta.into_iter().zip(outcomes) {
        match outcome {
            Outcome::Accepted { .. } => report.accepted += 1,
            Outcome::Duplicate => report.duplicates += 1,
            Outcome::Rejected {
                dead_letter,
                errors,
            }
            | Outcome::Conflict {
                dead_letter,
                errors,
            } => {
                report.rejected += 1;
                if report.errors.len() < 1_000 {
                    report.errors.push(RowError {
                        lines,
                        transaction_id,
                        dead_letter: Some(dead_letter),
                        errors,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Moves `file` into `dir`, choosing a free name; returns the new path.
fn move_into(file: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "import.csv".into());
    let mut target = dir.join(&name);
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{n}-{name}"));
        n += 1;
    }
    std::fs::rename(file, &target)?;
    Ok(target)
}

async fn process_file(
    path: &Path,
    size: u64,
    settings: &Settings,
    writer: &WriterHandle,
) -> std::io::Result<()> {
    let data_dir = &settings.config.data_dir;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let limit = settings.config.limits.csv_bytes_max;
    let report = if size > limit {
        CsvReport {
            source: name.clone(),
            status: "failed",
            fatal: Some(format!(
                "file is {size} bytes, more than csv_bytes_max = {limit}"
            )),
            ..CsvReport::default()
        }
    } else {
        let bytes = tokio::fs::read(path).await?;
        match import(&bytes, &name, settings, writer).await {
            Ok(report) => report,
            Err(e) => {
                // Not durable: leave the file in the inbox and try again later.
                tracing::warn!(file = %name, error = %e, "CSV import could not be recorded; will retry");
                return Ok(());
            }
        }
    };
    let dir = data_dir.join(if report.status == "processed" {
        "processed"
    } else {
        "failed"
    });
    let moved = move_into(path, &dir)?;
    let mut report_path = moved.clone().into_os_string();
    report_path.push(".report.json");
    let text = serde_json::to_vec_pretty(&report).unwrap_or_default();
    tokio::fs::write(PathBuf::from(report_path), text).await?;
    tracing::info!(file = %name, status = report.status, accepted = report.accepted, rejected = report.rejected, "CSV file imported");
    Ok(())
}

/// Polls the drop folder every `interval` until `stop` flips. A file is taken once its size
/// is the same on two polls; names starting with `.` or ending in `.tmp`/`.part` are skipped
/// (write there, then rename).
pub async fn watch(
    settings: Arc<Settings>,
    writer: WriterHandle,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let inbox = settings.inbox_dir();
    if let Err(e) = std::fs::create_dir_all(&inbox) {
        tracing::error!(dir = %inbox.display(), error = %e, "cannot create the CSV drop folder");
        return;
    }
    let mut sizes: BTreeMap<PathBuf, u64> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let Ok(entries) = std::fs::read_dir(&inbox) else {
            continue;
        };
        let mut seen = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            seen.insert(path, meta.len());
        }
        for (path, size) in &seen {
            if sizes.get(path) == Some(size) {
                if *stop.borrow() {
                    return;
                }
                if let Err(e) = process_file(path, *size, &settings, &writer).await {
                    tracing::warn!(file = %path.display(), error = %e, "CSV file could not be moved");
                }
                metrics.csv_file();
            }
        }
        sizes = seen;
    }
}
