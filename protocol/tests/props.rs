//! Property tests at the protocol's boundaries: the wire codec and validation.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use proptest::prelude::*;
use serde_json::{Value, json};
use storesync_protocol::domain::{
    Gtin, LineItem, ScanEvent, ScanPurpose, Transaction, TransactionKind, gs1_check_digit,
};
use storesync_protocol::event::{
    EncodedBody, Epoch, Event, EventBody, Hash, Sealer, SeqNo, StreamHead,
};
use storesync_protocol::ids::{
    DeviceId, RegisterId, ScanId, Sku, StoreId, TenantId, TransactionId,
};
use storesync_protocol::money::Money;
use storesync_protocol::time::EventTime;
use storesync_protocol::validate::{Context, Limits, transaction_from_json};
use storesync_protocol::wire::{
    Ack, BridgeAck, BridgeScan, Decoded, DocId, DocSync, EnrollRequest, Enrolled, EpochLink,
    ErrorCode, ErrorMsg, EventBatch, FrameDecoder, Heartbeat, Hello, Message, RenewRequest,
    StreamCommitted, StreamPosition, VersionRange, Welcome, decode_frame,
};
use storesync_protocol::{EventClass, event::StreamId};

const NOW: i64 = 1_795_336_200_000;

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,64}"
}

fn class() -> impl Strategy<Value = EventClass> {
    prop_oneof![
        Just(EventClass::Sales),
        Just(EventClass::Scans),
        Just(EventClass::Telemetry)
    ]
}

fn kind() -> impl Strategy<Value = TransactionKind> {
    prop_oneof![
        Just(TransactionKind::Sale),
        Just(TransactionKind::Return),
        Just(TransactionKind::Void)
    ]
}

prop_compose! {
    /// A transaction the validation must accept.
    fn transaction()(
        kind in kind(),
        tid in id(),
        at in 946_684_800_000i64..NOW,
        offset in -720i16..=840,
        lines in proptest::collection::vec((id(), 1i32..1_000, 0i64..10_000_000), 1..20),
        negative in any::<bool>(),
        register in proptest::option::of(id()),
        currency in proptest::option::of("[A-Z]{3}"),
        payment in "[a-z]{1,32}",
        extra in proptest::collection::btree_map("x[a-zA-Z]{1,10}", "[ -~]{0,20}", 0..4),
    ) -> Transaction {
        let negative = negative && kind == TransactionKind::Return;
        let items: Vec<LineItem> = lines
            .into_iter()
            .map(|(sku, q, price_e4)| LineItem {
                sku: Sku::new(sku).unwrap(),
                quantity: if negative { -q } else { q },
                price: Money::from_e4(price_e4),
            })
            .collect();
        let total = items.iter().fold(Money::ZERO, |a, i| a + i.amount());
        Transaction {
            transaction_id: TransactionId::new(tid).unwrap(),
            store_id: StoreId::new("s1").unwrap(),
            // Offsets are whole minutes and timestamps whole milliseconds, as RFC 3339 text
            // with millisecond precision carries them.
            timestamp: EventTime::from_unix_ms(at, offset),
            items,
            total_amount: total,
            payment_method: payment,
            kind,
            register_id: register.map(|r| RegisterId::new(r).unwrap()),
            cashier_id: None,
            customer_id: None,
            currency,
            extra: extra.into_iter().map(|(k, v)| (k, Value::String(v).to_string())).collect(),
        }
    }
}

prop_compose! {
    fn scan()(sid in id(), digits in proptest::collection::vec(0u8..10, 12), q in 1i32..100, at in 946_684_800_000i64..NOW) -> ScanEvent {
        let mut text: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
        text.push(char::from(b'0' + gs1_check_digit(&digits)));
        ScanEvent {
            scan_id: ScanId::new(sid).unwrap(),
            store_id: StoreId::new("s1").unwrap(),
            sku: Sku::new(text.clone()).unwrap(),
            gtin: Gtin::new(text).unwrap(),
            purpose: ScanPurpose::Receiving,
            quantity: q,
            timestamp: EventTime::from_unix_ms(at, 0),
            register_id: None,
        }
    }
}

