//! storesync-hub
