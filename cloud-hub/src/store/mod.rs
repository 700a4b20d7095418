//! The hub's storage interface and its two backends.
//!
//! [`Store`] is everything the rest of the hub asks of a database: tenants, stores, users and
//! service clients; the ingest of verified event runs ([`Store::commit_events`]) with the
//! per-device cursors ([`Store::stream_heads`]); and the reads behind the API (rollups,
//! movements, alerts, sync status). [`pg::PgStore`] is the production backend,
//! [`sqlite::SqliteStore`] the embedded one; both pass the same test suite.
//!
//! Backends do not know about roles or HTTP: every read is already scoped to one tenant and,
//! where the caller says so, to a set of stores.

pub mod docs;
pub mod fleet;
pub mod inventory;
mod item_hours;
pub mod pg;
pub mod pki;
pub mod sqlite;
pub mod views;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use storesync_protocol::domain::Alert;
use storesync_protocol::event::{Event, EventKey, Hash, SeqNo, StreamHead, StreamId};
use storesync_protocol::ids::{AlertId, DeviceId, Sku, StoreId, TenantId};
use storesync_protocol::rollup::{Granularity, SalesFigures};
use storesync_protocol::time::UnixMillis;
use tokio::sync::broadcast;

/// What a storage operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The PostgreSQL server or pool failed.
    #[error("postgres: {0}")]
    Postgres(String),
    /// The SQLite database failed.
    #[error("sqlite: {0}")]
    Sqlite(String),
    /// A referenced tenant, store, user or alert does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The input breaks a rule of the store (e.g. an unknown time zone, a duplicate name).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A stored value could not be decoded (a bug or a corrupted row).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A gated commit was abandoned: the commit it follows did not succeed (see
    /// [`CommitGate`]).
    #[error("not committed: the run before this one was not committed")]
    PredecessorFailed,
}

/// The commit of the run just before this one in the same stream, still in flight.
///
/// A commit behind a gate may write its new rows while its predecessor runs (on another
/// connection), but takes what runs of one stream share — the rollup rows, the alerts and
/// the stream head — and commits only once the predecessor has committed; when the
/// predecessor fails, it rolls back. So the head of a stream never passes a run that is not
/// stored, and two runs of one stream cost the database about the time of the longer one
/// instead of both. It takes a database connection only once its predecessor holds one, so
/// commits waiting behind gates can never hold every pooled connection while the commits
/// they wait for need one.
#[derive(Debug)]
pub struct CommitGate {
    /// The head the predecessor commits, which this run continues.
    pub after: StreamHead,
    ready: tokio::sync::watch::Receiver<GateState>,
}

/// How far the commit ahead of a gate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateState {
    /// Not yet holding its database connection.
    Waiting,
    /// Holding its connection: it needs no other to finish.
    Started,
    /// Finished: whether it committed.
    Done(bool),
}

/// The predecessor's side of a [`CommitGate`]: says when its commit holds its connection
/// and then once whether it succeeded; dropped unsaid, it counts as a failure.
#[derive(Debug)]
pub struct GateOpener(tokio::sync::watch::Sender<GateState>);

impl CommitGate {
    /// A gate behind the commit that will store `after`, and the opener that commit holds.
    pub fn new(after: StreamHead) -> (GateOpener, CommitGate) {
        let (tx, ready) = tokio::sync::watch::channel(GateState::Waiting);
        (GateOpener(tx), CommitGate { after, ready })
    }

    /// Waits until the predecessor holds its connection (or finished); `false` when it
    /// failed.
    pub async fn wait_started(&mut self) -> bool {
        match self.ready.wait_for(|s| *s != GateState::Waiting).await {
            Ok(state) => *state != GateState::Done(false),
            Err(_) => false,
        }
    }

    /// Waits for the predecessor; whether it committed.
    pub async fn wait(&mut self) -> bool {
        match self
            .ready
            .wait_for(|s| matches!(s, GateState::Done(_)))
            .await
        {
            Ok(state) => *state == GateState::Done(true),
            Err(_) => false,
        }
    }
}

impl GateOpener {
    /// The commit holds its database connection.
    pub fn started(&self) {
        self.0.send_if_modified(|s| {
            let waiting = *s == GateState::Waiting;
            if waiting {
                *s = GateState::Started;
            }
            waiting
        });
    }

