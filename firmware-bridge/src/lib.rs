//! storesync-bridge
