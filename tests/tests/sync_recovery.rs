//! Sync end to end through process and storage faults, with real agent and hub processes:
//! the hub killed (-9) while it commits a large backlog, PostgreSQL restarted and crashed
//! under the hub while it syncs, the agent's data directory restored from an older backup,
//! and the hub's database restored from an older backup (its per-device high-water mark
//! falls behind what the agent saw acknowledged).
//!
//! After each scenario heals, [`verify::assert_converged`] compares the hub's transactions
//! with the agent's accepted ones by count and an order-independent BLAKE3 checksum (both
//! recomputed from the stored events), the hub's sales series with the agent's rollups for
//! the same ranges and groupings, and the store document's heads on both sides.
//!
//! Each check was seen to fail when the property it guards was broken on purpose: the hub
//! writing its stream head in a transaction of its own before the events (the kill loses
//! batches the head claims), the hub acknowledging before its commit finished (the
//! PostgreSQL scenario stalls; the hub-kill scenario does not notice, because the agent
//! re-sends whatever the hub's head is behind), `restore` keeping the old epoch (the new
//! sales re-mint keys the hub holds and become conflicts), and the agent not rewinding
//! when the hub is behind what it acknowledged (the restored hub never gets them back).
//!
//! The scenarios run one at a time (a lock), so that each stack has the machine's cores.

#![allow(clippy::unwrap_used, clippy::print_stderr)] // Test code: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use storesync_hub::testing::PgCluster;
use storesync_tests::stack::{
    Edge, Hub, admin_token, edge_api, enroll_ok, hub_api, post_ndjson, setup_with_store,
};
use storesync_tests::verify::{self, HubDb, TxSet, hub_count};
use storesync_tests::{binary, http, run, wait_for};

/// One scenario at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The range the rollups are compared over: every sale is on 2026-11-21 (UTC), and the
/// range is wide enough that day buckets in the store's zone fall inside it whole.
const RANGE: (&str, &str) = ("2026-11-19T00:00:00Z", "2026-11-24T00:00:00Z");

/// Sale `n` as one NDJSON line: one to three lines of items, spread over the day's hours
/// and minutes, three payment methods and two registers (`register` overrides it).
fn sale(n: usize, register: Option<&str>) -> String {
    let lines = 1 + n % 3;
    let mut items = Vec::new();
    let mut total_cents = 0i64;
    for line in 0..lines {
        let cents = 50 + ((n * 37 + line * 101) % 4_000) as i64;
        let quantity = 1 + ((n + line) % 3) as i64;
        total_cents += cents * quantity;
        items.push(serde_json::json!({
            "itemId": format!("sku-{}", (n + line * 7) % 23),
            "quantity": quantity,
            "price": cents as f64 / 100.0,
        }));
    }
    let register = register.map_or_else(|| format!("r{}", n % 2), str::to_string);
    let payment = ["card", "cash", "mobile"][n % 3];
    serde_json::json!({
        "transactionId": format!("tx-{n:07}"),
        "storeId": "s1",
        "timestamp": format!("2026-11-21T{:02}:{:02}:{:02}Z", 6 + n % 14, (n / 14) % 60, n % 60),
        "items": items,
        "totalAmount": total_cents as f64 / 100.0,
        "paymentMethod": payment,
        "registerId": register,
    })
    .to_string()
}

/// Posts sales `range` to the agent in requests of at most 5,000.
fn post_sales(edge: &Edge, range: std::ops::Range<usize>) {
    let numbers: Vec<usize> = range.collect();
    for chunk in numbers.chunks(5_000) {
        let body: String = chunk.iter().map(|&n| sale(n, None) + "\n").collect();
        post_ndjson(edge, &body);
    }
}

/// Waits up to `timeout` until the hub holds at least `n` transactions.
fn wait_hub_count(db: &HubDb, n: u64, timeout: Duration, what: &str) -> u64 {
    wait_for(
        &format!("{what}: {n} transactions at the hub"),
        timeout,
        || {
            let count = hub_count(db);
            (count >= n).then_some(count)
        },
    )
}

/// Acknowledges an open alert at the agent (a store document edit); returns its id.
fn acknowledge_an_alert_at_edge(edge: &Edge) -> String {
    let id = wait_for(
        "an open alert at the agent",
        Duration::from_secs(30),
        || {
            let (_, list) = edge_api(edge, "GET", "/api/v1/alerts?limit=1000", "");
            list["alerts"]
                .as_array()?
                .iter()
                .find(|a| a["state"] == "open")
                .and_then(|a| a["alertId"].as_str().map(str::to_string))
        },
    );
    let path = format!("/api/v1/alerts/{id}/acknowledge");
    assert_eq!(edge_api(edge, "POST", &path, "").0, 200, "acknowledge {id}");
    id
}

