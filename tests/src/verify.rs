//! What the fault tests compare once faults heal: the hub's committed transactions against
//! the agent's accepted ones (count and an order-independent checksum, read from each
//! side's database), the hub's sales series against the agent's rollups for the same ranges
//! and groupings (read through each side's API), and the store document's heads.
//!
//! Both transaction sets are recomputed from the stored events themselves — the hub's
//! `transactions.event` and the agent's outbox `events.body` — not from registries or
//! counters either side keeps, so a row stored twice, lost or stored with other content
//! shows up in the comparison.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use storesync_protocol::{Event, EventBody, EventClass, Hash};

use crate::stack::{Edge, Hub, edge_api, hub_api, wait_store_doc_converged};

/// Where the hub keeps its data.
#[derive(Debug, Clone)]
pub enum HubDb {
    /// The embedded store's file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string of a role that sees every tenant (the superuser).
    Postgres(String),
}

/// A multiset of transactions: how many, and the wrapping sum of a BLAKE3 digest of each
/// one's id and content hash. The sum does not depend on order and, unlike XOR, an element
/// present twice does not cancel out. `ids` (id → content hash) is for failure messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxSet {
    /// Transactions, duplicates included.
    pub count: u64,
    /// Wrapping sum of [`digest`] over them.
    pub sum: u128,
    /// Each id's content hash (the last seen, when an id occurs twice).
    pub ids: BTreeMap<String, [u8; 32]>,
}

/// The digest of one transaction: BLAKE3 over its id and content hash, first 16 bytes.
pub fn digest(id: &str, content: &Hash) -> u128 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(id.as_bytes());
    hasher.update(&[0]);
    hasher.update(&content.0);
    let bytes = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&bytes.as_bytes()[..16]);
    u128::from_le_bytes(first)
}

impl TxSet {
    /// Adds one transaction event body; other bodies are ignored.
    pub fn add(&mut self, body: &EventBody) {
        if let EventBody::Transaction(t) = body {
            let content = body.content_hash();
            self.count += 1;
            self.sum = self
                .sum
                .wrapping_add(digest(t.transaction_id.as_str(), &content));
            self.ids
                .insert(t.transaction_id.as_str().to_owned(), content.0);
        }
    }

    /// The checksum pair compared between sides.
    pub fn key(&self) -> (u64, u128) {
        (self.count, self.sum)
    }

    /// Ids only one side has, or with different content, at most ten of each, for messages.
    pub fn diff(&self, other: &TxSet) -> String {
        let only = |a: &TxSet, b: &TxSet| -> Vec<String> {
            a.ids
                .iter()
                .filter(|(id, hash)| b.ids.get(*id) != Some(hash))
                .map(|(id, _)| id.clone())
                .take(10)
                .collect()
        };
        format!(
            "count {} vs {}; distinct ids {} vs {}; differing on the left {:?}, on the right {:?}",
            self.count,
            other.count,
            self.ids.len(),
            other.ids.len(),
            only(self, other),
            only(other, self)
        )
    }
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// The hub's committed transactions of tenant `acme`, or why they could not be read.
pub fn hub_transactions(db: &HubDb) -> Result<TxSet, String> {
    const QUERY: &str = "SELECT event FROM transactions WHERE tenant_id = 'acme'";
    let rows: Vec<Vec<u8>> = match db {
        HubDb::Sqlite(path) => block_on(async {
            use sqlx::Row as _;
            let url = format!("sqlite://{}?mode=ro", path.display());
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            let rows = sqlx::query(QUERY)
                .fetch_all(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(rows.iter().map(|r| r.get::<Vec<u8>, _>(0)).collect())
        })?,
        HubDb::Postgres(url) => block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(connection);
            let rows = client.query(QUERY, &[]).await.map_err(|e| e.to_string());
            drop(client);
            let _ = driver.await;
            Ok::<_, String>(rows?.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
        })?,
    };
    let mut set = TxSet::default();
    for bytes in rows {
        let event: Event = postcard::from_bytes(&bytes)
            .map_err(|e| format!("a stored hub event does not decode: {e}"))?;
        if !event.content_ok() {
            return Err(format!("hub event {:?} fails its content hash", event.key));
        }
        set.add(&event.body);
    }
    Ok(set)
}

/// How many transactions of tenant `acme` the hub holds; 0 while it cannot be read. Cheap
/// enough to poll while the hub commits.
pub fn hub_count(db: &HubDb) -> u64 {
    const QUERY: &str = "SELECT count(*) FROM transactions WHERE tenant_id = 'acme'";
    let count: Result<i64, String> = match db {
        HubDb::Sqlite(path) => block_on(async {
            use sqlx::Row as _;
            let url = format!("sqlite://{}?mode=ro", path.display());
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            let row = sqlx::query(QUERY)
                .fetch_one(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(row.get::<i64, _>(0))
        }),
        HubDb::Postgres(url) => block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(connection);
            let row = client
                .query_one(QUERY, &[])
                .await
                .map_err(|e| e.to_string());
            drop(client);
            let _ = driver.await;
            Ok(row?.get::<_, i64>(0))
        }),
    };
    count.map_or(0, |n| u64::try_from(n).unwrap_or(0))
}

