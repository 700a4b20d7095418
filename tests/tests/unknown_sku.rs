//! Unknown SKUs over real processes: once HQ has a catalog, a sale naming a SKU the
//! catalog does not list is accepted by the agent and raises one warning at the store
//! (not one per sale), which also reaches the hub; catalog SKUs raise nothing.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Test code: a failed unwrap is a failed test.

use std::time::Duration;

use serde_json::Value;
use storesync_tests::stack::{
    Edge, admin_token, edge_api, enroll_ok, hub_api, post_ndjson, setup, stop_both, wait_count,
};
use storesync_tests::wait_for;

fn sale(n: usize, sku: &str) -> String {
    let mut line = serde_json::json!({
        "transactionId": format!("u-{n}"),
        "storeId": "s1",
        "timestamp": "2026-11-21T10:00:00Z",
        "items": [{"itemId": sku, "quantity": 1, "price": 2.5}],
        "totalAmount": 2.5,
        "paymentMethod": "card",
        "registerId": "r1"
    })
    .to_string();
    line.push('\n');
    line
}

fn unknown_sku_alerts(edge: &Edge) -> Vec<Value> {
    let (_, list) = edge_api(edge, "GET", "/api/v1/alerts?limit=1000", "");
    list["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "unknown_sku")
        .cloned()
        .collect()
}

#[test]
fn a_sale_of_an_unknown_sku_is_accepted_and_warns_once() {
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge) = setup(root.path());
    hub.start();
    enroll_ok(&hub, &edge);
    let token = admin_token(&hub);
    edge.start();

    // Without a catalog nothing is unknown.
    post_ndjson(&edge, &sale(0, "mystery"));
    let (status, body) = hub_api(
        &hub,
        &token,
        "PUT",
        "/api/v1/catalog/widget",
        r#"{"name":"Widget","category":"tools","price":2.5,"reorderThreshold":0}"#,
    );
    assert_eq!(status, 200, "{body}");
    wait_for("the catalog at the agent", Duration::from_secs(60), || {
        let (_, doc) = edge_api(&edge, "GET", "/api/v1/documents", "");
        doc["tenant"]["catalog"]["widget"].is_object().then_some(())
    });
    assert!(unknown_sku_alerts(&edge).is_empty());

    // Three sales of an unknown SKU (one batch, then two more) and one of a known SKU: all
    // accepted, one warning.
    post_ndjson(
        &edge,
        &format!("{}{}", sale(1, "mystery"), sale(2, "widget")),
    );
    post_ndjson(&edge, &sale(3, "mystery"));
    post_ndjson(&edge, &sale(4, "mystery"));
    wait_count(&hub, 5);
    let alerts = unknown_sku_alerts(&edge);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["subject"], "mystery");
    assert_eq!(alerts[0]["severity"], "warning");
    // The hub has it too, as the store's alert.
    wait_for("the warning at the hub", Duration::from_secs(30), || {
        let (_, list) = hub_api(&hub, &token, "GET", "/api/v1/alerts", "");
        list["items"]
            .as_array()?
            .iter()
            .find(|a| a["kind"] == "unknown_sku" && a["storeId"] == "s1")
            .cloned()
    });
    stop_both(&mut edge, &mut hub);
}
