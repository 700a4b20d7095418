//! Ingest benchmark: 3-item transactions with random UUIDv4 ids, through the store's
//! internal API (the writer) and through HTTP (the real binary, 64 keep-alive clients),
//! each beside a baseline measured in the same run: raw multi-row INSERTs of the same rows
//! (one row per line item) into SQLite with the same durability (WAL, synchronous=FULL).
//! Also: idle RSS, peak RSS under load, and ack latency p50/p99 at a steady 1,000
//! transactions/s.
//!
//! Run: `cargo bench -p storesync-edge --bench ingest` (optionally `-- <transactions>`, and
//! `internal` or `http` to run only that part beside the baseline).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};
use storesync_edge::writer::{Record, Submission};
use storesync_protocol::validate::{Context, transaction_from_json};

const CLIENTS: usize = 64;

fn tx_json(now_ms: i64, n: u64) -> Value {
    let ts = jiff::Timestamp::from_millisecond(now_ms - (n % 3_600) as i64 * 1_000).unwrap();
    let items: Vec<Value> = (0..3)
        .map(|i| json!({"itemId": format!("sku-{}", (n * 7 + i * 13) % 500), "quantity": 1 + (n + i) % 3, "price": 2.5}))
        .collect();
    let total: f64 = (0..3).map(|i| (1 + (n + i) % 3) as f64 * 2.5).sum();
    json!({
        "transactionId": uuid::Uuid::new_v4().to_string(),
        "storeId": "s1",
        "timestamp": ts.to_string(),
        "items": items,
        "totalAmount": total,
        "paymentMethod": if n.is_multiple_of(3) { "cash" } else { "card" },
        "registerId": format!("r{}", n % 4),
    })
}

