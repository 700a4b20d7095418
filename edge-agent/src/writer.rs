//! The single writer task: group commit of everything the agent records.
//!
//! Every ingest path (HTTP, CSV, bridge) sends [`Submission`]s through a [`WriterHandle`].
//! The task takes the first waiting request and every other request already queued, up to
//! `limits.batch_records_max` records, and commits them in **one** SQLite transaction:
//! sealed events, dead letters, rollup increments, inventory, alerts raised by the batch
//! and the sealer's stream heads. Only after `COMMIT` returns (WAL fsynced,
//! `synchronous=FULL`) does any caller hear its outcome, so a 2xx, a CSV report or a
//! bridge ack always means durable.
//!
//! # Idempotency keys
//!
//! A record's id (`transactionId`, `scanId`, `adjustmentId`) is hashed with BLAKE3 to a
//! 63-bit integer, its *dedupe key*, and its content hash to a 64-bit *content tag*. The
//! writer keeps `dedupe key → content tag` in memory for every event in the log and every
//! archived key younger than `retention.dedupe_days`, rebuilt at start from two unindexed
//! columns of `events` plus `dedupe_archive`. Nothing random is ever inserted into an
//! on-disk unique index, which is what makes random UUIDv4 transaction ids as cheap as
//! time-ordered ones (see the crate docs). Same key, same tag: duplicate. Same key,
//! different tag: a conflict, dead-lettered, with an alert. The map costs about 32 bytes
//! per retained record.
//!
//! # Cost of a commit
//!
//! A commit makes two calls to the connection's thread, each a [`values::Batch`]: first
//! `BEGIN IMMEDIATE` and the sealed events as bound multi-row inserts ([`EVENTS`], see
//! [`values`]); while SQLite inserts them, the writer sums the batch's rollup increments
//! per key and binds their upserts, so the two run on two cores. The second call holds the
//! rollup upserts, the batch's item-hour increments as one `item_deltas` row, the on-hand
//! cells and stream heads ([`WRITE_BATCH`], each table's rows as one JSON array), the
//! events of alerts the batch raised, and `COMMIT`. sqlx's own `begin` and `commit` are not
//! used: each is a handshake of its own with that thread. Dead letters and resubmissions
//! begin the transaction earlier, with calls of their own, only when a batch has them. The
//! items of 64 transactions rarely share a rollup row, so upserting rows by item would be
//! most of a small commit's work: they go as one delta row, folded into the hour rows every
//! few thousand sales (see [`crate::rollup`]). Throughput is therefore set by how many
//! records wait per commit: the writer yields once before draining the queue so callers
//! answered by the previous commit can join the next one.
//!
//! # Overflow policy
//!
//! The request queue holds `limits.queue_requests_max` requests; when it is full,
//! [`WriterHandle::submit`] fails at once with [`StoreError::Busy`] (HTTP 503), so memory
//! stays bounded under overload and clients retry.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::Serialize;
use sqlx::{Arguments, Connection, Row, SqliteConnection};
use storesync_protocol::domain::{AlertKind, AlertState, Severity};
use storesync_protocol::ids::AlertId;
use storesync_protocol::inventory::{Movement, OnHand};
use storesync_protocol::validate::FieldError;
use storesync_protocol::{
    Alert, EncodedBody, Epoch, Event, EventBody, EventClass, EventTime, ScanEvent, Sealer, SeqNo,
    Sku, StockAdjustment, Transaction,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::alerts::{self, AlertView, Candidate};
use crate::config::Settings;
use crate::inventory;
use crate::metrics::Metrics;
use crate::rollup;
use crate::store::{StoreError, epoch_sql};

pub(crate) mod values;

/// A validated record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A POS transaction.
    Transaction(Transaction),
    /// A scanner event.
    Scan(ScanEvent),
    /// A stock adjustment.
    Adjustment(StockAdjustment),
}

impl Record {
    fn id_field(&self) -> (&'static str, &str) {
        match self {
            Record::Transaction(t) => ("transactionId", t.transaction_id.as_str()),
            Record::Scan(s) => ("scanId", s.scan_id.as_str()),
            Record::Adjustment(a) => ("adjustmentId", a.adjustment_id.as_str()),
        }
    }

    fn into_body(self) -> EventBody {
        match self {
            Record::Transaction(t) => EventBody::Transaction(t),
            Record::Scan(s) => EventBody::Scan(s),
            Record::Adjustment(a) => EventBody::Adjustment(a),
        }
    }
}

/// One record offered to the writer, valid or not, with its raw bytes for dead letters.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Where it came from (`http`, `csv:<file>:<lines>`, `bridge:<device>`...).
    pub source: String,
    /// `transaction`, `scan`, `adjustment` or `frame`.
    pub kind: &'static str,
    /// The bytes as received.
    pub raw: Vec<u8>,
    /// The validated record, or why it is not one.
    pub parsed: Result<Record, Vec<FieldError>>,
    /// When this corrects a dead letter: its id.
    pub resubmit_of: Option<i64>,
}

/// What became of a submission. Every variant is durable when the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Sealed into the log.
    Accepted {
        /// Epoch, as decimal text (it does not fit a JSON number exactly).
        epoch: String,
        /// Class name.
        class: &'static str,
        /// Sequence in the stream.
        seq: u64,
    },
    /// The same record (same id, same content) is already in the log.
    Duplicate,
    /// The id is already recorded with different content; kept as a dead letter.
    Conflict {
        /// The dead letter.
        dead_letter: i64,
        /// Field and reason.
        errors: Vec<ErrorView>,
    },
    /// Invalid; kept as a dead letter.
    Rejected {
        /// The dead letter.
        dead_letter: i64,
        /// Every failed rule.
        errors: Vec<ErrorView>,
    },
}

