//! storesync-hub
pub mod ingest;
pub mod store;
pub mod testing;
