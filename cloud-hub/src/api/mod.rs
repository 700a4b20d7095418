//! The web API (axum): dashboards, alerts, live streams, tokens.
//!
//! [`app`] builds the router from an [`AppState`]; tests drive it with
//! `tower::ServiceExt::oneshot`, [`serve`] puts it on a socket. Every `/api/v1` route is
//! listed in [`routes::ROUTES`], which is also the authorization table (a route missing
//! from it is refused) and the OpenAPI document.
//!
//! Isolation rules: the tenant comes only from the token; a store manager sees only the
//! assigned stores; a store or alert the caller may not see answers 404, exactly as one that
//! does not exist. Errors go through [`AppError`], which never shows internals.

mod docs;
pub mod routes;
mod store_doc;
pub mod ui;
pub mod views;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, Form, MatchedPath, Path, Query, Request, State,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use storesync_protocol::domain::AlertState;
use storesync_protocol::ids::{AlertId, Sku, StoreId, TenantId};
use storesync_protocol::rollup::{Granularity, SalesFigures, bucket_start};
use tokio_stream::wrappers::BroadcastStream;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument as _;

use crate::auth::{self, Caller, Issuer, Verifier};
use crate::cache::{Cache, Cached};
use crate::config::{AuthConfig, LimitsConfig};
use crate::metrics;
use crate::ratelimit::{RateLimiter, client_address};
use crate::store::{
    AlertQuery, AlertRecord, Change, DimKind, Principal, RefreshRecord, RefreshUse, Role,
    RollupQuery, Store, StoreError, StoreInfo, now_ms,
};
use routes::Access;

/// The one error type of the API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// 400 with a message naming the parameter.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("unauthorized")]
    Unauthorized,
    /// 403: the role may not do this.
    #[error("forbidden")]
    Forbidden,
    /// 404: absent, or not the caller's to see.
    #[error("not found")]
    NotFound,
    /// 429 with Retry-After seconds.
    #[error("rate limited")]
    TooManyRequests(u64),
    /// 503: too many live connections.
    #[error("busy")]
    Busy,
    /// 500; the cause is logged, never sent.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => AppError::NotFound,
            StoreError::Invalid(m) => AppError::BadRequest(m),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            AppError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required".into(),
            ),
            AppError::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "your role may not do this".into(),
            ),
            AppError::NotFound => (StatusCode::NOT_FOUND, "not_found", "not found".into()),
            AppError::TooManyRequests(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests".into(),
            ),
            AppError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many live connections".into(),
            ),
            AppError::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".into(),
                )
            }
        };
        let mut response =
            (status, Json(json!({"error": code, "message": message}))).into_response();
        if let AppError::TooManyRequests(seconds) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

type ApiResult<T> = Result<T, AppError>;

/// Everything a request handler needs.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
    ui: Arc<ui::UiAssets>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    verifier: Verifier,
    /// Accepts only live-stream tickets (see [`LIVE_TICKET_TTL_S`]).
    tickets: Verifier,
    issuer: Issuer,
    auth: AuthConfig,
    limits: LimitsConfig,
    cache: Cache,
    limiter: RateLimiter,
    live: AtomicUsize,
    /// Permits to compute a dashboard response (see `LimitsConfig::dashboard_queries_max`).
    dashboard_queries: tokio::sync::Semaphore,
    /// The tenant's stores, briefly: every scoped request needs them.
    stores: std::sync::Mutex<HashMap<String, StoresEntry>>,
}

/// A tenant's stores and when they were read.
type StoresEntry = (Instant, Arc<Vec<StoreInfo>>);

/// How long the list of a tenant's stores is reused without asking the database.
const STORES_TTL: Duration = Duration::from_secs(5);

