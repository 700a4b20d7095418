//! The replicated documents: their schema and the automerge sync peer both sides use.
//!
//! Two kinds of automerge documents travel over the sync connection as
//! [`crate::wire::DocSync`] messages (kind `0x05`, required), each naming its
//! [`DocId`](crate::wire::DocId):
//!
//! - the **tenant document** ([`DocId::Tenant`](crate::wire::DocId::Tenant)), one per
//!   tenant: the catalog (SKU → name, category, price, reorder threshold) and the alert
//!   rules. Edited at the hub by admins; stores only read it (the hub keeps a *read-only*
//!   sync state for each device, so changes a device might send are never applied);
//! - the **store document** ([`DocId::Store`](crate::wire::DocId::Store)), one per store:
//!   alert acknowledgements and resolutions, tasks, settings, and the stock adjustments HQ
//!   sends down. Edited on both sides.
//!
//! # Schema
//!
//! Every entry is a key of the root map whose value is one JSON string, so two replicas
//! that create entries concurrently never create competing nested objects (automerge
//! keeps only one of two objects put under one key): concurrent writes of one key resolve
//! last-writer-wins by automerge's rules, writes of different keys always merge.
//!
//! | key | value (JSON) | written by |
//! | --- | --- | --- |
//! | `ack/<alertId>` | [`AlertMark`] | store doc, both sides |
//! | `resolve/<alertId>` | [`AlertMark`] | store doc, both sides |
//! | `task/<taskId>` | [`Task`] | store doc, both sides |
//! | `setting/<name>` | any JSON value | store doc, both sides |
//! | `adjustment/<adjustmentId>` | the adjustment's JSON (as the agent's ingest API takes it) | store doc, hub |
//! | `sku/<sku>` | [`CatalogItem`] | tenant doc, hub |
//! | `rule/<name>` | any JSON value (see [`AlertRules`]) | tenant doc, hub |
//!
//! An alert's replicated state is the highest of its marks: resolved over acknowledged
//! over open, so states only move forward however the edits interleave.
//!
//! # Sync
//!
//! [`SyncPeer`] wraps automerge's sync protocol for one document and one peer. Its state
//! ([`SyncPeer::encode`]) is persisted by the shells after every exchange, so a reconnect
//! starts from the heads both sides are known to share and sends only what is missing.
//! Incoming messages are capped at [`DOC_SYNC_LEN_MAX`] bytes; a larger one is refused
//! with [`DocError::TooLarge`] (the shells raise an alarm and close the session).
//!
//! Actors: every process start draws a random actor ([`new_doc`] and [`load`] take it as
//! an argument; this crate draws no random numbers). An actor is never derived from the
//! device id, so a restored data directory cannot clone one.

use std::collections::BTreeMap;
use std::string::{String, ToString};
use std::vec::Vec;

pub use automerge::AutoCommit;
use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, ChangeHash, ROOT, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::domain::AlertState;

/// Largest accepted incoming sync message, in bytes.
pub const DOC_SYNC_LEN_MAX: usize = 1024 * 1024;

/// Largest accepted stored document, in bytes (a larger one is refused on load).
pub const DOC_LEN_MAX: usize = 64 * 1024 * 1024;

/// What a document operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocError {
    /// An incoming sync message is larger than [`DOC_SYNC_LEN_MAX`].
    #[error("sync message of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes that are not a sync message, a sync state or a document.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// automerge refused an operation.
    #[error("automerge: {0}")]
    Automerge(String),
    /// An edit names an invalid id or carries an invalid value.
    #[error("{field}: {reason}")]
    Invalid {
        /// The request field at fault (`taskId`, `title`, `name`, `value`).
        field: &'static str,
        /// Why.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl ToString) -> DocError {
    DocError::Invalid {
        field,
        reason: reason.to_string(),
    }
}

fn malformed(what: &'static str, reason: impl ToString) -> DocError {
    DocError::Malformed {
        what,
        reason: reason.to_string(),
    }
}

/// A new, empty document whose changes are made by `actor` (random per process start).
pub fn new_doc(actor: &[u8]) -> AutoCommit {
    AutoCommit::new().with_actor(ActorId::from(actor))
}

