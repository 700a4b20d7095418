//! The local HTTP API (axum) for POS integrations and the desktop app.
//!
//! | method and path | what |
//! | --- | --- |
//! | `POST /api/v1/transactions` | JSON object, array or NDJSON; per-record `accepted`, `duplicate`, `conflict` or `rejected` |
//! | `POST /api/v1/scans`, `POST /api/v1/adjustments` | the same for scanner events and stock adjustments |
//! | `POST /api/v1/imports/csv` | a CSV body (see [`crate::ingest::csv`]); answers the import report |
//! | `GET /api/v1/summary` | today so far vs the same weekday last week, same time of day |
//! | `GET /api/v1/rollups?granularity=&group=&from=&to=&limit=` | minute/hour/day/week by store/item/payment/register |
//! | `GET /api/v1/top-items?from=&to=&by=revenue\|units&limit=` | |
//! | `GET /api/v1/inventory?sku=&limit=` | on hand per SKU |
//! | `GET /api/v1/alerts?state=&limit=`, `GET /api/v1/alerts/stream` (SSE) | |
//! | `POST /api/v1/alerts/{id}/acknowledge`, `.../resolve` | |
//! | `GET /api/v1/dead-letters?state=&limit=`, `GET /api/v1/dead-letters/{id}` | |
//! | `POST /api/v1/dead-letters/{id}/resubmit` | the corrected record as JSON |
//! | `GET /api/v1/outbox` | identity, epoch link, streams and backlog |
//! | `GET /api/v1/sync` | the sync client's state: enrolled, connected, last contact and acknowledgement, clock skew, the last error (e.g. a refused certificate renewal), alarms |
//! | `GET /api/v1/documents` | the store and tenant documents as replicated here (heads, alert marks, tasks, settings, adjustments, catalog, rules) |
//! | `GET /api/v1/tasks`, `POST /api/v1/tasks`, `POST /api/v1/tasks/{id}/complete` | the store document's tasks, editable offline (see `api/store_doc.rs`) |
//! | `GET /api/v1/settings`, `PUT /api/v1/settings/{name}` | the store document's settings, `{"value": any}` |
//! | `GET /healthz`, `GET /metrics` | no token needed |
//!
//! Ingest status codes: 200 when every record is accepted or a duplicate; 207 when some
//! are and some are not; 409 when a single record is a conflicting duplicate; 422 when
//! every record was rejected; 400 when the body is not JSON at all; 413 over a size or
//! count limit; 503 when the queue or the disk is full. Every record answered with a 2xx
//! status (and every dead letter) is durable. Times in queries are RFC 3339 or Unix ms.

use std::sync::Arc;
use std::time::Duration;

mod store_doc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;
use storesync_protocol::domain::AlertState;
use storesync_protocol::rollup::{Granularity, bucket_start};
use tokio::sync::{broadcast, watch};

use crate::sync::client::SyncStatus;
use tokio_stream::StreamExt;

use crate::alerts::{self, AlertView};
use crate::auth::{AuthError, Principal, Verifier};
use crate::config::Settings;
use crate::ingest::{self, InputError, RecordKind};
use crate::inventory;
use crate::metrics::Metrics;
use crate::rollup::{self, Grouping};
use crate::store::{Store, StoreError};
use crate::writer::{Outcome, Submission, WriterHandle};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Configuration.
    pub settings: Arc<Settings>,
    /// Read side of the store.
    pub store: Store,
    /// The writer.
    pub writer: WriterHandle,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Live alerts.
    pub alerts: broadcast::Sender<AlertView>,
    /// Token checking, when required.
    pub verifier: Option<Verifier>,
    /// The replicated documents.
    pub docs: crate::docs::Docs,
    /// The sync client's state; `None` when the agent is not enrolled.
    pub sync: Option<watch::Receiver<SyncStatus>>,
}

