//! One suite, both backends: PostgreSQL (a throw-away cluster) and embedded SQLite.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use storesync_hub::store::{AlertQuery, CommitGate, DimKind, Store, StoreError, granularity_code};
use storesync_protocol::domain::{AlertState, ScanPurpose, TransactionKind};
use storesync_protocol::event::{EventBody, SeqNo};
use storesync_protocol::ids::{AlertId, DeviceId};
use storesync_protocol::inventory::{fold, movements};
use storesync_protocol::rollup::{Granularity, SalesFigures};

fn all_rollups(
    store: &str,
    bodies: &[EventBody],
    tz: &str,
) -> BTreeMap<(i16, i64, i16, String), SalesFigures> {
    let mut out: BTreeMap<(i16, i64, i16, String), SalesFigures> = BTreeMap::new();
    for (store_id, key, f) in kept_rollup_rows(bodies, tz) {
        assert_eq!(store_id.as_str(), store);
        let (dim, value) = dim_key(key.dimension);
        out.entry((
            granularity_code(key.granularity),
            key.bucket_ms,
            dim as i16,
            value,
        ))
        .or_default()
        .add(&f);
    }
    out
}

async fn stored_rollups(
    store: &dyn Store,
    tenant_name: &str,
) -> BTreeMap<(i16, i64, i16, String), SalesFigures> {
    served_rollups(store, tenant_name, false)
        .await
        .into_iter()
        .map(|(g, dim, r)| {
            (
                (granularity_code(g), r.bucket_ms, dim as i16, r.value),
                r.figures,
            )
        })
        .collect()
}

fn sample_bodies(store: &str) -> Vec<EventBody> {
    vec![
        sale("t1", store, T0, &[("sku-1", 2, 150), ("sku-2", 1, 999)]),
        sale("t2", store, T0 + 61_000, &[("sku-1", 1, 150)]),
        EventBody::Transaction(txn(
            "t3",
            store,
            T0 + 3_700_000,
            &[("sku-2", -1, 999)],
            "cash",
            TransactionKind::Return,
        )),
        EventBody::Transaction(txn(
            "t4",
            store,
            T0 + 90_000_000,
            &[("sku-3", 1, 500)],
            "cash",
            TransactionKind::Void,
        )),
        sale("t5", store, T0 + 90_000_000, &[("sku-3", 4, 250)]),
    ]
}

async fn ingest_then_replay_changes_nothing(store: Arc<dyn Store>) {
    setup_tenant(&*store, "acme", &[("s1", "north", "Europe/Paris")]).await;
    let mut device = Device::new("acme", "s1", "d1", 7);
    let bodies = sample_bodies("s1");
    let (stream, events, head) = device.run(bodies.clone());
    let outcome = store.commit_events(&stream, &events, head).await.unwrap();
    assert_eq!(
        (
            outcome.inserted,
            outcome.duplicates,
            outcome.conflicts.len()
        ),
        (5, 0, 0)
    );
    let expected = all_rollups("s1", &bodies, "Europe/Paris");
    let first = stored_rollups(&*store, "acme").await;
    assert_eq!(first, expected, "hub rollups equal the protocol's own");
    assert!(
        first.keys().any(|(g, _, d, _)| (*g, *d) == (0, 2)),
        "minute rows by payment method are kept"
    );
    assert!(
        !first
            .keys()
            .any(|(g, _, d, _)| *g == 0 && (*d == 1 || *d == 3)),
        "no minute rows by item or register"
    );

    let again = store.commit_events(&stream, &events, head).await.unwrap();
    assert_eq!(
        (again.inserted, again.duplicates, again.conflicts.len()),
        (0, 5, 0)
    );
    assert_eq!(
        stored_rollups(&*store, "acme").await,
        expected,
        "a replay changes nothing"
    );

    // A run overlapping the stored one and extending it.
    let (_, more, head2) = device.run(vec![sale("t6", "s1", T0 + 120_000, &[("sku-1", 3, 150)])]);
    let mut overlap = events[3..].to_vec();
    overlap.extend(more);
    let outcome = store.commit_events(&stream, &overlap, head2).await.unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (1, 2));
}