/// Loads a saved document; new changes are made by `actor`.
pub fn load(bytes: &[u8], actor: &[u8]) -> Result<AutoCommit, DocError> {
    if bytes.len() > DOC_LEN_MAX {
        return Err(malformed("document", "over DOC_LEN_MAX"));
    }
    let doc = guarded(|| AutoCommit::load(bytes))
        .and_then(|r| r.map_err(|e| malformed("document", e)))?;
    Ok(doc.with_actor(ActorId::from(actor)))
}

/// The document's heads, as hex strings (for logs, status and tests).
pub fn heads_hex(doc: &mut AutoCommit) -> Vec<String> {
    let mut heads: Vec<String> = doc.get_heads().iter().map(ChangeHash::to_string).collect();
    heads.sort();
    heads
}

/// Runs `f`, turning a panic inside automerge into an error: peer input never panics a
/// process.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, DocError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| malformed("input", "automerge panicked on it"))
}

/// The sync protocol state for one document and one peer.
#[derive(Debug)]
pub struct SyncPeer {
    state: sync::State,
}

impl SyncPeer {
    /// A peer never synced with. `read_only`: changes it sends are not applied.
    pub fn new(read_only: bool) -> SyncPeer {
        SyncPeer {
            state: if read_only {
                sync::State::new_read_only()
            } else {
                sync::State::new()
            },
        }
    }

    /// A peer from its persisted state ([`SyncPeer::encode`]); an undecodable state starts
    /// over (costs a full exchange, loses nothing).
    pub fn decode(bytes: Option<&[u8]>, read_only: bool) -> SyncPeer {
        let mut peer = SyncPeer::new(read_only);
        if let Some(state) = bytes.and_then(|b| sync::State::decode(b).ok()) {
            peer.state = state;
            peer.state.set_read_only(read_only);
        }
        peer
    }

    /// The part of the state worth keeping across connections (the shared heads).
    pub fn encode(&self) -> Vec<u8> {
        self.state.encode()
    }

    /// Forgets what is in flight (call at every new connection; keeps the shared heads).
    pub fn reset(&mut self) {
        let read_only = self.state.read_only;
        self.state = sync::State::decode(&self.state.encode()).unwrap_or_default();
        self.state.set_read_only(read_only);
    }

    /// The next message for the peer, if any.
    pub fn generate(&mut self, doc: &mut AutoCommit) -> Option<Vec<u8>> {
        doc.sync()
            .generate_sync_message(&mut self.state)
            .map(sync::Message::encode)
    }

    /// Applies a message from the peer. Refuses one over [`DOC_SYNC_LEN_MAX`].
    pub fn receive(&mut self, doc: &mut AutoCommit, data: &[u8]) -> Result<(), DocError> {
        if data.len() > DOC_SYNC_LEN_MAX {
            return Err(DocError::TooLarge {
                len: data.len(),
                max: DOC_SYNC_LEN_MAX,
            });
        }
        let message =
            guarded(|| sync::Message::decode(data))?.map_err(|e| malformed("sync message", e))?;
        let state = &mut self.state;
        guarded(|| doc.sync().receive_sync_message(state, message))?
            .map_err(|e| DocError::Automerge(e.to_string()))
    }
}

// ---- schema ---------------------------------------------------------------------------------

/// Who moved an alert to a state, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertMark {
    /// User (subject of the token).
    pub by: String,
    /// When, Unix ms (the editor's clock).
    pub at_ms: i64,
}

/// A task of a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// What to do.
    pub title: String,
    /// Done.
    #[serde(default)]
    pub done: bool,
    /// Who last changed it.
    pub by: String,
    /// When it was last changed, Unix ms.
    pub at_ms: i64,
}

/// One catalog entry of the tenant document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogItem {
    /// Display name.
    pub name: String,
    /// Category.
    pub category: String,
    /// Price in ten-thousandths of the currency unit (as [`crate::Money`]).
    pub price_e4: i64,
    /// Stock at or below this raises a low-stock alert.
    pub reorder_threshold: i64,
}

/// The alert rules of the tenant document that stores apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertRules {
    /// Threshold for SKUs the catalog has no threshold for (`rule/lowStockDefault`).
    pub low_stock_default: Option<i64>,
    /// Daily revenue milestones, ten-thousandths (`rule/salesMilestonesE4`).
    pub sales_milestones_e4: Option<Vec<i64>>,
}

