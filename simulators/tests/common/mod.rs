//! Helpers shared by the simulator's end-to-end tests.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use storesync_sim::http;

/// Builds the hub and agent binaries into the target directory of this test's binaries
/// and returns that directory.
pub fn sibling_binaries() -> PathBuf {
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_storesync-sim"));
    let bin_dir = sim.parent().expect("bin dir").to_owned();
    let target_dir = bin_dir.parent().expect("target dir");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .args(["build", "-p", "storesync-hub", "-p", "storesync-edge"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if bin_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo build");
    assert!(
        status.success(),
        "building storesync-hub and storesync-edge"
    );
    bin_dir
}

/// `GET` of `path` at `addr` as JSON, with a bearer token when given; asserts 200.
pub fn get_json(addr: &str, token: Option<&str>, path: &str) -> serde_json::Value {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let r = http::request(addr, "GET", path, &headers, &[], Duration::from_secs(10)).expect("GET");
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json().expect("json")
}

/// `GET` of `path` at `addr` as text; asserts 200.
pub fn get_text(addr: &str, path: &str) -> String {
    let r = http::request(addr, "GET", path, &[], &[], Duration::from_secs(10)).expect("GET");
    assert_eq!(r.status, 200, "{path}");
    String::from_utf8_lossy(&r.body).into_owned()
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A stand-alone agent (not enrolled) in its own data directory; killed on drop.
pub struct Agent {
    pub api: String,
    pub bridge: String,
    pub dir: PathBuf,
    child: Child,
}

impl Agent {
    /// Initialises and starts `storesync-edge` for `store` under `dir`, waiting until it
    /// answers its health check.
    pub fn start(bin_dir: &Path, dir: &Path, store: &str, time_zone: &str) -> Agent {
        let edge = bin_dir.join("storesync-edge");
        let status = Command::new(&edge)
            .arg("init")
            .arg("--data-dir")
            .arg(dir)
            .args(["--tenant", "t", "--store", store, "--time-zone", time_zone])
            .stdout(Stdio::null())
            .status()
            .expect("edge init");
        assert!(status.success());
        let (api, bridge) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let config = dir.join("storesync-edge.toml");
        let text = std::fs::read_to_string(&config)
            .expect("config")
            .replace("127.0.0.1:7400", &api)
            .replace("127.0.0.1:7401", &bridge);
        std::fs::write(&config, text).expect("write config");
        let log = std::fs::File::create(dir.join("agent.log")).expect("log");
        let child = Command::new(&edge)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("edge run");
        let agent = Agent {
            api,
            bridge,
            dir: dir.to_owned(),
            child,
        };
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http::request(
                &agent.api,
                "GET",
                "/healthz",
                &[],
                &[],
                Duration::from_secs(2),
            ) {
                if r.status == 200 {
                    return agent;
                }
            }
            assert!(Instant::now() < until, "agent did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET` of an agent API path as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        get_json(&self.api, None, path)
    }

    /// Transactions of today (sales, refunds and voids) the agent holds.
    pub fn today_transactions(&self) -> u64 {
        let v = self.get("/api/v1/summary");
        ["transactions", "refunds", "voids"]
            .iter()
            .map(|k| v["today"][*k].as_u64().unwrap_or(0))
            .sum()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
