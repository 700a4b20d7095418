//! `storesync-sim`: the command line over the simulator library.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use storesync_sim::bridge::Bridge;
use storesync_sim::chain::{Chain, ChainConfig, local_date};
use storesync_sim::demo::{self, DemoOptions};
use storesync_sim::drive::{Counts, Route, TransactionPath};
use storesync_sim::faultproxy::{self, Direction, Faults, ProxyConfig};
use storesync_sim::load::{self, LoadConfig, LoadProgress, Target};
use storesync_sim::progress::Progress;

#[derive(Debug, Parser)]
#[command(
    name = "storesync-sim",
    version,
    about = "storesync chain simulator and demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ChainArgs {
    /// Generator seed: the same seed yields the same chain and trading.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stores in the chain.
    #[arg(long, default_value_t = 3)]
    stores: usize,
    /// Transactions of an average store on an average day.
    #[arg(long, default_value_t = 400)]
    transactions_per_day: u32,
}

impl ChainArgs {
    fn chain(&self) -> Chain {
        Chain::new(ChainConfig {
            seed: self.seed,
            stores_len: self.stores,
            transactions_per_day: self.transactions_per_day,
            ..ChainConfig::default()
        })
    }
}

/// `STORE=VALUE`, e.g. the agent of a store, `s001=127.0.0.1:7400`.
fn parse_agent(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(s, v)| !s.is_empty() && !v.is_empty())
        .map(|(s, a)| (s.to_owned(), a.to_owned()))
        .ok_or_else(|| "expected STORE=VALUE, e.g. s001=127.0.0.1:7400".to_owned())
}

/// The agents to drive and the ingest path of each.
#[derive(Debug, clap::Args)]
struct RouteArgs {
    /// An agent, `STORE=HOST:PORT`; repeat for each store.
    #[arg(long = "agent", value_parser = parse_agent, required = true)]
    agents: Vec<(String, String)>,
    /// A store whose transactions go as CSV to `POST /api/v1/imports/csv`; repeatable.
    #[arg(long = "csv")]
    csv: Vec<String>,
    /// `STORE=DATA_DIR`: that store's history goes as CSV files into the agent's drop
    /// folder `DATA_DIR/inbox` (live traffic as with --csv); repeatable.
    #[arg(long = "csv-drop", value_parser = parse_agent)]
    csv_drop: Vec<(String, String)>,
    /// `STORE=HOST:PORT`: that store's scans go as firmware-bridge frames to the agent's
    /// bridge listener; repeatable.
    #[arg(long = "bridge", value_parser = parse_agent)]
    bridge: Vec<(String, String)>,
}