fn put_json<T: Serialize>(doc: &mut AutoCommit, key: &str, value: &T) -> Result<(), DocError> {
    let text = serde_json::to_string(value).map_err(|e| DocError::Automerge(e.to_string()))?;
    doc.put(ROOT, key, text)
        .map_err(|e| DocError::Automerge(e.to_string()))
}

/// Entries under `prefix`, decoded; entries that do not decode are skipped (a newer
/// writer's format) and counted in the second value.
fn entries<T: for<'de> Deserialize<'de>>(
    doc: &AutoCommit,
    prefix: &str,
) -> (BTreeMap<String, T>, usize) {
    let mut out = BTreeMap::new();
    let mut skipped = 0;
    for key in doc.keys(ROOT) {
        let Some(name) = key.strip_prefix(prefix) else {
            continue;
        };
        let text = match doc.get(ROOT, key.as_str()) {
            Ok(Some((value, _))) => value.as_str().map(str::to_owned),
            _ => None,
        };
        match text.and_then(|t| serde_json::from_str(&t).ok()) {
            Some(v) => {
                out.insert(name.to_owned(), v);
            }
            None => skipped += 1,
        }
    }
    (out, skipped)
}

/// Records that `alert_id` was acknowledged or resolved (`Open` records nothing: states
/// only move forward).
pub fn mark_alert(
    doc: &mut AutoCommit,
    alert_id: &str,
    state: AlertState,
    mark: &AlertMark,
) -> Result<(), DocError> {
    let prefix = match state {
        AlertState::Open => return Ok(()),
        AlertState::Acknowledged => "ack/",
        AlertState::Resolved => "resolve/",
    };
    put_json(doc, &alloc::format!("{prefix}{alert_id}"), mark)?;
    doc.commit();
    Ok(())
}

/// Every alert's replicated state (the highest of its marks) with the mark that set it.
pub fn alert_states(doc: &AutoCommit) -> BTreeMap<String, (AlertState, AlertMark)> {
    let mut out = BTreeMap::new();
    for (id, mark) in entries::<AlertMark>(doc, "ack/").0 {
        out.insert(id, (AlertState::Acknowledged, mark));
    }
    for (id, mark) in entries::<AlertMark>(doc, "resolve/").0 {
        out.insert(id, (AlertState::Resolved, mark));
    }
    out
}

/// Adds or replaces a task.
pub fn put_task(doc: &mut AutoCommit, task_id: &str, task: &Task) -> Result<(), DocError> {
    put_json(doc, &alloc::format!("task/{task_id}"), task)?;
    doc.commit();
    Ok(())
}

/// The tasks by id.
pub fn tasks(doc: &AutoCommit) -> BTreeMap<String, Task> {
    entries(doc, "task/").0
}

/// Longest task title, in bytes.
pub const TASK_TITLE_LEN_MAX: usize = 500;
/// Longest setting value, as JSON text, in bytes.
pub const SETTING_LEN_MAX: usize = 16 * 1024;
/// Most tasks one store document holds (done ones included): a bound on the document's
/// growth through the API, far above what a store keeps.
pub const TASKS_MAX: usize = 10_000;
/// Most settings one store document holds.
pub const SETTINGS_MAX: usize = 1_000;

/// How many root keys of `doc` start with `prefix`.
fn count_prefixed(doc: &AutoCommit, prefix: &str) -> usize {
    doc.keys(ROOT).filter(|k| k.starts_with(prefix)).count()
}

/// Creates task `task_id` (an id by [`crate::ids::check_id`]) titled `title` unless it
/// exists: creating is idempotent on the id, so a retried request adds one task. Returns
/// the task and whether it was created. Both sides' APIs create tasks through this.
pub fn create_task(
    doc: &mut AutoCommit,
    task_id: &str,
    title: &str,
    by: &str,
    at_ms: i64,
) -> Result<(Task, bool), DocError> {
    crate::ids::check_id(task_id).map_err(|e| invalid("taskId", e))?;
    let title = title.trim();
    if title.is_empty() || title.len() > TASK_TITLE_LEN_MAX {
        return Err(invalid(
            "title",
            alloc::format!("1 to {TASK_TITLE_LEN_MAX} bytes"),
        ));
    }
    if let Some(existing) = tasks(doc).remove(task_id) {
        return Ok((existing, false));
    }
    if count_prefixed(doc, "task/") >= TASKS_MAX {
        return Err(invalid(
            "taskId",
            alloc::format!("the store already has the most tasks allowed ({TASKS_MAX})"),
        ));
    }
    let task = Task {
        title: title.to_string(),
        done: false,
        by: by.to_string(),
        at_ms,
    };
    put_task(doc, task_id, &task)?;
    Ok((task, true))
}