/// The store document's state of an alert at the agent.
fn alert_state_at_edge(edge: &Edge, id: &str) -> serde_json::Value {
    let (_, doc) = edge_api(edge, "GET", "/api/v1/documents", "");
    doc["store"]["alerts"][id]["state"].clone()
}

/// Sales 0..300 posted at the agent and counted at the hub.
fn first_sales(edge: &Edge, db: &HubDb) {
    post_sales(edge, 0..300);
    wait_hub_count(db, 300, Duration::from_secs(60), "first round");
}

/// Sales 0..300 delivered, then a store document edit at the agent (an acknowledged
/// alert, whose id is returned).
fn first_round(edge: &Edge, db: &HubDb) -> String {
    first_sales(edge, db);
    acknowledge_an_alert_at_edge(edge)
}

/// A store document edit at the agent (an acknowledged alert, whose id is returned), once
/// the hub's copy of the document shows it.
fn acknowledged_at_hub(edge: &Edge, hub: &Hub, token: &str) -> String {
    let acked = acknowledge_an_alert_at_edge(edge);
    wait_for(
        "the acknowledgement at the hub",
        Duration::from_secs(60),
        || {
            let (_, doc) = hub_api(hub, token, "GET", "/api/v1/stores/s1/document", "");
            (doc["alerts"][&acked]["state"] == "acknowledged").then_some(())
        },
    );
    acked
}

/// The end of a scenario: `total` distinct sales once at the hub, the edit `acked` still
/// at the agent, both processes stop cleanly.
fn finish(set: TxSet, total: u64, acked: &str, edge: &mut Edge, hub: &mut Hub) {
    assert_eq!(set.count, total, "every sale once at the hub");
    assert_eq!(set.ids.len() as u64, total, "distinct transaction ids");
    assert_eq!(alert_state_at_edge(edge, acked), "acknowledged");
    storesync_tests::stack::stop_both(edge, hub);
}

/// Stops a process with SIGTERM, asserting it exits within 20 s.
fn stop(proc: &mut Option<storesync_tests::Proc>, name: &str) {
    let proc = proc.as_mut().expect("the process is running");
    assert!(
        proc.terminate(Duration::from_secs(20)),
        "the {name} stops cleanly"
    );
}

/// A hub and an agent started and enrolled; the admin token.
fn started(root: &Path, store: Option<&str>) -> (Hub, Edge, String) {
    let (mut hub, mut edge) = setup_with_store(root, store);
    hub.start();
    enroll_ok(&hub, &edge);
    let token = admin_token(&hub);
    edge.start();
    (hub, edge, token)
}

/// Posts `backlog` sales while the hub is down, starts it and kills it (-9) `kills` times
/// while it commits the backlog, each time once the count has grown by `step` since the
/// last start; restarts it after each kill. Returns the counts at the kills.
fn kill_hub_while_it_catches_up(
    hub: &mut Hub,
    db: &HubDb,
    total: u64,
    kills: usize,
    step: u64,
) -> Vec<u64> {
    let mut at_kills = Vec::new();
    for _ in 0..kills {
        let from = hub_count(db);
        let count = wait_hub_count(db, from + step, Duration::from_secs(90), "catching up");
        hub.proc.as_mut().unwrap().kill9();
        assert!(
            count < total,
            "the backlog was committed whole ({count} of {total}) before the hub was killed; \
             the kill tests nothing"
        );
        at_kills.push(count);
        hub.start();
    }
    at_kills
}

#[test]
fn hub_killed_mid_batch_loses_and_duplicates_nothing() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge, token) = started(root.path(), None);
    let db = verify::sqlite_db(&hub);
    let acked = first_round(&edge, &db);

    // A backlog queues while the hub is down; the hub is killed three times while it
    // commits it, each time with batches in flight.
    hub.proc.as_mut().unwrap().kill9();
    let total = 30_300u64;
    post_sales(&edge, 300..total as usize);
    hub.start();
    let started_at = Instant::now();
    let at_kills = kill_hub_while_it_catches_up(&mut hub, &db, total, 3, 2_000);
    eprintln!("hub killed at {at_kills:?} of {total}");

    let set = verify::assert_converged(
        &hub,
        &db,
        &edge,
        &token,
        RANGE,
        &|| format!("hub killed at {at_kills:?}"),
        |edge| edge,
    );
    eprintln!(
        "converged after the kills in {} ms",
        started_at.elapsed().as_millis()
    );
    finish(set, total, &acked, &mut edge, &mut hub);
}

