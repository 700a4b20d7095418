//! The web API through `oneshot`: tokens, the role × tenant matrix over every route, limits.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::Value;
use storesync_hub::api::routes::{Access, ROUTES};
use storesync_hub::api::{AppState, app};
use storesync_hub::auth::{self, Caller, HashCost, Issuer, VerifyKey};
use storesync_hub::cache::Cache;
use storesync_hub::config::{AuthConfig, LimitsConfig};
use storesync_hub::store::{Principal, Role, Store};
use storesync_protocol::domain::AlertState;
use storesync_protocol::ids::StoreId;
use tower::ServiceExt;

const CHEAP: HashCost = HashCost {
    memory_kib: 64,
    iterations: 1,
};

struct Hub {
    router: Router,
    issuer: Issuer,
    state: AppState,
}

async fn hub_with(store: Arc<dyn Store>, limits: LimitsConfig) -> Hub {
    setup_tenant(
        &*store,
        "acme",
        &[
            ("s1", "north", "Europe/Paris"),
            ("s2", "south", "Europe/Paris"),
        ],
    )
    .await;
    setup_tenant(
        &*store,
        "globex",
        &[("s1", "west", "UTC"), ("s9", "west", "UTC")],
    )
    .await;
    let mut d1 = Device::new("acme", "s1", "d1", 1);
    let mut d2 = Device::new("acme", "s2", "d2", 1);
    let mut g1 = Device::new("globex", "s9", "g1", 1);
    for (device, store_name) in [(&mut d1, "s1"), (&mut d2, "s2")] {
        let (st, ev, h) = device.run(vec![
            sale(
                &format!("{store_name}-t1"),
                store_name,
                T0,
                &[("sku-1", 2, 150), ("sku-2", 1, 999)],
            ),
            sale(
                &format!("{store_name}-t2"),
                store_name,
                T0 + 3_600_000,
                &[("sku-1", 1, 150)],
            ),
        ]);
        store.commit_events(&st, &ev, h).await.unwrap();
        let (st, ev, h) = device.run(vec![alert(
            &format!("al-{store_name}"),
            store_name,
            T0,
            AlertState::Open,
        )]);
        store.commit_events(&st, &ev, h).await.unwrap();
    }
    let (st, ev, h) = g1.run(vec![alert("al-g", "s9", T0, AlertState::Open)]);
    store.commit_events(&st, &ev, h).await.unwrap();
    let secret_hash = auth::hash_secret("correct horse", CHEAP).unwrap();
    for (name, role, stores) in [
        ("ann", Role::Admin, vec![]),
        ("ana", Role::Analyst, vec![]),
        ("max", Role::StoreManager, vec!["s1"]),
    ] {
        store
            .upsert_principal(
                &tenant("acme"),
                &Principal {
                    name: name.into(),
                    is_client: false,
                    secret_hash: secret_hash.clone(),
                    role,
                    stores: stores
                        .into_iter()
                        .map(|s| StoreId::new(s).unwrap())
                        .collect(),
                },
            )
            .await
            .unwrap();
    }
    store
        .upsert_principal(
            &tenant("acme"),
            &Principal {
                name: "etl".into(),
                is_client: true,
                secret_hash,
                role: Role::Analyst,
                stores: vec![],
            },
        )
        .await
        .unwrap();
    let issuer = Issuer::from_pem(
        &auth::generate_signing_key_pem().unwrap(),
        "storesync-hub",
        "storesync-api",
    )
    .unwrap();
    let rsa_public = include_str!("fixtures/rsa-test-public.pem");
    let external = vec![VerifyKey {
        kid: None,
        algorithm: jsonwebtoken::Algorithm::RS256,
        key: auth::key_from_pem(jsonwebtoken::Algorithm::RS256, rsa_public).unwrap(),
        issuer: "corp-sso".into(),
        audience: "storesync".into(),
        tenant: Some(tenant("acme")),
    }];
    let verifier = AppState::verifier_for(&issuer, external, 5).unwrap();
    let auth_config = AuthConfig {
        hash_cost: CHEAP,
        ..AuthConfig::default()
    };
    let state = AppState::new(
        store,
        issuer.clone(),
        verifier,
        auth_config,
        limits,
        Cache::new(1000, Duration::from_secs(60)),
    );
    Hub {
        router: app(state.clone()),
        issuer,
        state,
    }
}

/// Limits with rate limits out of a test's way.
fn open_limits() -> LimitsConfig {
    LimitsConfig {
        rate_per_s: 10_000.0,
        rate_burst: 10_000,
        ..LimitsConfig::default()
    }
}

async fn hub() -> Hub {
    hub_with(sqlite_store("api").await, open_limits()).await
}

/// [`hub`] on PostgreSQL, in database `name` of the shared test cluster.
async fn pg_hub(name: &str) -> Hub {
    hub_with(pg_store(name).await, open_limits()).await
}

