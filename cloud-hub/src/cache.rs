//! The in-process cache of dashboard responses.
//!
//! Entries are keyed by tenant, route, normalized query and the caller's store scope, and
//! remember which stores they cover. A committed change (from this process or, through
//! LISTEN/NOTIFY, from another hub process) drops the tenant's entries that cover a changed
//! store. A per-tenant generation number prevents a response computed before a change from
//! being cached after it. Entries also expire after a time to live, and the cache holds at
//! most `entries_max` entries (when full, the oldest tenth goes at once, so a full cache
//! does not scan every entry on every miss).
//!
//! A hit costs one uncontended lock and no allocation: entries are kept per tenant and
//! looked up by `&str`. Identical misses that arrive together are computed once: the first
//! takes the key's [`Flight`] and the others wait for it, then find its entry
//! ([`Cache::flight`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
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
    /// Tenant → key → entry.
    entries: HashMap<String, HashMap<String, Entry>>,
    len: usize,
    generations: HashMap<String, u64>,
}

impl Inner {
    /// Drops the oldest tenth of the entries (at least one).
    fn evict_oldest(&mut self) {
        let mut ages: Vec<Instant> = self
            .entries
            .values()
            .flat_map(|m| m.values().map(|e| e.at))
            .collect();
        if ages.is_empty() {
            return;
        }
        let n = (ages.len() / 10).max(1);
        let (_, cutoff, _) = ages.select_nth_unstable(n - 1);
        let cutoff = *cutoff;
        for tenant in self.entries.values_mut() {
            tenant.retain(|_, e| e.at > cutoff);
        }
        self.entries.retain(|_, m| !m.is_empty());
        self.recount();
    }

    fn recount(&mut self) {
        self.len = self.entries.values().map(HashMap::len).sum();
    }
}

/// The cache.
#[derive(Debug)]
pub struct Cache {
    inner: Mutex<Inner>,
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    entries_max: usize,
    ttl: Duration,
}

/// The right to compute one key's response while identical requests wait (see
/// [`Cache::flight`]). Dropping it, also by cancellation, lets the next one in.
#[derive(Debug)]
pub struct Flight<'a> {
    cache: &'a Cache,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut flights = self.cache.flights.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and this one: nobody else waits, the key's lock can go.
        if Arc::strong_count(&self.lock) <= 3
            && flights
                .get(&self.key)
                .is_some_and(|l| Arc::ptr_eq(l, &self.lock))
        {
            flights.remove(&self.key);
        }
    }
}

