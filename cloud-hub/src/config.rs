//! The hub's configuration: a TOML file with environment overrides.
//!
//! Environment variables override the file: `STORESYNC_HUB_LISTEN`,
//! `STORESYNC_HUB_DATABASE_URL` (switches to PostgreSQL), `STORESYNC_HUB_ADMIN_DATABASE_URL`,
//! `STORESYNC_HUB_SQLITE_PATH`, `STORESYNC_HUB_LOG_JSON` (`1`/`true`),
//! `STORESYNC_HUB_OTLP_ENDPOINT`, `STORESYNC_HUB_SYNC_LISTEN`, `STORESYNC_HUB_UI_DIR`.
//!
//! Any other setting is overridden by a variable named after its path with
//! [`ENV_OVERRIDE_PREFIX`]: `STORESYNC_HUB__LIMITS__RATE_PER_S=50` sets `rate_per_s` in
//! `[limits]` (sections and key joined by `__`, any case). The value is read as a TOML
//! value (`50`, `true`, `["a", "b"]`), else taken as a string. An override naming no
//! setting, or of the wrong type, is an error naming the variable.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use storesync_protocol::ids::TenantId;

use crate::auth::HashCost;

/// Which store backs the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// Embedded SQLite file.
    Sqlite {
        /// Database file.
        path: PathBuf,
    },
    /// PostgreSQL.
    Postgres {
        /// The hub's role (no ownership, no BYPASSRLS).
        url: String,
        /// The schema owner, for migrations.
        #[serde(default)]
        admin_url: Option<String>,
        /// The hub's role name to grant to.
        #[serde(default)]
        app_role: Option<String>,
        /// Pooled connections.
        #[serde(default = "default_pool")]
        pool_size_max: usize,
        /// Days of event partitions kept (0: forever); stock movements are always kept.
        #[serde(default)]
        retention_days: u32,
    },
}

fn default_pool() -> usize {
    32
}

/// A tenant id, refused with the field's name and the id rule it breaks.
fn tenant_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<TenantId, D::Error> {
    let text = String::deserialize(deserializer)?;
    TenantId::new(text.as_str())
        .map_err(|e| serde::de::Error::custom(format!("tenant {text:?}: {e}")))
}

/// An external identity provider's keys, and the one tenant it speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuer {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// The tenant this provider's tokens act for (required). A token of this provider whose
    /// `tenant` claim names another tenant is refused; one without the claim is this
    /// tenant's. A provider serving several tenants is configured once per tenant (with a
    /// distinct audience, or tokens that name their tenant).
    #[serde(deserialize_with = "tenant_id")]
    pub tenant: TenantId,
    /// `RS256` or `EdDSA` for `pem`/`pem_path` keys (JWKS keys carry their own).
    #[serde(default)]
    pub algorithm: Option<String>,
    /// Inline PEM public key.
    #[serde(default)]
    pub pem: Option<String>,
    /// PEM public key file (read at start).
    #[serde(default)]
    pub pem_path: Option<PathBuf>,
    /// JWKS file (read at start).
    #[serde(default)]
    pub jwks_path: Option<PathBuf>,
    /// JWKS URL, plain `http://` only (the hub has no TLS client for it: put a local
    /// sidecar or proxy in front of an `https://` JWKS, or use `jwks_path`). Fetched at
    /// start, every [`AuthConfig::jwks_refresh_s`], and when a token names a key the set
    /// does not hold (at most every [`AuthConfig::jwks_refetch_min_s`]); a failed fetch keeps
    /// the last good keys, and the hub starts without them when the URL is unreachable.
    #[serde(default)]
    pub jwks_url: Option<String>,
}

/// Token settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `iss` of the hub's own tokens.
    pub issuer: String,
    /// `aud` of the hub's own tokens.
    pub audience: String,
    /// Ed25519 PKCS#8 PEM of the hub's issuer; created when missing.
    pub signing_key_path: PathBuf,
    /// Access token lifetime.
    pub access_ttl_s: u64,
    /// Refresh token lifetime.
    pub refresh_ttl_s: u64,
    /// Clock leeway for `exp`/`nbf`.
    pub leeway_s: u64,
    /// Argon2 cost of new password hashes.
    pub hash_cost: HashCost,
    /// External identity providers.
    pub external: Vec<ExternalIssuer>,
    /// How often keys from a `jwks_url` are fetched again, in seconds (at least 1).
    pub jwks_refresh_s: u64,
    /// Least time between two fetches of one provider's JWKS prompted by tokens naming a
    /// key it does not hold, in seconds.
    pub jwks_refetch_min_s: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "storesync-hub".into(),
            audience: "storesync-api".into(),
            signing_key_path: PathBuf::from("signing-key.pem"),
            access_ttl_s: 900,
            refresh_ttl_s: 30 * 86_400,
            leeway_s: 30,
            hash_cost: HashCost::default(),
            external: Vec::new(),
            jwks_refresh_s: 600,
            jwks_refetch_min_s: 30,
        }
    }
}