/// The transactions the agent accepted: every sales event of every epoch in its outbox
/// (nothing is pruned within a test's retention).
pub fn edge_transactions(edge: &Edge) -> Result<TxSet, String> {
    let path = edge.dir.join("edge.db");
    let rows: Vec<Vec<u8>> = block_on(async {
        use sqlx::Row as _;
        let url = format!("sqlite://{}?mode=ro", path.display());
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .map_err(|e| e.to_string())?;
        let rows = sqlx::query("SELECT body FROM events WHERE class = ?")
            .bind(EventClass::Sales as i64)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(rows.iter().map(|r| r.get::<Vec<u8>, _>(0)).collect())
    })?;
    let mut set = TxSet::default();
    for bytes in rows {
        let body: EventBody = postcard::from_bytes(&bytes)
            .map_err(|e| format!("an agent event does not decode: {e}"))?;
        set.add(&body);
    }
    Ok(set)
}

/// Waits up to `timeout` until `expected(edge set)` equals the hub's set by count and
/// checksum and stays so for a second (nothing arrives twice late); returns the hub's set.
/// `expected` maps the agent's set to what the hub must hold (the identity, except where a
/// scenario makes the two differ by design).
pub fn wait_tx_sets_equal(
    db: &HubDb,
    edge: &Edge,
    timeout: Duration,
    context: &dyn Fn() -> String,
    expected: impl Fn(TxSet) -> TxSet,
) -> TxSet {
    let deadline = Instant::now() + timeout;
    let mut stable_since: Option<(Instant, (u64, u128))> = None;
    loop {
        let hub = hub_transactions(db);
        let want = edge_transactions(edge).map(&expected);
        match (&hub, &want) {
            (Ok(hub), Ok(want)) if hub.key() == want.key() => match stable_since {
                Some((since, key)) if key == hub.key() => {
                    if since.elapsed() >= Duration::from_secs(1) {
                        return hub.clone();
                    }
                }
                _ => stable_since = Some((Instant::now(), hub.key())),
            },
            _ => stable_since = None,
        }
        if Instant::now() >= deadline {
            let detail = match (&hub, &want) {
                (Ok(hub), Ok(want)) => hub.diff(want),
                _ => format!(
                    "hub {:?}; agent {:?}",
                    hub.map(|h| h.key()),
                    want.map(|w| w.key())
                ),
            };
            panic!(
                "the hub's transactions (left) never equalled the agent's (right) within {timeout:?}: {detail}; {}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sales figures per (bucket start in ms, group): revenue (1e-4), units, transactions,
/// refunds, voids. Empty buckets are left out.
pub type Figures = BTreeMap<(i64, String), [i64; 5]>;

fn figures(v: &serde_json::Value) -> Option<[i64; 5]> {
    let revenue = (v["revenue"].as_f64()? * 10_000.0).round() as i64;
    let row = [
        revenue,
        v["units"].as_i64()?,
        v["transactions"].as_i64()?,
        v["refunds"].as_i64()?,
        v["voids"].as_i64()?,
    ];
    (row != [0; 5]).then_some(row)
}

/// The hub's sales series of `[from, to)` (RFC 3339) by `bucket` and `group_by`.
pub fn hub_series(
    hub: &Hub,
    token: &str,
    bucket: &str,
    group_by: &str,
    from: &str,
    to: &str,
) -> Option<Figures> {
    let path =
        format!("/api/v1/sales/series?bucket={bucket}&group_by={group_by}&from={from}&to={to}");
    let (status, body) = hub_api(hub, token, "GET", &path, "");
    if status != 200 {
        return None;
    }
    let mut out = Figures::new();
    for series in body["series"].as_array()? {
        let group = series["group"].as_str()?.to_owned();
        for point in series["points"].as_array()? {
            let t = storesync_protocol::EventTime::parse_rfc3339(point["t"].as_str()?).ok()?;
            if let Some(f) = figures(point) {
                out.insert((t.unix_ms(), group.clone()), f);
            }
        }
    }
    Some(out)
}

/// The agent's rollups of `[from, to)` (RFC 3339) by `granularity` and `group`, with the
/// store grouping named by the test stack's store `s1`.
pub fn edge_rollups(
    edge: &Edge,
    granularity: &str,
    group: &str,
    from: &str,
    to: &str,
) -> Option<Figures> {
    let path = format!(
        "/api/v1/rollups?granularity={granularity}&group={group}&from={from}&to={to}&limit=10000"
    );
    let (status, body) = edge_api(edge, "GET", &path, "");
    if status != 200 {
        return None;
    }
    let mut out = Figures::new();
    for row in body["rows"].as_array()? {
        let bucket = row["bucketMs"]
            .as_i64()
            .or_else(|| row["bucket_ms"].as_i64())?;
        // The agent keeps one store's rollups; its store grouping has an empty name.
        let name = match row["group"].as_str()? {
            "" if group == "store" => "s1",
            name => name,
        };
        if let Some(f) = figures(row) {
            out.insert((bucket, name.to_owned()), f);
        }
    }
    Some(out)
}

/// The groupings compared: (hub bucket, hub group_by, agent group).
pub const ROLLUP_VIEWS: [(&str, &str, &str); 5] = [
    ("hour", "store", "store"),
    ("hour", "payment", "payment"),
    ("hour", "item", "item"),
    ("day", "item", "item"),
    ("minute", "store", "store"),
];

/// Waits up to 30 s until the hub's series equal the agent's rollups for every view of
/// [`ROLLUP_VIEWS`] over `[from, to)`; panics naming the first view that differs.
pub fn wait_rollups_equal(hub: &Hub, edge: &Edge, token: &str, from: &str, to: &str) {
    for (bucket, group_by, group) in ROLLUP_VIEWS {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let at_hub = hub_series(hub, token, bucket, group_by, from, to);
            let at_edge = edge_rollups(edge, bucket, group, from, to);
            if let (Some(h), Some(e)) = (&at_hub, &at_edge)
                && h == e
                && !h.is_empty()
            {
                break;
            }
            if Instant::now() >= deadline {
                let (h, e) = (at_hub.unwrap_or_default(), at_edge.unwrap_or_default());
                let keys: std::collections::BTreeSet<_> = h.keys().chain(e.keys()).collect();
                let differing: Vec<_> = keys
                    .into_iter()
                    .filter(|k| h.get(*k) != e.get(*k))
                    .take(6)
                    .map(|k| (k, h.get(k), e.get(k)))
                    .collect();
                panic!(
                    "hub series by {bucket}/{group_by} never equalled the agent's rollups: \
                     {} rows at the hub, {} at the agent; differing (key, hub, agent) {differing:?}",
                    h.len(),
                    e.len()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The three checks after healing: equal transaction sets (through `expected`), equal
/// rollups over `[from, to)`, equal store document heads. Returns the hub's set.
pub fn assert_converged(
    hub: &Hub,
    db: &HubDb,
    edge: &Edge,
    token: &str,
    (from, to): (&str, &str),
    context: &dyn Fn() -> String,
    expected: impl Fn(TxSet) -> TxSet,
) -> TxSet {
    let set = wait_tx_sets_equal(db, edge, Duration::from_secs(90), context, expected);
    wait_rollups_equal(hub, edge, token, from, to);
    wait_store_doc_converged(hub, edge, token);
    set
}

/// The hub's embedded store file under its data directory.
pub fn sqlite_db(hub: &Hub) -> HubDb {
    HubDb::Sqlite(hub.dir.join("hub.db"))
}

/// Copies `file` and its `-wal`/`-shm` companions (where present) next to `to`, removing
/// stale companions of `to`: a consistent copy of a stopped SQLite database.
pub fn copy_sqlite(file: &Path, to: &Path) {
    std::fs::copy(file, to).unwrap();
    for suffix in ["-wal", "-shm"] {
        let mut from = file.as_os_str().to_owned();
        from.push(suffix);
        let mut dest = to.as_os_str().to_owned();
        dest.push(suffix);
        let _ = std::fs::remove_file(&dest);
        if Path::new(&from).exists() {
            std::fs::copy(&from, &dest).unwrap();
        }
    }
}
