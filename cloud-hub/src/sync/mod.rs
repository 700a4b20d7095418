//! Sync with store devices over QUIC with mutual TLS.
//!
//! - [`pki`]: the hub CA, tenant CAs, device certificates, CRLs and device identity.
//! - [`server`]: the QUIC endpoint; enrollment, renewal, and one
//!   [`storesync_protocol::HubSession`] per device connection, committing through
//!   [`crate::store::Store::commit_events`].
//! - [`docs`]: the automerge documents over the same connection ([`docs::DocLink`]).

pub mod docs;
pub mod pki;
pub mod server;

pub use server::{ServerOptions, SyncServer, TokenKey};