/// Request limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body.
    pub body_bytes_max: usize,
    /// Time budget of a request (live streams excepted).
    pub request_timeout_ms: u64,
    /// Sustained requests per second per principal, or per client address for public
    /// routes and requests that fail authentication.
    pub rate_per_s: f64,
    /// Burst per principal (or address).
    pub rate_burst: u32,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Largest page of a list.
    pub page_len_max: u32,
    /// Most points a series may have: its groups × buckets (by item or payment method
    /// there are many groups).
    pub series_points_max: u64,
    /// Most rollup rows one series may read where several make one point (weeks are summed
    /// from days by store, regions from stores, categories from items).
    pub series_rows_max: u64,
    /// Most live-stream connections.
    pub live_connections_max: usize,
    /// Most dashboard responses computed at once (cache misses); the others wait their
    /// turn. The database answers a few queries at a time best: with many more than it has
    /// cores, every query takes longer and the slowest much longer. 0: twice the cores.
    pub dashboard_queries_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            body_bytes_max: 64 * 1024,
            request_timeout_ms: 10_000,
            rate_per_s: 50.0,
            rate_burst: 100,
            trusted_proxies: Vec::new(),
            page_len_max: 1000,
            series_points_max: 100_000,
            series_rows_max: 1_000_000,
            live_connections_max: 10_000,
            dashboard_queries_max: 0,
        }
    }
}

/// Cache settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Entries held (0 disables the cache).
    pub entries_max: usize,
    /// Time to live of an entry.
    pub ttl_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            entries_max: 10_000,
            ttl_ms: 60_000,
        }
    }
}

/// Logging and tracing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// JSON lines instead of text.
    pub json: bool,
    /// `tracing` filter, e.g. `info,storesync_hub=debug`.
    pub filter: Option<String>,
    /// OTLP/HTTP collector for spans, e.g. `http://localhost:4318` (`/v1/traces` is
    /// added); `None` (the default) exports nothing.
    pub otlp_endpoint: Option<String>,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Store.
    pub store: StoreConfig,
    /// Auth.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Logs.
    #[serde(default)]
    pub log: LogConfig,
    /// The QUIC sync server for store devices.
    #[serde(default)]
    pub sync: SyncConfig,
    /// The web UI served at `/`.
    #[serde(default)]
    pub ui: UiConfig,
}

/// The web UI (the `desktop-app/ui` build) the hub serves at `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Directory holding the build (`index.html`, `assets/`); relative to the
    /// configuration file. Unset: `desktop-app/ui/dist` under the working directory or one
    /// of its ancestors, then `ui/` beside the executable.
    pub dir: Option<PathBuf>,
}

/// The QUIC sync server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// UDP listen address; empty disables the sync server.
    pub listen: String,
    /// Extra DNS names for the server certificate.
    pub server_names: Vec<String>,
    /// Validity of device certificates, in days.
    pub device_cert_days: u64,
    /// Days after expiry a device may still renew with its old key.
    pub renew_grace_days: u64,
    /// Validity of device certificates in seconds, instead of `device_cert_days` (drills
    /// and tests of expiry and renewal).
    pub device_cert_secs: Option<u64>,
    /// Renewal grace period in seconds, instead of `renew_grace_days`.
    pub renew_grace_secs: Option<u64>,
    /// Validity of enrollment tokens, in hours.
    pub enroll_token_hours: u64,
    /// Connections close after this many seconds (rotation and revocation reach them).
    pub connection_age_max_s: u64,
    /// Concurrent device connections.
    pub connections_max: usize,
    /// A store none of whose devices made contact for this many seconds raises a
    /// `store_not_syncing` alert.
    pub not_syncing_after_secs: u64,
    /// How often the hub checks for stores that stopped syncing, in seconds.
    pub not_syncing_check_secs: u64,
    /// A device whose clock is off the hub's by more than this at the handshake raises a
    /// `clock_skew` alert.
    pub clock_skew_max_ms: i64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            listen: "127.0.0.1:7443".into(),
            server_names: Vec::new(),
            device_cert_days: 90,
            renew_grace_days: 60,
            device_cert_secs: None,
            renew_grace_secs: None,
            enroll_token_hours: 168,
            connection_age_max_s: 86_400,
            connections_max: 10_000,
            not_syncing_after_secs: 900,
            not_syncing_check_secs: 30,
            clock_skew_max_ms: 120_000,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// What can go wrong reading a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause.
        message: String,
    },
    /// An environment override is malformed.
    #[error("environment {name}: {message}")]
    Env {
        /// Variable.
        name: &'static str,
        /// Cause.
        message: String,
    },
    /// A setting override (see [`ENV_OVERRIDE_PREFIX`]) names no setting.
    #[error("environment {name}: {message}")]
    EnvOverride {
        /// Variable.
        name: String,
        /// Cause.
        message: String,
    },
}

