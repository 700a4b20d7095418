//! The chain generator: a retail chain and its trading, as a pure function of a seed.
//!
//! A [`Chain`] holds the stores (region, time zone, registers, size) and the catalog (about
//! 2,000 SKUs in categories with their own price spreads). [`Chain::day`] produces one
//! store's records for one local calendar day: receiving and stock counts as scanner events,
//! and sales, returns and voids as POS transactions whose number follows the hour of day and
//! the day of week, with promotions on some days. [`Chain::live`] produces the records of a
//! short live interval.
//!
//! Some days carry [`Incident`]s ([`Chain::incidents`]): an hour whose revenue spikes or
//! drops against the store's usual, an hour of refunds and voids, or a POS outage (a
//! register silent for some opening hours, its customers served at the other registers).
//! They apply to history and to live traffic alike, and are as deterministic as the rest.
//!
//! Every record is JSON in the shape the agents ingest, and every call is deterministic: the
//! RNG of a (store, day) is derived from the seed, the store and the date only, so days can
//! be generated in any order or in parallel and a seed always yields the same chain.
//!
//! It does no IO and reads no clock: the caller passes the dates and instants.

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// Regions of the chain and their time zones and currencies.
const REGIONS: &[(&str, &str, &str)] = &[
    ("west-eu", "Europe/Paris", "EUR"),
    ("north-eu", "Europe/Helsinki", "EUR"),
    ("uk", "Europe/London", "GBP"),
    ("us-east", "America/New_York", "USD"),
    ("us-west", "America/Los_Angeles", "USD"),
];

/// Categories: name, share of the catalog (per mille), price range in cents.
const CATEGORIES: &[(&str, u32, i64, i64)] = &[
    ("grocery", 250, 49, 899),
    ("produce", 90, 29, 599),
    ("dairy", 80, 59, 799),
    ("bakery", 50, 79, 699),
    ("beverages", 120, 69, 2499),
    ("household", 110, 149, 2999),
    ("personal-care", 100, 99, 3499),
    ("apparel", 80, 799, 8999),
    ("electronics", 60, 999, 49999),
    ("toys", 60, 299, 6999),
];

const PAYMENT_METHODS: &[(&str, u32)] = &[("card", 60), ("cash", 25), ("mobile", 15)];

/// Opening hour, local time; the day has `HOUR_WEIGHTS.len()` opening hours and Sunday is
/// closed (the agents' default hours, 08:00-20:00 Monday to Saturday).
const OPEN_HOUR: i8 = 8;

/// Relative traffic per opening hour 08..20: a lunch peak and an after-work peak.
const HOUR_WEIGHTS: [f64; 12] = [0.4, 0.6, 0.8, 1.0, 1.5, 1.3, 0.9, 0.8, 1.0, 1.4, 1.6, 1.0];

/// Something out of the ordinary on one store's day; hours are opening-hour indexes
/// (0 is the opening hour, 08:00 local).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incident {
    /// Traffic and basket value far above the usual for this hour.
    RevenueSpike {
        /// Opening-hour index.
        hour: usize,
    },
    /// Traffic far below the usual for this hour.
    RevenueDrop {
        /// Opening-hour index.
        hour: usize,
    },
    /// Many refunds and voids in this hour.
    RefundSpike {
        /// Opening-hour index.
        hour: usize,
    },
    /// Register `register` (1-based) sends nothing in hours `from_hour..to_hour`.
    PosOutage {
        /// The silent register.
        register: u32,
        /// First silent opening hour.
        from_hour: usize,
        /// First opening hour it is back.
        to_hour: usize,
    },
}

/// Traffic factor of a revenue spike and a revenue drop hour.
const SPIKE_FACTOR: f64 = 3.5;
const DROP_FACTOR: f64 = 0.1;
/// A day has an anomaly with probability 1/ANOMALY_ONE_IN, an outage with 1/OUTAGE_ONE_IN.
const ANOMALY_ONE_IN: u32 = 6;
const OUTAGE_ONE_IN: u32 = 8;

