//! PostgreSQL-only: store-level rollups live in their own dense tables (schema v3), stay
//! equal to what the stored line items say after ingests, replays and overlapping runs, and
//! the v3 migration moves the rows of a v2 database without changing any figure.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use storesync_hub::store::pg::PgStore;
use storesync_hub::store::{DimKind, Store, granularity_code};
use storesync_hub::testing::shared_cluster;
use storesync_protocol::domain::TransactionKind;
use storesync_protocol::event::EventBody;
use storesync_protocol::rollup::{Granularity, SalesFigures};
use tokio_postgres::NoTls;

/// (granularity, store, bucket) → figures.
type Series = BTreeMap<(i16, String, i64), SalesFigures>;

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Store-level series as the hub serves them, for every stored granularity.
async fn served(store: &dyn Store, tenant_name: &str) -> Series {
    let mut out = Series::new();
    for g in Granularity::STORED {
        let rows = store
            .rollups(
                &tenant(tenant_name),
                &every_bucket(g, DimKind::Store, true, false),
            )
            .await
            .unwrap();
        for r in rows {
            let store = r.store_id.unwrap().as_str().to_owned();
            assert!(
                out.insert((granularity_code(g), store, r.bucket_ms), r.figures)
                    .is_none(),
                "one row per store and bucket"
            );
        }
    }
    out
}

/// Store-level series recomputed in SQL from the stored line items alone: each transaction's
/// lines summed, then bucketed in the store's time zone (minute, hour, day).
async fn recomputed(admin: &tokio_postgres::Client, tenant_name: &str) -> Series {
    let rows = admin
        .query(
            "WITH t AS ( \
               SELECT li.store_id, li.transaction_id, min(li.at_ms) AS at_ms, min(li.kind) AS kind, \
                 sum(li.quantity::bigint * li.price_e4) AS total, sum(li.quantity::bigint) AS units \
               FROM line_items li WHERE li.tenant_id = $1 GROUP BY 1, 2), \
             b AS ( \
               SELECT t.*, g.code, (extract(epoch FROM date_trunc(g.unit, to_timestamp(t.at_ms / 1000.0) \
                 AT TIME ZONE s.time_zone) AT TIME ZONE s.time_zone) * 1000)::bigint AS bucket_ms \
               FROM t JOIN stores s ON s.tenant_id = $1 AND s.store_id = t.store_id \
               CROSS JOIN (VALUES (0::smallint, 'minute'), (1, 'hour'), (2, 'day')) AS g(code, unit)) \
             SELECT code::smallint, store_id, bucket_ms, \
               sum(CASE kind WHEN 0 THEN total WHEN 1 THEN -abs(total) ELSE 0 END)::bigint, \
               sum(CASE kind WHEN 0 THEN units WHEN 1 THEN -abs(units) ELSE 0 END)::bigint, \
               count(*) FILTER (WHERE kind = 0), count(*) FILTER (WHERE kind = 1), \
               coalesce(sum(abs(total)) FILTER (WHERE kind = 1), 0)::bigint, count(*) FILTER (WHERE kind = 2) \
             FROM b GROUP BY 1, 2, 3",
            &[&tenant_name],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            (
                (r.get(0), r.get(1), r.get(2)),
                SalesFigures {
                    revenue_e4: r.get(3),
                    units: r.get(4),
                    transactions: r.get(5),
                    refunds: r.get(6),
                    refund_amount_e4: r.get(7),
                    voids: r.get(8),
                },
            )
        })
        .collect()
}

