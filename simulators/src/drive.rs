//! Driving real agents through their real ingest paths: the HTTP JSON API (NDJSON batches
//! for backfill, JSON arrays live), CSV (`POST /api/v1/imports/csv`, or files in the
//! agent's drop folder), and scans as firmware-bridge frames ([`crate::bridge`]). Requests
//! are retried while the agent is busy or restarting.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::bridge::Bridge;
use crate::chain::{Record, RecordKind};
use crate::http;

/// Records per request in backfill (well under the agents' `records_per_request_max`).
pub const BATCH_LEN_MAX: usize = 2_000;

/// Attempts per batch before giving up.
const ATTEMPTS_MAX: u32 = 60;

/// What the agent answered, summed over requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// New records stored.
    pub accepted: u64,
    /// Records the agent already held (a rerun or a retried batch).
    pub duplicates: u64,
    /// Records refused (a generator bug: they are valid by construction).
    pub rejected: u64,
    /// Of the records stored, how many are transactions (the rest are scans).
    pub transactions: u64,
    /// Scans a bridge listener acknowledged: durable, new or already held (the bridge
    /// protocol does not tell which).
    pub bridged: u64,
}

impl Counts {
    /// Adds another count.
    pub fn add(&mut self, other: Counts) {
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.transactions += other.transactions;
        self.bridged += other.bridged;
    }

    /// Records the agent holds.
    pub fn stored(&self) -> u64 {
        self.accepted + self.duplicates + self.bridged
    }
}

/// How a batch is framed in the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON object per line (`application/x-ndjson`): backfill.
    Ndjson,
    /// One JSON array (`application/json`): what a POS posting live sends.
    JsonArray,
}

/// How a store's transactions reach its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionPath {
    /// `POST /api/v1/transactions`, JSON.
    Json,
    /// `POST /api/v1/imports/csv`.
    Csv,
    /// CSV files written into the agent's drop folder (this directory, its `inbox/`);
    /// live traffic, which must be acknowledged at once, goes as [`TransactionPath::Csv`].
    CsvDrop(PathBuf),
}

/// The ingest paths of one store's agent.
#[derive(Debug)]
pub struct Route {
    /// The agent's API, `host:port`.
    pub api: String,
    /// How transactions go.
    pub transactions: TransactionPath,
    /// When set, scans go as bridge frames through this bridge; otherwise as JSON.
    pub bridge: Option<Bridge>,
}

impl Route {
    /// Everything as JSON to the API at `api`.
    pub fn json(api: &str) -> Route {
        Route {
            api: api.to_owned(),
            transactions: TransactionPath::Json,
            bridge: None,
        }
    }

    /// A short name of the paths, for logs: `json`, `csv+bridge`...
    pub fn describe(&self) -> String {
        let tx = match self.transactions {
            TransactionPath::Json => "json",
            TransactionPath::Csv => "csv-http",
            TransactionPath::CsvDrop(_) => "csv-drop",
        };
        match self.bridge {
            Some(_) => format!("{tx}+bridge-scans"),
            None => tx.to_owned(),
        }
    }

    /// Delivers `records` (transactions and scans) by this route. `backfill`: history, as
    /// fast as the agent takes it (NDJSON, drop-folder files); otherwise live postings.
    pub fn deliver(&mut self, records: &[Record], backfill: bool) -> anyhow::Result<Counts> {
        let (scans, transactions): (Vec<Record>, Vec<Record>) = records
            .iter()
            .cloned()
            .partition(|r| r.kind == RecordKind::Scan);
        let mut counts = Counts::default();
        match &mut self.bridge {
            Some(bridge) => {
                counts.bridged += bridge.send(&scans)?;
            }
            None => counts.add(send(&self.api, &scans, encoding(backfill))?),
        }
        let mut tx = match &self.transactions {
            TransactionPath::Json => send(&self.api, &transactions, encoding(backfill))?,
            TransactionPath::CsvDrop(dir) if backfill => drop_csv(dir, &transactions)?,
            TransactionPath::Csv | TransactionPath::CsvDrop(_) => {
                post_csv(&self.api, &transactions)?
            }
        };
        tx.transactions = tx.stored();
        counts.add(tx);
        Ok(counts)
    }
}

fn encoding(backfill: bool) -> Encoding {
    if backfill {
        Encoding::Ndjson
    } else {
        Encoding::JsonArray
    }
}

/// Columns of the CSV the simulator writes, in the agent's import format.
const CSV_COLUMNS: [&str; 12] = [
    "transactionId",
    "storeId",
    "timestamp",
    "itemId",
    "quantity",
    "price",
    "totalAmount",
    "paymentMethod",
    "kind",
    "registerId",
    "cashierId",
    "currency",
];

/// Transactions as CSV: a header row, then one row per line item.
pub fn to_csv(transactions: &[Record]) -> anyhow::Result<Vec<u8>> {
    let mut out = csv::Writer::from_writer(Vec::with_capacity(transactions.len() * 300));
    out.write_record(CSV_COLUMNS)?;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    for r in transactions
        .iter()
        .filter(|r| r.kind == RecordKind::Transaction)
    {
        for item in r.json["items"].as_array().into_iter().flatten() {
            let row: Vec<String> = CSV_COLUMNS
                .iter()
                .map(|c| match *c {
                    "itemId" | "quantity" | "price" => text(&item[*c]),
                    _ => text(&r.json[*c]),
                })
                .collect();
            out.write_record(&row)?;
        }
    }
    out.into_inner().context("writing CSV")
}

