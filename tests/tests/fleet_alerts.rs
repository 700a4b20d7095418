//! Fleet alerts over real processes: a store whose agent stops is reported as not syncing by
//! the hub's periodic check — once, visible to admins and to that store's manager only —
//! and the alert resolves by itself when the agent comes back.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Test code: a failed unwrap is a failed test.

use std::time::Duration;

use storesync_tests::stack::{
    add_user, admin_token, enroll_ok, hub_api, hub_token, post_sales, setup, stop_both, wait_count,
};
use storesync_tests::{run, wait_for};

const ALERT: &str = "hub-not-syncing-s1";

/// The store-not-syncing alerts `token` can see.
fn not_syncing(hub: &storesync_tests::stack::Hub, token: &str) -> Vec<serde_json::Value> {
    let (status, listed) = hub_api(hub, token, "GET", "/api/v1/alerts", "");
    assert_eq!(status, 200, "{listed}");
    listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "store_not_syncing")
        .cloned()
        .collect()
}

#[test]
fn a_silent_store_raises_one_not_syncing_alert_that_resolves_when_it_syncs() {
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge) = setup(root.path());
    let config = hub.dir.join("hub.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "not_syncing_after_secs = 900",
            "not_syncing_after_secs = 12",
        )
        .replace("not_syncing_check_secs = 30", "not_syncing_check_secs = 1");
    assert!(text.contains("not_syncing_after_secs = 12"));
    std::fs::write(&config, text).unwrap();
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
    run(c);
    hub.start();
    enroll_ok(&hub, &edge);
    let admin = admin_token(&hub);
    add_user(&hub, "mia", "store_manager", "s1", "mia-password");
    add_user(&hub, "sam", "store_manager", "s2", "sam-password");
    let mia = hub_token(&hub, "mia", "mia-password");
    let sam = hub_token(&hub, "sam", "sam-password");

    edge.start();
    post_sales(&edge, 0, 20);
    wait_count(&hub, 20);
    // Syncing: no alert, even after the limit has passed once.
    std::thread::sleep(Duration::from_secs(14));
    assert!(
        not_syncing(&hub, &admin).is_empty(),
        "a connected store is syncing"
    );

    // The agent stops: the hub raises the alert within the limit plus a check interval.
    edge.proc
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(20));
    let alert = wait_for("the not-syncing alert", Duration::from_secs(40), || {
        not_syncing(&hub, &admin).pop()
    });
    assert_eq!(alert["alertId"], ALERT);
    assert_eq!(alert["kind"], "store_not_syncing");
    assert_eq!(alert["state"], "open");
    assert_eq!(alert["storeId"], "s1");
    // Its manager sees it, another store's manager does not.
    assert_eq!(not_syncing(&hub, &mia).len(), 1);
    assert!(not_syncing(&hub, &sam).is_empty());
    let (status, _) = hub_api(
        &hub,
        &sam,
        "POST",
        &format!("/api/v1/alerts/{ALERT}/acknowledge"),
        "",
    );
    assert_eq!(status, 404, "another store's manager cannot reach it");
    // Acknowledged, it stays one acknowledged alert over later checks.
    let (status, _) = hub_api(
        &hub,
        &mia,
        "POST",
        &format!("/api/v1/alerts/{ALERT}/acknowledge"),
        "",
    );
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(3));
    let fleet = not_syncing(&hub, &admin);
    assert_eq!(fleet.len(), 1, "{fleet:?}");
    assert_eq!(fleet[0]["state"], "acknowledged");

    // The agent returns: the alert resolves by itself.
    edge.start();
    let resolved = wait_for("the alert to resolve", Duration::from_secs(40), || {
        not_syncing(&hub, &admin)
            .pop()
            .filter(|a| a["state"] == "resolved")
    });
    assert_eq!(resolved["changedBy"], "hub");
    stop_both(&mut edge, &mut hub);
}
