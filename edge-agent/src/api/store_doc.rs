//! The store document's tasks and settings at the local API, editable while the hub is
//! unreachable; edits merge with the hub's at the next sync (see
//! [`storesync_protocol::docs`]). Requests and answers have the hub's shapes:
//!
//! - `GET /api/v1/tasks` → `{"tasks": [task…]}`; `POST /api/v1/tasks`
//!   `{"taskId"?, "title"}` → 201 with the task (200 when that id existed);
//!   `POST /api/v1/tasks/{id}/complete` → the task, 404 when unknown;
//! - `GET /api/v1/settings` → `{"settings": {name: value}}`;
//!   `PUT /api/v1/settings/{name}` `{"value": any}` → `{"name", "value"}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use storesync_protocol::docs::{self as schema, DocError};

use super::{ApiResult, AppError, AppState, read_body};
use crate::auth::Principal;
use crate::ingest;

fn edit_error(e: DocError) -> AppError {
    match e {
        DocError::Invalid { field, reason } => AppError::BadRequest(field.into(), reason),
        other => AppError::Internal(other.to_string()),
    }
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| AppError::BadRequest("body".into(), e.to_string()))
}

pub(super) async fn get_tasks(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    let (tasks, _) = state.docs.tasks_and_settings().await;
    let list: Vec<Value> = tasks
        .iter()
        .map(|(id, task)| schema::task_json(id, task))
        .collect();
    Ok(axum::Json(json!({"tasks": list})).into_response())
}

pub(super) async fn post_task(
    State(state): State<Arc<AppState>>,
    axum::Extension(principal): axum::Extension<Principal>,
    headers: HeaderMap,
    request: Body,
) -> ApiResult<Response> {
    let new: schema::NewTask = body(&read_body(&state, &headers, request).await?)?;
    let task_id = new
        .task_id
        .unwrap_or_else(|| format!("t-{:016x}", rand::random::<u64>()));
    let now = ingest::now_ms();
    let (task, created) = state
        .docs
        .edit_store(|doc| schema::create_task(doc, &task_id, &new.title, &principal.subject, now))
        .await?
        .map_err(edit_error)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(schema::task_json(&task_id, &task))).into_response())
}

pub(super) async fn post_complete(
    State(state): State<Arc<AppState>>,
    axum::Extension(principal): axum::Extension<Principal>,
    Path(task_id): Path<String>,
) -> ApiResult<Response> {
    let now = ingest::now_ms();
    let task = state
        .docs
        .edit_store(|doc| schema::complete_task(doc, &task_id, &principal.subject, now))
        .await?
        .map_err(edit_error)?
        .ok_or_else(|| AppError::NotFound(format!("no task {task_id}")))?;
    Ok(axum::Json(schema::task_json(&task_id, &task)).into_response())
}

pub(super) async fn get_settings(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    let (_, settings) = state.docs.tasks_and_settings().await;
    Ok(axum::Json(json!({"settings": settings})).into_response())
}

pub(super) async fn put_setting(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    request: Body,
) -> ApiResult<Response> {
    let new: schema::NewSetting = body(&read_body(&state, &headers, request).await?)?;
    state
        .docs
        .edit_store(|doc| schema::set_setting(doc, &name, &new.value))
        .await?
        .map_err(edit_error)?;
    Ok(axum::Json(json!({"name": name, "value": new.value})).into_response())
}
