//! The replicated documents end to end, over real processes: alert acknowledgements made
//! at the hub show at the store's agent and the other way round, edits made while the two
//! were apart merge, and both replicas end with equal heads.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Test code: a failed unwrap is a failed test.

use std::time::Duration;

use storesync_tests::stack::{
    admin_token, edge_api, enroll_ok, hub_api, post_sales, setup, wait_count,
    wait_store_doc_converged,
};
use storesync_tests::wait_for;

fn edge_alert_state(edge: &storesync_tests::stack::Edge, id: &str) -> Option<String> {
    let (_, list) = edge_api(edge, "GET", "/api/v1/alerts?limit=1000", "");
    list["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["alertId"] == id)
        .and_then(|a| a["state"].as_str().map(str::to_string))
}

fn hub_alert_state(hub: &storesync_tests::stack::Hub, token: &str, id: &str) -> Option<String> {
    let (_, list) = hub_api(hub, token, "GET", "/api/v1/alerts?limit=1000", "");
    list["items"]
        .as_array()?
        .iter()
        .find(|a| a["alertId"] == id)
        .and_then(|a| a["state"].as_str().map(str::to_string))
}

fn wait_state(what: &str, mut state: impl FnMut() -> Option<String>, expected: &str) {
    wait_for(what, Duration::from_secs(60), || {
        (state().as_deref() == Some(expected)).then_some(())
    });
}

#[test]
fn alert_marks_travel_both_ways_and_offline_edits_merge() {
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge) = setup(root.path());
    hub.start();
    enroll_ok(&hub, &edge);
    let token = admin_token(&hub);
    edge.start();

    // Sales of items never counted in: each SKU goes out of stock and raises an alert.
    post_sales(&edge, 0, 40);
    wait_count(&hub, 40);
    let ids: Vec<String> = wait_for("four alerts at the agent", Duration::from_secs(30), || {
        let (_, list) = edge_api(&edge, "GET", "/api/v1/alerts?limit=1000", "");
        let ids: Vec<String> = list["alerts"]
            .as_array()?
            .iter()
            .filter_map(|a| a["alertId"].as_str().map(str::to_string))
            .collect();
        (ids.len() >= 4).then_some(ids)
    });
    for id in &ids[..4] {
        wait_state(
            "the alert at the hub",
            || hub_alert_state(&hub, &token, id),
            "open",
        );
    }

    // Acknowledged at the hub: acknowledged at the store.
    let (status, body) = hub_api(
        &hub,
        &token,
        "POST",
        &format!("/api/v1/alerts/{}/acknowledge", ids[0]),
        "",
    );
    assert_eq!(status, 200, "{body}");
    wait_state(
        "the hub's acknowledgement at the agent",
        || edge_alert_state(&edge, &ids[0]),
        "acknowledged",
    );

    // Acknowledged at the store: acknowledged at the hub.
    let (status, body) = edge_api(
        &edge,
        "POST",
        &format!("/api/v1/alerts/{}/acknowledge", ids[1]),
        "",
    );
    assert_eq!(status, 200, "{body}");
    wait_state(
        "the agent's acknowledgement at the hub",
        || hub_alert_state(&hub, &token, &ids[1]),
        "acknowledged",
    );
    let heads = wait_store_doc_converged(&hub, &edge, &token);
    assert!(!heads.is_empty());

    // Apart: the store resolves one alert while the hub is down; then the agent is down
    // while HQ acknowledges another and resolves the first one too.
    hub.proc
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(20));
    let (status, _) = edge_api(
        &edge,
        "POST",
        &format!("/api/v1/alerts/{}/resolve", ids[2]),
        "",
    );
    assert_eq!(status, 200);
    edge.proc
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(20));
    hub.start();
    for (id, action) in [(&ids[3], "acknowledge"), (&ids[0], "resolve")] {
        let (status, body) = hub_api(
            &hub,
            &token,
            "POST",
            &format!("/api/v1/alerts/{id}/{action}"),
            "",
        );
        assert_eq!(status, 200, "{body}");
    }
    edge.start();
    wait_state(
        "merged: resolved at the store",
        || hub_alert_state(&hub, &token, &ids[2]),
        "resolved",
    );
    wait_state(
        "merged: acknowledged at HQ",
        || edge_alert_state(&edge, &ids[3]),
        "acknowledged",
    );
    wait_state(
        "merged: resolved at HQ",
        || edge_alert_state(&edge, &ids[0]),
        "resolved",
    );
    wait_store_doc_converged(&hub, &edge, &token);
    let (_, doc) = edge_api(&edge, "GET", "/api/v1/documents", "");
    let marks = &doc["store"]["alerts"];
    assert_eq!(marks[&ids[0]]["state"], "resolved");
    assert_eq!(marks[&ids[1]]["state"], "acknowledged");
    assert_eq!(marks[&ids[2]]["state"], "resolved");
    assert_eq!(marks[&ids[3]]["state"], "acknowledged");
    assert!(marks[&ids[3]]["by"].as_str().unwrap().contains("admin"));

    storesync_tests::stack::stop_both(&mut edge, &mut hub);
}