fn body() -> impl Strategy<Value = EventBody> {
    prop_oneof![
        transaction().prop_map(EventBody::Transaction),
        scan().prop_map(EventBody::Scan)
    ]
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    (proptest::collection::vec(body(), 0..8), any::<u64>()).prop_map(|(bodies, epoch)| {
        let mut sealer = Sealer::new(
            TenantId::new("t").unwrap(),
            StoreId::new("s1").unwrap(),
            DeviceId::new("d").unwrap(),
            Epoch(epoch),
            [Hash::ZERO; 3],
        );
        bodies.into_iter().map(|b| sealer.seal(b)).collect()
    })
}

fn hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

fn head() -> impl Strategy<Value = StreamHead> {
    (any::<u64>(), hash()).prop_map(|(seq, hash)| StreamHead {
        seq: SeqNo(seq),
        hash,
    })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            proptest::option::of((any::<u64>(), head(), head(), head())),
            proptest::collection::vec((any::<u64>(), class(), any::<u64>()), 0..6),
            any::<i64>(),
            any::<u64>()
        )
            .prop_map(
                |(min, max, epoch, link, acked, now_ms, backlog)| Message::Hello(Hello {
                    versions: VersionRange { min, max },
                    tenant: TenantId::new("t").unwrap(),
                    store: StoreId::new("s").unwrap(),
                    device: DeviceId::new("d").unwrap(),
                    epoch: Epoch(epoch),
                    link: link.map(|(parent, a, b, c)| EpochLink {
                        parent: Epoch(parent),
                        heads: [a, b, c]
                    }),
                    acked: acked
                        .into_iter()
                        .map(|(e, class, s)| StreamPosition {
                            epoch: Epoch(e),
                            class,
                            seq: SeqNo(s)
                        })
                        .collect(),
                    now_ms,
                    backlog,
                })
            ),
        (
            any::<u16>(),
            proptest::collection::vec((any::<u64>(), class(), head()), 0..6),
            any::<i64>()
        )
            .prop_map(|(version, committed, now_ms)| {
                Message::Welcome(Welcome {
                    version,
                    committed: committed
                        .into_iter()
                        .map(|(e, class, head)| StreamCommitted {
                            epoch: Epoch(e),
                            class,
                            head,
                        })
                        .collect(),
                    now_ms,
                })
            }),
        (any::<u64>(), events()).prop_map(|(batch_id, events)| {
            // A batch is one stream's run: keep the first event's stream.
            let stream = events.first().map(|e| e.key.stream.clone());
            let events = events
                .into_iter()
                .filter(|e| Some(&e.key.stream) == stream.as_ref())
                .collect();
            Message::EventBatch(EventBatch { batch_id, events })
        }),
        (any::<u64>(), any::<u64>(), class(), any::<u64>()).prop_map(|(batch_id, e, class, s)| {
            Message::Ack(Ack {
                batch_id,
                epoch: Epoch(e),
                class,
                through: SeqNo(s),
            })
        }),
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(t, data)| Message::DocSync(DocSync {
                doc: if t { DocId::Tenant } else { DocId::Store },
                data
            })),
        (any::<i64>(), any::<u64>())
            .prop_map(|(now_ms, backlog)| Message::Heartbeat(Heartbeat { now_ms, backlog })),
        ("[ -~]{0,40}").prop_map(|message| Message::Error(ErrorMsg {
            code: ErrorCode::Integrity,
            message
        })),
        (any::<u64>(), scan()).prop_map(|(seq, scan)| Message::BridgeScan(BridgeScan {
            device: DeviceId::new("b1").unwrap(),
            seq,
            scan
        })),
        (
            "[ -~]{0,40}",
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(token, csr_der)| Message::EnrollRequest(EnrollRequest {
                token,
                device: DeviceId::new("d").unwrap(),
                csr_der
            })),
        (proptest::collection::vec(any::<u8>(), 0..200), any::<i64>()).prop_map(|(der, now_ms)| {
            Message::RenewRequest(RenewRequest {
                cert_der: der.clone(),
                csr_der: der,
                now_ms,
                signature: vec![1, 2, 3],
            })
        }),
        (proptest::collection::vec(any::<u8>(), 0..200), any::<i64>()).prop_map(
            |(der, not_after_ms)| Message::Enrolled(Enrolled {
                tenant: TenantId::new("t").unwrap(),
                store: StoreId::new("s").unwrap(),
                device: DeviceId::new("d").unwrap(),
                cert_der: der.clone(),
                tenant_ca_der: der.clone(),
                hub_ca_der: der,
                token_key_pem: "-----BEGIN PUBLIC KEY-----".into(),
                token_issuer: "https://hub".into(),
                token_audience: "storesync".into(),
                not_after_ms,
            })
        ),
        any::<u64>().prop_map(|seq| Message::BridgeAck(BridgeAck {
            device: DeviceId::new("b1").unwrap(),
            seq
        })),
    ]
}