/// What changes for one transaction because of the day's incidents.
#[derive(Debug, Clone, Copy, Default)]
struct Effects {
    /// Refunds and voids much more likely.
    refunds: bool,
    /// Larger baskets.
    big_baskets: bool,
    /// A register that must not be used.
    silent_register: Option<u32>,
}

impl Effects {
    fn at(incidents: &[Incident], hour: usize, silent: Option<u32>) -> Effects {
        let mut e = Effects {
            silent_register: silent,
            ..Effects::default()
        };
        for i in incidents {
            match *i {
                Incident::RefundSpike { hour: h } if h == hour => e.refunds = true,
                Incident::RevenueSpike { hour: h } if h == hour => e.big_baskets = true,
                Incident::PosOutage {
                    register,
                    from_hour,
                    to_hour,
                } if (from_hour..to_hour).contains(&hour) => e.silent_register = Some(register),
                _ => {}
            }
        }
        e
    }

    fn traffic_factor(incidents: &[Incident], hour: usize) -> f64 {
        incidents
            .iter()
            .map(|i| match *i {
                Incident::RevenueSpike { hour: h } if h == hour => SPIKE_FACTOR,
                Incident::RevenueDrop { hour: h } if h == hour => DROP_FACTOR,
                _ => 1.0,
            })
            .product()
    }
}

/// What the generator is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainConfig {
    /// The seed; the same seed yields the same chain and the same trading.
    pub seed: u64,
    /// Number of stores.
    pub stores_len: usize,
    /// Number of SKUs in the catalog.
    pub skus_len: usize,
    /// Transactions of an average store on an average day.
    pub transactions_per_day: u32,
}

impl Default for ChainConfig {
    fn default() -> ChainConfig {
        ChainConfig {
            seed: 1,
            stores_len: 3,
            skus_len: 2_000,
            transactions_per_day: 400,
        }
    }
}

/// A store of the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    /// Store id, `s001`...
    pub id: String,
    /// Display name.
    pub name: String,
    /// Region.
    pub region: String,
    /// IANA time zone.
    pub time_zone: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// Registers (POS terminals).
    pub registers_len: u32,
    /// Traffic relative to an average store.
    pub size: f64,
}

/// An item of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// SKU, the `itemId` of transactions and the `sku` of scans.
    pub sku: String,
    /// GTIN-13 with a valid check digit.
    pub gtin: String,
    /// Category.
    pub category: String,
    /// Shelf price in cents.
    pub price_cents: i64,
}

/// Whether a record is a POS transaction or a scanner event: they go to different routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// `POST /api/v1/transactions`.
    Transaction,
    /// `POST /api/v1/scans`.
    Scan,
}

/// One generated record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Which route takes it.
    pub kind: RecordKind,
    /// When it happened, Unix milliseconds (records of a day are in this order).
    pub at_ms: i64,
    /// The JSON the agent receives.
    pub json: Value,
}

/// The chain: stores and catalog, derived from [`ChainConfig`].
#[derive(Debug, Clone)]
pub struct Chain {
    config: ChainConfig,
    stores: Vec<Store>,
    catalog: Vec<Product>,
}

/// SplitMix64: derives independent seeds from (seed, parts).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rng_for(seed: u64, parts: &[u64]) -> ChaCha8Rng {
    let mut h = mix(seed);
    for p in parts {
        h = mix(h ^ *p);
    }
    ChaCha8Rng::seed_from_u64(h)
}

/// The GS1 check digit of 12 digits.
fn gtin13(body: u64) -> String {
    let digits = format!("{:012}", body % 1_000_000_000_000);
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    format!("{digits}{}", (10 - sum % 10) % 10)
}

/// Picks from weighted choices.
fn weighted<'a, T>(rng: &mut ChaCha8Rng, choices: &'a [(T, u32)]) -> &'a T {
    let total: u32 = choices.iter().map(|c| c.1).sum();
    let mut pick = rng.random_range(0..total.max(1));
    for (value, weight) in choices {
        if pick < *weight {
            return value;
        }
        pick -= weight;
    }
    &choices[choices.len() - 1].0
}

