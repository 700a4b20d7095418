//! Sync end to end over a bad network: the agent reaches the hub only through the UDP fault
//! proxy, which loses 20% of datagrams, duplicates 5% and delays each by up to 200 ms
//! (reordering them) in both directions. Sales are posted in rounds while the faults are on,
//! with a partition of 25 s in the middle (longer than the agent's session, shortened to 11 s
//! as time is compressed here, so the agent reconnects through the faulty link) and a kill -9
//! of the agent right after a round; once the network heals, the hub's committed
//! set must equal what the agent accepted (count and checksum, `storesync_tests::verify`),
//! the hub's series the agent's rollups, and the store document's heads on both sides.
//!
//! The partition outlasts the session: the agent's session ends, its reconnect attempts
//! fail until the link heals, and the next one succeeds through the faults (the test checks
//! the agent connected again). The hub's side of the old connection ends at its own idle
//! timeout.
//!
//! The seed of the fault decisions is printed; `STORESYNC_FAULT_SEED=N` replays the
//! network's decisions (not the endpoints' timing).

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use storesync_sim::faultproxy::{self, Direction, FaultHandle, Faults, ProxyConfig};
use storesync_tests::stack::{
    Edge, Hub, admin_token, edge_api, enroll_ok, hub_api, post_sales, setup,
    wait_store_doc_converged,
};
use storesync_tests::{verify, wait_for};