async fn heads_and_chain_hashes(store: Arc<dyn Store>) {
    setup_tenant(&*store, "acme", &[("s1", "north", "UTC")]).await;
    let mut device = Device::new("acme", "s1", "d1", 1);
    assert!(
        store
            .stream_heads(&tenant("acme"), &DeviceId::new("d1").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    let (stream, events, head) = device.run(sample_bodies("s1"));
    store.commit_events(&stream, &events, head).await.unwrap();
    let (scan_stream, scans, scan_head) = device.run(vec![scan(
        "sc1",
        "s1",
        T0,
        "sku-1",
        ScanPurpose::Receiving,
        10,
    )]);
    store
        .commit_events(&scan_stream, &scans, scan_head)
        .await
        .unwrap();
    let heads = store
        .stream_heads(&tenant("acme"), &DeviceId::new("d1").unwrap())
        .await
        .unwrap();
    assert_eq!(
        heads,
        vec![(stream.clone(), head), (scan_stream.clone(), scan_head)]
    );
    for event in &events {
        assert_eq!(
            store.chain_hash_at(&stream, event.key.seq).await.unwrap(),
            Some(event.chain_hash())
        );
    }
    assert_eq!(store.chain_hash_at(&stream, SeqNo(99)).await.unwrap(), None);
    // Another tenant sees none of it.
    setup_tenant(&*store, "other", &[("s1", "north", "UTC")]).await;
    assert!(
        store
            .stream_heads(&tenant("other"), &DeviceId::new("d1").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    let mut foreign = stream.clone();
    foreign.tenant = tenant("other");
    assert_eq!(store.chain_hash_at(&foreign, SeqNo(1)).await.unwrap(), None);
}

async fn same_key_other_content_is_a_conflict(store: Arc<dyn Store>) {
    setup_tenant(&*store, "acme", &[("s1", "north", "UTC")]).await;
    let mut device = Device::new("acme", "s1", "d1", 1);
    let (stream, events, head) = device.run(sample_bodies("s1"));
    store.commit_events(&stream, &events, head).await.unwrap();
    let before = stored_rollups(&*store, "acme").await;
    // A device restored from an old backup reuses epoch and sequence with other content.
    let mut forged_device = Device::new("acme", "s1", "d1", 1);
    let (_, forged, forged_head) =
        forged_device.run(vec![sale("x1", "s1", T0, &[("sku-9", 9, 100)])]);
    let outcome = store
        .commit_events(&stream, &forged, forged_head)
        .await
        .unwrap();
    assert_eq!(outcome.conflicts, vec![forged[0].key.clone()]);
    assert_eq!(outcome.inserted, 0);
    assert_eq!(
        stored_rollups(&*store, "acme").await,
        before,
        "the stored version is kept"
    );
    assert_eq!(
        store.chain_hash_at(&stream, SeqNo(1)).await.unwrap(),
        Some(events[0].chain_hash())
    );
    let heads = store
        .stream_heads(&tenant("acme"), &DeviceId::new("d1").unwrap())
        .await
        .unwrap();
    assert_eq!(heads[0].1, head, "the head never goes backwards");
    let dead = store.dead_letters(&tenant("acme"), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.starts_with("conflict"), "{}", dead[0].reason);
    let alerts = store
        .alerts(&tenant("acme"), &AlertQuery::newest(10))
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].alert.kind.as_str(), "conflicting_duplicate");
}

/// The same key with the same content but another chain link (`prev`) is a different
/// event: a fork of the stream, not a duplicate.
async fn same_key_other_prev_is_a_conflict(store: Arc<dyn Store>) {
    setup_tenant(&*store, "acme", &[("s1", "north", "UTC")]).await;
    let mut device = Device::new("acme", "s1", "d1", 1);
    let (stream, events, head) = device.run(sample_bodies("s1"));
    store.commit_events(&stream, &events, head).await.unwrap();
    let mut forked = events[2].clone();
    forked.prev.0[0] ^= 0x01;
    assert_eq!(forked.content_hash, events[2].content_hash);
    let outcome = store
        .commit_events(&stream, std::slice::from_ref(&forked), head)
        .await
        .unwrap();
    assert_eq!(outcome.conflicts, vec![forked.key.clone()]);
    assert_eq!((outcome.inserted, outcome.duplicates), (0, 0));
    assert_eq!(
        store.chain_hash_at(&stream, forked.key.seq).await.unwrap(),
        Some(events[2].chain_hash()),
        "the stored link is kept"
    );
    // The genuine event again is still a plain duplicate.
    let again = store
        .commit_events(&stream, &events[2..3], head)
        .await
        .unwrap();
    assert_eq!((again.duplicates, again.conflicts.len()), (1, 0));
}

async fn transaction_ids_are_idempotent_across_epochs(store: Arc<dyn Store>) {
    setup_tenant(&*store, "acme", &[("s1", "north", "UTC")]).await;
    let mut device = Device::new("acme", "s1", "d1", 1);
    let bodies = sample_bodies("s1");
    let (stream, events, head) = device.run(bodies.clone());
    store.commit_events(&stream, &events, head).await.unwrap();
    let before = stored_rollups(&*store, "acme").await;
    // Restored into a new epoch, the device sends t1 again (same content), t2 with other
    // content, and a new t7; t7 twice in the same run counts once.
    let mut restored = Device::new("acme", "s1", "d1", 2);
    let (stream2, events2, head2) = restored.run(vec![
        bodies[0].clone(),
        sale("t2", "s1", T0 + 61_000, &[("sku-1", 5, 150)]),
        sale("t7", "s1", T0 + 500, &[("sku-1", 1, 100)]),
        sale("t7", "s1", T0 + 500, &[("sku-1", 1, 100)]),
    ]);
    let outcome = store
        .commit_events(&stream2, &events2, head2)
        .await
        .unwrap();
    assert_eq!(outcome.inserted, 1);
    assert_eq!(outcome.duplicates, 2);
    assert_eq!(outcome.conflicts, vec![events2[1].key.clone()]);
    let after = stored_rollups(&*store, "acme").await;
    let day = |m: &BTreeMap<(i16, i64, i16, String), SalesFigures>| -> i64 {
        m.iter()
            .filter(|(k, _)| k.0 == 2 && k.2 == 0)
            .map(|(_, f)| f.transactions)
            .sum()
    };
    assert_eq!(day(&after), day(&before) + 1);
}

/// A sale of one `sku-1` at s1 whose total does not add up: re-validation refuses it.
fn bad_total(id: &str) -> EventBody {
    let mut t = txn(
        id,
        "s1",
        T0,
        &[("sku-1", 1, 100)],
        "card",
        TransactionKind::Sale,
    );
    t.total_amount = storesync_protocol::money::Money::from_cents(100_000);
    EventBody::Transaction(t)
}

async fn rejected_records_become_dead_letters(store: Arc<dyn Store>) {
    setup_tenant(
        &*store,
        "acme",
        &[("s1", "north", "UTC"), ("s2", "south", "UTC")],
    )
    .await;
    let mut device = Device::new("acme", "s1", "d1", 1);
    // A transaction claiming another store, and one whose total does not add up.
    let (stream, events, head) = device.run(vec![
        sale("t8", "s2", T0, &[("sku-1", 1, 100)]),
        bad_total("t9"),
        sale("t10", "s1", T0, &[("sku-1", 1, 100)]),
    ]);
    let outcome = store.commit_events(&stream, &events, head).await.unwrap();
    assert_eq!(outcome.inserted, 3, "kept keys count as inserted");
    let dead = store.dead_letters(&tenant("acme"), 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter().any(|d| d.reason.contains("storeId")),
        "{dead:?}"
    );
    assert!(
        dead.iter().any(|d| d.reason.contains("totalAmount")),
        "{dead:?}"
    );
    assert!(dead.iter().all(|d| !d.raw.is_empty()));
    let rollups = stored_rollups(&*store, "acme").await;
    let tx_count: i64 = rollups
        .iter()
        .filter(|(k, _)| k.0 == 2 && k.2 == 0)
        .map(|(_, f)| f.transactions)
        .sum();
    assert_eq!(tx_count, 1);
    // A refused transaction never took its id: sent again corrected, it is new, not a
    // conflict, and so is the one that named the wrong store, sent by its own store.
    let (stream, events, head) = device.run(vec![sale("t9", "s1", T0, &[("sku-1", 1, 100)])]);
    let outcome = store.commit_events(&stream, &events, head).await.unwrap();
    assert_eq!((outcome.inserted, outcome.conflicts.len()), (1, 0));
    let mut other = Device::new("acme", "s2", "d2", 1);
    let (stream, events, head) = other.run(vec![sale("t8", "s2", T0, &[("sku-1", 1, 100)])]);
    let outcome = store.commit_events(&stream, &events, head).await.unwrap();
    assert_eq!((outcome.inserted, outcome.conflicts.len()), (1, 0));
    assert_eq!(
        store.dead_letters(&tenant("acme"), 10).await.unwrap().len(),
        2
    );
    let tx_count: i64 = stored_rollups(&*store, "acme")
        .await
        .iter()
        .filter(|(k, _)| k.0 == 2 && k.2 == 0)
        .map(|(_, f)| f.transactions)
        .sum();
    assert_eq!(tx_count, 3);
}

/// The registry decides before re-validation: a registered id sent again by a transaction
/// re-validation would refuse is a conflict when its content differs and a duplicate when it
/// is the same, never a fresh dead letter.
async fn a_registered_id_decides_before_re_validation(store: Arc<dyn Store>) {
    setup_tenant(
        &*store,
        "acme",
        &[("s1", "north", "UTC"), ("s2", "south", "UTC")],
    )
    .await;
    let mut d1 = Device::new("acme", "s1", "d1", 1);
    let t1 = sale("t1", "s1", T0, &[("sku-1", 1, 100)]);
    let (stream, events, head) = d1.run(vec![t1.clone()]);
    store.commit_events(&stream, &events, head).await.unwrap();
    // The same id, another content that re-validation refuses (its total does not add up).
    let (stream, events, head) = d1.run(vec![bad_total("t1")]);
    let outcome = store.commit_events(&stream, &events, head).await.unwrap();
    assert_eq!(
        (
            outcome.inserted,
            outcome.duplicates,
            outcome.conflicts.len()
        ),
        (0, 0, 1)
    );
    let dead = store.dead_letters(&tenant("acme"), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("reused"), "{dead:?}");
    // The same content from another store's device, which names s1: a duplicate.
    let mut d2 = Device::new("acme", "s2", "d2", 1);
    let (stream, events, head) = d2.run(vec![t1]);
    let outcome = store.commit_events(&stream, &events, head).await.unwrap();
    assert_eq!(
        (
            outcome.inserted,
            outcome.duplicates,
            outcome.conflicts.len()
        ),
        (0, 1, 0)
    );
    assert_eq!(
        store.dead_letters(&tenant("acme"), 10).await.unwrap().len(),
        1
    );
}

/// A run that is mostly new but repeats a stored event at its end: whatever the backend
/// tried first, the stored result is the one of applying exactly the new events once — the
/// rollups of all bodies, one head, each dead letter once.
async fn partly_known_run_applies_only_the_new_events(store: Arc<dyn Store>) {
    setup_tenant(
        &*store,
        "acme",
        &[("s1", "north", "UTC"), ("s2", "south", "UTC")],
    )
    .await;
    let mut device = Device::new("acme", "s1", "d1", 1);
    let first = sale("t1", "s1", T0, &[("sku-1", 2, 150)]);
    let (stream, stored, stored_head) = device.run(vec![first.clone()]);
    store
        .commit_events(&stream, &stored, stored_head)
        .await
        .unwrap();
    // New sales, one record refused by re-validation, then the stored event again.
    let later = vec![
        sale("t2", "s1", T0 + 60_000, &[("sku-2", 1, 300)]),
        sale("t3", "s2", T0 + 61_000, &[("sku-1", 1, 100)]),
        sale(
            "t4",
            "s1",
            T0 + 3_700_000,
            &[("sku-1", 5, 120), ("sku-3", 1, 990)],
        ),
    ];
    let (_, more, head) = device.run(later.clone());
    let mut run = more.clone();
    run.push(stored[0].clone());
    let outcome = store.commit_events(&stream, &run, head).await.unwrap();
    assert_eq!(
        (
            outcome.inserted,
            outcome.duplicates,
            outcome.conflicts.len()
        ),
        (3, 1, 0)
    );
    let applied = vec![first, later[0].clone(), later[2].clone()];
    assert_eq!(
        stored_rollups(&*store, "acme").await,
        all_rollups("s1", &applied, "UTC"),
        "rollups hold each new event once"
    );
    let dead = store.dead_letters(&tenant("acme"), 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].reason.contains("storeId"), "{dead:?}");
    let heads = store
        .stream_heads(&tenant("acme"), &DeviceId::new("d1").unwrap())
        .await
        .unwrap();
    assert_eq!(heads, vec![(stream.clone(), head)]);
    // Replayed whole, it is all duplicates and changes nothing.
    let again = store.commit_events(&stream, &run, head).await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 4));
    assert_eq!(
        store.dead_letters(&tenant("acme"), 10).await.unwrap().len(),
        1
    );
}

