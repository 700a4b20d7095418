//! The agent's TOML configuration: what `init` writes, what `run` and `check-config` read.
//!
//! Every field but `tenant`, `store` and `data_dir` has a default, so a config file names
//! only what differs. Unknown keys are refused so a typo is noticed at start, not in a week.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use storesync_protocol::validate::Limits as RecordLimits;
use storesync_protocol::{Money, Sku, StoreId, TenantId};

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The TOML does not parse or has wrong types or unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value parses but is not acceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The key, dotted.
        field: String,
        /// Why.
        reason: String,
    },
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// The whole configuration, as read from TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The tenant (retail chain) this store belongs to.
    pub tenant: String,
    /// This store's id; records naming another store are refused.
    pub store: String,
    /// IANA time zone of the store, for rollup buckets and opening hours.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Where the database, lock, drop folder and reports live.
    pub data_dir: PathBuf,
    /// Opening hours per weekday, `"08:00-20:00"`, or `"closed"`.
    #[serde(default)]
    pub opening_hours: OpeningHoursConfig,
    /// Listen addresses.
    #[serde(default)]
    pub listen: ListenConfig,
    /// Retention of what the hub acknowledged, of dead letters and of dedupe keys.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Limits on input and resources.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Alert thresholds.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Bearer-token checking of the local API.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Sync with the hub (active once `storesync-edge enroll` has run).
    #[serde(default)]
    pub sync: SyncConfig,
}

/// The largest `limits.future_skew_max_ms` accepted: a record is never recorded more than
/// this long before its own timestamp.
pub const FUTURE_SKEW_MAX_MS_LIMIT: i64 = 24 * 3_600_000;

/// Sync with the hub.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Bytes per second the agent may send to the hub; 0 for no cap.
    pub bandwidth_bytes_per_s_max: u64,
    /// Events per batch.
    pub batch_len_max: usize,
    /// Unacknowledged batches in flight.
    pub window_batches_max: usize,
    /// Longest delay between reconnect attempts, in milliseconds.
    pub reconnect_delay_ms_max: u64,
    /// A session that hears nothing from the hub for this long ends and the agent
    /// reconnects, in milliseconds (the hub sends a heartbeat every 5 s).
    pub session_idle_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            bandwidth_bytes_per_s_max: 0,
            batch_len_max: 1024,
            window_batches_max: 8,
            reconnect_delay_ms_max: 60_000,
            session_idle_ms: 15_000,
        }
    }
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}

/// Opening hours per weekday in the store's time zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningHoursConfig {
    /// Monday.
    pub mon: String,
    /// Tuesday.
    pub tue: String,
    /// Wednesday.
    pub wed: String,
    /// Thursday.
    pub thu: String,
    /// Friday.
    pub fri: String,
    /// Saturday.
    pub sat: String,
    /// Sunday.
    pub sun: String,
}

impl Default for OpeningHoursConfig {
    fn default() -> Self {
        let day = || "08:00-20:00".to_owned();
        OpeningHoursConfig {
            mon: day(),
            tue: day(),
            wed: day(),
            thu: day(),
            fri: day(),
            sat: day(),
            sun: "closed".to_owned(),
        }
    }
}

/// Listen addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// The local HTTP API. Loopback by default; any other address requires `[auth]`.
    #[serde(default = "default_api")]
    pub api: SocketAddr,
    /// The firmware-bridge TCP listener; `""` disables it.
    #[serde(default = "default_bridge")]
    pub bridge: String,
}

fn default_api() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7400))
}

fn default_bridge() -> String {
    "127.0.0.1:7401".to_owned()
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            api: default_api(),
            bridge: default_bridge(),
        }
    }
}

/// Retention.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days an event is kept after the hub acknowledged it. Unacknowledged events are
    /// never pruned.
    #[serde(default = "default_acked_days")]
    pub acked_days: u32,
    /// Days a dead letter is kept.
    #[serde(default = "default_dead_letter_days")]
    pub dead_letter_days: u32,
    /// Days a transaction id stays known for idempotency after its event was pruned.
    #[serde(default = "default_dedupe_days")]
    pub dedupe_days: u32,
}

fn default_acked_days() -> u32 {
    14
}
fn default_dead_letter_days() -> u32 {
    90
}
fn default_dedupe_days() -> u32 {
    90
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            acked_days: default_acked_days(),
            dead_letter_days: default_dead_letter_days(),
            dedupe_days: default_dedupe_days(),
        }
    }
}