impl Cache {
    /// A cache of at most `entries_max` entries living `ttl` each.
    pub fn new(entries_max: usize, ttl: Duration) -> Cache {
        Cache {
            inner: Mutex::new(Inner::default()),
            flights: Mutex::new(HashMap::new()),
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
        let hit = self.peek(tenant, key);
        let counter = if hit.is_some() {
            &metrics::global().cache_hits
        } else {
            &metrics::global().cache_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// A fresh entry, counting nothing.
    fn peek(&self, tenant: &str, key: &str) -> Option<Cached> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .entries
            .get(tenant)
            .and_then(|m| m.get(key))
            .filter(|e| e.at.elapsed() < self.ttl)
            .map(|e| e.value.clone())
    }

    /// Waits for the right to compute `key` of `tenant` after a miss. `Err` carries the
    /// entry that an identical request computed meanwhile; with `Ok`, compute and
    /// [`put`](Cache::put) while holding the [`Flight`].
    pub async fn flight(&self, tenant: &str, key: &str) -> Result<Flight<'_>, Cached> {
        let flight_key = format!("{tenant}\u{0}{key}");
        let lock = self
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(flight_key.clone())
            .or_default()
            .clone();
        let turn = lock.clone().lock_owned().await;
        let flight = Flight {
            cache: self,
            key: flight_key,
            lock,
            _turn: turn,
        };
        match self.peek(tenant, key) {
            Some(value) => Err(value),
            None => Ok(flight),
        }
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
        if inner.len >= self.entries_max {
            inner.evict_oldest();
        }
        let entry = Entry {
            value,
            stores,
            at: Instant::now(),
        };
        let replaced = match inner.entries.get_mut(tenant) {
            Some(m) => m.insert(key.to_owned(), entry),
            None => {
                let mut m = HashMap::new();
                m.insert(key.to_owned(), entry);
                inner.entries.insert(tenant.to_owned(), m);
                None
            }
        };
        if replaced.is_none() {
            inner.len += 1;
        }
    }

    /// Drops what `change` makes stale.
    pub fn invalidate(&self, change: &Change) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner.generations.entry(change.tenant.clone()).or_insert(0) += 1;
        if let Some(entries) = inner.entries.get_mut(&change.tenant) {
            entries.retain(|_, entry| match &entry.stores {
                None => false,
                Some(stores) => {
                    !stores.iter().any(|s| change.stores.contains(s)) && !change.stores.is_empty()
                }
            });
        }
        inner.recount();
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.entries.clear();
        inner.len = 0;
        for generation in inner.generations.values_mut() {
            *generation += 1;
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &'static str) -> Cached {
        Cached {
            body: Bytes::from_static(text.as_bytes()),
            content_type: "text/plain",
        }
    }

    #[test]
    fn full_cache_drops_its_oldest_tenth() {
        let cache = Cache::new(20, Duration::from_secs(60));
        for i in 0..20 {
            cache.put("t", &format!("k{i}"), 0, None, value("v"));
        }
        assert_eq!(cache.len(), 20);
        cache.put("t", "new", 0, None, value("v"));
        assert_eq!(cache.len(), 19);
        assert!(cache.peek("t", "new").is_some());
        assert!(cache.peek("t", "k19").is_some());
        assert!(cache.peek("t", "k0").is_none());
    }

    #[test]
    fn invalidation_drops_only_the_changed_stores_entries() {
        let cache = Cache::new(100, Duration::from_secs(60));
        cache.put("t", "a", 0, Some(vec!["s1".into()]), value("a"));
        cache.put("t", "b", 0, Some(vec!["s2".into()]), value("b"));
        cache.put("t", "all", 0, None, value("all"));
        cache.put("u", "a", 0, Some(vec!["s1".into()]), value("a"));
        cache.invalidate(&Change {
            tenant: "t".into(),
            sales: Vec::new(),
            alerts: Vec::new(),
            stores: vec!["s1".into()],
        });
        assert!(cache.peek("t", "a").is_none());
        assert!(cache.peek("t", "all").is_none());
        assert!(cache.peek("t", "b").is_some());
        assert!(cache.peek("u", "a").is_some());
        assert_eq!(cache.len(), 2);
        // Computed before the change: not stored.
        cache.put("t", "late", 0, None, value("late"));
        assert!(cache.peek("t", "late").is_none());
    }

    #[tokio::test]
    async fn identical_misses_are_computed_once() {
        let cache = Arc::new(Cache::new(100, Duration::from_secs(60)));
        let computed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let cache = cache.clone();
            let computed = computed.clone();
            tasks.push(tokio::spawn(async move {
                match cache.flight("t", "k").await {
                    Err(found) => found.body,
                    Ok(_flight) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        computed.fetch_add(1, Ordering::SeqCst);
                        cache.put("t", "k", 0, None, value("v"));
                        Bytes::from_static(b"v")
                    }
                }
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Bytes::from_static(b"v"));
        }
        assert_eq!(computed.load(Ordering::SeqCst), 1);
        assert!(cache.flights.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_computation_lets_the_next_one_in() {
        let cache = Cache::new(100, Duration::from_secs(60));
        let first = cache.flight("t", "k").await.ok();
        assert!(first.is_some());
        drop(first);
        let second = cache.flight("t", "k").await;
        assert!(second.is_ok());
        drop(second);
        assert!(cache.flights.lock().unwrap().is_empty());
    }
}
