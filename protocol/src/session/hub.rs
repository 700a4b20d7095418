//! The hub side of a sync session: one per connection.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use super::{Alarm, CloseReason, SessionConfig, earliest};
use crate::domain::Alert;
use crate::event::{Epoch, Event, EventClass, EventKey, SeqNo, StreamHead, StreamId, verify_run};
use crate::ids::{DeviceId, StoreId, TenantId};
use crate::time::UnixMillis;
use crate::wire::{
    Ack, DocSync, EpochLink, ErrorCode, ErrorMsg, EventBatch, FrameDecoder, Heartbeat, Hello,
    Message, StreamCommitted, VersionRange, Welcome,
};

/// Who the peer is, from its certificate (never from what it says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Tenant.
    pub tenant: TenantId,
    /// Store.
    pub store: StoreId,
    /// Device.
    pub device: DeviceId,
}

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Events newly stored.
    pub inserted: u64,
    /// Events already stored with the same content.
    pub duplicates: u64,
    /// Events whose key (or transaction id) was stored with different content; not stored.
    pub conflicts: Vec<EventKey>,
}

/// What the hub session asks of its shell.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HubAction {
    /// Load the committed heads of these streams and call [`HubSession::heads_loaded`].
    LoadHeads {
        /// Echo it back.
        request_id: u64,
        /// The streams.
        streams: Vec<StreamId>,
    },
    /// Commit atomically: insert `events` idempotently by key (reporting "same key,
    /// different content" as conflicts) and write `new_head` as the stream's cursor in the
    /// same transaction; then call [`HubSession::committed`] (or
    /// [`HubSession::commit_failed`]). Commits of one session must run one at a time, in
    /// the order asked.
    Commit {
        /// Echo it back.
        commit_id: u64,
        /// The stream.
        stream: StreamId,
        /// Verified events; those at or below the previous head are redeliveries. "Same key,
        /// different content" compares both the content hash and the chain link (`prev`).
        events: Vec<Event>,
        /// The stream's head after the commit.
        new_head: StreamHead,
    },
    /// The handshake completed: fleet status for this device.
    Connected {
        /// Negotiated version.
        version: u16,
        /// Device clock minus hub clock at the hello, in milliseconds.
        skew_ms: i64,
        /// Events the device reports waiting.
        backlog: u64,
        /// The device's current epoch.
        epoch: Epoch,
        /// What the epoch forked from, for the shell to record.
        link: Option<EpochLink>,
    },
    /// The device reported its backlog in a heartbeat.
    Backlog(u64),
    /// A document sync message arrived.
    DocSync(DocSync),
    /// A live alert arrived.
    Alert(Alert),
    /// Something an operator must hear about.
    Alarm(Alarm),
    /// The session ended; flush [`HubSession::poll_message`] and close the connection.
    Closed(CloseReason),
}

#[derive(Debug)]
struct HubStream {
    id: StreamId,
    /// Durable head; `None` while the hub has nothing of the stream.
    committed: Option<StreamHead>,
    /// Head after the commits asked but not yet done.
    verified: Option<StreamHead>,
}

#[derive(Debug)]
struct PendingCommit {
    commit_id: u64,
    batch_id: u64,
    key: (Epoch, EventClass),
    new_head: StreamHead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    Loading { request_id: u64 },
    Established,
    Closed,
}

/// The hub's side of one connection.
///
/// Call order: [`HubSession::new`] with the identity from the peer's certificate; feed
/// [`handle_bytes`](Self::handle_bytes) (or [`handle_message`](Self::handle_message)) and
/// [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout); complete
/// [`HubAction::LoadHeads`] with [`heads_loaded`](Self::heads_loaded) and
/// [`HubAction::Commit`] with [`committed`](Self::committed) or
/// [`commit_failed`](Self::commit_failed); after every call drain
/// [`poll_action`](Self::poll_action) and [`poll_transmit`](Self::poll_transmit).
#[derive(Debug)]
pub struct HubSession {
    config: SessionConfig,
    peer: PeerIdentity,
    phase: Phase,
    hello: Option<Hello>,
    /// The current epoch of the peer and what it forked from.
    current: Option<(Epoch, Option<EpochLink>)>,
    version: u16,
    streams: BTreeMap<(Epoch, EventClass), HubStream>,
    pending: VecDeque<PendingCommit>,
    next_id: u64,
    outgoing: VecDeque<Message>,
    actions: VecDeque<HubAction>,
    decoder: FrameDecoder,
    last_sent: UnixMillis,
    last_received: UnixMillis,
}

