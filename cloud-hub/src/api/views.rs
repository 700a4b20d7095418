//! Saved views of the UI's explorer, per user (`/api/v1/views`).
//!
//! A view is the caller's own: it is keyed by tenant and principal, so nobody else lists,
//! overwrites or deletes it. Its body (metric, grouping, range, stores, chart) is a small
//! JSON object the hub stores as given; it grants nothing, since every query the view runs
//! is authorized on its own.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppError, AppState, rfc3339};
use crate::auth::Caller;
use crate::store::now_ms;
use crate::store::views::SavedViewRecord;

/// Saved views one user may keep.
pub const VIEWS_PER_USER_MAX: u32 = 50;
/// Longest view name, in characters.
pub const VIEW_NAME_CHARS_MAX: usize = 100;
/// Largest view body, in bytes of JSON.
pub const VIEW_BODY_BYTES_MAX: usize = 4096;
/// Longest view id.
const VIEW_ID_LEN_MAX: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutView {
    name: String,
    view: Value,
}

fn view_json(r: &SavedViewRecord) -> Value {
    json!({
        "id": r.view_id,
        "name": r.name,
        "view": serde_json::from_str::<Value>(&r.body).unwrap_or(Value::Null),
        "savedAt": rfc3339(r.updated_ms),
    })
}

fn check_id(view_id: &str) -> Result<(), AppError> {
    let ok = !view_id.is_empty()
        && view_id.len() <= VIEW_ID_LEN_MAX
        && view_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(AppError::BadRequest(format!(
            "view_id: 1 to {VIEW_ID_LEN_MAX} of A-Z, a-z, 0-9, - and _"
        )))
    }
}

pub(super) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, AppError> {
    let rows = state
        .store()
        .views()
        .views_list(&caller.tenant, &caller.subject)
        .await?;
    Ok(Json(
        json!({"items": rows.iter().map(view_json).collect::<Vec<_>>()}),
    ))
}

pub(super) async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(view_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AppError> {
    check_id(&view_id)?;
    let put: PutView =
        serde_json::from_slice(&body).map_err(|e| AppError::BadRequest(format!("body: {e}")))?;
    let name = put.name.trim();
    if name.is_empty() || name.chars().count() > VIEW_NAME_CHARS_MAX {
        return Err(AppError::BadRequest(format!(
            "name: 1 to {VIEW_NAME_CHARS_MAX} characters"
        )));
    }
    if !put.view.is_object() {
        return Err(AppError::BadRequest("view: must be a JSON object".into()));
    }
    let text = put.view.to_string();
    if text.len() > VIEW_BODY_BYTES_MAX {
        return Err(AppError::BadRequest(format!(
            "view: at most {VIEW_BODY_BYTES_MAX} bytes of JSON"
        )));
    }
    let record = SavedViewRecord {
        view_id,
        name: name.to_owned(),
        body: text,
        updated_ms: now_ms(),
    };
    state
        .store()
        .views()
        .view_put(&caller.tenant, &caller.subject, &record, VIEWS_PER_USER_MAX)
        .await?;
    Ok(Json(view_json(&record)))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(view_id): Path<String>,
) -> Result<Response, AppError> {
    check_id(&view_id)?;
    // Deleting a view that is not there is not an error: the outcome is the same.
    state
        .store()
        .views()
        .view_delete(&caller.tenant, &caller.subject, &view_id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
