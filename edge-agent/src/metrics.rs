//! Prometheus metrics of the agent, rendered as text at `/metrics`.
//!
//! Plain atomics and fixed histogram buckets: no registry, no allocation per observation.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the commit-latency histogram, in microseconds.
const COMMIT_BUCKETS_US: [u64; 10] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// Counters and gauges of one agent process.
#[derive(Debug, Default)]
pub struct Metrics {
    records: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    batches: AtomicU64,
    commit_us_sum: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS_US.len()],
    disk_full: AtomicU64,
    dedupe_keys: AtomicU64,
    http_requests: AtomicU64,
    http_busy: AtomicU64,
    bridge_frames: AtomicU64,
    csv_files: AtomicU64,
}

impl Metrics {
    pub(crate) fn record_batch(
        &self,
        records: u64,
        accepted: u64,
        duplicates: u64,
        took: Duration,
        keys: usize,
    ) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.accepted.fetch_add(accepted, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.commit_us_sum.fetch_add(us, Ordering::Relaxed);
        for (bound, cell) in COMMIT_BUCKETS_US.iter().zip(&self.commit_buckets) {
            if us <= *bound {
                cell.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.set_dedupe_keys(keys);
    }

    pub(crate) fn set_dedupe_keys(&self, keys: usize) {
        self.dedupe_keys.store(keys as u64, Ordering::Relaxed);
    }

    pub(crate) fn disk_full(&self) {
        self.disk_full.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an HTTP ingest request.
    pub fn http_request(&self) {
        self.http_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an ingest request refused because the queue was full or the disk is full.
    pub fn http_busy(&self) {
        self.http_busy.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts bridge frames.
    pub fn bridge_frames(&self, n: u64) {
        self.bridge_frames.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a processed CSV file.
    pub fn csv_file(&self) {
        self.csv_files.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the backlog gauge supplied by the caller.
    pub fn render(&self, backlog: Option<u64>) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "storesync_edge_records_total",
            "Records offered to the writer.",
            get(&self.records),
        );
        counter(
            "storesync_edge_records_accepted_total",
            "Records sealed into the log.",
            get(&self.accepted),
        );
        counter(
            "storesync_edge_records_duplicate_total",
            "Records already in the log.",
            get(&self.duplicates),
        );
        counter(
            "storesync_edge_records_rejected_total",
            "Records kept as dead letters.",
            get(&self.records).saturating_sub(get(&self.accepted) + get(&self.duplicates)),
        );
        counter(
            "storesync_edge_disk_full_total",
            "Commits that failed for lack of space.",
            get(&self.disk_full),
        );
        counter(
            "storesync_edge_http_ingest_requests_total",
            "HTTP ingest requests.",
            get(&self.http_requests),
        );
        counter(
            "storesync_edge_http_ingest_busy_total",
            "HTTP ingest requests answered 503.",
            get(&self.http_busy),
        );
        counter(
            "storesync_edge_bridge_frames_total",
            "Bridge frames received.",
            get(&self.bridge_frames),
        );
        counter(
            "storesync_edge_csv_files_total",
            "CSV files processed.",
            get(&self.csv_files),
        );
        let _ = writeln!(
            out,
            "# HELP storesync_edge_commit_seconds Group-commit latency.\n# TYPE storesync_edge_commit_seconds histogram"
        );
        for (bound, cell) in COMMIT_BUCKETS_US.iter().zip(&self.commit_buckets) {
            let _ = writeln!(
                out,
                "storesync_edge_commit_seconds_bucket{{le=\"{}\"}} {}",
                *bound as f64 / 1e6,
                get(cell)
            );
        }
        let batches = get(&self.batches);
        let _ = writeln!(
            out,
            "storesync_edge_commit_seconds_bucket{{le=\"+Inf\"}} {batches}"
        );
        let _ = writeln!(
            out,
            "storesync_edge_commit_seconds_sum {}",
            get(&self.commit_us_sum) as f64 / 1e6
        );
        let _ = writeln!(out, "storesync_edge_commit_seconds_count {batches}");
        let _ = writeln!(
            out,
            "# HELP storesync_edge_dedupe_keys Idempotency keys held in memory.\n# TYPE storesync_edge_dedupe_keys gauge\nstoresync_edge_dedupe_keys {}",
            get(&self.dedupe_keys)
        );
        if let Some(backlog) = backlog {
            let _ = writeln!(
                out,
                "# HELP storesync_edge_outbox_backlog Events not yet acknowledged by the hub.\n# TYPE storesync_edge_outbox_backlog gauge\nstoresync_edge_outbox_backlog {backlog}"
            );
        }
        out
    }
}
