//! `storesync-edge`: the store agent's command line. Glue over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "storesync-edge", version, about = "storesync store agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data directory with a commented default config, a database, a device id
    /// and a first epoch.
    Init {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Store id.
        #[arg(long)]
        store: String,
        /// IANA time zone of the store.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
    },
    /// Run the agent.
    Run {
        /// The config file.
        #[arg(long, env = "STORESYNC_EDGE_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file and print what it means.
    CheckConfig {
        /// The config file.
        path: PathBuf,
    },
    /// Enroll with the hub: make a device key, have the hub sign it with a one-time token
    /// from `storesync-hub enroll-token`, and store the certificate in `<data_dir>/sync/`.
    /// Run it while the agent is stopped; the next `run` syncs.
    Enroll {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
        /// The hub's sync address, `host:port`.
        #[arg(long)]
        hub: String,
        /// The enrollment token.
        #[arg(long, env = "STORESYNC_ENROLL_TOKEN")]
        token: String,
    },
    /// Replace the database with a backup copy and start a new device epoch.
    Restore {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
        /// The backup copy of edge.db.
        #[arg(long)]
        from: PathBuf,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("storesync-edge: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // One thread runs the agent's tasks; SQLite has its own threads, and large request
    // bodies are parsed on blocking threads. Against two workers it took 18% less CPU per
    // HTTP transaction and committed larger groups (edge-agent/benches/ingest.rs).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Init {
            data_dir,
            tenant,
            store,
            time_zone,
        } => {
            let done = runtime.block_on(storesync_edge::agent::init(
                &data_dir, &tenant, &store, &time_zone,
            ))?;
            println!("wrote {}", done.config_path.display());
            println!("device {} epoch {}", done.device, done.epoch);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            let settings = storesync_edge::config::load(&config)?;
            runtime.block_on(storesync_edge::agent::run(settings, shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { path } => match storesync_edge::config::load(&path) {
            Ok(settings) => {
                let c = &settings.config;
                println!(
                    "ok: tenant {} store {} time zone {}",
                    settings.tenant, settings.store, c.time_zone
                );
                println!("data dir {}", c.data_dir.display());
                println!(
                    "api {} (tokens {}), bridge {}",
                    c.listen.api,
                    if settings.auth_required {
                        "required"
                    } else {
                        "not required"
                    },
                    if c.listen.bridge.is_empty() {
                        "off"
                    } else {
                        &c.listen.bridge
                    }
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("invalid: {e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Enroll { config, hub, token } => {
            let settings = storesync_edge::config::load(&config)?;
            let enrollment =
                runtime.block_on(storesync_edge::agent::enroll(&settings, &hub, &token))?;
            println!(
                "enrolled {}/{}/{} with hub {}; certificate valid until {} (Unix ms)",
                enrollment.tenant,
                enrollment.store,
                enrollment.device,
                enrollment.hub,
                enrollment.not_after_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { config, from } => {
            let settings = storesync_edge::config::load(&config)?;
            let epoch = runtime.block_on(storesync_edge::agent::restore(&settings, &from))?;
            println!("restored {}; new epoch {epoch}", from.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
