//! `storesync-bridge`: firmware for the store's peripherals (scanners, scales) that hands
//! their scans to the edge agent and never loses one.
//!
//! A bridge keeps every scan it has not seen acknowledged in a fixed-size ring, sends it to
//! the agent's bridge listener as a [`storesync_protocol::wire::Message::BridgeScan`] frame
//! over TCP, and drops it only when a [`storesync_protocol::wire::Message::BridgeAck`] says
//! the agent made it durable. A lost connection, an agent restart or a corrupted frame (the
//! agent closes the stream) all end the same way: reconnect with backoff and resend
//! everything unacknowledged, oldest first. The agent deduplicates on the scan's id, so a
//! resend is harmless.
//!
//! - [`session`]: [`BridgeSession`], the sans-IO core — scans, bytes and time in; frames,
//!   connect/close actions and [`Event`]s out. All the behaviour lives here and is tested
//!   without a network.
//! - [`driver`]: [`driver::run`], the thin embassy-net task that drives a session over a
//!   [`embassy_net::tcp::TcpSocket`], taking scans from a [`driver::ScanQueue`].
//! - The ring ([`PENDING_LEN_MAX`] slots of [`FRAME_LEN_MAX`] bytes, about 33 KiB) holds
//!   encoded frames, so a retransmission is byte-for-byte the first transmission. When it
//!   is full, [`OverflowPolicy`] decides: refuse the newest scan (the default; nothing
//!   recorded is ever lost) or evict the oldest. Either way a counter in [`Stats`] and an
//!   [`Event`] say so.
//!
//! ```
//! use storesync_bridge::{Action, BridgeSession, Config};
//! use storesync_protocol::DeviceId;
//!
//! let mut session = BridgeSession::new(Config::new(DeviceId::new("scanner-1").unwrap()));
//! session.handle_timeout(0);
//! assert_eq!(session.poll_action(), Some(Action::Connect));
//! session.handle_connected(5);
//! assert!(session.poll_transmit(5).is_none()); // nothing recorded yet
//! ```
//!
//! # Memory
//!
//! The library is `#![no_std]` but needs `alloc`: the protocol crate encodes with postcard
//! and validates with serde_json. A microcontroller binary provides the global allocator,
//! e.g. with `embedded-alloc` (a few KiB of heap is plenty: frames are encoded one at a
//! time and copied into the ring), plus a `critical-section` implementation and an
//! embassy time driver (both come with the HAL, e.g. `embassy-stm32`). See the README's
//! "Firmware" section. On the host, `storesync-bridge-sim` runs the same code on embassy's
//! std executor.
//!
//! What it deliberately does not do: persist scans across a power loss (a peripheral has
//! no durable storage worth the name; the ring is RAM), validate scans (the agent does,
//! and dead-letters what it refuses), or read a clock (the shell passes `now_ms`).

#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod driver;
mod ring;
pub mod session;

pub use ring::{FRAME_LEN_MAX, PENDING_LEN_MAX};
pub use session::{
    Action, BridgeSession, CloseReason, Config, Event, OverflowPolicy, RecordError, Stats,
    WireFault,
};
