//! The demo smoke test: `storesync-sim demo` on real processes with short durations. Data
//! reaches the hub API, the store that went offline catches up (the hub ends up with every
//! transaction each agent took), and Ctrl-C leaves no process behind.

mod common;

use std::collections::HashMap;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use storesync_sim::demo::{ADMIN_PASSWORD, ADMIN_USER, TENANT};
use storesync_sim::http::{self, form_encode};

/// Waits for a stdout line matching `pred`, failing after `limit`.
fn wait_line(
    lines: &mpsc::Receiver<String>,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(_) => {}
            Err(e) => panic!("no expected line from the demo within {limit:?}: {e}"),
        }
    }
}

fn token(hub: &str) -> String {
    let body = format!(
        "grant_type=password&tenant={}&username={}&password={}",
        form_encode(TENANT),
        form_encode(ADMIN_USER),
        form_encode(ADMIN_PASSWORD)
    );
    let r = http::request(
        hub,
        "POST",
        "/oauth/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
        Duration::from_secs(10),
    )
    .expect("token request");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json().expect("json")["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

fn get(hub: &str, token: &str, path: &str) -> Value {
    common::get_json(hub, Some(token), path)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Every transaction (sales, returns, voids) per store the hub holds over the last days.
fn hub_transactions(hub: &str, token: &str) -> HashMap<String, i64> {
    let to = now_ms() + 3_600_000;
    let from = to - 4 * 86_400_000;
    let v = get(
        hub,
        token,
        &format!("/api/v1/sales/series?bucket=day&group_by=store&from={from}&to={to}"),
    );
    let mut out = HashMap::new();
    for series in v["series"].as_array().into_iter().flatten() {
        let n: i64 = series["points"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                ["transactions", "refunds", "voids"]
                    .iter()
                    .map(|k| p[*k].as_i64().unwrap_or(0))
                    .sum::<i64>()
            })
            .sum();
        out.insert(series["group"].as_str().unwrap_or_default().to_owned(), n);
    }
    out
}

/// The demo process; when a check fails it gets Ctrl-C (and then a kill), so a failing
/// test leaves no hub or agent behind either.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-INT", &self.0.id().to_string()])
                .status();
            let until = Instant::now() + Duration::from_secs(40);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Every process below `pid` (children, grandchildren...), from `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = HashMap::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.insert(p, ppid);
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, _) in parent_of.iter().filter(|(_, pp)| **pp == parent) {
            out.push(*child);
            frontier.push(*child);
        }
    }
    out
}

/// A running demo: its process, its stdout lines, the hub's address and a token.
struct Demo {
    proc: StopOnDrop,
    lines: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
    hub: String,
    token: String,
}

/// Starts `storesync-sim demo` with `args` in `state` and waits for its banner.
fn start_demo(bin_dir: &Path, state: &Path, args: &[&str]) -> Demo {
    let mut proc = StopOnDrop(
        Command::new(env!("CARGO_BIN_EXE_storesync-sim"))
            .arg("demo")
            .args(args)
            .arg("--skip-ui-build")
            .arg("--state-dir")
            .arg(state)
            .arg("--bin-dir")
            .arg(bin_dir)
            .env_remove("CARGO")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start demo"),
    );
    let stdout = proc.0.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            println!("demo| {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let banner = wait_line(&lines, Duration::from_secs(120), |l| {
        l.trim_start().starts_with("dashboard")
    });
    let hub = banner
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("hub address")
        .to_owned();
    let token = token(&hub);
    Demo {
        proc,
        lines,
        reader,
        hub,
        token,
    }
}

/// Waits until the hub holds transactions of every demo store.
fn wait_for_every_store(demo: &Demo) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = hub_transactions(&demo.hub, &demo.token);
        if ["s001", "s002", "s003"]
            .iter()
            .all(|s| seen.get(*s).copied().unwrap_or(0) > 0)
        {
            return;
        }
        assert!(
            Instant::now() < until,
            "no data for every store at the hub: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Ctrl-C: the demo exits successfully and no process it started (listed in its `pids`
/// file or found below it in `/proc`) is left.
fn stop_cleanly(mut demo: Demo, state: &Path) {
    let pids: Vec<u32> = std::fs::read_to_string(state.join("pids"))
        .expect("pids")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 4, "hub and three agents: {pids:?}");
    let children = descendants(demo.proc.0.id());
    for p in &pids {
        assert!(
            children.contains(p),
            "{p} of the pids file is not a child of the demo: {children:?}"
        );
    }
    let status = Command::new("kill")
        .args(["-INT", &demo.proc.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let until = Instant::now() + Duration::from_secs(45);
    let exit = loop {
        if let Some(exit) = demo.proc.0.try_wait().expect("wait") {
            break exit;
        }
        if Instant::now() > until {
            let _ = demo.proc.0.kill();
            panic!("the demo did not stop after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "demo exit: {exit}");
    drop(demo.lines);
    let _ = demo.reader.join();
    let left: Vec<u32> = pids
        .into_iter()
        .chain(children)
        .filter(|p| alive(*p))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn demo_trades_goes_offline_catches_up_and_stops_cleanly() {
    let bin_dir = common::sibling_binaries();
    let state = tempfile::tempdir().expect("tempdir");
    let before_live_ms = now_ms();
    let demo = start_demo(
        &bin_dir,
        state.path(),
        &[
            "--backfill-days",
            "2",
            "--live-seconds",
            "20",
            "--offline-after-seconds",
            "4",
            "--offline-seconds",
            "5",
            "--rate",
            "6",
            // Longer than live traffic, however slow the machine: the till stays down.
            "--outage-seconds",
            "1000",
        ],
    );
    let (hub, token, lines) = (demo.hub.clone(), demo.token.clone(), &demo.lines);

    // Backfilled data reaches the hub.
    wait_for_every_store(&demo);

    // The offline store comes back; after live traffic ends, the hub holds every
    // transaction each agent took, including what s002 queued while offline.
    let window = wait_line(lines, Duration::from_secs(60), |l| {
        l.starts_with("offline-window ")
    });
    let back_ms: i64 = window
        .split(' ')
        .nth(3)
        .and_then(|s| s.parse().ok())
        .expect("window end");
    let mut sent = HashMap::new();
    while sent.len() < 3 {
        let line = wait_line(lines, Duration::from_secs(60), |l| {
            l.contains(" transactions sent this run")
        });
        let mut words = line.split_whitespace().skip(2);
        let store = words
            .next()
            .expect("store")
            .trim_end_matches(':')
            .to_owned();
        let n: i64 = words.next().and_then(|n| n.parse().ok()).expect("count");
        sent.insert(store, n);
    }
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = hub_transactions(&hub, &token);
        if sent.iter().all(|(s, n)| seen.get(s) == Some(n)) {
            break;
        }
        assert!(Instant::now() < until, "hub {seen:?} != agents {sent:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let s002 = get(&hub, &token, "/api/v1/stores/s002");
    let complete = s002["completeUpTo"].as_str().expect("completeUpTo");
    let complete_ms = storesync_protocol::EventTime::parse_rfc3339(complete)
        .expect("time")
        .unix_ms();
    assert!(
        complete_ms >= back_ms,
        "s002 complete up to {complete} only: {s002}"
    );

    // The POS outage at s003 (register 1 silent through live traffic) reaches the hub as
    // a pos_silent alert; the agent checks registers once a minute.
    let until = Instant::now() + Duration::from_secs(150);
    let silent = loop {
        let alerts = get(&hub, &token, "/api/v1/alerts?limit=500");
        let found = alerts["items"].as_array().into_iter().flatten().find(|a| {
            a["kind"] == "pos_silent"
                && a["storeId"] == "s003"
                && a["subject"] == "register:s003-r1"
        });
        if let Some(a) = found {
            break a.clone();
        }
        assert!(
            Instant::now() < until,
            "no pos_silent alert for s003-r1 at the hub: {alerts}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let last_seen = silent["facts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["name"] == "last_seen_ms")
        .and_then(|f| f["value"].as_i64())
        .expect("last_seen_ms fact");
    assert!(
        last_seen < before_live_ms,
        "the silent register traded during live traffic: {silent}"
    );

    // Ctrl-C stops the demo and every process it started.
    stop_cleanly(demo, state.path());
}

#[test]
fn demo_runs_the_hub_on_postgres() {
    let bin_dir = common::sibling_binaries();
    let cluster = storesync_hub::testing::shared_cluster().expect("PostgreSQL cluster");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = runtime
        .block_on(cluster.database("sim_demo"))
        .expect("database");
    let admin = db.admin_url.clone().expect("admin url");
    let state = tempfile::tempdir().expect("tempdir");
    let demo = start_demo(
        &bin_dir,
        state.path(),
        &[
            "--postgres",
            &db.url,
            "--postgres-admin",
            &admin,
            "--backfill-days",
            "2",
            "--live-seconds",
            "3",
            "--offline-seconds",
            "0",
            "--outage-seconds",
            "0",
        ],
    );
    wait_for_every_store(&demo);
    let layout: Value =
        serde_json::from_slice(&std::fs::read(state.path().join("demo.json")).expect("demo.json"))
            .expect("json");
    assert_eq!(layout["hubStore"], "postgres");
    let hub_dir = state.path().join("hub");
    let sqlite_files: Vec<_> = std::fs::read_dir(&hub_dir)
        .expect("hub dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".db"))
        .map(|e| e.file_name())
        .collect();
    assert!(
        sqlite_files.is_empty(),
        "the hub made an embedded store: {sqlite_files:?}"
    );
    stop_cleanly(demo, state.path());
}