#[test]
fn postgres_restarted_and_crashed_under_the_hub() {
    let _serial = serial();
    let cluster = PgCluster::start(true).unwrap();
    let config = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(cluster.database("sync_recovery"))
        .unwrap();
    let admin_url = config.admin_url.clone().unwrap();
    let store = format!(
        "backend = \"postgres\"\nurl = \"{}\"\nadmin_url = \"{admin_url}\"\napp_role = \"{}\"\npool_size_max = 8",
        config.url,
        storesync_hub::testing::APP_ROLE
    );
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge, token) = started(root.path(), Some(&store));
    let db = HubDb::Postgres(admin_url);
    let acked = first_round(&edge, &db);

    // A backlog queues while the hub is stopped (the hub keeps up with live posting on
    // PostgreSQL); while it catches up, PostgreSQL restarts (fast), then crashes
    // (immediate).
    stop(&mut hub.proc, "hub");
    let total = 30_300u64;
    post_sales(&edge, 300..total as usize);
    hub.start();
    let mut at_restarts = Vec::new();
    for mode in ["fast", "immediate"] {
        let from = hub_count(&db);
        let count = wait_hub_count(&db, from + 1_000, Duration::from_secs(90), "streaming");
        assert!(
            count < total,
            "the backlog was committed whole before {mode}"
        );
        cluster.restart(mode).unwrap();
        at_restarts.push((mode, count));
    }
    eprintln!("PostgreSQL restarted at {at_restarts:?} of {total}");

    // The hub recovers without a restart of its own: ready again, and more sales arrive.
    wait_for("the hub ready again", Duration::from_secs(60), || {
        http("GET", &hub.http, "/readyz", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    let total = total + 200;
    post_sales(&edge, (total - 200) as usize..total as usize);
    let set = verify::assert_converged(
        &hub,
        &db,
        &edge,
        &token,
        RANGE,
        &|| format!("PostgreSQL restarted at {at_restarts:?}"),
        |edge| edge,
    );
    finish(set, total, &acked, &mut edge, &mut hub);
}

#[test]
fn agent_restored_from_an_older_backup_forks_without_losing_the_hubs_data() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge, token) = started(root.path(), None);
    let db = verify::sqlite_db(&hub);
    first_sales(&edge, &db);

    // The backup: a copy of the stopped agent's database.
    let backup = root.path().join("edge-backup.db");
    stop(&mut edge.proc, "agent");
    verify::copy_sqlite(&edge.dir.join("edge.db"), &backup);
    edge.start();

    // After the backup: more sales and a store document edit reach the hub.
    post_sales(&edge, 300..500);
    wait_hub_count(&db, 500, Duration::from_secs(60), "after the backup");
    let acked = acknowledged_at_hub(&edge, &hub, &token);
    let before_restore = verify::hub_transactions(&db).unwrap();

    // The agent's data directory goes back to the backup.
    stop(&mut edge.proc, "agent");
    let mut restore = Command::new(binary("storesync-edge"));
    restore
        .args(["restore", "--config"])
        .arg(&edge.config)
        .arg("--from")
        .arg(&backup);
    let restored = run(restore);
    eprintln!("{}", restored.trim());
    let epoch = restored
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    edge.start();

    // The restored agent takes new sales, and the POS replays its journal since the backup:
    // sales 300..499 again, all with the same content except 499, whose register differs
    // (the same id with other content, which the hub must refuse loudly).
    post_sales(&edge, 500..700);
    let replay: String = (300..499)
        .map(|n| sale(n, None) + "\n")
        .chain(std::iter::once(sale(499, Some("r9")) + "\n"))
        .collect();
    post_ndjson(&edge, &replay);

    // The hub keeps the original of 499: its set is the agent's with that one swapped.
    let original = verify::digest("tx-0000499", &hash_of(&before_restore, "tx-0000499"));
    let set = verify::assert_converged(
        &hub,
        &db,
        &edge,
        &token,
        RANGE,
        &|| "after the agent's restore".to_string(),
        |edge_set: TxSet| {
            let Some(altered) = edge_set.ids.get("tx-0000499").copied() else {
                return edge_set;
            };
            let mut want = edge_set;
            want.sum = want
                .sum
                .wrapping_sub(verify::digest(
                    "tx-0000499",
                    &storesync_protocol::Hash(altered),
                ))
                .wrapping_add(original);
            want
        },
    );
    assert_eq!(set.count, 700, "every sale once at the hub");
    for (id, hash) in &before_restore.ids {
        assert_eq!(
            set.ids.get(id),
            Some(hash),
            "{id} kept at the hub as it was"
        );
    }
    // The replayed sale with other content is a dead letter at the hub, and an alarm.
    let (status, letters) = hub_api(&hub, &token, "GET", "/api/v1/dead-letters", "");
    assert_eq!(status, 200, "{letters}");
    // It is the last sale of the new epoch: 200 new ones, then 200 replayed.
    let conflicts: Vec<_> = letters["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["reason"]
                .as_str()
                .unwrap()
                .contains("transaction id reused with other content")
        })
        .collect();
    assert_eq!(conflicts.len(), 1, "one conflict dead letter: {letters}");
    assert!(
        conflicts[0]["eventKey"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{epoch}/sales/400")),
        "the conflicting replay is kept as a dead letter at the hub: {letters}"
    );
    let hub_log = std::fs::read_to_string(hub.dir.join("hub.log")).unwrap();
    assert!(
        hub_log.contains("Conflict"),
        "the hub raised a conflict alarm"
    );
    assert!(
        !hub_log.contains("ChainBroken"),
        "the restored epoch's chain verifies at the hub"
    );
    // The store document edit made after the backup came back from the hub.
    assert_eq!(alert_state_at_edge(&edge, &acked), "acknowledged");
    storesync_tests::stack::stop_both(&mut edge, &mut hub);
}

