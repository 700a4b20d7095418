//! The sans-IO session without a network: scans, bytes and time in; frames, actions and
//! events out.

#![allow(clippy::unwrap_used)]

use storesync_bridge::{
    Action, BridgeSession, CloseReason, Config, Event, OverflowPolicy, RecordError, WireFault,
};
use storesync_protocol::validate::{Context, Limits, scan_from_json};
use storesync_protocol::wire::{
    BridgeAck, Decoded, ErrorCode, ErrorMsg, FRAME_LEN_MAX_DEFAULT, Message, decode_frame,
};
use storesync_protocol::{DeviceId, ScanEvent};

const NOW: i64 = 1_795_338_000_000;

fn scan(n: u64) -> ScanEvent {
    let json = serde_json::json!({
        "scanId": format!("scan-{n}"),
        "storeId": "s1",
        "gtin": "4006381333931",
        "purpose": "receiving",
        "quantity": n % 50 + 1,
        "timestamp": "2026-11-22T09:00:00Z",
    });
    let limits = Limits::default();
    let ctx = Context {
        now_ms: NOW,
        limits: &limits,
        store: None,
    };
    scan_from_json(&json, &ctx).unwrap()
}

fn device() -> DeviceId {
    DeviceId::new("scanner-1").unwrap()
}

fn config() -> Config {
    let mut config = Config::new(device());
    config.ack_timeout_ms = 1_000;
    config.heartbeat_interval_ms = 3_000;
    config.reconnect_delay_ms_min = 100;
    config.reconnect_delay_ms_max = 1_600;
    config
}

/// A connected session.
fn connected(config: Config) -> BridgeSession {
    let mut s = BridgeSession::new(config);
    s.handle_timeout(0);
    assert_eq!(s.poll_action(), Some(Action::Connect));
    s.handle_connected(0);
    s
}

/// Every frame the session wants to write now, decoded.
fn transmit(s: &mut BridgeSession, now: u64) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(frame) = s.poll_transmit(now) {
        let (decoded, used) = decode_frame(frame, FRAME_LEN_MAX_DEFAULT).unwrap().unwrap();
        assert_eq!(used, frame.len());
        let Decoded::Message(message) = decoded else {
            panic!("unknown kind")
        };
        out.push(message);
    }
    out
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::BridgeScan(s) => Some(s.seq),
            _ => None,
        })
        .collect()
}

fn ack(seq: u64) -> Vec<u8> {
    Message::BridgeAck(BridgeAck {
        device: device(),
        seq,
    })
    .encode()
    .unwrap()
}

fn events(s: &mut BridgeSession) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

#[test]
fn scans_go_out_in_order_and_leave_the_ring_when_acknowledged() {
    let mut s = connected(config());
    for n in 1..=3 {
        assert_eq!(s.record(scan(n)).unwrap(), n);
    }
    let sent = transmit(&mut s, 10);
    assert_eq!(seqs(&sent), [1, 2, 3]);
    let Message::BridgeScan(first) = &sent[0] else {
        unreachable!()
    };
    assert_eq!(first.device, device());
    assert_eq!(first.scan, scan(1));
    s.handle_received(20, &ack(2));
    assert_eq!(s.stats().pending_len, 1);
    s.handle_received(30, &ack(3));
    assert!(s.is_drained());
    assert_eq!(s.stats().acked, 3);
    assert!(events(&mut s).contains(&Event::Acked {
        through: 3,
        pending_len: 0
    }));
}

#[test]
fn a_reconnect_resends_everything_unacknowledged_byte_for_byte() {
    let mut s = connected(config());
    for n in 1..=4 {
        s.record(scan(n)).unwrap();
    }
    let first: Vec<Vec<u8>> =
        std::iter::from_fn(|| s.poll_transmit(0).map(<[u8]>::to_vec)).collect();
    s.handle_received(5, &ack(1));
    s.handle_link_lost(10, CloseReason::PeerClosed);
    assert!(
        s.poll_transmit(10).is_none(),
        "nothing is written while down"
    );
    let retry_at = s.poll_timeout().unwrap();
    s.handle_timeout(retry_at);
    assert_eq!(s.poll_action(), Some(Action::Connect));
    s.handle_connected(retry_at);
    let again: Vec<Vec<u8>> =
        std::iter::from_fn(|| s.poll_transmit(retry_at).map(<[u8]>::to_vec)).collect();
    assert_eq!(again, first[1..]);
    assert_eq!(s.stats().frames_resent, 3);
}

#[test]
fn a_missing_acknowledgement_closes_the_connection() {
    let mut s = connected(config());
    s.record(scan(1)).unwrap();
    assert_eq!(seqs(&transmit(&mut s, 100)), [1]);
    assert_eq!(s.poll_timeout(), Some(1_100));
    s.handle_timeout(1_099);
    assert!(s.is_connected());
    s.handle_timeout(1_100);
    assert_eq!(
        s.poll_action(),
        Some(Action::Close(CloseReason::AckTimeout))
    );
    assert!(!s.is_connected());
    assert!(!s.is_drained(), "the scan stays until acknowledged");
}

