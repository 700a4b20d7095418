//! PostgreSQL-only guarantees: row-level security on every tenant table, the hub's role,
//! partitions and retention.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use storesync_hub::store::Store;
use storesync_hub::store::pg::{PARTITION_WIDTH_MS, PgStore};
use storesync_hub::testing::shared_cluster;
use tokio_postgres::NoTls;

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn loaded(name: &str) -> (PgStore, String, String) {
    let cluster = shared_cluster().unwrap();
    let config = cluster.database(name).await.unwrap();
    let (app, admin) = (config.url.clone(), config.admin_url.clone().unwrap());
    let store = PgStore::connect(config).await.unwrap();
    store.migrate().await.unwrap();
    setup_tenant(&store, "acme", &[("s1", "north", "UTC")]).await;
    setup_tenant(&store, "globex", &[("s1", "north", "UTC")]).await;
    let mut device = Device::new("acme", "s1", "d1", 1);
    let (stream, events, head) = device.run(vec![sale("t1", "s1", T0, &[("sku-1", 2, 150)])]);
    store.commit_events(&stream, &events, head).await.unwrap();
    (store, app, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_table_has_a_forced_policy() {
    let (_store, _app, admin) = loaded("t_policies").await;
    let client = connect(&admin).await;
    let rows = client
        .query(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, \
               (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' \
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 15, "found {} tenant tables", rows.len());
    for row in rows {
        let table: String = row.get(0);
        assert!(
            row.get::<_, bool>(1),
            "{table}: row-level security is not enabled"
        );
        assert!(
            row.get::<_, bool>(2),
            "{table}: row-level security is not forced"
        );
        assert!(row.get::<_, i64>(3) >= 1, "{table}: no policy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_role_owns_nothing_and_cannot_bypass() {
    let (_store, app, _admin) = loaded("t_role").await;
    let client = connect(&app).await;
    let row = client
        .query_one(
            "SELECT rolsuper, rolbypassrls, (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE n.nspname = 'public' AND c.relowner = r.oid) FROM pg_roles r WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert!(!row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i64>(2), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_tenant_setting_nothing_is_visible() {
    let (_store, app, _admin) = loaded("t_unset").await;
    let mut client = connect(&app).await;
    for table in [
        "line_items",
        "transactions",
        "sales_rollups",
        "event_keys",
        "stores",
        "tenants",
    ] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} without a tenant");
    }
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL storesync.tenant_id = 'globex'")
        .await
        .unwrap();
    let n: i64 = tx
        .query_one("SELECT count(*) FROM line_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "another tenant's rows");
    tx.commit().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL storesync.tenant_id = 'acme'")
        .await
        .unwrap();
    let n: i64 = tx
        .query_one("SELECT count(*) FROM line_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // Writing a row for another tenant is refused by the policy's check.
    let err = tx
        .execute(
            "INSERT INTO items (tenant_id, sku, category) VALUES ('globex', 'x', 'y')",
            &[],
        )
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("row-level security"), "{err:?}");
    drop(tx);
    // The setting is LOCAL: gone after the transaction.
    let n: i64 = client
        .query_one("SELECT count(*) FROM line_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_created_ahead_and_dropped_by_retention() {
    let (store, app, admin) = loaded("t_partitions").await;
    let admin_client = connect(&admin).await;
    let partitions = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let q = "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'line_items' ORDER BY 1";
    let before = partitions(admin_client.query(q, &[]).await.unwrap());
    assert!(before.len() >= 12, "{before:?}");
    // The hub's role cannot reach a partition directly.
    let app_client = connect(&app).await;
    let err = app_client
        .query(&format!("SELECT count(*) FROM {}", before[0]), &[])
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("permission denied"), "{err:?}");
    // Nor a rollup partition, nor any partition after migrations ran again (a restart).
    store.migrate().await.unwrap();
    for table in [before[0].as_str(), "sales_rollups_h0", "sales_rollups_h15"] {
        let err = app_client
            .query(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap_err();
        assert!(
            format!("{err:?}").contains("permission denied"),
            "{table}: {err:?}"
        );
    }
    // An event far in the past gets its partition on demand.
    let mut device = Device::new("acme", "s1", "d2", 1);
    let old = T0 - 400 * 86_400_000;
    let (stream, events, head) = device.run(vec![sale("old-1", "s1", old, &[("sku-1", 1, 100)])]);
    store.commit_events(&stream, &events, head).await.unwrap();
    let with_old = partitions(admin_client.query(q, &[]).await.unwrap());
    assert_eq!(with_old.len(), before.len() + 1);
    // Retention drops what ends before the cutoff.
    let cutoff = (old.div_euclid(PARTITION_WIDTH_MS) + 1) * PARTITION_WIDTH_MS;
    let dropped = store.drop_partitions_before(cutoff).await.unwrap();
    assert_eq!(
        dropped, 3,
        "one partition per event table but stock movements, kept for inventory"
    );
    assert_eq!(
        partitions(admin_client.query(q, &[]).await.unwrap()),
        before
    );
}
