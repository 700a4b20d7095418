//! Assembly: what `init`, `run` and `restore` do, over the capability modules.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::api::{AppState, app};
use crate::auth::Verifier;
use crate::config::{self, Settings};
use crate::ingest;
use crate::metrics::Metrics;
use crate::store::{self, OpenMode, StoreError};
use crate::writer;

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A socket or file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let context = context.into();
    move |source| AgentError::Io { context, source }
}

/// What `init` created.
#[derive(Debug, Clone)]
pub struct Initialized {
    /// The config file written.
    pub config_path: PathBuf,
    /// The device id minted.
    pub device: String,
    /// The first epoch.
    pub epoch: u64,
}

/// Writes a commented default config into `data_dir` and creates the store (minting the
/// device id and first epoch). Refuses to overwrite an existing config.
pub async fn init(
    data_dir: &Path,
    tenant: &str,
    store: &str,
    time_zone: &str,
) -> Result<Initialized, AgentError> {
    std::fs::create_dir_all(data_dir).map_err(io(format!("create {}", data_dir.display())))?;
    let data_dir = data_dir
        .canonicalize()
        .map_err(io(format!("resolve {}", data_dir.display())))?;
    let config_path = data_dir.join("storesync-edge.toml");
    if config_path.exists() {
        return Err(AgentError::Io {
            context: format!("{} already exists", config_path.display()),
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        });
    }
    let text = config::default_toml(&data_dir, tenant, store, time_zone);
    let parsed: config::Config = toml::from_str(&text).map_err(|e| config::ConfigError::Parse {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    let settings = config::check(parsed, &data_dir)?;
    let lock = store::lock_data_dir(&data_dir)?;
    let opened = store::open(&settings, lock, OpenMode::Run, ingest::now_ms()).await?;
    std::fs::write(&config_path, text).map_err(io(format!("write {}", config_path.display())))?;
    for dir in ["inbox", "processed", "failed"] {
        std::fs::create_dir_all(data_dir.join(dir)).map_err(io(format!("create {dir}")))?;
    }
    let identity = opened.store.identity().clone();
    Ok(Initialized {
        config_path,
        device: identity.device.as_str().to_owned(),
        epoch: identity.epoch.0,
    })
}

/// Replaces the database of `settings` with `backup` (a copy of `edge.db` made with the
/// agent stopped, or with SQLite's online backup) and starts a new epoch.
pub async fn restore(settings: &Settings, backup: &Path) -> Result<u64, AgentError> {
    let lock = store::lock_data_dir(&settings.config.data_dir)?;
    let db = settings.db_path();
    let staging = db.with_extension("db.restoring");
    std::fs::copy(backup, &staging).map_err(io(format!("copy {}", backup.display())))?;
    std::fs::File::open(&staging)
        .and_then(|f| f.sync_all())
        .map_err(io("sync the restored copy"))?;
    for suffix in ["-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(path));
    }
    std::fs::rename(&staging, &db).map_err(io(format!("replace {}", db.display())))?;
    let opened = store::open(settings, lock, OpenMode::Restore, ingest::now_ms()).await?;
    let epoch = opened.store.identity().epoch.0;
    Ok(epoch)
}

/// Where the agent listens, written to `<data_dir>/run.json` at start.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The HTTP API.
    pub api: SocketAddr,
    /// The bridge listener, when enabled.
    pub bridge: Option<SocketAddr>,
}

/// Enrolls this data directory with the hub (the agent must not be running: the data
/// directory's lock is taken to read the device identity).
pub async fn enroll(
    settings: &Settings,
    hub: &str,
    token: &str,
) -> anyhow::Result<crate::sync::Enrollment> {
    let token: crate::sync::enroll::Token = token.parse()?;
    let lock = store::lock_data_dir(&settings.config.data_dir)?;
    let opened = store::open(settings, lock, OpenMode::Run, ingest::now_ms()).await?;
    let identity = opened.store.identity().clone();
    drop(opened);
    let paths = crate::sync::Paths::new(&settings.config.data_dir);
    Ok(crate::sync::enroll::enroll(
        &paths,
        hub,
        &token,
        &identity.tenant,
        &identity.store,
        &identity.device,
    )
    .await?)
}

/// Runs the agent until `shutdown` completes, then stops taking input, lets the writer
/// commit what is queued, checkpoints and returns.
pub async fn run(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let settings = Arc::new(settings);
    let lock = store::lock_data_dir(&settings.config.data_dir)?;
    let now = ingest::now_ms();
    let opened = store::open(&settings, lock, OpenMode::Run, now).await?;
    let metrics = Arc::new(Metrics::default());
    let (alerts_tx, _) = broadcast::channel(256);
    let (writer, writer_task) = writer::spawn(
        opened.writer_conn,
        opened.sealer,
        Arc::clone(&settings),
        alerts_tx.clone(),
        Arc::clone(&metrics),
        now,
    )
    .await?;
    let store = opened.store;
    let docs = crate::docs::Docs::open(
        &settings.config.data_dir,
        Arc::clone(&settings),
        writer.clone(),
        store.reader().clone(),
    )
    .await?;
    let sync_paths = crate::sync::Paths::new(&settings.config.data_dir);
    let enrollment = sync_paths
        .load()
        .map_err(|reason| config::ConfigError::Invalid {
            field: "sync".into(),
            reason,
        })?;
    // Enrollment hands the agent the tenant's token key, so managers' tokens can be checked
    // offline without configuring a key file.
    let enrolled_key = match (&settings.auth_key_pem, &enrollment) {
        (None, Some(e)) => std::fs::read(sync_paths.token_key())
            .ok()
            .map(|pem| (pem, e.token_issuer.clone(), e.token_audience.clone())),
        _ => None,
    };
    let key_and_claims = match (&settings.auth_key_pem, &enrolled_key) {
        (Some(pem), _) => Some((
            pem.clone(),
            settings.config.auth.issuer.clone().unwrap_or_default(),
            settings.config.auth.audience.clone().unwrap_or_default(),
        )),
        (None, Some((pem, iss, aud))) => Some((pem.clone(), iss.clone(), aud.clone())),
        (None, None) => None,
    };
    if settings.auth_required && key_and_claims.is_none() {
        return Err(config::ConfigError::Invalid {
            field: "auth.public_key_file".into(),
            reason: "tokens are required (the API listens beyond loopback or auth.mode = \"required\") \
                     but there is no key to check them: set auth.public_key_file, issuer and audience, \
                     or enroll the agent, which brings the tenant's key"
                .into(),
        }
        .into());
    }
    let verifier = match (&key_and_claims, settings.auth_required) {
        (Some((pem, issuer, audience)), true) => Some(
            Verifier::new(
                pem,
                issuer,
                audience,
                settings.tenant.as_str(),
                settings.store.as_str(),
            )
            .map_err(|e| config::ConfigError::Invalid {
                field: "auth.public_key_file".into(),
                reason: e.to_string(),
            })?,
        ),
        _ => None,
    };
    let api_listener = TcpListener::bind(settings.config.listen.api)
        .await
        .map_err(io(format!("bind {}", settings.config.listen.api)))?;
    let bridge_listener = if settings.config.listen.bridge.is_empty() {
        None
    } else {
        let addr = settings.config.listen.bridge.clone();
        Some(
            TcpListener::bind(&addr)
                .await
                .map_err(io(format!("bind {addr}")))?,
        )
    };
    let bound = Bound {
        api: api_listener.local_addr().map_err(io("api address"))?,
        bridge: bridge_listener.as_ref().and_then(|l| l.local_addr().ok()),
    };
    let run_json = serde_json::json!({
        "pid": std::process::id(),
        "api": bound.api.to_string(),
        "bridge": bound.bridge.map(|a| a.to_string()),
        "device": store.identity().device.as_str(),
        "epoch": store.identity().epoch.0.to_string(),
    });
    let run_path = settings.config.data_dir.join("run.json");
    std::fs::write(&run_path, run_json.to_string())
        .map_err(io(format!("write {}", run_path.display())))?;
    tracing::info!(api = %bound.api, bridge = ?bound.bridge, epoch = store.identity().epoch.0, "storesync-edge running");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(listener) = bridge_listener {
        tasks.push(tokio::spawn(ingest::bridge::serve(
            listener,
            Arc::clone(&settings),
            writer.clone(),
            Arc::clone(&metrics),
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(ingest::csv::watch(
        Arc::clone(&settings),
        writer.clone(),
        Arc::clone(&metrics),
        Duration::from_millis(500),
        stop_rx.clone(),
    )));
    {
        let writer = writer.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = interval.tick() => { let _ = writer.tick(ingest::now_ms()).await; }
                    _ = stop.changed() => return,
                }
            }
        }));
    }
    let mut sync_status = None;
    if let Some(enrollment) = enrollment {
        let options = crate::sync::client::SyncOptions {
            session: storesync_protocol::session::SessionConfig {
                batch_len_max: settings.config.sync.batch_len_max.max(1),
                window_batches_max: settings.config.sync.window_batches_max.max(1),
                // The hub sends a heartbeat every 5 s. Three missed ones (by default) end the
                // session, and a fresh connection recovers faster than a QUIC connection whose
                // retransmission timer backed off through a partition.
                idle_timeout_ms: i64::try_from(settings.config.sync.session_idle_ms)
                    .unwrap_or(15_000),
                ..Default::default()
            },
            bandwidth_bytes_per_s_max: (settings.config.sync.bandwidth_bytes_per_s_max > 0)
                .then_some(settings.config.sync.bandwidth_bytes_per_s_max),
            reconnect_delay_ms_max: settings.config.sync.reconnect_delay_ms_max.max(1_000),
            ..Default::default()
        };
        tracing::info!(hub = %enrollment.hub, "sync enabled");
        let (task, status) = crate::sync::client::spawn(
            crate::sync::client::SyncContext {
                store: store.clone(),
                writer: writer.clone(),
                paths: sync_paths.clone(),
                enrollment,
                options,
                docs: docs.clone(),
            },
            stop_rx.clone(),
        );
        tasks.push(task);
        sync_status = Some(status);
    }
    let state = AppState {
        settings: Arc::clone(&settings),
        store,
        writer,
        metrics,
        alerts: alerts_tx,
        verifier,
        docs,
        sync: sync_status,
    };
    let router = app(state);
    let mut server_stop = stop_rx.clone();
    let mut server = tokio::spawn(async move {
        axum::serve(api_listener, router)
            .with_graceful_shutdown(async move {
                let _ = server_stop.changed().await;
            })
            .await
    });
    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    // Live SSE streams would hold the graceful shutdown open; give requests a moment.
    match tokio::time::timeout(Duration::from_secs(10), &mut server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server error"),
        Ok(_) => {}
        Err(_) => {
            tracing::warn!("HTTP connections still open after 10 s; closing them");
            server.abort();
            let _ = server.await;
        }
    }
    for mut task in tasks {
        if tokio::time::timeout(Duration::from_secs(10), &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
    // Every writer handle is gone now; the writer commits what is queued and exits.
    let _ = writer_task.await;
    let _ = std::fs::remove_file(run_path);
    tracing::info!("stopped");
    Ok(())
}