/// Rows per leaf table of `sales_rollups`, by (table, dim).
async fn placement(admin: &tokio_postgres::Client) -> BTreeMap<(String, i16), i64> {
    admin
        .query(
            "SELECT regexp_replace(tableoid::regclass::text, '_h[0-9]+$', ''), dim, count(*) \
             FROM sales_rollups GROUP BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect()
}

fn ret(id: &str, store: &str, at_ms: i64, lines: &[(&str, i32, i64)]) -> EventBody {
    EventBody::Transaction(txn(
        id,
        store,
        at_ms,
        lines,
        "card",
        TransactionKind::Return,
    ))
}

fn void(id: &str, store: &str, at_ms: i64, lines: &[(&str, i32, i64)]) -> EventBody {
    EventBody::Transaction(txn(id, store, at_ms, lines, "cash", TransactionKind::Void))
}

/// Sales of one store over three days, at hours that fall on other days in some zones.
fn days_of_sales(store: &str, prefix: &str) -> Vec<EventBody> {
    let hour = 3_600_000;
    let mut bodies = Vec::new();
    for n in 0..24 {
        let at = T0 + n * 3 * hour + n * 61_000;
        let id = format!("{prefix}-{n}");
        bodies.push(match n % 6 {
            4 => ret(&id, store, at, &[("sku-2", -1, 999)]),
            5 => void(&id, store, at, &[("sku-3", 2, 500)]),
            _ => sale(
                &id,
                store,
                at,
                &[("sku-1", (n % 3 + 1) as i32, 150), ("sku-4", 1, 1_250)],
            ),
        });
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_level_series_equal_the_line_items_after_replays() {
    let cluster = shared_cluster().unwrap();
    let config = cluster.database("t_rollup_layout").await.unwrap();
    let admin = connect(config.admin_url.as_deref().unwrap()).await;
    let store = PgStore::connect(config).await.unwrap();
    store.migrate().await.unwrap();
    setup_tenant(
        &store,
        "acme",
        &[
            ("s1", "north", "Europe/Paris"),
            ("s2", "south", "America/New_York"),
            ("s3", "south", "UTC"),
        ],
    )
    .await;
    setup_tenant(&store, "globex", &[("s1", "north", "UTC")]).await;

    let mut d1 = Device::new("acme", "s1", "d1", 1);
    let mut d2 = Device::new("acme", "s2", "d2", 1);
    let mut d3 = Device::new("acme", "s3", "d3", 1);
    let mut other = Device::new("globex", "s1", "d1", 1);
    let s1 = days_of_sales("s1", "a");
    let s2 = days_of_sales("s2", "b");
    let (stream1, first, head1) = d1.run(s1[..10].to_vec());
    let (stream2, run2, head2) = d2.run(s2.clone());
    let (stream3, run3, head3) = d3.run(vec![sale("c-1", "s3", T0, &[("sku-1", 1, 100)])]);
    let (stream_other, run_other, head_other) =
        other.run(vec![sale("g-1", "s1", T0, &[("sku-1", 7, 700)])]);
    store.commit_events(&stream1, &first, head1).await.unwrap();
    store.commit_events(&stream2, &run2, head2).await.unwrap();
    store.commit_events(&stream3, &run3, head3).await.unwrap();
    store
        .commit_events(&stream_other, &run_other, head_other)
        .await
        .unwrap();
    // A replay of a whole run, then a run overlapping the stored one and extending it.
    let again = store.commit_events(&stream1, &first, head1).await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 10));
    let (_, rest, head1b) = d1.run(s1[10..].to_vec());
    let mut overlap = first[6..].to_vec();
    overlap.extend(rest);
    let outcome = store
        .commit_events(&stream1, &overlap, head1b)
        .await
        .unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (14, 4));
    let again = store.commit_events(&stream2, &run2, head2).await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 24));

    let expected = recomputed(&admin, "acme").await;
    assert_eq!(
        expected.keys().filter(|(g, _, _)| *g == 2).count(),
        4 + 4 + 1,
        "from T0 (09:00Z) s1 and s2 span four local days, s3 one"
    );
    assert_eq!(served(&store, "acme").await, expected);
    assert_eq!(
        served(&store, "globex").await,
        recomputed(&admin, "globex").await
    );

    // Store-level rows are in their own tables, one per granularity; no other row is there.
    let placed = placement(&admin).await;
    let count = |table: &str, dim: i16| placed.get(&(table.to_owned(), dim)).copied();
    // Acme's rows and globex's one row per granularity.
    let store_rows = |g: i16| expected.keys().filter(|(code, _, _)| *code == g).count() as i64 + 1;
    assert_eq!(count("sales_rollups_store_minute", 0), Some(store_rows(0)));
    assert_eq!(count("sales_rollups_store_hour", 0), Some(store_rows(1)));
    assert_eq!(count("sales_rollups_store_day", 0), Some(store_rows(2)));
    assert!(count("sales_rollups", 1).is_some(), "{placed:?}");
    assert!(
        placed
            .keys()
            .all(|(table, dim)| (*dim == 0) == table.starts_with("sales_rollups_store")),
        "{placed:?}"
    );
}

/// A fresh database owned by a role that is neither superuser nor BYPASSRLS, as in
/// production, so that migrations run under the tables' FORCEd policies: its hub
/// configuration (`admin_url` is the owner), the owner's connection and a superuser's.
async fn owned_database(
    name: &str,
) -> (
    storesync_hub::store::pg::PgConfig,
    tokio_postgres::Client,
    tokio_postgres::Client,
) {
    const OWNER: &str = "storesync_test_owner";
    let cluster = shared_cluster().unwrap();
    let mut config = cluster.database(name).await.unwrap();
    let superuser = connect(config.admin_url.as_deref().unwrap()).await;
    superuser
        .batch_execute(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER}') THEN \
               CREATE ROLE {OWNER} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; END IF; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
             ALTER DATABASE \"{name}\" OWNER TO {OWNER};"
        ))
        .await
        .unwrap();
    config.admin_url = Some(cluster.url(OWNER, name));
    let owner = connect(config.admin_url.as_deref().unwrap()).await;
    (config, owner, superuser)
}