/// The one error type of the API; internals are logged, never sent.
#[derive(Debug)]
pub enum AppError {
    /// 400 with field and reason.
    BadRequest(String, String),
    /// 401.
    Unauthorized(String),
    /// 403.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 413.
    TooLarge(String),
    /// 503.
    Unavailable(String),
    /// 504 (a read took longer than `read_timeout_ms`).
    Timeout,
    /// 500; the detail is logged only.
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull(_) => {
                AppError::Unavailable("the disk is full; nothing was recorded".into())
            }
            StoreError::Busy => {
                AppError::Unavailable("the ingest queue is full; retry later".into())
            }
            StoreError::Closed => AppError::Unavailable("the agent is shutting down".into()),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, field, message) = match self {
            AppError::BadRequest(field, reason) => {
                (StatusCode::BAD_REQUEST, "bad_request", Some(field), reason)
            }
            AppError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", None, m),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", None, m),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", None, m),
            AppError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", None, m),
            AppError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None, m),
            AppError::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                None,
                "the query took too long".into(),
            ),
            AppError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    None,
                    "internal error".into(),
                )
            }
        };
        let mut body = json!({"error": {"code": code, "message": message}});
        if let Some(field) = field {
            body["error"]["field"] = Value::from(field);
        }
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

type ApiResult<T> = Result<T, AppError>;

/// Builds the router. Every extractor and middleware layer takes its own copy of the
/// state for each request, so the state is shared behind one `Arc`: a copy is one atomic
/// increment instead of one per field.
pub fn app(state: AppState) -> Router {
    let state = Arc::new(state);
    let limit = state.settings.config.limits.body_bytes_max;
    let api = Router::new()
        .route("/transactions", post(post_transactions))
        .route("/scans", post(post_scans))
        .route("/adjustments", post(post_adjustments))
        .route("/imports/csv", post(post_csv))
        .route("/summary", get(get_summary))
        .route("/rollups", get(get_rollups))
        .route("/top-items", get(get_top_items))
        .route("/inventory", get(get_inventory))
        .route("/alerts", get(get_alerts))
        .route("/alerts/stream", get(get_alert_stream))
        .route("/alerts/{id}/acknowledge", post(post_acknowledge))
        .route("/alerts/{id}/resolve", post(post_resolve))
        .route("/dead-letters", get(get_dead_letters))
        .route("/dead-letters/{id}", get(get_dead_letter))
        .route("/dead-letters/{id}/resubmit", post(post_resubmit))
        .route("/outbox", get(get_outbox))
        .route("/sync", get(get_sync))
        .route("/documents", get(get_documents))
        .route(
            "/tasks",
            get(store_doc::get_tasks).post(store_doc::post_task),
        )
        .route("/tasks/{id}/complete", post(store_doc::post_complete))
        .route("/settings", get(store_doc::get_settings))
        .route(
            "/settings/{name}",
            axum::routing::put(store_doc::put_setting),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(get_health))
        .route("/metrics", get(get_metrics))
        // Handlers read bodies themselves with this limit; this layer is the backstop.
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn require_token(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = match &state.verifier {
        None => Ok(Principal {
            subject: "local".into(),
        }),
        Some(verifier) => {
            let header = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            verifier.check(header)
        }
    };
    match principal {
        Ok(p) => {
            request.extensions_mut().insert(p);
            next.run(request).await
        }
        Err(AuthError::Forbidden(m)) => AppError::Forbidden(m).into_response(),
        Err(e) => AppError::Unauthorized(e.to_string()).into_response(),
    }
}

/// Reads a body up to `body_bytes_max`, answering 413 that names the limit.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> ApiResult<bytes::Bytes> {
    let limit = state.settings.config.limits.body_bytes_max;
    let too_large = || {
        AppError::TooLarge(format!(
            "request body is larger than body_bytes_max = {limit}"
        ))
    };
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > limit as u64)
    {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

fn status_of(outcomes: &[Outcome]) -> StatusCode {
    let ok = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Accepted { .. } | Outcome::Duplicate))
        .count();
    if ok == outcomes.len() {
        StatusCode::OK
    } else if ok > 0 {
        StatusCode::MULTI_STATUS
    } else if outcomes.len() == 1 && matches!(outcomes.first(), Some(Outcome::Conflict { .. })) {
        StatusCode::CONFLICT
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

/// The answer to an ingest request: counts, then each record's outcome with its index.
/// Serialized straight from the outcomes: building a JSON tree first cost an allocation
/// per key on every request.
#[derive(Serialize)]
struct OutcomesBody<'a> {
    accepted: usize,
    duplicates: usize,
    conflicts: usize,
    rejected: usize,
    results: Vec<IndexedOutcome<'a>>,
}

#[derive(Serialize)]
struct IndexedOutcome<'a> {
    #[serde(flatten)]
    outcome: &'a Outcome,
    index: usize,
}