/// The prefix of the environment variables that override any setting by its path (see
/// the module docs).
pub const ENV_OVERRIDE_PREFIX: &str = "STORESYNC_HUB__";

/// Sets in `table` the settings that `vars` name with [`ENV_OVERRIDE_PREFIX`]; the names of
/// the variables applied.
pub fn apply_path_overrides(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, ConfigError> {
    let mut applied = Vec::new();
    for (name, raw) in vars {
        let Some(path) = name.strip_prefix(ENV_OVERRIDE_PREFIX) else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        let bad = |message: &str| ConfigError::EnvOverride {
            name: name.clone(),
            message: message.to_owned(),
        };
        let Some((key, sections)) = keys.split_last() else {
            return Err(bad("names no setting"));
        };
        if keys.iter().any(String::is_empty) {
            return Err(bad("names no setting (empty part between `__`)"));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let mut at = &mut *table;
        for section in sections {
            let entry = at
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            at = entry
                .as_table_mut()
                .ok_or_else(|| bad(&format!("`{section}` is not a section")))?;
        }
        at.insert(key.clone(), value);
        applied.push(name);
    }
    Ok(applied)
}

impl Config {
    /// Reads `path`, resolves relative paths against its directory, applies environment
    /// overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let applied = apply_path_overrides(&mut table, std::env::vars())?;
        let mut config = Config::deserialize(table).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: if applied.is_empty() {
                e.to_string()
            } else {
                format!("{e} (with the environment's {})", applied.join(", "))
            },
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    fn resolve(&mut self, base: &Path) {
        if let StoreConfig::Sqlite { path } = &mut self.store {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        if self.auth.signing_key_path.is_relative() {
            self.auth.signing_key_path = base.join(&self.auth.signing_key_path);
        }
        if let Some(dir) = &mut self.ui.dir
            && dir.is_relative()
        {
            *dir = base.join(&*dir);
        }
    }

    /// Applies overrides from `env`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(listen) = env("STORESYNC_HUB_SYNC_LISTEN") {
            self.sync.listen = listen;
        }
        if let Some(listen) = env("STORESYNC_HUB_LISTEN") {
            self.listen =
                listen
                    .parse()
                    .map_err(|e: std::net::AddrParseError| ConfigError::Env {
                        name: "STORESYNC_HUB_LISTEN",
                        message: e.to_string(),
                    })?;
        }
        if let Some(url) = env("STORESYNC_HUB_DATABASE_URL") {
            let admin_url = env("STORESYNC_HUB_ADMIN_DATABASE_URL");
            self.store = match std::mem::replace(
                &mut self.store,
                StoreConfig::Sqlite {
                    path: PathBuf::new(),
                },
            ) {
                StoreConfig::Postgres {
                    admin_url: old_admin,
                    app_role,
                    pool_size_max,
                    retention_days,
                    ..
                } => StoreConfig::Postgres {
                    url,
                    admin_url: admin_url.or(old_admin),
                    app_role,
                    pool_size_max,
                    retention_days,
                },
                StoreConfig::Sqlite { .. } => StoreConfig::Postgres {
                    url,
                    admin_url,
                    app_role: None,
                    pool_size_max: default_pool(),
                    retention_days: 0,
                },
            };
        } else if let Some(path) = env("STORESYNC_HUB_SQLITE_PATH") {
            self.store = StoreConfig::Sqlite { path: path.into() };
        }
        if let Some(json) = env("STORESYNC_HUB_LOG_JSON") {
            self.log.json = matches!(json.as_str(), "1" | "true" | "yes");
        }
        if let Some(endpoint) = env("STORESYNC_HUB_OTLP_ENDPOINT") {
            self.log.otlp_endpoint = Some(endpoint);
        }
        if let Some(dir) = env("STORESYNC_HUB_UI_DIR").filter(|d| !d.is_empty()) {
            self.ui.dir = Some(dir.into());
        }
        Ok(())
    }
}

/// The commented configuration `storesync-hub init` writes.
pub fn default_config_text() -> String {
    r#"# storesync hub configuration. Environment variables override: STORESYNC_HUB_LISTEN,
# STORESYNC_HUB_DATABASE_URL (switches to PostgreSQL), STORESYNC_HUB_ADMIN_DATABASE_URL,
# STORESYNC_HUB_SQLITE_PATH, STORESYNC_HUB_LOG_JSON, STORESYNC_HUB_UI_DIR,
# STORESYNC_HUB_OTLP_ENDPOINT; and any setting by its path, sections and key joined by
# "__": STORESYNC_HUB__LIMITS__RATE_PER_S=100. Unknown keys are errors.

# Where the web API listens.
listen = "127.0.0.1:8080"

[store]
# The embedded store for single-machine installs. For PostgreSQL:
#   backend = "postgres"
#   url = "host=db user=storesync_app dbname=storesync"     # no ownership, no BYPASSRLS
#   admin_url = "host=db user=storesync_owner dbname=storesync"  # runs migrations
#   app_role = "storesync_app"
#   pool_size_max = 32
#   retention_days = 400    # event partitions; stock movements are kept
backend = "sqlite"
path = "hub.db"

[auth]
issuer = "storesync-hub"
audience = "storesync-api"
# Ed25519 key of the hub's own token issuer; created on first start.
signing_key_path = "signing-key.pem"
access_ttl_s = 900
refresh_ttl_s = 2592000
leeway_s = 30
# External identity providers' keys are pinned from a PEM or a JWKS file (read at start)
# or fetched from a JWKS URL: plain http:// only (put a local sidecar or proxy in front of
# an https:// JWKS), fetched at start, every jwks_refresh_s, and when a token names a key
# the set lacks (at most every jwks_refetch_min_s). A failed fetch keeps the last good
# keys; if the URL is unreachable at start, the hub starts anyway and refuses that
# provider's tokens until a fetch succeeds.
jwks_refresh_s = 600
jwks_refetch_min_s = 30
# External identity providers (RS256 or EdDSA, pinned per key). Each speaks for one
# tenant (required): its tokens act for that tenant only; a token whose "tenant" claim
# names another one is refused, a token without the claim is this tenant's. Configure a
# provider once per tenant it serves.
# [[auth.external]]
# issuer = "https://login.example.com/"
# audience = "storesync"
# tenant = "acme"
# jwks_path = "idp-jwks.json"        # or jwks_url = "http://127.0.0.1:9000/jwks.json"
# [[auth.external]]
# issuer = "corp-sso"
# audience = "storesync"
# tenant = "acme"
# algorithm = "RS256"
# pem_path = "corp-sso.pem"

[limits]
body_bytes_max = 65536
request_timeout_ms = 10000
# Per principal, or per client address for public routes and failed authentication.
rate_per_s = 50.0
rate_burst = 100
# Only these peers' X-Forwarded-For headers are believed.
trusted_proxies = []
page_len_max = 1000
# A sales series has at most series_points_max points (groups × buckets) and reads at most
# series_rows_max rollup rows where it sums several into one point (weeks, regions,
# categories); more is refused with "too many points".
series_points_max = 100000
series_rows_max = 1000000
# Dashboard responses computed at once; more wait. 0: twice the CPU cores.
dashboard_queries_max = 0

[cache]
entries_max = 10000
ttl_ms = 60000

[log]
json = false
# Export spans (API requests, ingest commits) to an OTLP/HTTP collector; off when unset.
# otlp_endpoint = "http://localhost:4318"

[sync]
# UDP address of the QUIC sync server for store devices; "" disables it.
listen = "127.0.0.1:7443"
# Validity of device certificates; devices renew a week before expiry, and up to
# renew_grace_days after it with their old key.
device_cert_days = 90
renew_grace_days = 60
# The same in seconds, overriding the days (to rehearse expiry and renewal):
# device_cert_secs = 60
# renew_grace_secs = 300
enroll_token_hours = 168
connection_age_max_s = 86400
connections_max = 10000
# Fleet alerts: a store silent this long is "not syncing" (checked every
# not_syncing_check_secs); a device clock off by more than clock_skew_max_ms at the
# handshake raises "clock_skew". Both resolve by themselves when the condition clears.
not_syncing_after_secs = 900
not_syncing_check_secs = 30
clock_skew_max_ms = 120000

[ui]
# The web UI's build (npm --prefix desktop-app/ui ci && npm --prefix desktop-app/ui run build),
# served at /. Unset: desktop-app/ui/dist under the working directory or an ancestor of it,
# then ui/ beside the executable.
# dir = "/opt/storesync/ui"
"#
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_text_parses_and_env_overrides() {
        let mut config: Config = toml::from_str(&default_config_text()).unwrap();
        assert!(matches!(config.store, StoreConfig::Sqlite { .. }));
        config
            .apply_env(|name| match name {
                "STORESYNC_HUB_DATABASE_URL" => Some("host=x user=y".into()),
                "STORESYNC_HUB_LISTEN" => Some("0.0.0.0:9000".into()),
                "STORESYNC_HUB_UI_DIR" => Some("/srv/ui".into()),
                _ => None,
            })
            .unwrap();
        assert!(matches!(config.store, StoreConfig::Postgres { .. }));
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.ui.dir, Some(PathBuf::from("/srv/ui")));
        assert!(
            config
                .apply_env(|n| (n == "STORESYNC_HUB_LISTEN").then(|| "nope".into()))
                .is_err()
        );
    }

    /// Any setting is overridden by its path; a bad override names the variable.
    #[test]
    fn settings_are_overridden_by_their_path() {
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let mut table: toml::Table = toml::from_str(&default_config_text()).unwrap();
        let applied = apply_path_overrides(
            &mut table,
            vars(&[
                ("STORESYNC_HUB__LIMITS__RATE_PER_S", "50"),
                ("STORESYNC_HUB__AUTH__ISSUER", "hq-hub"),
                ("STORESYNC_HUB_LISTEN", "0.0.0.0:1"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(
            applied,
            [
                "STORESYNC_HUB__LIMITS__RATE_PER_S",
                "STORESYNC_HUB__AUTH__ISSUER"
            ]
        );
        let config = Config::deserialize(table).unwrap();
        assert_eq!(config.limits.rate_per_s, 50.0);
        assert_eq!(config.auth.issuer, "hq-hub");

        // A key no section has, or a type the setting does not take, fails to load.
        for (name, value) in [
            ("STORESYNC_HUB__LIMITS__NO_SUCH_LIMIT", "1"),
            ("STORESYNC_HUB__LIMITS__RATE_PER_S", "fast"),
        ] {
            let mut table: toml::Table = toml::from_str(&default_config_text()).unwrap();
            apply_path_overrides(&mut table, vars(&[(name, value)])).unwrap();
            assert!(Config::deserialize(table).is_err(), "{name}={value}");
        }
        // A misspelt key in the file fails too, in any section.
        for typo in [
            "[store]\nbackend = \"sqlite\"\npath = \"hub.db\"\npaht = \"x\"\n",
            "[limits]\nrate_per_sec = 5\n",
        ] {
            assert!(toml::from_str::<Config>(typo).is_err(), "{typo}");
        }
        let mut table: toml::Table = toml::from_str(&default_config_text()).unwrap();
        let error = apply_path_overrides(&mut table, vars(&[("STORESYNC_HUB__LISTEN__PORT", "1")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("STORESYNC_HUB__LISTEN__PORT"), "{error}");
    }

    /// An external provider must name the tenant it speaks for; the error names the field.
    #[test]
    fn external_issuers_name_their_tenant() {
        let with = |tenant_line: &str| {
            let text = format!(
                "[store]\nbackend = \"sqlite\"\npath = \"hub.db\"\n\
                 [[auth.external]]\nissuer = \"corp-sso\"\naudience = \"storesync\"\n\
                 {tenant_line}\nalgorithm = \"RS256\"\npem_path = \"sso.pem\"\n"
            );
            toml::from_str::<Config>(&text).map_err(|e| e.to_string())
        };
        let config = with("tenant = \"acme\"").unwrap();
        assert_eq!(config.auth.external[0].tenant.as_str(), "acme");
        for line in ["", "tenant = \"\"", "tenant = \"two words\""] {
            let error = with(line).unwrap_err();
            assert!(error.contains("tenant"), "{line:?}: {error}");
        }
        // The commented examples of the default configuration are valid as written.
        let text = default_config_text();
        let examples: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [[auth.external]]"))
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let config: Config = toml::from_str(&format!(
            "[store]\nbackend = \"sqlite\"\npath = \"x\"\n{examples}"
        ))
        .unwrap();
        assert_eq!(config.auth.external.len(), 2);
        assert!(
            config
                .auth
                .external
                .iter()
                .all(|e| e.tenant.as_str() == "acme")
        );
    }
}