#[test]
fn backoff_doubles_per_failure_within_jitter_and_resets_after_an_ack() {
    let mut s = BridgeSession::new(config());
    let mut now = 0;
    let mut delays = Vec::new();
    for _ in 0..6 {
        s.handle_timeout(now);
        assert_eq!(s.poll_action(), Some(Action::Connect));
        s.handle_connect_failed(now);
        let at = s.poll_timeout().unwrap();
        delays.push(at - now);
        now = at;
    }
    // Equal jitter: each delay lies in [d/2, d] for d = 100, 200, ... capped at 1600.
    for (delay, nominal) in delays.iter().zip([100, 200, 400, 800, 1600, 1600]) {
        assert!(
            (nominal / 2..=nominal).contains(delay),
            "{delays:?}: {delay} not within {nominal}"
        );
    }
    assert_eq!(s.stats().connect_failures, 6);
    // A connection that got an acknowledgement resets the backoff.
    s.handle_timeout(now);
    let _ = s.poll_action();
    s.handle_connected(now);
    s.record(scan(1)).unwrap();
    let _ = transmit(&mut s, now);
    s.handle_received(now, &ack(1));
    s.handle_link_lost(now, CloseReason::LinkError);
    assert!(s.poll_timeout().unwrap() - now <= 100);
}

#[test]
fn a_full_ring_refuses_the_newest_and_says_so() {
    let mut c = config();
    c.pending_len_max = 3;
    let mut s = connected(c);
    for n in 1..=3 {
        s.record(scan(n)).unwrap();
    }
    assert!(!s.has_room());
    assert_eq!(s.record(scan(4)), Err(RecordError::Full));
    assert_eq!(s.record(scan(5)), Err(RecordError::Full));
    assert_eq!(s.stats().refused_full, 2);
    let full: Vec<Event> = events(&mut s)
        .into_iter()
        .filter(|e| matches!(e, Event::Full { .. }))
        .collect();
    assert_eq!(
        full,
        [Event::Full { pending_len: 3 }],
        "one event per full spell"
    );
    // Nothing recorded was lost; the next scan gets the next number once there is room.
    let _ = transmit(&mut s, 0);
    s.handle_received(1, &ack(1));
    assert_eq!(s.record(scan(4)), Ok(4));
}

#[test]
fn drop_oldest_evicts_with_a_counter_and_an_event() {
    let mut c = config();
    c.pending_len_max = 2;
    c.overflow = OverflowPolicy::DropOldest;
    let mut s = connected(c);
    for n in 1..=4 {
        s.record(scan(n)).unwrap();
    }
    assert_eq!(s.stats().dropped_oldest, 2);
    let dropped: Vec<Event> = events(&mut s)
        .into_iter()
        .filter(|e| matches!(e, Event::DroppedOldest { .. }))
        .collect();
    assert_eq!(
        dropped,
        [
            Event::DroppedOldest { seq: 1 },
            Event::DroppedOldest { seq: 2 }
        ]
    );
    assert_eq!(seqs(&transmit(&mut s, 0)), [3, 4]);
}

#[test]
fn the_in_flight_window_limits_unacknowledged_frames_on_a_connection() {
    let mut c = config();
    c.in_flight_len_max = 2;
    let mut s = connected(c);
    for n in 1..=5 {
        s.record(scan(n)).unwrap();
    }
    assert_eq!(seqs(&transmit(&mut s, 0)), [1, 2]);
    s.handle_received(1, &ack(1));
    assert_eq!(seqs(&transmit(&mut s, 1)), [3]);
}

#[test]
fn heartbeats_when_idle() {
    let mut s = connected(config());
    assert_eq!(s.poll_timeout(), Some(3_000));
    s.handle_timeout(3_000);
    let sent = transmit(&mut s, 3_000);
    assert!(matches!(sent.as_slice(), [Message::Heartbeat(h)] if h.backlog == 0));
    assert_eq!(s.poll_timeout(), Some(6_000));
    assert_eq!(s.stats().heartbeats_sent, 1);
}

/// Agent input the session must survive: each case is bytes and the action expected.
#[test]
fn agent_input() {
    fn check(bytes: Vec<u8>, expected: Option<Action>, acked_through: u64) {
        let mut s = connected(config());
        for n in 1..=2 {
            s.record(scan(n)).unwrap();
        }
        let _ = transmit(&mut s, 0);
        s.handle_received(1, &bytes);
        assert_eq!(s.poll_action(), expected, "{bytes:02x?}");
        assert_eq!(s.stats().acked_through, acked_through);
    }
    let mut corrupt = ack(1);
    let n = corrupt.len();
    corrupt[n - 6] ^= 0xff;
    let error = Message::Error(ErrorMsg {
        code: ErrorCode::Protocol,
        message: "frame checksum mismatch".into(),
    })
    .encode()
    .unwrap();
    let other_device = Message::BridgeAck(BridgeAck {
        device: DeviceId::new("someone-else").unwrap(),
        seq: 2,
    })
    .encode()
    .unwrap();
    check(ack(2), None, 2);
    check([ack(1), ack(2)].concat(), None, 2);
    check(ack(1)[..5].to_vec(), None, 0);
    check(ack(9), None, 0);
    check(other_device, None, 0);
    check(
        corrupt,
        Some(Action::Close(CloseReason::Wire(WireFault::Checksum))),
        0,
    );
    check(
        b"HTTP/1.1 400\r\n".to_vec(),
        Some(Action::Close(CloseReason::Wire(WireFault::NotAFrame))),
        0,
    );
    check(
        [ack(1), error].concat(),
        Some(Action::Close(CloseReason::AgentError(ErrorCode::Protocol))),
        1,
    );
}