/// The body of a task creation at either side's API, `{"taskId"?: id, "title": text}`; a
/// missing id is minted by the API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTask {
    /// Chosen by the client to make retries idempotent.
    #[serde(default)]
    pub task_id: Option<String>,
    /// What to do.
    pub title: String,
}

/// The body of a setting change at either side's API, `{"value": any JSON}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSetting {
    /// The new value.
    pub value: serde_json::Value,
}

/// A task as both sides' APIs show it: `{"taskId", "title", "done", "by", "atMs"}`.
pub fn task_json(task_id: &str, task: &Task) -> serde_json::Value {
    serde_json::json!({
        "taskId": task_id,
        "title": task.title,
        "done": task.done,
        "by": task.by,
        "atMs": task.at_ms,
    })
}

/// Marks task `task_id` done; `None` when there is no such task. Completing a done task
/// changes nothing.
pub fn complete_task(
    doc: &mut AutoCommit,
    task_id: &str,
    by: &str,
    at_ms: i64,
) -> Result<Option<Task>, DocError> {
    let Some(mut task) = tasks(doc).remove(task_id) else {
        return Ok(None);
    };
    if !task.done {
        task.done = true;
        task.by = by.to_string();
        task.at_ms = at_ms;
        put_task(doc, task_id, &task)?;
    }
    Ok(Some(task))
}

/// Sets setting `name` (an id by [`crate::ids::check_id`]) to `value` (at most
/// [`SETTING_LEN_MAX`] bytes of JSON). Both sides' APIs set settings through this.
pub fn set_setting(
    doc: &mut AutoCommit,
    name: &str,
    value: &serde_json::Value,
) -> Result<(), DocError> {
    crate::ids::check_id(name).map_err(|e| invalid("name", e))?;
    let len = serde_json::to_string(value).map_or(usize::MAX, |t| t.len());
    if len > SETTING_LEN_MAX {
        return Err(invalid(
            "value",
            alloc::format!("{len} bytes of JSON, over {SETTING_LEN_MAX}"),
        ));
    }
    let key = alloc::format!("setting/{name}");
    if doc.get(ROOT, key.as_str()).ok().flatten().is_none()
        && count_prefixed(doc, "setting/") >= SETTINGS_MAX
    {
        return Err(invalid(
            "name",
            alloc::format!("the store already has the most settings allowed ({SETTINGS_MAX})"),
        ));
    }
    put_setting(doc, name, value)
}

/// Sets a setting.
pub fn put_setting(
    doc: &mut AutoCommit,
    name: &str,
    value: &serde_json::Value,
) -> Result<(), DocError> {
    put_json(doc, &alloc::format!("setting/{name}"), value)?;
    doc.commit();
    Ok(())
}

/// The settings by name.
pub fn settings(doc: &AutoCommit) -> BTreeMap<String, serde_json::Value> {
    entries(doc, "setting/").0
}

/// Adds a stock adjustment for the store to apply (its JSON, as the agent's ingest takes
/// it). An id already present is left as it is: an adjustment is applied once.
pub fn put_adjustment(
    doc: &mut AutoCommit,
    adjustment_id: &str,
    json: &serde_json::Value,
) -> Result<bool, DocError> {
    let key = alloc::format!("adjustment/{adjustment_id}");
    if matches!(doc.get(ROOT, key.as_str()), Ok(Some(_))) {
        return Ok(false);
    }
    put_json(doc, &key, json)?;
    doc.commit();
    Ok(true)
}

/// The adjustments by id.
pub fn adjustments(doc: &AutoCommit) -> BTreeMap<String, serde_json::Value> {
    entries(doc, "adjustment/").0
}