impl AppState {
    /// State over a migrated store. `verifier` should accept `issuer`'s tokens (see
    /// [`AppState::verifier_for`]).
    pub fn new(
        store: Arc<dyn Store>,
        issuer: Issuer,
        verifier: Verifier,
        auth: AuthConfig,
        limits: LimitsConfig,
        cache: Cache,
    ) -> AppState {
        let limiter = RateLimiter::new(limits.rate_per_s, limits.rate_burst);
        let dashboard_queries = match limits.dashboard_queries_max {
            0 => 2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let tickets = issuer.ticket_verifier(TICKET_LEEWAY_S).unwrap_or_else(|e| {
            // Without a key no ticket verifies: live streams then need a bearer header.
            tracing::error!(error = %e, "live-stream tickets are disabled");
            Verifier::new(Vec::new(), 0)
        });
        AppState {
            ui: Arc::new(ui::UiAssets::from_dir(ui::DEFAULT_DIR)),
            inner: Arc::new(Inner {
                store,
                verifier,
                tickets,
                issuer,
                auth,
                limits,
                cache,
                limiter,
                live: AtomicUsize::new(0),
                dashboard_queries: tokio::sync::Semaphore::new(dashboard_queries),
                stores: std::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The same state serving the web UI from `ui` (see [`ui::UiAssets::resolve`]).
    pub fn with_ui(mut self, ui: ui::UiAssets) -> AppState {
        self.ui = Arc::new(ui);
        self
    }

    /// A verifier for `issuer`'s own tokens plus `external` keys.
    pub fn verifier_for(
        issuer: &Issuer,
        external: Vec<auth::VerifyKey>,
        leeway_s: u64,
    ) -> Result<Verifier, auth::AuthError> {
        let mut keys = vec![issuer.verify_key()?];
        keys.extend(external);
        Ok(Verifier::new(keys, leeway_s))
    }

    /// The tenant's stores (reused for a few seconds).
    async fn tenant_stores(&self, tenant: &TenantId) -> Result<Arc<Vec<StoreInfo>>, StoreError> {
        if let Some((at, stores)) = self
            .inner
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant.as_str())
            && at.elapsed() < STORES_TTL
        {
            return Ok(stores.clone());
        }
        self.tenant_stores_reloaded(tenant).await
    }

    /// The tenant's stores read again (and cached), whatever the cached list's age.
    async fn tenant_stores_reloaded(
        &self,
        tenant: &TenantId,
    ) -> Result<Arc<Vec<StoreInfo>>, StoreError> {
        let stores = Arc::new(self.inner.store.stores(tenant).await?);
        self.inner
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.as_str().to_owned(), (Instant::now(), stores.clone()));
        Ok(stores)
    }

    /// Drops the cached store list of `tenant` (of every tenant when `None`).
    fn forget_stores(&self, tenant: Option<&str>) {
        let mut stores = self.inner.stores.lock().unwrap_or_else(|p| p.into_inner());
        match tenant {
            Some(tenant) => {
                stores.remove(tenant);
            }
            None => stores.clear(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The token issuer.
    pub fn issuer(&self) -> &Issuer {
        &self.inner.issuer
    }

    /// The dashboard cache.
    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    /// Starts the task that drops cache entries made stale by committed changes (from any
    /// hub process on the same database).
    pub fn spawn_invalidation(&self) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        let mut changes = self.inner.store.subscribe();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(change) => {
                        if change.is_tenant_wide() {
                            // A store edit may be among them: read the store list again.
                            state.forget_stores(Some(&change.tenant));
                        }
                        state.inner.cache.invalidate(&change)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Missed changes: nothing cached can be trusted.
                        state.forget_stores(None);
                        state.inner.cache.invalidate_all();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    }
}

impl Cache {
    /// Drops everything.
    pub fn invalidate_all(&self) {
        self.clear();
    }
}

/// The router.
pub fn app(state: AppState) -> Router {
    let body_max = state.inner.limits.body_bytes_max;
    let timeout = Duration::from_millis(state.inner.limits.request_timeout_ms);
    let bounded = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/openapi.json", get(openapi))
        .route("/api/docs", get(docs))
        .route("/oauth/token", post(token))
        .route("/api/v1/auth/signing-key", get(signing_key))
        .route("/api/v1/me", get(me))
        .route("/api/v1/users", post(add_user))
        .route("/api/v1/stores", get(list_stores))
        .route("/api/v1/stores/{store_id}", get(one_store))
        .route(
            "/api/v1/stores/{store_id}/document",
            get(docs::store_document),
        )
        .route(
            "/api/v1/stores/{store_id}/adjustments",
            post(docs::post_adjustment),
        )
        .route(
            "/api/v1/stores/{store_id}/tasks",
            get(store_doc::tasks).post(store_doc::post_task),
        )
        .route(
            "/api/v1/stores/{store_id}/tasks/{task_id}/complete",
            post(store_doc::complete_task),
        )
        .route(
            "/api/v1/stores/{store_id}/settings",
            get(store_doc::settings),
        )
        .route(
            "/api/v1/stores/{store_id}/settings/{name}",
            put(store_doc::put_setting),
        )
        .route("/api/v1/transfers", post(docs::post_transfer))
        .route("/api/v1/catalog", get(docs::catalog))
        .route("/api/v1/catalog/{sku}", put(docs::put_catalog_item))
        .route("/api/v1/alert-rules/{name}", put(docs::put_alert_rule))
        .route("/api/v1/sales/series", get(series_json))
        .route("/api/v1/sales/series.csv", get(series_csv))
        .route("/api/v1/sales/top-items", get(top_items))
        .route("/api/v1/sales/basket", get(basket))
        .route("/api/v1/inventory", get(inventory))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{alert_id}/acknowledge", post(acknowledge))
        .route("/api/v1/alerts/{alert_id}/resolve", post(resolve))
        .route("/api/v1/dead-letters", get(dead_letters))
        .route("/api/v1/live/ticket", post(live_ticket))
        .route("/api/v1/views", get(views::list))
        .route(
            "/api/v1/views/{view_id}",
            axum::routing::put(views::put).delete(views::delete),
        )
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    // Live streams are long-lived: no request timeout.
    let live = Router::new()
        .route("/api/v1/live/sse", get(live_sse))
        .route("/api/v1/live/ws", get(live_ws));
    bounded
        .merge(live)
        .route_layer(middleware::from_fn_with_state(state.clone(), guard))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(body_max))
        .layer(RequestBodyLimitLayer::new(body_max))
        .with_state(state)
}

/// Binds `addr` and serves until `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _invalidation = state.spawn_invalidation();
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// No route matched: the web UI's files and its client-side routes, or the API's 404.
async fn no_route(
    State(state): State<AppState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    match state.ui.respond(&method, &uri).await {
        Some(response) => response,
        None => AppError::NotFound.into_response(),
    }
}

/// How a request proves who it is.
enum Credential {
    /// `Authorization: Bearer <access token>`.
    Bearer(String),
    /// `?ticket=<live-stream ticket>` (live routes only).
    Ticket(String),
}

fn credential(headers: &HeaderMap, query: Option<&str>, allow_ticket: bool) -> Option<Credential> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| Credential::Bearer(token.trim().to_owned()));
    }
    if allow_ticket {
        return query?
            .split('&')
            .find_map(|kv| kv.strip_prefix("ticket="))
            .map(|t| Credential::Ticket(t.to_owned()));
    }
    None
}

/// The rate-limit key of a request's client address (see [`client_address`]).
fn address_key(req: &Request, trusted_proxies: &[std::net::IpAddr]) -> String {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    match client_address(peer, forwarded, trusted_proxies) {
        Some(address) => format!("addr:{address}"),
        None => "addr:unknown".into(),
    }
}

/// Takes one request from `key`'s budget.
fn spend(state: &AppState, key: &str) -> ApiResult<()> {
    state.inner.limiter.check(key).map_err(|retry| {
        metrics::global()
            .rate_limited
            .fetch_add(1, Ordering::Relaxed);
        AppError::TooManyRequests(retry)
    })
}

/// Authentication, authorization by the route table, rate limits and metrics.
///
/// Every request spends from one budget before it is answered, refusals included: a
/// public route's and a failed authentication's (no token, or one that does not verify)
/// from the client address's, an authenticated request's from its principal's, before
/// its role is judged. So hammering with missing or forged tokens ends in 429 like any
/// other flood, while a valid token from the same address keeps its own budget.
async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    // Cheap clones (a standard method is a constant, a matched path an `Arc<str>`).
    let method = req.method().clone();
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("", |p| p.as_str());
    let trusted_proxies = &state.inner.limits.trusted_proxies;
    let result = async {
        let spec = routes::find(method.as_str(), route).ok_or(AppError::Forbidden)?;
        let roles = match spec.access {
            Access::Public => return spend(&state, &address_key(&req, trusted_proxies)),
            Access::Roles(roles) => roles,
        };
        // Browsers cannot set headers on EventSource or WebSocket: the live streams also
        // take a short-lived ticket in the query, and only they do.
        let allow_ticket = method == "GET" && route.starts_with("/api/v1/live/");
        let verified = match credential(req.headers(), req.uri().query(), allow_ticket) {
            None => Err(auth::AuthError::Missing),
            Some(Credential::Bearer(token)) => state.inner.verifier.verify(&token).await,
            Some(Credential::Ticket(ticket)) => state.inner.tickets.verify(&ticket).await,
        };
        let caller = match verified {
            Ok(caller) => caller,
            Err(e) => {
                tracing::debug!(error = %e, "token refused");
                spend(&state, &address_key(&req, trusted_proxies))?;
                return Err(AppError::Unauthorized);
            }
        };
        spend(
            &state,
            &format!("principal:{}:{}", caller.tenant, caller.subject),
        )?;
        if !roles.contains(&caller.role) {
            return Err(AppError::Forbidden);
        }
        req.extensions_mut().insert(caller);
        Ok::<_, AppError>(())
    }
    .await;
    let span = tracing::info_span!(
        "http",
        method = %method,
        route = %route,
        status = tracing::field::Empty
    );
    let response = match result {
        Ok(()) => next.run(req).instrument(span.clone()).await,
        Err(e) => e.into_response(),
    };
    span.record("status", response.status().as_u16());
    metrics::global().record_request(
        method.as_str(),
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

// ---------------------------------------------------------------------------------------
// Parameters

type Params = Query<HashMap<String, String>>;

fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.get(name).map(String::as_str).filter(|s| !s.is_empty())
}

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;

/// A time parameter, as Unix milliseconds. Only instants a date can be written for (years
/// -9999 to 9999) are accepted, so that range arithmetic on them (a few weeks either way)
/// stays far inside `i64` and every answer can print them.
fn parse_time(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
    let Some(text) = param(q, name) else {
        return Ok(None);
    };
    let ms = match text.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => storesync_protocol::time::EventTime::parse_rfc3339(text)
            .map(|t| t.unix_ms())
            .map_err(|_| {
                AppError::BadRequest(format!(
                    "{name}: expected RFC 3339 (2026-11-22T09:00:00Z) or Unix milliseconds"
                ))
            })?,
    };
    if jiff::Timestamp::from_millisecond(ms).is_err() {
        return Err(AppError::BadRequest(format!(
            "{name}: out of range (years -9999 to 9999)"
        )));
    }
    Ok(Some(ms))
}

fn parse_range(q: &HashMap<String, String>) -> ApiResult<(i64, i64)> {
    let from = parse_time(q, "from")?;
    let to = parse_time(q, "to")?.unwrap_or_else(now_ms);
    // By default a week back, or as far back as a date can be written.
    let from = from.unwrap_or_else(|| {
        to.saturating_sub(WEEK_MS)
            .max(jiff::Timestamp::MIN.as_millisecond())
    });
    if from >= to {
        return Err(AppError::BadRequest("from: must be before to".into()));
    }
    Ok((from, to))
}

fn parse_limit(q: &HashMap<String, String>, name: &str, default: u32, max: u32) -> ApiResult<u32> {
    match param(q, name) {
        None => Ok(default),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if n >= 1 && n <= max => Ok(n),
            _ => Err(AppError::BadRequest(format!(
                "{name}: must be an integer from 1 to {max}"
            ))),
        },
    }
}

