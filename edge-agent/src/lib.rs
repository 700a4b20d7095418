//! The storesync store agent: one small process per store PC that captures POS
//! transactions and scanner events into SQLite, aggregates them and raises alerts while
//! offline, and keeps an outbox of sealed events for the sync client.
//!
//! # Modules
//!
//! - [`config`]: the TOML configuration (`storesync-edge init` writes a commented one).
//! - [`store`]: SQLite (sqlx) opening, the data-directory lock, device identity and epochs,
//!   outbox reads ([`store::Store::outbox_read`], [`store::Store::outbox_streams`],
//!   [`store::Store::backlog`]).
//! - [`writer`]: the single writer task; group commit of events, dead letters, rollups,
//!   inventory, alerts and stream heads in one transaction; outbox writes
//!   ([`writer::WriterHandle::mark_acked`], [`writer::WriterHandle::prune`]).
//! - [`ingest`]: JSON/NDJSON bodies, CSV files (columns documented in [`ingest::csv`]),
//!   firmware-bridge frames over TCP.
//! - [`rollup`], [`inventory`]: local rollups and stock on hand, with the protocol crate's
//!   functions so the hub computes the same figures.
//! - [`alerts`]: offline alerts; the anomaly method and its minimum history are in that
//!   module's documentation.
//! - [`api`]: the local HTTP API; [`auth`]: offline bearer-token checks; [`metrics`].
//! - [`sync`]: enrollment and the QUIC sync client that drains the outbox to the hub.
//! - [`agent`]: assembly of the above for the binary.
//!
//! # Durability
//!
//! An accepted record is sealed into an [`storesync_protocol::Event`] (key, predecessor
//! hash, content hash, postcard body) and committed with `synchronous=FULL` in WAL mode,
//! together with the sealer's heads, before its caller gets a 2xx, a CSV report or a bridge
//! ack. Derived tables (rollups, on-hand) are written in the same transaction.
//!
//! # Idempotency and the dedupe key
//!
//! POS transaction ids are often random UUIDv4s. A unique index on random keys costs
//! SQLite about 20× at a million rows, because every insert dirties a random page. So the
//! log is keyed by `(epoch, class, seq)`, which only ever appends, and the idempotency check
//! runs in memory in the writer: BLAKE3 of the record id, truncated to 63 bits, maps to a
//! 64-bit tag of the content hash. Both are stored in unindexed columns of `events` (and in
//! `dedupe_archive` after pruning, for `retention.dedupe_days`) and reloaded at start.
//! Same id and content: `duplicate`; same id, other content: `conflict`, a dead letter and
//! an alert. A 63-bit collision between two different ids (probability about n²/2⁶⁴) would
//! report the second as a duplicate or conflict, never lose the first.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = storesync_edge::config::load(std::path::Path::new("/var/lib/storesync/storesync-edge.toml"))?;
//! storesync_edge::agent::run(settings, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! What it deliberately does not do: hold state only in memory (the sync client reads the
//! outbox back from SQLite), edit the catalog, or trust input: every path goes
//! through `storesync_protocol::validate` and every rejected record is kept as a dead
//! letter with its raw bytes.

pub mod agent;
pub mod alerts;
pub mod api;
pub mod auth;
pub mod config;
pub mod docs;
pub mod ingest;
pub mod inventory;
pub mod metrics;
pub mod rollup;
pub mod store;
pub mod sync;
pub mod writer;
