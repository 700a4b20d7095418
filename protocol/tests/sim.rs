//! Deterministic simulation of `EdgeSession` + `HubSession`.
//!
//! One edge and one hub, a virtual clock, a seeded RNG and a network that loses,
//! duplicates, reorders and delays messages and partitions; either side crashes and
//! restarts from its durable state; the edge is restored from an older snapshot (a new
//! epoch); messages are tampered with. After the faults stop, the world must heal within a
//! bounded number of steps, and then:
//!
//! - every event the edge holds (and every event it ever had acknowledged) is committed at
//!   the hub exactly once, with the content the edge sealed;
//! - the edge never pruned an event the hub had not committed;
//! - the hub's stored streams verify as hash chains end to end; every injected tampering was
//!   refused, and tampered content was never committed;
//! - rollups and inventory computed from the two logs are equal;
//! - after a restore, new events are never taken for duplicates; after a restore that
//!   failed to start a new epoch, "same key, different content" raises an alarm.
//!
//! Every failure prints its seed; `SIM_SEED=<seed> cargo test -p storesync-protocol --test
//! sim replay -- --nocapture` replays it. `SIM_SEEDS=<n>` changes the number of seeds per
//! scenario.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use storesync_protocol::domain::{
    Gtin, LineItem, ScanEvent, ScanPurpose, Telemetry, Transaction, TransactionKind,
    gs1_check_digit,
};
use storesync_protocol::event::{
    Epoch, Event, EventBody, EventClass, EventKey, Hash, Sealer, SeqNo, StreamHead, StreamId,
};
use storesync_protocol::ids::{
    DeviceId, RegisterId, ScanId, Sku, StoreId, TenantId, TransactionId,
};
use storesync_protocol::inventory;
use storesync_protocol::money::Money;
use storesync_protocol::rollup::{RollupKey, SalesFigures, rollup_rows};
use storesync_protocol::session::{
    Alarm, CommitOutcome, EdgeAction, EdgeSession, EdgeSnapshot, EdgeStreamState, HubAction,
    HubSession, PeerIdentity, SessionConfig, reconnect_delay_ms,
};
use storesync_protocol::time::EventTime;
use storesync_protocol::verify_run;
use storesync_protocol::wire::{Decoded, EpochLink, Message, decode_frame};

const T0: i64 = 1_795_300_000_000;

#[derive(Debug, Clone, Copy, Default)]
struct Scenario {
    loss: f64,
    duplicate: f64,
    jitter_ms: i64,
    partitions: bool,
    crash_edge: bool,
    crash_hub: bool,
    restore: bool,
    tamper: bool,
    /// A restore that (wrongly) keeps the epoch: the bug epochs exist to prevent.
    restore_same_epoch: bool,
}

fn honest() -> Scenario {
    Scenario {
        loss: 0.15,
        duplicate: 0.1,
        jitter_ms: 200,
        partitions: true,
        crash_edge: true,
        crash_hub: true,
        ..Scenario::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Edge,
    Hub,
}

#[derive(Debug, Clone)]
enum Ev {
    Deliver {
        to: Side,
        conn: u64,
        bytes: Vec<u8>,
        tampered: Option<Event>,
    },
    CommitDone {
        generation: u64,
    },
    Record,
    EdgeCrash,
    EdgeRestart,
    HubCrash,
    PartitionStart,
    PartitionEnd,
    Snapshot,
    Restore,
    Reconnect {
        conn: u64,
    },
    EdgeDisconnected {
        conn: u64,
    },
    Prune,
}

/// A queued event; the heap pops the earliest, ties in scheduling order.
#[derive(Debug)]
struct Scheduled {
    at: i64,
    tick: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.tick) == (other.at, other.tick)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.tick).cmp(&(self.at, self.tick))
    }
}

#[derive(Debug, Clone)]
struct EdgeDurable {
    sealer: Sealer,
    link: Option<EpochLink>,
    /// Epochs, oldest first.
    lineage: Vec<Epoch>,
    outbox: BTreeMap<(Epoch, EventClass), BTreeMap<SeqNo, Event>>,
    acked: BTreeMap<(Epoch, EventClass), SeqNo>,
}

impl EdgeDurable {
    fn snapshot(&self) -> EdgeSnapshot {
        let mut streams = Vec::new();
        for epoch in &self.lineage {
            for class in EventClass::ALL {
                let key = (*epoch, class);
                let recorded = if *epoch == self.sealer.epoch() {
                    self.sealer.head(class).seq
                } else {
                    self.outbox
                        .get(&key)
                        .and_then(|m| m.keys().next_back().copied())
                        .unwrap_or(SeqNo::ZERO)
                        .max(self.acked.get(&key).copied().unwrap_or(SeqNo::ZERO))
                };
                let acked = self.acked.get(&key).copied().unwrap_or(SeqNo::ZERO);
                let recorded_hash = if *epoch == self.sealer.epoch() {
                    self.sealer.head(class).hash
                } else {
                    self.outbox
                        .get(&key)
                        .and_then(|m| m.get(&recorded))
                        .map_or(Hash::ZERO, |e| e.chain_hash())
                };
                if *epoch == self.sealer.epoch() || recorded > acked {
                    streams.push(EdgeStreamState {
                        epoch: *epoch,
                        class,
                        recorded,
                        recorded_hash,
                        acked,
                    });
                }
            }
        }
        EdgeSnapshot {
            tenant: tenant(),
            store: store(),
            device: device(),
            epoch: self.sealer.epoch(),
            link: self.link.clone(),
            streams,
        }
    }
}