fn parse_stores(q: &HashMap<String, String>) -> ApiResult<Option<Vec<StoreId>>> {
    let Some(text) = param(q, "stores") else {
        return Ok(None);
    };
    let stores: Result<Vec<StoreId>, _> = text.split(',').map(|s| StoreId::new(s.trim())).collect();
    stores
        .map(Some)
        .map_err(|e| AppError::BadRequest(format!("stores: {e}")))
}

/// The stores a request may read: the requested ones (checked to exist in the tenant and,
/// for managers, to be assigned) or all the caller may see (`None`: the whole tenant).
async fn scope(
    state: &AppState,
    caller: &Caller,
    requested: Option<Vec<StoreId>>,
) -> ApiResult<Option<Vec<StoreId>>> {
    match (caller.role, requested) {
        (Role::StoreManager, None) => Ok(Some(caller.stores.clone())),
        (Role::StoreManager, Some(list)) => {
            if list.iter().all(|s| caller.stores.contains(s)) {
                Ok(Some(list))
            } else {
                Err(AppError::NotFound)
            }
        }
        (_, None) => Ok(None),
        (_, Some(list)) => {
            let known = state.tenant_stores(&caller.tenant).await?;
            if list.iter().all(|s| known.iter().any(|k| &k.store_id == s)) {
                Ok(Some(list))
            } else {
                Err(AppError::NotFound)
            }
        }
    }
}

fn money(e4: i64) -> Value {
    finite(e4 as f64 / 10_000.0)
}

/// A JSON number, or null for NaN and infinities (which JSON cannot carry).
pub fn finite(x: f64) -> Value {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn figures_json(f: &SalesFigures) -> Value {
    json!({
        "revenue": money(f.revenue_e4),
        "units": f.units,
        "transactions": f.transactions,
        "refunds": f.refunds,
        "refundAmount": money(f.refund_amount_e4),
        "voids": f.voids,
    })
}

fn rfc3339(ms: i64) -> String {
    storesync_protocol::time::EventTime::from_unix_ms(ms, 0).to_rfc3339()
}

async fn cached(
    state: &AppState,
    caller: &Caller,
    key: String,
    stores: &Option<Vec<StoreId>>,
    compute: impl std::future::Future<Output = ApiResult<Cached>>,
) -> ApiResult<Response> {
    let tenant = caller.tenant.as_str();
    let key = format!(
        "{key}|scope={:?}",
        stores
            .as_ref()
            .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>())
    );
    let cache = &state.inner.cache;
    let (value, hit) =
        match cache.get(tenant, &key) {
            Some(value) => (value, "hit"),
            // Identical requests missing together wait for the first and share its result.
            None => match cache.flight(tenant, &key).await {
                Err(value) => (value, "hit"),
                Ok(_flight) => {
                    let _permit =
                        state.inner.dashboard_queries.acquire().await.map_err(|_| {
                            AppError::Internal("dashboard query permits closed".into())
                        })?;
                    let generation = cache.generation(tenant);
                    let value = compute.await?;
                    let covered = stores
                        .as_ref()
                        .map(|s| s.iter().map(|s| s.as_str().to_owned()).collect());
                    cache.put(tenant, &key, generation, covered, value.clone());
                    (value, "miss")
                }
            },
        };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(value.content_type),
            ),
            (
                header::HeaderName::from_static("x-cache"),
                HeaderValue::from_static(hit),
            ),
        ],
        Body::from(value.body),
    )
        .into_response())
}

fn json_cached(v: &Value) -> Cached {
    Cached {
        body: bytes::Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        content_type: "application/json",
    }
}

// ---------------------------------------------------------------------------------------
// Public routes

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.inner.store.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::global().render(),
    )
        .into_response()
}

async fn openapi() -> Json<Value> {
    Json(routes::openapi())
}

async fn docs() -> Html<String> {
    Html(routes::docs_html())
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: String,
    tenant: Option<String>,
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": error})),
    )
        .into_response()
}

async fn token(State(state): State<AppState>, Form(form): Form<TokenForm>) -> Response {
    match token_inner(&state, form).await {
        Ok(body) => ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response(),
        Err(e) => e,
    }
}

async fn check_secret(secret: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || auth::verify_secret(&secret, &hash))
        .await
        .unwrap_or(false)
}

async fn token_inner(state: &AppState, form: TokenForm) -> Result<Value, Response> {
    let store = &state.inner.store;
    let internal = |e: StoreError| AppError::from(e).into_response();
    let tenant_of = |t: Option<String>| t.and_then(|t| TenantId::new(t).ok());
    let (tenant, principal, family) = match form.grant_type.as_str() {
        "password" | "client_credentials" => {
            let is_client = form.grant_type == "client_credentials";
            let (name, secret) = if is_client {
                (form.client_id, form.client_secret)
            } else {
                (form.username, form.password)
            };
            let bad = if is_client {
                oauth_error(StatusCode::UNAUTHORIZED, "invalid_client")
            } else {
                oauth_error(StatusCode::BAD_REQUEST, "invalid_grant")
            };
            let (Some(tenant), Some(name), Some(secret)) = (tenant_of(form.tenant), name, secret)
            else {
                return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_request"));
            };
            let Some(principal) = store
                .principal(&tenant, &name, is_client)
                .await
                .map_err(internal)?
            else {
                return Err(bad);
            };
            if !check_secret(secret, principal.secret_hash.clone()).await {
                return Err(bad);
            }
            (
                tenant,
                principal,
                (!is_client).then(|| uuid::Uuid::new_v4().to_string()),
            )
        }
        "refresh_token" => {
            let Some(token) = form.refresh_token else {
                return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_request"));
            };
            let Some(tenant) = auth::refresh_tenant(&token) else {
                return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_grant"));
            };
            let record = match store
                .use_refresh(&tenant, &auth::refresh_hash(&token), now_ms())
                .await
                .map_err(internal)?
            {
                RefreshUse::Fresh(record) => record,
                RefreshUse::Replayed | RefreshUse::Invalid => {
                    return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_grant"));
                }
            };
            let Some(principal) = store
                .principal(&tenant, &record.subject, record.is_client)
                .await
                .map_err(internal)?
            else {
                return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_grant"));
            };
            (tenant, principal, Some(record.family))
        }
        _ => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
            ));
        }
    };
    let caller = Caller {
        tenant: tenant.clone(),
        subject: principal.name.clone(),
        role: principal.role,
        stores: principal.stores.clone(),
    };
    let now_s = (now_ms() / 1000) as u64;
    let ttl = state.inner.auth.access_ttl_s;
    let access = state
        .inner
        .issuer
        .issue(&caller, now_s, ttl)
        .map_err(|e| AppError::Internal(e.to_string()).into_response())?;
    let mut body = json!({"access_token": access, "token_type": "Bearer", "expires_in": ttl});
    if let Some(family) = family {
        let (refresh, hash) = auth::new_refresh_token(&tenant);
        store
            .insert_refresh(
                &tenant,
                &RefreshRecord {
                    token_hash: hash,
                    family,
                    subject: principal.name,
                    is_client: principal.is_client,
                    expires_ms: now_ms() + (state.inner.auth.refresh_ttl_s as i64) * 1000,
                },
            )
            .await
            .map_err(internal)?;
        body["refresh_token"] = Value::String(refresh);
    }
    Ok(body)
}