    /// Opens the gate (`true`: committed) or fails it.
    pub fn open(self, committed: bool) {
        let _ = self.0.send(GateState::Done(committed));
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => StoreError::Postgres(format!("{}: {}", db.code().code(), db.message())),
            None => StoreError::Postgres(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Postgres(e.to_string())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Sqlite(e.to_string())
    }
}

/// What [`Store::commit_events`] did with a run. `inserted + duplicates + conflicts.len()`
/// equals the number of events handed in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Events new to the hub, applied to the event tables and rollups.
    pub inserted: u64,
    /// Events the hub already held with the same content (same key and hash, or a
    /// transaction id already stored with the same content under another key).
    pub duplicates: u64,
    /// Events whose key, or whose transaction id, the hub holds with different content.
    /// They are reported, never applied and never overwrite what is stored.
    pub conflicts: Vec<EventKey>,
}

/// A store (shop) of a tenant, as registered by `storesync-hub store add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    /// Id.
    pub store_id: StoreId,
    /// Display name.
    pub name: String,
    /// Region, for grouping.
    pub region: String,
    /// IANA time zone; rollup buckets are in it.
    pub time_zone: String,
}

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The whole tenant, users included.
    Admin,
    /// Reads every store.
    Analyst,
    /// Reads and handles alerts of assigned stores only.
    StoreManager,
}

impl Role {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::StoreManager => "store_manager",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "analyst" => Some(Role::Analyst),
            "store_manager" | "manager" => Some(Role::StoreManager),
            _ => None,
        }
    }
}

/// A person who signs in with a password, or a service client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name or client id, unique per tenant and kind.
    pub name: String,
    /// `true` for a service client (`client_credentials`).
    pub is_client: bool,
    /// Argon2 PHC string of the password or client secret.
    pub secret_hash: String,
    /// Role.
    pub role: Role,
    /// Assigned stores (store managers only).
    pub stores: Vec<StoreId>,
}

/// A refresh token as stored: only the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// BLAKE3 hex of the token text.
    pub token_hash: String,
    /// Tokens issued by rotation from one sign-in share a family.
    pub family: String,
    /// Principal name.
    pub subject: String,
    /// Whether the subject is a service client.
    pub is_client: bool,
    /// Expiry.
    pub expires_ms: UnixMillis,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// Valid and now spent; issue its successor.
    Fresh(RefreshRecord),
    /// Already spent: a replay. The family has been revoked.
    Replayed,
    /// Unknown, expired or revoked.
    Invalid,
}

/// The dimension a rollup row is grouped by, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DimKind {
    /// The whole store (`dim_value` is empty).
    Store = 0,
    /// One item.
    Item = 1,
    /// One payment method.
    Payment = 2,
    /// One register.
    Register = 3,
}

impl DimKind {
    /// From the stored number.
    pub fn from_i16(n: i16) -> Option<DimKind> {
        match n {
            0 => Some(DimKind::Store),
            1 => Some(DimKind::Item),
            2 => Some(DimKind::Payment),
            3 => Some(DimKind::Register),
            _ => None,
        }
    }
}

/// The stored number of a granularity.
pub fn granularity_code(g: Granularity) -> i16 {
    match g {
        Granularity::Minute => 0,
        Granularity::Hour => 1,
        Granularity::Day => 2,
        Granularity::Week => 3,
    }
}

/// How long a store's time zone, once looked up, is used without looking again: a zone
/// changed by another process (the `store add` command, another hub replica) reaches ingest
/// within this time.
pub const ZONE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Zones by (tenant, store), with the instant each was looked up.
type ZoneEntries = HashMap<(String, String), (jiff::tz::TimeZone, std::time::Instant)>;

/// Store time zones as ingest looked them up, each kept for a while (see [`ZONE_TTL`]).
#[derive(Debug)]
pub(crate) struct ZoneCache {
    entries: std::sync::Mutex<ZoneEntries>,
    ttl: std::time::Duration,
    /// Moves on every removal, so a lookup that read the stored zone before a change cannot
    /// put the old zone back after it.
    generation: std::sync::atomic::AtomicU64,
}

