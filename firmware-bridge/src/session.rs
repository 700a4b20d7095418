//! The bridge's sans-IO state machine.
//!
//! [`BridgeSession`] holds the scans the agent has not acknowledged and decides what goes
//! on the wire and when. It does no IO and reads no clock: every input takes `now_ms` (a
//! monotonic millisecond clock of the shell's choice), and [`BridgeSession::poll_timeout`]
//! says when it next needs [`BridgeSession::handle_timeout`].

use alloc::vec::Vec;

use heapless::Deque;
use storesync_protocol::ScanEvent;
use storesync_protocol::ids::DeviceId;
use storesync_protocol::wire::{
    BridgeScan, Decoded, ErrorCode, FrameDecoder, HEADER_LEN, Heartbeat, Message, TRAILER_LEN,
    WireError,
};

use crate::ring::{FRAME_LEN_MAX, PENDING_LEN_MAX, Ring, Slot};

/// Largest frame accepted from the agent (its acks are a few dozen bytes).
pub const RECEIVE_FRAME_LEN_MAX: usize = 1024;

/// Events kept until the owner polls them; beyond it they are counted in
/// [`Stats::events_lost`] (the counters themselves are always exact).
pub const EVENTS_LEN_MAX: usize = 16;

/// What the session does when a scan arrives and the ring already holds
/// [`Config::pending_len_max`] unacknowledged scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Refuse the new scan: [`BridgeSession::record`] answers [`RecordError::Full`], counts
    /// it in [`Stats::refused_full`] and raises [`Event::Full`] once per full spell. The
    /// owner keeps the scan (the embassy driver simply stops taking scans from its queue, so
    /// the scanner sees a full queue and can tell the operator). Nothing recorded is lost.
    RefuseNewest,
    /// Evict the oldest unacknowledged scan to make room, counting it in
    /// [`Stats::dropped_oldest`] and raising [`Event::DroppedOldest`] with its sequence
    /// number. For peripherals whose newest reading matters more than completeness.
    DropOldest,
}

/// How a bridge behaves. [`Config::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// This bridge's device id, sent in every frame.
    pub device: DeviceId,
    /// Unacknowledged scans kept, at most [`PENDING_LEN_MAX`].
    pub pending_len_max: usize,
    /// What happens when they are all taken.
    pub overflow: OverflowPolicy,
    /// Scans sent on a connection and not yet acknowledged, at most.
    pub in_flight_len_max: usize,
    /// How long the oldest in-flight scan may wait for its acknowledgement before the
    /// connection is considered dead (closed, reconnected, everything unacknowledged resent).
    pub ack_timeout_ms: u64,
    /// A heartbeat is sent when nothing else was sent for this long.
    pub heartbeat_interval_ms: u64,
    /// First reconnect delay; it doubles with every failed attempt...
    pub reconnect_delay_ms_min: u64,
    /// ...up to this.
    pub reconnect_delay_ms_max: u64,
    /// How long the shell lets a connection attempt take.
    pub connect_timeout_ms: u64,
    /// Seed of the reconnect jitter, so two bridges that lost the agent together do not
    /// come back in lockstep. Give each device its own (from its id or a hardware RNG).
    pub jitter_seed: u64,
}

