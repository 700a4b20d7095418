//! The route table: one source for authorization and the OpenAPI document.

use crate::store::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// A token with one of these roles.
    Roles(&'static [Role]),
}

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: &'static str,
    /// Path as axum matches it (`{param}`).
    pub path: &'static str,
    /// One line for the documentation.
    pub summary: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Query parameters (name, description).
    pub query: &'static [(&'static str, &'static str)],
    /// Whether the store scope applies (managers: assigned stores only).
    pub scoped: bool,
}

const ALL: &[Role] = &[Role::Admin, Role::Analyst, Role::StoreManager];
const ADMIN: &[Role] = &[Role::Admin];
const HANDLERS: &[Role] = &[Role::Admin, Role::StoreManager];

const SERIES_QUERY: &[(&str, &str)] = &[
    ("bucket", "minute | hour | day | week (default hour)"),
    (
        "group_by",
        "none | store | region | item | category | payment (default none)",
    ),
    (
        "stores",
        "comma-separated store ids (default: all the caller may see)",
    ),
    (
        "from",
        "RFC 3339 or Unix milliseconds (default: to minus 7 days)",
    ),
    (
        "to",
        "RFC 3339 or Unix milliseconds, exclusive (default: now)",
    ),
    ("category", "only items of this category"),
    ("items", "comma-separated SKUs"),
];

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: Access,
    query: &'static [(&'static str, &'static str)],
    scoped: bool,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        summary,
        access,
        query,
        scoped,
    }
}