/// On hand as the protocol's fold of every movement makes it, for a store in a zone whose
/// day does not start at UTC midnight: counts in the middle of a day with sales before, at
/// and after them that day and on later days, returns and voids, two counts at one instant,
/// a count older than the last, deltas at a count's instant, SKUs never counted.
async fn inventory_equals_the_protocol_fold(store: Arc<dyn Store>) {
    setup_tenant(
        &*store,
        "acme",
        &[("s1", "north", "Europe/Paris"), ("s2", "south", "UTC")],
    )
    .await;
    const H: i64 = 3_600_000;
    // T0 is 10:00 in Paris; the next local midnight is T0 + 14 h.
    let c1 = T0 + 2 * H;
    let s1 = vec![
        sale("t1", "s1", T0, &[("sku-1", 2, 150), ("sku-2", 1, 999)]),
        sale("t2", "s1", c1, &[("sku-1", 5, 150)]),
        sale("t3", "s1", c1 + 1, &[("sku-1", 1, 150), ("sku-3", 4, 200)]),
        sale("t4", "s1", T0 + 14 * H - 1, &[("sku-1", 3, 150)]),
        sale("t5", "s1", T0 + 14 * H, &[("sku-1", 1, 150)]),
        sale(
            "t6",
            "s1",
            T0 + 40 * H,
            &[("sku-1", 2, 150), ("sku-2", 6, 999)],
        ),
        EventBody::Transaction(txn(
            "t7",
            "s1",
            T0 + 41 * H,
            &[("sku-1", 1, 150)],
            "cash",
            TransactionKind::Return,
        )),
        EventBody::Transaction(txn(
            "t8",
            "s1",
            T0 + 42 * H,
            &[("sku-1", 9, 150)],
            "cash",
            TransactionKind::Void,
        )),
        sale("t9", "s1", T0 + 3 * H, &[("sku-4", 2, 100)]),
    ];
    let stock = vec![
        scan("c1", "s1", c1, "sku-1", ScanPurpose::StockCount, 50),
        adjustment("a1", "s1", c1, "sku-1", 100),
        adjustment("a2", "s1", c1 + 5, "sku-1", -4),
        // Older than c1: changes nothing.
        scan("c0", "s1", c1 - 1, "sku-1", ScanPurpose::StockCount, 7),
        // Two counts at one instant: the greater source id is the last.
        scan(
            "c-b",
            "s1",
            T0 + 20 * H,
            "sku-2",
            ScanPurpose::StockCount,
            30,
        ),
        scan(
            "c-a",
            "s1",
            T0 + 20 * H,
            "sku-2",
            ScanPurpose::StockCount,
            20,
        ),
        scan("r1", "s1", T0 + 1, "sku-3", ScanPurpose::Receiving, 12),
        scan("x1", "s1", T0 + 2, "sku-3", ScanPurpose::Sale, 1),
        adjustment("a3", "s1", T0 + 5, "sku-5", 7),
    ];
    let s2 = vec![
        sale("u1", "s2", T0, &[("sku-1", 3, 150)]),
        scan("c2", "s2", T0 + 60 * H, "sku-1", ScanPurpose::StockCount, 8),
    ];
    // One run per device and event class.
    let mut d1 = Device::new("acme", "s1", "d1", 1);
    let mut d2 = Device::new("acme", "s2", "d2", 1);
    let class_of = |b: &EventBody| std::mem::discriminant(b);
    for (device, bodies) in [
        (&mut d1, s1.iter().chain(&stock)),
        (&mut d2, s2.iter().chain(&[])),
    ] {
        let mut runs: Vec<Vec<EventBody>> = Vec::new();
        for body in bodies {
            match runs.iter_mut().find(|r| class_of(&r[0]) == class_of(body)) {
                Some(run) => run.push(body.clone()),
                None => runs.push(vec![body.clone()]),
            }
        }
        for run in runs {
            let (stream, events, head) = device.run(run);
            let outcome = store.commit_events(&stream, &events, head).await.unwrap();
            assert_eq!(outcome.inserted as usize, events.len());
        }
    }

    let expected = |bodies: &[EventBody], store: &str, sku: Option<&str>| {
        fold(bodies.iter().flat_map(movements).collect())
            .into_iter()
            .filter(|(k, _)| sku.is_none_or(|s| k.as_str() == s))
            .map(|(k, q)| (store.to_owned(), k.as_str().to_owned(), q))
            .collect::<Vec<_>>()
    };
    let s1_all: Vec<EventBody> = s1.iter().chain(&stock).cloned().collect();
    let on_hand = |stores: Option<Vec<&'static str>>, sku: Option<&'static str>| {
        let store = store.clone();
        async move {
            let stores: Option<Vec<_>> = stores.map(|s| s.into_iter().map(store_id).collect());
            let sku = sku.map(|s| storesync_protocol::ids::Sku::new(s).unwrap());
            storesync_hub::store::inventory::on_hand(
                &*store,
                &tenant("acme"),
                stores.as_deref(),
                sku.as_ref(),
            )
            .await
            .unwrap()
            .into_iter()
            .map(|(st, k, q)| (st.as_str().to_owned(), k.as_str().to_owned(), q))
            .collect::<Vec<_>>()
        }
    };
    let mut everything = expected(&s1_all, "s1", None);
    everything.extend(expected(&s2, "s2", None));
    assert_eq!(on_hand(None, None).await, everything);
    // sku-1 at s1: counted 50 at c1, +100 at c1 ignored, then -1 (t3), -4, -3 (t4), -1 (t5),
    // -2 (t6), +1 (t7 return), void ignored.
    assert!(everything.contains(&("s1".into(), "sku-1".into(), 40)));
    assert!(everything.contains(&("s1".into(), "sku-2".into(), 24)));
    assert_eq!(
        on_hand(Some(vec!["s1"]), None).await,
        expected(&s1_all, "s1", None)
    );
    assert_eq!(
        on_hand(None, Some("sku-1")).await,
        [
            expected(&s1_all, "s1", Some("sku-1")),
            expected(&s2, "s2", Some("sku-1"))
        ]
        .concat()
    );
    assert!(
        storesync_hub::store::inventory::on_hand(&*store, &tenant("globex"), None, None)
            .await
            .unwrap()
            .is_empty()
    );
    // A zone changed since the sales were bucketed: the day boundary is the stored one.
    // (The sale is bucketed in UTC, the count falls before the new zone's midnight.)
    let late = vec![
        sale("u2", "s2", T0 + 9 * H, &[("sku-7", 1, 100)]),
        scan("c3", "s2", T0 + 3 * H, "sku-7", ScanPurpose::StockCount, 50),
    ];
    let (stream, events, head) = d2.run(vec![late[0].clone()]);
    store.commit_events(&stream, &events, head).await.unwrap();
    store
        .upsert_store(
            &tenant("acme"),
            &storesync_hub::store::StoreInfo {
                store_id: store_id("s2"),
                name: "s2".into(),
                region: "south".into(),
                time_zone: "Asia/Tokyo".into(),
            },
        )
        .await
        .unwrap();
    let (stream, events, head) = d2.run(vec![late[1].clone()]);
    store.commit_events(&stream, &events, head).await.unwrap();
    let s2_all: Vec<EventBody> = s2.iter().chain(&late).cloned().collect();
    assert_eq!(
        on_hand(Some(vec!["s2"]), None).await,
        expected(&s2_all, "s2", None)
    );
    assert!(on_hand(Some(vec!["s2"]), Some("sku-7")).await == [("s2".into(), "sku-7".into(), 49)]);
}