// ---------------------------------------------------------------------------------------
// Identity and administration

async fn signing_key(State(state): State<AppState>) -> Json<Value> {
    let issuer = &state.inner.issuer;
    Json(json!({
        "algorithm": "EdDSA",
        "issuer": issuer.issuer,
        "audience": issuer.audience,
        "kid": issuer.kid,
        "pem": issuer.public_key_pem(),
        "jwk": issuer.public_jwk(),
    }))
}

async fn me(Extension(caller): Extension<Caller>) -> Json<Value> {
    Json(json!({
        "tenant": caller.tenant.as_str(),
        "subject": caller.subject,
        "role": caller.role.as_str(),
        "stores": caller.stores.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    }))
}

#[derive(Debug, Deserialize)]
struct NewUser {
    username: String,
    password: String,
    role: String,
    #[serde(default)]
    stores: Vec<String>,
}

async fn add_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let user: NewUser =
        serde_json::from_slice(&body).map_err(|e| AppError::BadRequest(format!("body: {e}")))?;
    if user.username.is_empty() || user.username.len() > 128 {
        return Err(AppError::BadRequest("username: 1 to 128 characters".into()));
    }
    if user.password.len() < 8 || user.password.len() > 1024 {
        return Err(AppError::BadRequest(
            "password: 8 to 1024 characters".into(),
        ));
    }
    let role = Role::parse(&user.role)
        .ok_or_else(|| AppError::BadRequest("role: admin, analyst or store_manager".into()))?;
    let stores: Vec<StoreId> = user
        .stores
        .iter()
        .map(StoreId::new)
        .collect::<Result<_, _>>()
        .map_err(|e| AppError::BadRequest(format!("stores: {e}")))?;
    let known = state.inner.store.stores(&caller.tenant).await?;
    if let Some(unknown) = stores
        .iter()
        .find(|s| !known.iter().any(|k| &k.store_id == *s))
    {
        return Err(AppError::BadRequest(format!(
            "stores: {unknown} is not a store of this tenant"
        )));
    }
    let cost = state.inner.auth.hash_cost;
    let password = user.password;
    let hash = tokio::task::spawn_blocking(move || auth::hash_secret(&password, cost))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|e| AppError::Internal(e.to_string()))?;
    state
        .inner
        .store
        .upsert_principal(
            &caller.tenant,
            &Principal {
                name: user.username.clone(),
                is_client: false,
                secret_hash: hash,
                role,
                stores,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"username": user.username, "role": role.as_str()})),
    )
        .into_response())
}

async fn dead_letters(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
) -> ApiResult<Json<Value>> {
    let limit = parse_limit(&q, "limit", 100, state.inner.limits.page_len_max)?;
    let rows = state
        .inner
        .store
        .dead_letters(&caller.tenant, limit)
        .await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|d| json!({"store": d.store_id, "eventKey": d.event_key, "reason": d.reason, "receivedAt": rfc3339(d.received_ms), "bytes": d.raw.len()}))
        .collect();
    Ok(Json(json!({"items": items})))
}

// ---------------------------------------------------------------------------------------
// Stores and sync status

/// Per-store sync summary: the watermark is the time up to which the hub holds everything
/// the store's devices recorded. A device that reported an empty backlog at its last
/// contact is complete up to that contact; otherwise up to its newest committed event.
/// The time up to which the hub holds everything the store's devices recorded (`None`: no
/// device, or one that never committed an event): the oldest of its devices' watermarks.
fn store_watermark(info: &StoreInfo, devices: &[crate::store::DeviceStatus]) -> Option<i64> {
    devices
        .iter()
        .filter(|d| d.store_id == info.store_id)
        .map(device_watermark)
        .try_fold(i64::MAX, |acc, w| w.map(|w| acc.min(w)))
        .filter(|w| *w != i64::MAX)
}

/// The time up to which the hub holds everything one device recorded (see
/// [`store_watermark`]).
fn device_watermark(d: &crate::store::DeviceStatus) -> Option<i64> {
    match (d.backlog, d.last_seen_ms) {
        (0, Some(seen)) => Some(seen.max(d.last_event_ms.unwrap_or(i64::MIN))),
        _ => d.last_event_ms,
    }
}

/// A device counts as connected while its contacts keep coming: a live session records one
/// every 5 to 10 s (handshake, throttled heartbeats, commits), so three missed ones mean
/// the session is gone, on whichever hub replica it was.
const CONNECTED_WITHIN_MS: i64 = 30_000;

fn device_connected(d: &crate::store::DeviceStatus, now: i64) -> bool {
    d.last_seen_ms
        .or(d.last_commit_ms)
        .is_some_and(|seen| now.saturating_sub(seen) <= CONNECTED_WITHIN_MS)
}

fn store_status(info: &StoreInfo, devices: &[crate::store::DeviceStatus], now: i64) -> Value {
    let mine: Vec<&crate::store::DeviceStatus> = devices
        .iter()
        .filter(|d| d.store_id == info.store_id)
        .collect();
    let watermark = store_watermark(info, devices);
    let last_seen = mine
        .iter()
        .filter_map(|d| d.last_seen_ms.or(d.last_commit_ms))
        .max();
    let backlog: u64 = mine.iter().map(|d| d.backlog).sum();
    let skew = mine
        .iter()
        .map(|d| d.clock_skew_ms)
        .max_by_key(|s| s.abs())
        .unwrap_or(0);
    json!({
        "storeId": info.store_id.as_str(),
        "name": info.name,
        "region": info.region,
        "timeZone": info.time_zone,
        "lastSeen": last_seen.map(rfc3339),
        "connected": mine.iter().any(|d| device_connected(d, now)),
        "backlog": backlog,
        "lagMs": watermark.map(|w| (now - w).max(0)),
        "clockSkewMs": skew,
        "completeUpTo": watermark.map(rfc3339),
        "devices": mine.iter().map(|d| json!({
            "deviceId": d.device_id.as_str(),
            "connected": device_connected(d, now),
            "lagMs": device_watermark(d).map(|w| (now - w).max(0)),
            "lastSeen": d.last_seen_ms.map(rfc3339),
            "lastCommit": d.last_commit_ms.map(rfc3339),
            "lastEvent": d.last_event_ms.map(rfc3339),
            "backlog": d.backlog,
            "clockSkewMs": d.clock_skew_ms,
        })).collect::<Vec<_>>(),
    })
}

async fn visible_stores(state: &AppState, caller: &Caller) -> ApiResult<Vec<StoreInfo>> {
    let all = state.inner.store.stores(&caller.tenant).await?;
    Ok(match caller.role {
        Role::StoreManager => all
            .into_iter()
            .filter(|s| caller.stores.contains(&s.store_id))
            .collect(),
        _ => all,
    })
}

