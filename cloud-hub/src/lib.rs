//! The storesync cloud hub: the store of every shop's events, and the web API over it.
//!
//! Modules, one capability each:
//!
//! - [`store`]: the [`store::Store`] trait and its backends, [`store::pg::PgStore`]
//!   (PostgreSQL, production) and [`store::sqlite::SqliteStore`] (embedded, single-machine
//!   installs and the demo). Both pass one test suite (`tests/store_suite.rs`).
//! - [`ingest`]: what both backends share when they commit a verified run of events.
//! - [`api`]: the axum router ([`api::app`]) — dashboards, alerts, live streams (opened
//!   with short-lived tickets), tokens, saved views ([`api::views`]) — with its route table
//!   ([`api::routes::ROUTES`]) that drives authorization and OpenAPI; every other `GET`
//!   serves the built web UI ([`api::ui`]).
//! - [`auth`]: the hub's own EdDSA token issuer, pinned JWT verification (RS256, EdDSA;
//!   an external identity provider's tokens act only for the tenant it is configured for),
//!   argon2 secrets, rotating refresh tokens.
//! - [`fleet`]: alerts only the hub can raise — a store that stopped syncing (a periodic
//!   check) and a device clock far off the hub's (at the handshake) — deduplicated by a
//!   stable id per subject and resolved when the condition clears.
//! - [`ratelimit`], [`cache`], [`metrics`], [`telemetry`] (logs and OTLP spans), [`config`],
//!   [`server`] (start-up glue), and
//!   [`testing`] (throw-away PostgreSQL clusters for tests and benchmarks).
//!
//! # Ingest
//!
//! The sync server (a separate module, driving the protocol's `HubSession`) verifies hash
//! chains and calls [`store::Store::commit_events`] with one run of one stream and the
//! stream's new head. In one database transaction the backend stores the event keys
//! (conflicts on the key are ignored; the same key with another content hash is a
//! *conflict*, reported and kept as a dead letter, never overwritten), registers POS
//! transaction ids (the same id with the same content under another key is a *duplicate*,
//! with other content a conflict), writes the event tables, adds the rollup deltas of the
//! newly inserted transactions only, and moves the stream head; it returns after the
//! commit. The same run twice changes nothing.
//!
//! **Rollups are updated in the ingest transaction**, not by a worker: a dashboard read
//! after `commit_events` returned sees the figures of that run, and rollups can never be
//! ahead of or behind the events. Minute rollups by store and payment method, hour rollups
//! by store, payment method and register, day rollups by those and by item are computed
//! with the protocol's `rollup_rows` in the store's time zone, so hub and edge figures are
//! equal (items by hour are summed from line items when read, the same figures); weeks are summed from days (read summed by the
//! stores' time zone, as a week starts on a local Monday), regions from stores and
//! categories from items at query time, the last in the database joined with the tenant's
//! catalog so one row per category leaves it (recategorizing an item restates history).
//! What is not fresh is *completeness*: a store that has not synced yet is behind, and every
//! series says so with a per-store watermark (`completeUpTo`) and `storesBehind`.
//!
//! # PostgreSQL schema and tenancy
//!
//! `tenant_id` leads every key (ready to distribute by tenant). Tables: `tenants`,
//! `stores`, `items`, `principals`, `refresh_tokens`, `stream_heads` (the cursors),
//! `devices` (last contact), `event_keys` (one small row per event, unpartitioned, for
//! identity), `transaction_ids` (one row per POS transaction, for idempotency),
//! `transactions`, `line_items`, `stock_movements`, `other_events` (range-partitioned by
//! business time in 7-day partitions; hypertables when TimescaleDB is present — that path
//! is written but untested here), `alerts`, `sales_rollups` (partitioned by dimension: the
//! store-level rows of each granularity in their own table, see `store::pg`),
//! `dead_letters`.
//! Row-level security is enabled and FORCEd on every one of them with one policy on
//! `current_setting('storesync.tenant_id')`; the hub's role owns nothing and has no
//! BYPASSRLS; each transaction sets the tenant with `SET LOCAL`. Partitions are created by a
//! `SECURITY DEFINER` function, so the hub's role has no DDL rights, and are reachable only
//! through their parent (whose policy applies). The API filters by tenant as well: the
//! policies are the second line, not the only one.
//!
//! # Dashboard reads
//!
//! Sales series, top items and basket metrics read `sales_rollups`, at the coarsest stored
//! granularity that answers the bucket (weeks from days), except items by hour (hourly item
//! and category series, and the hours at the ends of a top-items range, whose whole local
//! days are read from day rows): the hub keeps no item rows by hour, and
//! [`store::Store::rollups`] sums those from line items (see `store/item_hours.rs`), as far
//! back as line items are kept (`retention_days`). Rollup reads run with JIT
//! off (compiling a wide read's plan took 30 times longer than the read). Responses are
//! cached in process ([`cache`]): a hit takes one uncontended lock and allocates nothing to
//! look up; identical misses arriving together are computed once; at most
//! `limits.dashboard_queries_max` responses (default twice the cores) are computed at once,
//! since the database answers a few queries at a time faster than many. Inventory
//! ([`store::inventory`]) reads the stock movements and, for sales, the daily item rollups
//! (line items only between a count and the end of its day), and is cached too. A series is bounded before and while
//! it is read: `from`/`to` must be writable dates, its buckets and its points (groups ×
//! buckets) are capped by `limits.series_points_max`, and the rollup read carries a `LIMIT`
//! (`limits.series_rows_max` where several rows make one point), so a wide grouping is
//! refused with "too many points" instead of read whole.
//!
//! # Starting a hub in a program
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use storesync_hub::{api, config::Config, server};
//! let config = Config::load(std::path::Path::new("/var/lib/storesync/hub.toml"))?;
//! let store = server::open_store(&config.store).await?; // migrated; hand it to the sync server
//! let state = server::state_with_store(&config, store.clone()).await?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! api::serve(state, listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! What the hub deliberately does not do here: it does not terminate QUIC (the sync server
//! does, and calls [`store::Store`]); it exports OpenTelemetry spans only over plain
//! OTLP/HTTP to a collector ([`telemetry`]); it fetches JWKS only from files or plain-HTTP
//! URLs.
pub mod api;
pub mod auth;
pub mod cache;
pub mod config;
pub mod docs;
pub mod fleet;
pub mod ingest;
pub mod metrics;
pub mod ratelimit;
pub mod server;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod testing;
