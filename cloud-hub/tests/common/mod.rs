//! Shared fixtures: event factories and store constructors for both backends.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use storesync_hub::store::pg::PgStore;
use storesync_hub::store::sqlite::SqliteStore;
use storesync_hub::store::{DimKind, RollupQuery, Store, StoreInfo};
use storesync_protocol::domain::{
    AdjustmentSource, Alert, AlertKind, AlertState, Gtin, LineItem, ScanEvent, ScanPurpose,
    Severity, StockAdjustment, Transaction, TransactionKind,
};
use storesync_protocol::event::{Epoch, Event, EventBody, Hash, Sealer, StreamHead, StreamId};
use storesync_protocol::ids::{
    AdjustmentId, AlertId, DeviceId, RegisterId, ScanId, Sku, StoreId, TenantId, TransactionId,
};
use storesync_protocol::money::Money;
use storesync_protocol::rollup::{Dimension, Granularity, RollupKey, SalesFigures, rollup_rows};
use storesync_protocol::time::EventTime;

pub const T0: i64 = 1_794_906_000_000; // 2026-11-17T09:00:00Z

pub fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}
pub fn store_id(s: &str) -> StoreId {
    StoreId::new(s).unwrap()
}

pub fn txn(
    id: &str,
    store: &str,
    at_ms: i64,
    lines: &[(&str, i32, i64)],
    payment: &str,
    kind: TransactionKind,
) -> Transaction {
    let items: Vec<LineItem> = lines
        .iter()
        .map(|(sku, q, price_cents)| LineItem {
            sku: Sku::new(*sku).unwrap(),
            quantity: *q,
            price: Money::from_cents(*price_cents),
        })
        .collect();
    let total = items.iter().fold(Money::ZERO, |a, i| a + i.amount());
    Transaction {
        transaction_id: TransactionId::new(id).unwrap(),
        store_id: store_id(store),
        timestamp: EventTime::from_unix_ms(at_ms, 60),
        items,
        total_amount: total,
        payment_method: payment.into(),
        kind,
        register_id: Some(RegisterId::new("r1").unwrap()),
        cashier_id: None,
        customer_id: None,
        currency: Some("EUR".into()),
        extra: Vec::new(),
    }
}

pub fn sale(id: &str, store: &str, at_ms: i64, lines: &[(&str, i32, i64)]) -> EventBody {
    EventBody::Transaction(txn(id, store, at_ms, lines, "card", TransactionKind::Sale))
}

pub fn scan(
    id: &str,
    store: &str,
    at_ms: i64,
    sku: &str,
    purpose: ScanPurpose,
    qty: i32,
) -> EventBody {
    EventBody::Scan(ScanEvent {
        scan_id: ScanId::new(id).unwrap(),
        store_id: store_id(store),
        gtin: Gtin::new("4006381333931").unwrap(),
        sku: Sku::new(sku).unwrap(),
        purpose,
        quantity: qty,
        timestamp: EventTime::from_unix_ms(at_ms, 0),
        register_id: None,
    })
}

pub fn adjustment(id: &str, store: &str, at_ms: i64, sku: &str, delta: i32) -> EventBody {
    EventBody::Adjustment(StockAdjustment {
        adjustment_id: AdjustmentId::new(id).unwrap(),
        store_id: store_id(store),
        sku: Sku::new(sku).unwrap(),
        delta,
        reason: "correction".into(),
        source: AdjustmentSource::Hq,
        timestamp: EventTime::from_unix_ms(at_ms, 0),
    })
}

pub fn alert(id: &str, store: &str, at_ms: i64, state: AlertState) -> EventBody {
    EventBody::Alert(Alert {
        alert_id: AlertId::new(id).unwrap(),
        kind: AlertKind::LowStock,
        severity: Severity::Warning,
        store_id: store_id(store),
        subject: "sku-1".into(),
        raised_at: EventTime::from_unix_ms(at_ms, 0),
        state,
        changed_by: None,
        message: "stock is low".into(),
        facts: vec![("on_hand_units".into(), 2)],
    })
}

/// A device of a store, sealing events.
pub struct Device {
    pub sealer: Sealer,
}

