//! storesync-sim: whole-chain traffic for real agents, and the one-command demo.
//!
//! - [`chain`]: a retail chain and its trading as a pure, seeded function: stores in
//!   regions and time zones, a catalog of about 2,000 SKUs, daily and weekly patterns,
//!   promotions, returns and voids, receiving and stock counts as scanner events, and
//!   injected incidents: revenue spikes and drops, refund/void spikes, POS outages.
//! - [`drive`]: sends generated records to an agent through its real ingest paths: the
//!   JSON API (NDJSON for backfill, JSON arrays live), CSV over HTTP or in the drop folder,
//!   and scans as firmware-bridge frames ([`bridge`]), retrying while the agent is busy or
//!   restarting.
//! - [`demo`]: starts a hub and several agents, backfills, runs live traffic with one store
//!   going offline and coming back, and stops everything on Ctrl-C.
//! - [`load`]: the load generator benchmarks use: concurrent POS clients at a fixed rate
//!   or as fast as possible, with acknowledgement latency percentiles.
//! - [`progress`]: progress bars on a terminal, plain lines otherwise.
//! - [`http`]: the minimal loopback HTTP client the others use.
//! - [`faultproxy`]: a UDP proxy that loses, duplicates, delays and reorders datagrams and
//!   partitions the link on demand, seeded, for sync tests over a bad network.
//!
//! ```
//! use storesync_sim::chain::{Chain, ChainConfig};
//! let chain = Chain::new(ChainConfig { seed: 7, ..ChainConfig::default() });
//! let monday = jiff::civil::date(2026, 3, 2);
//! let records = chain.day(0, monday);
//! assert_eq!(records, Chain::new(chain.config().clone()).day(0, monday));
//! ```
//!

pub mod bridge;
pub mod chain;
pub mod demo;
pub mod drive;
pub mod faultproxy;
pub mod http;
pub mod load;
pub mod ports;
pub mod progress;
