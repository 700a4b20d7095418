//! The SQLite store: opening, identity and epochs, the data-directory lock, and the outbox
//! reads the sync client uses.
//!
//! Writes go through one task, [`crate::writer`], which owns the only write connection.
//! This module opens that connection and a small pool of read-only connections.
//!
//! # Durability and the WAL
//!
//! The database is in WAL mode with `synchronous=FULL`: a commit is on disk (the WAL is
//! fsynced) before any caller hears "accepted". The WAL is kept bounded by
//! `wal_autocheckpoint`, `journal_size_limit`, a passive `wal_checkpoint` on every writer
//! tick, and by API reads that are cut off after `limits.read_timeout_ms`, so a dashboard
//! cannot pin an old snapshot for long.
//!
//! The WAL file keeps its size between checkpoints: once checkpointed, SQLite writes it
//! again from the start, over blocks the file already has. A commit that instead appends
//! to the file makes its fsync also commit the file system's journal (the new size and
//! blocks), about twice the cost, and those journal commits queue behind every other
//! writer's on the disk. So before the agent opens the database it extends the WAL with
//! zeros to [`WAL_PRESIZE_BYTES`] (SQLite reads zeros as the end of the log), and the
//! tick's checkpoint never truncates it. `journal_size_limit` still cuts a
//! WAL that grew behind a long reader back down when it is next reset.
//!
//! # Identity
//!
//! `meta` holds the device id (random, minted at the first open), the current epoch
//! (random), and the data directory's identity (`path:device:inode`). A new epoch is
//! minted when the directory's identity changed (the data was copied or moved) and by
//! `restore`; the old epoch's heads are recorded as its [`EpochLink`], and the new epoch's
//! streams continue from those hashes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use storesync_protocol::event::{EventKey, StreamId};
use storesync_protocol::wire::EpochLink;
use storesync_protocol::{
    DeviceId, Epoch, Event, EventBody, EventClass, Hash, Sealer, SeqNo, StoreId, StreamHead,
    TenantId,
};

use crate::config::Settings;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another agent holds the data directory.
    #[error("another storesync-edge holds the lock on {0}")]
    Locked(PathBuf),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The disk (or the configured database cap) is full; nothing was committed.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(sqlx::Error),
    /// The database belongs to another tenant or store, or its identity is unreadable.
    #[error("identity: {0}")]
    Identity(String),
    /// A stored event does not decode.
    #[error("stored event ({epoch}, {class}, {seq}) does not decode: {reason}")]
    Corrupt {
        /// Epoch.
        epoch: u64,
        /// Class.
        class: u8,
        /// Sequence.
        seq: u64,
        /// Decoder's message.
        reason: String,
    },
    /// The writer has stopped (shutdown).
    #[error("the writer has stopped")]
    Closed,
    /// Too many requests are waiting for the writer.
    #[error("ingest queue is full")]
    Busy,
}

impl StoreError {
    /// Whether the caller should answer "try later" (503) rather than "broken" (500).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull(_) | StoreError::Busy | StoreError::Closed
        )
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            // SQLITE_FULL (13) and SQLITE_IOERR_WRITE-style "disk full" both mean nothing
            // was committed and the database is intact.
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            if code & 0xff == 13 {
                return StoreError::DiskFull(db.message().to_owned());
            }
        }
        StoreError::Database(e)
    }
}

/// Epoch numbers are random `u64`s; SQLite integers are `i64`. Stored bit for bit.
pub(crate) fn epoch_sql(epoch: Epoch) -> i64 {
    epoch.0 as i64
}

pub(crate) fn epoch_from_sql(value: i64) -> Epoch {
    Epoch(value as u64)
}

/// Who this agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Tenant.
    pub tenant: TenantId,
    /// Store.
    pub store: StoreId,
    /// Device, minted at the first open of the data directory.
    pub device: DeviceId,
    /// Current epoch.
    pub epoch: Epoch,
    /// What the current epoch forked from, when it is not the first.
    pub link: Option<EpochLink>,
}

/// One outbox stream: an (epoch, class) with its head and the hub's acknowledged position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStatus {
    /// Epoch.
    pub epoch: Epoch,
    /// Class.
    pub class: EventClass,
    /// Last sealed event.
    pub head: StreamHead,
    /// Highest sequence the hub acknowledged.
    pub acked: SeqNo,
}

impl StreamStatus {
    /// Events sealed but not acknowledged.
    pub fn backlog(&self) -> u64 {
        self.head.seq.0.saturating_sub(self.acked.0)
    }
}

/// How [`open`] treats the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Keep the epoch unless the directory was copied.
    Run,
    /// Always start a new epoch (after a restore from backup).
    Restore,
}

