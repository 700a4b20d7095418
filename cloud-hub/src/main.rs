//! `storesync-hub`: the command line of the cloud hub.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use storesync_hub::auth;
use storesync_hub::config::{Config, default_config_text};
use storesync_hub::server;
use storesync_hub::store::{Principal, Role, StoreInfo};
use storesync_protocol::ids::{StoreId, TenantId};

#[derive(Debug, Parser)]
#[command(
    name = "storesync-hub",
    version,
    about = "storesync cloud hub: store, web API, auth"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        default_value = "hub.toml",
        env = "STORESYNC_HUB_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a commented default configuration (embedded store) into DIR.
    Init {
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Serves the web API.
    Serve,
    /// Creates or upgrades the database schema.
    Migrate,
    /// Prints the public key of the hub's token issuer (PEM).
    SigningKey,
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Stores.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Service clients.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Prints a one-time token with which a store's agent enrolls
    /// (`storesync-edge enroll --token ...`).
    EnrollToken {
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Store.
        #[arg(long)]
        store: String,
    },
    /// Store devices.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Lists the device certificates of a tenant.
    List {
        /// Tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Revokes every certificate of a device: new connections are refused and live ones
    /// close within seconds.
    Revoke {
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Device id.
        device: String,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Creates a tenant.
    Create {
        /// Id.
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Adds or updates a store.
    Add {
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Store id.
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Region.
        #[arg(long, default_value = "default")]
        region: String,
        /// IANA time zone, e.g. Europe/Paris.
        #[arg(long)]
        time_zone: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Adds or updates a user; the password comes from STORESYNC_PASSWORD or stdin.
    Add {
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// User name.
        username: String,
        /// admin, analyst or store_manager.
        #[arg(long)]
        role: String,
        /// Assigned stores (store managers), comma-separated.
        #[arg(long, value_delimiter = ',')]
        stores: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Adds a service client and prints its secret once.
    Add {
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Client id.
        client_id: String,
        /// admin, analyst or store_manager.
        #[arg(long, default_value = "analyst")]
        role: String,
        /// Assigned stores, comma-separated.
        #[arg(long, value_delimiter = ',')]
        stores: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("storesync-hub: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn read_secret() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("STORESYNC_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

fn stores_of(list: &[String]) -> anyhow::Result<Vec<StoreId>> {
    list.iter()
        .map(|s| StoreId::new(s.as_str()).with_context(|| format!("store id {s:?}")))
        .collect()
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Command::Init { data_dir } = &cli.command {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("hub.toml");
        if path.exists() {
            bail!("{} exists; not overwriting", path.display());
        }
        std::fs::write(&path, default_config_text())?;
        let config = Config::load(&path)?;
        let issuer = server::issuer(&config)?;
        println!("wrote {}", path.display());
        println!(
            "token signing key: {} (public key below)",
            config.auth.signing_key_path.display()
        );
        print!("{}", issuer.public_key_pem());
        return Ok(ExitCode::SUCCESS);
    }
    let config = Config::load(&cli.config)?;
    // Logs and span export are set up before the runtime: the exporter owns a blocking
    // HTTP client, which must not be created or dropped inside it.
    let telemetry = match cli.command {
        Command::Serve => Some(storesync_hub::telemetry::init(&config.log)?),
        _ => None,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Init { .. } => Ok(ExitCode::SUCCESS),
            Command::Serve => {
                let store = server::open_store(&config.store).await?;
                server::spawn_maintenance(&config, store.clone());
                let sync = start_sync(&config, store.clone()).await?;
                let state = server::state_with_store(&config, store).await?;
                let listener = tokio::net::TcpListener::bind(config.listen)
                    .await
                    .with_context(|| format!("binding {}", config.listen))?;
                tracing::info!(address = %listener.local_addr()?, "storesync hub listening");
                storesync_hub::api::serve(state, listener, shutdown_signal()).await?;
                if let Some(sync) = sync {
                    sync.shutdown().await;
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::EnrollToken { tenant, store: store_id } => {
                let store = server::open_store(&config.store).await?;
                let tenant = TenantId::new(tenant.as_str()).context("tenant id")?;
                let store_id = storesync_protocol::ids::StoreId::new(store_id.as_str()).context("store id")?;
                let known = store.stores(&tenant).await?;
                if !known.iter().any(|s| s.store_id == store_id) {
                    anyhow::bail!("store {store_id} of tenant {tenant} does not exist (storesync-hub store add)");
                }
                let ttl_ms = i64::try_from(config.sync.enroll_token_hours).unwrap_or(168) * 3_600_000;
                let token = storesync_hub::sync::server::enroll_token(store.as_ref(), &tenant, &store_id, ttl_ms).await?;
                println!("{token}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Device { command } => {
                let store = server::open_store(&config.store).await?;
                match command {
                    DeviceCommand::List { tenant } => {
                        let tenant = TenantId::new(tenant.as_str()).context("tenant id")?;
                        for (serial, record) in store.pki().device_certs(&tenant).await? {
                            let serial: String = serial.iter().map(|b| format!("{b:02x}")).collect();
                            let state = if record.revoked_ms.is_some() { "revoked" } else { "valid" };
                            println!("{} {} {} not_after_ms={} {state}", record.store, record.device, serial, record.not_after_ms);
                        }
                    }
                    DeviceCommand::Revoke { tenant, device } => {
                        let tenant = TenantId::new(tenant.as_str()).context("tenant id")?;
                        let device = storesync_protocol::ids::DeviceId::new(device.as_str()).context("device id")?;
                        let revoked = store.pki().device_revoke(&tenant, &device, now_ms()).await?;
                        println!("revoked {revoked} certificate(s) of device {device}");
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Migrate => {
                server::open_store(&config.store).await?;
                println!("schema is up to date");
                Ok(ExitCode::SUCCESS)
            }
            Command::SigningKey => {
                print!("{}", server::issuer(&config)?.public_key_pem());
                Ok(ExitCode::SUCCESS)
            }
            Command::Tenant {
                command: TenantCommand::Create { id, name },
            } => {
                let store = server::open_store(&config.store).await?;
                let tenant = TenantId::new(id.as_str()).context("tenant id")?;
                store
                    .create_tenant(&tenant, name.as_deref().unwrap_or(&id))
                    .await?;
                println!("tenant {tenant} ready");
                Ok(ExitCode::SUCCESS)
            }
            Command::Store {
                command:
                    StoreCommand::Add {
                        tenant,
                        id,
                        name,
                        region,
                        time_zone,
                    },
            } => {
                let store = server::open_store(&config.store).await?;
                let tenant = TenantId::new(tenant).context("tenant id")?;
                let store_id = StoreId::new(id.as_str()).context("store id")?;
                store
                    .upsert_store(
                        &tenant,
                        &StoreInfo {
                            store_id,
                            name: name.unwrap_or_else(|| id.clone()),
                            region,
                            time_zone,
                        },
                    )
                    .await?;
                println!("store {id} of {tenant} ready");
                Ok(ExitCode::SUCCESS)
            }
            Command::User {
                command:
                    UserCommand::Add {
                        tenant,
                        username,
                        role,
                        stores,
                    },
            } => {
                let store = server::open_store(&config.store).await?;
                let tenant = TenantId::new(tenant).context("tenant id")?;
                let role = Role::parse(&role).context("role: admin, analyst or store_manager")?;
                let password = read_secret()?;
                if password.len() < 8 {
                    bail!("password: at least 8 characters");
                }
                let secret_hash = auth::hash_secret(&password, config.auth.hash_cost)?;
                store
                    .upsert_principal(
                        &tenant,
                        &Principal {
                            name: username.clone(),
                            is_client: false,
                            secret_hash,
                            role,
                            stores: stores_of(&stores)?,
                        },
                    )
                    .await?;
                println!("user {username} of {tenant} ready ({})", role.as_str());
                Ok(ExitCode::SUCCESS)
            }
            Command::Client {
                command:
                    ClientCommand::Add {
                        tenant,
                        client_id,
                        role,
                        stores,
                    },
            } => {
                let store = server::open_store(&config.store).await?;
                let tenant = TenantId::new(tenant).context("tenant id")?;
                let role = Role::parse(&role).context("role: admin, analyst or store_manager")?;
                let mut bytes = [0u8; 24];
                rand::fill(&mut bytes);
                let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let secret_hash = auth::hash_secret(&secret, config.auth.hash_cost)?;
                store
                    .upsert_principal(
                        &tenant,
                        &Principal {
                            name: client_id.clone(),
                            is_client: true,
                            secret_hash,
                            role,
                            stores: stores_of(&stores)?,
                        },
                    )
                    .await?;
                println!("client_id={client_id}\nclient_secret={secret}");
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    drop(runtime);
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    result
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Starts the QUIC sync server when the configuration names a listen address.
async fn start_sync(
    config: &storesync_hub::config::Config,
    store: std::sync::Arc<dyn storesync_hub::store::Store>,
) -> anyhow::Result<Option<storesync_hub::sync::SyncServer>> {
    if config.sync.listen.is_empty() {
        return Ok(None);
    }
    let listen = config
        .sync
        .listen
        .parse()
        .with_context(|| format!("sync.listen {:?}", config.sync.listen))?;
    let issuer = server::issuer(config)?;
    let mut options = storesync_hub::sync::ServerOptions::new(listen);
    options.server_names = config.sync.server_names.clone();
    let secs = |given: Option<u64>, days: u64| {
        std::time::Duration::from_secs(given.unwrap_or_else(|| days.saturating_mul(86_400)))
    };
    options.device_cert_validity = secs(config.sync.device_cert_secs, config.sync.device_cert_days);
    options.renew_grace = secs(config.sync.renew_grace_secs, config.sync.renew_grace_days);
    options.connection_age_max =
        std::time::Duration::from_secs(config.sync.connection_age_max_s.max(60));
    options.connections_max = config.sync.connections_max;
    options.fleet = storesync_hub::fleet::FleetOptions {
        not_syncing_after_ms: i64::try_from(config.sync.not_syncing_after_secs)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000),
        clock_skew_max_ms: config.sync.clock_skew_max_ms,
        check_interval: std::time::Duration::from_secs(config.sync.not_syncing_check_secs.max(1)),
    };
    let token_key = storesync_hub::sync::TokenKey {
        pem: issuer.public_key_pem().to_string(),
        issuer: issuer.issuer.clone(),
        audience: issuer.audience.clone(),
    };
    let sync = storesync_hub::sync::SyncServer::start(store, token_key, options).await?;
    tracing::info!(address = %sync.local_addr(), "storesync sync server listening");
    Ok(Some(sync))
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