/// A Poisson-distributed count (Knuth for small means, normal approximation above).
fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u32 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 30.0 {
        let u1: f64 = rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        return (mean + z * mean.sqrt()).round().max(0.0) as u32;
    }
    let limit = (-mean).exp();
    let mut p = 1.0;
    let mut k = 0;
    loop {
        p *= rng.random::<f64>();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

fn money(cents: i64) -> Value {
    // Cents to a two-decimal JSON number; the agent converts it to minor units exactly.
    json!(cents as f64 / 100.0)
}

fn local_rfc3339(at: &Zoned) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

impl Chain {
    /// Builds the chain of `config`.
    pub fn new(config: ChainConfig) -> Chain {
        let mut rng = rng_for(config.seed, &[0xC4A1]);
        let stores = (0..config.stores_len)
            .map(|i| {
                let (region, zone, currency) = REGIONS[i % REGIONS.len()];
                Store {
                    id: format!("s{:03}", i + 1),
                    name: format!("{} #{}", region, i + 1),
                    region: region.to_owned(),
                    time_zone: zone.to_owned(),
                    currency: currency.to_owned(),
                    registers_len: rng.random_range(2..=6),
                    size: rng.random_range(0.6..1.6),
                }
            })
            .collect();
        let shares: Vec<(usize, u32)> = CATEGORIES
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.1))
            .collect();
        let catalog = (0..config.skus_len)
            .map(|i| {
                let category = *weighted(&mut rng, &shares);
                let (name, _, low, high) = CATEGORIES[category];
                // Log-uniform within the range, then a retail ending (.29, .49, .79, .99).
                let f: f64 = rng.random();
                let raw = (low as f64) * ((high as f64) / (low as f64)).powf(f);
                let ending = [29, 49, 79, 99][rng.random_range(0..4)];
                let price_cents = ((raw as i64) / 100 * 100 + ending).max(low);
                Product {
                    sku: format!("SKU-{:05}", i + 1),
                    gtin: gtin13(400_000_000_000 + i as u64 * 7 + 13),
                    category: name.to_owned(),
                    price_cents,
                }
            })
            .collect();
        Chain {
            config,
            stores,
            catalog,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ChainConfig {
        &self.config
    }

    /// The stores.
    pub fn stores(&self) -> &[Store] {
        &self.stores
    }

    /// The catalog, most popular first.
    pub fn catalog(&self) -> &[Product] {
        &self.catalog
    }

    fn zone(&self, store: usize) -> TimeZone {
        TimeZone::get(&self.stores[store].time_zone).unwrap_or(TimeZone::UTC)
    }

    /// A product index, skewed to the head of the catalog (a few SKUs sell most).
    fn pick_product(&self, rng: &mut ChaCha8Rng) -> usize {
        let u: f64 = rng.random();
        ((self.catalog.len() as f64) * u.powf(2.5)) as usize % self.catalog.len().max(1)
    }

    /// Whether a category is on promotion at a store on a day (about one day in seven).
    fn promotion(&self, store: usize, date: Date) -> Option<&'static str> {
        let mut rng = rng_for(
            self.config.seed,
            &[0x960, store as u64, date_key(date), 0x1],
        );
        rng.random_bool(1.0 / 7.0)
            .then(|| CATEGORIES[rng.random_range(0..CATEGORIES.len())].0)
    }

    /// The incidents of a store's day: at most one anomaly (spike, drop or refund hour) and
    /// one POS outage of one to three hours. None on closed days.
    pub fn incidents(&self, store: usize, date: Date) -> Vec<Incident> {
        if date.weekday() == Weekday::Sunday || store >= self.stores.len() {
            return Vec::new();
        }
        let mut rng = rng_for(self.config.seed, &[0x1AC1, store as u64, date_key(date)]);
        let hours = HOUR_WEIGHTS.len();
        let mut out = Vec::new();
        if rng.random_ratio(1, ANOMALY_ONE_IN) {
            let hour = rng.random_range(0..hours);
            out.push(match rng.random_range(0..3) {
                0 => Incident::RevenueSpike { hour },
                1 => Incident::RevenueDrop { hour },
                _ => Incident::RefundSpike { hour },
            });
        }
        if rng.random_ratio(1, OUTAGE_ONE_IN) {
            let from_hour = rng.random_range(0..hours - 1);
            let to_hour = (from_hour + rng.random_range(1..=3)).min(hours);
            out.push(Incident::PosOutage {
                register: rng.random_range(1..=self.stores[store].registers_len),
                from_hour,
                to_hour,
            });
        }
        out
    }

    /// One store's records for one local day, in time order: stock counts on Monday
    /// morning, deliveries (receiving) on Tuesday and Friday, and the day's transactions.
    /// A closed day (Sunday) has none.
    pub fn day(&self, store: usize, date: Date) -> Vec<Record> {
        let zone = self.zone(store);
        let weekday = date.weekday();
        if weekday == Weekday::Sunday || store >= self.stores.len() {
            return Vec::new();
        }
        let mut rng = rng_for(self.config.seed, &[0xDA7, store as u64, date_key(date)]);
        let mut records = Vec::new();
        let opening = date
            .at(OPEN_HOUR, 0, 0, 0)
            .to_zoned(zone.clone())
            .unwrap_or_else(|_| Timestamp::UNIX_EPOCH.to_zoned(zone.clone()));
        let mut scan_n = 0u32;
        let mut scan = |purpose: &str, product: usize, quantity: i64, at: &Zoned| {
            scan_n += 1;
            let p = &self.catalog[product];
            Record {
                kind: RecordKind::Scan,
                at_ms: at.timestamp().as_millisecond(),
                json: json!({
                    "scanId": format!("{}-{}-sc{:05}", self.stores[store].id, date_id(date), scan_n),
                    "storeId": self.stores[store].id,
                    "gtin": p.gtin,
                    "sku": p.sku,
                    "purpose": purpose,
                    "quantity": quantity,
                    "timestamp": local_rfc3339(at),
                }),
            }
        };
        if weekday == Weekday::Monday {
            // Counting the 40 best sellers before opening.
            let at = opening.checked_sub(jiff::SignedDuration::from_mins(45));
            let at = at.unwrap_or_else(|_| opening.clone());
            for product in 0..40.min(self.catalog.len()) {
                let quantity = rng.random_range(5..60);
                records.push(scan("stockCount", product, quantity, &at));
            }
        }
        if matches!(weekday, Weekday::Tuesday | Weekday::Friday) {
            let at = opening
                .checked_sub(jiff::SignedDuration::from_mins(30))
                .unwrap_or_else(|_| opening.clone());
            for _ in 0..rng.random_range(30..80) {
                let product = self.pick_product(&mut rng);
                let quantity = [6, 12, 24, 48][rng.random_range(0..4)];
                records.push(scan("receiving", product, quantity, &at));
            }
        }
        let day_factor = match weekday {
            Weekday::Friday => 1.2,
            Weekday::Saturday => 1.45,
            Weekday::Monday => 0.85,
            _ => 1.0,
        };
        let promotion = self.promotion(store, date);
        let incidents = self.incidents(store, date);
        let promo_factor = if promotion.is_some() { 1.1 } else { 1.0 };
        let hour_total: f64 = HOUR_WEIGHTS.iter().sum();
        let mut tx_n = 0u32;
        for (h, weight) in HOUR_WEIGHTS.iter().enumerate() {
            let effects = Effects::at(&incidents, h, None);
            let mean = f64::from(self.config.transactions_per_day)
                * self.stores[store].size
                * day_factor
                * promo_factor
                * Effects::traffic_factor(&incidents, h)
                * weight
                / hour_total;
            let count = poisson(&mut rng, mean);
            let hour_start = opening
                .checked_add(jiff::SignedDuration::from_hours(h as i64))
                .unwrap_or_else(|_| opening.clone());
            let mut seconds: Vec<i64> = (0..count).map(|_| rng.random_range(0..3600)).collect();
            seconds.sort_unstable();
            for s in seconds {
                let at = hour_start
                    .checked_add(jiff::SignedDuration::from_secs(s))
                    .unwrap_or_else(|_| hour_start.clone());
                tx_n += 1;
                let id = format!("{}-{}-{:05}", self.stores[store].id, date_id(date), tx_n);
                records.push(self.transaction(&mut rng, store, id, &at, promotion, effects));
            }
        }
        records
    }

    /// Transactions of one store over `[from_ms, to_ms)` at `per_hour` transactions per
    /// hour, for live traffic, with the day's incidents of the local hour. Ids carry
    /// `from_ms`, so consecutive intervals never collide.
    pub fn live(&self, store: usize, from_ms: i64, to_ms: i64, per_hour: f64) -> Vec<Record> {
        self.live_with_silent(store, from_ms, to_ms, per_hour, None)
    }

    /// [`Chain::live`] with register `silent` (1-based) sending nothing, as during an
    /// outage the caller decides (the demo's, to show the POS-silent alert).
    pub fn live_with_silent(
        &self,
        store: usize,
        from_ms: i64,
        to_ms: i64,
        per_hour: f64,
        silent: Option<u32>,
    ) -> Vec<Record> {
        if store >= self.stores.len() || to_ms <= from_ms {
            return Vec::new();
        }
        let zone = self.zone(store);
        let mut rng = rng_for(self.config.seed, &[0x11FE, store as u64, from_ms as u64]);
        let Ok(start) = Timestamp::from_millisecond(from_ms).map(|t| t.to_zoned(zone.clone()))
        else {
            return Vec::new();
        };
        let date = start.date();
        let incidents = self.incidents(store, date);
        let hour_of = |at: &Zoned| usize::try_from(at.hour() - OPEN_HOUR).ok();
        let factor = hour_of(&start).map_or(1.0, |h| Effects::traffic_factor(&incidents, h));
        let mean =
            per_hour * self.stores[store].size * factor * (to_ms - from_ms) as f64 / 3_600_000.0;
        let count = poisson(&mut rng, mean);
        let mut offsets: Vec<i64> = (0..count)
            .map(|_| rng.random_range(0..(to_ms - from_ms)))
            .collect();
        offsets.sort_unstable();
        let promotion = self.promotion(store, date);
        offsets
            .into_iter()
            .enumerate()
            .filter_map(|(n, off)| {
                let at = Timestamp::from_millisecond(from_ms + off)
                    .ok()?
                    .to_zoned(zone.clone());
                let effects = match hour_of(&at) {
                    Some(h) => Effects::at(&incidents, h, silent),
                    None => Effects::at(&[], 0, silent),
                };
                let id = format!("{}-L{}-{:04}", self.stores[store].id, from_ms, n + 1);
                Some(self.transaction(&mut rng, store, id, &at, promotion, effects))
            })
            .collect()
    }

    /// The `n`th transaction of a stream of single POS postings (the load generator's),
    /// at `at_ms`, with id `id`. Deterministic per (seed, store, `n`).
    pub fn pos_transaction(&self, store: usize, id: String, at_ms: i64, n: u64) -> Option<Record> {
        if store >= self.stores.len() {
            return None;
        }
        let zone = self.zone(store);
        let at = Timestamp::from_millisecond(at_ms).ok()?.to_zoned(zone);
        let mut rng = rng_for(self.config.seed, &[0x10AD, store as u64, n]);
        let promotion = self.promotion(store, at.date());
        Some(self.transaction(&mut rng, store, id, &at, promotion, Effects::default()))
    }

    /// One transaction: mostly a sale, sometimes a return or a void.
    fn transaction(
        &self,
        rng: &mut ChaCha8Rng,
        store: usize,
        id: String,
        at: &Zoned,
        promotion: Option<&str>,
        effects: Effects,
    ) -> Record {
        let s = &self.stores[store];
        let roll: f64 = rng.random();
        let (return_p, void_p) = if effects.refunds {
            (0.3, 0.45)
        } else {
            (0.02, 0.03)
        };
        let kind = if roll < return_p {
            "return"
        } else if roll < void_p {
            "void"
        } else {
            "sale"
        };
        // Basket size: geometric with mean about 4 (about 10 in a spike hour); a return
        // has one or two lines.
        let more = if effects.big_baskets { 0.9 } else { 0.75 };
        let lines = if kind == "return" {
            rng.random_range(1..=2)
        } else {
            let mut n = 1;
            while n < 40 && rng.random_bool(more) {
                n += 1;
            }
            n
        };
        let mut items = Vec::with_capacity(lines);
        let mut total_cents = 0i64;
        for _ in 0..lines {
            let p = &self.catalog[self.pick_product(rng)];
            let mut quantity: i64 = if rng.random_bool(0.8) {
                1
            } else {
                rng.random_range(2..=4)
            };
            let mut price = p.price_cents;
            if promotion == Some(p.category.as_str()) {
                price = price * 80 / 100;
            }
            if kind == "return" {
                quantity = -quantity;
            }
            total_cents += quantity * price;
            items.push(json!({"itemId": p.sku, "quantity": quantity, "price": money(price)}));
        }
        let mut register = rng.random_range(1..=s.registers_len);
        if effects.silent_register == Some(register) {
            // That register is down: the customer goes to the next one.
            register = register % s.registers_len + 1;
        }
        let payment = *weighted(rng, PAYMENT_METHODS);
        Record {
            kind: RecordKind::Transaction,
            // The timestamp text has whole seconds.
            at_ms: at.timestamp().as_second() * 1000,
            json: json!({
                "transactionId": id,
                "storeId": s.id,
                "timestamp": local_rfc3339(at),
                "items": items,
                "totalAmount": money(total_cents),
                "paymentMethod": payment,
                "kind": kind,
                "registerId": format!("{}-r{}", s.id, register),
                "cashierId": format!("c{}", rng.random_range(1..=12)),
                "currency": s.currency,
            }),
        }
    }
}