impl Config {
    /// The defaults for `device`.
    pub fn new(device: DeviceId) -> Config {
        Config {
            device,
            pending_len_max: PENDING_LEN_MAX,
            overflow: OverflowPolicy::RefuseNewest,
            in_flight_len_max: 16,
            ack_timeout_ms: 5_000,
            heartbeat_interval_ms: 10_000,
            reconnect_delay_ms_min: 250,
            reconnect_delay_ms_max: 30_000,
            connect_timeout_ms: 5_000,
            jitter_seed: 0x5eed,
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The connection attempt failed or timed out (no route, refused, no address yet).
    ConnectFailed,
    /// The agent closed the connection.
    PeerClosed,
    /// A read or write failed (reset, socket timeout).
    LinkError,
    /// A write could not make progress within the acknowledgement timeout.
    WriteStalled,
    /// No acknowledgement within [`Config::ack_timeout_ms`] of sending.
    AckTimeout,
    /// The agent's bytes are not a frame stream.
    Wire(WireFault),
    /// The agent answered an error and closes.
    AgentError(ErrorCode),
    /// The agent sent a required message kind a bridge does not expect.
    UnexpectedMessage(u8),
}

/// What was wrong with the agent's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFault {
    /// Bad magic or frame version.
    NotAFrame,
    /// A frame over [`RECEIVE_FRAME_LEN_MAX`].
    TooLarge,
    /// Checksum mismatch.
    Checksum,
    /// Anything else.
    Other,
}

impl From<&WireError> for WireFault {
    fn from(error: &WireError) -> WireFault {
        match error {
            WireError::Magic(_) | WireError::FrameVersion(_) => WireFault::NotAFrame,
            WireError::TooLarge { .. } => WireFault::TooLarge,
            WireError::Checksum => WireFault::Checksum,
            _ => WireFault::Other,
        }
    }
}

/// Something the owner may want to log, show or count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A connection attempt starts.
    Connecting {
        /// Failed attempts since the last acknowledgement.
        failures: u32,
    },
    /// Connected; everything unacknowledged is being (re)sent.
    Connected,
    /// The connection ended; the next attempt is in `retry_in_ms`.
    Disconnected {
        /// Why.
        reason: CloseReason,
        /// Delay before the next attempt.
        retry_in_ms: u64,
    },
    /// The agent made everything through `through` durable.
    Acked {
        /// Highest acknowledged sequence number.
        through: u64,
        /// Scans still unacknowledged.
        pending_len: usize,
    },
    /// The ring is full under [`OverflowPolicy::RefuseNewest`]: new scans are refused
    /// until the agent acknowledges some.
    Full {
        /// Scans held.
        pending_len: usize,
    },
    /// Under [`OverflowPolicy::DropOldest`], the scan `seq` was evicted unacknowledged.
    DroppedOldest {
        /// Its sequence number.
        seq: u64,
    },
    /// A scan could not be encoded within [`FRAME_LEN_MAX`] and was refused.
    TooLarge {
        /// Its encoded length.
        len: usize,
    },
}

/// Counters since the session was created. All exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Scans recorded (given a sequence number).
    pub recorded: u64,
    /// Scans acknowledged by the agent.
    pub acked: u64,
    /// Highest acknowledged sequence number (0: none).
    pub acked_through: u64,
    /// Scans held, unacknowledged.
    pub pending_len: usize,
    /// Scan frames written, first transmissions and retransmissions.
    pub frames_sent: u64,
    /// Of those, retransmissions.
    pub frames_resent: u64,
    /// Heartbeats written.
    pub heartbeats_sent: u64,
    /// Scans refused because the ring was full ([`OverflowPolicy::RefuseNewest`]).
    pub refused_full: u64,
    /// Scans refused because they do not fit a frame slot.
    pub refused_too_large: u64,
    /// Unacknowledged scans evicted ([`OverflowPolicy::DropOldest`]).
    pub dropped_oldest: u64,
    /// Connections established.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Established connections that ended.
    pub disconnects: u64,
    /// Acknowledgements for another device, or beyond what was sent.
    pub acks_ignored: u64,
    /// Frames from the agent whose payload did not decode (skipped).
    pub frames_undecodable: u64,
    /// Events not queued because [`EVENTS_LEN_MAX`] were waiting.
    pub events_lost: u64,
}

/// A command for the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open a connection to the agent, then call [`BridgeSession::handle_connected`] or
    /// [`BridgeSession::handle_connect_failed`].
    Connect,
    /// Close the connection (the session has already counted it as ended).
    Close(CloseReason),
}

/// Why a scan was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The ring is full and the policy is [`OverflowPolicy::RefuseNewest`].
    Full,
    /// The scan's frame would be `len` bytes, over [`FRAME_LEN_MAX`].
    TooLarge {
        /// Encoded length.
        len: usize,
    },
}

#[derive(Debug)]
enum Link {
    /// Not connected; connect at `connect_at_ms`.
    Down { connect_at_ms: u64 },
    /// The shell is connecting.
    Connecting,
    /// Connected.
    Up {
        /// Next sequence number to write on this connection.
        send_next: u64,
        /// When anything was last written.
        last_tx_ms: u64,
        /// When the oldest in-flight scan times out, if any is in flight.
        ack_deadline_ms: Option<u64>,
        /// A heartbeat is due.
        heartbeat_due: bool,
        /// An acknowledgement arrived on this connection.
        progressed: bool,
    },
}

