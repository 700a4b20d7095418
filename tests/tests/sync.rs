//! Sync end to end, over real processes: a hub on its embedded store, an agent enrolled with
//! a one-time token, transactions posted to the agent, and the hub's committed set checked
//! against what the agent accepted — across an agent kill -9, a hub kill -9 while the agent
//! keeps taking sales, garbage datagrams on the sync port, and a device revocation.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Test code: a failed unwrap is a failed test.

use std::time::Duration;

use storesync_tests::stack::{enroll, enroll_token, post_sales, setup, wait_count};
use storesync_tests::{run, wait_for};

#[test]
fn sync_end_to_end_through_crashes_garbage_and_revocation() {
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge) = setup(root.path());
    hub.start();

    // A token is good once, and only for its store.
    let token = enroll_token(&hub, "s1");
    let enrolled = enroll(&hub, &edge, &token);
    assert!(
        enrolled.status.success(),
        "{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    let again = enroll(&hub, &edge, &token);
    assert!(!again.status.success(), "a used token must be refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("unknown, used or expired"));
    let key = edge.dir.join("sync/device.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    edge.start();
    let mut expected_total = post_sales(&edge, 0, 300);
    let (count, distinct, total) = wait_count(&hub, 300);
    assert_eq!((count, distinct, total), (300, 300, expected_total));

    // Garbage and plaintext datagrams on the sync port do not disturb the live session.
    let garbage = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in 0..500u32 {
        let len = 1 + (n as usize * 7919) % 1200;
        let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let _ = garbage.send_to(&bytes, &hub.sync);
        let _ = garbage.send_to(b"GET / HTTP/1.1\r\n\r\n", &hub.sync);
    }
    expected_total += post_sales(&edge, 300, 100);
    assert_eq!(wait_count(&hub, 400), (400, 400, expected_total));

    // The agent is killed mid-stream and restarted: nothing acknowledged to a POS is lost,
    // nothing is applied twice.
    expected_total += post_sales(&edge, 400, 200);
    edge.proc.as_mut().unwrap().kill9();
    edge.start();
    assert_eq!(wait_count(&hub, 600), (600, 600, expected_total));

    // The hub is killed; the store keeps selling; the hub returns and catches up.
    hub.proc.as_mut().unwrap().kill9();
    expected_total += post_sales(&edge, 600, 150);
    hub.start();
    assert_eq!(wait_count(&hub, 750), (750, 750, expected_total));

    // Revocation: live connections close and new ones are refused.
    let device = edge.device();
    let mut c = hub.cmd();
    c.args(["device", "revoke", "--tenant", "acme", &device]);
    assert!(run(c).contains("revoked 1"));
    let log = hub.dir.join("hub.log");
    wait_for(
        "the revoked session to close",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("certificate revoked"))
                .map(|_| ())
        },
    );
    post_sales(&edge, 750, 10);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(hub.db_counts().0, 750, "a revoked device must not deliver");

    // Both stop cleanly.
    storesync_tests::stack::stop_both(&mut edge, &mut hub);
}

#[test]
fn a_token_for_another_store_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (mut hub, edge) = setup(root.path());
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
    run(c);
    let token = enroll_token(&hub, "s2");
    let out = enroll(&hub, &edge, &token);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("configured for acme/s1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A token whose hub fingerprint is wrong never reaches the hub's token check.
    let mut parts: Vec<String> = token.split('~').map(str::to_string).collect();
    parts[2] = "s1".into();
    parts[4] = "00".repeat(32);
    let out = enroll(&hub, &edge, &parts.join("~"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match the enrollment token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        hub.proc
            .as_mut()
            .unwrap()
            .terminate(Duration::from_secs(20))
    );
}