/// A field error as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorView {
    /// The field's path.
    pub field: String,
    /// Why.
    pub reason: String,
}

impl From<&FieldError> for ErrorView {
    fn from(e: &FieldError) -> Self {
        ErrorView {
            field: e.field.clone(),
            reason: e.reason.clone(),
        }
    }
}

/// What pruning removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Acknowledged events past retention.
    pub events: u64,
    /// Dead letters past retention.
    pub dead_letters: u64,
    /// Archived idempotency keys past retention.
    pub dedupe_keys: u64,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    Ingest {
        items: Vec<Submission>,
        now_ms: i64,
        reply: Reply<Vec<Outcome>>,
    },
    SetAlertState {
        alert_id: String,
        state: AlertState,
        by: String,
        now_ms: i64,
        reply: Reply<Option<AlertView>>,
    },
    MarkAcked {
        epoch: Epoch,
        class: EventClass,
        through: SeqNo,
        reply: Reply<()>,
    },
    Prune {
        now_ms: i64,
        reply: Reply<PruneReport>,
    },
    Tick {
        now_ms: i64,
    },
    Raise {
        candidate: Candidate,
        now_ms: i64,
        reply: Reply<Vec<AlertView>>,
    },
}

/// The sending side of the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
    /// Counts requests the writer completed (committed), so the sync client learns of new
    /// outbox events when they are durable instead of polling for them.
    completed: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Ingest { .. } => "Ingest",
            Command::SetAlertState { .. } => "SetAlertState",
            Command::MarkAcked { .. } => "MarkAcked",
            Command::Prune { .. } => "Prune",
            Command::Tick { .. } => "Tick",
            Command::Raise { .. } => "Raise",
        })
    }
}

impl WriterHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Busy,
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })?;
        let answer = rx.await.map_err(|_| StoreError::Closed)?;
        if answer.is_ok() {
            self.completed.send_modify(|n| *n = n.wrapping_add(1));
        }
        answer
    }

    /// Changes each time a request the writer answered has committed: whatever it wrote to
    /// the outbox is durable and readable. Several commits may show as one change.
    pub fn completed(&self) -> watch::Receiver<u64> {
        self.completed.subscribe()
    }

    /// Records `items` durably; the outcomes are in the order of `items`.
    pub async fn submit(
        &self,
        items: Vec<Submission>,
        now_ms: i64,
    ) -> Result<Vec<Outcome>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.call(|reply| Command::Ingest {
            items,
            now_ms,
            reply,
        })
        .await
    }

    /// Acknowledges or resolves an alert; `None` when there is no such alert.
    pub async fn set_alert_state(
        &self,
        alert_id: String,
        state: AlertState,
        by: String,
        now_ms: i64,
    ) -> Result<Option<AlertView>, StoreError> {
        self.call(|reply| Command::SetAlertState {
            alert_id,
            state,
            by,
            now_ms,
            reply,
        })
        .await
    }

    /// Outbox: the hub has durably committed `(epoch, class)` through `through`. Never
    /// moves the acknowledged position backwards, nor past the head.
    pub async fn mark_acked(
        &self,
        epoch: Epoch,
        class: EventClass,
        through: SeqNo,
    ) -> Result<(), StoreError> {
        self.call(|reply| Command::MarkAcked {
            epoch,
            class,
            through,
            reply,
        })
        .await
    }

    /// Outbox: deletes acknowledged events older than `retention.acked_days` (never an
    /// unacknowledged one), old dead letters and old archived keys.
    pub async fn prune(&self, now_ms: i64) -> Result<PruneReport, StoreError> {
        self.call(|reply| Command::Prune { now_ms, reply }).await
    }

    /// Raises an alert found outside ingest (a sync alarm): stored, sealed for the hub and
    /// pushed live, unless one of its kind and subject is cooling down. The alerts raised.
    pub(crate) async fn raise(
        &self,
        candidate: Candidate,
        now_ms: i64,
    ) -> Result<Vec<AlertView>, StoreError> {
        self.call(|reply| Command::Raise {
            candidate,
            now_ms,
            reply,
        })
        .await
    }

    /// Periodic work: time-based alerts, WAL checkpoint, pruning.
    pub async fn tick(&self, now_ms: i64) -> Result<(), StoreError> {
        // A tick is advisory: dropped when the queue is full.
        self.tx
            .try_send(Command::Tick { now_ms })
            .map_err(|_| StoreError::Busy)
    }
}

/// An identity hasher for keys that already are uniform hashes.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_i64(&mut self, n: i64) {
        self.0 = n as u64;
    }
}

type KeyMap = HashMap<i64, i64, BuildHasherDefault<KeyHasher>>;

/// The dedupe key of a record id: 63 bits of BLAKE3, non-negative.
pub fn dedupe_key(kind: &str, id: &str) -> i64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(kind.as_bytes());
    hasher.update(b"\0");
    hasher.update(id.as_bytes());
    let bytes = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    (u64::from_le_bytes(first) >> 1) as i64
}

fn content_tag(hash: &storesync_protocol::Hash) -> i64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.0[..8]);
    i64::from_le_bytes(first)
}

struct Writer {
    conn: SqliteConnection,
    sealer: Sealer,
    settings: Arc<Settings>,
    dedupe: KeyMap,
    on_hand: HashMap<Sku, OnHand>,
    cooldown: HashMap<(AlertKind, String), i64>,
    register_last_seen: HashMap<String, i64>,
    last_hour_evaluated: i64,
    alerts_tx: broadcast::Sender<AlertView>,
    metrics: Arc<Metrics>,
    commits_since_checkpoint: u64,
    day_revenue: alerts::DayRevenue,
    /// A disk-full alert raised (and pushed live) but not stored yet: the full disk that
    /// raised it may refuse it too. Each tick tries again, so it reaches the alert list
    /// and the hub once there is room.
    disk_full_unstored: Option<Alert>,
    /// When the item-hour delta rows are folded next (see `rollup`).
    item_fold: rollup::FoldDue,
}