/// Adds or replaces a catalog entry.
pub fn put_catalog_item(
    doc: &mut AutoCommit,
    sku: &str,
    item: &CatalogItem,
) -> Result<(), DocError> {
    put_json(doc, &alloc::format!("sku/{sku}"), item)?;
    doc.commit();
    Ok(())
}

/// The catalog by SKU.
pub fn catalog(doc: &AutoCommit) -> BTreeMap<String, CatalogItem> {
    entries(doc, "sku/").0
}

/// Sets an alert rule (`lowStockDefault`, `salesMilestonesE4`).
pub fn put_rule(
    doc: &mut AutoCommit,
    name: &str,
    value: &serde_json::Value,
) -> Result<(), DocError> {
    put_json(doc, &alloc::format!("rule/{name}"), value)?;
    doc.commit();
    Ok(())
}

/// The alert rules as stores apply them.
pub fn alert_rules(doc: &AutoCommit) -> AlertRules {
    let raw: BTreeMap<String, serde_json::Value> = entries(doc, "rule/").0;
    AlertRules {
        low_stock_default: raw
            .get("lowStockDefault")
            .and_then(serde_json::Value::as_i64),
        sales_milestones_e4: raw.get("salesMilestonesE4").and_then(|v| {
            v.as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_i64).collect())
        }),
    }
}