impl RouteArgs {
    /// (store index, store id, route) per agent.
    fn routes(&self, chain: &Chain) -> anyhow::Result<Vec<(usize, String, Route)>> {
        let named = |s: &String| self.agents.iter().any(|(a, _)| a == s);
        for s in self
            .csv
            .iter()
            .chain(self.csv_drop.iter().map(|p| &p.0))
            .chain(self.bridge.iter().map(|p| &p.0))
        {
            anyhow::ensure!(
                named(s),
                "store {s} has a path option but no --agent {s}=..."
            );
        }
        self.agents
            .iter()
            .map(|(store, addr)| {
                let mut route = Route::json(addr);
                if self.csv.contains(store) {
                    route.transactions = TransactionPath::Csv;
                }
                if let Some((_, dir)) = self.csv_drop.iter().find(|p| &p.0 == store) {
                    route.transactions = TransactionPath::CsvDrop(PathBuf::from(dir));
                }
                if let Some((_, bridge)) = self.bridge.iter().find(|p| &p.0 == store) {
                    route.bridge = Some(Bridge::new(bridge, store, &format!("bridge-{store}"))?);
                }
                Ok((store_index(chain, store)?, store.clone(), route))
            })
            .collect()
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Starts a hub and store agents in a state directory, backfills, runs live traffic
    /// with one store going offline and coming back. Ctrl-C stops everything; a second
    /// run resumes.
    Demo {
        /// State directory (hub, agents, logs).
        #[arg(long, default_value = ".demo")]
        state_dir: PathBuf,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Stores (at least 3).
        #[arg(long, default_value_t = 3)]
        stores: usize,
        /// Days of history to backfill.
        #[arg(long, default_value_t = 3)]
        backfill_days: u32,
        /// Seconds of live traffic (0: until Ctrl-C); the processes keep running after it.
        #[arg(long, default_value_t = 0)]
        live_seconds: u64,
        /// Transactions per second across the chain.
        #[arg(long, default_value_t = 3.0)]
        rate: f64,
        /// Seconds into live traffic when store s002 goes offline.
        #[arg(long, default_value_t = 20)]
        offline_after_seconds: u64,
        /// Seconds s002 stays offline (0: never goes offline).
        #[arg(long, default_value_t = 30)]
        offline_seconds: u64,
        /// Seconds from the start of live traffic during which register 1 of s003 sends
        /// nothing (a POS outage the agent reports as silent after a minute; 0: none).
        #[arg(long, default_value_t = 180)]
        outage_seconds: u64,
        /// Where storesync-hub and storesync-edge are (default: next to this binary,
        /// built by cargo when missing).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Run the hub on PostgreSQL: the connection string of the hub's role (e.g.
        /// "host=127.0.0.1 user=storesync_app dbname=storesync"), instead of its embedded store.
        #[arg(
            long,
            value_name = "URL",
            env = "STORESYNC_DEMO_POSTGRES",
            hide_env_values = true
        )]
        postgres: Option<String>,
        /// With --postgres: the schema owner's connection string, for migrations (default:
        /// the --postgres one).
        #[arg(
            long,
            value_name = "URL",
            requires = "postgres",
            hide_env_values = true
        )]
        postgres_admin: Option<String>,
        /// Do not build the web UI when desktop-app/ui/dist is missing (the dashboard link
        /// is then the API docs).
        #[arg(long)]
        skip_ui_build: bool,
    },
    /// Prints one store's generated records for recent days as NDJSON.
    Generate {
        #[command(flatten)]
        chain: ChainArgs,
        /// Store index (0-based).
        #[arg(long, default_value_t = 0)]
        store: usize,
        /// Days before today.
        #[arg(long, default_value_t = 1)]
        days: u32,
    },
    /// Prints the chain's stores and a summary of the catalog.
    Chain {
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Sends history to running agents, as fast as they take it (NDJSON batches by
    /// default; CSV and bridge frames per store with the path options).
    Backfill {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        routes: RouteArgs,
        /// Days before today.
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
    /// Sends live traffic to running agents at a rate, once a second (JSON arrays by
    /// default, CSV per store with the path options).
    Live {
        #[command(flatten)]
        chain: ChainArgs,
        #[command(flatten)]
        routes: RouteArgs,
        /// Transactions per second across the given stores.
        #[arg(long, default_value_t = 3.0)]
        rate: f64,
        /// Seconds to run (0: until Ctrl-C).
        #[arg(long, default_value_t = 0)]
        seconds: u64,
    },
    /// Load generator for benchmarks: concurrent POS clients post transactions to agents at
    /// a rate (or as fast as they answer) and the acknowledgement latency is measured.
    Load {
        #[command(flatten)]
        chain: ChainArgs,
        /// An agent, `STORE=HOST:PORT`; repeat for each store.
        #[arg(long = "agent", value_parser = parse_agent, required = true)]
        agents: Vec<(String, String)>,
        /// Transactions per second across all agents (0: as fast as they answer).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Concurrent clients, each with a kept-alive connection per agent.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Transactions per request (a POS posts 1).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Seconds to send.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Stop after this many requests.
        #[arg(long)]
        requests: Option<u64>,
        /// Bearer token, for agents that require one.
        #[arg(long, env = "STORESYNC_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Also write the report as JSON to this file (`-`: stdout, the text goes to stderr).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Forwards UDP between one client and an upstream address with seeded loss,
    /// duplication, delay and jitter (the same in both directions) until Ctrl-C.
    FaultProxy {
        /// Address clients send to.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Address datagrams are forwarded to.
        #[arg(long)]
        upstream: std::net::SocketAddr,
        /// Probability that a datagram is dropped.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Probability that a datagram is sent twice.
        #[arg(long, default_value_t = 0.0)]
        duplicate: f64,
        /// Delay added to every datagram.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Further random delay, up to this much; reorders datagrams.
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
        /// Seed of the fault decisions (default: random, printed).
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("storesync-sim: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn store_index(chain: &Chain, id: &str) -> anyhow::Result<usize> {
    chain
        .stores()
        .iter()
        .position(|s| s.id == id)
        .with_context(|| {
            format!(
                "store {id} is not in the chain (s001..s{:03})",
                chain.stores().len()
            )
        })
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            state_dir,
            seed,
            stores,
            backfill_days,
            live_seconds,
            rate,
            offline_after_seconds,
            offline_seconds,
            outage_seconds,
            bin_dir,
            postgres,
            postgres_admin,
            skip_ui_build,
        } => {
            demo::watch_signals()?;
            demo::run(&DemoOptions {
                state_dir,
                stores_len: stores,
                seed,
                backfill_days,
                live_seconds,
                rate_per_s: rate,
                offline_after_seconds,
                offline_seconds,
                outage_seconds,
                bin_dir,
                postgres,
                postgres_admin,
                skip_ui_build,
            })?;
        }
        Command::Generate { chain, store, days } => {
            let chain = chain.chain();
            let today = local_date(&chain, store, now_ms());
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for back in (1..=days).rev() {
                let date = today.checked_sub(jiff::Span::new().days(i64::from(back)))?;
                for r in chain.day(store, date) {
                    serde_json::to_writer(&mut out, &r.json)?;
                    out.write_all(b"\n")?;
                }
            }
            out.flush()?;
        }
        Command::Chain { chain } => {
            let chain = chain.chain();
            for s in chain.stores() {
                println!(
                    "{} {:<10} {:<20} {} registers={} size={:.2}",
                    s.id, s.region, s.time_zone, s.currency, s.registers_len, s.size
                );
            }
            let mut categories = std::collections::BTreeMap::<&str, (usize, i64, i64)>::new();
            for p in chain.catalog() {
                let e = categories.entry(&p.category).or_insert((0, i64::MAX, 0));
                e.0 += 1;
                e.1 = e.1.min(p.price_cents);
                e.2 = e.2.max(p.price_cents);
            }
            for (c, (n, low, high)) in categories {
                println!(
                    "{c:<14} {n:>5} SKUs  {:.2} .. {:.2}",
                    low as f64 / 100.0,
                    high as f64 / 100.0
                );
            }
        }
        Command::Backfill {
            chain,
            routes,
            days,
        } => {
            let chain = chain.chain();
            let now = now_ms();
            let mut total = Counts::default();
            let progress = Progress::new();
            for (i, store, mut route) in routes.routes(&chain)? {
                progress.println(&format!("[backfill] {store}: {}", route.describe()));
                let task = progress.task("backfill", &store, u64::from(days), "days");
                total.add(demo::backfill_store(
                    &chain, i, &mut route, days, now, &task,
                )?);
            }
            println!(
                "backfill done: {} new, {} duplicates, {} scans acknowledged by bridge listeners, {} refused",
                total.accepted, total.duplicates, total.bridged, total.rejected
            );
        }
        Command::Live {
            chain,
            routes,
            rate,
            seconds,
        } => {
            demo::watch_signals()?;
            let chain = chain.chain();
            let mut targets = routes.routes(&chain)?;
            let per_store_hour = rate * 3600.0 / targets.len().max(1) as f64;
            let start = std::time::Instant::now();
            let mut last = now_ms();
            let mut total = Counts::default();
            let task = Progress::new().spinner("live", &format!("{} stores", targets.len()));
            while !demo::stopping() && (seconds == 0 || start.elapsed().as_secs() < seconds) {
                std::thread::sleep(Duration::from_secs(1));
                let now = now_ms();
                for (i, _, route) in &mut targets {
                    let records = chain.live(*i, last, now, per_store_hour);
                    total.add(route.deliver(&records, false)?);
                }
                last = now;
                task.status(&format!(
                    "{} transactions stored, {} refused",
                    total.stored(),
                    total.rejected
                ));
            }
            task.finish(&format!(
                "{} transactions stored, {} refused",
                total.stored(),
                total.rejected
            ));
        }
        Command::Load {
            chain,
            agents,
            rate,
            clients,
            batch,
            seconds,
            requests,
            token,
            json,
        } => {
            demo::watch_signals()?;
            let chain = chain.chain();
            anyhow::ensure!(
                seconds.is_finite() && seconds > 0.0,
                "--seconds: a positive number"
            );
            let targets = agents
                .iter()
                .map(|(s, a)| {
                    Ok(Target {
                        store: store_index(&chain, s)?,
                        store_id: s.clone(),
                        addr: a.clone(),
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            let config = LoadConfig {
                targets,
                rate_per_s: (rate > 0.0).then_some(rate),
                clients,
                batch_len: batch,
                duration: Duration::from_secs_f64(seconds),
                requests_max: requests,
                token,
                run_tag: format!("P{}", now_ms()),
            };
            let progress = LoadProgress::default();
            let done = std::sync::atomic::AtomicBool::new(false);
            let report = std::thread::scope(|scope| {
                scope.spawn(|| {
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        if demo::stopping() {
                            progress.stop();
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
                let report = load::run(&chain, &config, &progress);
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                report
            })?;
            let json_to_stdout = json.as_deref().is_some_and(|p| p.as_os_str() == "-");
            if json_to_stdout {
                eprint!("{}", report.text());
                println!("{}", serde_json::to_string_pretty(&report.json())?);
            } else {
                print!("{}", report.text());
                if let Some(path) = json {
                    std::fs::write(&path, serde_json::to_string_pretty(&report.json())?)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
            }
            if report.accepted + report.duplicates == 0 {
                return Ok(ExitCode::from(2));
            }
        }
        Command::FaultProxy {
            listen,
            upstream,
            loss,
            duplicate,
            delay_ms,
            jitter_ms,
            seed,
        } => fault_proxy(listen, upstream, loss, duplicate, delay_ms, jitter_ms, seed)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn fault_proxy(
    listen: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    loss: f64,
    duplicate: f64,
    delay_ms: u64,
    jitter_ms: u64,
    seed: Option<u64>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&loss) && (0.0..=1.0).contains(&duplicate),
        "--loss and --duplicate are probabilities between 0 and 1"
    );
    let seed = seed.unwrap_or_else(rand::random);
    let faults = Faults {
        loss,
        duplicate,
        delay_ms,
        jitter_ms,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let proxy = faultproxy::start(ProxyConfig {
            listen,
            upstream,
            to_upstream: faults,
            to_client: faults,
            seed,
        })
        .await
        .with_context(|| format!("starting the proxy on {listen}"))?;
        println!(
            "fault proxy on {} -> {upstream}, seed {seed}: loss {loss}, duplicate {duplicate}, delay {delay_ms} ms, jitter {jitter_ms} ms",
            proxy.local_addr()
        );
        tokio::signal::ctrl_c().await?;
        for direction in [Direction::ToUpstream, Direction::ToClient] {
            println!("{direction:?}: {:?}", proxy.stats(direction));
        }
        println!("seed {seed}");
        anyhow::Ok(())
    })
}
