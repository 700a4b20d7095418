//! The one-command demo: a hub on its embedded store, a few enrolled store agents, a
//! backfill of recent days, then live traffic during which one store's agent is stopped
//! (the store is offline) and restarted (it catches up).
//!
//! Everything lives under one state directory (`.demo/` by default): `demo.json` (ports and
//! login), `hub/` (config, database, log) and `stores/<id>/` (each agent's data directory
//! and log). A second run reuses it: initialisation, setup and enrollment are skipped when
//! their results are present. Child processes are stopped with SIGTERM (then killed after
//! a grace period) when the demo ends, on Ctrl-C and on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::bridge::Bridge;
use crate::chain::{Chain, ChainConfig, Record, local_date};
use crate::drive::{Counts, Route, TransactionPath};
use crate::http;
use crate::ports;
use crate::progress::{Progress, Task};

/// The demo tenant.
pub const TENANT: &str = "demo";
/// The demo admin user.
pub const ADMIN_USER: &str = "admin";
/// The demo admin's password.
pub const ADMIN_PASSWORD: &str = "storesync-demo";

/// Changes to the agents' generated configuration for the demo.
const DEMO_CONFIG_CHANGES: &[(&str, &str)] = &[
    ("mon = \"08:00-20:00\"", "mon = \"00:00-24:00\""),
    ("tue = \"08:00-20:00\"", "tue = \"00:00-24:00\""),
    ("wed = \"08:00-20:00\"", "wed = \"00:00-24:00\""),
    ("thu = \"08:00-20:00\"", "thu = \"00:00-24:00\""),
    ("fri = \"08:00-20:00\"", "fri = \"00:00-24:00\""),
    ("sat = \"08:00-20:00\"", "sat = \"00:00-24:00\""),
    ("sun = \"closed\"", "sun = \"00:00-24:00\""),
    ("pos_silent_minutes = 30", "pos_silent_minutes = 1"),
];

/// The store (index) and register whose POS fails at the start of live traffic.
const OUTAGE_STORE: usize = 2;
const OUTAGE_REGISTER: u32 = 1;

/// How long a child gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long a process gets to answer its health check after start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

static STOP: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C or SIGTERM arrived.
pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sets the stop flag on Ctrl-C (SIGINT) and SIGTERM, from a small signal thread.
pub fn watch_signals() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                #[cfg(unix)]
                {
                    use tokio::signal::unix::{SignalKind, signal};
                    let (Ok(mut int), Ok(mut term)) = (
                        signal(SignalKind::interrupt()),
                        signal(SignalKind::terminate()),
                    ) else {
                        return;
                    };
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                #[cfg(not(unix))]
                let _ = tokio::signal::ctrl_c().await;
            });
            STOP.store(true, Ordering::SeqCst);
        })?;
    Ok(())
}

/// Sleeps up to `d`, returning early (false) when stopping.
fn pause(d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stopping() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    !stopping()
}

/// What the demo is asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// State directory.
    pub state_dir: PathBuf,
    /// Stores (at least 3 so one can go offline while others trade).
    pub stores_len: usize,
    /// Generator seed.
    pub seed: u64,
    /// Days of history to backfill before live traffic.
    pub backfill_days: u32,
    /// Seconds of live traffic; 0 for until Ctrl-C. Afterwards the processes keep
    /// running until Ctrl-C, so the dashboard stays up.
    pub live_seconds: u64,
    /// Transactions per second across the chain in live mode.
    pub rate_per_s: f64,
    /// Seconds into live traffic when a store goes offline.
    pub offline_after_seconds: u64,
    /// Seconds that store stays offline.
    pub offline_seconds: u64,
    /// Seconds from the start of live traffic during which register 1 of the third store
    /// sends nothing (a POS outage; the agent raises `pos_silent` after a minute).
    pub outage_seconds: u64,
    /// Directory with `storesync-hub` and `storesync-edge`; default: next to this binary.
    pub bin_dir: Option<PathBuf>,
    /// The hub on PostgreSQL: its connection string (the hub's role) instead of the
    /// embedded store.
    pub postgres: Option<String>,
    /// With `postgres`: the schema owner's connection string, for migrations.
    pub postgres_admin: Option<String>,
    /// Do not build the web UI when it is missing.
    pub skip_ui_build: bool,
}

