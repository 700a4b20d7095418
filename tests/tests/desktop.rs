//! The desktop app end to end: the real `storesync-desktop` window under Xvfb, signed in to
//! a real hub whose store `s1` synced sales from a real agent. The app reports on stdout
//! (`STORESYNC_DESKTOP_REPORT=1`) what its dashboard rendered, and the figures are compared
//! with the API's; screenshots are written and their paths printed. Then the hub is
//! stopped: the app must switch to the agent with the hub's last token (the agent requires
//! tokens here), show the local data, notify a new alert from the agent's live stream, and
//! switch back when the hub returns.
//!
//! Needs `Xvfb` and ImageMagick's `import` (`tests/ci.sh` installs them) and the built UI
//! (`desktop-app/ui/dist`). Not part of the default `cargo test` (`test = false`): CI runs
//! it with `cargo test -p storesync-tests --test desktop`.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Test code: a failed unwrap is a failed test.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use storesync_protocol::EventTime;
use storesync_tests::stack::{
    Edge, add_user, enroll_ok, hub_token, post_ndjson, require_tokens, setup, wait_count,
};
use storesync_tests::{Proc, bin_dir, http, run};

const PASSWORD: &str = "manager-password";

/// Posts `count` sales of today (the last minutes), numbered from `first`; SKUs `sku-0..5`.
/// Returns their revenue in cents.
fn post_recent_sales(edge: &Edge, first: usize, count: usize) -> i64 {
    let mut cents_total = 0;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut body = String::new();
    for n in first..first + count {
        let ts = EventTime::from_unix_ms(now_ms - 60_000 * (n % 5) as i64, 0).to_rfc3339();
        let cents = 250 + (n as i64 * 113) % 4_000;
        cents_total += cents * (1 + n % 3) as i64;
        let price = cents as f64 / 100.0;
        body.push_str(
            &json!({
                "transactionId": format!("desk-{n:05}"),
                "storeId": "s1",
                "timestamp": ts,
                "items": [{"itemId": format!("sku-{}", n % 5), "quantity": 1 + n % 3, "price": price}],
                "totalAmount": price * (1 + n % 3) as f64,
                "paymentMethod": if n % 2 == 0 { "card" } else { "cash" },
                "registerId": "r1"
            })
            .to_string(),
        );
        body.push('\n');
    }
    post_ndjson(edge, &body);
    cents_total
}

/// An X server of its own for the window.
struct Xvfb {
    display: String,
    _proc: Proc,
}

impl Xvfb {
    fn start(log: &Path) -> Xvfb {
        let number = (90..200)
            .find(|n| {
                !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                    && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            })
            .expect("a free X display number");
        let display = format!(":{number}");
        let mut cmd = Command::new("Xvfb");
        cmd.args([&display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"]);
        let proc = Proc::spawn("Xvfb", cmd, log);
        storesync_tests::wait_for("Xvfb", Duration::from_secs(20), || {
            Path::new(&format!("/tmp/.X11-unix/X{number}"))
                .exists()
                .then_some(())
        });
        Xvfb {
            display,
            _proc: proc,
        }
    }

    fn screenshot(&self, path: &Path) {
        let mut cmd = Command::new("import");
        cmd.args(["-display", &self.display, "-window", "root"])
            .arg(path);
        run(cmd);
        println!("desktop screenshot: {}", path.display());
    }
}

/// The app's report lines (`storesync-desktop-report {json}`).
struct Reports {
    rx: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Reports {
    /// Waits for a report of `event` whose data satisfies `pick`.
    fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&str, &Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pick(line["event"].as_str().unwrap_or_default(), &line["data"]) {
                        return line["data"].clone();
                    }
                }
                Err(_) => panic!(
                    "timed out waiting for {what}; reports so far: {:#?}",
                    self.seen
                ),
            }
        }
    }
}

fn desktop_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "storesync-desktop"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "building storesync-desktop failed");
    bin_dir().join("storesync-desktop")
}