/// Limits on input and resources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest HTTP request body.
    pub body_bytes_max: usize,
    /// Records (array elements, NDJSON lines) per request.
    pub records_per_request_max: usize,
    /// Lines per transaction.
    pub items_max: usize,
    /// Largest single JSON record.
    pub record_bytes_max: usize,
    /// Data rows of one CSV file or import.
    pub csv_rows_max: usize,
    /// Largest CSV file taken from the drop folder.
    pub csv_bytes_max: u64,
    /// Largest bridge frame payload.
    pub frame_bytes_max: usize,
    /// Records committed in one SQLite transaction (group commit).
    pub batch_records_max: usize,
    /// Requests waiting for the writer; beyond it, ingest answers 503.
    pub queue_requests_max: usize,
    /// Largest database size in MiB (0: no cap other than the disk).
    pub db_size_max_mib: u64,
    /// How long an API read may take.
    pub read_timeout_ms: u64,
    /// Concurrent bridge connections.
    pub bridge_connections_max: usize,
    /// How far in the future a timestamp may be.
    pub future_skew_max_ms: i64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            body_bytes_max: 16 * 1024 * 1024,
            records_per_request_max: 10_000,
            items_max: 500,
            record_bytes_max: 256 * 1024,
            csv_rows_max: 1_000_000,
            csv_bytes_max: 256 * 1024 * 1024,
            frame_bytes_max: 64 * 1024,
            batch_records_max: 4_000,
            queue_requests_max: 4_096,
            db_size_max_mib: 0,
            read_timeout_ms: 10_000,
            bridge_connections_max: 64,
            future_skew_max_ms: 5 * 60 * 1000,
        }
    }
}

/// Alert thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Low-stock threshold for SKUs without their own.
    pub low_stock_default: i64,
    /// Per-SKU low-stock thresholds.
    pub low_stock: BTreeMap<String, i64>,
    /// Daily revenue milestones, in currency units.
    pub revenue_milestones: Vec<f64>,
    /// A repeated alert (same kind and subject) is suppressed for this long.
    pub cooldown_minutes: i64,
    /// Weeks of history of the same hour of week before the anomaly check fires.
    pub anomaly_min_weeks: usize,
    /// Weeks of history the baseline looks at.
    pub anomaly_max_weeks: usize,
    /// How many robust standard deviations from the median fire an anomaly.
    pub anomaly_threshold: f64,
    /// Refunds plus voids in an hour below which no spike is reported.
    pub refund_spike_min_count: i64,
    /// Minutes without a transaction from a known register, during opening hours.
    pub pos_silent_minutes: i64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            low_stock_default: 5,
            low_stock: BTreeMap::new(),
            revenue_milestones: vec![1_000.0, 5_000.0, 10_000.0],
            cooldown_minutes: 60,
            anomaly_min_weeks: 4,
            anomaly_max_weeks: 8,
            anomaly_threshold: 3.0,
            refund_spike_min_count: 3,
            pos_silent_minutes: 30,
        }
    }
}

/// When bearer tokens are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Required unless the API listens on loopback only.
    #[default]
    Auto,
    /// Always required.
    Required,
}

/// Bearer tokens for the local API, verified offline.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// When tokens are required.
    #[serde(default)]
    pub mode: AuthMode,
    /// File holding the token-signing Ed25519 public key (PEM, SubjectPublicKeyInfo).
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// Required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud`.
    #[serde(default)]
    pub audience: Option<String>,
}

/// Opening hours of one day, minutes since local midnight, `[open, close)`. A closing
/// minute before the opening one closes the next morning (`"18:00-02:00"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayHours {
    /// Opening minute.
    pub open_min: u16,
    /// Closing minute (of the next day when before `open_min`).
    pub close_min: u16,
}

impl DayHours {
    /// Whether the store stays open past midnight.
    pub fn overnight(self) -> bool {
        self.close_min < self.open_min
    }
}

/// The configuration checked and converted into the types the agent uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The raw configuration.
    pub config: Config,
    /// Tenant.
    pub tenant: TenantId,
    /// Store.
    pub store: StoreId,
    /// Time zone.
    pub tz: jiff::tz::TimeZone,
    /// Opening hours Monday..Sunday, `None` when closed.
    pub opening: [Option<DayHours>; 7],
    /// Validation limits.
    pub record_limits: RecordLimits,
    /// Milestones in ten-thousandths, ascending.
    pub milestones_e4: Vec<i64>,
    /// Per-SKU thresholds.
    pub low_stock: BTreeMap<Sku, i64>,
    /// What the tenant document (catalog, alert rules) says, refreshed as it syncs.
    pub doc_rules: crate::docs::SharedRules,
    /// Token checking, when required: the PEM bytes of the public key.
    pub auth_key_pem: Option<Vec<u8>>,
    /// Whether tokens are required.
    pub auth_required: bool,
}