/// Every route of the hub.
pub const ROUTES: &[RouteSpec] = &[
    route("GET", "/healthz", "Liveness.", Access::Public, &[], false),
    route(
        "GET",
        "/readyz",
        "Readiness: the database answers.",
        Access::Public,
        &[],
        false,
    ),
    route(
        "GET",
        "/metrics",
        "Prometheus metrics.",
        Access::Public,
        &[],
        false,
    ),
    route(
        "GET",
        "/api/openapi.json",
        "This document.",
        Access::Public,
        &[],
        false,
    ),
    route(
        "GET",
        "/api/docs",
        "Human-readable API documentation.",
        Access::Public,
        &[],
        false,
    ),
    route(
        "POST",
        "/oauth/token",
        "OAuth2 token endpoint (form): grant_type=password (tenant, username, password), client_credentials (tenant, client_id, client_secret), refresh_token.",
        Access::Public,
        &[],
        false,
    ),
    route(
        "GET",
        "/api/v1/auth/signing-key",
        "Public key (PEM and JWK) of the hub's token issuer, for offline verification at the edge.",
        Access::Roles(ADMIN),
        &[],
        false,
    ),
    route(
        "GET",
        "/api/v1/me",
        "The caller's identity.",
        Access::Roles(ALL),
        &[],
        false,
    ),
    route(
        "POST",
        "/api/v1/users",
        "Create or update a user (JSON: username, password, role, stores).",
        Access::Roles(ADMIN),
        &[],
        false,
    ),
    route(
        "GET",
        "/api/v1/stores",
        "Stores with sync status and watermark (complete up to).",
        Access::Roles(ALL),
        &[("stores", "comma-separated store ids")],
        true,
    ),
    route(
        "GET",
        "/api/v1/stores/{store_id}",
        "One store with its devices' sync status.",
        Access::Roles(ALL),
        &[],
        true,
    ),
    route(
        "GET",
        "/api/v1/sales/series",
        "Sales time series. At most `limits.series_points_max` points (groups × buckets); more is a 400 \"too many points\".",
        Access::Roles(ALL),
        SERIES_QUERY,
        true,
    ),
    route(
        "GET",
        "/api/v1/sales/series.csv",
        "Sales time series as CSV, under the same limits.",
        Access::Roles(ALL),
        SERIES_QUERY,
        true,
    ),
    route(
        "GET",
        "/api/v1/sales/top-items",
        "Top items by revenue.",
        Access::Roles(ALL),
        &[
            ("stores", "comma-separated store ids"),
            ("from", "start"),
            ("to", "end"),
            ("limit", "at most 100 (default 10)"),
        ],
        true,
    ),
    route(
        "GET",
        "/api/v1/sales/basket",
        "Basket metrics: transactions, average value and units.",
        Access::Roles(ALL),
        &[
            ("stores", "comma-separated store ids"),
            ("from", "start"),
            ("to", "end"),
        ],
        true,
    ),
    route(
        "GET",
        "/api/v1/inventory",
        "Stock on hand per store and SKU.",
        Access::Roles(ALL),
        &[
            ("stores", "comma-separated store ids"),
            ("sku", "one SKU"),
            ("offset", "rows to skip"),
            ("limit", "page length"),
        ],
        true,
    ),
    route(
        "GET",
        "/api/v1/stores/{store_id}/document",
        "The store's replicated document: alert marks, tasks, settings, adjustments sent down, and its heads.",
        Access::Roles(ALL),
        &[],
        true,
    ),
    route(
        "POST",
        "/api/v1/stores/{store_id}/adjustments",
        "A stock adjustment entered at HQ, sent to the store through its document and applied once.",
        Access::Roles(ADMIN),
        &[],
        true,
    ),
    route(
        "GET",
        "/api/v1/stores/{store_id}/tasks",
        "The store's tasks (from its replicated document).",
        Access::Roles(ALL),
        &[],
        true,
    ),
    route(
        "POST",
        "/api/v1/stores/{store_id}/tasks",
        "Add a task to the store (JSON: taskId optional, title); the store's agent receives it, offline edits merge.",
        Access::Roles(HANDLERS),
        &[],
        true,
    ),
    route(
        "POST",
        "/api/v1/stores/{store_id}/tasks/{task_id}/complete",
        "Mark a task of the store done.",
        Access::Roles(HANDLERS),
        &[],
        true,
    ),
    route(
        "GET",
        "/api/v1/stores/{store_id}/settings",
        "The store's settings (from its replicated document).",
        Access::Roles(ALL),
        &[],
        true,
    ),
    route(
        "PUT",
        "/api/v1/stores/{store_id}/settings/{name}",
        "Set a store setting (JSON: value, any JSON); the store's agent receives it.",
        Access::Roles(HANDLERS),
        &[],
        true,
    ),
    route(
        "POST",
        "/api/v1/transfers",
        "A transfer between two stores: one adjustment leg for each, applied once by each store.",
        Access::Roles(ADMIN),
        &[],
        false,
    ),
    route(
        "GET",
        "/api/v1/catalog",
        "The tenant document: catalog (name, category, price, reorder threshold per SKU), alert rules and heads.",
        Access::Roles(ALL),
        &[],
        false,
    ),
    route(
        "PUT",
        "/api/v1/catalog/{sku}",
        "Add or replace a catalog entry; stores apply its reorder threshold to low-stock alerts.",
        Access::Roles(ADMIN),
        &[],
        false,
    ),
    route(
        "PUT",
        "/api/v1/alert-rules/{name}",
        "Set an alert rule stores apply (lowStockDefault, salesMilestones).",
        Access::Roles(ADMIN),
        &[],
        false,
    ),
    route(
        "GET",
        "/api/v1/alerts",
        "Alerts, newest first.",
        Access::Roles(ALL),
        &[
            ("stores", "comma-separated store ids"),
            ("state", "open | acknowledged | resolved"),
            ("before", "raised before (keyset page)"),
            ("limit", "page length"),
        ],
        true,
    ),
    route(
        "POST",
        "/api/v1/alerts/{alert_id}/acknowledge",
        "Acknowledge an alert.",
        Access::Roles(HANDLERS),
        &[],
        true,
    ),
    route(
        "POST",
        "/api/v1/alerts/{alert_id}/resolve",
        "Resolve an alert.",
        Access::Roles(HANDLERS),
        &[],
        true,
    ),
    route(
        "GET",
        "/api/v1/dead-letters",
        "Records that could not be accepted.",
        Access::Roles(ADMIN),
        &[("limit", "page length")],
        false,
    ),
    route(
        "POST",
        "/api/v1/live/ticket",
        "A ticket for one live stream (?ticket=), valid 30 s, accepted by the live routes only; needs a bearer header.",
        Access::Roles(ALL),
        &[],
        false,
    ),
    route(
        "GET",
        "/api/v1/views",
        "The caller's saved views (explorer settings), newest first.",
        Access::Roles(ALL),
        &[],
        false,
    ),
    route(
        "PUT",
        "/api/v1/views/{view_id}",
        "Create or replace one of the caller's saved views (JSON: name, view object of at most 4 KiB; at most 50 per user).",
        Access::Roles(ALL),
        &[],
        false,
    ),
    route(
        "DELETE",
        "/api/v1/views/{view_id}",
        "Delete one of the caller's saved views.",
        Access::Roles(ALL),
        &[],
        false,
    ),
    route(
        "GET",
        "/api/v1/live/sse",
        "Live sales ticks and alert changes (Server-Sent Events).",
        Access::Roles(ALL),
        &[
            ("stores", "comma-separated store ids"),
            (
                "ticket",
                "a live-stream ticket from POST /api/v1/live/ticket, for clients that cannot set headers",
            ),
        ],
        true,
    ),
    route(
        "GET",
        "/api/v1/live/ws",
        "Live sales ticks and alert changes (WebSocket, JSON text frames).",
        Access::Roles(ALL),
        &[
            ("stores", "comma-separated store ids"),
            (
                "ticket",
                "a live-stream ticket from POST /api/v1/live/ticket, for clients that cannot set headers",
            ),
        ],
        true,
    ),
];