fn get(addr: &str, path: &str, token: &str) -> Value {
    let auth = format!("Bearer {token}");
    let response = http("GET", addr, path, &[("Authorization", &auth)], b"").unwrap();
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    response.json()
}

#[test]
fn desktop_app_shows_hub_data_then_local_data_while_the_hub_is_down() {
    let app_binary = desktop_binary();
    let root = tempfile::tempdir().unwrap();
    let shots = std::env::var_os("STORESYNC_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("storesync-desktop-screenshots"));
    std::fs::create_dir_all(&shots).unwrap();

    let (mut hub, mut edge) = setup(root.path());
    hub.start();
    add_user(&hub, "manager-s1", "store_manager", "s1", PASSWORD);
    enroll_ok(&hub, &edge);
    edge.start();
    let revenue_cents = post_recent_sales(&edge, 0, 40);
    wait_count(&hub, 40);
    // From now on the agent's API wants a token, as it does on a LAN address.
    edge.proc
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(20));
    require_tokens(&edge);
    edge.start();
    let token = hub_token(&hub, "manager-s1", PASSWORD);

    let xvfb = Xvfb::start(&root.path().join("xvfb.log"));
    let config_home = root.path().join("config");
    let settings_dir = config_home.join("io.storesync.desktop");
    std::fs::create_dir_all(&settings_dir).unwrap();
    std::fs::write(
        settings_dir.join("settings.json"),
        json!({"hubUrl": format!("http://{}", hub.http), "agentUrl": format!("http://{}", edge.api), "probeIntervalMs": 1000}).to_string(),
    )
    .unwrap();
    let mut cmd = Command::new(&app_binary);
    cmd.env("DISPLAY", &xvfb.display)
        .env("XDG_CONFIG_HOME", &config_home)
        .env("XDG_DATA_HOME", root.path().join("data"))
        .env("XDG_RUNTIME_DIR", root.path())
        .env("STORESYNC_DESKTOP_REPORT", "1")
        .env("STORESYNC_DESKTOP_SIGN_IN", "acme/manager-s1")
        .env("STORESYNC_DESKTOP_PASSWORD", PASSWORD)
        // Software rendering: Xvfb has no GPU.
        .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env("RUST_LOG", "storesync_desktop=debug")
        .env("TZ", "Europe/Paris")
        .env("LANG", "C.UTF-8")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(root.path().join("desktop.log")).unwrap());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(json) = line.strip_prefix("storesync-desktop-report ") {
                if let Ok(v) = serde_json::from_str::<Value>(json) {
                    let _ = tx.send(v);
                }
            }
        }
    });
    let app = AppGuard(child);
    let mut reports = Reports {
        rx,
        seen: Vec::new(),
    };

    // Online: the dashboard shows the hub's figures for today.
    reports.wait("the hub connection", Duration::from_secs(60), |e, d| {
        e == "connection" && d["source"] == "hub"
    });
    let rendered = reports.wait(
        "the dashboard from the hub",
        Duration::from_secs(60),
        |e, d| {
            e == "rendered"
                && d["source"] == "hub"
                && d["servedBy"] == "hub"
                && (d["view"] == "overview" || d["view"] == "store")
                && d["ready"] == true
        },
    );
    check_figures(&rendered, "hub", revenue_cents, 40);
    check_hub_api(&hub.http, &token, revenue_cents, 40);
    xvfb.screenshot(&shots.join("desktop-hub.png"));

    // The hub goes away: local data from the agent, with the hub's token, and a banner.
    hub.proc.as_mut().unwrap().kill9();
    reports.wait(
        "the switch to the agent",
        Duration::from_secs(30),
        |e, d| e == "connection" && d["source"] == "agent",
    );
    let rendered = reports.wait(
        "the dashboard from the agent",
        Duration::from_secs(60),
        |e, d| {
            e == "rendered"
                && d["source"] == "agent"
                && d["servedBy"] == "agent"
                && (d["view"] == "overview" || d["view"] == "store")
                && d["ready"] == true
        },
    );
    check_figures(&rendered, "agent", revenue_cents, 40);
    let summary = get(&edge.api, "/api/v1/summary", &token);
    assert_eq!(summary["today"]["transactions"], 40, "{summary}");
    assert_eq!(
        cents_of(&summary["today"]["revenue"]),
        revenue_cents,
        "{summary}"
    );
    assert_eq!(
        rendered["banner"], true,
        "the offline banner shows: {rendered}"
    );
    // The agent holds everything its store recorded, so local data is never "behind".
    let text = rendered["text"].as_str().unwrap_or_default();
    assert!(
        !text.contains("behind") && !text.contains("no data yet"),
        "local data is complete up to now: {rendered}"
    );

    // A new alert at the agent arrives live and is notified: a SKU sold that nobody counted.
    let sale = json!({"transactionId": "desk-alert", "storeId": "s1",
        "timestamp": EventTime::from_unix_ms(now_ms(), 0).to_rfc3339(),
        "items": [{"itemId": "never-counted", "quantity": 1, "price": 3.5}],
        "totalAmount": 3.5, "paymentMethod": "card"});
    let response = http(
        "POST",
        &edge.api,
        "/api/v1/transactions",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {token}")),
        ],
        sale.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let notified = reports.wait(
        "a notification of the new alert",
        Duration::from_secs(30),
        |e, d| e == "notified" && d["source"] == "agent" && d["kind"] == "out_of_stock",
    );
    eprintln!("notified: {notified}");
    xvfb.screenshot(&shots.join("desktop-local.png"));

    // The hub returns: back to the hub.
    hub.start();
    reports.wait(
        "the switch back to the hub",
        Duration::from_secs(30),
        |e, d| e == "connection" && d["source"] == "hub",
    );
    reports.wait(
        "the dashboard from the hub again",
        Duration::from_secs(60),
        |e, d| {
            e == "rendered"
                && d["source"] == "hub"
                && d["servedBy"] == "hub"
                && (d["view"] == "overview" || d["view"] == "store")
                && d["ready"] == true
                && d["banner"] == false
        },
    );
    drop(app);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Kills the app when the test ends, passed or not.
