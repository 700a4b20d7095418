//! The edge side of a sync session.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::{Alarm, CloseReason, SessionConfig, earliest};
use crate::domain::Alert;
use crate::event::{Epoch, Event, EventBody, EventClass, Hash, SeqNo, StreamId};
use crate::ids::{DeviceId, StoreId, TenantId};
use crate::time::UnixMillis;
use crate::wire::{
    Ack, DocSync, EpochLink, ErrorCode, ErrorMsg, EventBatch, FrameDecoder, Heartbeat, Hello,
    Message, StreamPosition, VersionRange, Welcome,
};

/// The persisted position of one stream on the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeStreamState {
    /// Epoch.
    pub epoch: Epoch,
    /// Class.
    pub class: EventClass,
    /// Highest sequence number durably recorded in the outbox.
    pub recorded: SeqNo,
    /// Chain hash of that event (the fork hash for an empty stream).
    pub recorded_hash: Hash,
    /// Highest sequence number the hub acknowledged.
    pub acked: SeqNo,
}

/// Everything the edge session needs after a restart; the shell keeps it in its database
/// (the outbox itself stays there too and is read back through [`EdgeAction::Fetch`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeSnapshot {
    /// Tenant.
    pub tenant: TenantId,
    /// Store.
    pub store: StoreId,
    /// Device.
    pub device: DeviceId,
    /// Current epoch.
    pub epoch: Epoch,
    /// Where the current epoch forked from.
    pub link: Option<EpochLink>,
    /// Streams, older epochs first; the current epoch's three classes are added if absent.
    pub streams: Vec<EdgeStreamState>,
}

/// What the edge session asks of its shell.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EdgeAction {
    /// Read up to `limit` events of the stream from `from` (inclusive) out of the outbox
    /// and hand them to [`EdgeSession::fetched`].
    Fetch {
        /// Epoch.
        epoch: Epoch,
        /// Class.
        class: EventClass,
        /// First sequence number wanted.
        from: SeqNo,
        /// At most this many.
        limit: usize,
    },
    /// Persist: the hub has committed the stream through `through`. Pruning stays the
    /// shell's decision (acknowledged *and* past retention).
    Acked {
        /// Epoch.
        epoch: Epoch,
        /// Class.
        class: EventClass,
        /// Committed head.
        through: SeqNo,
    },
    /// The handshake completed.
    Connected {
        /// Negotiated protocol version.
        version: u16,
        /// The hub's clock minus ours, as seen at the welcome.
        skew_ms: i64,
    },
    /// A document sync message arrived.
    DocSync(DocSync),
    /// An alert arrived from the hub.
    Alert(Alert),
    /// Something an operator must hear about.
    Alarm(Alarm),
    /// The session ended; send what [`EdgeSession::poll_message`] still holds, close the
    /// connection and reconnect after [`super::reconnect_delay_ms`] if the reason is transient.
    Closed(CloseReason),
}

#[derive(Debug)]
struct Stream {
    epoch: Epoch,
    class: EventClass,
    /// Position of the epoch in the lineage: older epochs go first.
    rank: usize,
    recorded: SeqNo,
    recorded_hash: Hash,
    acked: SeqNo,
    /// Next sequence number to put in a batch.
    send_next: SeqNo,
    /// Contiguous events from `buffer_from`, kept until acknowledged.
    buffer: VecDeque<Event>,
    /// Sequence number of the buffer's first event (or of the next one to buffer).
    buffer_from: SeqNo,
    fetch_pending: bool,
    /// The outbox no longer holds what the hub needs.
    stalled: bool,
}

impl Stream {
    fn buffer_next(&self) -> SeqNo {
        SeqNo(self.buffer_from.0.saturating_add(self.buffer.len() as u64))
    }

    fn drop_acked(&mut self) {
        while self.buffer.front().is_some_and(|e| e.key.seq <= self.acked) {
            self.buffer.pop_front();
            self.buffer_from = self.buffer_from.next();
        }
        if self.buffer.is_empty() && self.buffer_from <= self.acked {
            self.buffer_from = self.acked.next();
        }
    }