/// An open store: the read pool, the writer's connection and the sealer to hand to
/// [`crate::writer::spawn`].
#[derive(Debug)]
pub struct Opened {
    /// Read side.
    pub store: Store,
    /// The only write connection.
    pub writer_conn: SqliteConnection,
    /// The sealer resumed from the persisted heads.
    pub sealer: Sealer,
}

/// The read side of the store, cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    read: SqlitePool,
    identity: Identity,
    db_path: PathBuf,
    _lock: std::sync::Arc<File>,
}

/// Takes the data directory's lock; refuses when another process holds it.
pub fn lock_data_dir(data_dir: &Path) -> Result<File, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
        context: format!("create {}", data_dir.display()),
        source,
    })?;
    let path = data_dir.join("edge.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::Io {
            context: format!("open {}", path.display()),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(data_dir.to_owned())),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Io {
            context: format!("lock {}", path.display()),
            source,
        }),
    }
}

/// `path:device:inode` of the data directory: changes when the directory is copied.
fn dir_identity(data_dir: &Path) -> Result<String, StoreError> {
    use std::os::unix::fs::MetadataExt;
    let canonical = data_dir.canonicalize().map_err(|source| StoreError::Io {
        context: format!("resolve {}", data_dir.display()),
        source,
    })?;
    let meta = std::fs::metadata(&canonical).map_err(|source| StoreError::Io {
        context: format!("stat {}", canonical.display()),
        source,
    })?;
    Ok(format!(
        "{}:{}:{}",
        canonical.display(),
        meta.dev(),
        meta.ino()
    ))
}

fn connect_options(path: &Path, settings: &Settings) -> SqliteConnectOptions {
    let mut options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(false)
        .pragma("wal_autocheckpoint", "1000")
        .pragma("journal_size_limit", (64 * 1024 * 1024).to_string())
        .pragma("cache_size", "-16000")
        .pragma("temp_store", "memory");
    let cap_mib = settings.config.limits.db_size_max_mib;
    if cap_mib > 0 {
        // 4 KiB pages: 256 per MiB.
        options = options.pragma("max_page_count", cap_mib.saturating_mul(256).to_string());
    }
    options
}

/// The size the WAL file is given before SQLite opens the database: the
/// `wal_autocheckpoint` span (1,000 pages of 4 KiB and their frame headers) and room for
/// the commit that crosses it.
pub const WAL_PRESIZE_BYTES: u64 = 8 * 1024 * 1024;

/// Extends the WAL of `db_path` with zeros to `WAL_PRESIZE_BYTES` (creating it when there
/// is none), so commits overwrite blocks instead of growing the file. SQLite's recovery
/// reads frames up to the first whose salt and checksum do not follow, so zeros read as
/// the end of the log: frames a crash left stay as they are. Only called with the data
/// directory's lock held and no connection open. A failure (a full disk) leaves SQLite to
/// grow the file as usual.
fn presize_wal(db_path: &Path) {
    use std::io::Write as _;
    let mut wal = db_path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        // A WAL SQLite creates gets the database file's permissions; so does this one.
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(db_path) {
            use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
            options.mode(meta.permissions().mode() & 0o777);
        }
        let mut file = options.open(&wal)?;
        let mut missing = WAL_PRESIZE_BYTES.saturating_sub(file.metadata()?.len());
        if missing == 0 {
            return Ok(());
        }
        let zeros = vec![0u8; 1024 * 1024];
        while missing > 0 {
            let n = missing.min(zeros.len() as u64);
            file.write_all(&zeros[..n as usize])?;
            missing -= n;
        }
        file.sync_all()
    })();
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %wal.display(), "could not pre-size the WAL");
    }
}

/// Opens (creating when needed) the store of `settings`, holding `lock`.
pub async fn open(
    settings: &Settings,
    lock: File,
    mode: OpenMode,
    now_ms: i64,
) -> Result<Opened, StoreError> {
    let db_path = settings.db_path();
    presize_wal(&db_path);
    let mut conn = SqliteConnection::connect_with(&connect_options(&db_path, settings)).await?;
    sqlx::migrate!("./migrations")
        .run(&mut conn)
        .await
        .map_err(|e| StoreError::Identity(format!("migration failed: {e}")))?;
    let identity = ensure_identity(&mut conn, settings, mode, now_ms).await?;
    let heads = load_heads(&mut conn, identity.epoch).await?;
    let sealer = Sealer::resume(
        identity.tenant.clone(),
        identity.store.clone(),
        identity.device.clone(),
        identity.epoch,
        heads,
    );
    let read_options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(StoreError::Database)?
        .filename(&db_path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(5))
        .pragma("cache_size", "-4000");
    let read = SqlitePoolOptions::new()
        .max_connections(4)
        .min_connections(0)
        .idle_timeout(Duration::from_secs(60))
        .connect_with(read_options)
        .await?;
    Ok(Opened {
        store: Store {
            read,
            identity,
            db_path,
            _lock: std::sync::Arc::new(lock),
        },
        writer_conn: conn,
        sealer,
    })
}