fn date_key(date: Date) -> u64 {
    (i64::from(date.year()) * 10_000 + i64::from(date.month()) * 100 + i64::from(date.day())) as u64
}

fn date_id(date: Date) -> String {
    format!("{:04}{:02}{:02}", date.year(), date.month(), date.day())
}

/// Today's date in a store's zone at `now_ms`.
pub fn local_date(chain: &Chain, store: usize, now_ms: i64) -> Date {
    let zone = chain.zone(store);
    Timestamp::from_millisecond(now_ms)
        .map(|t| t.to_zoned(zone).date())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use storesync_protocol::StoreId;
    use storesync_protocol::validate::{Context, Limits, scan_from_json, transaction_from_json};

    fn chain(seed: u64) -> Chain {
        Chain::new(ChainConfig {
            seed,
            stores_len: 5,
            ..ChainConfig::default()
        })
    }

    fn week() -> Vec<Date> {
        let monday = jiff::civil::date(2026, 3, 2);
        (0..7)
            .map(|d| monday.checked_add(jiff::Span::new().days(d)).expect("date"))
            .collect()
    }

    #[test]
    fn same_seed_same_chain_and_days() {
        let (a, b) = (chain(7), chain(7));
        assert_eq!(a.stores(), b.stores());
        assert_eq!(a.catalog(), b.catalog());
        assert_eq!(a.catalog().len(), 2_000);
        for date in week() {
            assert_eq!(a.day(2, date), b.day(2, date));
        }
        assert_eq!(
            a.live(1, 1_700_000_000_000, 1_700_000_060_000, 600.0),
            b.live(1, 1_700_000_000_000, 1_700_000_060_000, 600.0)
        );
        let c = chain(8);
        assert_ne!(a.day(0, week()[1]), c.day(0, week()[1]));
    }

    #[test]
    fn every_record_is_valid() {
        let limits = Limits::default();
        let c = chain(42);
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for store in 0..c.stores().len() {
            let id = StoreId::new(c.stores()[store].id.as_str()).expect("store id");
            let ctx = Context {
                now_ms: i64::MAX / 2,
                limits: &limits,
                store: Some(&id),
            };
            let mut records: Vec<Record> =
                week().into_iter().flat_map(|d| c.day(store, d)).collect();
            records.extend(c.live(store, 1_700_000_000_000, 1_700_003_600_000, 300.0));
            for r in &records {
                match r.kind {
                    RecordKind::Transaction => {
                        let tx = transaction_from_json(&r.json, &ctx)
                            .unwrap_or_else(|e| panic!("{e}: {}", r.json));
                        assert_eq!(tx.timestamp.unix_ms(), r.at_ms);
                        *kinds.entry(r.json["kind"].to_string()).or_default() += 1;
                    }
                    RecordKind::Scan => {
                        scan_from_json(&r.json, &ctx).unwrap_or_else(|e| panic!("{e}: {}", r.json));
                        *kinds.entry(r.json["purpose"].to_string()).or_default() += 1;
                    }
                }
            }
        }
        for kind in ["sale", "return", "void", "receiving", "stockCount"] {
            assert!(
                kinds.get(&format!("\"{kind}\"")).copied().unwrap_or(0) > 0,
                "no {kind} in {kinds:?}"
            );
        }
    }

    #[test]
    fn ids_are_unique_and_days_are_ordered() {
        let c = chain(3);
        let mut ids = std::collections::HashSet::new();
        for store in 0..c.stores().len() {
            for date in week() {
                let day = c.day(store, date);
                assert!(day.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
                for r in day {
                    let id = r.json["transactionId"]
                        .as_str()
                        .or(r.json["scanId"].as_str())
                        .expect("id")
                        .to_owned();
                    assert!(ids.insert(id));
                }
            }
        }
    }

    #[test]
    fn saturday_is_busier_than_monday_and_sunday_is_closed() {
        let c = chain(11);
        let count = |date: Date| -> usize {
            (0..c.stores().len())
                .map(|s| {
                    c.day(s, date)
                        .iter()
                        .filter(|r| r.kind == RecordKind::Transaction)
                        .count()
                })
                .sum()
        };
        let days = week();
        assert!(count(days[5]) > count(days[0]));
        assert_eq!(count(days[6]), 0);
    }

    /// (date, hour index, transactions, sales revenue in cents, refunds and voids).
    type HourFigures = (Date, usize, usize, i64, usize);

    /// The figures of every opening hour of a store over `days` days from 2026-03-02.
    fn hours(c: &Chain, store: usize, days: i64) -> Vec<HourFigures> {
        let monday = jiff::civil::date(2026, 3, 2);
        let mut out = Vec::new();
        for d in 0..days {
            let date = monday.checked_add(jiff::Span::new().days(d)).expect("date");
            let zone = c.zone(store);
            let mut per_hour = vec![(0usize, 0i64, 0usize); HOUR_WEIGHTS.len()];
            for r in c.day(store, date) {
                if r.kind != RecordKind::Transaction {
                    continue;
                }
                let at = Timestamp::from_millisecond(r.at_ms)
                    .expect("ts")
                    .to_zoned(zone.clone());
                let h = usize::try_from(at.hour() - OPEN_HOUR).expect("open hour");
                let cents = (r.json["totalAmount"].as_f64().expect("total") * 100.0).round() as i64;
                let e = &mut per_hour[h];
                e.0 += 1;
                if r.json["kind"] == "sale" {
                    e.1 += cents;
                } else {
                    e.2 += 1;
                }
            }
            for (h, (n, cents, refunds)) in per_hour.into_iter().enumerate() {
                out.push((date, h, n, cents, refunds));
            }
        }
        out
    }

    #[test]
    fn incidents_are_seeded_and_show_in_the_day() {
        let c = chain(21);
        assert_eq!(
            (0..5)
                .map(|s| c.incidents(s, week()[2]))
                .collect::<Vec<_>>(),
            (0..5)
                .map(|s| chain(21).incidents(s, week()[2]))
                .collect::<Vec<_>>()
        );
        let mut kinds = std::collections::BTreeSet::new();
        for store in 0..5 {
            let all = hours(&c, store, 56);
            // The usual of an hour of the week: its median over the days without incidents.
            let usual = |date: Date, h: usize, f: &dyn Fn(&HourFigures) -> f64| {
                let mut v: Vec<f64> = all
                    .iter()
                    .filter(|x| {
                        x.1 == h
                            && x.0.weekday() == date.weekday()
                            && c.incidents(store, x.0).is_empty()
                    })
                    .map(f)
                    .collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            for d in 0..56 {
                let date = jiff::civil::date(2026, 3, 2)
                    .checked_add(jiff::Span::new().days(d))
                    .expect("date");
                for incident in c.incidents(store, date) {
                    let hour_of =
                        |h: usize| *all.iter().find(|x| x.0 == date && x.1 == h).expect("hour");
                    match incident {
                        Incident::RevenueSpike { hour } => {
                            kinds.insert("spike");
                            let x = hour_of(hour).3 as f64;
                            assert!(
                                x > 2.0 * usual(date, hour, &|x| x.3 as f64),
                                "{date} {incident:?}"
                            );
                        }
                        Incident::RevenueDrop { hour } => {
                            kinds.insert("drop");
                            let x = hour_of(hour).2 as f64;
                            assert!(
                                x < 0.4 * usual(date, hour, &|x| x.2 as f64),
                                "{date} {incident:?}"
                            );
                        }
                        Incident::RefundSpike { hour } => {
                            kinds.insert("refunds");
                            let x = hour_of(hour).4 as f64;
                            assert!(
                                x >= 3.0 && x > 4.0 * usual(date, hour, &|x| x.4 as f64).max(1.0),
                                "{date} {incident:?}: {x}"
                            );
                        }
                        Incident::PosOutage {
                            register,
                            from_hour,
                            to_hour,
                        } => {
                            kinds.insert("outage");
                            assert!(from_hour < to_hour && to_hour <= HOUR_WEIGHTS.len());
                            let silent = format!("{}-r{register}", c.stores()[store].id);
                            let zone = c.zone(store);
                            let mut seen_other = false;
                            for r in c
                                .day(store, date)
                                .iter()
                                .filter(|r| r.kind == RecordKind::Transaction)
                            {
                                let at = Timestamp::from_millisecond(r.at_ms)
                                    .expect("ts")
                                    .to_zoned(zone.clone());
                                let h = usize::try_from(at.hour() - OPEN_HOUR).expect("hour");
                                if (from_hour..to_hour).contains(&h) {
                                    assert_ne!(
                                        r.json["registerId"],
                                        silent.as_str(),
                                        "{date} {incident:?}"
                                    );
                                    seen_other = true;
                                }
                            }
                            assert!(seen_other, "the other registers trade during the outage");
                        }
                    }
                }
            }
        }
        assert_eq!(
            kinds.len(),
            4,
            "every kind of incident in 8 weeks of 5 stores: {kinds:?}"
        );
    }

    #[test]
    fn a_silent_register_sends_nothing_live() {
        let c = chain(4);
        let records = c.live_with_silent(0, 1_700_000_000_000, 1_700_000_600_000, 3_000.0, Some(1));
        assert!(records.len() > 100);
        assert!(records.iter().all(|r| r.json["registerId"] != "s001-r1"));
        assert!(
            c.live(0, 1_700_000_000_000, 1_700_000_600_000, 3_000.0)
                .iter()
                .any(|r| r.json["registerId"] == "s001-r1")
        );
    }

    #[test]
    fn gtins_have_valid_check_digits() {
        for p in chain(5).catalog().iter().take(200) {
            storesync_protocol::domain::Gtin::new(p.gtin.as_str()).expect("gtin");
        }
    }
}