/// Starts the writer on `conn`; it runs until every [`WriterHandle`] is dropped, then
/// finishes the queued requests and checkpoints.
pub async fn spawn(
    mut conn: SqliteConnection,
    sealer: Sealer,
    settings: Arc<Settings>,
    alerts_tx: broadcast::Sender<AlertView>,
    metrics: Arc<Metrics>,
    now_ms: i64,
) -> Result<(WriterHandle, tokio::task::JoinHandle<()>), StoreError> {
    let dedupe = load_dedupe(&mut conn).await?;
    let on_hand = inventory::load_on_hand(&mut conn).await?;
    let register_last_seen =
        rollup::load_register_last_seen(&mut conn, now_ms - 7 * 86_400_000).await?;
    let cooldown = alerts::load_cooldowns(
        &mut conn,
        now_ms - settings.config.alerts.cooldown_minutes * 60_000,
    )
    .await?;
    metrics.set_dedupe_keys(dedupe.len());
    // What the last run committed and did not fold, it folds now. A fold that fails (a
    // full disk needs no more than that) does not keep the agent from starting: the delta
    // rows stay, readers count them, and the writer tries again.
    let mut item_fold = rollup::FoldDue::default();
    if let Err(error) = rollup::fold_item_deltas(&mut conn).await {
        tracing::warn!(%error, "folding item rollups at start failed; tried again later");
        item_fold.waiting(now_ms);
        item_fold.failed(now_ms);
    }
    let (tx, rx) = mpsc::channel(settings.config.limits.queue_requests_max);
    let writer = Writer {
        conn,
        sealer,
        settings,
        dedupe,
        on_hand,
        cooldown,
        register_last_seen,
        last_hour_evaluated: 0,
        alerts_tx,
        metrics,
        commits_since_checkpoint: 0,
        day_revenue: alerts::DayRevenue::new(),
        disk_full_unstored: None,
        item_fold,
    };
    let task = tokio::spawn(writer.run(rx));
    let completed = Arc::new(watch::Sender::new(0));
    Ok((WriterHandle { tx, completed }, task))
}

async fn load_dedupe(conn: &mut SqliteConnection) -> Result<KeyMap, StoreError> {
    let mut map = KeyMap::default();
    let rows = sqlx::query(
        "SELECT dedupe_key, content_tag FROM events WHERE dedupe_key IS NOT NULL \
         UNION ALL SELECT dedupe_key, content_tag FROM dedupe_archive",
    )
    .fetch_all(&mut *conn)
    .await?;
    map.reserve(rows.len());
    for row in rows {
        map.insert(row.get(0), row.get(1));
    }
    Ok(map)
}

/// A sealed event on its way to the log: its body's postcard bytes (the `body` column) and,
/// for a record, its dedupe key and content tag.
struct Sealed {
    event: Event,
    body: Vec<u8>,
    key: Option<(i64, i64)>,
}

impl Sealed {
    fn new(sealer: &mut Sealer, body: EncodedBody, key: Option<(i64, i64)>) -> Sealed {
        let (event, body) = sealer.seal_encoded(body);
        Sealed { event, body, key }
    }
}

struct Pending {
    reply: Reply<Vec<Outcome>>,
    outcomes: Vec<Option<Outcome>>,
}