async fn meta_get(conn: &mut SqliteConnection, key: &str) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("SELECT value FROM meta WHERE key = ?")
        .bind(key.to_owned())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.get::<String, _>(0)))
}

async fn meta_set(conn: &mut SqliteConnection, key: &str, value: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(key.to_owned())
        .bind(value.to_owned())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn load_heads(
    conn: &mut SqliteConnection,
    epoch: Epoch,
) -> Result<[StreamHead; 3], StoreError> {
    let mut heads = [StreamHead::genesis(Hash::ZERO); 3];
    let rows = sqlx::query("SELECT class, seq, hash FROM stream_heads WHERE epoch = ?")
        .bind(epoch_sql(epoch))
        .fetch_all(&mut *conn)
        .await?;
    for row in rows {
        let class: i64 = row.get(0);
        let seq: i64 = row.get(1);
        let hash: Vec<u8> = row.get(2);
        let hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| StoreError::Identity("a stream head hash is not 32 bytes".into()))?;
        if let Some(cell) = usize::try_from(class).ok().and_then(|c| heads.get_mut(c)) {
            *cell = StreamHead {
                seq: SeqNo(u64::try_from(seq).unwrap_or(0)),
                hash: Hash(hash),
            };
        }
    }
    Ok(heads)
}

fn random_epoch() -> Epoch {
    // Zero is avoided so that "no epoch" can never be confused with a real one.
    Epoch(rand::random::<u64>().max(1))
}

