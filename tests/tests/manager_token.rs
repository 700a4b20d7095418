//! A store manager's token from the hub opens the agent's local API, verified offline with
//! the tenant's key that enrollment brought (no key file configured); the desktop app
//! relies on it while the hub is unreachable.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use storesync_tests::http;
use storesync_tests::stack::{add_user, enroll_ok, hub_token, require_tokens, setup};

#[test]
fn hub_issued_manager_token_opens_the_agent_api_while_the_hub_is_down() {
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge) = setup(root.path());
    hub.start();
    add_user(
        &hub,
        "manager-s1",
        "store_manager",
        "s1",
        "manager-password",
    );
    add_user(
        &hub,
        "manager-s2",
        "store_manager",
        "s2",
        "manager-password",
    );
    add_user(&hub, "analyst", "analyst", "", "analyst-password");
    add_user(&hub, "boss", "admin", "", "admin-password");
    let manager = hub_token(&hub, "manager-s1", "manager-password");
    let other_store = hub_token(&hub, "manager-s2", "manager-password");
    let analyst = hub_token(&hub, "analyst", "analyst-password");
    let admin = hub_token(&hub, "boss", "admin-password");
    enroll_ok(&hub, &edge);
    require_tokens(&edge);
    // The hub is gone: the agent checks tokens on its own.
    hub.proc.as_mut().unwrap().kill9();
    edge.start();

    let status = |token: Option<&str>, method: &str, path: &str| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        http(method, &edge.api, path, &headers, b"").unwrap().status
    };
    for path in [
        "/api/v1/summary",
        "/api/v1/rollups?granularity=hour",
        "/api/v1/top-items",
        "/api/v1/inventory",
        "/api/v1/alerts",
    ] {
        assert_eq!(status(Some(&manager), "GET", path), 200, "{path}");
        assert_eq!(status(Some(&admin), "GET", path), 200, "{path}");
        assert_eq!(status(None, "GET", path), 401, "{path}");
        assert_eq!(status(Some(&other_store), "GET", path), 403, "{path}");
        assert_eq!(status(Some(&analyst), "GET", path), 403, "{path}");
    }
    assert_eq!(
        status(Some(&manager), "POST", "/api/v1/alerts/nope/acknowledge"),
        404
    );
    // One signature character changed (not the last, whose low bits are padding).
    let mut forged = manager.clone().into_bytes();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(status(Some(&forged), "GET", "/api/v1/summary"), 401);
}