/// A dead letter waiting for its row id.
struct DeadRow {
    request: usize,
    index: usize,
    source: String,
    kind: &'static str,
    errors: Vec<ErrorView>,
    raw: Vec<u8>,
    conflict: bool,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let batch_max = self.settings.config.limits.batch_records_max;
        let mut deferred: Vec<Command> = Vec::new();
        while let Some(first) = rx.recv().await {
            // The callers answered by the last commit are runnable now; letting them run
            // before the queue is drained puts their next requests into this commit
            // instead of leaving a commit of one record followed by one of the rest.
            tokio::task::yield_now().await;
            let mut batch: Vec<(Vec<Submission>, i64, Reply<Vec<Outcome>>)> = Vec::new();
            let mut records = 0usize;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Ingest {
                        items,
                        now_ms,
                        reply,
                    } => {
                        records += items.len();
                        batch.push((items, now_ms, reply));
                    }
                    other => deferred.push(other),
                }
                if records >= batch_max {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if !batch.is_empty() {
                self.ingest_batch(batch).await;
            }
            for command in deferred.drain(..) {
                self.handle_other(command).await;
            }
        }
        // Every handle is gone: the queue is drained and every request answered.
        if self.item_fold.any() {
            self.fold_items(crate::ingest::now_ms()).await;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut self.conn)
            .await
        {
            tracing::warn!(error = %e, "final checkpoint failed");
        }
        let _ = self.conn.close().await;
    }

    async fn handle_other(&mut self, command: Command) {
        match command {
            Command::Ingest { .. } => {}
            Command::SetAlertState {
                alert_id,
                state,
                by,
                now_ms,
                reply,
            } => {
                let result = self.set_alert_state(&alert_id, state, &by, now_ms).await;
                let _ = reply.send(result);
            }
            Command::MarkAcked {
                epoch,
                class,
                through,
                reply,
            } => {
                let result = sqlx::query("UPDATE stream_heads SET acked = MAX(acked, MIN(seq, ?)) WHERE epoch = ? AND class = ?")
                    .bind(i64::try_from(through.0).unwrap_or(i64::MAX))
                    .bind(epoch_sql(epoch))
                    .bind(class as i64)
                    .execute(&mut self.conn)
                    .await
                    .map(|_| ())
                    .map_err(StoreError::from);
                let _ = reply.send(result);
            }
            Command::Prune { now_ms, reply } => {
                let result = self.prune(now_ms).await;
                let _ = reply.send(result);
            }
            Command::Tick { now_ms } => self.tick(now_ms).await,
            Command::Raise {
                candidate,
                now_ms,
                reply,
            } => {
                let _ = reply.send(self.store_candidates(vec![candidate], now_ms).await);
            }
        }
    }

    async fn ingest_batch(&mut self, batch: Vec<(Vec<Submission>, i64, Reply<Vec<Outcome>>)>) {
        let started = std::time::Instant::now();
        let now_ms = batch.iter().map(|b| b.1).max().unwrap_or(0);
        let sealer_backup = self.sealer.clone();
        let mut new_keys: Vec<i64> = Vec::new();
        let mut pending: Vec<Pending> = Vec::with_capacity(batch.len());
        let mut events: Vec<Sealed> = Vec::with_capacity(batch.iter().map(|b| b.0.len()).sum());
        let mut dead: Vec<DeadRow> = Vec::new();
        let mut movements: Vec<Movement> = Vec::new();
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut resolved_letters: Vec<i64> = Vec::new();
        let mut registers: HashMap<String, i64> = HashMap::new();
        let mut records_total = 0u64;
        let mut accepted_total = 0u64;
        let mut duplicate_total = 0u64;
        for (request, (items, _, reply)) in batch.into_iter().enumerate() {
            let mut outcomes = Vec::with_capacity(items.len());
            for (index, submission) in items.into_iter().enumerate() {
                records_total += 1;
                let Submission {
                    source,
                    kind,
                    raw,
                    parsed,
                    resubmit_of,
                } = submission;
                let record = match parsed {
                    Ok(record) => record,
                    Err(errors) => {
                        let errors: Vec<ErrorView> = errors.iter().map(ErrorView::from).collect();
                        match resubmit_of {
                            // A correction that is still wrong leaves the original letter
                            // open instead of adding a second one.
                            Some(id) => outcomes.push(Some(Outcome::Rejected {
                                dead_letter: id,
                                errors,
                            })),
                            None => {
                                dead.push(DeadRow {
                                    request,
                                    index,
                                    source,
                                    kind,
                                    errors,
                                    raw,
                                    conflict: false,
                                });
                                outcomes.push(None);
                            }
                        }
                        continue;
                    }
                };
                let (field, id) = record.id_field();
                let key = dedupe_key(field, id);
                let id_text = id.to_owned();
                let body = EncodedBody::new(record.into_body());
                let tag = content_tag(&body.content_hash());
                match self.dedupe.get(&key) {
                    Some(known) if *known == tag => {
                        duplicate_total += 1;
                        if let Some(letter) = resubmit_of {
                            resolved_letters.push(letter);
                        }
                        outcomes.push(Some(Outcome::Duplicate));
                    }
                    Some(_) => {
                        let reason =
                            format!("{id_text} is already recorded with different content");
                        candidates.push(Candidate {
                            kind: AlertKind::ConflictingDuplicate,
                            severity: Severity::Warning,
                            subject: format!("{field}:{id_text}"),
                            message: format!("{field} {id_text} arrived again with different content; kept as a dead letter"),
                            facts: vec![("dedupe_key".into(), key)],
                        });
                        dead.push(DeadRow {
                            request,
                            index,
                            source,
                            kind,
                            errors: vec![ErrorView {
                                field: field.to_owned(),
                                reason,
                            }],
                            raw,
                            conflict: true,
                        });
                        outcomes.push(None);
                    }
                    None => {
                        self.dedupe.insert(key, tag);
                        new_keys.push(key);
                        if let EventBody::Transaction(tx) = body.body() {
                            for item in &tx.items {
                                if self.settings.doc_rules.is_unknown_sku(item.sku.as_str()) {
                                    candidates.push(alerts::unknown_sku_candidate(
                                        &item.sku,
                                        tx.transaction_id.as_str(),
                                    ));
                                }
                            }
                            {
                                // A sale without a register id counts for the store's POS
                                // as a whole (see `alerts::STORE_POS`). Most transactions'
                                // register is already in the map: no key is allocated.
                                let register = tx
                                    .register_id
                                    .as_ref()
                                    .map_or(alerts::STORE_POS, |r| r.as_str());
                                let at = tx.timestamp.unix_ms();
                                match registers.get_mut(register) {
                                    Some(seen) => *seen = (*seen).max(at),
                                    None => {
                                        registers.insert(register.to_owned(), at);
                                    }
                                }
                            }
                        }
                        movements.extend(storesync_protocol::inventory::movements(body.body()));
                        let event = Sealed::new(&mut self.sealer, body, Some((key, tag)));
                        if let Some(letter) = resubmit_of {
                            resolved_letters.push(letter);
                        }
                        accepted_total += 1;
                        let sealed = &event.event.key;
                        outcomes.push(Some(Outcome::Accepted {
                            epoch: sealed.stream.epoch.0.to_string(),
                            class: sealed.stream.class.as_str(),
                            seq: sealed.seq.0,
                        }));
                        events.push(event);
                    }
                }
            }
            pending.push(Pending { reply, outcomes });
        }

        let on_hand_backup: HashMap<Sku, Option<OnHand>> = movements
            .iter()
            .map(|m| (m.sku.clone(), self.on_hand.get(&m.sku).copied()))
            .collect();
        let result = self
            .commit_batch(
                now_ms,
                &events,
                &mut dead,
                movements,
                candidates,
                &resolved_letters,
            )
            .await;
        match result {
            Ok((raised, day_revenue)) => {
                alerts::remember_day_revenue(&mut self.day_revenue, &day_revenue);
                for (register, at) in registers {
                    let seen = self.register_last_seen.entry(register).or_insert(at);
                    *seen = (*seen).max(at);
                }
                for row in dead {
                    let dead_letter = row.index_id();
                    let errors = row.errors;
                    let outcome = if row.conflict {
                        Outcome::Conflict {
                            dead_letter,
                            errors,
                        }
                    } else {
                        Outcome::Rejected {
                            dead_letter,
                            errors,
                        }
                    };
                    if let Some(slot) = pending
                        .get_mut(row.request)
                        .and_then(|p| p.outcomes.get_mut(row.index))
                    {
                        *slot = Some(outcome);
                    }
                }
                for alert in raised {
                    let _ = self.alerts_tx.send(alert);
                }
                self.metrics.record_batch(
                    records_total,
                    accepted_total,
                    duplicate_total,
                    started.elapsed(),
                    self.dedupe.len(),
                );
                self.commits_since_checkpoint += 1;
                for p in pending {
                    let outcomes: Vec<Outcome> = p.outcomes.into_iter().flatten().collect();
                    let _ = p.reply.send(Ok(outcomes));
                }
                self.fold_items_if_due(now_ms).await;
            }
            Err(error) => {
                self.sealer = sealer_backup;
                for key in new_keys {
                    self.dedupe.remove(&key);
                }
                for (sku, cell) in on_hand_backup {
                    match cell {
                        Some(cell) => self.on_hand.insert(sku, cell),
                        None => self.on_hand.remove(&sku),
                    };
                }
                tracing::error!(%error, "batch commit failed; nothing of it was recorded");
                if let StoreError::DiskFull(_) = &error {
                    self.metrics.disk_full();
                    self.raise_disk_full(now_ms).await;
                }
                for p in pending {
                    let copy = match &error {
                        StoreError::DiskFull(m) => StoreError::DiskFull(m.clone()),
                        StoreError::Busy => StoreError::Busy,
                        other => StoreError::Identity(format!("commit failed: {other}")),
                    };
                    let _ = p.reply.send(Err(copy));
                }
            }
        }
    }

    /// Commits a batch in one transaction, begun and ended by SQL statements rather than
    /// sqlx's `begin`/`commit` (each of those is a handshake with the connection's thread:
    /// command, answer and acknowledgement); see the module docs for the two calls of the
    /// common case. On failure the transaction is rolled back and nothing of the batch is
    /// recorded.
    #[allow(clippy::too_many_arguments)]
    async fn commit_batch(
        &mut self,
        now_ms: i64,
        events: &[Sealed],
        dead: &mut [DeadRow],
        movements: Vec<Movement>,
        candidates: Vec<Candidate>,
        resolved_letters: &[i64],
    ) -> Result<(Vec<AlertView>, Vec<(i64, i64)>), StoreError> {
        let result = self
            .commit_batch_statements(
                now_ms,
                events,
                dead,
                movements,
                candidates,
                resolved_letters,
            )
            .await;
        if result.is_err() {
            // SQLite may have rolled back already (a full disk, an I/O error); then this
            // fails with "no transaction is active", which is what is wanted.
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit_batch_statements(
        &mut self,
        now_ms: i64,
        events: &[Sealed],
        dead: &mut [DeadRow],
        movements: Vec<Movement>,
        mut candidates: Vec<Candidate>,
        resolved_letters: &[i64],
    ) -> Result<(Vec<AlertView>, Vec<(i64, i64)>), StoreError> {
        let mut begun = false;
        if !dead.is_empty() || !resolved_letters.is_empty() {
            begin_immediate(&mut self.conn).await?;
            begun = true;
        }
        let tx = &mut self.conn;
        for row in dead.iter_mut() {
            let reason = serde_json::to_string(&row.errors).unwrap_or_else(|_| "[]".into());
            let id: i64 = sqlx::query(
                "INSERT INTO dead_letters (received_ms, source, kind, reason, raw) VALUES (?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(now_ms)
            .bind(row.source.clone())
            .bind(row.kind)
            .bind(reason)
            .bind(std::mem::take(&mut row.raw))
            .fetch_one(&mut *tx)
            .await?
            .get(0);
            row.raw = id.to_le_bytes().to_vec();
        }
        for letter in resolved_letters {
            sqlx::query(
                "UPDATE dead_letters SET state = 'resubmitted', resolved_ms = ? WHERE id = ?",
            )
            .bind(now_ms)
            .bind(*letter)
            .execute(&mut *tx)
            .await?;
        }
        // The batch's events go in while this thread sums their rollup increments and
        // binds the upserts, which need only the events: the two run on two cores.
        let mut first = values::Batch::default();
        if !begun {
            first.push_sql("BEGIN IMMEDIATE");
        }
        push_events(&mut first, events, now_ms)?;
        let tz = &self.settings.tz;
        let sum = async {
            let mut delta = rollup::delta(events.len());
            let mut items = rollup::ItemDelta::with_capacity_and_hasher(
                events.len().saturating_mul(3),
                Default::default(),
            );
            let mut sales = 0;
            for sealed in events {
                if let EventBody::Transaction(t) = &sealed.event.body {
                    rollup::add_transaction(&mut delta, &mut items, t, tz);
                    sales += 1;
                }
            }
            let mut rest = values::Batch::default();
            rollup::upsert(&mut rest, &delta)
                .and_then(|()| rollup::push_item_delta(&mut rest, &items))
                .map(|()| (delta, sales, rest))
        };
        let (inserted, summed) = futures::join!(first.execute(&mut *tx), sum);
        inserted?;
        let (rollup_delta, sales, mut batch) = summed?;
        // Inventory: apply the batch's movements to the cached cells, refold the SKUs
        // whose movements arrived older than their last count.
        let changed = inventory::apply(tx, &mut self.on_hand, movements).await?;
        let settings = Arc::clone(&self.settings);
        let cooldown_ms = settings.config.alerts.cooldown_minutes * 60_000;
        for (sku, cell) in &changed {
            // Most low SKUs are cooling down: skip those before a message is built.
            let Some(kind) = alerts::stock_kind(&settings, sku, cell.quantity) else {
                continue;
            };
            if self
                .cooldown
                .get(&(kind, sku.as_str().to_owned()))
                .is_some_and(|last| now_ms - *last < cooldown_ms)
            {
                continue;
            }
            if let Some(candidate) = alerts::stock_candidate(&settings, sku, cell.quantity) {
                candidates.push(candidate);
            }
        }
        let (milestones, day_revenue) =
            alerts::milestone_candidates(tx, &settings, &rollup_delta, &self.day_revenue).await?;
        candidates.extend(milestones);
        let mut alert_events = Vec::new();
        let raised = persist_candidates(
            tx,
            &mut self.sealer,
            &mut self.cooldown,
            &settings,
            candidates,
            now_ms,
            &mut alert_events,
        )
        .await?;
        push_events(&mut batch, &alert_events, now_ms)?;
        push_state(&mut batch, &changed, &self.sealer, now_ms)?;
        batch.push_sql("COMMIT");
        batch.execute(tx).await?;
        self.item_fold.committed(sales, now_ms);
        Ok((raised, day_revenue))
    }

    async fn fold_items_if_due(&mut self, now_ms: i64) {
        if self.item_fold.due(now_ms) {
            self.fold_items(now_ms).await;
        }
    }

    /// Folds the item-hour delta rows into the rollup rows (see `rollup`). On failure the
    /// rows stay, readers count them, and the next try waits.
    async fn fold_items(&mut self, now_ms: i64) {
        match rollup::fold_item_deltas(&mut self.conn).await {
            Ok(()) => self.item_fold.folded(),
            Err(error) => {
                self.item_fold.failed(now_ms);
                tracing::warn!(%error, "folding item rollups failed; tried again later");
            }
        }
    }

    async fn raise_disk_full(&mut self, now_ms: i64) {
        let candidate = Candidate {
            kind: AlertKind::DiskFull,
            severity: Severity::Critical,
            subject: "disk".into(),
            message:
                "the disk or the database cap is full: ingest answers 503 until space is freed"
                    .into(),
            facts: vec![],
        };
        let key = (AlertKind::DiskFull, "disk".to_owned());
        let cooldown_ms = self.settings.config.alerts.cooldown_minutes * 60_000;
        if self
            .cooldown
            .get(&key)
            .is_some_and(|last| now_ms - *last < cooldown_ms)
        {
            return;
        }
        self.cooldown.insert(key, now_ms);
        let alert = make_alert(&self.settings, candidate, now_ms);
        let _ = self.alerts_tx.send(AlertView::from_alert(&alert, None));
        self.disk_full_unstored = Some(alert);
        self.store_disk_full(now_ms).await;
    }

    /// Stores the unstored disk-full alert and seals it for the hub, as any other alert.
    async fn store_disk_full(&mut self, now_ms: i64) {
        let Some(alert) = self.disk_full_unstored.clone() else {
            return;
        };
        let backup = self.sealer.clone();
        let stored = async {
            let mut tx = self.conn.begin().await?;
            let mut events = Vec::new();
            store_alert(&mut tx, &mut self.sealer, alert, now_ms, &mut events).await?;
            write_events(&mut tx, &events, &self.sealer, now_ms).await?;
            tx.commit().await?;
            Ok::<(), StoreError>(())
        }
        .await;
        match stored {
            Ok(()) => self.disk_full_unstored = None,
            Err(e) => {
                self.sealer = backup;
                tracing::warn!(error = %e, "the disk-full alert could not be stored yet");
            }
        }
    }

    async fn set_alert_state(
        &mut self,
        alert_id: &str,
        state: AlertState,
        by: &str,
        now_ms: i64,
    ) -> Result<Option<AlertView>, StoreError> {
        let Some(mut alert) = alerts::load(&mut self.conn, alert_id).await? else {
            return Ok(None);
        };
        alert.state = state;
        alert.changed_by = Some(by.to_owned());
        let backup = self.sealer.clone();
        let result = async {
            let mut tx = self.conn.begin().await?;
            sqlx::query(
                "UPDATE alerts SET state = ?, changed_by = ?, changed_ms = ? WHERE alert_id = ?",
            )
            .bind(state.as_str())
            .bind(by.to_owned())
            .bind(now_ms)
            .bind(alert_id.to_owned())
            .execute(&mut *tx)
            .await?;
            let events = vec![Sealed::new(
                &mut self.sealer,
                EncodedBody::new(EventBody::Alert(alert.clone())),
                None,
            )];
            write_events(&mut tx, &events, &self.sealer, now_ms).await?;
            tx.commit().await?;
            Ok::<(), StoreError>(())
        }
        .await;
        if let Err(e) = result {
            self.sealer = backup;
            return Err(e);
        }
        let view = AlertView::from_alert(&alert, Some(now_ms));
        let _ = self.alerts_tx.send(view.clone());
        Ok(Some(view))
    }

    async fn tick(&mut self, now_ms: i64) {
        self.store_disk_full(now_ms).await;
        self.fold_items_if_due(now_ms).await;
        let settings = Arc::clone(&self.settings);
        let mut candidates = Vec::new();
        match alerts::periodic_candidates(
            &mut self.conn,
            &settings,
            now_ms,
            &mut self.last_hour_evaluated,
            &self.register_last_seen,
        )
        .await
        {
            Ok(found) => candidates = found,
            Err(e) => tracing::warn!(error = %e, "alert evaluation failed"),
        }
        if !candidates.is_empty()
            && let Err(e) = self.store_candidates(candidates, now_ms).await
        {
            tracing::warn!(error = %e, "storing periodic alerts failed");
        }
        if self.commits_since_checkpoint > 0 {
            // PASSIVE copies what no reader still needs into the database without waiting
            // for readers (the writer would stall behind them) and leaves the WAL file its
            // size (see `store`): the next commit writes it from the start once every frame
            // is copied. What a reader still pins, the next tick copies.
            match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut self.conn)
                .await
            {
                Ok(row) => {
                    let (busy, frames, copied): (i64, i64, i64) =
                        (row.get(0), row.get(1), row.get(2));
                    if busy == 0 && copied >= frames {
                        self.commits_since_checkpoint = 0;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "checkpoint failed"),
            }
        }
        if let Err(e) = self.prune(now_ms).await {
            tracing::warn!(error = %e, "pruning failed");
        }
    }

    /// Stores the alerts of `candidates` that are not cooling down, seals them for the hub
    /// and pushes them live, in one transaction: on failure nothing changed.
    async fn store_candidates(
        &mut self,
        candidates: Vec<Candidate>,
        now_ms: i64,
    ) -> Result<Vec<AlertView>, StoreError> {
        let settings = Arc::clone(&self.settings);
        let backup = self.sealer.clone();
        let cooldown_backup = self.cooldown.clone();
        let result = async {
            let mut tx = self.conn.begin().await?;
            let mut events = Vec::new();
            let raised = persist_candidates(
                &mut tx,
                &mut self.sealer,
                &mut self.cooldown,
                &settings,
                candidates,
                now_ms,
                &mut events,
            )
            .await?;
            write_events(&mut tx, &events, &self.sealer, now_ms).await?;
            tx.commit().await?;
            Ok::<Vec<AlertView>, StoreError>(raised)
        }
        .await;
        match &result {
            Ok(raised) => {
                for alert in raised {
                    let _ = self.alerts_tx.send(alert.clone());
                }
            }
            Err(_) => {
                self.sealer = backup;
                self.cooldown = cooldown_backup;
            }
        }
        result
    }

    async fn prune(&mut self, now_ms: i64) -> Result<PruneReport, StoreError> {
        let r = &self.settings.config.retention;
        let day_ms = 86_400_000i64;
        let events_cutoff = now_ms - i64::from(r.acked_days) * day_ms;
        let letters_cutoff = now_ms - i64::from(r.dead_letter_days) * day_ms;
        let keys_cutoff = now_ms - i64::from(r.dedupe_days) * day_ms;
        let mut tx = self.conn.begin().await?;
        // Only what the hub acknowledged (seq <= acked) and is past retention.
        let prunable = "FROM events WHERE recorded_ms < ?1 AND seq <= \
             (SELECT acked FROM stream_heads h WHERE h.epoch = events.epoch AND h.class = events.class)";
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT OR REPLACE INTO dedupe_archive (dedupe_key, content_tag, pruned_ms) \
             SELECT dedupe_key, content_tag, ?2 {prunable} AND dedupe_key IS NOT NULL"
        )))
        .bind(events_cutoff)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let events = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE {prunable}")))
            .bind(events_cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let dead_letters = sqlx::query("DELETE FROM dead_letters WHERE received_ms < ?")
            .bind(letters_cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let expired: Vec<i64> =
            sqlx::query("DELETE FROM dedupe_archive WHERE pruned_ms < ? RETURNING dedupe_key")
                .bind(keys_cutoff)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
        tx.commit().await?;
        for key in &expired {
            self.dedupe.remove(key);
        }
        Ok(PruneReport {
            events,
            dead_letters,
            dedupe_keys: expired.len() as u64,
        })
    }
}

/// Filters candidates through the cool-down, stores the alerts and seals them as events
/// appended to `events`.
async fn persist_candidates(
    tx: &mut SqliteConnection,
    sealer: &mut Sealer,
    cooldown: &mut HashMap<(AlertKind, String), i64>,
    settings: &Settings,
    candidates: Vec<Candidate>,
    now_ms: i64,
    events: &mut Vec<Sealed>,
) -> Result<Vec<AlertView>, StoreError> {
    let cooldown_ms = settings.config.alerts.cooldown_minutes * 60_000;
    let mut raised = Vec::new();
    let mut seen: HashSet<(AlertKind, String)> = HashSet::new();
    for c in candidates {
        let key = (c.kind, c.subject.clone());
        if !seen.insert(key.clone()) {
            continue;
        }
        if cooldown
            .get(&key)
            .is_some_and(|last| now_ms - *last < cooldown_ms)
        {
            continue;
        }
        let alert = make_alert(settings, c, now_ms);
        let view = AlertView::from_alert(&alert, None);
        store_alert(tx, sealer, alert, now_ms, events).await?;
        cooldown.insert(key, now_ms);
        raised.push(view);
    }
    Ok(raised)
}

/// Stores `alert` and seals it as an event appended to `events` (written by the caller in
/// the same transaction).
async fn store_alert(
    tx: &mut SqliteConnection,
    sealer: &mut Sealer,
    alert: Alert,
    now_ms: i64,
    events: &mut Vec<Sealed>,
) -> Result<(), StoreError> {
    alerts::insert(tx, &alert, now_ms).await?;
    events.push(Sealed::new(
        sealer,
        EncodedBody::new(EventBody::Alert(alert)),
        None,
    ));
    Ok(())
}

fn make_alert(settings: &Settings, c: Candidate, now_ms: i64) -> Alert {
    // "al-" and 32 hex digits always satisfy the id rule; the fallback is never taken.
    let id = AlertId::new(format!("al-{}", uuid::Uuid::now_v7().simple()))
        .or_else(|_| AlertId::new("al"))
        .unwrap_or_else(|_| unreachable!("\"al\" is a valid id"));
    Alert {
        alert_id: id,
        kind: c.kind,
        severity: c.severity,
        store_id: settings.store.clone(),
        subject: c.subject,
        raised_at: event_time(settings, now_ms),
        state: AlertState::Open,
        changed_by: None,
        message: c.message,
        facts: c.facts,
    }
}

impl DeadRow {
    /// After the insert, `raw` holds the row id (the raw bytes went into the row).
    fn index_id(&self) -> i64 {
        let mut bytes = [0u8; 8];
        if let Some(src) = self.raw.get(..8) {
            bytes.copy_from_slice(src);
        }
        i64::from_le_bytes(bytes)
    }
}

/// `now_ms` as an event time in the store's offset.
pub fn event_time(settings: &Settings, now_ms: i64) -> EventTime {
    let offset_minutes = jiff::Timestamp::from_millisecond(now_ms)
        .map(|ts| settings.tz.to_offset(ts).seconds() / 60)
        .unwrap_or(0);
    EventTime::from_unix_ms(now_ms, i16::try_from(offset_minutes).unwrap_or(0))
}

/// On-hand cells and the sealer's heads, as one multi-statement execution, each table's
/// rows as one JSON array. The SQL never changes with the number of rows, so SQLite
/// prepares it once per connection; it travels in the commit's one [`values::Batch`] with
/// the events and rollup upserts. Blobs travel as hex; `jsonb_each` hands each row over as
/// JSONB, so reading its columns does not parse the row's text again. Parameters are
/// anonymous and bound in order of appearance across the statements (sqlx binds numbered
/// parameters wrongly when a statement skips a number). Events and rollup increments, the
/// most rows and bytes by far, go as bound values instead ([`EVENTS`], [`rollup::upsert`]):
/// no hex, no JSON.
const WRITE_BATCH: &str = "\
INSERT INTO on_hand (sku, quantity, last_count_ms, last_move_ms, updated_ms) \
  SELECT value->>0, value->>1, value->>2, value->>3, ? FROM jsonb_each(?) WHERE true \
  ON CONFLICT(sku) DO UPDATE SET quantity = excluded.quantity, \
  last_count_ms = excluded.last_count_ms, last_move_ms = excluded.last_move_ms, \
  updated_ms = excluded.updated_ms; \
INSERT INTO stream_heads (epoch, class, seq, hash, acked) \
  SELECT value->>0, value->>1, value->>2, unhex(value->>3), 0 FROM jsonb_each(?) WHERE true \
  ON CONFLICT(epoch, class) DO UPDATE SET seq = excluded.seq, hash = excluded.hash";

/// The batch statement that appends a commit's sealed events (see [`values`]).
static EVENTS: values::Shape = values::Shape::new(
    "INSERT INTO events (epoch, class, seq, prev, content_hash, body, recorded_ms, dedupe_key, \
     content_tag) SELECT * FROM (VALUES {rows}) WHERE column1 IS NOT NULL",
    9,
);

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn to_json<T: Serialize>(rows: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|e| StoreError::Identity(format!("encode {what}: {e}")))
}