async fn baseline(dir: &std::path::Path, transactions: u64, unique: bool) -> f64 {
    let path = dir.join(if unique {
        "baseline-unique.db"
    } else {
        "baseline.db"
    });
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
    sqlx::query("CREATE TABLE lines (txn_id TEXT NOT NULL, line INTEGER NOT NULL, store TEXT, ts INTEGER, item TEXT, qty INTEGER, price INTEGER)")
        .execute(&mut conn)
        .await
        .unwrap();
    if unique {
        sqlx::query("CREATE UNIQUE INDEX lines_id ON lines (txn_id, line)")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let now = jiff::Timestamp::now().as_millisecond();
    let per_commit = 1_000u64;
    let started = Instant::now();
    let mut n = 0u64;
    while n < transactions {
        let rows: Vec<(String, i64, i64, String, i64)> = (n..(n + per_commit).min(transactions))
            .flat_map(|k| {
                let id = uuid::Uuid::new_v4().to_string();
                (0..3).map(move |i| {
                    (
                        id.clone(),
                        i,
                        now - k as i64,
                        format!("sku-{}", (k * 7 + i as u64 * 13) % 500),
                        1 + ((k + i as u64) % 3) as i64,
                    )
                })
            })
            .collect();
        let mut tx = conn.begin().await.unwrap();
        for chunk in rows.chunks(1_000) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO lines (txn_id, line, store, ts, item, qty, price) ");
            qb.push_values(chunk, |mut b, (id, line, ts, item, qty)| {
                b.push_bind(id.clone())
                    .push_bind(*line)
                    .push_bind("s1")
                    .push_bind(*ts)
                    .push_bind(item.clone())
                    .push_bind(*qty)
                    .push_bind(25_000i64);
            });
            qb.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        n += per_commit;
    }
    transactions as f64 / started.elapsed().as_secs_f64()
}

async fn internal(dir: &std::path::Path, transactions: u64) -> f64 {
    let data = dir.join("internal");
    let text = storesync_edge::config::default_toml(&data, "acme", "s1", "UTC");
    let settings = storesync_edge::config::check(toml::from_str(&text).unwrap(), dir).unwrap();
    let lock = storesync_edge::store::lock_data_dir(&data).unwrap();
    let now = jiff::Timestamp::now().as_millisecond();
    let opened =
        storesync_edge::store::open(&settings, lock, storesync_edge::store::OpenMode::Run, now)
            .await
            .unwrap();
    let (alerts, _) = tokio::sync::broadcast::channel(1024);
    let settings = Arc::new(settings);
    let (writer, task) = storesync_edge::writer::spawn(
        opened.writer_conn,
        opened.sealer,
        Arc::clone(&settings),
        alerts,
        Arc::default(),
        now,
    )
    .await
    .unwrap();
    // Validated records prepared ahead: this measures the store, not JSON parsing.
    let ctx = Context {
        now_ms: now,
        limits: &settings.record_limits,
        store: Some(&settings.store),
    };
    let records: Vec<Record> = (0..transactions)
        .map(|n| Record::Transaction(transaction_from_json(&tx_json(now, n), &ctx).unwrap()))
        .collect();
    let records = Arc::new(std::sync::Mutex::new(records));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let writer = writer.clone();
        let records = Arc::clone(&records);
        clients.push(tokio::spawn(async move {
            loop {
                let Some(record) = records.lock().unwrap().pop() else {
                    return;
                };
                let submission = Submission {
                    source: "bench".into(),
                    kind: "transaction",
                    raw: Vec::new(),
                    parsed: Ok(record),
                    resubmit_of: None,
                };
                let outcome = writer.submit(vec![submission], now).await.unwrap();
                assert!(matches!(
                    outcome[0],
                    storesync_edge::writer::Outcome::Accepted { .. }
                ));
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let rate = transactions as f64 / started.elapsed().as_secs_f64();
    drop(writer);
    task.await.unwrap();
    rate
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn http(transactions: u64) -> (f64, u64, u64, u64, u64, u64) {
    let (_tmp, agent) =
        common::Agent::new(|c| c.replace("cooldown_minutes = 60", "cooldown_minutes = 100000"));
    let pid = agent.child.as_ref().unwrap().id();
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(pid, "VmRSS:");
    let now = jiff::Timestamp::now().as_millisecond();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let next = Arc::clone(&next);
            let addr = agent.api;
            std::thread::spawn(move || {
                let mut conn = common::HttpConn::connect(addr).unwrap();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as u64;
                    if n >= transactions {
                        return;
                    }
                    let body = serde_json::to_vec(&tx_json(now, n)).unwrap();
                    let (status, _) = conn
                        .request(
                            "POST",
                            "/api/v1/transactions",
                            &[("Content-Type", "application/json")],
                            &body,
                        )
                        .unwrap();
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    let mut peak_sampled = 0;
    while threads.iter().any(|t| !t.is_finished()) {
        peak_sampled = peak_sampled.max(rss_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(100));
    }
    for t in threads {
        t.join().unwrap();
    }
    let rate = transactions as f64 / started.elapsed().as_secs_f64();
    let after = rss_kib(pid, "VmRSS:");
    let hwm = rss_kib(pid, "VmHWM:");

    // Steady 1,000 transactions/s: 10 clients at 100/s each, 5 s.
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let per_client = 500u64;
    let threads: Vec<_> = (0..10u64)
        .map(|c| {
            let addr = agent.api;
            std::thread::spawn(move || {
                let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
                let mut conn = common::HttpConn::connect(addr).unwrap();
                let start = Instant::now() + Duration::from_millis(c);
                for k in 0..per_client {
                    let due = start + Duration::from_millis(10 * k);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let body =
                        serde_json::to_vec(&tx_json(now, 1_000_000_000 + c * per_client + k))
                            .unwrap();
                    let sent = Instant::now();
                    let (status, _) = conn
                        .request(
                            "POST",
                            "/api/v1/transactions",
                            &[("Content-Type", "application/json")],
                            &body,
                        )
                        .unwrap();
                    assert_eq!(status, 200);
                    h.record(sent.elapsed().as_micros() as u64).unwrap();
                }
                h
            })
        })
        .collect();
    for t in threads {
        hist.add(t.join().unwrap()).unwrap();
    }
    (
        rate,
        idle,
        peak_sampled.max(after),
        hwm,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
    )
}

fn main() {
    let transactions: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let only: Option<String> = std::env::args()
        .skip(1)
        .find(|a| a == "internal" || a == "http");
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "storesync-edge ingest benchmark: {transactions} transactions of 3 items, random UUIDv4 ids, WAL + synchronous=FULL"
    );
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let base = runtime.block_on(baseline(tmp.path(), transactions, false));
    println!(
        "baseline  raw multi-row INSERT, 3 rows/transaction, 1,000 transactions/commit: {base:>10.0} transactions/s"
    );
    if only.is_none() {
        let base_unique = runtime.block_on(baseline(tmp.path(), transactions, true));
        println!(
            "baseline  same with UNIQUE index on the random id:                       {base_unique:>10.0} transactions/s ({:.2}x of baseline)",
            base_unique / base
        );
    }
    if run("internal") {
        let internal = runtime.block_on(internal(tmp.path(), transactions));
        println!(
            "internal  writer (seal, dedupe, rollups, inventory, heads), {CLIENTS} tasks:      {internal:>10.0} transactions/s ({:.2}x of baseline, target >= 0.5)",
            internal / base
        );
    }
    drop(runtime);
    if !run("http") {
        return;
    }

    let (rate, idle, load, hwm, p50, p99) = http(transactions);
    println!(
        "http      POST one transaction per request, {CLIENTS} keep-alive clients:   {rate:>10.0} transactions/s ({:.2}x of baseline, target >= 20000/s)",
        rate / base
    );
    println!(
        "rss       idle {} MiB (target < 30), under load {} MiB, peak {} MiB (target < 100)",
        idle / 1024,
        load / 1024,
        hwm / 1024
    );
    println!(
        "latency   at a steady 1,000 transactions/s: p50 {:.2} ms, p99 {:.2} ms",
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0
    );
}
