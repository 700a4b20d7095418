//! Starting a hub from a [`Config`]: open the store, load keys, serve.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = storesync_hub::config::Config::load(std::path::Path::new("hub.toml"))?;
//! let state = storesync_hub::server::build_state(&config).await?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! storesync_hub::api::serve(state, listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::api::AppState;
use crate::auth::{self, Issuer};
use crate::cache::Cache;
use crate::config::{Config, StoreConfig};
use crate::store::Store;
use crate::store::pg::{PgConfig, PgStore};
use crate::store::sqlite::SqliteStore;

/// Opens (and migrates) the configured store.
pub async fn open_store(config: &StoreConfig) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match config {
        StoreConfig::Sqlite { path } => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            Arc::new(
                SqliteStore::open(path)
                    .await
                    .with_context(|| format!("opening {}", path.display()))?,
            )
        }
        StoreConfig::Postgres {
            url,
            admin_url,
            app_role,
            pool_size_max,
            ..
        } => Arc::new(
            PgStore::connect(PgConfig {
                url: url.clone(),
                admin_url: admin_url.clone(),
                app_role: app_role.clone(),
                pool_size_max: *pool_size_max,
                listen: true,
            })
            .await?,
        ),
    };
    store.migrate().await.context("migrating the schema")?;
    Ok(store)
}

/// The hub's token issuer from the configuration (creating its key when missing).
pub fn issuer(config: &Config) -> anyhow::Result<Issuer> {
    Ok(Issuer::load_or_create(
        &config.auth.signing_key_path,
        &config.auth.issuer,
        &config.auth.audience,
    )?)
}

/// Everything the API needs, over an already opened store.
pub async fn state_with_store(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<AppState> {
    let issuer = issuer(config)?;
    let mut external = Vec::new();
    let mut sources = Vec::new();
    for idp in &config.auth.external {
        if let Some(path) = &idp.jwks_path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            external.extend(auth::keys_from_jwks(
                &text,
                &idp.issuer,
                &idp.audience,
                &idp.tenant,
            )?);
        }
        if let Some(url) = &idp.jwks_url {
            let source = Arc::new(auth::JwksSource::new(
                url,
                &idp.issuer,
                &idp.audience,
                &idp.tenant,
                Duration::from_secs(config.auth.jwks_refetch_min_s),
            ));
            // An identity provider that is down must not keep the hub (and every other
            // way in) down: start without its keys, refuse its tokens until they come.
            if source.refresh().await.is_err() {
                tracing::warn!(
                    issuer = %idp.issuer,
                    url = %url,
                    "starting without this provider's JWKS: its tokens are refused until a fetch succeeds"
                );
            }
            source.spawn_refresh(Duration::from_secs(config.auth.jwks_refresh_s));
            sources.push(source);
        }
        let pem = match (&idp.pem, &idp.pem_path) {
            (Some(pem), _) => Some(pem.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            ),
            (None, None) => None,
        };
        if let Some(pem) = pem {
            let algorithm = auth::parse_algorithm(idp.algorithm.as_deref().unwrap_or(""))?;
            external.push(auth::VerifyKey {
                kid: None,
                algorithm,
                key: auth::key_from_pem(algorithm, &pem)?,
                issuer: idp.issuer.clone(),
                audience: idp.audience.clone(),
                tenant: Some(idp.tenant.clone()),
            });
        }
    }
    let verifier =
        AppState::verifier_for(&issuer, external, config.auth.leeway_s)?.with_sources(sources);
    let ui = crate::api::ui::UiAssets::resolve(config.ui.dir.as_deref());
    Ok(AppState::new(
        store,
        issuer,
        verifier,
        config.auth.clone(),
        config.limits.clone(),
        Cache::new(
            config.cache.entries_max,
            Duration::from_millis(config.cache.ttl_ms),
        ),
    )
    .with_ui(ui))
}

/// Opens the store and builds the API state.
pub async fn build_state(config: &Config) -> anyhow::Result<AppState> {
    let store = open_store(&config.store).await?;
    state_with_store(config, store).await
}

/// Keeps partitions created ahead and applies retention, hourly (PostgreSQL only).
pub fn spawn_maintenance(config: &Config, store: Arc<dyn Store>) {
    let StoreConfig::Postgres {
        url,
        admin_url,
        app_role,
        retention_days,
        ..
    } = config.store.clone()
    else {
        return;
    };
    let _ = store;
    tokio::spawn(async move {
        let Ok(pg) = PgStore::connect(PgConfig {
            url,
            admin_url,
            app_role,
            pool_size_max: 1,
            listen: false,
        })
        .await
        else {
            return;
        };
        loop {
            let now = crate::store::now_ms();
            let week = crate::store::pg::PARTITION_WIDTH_MS;
            if let Err(e) = pg.ensure_partitions(now - week, now + 4 * week).await {
                tracing::warn!(error = %e, "creating partitions ahead failed");
            }
            if retention_days > 0 {
                match pg
                    .drop_partitions_before(now - i64::from(retention_days) * 86_400_000)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(partitions = n, "retention dropped partitions"),
                    Err(e) => tracing::warn!(error = %e, "retention failed"),
                }
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}
