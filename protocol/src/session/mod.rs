//! The sans-IO sync sessions.
//!
//! [`EdgeSession`] (on the store PC) and [`HubSession`] (one per connection, on the hub)
//! speak the [`crate::wire`] messages. They take bytes or messages, storage completions and
//! clock ticks in, and give messages and [actions](EdgeAction) out. They never touch a socket,
//! a database or a clock: `now` is an argument of every input, and storage work is an
//! action with an id that the shell completes later.
//!
//! # Delivery
//!
//! Each `(epoch, class)` stream is sent in order in batches of at most
//! [`SessionConfig::batch_len_max`] events; at most [`SessionConfig::window_batches_max`]
//! batches are unacknowledged at once (backpressure). The hub acknowledges a batch only
//! after its owner reports the commit durable; the acknowledgement carries the committed
//! head of the stream. A batch that does not continue the hub's verified head (it was
//! reordered or an earlier one was lost) is answered at once with the committed head, and
//! the edge goes back to it (go-back-N); so does an edge whose oldest batch waits longer
//! than [`SessionConfig::ack_timeout_ms`]. Redelivered events are harmless: the hub's store
//! inserts by event key and reports "same key, different content" as a conflict.
//!
//! The sessions do not trust the transport to be reliable: they are tested over a network
//! that loses, duplicates, reorders and delays messages (`tests/sim.rs`).
//!
//! # Priority
//!
//! The edge fills its window from the highest-priority class with pending events
//! ([`crate::EventClass::Sales`] first), older epochs before newer ones within a class.
//! Each stream stays in order; only the interleaving of streams changes.

mod edge;
mod hub;

pub use edge::{EdgeAction, EdgeSession, EdgeSnapshot, EdgeStreamState};
pub use hub::{CommitOutcome, HubAction, HubSession, PeerIdentity};

use alloc::string::String;
use alloc::vec::Vec;

use crate::event::{ChainError, EventKey, SeqNo, StreamId};
use crate::time::UnixMillis;
use crate::wire::{ErrorCode, FRAME_LEN_MAX_DEFAULT};

/// Tunables shared by both sessions. Every limit is explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Events per batch.
    pub batch_len_max: usize,
    /// Unacknowledged batches in flight per session.
    pub window_batches_max: usize,
    /// A heartbeat is sent when nothing was sent for this long.
    pub heartbeat_interval_ms: i64,
    /// The session closes when nothing was received for this long.
    pub idle_timeout_ms: i64,
    /// The edge goes back to the last acknowledgement when its oldest batch waited this long.
    pub ack_timeout_ms: i64,
    /// The edge repeats its hello when no welcome came for this long.
    pub handshake_timeout_ms: i64,
    /// Largest frame payload accepted or sent.
    pub frame_len_max: usize,
    /// Messages queued for the peer before the session stops producing more.
    pub outgoing_len_max: usize,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            batch_len_max: 1024,
            window_batches_max: 8,
            heartbeat_interval_ms: 5_000,
            idle_timeout_ms: 30_000,
            ack_timeout_ms: 30_000,
            handshake_timeout_ms: 5_000,
            frame_len_max: FRAME_LEN_MAX_DEFAULT,
            outgoing_len_max: 64,
        }
    }
}

/// Why a session ended; decides whether and how soon the edge reconnects.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// Nothing heard from the peer for `idle_timeout_ms`.
    Timeout,
    /// The owner closed it.
    Local,
    /// The peer sent an error.
    PeerError {
        /// Its code.
        code: ErrorCode,
        /// Its text.
        message: String,
    },
    /// The peer broke the protocol (bad frame, message out of place, unknown required kind).
    Protocol(String),
    /// The identity in the handshake is not the authenticated one.
    Identity(String),
    /// No common protocol version.
    Version,
    /// A stream failed verification.
    Integrity(String),
    /// The hub's store failed to commit.
    CommitFailed(String),
    /// The connection itself failed or was closed by the peer without an error message.
    Transport(String),
}