impl ZoneCache {
    pub(crate) fn new(ttl: std::time::Duration) -> ZoneCache {
        ZoneCache {
            entries: std::sync::Mutex::new(HashMap::new()),
            ttl,
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Taken before reading a zone from the database, handed to [`ZoneCache::insert`].
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, ZoneEntries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The zone of `store`, if looked up less than the time-to-live ago.
    pub(crate) fn get(&self, tenant: &str, store: &str) -> Option<jiff::tz::TimeZone> {
        let entries = self.entries();
        let (tz, at) = entries.get(&(tenant.to_owned(), store.to_owned()))?;
        (at.elapsed() < self.ttl).then(|| tz.clone())
    }

    /// Keeps a zone read from the database, unless a zone was removed since `generation`.
    pub(crate) fn insert(
        &self,
        tenant: &str,
        store: &str,
        tz: jiff::tz::TimeZone,
        generation: u64,
    ) {
        let mut entries = self.entries();
        if self.generation() == generation {
            entries.insert(
                (tenant.to_owned(), store.to_owned()),
                (tz, std::time::Instant::now()),
            );
        }
    }

    pub(crate) fn remove(&self, tenant: &str, store: &str) {
        let mut entries = self.entries();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        entries.remove(&(tenant.to_owned(), store.to_owned()));
    }
}

/// What the stock movements of one store's SKU say (see [`Store::stock_levels`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    /// The store.
    pub store: StoreId,
    /// The item.
    pub sku: Sku,
    /// The last count: its time and the quantity counted.
    pub count: Option<(i64, i64)>,
    /// The deltas after the count, or all of them.
    pub delta: i64,
}

/// Net units sold of one store's SKU (see [`Store::units_sold_by_day`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitsSold {
    /// The store.
    pub store: StoreId,
    /// The item.
    pub sku: Sku,
    /// Units sold minus units returned.
    pub units: i64,
    /// Start of the first day counted.
    pub first_day_ms: i64,
}

/// A store's SKU between two instants, both excluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockWindow {
    /// The store.
    pub store: StoreId,
    /// The item.
    pub sku: Sku,
    /// Start, excluded.
    pub after_ms: i64,
    /// End, excluded.
    pub before_ms: i64,
}

/// The category of items the catalog names none for.
pub const UNCATEGORIZED: &str = "uncategorized";

/// An item row's category in a by-category read (`RollupQuery::by_category`), on both
/// backends: the catalog's, else [`UNCATEGORIZED`].
pub(crate) const CATEGORY_COLUMN: &str = "COALESCE(i.category, 'uncategorized')";

/// Which rollup rows to read, and which columns to keep apart (the others are summed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupQuery {
    /// A stored granularity (minute, hour or day) of the dimension, or hour for items
    /// (summed from line items, see `item_hours`).
    pub granularity: Granularity,
    /// Which dimension's rows.
    pub dim: DimKind,
    /// Buckets starting at or after this.
    pub from_ms: UnixMillis,
    /// Buckets starting before this.
    pub to_ms: UnixMillis,
    /// Only these stores (`None`: all of the tenant's).
    pub stores: Option<Vec<StoreId>>,
    /// Only these dimension values (`None`: all).
    pub values: Option<Vec<String>>,
    /// Keep stores apart.
    pub by_store: bool,
    /// With `by_store`, keep apart only stores of different time zones: a row's store is
    /// one of its zone's, which is all a caller finding local week starts needs.
    pub by_zone: bool,
    /// Keep dimension values apart.
    pub by_value: bool,
    /// Sum item rows into their catalog category, read in the database with the catalog
    /// (`UNCATEGORIZED` for an item it has no category for); with `by_value` a row's value
    /// is the category. Only for `DimKind::Item`.
    pub by_category: bool,
    /// Keep buckets apart.
    pub by_bucket: bool,
    /// Return at most this many rows (`None`: all). Which rows is unspecified: a caller
    /// that refuses large answers asks for one row more than it accepts. Items by hour,
    /// summed from line items, refuse a read of more than a multiple of this many line-item
    /// groups with [`StoreError::Invalid`] instead.
    pub limit: Option<u64>,
}

