//! Sync end to end, over real processes: a hub on its embedded store, an agent enrolled with
//! a one-time token, transactions posted to the agent, and the hub's committed set checked
//! against what the agent accepted — across an agent kill -9, a hub kill -9 while the agent
//! keeps taking sales, garbage datagrams on the sync port, and a device revocation.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Test code: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use storesync_tests::{Proc, binary, free_tcp_port, free_udp_port, http, run, wait_for};

struct Hub {
    dir: std::path::PathBuf,
    http: String,
    sync: String,
    proc: Option<Proc>,
}

impl Hub {
    fn cmd(&self) -> Command {
        let mut cmd = Command::new(binary("storesync-hub"));
        cmd.arg("--config").arg(self.dir.join("hub.toml"));
        cmd.env("STORESYNC_HUB_LISTEN", &self.http);
        cmd.env("STORESYNC_HUB_SYNC_LISTEN", &self.sync);
        cmd.env("RUST_LOG", "info");
        cmd
    }

    fn start(&mut self) {
        let mut cmd = self.cmd();
        cmd.arg("serve");
        self.proc = Some(Proc::spawn("hub", cmd, &self.dir.join("hub.log")));
        let addr = self.http.clone();
        wait_for("the hub", Duration::from_secs(30), || {
            http("GET", &addr, "/healthz", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
    }

    fn db_counts(&self) -> (i64, i64, i64) {
        let path = self.dir.join("hub.db");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Row as _;
            let url = format!("sqlite://{}?mode=ro", path.display());
            let Ok(mut conn) = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await else {
                return (0, 0, 0);
            };
            let row = sqlx::query(
                "SELECT count(*), count(DISTINCT transaction_id), coalesce(sum(total_e4), 0) FROM transactions WHERE tenant_id = 'acme'",
            )
            .fetch_one(&mut conn)
            .await;
            match row {
                Ok(row) => (row.get(0), row.get(1), row.get(2)),
                Err(_) => (0, 0, 0),
            }
        })
    }
}

struct Edge {
    config: std::path::PathBuf,
    api: String,
    dir: std::path::PathBuf,
    proc: Option<Proc>,
}

impl Edge {
    fn start(&mut self) {
        let mut cmd = Command::new(binary("storesync-edge"));
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info");
        let log = self.dir.join(format!("edge-{}.log", rand::random::<u32>()));
        self.proc = Some(Proc::spawn("edge", cmd, &log));
        let addr = self.api.clone();
        wait_for("the agent", Duration::from_secs(30), || {
            http("GET", &addr, "/healthz", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
    }

    fn device(&self) -> String {
        let run: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.dir.join("run.json")).unwrap())
                .unwrap();
        run["device"].as_str().unwrap().to_string()
    }
}

/// Posts `count` sales starting at number `first`; returns the sum of their totals (1e-4).
fn post_sales(edge: &Edge, first: usize, count: usize) -> i64 {
    let mut total_e4 = 0i64;
    let mut body = String::new();
    for n in first..first + count {
        let cents = 100 + (n as i64 * 37) % 5_000;
        total_e4 += cents * 100 * 2;
        let price = cents as f64 / 100.0;
        body.push_str(
            &serde_json::json!({
                "transactionId": format!("tx-{n:06}"),
                "storeId": "s1",
                "timestamp": "2026-11-21T10:00:00Z",
                "items": [{"itemId": format!("sku-{}", n % 17), "quantity": 2, "price": price}],
                "totalAmount": price * 2.0,
                "paymentMethod": if n % 3 == 0 { "cash" } else { "card" },
                "registerId": "r1"
            })
            .to_string(),
        );
        body.push('\n');
    }
    let response = http(
        "POST",
        &edge.api,
        "/api/v1/transactions",
        &[("Content-Type", "application/x-ndjson")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    total_e4
}

fn setup(root: &Path) -> (Hub, Edge) {
    let hub_dir = root.join("hub");
    let mut init = Command::new(binary("storesync-hub"));
    init.args(["--config"])
        .arg(hub_dir.join("hub.toml"))
        .args(["init", "--data-dir"])
        .arg(&hub_dir);
    run(init);
    let hub = Hub {
        dir: hub_dir,
        http: format!("127.0.0.1:{}", free_tcp_port()),
        sync: format!("127.0.0.1:{}", free_udp_port()),
        proc: None,
    };
    let mut c = hub.cmd();
    c.args(["tenant", "create", "acme"]);
    run(c);
    let mut c = hub.cmd();
    c.args([
        "store",
        "add",
        "--tenant",
        "acme",
        "s1",
        "--time-zone",
        "Europe/Paris",
    ]);
    run(c);
    let edge_dir = root.join("edge");
    let mut c = Command::new(binary("storesync-edge"));
    c.args(["init", "--data-dir"]).arg(&edge_dir).args([
        "--tenant",
        "acme",
        "--store",
        "s1",
        "--time-zone",
        "Europe/Paris",
    ]);
    run(c);
    let config = edge_dir.join("storesync-edge.toml");
    let api = format!("127.0.0.1:{}", free_tcp_port());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("api = \"127.0.0.1:7400\"", &format!("api = \"{api}\""))
        .replace("bridge = \"127.0.0.1:7401\"", "bridge = \"\"");
    std::fs::write(&config, text).unwrap();
    (
        hub,
        Edge {
            config,
            api,
            dir: edge_dir,
            proc: None,
        },
    )
}

fn enroll(hub: &Hub, edge: &Edge, token: &str) -> std::process::Output {
    Command::new(binary("storesync-edge"))
        .args(["enroll", "--config"])
        .arg(&edge.config)
        .args(["--hub", &hub.sync, "--token", token])
        .output()
        .unwrap()
}

fn wait_count(hub: &Hub, expected: i64) -> (i64, i64, i64) {
    wait_for(
        &format!("{expected} transactions at the hub"),
        Duration::from_secs(90),
        || {
            let counts = hub.db_counts();
            (counts.0 >= expected).then_some(counts)
        },
    )
}

#[test]
fn sync_end_to_end_through_crashes_garbage_and_revocation() {
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge) = setup(root.path());
    hub.start();

    // A token is good once, and only for its store.
    let mut c = hub.cmd();
    c.args(["enroll-token", "--tenant", "acme", "--store", "s1"]);
    let token = run(c).trim().to_string();
    let enrolled = enroll(&hub, &edge, &token);
    assert!(
        enrolled.status.success(),
        "{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    let again = enroll(&hub, &edge, &token);
    assert!(!again.status.success(), "a used token must be refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("unknown, used or expired"));
    let key = edge.dir.join("sync/device.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    edge.start();
    let mut expected_total = post_sales(&edge, 0, 300);
    let (count, distinct, total) = wait_count(&hub, 300);
    assert_eq!((count, distinct, total), (300, 300, expected_total));

    // Garbage and plaintext datagrams on the sync port do not disturb the live session.
    let garbage = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in 0..500u32 {
        let len = 1 + (n as usize * 7919) % 1200;
        let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let _ = garbage.send_to(&bytes, &hub.sync);
        let _ = garbage.send_to(b"GET / HTTP/1.1\r\n\r\n", &hub.sync);
    }
    expected_total += post_sales(&edge, 300, 100);
    assert_eq!(wait_count(&hub, 400), (400, 400, expected_total));

    // The agent is killed mid-stream and restarted: nothing acknowledged to a POS is lost,
    // nothing is applied twice.
    expected_total += post_sales(&edge, 400, 200);
    edge.proc.as_mut().unwrap().kill9();
    edge.start();
    assert_eq!(wait_count(&hub, 600), (600, 600, expected_total));

    // The hub is killed; the store keeps selling; the hub returns and catches up.
    hub.proc.as_mut().unwrap().kill9();
    expected_total += post_sales(&edge, 600, 150);
    hub.start();
    assert_eq!(wait_count(&hub, 750), (750, 750, expected_total));

    // Revocation: live connections close and new ones are refused.
    let device = edge.device();
    let mut c = hub.cmd();
    c.args(["device", "revoke", "--tenant", "acme", &device]);
    assert!(run(c).contains("revoked 1"));
    let log = hub.dir.join("hub.log");
    wait_for(
        "the revoked session to close",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("certificate revoked"))
                .map(|_| ())
        },
    );
    post_sales(&edge, 750, 10);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(hub.db_counts().0, 750, "a revoked device must not deliver");

    // Both stop cleanly.
    assert!(
        edge.proc
            .as_mut()
            .unwrap()
            .terminate(Duration::from_secs(20))
    );
    assert!(
        hub.proc
            .as_mut()
            .unwrap()
            .terminate(Duration::from_secs(20))
    );
}

#[test]
fn a_token_for_another_store_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (mut hub, edge) = setup(root.path());
    hub.start();
    let mut c = hub.cmd();
    c.args([
        "store",
        "add",
        "--tenant",
        "acme",
        "s2",
        "--time-zone",
        "UTC",
    ]);
    run(c);
    let mut c = hub.cmd();
    c.args(["enroll-token", "--tenant", "acme", "--store", "s2"]);
    let token = run(c).trim().to_string();
    let out = enroll(&hub, &edge, &token);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("configured for acme/s1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A token whose hub fingerprint is wrong never reaches the hub's token check.
    let mut parts: Vec<String> = token.split('~').map(str::to_string).collect();
    parts[2] = "s1".into();
    parts[4] = "00".repeat(32);
    let out = enroll(&hub, &edge, &parts.join("~"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match the enrollment token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        hub.proc
            .as_mut()
            .unwrap()
            .terminate(Duration::from_secs(20))
    );
}