impl CloseReason {
    /// Whether reconnecting can help without an operator (identity and version problems
    /// need one; the shell should then back off to its maximum delay).
    pub fn is_transient(&self) -> bool {
        !matches!(self, CloseReason::Identity(_) | CloseReason::Version)
    }
}

/// Something an operator must hear about. Never a silent drop.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Alarm {
    /// A stream's chain or content hash did not verify; nothing of the batch was committed.
    ChainBroken {
        /// The stream.
        stream: StreamId,
        /// What failed.
        error: ChainError,
    },
    /// Events whose key was already committed with different content.
    Conflict {
        /// Their keys.
        keys: Vec<EventKey>,
    },
    /// The hub has committed less than the edge saw acknowledged (the hub's database was
    /// restored or failed over); the edge re-sends.
    HubBehind {
        /// The stream.
        stream: StreamId,
        /// What the edge saw acknowledged.
        acked: SeqNo,
        /// What the hub has.
        committed: SeqNo,
    },
    /// The hub has committed more of the edge's *current* epoch than the edge recorded:
    /// the data directory went back in time without a new epoch (a clone or restore that
    /// was not detected). Its new events will conflict.
    EdgeBehind {
        /// The stream.
        stream: StreamId,
        /// What the edge recorded.
        recorded: SeqNo,
        /// What the hub has.
        committed: SeqNo,
    },
    /// The edge no longer holds events the hub needs (pruned or lost); the stream is stuck.
    OutboxMissing {
        /// The stream.
        stream: StreamId,
        /// The first sequence number the hub needs.
        from: SeqNo,
    },
    /// The peer claimed an identity other than its certificate's.
    Identity(String),
}

/// The delay before reconnect attempt `attempt` (0-based): exponential from `base_ms`
/// capped at `max_ms`, with "full jitter" from `jitter` (a uniform random value in
/// `[0, 1)` that the shell draws), so a fleet that lost the hub together does not return
/// together.
pub fn reconnect_delay_ms(attempt: u32, base_ms: u64, max_ms: u64, jitter: f64) -> u64 {
    let exp = base_ms.saturating_mul(1u64 << attempt.min(32));
    let ceiling = exp.min(max_ms).max(1);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.5
    };
    // Half fixed, half random: never zero, never more than the ceiling.
    let half = ceiling / 2;
    half + (((ceiling - half) as f64) * jitter) as u64
}

/// What the next received frame means for a session.
pub(crate) enum Inbound {
    /// A message to handle.
    Message(crate::wire::Message),
    /// A broken stream or an unknown required kind: answer this error and close.
    Fatal(ErrorCode, CloseReason),
}

/// Takes the next frame that matters out of `decoder`, skipping optional kinds this build
/// does not know; `None` when more bytes are needed.
pub(crate) fn next_inbound(decoder: &mut crate::wire::FrameDecoder) -> Option<Inbound> {
    use crate::wire::Decoded;
    loop {
        return match decoder.next_frame() {
            Ok(None) => None,
            Ok(Some(Decoded::Message(message))) => Some(Inbound::Message(message)),
            Ok(Some(decoded @ Decoded::Unknown { kind })) => {
                if decoded.is_optional_unknown() {
                    continue;
                }
                Some(Inbound::Fatal(
                    ErrorCode::UnsupportedMessage,
                    CloseReason::Protocol(alloc::format!(
                        "unknown required message kind {kind:#04x}"
                    )),
                ))
            }
            Err(e) => Some(Inbound::Fatal(
                ErrorCode::Protocol,
                CloseReason::Protocol(alloc::format!("{e}")),
            )),
        };
    }
}

/// Encodes an outgoing message; a message that does not fit a frame is a reason to close.
pub(crate) fn frame(
    message: &crate::wire::Message,
    frame_len_max: usize,
) -> Result<alloc::vec::Vec<u8>, CloseReason> {
    let mut out = alloc::vec::Vec::new();
    message
        .encode_into(&mut out, frame_len_max)
        .map(|()| out)
        .map_err(|e| CloseReason::Protocol(alloc::format!("{e}")))
}