fn on_hand(edge: &storesync_tests::stack::Edge, sku: &str) -> Option<i64> {
    let (_, inv) = edge_api(edge, "GET", &format!("/api/v1/inventory?sku={sku}"), "");
    inv["items"].as_array()?.first()?["onHand"].as_i64()
}

fn has_alert(edge: &storesync_tests::stack::Edge, kind: &str, subject: &str) -> bool {
    let (_, list) = edge_api(edge, "GET", "/api/v1/alerts?limit=1000", "");
    list["alerts"].as_array().is_some_and(|a| {
        a.iter()
            .any(|a| a["kind"] == kind && a["subject"] == subject)
    })
}

#[test]
fn hq_catalog_thresholds_adjustments_and_transfers_reach_the_store_once() {
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge) = setup(root.path());
    hub.start();
    let mut c = hub.cmd();
    c.args([
        "store",
        "add",
        "--tenant",
        "acme",
        "s2",
        "--time-zone",
        "UTC",
    ]);
    storesync_tests::run(c);
    enroll_ok(&hub, &edge);
    let token = admin_token(&hub);
    edge.start();

    // HQ sets a reorder threshold of 50 for one SKU; the agent's default is 5.
    let (status, body) = hub_api(
        &hub,
        &token,
        "PUT",
        "/api/v1/catalog/widget",
        r#"{"name":"Widget","category":"tools","price":2.5,"reorderThreshold":50}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = hub_api(
        &hub,
        &token,
        "PUT",
        "/api/v1/catalog/widget",
        r#"{"name":"Widget"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("price"),
        "{body}"
    );
    wait_for("the catalog at the agent", Duration::from_secs(60), || {
        let (_, doc) = edge_api(&edge, "GET", "/api/v1/documents", "");
        (doc["tenant"]["catalog"]["widget"]["reorderThreshold"] == 50).then_some(())
    });

    // HQ adjustments reach the store's on-hand; the catalog threshold decides the alert.
    for (id, sku) in [("adj-1", "widget"), ("adj-2", "gadget")] {
        let (status, body) = hub_api(
            &hub,
            &token,
            "POST",
            "/api/v1/stores/s1/adjustments",
            &format!(
                r#"{{"adjustmentId":"{id}","sku":"{sku}","delta":30,"reason":"opening stock"}}"#
            ),
        );
        assert_eq!(status, 202, "{body}");
    }
    wait_for(
        "HQ adjustments at the agent",
        Duration::from_secs(60),
        || {
            (on_hand(&edge, "widget") == Some(30) && on_hand(&edge, "gadget") == Some(30))
                .then_some(())
        },
    );
    wait_for(
        "a low-stock alert from the catalog threshold",
        Duration::from_secs(30),
        || has_alert(&edge, "low_stock", "widget").then_some(()),
    );
    assert!(
        !has_alert(&edge, "low_stock", "gadget"),
        "30 is above the default threshold of 5"
    );

    // The same adjustment again changes nothing; a transfer moves stock out of s1.
    let (status, body) = hub_api(
        &hub,
        &token,
        "POST",
        "/api/v1/stores/s1/adjustments",
        r#"{"adjustmentId":"adj-1","sku":"widget","delta":30,"reason":"opening stock"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["new"], false);
    let (status, body) = hub_api(
        &hub,
        &token,
        "POST",
        "/api/v1/transfers",
        r#"{"transferId":"tr-1","fromStore":"s1","toStore":"s2","sku":"gadget","quantity":12}"#,
    );
    assert_eq!(status, 202, "{body}");
    wait_for(
        "the transfer's leg at the agent",
        Duration::from_secs(60),
        || (on_hand(&edge, "gadget") == Some(18)).then_some(()),
    );

    // A restarted agent applies nothing twice.
    edge.proc
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(20));
    edge.start();
    wait_store_doc_converged(&hub, &edge, &token);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(on_hand(&edge, "widget"), Some(30));
    assert_eq!(on_hand(&edge, "gadget"), Some(18));

    storesync_tests::stack::stop_both(&mut edge, &mut hub);
}