struct AppGuard(std::process::Child);

impl Drop for AppGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cents_of(value: &Value) -> i64 {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    (text.parse::<f64>().unwrap_or(f64::NAN) * 100.0).round() as i64
}

/// The manager's dashboard (the overview of their store, or the store dashboard): its key
/// figures, as rendered, against what was sold.
fn check_figures(rendered: &Value, source: &str, revenue_cents: i64, transactions: i64) {
    if rendered["view"] == "store" {
        assert_eq!(rendered["store"], "s1", "{source}: {rendered:#}");
    }
    let kpis = &rendered["kpis"];
    assert_eq!(
        cents_of(&kpis["revenue"]),
        revenue_cents,
        "{source} revenue: {rendered:#}"
    );
    assert_eq!(
        kpis["transactions"],
        transactions.to_string(),
        "{source}: {rendered:#}"
    );
    assert_eq!(
        rendered["banner"],
        source == "agent",
        "{source} banner: {rendered:#}"
    );
    let text = rendered["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(&transactions.to_string()),
        "{source}: the count is on screen: {text}"
    );
}

/// The hub's API says the same for today.
fn check_hub_api(hub: &str, token: &str, revenue_cents: i64, transactions: i64) {
    let day_ago = EventTime::from_unix_ms(now_ms() - 86_400_000, 0).to_rfc3339();
    let soon = EventTime::from_unix_ms(now_ms() + 60_000, 0).to_rfc3339();
    let basket = get(
        hub,
        &format!("/api/v1/sales/basket?from={day_ago}&to={soon}&stores=s1").replace('+', "%2B"),
        token,
    );
    assert_eq!(basket["transactions"], transactions, "{basket}");
    assert_eq!(cents_of(&basket["revenue"]), revenue_cents, "{basket}");
}