/// Ports and identities chosen on the first run, reused by later runs (the agents'
/// enrollment names the hub's sync address).
#[derive(Debug, Clone)]
struct Layout {
    hub_http: u16,
    hub_sync: u16,
    agents: Vec<(String, u16, u16)>,
}

impl Layout {
    fn load_or_create(path: &Path, chain: &Chain, backend: &str) -> anyhow::Result<Layout> {
        if let Ok(text) = std::fs::read_to_string(path) {
            let v: Value = serde_json::from_str(&text).context("demo.json")?;
            let was = v["hubStore"].as_str().unwrap_or("sqlite");
            if was != backend {
                bail!(
                    "{} holds a demo whose hub is on {was}; run it with the same store option, or remove the state directory",
                    path.display()
                );
            }
            let port = |v: &Value| v.as_u64().and_then(|p| u16::try_from(p).ok());
            let mut agents = Vec::new();
            for a in v["agents"].as_array().into_iter().flatten() {
                agents.push((
                    a["store"].as_str().unwrap_or_default().to_owned(),
                    port(&a["api"]).context("agent api port")?,
                    port(&a["bridge"]).context("agent bridge port")?,
                ));
            }
            let layout = Layout {
                hub_http: port(&v["hubHttp"]).context("hubHttp")?,
                hub_sync: port(&v["hubSync"]).context("hubSync")?,
                agents,
            };
            if layout.agents.len() == chain.stores().len() {
                return Ok(layout);
            }
            bail!(
                "{} was made for {} stores; remove the state directory or pass --stores {}",
                path.display(),
                layout.agents.len(),
                layout.agents.len()
            );
        }
        let layout = Layout {
            hub_http: ports::free_tcp_port()?,
            hub_sync: ports::free_udp_port()?,
            agents: chain
                .stores()
                .iter()
                .map(|s| {
                    Ok((
                        s.id.clone(),
                        ports::free_tcp_port()?,
                        ports::free_tcp_port()?,
                    ))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let v = json!({
            "hubHttp": layout.hub_http,
            "hubSync": layout.hub_sync,
            "hubStore": backend,
            "tenant": TENANT,
            "username": ADMIN_USER,
            "password": ADMIN_PASSWORD,
            "agents": layout.agents.iter().map(|(s, api, bridge)| json!({"store": s, "api": api, "bridge": bridge})).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
        Ok(layout)
    }
}

/// Finds `storesync-hub` and `storesync-edge`. When launched by cargo (`cargo run`), or
/// when they are missing, builds them with the same profile into the same target
/// directory first, so they are never stale.
fn binaries(options: &DemoOptions) -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe()?;
    let dir = match &options.bin_dir {
        Some(d) => d.clone(),
        None => exe.parent().context("executable directory")?.to_owned(),
    };
    let hub = dir.join(format!("storesync-hub{}", std::env::consts::EXE_SUFFIX));
    let edge = dir.join(format!("storesync-edge{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var_os("CARGO");
    let missing = !hub.exists() || !edge.exists();
    if options.bin_dir.is_none() && (missing || cargo.is_some()) {
        let target_dir = dir.parent().context("target directory")?;
        let mut build = Command::new(cargo.unwrap_or_else(|| "cargo".into()));
        build
            .args(["build", "-p", "storesync-hub", "-p", "storesync-edge"])
            .arg("--target-dir")
            .arg(target_dir);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        println!("[demo] building storesync-hub and storesync-edge ...");
        let status = build.status().context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of storesync-hub and storesync-edge failed");
        }
    }
    if !hub.exists() || !edge.exists() {
        bail!(
            "storesync-hub or storesync-edge not found in {}",
            dir.display()
        );
    }
    Ok((hub, edge))
}

/// Runs a command to completion, returning its stdout; fails with its stderr.
fn run_tool(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A started child process.
#[derive(Debug)]
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Proc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// The last lines of the process's log, for an error that needs them.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then a kill after [`STOP_GRACE`]; always reaps the child.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("[demo] {} did not stop in time; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_healthy(addr: &str, proc: &mut Proc) -> anyhow::Result<()> {
    let until = Instant::now() + START_TIMEOUT;
    while Instant::now() < until {
        if let Ok(Some(status)) = proc.child.try_wait() {
            bail!(
                "{} exited during start ({status}); the end of its log ({}):\n{}",
                proc.name,
                proc.log.display(),
                proc.log_tail()
            );
        }
        if let Ok(r) = http::request(addr, "GET", "/healthz", &[], &[], Duration::from_secs(2)) {
            if r.status == 200 {
                return Ok(());
            }
        }
        if !pause(Duration::from_millis(100)) {
            bail!("stopped");
        }
    }
    bail!("{} did not answer on {addr} in time", proc.name)
}

/// One store's agent.
#[derive(Debug)]
struct Agent {
    store: String,
    config: PathBuf,
    log: PathBuf,
    addr: String,
    route: Route,
    proc: Option<Proc>,
}

/// The ingest paths of the demo's `i`th store, so every path carries traffic: the first of
/// every three stores uses the JSON API only; the second sends transactions as CSV (drop
/// folder for history, `POST /api/v1/imports/csv` live) and scans as bridge frames; the
/// third sends JSON transactions and bridge-frame scans.
fn demo_route(
    i: usize,
    store: &str,
    api: &str,
    bridge: &str,
    data_dir: &Path,
) -> anyhow::Result<Route> {
    let mut route = Route::json(api);
    if i % 3 == 1 {
        route.transactions = TransactionPath::CsvDrop(data_dir.to_owned());
    }
    if !i.is_multiple_of(3) {
        route.bridge = Some(Bridge::new(bridge, store, &format!("bridge-{store}"))?);
    }
    Ok(route)
}

impl Agent {
    fn start(&mut self, edge: &Path) -> anyhow::Result<()> {
        let mut proc = Proc::spawn(
            &format!("agent {}", self.store),
            Command::new(edge)
                .arg("run")
                .arg("--config")
                .arg(&self.config),
            &self.log,
        )?;
        wait_healthy(&self.addr, &mut proc)?;
        self.proc = Some(proc);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }
}

/// Runs the demo until it is stopped.
pub fn run(options: &DemoOptions) -> anyhow::Result<()> {
    if options.stores_len < 3 {
        bail!("--stores: at least 3");
    }
    let state = &options.state_dir;
    std::fs::create_dir_all(state.join("hub"))?;
    std::fs::create_dir_all(state.join("stores"))?;
    let state = state.canonicalize()?;
    let (hub_bin, edge_bin) = binaries(options)?;
    let chain = Chain::new(ChainConfig {
        seed: options.seed,
        stores_len: options.stores_len,
        ..ChainConfig::default()
    });
    let backend = if options.postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let layout = Layout::load_or_create(&state.join("demo.json"), &chain, backend)?;
    let ui_dir = web_ui(options);
    let hub_dir = state.join("hub");
    let hub_config = hub_dir.join("hub.toml");
    let hub_http = format!("127.0.0.1:{}", layout.hub_http);
    let hub_sync = format!("127.0.0.1:{}", layout.hub_sync);
    let hub = |args: &[&str]| {
        let mut c = Command::new(&hub_bin);
        c.arg("--config")
            .arg(&hub_config)
            .args(args)
            .current_dir(&hub_dir)
            .env("STORESYNC_HUB_LISTEN", &hub_http)
            .env("STORESYNC_HUB_SYNC_LISTEN", &hub_sync)
            .env("STORESYNC_PASSWORD", ADMIN_PASSWORD);
        if let Some(url) = &options.postgres {
            c.env("STORESYNC_HUB_DATABASE_URL", url);
        }
        if let Some(url) = &options.postgres_admin {
            c.env("STORESYNC_HUB_ADMIN_DATABASE_URL", url);
        }
        if let Some(dir) = &ui_dir {
            c.env("STORESYNC_HUB_UI_DIR", dir);
        }
        c
    };

    // The hub: config, tenant, stores and the admin user, once.
    let setup_done = hub_dir.join("setup.done");
    if !setup_done.exists() {
        if !hub_config.exists() {
            run_tool(hub(&["init", "--data-dir"]).arg(&hub_dir))?;
        }
        if let Err(e) = run_tool(&mut hub(&[
            "tenant",
            "create",
            TENANT,
            "--name",
            "Demo Retail",
        ])) {
            eprintln!("[demo] tenant create: {e:#} (continuing: it may exist)");
        }
        for s in chain.stores() {
            run_tool(&mut hub(&[
                "store",
                "add",
                "--tenant",
                TENANT,
                &s.id,
                "--name",
                &s.name,
                "--region",
                &s.region,
                "--time-zone",
                &s.time_zone,
            ]))?;
        }
        run_tool(&mut hub(&[
            "user", "add", "--tenant", TENANT, ADMIN_USER, "--role", "admin",
        ]))?;
        std::fs::write(&setup_done, b"")?;
        println!(
            "[demo] hub set up: tenant {TENANT}, {} stores, user {ADMIN_USER}",
            chain.stores().len()
        );
    }

    // Agents: data directories and enrollment tokens, once per store.
    let mut agents = Vec::new();
    let mut tokens = Vec::new();
    for (i, (store, api, bridge)) in layout.agents.iter().enumerate() {
        let dir = state.join("stores").join(store);
        let config = dir.join("storesync-edge.toml");
        if !config.exists() {
            run_tool(
                Command::new(&edge_bin)
                    .arg("init")
                    .arg("--data-dir")
                    .arg(&dir)
                    .args(["--tenant", TENANT, "--store", store, "--time-zone"])
                    .arg(&chain.stores()[i].time_zone),
            )?;
            let mut text = std::fs::read_to_string(&config)?
                .replace(
                    "api = \"127.0.0.1:7400\"",
                    &format!("api = \"127.0.0.1:{api}\""),
                )
                .replace(
                    "bridge = \"127.0.0.1:7401\"",
                    &format!("bridge = \"127.0.0.1:{bridge}\""),
                );
            // Demo stores keep their tills open around the clock, so the demo shows the
            // same at any hour, and call a register silent after one minute (not 30).
            for (from, to) in DEMO_CONFIG_CHANGES {
                text = text.replace(from, to);
            }
            std::fs::write(&config, text)?;
        }
        if !dir.join("sync").join("enrollment.toml").exists() {
            let out = run_tool(&mut hub(&[
                "enroll-token",
                "--tenant",
                TENANT,
                "--store",
                store,
            ]))?;
            let token = out.lines().last().unwrap_or_default().trim().to_owned();
            tokens.push((i, token));
        }
        let addr = format!("127.0.0.1:{api}");
        let route = demo_route(i, store, &addr, &format!("127.0.0.1:{bridge}"), &dir)?;
        agents.push(Agent {
            store: store.clone(),
            config,
            log: dir.join("agent.log"),
            addr,
            route,
            proc: None,
        });
    }

    let mut hub_proc = Proc::spawn("hub", &mut hub(&["serve"]), &hub_dir.join("hub.log"))?;
    wait_healthy(&hub_http, &mut hub_proc)?;
    println!(
        "[demo] hub pid {} on http://{hub_http} (sync {hub_sync})",
        hub_proc.pid()
    );
    for (i, token) in tokens {
        let agent = &agents[i];
        run_tool(
            Command::new(&edge_bin)
                .arg("enroll")
                .arg("--config")
                .arg(&agent.config)
                .args(["--hub", &hub_sync, "--token", &token]),
        )
        .with_context(|| format!("enrolling {}", agent.store))?;
        println!("[demo] enrolled store {}", agent.store);
    }
    for agent in &mut agents {
        agent.start(&edge_bin)?;
        if let Some(p) = &agent.proc {
            println!(
                "[demo] agent {} pid {} on http://{} (ingest: {})",
                agent.store,
                p.pid(),
                agent.addr,
                agent.route.describe()
            );
        }
    }
    write_pids(&state, &hub_proc, &agents)?;
    print_banner(&hub_http, &state, ui_dir.is_some(), backend);

    let now = now_ms();
    let mut per_store = vec![Counts::default(); agents.len()];
    if options.backfill_days > 0 && !stopping() {
        let counts = backfill(&chain, &mut agents, options.backfill_days, now)?;
        let mut total = Counts::default();
        for (sum, c) in per_store.iter_mut().zip(counts) {
            sum.add(c);
            total.add(c);
        }
        println!(
            "[demo] backfill done: {} records stored ({} already held from an earlier run)",
            total.stored(),
            total.duplicates
        );
    }
    if !stopping() {
        live(
            &chain,
            &mut agents,
            &edge_bin,
            &state,
            &hub_proc,
            options,
            &mut per_store,
        )?;
    }
    if !stopping() {
        // With a fresh state directory these are the transactions each agent holds, and
        // so what the hub holds once every store has synced.
        for (agent, counts) in agents.iter().zip(&per_store) {
            println!(
                "[demo] store {}: {} transactions sent this run",
                agent.store, counts.transactions
            );
        }
        println!("[demo] live traffic finished; the hub and agents keep running. Ctrl-C to stop.");
        while pause(Duration::from_secs(1)) {}
    }
    println!("[demo] stopping ...");
    for agent in &mut agents {
        agent.stop();
    }
    hub_proc.stop();
    println!(
        "[demo] stopped; state kept in {} (run again to resume)",
        state.display()
    );
    Ok(())
}

/// Prints the alerts the agents raise while the demo runs: anomalies, refund spikes,
/// silent registers and milestones one by one, stock alerts as a count.
#[derive(Debug)]
struct AlertWatch {
    seen: std::collections::HashSet<String>,
}

impl AlertWatch {
    /// Starts with what the agents hold now, so only new alerts are printed.
    fn new(agents: &[Agent]) -> AlertWatch {
        let mut watch = AlertWatch {
            seen: std::collections::HashSet::new(),
        };
        for agent in agents {
            for a in Self::alerts(agent) {
                watch
                    .seen
                    .insert(a["alertId"].as_str().unwrap_or_default().to_owned());
            }
        }
        watch
    }

    fn alerts(agent: &Agent) -> Vec<Value> {
        if agent.proc.is_none() {
            return Vec::new();
        }
        http::request(
            &agent.addr,
            "GET",
            "/api/v1/alerts?limit=200",
            &[],
            &[],
            Duration::from_secs(5),
        )
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| r.json().ok())
        .and_then(|v| v["alerts"].as_array().cloned())
        .unwrap_or_default()
    }

    fn poll(&mut self, agents: &[Agent]) {
        for agent in agents {
            let mut stock = 0;
            for a in Self::alerts(agent) {
                let id = a["alertId"].as_str().unwrap_or_default().to_owned();
                if !self.seen.insert(id) {
                    continue;
                }
                let kind = a["kind"].as_str().unwrap_or_default();
                if matches!(kind, "low_stock" | "out_of_stock") {
                    stock += 1;
                } else {
                    println!(
                        "[alert] {} {kind} {}: {}",
                        agent.store,
                        a["subject"].as_str().unwrap_or_default(),
                        a["message"].as_str().unwrap_or_default()
                    );
                }
            }
            if stock > 0 {
                println!("[alert] {}: {stock} new stock alerts", agent.store);
            }
        }
    }
}

fn write_pids(state: &Path, hub: &Proc, agents: &[Agent]) -> anyhow::Result<()> {
    let mut pids = vec![hub.pid()];
    pids.extend(agents.iter().filter_map(|a| a.proc.as_ref().map(Proc::pid)));
    let text: Vec<String> = pids.iter().map(u32::to_string).collect();
    std::fs::write(state.join("pids"), text.join("\n"))?;
    Ok(())
}

/// The repository checkout the demo runs from: the working directory or an ancestor holding
/// `desktop-app/ui`, else the one this binary was built from.
fn checkout() -> Option<PathBuf> {
    let has_ui = |d: &Path| d.join("desktop-app/ui/package.json").is_file();
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(d) = cwd.ancestors().find(|d| has_ui(d)) {
            return Some(d.to_owned());
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .filter(|d| has_ui(d))
        .map(Path::to_owned)
}

/// The built web UI (`desktop-app/ui/dist`) for the hub to serve at `/`. When it is missing
/// and npm is on the PATH, builds it once (`npm ci` from the registry, then `npm run
/// build`); on failure the demo goes on with the API docs.
fn web_ui(options: &DemoOptions) -> Option<PathBuf> {
    let root = checkout()?;
    let dist = root.join("desktop-app/ui/dist");
    if dist.join("index.html").is_file() {
        return Some(dist);
    }
    let npm_found = Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if options.skip_ui_build || !npm_found {
        println!(
            "[demo] the web UI is not built ({}); the dashboard link is the API docs",
            if npm_found {
                "--skip-ui-build"
            } else {
                "npm not found"
            }
        );
        return None;
    }
    println!("[demo] building the web UI (npm ci, npm run build in desktop-app/ui) ...");
    let ui = root.join("desktop-app/ui");
    for args in [&["ci"][..], &["run", "build"][..]] {
        let ok = Command::new("npm")
            .arg("--prefix")
            .arg(&ui)
            .args(args)
            .current_dir(&root)
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "[demo] npm {} failed; going on without the web UI (the API docs instead)",
                args.join(" ")
            );
            return None;
        }
    }
    dist.join("index.html").is_file().then_some(dist)
}

fn print_banner(hub_http: &str, state: &Path, ui: bool, backend: &str) {
    println!();
    println!("  storesync demo is running (hub on {backend})");
    if ui {
        println!("  dashboard:             http://{hub_http}/");
        println!("  API docs:              http://{hub_http}/api/docs");
    } else {
        println!("  dashboard (API docs):  http://{hub_http}/api/docs");
    }
    println!(
        "  login:                 tenant {TENANT}, user {ADMIN_USER}, password {ADMIN_PASSWORD}"
    );
    println!(
        "  token:                 curl -s -d grant_type=password -d tenant={TENANT} -d username={ADMIN_USER} -d password={ADMIN_PASSWORD} http://{hub_http}/oauth/token"
    );
    println!("  state and logs:        {}", state.display());
    println!("  Ctrl-C stops everything; running the demo again resumes.");
    println!();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Backfills the `days` days before each store's today, one thread per store, NDJSON.
fn backfill(
    chain: &Chain,
    agents: &mut [Agent],
    days: u32,
    now: i64,
) -> anyhow::Result<Vec<Counts>> {
    println!(
        "[demo] backfilling {days} days for {} stores ...",
        agents.len()
    );
    let progress = Progress::new();
    let results: Vec<anyhow::Result<Counts>> = std::thread::scope(|scope| {
        let handles: Vec<_> = agents
            .iter_mut()
            .enumerate()
            .map(|(i, agent)| {
                let task = progress.task("backfill", &agent.store, u64::from(days), "days");
                scope.spawn(move || backfill_store(chain, i, &mut agent.route, days, now, &task))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("backfill thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Backfills one store by its route, reporting each delivery to `task`. Days go one
/// request at a time, or a week per file through a drop folder (the agent takes a file per
/// poll).
pub fn backfill_store(
    chain: &Chain,
    store: usize,
    route: &mut Route,
    days: u32,
    now: i64,
    task: &Task,
) -> anyhow::Result<Counts> {
    let today = local_date(chain, store, now);
    let mut total = Counts::default();
    let per_delivery = if matches!(route.transactions, TransactionPath::CsvDrop(_)) {
        7
    } else {
        1
    };
    let backs: Vec<u32> = (1..=days).rev().collect();
    for group in backs.chunks(per_delivery) {
        if stopping() {
            break;
        }
        let mut records = Vec::new();
        let mut dates = Vec::new();
        for back in group {
            let date = today
                .checked_sub(jiff::Span::new().days(i64::from(*back)))
                .context("date")?;
            records.extend(chain.day(store, date));
            dates.push(date);
        }
        let counts = route.deliver(&records, true)?;
        total.add(counts);
        let span = match (dates.first(), dates.last()) {
            (Some(a), Some(b)) if a != b => format!("{a}..{b}"),
            (Some(a), _) => a.to_string(),
            _ => String::new(),
        };
        task.advance(
            group.len() as u64,
            &format!(
                "{span}: {} records ({} new{})",
                records.len(),
                counts.accepted,
                if counts.bridged > 0 {
                    format!(", {} scans through the bridge", counts.bridged)
                } else {
                    String::new()
                }
            ),
        );
    }
    task.finish(&format!(
        "{} records stored, {} new",
        total.stored(),
        total.accepted
    ));
    Ok(total)
}

/// Live traffic: every second each store's POS posts what happened since the last tick.
/// The store chosen to go offline has its agent stopped; its POS queues meanwhile and
/// delivers the queue when the agent is back.
fn live(
    chain: &Chain,
    agents: &mut [Agent],
    edge_bin: &Path,
    state: &Path,
    hub: &Proc,
    options: &DemoOptions,
    per_store: &mut [Counts],
) -> anyhow::Result<()> {
    let per_store_hour = options.rate_per_s * 3600.0 / agents.len() as f64;
    let offline = 1usize;
    let start = Instant::now();
    let mut last = now_ms();
    let mut queued: Vec<Record> = Vec::new();
    let mut sent = Counts::default();
    let mut offline_from: Option<i64> = None;
    let mut offline_done = options.offline_seconds == 0;
    let mut last_report = Instant::now();
    let mut alerts = AlertWatch::new(agents);
    let mut outage = options.outage_seconds > 0;
    if outage {
        println!(
            "[demo] register {} of store {} is DOWN for {} s (POS outage): the agent will call it silent",
            OUTAGE_REGISTER, agents[OUTAGE_STORE].store, options.outage_seconds
        );
    }
    println!(
        "[demo] live traffic: {:.1} transactions/s across {} stores{}",
        options.rate_per_s,
        agents.len(),
        if options.live_seconds == 0 {
            " until Ctrl-C".to_owned()
        } else {
            format!(" for {} s", options.live_seconds)
        }
    );
    while pause(Duration::from_secs(1)) {
        let elapsed = start.elapsed().as_secs();
        let now = now_ms();
        if !offline_done && offline_from.is_none() && elapsed >= options.offline_after_seconds {
            agents[offline].stop();
            offline_from = Some(now);
            println!(
                "[demo] store {} goes OFFLINE (agent stopped); its POS queues sales",
                agents[offline].store
            );
        }
        if let Some(from) = offline_from {
            if now - from >= i64::try_from(options.offline_seconds).unwrap_or(0) * 1000 {
                agents[offline].start(edge_bin)?;
                write_pids(state, hub, agents)?;
                let counts = agents[offline].route.deliver(&queued, false)?;
                sent.add(counts);
                per_store[offline].add(counts);
                println!(
                    "[demo] store {} back ONLINE: {} queued transactions delivered; it catches up with the hub",
                    agents[offline].store,
                    queued.len()
                );
                println!("offline-window {} {from} {now}", agents[offline].store);
                queued.clear();
                offline_from = None;
                offline_done = true;
            }
        }
        if outage && elapsed > options.outage_seconds {
            outage = false;
            println!(
                "[demo] register {OUTAGE_REGISTER} of store {} is back",
                agents[OUTAGE_STORE].store
            );
        }
        for (i, agent) in agents.iter_mut().enumerate() {
            let silent = (outage && i == OUTAGE_STORE).then_some(OUTAGE_REGISTER);
            let records = chain.live_with_silent(i, last, now, per_store_hour, silent);
            if i == offline && offline_from.is_some() {
                queued.extend(records);
            } else if !records.is_empty() {
                let counts = agent.route.deliver(&records, false)?;
                sent.add(counts);
                per_store[i].add(counts);
            }
        }
        last = now;
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            alerts.poll(agents);
            println!(
                "[live] {elapsed:>4} s: {} transactions stored{}",
                sent.stored(),
                if offline_from.is_some() {
                    format!(", {} queued at an offline store", queued.len())
                } else {
                    String::new()
                }
            );
        }
        if options.live_seconds > 0 && elapsed >= options.live_seconds && offline_from.is_none() {
            break;
        }
    }
    Ok(())
}