/// The bridge's protocol state: ring of unacknowledged scans, connection state, timers.
///
/// Call order, for the shell:
///
/// 1. [`record`](Self::record) scans whenever they arrive (check
///    [`has_room`](Self::has_room) first to keep them when the ring is full).
/// 2. Drain outputs after every input: [`poll_action`](Self::poll_action) (connect or
///    close), [`poll_transmit`](Self::poll_transmit) (write each frame entirely before
///    polling again), [`poll_event`](Self::poll_event).
/// 3. Report the connection: [`handle_connected`](Self::handle_connected),
///    [`handle_connect_failed`](Self::handle_connect_failed),
///    [`handle_received`](Self::handle_received) with every byte read,
///    [`handle_link_lost`](Self::handle_link_lost) on EOF or a socket error.
/// 4. Sleep until [`poll_timeout`](Self::poll_timeout), then
///    [`handle_timeout`](Self::handle_timeout).
///
/// Sequence numbers start at 1 with every session (every boot). The agent acknowledges
/// the highest sequence number it made durable on a connection, and deduplicates on the
/// scan's own `scanId`, so a resend after a lost acknowledgement is harmless.
#[derive(Debug)]
pub struct BridgeSession {
    config: Config,
    ring: Ring,
    seq_next: u64,
    sent_max: u64,
    link: Link,
    failures: u32,
    decoder: FrameDecoder,
    heartbeat: Vec<u8>,
    events: Deque<Event, EVENTS_LEN_MAX>,
    action: Option<Action>,
    stats: Stats,
    full_reported: bool,
    rng: u64,
}

impl BridgeSession {
    /// A session that connects at its first [`handle_timeout`](Self::handle_timeout).
    pub fn new(mut config: Config) -> BridgeSession {
        config.pending_len_max = config.pending_len_max.clamp(1, PENDING_LEN_MAX);
        config.in_flight_len_max = config.in_flight_len_max.max(1);
        config.reconnect_delay_ms_min = config.reconnect_delay_ms_min.max(1);
        config.reconnect_delay_ms_max = config
            .reconnect_delay_ms_max
            .max(config.reconnect_delay_ms_min);
        let rng = config.jitter_seed | 1;
        BridgeSession {
            config,
            ring: Ring::new(),
            seq_next: 1,
            sent_max: 0,
            link: Link::Down { connect_at_ms: 0 },
            failures: 0,
            decoder: FrameDecoder::new(RECEIVE_FRAME_LEN_MAX),
            heartbeat: Vec::new(),
            events: Deque::new(),
            action: None,
            stats: Stats::default(),
            full_reported: false,
            rng,
        }
    }