/// The raw rules by name.
pub fn rules(doc: &AutoCommit) -> BTreeMap<String, serde_json::Value> {
    entries(doc, "rule/").0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_and_settings_edited_on_both_sides_merge() {
        let mut store = new_doc(&[1; 16]);
        let mut hub = new_doc(&[2; 16]);
        let (mut ps, mut ph) = (SyncPeer::new(false), SyncPeer::new(false));
        create_task(&mut store, "t-1", " count the till ", "mia", 1).unwrap();
        exchange(&mut store, &mut ps, &mut hub, &mut ph);
        // Apart: the store completes t-1 and adds t-2, HQ adds t-3 and sets a setting.
        assert!(
            complete_task(&mut store, "t-1", "mia", 2)
                .unwrap()
                .unwrap()
                .done
        );
        let (task, created) = create_task(&mut store, "t-2", "sweep", "mia", 3).unwrap();
        assert!(created && !task.done);
        create_task(&mut hub, "t-3", "inventory count", "hq", 4).unwrap();
        set_setting(&mut hub, "closingTime", &serde_json::json!("21:00")).unwrap();
        set_setting(&mut store, "lowStockEmail", &serde_json::json!(true)).unwrap();
        exchange(&mut store, &mut ps, &mut hub, &mut ph);
        assert_eq!(tasks(&store), tasks(&hub));
        assert_eq!(settings(&store), settings(&hub));
        assert_eq!(tasks(&hub).len(), 3);
        assert_eq!(tasks(&hub)["t-1"].title, "count the till");
        assert!(tasks(&hub)["t-1"].done);
        assert_eq!(settings(&hub).len(), 2);
        // Creating again with the same id is idempotent; unknown tasks are absent.
        let (again, created) = create_task(&mut hub, "t-2", "other", "hq", 5).unwrap();
        assert_eq!((again.title.as_str(), created), ("sweep", false));
        assert_eq!(complete_task(&mut hub, "nope", "hq", 6).unwrap(), None);
    }

    #[test]
    fn invalid_edits_name_the_field() {
        let mut doc = new_doc(&[1; 16]);
        let field = |r: Result<(), DocError>| match r {
            Err(DocError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(create_task(&mut doc, "a b", "x", "u", 0).map(|_| ())),
            "taskId"
        );
        assert_eq!(
            field(create_task(&mut doc, "t", "  ", "u", 0).map(|_| ())),
            "title"
        );
        let long = "x".repeat(TASK_TITLE_LEN_MAX + 1);
        assert_eq!(
            field(create_task(&mut doc, "t", &long, "u", 0).map(|_| ())),
            "title"
        );
        assert_eq!(
            field(set_setting(&mut doc, "", &serde_json::json!(1))),
            "name"
        );
        let big = serde_json::json!("y".repeat(SETTING_LEN_MAX));
        assert_eq!(field(set_setting(&mut doc, "n", &big)), "value");
        assert!(tasks(&doc).is_empty() && settings(&doc).is_empty());
    }

    #[test]
    fn task_and_setting_counts_are_bounded() {
        let mut doc = AutoCommit::new();
        for i in 0..TASKS_MAX {
            put_task(
                &mut doc,
                &alloc::format!("t{i}"),
                &Task {
                    title: "x".into(),
                    done: false,
                    by: "u".into(),
                    at_ms: 0,
                },
            )
            .unwrap();
        }
        let refused = create_task(&mut doc, "one-more", "x", "u", 0).unwrap_err();
        assert!(
            matches!(
                refused,
                DocError::Invalid {
                    field: "taskId",
                    ..
                }
            ),
            "{refused}"
        );
        // An existing task is still answered (creation is idempotent on the id).
        assert!(!create_task(&mut doc, "t0", "x", "u", 0).unwrap().1);

        for i in 0..SETTINGS_MAX {
            set_setting(&mut doc, &alloc::format!("s{i}"), &serde_json::json!(i)).unwrap();
        }
        let refused = set_setting(&mut doc, "one-more", &serde_json::json!(1)).unwrap_err();
        assert!(
            matches!(refused, DocError::Invalid { field: "name", .. }),
            "{refused}"
        );
        // Changing an existing setting is not a new one.
        set_setting(&mut doc, "s0", &serde_json::json!("changed")).unwrap();
        assert_eq!(settings(&doc)["s0"], serde_json::json!("changed"));
    }

    fn exchange(a: &mut AutoCommit, pa: &mut SyncPeer, b: &mut AutoCommit, pb: &mut SyncPeer) {
        for _ in 0..32 {
            let ab = pa.generate(a);
            if let Some(m) = &ab {
                pb.receive(b, m).unwrap();
            }
            let ba = pb.generate(b);
            if let Some(m) = &ba {
                pa.receive(a, m).unwrap();
            }
            if ab.is_none() && ba.is_none() {
                return;
            }
        }
        panic!("sync did not settle");
    }

    #[test]
    fn concurrent_marks_merge_and_states_only_move_forward() {
        let mut edge = new_doc(&[1; 16]);
        let mut hub = new_doc(&[2; 16]);
        let (mut pe, mut ph) = (SyncPeer::new(false), SyncPeer::new(false));
        let mark = |by: &str| AlertMark {
            by: by.into(),
            at_ms: 1,
        };
        mark_alert(&mut edge, "al-1", AlertState::Resolved, &mark("edge")).unwrap();
        mark_alert(&mut hub, "al-1", AlertState::Acknowledged, &mark("hq")).unwrap();
        mark_alert(&mut hub, "al-2", AlertState::Acknowledged, &mark("hq")).unwrap();
        put_task(
            &mut edge,
            "t1",
            &Task {
                title: "count aisle 4".into(),
                done: false,
                by: "m".into(),
                at_ms: 2,
            },
        )
        .unwrap();
        exchange(&mut edge, &mut pe, &mut hub, &mut ph);
        assert_eq!(heads_hex(&mut edge), heads_hex(&mut hub));
        let states = alert_states(&hub);
        assert_eq!(states["al-1"].0, AlertState::Resolved);
        assert_eq!(states["al-2"].0, AlertState::Acknowledged);
        assert_eq!(tasks(&hub).len(), 1);
    }

    #[test]
    fn a_reconnect_with_the_persisted_state_sends_only_what_is_missing() {
        let mut edge = new_doc(&[1; 16]);
        let mut hub = new_doc(&[2; 16]);
        let (mut pe, mut ph) = (SyncPeer::new(false), SyncPeer::new(false));
        for i in 0..200 {
            put_setting(&mut hub, &alloc::format!("s{i}"), &serde_json::json!(i)).unwrap();
        }
        exchange(&mut edge, &mut pe, &mut hub, &mut ph);
        let (saved_e, saved_h) = (pe.encode(), ph.encode());
        put_setting(&mut hub, "late", &serde_json::json!("x")).unwrap();
        let mut pe = SyncPeer::decode(Some(&saved_e), false);
        let mut ph = SyncPeer::decode(Some(&saved_h), false);
        let mut sent = 0;
        for _ in 0..8 {
            let a = ph.generate(&mut hub);
            if let Some(m) = &a {
                sent += m.len();
                pe.receive(&mut edge, m).unwrap();
            }
            let b = pe.generate(&mut edge);
            if let Some(m) = &b {
                sent += m.len();
                ph.receive(&mut hub, m).unwrap();
            }
            if a.is_none() && b.is_none() {
                break;
            }
        }
        assert_eq!(settings(&edge)["late"], serde_json::json!("x"));
        assert!(sent < 1_000, "sent {sent} bytes for one change");
    }

    #[test]
    fn a_read_only_peer_does_not_apply_changes() {
        let mut hub = new_doc(&[2; 16]);
        let mut edge = new_doc(&[1; 16]);
        put_rule(&mut hub, "lowStockDefault", &serde_json::json!(3)).unwrap();
        let (mut pe, mut ph) = (SyncPeer::new(false), SyncPeer::new(true));
        exchange(&mut edge, &mut pe, &mut hub, &mut ph);
        put_rule(&mut edge, "lowStockDefault", &serde_json::json!(99)).unwrap();
        exchange(&mut edge, &mut pe, &mut hub, &mut ph);
        assert_eq!(alert_rules(&hub).low_stock_default, Some(3));
        assert_eq!(alert_rules(&edge).low_stock_default, Some(99));
    }

    /// Seeded simulation: both replicas edit at random while messages are lost and
    /// sessions restart from the persisted sync states; after a clean exchange the heads
    /// are equal and every alert has the highest state either side gave it.
    #[test]
    fn replicas_converge_through_loss_and_reconnects() {
        use rand::{Rng, SeedableRng};
        for seed in 0..64u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut docs = [new_doc(&[1; 16]), new_doc(&[2; 16])];
            let mut peers = [SyncPeer::new(false), SyncPeer::new(false)];
            let mut expected: BTreeMap<String, AlertState> = BTreeMap::new();
            for step in 0..60 {
                let side = rng.random_range(0..2usize);
                match rng.random_range(0..10) {
                    0..=3 => {
                        let id = alloc::format!("al-{}", rng.random_range(0..6));
                        let state = if rng.random_bool(0.5) {
                            AlertState::Acknowledged
                        } else {
                            AlertState::Resolved
                        };
                        let mark = AlertMark {
                            by: alloc::format!("side{side}"),
                            at_ms: step,
                        };
                        mark_alert(&mut docs[side], &id, state, &mark).unwrap();
                        let e = expected.entry(id).or_insert(state);
                        if state == AlertState::Resolved {
                            *e = state;
                        }
                    }
                    4 => {
                        // A new session: each side starts from its persisted state.
                        for peer in &mut peers {
                            *peer = SyncPeer::decode(Some(&peer.encode()), false);
                        }
                    }
                    _ => {
                        let (a, b) = docs.split_at_mut(1);
                        let (pa, pb) = peers.split_at_mut(1);
                        let (from, to, pf, pt) = if side == 0 {
                            (&mut a[0], &mut b[0], &mut pa[0], &mut pb[0])
                        } else {
                            (&mut b[0], &mut a[0], &mut pb[0], &mut pa[0])
                        };
                        if let Some(m) = pf.generate(from)
                            && !rng.random_bool(0.3)
                        {
                            pt.receive(to, &m).unwrap();
                        }
                    }
                }
            }
            for peer in &mut peers {
                *peer = SyncPeer::decode(Some(&peer.encode()), false);
            }
            let [a, b] = &mut docs;
            let [pa, pb] = &mut peers;
            exchange(a, pa, b, pb);
            assert_eq!(heads_hex(a), heads_hex(b), "seed {seed}");
            let states: BTreeMap<String, AlertState> = alert_states(a)
                .into_iter()
                .map(|(k, (s, _))| (k, s))
                .collect();
            assert_eq!(states, expected, "seed {seed}");
        }
    }

    #[test]
    fn oversized_and_garbage_messages_are_errors() {
        let mut doc = new_doc(&[1; 16]);
        let mut peer = SyncPeer::new(false);
        let big = alloc::vec![0u8; DOC_SYNC_LEN_MAX + 1];
        assert!(matches!(
            peer.receive(&mut doc, &big),
            Err(DocError::TooLarge { .. })
        ));
        for garbage in [&b""[..], b"\x42", b"\x42\x01\x02\x03", &[0xff; 64]] {
            assert!(peer.receive(&mut doc, garbage).is_err());
        }
        assert!(load(b"not a document", &[1; 16]).is_err());
    }
}