fn outcomes_body(outcomes: &[Outcome]) -> OutcomesBody<'_> {
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    OutcomesBody {
        accepted: count(|o| matches!(o, Outcome::Accepted { .. })),
        duplicates: count(|o| matches!(o, Outcome::Duplicate)),
        conflicts: count(|o| matches!(o, Outcome::Conflict { .. })),
        rejected: count(|o| matches!(o, Outcome::Rejected { .. })),
        results: outcomes
            .iter()
            .enumerate()
            .map(|(index, outcome)| IndexedOutcome { outcome, index })
            .collect(),
    }
}

/// Bodies up to this size (a POS's few transactions) are parsed where they arrive;
/// larger ones on a blocking thread.
const PARSE_INLINE_BYTES_MAX: usize = 64 * 1024;

async fn ingest_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    kind: RecordKind,
) -> ApiResult<Response> {
    state.metrics.http_request();
    let bytes = read_body(state, headers, body).await?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(AppError::BadRequest("$".into(), "the body is empty".into()));
    }
    let bytes_len = bytes.len();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let now = ingest::now_ms();
    let settings = Arc::clone(&state.settings);
    let parse = move || {
        let ctx = ingest::context(now, &settings.record_limits, &settings.store);
        ingest::json::parse_body(
            &bytes,
            content_type.as_deref(),
            kind,
            &ctx,
            settings.config.limits.records_per_request_max,
            "http",
        )
    };
    // The agent runs on one thread: a large body is parsed on a blocking thread so the
    // requests behind it (a POS waiting for its ack) are not held up.
    let parsed = if bytes_len > PARSE_INLINE_BYTES_MAX {
        tokio::task::spawn_blocking(parse)
            .await
            .map_err(|e| AppError::Internal(format!("parsing the body: {e}")))?
    } else {
        parse()
    };
    let submissions = parsed.map_err(|e| match e {
        InputError::TooMany { .. } => AppError::TooLarge(e.to_string()),
        InputError::Malformed { field, reason } => AppError::BadRequest(field, reason),
    })?;
    let whole_body_invalid = submissions.len() == 1
        && matches!(&submissions[0].parsed, Err(errors) if errors.iter().any(|e| e.field == "$" && e.reason.starts_with("invalid JSON")));
    let outcomes = submit(state, submissions, now).await?;
    let status = if whole_body_invalid {
        StatusCode::BAD_REQUEST
    } else {
        status_of(&outcomes)
    };
    Ok((status, axum::Json(outcomes_body(&outcomes))).into_response())
}

async fn submit(
    state: &AppState,
    submissions: Vec<Submission>,
    now: i64,
) -> ApiResult<Vec<Outcome>> {
    state.writer.submit(submissions, now).await.map_err(|e| {
        if e.is_unavailable() {
            state.metrics.http_busy();
        }
        AppError::from(e)
    })
}

async fn post_transactions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    ingest_body(&state, &headers, body, RecordKind::Transaction).await
}

async fn post_scans(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    ingest_body(&state, &headers, body, RecordKind::Scan).await
}

async fn post_adjustments(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    ingest_body(&state, &headers, body, RecordKind::Adjustment).await
}

async fn post_csv(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    state.metrics.http_request();
    let bytes = read_body(&state, &headers, body).await?;
    let report = ingest::csv::import(&bytes, "http", &state.settings, &state.writer).await?;
    let status = if report.fatal.is_some() && report.transactions == 0 {
        StatusCode::BAD_REQUEST
    } else if report.rejected > 0 || report.fatal.is_some() {
        if report.accepted + report.duplicates > 0 {
            StatusCode::MULTI_STATUS
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        }
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(report)).into_response())
}

/// Runs a read with the configured timeout.
async fn timed<T>(
    state: &AppState,
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> ApiResult<T> {
    let limit = Duration::from_millis(state.settings.config.limits.read_timeout_ms);
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(AppError::from),
        Err(_) => Err(AppError::Timeout),
    }
}

fn parse_time(field: &str, text: &str) -> ApiResult<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    storesync_protocol::EventTime::parse_rfc3339(text)
        .map(|t| t.unix_ms())
        .map_err(|e| AppError::BadRequest(field.into(), e.to_string()))
}

fn limit_of(limit: Option<usize>, default: usize) -> usize {
    limit.unwrap_or(default).clamp(1, 10_000)
}

#[derive(Debug, Deserialize)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    granularity: Option<String>,
    group: Option<String>,
    by: Option<String>,
    limit: Option<usize>,
}