async fn list_stores(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
) -> ApiResult<Json<Value>> {
    let requested = scope(&state, &caller, parse_stores(&q)?).await?;
    let stores: Vec<StoreInfo> = visible_stores(&state, &caller)
        .await?
        .into_iter()
        .filter(|s| requested.as_ref().is_none_or(|r| r.contains(&s.store_id)))
        .collect();
    let devices = state.inner.store.device_status(&caller.tenant).await?;
    let now = now_ms();
    Ok(Json(
        json!({"items": stores.iter().map(|s| store_status(s, &devices, now)).collect::<Vec<_>>()}),
    ))
}

async fn one_store(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(store_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let store_id = StoreId::new(store_id).map_err(|_| AppError::NotFound)?;
    let stores = visible_stores(&state, &caller).await?;
    let info = stores
        .iter()
        .find(|s| s.store_id == store_id)
        .ok_or(AppError::NotFound)?;
    let devices = state.inner.store.device_status(&caller.tenant).await?;
    Ok(Json(store_status(info, &devices, now_ms())))
}

// ---------------------------------------------------------------------------------------
// Sales

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupBy {
    None,
    Store,
    Region,
    Item,
    Category,
    Payment,
}

impl GroupBy {
    fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "none" => GroupBy::None,
            "store" => GroupBy::Store,
            "region" => GroupBy::Region,
            "item" => GroupBy::Item,
            "category" => GroupBy::Category,
            "payment" => GroupBy::Payment,
            _ => return None,
        })
    }
}

struct Series {
    bucket: Granularity,
    group_by: GroupBy,
    from: i64,
    to: i64,
    groups: BTreeMap<String, BTreeMap<i64, SalesFigures>>,
    /// The tenant's stores, shared with [`AppState::tenant_stores`] rather than copied.
    all_stores: Arc<Vec<StoreInfo>>,
    /// The stores the request covers (`None`: all of them).
    scope: Option<Vec<StoreId>>,
    /// Read before the rollups, so a watermark never claims more than the rollups hold.
    devices: Vec<crate::store::DeviceStatus>,
}

impl Series {
    /// The stores the series covers.
    fn stores(&self) -> impl Iterator<Item = &StoreInfo> {
        self.all_stores.iter().filter(|s| {
            self.scope
                .as_ref()
                .is_none_or(|list| list.contains(&s.store_id))
        })
    }
}

async fn compute_series(
    state: &AppState,
    caller: &Caller,
    q: &HashMap<String, String>,
    stores: &Option<Vec<StoreId>>,
) -> ApiResult<Series> {
    let bucket = match param(q, "bucket") {
        None => Granularity::Hour,
        Some(b) => Granularity::parse(b)
            .ok_or_else(|| AppError::BadRequest("bucket: minute, hour, day or week".into()))?,
    };
    let group_by = match param(q, "group_by") {
        None => GroupBy::None,
        Some(g) => GroupBy::parse(g).ok_or_else(|| {
            AppError::BadRequest("group_by: none, store, region, item, category or payment".into())
        })?,
    };
    let (from, to) = parse_range(q)?;
    let width_ms: i64 = match bucket {
        Granularity::Minute => 60_000,
        Granularity::Hour => 3_600_000,
        Granularity::Day => DAY_MS,
        Granularity::Week => WEEK_MS,
    };
    let points_max = state.inner.limits.series_points_max;
    let buckets = to
        .checked_sub(from)
        .map(|span| span / width_ms)
        .and_then(|n| u64::try_from(n).ok());
    if buckets.is_none_or(|n| n > points_max) {
        return Err(AppError::BadRequest(format!(
            "from: range too long for bucket {} (at most {points_max} buckets)",
            bucket.as_str(),
        )));
    }
    let category = param(q, "category");
    let items: Option<Vec<String>> =
        param(q, "items").map(|s| s.split(',').map(|s| s.trim().to_owned()).collect());
    let mut values = items;
    if let Some(category) = category {
        let categories = state.inner.store.item_categories(&caller.tenant).await?;
        let in_category: Vec<String> = categories
            .iter()
            .filter(|(_, c)| c.as_str() == category)
            .map(|(s, _)| s.clone())
            .collect();
        values = Some(match values {
            Some(v) => v.into_iter().filter(|s| in_category.contains(s)).collect(),
            None => in_category,
        });
    }
    let dim = match group_by {
        GroupBy::Item | GroupBy::Category => DimKind::Item,
        GroupBy::Payment => DimKind::Payment,
        _ if values.is_some() => DimKind::Item,
        _ => DimKind::Store,
    };
    if bucket == Granularity::Minute && dim == DimKind::Item {
        return Err(AppError::BadRequest(
            "bucket: minute series are kept by store and payment method; use hour or coarser \
             for items and categories"
                .into(),
        ));
    }
    let stored = if bucket == Granularity::Week {
        Granularity::Day
    } else {
        bucket
    };
    let mut all_stores = state.tenant_stores(&caller.tenant).await?;
    let devices = state.inner.store.device_status(&caller.tenant).await?;
    let by_store =
        matches!(group_by, GroupBy::Store | GroupBy::Region) || bucket == Granularity::Week;
    // Week buckets start on a store's local Monday: reach back far enough for any zone.
    let query_from = if bucket == Granularity::Week {
        from.saturating_sub(WEEK_MS)
    } else {
        from
    };
    // The points of a series are its groups × buckets, and items or payment methods can
    // be many: the read itself is bounded. Where each row is one point (nothing summed
    // across rows), at most `series_points_max` rows are read; where several rows make one
    // point (weeks from days, regions from stores), at most `series_rows_max`, and the
    // points are counted as they form. Items are summed into categories by the database.
    let rows_summed = bucket == Granularity::Week || group_by == GroupBy::Region;
    let rows_max = if rows_summed {
        state.inner.limits.series_rows_max.max(points_max)
    } else {
        points_max
    };
    let rows = state
        .inner
        .store
        .rollups(
            &caller.tenant,
            &RollupQuery {
                granularity: stored,
                dim,
                from_ms: query_from,
                to_ms: to,
                stores: stores.clone(),
                values,
                by_store,
                // Weeks need a store only for its zone; stores and regions need the store.
                by_zone: !matches!(group_by, GroupBy::Store | GroupBy::Region),
                by_value: matches!(
                    group_by,
                    GroupBy::Item | GroupBy::Category | GroupBy::Payment
                ),
                by_category: group_by == GroupBy::Category,
                by_bucket: true,
                limit: Some(rows_max.saturating_add(1)),
            },
        )
        .await?;
    if rows.len() as u64 > rows_max {
        return Err(if rows_summed {
            AppError::BadRequest(format!(
                "too many points: the series would sum more than {rows_max} rows; \
                 narrow the range or filter by stores or items"
            ))
        } else {
            too_many_points(points_max)
        });
    }
    // A row of a store added since the list was cached (stores are added by another
    // process): read the list again, or its rows would take UTC weeks and no region. With
    // weeks read by zone, one such store stands for its whole zone.
    let known = |stores: &[StoreInfo], id: &StoreId| stores.iter().any(|s| s.store_id == *id);
    if rows.iter().any(|r| {
        r.store_id
            .as_ref()
            .is_some_and(|id| !known(&all_stores, id))
    }) {
        all_stores = state.tenant_stores_reloaded(&caller.tenant).await?;
    }
    // Week buckets need each store's zone; regions need each store's region.
    let zones: HashMap<&str, jiff::tz::TimeZone> = if bucket == Granularity::Week {
        all_stores
            .iter()
            .filter_map(|s| {
                jiff::tz::TimeZone::get(&s.time_zone)
                    .ok()
                    .map(|tz| (s.store_id.as_str(), tz))
            })
            .collect()
    } else {
        HashMap::new()
    };
    let regions: HashMap<&str, &str> = all_stores
        .iter()
        .map(|s| (s.store_id.as_str(), s.region.as_str()))
        .collect();
    // Each row's group is found by name without allocating; a name is copied once, when
    // its group first appears (the all-stores daily read has 3,000 rows and 8 regions).
    let mut group_index: HashMap<&str, usize> = HashMap::new();
    let mut group_points: Vec<(String, BTreeMap<i64, SalesFigures>)> = Vec::new();
    let mut points: u64 = 0;
    for row in &rows {
        let store = row.store_id.as_ref().map(|s| s.as_str()).unwrap_or("");
        let at = if bucket == Granularity::Week {
            let tz = zones.get(store).cloned().unwrap_or(jiff::tz::TimeZone::UTC);
            bucket_start(row.bucket_ms, Granularity::Week, &tz)
        } else {
            row.bucket_ms
        };
        if at < query_from || (bucket == Granularity::Week && at.saturating_add(WEEK_MS) <= from) {
            continue;
        }
        let group: &str = match group_by {
            GroupBy::None => "all",
            GroupBy::Store => store,
            GroupBy::Region => regions.get(store).copied().unwrap_or_default(),
            GroupBy::Item | GroupBy::Payment | GroupBy::Category => &row.value,
        };
        let index = *group_index.entry(group).or_insert_with(|| {
            group_points.push((group.to_owned(), BTreeMap::new()));
            group_points.len() - 1
        });
        match group_points[index].1.entry(at) {
            std::collections::btree_map::Entry::Occupied(mut point) => {
                point.get_mut().add(&row.figures)
            }
            std::collections::btree_map::Entry::Vacant(point) => {
                points += 1;
                if points > points_max {
                    return Err(too_many_points(points_max));
                }
                point.insert(row.figures);
            }
        }
    }
    Ok(Series {
        bucket,
        group_by,
        from,
        to,
        groups: group_points.into_iter().collect(),
        all_stores: all_stores.clone(),
        scope: stores.clone(),
        devices,
    })
}

