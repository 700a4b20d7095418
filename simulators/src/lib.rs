//! storesync-sim
