//! End to end: two `storesync-bridge-sim` processes (the firmware on embassy's std executor)
//! → a fault proxy this test controls → a real `storesync-edge` process.
//!
//! While scans stream in, the agent is killed with SIGKILL and restarted, the link stalls
//! and then drops for a while, and one scan frame is corrupted on the wire. Afterwards the
//! agent's event log must hold every scan exactly once, with the content the bridge read,
//! in order per device; the corrupted frame must not have been acknowledged on the
//! connection that carried it.

#![allow(clippy::unwrap_used, clippy::zombie_processes)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Row;
use storesync_protocol::event::EventBody;
use storesync_protocol::validate::{Context, Limits, scan_from_json};
use storesync_protocol::wire::{Decoded, HEADER_LEN, Message, TRAILER_LEN, decode_frame, kind};
use storesync_protocol::{EventTime, ScanEvent};

const SIM: &str = env!("CARGO_BIN_EXE_storesync-bridge-sim");
const SCANS_PER_DEVICE: usize = 120;
const DEVICES: [&str; 2] = ["bridge-a", "bridge-b"];
/// The scan frame the proxy corrupts once: device, sequence number.
const CORRUPT: (&str, u64) = ("bridge-a", 20);
/// A generous bound so a broken build fails instead of hanging; not a timing assertion.
const HANG: Duration = Duration::from_secs(120);

/// The agent binary, built in this target directory.
fn edge_binary() -> PathBuf {
    let mut cargo = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cargo.args([
        "build",
        "--quiet",
        "-p",
        "storesync-edge",
        "--bin",
        "storesync-edge",
    ]);
    if !cfg!(debug_assertions) {
        cargo.arg("--release");
    }
    let status = cargo
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .unwrap();
    assert!(status.success(), "cargo build -p storesync-edge failed");
    // The simulator and the agent share the target directory's profile folder.
    Path::new(SIM).with_file_name("storesync-edge")
}

