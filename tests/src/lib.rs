//! storesync-tests