fn limits() -> Limits {
    Limits {
        items_max: 20,
        ..Limits::default()
    }
}

fn check_json(value: &Value) -> Result<Transaction, storesync_protocol::validate::Rejection> {
    let limits = limits();
    let store = StoreId::new("s1").unwrap();
    transaction_from_json(
        value,
        &Context {
            now_ms: NOW,
            limits: &limits,
            store: Some(&store),
        },
    )
}

/// One corruption per field: (path, JSON pointer to replace, bad value).
fn corruptions() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("transactionId", "/transactionId", json!("")),
        ("transactionId", "/transactionId", json!(7)),
        ("storeId", "/storeId", json!("s2")),
        ("timestamp", "/timestamp", json!("2026-02-30T10:00:00Z")),
        ("timestamp", "/timestamp", json!("2099-01-01T00:00:00Z")),
        ("items", "/items", json!([])),
        ("items", "/items", json!("x")),
        ("items[0].itemId", "/items/0/itemId", json!("a b")),
        ("items[0].quantity", "/items/0/quantity", json!(0)),
        ("items[0].quantity", "/items/0/quantity", json!(100_000)),
        ("items[0].quantity", "/items/0/quantity", json!(1.5)),
        ("items[0].price", "/items/0/price", json!(-1)),
        ("items[0].price", "/items/0/price", json!(0.00001)),
        ("items[0].price", "/items/0/price", json!("1.0")),
        ("totalAmount", "/totalAmount", json!(1e12)),
        ("totalAmount", "/totalAmount", json!(null)),
        ("paymentMethod", "/paymentMethod", json!("")),
        ("kind", "/kind", json!("layaway")),
        ("currency", "/currency", json!("euro")),
        ("registerId", "/registerId", json!("r 1")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips(message in message()) {
        let frame = message.encode().unwrap();
        let (decoded, used) = decode_frame(&frame, usize::MAX).unwrap().unwrap();
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!(decoded, Decoded::Message(message));
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_frame(&bytes, 4096);
        let mut decoder = FrameDecoder::new(4096);
        decoder.push(&bytes);
        for _ in 0..4 {
            let _ = decoder.next_frame();
        }
        // Arbitrary payloads behind a valid header and checksum reach every message decoder.
        for kind in 0..=255u8 {
            let _ = Message::decode_payload(kind, &bytes);
        }
    }

    #[test]
    fn truncated_and_flipped_frames_are_errors_not_panics(message in message(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let frame = message.encode().unwrap();
        let at = cut.index(frame.len());
        prop_assert_eq!(decode_frame(&frame[..at], usize::MAX).ok().flatten(), None);
        let mut flipped = frame.clone();
        let i = flip.index(frame.len());
        flipped[i] ^= 1 << bit;
        // CRC-32 catches every single-bit error in the covered bytes and the magic is
        // compared; a flipped length bit that makes the frame look longer reads as
        // "incomplete", which a connection turns into a timeout. Never a message.
        let result = decode_frame(&flipped, usize::MAX);
        prop_assert!(!matches!(result, Ok(Some(_))), "flip at {} went unnoticed", i);
    }

    #[test]
    fn valid_transactions_are_accepted(tx in transaction()) {
        let json = tx.to_json();
        let parsed = check_json(&json);
        prop_assert!(parsed.is_ok(), "{json}: {:?}", parsed.err());
        prop_assert_eq!(parsed.unwrap(), tx);
    }

    #[test]
    fn each_corrupted_field_is_named(tx in transaction(), which in any::<prop::sample::Index>()) {
        let all = corruptions();
        let (field, pointer, bad) = &all[which.index(all.len())];
        let mut json = tx.to_json();
        match json.pointer_mut(pointer) {
            Some(slot) => *slot = bad.clone(),
            None => {
                // Optional field absent: add it.
                let key = pointer.trim_start_matches('/');
                json[key] = bad.clone();
            }
        }
        match check_json(&json) {
            Ok(_) => prop_assert!(false, "corrupting {} with {} was accepted", field, bad),
            Err(rejection) => prop_assert!(rejection.names(field), "{}: {}", field, rejection),
        }
    }

    #[test]
    fn sealing_an_encoded_body_is_sealing_the_body(bodies in proptest::collection::vec(body(), 1..6)) {
        let sealer = || Sealer::new(
            TenantId::new("t").unwrap(),
            StoreId::new("s1").unwrap(),
            DeviceId::new("d").unwrap(),
            Epoch(7),
            [Hash::ZERO; 3],
        );
        let (mut plain, mut encoded) = (sealer(), sealer());
        for body in bodies {
            let expected = plain.seal(body.clone());
            let (event, bytes) = encoded.seal_encoded(EncodedBody::new(body.clone()));
            prop_assert_eq!(&event, &expected);
            prop_assert!(event.content_ok());
            prop_assert_eq!(postcard::from_bytes::<EventBody>(&bytes).unwrap(), body);
        }
        prop_assert_eq!(plain.heads(), encoded.heads());
    }

    #[test]
    fn tampering_with_any_event_breaks_its_run(events in events(), which in any::<prop::sample::Index>(), how in 0u8..3) {
        prop_assume!(!events.is_empty());
        let stream: StreamId = events[0].key.stream.clone();
        let start = StreamHead::genesis(Hash::ZERO);
        // Only one class per run: keep the events of the first event's class.
        let run: Vec<Event> = events.iter().filter(|e| e.key.stream == stream).cloned().collect();
        prop_assert!(storesync_protocol::verify_run(&stream, start, &run).is_ok());
        let mut bad = run.clone();
        let i = which.index(bad.len());
        match how {
            0 => bad[i].content_hash.0[3] ^= 1,
            1 => bad[i].prev.0[0] ^= 1,
            _ => bad[i].key.seq = SeqNo(bad[i].key.seq.0 + 1),
        }
        prop_assert!(storesync_protocol::verify_run(&stream, start, &bad).is_err());
    }
}

/// The encoding of a fixed message. A change here is a wire change: bump the protocol
/// version or make the change compatible, then update the bytes.
#[test]
fn golden_bytes() {
    let heartbeat = Message::Heartbeat(Heartbeat {
        now_ms: 1_795_336_200_000,
        backlog: 3,
    })
    .encode()
    .unwrap();
    assert_eq!(hex(&heartbeat), GOLDEN_HEARTBEAT);

    let limits = Limits::default();
    let tx = transaction_from_json(
        &json!({"transactionId": "t-1", "storeId": "s1", "timestamp": "2026-11-22T09:00:00+01:00",
            "items": [{"itemId": "a", "quantity": 2, "price": 1.25}, {"itemId": "b", "quantity": 1, "price": 0.5}, {"itemId": "c", "quantity": 3, "price": 2}],
            "totalAmount": 9.0, "paymentMethod": "card", "registerId": "r1"}),
        &Context { now_ms: NOW, limits: &limits, store: None },
    )
    .unwrap();
    let mut sealer = Sealer::new(
        TenantId::new("acme").unwrap(),
        StoreId::new("s1").unwrap(),
        DeviceId::new("pc1").unwrap(),
        Epoch(42),
        [Hash::ZERO; 3],
    );
    let event = sealer.seal(EventBody::Transaction(tx.clone()));
    let batch = Message::EventBatch(EventBatch {
        batch_id: 1,
        events: vec![event],
    })
    .encode()
    .unwrap();
    assert_eq!(hex(&batch), GOLDEN_BATCH);

    // Sizes of a typical 3-item transaction, for the record.
    let postcard = postcard::to_allocvec(&tx).unwrap().len();
    let json = serde_json::to_vec(&tx.to_json()).unwrap().len();
    println!(
        "3-item transaction: postcard {postcard} B, JSON {json} B, sealed event in a batch frame {} B",
        batch.len()
    );
}

/// Alert kinds travel (inside alert events) as their position: new kinds are appended, so
/// no existing kind's bytes change. `chain_anomaly` was last before `unknown_sku`.
#[test]
fn alert_kinds_encode_by_position() {
    use storesync_protocol::domain::AlertKind;
    for (i, kind) in AlertKind::ALL.iter().enumerate() {
        assert_eq!(
            postcard::to_allocvec(kind).unwrap(),
            vec![i as u8],
            "{kind:?}"
        );
    }
    assert_eq!(AlertKind::ALL[11], AlertKind::ChainAnomaly);
    assert_eq!(AlertKind::ALL[12], AlertKind::UnknownSku);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const GOLDEN_HEARTBEAT: &str = "535901800700000080fd82a6c068032f86a0bc";
const GOLDEN_BATCH: &str = "535901038400000001010461636d65027331037063312a000100000000000000000000000000000000000000000000000000000000000000001d413677b808249a7eac15e688b99132ae0b2cea26f6693796f2ed789e875402010003742d3102733180a0a7a4c0687803016104a8c301016202904e016306c0b802a0fe0a04636172640001027231000000004292dca6";

/// Movements of two SKUs over a few milliseconds, so instants collide: counts and deltas at
/// one instant, counts with one source id.
fn stock_movements() -> impl Strategy<Value = Vec<storesync_protocol::inventory::Movement>> {
    use storesync_protocol::inventory::{Movement, StockChange};
    prop::collection::vec(
        (0..2usize, 0..4i64, 0..3usize, prop::bool::ANY, -5..20i64),
        0..24,
    )
    .prop_map(|moves| {
        moves
            .into_iter()
            .map(|(sku, at_ms, source, is_count, q)| Movement {
                sku: Sku::new(["sku-a", "sku-b"][sku]).unwrap(),
                at_ms,
                source_id: ["s0", "s1", "s2"][source].to_owned(),
                change: if is_count {
                    StockChange::Count(q)
                } else {
                    StockChange::Delta(q)
                },
            })
            .collect()
    })
}

proptest! {
    /// The edge's incremental on-hand, refolding a SKU whenever it asks to, always equals the
    /// fold of every movement so far, whatever their arrival order.
    #[test]
    fn incremental_on_hand_equals_the_fold(moves in stock_movements()) {
        use std::collections::BTreeMap;
        use storesync_protocol::inventory::{OnHand, fold};
        let mut cells: BTreeMap<Sku, OnHand> = BTreeMap::new();
        for (n, m) in moves.iter().enumerate() {
            let cell = cells.entry(m.sku.clone()).or_default();
            if !cell.apply(m.change, m.at_ms) {
                let seen: Vec<_> = moves[..=n].iter().filter(|x| x.sku == m.sku).cloned().collect();
                let last_count = seen
                    .iter()
                    .filter(|x| matches!(x.change, storesync_protocol::inventory::StockChange::Count(_)))
                    .map(|x| x.at_ms)
                    .max();
                let last_move = seen.iter().map(|x| x.at_ms).max();
                *cell = OnHand {
                    quantity: fold(seen)[&m.sku],
                    last_count_ms: last_count,
                    last_move_ms: last_move,
                };
            }
        }
        let expected = fold(moves.clone());
        let got: BTreeMap<Sku, i64> = cells.into_iter().map(|(k, c)| (k, c.quantity)).collect();
        prop_assert_eq!(got, expected);
    }
}