/// One summed rollup row. Columns not kept apart are empty (`""`, `0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    /// Store, or `None` when summed over stores.
    pub store_id: Option<StoreId>,
    /// Dimension value, or `""`.
    pub value: String,
    /// Bucket start, or 0.
    pub bucket_ms: UnixMillis,
    /// Sums.
    pub figures: SalesFigures,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertQuery {
    /// Only these stores.
    pub stores: Option<Vec<StoreId>>,
    /// Only in this state (`open`, `acknowledged`, `resolved`).
    pub state: Option<String>,
    /// Raised before this (keyset pagination, newest first).
    pub before_ms: Option<UnixMillis>,
    /// At most this many.
    pub limit: u32,
}

impl AlertQuery {
    /// The newest `limit` alerts, of every store and in any state.
    pub fn newest(limit: u32) -> AlertQuery {
        AlertQuery {
            limit,
            ..AlertQuery::default()
        }
    }
}

/// A stored alert, with when the hub last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    /// The alert.
    pub alert: Alert,
    /// When the hub stored its current state.
    pub updated_ms: UnixMillis,
}

/// What a sync session reports about a device when it talks to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceContact {
    /// The hub's clock at the contact.
    pub now_ms: UnixMillis,
    /// Events the device still holds unsent.
    pub backlog: u64,
    /// Device clock minus hub clock.
    pub clock_skew_ms: i64,
}

/// The sync state of one device stream set, as the hub knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Store.
    pub store_id: StoreId,
    /// Device.
    pub device_id: DeviceId,
    /// Last contact (hub clock), if any.
    pub last_seen_ms: Option<UnixMillis>,
    /// Backlog at the last contact.
    pub backlog: u64,
    /// Clock skew at the last contact.
    pub clock_skew_ms: i64,
    /// Business time of the newest event committed from this device.
    pub last_event_ms: Option<UnixMillis>,
    /// When the last commit from the device happened (hub clock).
    pub last_commit_ms: Option<UnixMillis>,
}

/// A change committed to the store, published to every hub process (through
/// LISTEN/NOTIFY on PostgreSQL, in process on SQLite). Caches and live streams listen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Tenant.
    pub tenant: String,
    /// Sales figures added per store by the commit.
    #[serde(default)]
    pub sales: Vec<StoreTick>,
    /// Alerts created or changed.
    #[serde(default)]
    pub alerts: Vec<String>,
    /// Stores whose data changed (sales, alerts, stock).
    #[serde(default)]
    pub stores: Vec<String>,
}

impl Change {
    /// The tenant's catalog changed: what is grouped by category may have, in any store.
    pub fn catalog(tenant: &str) -> Change {
        Change {
            tenant: tenant.to_owned(),
            sales: Vec::new(),
            alerts: Vec::new(),
            stores: Vec::new(),
        }
    }

    /// A store was added, or its name, region or time zone changed: series grouped or
    /// bucketed by them may have, and so has the tenant's store list.
    pub fn stores_edited(tenant: &str) -> Change {
        Change::catalog(tenant)
    }

    /// Whether the change is tenant-wide (a catalog or store edit) rather than one of data.
    pub fn is_tenant_wide(&self) -> bool {
        self.sales.is_empty() && self.alerts.is_empty() && self.stores.is_empty()
    }

    /// One alert of `store` created or changed.
    pub fn alert(tenant: &str, alert_id: &str, store: &str) -> Change {
        Change {
            tenant: tenant.to_owned(),
            sales: Vec::new(),
            alerts: vec![alert_id.to_owned()],
            stores: vec![store.to_owned()],
        }
    }
}

/// Sales added to one store by one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreTick {
    /// Store.
    pub store: String,
    /// Revenue added, ten-thousandths.
    pub revenue_e4: i64,
    /// Sale transactions added.
    pub transactions: i64,
    /// Newest business time among them.
    pub last_ms: i64,
}