async fn alerts_list_acknowledge_resolve(store: Arc<dyn Store>) {
    setup_tenant(
        &*store,
        "acme",
        &[("s1", "north", "UTC"), ("s2", "south", "UTC")],
    )
    .await;
    let mut d1 = Device::new("acme", "s1", "d1", 1);
    let mut d2 = Device::new("acme", "s2", "d2", 1);
    let (st1, ev1, h1) = d1.run(vec![
        alert("al-1", "s1", T0, AlertState::Open),
        alert("al-2", "s1", T0 + 1, AlertState::Open),
    ]);
    let (st2, ev2, h2) = d2.run(vec![alert("al-3", "s2", T0 + 2, AlertState::Open)]);
    store.commit_events(&st1, &ev1, h1).await.unwrap();
    store.commit_events(&st2, &ev2, h2).await.unwrap();
    let acme = tenant("acme");
    let all = store.alerts(&acme, &AlertQuery::newest(10)).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|a| a.alert.alert_id.as_str())
            .collect::<Vec<_>>(),
        ["al-3", "al-2", "al-1"]
    );
    let s1_only = store
        .alerts(
            &acme,
            &AlertQuery {
                stores: Some(vec![store_id("s1")]),
                limit: 10,
                ..AlertQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s1_only.len(), 2);
    let page = store
        .alerts(
            &acme,
            &AlertQuery {
                limit: 1,
                before_ms: Some(T0 + 2),
                ..AlertQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page[0].alert.alert_id.as_str(), "al-2");
    let id = AlertId::new("al-1").unwrap();
    let acked = store
        .set_alert_state(&acme, &id, AlertState::Acknowledged, "mia", T0 + 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (acked.alert.state, acked.alert.changed_by.as_deref()),
        (AlertState::Acknowledged, Some("mia"))
    );
    store
        .set_alert_state(&acme, &id, AlertState::Resolved, "mia", T0 + 11)
        .await
        .unwrap();
    // An edge replaying the old open state does not reopen it.
    let (st1b, ev1b, h1b) = d1.run(vec![alert("al-1", "s1", T0, AlertState::Open)]);
    store.commit_events(&st1b, &ev1b, h1b).await.unwrap();
    assert_eq!(
        store.alert(&acme, &id).await.unwrap().unwrap().alert.state,
        AlertState::Resolved
    );
    let open = store
        .alerts(
            &acme,
            &AlertQuery {
                state: Some("open".into()),
                limit: 10,
                ..AlertQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(open.len(), 2);
    setup_tenant(&*store, "other", &[]).await;
    assert!(store.alert(&tenant("other"), &id).await.unwrap().is_none());
    assert!(
        store
            .set_alert_state(&tenant("other"), &id, AlertState::Resolved, "x", 0)
            .await
            .unwrap()
            .is_none()
    );
}

async fn tenants_do_not_see_each_other(store: Arc<dyn Store>) {
    setup_tenant(&*store, "acme", &[("s1", "north", "UTC")]).await;
    setup_tenant(&*store, "globex", &[("s1", "west", "UTC")]).await;
    let mut device = Device::new("acme", "s1", "d1", 1);
    let (stream, events, head) = device.run(sample_bodies("s1"));
    store.commit_events(&stream, &events, head).await.unwrap();
    assert!(stored_rollups(&*store, "globex").await.is_empty());
    assert!(
        store
            .stock_levels(&tenant("globex"), None, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        storesync_hub::store::inventory::on_hand(&*store, &tenant("globex"), None, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.stores(&tenant("globex")).await.unwrap()[0].region,
        "west"
    );
    assert!(!store.tenant_exists(&tenant("initech")).await.unwrap());
    // Same event ids under another tenant are independent.
    let mut other = Device::new("globex", "s1", "d1", 1);
    let (stream, events, head) = other.run(sample_bodies("s1"));
    let outcome = store.commit_events(&stream, &events, head).await.unwrap();
    assert_eq!(outcome.inserted, 5);
}

async fn sync_status_tracks_devices(store: Arc<dyn Store>) {
    setup_tenant(&*store, "acme", &[("s1", "north", "UTC")]).await;
    let mut device = Device::new("acme", "s1", "d1", 1);
    let (stream, events, head) = device.run(sample_bodies("s1"));
    store.commit_events(&stream, &events, head).await.unwrap();
    let contact = storesync_hub::store::DeviceContact {
        now_ms: T0 + 100_000_000,
        backlog: 3,
        clock_skew_ms: -40,
    };
    store
        .record_contact(
            &tenant("acme"),
            &store_id("s1"),
            &DeviceId::new("d1").unwrap(),
            &contact,
        )
        .await
        .unwrap();
    let status = store.device_status(&tenant("acme")).await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].backlog, 3);
    assert_eq!(status[0].clock_skew_ms, -40);
    assert_eq!(status[0].last_event_ms, Some(T0 + 90_000_000));
}

async fn unknown_time_zone_is_refused(store: Arc<dyn Store>) {
    store.create_tenant(&tenant("acme"), "Acme").await.unwrap();
    let info = storesync_hub::store::StoreInfo {
        store_id: store_id("s1"),
        name: "x".into(),
        region: "r".into(),
        time_zone: "Mars/Olympus".into(),
    };
    assert!(store.upsert_store(&tenant("acme"), &info).await.is_err());
    assert!(
        store
            .upsert_store(
                &tenant("nobody"),
                &storesync_hub::store::StoreInfo {
                    time_zone: "UTC".into(),
                    ..info
                }
            )
            .await
            .is_err()
    );
}

async fn documents_merge_serially_and_stay_per_tenant(store: Arc<dyn Store>) {
    use storesync_hub::store::docs::{DocWrite, store_doc_key};
    store.create_tenant(&tenant("acme"), "Acme").await.unwrap();
    store
        .create_tenant(&tenant("globex"), "Globex")
        .await
        .unwrap();
    let key = store_doc_key(&store_id("s1"));
    // Concurrent read-modify-write edits of one document: none is lost.
    let edits: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            let key = key.clone();
            tokio::spawn(async move {
                storesync_hub::docs::edit(&*store, &tenant("acme"), &key, |doc| {
                    storesync_protocol::docs::put_setting(doc, &format!("s{i}"), &i.into())
                })
                .await
                .unwrap();
            })
        })
        .collect();
    for edit in edits {
        edit.await.unwrap();
    }
    let doc = storesync_hub::docs::read(&*store, &tenant("acme"), &key)
        .await
        .unwrap();
    assert_eq!(storesync_protocol::docs::settings(&doc).len(), 8);
    let versions = store
        .docs()
        .doc_versions(&tenant("acme"), std::slice::from_ref(&key))
        .await
        .unwrap();
    assert_eq!(versions, vec![(key.clone(), 8)]);
    // Another tenant sees nothing of it.
    assert_eq!(
        store.docs().doc_get(&tenant("globex"), &key).await.unwrap(),
        None
    );
    // A device's sync state is kept per document and device.
    let device = DeviceId::new("d1").unwrap();
    store
        .docs()
        .doc_edit(&tenant("acme"), &key, Some(&device), &mut |row| {
            assert_eq!(row.peer_state, None);
            Ok(DocWrite {
                bytes: None,
                peer_state: Some(vec![1, 2, 3]),
            })
        })
        .await
        .unwrap();
    let mut seen = None;
    let version = store
        .docs()
        .doc_edit(&tenant("acme"), &key, Some(&device), &mut |row| {
            seen = row.peer_state.clone();
            Ok(DocWrite::default())
        })
        .await
        .unwrap();
    assert_eq!(seen, Some(vec![1, 2, 3]));
    assert_eq!(
        version, 8,
        "writing only a sync state leaves the document as it is"
    );
}

/// Fleet alerts: raised once per stable id while the condition lasts (an acknowledgement
/// survives the next check), resolved when it clears, reopened when it returns; the
/// periodic check judges each store by the newest contact of its devices.
async fn fleet_alerts_dedupe_clear_and_reopen(store: Arc<dyn Store>) {
    use storesync_hub::fleet::{self, FleetOptions};
    setup_tenant(
        &*store,
        "acme",
        &[("s1", "north", "UTC"), ("s2", "south", "UTC")],
    )
    .await;
    setup_tenant(&*store, "other", &[("s1", "west", "UTC")]).await;
    let acme = tenant("acme");
    let options = FleetOptions {
        not_syncing_after_ms: 60_000,
        clock_skew_max_ms: 5_000,
        ..FleetOptions::default()
    };
    let contact = |now_ms| storesync_hub::store::DeviceContact {
        now_ms,
        backlog: 0,
        clock_skew_ms: 0,
    };
    let d1 = DeviceId::new("d1").unwrap();
    let d2 = DeviceId::new("d2").unwrap();
    store
        .record_contact(&acme, &store_id("s1"), &d1, &contact(T0))
        .await
        .unwrap();
    store
        .record_contact(&acme, &store_id("s2"), &d2, &contact(T0 + 50_000))
        .await
        .unwrap();
    let open_kinds = |store: Arc<dyn Store>| async move {
        store
            .alerts(&tenant("acme"), &AlertQuery::newest(50))
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.alert.state != AlertState::Resolved)
            .map(|r| (r.alert.store_id.as_str().to_owned(), r.alert.kind.as_str()))
            .collect::<Vec<_>>()
    };

    // s1 silent for 70 s: raised once, however many checks (replicas) run.
    let mut changes = store.subscribe();
    let report = fleet::check_not_syncing(&*store, &acme, &options, T0 + 70_000)
        .await
        .unwrap();
    assert_eq!((report.stores, report.raised, report.cleared), (2, 1, 0));
    // PostgreSQL delivers the change by NOTIFY, some time after the commit.
    let change = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let change = changes.recv().await.unwrap();
            if !change.alerts.is_empty() {
                return change;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(change.alerts, ["hub-not-syncing-s1"]);
    assert_eq!(change.stores, ["s1"]);
    let (a, b) = tokio::join!(
        fleet::check_not_syncing(&*store, &acme, &options, T0 + 71_000),
        fleet::check_not_syncing(&*store, &acme, &options, T0 + 71_000),
    );
    assert_eq!(a.unwrap().raised + b.unwrap().raised, 0);
    assert_eq!(
        open_kinds(store.clone()).await,
        [("s1".to_owned(), "store_not_syncing")]
    );
    let id = fleet::not_syncing_id(&store_id("s1")).unwrap();
    store
        .set_alert_state(&acme, &id, AlertState::Acknowledged, "mia", T0 + 72_000)
        .await
        .unwrap();
    fleet::check_not_syncing(&*store, &acme, &options, T0 + 80_000)
        .await
        .unwrap();
    let record = store.alert(&acme, &id).await.unwrap().unwrap();
    assert_eq!(
        record.alert.state,
        AlertState::Acknowledged,
        "still one alert, still acknowledged"
    );
    assert_eq!(record.alert.raised_at.unix_ms(), T0 + 70_000);
    assert!(
        record
            .alert
            .facts
            .contains(&("last_seen_ms".to_owned(), T0))
    );
    // Other tenants see nothing of it.
    assert!(store.alert(&tenant("other"), &id).await.unwrap().is_none());

    // s1's device connects: the alert resolves by the hub; a later silence reopens it.
    handshake(&*store, "s1", &d1, &options, T0 + 90_000).await;
    let record = store.alert(&acme, &id).await.unwrap().unwrap();
    assert_eq!(
        (record.alert.state, record.alert.changed_by.as_deref()),
        (AlertState::Resolved, Some("hub"))
    );
    // s2 silent for 70 s: raised; s1 silent again later: the same alert reopens.
    let report = fleet::check_not_syncing(&*store, &acme, &options, T0 + 120_000)
        .await
        .unwrap();
    assert_eq!((report.raised, report.cleared), (1, 0));
    let report = fleet::check_not_syncing(&*store, &acme, &options, T0 + 155_000)
        .await
        .unwrap();
    assert_eq!(
        (report.raised, report.cleared),
        (1, 0),
        "s1 silent again: reopened"
    );
    let record = store.alert(&acme, &id).await.unwrap().unwrap();
    assert_eq!(
        (record.alert.state, record.alert.raised_at.unix_ms()),
        (AlertState::Open, T0 + 155_000)
    );
    store
        .record_contact(&acme, &store_id("s2"), &d2, &contact(T0 + 160_000))
        .await
        .unwrap();
    let report = fleet::check_not_syncing(&*store, &acme, &options, T0 + 161_000)
        .await
        .unwrap();
    assert_eq!(
        (report.raised, report.cleared),
        (0, 1),
        "s2 synced: cleared by the check"
    );

    // Clock skew at the handshake: raised beyond the limit (either way), deduplicated,
    // cleared when a later handshake is within it.
    let skew_id = fleet::clock_skew_id(&d2).unwrap();
    for skew in [-9_000, 12_000] {
        fleet::on_connected(
            &*store,
            &acme,
            &store_id("s2"),
            &d2,
            skew,
            &options,
            T0 + 300_000,
        )
        .await
        .unwrap();
    }
    let skew = store.alert(&acme, &skew_id).await.unwrap().unwrap().alert;
    assert_eq!(
        (skew.kind.as_str(), skew.state),
        ("clock_skew", AlertState::Open)
    );
    assert_eq!(skew.subject, "d2");
    assert!(
        skew.facts.contains(&("skew_ms".to_owned(), -9_000)),
        "{:?}",
        skew.facts
    );
    fleet::on_connected(
        &*store,
        &acme,
        &store_id("s2"),
        &d2,
        4_000,
        &options,
        T0 + 400_000,
    )
    .await
    .unwrap();
    assert_eq!(
        store
            .alert(&acme, &skew_id)
            .await
            .unwrap()
            .unwrap()
            .alert
            .state,
        AlertState::Resolved
    );
    // Ids stay valid for the longest subjects.
    let long = DeviceId::new("d".repeat(64)).unwrap();
    assert_eq!(
        fleet::clock_skew_id(&long).unwrap(),
        fleet::clock_skew_id(&long).unwrap()
    );
}

/// Commits `events` behind `behind` (if any); the returned gate is for the run after it.
async fn commit_in_order(
    store: &dyn Store,
    stream: &storesync_protocol::event::StreamId,
    events: &[storesync_protocol::event::Event],
    head: storesync_protocol::event::StreamHead,
    behind: Option<CommitGate>,
) -> (
    Result<storesync_hub::store::CommitOutcome, StoreError>,
    CommitGate,
) {
    let (ahead, next) = CommitGate::new(head);
    let result = store
        .commit_events_in_order(stream, events, head, behind, ahead)
        .await;
    (result, next)
}

/// Two runs of one stream committed at once, the second behind the first's gate (as the
/// sync server does during a catch-up): both are stored, the head is the second's and the
/// rollups count both. Behind a predecessor that failed, or whose commit was dropped, a run
/// stores nothing and the head stays.
async fn gated_runs_commit_in_order(store: Arc<dyn Store>) {
    setup_tenant(&*store, "acme", &[("s1", "north", "UTC")]).await;
    let d1 = DeviceId::new("d1").unwrap();
    let mut device = Device::new("acme", "s1", "d1", 1);
    let mut bodies = sample_bodies("s1");
    let (stream, first, head1) = device.run(bodies.clone());
    let later = vec![
        sale("t6", "s1", T0 + 120_000, &[("sku-1", 3, 150)]),
        sale(
            "t7",
            "s1",
            T0 + 3_600_000,
            &[("sku-2", 1, 999), ("sku-4", 2, 10)],
        ),
    ];
    bodies.extend(later.clone());
    let (_, second, head2) = device.run(later);
    let (ahead, gate) = CommitGate::new(head1);
    let (a, (b, _)) = tokio::join!(
        store.commit_events_in_order(&stream, &first, head1, None, ahead),
        commit_in_order(&*store, &stream, &second, head2, Some(gate)),
    );
    assert_eq!((a.unwrap().inserted, b.unwrap().inserted), (5, 2));
    assert_eq!(
        store.stream_heads(&tenant("acme"), &d1).await.unwrap(),
        vec![(stream.clone(), head2)]
    );
    let expected = all_rollups("s1", &bodies, "UTC");
    assert_eq!(stored_rollups(&*store, "acme").await, expected);

    let (_, third, head3) = device.run(vec![sale("t8", "s1", T0 + 200_000, &[("sku-1", 1, 150)])]);
    let (_, fourth, head4) = device.run(vec![sale("t9", "s1", T0 + 201_000, &[("sku-1", 1, 150)])]);
    let (failed, gate) = CommitGate::new(head3);
    failed.open(false);
    let (refused, after_refused) =
        commit_in_order(&*store, &stream, &fourth, head4, Some(gate)).await;
    assert!(
        matches!(refused, Err(StoreError::PredecessorFailed)),
        "{refused:?}"
    );
    let mut after_refused = after_refused;
    assert!(
        !after_refused.wait().await,
        "the failure passes on to the run behind"
    );
    let (dropped, gate) = CommitGate::new(head3);
    drop(dropped);
    let (refused, _) = commit_in_order(&*store, &stream, &fourth, head4, Some(gate)).await;
    assert!(
        matches!(refused, Err(StoreError::PredecessorFailed)),
        "{refused:?}"
    );
    assert_eq!(
        store.stream_heads(&tenant("acme"), &d1).await.unwrap(),
        vec![(stream.clone(), head2)],
        "the head stays"
    );
    assert_eq!(
        stored_rollups(&*store, "acme").await,
        expected,
        "nothing stored"
    );

    // Sent again in order, both go in.
    let (third_done, gate) = commit_in_order(&*store, &stream, &third, head3, None).await;
    third_done.unwrap();
    let (outcome, _) = commit_in_order(&*store, &stream, &fourth, head4, Some(gate)).await;
    assert_eq!(outcome.unwrap().inserted, 1);
    assert_eq!(
        store.stream_heads(&tenant("acme"), &d1).await.unwrap(),
        vec![(stream.clone(), head4)]
    );
}

/// On PostgreSQL a gated run checks in the database that the head is where its predecessor
/// left it: a gate opened although that run was never stored refuses the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_gated_run_refuses_a_head_its_predecessor_did_not_reach() {
    let store = pg_store("t_gated_head_check").await;
    setup_tenant(&*store, "acme", &[("s1", "north", "UTC")]).await;
    let d1 = DeviceId::new("d1").unwrap();
    let mut device = Device::new("acme", "s1", "d1", 1);
    let (stream, first, head1) = device.run(sample_bodies("s1"));
    store.commit_events(&stream, &first, head1).await.unwrap();
    let (_, skipped, head2) =
        device.run(vec![sale("t6", "s1", T0 + 120_000, &[("sku-1", 3, 150)])]);
    let (_, next, head3) = device.run(vec![sale("t7", "s1", T0 + 121_000, &[("sku-1", 1, 150)])]);
    let (opener, gate) = CommitGate::new(head2);
    opener.open(true);
    let (refused, _) = commit_in_order(&*store, &stream, &next, head3, Some(gate)).await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    assert_eq!(
        store.stream_heads(&tenant("acme"), &d1).await.unwrap(),
        vec![(stream.clone(), head1)]
    );
    // Nothing of the refused run is stored: committed in order, it is new.
    store.commit_events(&stream, &skipped, head2).await.unwrap();
    let outcome = store.commit_events(&stream, &next, head3).await.unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (1, 0));
}