/// The earliest of optional deadlines.
pub(crate) fn earliest(a: Option<UnixMillis>, b: Option<UnixMillis>) -> Option<UnixMillis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of_kind(kind: u8) -> alloc::vec::Vec<u8> {
        let mut frame = crate::wire::Message::Heartbeat(crate::wire::Heartbeat {
            now_ms: 1,
            backlog: 0,
        })
        .encode()
        .unwrap();
        frame[3] = kind;
        let n = frame.len();
        let crc = crc32fast::hash(&frame[2..n - 4]);
        frame[n - 4..].copy_from_slice(&crc.to_le_bytes());
        frame
    }

    #[test]
    fn unknown_optional_kinds_are_skipped_and_unknown_required_kinds_close() {
        let peer = PeerIdentity {
            tenant: crate::ids::TenantId::new("t").unwrap(),
            store: crate::ids::StoreId::new("s").unwrap(),
            device: crate::ids::DeviceId::new("d").unwrap(),
        };
        let mut hub = HubSession::new(SessionConfig::default(), peer.clone(), 0);
        hub.handle_bytes(1, &frame_of_kind(0xfe));
        assert_eq!(hub.poll_action(), None, "an optional kind is skipped");
        hub.handle_bytes(2, &frame_of_kind(0x7e));
        assert!(matches!(
            hub.poll_action(),
            Some(HubAction::Closed(CloseReason::Protocol(_)))
        ));
        assert!(matches!(
            hub.poll_message(),
            Some(crate::wire::Message::Error(e)) if e.code == ErrorCode::UnsupportedMessage
        ));
        let mut hub = HubSession::new(SessionConfig::default(), peer, 0);
        hub.handle_bytes(1, b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(
            hub.poll_action(),
            Some(HubAction::Closed(CloseReason::Protocol(_)))
        ));
    }

    #[test]
    fn an_oversized_outgoing_message_closes_the_hub_session() {
        let peer = PeerIdentity {
            tenant: crate::ids::TenantId::new("t").unwrap(),
            store: crate::ids::StoreId::new("s").unwrap(),
            device: crate::ids::DeviceId::new("d").unwrap(),
        };
        let config = SessionConfig {
            frame_len_max: 256,
            ..SessionConfig::default()
        };
        let mut hub = HubSession::new(config, peer.clone(), 0);
        let hello = crate::wire::Hello {
            versions: crate::wire::VersionRange::CURRENT,
            tenant: peer.tenant,
            store: peer.store,
            device: peer.device,
            epoch: crate::event::Epoch(1),
            link: None,
            acked: alloc::vec::Vec::new(),
            now_ms: 0,
            backlog: 0,
        };
        hub.handle_message(1, crate::wire::Message::Hello(hello));
        let Some(HubAction::LoadHeads {
            request_id,
            streams,
        }) = hub.poll_action()
        else {
            panic!("expected LoadHeads");
        };
        hub.heads_loaded(
            2,
            request_id,
            streams.into_iter().map(|s| (s, None)).collect(),
        );
        while hub.poll_action().is_some() {}
        while hub.poll_transmit().is_some() {}
        assert!(hub.is_connected());
        let doc = crate::wire::DocSync {
            doc: crate::wire::DocId::Store,
            data: alloc::vec![7; 1024],
        };
        assert!(hub.send_doc(3, doc));
        assert_eq!(hub.poll_transmit(), None);
        assert!(
            matches!(
                hub.poll_action(),
                Some(HubAction::Closed(CloseReason::Protocol(_)))
            ),
            "a message that cannot be framed ends the session instead of vanishing"
        );
    }

    #[test]
    fn backoff() {
        assert_eq!(reconnect_delay_ms(0, 500, 60_000, 0.0), 250);
        assert_eq!(reconnect_delay_ms(0, 500, 60_000, 0.999), 499);
        assert_eq!(reconnect_delay_ms(3, 500, 60_000, 0.0), 2_000);
        assert_eq!(reconnect_delay_ms(40, 500, 60_000, 1.0), 60_000);
        assert_eq!(reconnect_delay_ms(40, 500, 60_000, f64::NAN), 45_000);
    }
}