async fn start_epoch(
    conn: &mut SqliteConnection,
    epoch: Epoch,
    link: Option<&EpochLink>,
    reason: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    let link_bytes = match link {
        Some(link) => {
            Some(postcard::to_allocvec(link).map_err(|e| StoreError::Identity(e.to_string()))?)
        }
        None => None,
    };
    sqlx::query("INSERT INTO epochs (epoch, started_ms, reason, link) VALUES (?, ?, ?, ?)")
        .bind(epoch_sql(epoch))
        .bind(now_ms)
        .bind(reason.to_owned())
        .bind(link_bytes)
        .execute(&mut *tx)
        .await?;
    for class in EventClass::ALL {
        let fork = link
            .map(|l| l.heads[class.index()].hash)
            .unwrap_or(Hash::ZERO);
        sqlx::query(
            "INSERT INTO stream_heads (epoch, class, seq, hash, acked) VALUES (?, ?, 0, ?, 0)",
        )
        .bind(epoch_sql(epoch))
        .bind(class as i64)
        .bind(fork.0.to_vec())
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("INSERT INTO meta (key, value) VALUES ('epoch', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(epoch.0.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn ensure_identity(
    conn: &mut SqliteConnection,
    settings: &Settings,
    mode: OpenMode,
    now_ms: i64,
) -> Result<Identity, StoreError> {
    let here = dir_identity(&settings.config.data_dir)?;
    let device = match meta_get(conn, "device_id").await? {
        Some(device) => {
            let tenant = meta_get(conn, "tenant").await?.unwrap_or_default();
            let store = meta_get(conn, "store").await?.unwrap_or_default();
            if tenant != settings.tenant.as_str() || store != settings.store.as_str() {
                return Err(StoreError::Identity(format!(
                    "the database belongs to tenant {tenant:?} store {store:?}, the config names {} {}",
                    settings.tenant, settings.store
                )));
            }
            DeviceId::new(device).map_err(|e| StoreError::Identity(format!("device_id: {e}")))?
        }
        None => {
            let device = DeviceId::new(format!("edge-{}", uuid::Uuid::new_v4().simple()))
                .map_err(|e| StoreError::Identity(e.to_string()))?;
            meta_set(conn, "tenant", settings.tenant.as_str()).await?;
            meta_set(conn, "store", settings.store.as_str()).await?;
            meta_set(conn, "device_id", device.as_str()).await?;
            start_epoch(conn, random_epoch(), None, "install", now_ms).await?;
            meta_set(conn, "dir_identity", &here).await?;
            device
        }
    };
    let current = meta_get(conn, "epoch")
        .await?
        .and_then(|e| e.parse::<u64>().ok())
        .map(Epoch)
        .ok_or_else(|| StoreError::Identity("no epoch recorded".into()))?;
    let recorded_dir = meta_get(conn, "dir_identity").await?.unwrap_or_default();
    let reason = match mode {
        OpenMode::Restore => Some("restore"),
        OpenMode::Run if recorded_dir != here => Some("copy"),
        OpenMode::Run => None,
    };
    let epoch = if let Some(reason) = reason {
        let heads = load_heads(conn, current).await?;
        let link = EpochLink {
            parent: current,
            heads,
        };
        let epoch = random_epoch();
        tracing::warn!(
            reason,
            old = current.0,
            new = epoch.0,
            "starting a new device epoch"
        );
        start_epoch(conn, epoch, Some(&link), reason, now_ms).await?;
        meta_set(conn, "dir_identity", &here).await?;
        epoch
    } else {
        current
    };
    let link_row = sqlx::query("SELECT link FROM epochs WHERE epoch = ?")
        .bind(epoch_sql(epoch))
        .fetch_optional(&mut *conn)
        .await?;
    let link = link_row
        .and_then(|r| r.get::<Option<Vec<u8>>, _>(0))
        .and_then(|bytes| postcard::from_bytes::<EpochLink>(&bytes).ok());
    Ok(Identity {
        tenant: settings.tenant.clone(),
        store: settings.store.clone(),
        device,
        epoch,
        link,
    })
}

/// Decodes one `events` row `(epoch, class, seq, prev, content_hash, body)`.
pub(crate) fn event_from_row(
    identity: &Identity,
    row: &sqlx::sqlite::SqliteRow,
) -> Result<Event, StoreError> {
    let epoch = epoch_from_sql(row.get::<i64, _>(0));
    let class_n: i64 = row.get(1);
    let seq = SeqNo(u64::try_from(row.get::<i64, _>(2)).unwrap_or(0));
    let corrupt = |reason: String| StoreError::Corrupt {
        epoch: epoch.0,
        class: u8::try_from(class_n).unwrap_or(u8::MAX),
        seq: seq.0,
        reason,
    };
    let class = u8::try_from(class_n)
        .ok()
        .and_then(EventClass::from_u8)
        .ok_or_else(|| corrupt("unknown class".into()))?;
    let hash32 = |bytes: Vec<u8>| -> Result<Hash, StoreError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| corrupt("hash is not 32 bytes".into()))?;
        Ok(Hash(arr))
    };
    let prev = hash32(row.get(3))?;
    let content_hash = hash32(row.get(4))?;
    let body_bytes: Vec<u8> = row.get(5);
    let body: EventBody = postcard::from_bytes(&body_bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok(Event {
        key: EventKey {
            stream: StreamId {
                tenant: identity.tenant.clone(),
                store: identity.store.clone(),
                device: identity.device.clone(),
                epoch,
                class,
            },
            seq,
        },
        prev,
        content_hash,
        body,
    })
}

impl Store {
    /// Who this agent is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The read-only pool, for queries of the API modules.
    pub fn reader(&self) -> &SqlitePool {
        &self.read
    }

    /// Outbox: up to `limit` events of `(epoch, class)` with sequence `>= from`, in order.
    pub async fn outbox_read(
        &self,
        epoch: Epoch,
        class: EventClass,
        from: SeqNo,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let from = i64::try_from(from.0).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT epoch, class, seq, prev, content_hash, body FROM events \
             WHERE epoch = ? AND class = ? AND seq >= ? ORDER BY seq LIMIT ?",
        )
        .bind(epoch_sql(epoch))
        .bind(class as i64)
        .bind(from)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| event_from_row(&self.identity, row))
            .collect()
    }

    /// Outbox: every stream of every epoch this directory has had, with head and acked
    /// position. Streams of older epochs may still hold unacknowledged events.
    pub async fn outbox_streams(&self) -> Result<Vec<StreamStatus>, StoreError> {
        let rows = sqlx::query(
            "SELECT epoch, class, seq, hash, acked FROM stream_heads ORDER BY epoch, class",
        )
        .fetch_all(&self.read)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let class = u8::try_from(row.get::<i64, _>(1))
                .ok()
                .and_then(EventClass::from_u8);
            let hash: Vec<u8> = row.get(3);
            let (Some(class), Ok(hash)) = (class, <[u8; 32]>::try_from(hash)) else {
                continue;
            };
            out.push(StreamStatus {
                epoch: epoch_from_sql(row.get(0)),
                class,
                head: StreamHead {
                    seq: SeqNo(u64::try_from(row.get::<i64, _>(2)).unwrap_or(0)),
                    hash: Hash(hash),
                },
                acked: SeqNo(u64::try_from(row.get::<i64, _>(4)).unwrap_or(0)),
            });
        }
        Ok(out)
    }

    /// Outbox: events sealed and not yet acknowledged, over all streams.
    pub async fn backlog(&self) -> Result<u64, StoreError> {
        Ok(self
            .outbox_streams()
            .await?
            .iter()
            .map(StreamStatus::backlog)
            .sum())
    }

    /// `PRAGMA quick_check` on a read connection.
    pub async fn quick_check(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("PRAGMA quick_check")
            .fetch_one(&self.read)
            .await?;
        Ok(row.get::<String, _>(0) == "ok")
    }
}