impl Settings {
    /// The low-stock threshold of `sku`: the HQ catalog's reorder threshold, else this
    /// store's `alerts.low_stock`, else the tenant's `lowStockDefault` rule, else
    /// `alerts.low_stock_default`.
    pub fn low_stock_threshold(&self, sku: &Sku) -> i64 {
        let rules = self.doc_rules.read();
        rules
            .thresholds
            .get(sku.as_str())
            .copied()
            .or_else(|| self.low_stock.get(sku).copied())
            .or(rules.low_stock_default)
            .unwrap_or(self.config.alerts.low_stock_default)
    }

    /// Daily revenue milestones: the tenant's `salesMilestones` rule, else `alerts.milestones`.
    pub fn milestones(&self) -> Vec<i64> {
        self.doc_rules
            .read()
            .milestones_e4
            .clone()
            .unwrap_or_else(|| self.milestones_e4.clone())
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.config.data_dir.join("edge.db")
    }

    /// The drop folder for CSV files.
    pub fn inbox_dir(&self) -> PathBuf {
        self.config.data_dir.join("inbox")
    }
}

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    check(config, base)
}

fn parse_hours(field: &str, text: &str) -> Result<Option<DayHours>, ConfigError> {
    if text.trim() == "closed" {
        return Ok(None);
    }
    let parse_hm = |s: &str| -> Option<u16> {
        let (h, m) = s.trim().split_once(':')?;
        let h: u16 = h.parse().ok()?;
        let m: u16 = m.parse().ok()?;
        (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
    };
    let (open, close) = text
        .split_once('-')
        .ok_or_else(|| invalid(field, "expected \"HH:MM-HH:MM\" or \"closed\""))?;
    let (Some(open_min), Some(close_min)) = (parse_hm(open), parse_hm(close)) else {
        return Err(invalid(field, "expected \"HH:MM-HH:MM\" or \"closed\""));
    };
    if open_min == close_min {
        return Err(invalid(
            field,
            "opening and closing are the same time (\"00:00-24:00\" is open all day)",
        ));
    }
    Ok(Some(DayHours {
        open_min,
        close_min,
    }))
}

/// Checks a parsed configuration; relative paths are taken from `base`.
pub fn check(mut config: Config, base: &Path) -> Result<Settings, ConfigError> {
    let tenant =
        TenantId::new(config.tenant.clone()).map_err(|e| invalid("tenant", e.to_string()))?;
    let store = StoreId::new(config.store.clone()).map_err(|e| invalid("store", e.to_string()))?;
    let tz = jiff::tz::TimeZone::get(&config.time_zone)
        .map_err(|e| invalid("time_zone", format!("unknown time zone: {e}")))?;
    if config.data_dir.is_relative() {
        config.data_dir = base.join(&config.data_dir);
    }
    let h = &config.opening_hours;
    let opening = [
        parse_hours("opening_hours.mon", &h.mon)?,
        parse_hours("opening_hours.tue", &h.tue)?,
        parse_hours("opening_hours.wed", &h.wed)?,
        parse_hours("opening_hours.thu", &h.thu)?,
        parse_hours("opening_hours.fri", &h.fri)?,
        parse_hours("opening_hours.sat", &h.sat)?,
        parse_hours("opening_hours.sun", &h.sun)?,
    ];
    let l = &config.limits;
    for (field, value) in [
        ("limits.body_bytes_max", l.body_bytes_max),
        ("limits.records_per_request_max", l.records_per_request_max),
        ("limits.items_max", l.items_max),
        ("limits.record_bytes_max", l.record_bytes_max),
        ("limits.csv_rows_max", l.csv_rows_max),
        ("limits.frame_bytes_max", l.frame_bytes_max),
        ("limits.batch_records_max", l.batch_records_max),
        ("limits.queue_requests_max", l.queue_requests_max),
        ("limits.bridge_connections_max", l.bridge_connections_max),
    ] {
        if value == 0 {
            return Err(invalid(field, "must be positive"));
        }
    }
    if l.batch_records_max > 20_000 {
        return Err(invalid("limits.batch_records_max", "must be at most 20000"));
    }
    if !(6_000..=600_000).contains(&config.sync.session_idle_ms) {
        return Err(invalid(
            "sync.session_idle_ms",
            "must be between 6000 and 600000 (the hub's heartbeat comes every 5 s)",
        ));
    }
    if !(0..=FUTURE_SKEW_MAX_MS_LIMIT).contains(&l.future_skew_max_ms) {
        return Err(invalid(
            "limits.future_skew_max_ms",
            "must be between 0 and one day",
        ));
    }
    let record_limits = RecordLimits {
        items_max: l.items_max,
        record_bytes_max: l.record_bytes_max,
        future_skew_max_ms: l.future_skew_max_ms,
        ..RecordLimits::default()
    };
    let a = &config.alerts;
    let mut milestones_e4 = Vec::new();
    for m in &a.revenue_milestones {
        let money = Money::from_f64_exact(*m, record_limits.total_abs_max_e4)
            .filter(|m| m.e4() > 0)
            .ok_or_else(|| {
                invalid(
                    "alerts.revenue_milestones",
                    format!("{m} is not a positive amount"),
                )
            })?;
        milestones_e4.push(money.e4());
    }
    milestones_e4.sort_unstable();
    milestones_e4.dedup();
    let mut low_stock = BTreeMap::new();
    for (sku, threshold) in &a.low_stock {
        let sku = Sku::new(sku.clone())
            .map_err(|e| invalid(&format!("alerts.low_stock.{sku}"), e.to_string()))?;
        low_stock.insert(sku, *threshold);
    }
    if a.anomaly_min_weeks == 0
        || a.anomaly_min_weeks > a.anomaly_max_weeks
        || a.anomaly_max_weeks > 52
    {
        return Err(invalid(
            "alerts.anomaly_min_weeks",
            "must be at least 1 and at most anomaly_max_weeks (at most 52)",
        ));
    }
    if !(a.anomaly_threshold.is_finite() && a.anomaly_threshold > 0.0) {
        return Err(invalid(
            "alerts.anomaly_threshold",
            "must be a positive number",
        ));
    }
    if a.cooldown_minutes < 0 || a.pos_silent_minutes <= 0 {
        return Err(invalid(
            "alerts.cooldown_minutes",
            "must not be negative (pos_silent_minutes positive)",
        ));
    }
    let loopback = config.listen.api.ip().is_loopback();
    let auth_required = config.auth.mode == AuthMode::Required || !loopback;
    let auth_key_pem = match &config.auth.public_key_file {
        Some(file) => {
            let file = if file.is_relative() {
                base.join(file)
            } else {
                file.clone()
            };
            let pem = std::fs::read(&file)
                .map_err(|e| invalid("auth.public_key_file", format!("{}: {e}", file.display())))?;
            jsonwebtoken::DecodingKey::from_ed_pem(&pem).map_err(|e| {
                invalid(
                    "auth.public_key_file",
                    format!("not an Ed25519 public key in PEM: {e}"),
                )
            })?;
            Some(pem)
        }
        None => None,
    };
    // Without a key file, enrollment supplies the tenant's key, issuer and audience; the
    // agent refuses to start when tokens are required and neither is there.
    if auth_key_pem.is_some() && (config.auth.issuer.is_none() || config.auth.audience.is_none()) {
        return Err(invalid(
            "auth.issuer",
            "auth.issuer and auth.audience are required with auth.public_key_file",
        ));
    }
    if !config.listen.bridge.is_empty() && config.listen.bridge.parse::<SocketAddr>().is_err() {
        return Err(invalid(
            "listen.bridge",
            "must be an address like 127.0.0.1:7401, or \"\"",
        ));
    }
    Ok(Settings {
        tenant,
        store,
        tz,
        opening,
        record_limits,
        milestones_e4,
        low_stock,
        doc_rules: crate::docs::SharedRules::default(),
        auth_key_pem,
        auth_required,
        config,
    })
}

/// The commented configuration `init` writes.
pub fn default_toml(data_dir: &Path, tenant: &str, store: &str, time_zone: &str) -> String {
    let data_dir = data_dir
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        r#"# storesync edge agent configuration.
# Every key except tenant, store and data_dir has the default shown.

tenant = "{tenant}"
store = "{store}"
# IANA time zone of the store: rollup buckets and opening hours use it.
time_zone = "{time_zone}"
# Database (edge.db), lock, CSV drop folder (inbox/, processed/, failed/).
data_dir = "{data_dir}"

[opening_hours]
# "HH:MM-HH:MM" in local time, or "closed"; a closing time before the opening one runs
# past midnight ("18:00-02:00"). Used by the POS-silent alert.
mon = "08:00-20:00"
tue = "08:00-20:00"
wed = "08:00-20:00"
thu = "08:00-20:00"
fri = "08:00-20:00"
sat = "08:00-20:00"
sun = "closed"

[listen]
# Local HTTP API. Any address other than loopback requires [auth].
api = "127.0.0.1:7400"
# Firmware-bridge TCP listener; "" disables it.
bridge = "127.0.0.1:7401"

[sync]
# Active after `storesync-edge enroll --config THIS --hub HOST:PORT --token TOKEN`.
# Bytes per second towards the hub, for thin store links; 0 = no cap.
bandwidth_bytes_per_s_max = 0
batch_len_max = 1024
window_batches_max = 8
reconnect_delay_ms_max = 60000
# Nothing heard from the hub for this long (it sends a heartbeat every 5 s): the session
# ends and the agent reconnects. Between 6000 and 600000.
session_idle_ms = 15000

[retention]
# Days an event is kept after the hub acknowledged it (unacknowledged: forever).
acked_days = 14
dead_letter_days = 90
# Days a transactionId stays known for idempotency after its event was pruned.
dedupe_days = 90

[limits]
body_bytes_max = 16777216
records_per_request_max = 10000
items_max = 500
record_bytes_max = 262144
csv_rows_max = 1000000
csv_bytes_max = 268435456
frame_bytes_max = 65536
# Group commit: records per SQLite transaction.
batch_records_max = 4000
# Ingest requests waiting for the writer; beyond it, 503.
queue_requests_max = 4096
# Database size cap in MiB; 0 = the disk is the cap.
db_size_max_mib = 0
read_timeout_ms = 10000
bridge_connections_max = 64
future_skew_max_ms = 300000

[alerts]
low_stock_default = 5
# Per-SKU thresholds, e.g. "sku-123" = 20
low_stock = {{}}
# Daily revenue milestones in currency units.
revenue_milestones = [1000.0, 5000.0, 10000.0]
cooldown_minutes = 60
# Anomaly: median and MAD of the same hour of week over the last weeks.
anomaly_min_weeks = 4
anomaly_max_weeks = 8
anomaly_threshold = 3.0
refund_spike_min_count = 3
pos_silent_minutes = 30

[auth]
# "auto": tokens required unless listen.api is loopback; "required": always.
mode = "auto"
# Ed25519 public key (PEM) that signs managers' tokens; issuer and audience to require.
# public_key_file = "token-signing.pem"
# issuer = "https://id.example"
# audience = "storesync-edge"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_checks() {
        let text = default_toml(Path::new("/tmp/x"), "acme", "s1", "Europe/Paris");
        let config: Config = toml::from_str(&text).unwrap();
        let settings = check(config, Path::new("/")).unwrap();
        assert_eq!(settings.store.as_str(), "s1");
        assert_eq!(settings.opening[6], None);
        assert_eq!(settings.milestones_e4.first(), Some(&10_000_000));
    }

    #[test]
    fn bad_values_name_the_field() {
        let base = default_toml(Path::new("/tmp/x"), "acme", "s1", "UTC");
        for (from, to, field) in [
            (
                "time_zone = \"UTC\"",
                "time_zone = \"Mars/Base\"",
                "time_zone",
            ),
            (
                "mon = \"08:00-20:00\"",
                "mon = \"20:00-20:00\"",
                "opening_hours.mon",
            ),
            (
                "# public_key_file = \"token-signing.pem\"",
                "public_key_file = \"/nonexistent/token-signing.pem\"",
                "auth.public_key_file",
            ),
            ("items_max = 500", "items_max = 0", "limits.items_max"),
            (
                "session_idle_ms = 15000",
                "session_idle_ms = 4000",
                "sync.session_idle_ms",
            ),
        ] {
            let text = base.replacen(from, to, 1);
            let config: Config = toml::from_str(&text).unwrap();
            let err = check(config, Path::new("/")).unwrap_err().to_string();
            assert!(err.starts_with(field), "{err}");
        }
        let err =
            toml::from_str::<Config>(&base.replace("[limits]", "[limits]\nbogus = 1")).unwrap_err();
        assert!(err.to_string().contains("bogus"));
    }
}