impl HubSession {
    /// A session for a connection from `peer`, opened at `now`.
    pub fn new(config: SessionConfig, peer: PeerIdentity, now: UnixMillis) -> HubSession {
        let frame_len_max = config.frame_len_max;
        HubSession {
            config,
            peer,
            phase: Phase::AwaitHello,
            hello: None,
            current: None,
            version: 0,
            streams: BTreeMap::new(),
            pending: VecDeque::new(),
            next_id: 1,
            outgoing: VecDeque::new(),
            actions: VecDeque::new(),
            decoder: FrameDecoder::new(frame_len_max),
            last_sent: now,
            last_received: now,
        }
    }

    /// The peer.
    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    /// Whether the handshake has completed.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Established
    }

    /// Commits asked and not yet completed.
    pub fn pending_commits(&self) -> usize {
        self.pending.len()
    }

    fn send(&mut self, now: UnixMillis, message: Message) {
        self.last_sent = now;
        self.outgoing.push_back(message);
    }

    fn closed(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.actions.push_back(HubAction::Closed(reason));
    }

    fn fail(&mut self, now: UnixMillis, code: ErrorCode, reason: CloseReason) {
        let message = match &reason {
            CloseReason::Protocol(m)
            | CloseReason::Integrity(m)
            | CloseReason::Identity(m)
            | CloseReason::CommitFailed(m) => m.clone(),
            other => alloc::format!("{other:?}"),
        };
        self.outgoing.clear();
        self.send(now, Message::Error(ErrorMsg { code, message }));
        self.closed(reason);
    }

    /// Ends the session on the owner's request (revocation, shutdown, maximum age).
    pub fn close(&mut self, now: UnixMillis, message: &str) {
        self.fail(now, ErrorCode::Unavailable, CloseReason::Local);
        if let Some(Message::Error(e)) = self.outgoing.back_mut() {
            e.message = String::from(message);
        }
    }

    /// Feeds bytes received on the connection.
    pub fn handle_bytes(&mut self, now: UnixMillis, bytes: &[u8]) {
        if self.phase == Phase::Closed {
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
            if self.phase == Phase::Closed {
                break;
            }
        }
    }

    /// Feeds one decoded message.
    pub fn handle_message(&mut self, now: UnixMillis, message: Message) {
        if self.phase == Phase::Closed {
            return;
        }
        self.last_received = now;
        match (self.phase, message) {
            (_, Message::Error(e)) => self.closed(CloseReason::PeerError {
                code: e.code,
                message: e.message,
            }),
            (Phase::Established, Message::Heartbeat(h)) => {
                self.actions.push_back(HubAction::Backlog(h.backlog))
            }
            (_, Message::Heartbeat(_)) => {}
            (Phase::AwaitHello, Message::Hello(hello)) => self.handle_hello(now, hello),
            (Phase::Loading { .. }, Message::Hello(_)) => {}
            (Phase::Established, Message::Hello(_)) => {
                // The edge repeats its hello when the welcome was lost.
                self.send_welcome(now);
            }
            (Phase::Established, Message::EventBatch(batch)) => self.handle_batch(now, batch),
            (Phase::Established, Message::DocSync(doc)) => {
                self.actions.push_back(HubAction::DocSync(doc))
            }
            (Phase::Established, Message::Alert(alert)) => {
                self.actions.push_back(HubAction::Alert(alert))
            }
            (
                Phase::Loading { .. },
                Message::EventBatch(_) | Message::DocSync(_) | Message::Alert(_),
            ) => {
                // Traffic of an earlier connection overtaken by this handshake; the edge
                // resends after the welcome.
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
    }

    fn handle_hello(&mut self, now: UnixMillis, hello: Hello) {
        if hello.tenant != self.peer.tenant
            || hello.store != self.peer.store
            || hello.device != self.peer.device
        {
            let text = alloc::format!(
                "device {}/{}/{} claimed to be {}/{}/{}",
                self.peer.tenant,
                self.peer.store,
                self.peer.device,
                hello.tenant,
                hello.store,
                hello.device
            );
            self.actions
                .push_back(HubAction::Alarm(Alarm::Identity(text.clone())));
            self.fail(now, ErrorCode::Identity, CloseReason::Identity(text));
            return;
        }
        let Some(version) = VersionRange::CURRENT.negotiate(hello.versions) else {
            self.fail(now, ErrorCode::UnsupportedVersion, CloseReason::Version);
            return;
        };
        if hello.acked.len() > 3 * 64 {
            self.fail(
                now,
                ErrorCode::Limit,
                CloseReason::Protocol(String::from("more than 192 streams in the hello")),
            );
            return;
        }
        self.version = version;
        self.current = Some((hello.epoch, hello.link.clone()));
        let mut keys: Vec<(Epoch, EventClass)> =
            hello.acked.iter().map(|p| (p.epoch, p.class)).collect();
        keys.extend(EventClass::ALL.iter().map(|c| (hello.epoch, *c)));
        keys.sort();
        keys.dedup();
        self.streams.clear();
        for (epoch, class) in keys {
            let id = StreamId {
                tenant: self.peer.tenant.clone(),
                store: self.peer.store.clone(),
                device: self.peer.device.clone(),
                epoch,
                class,
            };
            self.streams.insert(
                (epoch, class),
                HubStream {
                    id,
                    committed: None,
                    verified: None,
                },
            );
        }
        let request_id = self.next_id;
        self.next_id += 1;
        self.phase = Phase::Loading { request_id };
        let streams = self.streams.values().map(|s| s.id.clone()).collect();
        self.hello = Some(hello);
        self.actions.push_back(HubAction::LoadHeads {
            request_id,
            streams,
        });
    }

    /// Completes a [`HubAction::LoadHeads`]: the committed head of each stream, `None`
    /// for a stream the hub has nothing of.
    pub fn heads_loaded(
        &mut self,
        now: UnixMillis,
        request_id: u64,
        heads: Vec<(StreamId, Option<StreamHead>)>,
    ) {
        if self.phase != (Phase::Loading { request_id }) {
            return;
        }
        for (id, head) in heads {
            if let Some(stream) = self.streams.get_mut(&(id.epoch, id.class))
                && stream.id == id
            {
                stream.committed = head;
                stream.verified = head;
            }
        }
        let Some(hello) = self.hello.take() else {
            return;
        };
        for position in &hello.acked {
            let committed = self
                .streams
                .get(&(position.epoch, position.class))
                .and_then(|s| s.committed)
                .map_or(SeqNo::ZERO, |h| h.seq);
            if position.seq > committed
                && let Some(stream) = self.streams.get(&(position.epoch, position.class))
            {
                self.actions.push_back(HubAction::Alarm(Alarm::HubBehind {
                    stream: stream.id.clone(),
                    acked: position.seq,
                    committed,
                }));
            }
        }
        self.phase = Phase::Established;
        self.actions.push_back(HubAction::Connected {
            version: self.version,
            skew_ms: hello.now_ms.saturating_sub(now),
            backlog: hello.backlog,
            epoch: hello.epoch,
            link: hello.link.clone(),
        });
        self.send_welcome(now);
    }

    fn send_welcome(&mut self, now: UnixMillis) {
        let committed = self
            .streams
            .iter()
            .map(|((epoch, class), s)| StreamCommitted {
                epoch: *epoch,
                class: *class,
                head: s
                    .committed
                    .unwrap_or(StreamHead::genesis(crate::event::Hash::ZERO)),
            })
            .collect();
        self.send(
            now,
            Message::Welcome(Welcome {
                version: self.version,
                committed,
                now_ms: now,
            }),
        );
    }

    fn ack(&mut self, now: UnixMillis, batch_id: u64, key: (Epoch, EventClass)) {
        let through = self
            .streams
            .get(&key)
            .and_then(|s| s.committed)
            .map_or(SeqNo::ZERO, |h| h.seq);
        self.send(
            now,
            Message::Ack(Ack {
                batch_id,
                epoch: key.0,
                class: key.1,
                through,
            }),
        );
    }

    fn handle_batch(&mut self, now: UnixMillis, batch: EventBatch) {
        let Some(first) = batch.events.first() else {
            return;
        };
        let id = first.key.stream.clone();
        let key = (id.epoch, id.class);
        if id.tenant != self.peer.tenant
            || id.store != self.peer.store
            || id.device != self.peer.device
        {
            let text = alloc::format!(
                "events of {}/{}/{} on this connection",
                id.tenant,
                id.store,
                id.device
            );
            self.actions
                .push_back(HubAction::Alarm(Alarm::Identity(text.clone())));
            self.fail(now, ErrorCode::Identity, CloseReason::Identity(text));
            return;
        }
        if batch.events.len() > self.config.batch_len_max {
            self.fail(
                now,
                ErrorCode::Limit,
                CloseReason::Protocol(alloc::format!(
                    "batch of {} events exceeds batch_len_max = {}",
                    batch.events.len(),
                    self.config.batch_len_max
                )),
            );
            return;
        }
        if self.pending.len() >= self.config.window_batches_max.saturating_mul(2).max(1) {
            self.fail(
                now,
                ErrorCode::Limit,
                CloseReason::Protocol(String::from("too many batches waiting for commit")),
            );
            return;
        }
        let Some(stream) = self.streams.get(&key) else {
            self.fail(
                now,
                ErrorCode::Protocol,
                CloseReason::Protocol(String::from("events of a stream the hello did not name")),
            );
            return;
        };
        let verified = stream.verified;
        let verified_seq = verified.map_or(SeqNo::ZERO, |h| h.seq);
        let split = batch
            .events
            .iter()
            .position(|e| e.key.seq > verified_seq)
            .unwrap_or(batch.events.len());
        let (prefix, suffix) = batch.events.split_at(split);
        // Redelivered events are not chained here (their predecessors may be gone from
        // memory) but their content must match their hash; the store compares the hash
        // with what it holds.
        if let Some(bad) = prefix
            .iter()
            .find(|e| e.key.stream != id || !e.content_ok())
        {
            let error = crate::event::ChainError::Content { seq: bad.key.seq };
            self.integrity(now, id, error);
            return;
        }
        let mut new_head = verified.unwrap_or(StreamHead::genesis(crate::event::Hash::ZERO));
        if let Some(first_new) = suffix.first() {
            let expected = verified_seq.next();
            if first_new.key.seq != expected {
                // Out of order: answer with the durable head; the edge goes back to it.
                self.ack(now, batch.batch_id, key);
                return;
            }
            let start = match verified {
                Some(head) => head,
                None => self
                    .genesis(key)
                    .unwrap_or(StreamHead::genesis(first_new.prev)),
            };
            match verify_run(&id, start, suffix) {
                Ok(head) => new_head = head,
                Err(error) => {
                    self.integrity(now, id, error);
                    return;
                }
            }
        }
        let commit_id = self.next_id;
        self.next_id += 1;
        if let Some(stream) = self.streams.get_mut(&key) {
            stream.verified = Some(new_head);
        }
        self.pending.push_back(PendingCommit {
            commit_id,
            batch_id: batch.batch_id,
            key,
            new_head,
        });
        self.actions.push_back(HubAction::Commit {
            commit_id,
            stream: id,
            events: batch.events,
            new_head,
        });
    }

    /// Where a stream the hub has nothing of must start: the current epoch starts from the
    /// fork its hello names, or from [`Hash::ZERO`] on a device's first epoch. An older
    /// epoch the hub never heard of is taken from its first event's link (the hub cannot
    /// know the fork of an epoch that is no longer current); `None` says so.
    fn genesis(&self, key: (Epoch, EventClass)) -> Option<StreamHead> {
        let current = self.current.as_ref()?;
        if key.0 != current.0 {
            return None;
        }
        Some(StreamHead::genesis(match &current.1 {
            Some(link) => link.heads[key.1.index()].hash,
            None => crate::event::Hash::ZERO,
        }))
    }

    fn integrity(&mut self, now: UnixMillis, stream: StreamId, error: crate::event::ChainError) {
        let text = alloc::format!("stream {}/{:?}: {error}", stream.device, stream.class);
        self.actions
            .push_back(HubAction::Alarm(Alarm::ChainBroken { stream, error }));
        self.fail(now, ErrorCode::Integrity, CloseReason::Integrity(text));
    }

    /// Completes a [`HubAction::Commit`]: it is durable.
    pub fn committed(&mut self, now: UnixMillis, commit_id: u64, outcome: CommitOutcome) {
        let Some(index) = self.pending.iter().position(|p| p.commit_id == commit_id) else {
            return;
        };
        let Some(done) = self.pending.remove(index) else {
            return;
        };
        if let Some(stream) = self.streams.get_mut(&done.key) {
            let newer = stream.committed.is_none_or(|h| done.new_head.seq >= h.seq);
            if newer {
                stream.committed = Some(done.new_head);
            }
        }
        if !outcome.conflicts.is_empty() {
            self.actions.push_back(HubAction::Alarm(Alarm::Conflict {
                keys: outcome.conflicts,
            }));
        }
        if self.phase == Phase::Established {
            self.ack(now, done.batch_id, done.key);
        }
    }

    /// Completes a [`HubAction::Commit`] that failed; nothing of it is durable. The session
    /// ends, and the edge resends from the durable heads after it reconnects.
    pub fn commit_failed(&mut self, now: UnixMillis, commit_id: u64, reason: &str) {
        self.pending.retain(|p| p.commit_id != commit_id);
        self.fail(
            now,
            ErrorCode::Unavailable,
            CloseReason::CommitFailed(String::from(reason)),
        );
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        if self.phase == Phase::Closed {
            return;
        }
        if now.saturating_sub(self.last_received) >= self.config.idle_timeout_ms {
            self.closed(CloseReason::Timeout);
            return;
        }
        if self.phase == Phase::Established
            && now.saturating_sub(self.last_sent) >= self.config.heartbeat_interval_ms
        {
            self.send(
                now,
                Message::Heartbeat(Heartbeat {
                    now_ms: now,
                    backlog: 0,
                }),
            );
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next run.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        match self.phase {
            Phase::Closed => None,
            Phase::Established => earliest(
                Some(self.last_received + self.config.idle_timeout_ms),
                Some(self.last_sent + self.config.heartbeat_interval_ms),
            ),
            _ => Some(self.last_received + self.config.idle_timeout_ms),
        }
    }

    /// Queues a document sync message; `false` before the handshake completed.
    pub fn send_doc(&mut self, now: UnixMillis, doc: DocSync) -> bool {
        if self.phase != Phase::Established {
            return false;
        }
        self.send(now, Message::DocSync(doc));
        true
    }

    /// Queues a live alert for the edge; `false` before the handshake completed.
    pub fn send_alert(&mut self, now: UnixMillis, alert: Alert) -> bool {
        if self.phase != Phase::Established {
            return false;
        }
        self.send(now, Message::Alert(alert));
        true
    }

    /// The next action for the shell.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<HubAction> {
        self.actions.pop_front()
    }

    /// The next message for the peer.
    #[must_use]
    pub fn poll_message(&mut self) -> Option<Message> {
        self.outgoing.pop_front()
    }

    /// The next message for the peer as a frame. A message too large to frame (a document
    /// sync message over the frame limit, say) ends the session with an error action
    /// instead of vanishing.
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