    fn clear_buffer(&mut self, from: SeqNo) {
        self.buffer.clear();
        self.buffer_from = from;
    }
}

#[derive(Debug)]
struct InFlight {
    batch_id: u64,
    stream: usize,
    last: SeqNo,
    sent_at: UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Handshake {
        started: UnixMillis,
        hello_at: UnixMillis,
    },
    Established,
    Closed,
}

/// The edge's sync session: one per connection attempt; survives reconnects.
///
/// Call order: [`EdgeSession::new`] from the persisted [`EdgeSnapshot`];
/// [`EdgeSession::record`] for every event once it is durable (whether connected or not);
/// [`EdgeSession::connect`] when a connection is up; then feed [`handle_bytes`](Self::handle_bytes)
/// (or [`handle_message`](Self::handle_message)) and [`handle_timeout`](Self::handle_timeout)
/// at [`poll_timeout`](Self::poll_timeout), complete [`EdgeAction::Fetch`] with
/// [`fetched`](Self::fetched), and after every call drain [`poll_action`](Self::poll_action)
/// and [`poll_transmit`](Self::poll_transmit). After [`EdgeAction::Closed`], call `connect`
/// again on a new connection.
#[derive(Debug)]
pub struct EdgeSession {
    config: SessionConfig,
    tenant: TenantId,
    store: StoreId,
    device: DeviceId,
    epoch: Epoch,
    link: Option<EpochLink>,
    streams: Vec<Stream>,
    phase: Phase,
    in_flight: VecDeque<InFlight>,
    next_batch_id: u64,
    outgoing: VecDeque<Message>,
    actions: VecDeque<EdgeAction>,
    decoder: FrameDecoder,
    last_sent: UnixMillis,
    last_received: UnixMillis,
}

impl EdgeSession {
    /// A disconnected session resuming from `snapshot`.
    pub fn new(config: SessionConfig, snapshot: EdgeSnapshot) -> EdgeSession {
        let EdgeSnapshot {
            tenant,
            store,
            device,
            epoch,
            link,
            streams: states,
        } = snapshot;
        let mut ranks: Vec<Epoch> = Vec::new();
        let mut streams: Vec<Stream> = Vec::new();
        let mut add = |state: EdgeStreamState, streams: &mut Vec<Stream>| {
            if streams
                .iter()
                .any(|s| s.epoch == state.epoch && s.class == state.class)
            {
                return;
            }
            let rank = match ranks.iter().position(|e| *e == state.epoch) {
                Some(rank) => rank,
                None => {
                    ranks.push(state.epoch);
                    ranks.len() - 1
                }
            };
            let acked = state.acked.min(state.recorded);
            streams.push(Stream {
                epoch: state.epoch,
                class: state.class,
                rank,
                recorded: state.recorded,
                recorded_hash: state.recorded_hash,
                acked,
                send_next: acked.next(),
                buffer: VecDeque::new(),
                buffer_from: acked.next(),
                fetch_pending: false,
                stalled: false,
            });
        };
        let (current, older): (Vec<_>, Vec<_>) = states.into_iter().partition(|s| s.epoch == epoch);
        for state in older.into_iter().chain(current) {
            add(state, &mut streams);
        }
        for class in EventClass::ALL {
            add(
                EdgeStreamState {
                    epoch,
                    class,
                    recorded: SeqNo::ZERO,
                    recorded_hash: Hash::ZERO,
                    acked: SeqNo::ZERO,
                },
                &mut streams,
            );
        }
        // Priority order: class first, then older epochs.
        streams.sort_by_key(|s| (s.class, s.rank));
        let frame_len_max = config.frame_len_max;
        EdgeSession {
            config,
            tenant,
            store,
            device,
            epoch,
            link,
            streams,
            phase: Phase::Idle,
            in_flight: VecDeque::new(),
            next_batch_id: 1,
            outgoing: VecDeque::new(),
            actions: VecDeque::new(),
            decoder: FrameDecoder::new(frame_len_max),
            last_sent: 0,
            last_received: 0,
        }
    }