    /// The configuration in force (limits clamped).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        Stats {
            pending_len: self.ring.len(),
            ..self.stats
        }
    }

    /// Whether [`record`](Self::record) would take a scan without refusing or evicting.
    pub fn has_room(&self) -> bool {
        self.ring.len() < self.config.pending_len_max
    }

    /// Whether every recorded scan is acknowledged.
    pub fn is_drained(&self) -> bool {
        self.ring.is_empty()
    }

    /// Whether a connection is established.
    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// Gives `scan` the next sequence number and keeps its frame until acknowledged.
    pub fn record(&mut self, scan: ScanEvent) -> Result<u64, RecordError> {
        let seq = self.seq_next;
        let message = Message::BridgeScan(BridgeScan {
            device: self.config.device.clone(),
            seq,
            scan,
        });
        let mut encoded = Vec::new();
        let payload_len_max = FRAME_LEN_MAX - HEADER_LEN - TRAILER_LEN;
        let mut frame = heapless::Vec::new();
        let fits = message.encode_into(&mut encoded, payload_len_max).is_ok()
            && frame.extend_from_slice(&encoded).is_ok();
        if !fits {
            let len = encoded.len().max(FRAME_LEN_MAX + 1);
            self.stats.refused_too_large += 1;
            self.emit(Event::TooLarge { len });
            return Err(RecordError::TooLarge { len });
        }
        if !self.has_room() {
            match self.config.overflow {
                OverflowPolicy::RefuseNewest => {
                    self.stats.refused_full += 1;
                    if !self.full_reported {
                        self.full_reported = true;
                        self.emit(Event::Full {
                            pending_len: self.ring.len(),
                        });
                    }
                    return Err(RecordError::Full);
                }
                OverflowPolicy::DropOldest => {
                    if let Some(evicted) = self.ring.pop_oldest() {
                        self.stats.dropped_oldest += 1;
                        self.emit(Event::DroppedOldest { seq: evicted.seq });
                    }
                }
            }
        }
        self.ring.push(Slot { seq, frame });
        self.seq_next += 1;
        self.stats.recorded += 1;
        Ok(seq)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed.
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.link {
            Link::Down { connect_at_ms } => Some(*connect_at_ms),
            Link::Connecting => None,
            Link::Up {
                last_tx_ms,
                ack_deadline_ms,
                heartbeat_due,
                ..
            } => {
                let heartbeat = if *heartbeat_due {
                    None
                } else {
                    Some(last_tx_ms.saturating_add(self.config.heartbeat_interval_ms))
                };
                match (heartbeat, ack_deadline_ms) {
                    (Some(h), Some(a)) => Some(h.min(*a)),
                    (h, a) => h.or(*a),
                }
            }
        }
    }

    /// Timers: connect when the backoff has passed, time out a missing acknowledgement,
    /// schedule a heartbeat.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        match &mut self.link {
            Link::Down { connect_at_ms } => {
                if now_ms >= *connect_at_ms {
                    self.link = Link::Connecting;
                    self.action = Some(Action::Connect);
                    let failures = self.failures;
                    self.emit(Event::Connecting { failures });
                }
            }
            Link::Connecting => {}
            Link::Up {
                last_tx_ms,
                ack_deadline_ms,
                heartbeat_due,
                ..
            } => {
                if ack_deadline_ms.is_some_and(|deadline| now_ms >= deadline) {
                    self.close(now_ms, CloseReason::AckTimeout);
                    return;
                }
                if now_ms >= last_tx_ms.saturating_add(self.config.heartbeat_interval_ms) {
                    *heartbeat_due = true;
                }
            }
        }
    }

    /// The connection is established: everything unacknowledged is sent again, oldest
    /// first.
    pub fn handle_connected(&mut self, now_ms: u64) {
        if !matches!(self.link, Link::Connecting) {
            return;
        }
        self.decoder = FrameDecoder::new(RECEIVE_FRAME_LEN_MAX);
        self.link = Link::Up {
            send_next: self.ring.oldest_seq().unwrap_or(self.seq_next),
            last_tx_ms: now_ms,
            ack_deadline_ms: None,
            heartbeat_due: false,
            progressed: false,
        };
        self.stats.connects += 1;
        self.emit(Event::Connected);
    }

    /// The connection attempt failed.
    pub fn handle_connect_failed(&mut self, now_ms: u64) {
        if matches!(self.link, Link::Connecting) {
            self.stats.connect_failures += 1;
            self.go_down(now_ms, CloseReason::ConnectFailed);
        }
    }

    /// The connection ended under the shell (EOF, reset, a failed or stalled write).
    pub fn handle_link_lost(&mut self, now_ms: u64, reason: CloseReason) {
        if matches!(self.link, Link::Up { .. }) {
            self.go_down(now_ms, reason);
        }
    }

    /// Bytes read from the agent.
    pub fn handle_received(&mut self, now_ms: u64, bytes: &[u8]) {
        if !matches!(self.link, Link::Up { .. }) {
            return;
        }
        self.decoder.push(bytes);
        loop {
            match self.decoder.next_frame() {
                Ok(None) => return,
                Ok(Some(Decoded::Message(Message::BridgeAck(ack)))) => {
                    if ack.device == self.config.device {
                        self.acknowledge(now_ms, ack.seq);
                    } else {
                        self.stats.acks_ignored += 1;
                    }
                }
                Ok(Some(Decoded::Message(Message::Heartbeat(_)))) => {}
                Ok(Some(Decoded::Message(Message::Error(error)))) => {
                    self.close(now_ms, CloseReason::AgentError(error.code));
                    return;
                }
                Ok(Some(Decoded::Message(other))) => {
                    self.close(now_ms, CloseReason::UnexpectedMessage(other.kind()));
                    return;
                }
                Ok(Some(unknown @ Decoded::Unknown { kind })) => {
                    if !unknown.is_optional_unknown() {
                        self.close(now_ms, CloseReason::UnexpectedMessage(kind));
                        return;
                    }
                }
                Err(error) if !error.is_fatal_to_stream() => {
                    self.stats.frames_undecodable += 1;
                }
                Err(error) => {
                    self.close(now_ms, CloseReason::Wire(WireFault::from(&error)));
                    return;
                }
            }
        }
    }

    /// The next command for the shell.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.action.take()
    }

    /// The next frame to write. The shell writes it entirely before polling again, or
    /// reports [`handle_link_lost`](Self::handle_link_lost).
    #[must_use]
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<&[u8]> {
        let Link::Up {
            send_next,
            last_tx_ms,
            ack_deadline_ms,
            heartbeat_due,
            ..
        } = &mut self.link
        else {
            return None;
        };
        if *heartbeat_due {
            *heartbeat_due = false;
            *last_tx_ms = now_ms;
            self.heartbeat.clear();
            let heartbeat = Message::Heartbeat(Heartbeat {
                // A bridge has no wall clock: this is its uptime.
                now_ms: i64::try_from(now_ms).unwrap_or(i64::MAX),
                backlog: self.ring.len() as u64,
            });
            if heartbeat
                .encode_into(&mut self.heartbeat, RECEIVE_FRAME_LEN_MAX)
                .is_ok()
            {
                self.stats.heartbeats_sent += 1;
                return Some(&self.heartbeat);
            }
        }
        let oldest = self.ring.oldest_seq()?;
        // Evicted scans (DropOldest) are skipped.
        *send_next = (*send_next).max(oldest);
        let in_flight = *send_next - oldest;
        if in_flight >= self.config.in_flight_len_max as u64 {
            return None;
        }
        let seq = *send_next;
        let frame = self.ring.get(seq)?;
        *send_next += 1;
        *last_tx_ms = now_ms;
        if ack_deadline_ms.is_none() {
            *ack_deadline_ms = Some(now_ms.saturating_add(self.config.ack_timeout_ms));
        }
        self.stats.frames_sent += 1;
        if seq <= self.sent_max {
            self.stats.frames_resent += 1;
        } else {
            self.sent_max = seq;
        }
        Some(frame)
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn acknowledge(&mut self, now_ms: u64, seq: u64) {
        let Link::Up {
            send_next,
            ack_deadline_ms,
            progressed,
            ..
        } = &mut self.link
        else {
            return;
        };
        // The agent acknowledges only what it received on this connection.
        if seq >= *send_next {
            self.stats.acks_ignored += 1;
            return;
        }
        if seq <= self.stats.acked_through {
            return;
        }
        let dropped = self.ring.drop_through(seq);
        self.stats.acked += dropped as u64;
        self.stats.acked_through = seq;
        *progressed = true;
        self.failures = 0;
        self.full_reported = false;
        let in_flight = self
            .ring
            .oldest_seq()
            .is_some_and(|oldest| oldest < *send_next);
        *ack_deadline_ms = in_flight.then(|| now_ms.saturating_add(self.config.ack_timeout_ms));
        let pending_len = self.ring.len();
        self.emit(Event::Acked {
            through: seq,
            pending_len,
        });
    }

    fn close(&mut self, now_ms: u64, reason: CloseReason) {
        self.action = Some(Action::Close(reason));
        self.go_down(now_ms, reason);
    }

    fn go_down(&mut self, now_ms: u64, reason: CloseReason) {
        let progressed = match self.link {
            Link::Up { progressed, .. } => {
                self.stats.disconnects += 1;
                progressed
            }
            _ => false,
        };
        if progressed {
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
        }
        let retry_in_ms = self.backoff_ms();
        self.link = Link::Down {
            connect_at_ms: now_ms.saturating_add(retry_in_ms),
        };
        self.emit(Event::Disconnected {
            reason,
            retry_in_ms,
        });
    }

    /// Exponential backoff with "equal jitter": half the delay fixed, half random.
    fn backoff_ms(&mut self) -> u64 {
        let doublings = self.failures.saturating_sub(1).min(20);
        let delay = self
            .config
            .reconnect_delay_ms_min
            .saturating_mul(1 << doublings)
            .min(self.config.reconnect_delay_ms_max);
        let half = delay / 2;
        delay - half + self.next_random() % (half + 1)
    }

    /// xorshift64*: enough to spread reconnects, not for anything secret.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn emit(&mut self, event: Event) {
        if self.events.push_back(event).is_err() {
            self.stats.events_lost += 1;
        }
    }
}