/// The storage interface of the hub.
///
/// Every method that names a tenant runs with that tenant set for row-level security
/// (PostgreSQL) or filters by it (SQLite); nothing crosses tenants.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Creates or upgrades the schema. Idempotent.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Whether the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// The sync server's trust material (CAs, device certificates, enrollment tokens).
    fn pki(&self) -> &dyn pki::PkiStore;

    /// Saved views of the UI, per user.
    fn views(&self) -> &dyn views::ViewStore;

    /// The replicated automerge documents and the devices' sync states.
    fn docs(&self) -> &dyn docs::DocStore;

    /// Alerts the hub raises about its fleet (not syncing, clock skew), deduplicated by id.
    fn fleet(&self) -> &dyn fleet::FleetAlertStore;

    /// Subscribes to committed changes of every tenant.
    fn subscribe(&self) -> broadcast::Receiver<Change>;

    /// Creates a tenant. Idempotent on the id.
    async fn create_tenant(&self, tenant: &TenantId, name: &str) -> Result<(), StoreError>;

    /// Whether the tenant exists.
    async fn tenant_exists(&self, tenant: &TenantId) -> Result<bool, StoreError>;

    /// Adds or updates a store. The time zone must be a known IANA name.
    async fn upsert_store(&self, tenant: &TenantId, store: &StoreInfo) -> Result<(), StoreError>;

    /// The tenant's stores, by id.
    async fn stores(&self, tenant: &TenantId) -> Result<Vec<StoreInfo>, StoreError>;

    /// Sets an item's category (from the catalog).
    async fn set_item_category(
        &self,
        tenant: &TenantId,
        sku: &Sku,
        category: &str,
    ) -> Result<(), StoreError>;

    /// Item → category of the tenant.
    async fn item_categories(
        &self,
        tenant: &TenantId,
    ) -> Result<BTreeMap<String, String>, StoreError>;

    /// Adds or replaces a user or service client.
    async fn upsert_principal(
        &self,
        tenant: &TenantId,
        principal: &Principal,
    ) -> Result<(), StoreError>;

    /// A user (`is_client = false`) or client by name.
    async fn principal(
        &self,
        tenant: &TenantId,
        name: &str,
        is_client: bool,
    ) -> Result<Option<Principal>, StoreError>;

    /// Stores a new refresh token.
    async fn insert_refresh(
        &self,
        tenant: &TenantId,
        record: &RefreshRecord,
    ) -> Result<(), StoreError>;

    /// Spends a refresh token (once). A replayed token revokes its whole family.
    async fn use_refresh(
        &self,
        tenant: &TenantId,
        token_hash: &str,
        now_ms: UnixMillis,
    ) -> Result<RefreshUse, StoreError>;

    /// One verified run of events of one stream plus the stream's new head; commits
    /// atomically and returns only after the commit. The same run twice changes nothing.
    async fn commit_events(
        &self,
        stream: &StreamId,
        events: &[Event],
        new_head: StreamHead,
    ) -> Result<CommitOutcome, StoreError>;

    /// [`Store::commit_events`] for runs of one stream committed concurrently (see
    /// [`CommitGate`]): behind `behind` when the run before this one is still being
    /// committed, telling the run after it through `ahead`. This default waits for the
    /// predecessor, then commits; a backend that can overlap the two commits overrides it.
    async fn commit_events_in_order(
        &self,
        stream: &StreamId,
        events: &[Event],
        new_head: StreamHead,
        behind: Option<CommitGate>,
        ahead: GateOpener,
    ) -> Result<CommitOutcome, StoreError> {
        if let Some(mut gate) = behind
            && !gate.wait().await
        {
            ahead.open(false);
            return Err(StoreError::PredecessorFailed);
        }
        ahead.started();
        let result = self.commit_events(stream, events, new_head).await;
        ahead.open(result.is_ok());
        result
    }

    /// The committed heads (cursors) of every stream of a device, all epochs.
    async fn stream_heads(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<Vec<(StreamId, StreamHead)>, StoreError>;

    /// The chain hash of the event at `seq` of `stream`, if the hub holds it.
    async fn chain_hash_at(
        &self,
        stream: &StreamId,
        seq: SeqNo,
    ) -> Result<Option<Hash>, StoreError>;

    /// Records a device's contact (last seen, backlog, clock skew).
    async fn record_contact(
        &self,
        tenant: &TenantId,
        store: &StoreId,
        device: &DeviceId,
        contact: &DeviceContact,
    ) -> Result<(), StoreError>;

    /// Sync state of every device of the tenant.
    async fn device_status(&self, tenant: &TenantId) -> Result<Vec<DeviceStatus>, StoreError>;

    /// Summed rollup rows, in no particular order; items by hour summed from line items
    /// (see [`RollupQuery`]).
    async fn rollups(
        &self,
        tenant: &TenantId,
        query: &RollupQuery,
    ) -> Result<Vec<RollupRow>, StoreError>;

    /// Per store and SKU with stock movements (scans and adjustments; sales are line items)
    /// in the given stores (all when `None`), of one SKU when given: the last count (latest
    /// time, then greatest source id in byte order) and the sum of the deltas after it (of
    /// all deltas when there is none). Sorted by store and SKU.
    async fn stock_levels(
        &self,
        tenant: &TenantId,
        stores: Option<&[StoreId]>,
        sku: Option<&Sku>,
    ) -> Result<Vec<StockLevel>, StoreError>;

    /// For each window, in order, the stock change of the line items of its store and SKU
    /// recorded strictly inside it: sales take units out, returns put them back, voids
    /// change nothing.
    async fn sales_change_in(
        &self,
        tenant: &TenantId,
        windows: &[StockWindow],
    ) -> Result<Vec<i64>, StoreError>;

    /// Net units sold (sales minus returns) per store and SKU, summed from the daily item
    /// rollups of the given stores (all when `None`), of one SKU when given. A store and SKU
    /// listed (once) in `after` counts only the days that start strictly after its instant.
    async fn units_sold_by_day(
        &self,
        tenant: &TenantId,
        stores: Option<&[StoreId]>,
        sku: Option<&Sku>,
        after: &[(StoreId, Sku, i64)],
    ) -> Result<Vec<UnitsSold>, StoreError>;

    /// Alerts, newest first.
    async fn alerts(
        &self,
        tenant: &TenantId,
        query: &AlertQuery,
    ) -> Result<Vec<AlertRecord>, StoreError>;

    /// One alert.
    async fn alert(
        &self,
        tenant: &TenantId,
        alert_id: &AlertId,
    ) -> Result<Option<AlertRecord>, StoreError>;

    /// Moves an alert to `state` (acknowledged or resolved), recording who did it.
    async fn set_alert_state(
        &self,
        tenant: &TenantId,
        alert_id: &AlertId,
        state: storesync_protocol::domain::AlertState,
        by: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<AlertRecord>, StoreError>;

    /// Records that could not be accepted, newest first.
    async fn dead_letters(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError>;
}

/// A record kept because it could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Store.
    pub store_id: String,
    /// The event key as text, `device/epoch/class/seq`.
    pub event_key: String,
    /// Why.
    pub reason: String,
    /// The raw event (postcard).
    pub raw: Vec<u8>,
    /// When the hub received it.
    pub received_ms: UnixMillis,
}

/// The current time in Unix milliseconds (the hub shell's clock).
pub fn now_ms() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Resolves a time zone name, refusing unknown ones.
pub fn time_zone(name: &str) -> Result<jiff::tz::TimeZone, StoreError> {
    jiff::tz::TimeZone::get(name)
        .map_err(|e| StoreError::Invalid(format!("time zone {name:?}: {e}")))
}

/// `device/epoch/class/seq`, for logs and dead letters.
pub fn key_text(key: &EventKey) -> String {
    format!(
        "{}/{}/{}/{}",
        key.stream.device,
        key.stream.epoch.0,
        key.stream.class.as_str(),
        key.seq.0
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_category_column_falls_back_to_uncategorized() {
        assert!(super::CATEGORY_COLUMN.contains(&format!("'{}')", super::UNCATEGORIZED)));
    }

    #[test]
    fn a_zone_read_before_a_change_is_not_kept_after_it() {
        let utc = jiff::tz::TimeZone::UTC;
        let cache = super::ZoneCache::new(std::time::Duration::from_secs(60));
        let before = cache.generation();
        cache.insert("acme", "s1", utc.clone(), before);
        assert_eq!(cache.get("acme", "s1"), Some(utc.clone()));
        // A lookup starts, the zone changes (and is removed), the lookup ends.
        let lookup = cache.generation();
        cache.remove("acme", "s1");
        cache.insert("acme", "s1", utc.clone(), lookup);
        assert_eq!(cache.get("acme", "s1"), None);
        let expired = super::ZoneCache::new(std::time::Duration::ZERO);
        expired.insert("acme", "s1", utc, expired.generation());
        assert_eq!(expired.get("acme", "s1"), None);
    }
}