#[derive(Debug, Default)]
struct HubDurable {
    events: BTreeMap<EventKey, (Event, u32)>,
    heads: BTreeMap<StreamId, StreamHead>,
}

struct World {
    seed: u64,
    scenario: Scenario,
    rng: ChaCha8Rng,
    now: i64,
    tick: u64,
    queue: BinaryHeap<Scheduled>,
    faults: bool,
    partitioned: bool,
    config: SessionConfig,

    edge: Option<EdgeSession>,
    edge_durable: EdgeDurable,
    edge_conn: u64,
    reconnect_attempt: u32,
    snapshot: Option<EdgeDurable>,
    /// Every event the edge ever sealed durably.
    ever: BTreeMap<EventKey, Event>,
    /// Events lost by restores (in `ever`, not in the restored data).
    lost: BTreeSet<EventKey>,
    pruned: usize,
    next_id: u64,

    hub: Option<HubSession>,
    hub_conn: u64,
    hub_generation: u64,
    hub_durable: HubDurable,
    commit_queue: std::collections::VecDeque<(u64, StreamId, Vec<Event>, StreamHead)>,
    commit_busy_until: i64,
    alarms: Vec<Alarm>,
    tampered_refused: u64,
    same_epoch_restored: bool,
}

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}
fn store() -> StoreId {
    StoreId::new("s1").unwrap()
}
fn device() -> DeviceId {
    DeviceId::new("pc1").unwrap()
}
fn peer() -> PeerIdentity {
    PeerIdentity {
        tenant: tenant(),
        store: store(),
        device: device(),
    }
}

