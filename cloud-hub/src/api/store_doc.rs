//! A store document's tasks and settings at the hub: read by anyone who sees the store,
//! edited by admins and the store's managers. Every edit goes through
//! [`crate::docs::edit`] (the document row's lock, so replicas serialize) and reaches the
//! store's agent at the next exchange; the agent's local API edits the same entries while
//! offline, and automerge merges both (see [`storesync_protocol::docs`]). The shapes are
//! the agent's: tasks as [`schema::task_json`], bodies [`schema::NewTask`] and
//! [`schema::NewSetting`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use storesync_protocol::docs::{self as schema, AutoCommit};
use storesync_protocol::ids::StoreId;

use super::docs::known_store;
use super::{ApiResult, AppError, AppState};
use crate::auth::Caller;
use crate::store::docs::store_doc_key;

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| AppError::BadRequest(format!("body: {e}")))
}

/// The store `store` as the caller may see it (404 otherwise) and its document.
async fn read_store_doc(
    state: &AppState,
    caller: &Caller,
    store: &str,
) -> ApiResult<(StoreId, AutoCommit)> {
    let store_id = known_store(state, caller, store).await?;
    let doc = crate::docs::read(
        &*state.inner.store,
        &caller.tenant,
        &store_doc_key(&store_id),
    )
    .await?;
    Ok((store_id, doc))
}

fn editor(caller: &Caller) -> String {
    format!("{}:{}", caller.role.as_str(), caller.subject)
}

/// `GET /api/v1/stores/{store_id}/tasks`.
pub(super) async fn tasks(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(store): Path<String>,
) -> ApiResult<Json<Value>> {
    let (store_id, doc) = read_store_doc(&state, &caller, &store).await?;
    let list: Vec<Value> = schema::tasks(&doc)
        .iter()
        .map(|(id, task)| schema::task_json(id, task))
        .collect();
    Ok(Json(json!({"storeId": store_id.as_str(), "tasks": list})))
}

/// `POST /api/v1/stores/{store_id}/tasks` `{"taskId"?, "title"}`: 201 with the new task,
/// 200 with the existing one when the id is taken.
pub(super) async fn post_task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(store): Path<String>,
    bytes: axum::body::Bytes,
) -> ApiResult<Response> {
    let store_id = known_store(&state, &caller, &store).await?;
    let new: schema::NewTask = body(&bytes)?;
    let task_id = new
        .task_id
        .unwrap_or_else(|| format!("t-{:016x}", rand::random::<u64>()));
    let by = editor(&caller);
    let now = crate::store::now_ms();
    let (task, created) = crate::docs::edit(
        &*state.inner.store,
        &caller.tenant,
        &store_doc_key(&store_id),
        |doc| schema::create_task(doc, &task_id, &new.title, &by, now),
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(schema::task_json(&task_id, &task))).into_response())
}

/// `POST /api/v1/stores/{store_id}/tasks/{task_id}/complete`: the task, done.
pub(super) async fn complete_task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((store, task_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let store_id = known_store(&state, &caller, &store).await?;
    let by = editor(&caller);
    let now = crate::store::now_ms();
    let task = crate::docs::edit(
        &*state.inner.store,
        &caller.tenant,
        &store_doc_key(&store_id),
        |doc| schema::complete_task(doc, &task_id, &by, now),
    )
    .await?
    .ok_or(AppError::NotFound)?;
    Ok(Json(schema::task_json(&task_id, &task)))
}

/// `GET /api/v1/stores/{store_id}/settings`.
pub(super) async fn settings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(store): Path<String>,
) -> ApiResult<Json<Value>> {
    let (store_id, doc) = read_store_doc(&state, &caller, &store).await?;
    Ok(Json(
        json!({"storeId": store_id.as_str(), "settings": schema::settings(&doc)}),
    ))
}

/// `PUT /api/v1/stores/{store_id}/settings/{name}` `{"value": any}`.
pub(super) async fn put_setting(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((store, name)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let store_id = known_store(&state, &caller, &store).await?;
    let new: schema::NewSetting = body(&bytes)?;
    crate::docs::edit(
        &*state.inner.store,
        &caller.tenant,
        &store_doc_key(&store_id),
        |doc| schema::set_setting(doc, &name, &new.value),
    )
    .await?;
    Ok(Json(json!({"name": name, "value": new.value})))
}
