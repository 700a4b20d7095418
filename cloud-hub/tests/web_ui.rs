//! The hub as the web UI's server: built assets at `/` with the SPA fallback, cache headers
//! and a Content-Security-Policy; the page that says how to build a missing UI; and the
//! live-stream tickets that let a browser open EventSource and WebSocket streams without
//! putting its access token in a URL.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::Value;
use storesync_hub::api::ui::UiAssets;
use storesync_hub::api::{AppState, app};
use storesync_hub::auth::{self, Caller, Issuer};
use storesync_hub::cache::Cache;
use storesync_hub::config::{AuthConfig, LimitsConfig};
use storesync_hub::store::Role;
use storesync_protocol::ids::StoreId;
use tower::ServiceExt;

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn get(router: &Router, method: &str, uri: &str, bearer: Option<&str>) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let response = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let is_stream = headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let body = if is_stream {
        String::new()
    } else {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

struct Hub {
    state: AppState,
    issuer: Issuer,
}

async fn hub() -> Hub {
    hub_on(sqlite_store("web_ui").await).await
}

async fn hub_on(store: std::sync::Arc<dyn storesync_hub::store::Store>) -> Hub {
    setup_tenant(
        &*store,
        "acme",
        &[
            ("s1", "north", "Europe/Paris"),
            ("s2", "south", "Europe/Paris"),
        ],
    )
    .await;
    let issuer = Issuer::from_pem(
        &auth::generate_signing_key_pem().unwrap(),
        "storesync-hub",
        "storesync-api",
    )
    .unwrap();
    let verifier = AppState::verifier_for(&issuer, Vec::new(), 5).unwrap();
    let state = AppState::new(
        store,
        issuer.clone(),
        verifier,
        AuthConfig::default(),
        LimitsConfig {
            rate_per_s: 10_000.0,
            rate_burst: 10_000,
            ..LimitsConfig::default()
        },
        Cache::new(100, Duration::from_secs(60)),
    );
    Hub { state, issuer }
}

fn access_token(issuer: &Issuer, role: Role, stores: &[&str]) -> String {
    issuer.issue(&caller(role, stores), now_s(), 300).unwrap()
}

fn caller(role: Role, stores: &[&str]) -> Caller {
    Caller {
        tenant: tenant("acme"),
        subject: "someone".into(),
        role,
        stores: stores.iter().map(|s| StoreId::new(*s).unwrap()).collect(),
    }
}

fn now_s() -> u64 {
    (storesync_hub::store::now_ms() / 1000) as u64
}

fn built_ui() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>storesync</title><div id=root></div>",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/index-1a2b3c.js"), "console.log(1)").unwrap();
    std::fs::write(dir.path().join("favicon.svg"), "<svg/>").unwrap();
    dir
}