impl World {
    fn new(seed: u64, scenario: Scenario) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let epoch = Epoch(rng.random());
        let sealer = Sealer::new(tenant(), store(), device(), epoch, [Hash::ZERO; 3]);
        let config = SessionConfig {
            batch_len_max: rng.random_range(1..=16),
            window_batches_max: rng.random_range(1..=6),
            heartbeat_interval_ms: 1_000,
            idle_timeout_ms: 5_000,
            ack_timeout_ms: 2_000,
            handshake_timeout_ms: 1_000,
            ..SessionConfig::default()
        };
        let mut world = World {
            seed,
            scenario,
            rng,
            now: T0,
            tick: 0,
            queue: BinaryHeap::new(),
            faults: true,
            partitioned: false,
            config,
            edge: None,
            edge_durable: EdgeDurable {
                sealer,
                link: None,
                lineage: vec![epoch],
                outbox: BTreeMap::new(),
                acked: BTreeMap::new(),
            },
            edge_conn: 0,
            reconnect_attempt: 0,
            snapshot: None,
            ever: BTreeMap::new(),
            lost: BTreeSet::new(),
            pruned: 0,
            next_id: 0,
            hub: None,
            hub_conn: 0,
            hub_generation: 0,
            hub_durable: HubDurable::default(),
            commit_queue: Default::default(),
            commit_busy_until: T0,
            alarms: Vec::new(),
            tampered_refused: 0,
            same_epoch_restored: false,
        };
        world.start_edge();
        let records = world.rng.random_range(20..120);
        for _ in 0..records {
            let at = world.rng.random_range(0..60_000);
            world.schedule(at, Ev::Record);
        }
        let faults: Vec<(bool, Ev)> = vec![
            (scenario.crash_edge, Ev::EdgeCrash),
            (scenario.crash_hub, Ev::HubCrash),
            (scenario.partitions, Ev::PartitionStart),
            (
                scenario.restore || scenario.restore_same_epoch,
                Ev::Snapshot,
            ),
        ];
        for (enabled, ev) in faults {
            if enabled {
                for _ in 0..world.rng.random_range(1..=3) {
                    let at = world.rng.random_range(0..50_000);
                    world.schedule(at, ev.clone());
                }
            }
        }
        if scenario.restore || scenario.restore_same_epoch {
            let at = world.rng.random_range(30_000..60_000);
            world.schedule(at, Ev::Restore);
        }
        for _ in 0..3 {
            let at = world.rng.random_range(0..60_000);
            world.schedule(at, Ev::Prune);
        }
        world
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "simulation invariant violated: {what}\n  seed {seed}, scenario {:?}\n  replay: SIM_SEED={seed} SIM_SCENARIO={} cargo test -p storesync-protocol --test sim replay -- --nocapture",
            self.scenario,
            scenario_name(&self.scenario),
            seed = self.seed
        );
    }

    fn schedule(&mut self, delay: i64, ev: Ev) {
        self.tick += 1;
        self.queue.push(Scheduled {
            at: self.now + delay,
            tick: self.tick,
            ev,
        });
    }

    fn start_edge(&mut self) {
        let mut session = EdgeSession::new(self.config.clone(), self.edge_durable.snapshot());
        self.edge_conn += 1;
        session.connect(self.now);
        self.edge = Some(session);
    }

    // ---- workload -------------------------------------------------------------------

    fn body(&mut self) -> EventBody {
        self.next_id += 1;
        let id = self.next_id;
        let at = EventTime::from_unix_ms(self.now + self.rng.random_range(-3_600_000..0), 60);
        match self.rng.random_range(0..10) {
            0..=5 => {
                let kind = match self.rng.random_range(0..10) {
                    0 => TransactionKind::Return,
                    1 => TransactionKind::Void,
                    _ => TransactionKind::Sale,
                };
                let items: Vec<LineItem> = (0..self.rng.random_range(1..4))
                    .map(|_| LineItem {
                        sku: Sku::new(format!("sku-{}", self.rng.random_range(0..20))).unwrap(),
                        quantity: self.rng.random_range(1..5),
                        price: Money::from_cents(self.rng.random_range(1..5_000)),
                    })
                    .collect();
                let total = items.iter().fold(Money::ZERO, |a, i| a + i.amount());
                EventBody::Transaction(Transaction {
                    transaction_id: TransactionId::new(format!("t-{}-{id}", self.seed)).unwrap(),
                    store_id: store(),
                    timestamp: at,
                    items,
                    total_amount: total,
                    payment_method: ["card", "cash"][self.rng.random_range(0..2)].into(),
                    kind,
                    register_id: Some(
                        RegisterId::new(format!("r{}", self.rng.random_range(1..4))).unwrap(),
                    ),
                    cashier_id: None,
                    customer_id: None,
                    currency: None,
                    extra: vec![],
                })
            }
            6..=8 => {
                let body: Vec<u8> = (0..12).map(|_| self.rng.random_range(0..10u8)).collect();
                let mut text: String = body.iter().map(|d| char::from(b'0' + d)).collect();
                text.push(char::from(b'0' + gs1_check_digit(&body)));
                let gtin = Gtin::new(text.clone()).unwrap();
                let purpose = [
                    ScanPurpose::Receiving,
                    ScanPurpose::StockCount,
                    ScanPurpose::Sale,
                ][self.rng.random_range(0..3)];
                EventBody::Scan(ScanEvent {
                    scan_id: ScanId::new(format!("sc-{id}")).unwrap(),
                    store_id: store(),
                    sku: Sku::new(format!("sku-{}", self.rng.random_range(0..20))).unwrap(),
                    gtin,
                    purpose,
                    quantity: self.rng.random_range(0..50),
                    timestamp: at,
                    register_id: None,
                })
            }
            _ => EventBody::Telemetry(Telemetry {
                at,
                metrics: vec![("backlog".into(), id as i64)],
            }),
        }
    }

    fn record(&mut self) {
        let body = self.body();
        let event = self.edge_durable.sealer.seal(body);
        let key = (event.key.stream.epoch, event.key.stream.class);
        self.edge_durable
            .outbox
            .entry(key)
            .or_default()
            .insert(event.key.seq, event.clone());
        if let Some(previous) = self.ever.insert(event.key.clone(), event.clone()) {
            if previous != event && !self.same_epoch_restored {
                self.fail("the sealer minted a key twice");
            }
        }
        if let Some(edge) = self.edge.as_mut() {
            edge.record(self.now, event);
        }
    }

    // ---- network --------------------------------------------------------------------

    fn transmit(&mut self, to: Side, conn: u64, bytes: Vec<u8>) {
        let faults = self.faults;
        if faults && self.partitioned {
            return;
        }
        if faults && self.rng.random_bool(self.scenario.loss) {
            return;
        }
        let copies = if faults && self.rng.random_bool(self.scenario.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if faults {
                self.rng.random_range(0..=self.scenario.jitter_ms)
            } else {
                0
            };
            let mut bytes = bytes.clone();
            let mut tampered = None;
            if faults && self.scenario.tamper && to == Side::Hub && self.rng.random_bool(0.2) {
                tampered = self.tamper(&mut bytes);
            }
            self.schedule(
                5 + jitter,
                Ev::Deliver {
                    to,
                    conn,
                    bytes,
                    tampered,
                },
            );
        }
    }

    /// Rewrites one event of an event batch so that it is not self-consistent: its body
    /// without its hash, its hash without its body, or its chain link.
    fn tamper(&mut self, bytes: &mut Vec<u8>) -> Option<Event> {
        let Ok(Some((Decoded::Message(Message::EventBatch(mut batch)), _))) =
            decode_frame(bytes, usize::MAX)
        else {
            return None;
        };
        let n = batch.events.len();
        let event = batch.events.get_mut(self.rng.random_range(0..n))?;
        match self.rng.random_range(0..3) {
            0 => match &mut event.body {
                EventBody::Transaction(tx) => tx.total_amount += Money::from_cents(1),
                EventBody::Scan(scan) => scan.quantity += 1,
                EventBody::Telemetry(t) => t.metrics.push(("x".into(), 1)),
                _ => return None,
            },
            1 => event.content_hash.0[0] ^= 1,
            _ => event.prev.0[31] ^= 0x80,
        }
        let tampered = event.clone();
        *bytes = Message::EventBatch(batch).encode().ok()?;
        Some(tampered)
    }

    // ---- the edge shell ----------------------------------------------------------------

    fn pump_edge(&mut self) {
        loop {
            let Some(edge) = self.edge.as_mut() else {
                return;
            };
            let conn = self.edge_conn;
            if let Some(bytes) = edge.poll_transmit() {
                self.transmit(Side::Hub, conn, bytes);
                continue;
            }
            let Some(action) = edge.poll_action() else {
                return;
            };
            match action {
                EdgeAction::Fetch {
                    epoch,
                    class,
                    from,
                    limit,
                } => {
                    let events: Vec<Event> = self
                        .edge_durable
                        .outbox
                        .get(&(epoch, class))
                        .map(|m| {
                            m.range(from..)
                                .take(limit)
                                .map(|(_, e)| e.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    let now = self.now;
                    if let Some(edge) = self.edge.as_mut() {
                        edge.fetched(now, epoch, class, events);
                    }
                }
                EdgeAction::Acked {
                    epoch,
                    class,
                    through,
                } => {
                    self.check_acked(epoch, class, through);
                    let slot = self.edge_durable.acked.entry((epoch, class)).or_default();
                    *slot = (*slot).max(through);
                }
                EdgeAction::Connected { .. } => self.reconnect_attempt = 0,
                EdgeAction::Alarm(alarm) => self.alarms.push(alarm),
                EdgeAction::Closed(reason) => {
                    let delay = if reason.is_transient() {
                        let jitter = self.rng.random::<f64>();
                        reconnect_delay_ms(self.reconnect_attempt, 200, 5_000, jitter) as i64
                    } else {
                        self.fail(&format!("edge session closed for good: {reason:?}"));
                    };
                    self.reconnect_attempt += 1;
                    let conn = self.edge_conn;
                    self.schedule(delay, Ev::Reconnect { conn });
                }
                EdgeAction::DocSync(_) | EdgeAction::Alert(_) => {}
                other => self.fail(&format!("unexpected edge action {other:?}")),
            }
        }
    }

    /// The hub must hold everything it acknowledged.
    fn check_acked(&self, epoch: Epoch, class: EventClass, through: SeqNo) {
        if self.same_epoch_restored {
            return;
        }
        let Some(events) = self.edge_durable.outbox.get(&(epoch, class)) else {
            return;
        };
        for (seq, event) in events.range(..=through) {
            match self.hub_durable.events.get(&event.key) {
                Some((stored, _)) if stored == event => {}
                _ => self.fail(&format!("edge saw {epoch:?}/{class:?} acknowledged through {through} but the hub has not committed {seq}")),
            }
        }
    }

    // ---- the hub shell -----------------------------------------------------------------

    fn pump_hub(&mut self) -> Vec<HubAction> {
        let mut seen = Vec::new();
        loop {
            let Some(hub) = self.hub.as_mut() else {
                return seen;
            };
            let conn = self.hub_conn;
            if let Some(bytes) = hub.poll_transmit() {
                self.transmit(Side::Edge, conn, bytes);
                continue;
            }
            let Some(action) = hub.poll_action() else {
                return seen;
            };
            seen.push(action.clone());
            match action {
                HubAction::LoadHeads {
                    request_id,
                    streams,
                } => {
                    let heads = streams
                        .into_iter()
                        .map(|s| {
                            let head = self.hub_durable.heads.get(&s).copied();
                            (s, head)
                        })
                        .collect();
                    let now = self.now;
                    if let Some(hub) = self.hub.as_mut() {
                        hub.heads_loaded(now, request_id, heads);
                    }
                }
                HubAction::Commit {
                    commit_id,
                    stream,
                    events,
                    new_head,
                } => {
                    self.commit_queue
                        .push_back((commit_id, stream, events, new_head));
                    let delay = self.rng.random_range(1..30);
                    self.commit_busy_until = self.commit_busy_until.max(self.now) + delay;
                    let at = self.commit_busy_until - self.now;
                    let generation = self.hub_generation;
                    self.schedule(at, Ev::CommitDone { generation });
                }
                HubAction::Alarm(alarm) => self.alarms.push(alarm),
                HubAction::Closed(_) => {
                    // Flush, then the transport tells the edge.
                    while let Some(bytes) = self.hub.as_mut().and_then(|h| h.poll_transmit()) {
                        self.transmit(Side::Edge, conn, bytes);
                    }
                    self.hub = None;
                    self.commit_queue.clear();
                    self.hub_generation += 1;
                    self.schedule(50, Ev::EdgeDisconnected { conn });
                    return seen;
                }
                HubAction::Connected { .. }
                | HubAction::Backlog(_)
                | HubAction::DocSync(_)
                | HubAction::Alert(_) => {}
                other => self.fail(&format!("unexpected hub action {other:?}")),
            }
        }
    }

    fn commit_done(&mut self) {
        let Some((commit_id, stream, events, new_head)) = self.commit_queue.pop_front() else {
            return;
        };
        let mut outcome = CommitOutcome::default();
        for event in events {
            match self.hub_durable.events.get_mut(&event.key) {
                Some((stored, applies)) => {
                    if stored.content_hash == event.content_hash && stored.prev == event.prev {
                        outcome.duplicates += 1;
                        let _ = applies;
                    } else {
                        outcome.conflicts.push(event.key.clone());
                    }
                }
                None => {
                    outcome.inserted += 1;
                    self.hub_durable
                        .events
                        .insert(event.key.clone(), (event, 1));
                }
            }
        }
        let head = self.hub_durable.heads.entry(stream).or_insert(new_head);
        if new_head.seq >= head.seq {
            *head = new_head;
        }
        let now = self.now;
        if let Some(hub) = self.hub.as_mut() {
            hub.committed(now, commit_id, outcome);
        }
    }

    // ---- events ------------------------------------------------------------------------

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Deliver {
                to: Side::Edge,
                conn,
                bytes,
                ..
            } => {
                if conn == self.edge_conn {
                    if let Some(edge) = self.edge.as_mut() {
                        edge.handle_bytes(now, &bytes);
                    }
                }
            }
            Ev::Deliver {
                to: Side::Hub,
                conn,
                bytes,
                tampered,
            } => {
                if conn < self.hub_conn {
                    return;
                }
                if conn > self.hub_conn {
                    // A new connection replaces the old one.
                    self.hub = Some(HubSession::new(self.config.clone(), peer(), now));
                    self.hub_conn = conn;
                    self.hub_generation += 1;
                    self.commit_queue.clear();
                } else if self.hub.is_none() {
                    // The hub lost this connection (crash or close): the transport resets it.
                    self.schedule(20, Ev::EdgeDisconnected { conn });
                    return;
                }
                let Some(hub) = self.hub.as_mut() else { return };
                hub.handle_bytes(now, &bytes);
                let actions = self.pump_hub();
                if let Some(tampered) = tampered {
                    self.check_tamper_refused(&tampered, &actions);
                }
            }
            Ev::CommitDone { generation } => {
                if generation == self.hub_generation {
                    self.commit_done();
                }
            }
            Ev::Record => self.record(),
            Ev::EdgeCrash => {
                if self.faults && self.edge.is_some() {
                    self.edge = None;
                    let delay = self.rng.random_range(100..3_000);
                    self.schedule(delay, Ev::EdgeRestart);
                }
            }
            Ev::EdgeRestart => {
                if self.edge.is_none() {
                    self.start_edge();
                }
            }
            Ev::HubCrash => {
                if self.faults && self.hub.is_some() {
                    self.hub = None;
                    self.commit_queue.clear();
                    self.hub_generation += 1;
                }
            }
            Ev::PartitionStart => {
                if self.faults {
                    self.partitioned = true;
                    let length = self.rng.random_range(1_000..20_000);
                    self.schedule(length, Ev::PartitionEnd);
                }
            }
            Ev::PartitionEnd => self.partitioned = false,
            Ev::Snapshot => self.snapshot = Some(self.edge_durable.clone()),
            Ev::Restore => self.restore(),
            Ev::Reconnect { conn } => {
                if conn == self.edge_conn {
                    self.edge_conn += 1;
                    if let Some(edge) = self.edge.as_mut() {
                        edge.connect(now);
                    }
                }
            }
            Ev::EdgeDisconnected { conn } => {
                if conn == self.edge_conn {
                    if let Some(edge) = self.edge.as_mut() {
                        edge.disconnected("connection closed");
                    }
                }
            }
            Ev::Prune => self.prune(),
        }
    }

    fn check_tamper_refused(&mut self, tampered: &Event, actions: &[HubAction]) {
        for action in actions {
            match action {
                HubAction::Commit { events, .. } if events.contains(tampered) => {
                    // Only a redelivery may reach the store, which must refuse it.
                    let stored = self
                        .hub_durable
                        .events
                        .get(&tampered.key)
                        .map(|(e, _)| e.clone());
                    let in_commit_queue = self.commit_queue.iter().any(|(_, _, evs, _)| {
                        evs.iter().any(|e| e.key == tampered.key && e != tampered)
                    });
                    if stored.is_none() && !in_commit_queue {
                        self.fail(&format!(
                            "tampered event {:?} was passed to commit",
                            tampered.key
                        ));
                    }
                }
                _ => {}
            }
        }
        self.tampered_refused += 1;
    }

    fn restore(&mut self) {
        let Some(snapshot) = self.snapshot.clone() else {
            return;
        };
        if !self.faults {
            return;
        }
        self.edge_durable = snapshot;
        // What the restore loses: sealed after the snapshot, never pruned before it.
        for key in self.ever.keys() {
            let stream = (key.stream.epoch, key.stream.class);
            let kept = self
                .edge_durable
                .outbox
                .get(&stream)
                .is_some_and(|m| m.contains_key(&key.seq));
            let pruned_before = self
                .edge_durable
                .acked
                .get(&stream)
                .is_some_and(|a| key.seq <= *a);
            if !kept && !pruned_before {
                self.lost.insert(key.clone());
            }
        }
        if self.scenario.restore_same_epoch {
            self.same_epoch_restored = true;
        } else {
            let parent = self.edge_durable.sealer.epoch();
            let heads = self.edge_durable.sealer.heads();
            let epoch = Epoch(self.rng.random());
            self.edge_durable.sealer =
                Sealer::new(tenant(), store(), device(), epoch, heads.map(|h| h.hash));
            self.edge_durable.link = Some(EpochLink { parent, heads });
            self.edge_durable.lineage.push(epoch);
        }
        self.edge = None;
        self.start_edge();
    }

    fn prune(&mut self) {
        // Retention: drop what the hub acknowledged, never more.
        for (stream, acked) in self.edge_durable.acked.clone() {
            let Some(events) = self.edge_durable.outbox.get_mut(&stream) else {
                continue;
            };
            let keep = events.split_off(&acked.next());
            let dropped = std::mem::replace(events, keep);
            for event in dropped.values() {
                if !self.same_epoch_restored
                    && self.hub_durable.events.get(&event.key).map(|(e, _)| e) != Some(event)
                {
                    self.fail(&format!(
                        "pruned {:?}, which the hub does not hold",
                        event.key
                    ));
                }
            }
            self.pruned += dropped.len();
        }
    }

    // ---- driving -----------------------------------------------------------------------

    fn next_time(&self) -> Option<i64> {
        let queued = self.queue.peek().map(|s| s.at);
        let timers = [
            self.edge.as_ref().and_then(|e| e.poll_timeout()),
            self.hub.as_ref().and_then(|h| h.poll_timeout()),
        ];
        timers.into_iter().flatten().chain(queued).min()
    }

    fn step(&mut self) -> bool {
        let Some(at) = self.next_time() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        if self
            .edge
            .as_ref()
            .and_then(|e| e.poll_timeout())
            .is_some_and(|t| t <= now)
        {
            if let Some(edge) = self.edge.as_mut() {
                edge.handle_timeout(now);
            }
        } else if self
            .hub
            .as_ref()
            .and_then(|h| h.poll_timeout())
            .is_some_and(|t| t <= now)
        {
            if let Some(hub) = self.hub.as_mut() {
                hub.handle_timeout(now);
            }
        } else if let Some(scheduled) = self.queue.pop() {
            self.handle(scheduled.ev);
        }
        self.pump_edge();
        self.pump_hub();
        true
    }

    fn healed(&self) -> bool {
        let Some(edge) = self.edge.as_ref() else {
            return false;
        };
        let backlog_zero = self
            .edge_durable
            .snapshot()
            .streams
            .iter()
            .all(|s| s.acked >= s.recorded);
        edge.is_connected()
            && backlog_zero
            && self.commit_queue.is_empty()
            && self.hub.as_ref().is_some_and(|h| h.pending_commits() == 0)
    }

    /// Runs the faulty phase, then heals and drives to quiescence.
    fn run(&mut self) {
        let mut steps = 0u64;
        while self.now < T0 + 70_000 {
            if !self.step() {
                break;
            }
            steps += 1;
            if steps > 2_000_000 {
                self.fail("the faulty phase did not end");
            }
        }
        // Heal: no more faults, the network is perfect, the edge is up.
        self.faults = false;
        self.partitioned = false;
        self.queue.retain(|s| {
            matches!(
                &s.ev,
                Ev::Deliver { .. }
                    | Ev::CommitDone { .. }
                    | Ev::Reconnect { .. }
                    | Ev::EdgeDisconnected { .. }
                    | Ev::EdgeRestart
            )
        });
        if self.edge.is_none() {
            self.start_edge();
        }
        let deadline = self.now + 120_000;
        let mut steps = 0u64;
        if self.same_epoch_restored {
            // Reused keys can never heal; run a while and judge what was said.
            while self.now < deadline && steps < 1_000_000 && self.step() {
                steps += 1;
            }
            self.check();
            return;
        }
        while !self.healed() {
            if !self.step() || self.now > deadline || steps > 1_000_000 {
                self.fail(&format!(
                    "did not heal: backlog {:?}, edge connected {:?}, hub {:?}",
                    self.edge_durable.snapshot().streams,
                    self.edge.as_ref().map(|e| e.is_connected()),
                    self.hub.as_ref().map(|h| h.pending_commits())
                ));
            }
            steps += 1;
        }
        self.prune();
        self.check();
    }

    fn check(&mut self) {
        if self.same_epoch_restored {
            // Keys were minted twice with different content. That must be loud when the hub
            // had the first version, and the hub must never have overwritten it.
            let reused: Vec<&EventKey> = self
                .hub_durable
                .events
                .iter()
                .filter(|(key, (stored, _))| {
                    self.edge_durable
                        .outbox
                        .get(&(key.stream.epoch, key.stream.class))
                        .and_then(|m| m.get(&key.seq))
                        .is_some_and(|mine| mine != stored)
                })
                .map(|(k, _)| k)
                .collect();
            let loud = self.alarms.iter().any(|a| {
                matches!(
                    a,
                    Alarm::Conflict { .. } | Alarm::ChainBroken { .. } | Alarm::EdgeBehind { .. }
                )
            });
            if !reused.is_empty() && !loud {
                self.fail(&format!(
                    "{} keys reused with other content and no alarm: {:?}; edge {:?}; hub heads {:?}; alarms {:?}",
                    reused.len(),
                    reused.first(),
                    self.edge_durable.snapshot().streams,
                    self.hub_durable.heads.values().collect::<Vec<_>>(),
                    self.alarms
                ));
            }
            for (key, (stored, applies)) in &self.hub_durable.events {
                if *applies != 1 || !self.ever.contains_key(key) && stored.key != *key {
                    self.fail("hub event applied twice");
                }
            }
            return;
        }
        // No alarm in a run without bugs: chains verify, nothing conflicts.
        for alarm in &self.alarms {
            match alarm {
                Alarm::ChainBroken { .. } if self.scenario.tamper => {}
                Alarm::Conflict { .. } if self.scenario.tamper => {}
                // A restore from an older snapshot: the hub may hold more of the old epoch.
                Alarm::HubBehind { .. } => self.fail(&format!("alarm in an honest run: {alarm:?}")),
                other => self.fail(&format!("alarm in an honest run: {other:?}")),
            }
        }
        // Every event the edge holds is at the hub, with its content, exactly once.
        for events in self.edge_durable.outbox.values() {
            for event in events.values() {
                match self.hub_durable.events.get(&event.key) {
                    Some((stored, 1)) if stored == event => {}
                    Some((_, n)) if *n != 1 => {
                        self.fail(&format!("{:?} applied {n} times", event.key))
                    }
                    Some(_) => self.fail(&format!("{:?} differs at the hub", event.key)),
                    None => self.fail(&format!("{:?} never reached the hub", event.key)),
                }
            }
        }
        // Nothing at the hub that the edge did not seal; nothing tampered.
        for (key, (stored, _)) in &self.hub_durable.events {
            match self.ever.get(key) {
                Some(original) if original == stored => {}
                _ => self.fail(&format!(
                    "hub holds {key:?}, which the edge never sealed so"
                )),
            }
        }
        // Everything sealed and not lost to a restore is at the hub.
        for key in self.ever.keys() {
            if !self.lost.contains(key) && !self.hub_durable.events.contains_key(key) {
                self.fail(&format!(
                    "{key:?} was sealed, never lost, and is not at the hub"
                ));
            }
        }
        // The hub's streams are complete hash chains.
        let mut streams: BTreeMap<StreamId, Vec<Event>> = BTreeMap::new();
        for (key, (event, _)) in &self.hub_durable.events {
            streams
                .entry(key.stream.clone())
                .or_default()
                .push(event.clone());
        }
        for (stream, events) in &streams {
            let Some(first) = events.first() else {
                continue;
            };
            let start = StreamHead::genesis(first.prev);
            let contiguous_from_one = first.key.seq == SeqNo(1);
            if contiguous_from_one {
                if let Err(e) = verify_run(stream, start, events) {
                    // Gaps are legitimate only where a restore lost events that never
                    // reached the hub.
                    let gap_lost = matches!(e, storesync_protocol::event::ChainError::Gap { expected, .. }
                        if self.lost.contains(&EventKey { stream: stream.clone(), seq: expected }));
                    if !gap_lost {
                        self.fail(&format!("hub stream {stream:?} does not verify: {e}"));
                    }
                }
            }
        }
        // Rollups and inventory from the two logs agree.
        let edge_log: Vec<Event> = self
            .ever
            .iter()
            .filter(|(k, _)| !self.lost.contains(*k) || self.hub_durable.events.contains_key(*k))
            .map(|(_, e)| e.clone())
            .collect();
        let hub_log: Vec<Event> = self
            .hub_durable
            .events
            .values()
            .map(|(e, _)| e.clone())
            .collect();
        if rollups(&edge_log) != rollups(&hub_log) {
            self.fail("rollups differ");
        }
        if stock(&edge_log) != stock(&hub_log) {
            self.fail("inventory differs");
        }
    }
}