/// A hub at v4 kept item rows by hour; v5 deletes them (they are summed from line items
/// now) even though the owner that migrates is under the tenant policy, and FORCEs the
/// policy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_to_v5_drops_item_hours_under_the_owners_forced_policy() {
    let (config, owner, superuser) = owned_database("t_rollup_v5").await;
    let store = PgStore::connect(config).await.unwrap();
    store.migrate().await.unwrap();
    owner
        .batch_execute(
            "BEGIN; SET LOCAL storesync.tenant_id = 'acme'; \
             INSERT INTO sales_rollups VALUES ('acme', 1, 1, 's1', 'sku-1', 0, 100, 1, 1, 0, 0, 0), \
               ('acme', 2, 1, 's1', 'sku-1', 0, 100, 1, 1, 0, 0, 0); \
             COMMIT; DELETE FROM schema_version WHERE version = 5;",
        )
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let left: Vec<(i16, i16)> = superuser
        .query("SELECT granularity, dim FROM sales_rollups", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(left, vec![(2, 1)], "the day row stays, the hour row goes");
    let forced: bool = superuser
        .query_one(
            "SELECT relforcerowsecurity FROM pg_class WHERE relname = 'sales_rollups'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(forced);
}

/// Every rollup row of `bodies` that a v2 database kept (items by hour included, which
/// schema v5 drops), keyed as the table is.
fn protocol_rows(
    bodies: &[EventBody],
    tz: &str,
) -> BTreeMap<(i16, i16, String, String, i64), SalesFigures> {
    let mut out = BTreeMap::new();
    for (store_id, key, f) in kept_rollup_rows(bodies, tz) {
        let (dim, value) = dim_key(key.dimension);
        out.entry((
            granularity_code(key.granularity),
            dim as i16,
            store_id.as_str().to_owned(),
            value,
            key.bucket_ms,
        ))
        .or_insert_with(SalesFigures::default)
        .add(&f);
    }
    out
}

/// A database at schema v2 (rollups of every dimension in one table hash-partitioned by
/// store), with rows in it, migrated: every row is still served, store-level ones from
/// their own tables, and the moved rows are gone from the old table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_to_v3_moves_store_rows_and_keeps_every_figure() {
    let (config, owner, admin) = owned_database("t_rollup_v3").await;
    owner
        .batch_execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY, applied_ms bigint NOT NULL)",
        )
        .await
        .unwrap();
    owner
        .batch_execute(
            &include_str!("../src/store/schema/pg_v1.sql")
                .replace("{partition}", "PARTITION BY RANGE (at_ms)"),
        )
        .await
        .unwrap();
    owner
        .batch_execute("INSERT INTO schema_version VALUES (1, 0)")
        .await
        .unwrap();
    owner
        .batch_execute(include_str!("../src/store/schema/pg_v2.sql"))
        .await
        .unwrap();
    let mut rows = protocol_rows(&days_of_sales("s1", "a"), "Europe/Paris");
    rows.extend(protocol_rows(&days_of_sales("s2", "b"), "America/New_York"));
    for ((g, dim, store, value, bucket), f) in &rows {
        owner
            .execute(
                "INSERT INTO sales_rollups VALUES ('acme', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    g,
                    dim,
                    store,
                    value,
                    bucket,
                    &f.revenue_e4,
                    &f.units,
                    &f.transactions,
                    &f.refunds,
                    &f.refund_amount_e4,
                    &f.voids,
                ],
            )
            .await
            .unwrap();
    }
    // A hub at v2 had FORCEd the tenant policy on the table, for its owner too.
    owner
        .batch_execute(
            "ALTER TABLE sales_rollups ENABLE ROW LEVEL SECURITY; ALTER TABLE sales_rollups FORCE ROW LEVEL SECURITY; \
             CREATE POLICY tenant_isolation ON sales_rollups \
               USING (tenant_id = current_setting('storesync.tenant_id', true))",
        )
        .await
        .unwrap();
    let store = PgStore::connect(config).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();

    // Items by hour are summed from line items now (this database has none): v5 dropped
    // their rows, and every other row is served as it was.
    let item_hours = |g: i16, dim: i16| g == granularity_code(Granularity::Hour) && dim == 1;
    assert!(rows.keys().any(|k| item_hours(k.0, k.1)));
    rows.retain(|k, _| !item_hours(k.0, k.1));
    let served_rows: BTreeMap<_, _> = served_rollups(&store, "acme", true)
        .await
        .into_iter()
        .filter(|(g, dim, _)| !item_hours(granularity_code(*g), *dim as i16))
        .map(|(g, dim, r)| {
            let key = (
                granularity_code(g),
                dim as i16,
                r.store_id.unwrap().as_str().to_owned(),
                r.value,
                r.bucket_ms,
            );
            (key, r.figures)
        })
        .collect();
    assert_eq!(served_rows, rows);
    let placed = placement(&admin).await;
    let store_level = rows.keys().filter(|k| k.1 == 0).count() as i64;
    let in_store_tables: i64 = placed
        .iter()
        .filter(|((table, _), _)| table.starts_with("sales_rollups_store"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(in_store_tables, store_level, "{placed:?}");
    assert!(
        placed
            .keys()
            .all(|(table, dim)| (*dim == 0) == table.starts_with("sales_rollups_store")),
        "{placed:?}"
    );
    let v3 = admin
        .query_opt("SELECT 1 FROM schema_version WHERE version = 3", &[])
        .await
        .unwrap();
    assert!(v3.is_some(), "migration 3 is recorded");
}