fn too_many_points(points_max: u64) -> AppError {
    AppError::BadRequest(format!(
        "too many points: a series has at most {points_max} (groups × buckets); narrow the \
         range, use a coarser bucket or filter by stores or items"
    ))
}

fn series_key(route: &str, q: &HashMap<String, String>) -> String {
    let mut pairs: Vec<(&String, &String)> =
        q.iter().filter(|(k, _)| k.as_str() != "ticket").collect();
    pairs.sort();
    // Without explicit `to`, "now" moves: round it to the minute so the key is stable.
    let mut key = format!("{route}?");
    for (k, v) in pairs {
        key.push_str(&format!("{k}={v}&"));
    }
    if !q.contains_key("to") {
        key.push_str(&format!("now={}", now_ms() / 60_000));
    }
    key
}

/// The JSON body of a sales series, serialized straight from these structs rather than
/// built as `serde_json::Value` maps first (a map and seven allocated keys per point, and a
/// full status object per store only to read two of its fields back). Fields are in the
/// order `json!` wrote them: sorted by name.
#[derive(serde::Serialize)]
struct SeriesJson<'a> {
    bucket: &'a str,
    from: String,
    #[serde(rename = "groupBy")]
    group_by: String,
    series: Vec<GroupJson<'a>>,
    #[serde(rename = "storesBehind")]
    stores_behind: Vec<&'a str>,
    to: String,
    watermarks: &'a [WatermarkJson<'a>],
}

#[derive(serde::Serialize)]
struct GroupJson<'a> {
    group: &'a str,
    points: Vec<PointJson>,
}

/// One bucket's figures, as [`figures_json`] writes them, with its start `t`.
#[derive(serde::Serialize)]
struct PointJson {
    #[serde(rename = "refundAmount")]
    refund_amount: f64,
    refunds: i64,
    revenue: f64,
    t: String,
    transactions: i64,
    units: i64,
    voids: i64,
}

impl PointJson {
    fn new(t: i64, f: &SalesFigures) -> PointJson {
        PointJson {
            refund_amount: f.refund_amount_e4 as f64 / 10_000.0,
            refunds: f.refunds,
            revenue: f.revenue_e4 as f64 / 10_000.0,
            t: rfc3339(t),
            transactions: f.transactions,
            units: f.units,
            voids: f.voids,
        }
    }
}

#[derive(serde::Serialize)]
struct WatermarkJson<'a> {
    #[serde(rename = "completeUpTo")]
    complete_up_to: Option<String>,
    #[serde(rename = "storeId")]
    store_id: &'a str,
    /// Not complete up to the series' end: listed in `storesBehind`.
    #[serde(skip)]
    before_to: bool,
}

async fn series_json(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
) -> ApiResult<Response> {
    let stores = scope(&state, &caller, parse_stores(&q)?).await?;
    let key = series_key("series", &q);
    cached(&state, &caller, key, &stores, async {
        let s = compute_series(&state, &caller, &q, &stores).await?;
        let watermarks: Vec<WatermarkJson> = s
            .stores()
            .map(|info| {
                let watermark = store_watermark(info, &s.devices);
                WatermarkJson {
                    complete_up_to: watermark.map(rfc3339),
                    store_id: info.store_id.as_str(),
                    before_to: watermark.is_none_or(|w| w < s.to),
                }
            })
            .collect();
        let body = SeriesJson {
            bucket: s.bucket.as_str(),
            from: rfc3339(s.from),
            group_by: format!("{:?}", s.group_by).to_lowercase(),
            series: s
                .groups
                .iter()
                .map(|(group, points)| GroupJson {
                    group,
                    points: points.iter().map(|(t, f)| PointJson::new(*t, f)).collect(),
                })
                .collect(),
            stores_behind: watermarks
                .iter()
                .filter(|w| w.before_to)
                .map(|w| w.store_id)
                .collect(),
            to: rfc3339(s.to),
            watermarks: &watermarks,
        };
        Ok(Cached {
            body: bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            content_type: "application/json",
        })
    })
    .await
}

async fn series_csv(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
) -> ApiResult<Response> {
    let stores = scope(&state, &caller, parse_stores(&q)?).await?;
    let key = series_key("series.csv", &q);
    cached(&state, &caller, key, &stores, async {
        let s = compute_series(&state, &caller, &q, &stores).await?;
        let mut writer = csv::Writer::from_writer(Vec::new());
        let csv_err = |e: csv::Error| AppError::Internal(e.to_string());
        writer
            .write_record([
                "group",
                "bucket_start",
                "revenue",
                "units",
                "transactions",
                "refunds",
                "refund_amount",
                "voids",
            ])
            .map_err(csv_err)?;
        for (group, points) in &s.groups {
            for (t, f) in points {
                writer
                    .write_record([
                        group.clone(),
                        rfc3339(*t),
                        storesync_protocol::money::Money::from_e4(f.revenue_e4).to_string(),
                        f.units.to_string(),
                        f.transactions.to_string(),
                        f.refunds.to_string(),
                        storesync_protocol::money::Money::from_e4(f.refund_amount_e4).to_string(),
                        f.voids.to_string(),
                    ])
                    .map_err(csv_err)?;
            }
        }
        let body = writer
            .into_inner()
            .map_err(|e| AppError::Internal(e.to_string()))?;
        Ok(Cached {
            body: body.into(),
            content_type: "text/csv; charset=utf-8",
        })
    })
    .await
}