fn rollups(events: &[Event]) -> BTreeMap<RollupKey, SalesFigures> {
    let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let mut out: BTreeMap<RollupKey, SalesFigures> = BTreeMap::new();
    for event in events {
        if let EventBody::Transaction(tx) = &event.body {
            for (key, figures) in rollup_rows(tx, &tz) {
                out.entry(key).or_default().add(&figures);
            }
        }
    }
    out
}

fn stock(events: &[Event]) -> BTreeMap<Sku, i64> {
    inventory::fold(
        events
            .iter()
            .flat_map(|e| inventory::movements(&e.body))
            .collect(),
    )
}

fn scenario_name(s: &Scenario) -> &'static str {
    if s.restore_same_epoch {
        "same_epoch"
    } else if s.tamper {
        "tamper"
    } else if s.restore {
        "restore"
    } else {
        "honest"
    }
}

fn scenario_by_name(name: &str) -> Scenario {
    match name {
        "same_epoch" => Scenario {
            restore_same_epoch: true,
            ..honest()
        },
        "tamper" => Scenario {
            tamper: true,
            ..honest()
        },
        "restore" => Scenario {
            restore: true,
            ..honest()
        },
        _ => honest(),
    }
}

fn seeds(default: u64) -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn run_many(name: &str, base: u64, count: u64) {
    let scenario = scenario_by_name(name);
    let started = Instant::now();
    let mut stats = (0u64, 0usize, 0u64);
    for seed in base..base + count {
        let mut world = World::new(seed, scenario);
        world.run();
        stats.0 += world.ever.len() as u64;
        stats.1 += world.pruned;
        stats.2 += world.tampered_refused;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sim {name}: {count} seeds in {secs:.2} s ({:.0} seeds/s), {} events, {} pruned, {} tampered deliveries refused",
        count as f64 / secs,
        stats.0,
        stats.1,
        stats.2
    );
}