    /// The state to persist. The shell normally persists piecemeal, through
    /// [`EdgeAction::Acked`] and its own outbox, and this is the same information.
    pub fn snapshot(&self) -> EdgeSnapshot {
        let mut streams: Vec<&Stream> = self.streams.iter().collect();
        streams.sort_by_key(|s| (s.rank, s.class));
        EdgeSnapshot {
            tenant: self.tenant.clone(),
            store: self.store.clone(),
            device: self.device.clone(),
            epoch: self.epoch,
            link: self.link.clone(),
            streams: streams
                .into_iter()
                .map(|s| EdgeStreamState {
                    epoch: s.epoch,
                    class: s.class,
                    recorded: s.recorded,
                    recorded_hash: s.recorded_hash,
                    acked: s.acked,
                })
                .collect(),
        }
    }

    /// Whether the handshake has completed on the current connection.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Established
    }

    /// Events recorded and not yet acknowledged.
    pub fn backlog(&self) -> u64 {
        self.streams
            .iter()
            .map(|s| s.recorded.0.saturating_sub(s.acked.0))
            .sum()
    }

    /// The acknowledged head of a stream.
    pub fn acked(&self, epoch: Epoch, class: EventClass) -> Option<SeqNo> {
        self.streams
            .iter()
            .find(|s| s.epoch == epoch && s.class == class)
            .map(|s| s.acked)
    }

    fn find(&mut self, epoch: Epoch, class: EventClass) -> Option<&mut Stream> {
        self.streams
            .iter_mut()
            .find(|s| s.epoch == epoch && s.class == class)
    }

    fn stream_id(&self, stream: &Stream) -> StreamId {
        StreamId {
            tenant: self.tenant.clone(),
            store: self.store.clone(),
            device: self.device.clone(),
            epoch: stream.epoch,
            class: stream.class,
        }
    }

    fn buffer_len_max(&self) -> usize {
        self.config
            .batch_len_max
            .saturating_mul(self.config.window_batches_max)
            .saturating_mul(2)
            .max(1)
    }

    /// Tells the session that `event` is durable in the outbox.
    pub fn record(&mut self, now: UnixMillis, event: Event) {
        let buffer_len_max = self.buffer_len_max();
        let (epoch, class, seq) = (
            event.key.stream.epoch,
            event.key.stream.class,
            event.key.seq,
        );
        let Some(stream) = self.find(epoch, class) else {
            // An event of a stream the session does not know is a bug in the shell; it
            // stays in the outbox and is offered after the next restart.
            return;
        };
        if seq > stream.recorded {
            stream.recorded = seq;
            stream.recorded_hash = event.chain_hash();
        }
        if seq == stream.buffer_next()
            && stream.buffer.len() < buffer_len_max
            && !stream.fetch_pending
        {
            stream.buffer.push_back(event);
        }
        self.fill(now);
    }

    /// Tells the session the outbox of a stream now ends at `head` (for shells that keep
    /// the outbox in a database and do not hand every event to [`EdgeSession::record`]);
    /// the events are read back through [`EdgeAction::Fetch`].
    pub fn recorded_up_to(
        &mut self,
        now: UnixMillis,
        epoch: Epoch,
        class: EventClass,
        head: crate::event::StreamHead,
    ) {
        if let Some(stream) = self.find(epoch, class) {
            if head.seq > stream.recorded {
                stream.recorded = head.seq;
                stream.recorded_hash = head.hash;
            }
        }
        self.fill(now);
    }

    /// Completes an [`EdgeAction::Fetch`]: events of the stream in order from the
    /// requested sequence number (fewer than asked when the outbox holds fewer).
    pub fn fetched(
        &mut self,
        now: UnixMillis,
        epoch: Epoch,
        class: EventClass,
        events: Vec<Event>,
    ) {
        let buffer_len_max = self.buffer_len_max();
        let Some(index) = self
            .streams
            .iter()
            .position(|s| s.epoch == epoch && s.class == class)
        else {
            return;
        };
        let mut missing = None;
        {
            let stream = &mut self.streams[index];
            stream.fetch_pending = false;
            let mut added = 0usize;
            for event in events {
                if event.key.stream.epoch != epoch || event.key.stream.class != class {
                    continue;
                }
                let next = stream.buffer_next();
                if event.key.seq < next {
                    continue;
                }
                if event.key.seq > next || stream.buffer.len() >= buffer_len_max {
                    break;
                }
                if stream.buffer.is_empty() {
                    stream.buffer_from = event.key.seq;
                }
                stream.buffer.push_back(event);
                added += 1;
            }
            let next = stream.buffer_next();
            if added == 0 && stream.send_next >= next && stream.send_next <= stream.recorded {
                stream.stalled = true;
                missing = Some(stream.send_next);
            }
        }
        if let Some(from) = missing {
            let id = self.stream_id(&self.streams[index]);
            self.actions
                .push_back(EdgeAction::Alarm(Alarm::OutboxMissing { stream: id, from }));
        }
        self.fill(now);
    }

    /// Starts a handshake on a new connection.
    pub fn connect(&mut self, now: UnixMillis) {
        self.phase = Phase::Handshake {
            started: now,
            hello_at: now,
        };
        self.decoder = FrameDecoder::new(self.config.frame_len_max);
        self.outgoing.clear();
        self.in_flight.clear();
        for stream in &mut self.streams {
            stream.send_next = stream.acked.next();
            stream.fetch_pending = false;
        }
        self.last_received = now;
        self.send_hello(now);
    }

    /// Ends the session on the owner's request.
    pub fn close(&mut self) {
        self.closed(CloseReason::Local);
    }

    /// The connection failed underneath the session (reset, peer gone, idle timeout of the
    /// transport).
    pub fn disconnected(&mut self, reason: &str) {
        self.closed(CloseReason::Transport(alloc::string::String::from(reason)));
    }

    fn send_hello(&mut self, now: UnixMillis) {
        let acked = self
            .streams
            .iter()
            .map(|s| StreamPosition {
                epoch: s.epoch,
                class: s.class,
                seq: s.acked,
            })
            .collect();
        let hello = Hello {
            versions: VersionRange::CURRENT,
            tenant: self.tenant.clone(),
            store: self.store.clone(),
            device: self.device.clone(),
            epoch: self.epoch,
            link: self.link.clone(),
            acked,
            now_ms: now,
            backlog: self.backlog(),
        };
        self.send(now, Message::Hello(hello));
    }

    fn send(&mut self, now: UnixMillis, message: Message) {
        self.last_sent = now;
        self.outgoing.push_back(message);
    }

    fn closed(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closed || self.phase == Phase::Idle {
            return;
        }
        self.phase = Phase::Closed;
        self.in_flight.clear();
        self.actions.push_back(EdgeAction::Closed(reason));
    }

    fn fail(&mut self, now: UnixMillis, code: ErrorCode, reason: CloseReason) {
        let message = match &reason {
            CloseReason::Protocol(m) | CloseReason::Integrity(m) | CloseReason::Identity(m) => {
                m.clone()
            }
            other => alloc::format!("{other:?}"),
        };
        self.outgoing.clear();
        self.send(now, Message::Error(ErrorMsg { code, message }));
        self.closed(reason);
    }

    /// Feeds bytes received on the connection.
    pub fn handle_bytes(&mut self, now: UnixMillis, bytes: &[u8]) {
        if matches!(self.phase, Phase::Idle | Phase::Closed) {
            return;
        }
        self.decoder.push(bytes);
        while let Some(inbound) = super::next_inbound(&mut self.decoder) {
            match inbound {
                super::Inbound::Message(message) => self.handle_message(now, message),
                super::Inbound::Fatal(code, reason) => {
                    self.fail(now, code, reason);
                    break;
                }
            }
            if matches!(self.phase, Phase::Closed) {
                break;
            }
        }
    }

    /// Feeds one decoded message.
    pub fn handle_message(&mut self, now: UnixMillis, message: Message) {
        if matches!(self.phase, Phase::Idle | Phase::Closed) {
            return;
        }
        self.last_received = now;
        match (self.phase, message) {
            (_, Message::Error(e)) => self.closed(CloseReason::PeerError {
                code: e.code,
                message: e.message,
            }),
            (_, Message::Heartbeat(_)) => {}
            (Phase::Handshake { .. }, Message::Welcome(welcome)) => {
                self.handle_welcome(now, welcome)
            }
            (Phase::Established, Message::Welcome(_)) => {
                // A duplicate of the welcome that started this session.
            }
            (Phase::Established, Message::Ack(ack)) => self.handle_ack(now, ack),
            (Phase::Established, Message::DocSync(doc)) => {
                self.actions.push_back(EdgeAction::DocSync(doc))
            }
            (Phase::Established, Message::Alert(alert)) => {
                self.actions.push_back(EdgeAction::Alert(alert))
            }
            (Phase::Handshake { .. }, Message::Ack(_)) => {
                // A late acknowledgement from an earlier connection's traffic: the welcome
                // will carry the same information.
            }
            (_, other) => self.fail(
                now,
                ErrorCode::Protocol,
                CloseReason::Protocol(alloc::format!(
                    "unexpected message kind {:#04x}",
                    other.kind()
                )),
            ),
        }
        self.fill(now);
    }

    fn handle_welcome(&mut self, now: UnixMillis, welcome: Welcome) {
        if VersionRange::CURRENT
            .negotiate(VersionRange {
                min: welcome.version,
                max: welcome.version,
            })
            .is_none()
        {
            self.fail(now, ErrorCode::UnsupportedVersion, CloseReason::Version);
            return;
        }
        let mut alarms = Vec::new();
        let mut acked_actions = Vec::new();
        for index in 0..self.streams.len() {
            let (epoch, class) = (self.streams[index].epoch, self.streams[index].class);
            let hub_head = welcome
                .committed
                .iter()
                .find(|p| p.epoch == epoch && p.class == class)
                .map(|p| p.head);
            let committed = hub_head.map_or(SeqNo::ZERO, |h| h.seq);
            let current = epoch == self.epoch;
            let id = self.stream_id(&self.streams[index]);
            let stream = &mut self.streams[index];
            if committed < stream.acked {
                alarms.push(Alarm::HubBehind {
                    stream: id,
                    acked: stream.acked,
                    committed,
                });
                // Re-send from what the hub has; the acknowledgement already persisted
                // stays, the events are still in the outbox unless retention removed them.
                stream.acked = committed;
                stream.clear_buffer(committed.next());
            } else if committed > stream.recorded {
                if current {
                    alarms.push(Alarm::EdgeBehind {
                        stream: id,
                        recorded: stream.recorded,
                        committed,
                    });
                }
                // For an older epoch this is the normal case after a restore: the hub got
                // events the restored data no longer holds.
                if stream.recorded > stream.acked {
                    stream.acked = stream.recorded;
                    acked_actions.push((epoch, class, stream.recorded));
                }
            } else if committed == stream.recorded
                && committed > SeqNo::ZERO
                && hub_head.is_some_and(|h| h.hash != stream.recorded_hash)
            {
                // Same position, different history: this data directory re-minted keys
                // the hub holds with other content. Never take that as acknowledged.
                alarms.push(Alarm::EdgeBehind {
                    stream: id,
                    recorded: stream.recorded,
                    committed,
                });
            } else if committed > stream.acked {
                stream.acked = committed;
                acked_actions.push((epoch, class, committed));
            }
            stream.drop_acked();
            stream.send_next = stream.acked.next();
            stream.stalled = false;
        }
        for alarm in alarms {
            self.actions.push_back(EdgeAction::Alarm(alarm));
        }
        for (epoch, class, through) in acked_actions {
            self.actions.push_back(EdgeAction::Acked {
                epoch,
                class,
                through,
            });
        }
        self.phase = Phase::Established;
        self.actions.push_back(EdgeAction::Connected {
            version: welcome.version,
            skew_ms: welcome.now_ms.saturating_sub(now),
        });
    }

    fn handle_ack(&mut self, now: UnixMillis, ack: Ack) {
        let _ = now;
        let Some(index) = self
            .streams
            .iter()
            .position(|s| s.epoch == ack.epoch && s.class == ack.class)
        else {
            return;
        };
        let stream = &mut self.streams[index];
        if ack.through > stream.acked && ack.through <= stream.recorded {
            stream.acked = ack.through;
            stream.drop_acked();
            self.actions.push_back(EdgeAction::Acked {
                epoch: ack.epoch,
                class: ack.class,
                through: ack.through,
            });
        }
        let acked = stream.acked;
        // A batch answered with less than its end was refused as out of order: go back.
        let refused = self
            .in_flight
            .iter()
            .any(|f| f.batch_id == ack.batch_id && f.stream == index && f.last > ack.through);
        if refused {
            self.in_flight.retain(|f| f.stream != index);
            let stream = &mut self.streams[index];
            stream.send_next = ack.through.max(acked).next();
        } else {
            self.in_flight.retain(|f| {
                !(f.stream == index && (f.last <= acked || f.batch_id == ack.batch_id))
            });
        }
        let stream = &mut self.streams[index];
        if stream.send_next <= stream.acked {
            stream.send_next = stream.acked.next();
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        match self.phase {
            Phase::Idle | Phase::Closed => return,
            Phase::Handshake { started, hello_at } => {
                if now.saturating_sub(started) >= self.config.idle_timeout_ms {
                    self.closed(CloseReason::Timeout);
                    return;
                }
                if now.saturating_sub(hello_at) >= self.config.handshake_timeout_ms {
                    self.phase = Phase::Handshake {
                        started,
                        hello_at: now,
                    };
                    self.send_hello(now);
                }
            }
            Phase::Established => {
                if now.saturating_sub(self.last_received) >= self.config.idle_timeout_ms {
                    self.closed(CloseReason::Timeout);
                    return;
                }
                if self
                    .in_flight
                    .front()
                    .is_some_and(|f| now.saturating_sub(f.sent_at) >= self.config.ack_timeout_ms)
                {
                    self.in_flight.clear();
                    for stream in &mut self.streams {
                        stream.send_next = stream.acked.next();
                    }
                }
                if now.saturating_sub(self.last_sent) >= self.config.heartbeat_interval_ms {
                    let backlog = self.backlog();
                    self.send(
                        now,
                        Message::Heartbeat(Heartbeat {
                            now_ms: now,
                            backlog,
                        }),
                    );
                }
            }
        }
        self.fill(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next run.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        match self.phase {
            Phase::Idle | Phase::Closed => None,
            Phase::Handshake { started, hello_at } => Some(
                (started + self.config.idle_timeout_ms)
                    .min(hello_at + self.config.handshake_timeout_ms),
            ),
            Phase::Established => {
                let idle = Some(self.last_received + self.config.idle_timeout_ms);
                let heartbeat = Some(self.last_sent + self.config.heartbeat_interval_ms);
                let ack = self
                    .in_flight
                    .front()
                    .map(|f| f.sent_at + self.config.ack_timeout_ms);
                earliest(earliest(idle, heartbeat), ack)
            }
        }
    }

    /// Queues a document sync message; `false` when not connected (the shell retries after
    /// the next [`EdgeAction::Connected`]).
    pub fn send_doc(&mut self, now: UnixMillis, doc: DocSync) -> bool {
        if self.phase != Phase::Established {
            return false;
        }
        self.send(now, Message::DocSync(doc));
        true
    }

    /// Queues an alert for the hub's live views; `false` when not connected (alerts also
    /// travel durably as events).
    pub fn send_alert(&mut self, now: UnixMillis, alert: Alert) -> bool {
        if self.phase != Phase::Established {
            return false;
        }
        self.send(now, Message::Alert(alert));
        true
    }

    /// Puts batches in the window while there is room and something to send.
    fn fill(&mut self, now: UnixMillis) {
        if self.phase != Phase::Established {
            return;
        }
        let batch_len_max = self.config.batch_len_max.max(1);
        let fetch_limit = self.buffer_len_max();
        while self.in_flight.len() < self.config.window_batches_max
            && self.outgoing.len() < self.config.outgoing_len_max
        {
            // The first stream in priority order with something to send.
            let Some(index) = self
                .streams
                .iter()
                .position(|s| !s.stalled && s.send_next <= s.recorded)
            else {
                return;
            };
            let stream = &mut self.streams[index];
            let in_buffer =
                stream.send_next >= stream.buffer_from && stream.send_next < stream.buffer_next();
            if !in_buffer {
                // Strict priority: wait for this stream's events rather than let a lower
                // class overtake it.
                if !stream.fetch_pending {
                    if stream.send_next != stream.buffer_next() {
                        stream.clear_buffer(stream.send_next);
                    }
                    stream.fetch_pending = true;
                    let action = EdgeAction::Fetch {
                        epoch: stream.epoch,
                        class: stream.class,
                        from: stream.send_next,
                        limit: fetch_limit
                            .saturating_sub(stream.buffer.len())
                            .max(batch_len_max),
                    };
                    self.actions.push_back(action);
                }
                return;
            }
            let first = stream.buffer_from.0;
            let offset = usize::try_from(stream.send_next.0 - first).unwrap_or(usize::MAX);
            let mut bytes = 0usize;
            let mut events = Vec::new();
            for event in stream.buffer.iter().skip(offset) {
                if events.len() >= batch_len_max {
                    break;
                }
                let size = estimated_size(event);
                if !events.is_empty() && bytes + size > self.config.frame_len_max / 2 {
                    break;
                }
                bytes += size;
                events.push(event.clone());
            }
            let Some(last) = events.last().map(|e| e.key.seq) else {
                return;
            };
            stream.send_next = last.next();
            let batch_id = self.next_batch_id;
            self.next_batch_id += 1;
            self.in_flight.push_back(InFlight {
                batch_id,
                stream: index,
                last,
                sent_at: now,
            });
            self.send(now, Message::EventBatch(EventBatch { batch_id, events }));
        }
    }

    /// The next action for the shell.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<EdgeAction> {
        self.actions.pop_front()
    }

    /// The next message for the peer.
    #[must_use]
    pub fn poll_message(&mut self) -> Option<Message> {
        self.outgoing.pop_front()
    }

    /// The next message for the peer as a frame. A message too large to frame is a bug of
    /// the batch sizing and is dropped with an error action instead of a panic.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let message = self.poll_message()?;
        match super::frame(&message, self.config.frame_len_max) {
            Ok(frame) => Some(frame),
            Err(reason) => {
                self.closed(reason);
                None
            }
        }
    }
}

/// A generous estimate of an event's encoded size, to keep batches under the frame limit
/// without encoding twice.
fn estimated_size(event: &Event) -> usize {
    const KEY: usize = 64 + 3 * 64 + 64;
    let body = match &event.body {
        EventBody::Transaction(tx) => {
            let extra: usize = tx.extra.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
            200 + tx.items.len() * (64 + 24) + extra
        }
        EventBody::Adjustment(a) => 200 + a.reason.len(),
        EventBody::Scan(_) => 240,
        EventBody::Alert(a) => {
            200 + a.message.len()
                + a.subject.len()
                + a.facts.iter().map(|(k, _)| k.len() + 10).sum::<usize>()
        }
        EventBody::Telemetry(t) => 32 + t.metrics.iter().map(|(k, _)| k.len() + 10).sum::<usize>(),
    };
    KEY + body
}
