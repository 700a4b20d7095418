//! Tasks and settings of the store document, edited at both ends over real processes: HQ
//! through the hub's API (a store manager), the store through the agent's local API. Edits
//! made while the two are apart — on both sides, touching the same tasks and one same
//! setting — merge when they reconnect, and both sides end with the same document.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Test code: a failed unwrap is a failed test.

use std::time::Duration;

use serde_json::Value;
use storesync_tests::stack::{
    Edge, Hub, add_user, admin_token, edge_api, enroll_ok, hub_api, hub_token, setup, stop_both,
    wait_store_doc_converged,
};
use storesync_tests::wait_for;

/// Tasks (by id) and settings as the agent shows them.
fn at_edge(edge: &Edge) -> (Value, Value) {
    let (status, tasks) = edge_api(edge, "GET", "/api/v1/tasks", "");
    assert_eq!(status, 200, "{tasks}");
    let (_, settings) = edge_api(edge, "GET", "/api/v1/settings", "");
    (by_id(&tasks), settings["settings"].clone())
}

/// Tasks (by id) and settings as the hub shows them.
fn at_hub(hub: &Hub, token: &str) -> (Value, Value) {
    let (status, tasks) = hub_api(hub, token, "GET", "/api/v1/stores/s1/tasks", "");
    assert_eq!(status, 200, "{tasks}");
    let (_, settings) = hub_api(hub, token, "GET", "/api/v1/stores/s1/settings", "");
    (by_id(&tasks), settings["settings"].clone())
}

fn by_id(list: &Value) -> Value {
    Value::Object(
        list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["taskId"].as_str().unwrap().to_owned(), t.clone()))
            .collect(),
    )
}

fn ok(answer: (u16, Value)) -> Value {
    assert!((200..300).contains(&answer.0), "{answer:?}");
    answer.1
}

#[test]
fn tasks_and_settings_edited_apart_on_both_sides_converge() {
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge) = setup(root.path());
    hub.start();
    enroll_ok(&hub, &edge);
    let admin = admin_token(&hub);
    add_user(&hub, "mia", "store_manager", "s1", "mia-password");
    let mia = hub_token(&hub, "mia", "mia-password");
    edge.start();

    // Connected: a task from each side reaches the other.
    let created = ok(hub_api(
        &hub,
        &mia,
        "POST",
        "/api/v1/stores/s1/tasks",
        r#"{"taskId": "hq-1", "title": "check the promo labels"}"#,
    ));
    assert_eq!(created["by"], "store_manager:mia");
    ok(edge_api(
        &edge,
        "POST",
        "/api/v1/tasks",
        r#"{"taskId": "store-1", "title": "fix the door"}"#,
    ));
    wait_for(
        "both first tasks on both sides",
        Duration::from_secs(30),
        || {
            let (edge_tasks, _) = at_edge(&edge);
            let (hub_tasks, _) = at_hub(&hub, &mia);
            (edge_tasks.as_object()?.len() == 2 && edge_tasks == hub_tasks).then_some(())
        },
    );

    // Apart: the hub is down while the store edits...
    hub.proc
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(20));
    let done = ok(edge_api(&edge, "POST", "/api/v1/tasks/hq-1/complete", ""));
    assert_eq!(done["done"], true);
    ok(edge_api(
        &edge,
        "POST",
        "/api/v1/tasks",
        r#"{"taskId": "store-2", "title": "restock aisle 4"}"#,
    ));
    ok(edge_api(
        &edge,
        "PUT",
        "/api/v1/settings/closingTime",
        r#"{"value": "20:00"}"#,
    ));
    ok(edge_api(
        &edge,
        "PUT",
        "/api/v1/settings/music",
        r#"{"value": {"playlist": "jazz", "volume": 3}}"#,
    ));
    let (status, bad) = edge_api(
        &edge,
        "PUT",
        "/api/v1/settings/bad%20name",
        r#"{"value": 1}"#,
    );
    assert_eq!(status, 400, "{bad}");
    // ...then the store's agent is down while HQ edits the same document.
    edge.proc
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(20));
    hub.start();
    ok(hub_api(
        &hub,
        &mia,
        "POST",
        "/api/v1/stores/s1/tasks/store-1/complete",
        "",
    ));
    ok(hub_api(
        &hub,
        &mia,
        "POST",
        "/api/v1/stores/s1/tasks",
        r#"{"taskId": "hq-2", "title": "inventory count on Monday"}"#,
    ));
    ok(hub_api(
        &hub,
        &mia,
        "PUT",
        "/api/v1/stores/s1/settings/closingTime",
        r#"{"value": "21:00"}"#,
    ));
    ok(hub_api(
        &hub,
        &admin,
        "PUT",
        "/api/v1/stores/s1/settings/banner",
        r#"{"value": "Winter sale"}"#,
    ));

    // Together again: one document on both sides, with every edit of both.
    edge.start();
    wait_store_doc_converged(&hub, &edge, &admin);
    let (edge_tasks, edge_settings) = at_edge(&edge);
    let (hub_tasks, hub_settings) = at_hub(&hub, &mia);
    assert_eq!(edge_tasks, hub_tasks);
    assert_eq!(edge_settings, hub_settings);
    let ids: Vec<&String> = hub_tasks.as_object().unwrap().keys().collect();
    assert_eq!(ids, ["hq-1", "hq-2", "store-1", "store-2"]);
    for (id, done) in [
        ("hq-1", true),
        ("hq-2", false),
        ("store-1", true),
        ("store-2", false),
    ] {
        assert_eq!(hub_tasks[id]["done"], done, "{id}: {hub_tasks}");
    }
    assert_eq!(hub_tasks["store-1"]["by"], "store_manager:mia");
    assert_eq!(hub_tasks["hq-1"]["by"], "local");
    assert_eq!(hub_settings["music"]["playlist"], "jazz");
    assert_eq!(hub_settings["banner"], "Winter sale");
    // The setting both sides changed apart: one of the two values, the same on both.
    let closing = hub_settings["closingTime"].as_str().unwrap();
    assert!(["20:00", "21:00"].contains(&closing), "{closing}");

    stop_both(&mut edge, &mut hub);
}