#[test]
fn honest_network_faults_and_crashes() {
    run_many("honest", 0, seeds(4_000));
}

#[test]
fn restore_from_older_snapshot_starts_a_new_epoch() {
    run_many("restore", 1_000_000, seeds(3_000));
}

#[test]
fn tampering_is_refused() {
    run_many("tamper", 2_000_000, seeds(2_000));
}

#[test]
fn restore_without_new_epoch_is_loud() {
    run_many("same_epoch", 3_000_000, seeds(1_000));
}

#[test]
fn priority_catch_up_sends_sales_first() {
    // An edge offline with a backlog of every class sends every sales batch before any
    // scan or telemetry batch, and each stream in order.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut sealer = Sealer::new(tenant(), store(), device(), Epoch(1), [Hash::ZERO; 3]);
    let mut world = World::new(7, honest());
    let snapshot = EdgeSnapshot {
        streams: vec![],
        ..world.edge_durable.snapshot()
    };
    let config = SessionConfig {
        batch_len_max: 4,
        window_batches_max: 64,
        ..SessionConfig::default()
    };
    let mut edge = EdgeSession::new(
        config,
        EdgeSnapshot {
            epoch: Epoch(1),
            ..snapshot
        },
    );
    let mut outbox: BTreeMap<EventClass, Vec<Event>> = BTreeMap::new();
    for _ in 0..200 {
        world.now = T0 + rng.random_range(0..1000);
        let event = sealer.seal(world.body());
        outbox
            .entry(event.key.stream.class)
            .or_default()
            .push(event.clone());
        edge.record(T0, event);
    }
    edge.connect(T0);
    let _ = edge.poll_message();
    edge.handle_message(
        T0,
        Message::Welcome(storesync_protocol::wire::Welcome {
            version: 1,
            committed: vec![],
            now_ms: T0,
        }),
    );
    let mut sent: Vec<(EventClass, SeqNo)> = Vec::new();
    for _ in 0..1000 {
        while let Some(action) = edge.poll_action() {
            if let EdgeAction::Fetch {
                class, from, limit, ..
            } = action
            {
                let events: Vec<Event> = outbox[&class]
                    .iter()
                    .filter(|e| e.key.seq >= from)
                    .take(limit)
                    .cloned()
                    .collect();
                edge.fetched(T0, Epoch(1), class, events);
            }
        }
        let Some(message) = edge.poll_message() else {
            break;
        };
        if let Message::EventBatch(batch) = message {
            for e in &batch.events {
                sent.push((e.key.stream.class, e.key.seq));
            }
            let last = batch.events.last().unwrap();
            edge.handle_message(
                T0,
                Message::Ack(storesync_protocol::wire::Ack {
                    batch_id: batch.batch_id,
                    epoch: Epoch(1),
                    class: last.key.stream.class,
                    through: last.key.seq,
                }),
            );
        }
    }
    let total: usize = outbox.values().map(Vec::len).sum();
    assert_eq!(sent.len(), total, "everything was sent once");
    let classes: Vec<EventClass> = sent.iter().map(|(c, _)| *c).collect();
    let mut sorted = classes.clone();
    sorted.sort();
    assert_eq!(classes, sorted, "classes in priority order");
    for class in EventClass::ALL {
        let seqs: Vec<u64> = sent
            .iter()
            .filter(|(c, _)| *c == class)
            .map(|(_, s)| s.0)
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{class:?} in order"
        );
    }
}

#[test]
fn replay() {
    // Replays one seed given in the environment; a no-op otherwise.
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) else {
        return;
    };
    let name = std::env::var("SIM_SCENARIO").unwrap_or_else(|_| "honest".into());
    let mut world = World::new(seed, scenario_by_name(&name));
    world.run();
    println!(
        "seed {seed} ({name}) passed: {} events, alarms {:?}",
        world.ever.len(),
        world.alarms
    );
}
