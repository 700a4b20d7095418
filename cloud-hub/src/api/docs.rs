//! Routes over the replicated documents: a store's document (alert marks, tasks,
//! settings, adjustments sent down), the tenant document (catalog and alert rules, edited
//! by admins), and the stock adjustments and transfers HQ sends to stores.
//!
//! Adjustments and transfers travel *in the store's document* (`adjustment/<id>`): the
//! agent submits each to its writer keyed by its id, so it is applied once however often
//! the document syncs, also after a restart or a restore.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use storesync_protocol::Money;
use storesync_protocol::docs as schema;
use storesync_protocol::ids::{Sku, StoreId};
use storesync_protocol::validate::{Context, Limits, adjustment_from_json};

use super::{ApiResult, AppError, AppState, visible_stores};
use crate::auth::Caller;
use crate::store::docs::{TENANT_DOC_KEY, store_doc_key};

/// `GET /api/v1/stores/{store_id}/document`.
pub(super) async fn store_document(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(store_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let store_id = StoreId::new(store_id).map_err(|_| AppError::NotFound)?;
    if !visible_stores(&state, &caller)
        .await?
        .iter()
        .any(|s| s.store_id == store_id)
    {
        return Err(AppError::NotFound);
    }
    let mut doc = crate::docs::read(
        &*state.inner.store,
        &caller.tenant,
        &store_doc_key(&store_id),
    )
    .await?;
    let alerts: serde_json::Map<String, Value> = schema::alert_states(&doc)
        .into_iter()
        .map(|(id, (s, mark))| {
            (
                id,
                json!({"state": s.as_str(), "by": mark.by, "atMs": mark.at_ms}),
            )
        })
        .collect();
    Ok(Json(json!({
        "storeId": store_id.as_str(),
        "heads": schema::heads_hex(&mut doc),
        "alerts": alerts,
        "tasks": schema::tasks(&doc),
        "settings": schema::settings(&doc),
        "adjustments": schema::adjustments(&doc),
    })))
}

/// `GET /api/v1/catalog`: the tenant document (catalog and alert rules) and its heads.
pub(super) async fn catalog(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let mut doc = crate::docs::read(&*state.inner.store, &caller.tenant, TENANT_DOC_KEY).await?;
    Ok(Json(json!({
        "heads": schema::heads_hex(&mut doc),
        "items": schema::catalog(&doc)
            .into_iter()
            .map(|(sku, item)| (sku, catalog_json(&item)))
            .collect::<serde_json::Map<String, Value>>(),
        "rules": schema::rules(&doc),
    })))
}

fn catalog_json(item: &schema::CatalogItem) -> Value {
    json!({
        "name": item.name,
        "category": item.category,
        "price": Money::from_e4(item.price_e4).to_f64(),
        "reorderThreshold": item.reorder_threshold,
    })
}

fn bad(field: &str, reason: impl std::fmt::Display) -> AppError {
    AppError::BadRequest(format!("{field}: {reason}"))
}

fn body_object(body: &[u8]) -> ApiResult<serde_json::Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("body", "must be a JSON object")),
        Err(e) => Err(bad("body", e)),
    }
}

fn text_field(
    obj: &serde_json::Map<String, Value>,
    field: &str,
    len_max: usize,
) -> ApiResult<String> {
    match obj.get(field).and_then(Value::as_str) {
        Some(s) if !s.is_empty() && s.len() <= len_max => Ok(s.to_owned()),
        Some(_) => Err(bad(field, format!("1 to {len_max} bytes"))),
        None => Err(bad(field, "required, a string")),
    }
}

fn count_field(obj: &serde_json::Map<String, Value>, field: &str, max: i64) -> ApiResult<i64> {
    match obj.get(field).and_then(Value::as_i64) {
        Some(n) if (0..=max).contains(&n) => Ok(n),
        _ => Err(bad(field, format!("required, an integer from 0 to {max}"))),
    }
}