/// The route spec for a method and matched path.
pub fn find(method: &str, path: &str) -> Option<&'static RouteSpec> {
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi() -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let mut paths = Map::new();
    for route in ROUTES {
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(route.query.iter().map(|(name, description)| {
            json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}})
        }));
        let roles: Vec<&str> = match route.access {
            Access::Public => Vec::new(),
            Access::Roles(roles) => roles.iter().map(|r| r.as_str()).collect(),
        };
        let mut op = json!({
            "summary": route.summary,
            "parameters": parameters,
            "x-roles": roles,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "Bad request; the body names the parameter and the reason"},
                "401": {"description": "Missing, expired or invalid token"},
                "403": {"description": "The role may not do this"},
                "404": {"description": "Not found (also: a store or tenant the caller may not see)"},
                "429": {"description": "Rate limited; see Retry-After"}
            }
        });
        if matches!(route.access, Access::Roles(_)) {
            op["security"] = json!([{"bearer": []}]);
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[route.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "storesync hub API", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "paths": paths,
    })
}

/// A small HTML page listing the routes.
pub fn docs_html() -> String {
    let mut rows = String::new();
    for r in ROUTES {
        let roles = match r.access {
            Access::Public => "public".to_owned(),
            Access::Roles(roles) => roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let query: Vec<String> = r
            .query
            .iter()
            .map(|(n, d)| format!("<code>{n}</code>: {d}"))
            .collect();
        rows.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            r.method,
            r.path,
            r.summary,
            roles,
            query.join("<br>")
        ));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>storesync hub API</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}}</style>\
         </head><body><h1>storesync hub API</h1><p>Machine-readable: <a href=\"/api/openapi.json\">/api/openapi.json</a>. \
         Authenticate with <code>Authorization: Bearer &lt;token&gt;</code> from <code>POST /oauth/token</code>.</p>\
         <table><tr><th>Method</th><th>Path</th><th>What</th><th>Roles</th><th>Query</th></tr>{rows}</table></body></html>"
    )
}
