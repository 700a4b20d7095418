//! Encode and decode throughput of a typical 3-item transaction: postcard (the wire) against
//! serde_json (the HTTP payload), measured in the same run.
//!
//! `cargo bench -p storesync-protocol --bench codec`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use storesync_protocol::Transaction;
use storesync_protocol::event::{Epoch, EventBody, Hash, Sealer};
use storesync_protocol::ids::{DeviceId, StoreId, TenantId};
use storesync_protocol::validate::{Context, Limits, parse_transaction, transaction_from_json};
use storesync_protocol::wire::{EventBatch, Message, decode_frame};

const NOW: i64 = 1_795_336_200_000;
const JSON: &[u8] = br#"{"transactionId":"0b9f3c1e-6f1c-4d3e-9a51-2f7c6b1d8e40","storeId":"s1","timestamp":"2026-11-22T09:00:00+01:00","items":[{"itemId":"sku-1001","quantity":2,"price":1.25},{"itemId":"sku-2002","quantity":1,"price":0.5},{"itemId":"sku-3003","quantity":3,"price":2}],"totalAmount":9.0,"paymentMethod":"card","registerId":"r1"}"#;

fn transaction() -> Transaction {
    let limits = Limits::default();
    parse_transaction(
        JSON,
        &Context {
            now_ms: NOW,
            limits: &limits,
            store: None,
        },
    )
    .expect("valid")
}

fn codec(c: &mut Criterion) {
    let tx = transaction();
    let postcard_bytes = postcard::to_allocvec(&tx).expect("encodes");
    let json_value = tx.to_json();
    let json_bytes = serde_json::to_vec(&json_value).expect("encodes");
    println!(
        "3-item transaction: postcard {} B, JSON {} B ({:.1}x)",
        postcard_bytes.len(),
        json_bytes.len(),
        json_bytes.len() as f64 / postcard_bytes.len() as f64
    );

    let mut group = c.benchmark_group("transaction");
    group.throughput(Throughput::Elements(1));
    group.bench_function("postcard encode", |b| {
        b.iter(|| postcard::to_allocvec(black_box(&tx)))
    });
    group.bench_function("postcard decode", |b| {
        b.iter(|| postcard::from_bytes::<Transaction>(black_box(&postcard_bytes)))
    });
    group.bench_function("json encode", |b| {
        b.iter(|| serde_json::to_vec(&black_box(&tx).to_json()))
    });
    let limits = Limits::default();
    let ctx = Context {
        now_ms: NOW,
        limits: &limits,
        store: None,
    };
    group.bench_function("json decode + validate", |b| {
        b.iter(|| parse_transaction(black_box(JSON), &ctx))
    });
    group.bench_function("validate parsed json", |b| {
        b.iter(|| transaction_from_json(black_box(&json_value), &ctx))
    });
    group.finish();

    // A batch of 1,000 sealed events in one frame: the unit of sync.
    let mut sealer = Sealer::new(
        TenantId::new("acme").expect("id"),
        StoreId::new("s1").expect("id"),
        DeviceId::new("pc1").expect("id"),
        Epoch(1),
        [Hash::ZERO; 3],
    );
    let events: Vec<_> = (0..1000)
        .map(|_| sealer.seal(EventBody::Transaction(tx.clone())))
        .collect();
    let frame = Message::EventBatch(EventBatch {
        batch_id: 1,
        events: events.clone(),
    })
    .encode()
    .expect("encodes");
    println!(
        "batch of 1,000 sealed transactions: {} B per event in the frame",
        frame.len() / 1000
    );
    let mut group = c.benchmark_group("batch of 1000");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("seal", |b| {
        b.iter(|| {
            let mut sealer = sealer.clone();
            for _ in 0..1000 {
                black_box(sealer.seal(EventBody::Transaction(tx.clone())));
            }
        })
    });
    group.bench_function("frame encode", |b| {
        b.iter(|| {
            Message::EventBatch(EventBatch {
                batch_id: 1,
                events: black_box(events.clone()),
            })
            .encode()
        })
    });
    group.bench_function("frame decode", |b| {
        b.iter(|| decode_frame(black_box(&frame), usize::MAX))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