struct Agent {
    bin: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl Agent {
    fn init(bin: PathBuf, dir: &Path) -> Agent {
        let out = Command::new(&bin)
            .args(["init", "--data-dir"])
            .arg(dir)
            .args(["--tenant", "acme", "--store", "s1"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.join("storesync-edge.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text
            .replace("api = \"127.0.0.1:7400\"", "api = \"127.0.0.1:0\"")
            .replace("bridge = \"127.0.0.1:7401\"", "bridge = \"127.0.0.1:0\"");
        std::fs::write(&config, text).unwrap();
        Agent {
            bin,
            dir: dir.to_owned(),
            config,
            child: None,
        }
    }

    /// Starts the agent; returns its bridge address.
    fn start(&mut self) -> SocketAddr {
        let run_json = self.dir.join("run.json");
        let _ = std::fs::remove_file(&run_json);
        let child = Command::new(&self.bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let pid = u64::from(child.id());
        self.child = Some(child);
        let deadline = Instant::now() + HANG;
        loop {
            if let Ok(text) = std::fs::read_to_string(&run_json) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if v["pid"].as_u64() == Some(pid) {
                        return v["bridge"].as_str().unwrap().parse().unwrap();
                    }
                }
            }
            assert!(Instant::now() < deadline, "agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            let deadline = Instant::now() + HANG;
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "agent did not stop");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP proxy between the bridges and the agent that can stall, cut and corrupt.
#[derive(Clone, Default)]
struct Proxy {
    /// The agent's bridge address; `None` while it is down.
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    /// While false, connected streams stall and new ones are closed at once.
    link_up: Arc<AtomicBool>,
    /// Open connections, to cut them.
    open: Arc<Mutex<Vec<(u64, TcpStream)>>>,
    next_id: Arc<AtomicU64>,
    /// The connection that carried the corrupted frame.
    corrupted_on: Arc<Mutex<Option<u64>>>,
    /// Acknowledgements seen, per connection: (connection, device, seq).
    acks: Arc<Mutex<Vec<(u64, String, u64)>>>,
}

impl Proxy {
    fn start(&self) -> SocketAddr {
        self.link_up.store(true, Ordering::SeqCst);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = self.clone();
        std::thread::spawn(move || {
            for downstream in listener.incoming() {
                let Ok(downstream) = downstream else { continue };
                let upstream = *proxy.upstream.lock().unwrap();
                let upstream = match upstream {
                    Some(a) if proxy.link_up.load(Ordering::SeqCst) => TcpStream::connect(a),
                    _ => Err(std::io::ErrorKind::ConnectionRefused.into()),
                };
                let Ok(upstream) = upstream else {
                    let _ = downstream.shutdown(Shutdown::Both);
                    continue;
                };
                let id = proxy.next_id.fetch_add(1, Ordering::SeqCst);
                {
                    let mut open = proxy.open.lock().unwrap();
                    open.push((id, downstream.try_clone().unwrap()));
                    open.push((id, upstream.try_clone().unwrap()));
                }
                let p = proxy.clone();
                let (d, u) = (
                    downstream.try_clone().unwrap(),
                    upstream.try_clone().unwrap(),
                );
                std::thread::spawn(move || p.pump(id, d, u, true));
                let p = proxy.clone();
                std::thread::spawn(move || p.pump(id, upstream, downstream, false));
            }
        });
        addr
    }

    /// Copies `from` to `to` frame by frame, corrupting and recording on the way.
    fn pump(&self, id: u64, mut from: TcpStream, mut to: TcpStream, to_agent: bool) {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match from.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buffer.extend_from_slice(&chunk[..n]);
            // Forward whole frames only, so a corruption lands on a known frame.
            while buffer.len() >= HEADER_LEN {
                let len = u32::from_le_bytes(buffer[4..8].try_into().unwrap()) as usize;
                let total = HEADER_LEN + len + TRAILER_LEN;
                if buffer.len() < total {
                    break;
                }
                let mut frame: Vec<u8> = buffer.drain(..total).collect();
                self.inspect(id, &mut frame, to_agent);
                while !self.link_up.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if to.write_all(&frame).is_err() {
                    break;
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    }

    fn inspect(&self, id: u64, frame: &mut [u8], to_agent: bool) {
        let Ok(Some((Decoded::Message(message), _))) = decode_frame(frame, 1 << 20) else {
            return;
        };
        match message {
            Message::BridgeScan(scan) if to_agent => {
                let mut corrupted = self.corrupted_on.lock().unwrap();
                if corrupted.is_none() && scan.device.as_str() == CORRUPT.0 && scan.seq == CORRUPT.1
                {
                    assert_eq!(frame[3], kind::BRIDGE_SCAN);
                    let middle = HEADER_LEN + (frame.len() - HEADER_LEN - TRAILER_LEN) / 2;
                    frame[middle] ^= 0x5a;
                    *corrupted = Some(id);
                }
            }
            Message::BridgeAck(ack) if !to_agent => {
                self.acks
                    .lock()
                    .unwrap()
                    .push((id, ack.device.as_str().to_owned(), ack.seq));
            }
            _ => {}
        }
    }

    /// Closes every open connection.
    fn cut(&self) {
        for (_, stream) in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn scan_line(device: &str, n: usize) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let timestamp = EventTime::from_unix_ms(now - 60_000 + n as i64, 0).to_rfc3339();
    serde_json::json!({
        "scanId": format!("{device}-{n:04}"),
        "storeId": "s1",
        // GTIN-13 with a valid check digit; the SKU carries the per-scan content.
        "gtin": "4006381333931",
        "sku": format!("sku-{}", n % 17),
        "purpose": if n.is_multiple_of(3) { "sale" } else { "receiving" },
        "quantity": n % 9 + 1,
        "timestamp": timestamp,
        "registerId": device,
    })
    .to_string()
}

fn parse(line: &str) -> ScanEvent {
    let limits = Limits::default();
    let ctx = Context {
        now_ms: i64::MAX / 4,
        limits: &limits,
        store: None,
    };
    scan_from_json(&serde_json::from_str(line).unwrap(), &ctx).unwrap()
}

struct Sim {
    child: Child,
    lines: Vec<String>,
}

fn start_sim(device: &str, proxy: SocketAddr, seed: u64) -> Sim {
    let child = Command::new(SIM)
        .args(["--device", device, "--agent", &proxy.to_string()])
        .args(["--ack-timeout-ms", "700", "--heartbeat-interval-ms", "300"])
        .args([
            "--reconnect-delay-ms-min",
            "50",
            "--reconnect-delay-ms-max",
            "400",
        ])
        .args(["--seed", &seed.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("BRIDGE_SIM_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    Sim {
        child,
        lines: (1..=SCANS_PER_DEVICE)
            .map(|n| scan_line(device, n))
            .collect(),
    }
}

impl Sim {
    fn feed(&mut self, range: std::ops::Range<usize>) {
        let stdin = self.child.stdin.as_mut().unwrap();
        for line in &self.lines[range] {
            writeln!(stdin, "{line}").unwrap();
            stdin.flush().unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
    }

    /// Closes the input and waits for the simulator to report everything acknowledged.
    fn finish(mut self) -> serde_json::Value {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + HANG;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the bridge never drained");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(self.child.wait().unwrap().success());
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    }
}

/// The scans in the agent's log, in log order.
fn logged_scans(db: &Path) -> Vec<ScanEvent> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("sqlite://{}?mode=ro", db.display());
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        let rows = sqlx::query("SELECT body FROM events ORDER BY epoch, class, seq")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        rows.iter()
            .filter_map(|row| {
                let body: Vec<u8> = row.get(0);
                match postcard::from_bytes::<EventBody>(&body).unwrap() {
                    EventBody::Scan(scan) => Some(scan),
                    _ => None,
                }
            })
            .collect()
    })
}

fn dead_letters(db: &Path) -> i64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("sqlite://{}?mode=ro", db.display());
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        sqlx::query("SELECT count(*) FROM dead_letters")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0)
    })
}

#[test]
fn every_scan_reaches_the_agent_exactly_once_through_crashes_drops_and_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = Agent::init(edge_binary(), &tmp.path().join("edge"));
    let proxy = Proxy::default();
    *proxy.upstream.lock().unwrap() = Some(agent.start());
    let proxy_addr = proxy.start();
    let mut sims: Vec<Sim> = DEVICES
        .iter()
        .zip(1..)
        .map(|(device, seed)| start_sim(device, proxy_addr, seed))
        .collect();
    let third = SCANS_PER_DEVICE / 3;

    // 1. Streaming normally; the proxy corrupts bridge-a's scan 20 on the way.
    for sim in &mut sims {
        sim.feed(0..third / 2);
    }
    // 2. The agent dies mid-stream (SIGKILL) and comes back.
    agent.kill9();
    *proxy.upstream.lock().unwrap() = None;
    proxy.cut();
    for sim in &mut sims {
        sim.feed(third / 2..third);
    }
    *proxy.upstream.lock().unwrap() = Some(agent.start());
    // 3. The link stalls (the bridges' acknowledgement timeout must notice), then drops.
    for sim in &mut sims {
        sim.feed(third..third + third / 2);
    }
    proxy.link_up.store(false, Ordering::SeqCst);
    for sim in &mut sims {
        sim.feed(third + third / 2..2 * third);
    }
    std::thread::sleep(Duration::from_millis(1_500));
    proxy.cut();
    proxy.link_up.store(true, Ordering::SeqCst);
    // 4. The rest, then wait until each bridge has everything acknowledged.
    for sim in &mut sims {
        sim.feed(2 * third..SCANS_PER_DEVICE);
    }
    let expected: BTreeMap<&str, Vec<ScanEvent>> = DEVICES
        .iter()
        .zip(&sims)
        .map(|(device, sim)| (*device, sim.lines.iter().map(|l| parse(l)).collect()))
        .collect();
    for (device, sim) in DEVICES.iter().zip(sims) {
        let summary = sim.finish();
        eprintln!("{device}: {summary}");
        assert_eq!(summary["recorded"], SCANS_PER_DEVICE, "{device}: {summary}");
        assert_eq!(summary["acked"], SCANS_PER_DEVICE, "{device}: {summary}");
        assert_eq!(summary["refusedFull"], 0, "{device}: {summary}");
        assert!(
            summary["disconnects"].as_u64().unwrap() >= 2,
            "{device}: {summary}"
        );
    }
    agent.terminate();

    // Exactly once, same content, in order per device.
    let logged = logged_scans(&agent.dir.join("edge.db"));
    for device in DEVICES {
        let got: Vec<&ScanEvent> = logged
            .iter()
            .filter(|s| s.register_id.as_ref().map(|r| r.as_str()) == Some(device))
            .collect();
        let want: Vec<&ScanEvent> = expected[device].iter().collect();
        assert_eq!(got.len(), want.len(), "{device}: count");
        for (n, (got, want)) in got.iter().zip(&want).enumerate() {
            assert_eq!(got, want, "{device}: scan {}", n + 1);
        }
    }
    assert_eq!(logged.len(), DEVICES.len() * SCANS_PER_DEVICE);
    // The corrupted frame was rejected as a stream error, not dead-lettered, and not
    // acknowledged on the connection that carried it.
    assert_eq!(dead_letters(&agent.dir.join("edge.db")), 0);
    let corrupted_on = proxy
        .corrupted_on
        .lock()
        .unwrap()
        .expect("the proxy corrupted a frame");
    let acks = proxy.acks.lock().unwrap();
    assert!(
        !acks.iter().any(|(id, device, seq)| *id == corrupted_on
            && device == CORRUPT.0
            && *seq >= CORRUPT.1),
        "the agent acknowledged a corrupted frame: {acks:?}"
    );
    assert!(
        acks.iter()
            .any(|(_, device, seq)| device == CORRUPT.0 && *seq >= CORRUPT.1),
        "the corrupted scan was acknowledged after its retransmission"
    );
}

#[test]
fn an_empty_input_exits_at_once() {
    let mut child = Command::new(SIM)
        .args(["--agent", "127.0.0.1:9"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let out = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .last()
        .unwrap()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["recorded"], 0);
}
