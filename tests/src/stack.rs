//! A hub and an agent for store `s1` of tenant `acme`, as real processes: setup, start,
//! enrollment, sales posted to the agent, and the hub's committed transactions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Proc, binary, free_tcp_port, free_udp_port, http, run, wait_for};

/// A hub process on its embedded store, with its data directory and addresses.
#[derive(Debug)]
pub struct Hub {
    /// Data directory (`hub.toml`, `hub.db`, `hub.log`).
    pub dir: PathBuf,
    /// HTTP API address.
    pub http: String,
    /// Sync (QUIC) address.
    pub sync: String,
    /// The running process, if started.
    pub proc: Option<Proc>,
}

impl Hub {
    /// A `storesync-hub` command on this hub's configuration and addresses.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(binary("storesync-hub"));
        cmd.arg("--config").arg(self.dir.join("hub.toml"));
        cmd.env("STORESYNC_HUB_LISTEN", &self.http);
        cmd.env("STORESYNC_HUB_SYNC_LISTEN", &self.sync);
        cmd.env("RUST_LOG", "info");
        cmd
    }

    /// Starts `serve` and waits until the API answers.
    pub fn start(&mut self) {
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

    /// Transactions of tenant `acme` in the hub's database: count, distinct ids, sum of
    /// totals (1e-4); zeros while the database cannot be read.
    pub fn db_counts(&self) -> (i64, i64, i64) {
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

/// An agent process, with its data directory and API address.
#[derive(Debug)]
pub struct Edge {
    /// `storesync-edge.toml`.
    pub config: PathBuf,
    /// Local API address.
    pub api: String,
    /// Data directory.
    pub dir: PathBuf,
    /// The running process, if started.
    pub proc: Option<Proc>,
}

impl Edge {
    /// Every log file of the agent's starts, concatenated.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("edge-") && name.ends_with(".log") {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }

    /// Starts `run` and waits until the API answers; each start logs to a new file.
    pub fn start(&mut self) {
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

    /// The device id from `run.json`.
    pub fn device(&self) -> String {
        let run: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.dir.join("run.json")).unwrap())
                .unwrap();
        run["device"].as_str().unwrap().to_string()
    }
}

/// Posts `count` sales starting at number `first`; returns the sum of their totals (1e-4).
pub fn post_sales(edge: &Edge, first: usize, count: usize) -> i64 {
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
    post_ndjson(edge, &body);
    total_e4
}

/// Posts NDJSON transactions to the agent, asserting that all are accepted.
pub fn post_ndjson(edge: &Edge, body: &str) {
    let response = http(
        "POST",
        &edge.api,
        "/api/v1/transactions",
        &[("Content-Type", "application/x-ndjson")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
}

/// Initializes a hub (tenant `acme`, store `s1`) and an agent for `s1` under `root`;
/// neither is started nor enrolled.
pub fn setup(root: &Path) -> (Hub, Edge) {
    setup_with_store(root, None)
}

/// [`setup`] with the hub's `[store]` section replaced by `store` (TOML lines after the
/// header, e.g. a PostgreSQL backend) when given.
pub fn setup_with_store(root: &Path, store: Option<&str>) -> (Hub, Edge) {
    let hub_dir = root.join("hub");
    let mut init = Command::new(binary("storesync-hub"));
    init.args(["--config"])
        .arg(hub_dir.join("hub.toml"))
        .args(["init", "--data-dir"])
        .arg(&hub_dir);
    run(init);
    if let Some(store) = store {
        let path = hub_dir.join("hub.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let embedded = "backend = \"sqlite\"\npath = \"hub.db\"\n";
        assert!(
            text.contains(embedded),
            "hub.toml has the embedded store section"
        );
        std::fs::write(&path, text.replace(embedded, &format!("{store}\n"))).unwrap();
    }
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

/// Runs `storesync-edge enroll` against the hub's sync address.
pub fn enroll(hub: &Hub, edge: &Edge, token: &str) -> std::process::Output {
    Command::new(binary("storesync-edge"))
        .args(["enroll", "--config"])
        .arg(&edge.config)
        .args(["--hub", &hub.sync, "--token", token])
        .output()
        .unwrap()
}

/// A fresh one-time enrollment token for `store` of tenant `acme`.
pub fn enroll_token(hub: &Hub, store: &str) -> String {
    let mut c = hub.cmd();
    c.args(["enroll-token", "--tenant", "acme", "--store", store]);
    crate::run(c).trim().to_string()
}

/// Enrolls the agent with a fresh token, asserting that it succeeds.
pub fn enroll_ok(hub: &Hub, edge: &Edge) {
    let out = enroll(hub, edge, &enroll_token(hub, "s1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits up to 90 s until the hub holds at least `expected` transactions.
pub fn wait_count(hub: &Hub, expected: i64) -> (i64, i64, i64) {
    wait_for(
        &format!("{expected} transactions at the hub"),
        Duration::from_secs(90),
        || {
            let counts = hub.db_counts();
            (counts.0 >= expected).then_some(counts)
        },
    )
}

/// Adds an admin user to tenant `acme` and returns a bearer token for it.
pub fn admin_token(hub: &Hub) -> String {
    add_user(hub, "admin", "admin", "", "docs-sync-test");
    hub_token(hub, "admin", "docs-sync-test")
}

/// Adds a user of tenant `acme` with `role` (`admin`, `analyst`, `store_manager`) and
/// assigned `stores` (comma-separated, may be empty).
pub fn add_user(hub: &Hub, name: &str, role: &str, stores: &str, password: &str) {
    let mut c = hub.cmd();
    c.args(["user", "add", "--tenant", "acme", name, "--role", role]);
    if !stores.is_empty() {
        c.args(["--stores", stores]);
    }
    c.env("STORESYNC_PASSWORD", password);
    run(c);
}

/// An access token from the hub's `/oauth/token` for a user of tenant `acme`.
pub fn hub_token(hub: &Hub, name: &str, password: &str) -> String {
    let form = format!("grant_type=password&tenant=acme&username={name}&password={password}");
    let response = http(
        "POST",
        &hub.http,
        "/oauth/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A request to the hub's API with a bearer token; the JSON answer.
pub fn hub_api(
    hub: &Hub,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let response = http(
        method,
        &hub.http,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .unwrap();
    (response.status, response.json())
}

/// A request to the agent's local API; the JSON answer.
pub fn edge_api(edge: &Edge, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let response = http(
        method,
        &edge.api,
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap();
    (response.status, response.json())
}

/// The heads of the store document at the agent and at the hub, once they are equal
/// (waits up to 60 s).
pub fn wait_store_doc_converged(hub: &Hub, edge: &Edge, token: &str) -> Vec<serde_json::Value> {
    wait_for(
        "equal store document heads at agent and hub",
        Duration::from_secs(60),
        || {
            let (_, at_edge) = edge_api(edge, "GET", "/api/v1/documents", "");
            let (_, at_hub) = hub_api(hub, token, "GET", "/api/v1/stores/s1/document", "");
            let heads = at_edge["store"]["heads"].as_array()?.clone();
            (!heads.is_empty() && Some(&heads) == at_hub["heads"].as_array()).then_some(heads)
        },
    )
}

/// Makes the agent require bearer tokens on its API even on loopback (as it does on a LAN
/// address), with no key configured: enrollment supplies the tenant's key.
pub fn require_tokens(edge: &Edge) {
    let text = std::fs::read_to_string(&edge.config)
        .unwrap()
        .replace("mode = \"auto\"", "mode = \"required\"");
    std::fs::write(&edge.config, text).unwrap();
}

/// Stops the agent, then the hub, each with SIGTERM, asserting both exit within 20 s.
pub fn stop_both(edge: &mut Edge, hub: &mut Hub) {
    for (name, proc) in [("agent", &mut edge.proc), ("hub", &mut hub.proc)] {
        let proc = proc.as_mut().expect("the process is running");
        assert!(
            proc.terminate(Duration::from_secs(20)),
            "the {name} stops cleanly"
        );
    }
}