fn token(hub: &Hub, tenant_name: &str, role: Role, stores: &[&str]) -> String {
    let caller = Caller {
        tenant: tenant(tenant_name),
        subject: format!("{}-user", role.as_str()),
        role,
        stores: stores.iter().map(|s| StoreId::new(*s).unwrap()).collect(),
    };
    hub.issuer
        .issue(&caller, (storesync_hub::store::now_ms() / 1000) as u64, 300)
        .unwrap()
}

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let response = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let is_stream = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
    if is_stream {
        return (status, Value::Null);
    }
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn form(router: &Router, body: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri("/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A concrete URI for a route, aimed at store s2 / its alert (not the manager's store).
fn uri_for(path: &str, other_store: bool) -> String {
    let store = if other_store { "s2" } else { "s1" };
    path.replace("{store_id}", store)
        .replace("{alert_id}", &format!("al-{store}"))
        .replace("{view_id}", "v1")
        .replace("{task_id}", "task-1")
        .replace("{sku}", "sku-1")
        .replace("{name}", "lowStockDefault")
}

#[tokio::test]
async fn every_route_is_documented_and_routed() {
    let hub = hub().await;
    let (status, doc) = call(&hub.router, "GET", "/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    for route in ROUTES {
        assert!(
            doc["paths"][route.path][route.method.to_lowercase()].is_object(),
            "{} {} missing from OpenAPI",
            route.method,
            route.path
        );
        let (status, _) = call(&hub.router, route.method, &uri_for(route.path, false), None).await;
        let expected_unauth = matches!(route.access, Access::Roles(_));
        if expected_unauth {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{} {}",
                route.method,
                route.path
            );
        } else {
            assert_ne!(
                status,
                StatusCode::NOT_FOUND,
                "{} {} is not routed",
                route.method,
                route.path
            );
        }
    }
    let (status, _) = call(&hub.router, "GET", "/api/v1/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&hub.router, "GET", "/api/docs", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn role_and_tenant_matrix_over_every_route() {
    role_and_tenant_matrix(hub().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_and_tenant_matrix_over_every_route_on_postgres() {
    role_and_tenant_matrix(pg_hub("t_api_matrix").await).await;
}

/// Routes that need a body: an allowed caller sending none gets 400.
const BODY_ROUTES: &[&str] = &[
    "/api/v1/users",
    "/api/v1/stores/{store_id}/adjustments",
    "/api/v1/stores/{store_id}/tasks",
    "/api/v1/transfers",
    "/api/v1/catalog/{sku}",
    "/api/v1/alert-rules/{name}",
];

/// Records a contact of acme's `device` of `store_name` at `at_ms` reporting `backlog`.
async fn contact(store: &dyn Store, store_name: &str, device: &str, at_ms: i64, backlog: u64) {
    let contact = storesync_hub::store::DeviceContact {
        now_ms: at_ms,
        backlog,
        clock_skew_ms: 0,
    };
    store
        .record_contact(
            &tenant("acme"),
            &StoreId::new(store_name).unwrap(),
            &storesync_protocol::ids::DeviceId::new(device).unwrap(),
            &contact,
        )
        .await
        .unwrap();
}

/// Store `s1` and `s2` of acme fall silent: the hub raises its not-syncing alerts, which the
/// matrix then reaches like any store's alert.
async fn raise_fleet_alerts(store: &dyn Store) {
    use storesync_hub::fleet::{FleetOptions, check_not_syncing};
    // Commits count as contact at the hub's clock: the stores last synced now.
    let now = storesync_hub::store::now_ms();
    for (store_name, device) in [("s1", "d1"), ("s2", "d2")] {
        contact(store, store_name, device, now, 0).await;
    }
    let report = check_not_syncing(
        store,
        &tenant("acme"),
        &FleetOptions::default(),
        now + 3_600_000,
    )
    .await
    .unwrap();
    assert_eq!(report.raised, 2);
}

async fn role_and_tenant_matrix(hub: Hub) {
    raise_fleet_alerts(&**hub.state.store()).await;
    for store_name in ["s1", "s2"] {
        storesync_hub::docs::edit(
            &**hub.state.store(),
            &tenant("acme"),
            &storesync_hub::store::docs::store_doc_key(&StoreId::new(store_name).unwrap()),
            |doc| storesync_protocol::docs::create_task(doc, "task-1", "count the till", "hq", T0),
        )
        .await
        .unwrap();
    }
    let roles = [
        (Role::Admin, vec![]),
        (Role::Analyst, vec![]),
        (Role::StoreManager, vec!["s1"]),
    ];
    for route in ROUTES {
        let Access::Roles(allowed) = route.access else {
            continue;
        };
        for (role, stores) in &roles {
            let t = token(&hub, "acme", *role, stores);
            // Routes naming an alert run for a store's own alert and for the hub's fleet
            // alert of the same store.
            let fleet_too = route.path.contains("{alert_id}");
            for (other_store, fleet) in [(false, false), (true, false), (false, true), (true, true)]
            {
                if fleet && !fleet_too {
                    continue;
                }
                let mut uri = uri_for(route.path, other_store);
                if fleet {
                    uri = uri.replace("/al-", "/hub-not-syncing-");
                }
                let has_param = route.path.contains('{');
                if other_store && !has_param {
                    if !route.scoped || route.path.ends_with("/ws") {
                        continue;
                    }
                    uri.push_str("?stores=s2");
                }
                let (status, body) = call(&hub.router, route.method, &uri, Some(&t)).await;
                let what = format!("{role:?} {} {uri}", route.method);
                if !allowed.contains(role) {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
                } else if *role == Role::StoreManager && other_store && route.scoped {
                    assert_eq!(status, StatusCode::NOT_FOUND, "{what}: {body}");
                    assert_eq!(body["message"], "not found", "{what}: nothing leaks");
                } else if route.path.ends_with("/ws") {
                    // No upgrade headers under oneshot: refused by the upgrade, after auth.
                    assert!(
                        status.is_client_error() && ![401, 403, 404].contains(&status.as_u16()),
                        "{what}: {status}"
                    );
                } else if (BODY_ROUTES.contains(&route.path) && route.method != "GET")
                    || route.method == "PUT"
                {
                    assert_eq!(
                        status,
                        StatusCode::BAD_REQUEST,
                        "{what}: empty body is refused"
                    );
                } else {
                    assert!(status.is_success(), "{what}: {status} {body}");
                }
            }
        }
        // Another tenant's admin: acme's stores and alerts do not exist for it. (Saved views
        // belong to their owner, not to a store: their isolation is tested in web_ui.rs; the
        // catalog and alert rules are the caller's own tenant's.)
        if (route.path.contains("{store_id}") || route.path.contains("{alert_id}") || route.scoped)
            && !route.path.starts_with("/api/v1/views")
        {
            let t = token(&hub, "globex", Role::Admin, &[]);
            let mut uri = uri_for(route.path, true);
            if !route.path.contains('{') {
                if route.path.ends_with("/ws") {
                    continue;
                }
                uri.push_str("?stores=s2");
            }
            let fleet_uri = uri.replace("/al-", "/hub-not-syncing-");
            for uri in [uri, fleet_uri] {
                let (status, body) = call(&hub.router, route.method, &uri, Some(&t)).await;
                assert_eq!(
                    status,
                    StatusCode::NOT_FOUND,
                    "globex admin {} {uri}: {body}",
                    route.method
                );
            }
        }
    }
}

#[tokio::test]
async fn manager_sees_only_assigned_stores_and_tenant_data_stays_apart() {
    let hub = hub().await;
    let max = token(&hub, "acme", Role::StoreManager, &["s1"]);
    let (_, stores) = call(&hub.router, "GET", "/api/v1/stores", Some(&max)).await;
    let ids: Vec<&str> = stores["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["storeId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s1"]);
    let (_, alerts) = call(&hub.router, "GET", "/api/v1/alerts", Some(&max)).await;
    assert_eq!(alerts["items"].as_array().unwrap().len(), 1);
    let from = T0 - 86_400_000;
    let to = T0 + 86_400_000;
    let uri = format!("/api/v1/sales/series?bucket=day&group_by=store&from={from}&to={to}");
    let (_, series) = call(&hub.router, "GET", &uri, Some(&max)).await;
    let groups: Vec<&str> = series["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["s1"]);
    let admin = token(&hub, "acme", Role::Admin, &[]);
    let (_, series) = call(&hub.router, "GET", &uri, Some(&admin)).await;
    assert_eq!(series["series"].as_array().unwrap().len(), 2);
    let globex = token(&hub, "globex", Role::Admin, &[]);
    let (_, series) = call(&hub.router, "GET", &uri, Some(&globex)).await;
    assert!(series["series"].as_array().unwrap().is_empty());
    let (_, alerts) = call(&hub.router, "GET", "/api/v1/alerts", Some(&globex)).await;
    let ids: Vec<&str> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alertId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["al-g"]);
}

/// A series says, per store, up to when the hub holds everything, and lists the stores not
/// complete up to its end: a device's newest event, or its last contact when it reported an
/// empty backlog.
#[tokio::test]
async fn series_watermarks_list_the_stores_behind() {
    let hub = hub().await;
    let admin = token(&hub, "acme", Role::Admin, &[]);
    let from = T0 - 86_400_000;
    let to = T0 + 86_400_000;
    let series = |to: i64| {
        let uri = format!("/api/v1/sales/series?bucket=day&group_by=region&from={from}&to={to}");
        let router = hub.router.clone();
        let admin = admin.clone();
        async move { call(&router, "GET", &uri, Some(&admin)).await.1 }
    };
    let body = series(to).await;
    assert_eq!(
        body["watermarks"],
        serde_json::json!([
            {"completeUpTo": "2026-11-17T10:00:00Z", "storeId": "s1"},
            {"completeUpTo": "2026-11-17T10:00:00Z", "storeId": "s2"},
        ]),
        "{body}"
    );
    assert_eq!(body["storesBehind"], serde_json::json!(["s1", "s2"]));
    // s1's device reports an empty backlog: s1 is complete up to that contact.
    contact(&**hub.state.store(), "s1", "d1", to + 1_000, 0).await;
    // (Another `to`: the first answer is cached.)
    let body = series(to - 1).await;
    assert_eq!(body["storesBehind"], serde_json::json!(["s2"]), "{body}");
    assert_eq!(
        body["watermarks"][0]["completeUpTo"],
        "2026-11-18T09:00:01Z"
    );
}

/// The stores list shows, per device, whether it is connected (a contact within 30 s) and
/// its lag, and per store whether any device is connected.
#[tokio::test]
async fn store_status_shows_each_devices_connection_and_lag() {
    let hub = hub().await;
    let admin = token(&hub, "acme", Role::Admin, &[]);
    let now = storesync_hub::store::now_ms();
    for (store_name, device, seen, backlog) in
        [("s1", "d1", now - 5_000, 0), ("s2", "d2", now - 120_000, 3)]
    {
        contact(&**hub.state.store(), store_name, device, seen, backlog).await;
    }
    let (status, body) = call(&hub.router, "GET", "/api/v1/stores", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    let store = |id: &str| {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["storeId"] == id)
            .cloned()
            .unwrap()
    };
    let s1 = store("s1");
    assert_eq!(s1["connected"], true, "{s1}");
    assert_eq!(s1["devices"][0]["connected"], true, "{s1}");
    // Backlog 0 at the contact: complete up to it, 5 s behind.
    let lag = s1["devices"][0]["lagMs"].as_i64().unwrap();
    assert!((5_000..60_000).contains(&lag), "{s1}");
    let s2 = store("s2");
    assert_eq!(s2["connected"], false, "{s2}");
    assert_eq!(s2["devices"][0]["connected"], false, "{s2}");
    // A backlog at the last contact: complete only up to its newest committed event.
    let lag = s2["devices"][0]["lagMs"].as_i64().unwrap();
    assert!(lag > 120_000, "{s2}");
}

#[tokio::test]
async fn series_figures_grouping_csv_and_cache() {
    series_figures(hub().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_figures_grouping_csv_and_cache_on_postgres() {
    series_figures(pg_hub("t_api_series").await).await;
}

/// Puts `sku` of acme in `category` through the store, as a catalog edit does.
async fn set_category(hub: &Hub, sku: &str, category: &str) {
    hub.state
        .store()
        .set_item_category(
            &tenant("acme"),
            &storesync_protocol::ids::Sku::new(sku).unwrap(),
            category,
        )
        .await
        .unwrap();
}

async fn series_figures(hub: Hub) {
    let admin = token(&hub, "acme", Role::Admin, &[]);
    let from = T0 - 86_400_000;
    let to = T0 + 86_400_000;
    let (status, series) = call(
        &hub.router,
        "GET",
        &format!("/api/v1/sales/series?bucket=hour&from={from}&to={to}"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{series}");
    let points = series["series"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["revenue"], 25.98); // two stores × (2 × 1.50 + 9.99)
    assert_eq!(points[0]["transactions"], 2);
    let regions = || async {
        let (_, by_region) = call(
            &hub.router,
            "GET",
            &format!("/api/v1/sales/series?bucket=week&group_by=region&from={from}&to={to}"),
            Some(&admin),
        )
        .await;
        by_region["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["group"].as_str().unwrap().to_owned())
            .collect::<Vec<String>>()
    };
    assert_eq!(regions().await, ["north", "south"]);
    // A store moved to another region, through the store as `storesync-hub store add` does:
    // the cached series and the store list it was grouped with go.
    let invalidation = hub.state.spawn_invalidation();
    hub.state
        .store()
        .upsert_store(
            &tenant("acme"),
            &storesync_hub::store::StoreInfo {
                store_id: storesync_protocol::ids::StoreId::new("s1").unwrap(),
                name: "s1".into(),
                region: "west".into(),
                time_zone: "Europe/Paris".into(),
            },
        )
        .await
        .unwrap();
    let mut now = regions().await;
    for _ in 0..50 {
        if now != ["north", "south"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        now = regions().await;
    }
    assert_eq!(now, ["south", "west"]);
    invalidation.abort();
    set_category(&hub, "sku-2", "drinks").await;
    let (_, by_cat) = call(
        &hub.router,
        "GET",
        &format!("/api/v1/sales/series?bucket=day&group_by=category&from={from}&to={to}"),
        Some(&admin),
    )
    .await;
    let cats: Vec<&str> = by_cat["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(cats, ["drinks", "uncategorized"]);
    // Minute buckets: kept by store and payment method, refused by item with a reason.
    let (status, minutes) = call(
        &hub.router,
        "GET",
        &format!("/api/v1/sales/series?bucket=minute&group_by=payment&from={from}&to={to}"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{minutes}");
    let revenue: f64 = minutes["series"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["points"].as_array().unwrap())
        .map(|p| p["revenue"].as_f64().unwrap())
        .sum();
    let hourly: f64 = points.iter().map(|p| p["revenue"].as_f64().unwrap()).sum();
    assert!((revenue - hourly).abs() < 1e-9, "{minutes}");
    let (status, refused) = call(
        &hub.router,
        "GET",
        &format!("/api/v1/sales/series?bucket=minute&group_by=item&from={from}&to={to}"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().starts_with("bucket:"),
        "{refused}"
    );
    // CSV of the same series.
    let req = Request::builder()
        .uri(format!(
            "/api/v1/sales/series.csv?bucket=hour&from={from}&to={to}"
        ))
        .header("authorization", format!("Bearer {admin}"))
        .body(Body::empty())
        .unwrap();
    let response = hub.router.clone().oneshot(req).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let csv = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(csv.starts_with("group,bucket_start,revenue"), "{csv}");
    assert_eq!(csv.lines().count(), 3);
    // Cached until ingest touches the tenant.
    let uri = format!("/api/v1/sales/top-items?from={from}&to={to}");
    let get = |uri: String| {
        let router = hub.router.clone();
        let admin = admin.clone();
        async move {
            let req = Request::builder()
                .uri(uri)
                .header("authorization", format!("Bearer {admin}"))
                .body(Body::empty())
                .unwrap();
            let r = router.oneshot(req).await.unwrap();
            let hit = r.headers()["x-cache"].to_str().unwrap().to_owned();
            let body: Value = serde_json::from_slice(
                &axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap(),
            )
            .unwrap();
            (hit, body)
        }
    };
    let _invalidation = hub.state.spawn_invalidation();
    let (first, top) = get(uri.clone()).await;
    assert_eq!(first, "miss");
    assert_eq!(top["items"][0]["sku"], "sku-2");
    assert_eq!(get(uri.clone()).await.0, "hit");
    let mut device = Device::new("acme", "s1", "d9", 1);
    let (st, ev, h) = device.run(vec![sale("big", "s1", T0, &[("sku-7", 100, 1000)])]);
    hub.state.store().commit_events(&st, &ev, h).await.unwrap();
    let mut waited = 0;
    while !hub.state.cache().is_empty() && waited < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let (again, top) = get(uri).await;
    assert_eq!(again, "miss");
    assert_eq!(top["items"][0]["sku"], "sku-7");
    // A catalog change (a write of the tenant document) invalidates too: a series by
    // category follows a recategorized item.
    let by_category =
        format!("/api/v1/sales/series?bucket=day&group_by=category&from={from}&to={to}");
    let groups = |series: &Value| -> Vec<String> {
        series["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["group"].as_str().unwrap().to_owned())
            .collect()
    };
    // The sale above also raised alerts, whose changes may still be on their way to the
    // cache: let them land before the series is cached.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, series) = get(by_category.clone()).await;
    assert_eq!(groups(&series), ["drinks", "uncategorized"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(by_category.clone()).await.0, "hit");
    let (status, item) = call_with_body(
        &hub.router,
        "PUT",
        "/api/v1/catalog/sku-2",
        &admin,
        &serde_json::json!({"name": "Cola", "category": "snacks", "price": 9.99, "reorderThreshold": 5})
            .to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{item}");
    let mut waited = 0;
    while !hub.state.cache().is_empty() && waited < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let (again, series) = get(by_category.clone()).await;
    assert_eq!(again, "miss");
    assert_eq!(groups(&series), ["snacks", "uncategorized"]);
    // The catalog table itself announces a change: a series computed between the document
    // write (which invalidates) and the catalog's commit is not kept. (The edit above sent
    // two changes: let both land before the series is cached again.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    get(by_category.clone()).await;
    assert_eq!(get(by_category.clone()).await.0, "hit");
    set_category(&hub, "sku-2", "drinks").await;
    let mut waited = 0;
    while !hub.state.cache().is_empty() && waited < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let (again, series) = get(by_category).await;
    assert_eq!(again, "miss");
    assert_eq!(groups(&series), ["drinks", "uncategorized"]);
}

/// Top items over any range are the items' sales in the hours that start in it, in each
/// store's time zone: whole local days come from day rows and the hours around them from
/// line items, and together they give what summing every hour gives, for stores in zones a
/// quarter or half hour off UTC, a scope of one zone or several, and ranges of hours or days,
/// across daylight-saving changes, starting at a local midnight or inside an hour.
async fn top_items_sum_the_hours_of_the_range(hub: Hub) {
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    use storesync_protocol::domain::TransactionKind;
    use storesync_protocol::event::EventBody;
    use storesync_protocol::rollup::{Dimension, Granularity, SalesFigures, rollup_rows};

    const HOUR: i64 = 3_600_000;
    let stores = [
        ("z1", "Europe/Paris"),
        ("z2", "Asia/Kathmandu"),
        ("z3", "America/St_Johns"),
    ];
    let regions: Vec<(&str, &str, &str)> = stores.iter().map(|(s, z)| (*s, "north", *z)).collect();
    setup_tenant(hub.state.store().as_ref(), "zoned", &regions).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut hours: Vec<(&str, String, i64, SalesFigures)> = Vec::new();
    for (n, (store_id, zone)) in stores.iter().enumerate() {
        let tz = jiff::tz::TimeZone::get(zone).unwrap();
        let mut bodies = Vec::new();
        for i in 0..160 {
            let at = T0 + rng.random_range(-26 * 24 * HOUR..24 * HOUR);
            let kind = if i % 9 == 0 {
                TransactionKind::Return
            } else {
                TransactionKind::Sale
            };
            let sign = if kind == TransactionKind::Return {
                -1
            } else {
                1
            };
            let sku = format!("sku-{}", rng.random_range(0..8));
            let line = [(
                sku.as_str(),
                sign * rng.random_range(1..4),
                rng.random_range(100..900),
            )];
            let t = txn(
                &format!("{store_id}-{i}"),
                store_id,
                at,
                &line,
                "card",
                kind,
            );
            for (key, f) in rollup_rows(&t, &tz) {
                if let (Granularity::Hour, Dimension::Item(sku)) = (key.granularity, key.dimension)
                {
                    hours.push((*store_id, sku.as_str().to_owned(), key.bucket_ms, f));
                }
            }
            bodies.push(EventBody::Transaction(t));
        }
        let mut device = Device::new("zoned", store_id, &format!("zd{n}"), 1);
        let (stream, events, head) = device.run(bodies);
        hub.state
            .store()
            .commit_events(&stream, &events, head)
            .await
            .unwrap();
    }
    let analyst = token(&hub, "zoned", Role::Analyst, &[]);
    // Paris leaves summer time at 2026-10-25T01:00Z (its midnights until then are at
    // 22:00Z), St John's at 2026-11-01T04:30Z.
    let paris_change = 1_792_890_000_000;
    let st_johns_change = 1_793_507_400_000;
    let ranges = [
        (paris_change - 27 * HOUR, st_johns_change + 20 * HOUR),
        (
            paris_change - 50 * HOUR - 15 * 60_000,
            paris_change + 3 * HOUR,
        ),
        (T0 - 27 * 24 * HOUR, T0 + 2 * 24 * HOUR),
        (
            T0 - 8 * 24 * HOUR + 17 * 60_000,
            T0 - 24 * HOUR + 41 * 60_000,
        ),
        (T0 - 10 * 24 * HOUR, T0 + 2 * 24 * HOUR),
        (T0 - 5 * HOUR - 15 * 60_000, T0 + 2 * HOUR),
        (
            T0 - 3 * 24 * HOUR - 30 * 60_000,
            T0 - 24 * HOUR - 45 * 60_000,
        ),
    ];
    let scopes: [&[&str]; 3] = [&[], &["z1"], &["z2", "z3"]];
    let mut compared = 0;
    for (from, to) in ranges {
        for scope in scopes {
            let mut expected: BTreeMap<String, SalesFigures> = BTreeMap::new();
            for (store_id, sku, bucket, f) in &hours {
                if *bucket >= from && *bucket < to && (scope.is_empty() || scope.contains(store_id))
                {
                    expected.entry(sku.clone()).or_default().add(f);
                }
            }
            let filter = if scope.is_empty() {
                String::new()
            } else {
                format!("&stores={}", scope.join(","))
            };
            let uri = format!("/api/v1/sales/top-items?from={from}&to={to}&limit=100{filter}");
            let (status, body) = call(&hub.router, "GET", &uri, Some(&analyst)).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            let got: BTreeMap<String, (i64, i64, i64)> = body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| {
                    let cents = (item["revenue"].as_f64().unwrap() * 100.0).round() as i64;
                    let units = item["units"].as_i64().unwrap();
                    let refunds = item["refunds"].as_i64().unwrap();
                    (
                        item["sku"].as_str().unwrap().to_owned(),
                        (cents, units, refunds),
                    )
                })
                .collect();
            let want: BTreeMap<String, (i64, i64, i64)> = expected
                .iter()
                .map(|(sku, f)| (sku.clone(), (f.revenue_e4 / 100, f.units, f.refunds)))
                .collect();
            assert_eq!(got, want, "{uri}");
            compared += want.len();
        }
    }
    assert!(compared > 60, "{compared} items compared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_items_sum_the_hours_of_the_range_on_sqlite() {
    top_items_sum_the_hours_of_the_range(hub().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_items_sum_the_hours_of_the_range_on_postgres() {
    top_items_sum_the_hours_of_the_range(pg_hub("t_api_top_items").await).await;
}

#[tokio::test]
async fn basket_with_no_sales_has_no_nan() {
    let hub = hub().await;
    let admin = token(&hub, "acme", Role::Admin, &[]);
    let (status, body) = call(
        &hub.router,
        "GET",
        "/api/v1/sales/basket?from=1000&to=2000",
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["averageBasketValue"].is_null());
    assert!(body["averageBasketUnits"].is_null());
    let (_, body) = call(
        &hub.router,
        "GET",
        &format!(
            "/api/v1/sales/basket?from={}&to={}",
            T0 - 1,
            T0 + 86_400_000
        ),
        Some(&admin),
    )
    .await;
    assert_eq!(body["transactions"], 4);
}

#[tokio::test]
async fn alerts_acknowledge_and_resolve_by_role() {
    let hub = hub().await;
    let max = token(&hub, "acme", Role::StoreManager, &["s1"]);
    let (status, body) = call(
        &hub.router,
        "POST",
        "/api/v1/alerts/al-s1/acknowledge",
        Some(&max),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "acknowledged");
    assert_eq!(body["changedBy"], "store_manager:store_manager-user");
    let ana = token(&hub, "acme", Role::Analyst, &[]);
    let (status, _) = call(
        &hub.router,
        "POST",
        "/api/v1/alerts/al-s1/resolve",
        Some(&ana),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(
        &hub.router,
        "POST",
        "/api/v1/alerts/al-s1/resolve",
        Some(&max),
    )
    .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("resolved"))
    );
    let (_, body) = call(&hub.router, "GET", "/api/v1/alerts?state=open", Some(&max)).await;
    assert!(body["items"].as_array().unwrap().is_empty());
    let (status, body) = call(&hub.router, "GET", "/api/v1/alerts?state=bogus", Some(&max)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().starts_with("state:"));
}

#[tokio::test]
async fn fleet_alerts_are_listed_within_the_callers_stores() {
    let hub = hub().await;
    raise_fleet_alerts(&**hub.state.store()).await;
    let fleet_ids = |body: &Value| {
        let mut ids: Vec<String> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "store_not_syncing")
            .map(|a| a["alertId"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let max = token(&hub, "acme", Role::StoreManager, &["s1"]);
    let (status, body) = call(&hub.router, "GET", "/api/v1/alerts", Some(&max)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fleet_ids(&body), ["hub-not-syncing-s1"]);
    let ann = token(&hub, "acme", Role::Admin, &[]);
    let (_, body) = call(&hub.router, "GET", "/api/v1/alerts?state=open", Some(&ann)).await;
    assert_eq!(
        fleet_ids(&body),
        ["hub-not-syncing-s1", "hub-not-syncing-s2"]
    );
    let globex = token(&hub, "globex", Role::Admin, &[]);
    let (_, body) = call(&hub.router, "GET", "/api/v1/alerts", Some(&globex)).await;
    assert!(fleet_ids(&body).is_empty());
}

async fn call_with_body(
    router: &Router,
    method: &str,
    uri: &str,
    token: &str,
    body: &str,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn store_tasks_and_settings_by_role() {
    let hub = hub().await;
    let max = token(&hub, "acme", Role::StoreManager, &["s1"]);
    let ana = token(&hub, "acme", Role::Analyst, &[]);
    let r = &hub.router;
    let new_task = r#"{"taskId": "t-till", "title": "count the till"}"#;
    let (status, task) = call_with_body(r, "POST", "/api/v1/stores/s1/tasks", &max, new_task).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(
        (task["title"].as_str(), task["done"].as_bool()),
        (Some("count the till"), Some(false))
    );
    assert_eq!(task["by"], "store_manager:store_manager-user");
    let (status, _) = call_with_body(r, "POST", "/api/v1/stores/s1/tasks", &max, new_task).await;
    assert_eq!(status, StatusCode::OK, "the same id again adds nothing");
    let (status, minted) = call_with_body(
        r,
        "POST",
        "/api/v1/stores/s1/tasks",
        &max,
        r#"{"title": "sweep"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(minted["taskId"].as_str().unwrap().starts_with("t-"));
    for (body, field) in [
        (r#"{"title": " "}"#, "title:"),
        (r#"{"taskId": "a b", "title": "x"}"#, "taskId:"),
    ] {
        let (status, answer) =
            call_with_body(r, "POST", "/api/v1/stores/s1/tasks", &max, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            answer["message"].as_str().unwrap().starts_with(field),
            "{answer}"
        );
    }
    let (status, _) = call_with_body(r, "POST", "/api/v1/stores/s1/tasks", &ana, new_task).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call_with_body(r, "POST", "/api/v1/stores/s2/tasks", &max, new_task).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another store's manager");
    let (status, done) = call(
        r,
        "POST",
        "/api/v1/stores/s1/tasks/t-till/complete",
        Some(&max),
    )
    .await;
    assert_eq!(
        (status, done["done"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, _) = call(
        r,
        "POST",
        "/api/v1/stores/s1/tasks/nope/complete",
        Some(&max),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = call(r, "GET", "/api/v1/stores/s1/tasks", Some(&ana)).await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 2);

    let (status, set) = call_with_body(
        r,
        "PUT",
        "/api/v1/stores/s1/settings/closingTime",
        &max,
        r#"{"value": "21:00"}"#,
    )
    .await;
    assert_eq!(
        (status, &set["value"]),
        (StatusCode::OK, &Value::from("21:00"))
    );
    let (status, _) = call_with_body(
        r,
        "PUT",
        "/api/v1/stores/s1/settings/closingTime",
        &max,
        r#"{"v": 1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, settings) = call(r, "GET", "/api/v1/stores/s1/settings", Some(&ana)).await;
    assert_eq!(settings["settings"]["closingTime"], "21:00");
    let (_, doc) = call(r, "GET", "/api/v1/stores/s1/document", Some(&ana)).await;
    assert_eq!(doc["settings"]["closingTime"], "21:00");
    assert!(doc["tasks"]["t-till"]["done"].as_bool().unwrap());
}

#[tokio::test]
async fn bad_tokens_get_401() {
    let hub = hub().await;
    let now = (storesync_hub::store::now_ms() / 1000) as u64;
    let caller = Caller {
        tenant: tenant("acme"),
        subject: "x".into(),
        role: Role::Admin,
        stores: vec![],
    };
    let expired = hub.issuer.issue(&caller, now - 3600, 60).unwrap();
    let other_key = Issuer::from_pem(
        &auth::generate_signing_key_pem().unwrap(),
        "storesync-hub",
        "storesync-api",
    )
    .unwrap();
    let forged = other_key.issue(&caller, now, 300).unwrap();
    let wrong_audience = Issuer::from_pem(
        &auth::generate_signing_key_pem().unwrap(),
        "storesync-hub",
        "elsewhere",
    )
    .unwrap();
    let wrong_audience = wrong_audience.issue(&caller, now, 300).unwrap();
    // alg: none, with the claims of a valid token.
    let valid = hub.issuer.issue(&caller, now, 300).unwrap();
    let claims = valid.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
    // HS256 signed with the public key as secret (algorithm confusion).
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"iss": "storesync-hub", "aud": "storesync-api", "sub": "x", "exp": now + 300, "tenant": "acme", "role": "admin"}),
        &jsonwebtoken::EncodingKey::from_secret(hub.issuer.public_key_pem().as_bytes()),
    )
    .unwrap();
    for (what, t) in [
        ("expired", expired),
        ("forged", forged),
        ("audience", wrong_audience),
        ("none", none),
        ("hs256", hs),
        ("garbage", "abc".into()),
    ] {
        let (status, body) = call(&hub.router, "GET", "/api/v1/me", Some(&t)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    }
    let (status, _) = call(&hub.router, "GET", "/api/v1/me", Some(&valid)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn external_rs256_tokens_are_accepted_with_pinned_issuer() {
    let hub = hub().await;
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("fixtures/rsa-test-private.pem"))
            .unwrap();
    let now = storesync_hub::store::now_ms() / 1000;
    let sign = |iss: &str, alg| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &serde_json::json!({"iss": iss, "aud": "storesync", "sub": "sso-user", "exp": now + 300, "nbf": now - 1, "tenant": "acme", "role": "analyst"}),
            &key,
        )
        .unwrap()
    };
    let (status, body) = call(
        &hub.router,
        "GET",
        "/api/v1/me",
        Some(&sign("corp-sso", jsonwebtoken::Algorithm::RS256)),
    )
    .await;
    assert_eq!(
        (status, body["role"].as_str()),
        (StatusCode::OK, Some("analyst"))
    );
    let (status, _) = call(
        &hub.router,
        "GET",
        "/api/v1/me",
        Some(&sign("someone-else", jsonwebtoken::Algorithm::RS256)),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &hub.router,
        "GET",
        "/api/v1/me",
        Some(&sign("corp-sso", jsonwebtoken::Algorithm::RS512)),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the algorithm is pinned per key"
    );
}

#[tokio::test]
async fn token_endpoint_grants_and_rotates() {
    let hub = hub().await;
    let (status, body) = form(
        &hub.router,
        "grant_type=password&tenant=acme&username=max&password=correct+horse",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let (_, me) = call(&hub.router, "GET", "/api/v1/me", Some(&access)).await;
    assert_eq!(me["stores"], serde_json::json!(["s1"]));
    let (status, _) = form(
        &hub.router,
        "grant_type=password&tenant=acme&username=max&password=wrong",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = form(
        &hub.router,
        "grant_type=password&tenant=globex&username=max&password=correct+horse",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "users belong to one tenant"
    );
    // Rotation: the old refresh token is spent; replaying it revokes the family.
    let (status, rotated) = form(
        &hub.router,
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, refresh);
    let (status, _) = form(
        &hub.router,
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = form(
        &hub.router,
        &format!("grant_type=refresh_token&refresh_token={second}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "replay revoked the family");
    // Service clients.
    let (status, body) = form(
        &hub.router,
        "grant_type=client_credentials&tenant=acme&client_id=etl&client_secret=correct+horse",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("refresh_token").is_none());
    let (status, _) = form(
        &hub.router,
        "grant_type=client_credentials&tenant=acme&client_id=etl&client_secret=nope",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = form(&hub.router, "grant_type=implicit").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The admin can read the signing key the edge verifies with.
    let admin = token(&hub, "acme", Role::Admin, &[]);
    let (_, key) = call(&hub.router, "GET", "/api/v1/auth/signing-key", Some(&admin)).await;
    assert!(
        key["pem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    assert_eq!(key["jwk"]["crv"], "Ed25519");
}

#[tokio::test]
async fn rate_limits_and_body_limits() {
    let store = sqlite_store("limits").await;
    let hub = hub_with(
        store,
        LimitsConfig {
            rate_per_s: 0.01,
            rate_burst: 2,
            body_bytes_max: 1024,
            ..LimitsConfig::default()
        },
    )
    .await;
    let t = token(&hub, "acme", Role::Analyst, &[]);
    assert_eq!(
        call(&hub.router, "GET", "/api/v1/me", Some(&t)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&hub.router, "GET", "/api/v1/me", Some(&t)).await.0,
        StatusCode::OK
    );
    let req = Request::builder()
        .uri("/api/v1/me")
        .header("authorization", format!("Bearer {t}"))
        .body(Body::empty())
        .unwrap();
    let response = hub.router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // Another principal of the same tenant has its own bucket.
    let other = token(&hub, "acme", Role::Admin, &[]);
    assert_eq!(
        call(&hub.router, "GET", "/api/v1/me", Some(&other)).await.0,
        StatusCode::OK
    );
    let big = "x".repeat(4096);
    let req = Request::builder()
        .method("POST")
        .uri("/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("grant_type=password&password={big}")))
        .unwrap();
    let response = hub.router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn admin_adds_users_and_inventory_folds() {
    let hub = hub().await;
    let admin = token(&hub, "acme", Role::Admin, &[]);
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/users")
        .header("authorization", format!("Bearer {admin}"))
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"username":"zoe","password":"longenough","role":"store_manager","stores":["s2"]}"#,
        ))
        .unwrap();
    assert_eq!(
        hub.router.clone().oneshot(req).await.unwrap().status(),
        StatusCode::CREATED
    );
    let (status, body) = form(
        &hub.router,
        "grant_type=password&tenant=acme&username=zoe&password=longenough",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, inv) = call(
        &hub.router,
        "GET",
        "/api/v1/inventory?stores=s1",
        Some(&admin),
    )
    .await;
    let rows = inv["items"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["onHand"], -3);
    // The answer is cached; a stock count ingested for s1 (after its last sale) drops it.
    let _invalidation = hub.state.spawn_invalidation();
    let sku = rows[0]["sku"].as_str().unwrap().to_owned();
    let mut scanner = Device::new("acme", "s1", "d-scan", 1);
    let (stream, events, head) = scanner.run(vec![scan(
        "count-1",
        "s1",
        T0 + 7_200_000,
        &sku,
        storesync_protocol::domain::ScanPurpose::StockCount,
        12,
    )]);
    hub.state
        .store()
        .commit_events(&stream, &events, head)
        .await
        .unwrap();
    let mut on_hand = Value::Null;
    for _ in 0..50 {
        let (_, inv) = call(
            &hub.router,
            "GET",
            "/api/v1/inventory?stores=s1",
            Some(&admin),
        )
        .await;
        on_hand = inv["items"][0]["onHand"].clone();
        if on_hand != -3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(on_hand, 12);
    // `offset` and `limit` page the list: one-row pages in order are the whole list, with
    // its length as `total`; a page past the end is empty.
    let (_, all) = call(&hub.router, "GET", "/api/v1/inventory", Some(&admin)).await;
    let whole = all["items"].as_array().unwrap().clone();
    assert!(whole.len() >= 3, "{all}");
    assert_eq!(all["total"], whole.len());
    let mut paged = Vec::new();
    for offset in 0..=whole.len() {
        let uri = format!("/api/v1/inventory?limit=1&offset={offset}");
        let (status, page) = call(&hub.router, "GET", &uri, Some(&admin)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            (&page["total"], &page["offset"]),
            (&all["total"], &offset.into())
        );
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(paged, whole);
    for bad in ["limit=0", "offset=-1", "offset=x"] {
        let uri = format!("/api/v1/inventory?{bad}");
        let (status, _) = call(&hub.router, "GET", &uri, Some(&admin)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

/// An identity provider speaks for the one tenant it is configured for (`corp-sso`:
/// acme): a token it signs for another tenant is refused, one without a tenant claim is its
/// tenant's, and the hub's own tokens still name their tenant.
#[tokio::test]
async fn external_tokens_are_bound_to_their_providers_tenant() {
    let hub = hub().await;
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("fixtures/rsa-test-private.pem"))
            .unwrap();
    let now = storesync_hub::store::now_ms() / 1000;
    let sign = |tenant: Option<&str>| {
        let mut claims = serde_json::json!({"iss": "corp-sso", "aud": "storesync", "sub": "sso-admin", "exp": now + 300, "role": "admin"});
        if let Some(tenant) = tenant {
            claims["tenant"] = Value::from(tenant);
        }
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .unwrap()
    };
    for other in ["globex", "not a tenant"] {
        let (status, body) = call(&hub.router, "GET", "/api/v1/me", Some(&sign(Some(other)))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "tenant {other}: {body}");
        let (status, _) = call(
            &hub.router,
            "GET",
            "/api/v1/alerts",
            Some(&sign(Some(other))),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "tenant {other}");
    }
    for tenant in [Some("acme"), None] {
        let (status, me) = call(&hub.router, "GET", "/api/v1/me", Some(&sign(tenant))).await;
        assert_eq!(status, StatusCode::OK, "{tenant:?}: {me}");
        assert_eq!(
            (me["tenant"].as_str(), me["role"].as_str()),
            (Some("acme"), Some("admin"))
        );
    }
    let globex = token(&hub, "globex", Role::Admin, &[]);
    let (status, me) = call(&hub.router, "GET", "/api/v1/me", Some(&globex)).await;
    assert_eq!(
        (status, me["tenant"].as_str()),
        (StatusCode::OK, Some("globex"))
    );
}

/// A JWKS endpoint for tests: serves `keys` (503 while `None`) and counts fetches.
struct JwksServer {
    url: String,
    keys: Arc<std::sync::Mutex<Option<Vec<Value>>>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    async fn start() -> JwksServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let keys: Arc<std::sync::Mutex<Option<Vec<Value>>>> = Arc::default();
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (served, counted) = (keys.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let current = served.lock().unwrap().clone();
                let response = match current {
                    Some(keys) => {
                        let body = serde_json::json!({ "keys": keys }).to_string();
                        format!(
                            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    None => "HTTP/1.0 503 Service Unavailable\r\n\r\n".to_owned(),
                };
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        JwksServer { url, keys, fetches }
    }

    fn publish(&self, keys: Option<&[&Issuer]>) {
        *self.keys.lock().unwrap() = keys.map(|k| k.iter().map(|i| i.public_jwk()).collect());
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A hub configured like `storesync-hub serve` with one provider, `idp` for acme, whose
/// keys come from `jwks.url`.
async fn hub_with_jwks(jwks: &JwksServer, refresh_s: u64, refetch_min_s: u64) -> Router {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[store]\nbackend = \"sqlite\"\npath = \"hub.db\"\n\
         [auth]\nsigning_key_path = \"{}\"\njwks_refresh_s = {refresh_s}\njwks_refetch_min_s = {refetch_min_s}\n\
         [[auth.external]]\nissuer = \"idp\"\naudience = \"storesync\"\ntenant = \"acme\"\njwks_url = \"{}\"\n",
        dir.path().join("signing-key.pem").display(),
        jwks.url
    );
    let config: storesync_hub::config::Config = toml::from_str(&text).unwrap();
    let state = storesync_hub::server::state_with_store(&config, sqlite_store("jwks").await)
        .await
        .expect("the hub starts whether the provider answers or not");
    app(state)
}

/// A provider's key: tokens it signs name it by `kid`.
fn idp_key() -> Issuer {
    Issuer::from_pem(
        &auth::generate_signing_key_pem().unwrap(),
        "idp",
        "storesync",
    )
    .unwrap()
}

async fn me_status(router: &Router, key: &Issuer) -> StatusCode {
    let caller = Caller {
        tenant: tenant("acme"),
        subject: "sso-user".into(),
        role: Role::Analyst,
        stores: vec![],
    };
    let now = (storesync_hub::store::now_ms() / 1000) as u64;
    let token = key.issue(&caller, now, 300).unwrap();
    call(router, "GET", "/api/v1/me", Some(&token)).await.0
}

/// The hub starts while the provider's JWKS is unreachable, picks up its keys once they are
/// published and again after it rotates them, fetches for an unknown key id at most once per
/// `jwks_refetch_min_s`, and keeps its last good keys while the provider is down.
#[tokio::test]
async fn jwks_keys_are_fetched_again_for_unknown_key_ids() {
    let jwks = JwksServer::start().await;
    let (a, b, c) = (idp_key(), idp_key(), idp_key());
    let refetch_min = Duration::from_millis(2100);
    let router = hub_with_jwks(&jwks, 3600, 2).await;
    assert_eq!(jwks.fetches(), 1, "fetched at start, and failed");
    assert_eq!(me_status(&router, &a).await, StatusCode::UNAUTHORIZED);

    jwks.publish(Some(&[&a]));
    tokio::time::sleep(refetch_min).await;
    assert_eq!(me_status(&router, &a).await, StatusCode::OK);
    let fetched = jwks.fetches();
    assert_eq!(me_status(&router, &a).await, StatusCode::OK);
    // Unknown key ids right after a fetch: no fetch, however many tokens ask.
    for _ in 0..3 {
        assert_eq!(me_status(&router, &b).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        jwks.fetches(),
        fetched,
        "at most one fetch per jwks_refetch_min_s"
    );

    // The provider rotates to b.
    jwks.publish(Some(&[&b]));
    tokio::time::sleep(refetch_min).await;
    assert_eq!(me_status(&router, &b).await, StatusCode::OK);
    assert_eq!(jwks.fetches(), fetched + 1);
    assert_eq!(
        me_status(&router, &a).await,
        StatusCode::UNAUTHORIZED,
        "a was retired"
    );

    // The provider goes down: a token naming a new key asks in vain, b still works.
    jwks.publish(None);
    tokio::time::sleep(refetch_min).await;
    assert_eq!(me_status(&router, &c).await, StatusCode::UNAUTHORIZED);
    assert_eq!(jwks.fetches(), fetched + 2);
    assert_eq!(
        me_status(&router, &b).await,
        StatusCode::OK,
        "last good keys kept"
    );

    // A token of another issuer never makes the hub fetch this provider's keys.
    tokio::time::sleep(refetch_min).await;
    let other = Issuer::from_pem(
        &auth::generate_signing_key_pem().unwrap(),
        "elsewhere",
        "storesync",
    )
    .unwrap();
    assert_eq!(me_status(&router, &other).await, StatusCode::UNAUTHORIZED);
    assert_eq!(jwks.fetches(), fetched + 2);
}

/// Keys are fetched again every `jwks_refresh_s` without any token asking.
#[tokio::test]
async fn jwks_keys_refresh_periodically() {
    let jwks = JwksServer::start().await;
    let (a, b) = (idp_key(), idp_key());
    jwks.publish(Some(&[&a]));
    // Fetches prompted by unknown key ids are held off for an hour: only the period fetches.
    let router = hub_with_jwks(&jwks, 1, 3600).await;
    assert_eq!(me_status(&router, &a).await, StatusCode::OK);
    jwks.publish(Some(&[&b]));
    let start = jwks.fetches();
    let mut waited = 0;
    while jwks.fetches() < start + 1 && waited < 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    // The fetch may be counted before its answer is applied.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(me_status(&router, &b).await, StatusCode::OK);
    assert_eq!(me_status(&router, &a).await, StatusCode::UNAUTHORIZED);
}

/// `from`/`to` at the ends of i64 (or anywhere a date cannot be written) are refused by
/// name, on every route that takes them, instead of overflowing the range arithmetic.
#[tokio::test]
async fn extreme_ranges_are_refused_by_name() {
    let hub = hub().await;
    let admin = token(&hub, "acme", Role::Admin, &[]);
    let (min, max) = (i64::MIN, i64::MAX);
    for (route, query, field) in [
        ("sales/series", format!("from={min}&to={max}"), "from:"),
        ("sales/series", format!("from={min}&to=0"), "from:"),
        ("sales/series", format!("from=0&to={max}"), "to:"),
        ("sales/series", format!("to={}", min + 1), "to:"),
        (
            "sales/series",
            format!("bucket=week&from={min}&to={max}"),
            "from:",
        ),
        ("sales/series.csv", format!("from={min}&to={max}"), "from:"),
        ("sales/top-items", format!("from={min}&to={max}"), "from:"),
        ("sales/basket", format!("from={min}&to={max}"), "from:"),
        ("sales/basket", format!("to={max}"), "to:"),
        ("alerts", format!("before={max}"), "before:"),
    ] {
        let uri = format!("/api/v1/{route}?{query}");
        let (status, body) = call(&hub.router, "GET", &uri, Some(&admin)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with(field) && message.contains("out of range"),
            "{uri}: {message}"
        );
    }
    // The widest range a date can be written for is a range like any other.
    let widest = format!(
        "/api/v1/sales/basket?from={}&to={}",
        jiff::Timestamp::MIN.as_second() * 1000,
        jiff::Timestamp::MAX.as_second() * 1000
    );
    let (status, body) = call(&hub.router, "GET", &widest, Some(&admin)).await;
    assert_eq!(
        (status, &body["transactions"]),
        (StatusCode::OK, &Value::from(4)),
        "{body}"
    );
}

#[tokio::test]
async fn series_points_are_capped_across_groups() {
    series_points_capped(sqlite_store("points").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_points_are_capped_across_groups_on_postgres() {
    series_points_capped(pg_store("t_api_points").await).await;
}

/// `series_points_max` bounds the points of a whole series (groups × buckets), not only
/// its buckets, in JSON and CSV alike; a series that sums more rows than it has points
/// (weeks, regions) is judged by its points, and by `series_rows_max` for what it reads.
async fn series_points_capped(store: Arc<dyn Store>) {
    let limits = LimitsConfig {
        series_points_max: 2,
        series_rows_max: 3,
        ..open_limits()
    };
    let hub = hub_with(store, limits).await;
    let admin = token(&hub, "acme", Role::Admin, &[]);
    let two_hours = format!("from={T0}&to={}", T0 + 2 * 3_600_000);
    let check = |query: String, expected: Result<usize, ()>| {
        let router = hub.router.clone();
        let admin = admin.clone();
        async move {
            for route in ["series", "series.csv"] {
                let uri = format!("/api/v1/sales/{route}?{query}");
                let req = Request::builder()
                    .uri(&uri)
                    .header("authorization", format!("Bearer {admin}"))
                    .body(Body::empty())
                    .unwrap();
                let response = router.clone().oneshot(req).await.unwrap();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let text = String::from_utf8_lossy(&bytes).into_owned();
                match expected {
                    Ok(points) => {
                        assert_eq!(status, StatusCode::OK, "{uri}: {text}");
                        let got = if route == "series" {
                            let body: Value = serde_json::from_str(&text).unwrap();
                            body["series"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|g| g["points"].as_array().unwrap().len())
                                .sum()
                        } else {
                            text.lines().count() - 1
                        };
                        assert_eq!(got, points, "{uri}: {text}");
                    }
                    Err(()) => {
                        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {text}");
                        let body: Value = serde_json::from_str(&text).unwrap();
                        assert!(
                            body["message"]
                                .as_str()
                                .unwrap()
                                .starts_with("too many points:"),
                            "{uri}: {text}"
                        );
                    }
                }
            }
        }
    };
    // Two hourly buckets: one group fits, two stores or three (item, hour) pairs do not.
    check(format!("bucket=hour&{two_hours}"), Ok(2)).await;
    check(format!("bucket=hour&group_by=payment&{two_hours}"), Ok(2)).await;
    check(format!("bucket=hour&group_by=store&{two_hours}"), Err(())).await;
    check(format!("bucket=hour&group_by=region&{two_hours}"), Err(())).await;
    check(format!("bucket=hour&group_by=item&{two_hours}"), Err(())).await;
    // Three (item, hour) rows, all uncategorized: two points.
    check(format!("bucket=hour&group_by=category&{two_hours}"), Ok(2)).await;
    // The item filter narrows it to what fits.
    check(
        format!("bucket=hour&group_by=item&items=sku-2&{two_hours}"),
        Ok(1),
    )
    .await;
    // One week from the daily rows of two stores: two rows, one point.
    let week = format!("from={}&to={}", T0 - 86_400_000, T0 + 86_400_000);
    check(format!("bucket=week&{week}"), Ok(1)).await;
    check(format!("bucket=week&group_by=region&{week}"), Ok(2)).await;
    // By item, a week reads the daily rows of each time zone's stores summed: the two
    // stores share one zone, so two rows (one per item), not four, and two points.
    check(format!("bucket=week&group_by=item&{week}"), Ok(2)).await;
    // By category the database sums those item rows first: one row a day (a week by store),
    // within both caps however many items a category holds.
    check(format!("bucket=day&group_by=category&{week}"), Ok(1)).await;
    check(format!("bucket=week&group_by=category&{week}"), Ok(1)).await;
}

/// A store added after the hub cached the tenant's store list (stores are added by another
/// process) has its weeks start on its own local Monday at once, even where it is the one
/// store a zone's summed rows name.
#[tokio::test]
async fn a_store_added_since_the_list_was_cached_has_its_own_weeks() {
    let hub = hub().await;
    let admin = token(&hub, "acme", Role::Admin, &[]);
    let from = T0 - 8 * 86_400_000;
    let to = T0 + 86_400_000;
    let week = |to: i64| format!("/api/v1/sales/series?bucket=week&from={from}&to={to}");
    let (status, _) = call(&hub.router, "GET", &week(to), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    // Store "a0" sorts first and has a zone of its own.
    hub.state
        .store()
        .upsert_store(
            &tenant("acme"),
            &storesync_hub::store::StoreInfo {
                store_id: store_id("a0"),
                name: "Store a0".into(),
                region: "west".into(),
                time_zone: "America/New_York".into(),
            },
        )
        .await
        .unwrap();
    let mut device = Device::new("acme", "a0", "d-a0", 1);
    let (st, ev, h) = device.run(vec![sale("a0-1", "a0", T0, &[("sku-1", 1, 100)])]);
    hub.state.store().commit_events(&st, &ev, h).await.unwrap();
    // Another range, so the series is computed, not served from the cache.
    let (status, series) = call(&hub.router, "GET", &week(to - 60_000), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{series}");
    let starts: Vec<&str> = series["series"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["t"].as_str().unwrap())
        .collect();
    // Monday 2026-11-16 begins at 05:00Z in New York, at 23:00Z the day before in Paris.
    assert!(starts.contains(&"2026-11-16T05:00:00Z"), "{series}");
}

/// Requests that fail authentication (no token, a forged one) spend their address's
/// budget, so hammering with bad tokens is limited like anything else; other addresses and
/// valid tokens from the same address are not.
#[tokio::test]
async fn failed_authentication_is_rate_limited_by_address() {
    let store = sqlite_store("auth-limits").await;
    let hub = hub_with(
        store,
        LimitsConfig {
            rate_per_s: 0.01,
            rate_burst: 2,
            ..LimitsConfig::default()
        },
    )
    .await;
    let from = |ip: &str, token: Option<&str>| {
        let mut req = Request::builder().uri("/api/v1/me");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut req = req.body(Body::empty()).unwrap();
        let peer: std::net::SocketAddr = format!("{ip}:40000").parse().unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let router = hub.router.clone();
        async move { router.oneshot(req).await.unwrap() }
    };
    let forged = Issuer::from_pem(
        &auth::generate_signing_key_pem().unwrap(),
        "storesync-hub",
        "storesync-api",
    )
    .unwrap()
    .issue(
        &Caller {
            tenant: tenant("acme"),
            subject: "mallory".into(),
            role: Role::Admin,
            stores: vec![],
        },
        (storesync_hub::store::now_ms() / 1000) as u64,
        300,
    )
    .unwrap();
    let attacker = "203.0.113.7";
    assert_eq!(
        from(attacker, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        from(attacker, Some(&forged)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    for token in [None, Some(forged.as_str()), Some("garbage")] {
        let response = from(attacker, token).await;
        assert_eq!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{token:?}"
        );
        let retry: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1);
    }
    assert_eq!(
        from("198.51.100.1", None).await.status(),
        StatusCode::UNAUTHORIZED,
        "another address has its own budget"
    );
    let valid = token(&hub, "acme", Role::Analyst, &[]);
    assert_eq!(
        from(attacker, Some(&valid)).await.status(),
        StatusCode::OK,
        "a valid token is limited by its principal, not the address"
    );
    // Requests the role may not make spend the principal's budget too.
    let max = token(&hub, "acme", Role::StoreManager, &["s1"]);
    for expected in [
        StatusCode::FORBIDDEN,
        StatusCode::FORBIDDEN,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        let (status, _) = call(&hub.router, "GET", "/api/v1/dead-letters", Some(&max)).await;
        assert_eq!(status, expected);
    }
}
