//! storesync-hub
pub mod api;
pub mod auth;
pub mod cache;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod ratelimit;
pub mod server;
pub mod store;
pub mod testing;
