//! The in-process cache of dashboard responses.
//!
//! Entries are keyed by tenant, route, normalized query and the caller's store scope, and
//! remember which stores they cover. A committed change (from this process or, through
//! LISTEN/NOTIFY, from another hub process) drops the tenant's entries that cover a changed
//! store. A per-tenant generation number prevents a response computed before a change from
//! being cached after it. Entries also expire after a time to live, and the cache holds at
//! most `entries_max` entries (the oldest go first).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::metrics;
use crate::store::Change;

/// A cached response body.
#[derive(Debug, Clone)]
pub struct Cached {
    /// Body.
    pub body: Bytes,
    /// Content type.
    pub content_type: &'static str,
}

#[derive(Debug)]
struct Entry {
    value: Cached,
    stores: Option<Vec<String>>,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<(String, String), Entry>,
    generations: HashMap<String, u64>,
}

/// The cache.
#[derive(Debug)]
pub struct Cache {
    inner: Mutex<Inner>,
    entries_max: usize,
    ttl: Duration,
}

impl Cache {
    /// A cache of at most `entries_max` entries living `ttl` each.
    pub fn new(entries_max: usize, ttl: Duration) -> Cache {
        Cache {
            inner: Mutex::new(Inner::default()),
            entries_max,
            ttl,
        }
    }

    /// The tenant's generation: take it before computing a response, hand it to [`put`].
    ///
    /// [`put`]: Cache::put
    pub fn generation(&self, tenant: &str) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.generations.get(tenant).copied().unwrap_or(0)
    }

    /// A fresh entry, counting the hit or miss.
    pub fn get(&self, tenant: &str, key: &str) -> Option<Cached> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let hit = inner
            .entries
            .get(&(tenant.to_owned(), key.to_owned()))
            .filter(|e| e.at.elapsed() < self.ttl)
            .map(|e| e.value.clone());
        let counter = if hit.is_some() {
            &metrics::global().cache_hits
        } else {
            &metrics::global().cache_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Stores a response computed at `generation` covering `stores` (`None`: all stores).
    pub fn put(
        &self,
        tenant: &str,
        key: &str,
        generation: u64,
        stores: Option<Vec<String>>,
        value: Cached,
    ) {
        if self.entries_max == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.generations.get(tenant).copied().unwrap_or(0) != generation {
            return;
        }
        if inner.entries.len() >= self.entries_max {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                inner.entries.remove(&k);
            }
        }
        inner.entries.insert(
            (tenant.to_owned(), key.to_owned()),
            Entry {
                value,
                stores,
                at: Instant::now(),
            },
        );
    }

    /// Drops what `change` makes stale.
    pub fn invalidate(&self, change: &Change) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner.generations.entry(change.tenant.clone()).or_insert(0) += 1;
        inner.entries.retain(|(tenant, _), entry| {
            if tenant != &change.tenant {
                return true;
            }
            match &entry.stores {
                None => false,
                Some(stores) => {
                    !stores.iter().any(|s| change.stores.contains(s)) && !change.stores.is_empty()
                }
            }
        });
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.entries.clear();
        for generation in inner.generations.values_mut() {
            *generation += 1;
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