impl Device {
    pub fn new(tenant_name: &str, store: &str, device: &str, epoch: u64) -> Device {
        Device {
            sealer: Sealer::new(
                tenant(tenant_name),
                store_id(store),
                DeviceId::new(device).unwrap(),
                Epoch(epoch),
                [Hash::ZERO; 3],
            ),
        }
    }

    /// Seals bodies of one class into a run: (stream, events, new head).
    pub fn run(&mut self, bodies: Vec<EventBody>) -> (StreamId, Vec<Event>, StreamHead) {
        let class = bodies[0].class();
        let events: Vec<Event> = bodies.into_iter().map(|b| self.sealer.seal(b)).collect();
        (self.sealer.stream(class), events, self.sealer.head(class))
    }
}

pub async fn setup_tenant(store: &dyn Store, tenant_name: &str, stores: &[(&str, &str, &str)]) {
    store
        .create_tenant(&tenant(tenant_name), tenant_name)
        .await
        .unwrap();
    for (id, region, tz) in stores {
        store
            .upsert_store(
                &tenant(tenant_name),
                &StoreInfo {
                    store_id: store_id(id),
                    name: format!("Store {id}"),
                    region: (*region).into(),
                    time_zone: (*tz).into(),
                },
            )
            .await
            .unwrap();
    }
}

pub async fn pg_store(name: &str) -> Arc<dyn Store> {
    let cluster = storesync_hub::testing::shared_cluster().expect("test cluster");
    let config = cluster.database(name).await.expect("database");
    let store = PgStore::connect(config).await.expect("connect");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

pub async fn sqlite_store(_name: &str) -> Arc<dyn Store> {
    let store = SqliteStore::in_memory().await.expect("sqlite");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

/// Generates one test per backend for each suite function `fn(Arc<dyn Store>)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = $crate::common::pg_store(concat!("t_", stringify!($name))).await;
                    super::$name(store).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = $crate::common::sqlite_store(stringify!($name)).await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

/// How the hub's rollup tables key a dimension: its kind and value (`""` for the store).
pub fn dim_key(dimension: Dimension) -> (DimKind, String) {
    match dimension {
        Dimension::Store => (DimKind::Store, String::new()),
        Dimension::Item(s) => (DimKind::Item, s.as_str().to_owned()),
        Dimension::Payment(p) => (DimKind::Payment, p),
        Dimension::Register(r) => (DimKind::Register, r.as_str().to_owned()),
    }
}

/// A read of every bucket of `dim` at `granularity` in all stores, buckets kept apart.
pub fn every_bucket(
    granularity: Granularity,
    dim: DimKind,
    by_store: bool,
    by_value: bool,
) -> RollupQuery {
    RollupQuery {
        granularity,
        dim,
        from_ms: 0,
        to_ms: i64::MAX,
        stores: None,
        values: None,
        by_store,
        by_zone: false,
        by_value,
        by_category: false,
        by_bucket: true,
        limit: None,
    }
}

/// Every rollup row `store` serves for `tenant`, at every stored granularity and dimension,
/// every bucket apart, by store when `by_store`.
pub async fn served_rollups(
    store: &dyn Store,
    tenant: &str,
    by_store: bool,
) -> Vec<(Granularity, DimKind, storesync_hub::store::RollupRow)> {
    let tenant = storesync_protocol::ids::TenantId::new(tenant).unwrap();
    let mut out = Vec::new();
    for g in Granularity::STORED {
        for dim in [
            DimKind::Store,
            DimKind::Item,
            DimKind::Payment,
            DimKind::Register,
        ] {
            let query = every_bucket(g, dim, by_store, true);
            for row in store.rollups(&tenant, &query).await.unwrap() {
                out.push((g, dim, row));
            }
        }
    }
    out
}

/// The protocol's own rollup rows of `bodies`' transactions, with their store, for the
/// (granularity, dimension) pairs the hub serves: minute rows by store and payment only.
pub fn kept_rollup_rows(bodies: &[EventBody], tz: &str) -> Vec<(StoreId, RollupKey, SalesFigures)> {
    let tz = jiff::tz::TimeZone::get(tz).unwrap();
    let mut out = Vec::new();
    for body in bodies {
        if let EventBody::Transaction(t) = body {
            for (key, f) in rollup_rows(t, &tz) {
                if storesync_hub::ingest::served(key.granularity, &key.dimension) {
                    out.push((t.store_id.clone(), key, f));
                }
            }
        }
    }
    out
}