/// Writes events alone (alerts raised or changed outside an ingest batch), with the
/// sealer's heads.
async fn write_events(
    conn: &mut SqliteConnection,
    events: &[Sealed],
    sealer: &Sealer,
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut batch = values::Batch::default();
    push_events(&mut batch, events, now_ms)?;
    push_state(&mut batch, &[], sealer, now_ms)?;
    batch.execute(conn).await
}

/// Adds to `batch` the inserts of `events` (see [`EVENTS`]).
fn push_events<'e>(
    batch: &mut values::Batch,
    events: impl IntoIterator<Item = &'e Sealed>,
    now_ms: i64,
) -> Result<(), StoreError> {
    /// A sealed event and when it was recorded.
    type EventRow<'a> = (&'a Sealed, i64);
    let event_rows: Vec<EventRow<'_>> = events.into_iter().map(|e| (e, now_ms)).collect();
    EVENTS.push(batch, event_rows, |args, (sealed, recorded_ms)| {
        let event = &sealed.event;
        args.add(epoch_sql(event.key.stream.epoch))?;
        args.add(event.key.stream.class as i64)?;
        args.add(i64::try_from(event.key.seq.0).unwrap_or(i64::MAX))?;
        args.add(event.prev.0.to_vec())?;
        args.add(event.content_hash.0.to_vec())?;
        args.add(sealed.body.clone())?;
        args.add(recorded_ms)?;
        args.add(sealed.key.map(|k| k.0))?;
        args.add(sealed.key.map(|k| k.1))
    })
}