/// Largest price, reorder threshold and adjustment accepted by these routes.
const PRICE_E4_MAX: i64 = 1_000_000_000_000;
const THRESHOLD_MAX: i64 = 1_000_000;
const NAME_LEN_MAX: usize = 256;

/// `PUT /api/v1/catalog/{sku}` (admins): adds or replaces a catalog entry.
pub(super) async fn put_catalog_item(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(sku): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let sku = Sku::new(sku).map_err(|e| bad("sku", e))?;
    let obj = body_object(&body)?;
    let price = obj
        .get("price")
        .and_then(Value::as_f64)
        .and_then(|p| Money::from_f64_exact(p, PRICE_E4_MAX))
        .filter(|m| m.e4() >= 0)
        .ok_or_else(|| {
            bad(
                "price",
                "required, a non-negative amount with at most 4 decimals",
            )
        })?;
    let item = schema::CatalogItem {
        name: text_field(&obj, "name", NAME_LEN_MAX)?,
        category: text_field(&obj, "category", NAME_LEN_MAX)?,
        price_e4: price.e4(),
        reorder_threshold: count_field(&obj, "reorderThreshold", THRESHOLD_MAX)?,
    };
    crate::docs::edit(&*state.inner.store, &caller.tenant, TENANT_DOC_KEY, |doc| {
        schema::put_catalog_item(doc, sku.as_str(), &item)
    })
    .await?;
    // Categories also group the hub's own sales queries.
    state
        .inner
        .store
        .set_item_category(&caller.tenant, &sku, &item.category)
        .await?;
    Ok(Json(
        json!({"sku": sku.as_str(), "item": catalog_json(&item)}),
    ))
}

/// `PUT /api/v1/alert-rules/{name}` (admins): `lowStockDefault` (units) or
/// `salesMilestones` (amounts), as `{"value": …}`.
pub(super) async fn put_alert_rule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let obj = body_object(&body)?;
    let value = obj.get("value").ok_or_else(|| bad("value", "required"))?;
    let (key, stored) = match name.as_str() {
        "lowStockDefault" => (
            "lowStockDefault",
            json!(count_field(&obj, "value", THRESHOLD_MAX)?),
        ),
        "salesMilestones" => {
            let amounts = value
                .as_array()
                .filter(|a| a.len() <= 32)
                .ok_or_else(|| bad("value", "an array of at most 32 amounts"))?;
            let mut e4 = Vec::new();
            for (i, a) in amounts.iter().enumerate() {
                let m = a
                    .as_f64()
                    .and_then(|p| Money::from_f64_exact(p, PRICE_E4_MAX))
                    .filter(|m| m.e4() > 0)
                    .ok_or_else(|| bad(&format!("value[{i}]"), "a positive amount"))?;
                e4.push(m.e4());
            }
            e4.sort_unstable();
            ("salesMilestonesE4", json!(e4))
        }
        _ => return Err(AppError::NotFound),
    };
    crate::docs::edit(&*state.inner.store, &caller.tenant, TENANT_DOC_KEY, |doc| {
        schema::put_rule(doc, key, &stored)
    })
    .await?;
    Ok(Json(json!({"rule": name, "value": value})))
}

/// Puts validated adjustments into their stores' documents; the agents apply them once.
async fn send_adjustments(
    state: &AppState,
    caller: &Caller,
    adjustments: Vec<(StoreId, Value)>,
) -> ApiResult<Vec<bool>> {
    let mut added = Vec::new();
    for (store_id, json) in adjustments {
        let id = json["adjustmentId"].as_str().unwrap_or_default().to_owned();
        added.push(
            crate::docs::edit(
                &*state.inner.store,
                &caller.tenant,
                &store_doc_key(&store_id),
                |doc| schema::put_adjustment(doc, &id, &json),
            )
            .await?,
        );
    }
    Ok(added)
}