/// Counts from an agent's CSV import report.
fn csv_counts(report: &serde_json::Value, source: &str) -> Counts {
    let n = |k: &str| report[k].as_u64().unwrap_or(0);
    let counts = Counts {
        accepted: n("accepted"),
        duplicates: n("duplicates"),
        rejected: n("rejected"),
        ..Counts::default()
    };
    if counts.rejected > 0 || !report["fatal"].is_null() {
        eprintln!(
            "{source}: CSV import refused {} transactions ({}), e.g. {}",
            counts.rejected, report["fatal"], report["errors"][0]
        );
    }
    counts
}

/// `POST /api/v1/imports/csv` of `transactions`, retried while the agent is unavailable.
pub fn post_csv(addr: &str, transactions: &[Record]) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    for batch in transactions.chunks(BATCH_LEN_MAX) {
        if batch.is_empty() {
            continue;
        }
        let body = to_csv(batch)?;
        let response = post_retrying(addr, "/api/v1/imports/csv", "text/csv", &body)?;
        counts.add(csv_counts(&response.json()?, addr));
    }
    Ok(counts)
}

/// How long a drop-folder file may wait for the agent's report.
const DROP_REPORT_TIMEOUT: Duration = Duration::from_secs(300);

/// Writes `transactions` as one CSV file into `<data_dir>/inbox/` (under a dot name, then
/// renamed, as the agent asks) and waits for the agent's report in `processed/` or
/// `failed/`.
pub fn drop_csv(data_dir: &Path, transactions: &[Record]) -> anyhow::Result<Counts> {
    if transactions.is_empty() {
        return Ok(Counts::default());
    }
    let first = transactions[0].json["transactionId"]
        .as_str()
        .unwrap_or("import")
        .to_owned();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("{first}-{nanos}.csv");
    let inbox = data_dir.join("inbox");
    std::fs::create_dir_all(&inbox)?;
    let hidden = inbox.join(format!(".{name}"));
    std::fs::write(&hidden, to_csv(transactions)?)
        .with_context(|| format!("writing {}", hidden.display()))?;
    std::fs::rename(&hidden, inbox.join(&name))?;
    let reports =
        ["processed", "failed"].map(|d| data_dir.join(d).join(format!("{name}.report.json")));
    let until = Instant::now() + DROP_REPORT_TIMEOUT;
    while Instant::now() < until {
        for path in &reports {
            if let Ok(text) = std::fs::read(path) {
                if let Ok(report) = serde_json::from_slice::<serde_json::Value>(&text) {
                    return Ok(csv_counts(&report, &name));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!(
        "{}: no import report after {DROP_REPORT_TIMEOUT:?}; is the agent running?",
        inbox.join(&name).display()
    )
}

/// Sends `records` to the agent at `addr` (`host:port`), transactions and scans to their
/// routes, in batches of at most [`BATCH_LEN_MAX`].
pub fn send(addr: &str, records: &[Record], encoding: Encoding) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    for kind in [RecordKind::Scan, RecordKind::Transaction] {
        let of_kind: Vec<&Record> = records.iter().filter(|r| r.kind == kind).collect();
        for batch in of_kind.chunks(BATCH_LEN_MAX) {
            let mut c = send_batch(addr, kind, batch, encoding)?;
            if kind == RecordKind::Transaction {
                c.transactions = c.stored();
            }
            counts.add(c);
        }
    }
    Ok(counts)
}

fn send_batch(
    addr: &str,
    kind: RecordKind,
    batch: &[&Record],
    encoding: Encoding,
) -> anyhow::Result<Counts> {
    let path = match kind {
        RecordKind::Transaction => "/api/v1/transactions",
        RecordKind::Scan => "/api/v1/scans",
    };
    let (body, content_type) = match encoding {
        Encoding::Ndjson => {
            let mut body = Vec::with_capacity(batch.len() * 400);
            for r in batch {
                serde_json::to_writer(&mut body, &r.json)?;
                body.push(b'\n');
            }
            (body, "application/x-ndjson")
        }
        Encoding::JsonArray => {
            let array: Vec<&serde_json::Value> = batch.iter().map(|r| &r.json).collect();
            (serde_json::to_vec(&array)?, "application/json")
        }
    };
    let response = post_retrying(addr, path, content_type, &body)?;
    let v = response.json()?;
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let counts = Counts {
        accepted: n("accepted"),
        duplicates: n("duplicates"),
        rejected: n("rejected") + n("conflicts"),
        ..Counts::default()
    };
    if counts.rejected > 0 {
        let first = v["results"]
            .as_array()
            .and_then(|r| {
                r.iter()
                    .find(|o| o["status"] != "accepted" && o["status"] != "duplicate")
            })
            .cloned()
            .unwrap_or_default();
        eprintln!("{addr}: {} records refused, e.g. {first}", counts.rejected);
    }
    Ok(counts)
}

/// POSTs `body`, retrying on connection errors, 503 and 429; returns the answer to a
/// request the agent processed (200, 207, 409, 422).
fn post_retrying(
    addr: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> anyhow::Result<http::Response> {
    let mut last_error = String::new();
    for attempt in 0..ATTEMPTS_MAX {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(250 * u64::from(attempt.min(8))));
        }
        let response = match http::request(
            addr,
            "POST",
            path,
            &[("Content-Type", content_type)],
            body,
            Duration::from_secs(60),
        ) {
            Ok(r) => r,
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        };
        match response.status {
            200 | 207 | 409 | 422 => return Ok(response),
            503 | 429 => last_error = format!("HTTP {}", response.status),
            status => anyhow::bail!(
                "{addr}{path}: HTTP {status}: {}",
                String::from_utf8_lossy(&response.body)
            ),
        }
    }
    anyhow::bail!("{addr}{path}: gave up after {ATTEMPTS_MAX} attempts: {last_error}")
}