/// A store's zone changed by another process (the `store add` command, another replica)
/// reaches this one's ingest once its looked-up zone expires (here after 200 ms).
async fn zone_changed_elsewhere_reaches_ingest(here: Arc<dyn Store>, elsewhere: Arc<dyn Store>) {
    const H: i64 = 3_600_000;
    setup_tenant(&*elsewhere, "acme", &[("s1", "north", "UTC")]).await;
    let mut device = Device::new("acme", "s1", "d1", 1);
    let (stream, events, head) = device.run(vec![sale("t1", "s1", T0, &[("sku-1", 1, 100)])]);
    here.commit_events(&stream, &events, head).await.unwrap();
    elsewhere
        .upsert_store(
            &tenant("acme"),
            &storesync_hub::store::StoreInfo {
                store_id: store_id("s1"),
                name: "s1".into(),
                region: "north".into(),
                time_zone: "Asia/Tokyo".into(),
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // T0 + 16 h is 2026-11-18T01:00Z: the 18th in Tokyo since 2026-11-17T15:00Z.
    let (stream, events, head) =
        device.run(vec![sale("t2", "s1", T0 + 16 * H, &[("sku-1", 1, 100)])]);
    here.commit_events(&stream, &events, head).await.unwrap();
    let days: Vec<i64> = stored_rollups(&*here, "acme")
        .await
        .keys()
        .filter(|k| k.0 == 2 && k.2 == 0)
        .map(|k| k.1)
        .collect();
    assert_eq!(days, [T0 - 9 * H, T0 + 6 * H], "UTC day, then Tokyo day");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_zone_changed_by_a_replica_reaches_ingest() {
    let cluster = storesync_hub::testing::shared_cluster().expect("test cluster");
    let config = cluster.database("t_zone_replica").await.expect("database");
    let here = storesync_hub::store::pg::PgStore::connect(config.clone())
        .await
        .unwrap()
        .with_zone_ttl(std::time::Duration::from_millis(200));
    here.migrate().await.unwrap();
    let elsewhere = storesync_hub::store::pg::PgStore::connect(config)
        .await
        .unwrap();
    zone_changed_elsewhere_reaches_ingest(Arc::new(here), Arc::new(elsewhere)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_zone_changed_by_another_process_reaches_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    let here = storesync_hub::store::sqlite::SqliteStore::open(&path)
        .await
        .unwrap()
        .with_zone_ttl(std::time::Duration::from_millis(200));
    here.migrate().await.unwrap();
    let elsewhere = storesync_hub::store::sqlite::SqliteStore::open(&path)
        .await
        .unwrap();
    zone_changed_elsewhere_reaches_ingest(Arc::new(here), Arc::new(elsewhere)).await;
}

/// Retention drops old sales but keeps stock movements, and inventory reads sales from the
/// daily rollups: on hand of a SKU counted after the cut-off, or never counted (as here),
/// is the same before and after old partitions go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_inventory_outlives_retention() {
    use storesync_hub::store::pg::PARTITION_WIDTH_MS;
    let cluster = storesync_hub::testing::shared_cluster().expect("test cluster");
    let config = cluster
        .database("t_inventory_retention")
        .await
        .expect("database");
    let pg = storesync_hub::store::pg::PgStore::connect(config)
        .await
        .unwrap();
    pg.migrate().await.unwrap();
    let pg = Arc::new(pg);
    let store: Arc<dyn Store> = pg.clone();
    setup_tenant(&*store, "acme", &[("s1", "north", "UTC")]).await;
    let old = T0 - 400 * 86_400_000;
    let mut device = Device::new("acme", "s1", "d1", 1);
    for bodies in [
        vec![scan("r1", "s1", old, "sku-1", ScanPurpose::Receiving, 100)],
        vec![
            sale("t1", "s1", old + 3_600_000, &[("sku-1", 10, 100)]),
            sale("t2", "s1", T0, &[("sku-1", 1, 100)]),
        ],
    ] {
        let (stream, events, head) = device.run(bodies);
        store.commit_events(&stream, &events, head).await.unwrap();
    }
    let read = || async {
        storesync_hub::store::inventory::on_hand(&*store, &tenant("acme"), None, None)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, sku, q)| (sku.as_str().to_owned(), q))
            .collect::<Vec<_>>()
    };
    assert_eq!(read().await, [("sku-1".to_owned(), 89)]);
    let cutoff = (old.div_euclid(PARTITION_WIDTH_MS) + 1) * PARTITION_WIDTH_MS;
    assert_eq!(pg.drop_partitions_before(cutoff).await.unwrap(), 3);
    assert_eq!(read().await, [("sku-1".to_owned(), 89)]);
}

/// With a single pooled connection, a gated run that starts before its predecessor does not
/// take the connection its predecessor needs: both commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_gated_run_never_starves_its_predecessor_of_a_connection() {
    let cluster = storesync_hub::testing::shared_cluster().expect("test cluster");
    let config = cluster
        .database("t_gated_pool_of_one")
        .await
        .expect("database");
    let store = storesync_hub::store::pg::PgStore::connect(storesync_hub::store::pg::PgConfig {
        pool_size_max: 1,
        ..config
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    setup_tenant(&*store, "acme", &[("s1", "north", "UTC")]).await;
    let mut device = Device::new("acme", "s1", "d1", 1);
    let (stream, first, head1) = device.run(sample_bodies("s1"));
    let (_, second, head2) = device.run(vec![sale("t6", "s1", T0 + 120_000, &[("sku-1", 3, 150)])]);
    let (ahead, gate) = CommitGate::new(head1);
    let behind = tokio::spawn({
        let (store, stream) = (store.clone(), stream.clone());
        async move {
            commit_in_order(&*store, &stream, &second, head2, Some(gate))
                .await
                .0
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let first_done = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        store.commit_events_in_order(&stream, &first, head1, None, ahead),
    )
    .await
    .expect("the first run got a connection");
    assert_eq!(first_done.unwrap().inserted, 5);
    let second_done = tokio::time::timeout(std::time::Duration::from_secs(20), behind)
        .await
        .expect("the second run committed")
        .unwrap();
    assert_eq!(second_done.unwrap().inserted, 1);
}

/// What the sync server does at a handshake of acme's `device` of `store_name` without
/// clock skew: records the contact, then runs the fleet hook.
async fn handshake(
    store: &dyn Store,
    store_name: &str,
    device: &DeviceId,
    options: &storesync_hub::fleet::FleetOptions,
    now_ms: i64,
) {
    let acme = tenant("acme");
    let contact = storesync_hub::store::DeviceContact {
        now_ms,
        backlog: 0,
        clock_skew_ms: 0,
    };
    store
        .record_contact(&acme, &store_id(store_name), device, &contact)
        .await
        .unwrap();
    storesync_hub::fleet::on_connected(
        store,
        &acme,
        &store_id(store_name),
        device,
        0,
        options,
        now_ms,
    )
    .await
    .unwrap();
}

/// A store whose enrolled device never synced is reported once it has been enrolled
/// longer than the limit, judged by its first certificate still valid; revoked or expired
/// certificates do not count, and the device's first contact resolves the alert.
/// Fleet checks with a one-minute not-syncing limit.
fn fleet_options() -> storesync_hub::fleet::FleetOptions {
    storesync_hub::fleet::FleetOptions {
        not_syncing_after_ms: 60_000,
        ..storesync_hub::fleet::FleetOptions::default()
    }
}

/// Records a certificate of `(store, device, not after)`, not revoked, issued at `at_ms`.
async fn enroll(
    store: &dyn Store,
    tenant: &storesync_protocol::ids::TenantId,
    (store_name, device, not_after_ms): (&str, &str, i64),
    at_ms: i64,
) {
    let cert = storesync_hub::store::pki::DeviceCertRecord {
        store: store_id(store_name),
        device: DeviceId::new(device).unwrap(),
        not_after_ms,
        revoked_ms: None,
        cert_hash: vec![7; 32],
    };
    let serial = format!("serial-{device}-{at_ms}");
    store
        .pki()
        .device_cert_insert(tenant, serial.as_bytes(), &cert, at_ms)
        .await
        .unwrap();
}

async fn enrolled_store_that_never_synced_is_not_syncing(store: Arc<dyn Store>) {
    use storesync_hub::fleet;
    setup_tenant(
        &*store,
        "acme",
        &[
            ("s1", "north", "UTC"),
            ("s2", "south", "UTC"),
            ("s3", "east", "UTC"),
        ],
    )
    .await;
    setup_tenant(&*store, "other", &[("s1", "west", "UTC")]).await;
    let acme = tenant("acme");
    let options = fleet_options();
    let pki = store.pki();
    // s1: enrolled at T0, then renewed; s2: its only certificate is revoked; s3: expired.
    enroll(&*store, &acme, ("s1", "d1", T0 + 1_000_000), T0).await;
    enroll(&*store, &acme, ("s1", "d1", T0 + 2_000_000), T0 + 50_000).await;
    enroll(&*store, &acme, ("s2", "d2", T0 + 1_000_000), T0).await;
    pki.device_revoke(&acme, &DeviceId::new("d2").unwrap(), T0 + 1_000)
        .await
        .unwrap();
    enroll(&*store, &acme, ("s3", "d3", T0 + 30_000), T0).await;

    let report = fleet::check_not_syncing(&*store, &acme, &options, T0 + 59_000)
        .await
        .unwrap();
    assert_eq!((report.stores, report.raised), (1, 0), "within the limit");
    let report = fleet::check_not_syncing(&*store, &acme, &options, T0 + 61_000)
        .await
        .unwrap();
    assert_eq!((report.stores, report.raised), (1, 1));
    let id = fleet::not_syncing_id(&store_id("s1")).unwrap();
    let alert = store.alert(&acme, &id).await.unwrap().unwrap().alert;
    assert_eq!(
        (alert.kind.as_str(), alert.state),
        ("store_not_syncing", AlertState::Open)
    );
    assert!(alert.message.contains("never synced"), "{}", alert.message);
    assert!(alert.facts.contains(&("enrolled_ms".to_owned(), T0)));
    for other in ["s2", "s3"] {
        let other = fleet::not_syncing_id(&store_id(other)).unwrap();
        assert!(store.alert(&acme, &other).await.unwrap().is_none());
    }
    // Another tenant sees nothing of it, and its check judges none of acme's stores.
    assert!(store.alert(&tenant("other"), &id).await.unwrap().is_none());
    let report = fleet::check_not_syncing(&*store, &tenant("other"), &options, T0 + 61_000)
        .await
        .unwrap();
    assert_eq!((report.stores, report.raised), (0, 0));

    // The device's first contact resolves it, and from then on contact is what counts.
    let d1 = DeviceId::new("d1").unwrap();
    handshake(&*store, "s1", &d1, &options, T0 + 70_000).await;
    let alert = store.alert(&acme, &id).await.unwrap().unwrap().alert;
    assert_eq!(alert.state, AlertState::Resolved);
    let report = fleet::check_not_syncing(&*store, &acme, &options, T0 + 100_000)
        .await
        .unwrap();
    assert_eq!((report.stores, report.raised), (1, 0));
}

async fn never_synced_alert_clears_when_the_store_is_no_longer_judged(store: Arc<dyn Store>) {
    use storesync_hub::fleet;
    setup_tenant(
        &*store,
        "acme",
        &[("s1", "north", "UTC"), ("s2", "south", "UTC")],
    )
    .await;
    let acme = tenant("acme");
    let options = fleet_options();
    let pki = store.pki();
    // s1's device will be revoked, s2's certificate expires at T0 + 70 s; neither syncs.
    enroll(&*store, &acme, ("s1", "d1", T0 + 1_000_000), T0).await;
    enroll(&*store, &acme, ("s2", "d2", T0 + 70_000), T0).await;
    let state = |id: &'static str| {
        let store = Arc::clone(&store);
        let acme = acme.clone();
        async move {
            let id = fleet::not_syncing_id(&store_id(id)).unwrap();
            store.alert(&acme, &id).await.unwrap().unwrap().alert.state
        }
    };
    let report = fleet::check_not_syncing(&*store, &acme, &options, T0 + 61_000)
        .await
        .unwrap();
    assert_eq!((report.raised, report.cleared), (2, 0));

    // Revoked before it ever synced: no longer judged, its alert resolves.
    pki.device_revoke(&acme, &DeviceId::new("d1").unwrap(), T0 + 62_000)
        .await
        .unwrap();
    let report = fleet::check_not_syncing(&*store, &acme, &options, T0 + 63_000)
        .await
        .unwrap();
    assert_eq!((report.raised, report.cleared), (0, 1));
    assert_eq!(state("s1").await, AlertState::Resolved);
    assert_eq!(state("s2").await, AlertState::Open);

    // Expired before it ever synced: the same.
    let report = fleet::check_not_syncing(&*store, &acme, &options, T0 + 71_000)
        .await
        .unwrap();
    assert_eq!((report.raised, report.cleared), (0, 1));
    assert_eq!(state("s2").await, AlertState::Resolved);

    // A new device for s1 is judged from its own enrollment: within the limit nothing is
    // raised, past it the alert reopens.
    enroll(&*store, &acme, ("s1", "d1b", T0 + 1_000_000), T0 + 72_000).await;
    let report = fleet::check_not_syncing(&*store, &acme, &options, T0 + 100_000)
        .await
        .unwrap();
    assert_eq!((report.raised, report.cleared), (0, 0));
    let report = fleet::check_not_syncing(&*store, &acme, &options, T0 + 133_000)
        .await
        .unwrap();
    assert_eq!((report.raised, report.cleared), (1, 0));
    assert_eq!(state("s1").await, AlertState::Open);
}

/// A session's alarms become alerts of the device's store, one per device, stream and kind
/// of alarm however often they repeat; conflicts are left to the commit's own alerts.
async fn sync_alarms_become_alerts_once(store: Arc<dyn Store>) {
    use storesync_hub::fleet;
    use storesync_protocol::event::{ChainError, Epoch, EventClass, StreamId};
    use storesync_protocol::session::Alarm;
    setup_tenant(&*store, "acme", &[("s1", "north", "UTC")]).await;
    let acme = tenant("acme");
    let device = DeviceId::new("d1").unwrap();
    let stream = StreamId {
        tenant: acme.clone(),
        store: store_id("s1"),
        device: device.clone(),
        epoch: Epoch(7),
        class: EventClass::Sales,
    };
    let alarms = [
        Alarm::ChainBroken {
            stream: stream.clone(),
            error: ChainError::Link { seq: SeqNo(12) },
        },
        Alarm::HubBehind {
            stream: stream.clone(),
            acked: SeqNo(900),
            committed: SeqNo(300),
        },
        Alarm::Identity("store s2".into()),
        Alarm::Conflict { keys: Vec::new() },
    ];
    for at in [T0, T0 + 1_000] {
        for alarm in &alarms {
            fleet::on_alarm(&*store, &acme, &store_id("s1"), &device, alarm, at)
                .await
                .unwrap();
        }
    }
    let listed = store.alerts(&acme, &AlertQuery::newest(10)).await.unwrap();
    let mut kinds: Vec<(&str, &str)> = listed
        .iter()
        .map(|a| (a.alert.kind.as_str(), a.alert.severity.as_str()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("chain_anomaly", "critical"),
            ("journal_integrity", "critical"),
            ("journal_integrity", "warning"),
        ]
    );
    assert!(
        listed
            .iter()
            .all(|a| a.alert.store_id == store_id("s1") && a.alert.state == AlertState::Open)
    );
    let behind = listed
        .iter()
        .find(|a| a.alert.severity.as_str() == "warning")
        .unwrap();
    assert!(
        behind.alert.message.contains("up to 300"),
        "{:?}",
        behind.alert
    );
    assert!(
        behind.alert.facts.contains(&("acked_seq".to_owned(), 900)),
        "{:?}",
        behind.alert
    );
}

/// A rollup read with a limit returns at most that many rows, whether the rows are read as
/// stored or summed, and all of them under a limit they do not reach.
async fn rollup_reads_stop_at_their_limit(store: Arc<dyn Store>) {
    setup_tenant(&*store, "acme", &[("s1", "north", "Europe/Paris")]).await;
    let mut device = Device::new("acme", "s1", "d1", 1);
    let (stream, events, head) = device.run(sample_bodies("s1"));
    store.commit_events(&stream, &events, head).await.unwrap();
    let acme = tenant("acme");
    for by_store in [true, false] {
        let mut query = every_bucket(Granularity::Minute, DimKind::Payment, by_store, true);
        let all = store.rollups(&acme, &query).await.unwrap().len();
        assert!(all >= 2, "{all} rows");
        for (limit, expected) in [(1, 1), (all - 1, all - 1), (all, all), (all + 1, all)] {
            query.limit = Some(limit as u64);
            let rows = store.rollups(&acme, &query).await.unwrap();
            assert_eq!(rows.len(), expected, "by_store {by_store}, limit {limit}");
        }
    }
}

/// Item rows read by category are summed into the tenant's catalog categories in the
/// database, an item without one as "uncategorized", and no other tenant's catalog counts.
async fn item_rollups_sum_into_catalog_categories(store: Arc<dyn Store>) {
    setup_tenant(
        &*store,
        "acme",
        &[("s1", "north", "Europe/Paris"), ("s2", "south", "UTC")],
    )
    .await;
    setup_tenant(&*store, "globex", &[("g1", "north", "UTC")]).await;
    for (store_id, device_id) in [("s1", "d1"), ("s2", "d2")] {
        let mut device = Device::new("acme", store_id, device_id, 1);
        let (stream, events, head) = device.run(store_sales(store_id));
        store.commit_events(&stream, &events, head).await.unwrap();
    }
    let sku = |s: &str| storesync_protocol::ids::Sku::new(s).unwrap();
    let acme = tenant("acme");
    store
        .set_item_category(&acme, &sku("sku-1"), "pens")
        .await
        .unwrap();
    store
        .set_item_category(&acme, &sku("sku-2"), "pens")
        .await
        .unwrap();
    // Another tenant's catalog names sku-3, which acme's does not.
    store
        .set_item_category(&tenant("globex"), &sku("sku-3"), "toys")
        .await
        .unwrap();
    let category = |value: &str| match value {
        "sku-1" | "sku-2" => "pens",
        _ => "uncategorized",
    };
    for granularity in [Granularity::Hour, Granularity::Day] {
        for by_store in [false, true] {
            let items = every_bucket(granularity, DimKind::Item, by_store, true);
            let mut expected: BTreeMap<(Option<String>, String, i64), SalesFigures> =
                BTreeMap::new();
            for row in store.rollups(&acme, &items).await.unwrap() {
                let key = (
                    row.store_id.map(|s| s.as_str().to_owned()),
                    category(&row.value).to_owned(),
                    row.bucket_ms,
                );
                expected.entry(key).or_default().add(&row.figures);
            }
            let mut by_category = items.clone();
            by_category.by_category = true;
            let rows = store.rollups(&acme, &by_category).await.unwrap();
            let got: BTreeMap<(Option<String>, String, i64), SalesFigures> = rows
                .into_iter()
                .map(|row| {
                    let key = (
                        row.store_id.map(|s| s.as_str().to_owned()),
                        row.value,
                        row.bucket_ms,
                    );
                    (key, row.figures)
                })
                .collect();
            assert_eq!(got, expected, "{granularity:?}, by store {by_store}");
            if by_store {
                let stores: std::collections::BTreeSet<_> = got.keys().map(|k| &k.0).collect();
                assert_eq!(stores.len(), 2, "{got:?}");
            }
            assert!(
                got.keys().any(|k| k.1 == "pens") && got.keys().any(|k| k.1 == "uncategorized")
            );
        }
    }
}

/// Items by hour are summed from line items when read (the hub keeps no item rows by hour).
/// In zones a quarter or half hour off UTC and across daylight-saving changes, over ranges
/// that start and end inside an hour, they equal the protocol's item rollup rows, whichever
/// columns are kept apart; a read too large for its limit is refused.
async fn item_hours_from_line_items_equal_the_protocol_rollup(store: Arc<dyn Store>) {
    use rand::{Rng, SeedableRng};
    use storesync_hub::store::RollupQuery;
    use storesync_protocol::rollup::{Dimension, rollup_rows};

    const HOUR: i64 = 3_600_000;
    let stores = [
        ("s1", "Europe/Paris"),
        ("s2", "Asia/Kathmandu"),
        ("s3", "America/St_Johns"),
        ("s4", "UTC"),
        ("s5", "Europe/Paris"),
    ];
    let regions: Vec<(&str, &str, &str)> = stores.iter().map(|(s, z)| (*s, "north", *z)).collect();
    setup_tenant(&*store, "acme", &regions).await;
    let zone = |id: &str| stores.iter().find(|(s, _)| *s == id).unwrap().1;
    // Paris leaves summer time at 2026-10-25T01:00Z, St John's at 2026-11-01T04:30Z.
    let paris_change = 1_792_890_000_000;
    let st_johns_change = 1_793_507_400_000;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut expected_rows = Vec::new();
    for (n, (store_id, tz)) in stores.iter().enumerate() {
        let mut bodies = vec![
            sale(
                &format!("{store_id}-edge-a"),
                store_id,
                paris_change - 1,
                &[("sku-1", 1, 100)],
            ),
            sale(
                &format!("{store_id}-edge-b"),
                store_id,
                paris_change,
                &[("sku-1", 2, 100)],
            ),
            sale(
                &format!("{store_id}-edge-c"),
                store_id,
                st_johns_change,
                &[("sku-2", 1, 300)],
            ),
        ];
        for i in 0..60 {
            let around = if i % 2 == 0 {
                paris_change
            } else {
                st_johns_change
            };
            let at = around + rng.random_range(-20 * HOUR..20 * HOUR);
            let lines: Vec<(String, i32, i64)> = (0..rng.random_range(1..4))
                .map(|_| {
                    (
                        format!("sku-{}", rng.random_range(0..5)),
                        rng.random_range(1..4),
                        rng.random_range(50..2_000),
                    )
                })
                .collect();
            let kind = match rng.random_range(0..10) {
                0 => TransactionKind::Return,
                1 => TransactionKind::Void,
                _ => TransactionKind::Sale,
            };
            let sign = if kind == TransactionKind::Return {
                -1
            } else {
                1
            };
            let lines: Vec<(&str, i32, i64)> = lines
                .iter()
                .map(|(s, q, p)| (s.as_str(), q * sign, *p))
                .collect();
            bodies.push(EventBody::Transaction(txn(
                &format!("{store_id}-{i}"),
                store_id,
                at,
                &lines,
                "card",
                kind,
            )));
        }
        let tz_rules = jiff::tz::TimeZone::get(tz).unwrap();
        for body in &bodies {
            if let EventBody::Transaction(t) = body {
                for (key, f) in rollup_rows(t, &tz_rules) {
                    if let (Granularity::Hour, Dimension::Item(sku)) =
                        (key.granularity, key.dimension)
                    {
                        expected_rows.push((*store_id, sku.as_str().to_owned(), key.bucket_ms, f));
                    }
                }
            }
        }
        let mut device = Device::new("acme", store_id, &format!("d{n}"), 1);
        let (stream, events, head) = device.run(bodies);
        let outcome = store.commit_events(&stream, &events, head).await.unwrap();
        assert_eq!(outcome.inserted as usize, events.len());
    }
    // Another tenant's sales in the same hours count for nothing here.
    setup_tenant(&*store, "globex", &[("s1", "north", "UTC")]).await;
    let mut other = Device::new("globex", "s1", "g1", 1);
    let (stream, events, head) =
        other.run(vec![sale("g-1", "s1", paris_change, &[("sku-1", 9, 100)])]);
    store.commit_events(&stream, &events, head).await.unwrap();

    // The catalog names categories for two items; the others are uncategorized.
    let category = |sku: &str| match sku {
        "sku-0" | "sku-3" => "pens",
        _ => "uncategorized",
    };
    for sku in ["sku-0", "sku-3"] {
        let sku = storesync_protocol::ids::Sku::new(sku).unwrap();
        store
            .set_item_category(&tenant("acme"), &sku, "pens")
            .await
            .unwrap();
    }
    type Sums = BTreeMap<(String, String, i64), SalesFigures>;
    let expect = |q: &RollupQuery| -> Sums {
        let mut out = Sums::new();
        for (store_id, sku, bucket, f) in &expected_rows {
            let kept = *bucket >= q.from_ms
                && *bucket < q.to_ms
                && q.stores
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|s| s.as_str() == *store_id))
                && q.values.as_ref().is_none_or(|v| v.contains(sku));
            if !kept {
                continue;
            }
            let group = match (q.by_store, q.by_zone) {
                (false, _) => String::new(),
                (true, false) => (*store_id).to_owned(),
                (true, true) => zone(store_id).to_owned(),
            };
            let value = match (q.by_value, q.by_category) {
                (false, _) => String::new(),
                (true, false) => sku.clone(),
                (true, true) => category(sku).to_owned(),
            };
            let bucket = if q.by_bucket { *bucket } else { 0 };
            out.entry((group, value, bucket)).or_default().add(f);
        }
        out
    };
    let acme = tenant("acme");
    let served = |q: RollupQuery| {
        let store = store.clone();
        let acme = acme.clone();
        async move {
            let rows = store.rollups(&acme, &q).await.unwrap();
            let mut out = Sums::new();
            for row in rows {
                assert_eq!(row.store_id.is_some(), q.by_store, "{q:?}");
                let group = match (&row.store_id, q.by_zone) {
                    (None, _) => String::new(),
                    (Some(id), false) => id.as_str().to_owned(),
                    (Some(id), true) => zone(id.as_str()).to_owned(),
                };
                let key = (group, row.value, row.bucket_ms);
                assert!(
                    out.insert(key, row.figures).is_none(),
                    "one row per key: {q:?}"
                );
            }
            out
        }
    };
    let ranges = [
        (0, i64::MAX),
        (
            paris_change - 7 * HOUR - 17 * 60_000,
            paris_change + 29 * HOUR + 43 * 60_000,
        ),
        (paris_change + 10 * 60_000, paris_change + 70 * 60_000),
        (
            st_johns_change - 3 * HOUR - 45 * 60_000,
            st_johns_change + 2 * HOUR + 15 * 60_000,
        ),
    ];
    let mut compared = 0;
    for (from_ms, to_ms) in ranges {
        for (by_store, by_zone) in [(false, false), (true, false), (true, true)] {
            for by_value in [true, false] {
                for by_bucket in [true, false] {
                    let q = RollupQuery {
                        from_ms,
                        to_ms,
                        by_zone,
                        by_bucket,
                        ..every_bucket(Granularity::Hour, DimKind::Item, by_store, by_value)
                    };
                    let want = expect(&q);
                    assert_eq!(served(q.clone()).await, want, "{q:?}");
                    compared += want.len();
                }
            }
        }
    }
    assert!(compared > 1_000, "{compared} rows compared");
    for (by_store, by_bucket) in [(false, false), (true, true)] {
        let by_category = RollupQuery {
            from_ms: ranges[1].0,
            to_ms: ranges[1].1,
            by_category: true,
            by_bucket,
            ..every_bucket(Granularity::Hour, DimKind::Item, by_store, true)
        };
        let want = expect(&by_category);
        assert!(want.keys().any(|k| k.1 == "pens") && want.keys().any(|k| k.1 == "uncategorized"));
        assert_eq!(served(by_category.clone()).await, want, "{by_category:?}");
    }
    let filtered = RollupQuery {
        stores: Some(vec![store_id("s2"), store_id("s3")]),
        values: Some(vec!["sku-1".into(), "sku-4".into()]),
        ..every_bucket(Granularity::Hour, DimKind::Item, true, true)
    };
    let want = expect(&filtered);
    assert!(!want.is_empty());
    assert_eq!(served(filtered).await, want);

    // Limits, by store and summed over stores (where the read bound counts the zones): all
    // rows under a limit they do not reach; that many rows over one they pass; a refusal
    // naming the cause when the line items to read pass a multiple of it.
    for by_store in [true, false] {
        let mut q = every_bucket(Granularity::Hour, DimKind::Item, by_store, true);
        let all = expect(&q).len() as u64;
        assert!(all > 10, "{all} rows");
        for (limit, rows) in [(all + 1, all), (all, all), (all - 1, all - 1)] {
            q.limit = Some(limit);
            let got = store.rollups(&acme, &q).await.unwrap().len() as u64;
            assert_eq!(got, rows, "by store {by_store}, limit {limit}");
        }
        q.limit = Some(1);
        match store.rollups(&acme, &q).await {
            Err(StoreError::Invalid(message)) => {
                assert!(message.contains("too many rows"), "{message}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

/// The next change announced within 1.5 s, if any.
async fn next_change(
    changes: &mut tokio::sync::broadcast::Receiver<storesync_hub::store::Change>,
) -> Option<storesync_hub::store::Change> {
    tokio::time::timeout(std::time::Duration::from_millis(1_500), changes.recv())
        .await
        .ok()
        .and_then(Result::ok)
}

/// Adding a store, or changing its region, name or zone, is announced as a tenant-wide
/// change (API replicas drop the tenant's store list and cached series); writing a store
/// as it is announces nothing.
async fn a_new_or_edited_store_is_announced(store: Arc<dyn Store>) {
    use storesync_hub::store::StoreInfo;
    setup_tenant(&*store, "acme", &[]).await;
    let mut changes = store.subscribe();
    let info = |region: &str| StoreInfo {
        store_id: store_id("s2"),
        name: "Store s2".into(),
        region: region.into(),
        time_zone: "UTC".into(),
    };
    let acme = tenant("acme");
    store.upsert_store(&acme, &info("south")).await.unwrap();
    let added = next_change(&mut changes)
        .await
        .expect("an added store is announced");
    assert_eq!(added.tenant, "acme");
    assert!(added.is_tenant_wide(), "{added:?}");
    store.upsert_store(&acme, &info("south")).await.unwrap();
    store.upsert_store(&acme, &info("west")).await.unwrap();
    let edited = next_change(&mut changes)
        .await
        .expect("an edit is announced");
    assert!(edited.is_tenant_wide(), "{edited:?}");
    assert!(
        next_change(&mut changes).await.is_none(),
        "the unchanged write announced nothing"
    );
}

/// Two sales of `store` with ids of their own (transaction ids are unique in a tenant).
fn store_sales(store: &str) -> Vec<EventBody> {
    vec![
        sale(
            &format!("{store}-a"),
            store,
            T0,
            &[("sku-1", 2, 150), ("sku-2", 1, 999)],
        ),
        sale(
            &format!("{store}-b"),
            store,
            T0 + 90_000_000,
            &[("sku-3", 4, 250)],
        ),
    ]
}

/// Rows read by zone sum the stores of each time zone, and the store a row names is one
/// of that zone's.
async fn rollups_by_zone_sum_the_stores_of_each_time_zone(store: Arc<dyn Store>) {
    let stores = [
        ("s1", "Europe/Paris"),
        ("s2", "UTC"),
        ("s3", "Europe/Paris"),
    ];
    setup_tenant(
        &*store,
        "acme",
        &[
            ("s1", "north", "Europe/Paris"),
            ("s2", "south", "UTC"),
            ("s3", "south", "Europe/Paris"),
        ],
    )
    .await;
    for (n, (store_id, _)) in stores.iter().enumerate() {
        let mut device = Device::new("acme", store_id, &format!("d{n}"), 1);
        let (stream, events, head) = device.run(store_sales(store_id));
        store.commit_events(&stream, &events, head).await.unwrap();
    }
    let zone = |store_id: &str| {
        stores
            .iter()
            .find(|(s, _)| *s == store_id)
            .map(|(_, z)| *z)
            .unwrap()
    };
    let acme = tenant("acme");
    for (dim, by_value) in [(DimKind::Store, false), (DimKind::Item, true)] {
        let by_store = every_bucket(Granularity::Day, dim, true, by_value);
        let mut expected: BTreeMap<(&str, String, i64), SalesFigures> = BTreeMap::new();
        for row in store.rollups(&acme, &by_store).await.unwrap() {
            let key = (
                zone(row.store_id.unwrap().as_str()),
                row.value,
                row.bucket_ms,
            );
            expected.entry(key).or_default().add(&row.figures);
        }
        let mut by_zone = by_store.clone();
        by_zone.by_zone = true;
        let rows = store.rollups(&acme, &by_zone).await.unwrap();
        let got: BTreeMap<(&str, String, i64), SalesFigures> = rows
            .into_iter()
            .map(|row| {
                let key = (
                    zone(row.store_id.unwrap().as_str()),
                    row.value,
                    row.bucket_ms,
                );
                (key, row.figures)
            })
            .collect();
        assert_eq!(got, expected, "{dim:?}");
        assert_eq!(
            got.keys()
                .map(|k| k.0)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            2
        );
    }
}

on_both_backends!(
    a_new_or_edited_store_is_announced,
    item_hours_from_line_items_equal_the_protocol_rollup,
    rollups_by_zone_sum_the_stores_of_each_time_zone,
    item_rollups_sum_into_catalog_categories,
    rollup_reads_stop_at_their_limit,
    gated_runs_commit_in_order,
    fleet_alerts_dedupe_clear_and_reopen,
    enrolled_store_that_never_synced_is_not_syncing,
    never_synced_alert_clears_when_the_store_is_no_longer_judged,
    sync_alarms_become_alerts_once,
    documents_merge_serially_and_stay_per_tenant,
    ingest_then_replay_changes_nothing,
    heads_and_chain_hashes,
    same_key_other_content_is_a_conflict,
    same_key_other_prev_is_a_conflict,
    transaction_ids_are_idempotent_across_epochs,
    rejected_records_become_dead_letters,
    a_registered_id_decides_before_re_validation,
    partly_known_run_applies_only_the_new_events,
    inventory_equals_the_protocol_fold,
    alerts_list_acknowledge_resolve,
    tenants_do_not_see_each_other,
    sync_status_tracks_devices,
    unknown_time_zone_is_refused,
);