#[tokio::test]
async fn built_ui_is_served_with_spa_fallback_cache_headers_and_csp() {
    let hub = hub().await;
    let dist = built_ui();
    let ui = UiAssets::resolve(Some(dist.path()));
    assert!(ui.present());
    let router = app(hub.state.with_ui(ui));

    for path in ["/", "/stores/s1", "/alerts?state=open", "/views/abc/edit"] {
        let r = get(&router, "GET", path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(r.body.contains("<div id=root>"), "{path}: index.html");
        assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(r.headers["cache-control"], "no-cache", "{path}");
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
    }
    let r = get(&router, "GET", "/assets/index-1a2b3c.js", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "console.log(1)");
    assert_eq!(r.headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(
        r.headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let r = get(&router, "GET", "/favicon.svg", None).await;
    assert_eq!(r.headers["content-type"], "image/svg+xml");
    assert_eq!(r.headers["cache-control"], "no-cache");

    // A stale page asking for an old build's asset gets a 404, not HTML to run as script.
    let r = get(&router, "GET", "/assets/index-old.js", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Nothing outside the directory is reachable.
    for path in [
        "/../Cargo.toml",
        "/assets/%2e%2e/%2e%2e/etc/passwd",
        "/%2e%2e%2fCargo.toml",
    ] {
        let r = get(&router, "GET", path, None).await;
        assert!(!r.body.contains("[package]"), "{path}");
        assert!(!r.body.contains("root:"), "{path}");
    }

    // The API's paths never fall back to the UI.
    for path in [
        "/api/v1/nothing-here",
        "/api/nothing",
        "/oauth/nothing",
        "/api",
    ] {
        let r = get(&router, "GET", path, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], "not_found", "{path}");
    }
    let r = get(&router, "GET", "/healthz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("ok"));
    let r = get(&router, "GET", "/metrics", None).await;
    assert!(!r.body.contains("<div id=root>"));
    // Other methods on UI paths are not served.
    let r = get(&router, "POST", "/stores/s1", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn missing_ui_answers_how_to_build_it_and_the_api_still_works() {
    let hub = hub().await;
    let empty = tempfile::tempdir().unwrap();
    let ui = UiAssets::resolve(Some(&empty.path().join("dist")));
    assert!(!ui.present());
    let token = access_token(&hub.issuer, Role::Admin, &[]);
    let router = app(hub.state.with_ui(ui));
    for path in ["/", "/stores/s1"] {
        let r = get(&router, "GET", path, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.body.contains(
                "npm --prefix desktop-app/ui ci &amp;&amp; npm --prefix desktop-app/ui run build"
            ) || r.body.contains(
                "npm --prefix desktop-app/ui ci && npm --prefix desktop-app/ui run build"
            ),
            "{}",
            r.body
        );
    }
    let r = get(&router, "GET", "/api/v1/me", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("\"role\":\"admin\""));
}

#[tokio::test]
async fn live_tickets_open_streams_only_and_tokens_never_ride_in_urls() {
    let hub = hub().await;
    let router = app(hub.state.clone());
    let max = access_token(&hub.issuer, Role::StoreManager, &["s1"]);

    // Only a bearer header gets a ticket.
    let r = get(&router, "POST", "/api/v1/live/ticket", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = get(&router, "POST", "/api/v1/live/ticket", Some(&max)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers["cache-control"], "no-store");
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["expiresIn"], 30);
    let ticket = body["ticket"].as_str().unwrap().to_owned();

    // The ticket opens the SSE stream, within the caller's stores only.
    let r = get(
        &router,
        "GET",
        &format!("/api/v1/live/sse?ticket={ticket}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let r = get(
        &router,
        "GET",
        &format!("/api/v1/live/sse?stores=s2&ticket={ticket}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "another store's stream");
    // The WebSocket route takes it too (refused only for lack of upgrade headers here).
    let r = get(
        &router,
        "GET",
        &format!("/api/v1/live/ws?ticket={ticket}"),
        None,
    )
    .await;
    assert!(
        ![401, 403, 404].contains(&r.status.as_u16()),
        "{}",
        r.status
    );

    // A ticket is not an access token: no other route takes it, in the header or the query.
    let r = get(&router, "GET", "/api/v1/me", Some(&ticket)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = get(&router, "GET", &format!("/api/v1/me?ticket={ticket}"), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = get(&router, "POST", "/api/v1/live/ticket", Some(&ticket)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "tickets do not renew");
    // An access token is not a ticket, and the old `access_token` query is gone.
    for query in [format!("ticket={max}"), format!("access_token={max}")] {
        let r = get(&router, "GET", &format!("/api/v1/live/sse?{query}"), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{query}");
    }
    // An expired ticket is refused.
    let old = hub
        .issuer
        .issue_ticket(&caller(Role::StoreManager, &["s1"]), now_s() - 120, 30)
        .unwrap();
    let r = get(
        &router,
        "GET",
        &format!("/api/v1/live/sse?ticket={old}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A ticket from another issuer (another hub's key) is refused.
    let other = Issuer::from_pem(
        &auth::generate_signing_key_pem().unwrap(),
        "storesync-hub",
        "storesync-api",
    )
    .unwrap();
    let forged = other
        .issue_ticket(&caller(Role::Admin, &[]), now_s(), 30)
        .unwrap();
    let r = get(
        &router,
        "GET",
        &format!("/api/v1/live/sse?ticket={forged}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A bearer header still opens a stream (non-browser clients).
    let r = get(&router, "GET", "/api/v1/live/sse", Some(&max)).await;
    assert_eq!(r.status, StatusCode::OK);
}

async fn send(router: &Router, method: &str, uri: &str, bearer: &str, body: &str) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {bearer}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

#[tokio::test]
async fn saved_views_are_per_user_validated_and_limited() {
    saved_views(hub().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_views_are_per_user_validated_and_limited_on_postgres() {
    saved_views(hub_on(pg_store("t_web_ui_views").await).await).await;
}

async fn saved_views(hub: Hub) {
    let router = app(hub.state.clone());
    let user = |name: &str, role: Role, stores: &[&str]| {
        let mut c = caller(role, stores);
        c.subject = name.into();
        hub.issuer.issue(&c, now_s(), 300).unwrap()
    };
    let ann = user("ann", Role::Analyst, &[]);
    let max = user("max", Role::StoreManager, &["s1"]);
    let view = r#"{"name": "Revenue by region", "view": {"metric": "revenue", "groupBy": "region", "range": "7d", "stores": [], "chart": "line"}}"#;

    let r = send(&router, "PUT", "/api/v1/views/weekly-1", &ann, view).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let saved: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(saved["id"], "weekly-1");
    assert_eq!(saved["view"]["groupBy"], "region");
    // Replacing keeps one view.
    let renamed = view.replace("Revenue by region", "Regions, weekly");
    let r = send(&router, "PUT", "/api/v1/views/weekly-1", &ann, &renamed).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&router, "GET", "/api/v1/views", Some(&ann)).await;
    let list: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["name"], "Regions, weekly");

    // Another user neither sees nor deletes it.
    let r = get(&router, "GET", "/api/v1/views", Some(&max)).await;
    let list: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(list["items"], serde_json::json!([]));
    let r = send(&router, "DELETE", "/api/v1/views/weekly-1", &max, "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = get(&router, "GET", "/api/v1/views", Some(&ann)).await;
    assert!(r.body.contains("weekly-1"), "still there for its owner");

    // The same user name in another tenant is another user.
    let mut other = caller(Role::Admin, &[]);
    other.tenant = tenant("globex");
    other.subject = "ann".into();
    let other = hub.issuer.issue(&other, now_s(), 300).unwrap();
    let r = get(&router, "GET", "/api/v1/views", Some(&other)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.body.contains("weekly-1"), "{}", r.body);

    // Bad input names the field.
    for (uri, body, field) in [
        (
            "/api/v1/views/weekly-2",
            r#"{"name": "", "view": {}}"#,
            "name",
        ),
        (
            "/api/v1/views/weekly-2",
            r#"{"name": "x", "view": [1]}"#,
            "view",
        ),
        ("/api/v1/views/weekly-2", r#"{"name": "x"}"#, "body"),
        ("/api/v1/views/weekly-2", "not json", "body"),
        (
            "/api/v1/views/bad%20id",
            r#"{"name": "x", "view": {}}"#,
            "view_id",
        ),
    ] {
        let r = send(&router, "PUT", uri, &ann, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri} {body}");
        assert!(r.body.contains(field), "{field}: {}", r.body);
    }
    let big = format!(
        r#"{{"name": "x", "view": {{"pad": "{}"}}}}"#,
        "x".repeat(5000)
    );
    let r = send(&router, "PUT", "/api/v1/views/weekly-2", &ann, &big).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("4096 bytes"), "{}", r.body);

    // At most 50 per user; replacing one at the limit still works.
    for n in 2..=50 {
        let r = send(&router, "PUT", &format!("/api/v1/views/v{n}"), &ann, view).await;
        assert_eq!(r.status, StatusCode::OK, "view {n}: {}", r.body);
    }
    let r = send(&router, "PUT", "/api/v1/views/one-too-many", &ann, view).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("at most 50"), "{}", r.body);
    let r = send(&router, "PUT", "/api/v1/views/v50", &ann, &renamed).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(&router, "DELETE", "/api/v1/views/v50", &ann, "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = get(&router, "GET", "/api/v1/views", Some(&ann)).await;
    let list: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 49);
}