/// The content hash of `id` in `set`.
fn hash_of(set: &TxSet, id: &str) -> storesync_protocol::Hash {
    storesync_protocol::Hash(*set.ids.get(id).unwrap_or_else(|| panic!("{id} in the set")))
}

#[test]
fn hub_restored_from_an_older_backup_gets_the_agents_acknowledged_events_again() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let (mut hub, mut edge, token) = started(root.path(), None);
    let db = verify::sqlite_db(&hub);
    first_sales(&edge, &db);

    // The backup: a copy of the stopped hub's database.
    let db_file = hub.dir.join("hub.db");
    let backup = root.path().join("hub-backup.db");
    stop(&mut hub.proc, "hub");
    verify::copy_sqlite(&db_file, &backup);
    hub.start();

    // After the backup: sales the hub acknowledges, and a store document edit.
    post_sales(&edge, 300..800);
    verify::wait_tx_sets_equal(
        &db,
        &edge,
        Duration::from_secs(60),
        &|| "after the backup".into(),
        |e| e,
    );
    let acked = acknowledged_at_hub(&edge, &hub, &token);

    // The hub's database goes back to the backup: it has lost 500 acknowledged sales.
    stop(&mut hub.proc, "hub");
    verify::copy_sqlite(&backup, &db_file);
    assert_eq!(
        hub_count(&db),
        300,
        "the restored hub has what the backup had"
    );
    hub.start();
    post_sales(&edge, 800..900);

    let set = verify::assert_converged(
        &hub,
        &db,
        &edge,
        &token,
        RANGE,
        &|| "after the hub's restore".into(),
        |e| e,
    );
    assert_eq!(set.count, 900, "every sale once at the hub");
    assert!(
        edge.logs().contains("HubBehind"),
        "the agent raised the hub-behind alarm"
    );
    // The agent's alarm is an alert of its own too, in the store's alert list.
    let (_, alerts) = edge_api(&edge, "GET", "/api/v1/alerts?limit=1000", "");
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "journal_integrity"
                && a["subject"].as_str().unwrap().ends_with(":sales")
                && a["severity"] == "warning"),
        "the agent's hub-behind alert: {alerts}"
    );
    // The hub's own alarm is an alert of the store, not a log line alone: one per stream
    // the restore set back (the sales below, and the alerts the agent had sent).
    let (_, alerts) = hub_api(&hub, &token, "GET", "/api/v1/alerts?limit=1000", "");
    let sales_behind: Vec<&serde_json::Value> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["kind"] == "journal_integrity" && a["subject"].as_str().unwrap().ends_with("-sales")
        })
        .collect();
    assert_eq!(
        sales_behind.len(),
        1,
        "one hub-behind alert for the sales: {alerts}"
    );
    assert_eq!(sales_behind[0]["storeId"], "s1", "{alerts}");
    assert_eq!(
        sales_behind[0]["facts"],
        serde_json::json!([{"name": "acked_seq", "value": 800}, {"name": "committed_seq", "value": 300}]),
        "{alerts}"
    );
    let (_, doc) = hub_api(&hub, &token, "GET", "/api/v1/stores/s1/document", "");
    assert_eq!(
        doc["alerts"][&acked]["state"], "acknowledged",
        "the store document edit the restored hub lost came back"
    );
    storesync_tests::stack::stop_both(&mut edge, &mut hub);
}
