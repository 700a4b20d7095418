//! Freshness benchmark: a sale posted to a store's agent (`POST /api/v1/transactions`) →
//! visible in the hub's API (the `sales` tick of `GET /api/v1/live/sse`), at
//! `FRESH_RATE` transactions per second (default 500) spread evenly over `FRESH_STORES`
//! stores (default 20, one agent each), for `FRESH_SECONDS` (default 20, the first 2 s
//! not counted).
//!
//! Agents (the whole agent: API, writer, sync client) and the hub (PostgreSQL store on a
//! throw-away cluster with fsync on, QUIC sync server, HTTP API) run in this process, each
//! on its own sockets. Every store's sales commit in the order they were posted (one
//! stream per device), so the k-th sale a store's ticks count is the k-th posted there:
//! its latency is from writing its POST to reading the tick that counts it.
//!
//! Baseline in the same run: the POST's own round trip (the agent's durable local
//! commit), which every sale pays before it can sync.
//!
//! The senders are this benchmark's own open-loop POS clients rather than `storesync-sim
//! load`, whose generated records include returns and voids that the hub's sales ticks do
//! not count, so a tick could not be matched to its POST.
//!
//! Run: `cargo bench -p storesync-tests --bench freshness`.
//!
//! Figures of 2026-11-22 on the shared 2-core machine (load average 14-17): POST round trip
//! p50 5.2 ms, p99 87 ms; POST -> visible at the hub p50 893 ms, p99 4,719 ms (10,000 of
//! 10,000 sales seen). The 100 ms p99 target is not met: twenty devices' small commits
//! queue on the hub store's ingest.
//!
//! After the sync client reads the outbox on the writer's commit signal instead of a 20 ms
//! poll, and the hub's pipelined ingest commit, on the same machine with nothing else running
//! (load average 1-4 before each run; the benchmark itself keeps both cores about 88 % busy:
//! PostgreSQL 30 %, the agents' SQLite threads 22 %, the rest agents, hub and clients), five
//! runs: visible at the hub p50 4.3 / 5.5 / 6.4 / 8.7 / 6.5 ms, p99 192 / 55 / 101 / 243 /
//! 173 ms (median p99 173 ms; POST round trip p99 19-39 ms). The target is met in one run of
//! five; the tail follows the saturated CPU, not a queue in the pipeline.
//!
//! After the agent's writer and API lost about a quarter of their CPU per transaction and the
//! hub overlaps two commits per device, same machine, nothing else running (load average
//! 2-5), five runs: p50 4.2 / 3.7 / 3.2 / 4.6 / 3.3 ms, p99 65 / 62 / 168 / 62 / 145 ms
//! (median p99 65 ms; POST round trip p99 16-29 ms). The target is met in three runs of
//! five.
//!
//! The misses were the first seconds of each run: the p99 of the sales posted in each
//! second (now printed) was 150-300 ms for the first 8-9 s and 5-40 ms after, every run.
//! Both cores were busier and the disk took twice the writes in those seconds; with both
//! the agents and PostgreSQL on tmpfs they vanished (p99 8 and 11 ms over the whole run),
//! so the work was durable writes. The cause was the set-up: the stores had no stock, so
//! the first sale of each of the 500 SKUs raised an out-of-stock alert at each of the 20
//! stores, 10,000 alerts (each a row, an outbox event, a hub row and a live message) in the
//! time the sales need to name every SKU once. The stores now get opening stock before the
//! clock starts. Same machine, nothing else running (load average 2-4), eight runs: visible
//! at the hub p99 28.7 / 65.1 / 34.9 / 25.8 / 53.4 / 12.3 / 26.8 / 21.0 ms (median 27.8 ms),
//! p50 2.7-4.3 ms; POST round trip p99 3.6-11.5 ms. The target is met in all eight.

#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use storesync_hub::api::AppState;
use storesync_hub::auth::{Caller, Issuer, generate_signing_key_pem};
use storesync_hub::cache::Cache;
use storesync_hub::config::{AuthConfig, LimitsConfig};
use storesync_hub::store::Role;
use storesync_protocol::ids::TenantId;

/// A kept-alive HTTP/1.1 connection; `post` returns the status.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn connect(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            reader: BufReader::new(stream),
        }
    }

    fn post(&mut self, path: &str, body: &[u8]) -> u16 {
        self.request("POST", path, body).0
    }

    /// The status and body of a request.
    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).unwrap();
        (status, body)
    }
}