fn summary_granularity(from: i64, to: i64) -> Granularity {
    if to - from > 31 * 86_400_000 {
        Granularity::Day
    } else {
        Granularity::Hour
    }
}

/// Each item's sales over the hours that start in `[from, to)`, in each store's time zone.
///
/// The local days of a zone that lie wholly in the range are read from the day rows (a row
/// per item and day), the hours before and after them from line items (the hub keeps no
/// item rows by hour: `store::item_hours`), so a week of a chain reads a day's worth of
/// line items rather than the week's. Stores are grouped by zone from the cached store
/// list (a new store or a zone change drops it on every replica); a tenant whose stores
/// share one zone reads its scope as given. Day rows keep the zone they were summed in, so
/// for a store whose zone changed, days before the change meet hour edges of the new zone.
async fn items_over(
    state: &AppState,
    tenant: &TenantId,
    from: i64,
    to: i64,
    stores: &Option<Vec<StoreId>>,
) -> ApiResult<Vec<crate::store::RollupRow>> {
    let known = state.tenant_stores(tenant).await?;
    let mut zones: BTreeMap<&str, Vec<StoreId>> = BTreeMap::new();
    for s in known.iter() {
        if stores
            .as_ref()
            .is_none_or(|scope| scope.contains(&s.store_id))
        {
            zones
                .entry(s.time_zone.as_str())
                .or_default()
                .push(s.store_id.clone());
        }
    }
    let mut reads: Vec<(Granularity, i64, i64, Option<Vec<StoreId>>)> = Vec::new();
    if zones.len() <= 1 {
        let days = match zones.keys().next() {
            Some(zone) => whole_days(from, to, &crate::store::time_zone(zone)?),
            None => None,
        };
        reads.extend(split_by_days(from, to, days, stores));
    } else {
        for (zone, ids) in zones {
            let days = whole_days(from, to, &crate::store::time_zone(zone)?);
            reads.extend(split_by_days(from, to, days, &Some(ids)));
        }
    }
    let mut sums: BTreeMap<String, SalesFigures> = BTreeMap::new();
    for (granularity, from_ms, to_ms, stores) in reads {
        let rows = state
            .inner
            .store
            .rollups(
                tenant,
                &RollupQuery {
                    granularity,
                    dim: DimKind::Item,
                    from_ms,
                    to_ms,
                    stores,
                    values: None,
                    by_store: false,
                    by_zone: false,
                    by_value: true,
                    by_category: false,
                    by_bucket: false,
                    limit: None,
                },
            )
            .await?;
        for row in rows {
            sums.entry(row.value).or_default().add(&row.figures);
        }
    }
    Ok(sums
        .into_iter()
        .map(|(value, figures)| crate::store::RollupRow {
            store_id: None,
            value,
            bucket_ms: 0,
            figures,
        })
        .collect())
}

/// The first and the last local midnight of `[from, to]` in `tz`, when at least one whole
/// day lies between them.
fn whole_days(from: i64, to: i64, tz: &jiff::tz::TimeZone) -> Option<(i64, i64)> {
    let start = bucket_start(from, Granularity::Day, tz);
    // The next midnight: a day lasts 23 to 25 hours.
    let first = if start == from {
        start
    } else {
        bucket_start(start.saturating_add(26 * 3_600_000), Granularity::Day, tz)
    };
    let last = bucket_start(to, Granularity::Day, tz);
    (first < last).then_some((first, last))
}

/// The reads of `[from, to)` for some stores: hours before the whole days, the days, hours
/// after them (or the range's hours alone).
fn split_by_days(
    from: i64,
    to: i64,
    days: Option<(i64, i64)>,
    stores: &Option<Vec<StoreId>>,
) -> Vec<(Granularity, i64, i64, Option<Vec<StoreId>>)> {
    let parts = match days {
        Some((first, last)) => vec![
            (Granularity::Hour, from, first),
            (Granularity::Day, first, last),
            (Granularity::Hour, last, to),
        ],
        None => vec![(Granularity::Hour, from, to)],
    };
    parts
        .into_iter()
        .filter(|(_, a, b)| a < b)
        .map(|(g, a, b)| (g, a, b, stores.clone()))
        .collect()
}

async fn top_items(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
) -> ApiResult<Response> {
    let stores = scope(&state, &caller, parse_stores(&q)?).await?;
    let (from, to) = parse_range(&q)?;
    let limit = parse_limit(&q, "limit", 10, 100)? as usize;
    let key = series_key("top", &q);
    cached(&state, &caller, key, &stores, async {
        let mut rows = items_over(&state, &caller.tenant, from, to, &stores).await?;
        rows.sort_by(|a, b| {
            b.figures
                .revenue_e4
                .cmp(&a.figures.revenue_e4)
                .then(a.value.cmp(&b.value))
        });
        let items: Vec<Value> = rows
            .iter()
            .take(limit)
            .map(|r| {
                let mut v = figures_json(&r.figures);
                v["sku"] = Value::String(r.value.clone());
                v
            })
            .collect();
        Ok(json_cached(
            &json!({"from": rfc3339(from), "to": rfc3339(to), "items": items}),
        ))
    })
    .await
}

async fn basket(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
) -> ApiResult<Response> {
    let stores = scope(&state, &caller, parse_stores(&q)?).await?;
    let (from, to) = parse_range(&q)?;
    let key = series_key("basket", &q);
    cached(&state, &caller, key, &stores, async {
        let rows = state
            .inner
            .store
            .rollups(
                &caller.tenant,
                &RollupQuery {
                    granularity: summary_granularity(from, to),
                    dim: DimKind::Store,
                    from_ms: from,
                    to_ms: to,
                    stores: stores.clone(),
                    values: None,
                    by_store: false,
                    by_zone: false,
                    by_value: false,
                    by_category: false,
                    by_bucket: false,
                    limit: None,
                },
            )
            .await?;
        let mut total = SalesFigures::default();
        for r in &rows {
            total.add(&r.figures);
        }
        let average = (total.transactions > 0)
            .then(|| total.revenue_e4 as f64 / 10_000.0 / total.transactions as f64);
        let mut body = figures_json(&total);
        body["from"] = Value::String(rfc3339(from));
        body["to"] = Value::String(rfc3339(to));
        body["averageBasketValue"] = average.map(finite).unwrap_or(Value::Null);
        body["averageBasketUnits"] = total.basket_units().map(finite).unwrap_or(Value::Null);
        Ok(json_cached(&body))
    })
    .await
}