/// Adds to `batch` the writes of the on-hand cells and the sealer's heads (see
/// [`WRITE_BATCH`]).
fn push_state(
    batch: &mut values::Batch,
    on_hand: &[(Sku, OnHand)],
    sealer: &Sealer,
    now_ms: i64,
) -> Result<(), StoreError> {
    let on_hand_rows: Vec<(&str, i64, Option<i64>, Option<i64>)> = on_hand
        .iter()
        .map(|(sku, cell)| {
            (
                sku.as_str(),
                cell.quantity,
                cell.last_count_ms,
                cell.last_move_ms,
            )
        })
        .collect();
    let epoch = epoch_sql(sealer.epoch());
    let head_rows: Vec<(i64, i64, i64, String)> = EventClass::ALL
        .iter()
        .map(|class| {
            let head = sealer.head(*class);
            (
                epoch,
                *class as i64,
                i64::try_from(head.seq.0).unwrap_or(i64::MAX),
                hex(&head.hash.0),
            )
        })
        .collect();
    batch.push_sql(WRITE_BATCH);
    batch.bind(now_ms)?;
    batch.bind(to_json(&on_hand_rows, "on-hand cells")?)?;
    batch.bind(to_json(&head_rows, "stream heads")?)
}

/// Begins the writer's transaction, taking the database's write lock at once.
async fn begin_immediate(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("BEGIN IMMEDIATE").execute(conn).await?;
    Ok(())
}
