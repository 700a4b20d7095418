//! storesync-edge
