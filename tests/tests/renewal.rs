//! Certificate renewal after a long offline period, over real processes. The hub issues
//! certificates valid for seconds (`[sync] device_cert_secs`) and takes a grace period in
//! seconds (`renew_grace_secs`), so "the certificate expired while the store was offline"
//! happens in the test's time on the real clocks, through the same renewal path as after
//! weeks: a renewal request signed with the old key.
//!
//! - Expired within the grace period: the agent renews and syncs.
//! - Expired longer ago than the grace period: refused, saying so.
//! - Revoked: refused, saying so, although within the grace period.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Test code: a failed unwrap is a failed test.

use std::time::Duration;

use storesync_tests::stack::{Edge, Hub, edge_api, enroll_ok, post_sales, setup, wait_count};
use storesync_tests::{run, wait_for};

/// Sets the hub's certificate validity and renewal grace period, in seconds.
fn set_validity(hub: &Hub, cert_secs: u64, grace_secs: u64) {
    let config = hub.dir.join("hub.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("device_cert_secs") || line.starts_with("renew_grace_secs") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.starts_with("renew_grace_days") {
            out.push_str(&format!(
                "device_cert_secs = {cert_secs}\nrenew_grace_secs = {grace_secs}\n"
            ));
        }
    }
    assert!(
        out.contains("device_cert_secs"),
        "the template has renew_grace_days"
    );
    std::fs::write(&config, out).unwrap();
}

fn restart_hub(hub: &mut Hub) {
    assert!(
        hub.proc
            .as_mut()
            .unwrap()
            .terminate(Duration::from_secs(20))
    );
    hub.start();
}

/// Everything the agent logged in all its runs.
fn agent_logs(edge: &Edge) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(&edge.dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("edge-") && name.ends_with(".log") {
            all.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    all
}

/// Starts the agent, takes 10 sales from number `first`, and waits until its log says the
/// renewal was refused for `reason`; the agent's API (`GET /api/v1/sync`) says it too.
fn renewal_refused(edge: &mut Edge, reason: &str, first: usize) {
    edge.start();
    post_sales(edge, first, 10);
    wait_for(
        &format!("the renewal refusal ({reason})"),
        Duration::from_secs(30),
        || {
            let logs = agent_logs(edge);
            logs.lines()
                .find(|l| l.contains("renewal refused") && l.contains(reason))
                .map(str::to_owned)
        },
    );
    let (status, sync) = edge_api(edge, "GET", "/api/v1/sync", "");
    assert_eq!(status, 200, "{sync}");
    assert_eq!(sync["enrolled"], true, "{sync}");
    assert_eq!(sync["connected"], false, "{sync}");
    let last_error = sync["lastError"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("renewal") && last_error.contains(reason),
        "the agent's sync status names the refusal: {sync}"
    );
    assert!(
        edge.proc
            .as_mut()
            .unwrap()
            .terminate(Duration::from_secs(20))
    );
}

#[test]
fn an_expired_certificate_renews_within_grace_and_not_past_it_or_when_revoked() {
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge) = setup(root.path());
    set_validity(&hub, 3, 3600);
    hub.start();
    enroll_ok(&hub, &edge);
    let first_cert = std::fs::read(edge.dir.join("sync/device.der")).unwrap();

    // The store is "offline" past its certificate's expiry, then comes back.
    std::thread::sleep(Duration::from_secs(5));
    edge.start();
    let device = edge.device();
    post_sales(&edge, 0, 50);
    wait_count(&hub, 50);
    let renewed = std::fs::read(edge.dir.join("sync/device.der")).unwrap();
    assert_ne!(first_cert, renewed, "a new certificate was stored");
    assert!(agent_logs(&edge).contains("certificate renewed"));
    assert!(
        edge.proc
            .as_mut()
            .unwrap()
            .terminate(Duration::from_secs(20))
    );

    // Offline for longer than the grace period: refused, and nothing is delivered.
    set_validity(&hub, 3, 1);
    restart_hub(&mut hub);
    std::thread::sleep(Duration::from_secs(5));
    renewal_refused(&mut edge, "grace period", 50);
    assert_eq!(
        hub.db_counts().0,
        50,
        "a device past its grace period does not deliver"
    );

    // Revoked, even within the grace period: refused.
    set_validity(&hub, 3, 3600);
    restart_hub(&mut hub);
    let mut c = hub.cmd();
    c.args(["device", "revoke", "--tenant", "acme", &device]);
    assert!(run(c).contains("revoked"));
    renewal_refused(&mut edge, "revoked", 60);
    assert_eq!(hub.db_counts().0, 50, "a revoked device does not deliver");
    assert!(
        hub.proc
            .as_mut()
            .unwrap()
            .terminate(Duration::from_secs(20))
    );
}