/// Events the agent at `api` holds that the hub has not acknowledged.
fn backlog(api: &str) -> u64 {
    let (status, body) = Conn::connect(api).request("GET", "/api/v1/outbox", b"");
    assert_eq!(status, 200);
    let outbox: serde_json::Value = serde_json::from_slice(&body).unwrap();
    outbox["backlog"].as_u64().unwrap()
}

/// Per store: when each sale's POST was written, in posting order.
type Sent = Arc<Mutex<Vec<Vec<Instant>>>>;

fn main() {
    let rate = common::env("FRESH_RATE", 500);
    let stores = common::env("FRESH_STORES", 20) as usize;
    let seconds = common::env("FRESH_SECONDS", 20);
    let warmup = Duration::from_secs(2);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "freshness benchmark: {rate} sales/s over {stores} stores for {seconds} s, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let cluster = storesync_hub::testing::PgCluster::start(true).unwrap();
    let names: Vec<String> = (0..stores).map(|i| format!("s{:03}", i + 1)).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();

    // The hub: sync server and API on one PostgreSQL database.
    let issuer = Issuer::from_pem(
        &generate_signing_key_pem().unwrap(),
        "storesync-hub",
        "storesync-api",
    )
    .unwrap();
    let (hub, api_addr, token) = runtime.block_on(async {
        let hub = common::Hub::start(&cluster, "freshness", &name_refs).await;
        let verifier = AppState::verifier_for(&issuer, Vec::new(), 5).unwrap();
        let limits = LimitsConfig {
            rate_per_s: 1e9,
            rate_burst: 1_000_000_000,
            ..LimitsConfig::default()
        };
        let state = AppState::new(
            Arc::clone(&hub.store),
            issuer.clone(),
            verifier,
            AuthConfig::default(),
            limits,
            Cache::new(10_000, Duration::from_secs(60)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(storesync_hub::api::serve(
            state,
            listener,
            std::future::pending(),
        ));
        let caller = Caller {
            tenant: TenantId::new(common::TENANT).unwrap(),
            subject: "bench".into(),
            role: Role::Analyst,
            stores: vec![],
        };
        let now_s = (common::now_ms() / 1000) as u64;
        let token = issuer.issue(&caller, now_s, 3600).unwrap();
        (hub, api_addr, token)
    });

    // The agents, enrolled, each running in full with its API on a free port.
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut agent_tasks = Vec::new();
    let mut agent_apis = Vec::new();
    for name in &names {
        let dir = tmp.path().join(name);
        let agent = runtime.block_on(async {
            let agent = common::Agent::init(&dir, name).await;
            agent.enroll(&hub).await;
            agent
        });
        let config_path = dir.join("storesync-edge.toml");
        let text = std::fs::read_to_string(&config_path)
            .unwrap()
            .replace("api = \"127.0.0.1:7400\"", "api = \"127.0.0.1:0\"")
            .replace("bridge = \"127.0.0.1:7401\"", "bridge = \"\"");
        std::fs::write(&config_path, text).unwrap();
        let settings = storesync_edge::config::load(&config_path).unwrap();
        drop(agent);
        let mut stopped = stop.subscribe();
        // One thread and runtime per agent, as each runs in its own process in a store.
        agent_tasks.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(storesync_edge::agent::run(settings, async move {
                    let _ = stopped.recv().await;
                }))
                .unwrap();
        }));
        let run_json = dir.join("run.json");
        let api = common::wait(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&run_json).ok()?;
            let value: serde_json::Value = serde_json::from_str(&text).ok()?;
            value["api"].as_str().map(str::to_owned)
        });
        agent_apis.push(api);
    }
    // Opening stock for every SKU the sales name, as a store has: without it each SKU's
    // first sale would raise an out-of-stock alert, thousands in the first seconds.
    for (api, name) in agent_apis.iter().zip(&names) {
        let mut conn = Conn::connect(api);
        let body = serde_json::to_vec(&common::opening_stock(name, common::now_ms())).unwrap();
        assert_eq!(conn.post("/api/v1/adjustments", &body), 200);
    }
    // Every agent connected, its opening stock at the hub, before the clock starts.
    runtime.block_on(async {
        let tenant = TenantId::new(common::TENANT).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = hub.store.device_status(&tenant).await.unwrap();
            if status.iter().filter(|d| d.last_seen_ms.is_some()).count() >= stores
                && agent_apis.iter().all(|api| backlog(api) == 0)
            {
                break;
            }
            assert!(Instant::now() < deadline, "agents did not connect");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // The hub's live feed: a sale is visible when its store's tick count reaches it.
    let sent: Sent = Arc::new(Mutex::new(vec![Vec::new(); stores]));
    let visible = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    // The same latencies by the second of the run their POST was written in.
    let by_second = Arc::new(Mutex::new(vec![
        Histogram::<u64>::new_with_bounds(
            1, 60_000_000, 3
        )
        .unwrap();
        seconds as usize + 1
    ]));
    let started = Instant::now() + Duration::from_millis(500);
    let reader = {
        let sent = Arc::clone(&sent);
        let visible = Arc::clone(&visible);
        let by_second = Arc::clone(&by_second);
        let names = names.clone();
        let total = rate * seconds;
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(&api_addr).unwrap();
            write!(
                stream,
                "GET /api/v1/live/sse HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut lines = BufReader::new(stream);
            let mut counted = vec![0usize; names.len()];
            let mut seen = 0u64;
            let mut line = String::new();
            while seen < total {
                line.clear();
                if lines.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let Some(data) = line.trim_end().strip_prefix("data:") else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                    continue;
                };
                let (Some(store), Some(added)) =
                    (value["storeId"].as_str(), value["transactions"].as_u64())
                else {
                    continue;
                };
                let now = Instant::now();
                let Some(index) = names.iter().position(|n| n == store) else {
                    continue;
                };
                let sent = sent.lock().unwrap();
                for k in counted[index]..counted[index] + added as usize {
                    if let Some(at) = sent[index].get(k) {
                        let micros = now.duration_since(*at).as_micros() as u64;
                        if *at >= started + warmup {
                            visible.lock().unwrap().saturating_record(micros);
                        }
                        let second = at.saturating_duration_since(started).as_secs() as usize;
                        if let Some(h) = by_second.lock().unwrap().get_mut(second) {
                            h.saturating_record(micros);
                        }
                    }
                }
                counted[index] += added as usize;
                seen += added;
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // Open-loop senders, one POS per store, each at rate / stores.
    let acked = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let per_store = rate * seconds / stores as u64;
    let senders: Vec<_> = agent_apis
        .iter()
        .enumerate()
        .map(|(index, api)| {
            let api = api.clone();
            let name = names[index].clone();
            let sent = Arc::clone(&sent);
            let acked = Arc::clone(&acked);
            let interval = Duration::from_secs_f64(stores as f64 / rate as f64);
            let offset = interval.mul_f64(index as f64 / stores as f64);
            std::thread::spawn(move || {
                let mut conn = Conn::connect(&api);
                for k in 0..per_store {
                    let due = started + offset + interval.mul_f64(k as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let body =
                        serde_json::to_vec(&common::sale_json(&name, k, common::now_ms())).unwrap();
                    let at = Instant::now();
                    sent.lock().unwrap()[index].push(at);
                    let status = conn.post("/api/v1/transactions", &body);
                    assert_eq!(status, 200);
                    if at >= started + warmup {
                        acked
                            .lock()
                            .unwrap()
                            .saturating_record(at.elapsed().as_micros() as u64);
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let posted = per_store * stores as u64;
    let seen = reader.join().unwrap();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let acked = acked.lock().unwrap();
    let visible = visible.lock().unwrap();
    println!(
        "baseline  POST answered by the agent (local durable commit): p50 {:>7.2} ms, p99 {:>7.2} ms ({} sales)",
        ms(&acked, 0.5),
        ms(&acked, 0.99),
        acked.len()
    );
    println!(
        "fresh     POST at the agent -> visible in the hub's API:      p50 {:>7.2} ms, p99 {:>7.2} ms, max {:.2} ms ({} of {posted} sales seen)",
        ms(&visible, 0.5),
        ms(&visible, 0.99),
        visible.max() as f64 / 1000.0,
        seen
    );
    let by_second = by_second.lock().unwrap();
    let per_second: Vec<String> = by_second
        .iter()
        .filter(|h| !h.is_empty())
        .map(|h| format!("{:.0}", ms(h, 0.99)))
        .collect();
    println!(
        "by second p99 of the sales posted in each second of the run (ms, the first {} s not counted above): {}",
        warmup.as_secs(),
        per_second.join(" ")
    );
    println!(
        "target    p99 < 100 ms: {}",
        if ms(&visible, 0.99) < 100.0 && seen == posted {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = stop.send(());
    for t in agent_tasks {
        t.join().unwrap();
    }
    runtime.block_on(hub.stop());
}
