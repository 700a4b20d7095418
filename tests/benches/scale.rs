//! Scale benchmark: the hub's memory with `SCALE_AGENTS` (default 5,000) connected devices.
//!
//! The hub's sync server runs in a child process (this binary again, on an embedded store
//! in a temporary directory), so its resident memory is its own. The parent enrolls every
//! device with a one-time token through the real enrollment protocol (QUIC, CSR, the
//! tenant CA), then opens one sync connection per device with its own certificate (QUIC +
//! mutual TLS) and drives a protocol `EdgeSession` with an empty outbox through the
//! handshake and heartbeats: lightweight clients speaking the real protocol.
//!
//! Printed: the hub's RSS idle, after the enrollments, and with every device connected,
//! and the difference per connection. Target: < 1 GB at 5,000 connections.
//!
//! Run: `cargo bench -p storesync-tests --bench scale`.
//!
//! Figures of 2026-11-22 on the shared 2-core machine: hub RSS idle 11.2 MiB, after 5,000
//! enrollments 74.4 MiB, with 5,000 devices connected 311 MiB (48.4 KiB per connection);
//! target met.

#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use storesync_edge::sync::Paths;
use storesync_edge::sync::enroll::{self, Token};
use storesync_hub::store::{Store, StoreInfo};
use storesync_protocol::event::Epoch;
use storesync_protocol::ids::{DeviceId, StoreId, TenantId};
use storesync_protocol::session::{EdgeAction, EdgeSession, EdgeSnapshot, SessionConfig};
use storesync_protocol::wire;
use tokio::sync::watch;

use common::TENANT;

fn store_name(n: usize) -> String {
    format!("s{n:05}")
}

/// The child: a hub sync server on an embedded store; prints one token per device, its
/// address and `ready`, and runs until its standard input closes.
async fn hub_child(db: &str, agents: usize) {
    let store = storesync_hub::store::sqlite::SqliteStore::open(std::path::Path::new(db))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let tenant = TenantId::new(TENANT).unwrap();
    store.create_tenant(&tenant, TENANT).await.unwrap();
    let mut out = std::io::stdout().lock();
    for n in 0..agents {
        let id = StoreId::new(store_name(n)).unwrap();
        store
            .upsert_store(
                &tenant,
                &StoreInfo {
                    store_id: id.clone(),
                    name: store_name(n),
                    region: "north".into(),
                    time_zone: "UTC".into(),
                },
            )
            .await
            .unwrap();
        let token =
            storesync_hub::sync::server::enroll_token(store.as_ref(), &tenant, &id, 3_600_000)
                .await
                .unwrap();
        writeln!(out, "token {token}").unwrap();
    }
    let mut options = storesync_hub::sync::ServerOptions::new("127.0.0.1:0".parse().unwrap());
    options.connections_max = agents + 100;
    let token_key = storesync_hub::sync::TokenKey {
        pem: String::new(),
        issuer: "storesync-bench".into(),
        audience: "storesync-bench".into(),
    };
    let server = storesync_hub::sync::SyncServer::start(store, token_key, options)
        .await
        .unwrap();
    writeln!(out, "addr {}", server.local_addr()).unwrap();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    drop(out);
    // Runs until the parent closes standard input.
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
    })
    .await
    .unwrap();
    server.shutdown().await;
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One enrolled device: its material on disk and its identity.
struct Device {
    paths: Paths,
    store: StoreId,
    device: DeviceId,
}

/// Keeps one sync session open until `stop`; counts it in `connected` once welcomed.
async fn run_device(
    endpoint: quinn::Endpoint,
    hub: SocketAddr,
    device: Arc<Device>,
    connected: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let (cert, key, hub_ca) = enroll::credentials(&device.paths).map_err(|e| e.to_string())?;
    let tls =
        storesync_edge::sync::tls::sync_config(hub_ca, cert, key, storesync_edge::sync::ALPN_SYNC)
            .map_err(|e| e.to_string())?;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(storesync_edge::sync::tls::transport()));
    let connection = endpoint
        .connect_with(config, hub, storesync_edge::sync::HUB_SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    let session_config = SessionConfig::default();
    let frame_len_max = session_config.frame_len_max;
    let mut session = EdgeSession::new(
        session_config,
        EdgeSnapshot {
            tenant: TenantId::new(TENANT).unwrap(),
            store: device.store.clone(),
            device: device.device.clone(),
            epoch: Epoch(rand::random()),
            link: None,
            streams: Vec::new(),
        },
    );
    session.connect(common::now_ms());
    let mut inbox = Vec::new();
    let mut counted = false;
    loop {
        while let Some(frame) = session.poll_transmit() {
            send.write_all(&frame).await.map_err(|e| e.to_string())?;
        }
        while let Some(action) = session.poll_action() {
            match action {
                EdgeAction::Connected { .. } if !counted => {
                    counted = true;
                    connected.fetch_add(1, Ordering::Relaxed);
                }
                EdgeAction::Closed(reason) => return Err(format!("{reason:?}")),
                _ => {}
            }
        }
        let wait = session
            .poll_timeout()
            .map_or(60_000, |at| at.saturating_sub(common::now_ms()).max(0));
        tokio::select! {
            _ = stop.changed() => {
                connection.close(0u32.into(), b"done");
                return Ok(());
            }
            chunk = recv.read_chunk(64 * 1024, true) => match chunk {
                Ok(Some(chunk)) => {
                    inbox.extend_from_slice(&chunk.bytes);
                    let now = common::now_ms();
                    wire::drain_frames(
                        &mut inbox,
                        frame_len_max,
                        |_, _| Err("the hub sends no compressed frames".to_string()),
                        |frame| session.handle_bytes(now, frame),
                    )?;
                }
                Ok(None) => return Err("the hub finished the stream".into()),
                Err(e) => return Err(e.to_string()),
            },
            _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => session.handle_timeout(common::now_ms()),
        }
    }
}