/// Validates an adjustment for `store` as the agent will, with `source` set.
fn adjustment_for(
    store: &StoreId,
    mut obj: serde_json::Map<String, Value>,
    source: &str,
) -> ApiResult<Value> {
    obj.insert("storeId".into(), Value::from(store.as_str()));
    obj.insert("source".into(), Value::from(source));
    if !obj.contains_key("timestamp") {
        obj.insert(
            "timestamp".into(),
            Value::from(jiff::Timestamp::now().to_string()),
        );
    }
    let value = Value::Object(obj);
    let limits = Limits::default();
    let ctx = Context {
        now_ms: crate::store::now_ms(),
        limits: &limits,
        store: Some(store),
    };
    adjustment_from_json(&value, &ctx).map_err(|r| {
        let first = r.errors.first();
        AppError::BadRequest(match first {
            Some(e) => format!("{}: {}", e.field, e.reason),
            None => "body: not a stock adjustment".into(),
        })
    })?;
    Ok(value)
}

pub(super) async fn known_store(
    state: &AppState,
    caller: &Caller,
    store: &str,
) -> ApiResult<StoreId> {
    let store_id = StoreId::new(store).map_err(|_| AppError::NotFound)?;
    if visible_stores(state, caller)
        .await?
        .iter()
        .any(|s| s.store_id == store_id)
    {
        Ok(store_id)
    } else {
        Err(AppError::NotFound)
    }
}

/// `POST /api/v1/stores/{store_id}/adjustments` (admins): a stock adjustment entered at HQ,
/// `{adjustmentId, sku, delta, reason, timestamp?}`; it reaches the store's inventory
/// through the store's document.
pub(super) async fn post_adjustment(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(store): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let store_id = known_store(&state, &caller, &store).await?;
    let adjustment = adjustment_for(&store_id, body_object(&body)?, "hq")?;
    let added = send_adjustments(&state, &caller, vec![(store_id, adjustment.clone())]).await?;
    let status = if added.first() == Some(&true) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"adjustment": adjustment, "new": added.first() == Some(&true)})),
    )
        .into_response())
}

/// `POST /api/v1/transfers` (admins): `{transferId, fromStore, toStore, sku, quantity,
/// reason}` becomes two adjustments, `<transferId>-out` (−quantity at `fromStore`) and
/// `<transferId>-in` (+quantity at `toStore`), each applied once by its store.
pub(super) async fn post_transfer(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let obj = body_object(&body)?;
    let transfer_id = text_field(&obj, "transferId", 120)?;
    let from = known_store(&state, &caller, &text_field(&obj, "fromStore", 128)?).await?;
    let to = known_store(&state, &caller, &text_field(&obj, "toStore", 128)?).await?;
    if from == to {
        return Err(bad("toStore", "must differ from fromStore"));
    }
    let quantity = match obj.get("quantity").and_then(Value::as_i64) {
        Some(q) if q > 0 && q <= 100_000 => q,
        _ => return Err(bad("quantity", "required, an integer from 1 to 100000")),
    };
    let leg = |suffix: &str, delta: i64| {
        let mut leg = serde_json::Map::new();
        leg.insert(
            "adjustmentId".into(),
            Value::from(format!("{transfer_id}-{suffix}")),
        );
        leg.insert("sku".into(), obj.get("sku").cloned().unwrap_or(Value::Null));
        leg.insert("delta".into(), Value::from(delta));
        leg.insert(
            "reason".into(),
            obj.get("reason")
                .cloned()
                .unwrap_or_else(|| Value::from(format!("transfer {transfer_id}"))),
        );
        if let Some(t) = obj.get("timestamp") {
            leg.insert("timestamp".into(), t.clone());
        }
        leg
    };
    let out_leg = adjustment_for(&from, leg("out", -quantity), "transfer")?;
    let in_leg = adjustment_for(&to, leg("in", quantity), "transfer")?;
    send_adjustments(
        &state,
        &caller,
        vec![(from, out_leg.clone()), (to, in_leg.clone())],
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"out": out_leg, "in": in_leg})),
    )
        .into_response())
}