/// Points the enrolled agent at `addr` instead of the hub.
fn rehome(edge: &Edge, addr: &str) {
    let path = edge.dir.join("sync/enrollment.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("hub = "))
        .unwrap()
        .to_string();
    std::fs::write(&path, text.replace(&line, &format!("hub = \"{addr}\""))).unwrap();
}

fn report(proxy: &FaultHandle) -> String {
    format!(
        "seed {}; to hub {:?}; to agent {:?}",
        proxy.seed(),
        proxy.stats(Direction::ToUpstream),
        proxy.stats(Direction::ToClient)
    )
}

#[test]
fn sync_converges_through_loss_duplication_jitter_partition_and_kill9() {
    let seed = std::env::var("STORESYNC_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("fault proxy seed {seed} (replay with STORESYNC_FAULT_SEED={seed})");

    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge): (Hub, Edge) = setup(root.path());
    // Time compressed: a session ends after 11 s without a word from the hub (two missed
    // heartbeats) instead of 15, and reconnect attempts are at most 3 s apart instead of a
    // minute, so the 25 s partition below outlasts the session as a partition of hours
    // would outlast the default settings.
    let text = std::fs::read_to_string(&edge.config).unwrap();
    let text = text
        .replace("session_idle_ms = 15000", "session_idle_ms = 11000")
        .replace(
            "reconnect_delay_ms_max = 60000",
            "reconnect_delay_ms_max = 3000",
        );
    std::fs::write(&edge.config, text).unwrap();
    hub.start();
    enroll_ok(&hub, &edge);
    let token = admin_token(&hub);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let faults = Faults {
        loss: 0.2,
        duplicate: 0.05,
        delay_ms: 0,
        jitter_ms: 200,
    };
    let proxy = runtime
        .block_on(faultproxy::start(ProxyConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: hub.sync.parse().unwrap(),
            to_upstream: faults,
            to_client: faults,
            seed,
        }))
        .unwrap();
    rehome(&edge, &proxy.local_addr().to_string());
    edge.start();

    // Sales go in rounds; `posted` counts them and `expected_total` sums their totals.
    let mut posted = 0usize;
    let mut expected_total = 0i64;
    let mut post = |edge: &Edge, count: usize| {
        expected_total += post_sales(edge, posted, count);
        posted += count;
        posted as i64
    };
    let delivered_under_faults = |what: &str, expected: i64, proxy: &FaultHandle| {
        let started = Instant::now();
        wait_for(
            &format!("{what}: {expected} at the hub ({})", report(proxy)),
            Duration::from_secs(60),
            || (hub.db_counts().0 >= expected).then_some(()),
        );
        eprintln!("{what}: delivered in {} ms", started.elapsed().as_millis());
    };

    // Round 1: the session comes up and delivers through the faults.
    let expected = post(&edge, 300);
    delivered_under_faults("round 1 under faults", expected, &proxy);

    // Document edits under faults: HQ acknowledges one alert, the store resolves another
    // while it is cut off (below).
    let alerts: Vec<String> = wait_for("two alerts at the agent", Duration::from_secs(30), || {
        let (_, list) = edge_api(&edge, "GET", "/api/v1/alerts?limit=1000", "");
        let ids: Vec<String> = list["alerts"]
            .as_array()?
            .iter()
            .filter_map(|a| a["alertId"].as_str().map(str::to_string))
            .collect();
        (ids.len() >= 2).then_some(ids)
    });
    wait_for("HQ's acknowledgement", Duration::from_secs(60), || {
        let path = format!("/api/v1/alerts/{}/acknowledge", alerts[0]);
        (hub_api(&hub, &token, "POST", &path, "").0 == 200).then_some(())
    });

    // Round 2 is cut by a partition of 25 s while it streams; round 3 is posted into it.
    // The session ends during it; the agent reconnects, through the still faulty link,
    // once it heals.
    post(&edge, 500);
    std::thread::sleep(Duration::from_millis(200));
    let sessions = |edge: &Edge| edge.logs().matches("sync: connected").count();
    let before = sessions(&edge);
    proxy.set_partitioned(true);
    let at_partition = hub.db_counts().0;
    let expected = post(&edge, 200);
    let path = format!("/api/v1/alerts/{}/resolve", alerts[1]);
    assert_eq!(edge_api(&edge, "POST", &path, "").0, 200);
    std::thread::sleep(Duration::from_secs(25));
    proxy.set_partitioned(false);
    eprintln!("partition: {at_partition} at the hub when it started");
    delivered_under_faults("rounds 2 and 3 after the partition", expected, &proxy);
    assert!(
        sessions(&edge) > before,
        "the agent reconnected after the partition ({})",
        report(&proxy)
    );

    // Round 4: the agent is killed while it streams, restarted, and takes round 5.
    post(&edge, 500);
    std::thread::sleep(Duration::from_millis(300));
    edge.proc.as_mut().unwrap().kill9();
    edge.start();
    let expected = post(&edge, 200);
    std::thread::sleep(Duration::from_secs(3));
    let before_heal = hub.db_counts();

    // The network heals; everything the agent accepted arrives once.
    let healed_at = Instant::now();
    proxy.heal();
    let counts = wait_for(
        &format!(
            "{expected} transactions at the hub after healing ({})",
            report(&proxy)
        ),
        Duration::from_secs(60),
        || {
            let counts = hub.db_counts();
            (counts.0 >= expected).then_some(counts)
        },
    );
    let heal_ms = healed_at.elapsed().as_millis();
    eprintln!(
        "healed in {heal_ms} ms ({} of {expected} at the hub when the network healed); {}",
        before_heal.0,
        report(&proxy)
    );
    assert_eq!(
        counts,
        (expected, expected, expected_total),
        "count, distinct ids and sum of totals at the hub ({})",
        report(&proxy)
    );
    // The same set on both sides by count and checksum (settled for a second: nothing
    // arrives twice later either), and the same rollups.
    let set = verify::wait_tx_sets_equal(
        &verify::sqlite_db(&hub),
        &edge,
        Duration::from_secs(30),
        &|| report(&proxy),
        |edge| edge,
    );
    assert_eq!(set.count, expected as u64, "{}", report(&proxy));
    assert_eq!(hub.db_counts(), counts, "{}", report(&proxy));
    verify::wait_rollups_equal(
        &hub,
        &edge,
        &token,
        "2026-11-19T00:00:00Z",
        "2026-11-24T00:00:00Z",
    );

    // The store document has equal heads on both sides, holding both edits.
    let heads = wait_store_doc_converged(&hub, &edge, &token);
    eprintln!("store document converged at heads {heads:?}");
    let (_, doc) = edge_api(&edge, "GET", "/api/v1/documents", "");
    assert_eq!(doc["store"]["alerts"][&alerts[0]]["state"], "acknowledged");
    assert_eq!(doc["store"]["alerts"][&alerts[1]]["state"], "resolved");

    // The faults were exercised, not skipped.
    let up = proxy.stats(Direction::ToUpstream);
    let down = proxy.stats(Direction::ToClient);
    assert!(up.lost > 0 && down.lost > 0, "{}", report(&proxy));
    assert!(up.partitioned + down.partitioned > 0, "{}", report(&proxy));

    storesync_tests::stack::stop_both(&mut edge, &mut hub);
}