fn range(q: &RangeQuery, default_span_ms: i64) -> ApiResult<(i64, i64)> {
    let to = match &q.to {
        Some(t) => parse_time("to", t)?,
        None => ingest::now_ms() + 60_000,
    };
    let from = match &q.from {
        Some(f) => parse_time("from", f)?,
        None => to - default_span_ms,
    };
    if from > to {
        return Err(AppError::BadRequest(
            "from".into(),
            "must not be after to".into(),
        ));
    }
    Ok((from, to))
}

async fn get_rollups(
    State(state): State<Arc<AppState>>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Response> {
    let granularity = match q.granularity.as_deref() {
        None => Granularity::Hour,
        Some(g) => Granularity::parse(g).ok_or_else(|| {
            AppError::BadRequest(
                "granularity".into(),
                "must be minute, hour, day or week".into(),
            )
        })?,
    };
    let grouping = match q.group.as_deref() {
        None => Grouping::Store,
        Some(g) => Grouping::parse(g).ok_or_else(|| {
            AppError::BadRequest(
                "group".into(),
                "must be store, item, payment or register".into(),
            )
        })?,
    };
    let (from, to) = range(&q, 86_400_000)?;
    let rows = timed(
        &state,
        rollup::query(
            state.store.reader(),
            &state.settings.tz,
            granularity,
            grouping,
            from,
            to,
            limit_of(q.limit, 1_000),
        ),
    )
    .await?;
    Ok(axum::Json(json!({"granularity": granularity.as_str(), "rows": rows})).into_response())
}

async fn get_top_items(
    State(state): State<Arc<AppState>>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Response> {
    let (from, to) = range(&q, 7 * 86_400_000)?;
    let by_units = match q.by.as_deref() {
        None | Some("revenue") => false,
        Some("units") => true,
        Some(_) => {
            return Err(AppError::BadRequest(
                "by".into(),
                "must be revenue or units".into(),
            ));
        }
    };
    let items = timed(
        &state,
        rollup::top_items(
            state.store.reader(),
            from,
            to,
            by_units,
            limit_of(q.limit, 10),
        ),
    )
    .await?;
    Ok(axum::Json(json!({"items": items})).into_response())
}

async fn get_summary(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    let tz = &state.settings.tz;
    let now = ingest::now_ms();
    let today = bucket_start(now, Granularity::Day, tz);
    let to = bucket_start(now, Granularity::Minute, tz) + 60_000;
    let week_ago = now - 7 * 86_400_000;
    let last_week_day = bucket_start(week_ago, Granularity::Day, tz);
    let last_week_to = bucket_start(week_ago, Granularity::Minute, tz) + 60_000;
    let pool = state.store.reader();
    let (current, previous) = timed(&state, async {
        let current = rollup::store_total(pool, today, to).await?;
        let previous = rollup::store_total(pool, last_week_day, last_week_to).await?;
        Ok((current, previous))
    })
    .await?;
    let change = (previous.revenue_e4 != 0).then(|| {
        (current.revenue_e4 - previous.revenue_e4) as f64 / previous.revenue_e4.abs() as f64
    });
    Ok(axum::Json(json!({
        "store": state.settings.store.as_str(),
        "asOfMs": now,
        "today": rollup::figures_json(&current),
        "sameWeekdayLastWeek": rollup::figures_json(&previous),
        "revenueChange": change,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct InventoryQuery {
    sku: Option<String>,
    limit: Option<usize>,
}

async fn get_inventory(
    State(state): State<Arc<AppState>>,
    Query(q): Query<InventoryQuery>,
) -> ApiResult<Response> {
    let rows = timed(
        &state,
        inventory::list(
            state.store.reader(),
            q.sku.as_deref(),
            limit_of(q.limit, 1_000),
        ),
    )
    .await?;
    Ok(axum::Json(json!({"items": rows})).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn get_alerts(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let filter = match q.state.as_deref() {
        None => None,
        Some(s) => Some(AlertState::parse(s).ok_or_else(|| {
            AppError::BadRequest(
                "state".into(),
                "must be open, acknowledged or resolved".into(),
            )
        })?),
    };
    let list = timed(
        &state,
        alerts::list(
            state.store.reader(),
            state.settings.store.as_str(),
            filter,
            limit_of(q.limit, 100),
        ),
    )
    .await?;
    Ok(axum::Json(json!({"alerts": list})).into_response())
}

async fn get_alert_stream(
    State(state): State<Arc<AppState>>,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let stream =
        tokio_stream::wrappers::BroadcastStream::new(state.alerts.subscribe()).filter_map(|item| {
            let alert = item.ok()?;
            let data = serde_json::to_string(&alert).ok()?;
            Some(Ok(SseEvent::default().event("alert").data(data)))
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn change_alert(
    state: Arc<AppState>,
    id: String,
    to: AlertState,
    principal: Principal,
) -> ApiResult<Response> {
    let now = ingest::now_ms();
    match state
        .writer
        .set_alert_state(id.clone(), to, principal.subject.clone(), now)
        .await?
    {
        Some(view) => {
            // The store's document carries the new state to the hub.
            state
                .docs
                .mark_alert(&id, to, &principal.subject, now)
                .await?;
            Ok(axum::Json(view).into_response())
        }
        None => Err(AppError::NotFound(format!("no alert {id}"))),
    }
}

async fn post_acknowledge(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    axum::Extension(principal): axum::Extension<Principal>,
) -> ApiResult<Response> {
    change_alert(state, id, AlertState::Acknowledged, principal).await
}

async fn post_resolve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    axum::Extension(principal): axum::Extension<Principal>,
) -> ApiResult<Response> {
    change_alert(state, id, AlertState::Resolved, principal).await
}

fn dead_letter_json(r: &sqlx::sqlite::SqliteRow, with_raw: bool) -> Value {
    let raw: Vec<u8> = r.get(5);
    let errors: Value = serde_json::from_str(&r.get::<String, _>(4)).unwrap_or(Value::Null);
    let mut v = json!({
        "id": r.get::<i64, _>(0),
        "receivedMs": r.get::<i64, _>(1),
        "source": r.get::<String, _>(2),
        "kind": r.get::<String, _>(3),
        "errors": errors,
        "rawBytes": raw.len(),
        "state": r.get::<String, _>(6),
    });
    if with_raw {
        // Text when it is UTF-8, hex otherwise, so the bytes are never altered.
        match std::str::from_utf8(&raw) {
            Ok(text) => v["rawText"] = Value::from(text),
            Err(_) => {
                v["rawHex"] =
                    Value::from(raw.iter().map(|b| format!("{b:02x}")).collect::<String>())
            }
        }
    }
    v
}

async fn get_dead_letters(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let rows = timed(&state, async {
        Ok(sqlx::query(
            "SELECT id, received_ms, source, kind, reason, raw, state FROM dead_letters \
             WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2",
        )
        .bind(q.state.clone())
        .bind(i64::try_from(limit_of(q.limit, 100)).unwrap_or(100))
        .fetch_all(state.store.reader())
        .await?)
    })
    .await?;
    let list: Vec<Value> = rows.iter().map(|r| dead_letter_json(r, false)).collect();
    Ok(axum::Json(json!({"deadLetters": list})).into_response())
}

async fn load_dead_letter(state: &AppState, id: i64) -> ApiResult<sqlx::sqlite::SqliteRow> {
    let row = timed(state, async {
        Ok(sqlx::query("SELECT id, received_ms, source, kind, reason, raw, state FROM dead_letters WHERE id = ?")
            .bind(id)
            .fetch_optional(state.store.reader())
            .await?)
    })
    .await?;
    row.ok_or_else(|| AppError::NotFound(format!("no dead letter {id}")))
}

async fn get_dead_letter(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let row = load_dead_letter(&state, id).await?;
    Ok(axum::Json(dead_letter_json(&row, true)).into_response())
}

async fn post_resubmit(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let row = load_dead_letter(&state, id).await?;
    let kind_name: String = row.get(3);
    let letter_state: String = row.get(6);
    if letter_state != "open" {
        return Err(AppError::BadRequest(
            "state".into(),
            format!("dead letter {id} is {letter_state}"),
        ));
    }
    let kind = RecordKind::parse(&kind_name).unwrap_or(RecordKind::Transaction);
    let bytes = read_body(&state, &headers, body).await?;
    let now = ingest::now_ms();
    let ctx = ingest::context(now, &state.settings.record_limits, &state.settings.store);
    let parsed = storesync_protocol::validate::parse_json(&bytes, ctx.limits)
        .map_err(|r| r.errors)
        .and_then(|value| ingest::json::validate(&value, kind, &ctx));
    let submission = Submission {
        source: format!("resubmit:{id}"),
        kind: kind.as_str(),
        raw: bytes.to_vec(),
        parsed,
        resubmit_of: Some(id),
    };
    let outcomes = submit(&state, vec![submission], now).await?;
    Ok((status_of(&outcomes), axum::Json(outcomes_body(&outcomes))).into_response())
}

async fn get_documents(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    Ok(axum::Json(state.docs.summary().await).into_response())
}

/// `GET /api/v1/sync`: whether the agent is enrolled and, if so, its sync client's state.
async fn get_sync(State(state): State<Arc<AppState>>) -> Response {
    let body = match &state.sync {
        None => json!({"enrolled": false}),
        Some(status) => {
            let mut body = serde_json::to_value(&*status.borrow()).unwrap_or_default();
            if let Some(map) = body.as_object_mut() {
                map.insert("enrolled".into(), Value::Bool(true));
            }
            body
        }
    };
    axum::Json(body).into_response()
}

async fn get_outbox(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    let streams = timed(&state, state.store.outbox_streams()).await?;
    let identity = state.store.identity();
    let list: Vec<Value> = streams
        .iter()
        .map(|s| {
            json!({
                "epoch": s.epoch.0.to_string(),
                "class": s.class.as_str(),
                "head": s.head.seq.0,
                "acked": s.acked.0,
                "backlog": s.backlog(),
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "tenant": identity.tenant.as_str(),
        "store": identity.store.as_str(),
        "device": identity.device.as_str(),
        "epoch": identity.epoch.0.to_string(),
        "parentEpoch": identity.link.as_ref().map(|l| l.parent.0.to_string()),
        "backlog": streams.iter().map(|s| s.backlog()).sum::<u64>(),
        "streams": list,
    }))
    .into_response())
}

async fn get_health(State(state): State<Arc<AppState>>) -> Response {
    let db = timed(&state, state.store.quick_check()).await;
    let backlog = timed(&state, state.store.backlog()).await.ok();
    let disk_free = free_bytes(&state.settings.config.data_dir);
    let db_ok = matches!(db, Ok(true));
    let low_disk = disk_free.is_some_and(|b| b < 64 * 1024 * 1024);
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let db_bytes = std::fs::metadata(state.store.db_path())
        .map(|m| m.len())
        .ok();
    let mut wal = state.store.db_path().as_os_str().to_owned();
    wal.push("-wal");
    let wal_bytes = std::fs::metadata(std::path::PathBuf::from(wal))
        .map(|m| m.len())
        .ok();
    (
        status,
        axum::Json(json!({
            "status": if db_ok { if low_disk { "degraded" } else { "ok" } } else { "failing" },
            "database": if db_ok { "ok" } else { "failing" },
            "databaseBytes": db_bytes,
            "walBytes": wal_bytes,
            "diskFreeBytes": disk_free,
            "syncBacklog": backlog,
            "epoch": state.store.identity().epoch.0.to_string(),
        })),
    )
        .into_response()
}

/// Free bytes on the file system holding `dir`, from `df`-like statistics.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    // std has no statvfs; read it through the `df` the OS ships instead of unsafe FFI.
    let output = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let line = text.lines().nth(1)?;
    let available_kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(available_kib.saturating_mul(1024))
}

async fn get_metrics(State(state): State<Arc<AppState>>) -> Response {
    let backlog = timed(&state, state.store.backlog()).await.ok();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(backlog),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::ErrorView;

    #[test]
    fn outcome_bodies_keep_their_shape() {
        let errors = vec![ErrorView {
            field: "items".into(),
            reason: "must not be empty".into(),
        }];
        let outcomes = [
            Outcome::Accepted {
                epoch: "7".into(),
                class: "sales",
                seq: 3,
            },
            Outcome::Duplicate,
            Outcome::Conflict {
                dead_letter: 4,
                errors: errors.clone(),
            },
            Outcome::Rejected {
                dead_letter: 5,
                errors,
            },
        ];
        let error = json!([{"field": "items", "reason": "must not be empty"}]);
        assert_eq!(
            serde_json::to_value(outcomes_body(&outcomes)).unwrap(),
            json!({
                "accepted": 1, "duplicates": 1, "conflicts": 1, "rejected": 1,
                "results": [
                    {"status": "accepted", "epoch": "7", "class": "sales", "seq": 3, "index": 0},
                    {"status": "duplicate", "index": 1},
                    {"status": "conflict", "dead_letter": 4, "errors": error, "index": 2},
                    {"status": "rejected", "dead_letter": 5, "errors": error, "index": 3},
                ],
            })
        );
    }
}