async fn inventory(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
) -> ApiResult<Response> {
    let stores = scope(&state, &caller, parse_stores(&q)?).await?;
    let sku = param(&q, "sku")
        .map(Sku::new)
        .transpose()
        .map_err(|e| AppError::BadRequest(format!("sku: {e}")))?;
    let limit = parse_limit(&q, "limit", 100, state.inner.limits.page_len_max)? as usize;
    let offset: usize = param(&q, "offset")
        .map(|s| s.parse())
        .transpose()
        .map_err(|_| AppError::BadRequest("offset: must be a non-negative integer".into()))?
        .unwrap_or(0);
    let key = series_key("inventory", &q);
    cached(&state, &caller, key, &stores, async {
        let levels = crate::store::inventory::on_hand(
            &*state.inner.store,
            &caller.tenant,
            stores.as_deref(),
            sku.as_ref(),
        )
        .await?;
        let total = levels.len();
        let page: Vec<Value> = levels
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(store, sku, qty)| json!({"storeId": store.as_str(), "sku": sku.as_str(), "onHand": qty}))
            .collect();
        Ok(json_cached(&json!({"items": page, "total": total, "offset": offset, "limit": limit})))
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Alerts

fn alert_json(r: &AlertRecord) -> Value {
    let a = &r.alert;
    json!({
        "alertId": a.alert_id.as_str(),
        "kind": a.kind.as_str(),
        "severity": a.severity.as_str(),
        "storeId": a.store_id.as_str(),
        "subject": a.subject,
        "raisedAt": a.raised_at.to_rfc3339(),
        "state": a.state.as_str(),
        "changedBy": a.changed_by,
        "message": a.message,
        "facts": a.facts.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        "updatedAt": rfc3339(r.updated_ms),
    })
}

async fn list_alerts(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
) -> ApiResult<Json<Value>> {
    let stores = scope(&state, &caller, parse_stores(&q)?).await?;
    let limit = parse_limit(&q, "limit", 100, state.inner.limits.page_len_max)?;
    let state_filter = match param(&q, "state") {
        None => None,
        Some(s) if AlertState::parse(s).is_some() => Some(s.to_owned()),
        Some(_) => {
            return Err(AppError::BadRequest(
                "state: open, acknowledged or resolved".into(),
            ));
        }
    };
    let before = parse_time(&q, "before")?;
    let rows = state
        .inner
        .store
        .alerts(
            &caller.tenant,
            &AlertQuery {
                stores,
                state: state_filter,
                before_ms: before,
                limit,
            },
        )
        .await?;
    let next = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|r| r.alert.raised_at.unix_ms()))
        .flatten();
    Ok(Json(
        json!({"items": rows.iter().map(alert_json).collect::<Vec<_>>(), "nextBefore": next}),
    ))
}

async fn change_alert(
    state: &AppState,
    caller: &Caller,
    alert_id: String,
    to: AlertState,
) -> ApiResult<Json<Value>> {
    let alert_id = AlertId::new(alert_id).map_err(|_| AppError::NotFound)?;
    let existing = state
        .inner
        .store
        .alert(&caller.tenant, &alert_id)
        .await?
        .ok_or(AppError::NotFound)?;
    if caller.role == Role::StoreManager && !caller.stores.contains(&existing.alert.store_id) {
        return Err(AppError::NotFound);
    }
    let by = format!("{}:{}", caller.role.as_str(), caller.subject);
    let now = now_ms();
    let updated = state
        .inner
        .store
        .set_alert_state(&caller.tenant, &alert_id, to, &by, now)
        .await?
        .ok_or(AppError::NotFound)?;
    // The store's document carries the new state to the store's agent.
    crate::docs::mark_alert(
        &*state.inner.store,
        &caller.tenant,
        &existing.alert.store_id,
        &alert_id,
        to,
        &by,
        now,
    )
    .await?;
    Ok(Json(alert_json(&updated)))
}

async fn acknowledge(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(alert_id): Path<String>,
) -> ApiResult<Json<Value>> {
    change_alert(&state, &caller, alert_id, AlertState::Acknowledged).await
}

async fn resolve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(alert_id): Path<String>,
) -> ApiResult<Json<Value>> {
    change_alert(&state, &caller, alert_id, AlertState::Resolved).await
}

// ---------------------------------------------------------------------------------------
// Live streams

/// Lifetime of a live-stream ticket: long enough to open a stream, short enough that a
/// ticket seen in a URL (a proxy log, a browser history) is worthless moments later.
pub const LIVE_TICKET_TTL_S: u64 = 30;
/// Clock leeway for tickets (they are verified by the hub that issued them, or a replica
/// with the same key, so clocks agree closely).
const TICKET_LEEWAY_S: u64 = 5;

/// A ticket for `?ticket=` on the live routes, for the caller of this request. It names
/// the same tenant, role and stores as the caller's token, is accepted by no other route and
/// expires after [`LIVE_TICKET_TTL_S`]. Only a bearer header may ask for one.
async fn live_ticket(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    let now_s = (now_ms() / 1000) as u64;
    let ticket = state
        .inner
        .issuer
        .issue_ticket(&caller, now_s, LIVE_TICKET_TTL_S)
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"ticket": ticket, "expiresIn": LIVE_TICKET_TTL_S})),
    )
        .into_response())
}

struct LiveSlot(AppState);

impl Drop for LiveSlot {
    fn drop(&mut self) {
        self.0.inner.live.fetch_sub(1, Ordering::Relaxed);
    }
}

fn take_slot(state: &AppState) -> ApiResult<LiveSlot> {
    let n = state.inner.live.fetch_add(1, Ordering::Relaxed);
    let slot = LiveSlot(state.clone());
    if n >= state.inner.limits.live_connections_max {
        return Err(AppError::Busy);
    }
    Ok(slot)
}

/// The live messages for `caller` from one committed change.
fn live_messages(
    change: &Change,
    caller: &Caller,
    stores: &Option<Vec<StoreId>>,
) -> Vec<(&'static str, Value)> {
    if change.tenant != caller.tenant.as_str() {
        return Vec::new();
    }
    let visible = |store: &str| {
        stores
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s.as_str() == store))
    };
    let mut out = Vec::new();
    for tick in &change.sales {
        if visible(&tick.store) {
            out.push(("sales", json!({"storeId": tick.store, "revenue": money(tick.revenue_e4), "transactions": tick.transactions, "lastAt": rfc3339(tick.last_ms)})));
        }
    }
    if !change.alerts.is_empty() && change.stores.iter().any(|s| visible(s)) {
        out.push((
            "alerts",
            json!({"alertIds": change.alerts, "stores": change.stores}),
        ));
    }
    out
}

fn live_stream(
    state: &AppState,
    caller: Caller,
    stores: Option<Vec<StoreId>>,
) -> impl Stream<Item = (&'static str, Value)> + use<> {
    BroadcastStream::new(state.inner.store.subscribe()).flat_map(move |change| {
        let messages = match change {
            Ok(change) => live_messages(&change, &caller, &stores),
            Err(_) => vec![("resync", json!({"reason": "missed changes; reload"}))],
        };
        futures::stream::iter(messages)
    })
}

async fn live_sse(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
) -> ApiResult<Response> {
    let stores = scope(&state, &caller, parse_stores(&q)?).await?;
    let slot = take_slot(&state)?;
    let stream = live_stream(&state, caller, stores).map(move |(kind, value)| {
        let _hold = &slot;
        Ok::<_, Infallible>(SseEvent::default().event(kind).data(value.to_string()))
    });
    let hello = futures::stream::once(async {
        Ok::<_, Infallible>(SseEvent::default().event("ready").data("{}"))
    });
    Ok(Sse::new(hello.chain(stream))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

async fn live_ws(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let stores = scope(&state, &caller, parse_stores(&q)?).await?;
    let slot = take_slot(&state)?;
    let stream = live_stream(&state, caller, stores);
    Ok(ws
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| run_ws(socket, stream, slot)))
}

async fn run_ws(
    mut socket: WebSocket,
    stream: impl Stream<Item = (&'static str, Value)> + Send + 'static,
    _slot: LiveSlot,
) {
    let mut stream = Box::pin(stream);
    if socket
        .send(Message::Text(r#"{"type":"ready"}"#.into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some((kind, value)) = message else { break };
                let text = json!({"type": kind, "data": value}).to_string();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => {
                match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}
