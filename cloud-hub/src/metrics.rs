//! Prometheus metrics, written in the text exposition format without a client library.
//!
//! One process-wide registry ([`global`]): the stores record ingest rows and commit
//! latency, the API records per-route latency, the cache its hits and misses.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_S: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram.
#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; 14],
    count: u64,
    sum_s: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS_S.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        if seconds.is_finite() {
            self.sum_s += seconds;
        }
    }
}

/// The registry.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events committed (inserted) by ingest.
    pub ingest_events: AtomicU64,
    /// Line items committed by ingest.
    pub ingest_line_items: AtomicU64,
    /// Duplicates seen by ingest.
    pub ingest_duplicates: AtomicU64,
    /// Conflicts seen by ingest.
    pub ingest_conflicts: AtomicU64,
    /// Dashboard cache hits.
    pub cache_hits: AtomicU64,
    /// Dashboard cache misses.
    pub cache_misses: AtomicU64,
    /// Requests refused by rate limits.
    pub rate_limited: AtomicU64,
    commit: Mutex<Histogram>,
    routes: Mutex<BTreeMap<(String, String, u16), Histogram>>,
}

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

impl Metrics {
    /// Records one ingest commit.
    pub fn record_commit(
        &self,
        seconds: f64,
        inserted: u64,
        lines: u64,
        duplicates: u64,
        conflicts: u64,
    ) {
        self.ingest_events.fetch_add(inserted, Ordering::Relaxed);
        self.ingest_line_items.fetch_add(lines, Ordering::Relaxed);
        self.ingest_duplicates
            .fetch_add(duplicates, Ordering::Relaxed);
        self.ingest_conflicts
            .fetch_add(conflicts, Ordering::Relaxed);
        self.commit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(seconds);
    }

    /// Records one API request.
    pub fn record_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default()
            .observe(seconds);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            &mut out,
            "storesync_hub_ingest_events_total",
            "Events committed by ingest.",
            &self.ingest_events,
        );
        counter(
            &mut out,
            "storesync_hub_ingest_line_items_total",
            "Line items committed by ingest (rate() gives rows/s).",
            &self.ingest_line_items,
        );
        counter(
            &mut out,
            "storesync_hub_ingest_duplicates_total",
            "Events received again with the same content.",
            &self.ingest_duplicates,
        );
        counter(
            &mut out,
            "storesync_hub_ingest_conflicts_total",
            "Events received again with other content.",
            &self.ingest_conflicts,
        );
        counter(
            &mut out,
            "storesync_hub_cache_hits_total",
            "Dashboard cache hits.",
            &self.cache_hits,
        );
        counter(
            &mut out,
            "storesync_hub_cache_misses_total",
            "Dashboard cache misses.",
            &self.cache_misses,
        );
        counter(
            &mut out,
            "storesync_hub_rate_limited_total",
            "Requests refused with 429.",
            &self.rate_limited,
        );
        let hist = |out: &mut String, name: &str, labels: &str, h: &Histogram| {
            let sep = if labels.is_empty() { "" } else { "," };
            for (i, bound) in BUCKETS_S.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
            let braced = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            let _ = writeln!(out, "{name}_sum{braced} {}", h.sum_s);
            let _ = writeln!(out, "{name}_count{braced} {}", h.count);
        };
        let _ = writeln!(
            out,
            "# HELP storesync_hub_commit_seconds Ingest commit latency.\n# TYPE storesync_hub_commit_seconds histogram"
        );
        hist(
            &mut out,
            "storesync_hub_commit_seconds",
            "",
            &self.commit.lock().unwrap_or_else(|p| p.into_inner()),
        );
        let _ = writeln!(
            out,
            "# HELP storesync_hub_http_request_seconds API latency per route.\n# TYPE storesync_hub_http_request_seconds histogram"
        );
        for ((method, route, status), h) in
            self.routes.lock().unwrap_or_else(|p| p.into_inner()).iter()
        {
            let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
            hist(&mut out, "storesync_hub_http_request_seconds", &labels, h);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;
    use std::sync::atomic::Ordering;

    #[test]
    fn exposition_has_ingest_commit_route_and_cache_series() {
        let m = Metrics::default();
        m.record_commit(0.02, 10, 50, 1, 0);
        m.record_request("GET", "/api/v1/sales/series", 200, 0.003);
        m.cache_hits.fetch_add(2, Ordering::Relaxed);
        let text = m.render();
        for expected in [
            "storesync_hub_ingest_line_items_total 50",
            "storesync_hub_ingest_events_total 10",
            "storesync_hub_commit_seconds_bucket{le=\"0.025\"} 1",
            "storesync_hub_commit_seconds_bucket{le=\"0.01\"} 0",
            "storesync_hub_commit_seconds_count 1",
            "storesync_hub_http_request_seconds_bucket{method=\"GET\",route=\"/api/v1/sales/series\",status=\"200\",le=\"0.005\"} 1",
            "storesync_hub_http_request_seconds_count{method=\"GET\",route=\"/api/v1/sales/series\",status=\"200\"} 1",
            "storesync_hub_cache_hits_total 2",
            "storesync_hub_cache_misses_total 0",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        // Every sample is `name[{labels}] value`, never with empty braces.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
            assert!(!line.contains("{}"), "{line}");
        }
    }
}
