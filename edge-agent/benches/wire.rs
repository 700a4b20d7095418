//! Wire bytes per transaction: sealed events in zstd-compressed batch frames (what the sync
//! client sends) against the same records as JSON over HTTP, measured on the same records.
//!
//! `cargo bench -p storesync-edge --bench wire`
//!
//! QUIC adds its own packet and frame headers (about 2-4% at full-size packets), which
//! this count leaves out on the sync side, as it leaves TCP/IP headers out on the HTTP side.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // Bench code.

use rand::{Rng as _, SeedableRng as _};
use storesync_protocol::event::{Epoch, EventBody, Hash, Sealer};
use storesync_protocol::ids::{DeviceId, StoreId, TenantId};
use storesync_protocol::validate::{Context, Limits, parse_transaction};
use storesync_protocol::wire::{EventBatch, Message, compressed_frame};

fn main() {
    let transactions = 20_000usize;
    let batch_len = 1024usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let limits = Limits::default();
    let ctx = Context {
        now_ms: 1_795_500_000_000,
        limits: &limits,
        store: None,
    };
    let mut sealer = Sealer::new(
        TenantId::new("acme").unwrap(),
        StoreId::new("s001").unwrap(),
        DeviceId::new("d-4f1c9a2b").unwrap(),
        Epoch(rng.random()),
        [Hash::ZERO; 3],
    );
    let mut http_single = 0usize;
    let mut http_ndjson_body = 0usize;
    let mut events = Vec::with_capacity(transactions);
    for n in 0..transactions {
        let lines = rng.random_range(1..=6);
        let mut items = Vec::new();
        let mut total = 0i64;
        for _ in 0..lines {
            let cents: i64 = rng.random_range(49..=4_999);
            let quantity: i64 = rng.random_range(1..=3);
            total += cents * quantity;
            items.push(serde_json::json!({
                "itemId": format!("SKU-{:05}", rng.random_range(0..2000)),
                "quantity": quantity,
                "price": cents as f64 / 100.0,
            }));
        }
        let body = serde_json::json!({
            "transactionId": format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", rng.random::<u32>(), rng.random::<u16>(), rng.random::<u16>() & 0xfff, rng.random::<u16>() & 0xfff, rng.random::<u64>() & 0xffff_ffff_ffff),
            "storeId": "s001",
            "timestamp": format!("2026-11-22T{:02}:{:02}:{:02}+01:00", 8 + (n / 3600) % 12, (n / 60) % 60, n % 60),
            "items": items,
            "totalAmount": total as f64 / 100.0,
            "paymentMethod": if rng.random_bool(0.3) { "cash" } else { "card" },
            "registerId": format!("r{}", rng.random_range(1..=4)),
        })
        .to_string();
        let headers = format!(
            "POST /api/v1/transactions HTTP/1.1\r\nHost: 10.0.0.5:7400\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        http_single +=
            headers.len() + body.len() + "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".len();
        http_ndjson_body += body.len() + 1;
        let tx = parse_transaction(body.as_bytes(), &ctx).unwrap();
        events.push(sealer.seal(EventBody::Transaction(tx)));
    }
    let mut raw = 0usize;
    let mut compressed = 0usize;
    for (i, chunk) in events.chunks(batch_len).enumerate() {
        let frame = Message::EventBatch(EventBatch {
            batch_id: i as u64,
            events: chunk.to_vec(),
        })
        .encode()
        .unwrap();
        raw += frame.len();
        let small = zstd::bulk::compress(&frame, 1).unwrap();
        compressed += compressed_frame(&small, usize::MAX).unwrap().len();
    }
    // Acknowledgements flow back: one small frame per batch.
    let acks = events.len().div_ceil(batch_len) * 40;
    let per = |bytes: usize| bytes as f64 / transactions as f64;
    println!("{transactions} transactions, 1-6 lines each, batches of {batch_len}");
    println!(
        "  JSON over HTTP, one request each:  {:>7.1} B/transaction (baseline)",
        per(http_single)
    );
    println!(
        "  JSON NDJSON bodies only:           {:>7.1} B/transaction",
        per(http_ndjson_body)
    );
    println!(
        "  sealed events, uncompressed frames:{:>7.1} B/transaction",
        per(raw)
    );
    println!(
        "  sealed events, zstd frames + acks: {:>7.1} B/transaction = {:.3}x the HTTP baseline (target <= 0.2)",
        per(compressed + acks),
        (compressed + acks) as f64 / http_single as f64
    );
}
