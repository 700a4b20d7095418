//! The shared language of the storesync edge agent and hub.
//!
//! This crate holds everything both sides must agree on, and nothing that does IO:
//!
//! - [`ids`], [`money`], [`time`], [`domain`]: validated domain types ([`Transaction`],
//!   [`ScanEvent`], [`StockAdjustment`], [`Alert`]); money is an integer ([`Money`]).
//! - [`validate`]: JSON → domain with errors that name the field and the reason. The rules
//!   are tabled in that module's documentation.
//! - [`event`]: event identity `(tenant, store, device, epoch, class, seq)`, content hashes
//!   and per-stream hash chains ([`Sealer`], [`verify_run`]).
//! - [`wire`]: messages and frames (magic, version, kind, length, CRC-32; postcard payload).
//! - [`session`]: the sans-IO sync state machines [`EdgeSession`] and [`HubSession`].
//! - [`rollup`], [`inventory`]: pure functions both sides compute identically.
//! - `docs` (with `std`): the schema of the replicated automerge documents (tenant catalog
//!   and alert rules; per-store alert marks, tasks, settings, downstream adjustments) and
//!   the sync peer both shells drive.
//!
//! ```
//! use storesync_protocol::validate::{parse_transaction, Context, Limits};
//!
//! let json = br#"{"transactionId":"t1","storeId":"s1","timestamp":"2026-11-22T09:00:00Z",
//!   "items":[{"itemId":"a","quantity":2,"price":1.5}],"totalAmount":3.0,"paymentMethod":"cash"}"#;
//! let limits = Limits::default();
//! let ctx = Context { now_ms: 1_795_338_000_000, limits: &limits, store: None };
//! let tx = parse_transaction(json, &ctx).unwrap();
//! assert_eq!(tx.total_amount.e4(), 30_000);
//! ```
//!
//! What it deliberately does not do: no async, no sockets, no files, no database, no clock
//! reads, no randomness of its own (epochs and batch ids come from the caller). It builds
//! without `std` (`default-features = false`) for the firmware bridge; the `std` feature
//! adds `std::error::Error` impls and the bundled time zone database.

#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

extern crate alloc;

#[cfg(feature = "std")]
pub mod docs;
pub mod domain;
pub mod event;
pub mod ids;
pub mod inventory;
pub mod money;
pub mod rollup;
pub mod session;
pub mod time;
pub mod validate;
pub mod wire;

pub use domain::{Alert, LineItem, ScanEvent, StockAdjustment, Transaction, TransactionKind};
pub use event::{
    EncodedBody, Epoch, Event, EventBody, EventClass, EventKey, Hash, Sealer, SeqNo, StreamHead,
    StreamId, verify_run,
};
pub use ids::{DeviceId, RegisterId, Sku, StoreId, TenantId, TransactionId};
pub use money::Money;
pub use session::{EdgeSession, HubSession};
pub use time::{EventTime, UnixMillis};