fn main() {
    let agents = common::env("SCALE_AGENTS", 5_000) as usize;
    if let Ok(db) = std::env::var("STORESYNC_SCALE_HUB_DB") {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(hub_child(&db, agents));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "scale benchmark: {agents} devices, QUIC + mutual TLS, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("STORESYNC_SCALE_HUB_DB", tmp.path().join("hub.db"))
        .env("SCALE_AGENTS", agents.to_string())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut tokens = Vec::new();
    let mut addr: Option<SocketAddr> = None;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(token) = line.strip_prefix("token ") {
            tokens.push(token.parse::<Token>().unwrap());
        } else if let Some(a) = line.strip_prefix("addr ") {
            addr = Some(a.parse().unwrap());
        } else if line == "ready" {
            break;
        }
    }
    let hub = addr.expect("the hub child printed its address");
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(pid);
    println!(
        "hub       idle (server started, {agents} stores):           RSS {:>8.1} MiB",
        idle as f64 / 1024.0
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let devices: Vec<Arc<Device>> = runtime.block_on(async {
        let hub_text = hub.to_string();
        let tokens = Arc::new(std::sync::Mutex::new(
            tokens.into_iter().enumerate().collect::<Vec<_>>(),
        ));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let tokens = Arc::clone(&tokens);
            let hub_text = hub_text.clone();
            let root = tmp.path().to_path_buf();
            tasks.push(tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let Some((n, token)) = tokens.lock().unwrap().pop() else {
                        return done;
                    };
                    let store = StoreId::new(store_name(n)).unwrap();
                    let device = DeviceId::new(format!("d{n:05}")).unwrap();
                    let paths = Paths::new(&root.join(store_name(n)));
                    std::fs::create_dir_all(paths.dir()).unwrap();
                    enroll::enroll(
                        &paths,
                        &hub_text,
                        &token,
                        &TenantId::new(TENANT).unwrap(),
                        &store,
                        &device,
                    )
                    .await
                    .unwrap();
                    done.push(Arc::new(Device {
                        paths,
                        store,
                        device,
                    }));
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let enrolled = rss_kib(pid);
    println!(
        "hub       after {} enrollments ({:.1} s):                    RSS {:>8.1} MiB",
        devices.len(),
        started.elapsed().as_secs_f64(),
        enrolled as f64 / 1024.0
    );

    let connected = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let (stop, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let tasks = runtime.block_on(async {
        // A few client sockets, each carrying many connections, as a NAT'd fleet would not,
        // but the hub sees one connection per device either way.
        let endpoints: Vec<quinn::Endpoint> =
            (0..8).map(|_| enroll::endpoint_for(hub).unwrap()).collect();
        let mut tasks = Vec::new();
        for (i, device) in devices.iter().enumerate() {
            let endpoint = endpoints[i % endpoints.len()].clone();
            let counter = Arc::clone(&connected);
            let failed = Arc::clone(&failures);
            let device = Arc::clone(device);
            let stop = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = run_device(endpoint, hub, device, counter, stop).await {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("device session failed: {e}");
                    }
                }
            }));
            // Paced so the handshakes do not all land in the same instant.
            while i + 1 - connected.load(Ordering::Relaxed) - failures.load(Ordering::Relaxed) > 64
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while connected.load(Ordering::Relaxed) + failures.load(Ordering::Relaxed) < devices.len()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tasks
    });
    let up = connected.load(Ordering::Relaxed);
    let connect_s = started.elapsed().as_secs_f64();
    // Let a heartbeat round pass with every session established.
    std::thread::sleep(Duration::from_secs(6));
    let full = rss_kib(pid);
    println!(
        "hub       {up} devices connected ({connect_s:.1} s), after a heartbeat round: RSS {:>8.1} MiB",
        full as f64 / 1024.0
    );
    println!(
        "per       connection: {:.1} KiB ((connected - after enrollments) / {up}); failures {}",
        (full.saturating_sub(enrolled)) as f64 / up.max(1) as f64,
        failures.load(Ordering::Relaxed)
    );
    println!(
        "target    < 1 GiB at 5,000 connections: {} ({:.0} MiB at {up})",
        if full < 1024 * 1024 && up >= 5_000 {
            "met"
        } else {
            "NOT met"
        },
        full as f64 / 1024.0
    );
    let _ = stop.send(true);
    runtime.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    drop(child.stdin.take());
    let _ = child.wait();
}
