//! Driving real agents: generated records go to an agent's ingest API as NDJSON batches
//! (backfill) or JSON arrays (live), retried while the agent is busy or restarting.

use std::time::Duration;

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
}

impl Counts {
    /// Adds another count.
    pub fn add(&mut self, other: Counts) {
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.transactions += other.transactions;
    }

    /// Records the agent holds.
    pub fn stored(&self) -> u64 {
        self.accepted + self.duplicates
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
            &body,
            Duration::from_secs(60),
        ) {
            Ok(r) => r,
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        };
        match response.status {
            200 | 207 | 422 => {
                let v = response.json()?;
                let n = |k: &str| v[k].as_u64().unwrap_or(0);
                let counts = Counts {
                    accepted: n("accepted"),
                    duplicates: n("duplicates"),
                    rejected: n("rejected") + n("conflicts"),
                    transactions: 0,
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
                return Ok(counts);
            }
            503 | 429 => last_error = format!("HTTP {}", response.status),
            status => anyhow::bail!(
                "{addr}{path}: HTTP {status}: {}",
                String::from_utf8_lossy(&response.body)
            ),
        }
    }
    anyhow::bail!("{addr}{path}: gave up after {ATTEMPTS_MAX} attempts: {last_error}")
}
