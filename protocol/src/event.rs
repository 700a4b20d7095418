//! Event identity, classes and the per-stream hash chain.
//!
//! Every event a device records has a key `(tenant, store, device, epoch, class, seq)` and a
//! content hash. Within one `(device, epoch, class)` *stream* the sequence numbers are
//! 1, 2, 3, ... without gaps and every event names the chain hash of its predecessor, so the
//! hub can prove a stream complete and untampered.
//!
//! The **epoch** is a random number minted by the shell at install, at restore of a backup
//! and when a data directory is found copied; a new epoch starts new streams whose first
//! event names, as its predecessor, the last chain hash the restored data knew (the fork
//! point), or [`Hash::ZERO`] on a fresh install. Sequence numbers therefore never repeat
//! under one key, even when a device goes back in time.

use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::{Alert, ScanEvent, StockAdjustment, Telemetry, Transaction};
use crate::ids::{DeviceId, StoreId, TenantId};

/// Priority classes. A catching-up session sends the lowest-numbered class with pending
/// events first; each class is its own ordered stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventClass {
    /// Transactions and stock adjustments: money and stock.
    Sales = 0,
    /// Scanner events.
    Scans = 1,
    /// Alerts and telemetry.
    Telemetry = 2,
}

impl EventClass {
    /// All classes, highest priority first.
    pub const ALL: [EventClass; 3] = [EventClass::Sales, EventClass::Scans, EventClass::Telemetry];

    /// Index into per-class arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::Sales => "sales",
            EventClass::Scans => "scans",
            EventClass::Telemetry => "telemetry",
        }
    }

    /// From a stored number.
    pub fn from_u8(n: u8) -> Option<EventClass> {
        match n {
            0 => Some(EventClass::Sales),
            1 => Some(EventClass::Scans),
            2 => Some(EventClass::Telemetry),
            _ => None,
        }
    }
}

/// A device's incarnation: new at every install, restore or clone of its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Epoch(pub u64);

/// A position in a stream; the first event of a stream is 1, 0 means "nothing yet".
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// Before the first event.
    pub const ZERO: SeqNo = SeqNo(0);

    /// The next position.
    pub fn next(self) -> SeqNo {
        SeqNo(self.0.saturating_add(1))
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A BLAKE3 hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The predecessor of the first event of a device's first epoch.
    pub const ZERO: Hash = Hash([0; 32]);

    /// Lower-case hex.
    pub fn to_hex(&self) -> alloc::string::String {
        use core::fmt::Write;
        let mut s = alloc::string::String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        write!(f, "Hash({})", hex.get(..12).unwrap_or(&hex))
    }
}

/// Which device stream an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    /// Tenant.
    pub tenant: TenantId,
    /// Store.
    pub store: StoreId,
    /// Device.
    pub device: DeviceId,
    /// Incarnation.
    pub epoch: Epoch,
    /// Class.
    pub class: EventClass,
}

/// The identity of an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventKey {
    /// The stream.
    pub stream: StreamId,
    /// Position in the stream.
    pub seq: SeqNo,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventBody {
    /// A POS transaction.
    Transaction(Transaction),
    /// A stock adjustment or transfer leg.
    Adjustment(StockAdjustment),
    /// A scanner event.
    Scan(ScanEvent),
    /// An alert raised or changed at the edge.
    Alert(Alert),
    /// A measurement of the agent.
    Telemetry(Telemetry),
}

impl EventBody {
    /// The class (stream) this kind of event travels in.
    pub fn class(&self) -> EventClass {
        match self {
            EventBody::Transaction(_) | EventBody::Adjustment(_) => EventClass::Sales,
            EventBody::Scan(_) => EventClass::Scans,
            EventBody::Alert(_) | EventBody::Telemetry(_) => EventClass::Telemetry,
        }
    }

    /// The content hash: BLAKE3 over a domain tag and the body's postcard bytes, which are
    /// deterministic for these types (no maps with unordered iteration).
    pub fn content_hash(&self) -> Hash {
        content_hash_of(&self.encode())
    }

    /// The body's postcard bytes. Encoding into a Vec cannot fail for these types: every
    /// field is serializable and no length exceeds postcard's varint range.
    fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

fn content_hash_of(bytes: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"storesync/content/v1\0");
    hasher.update(bytes);
    Hash(*hasher.finalize().as_bytes())
}

/// A body with its postcard bytes and its content hash, both computed once: a store that
/// keeps the bytes and seals the body needs no second encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBody {
    body: EventBody,
    bytes: Vec<u8>,
    content_hash: Hash,
}

impl EncodedBody {
    /// Encodes and hashes `body`.
    pub fn new(body: EventBody) -> EncodedBody {
        let bytes = body.encode();
        let content_hash = content_hash_of(&bytes);
        EncodedBody {
            body,
            bytes,
            content_hash,
        }
    }

    /// The body.
    pub fn body(&self) -> &EventBody {
        &self.body
    }

    /// Its postcard bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its content hash ([`EventBody::content_hash`]).
    pub fn content_hash(&self) -> Hash {
        self.content_hash
    }
}

/// A sealed event: key, predecessor, content hash and body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Identity.
    pub key: EventKey,
    /// Chain hash of the predecessor in the stream (the fork point for an epoch's first).
    pub prev: Hash,
    /// Hash of `body`.
    pub content_hash: Hash,
    /// What happened.
    pub body: EventBody,
}

/// `H(tag ‖ prev ‖ postcard(key) ‖ content)`: the link the next event names.
pub fn chain_hash(prev: &Hash, key: &EventKey, content: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"storesync/chain/v1\0");
    hasher.update(&prev.0);
    hasher.update(&postcard::to_allocvec(key).unwrap_or_default());
    hasher.update(&content.0);
    Hash(*hasher.finalize().as_bytes())
}

impl Event {
    /// This event's chain hash.
    pub fn chain_hash(&self) -> Hash {
        chain_hash(&self.prev, &self.key, &self.content_hash)
    }

    /// Whether `content_hash` matches `body`.
    pub fn content_ok(&self) -> bool {
        self.body.content_hash() == self.content_hash && self.body.class() == self.key.stream.class
    }
}

/// The end of one stream: the last sequence number and its chain hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamHead {
    /// Last sequence number (0 for an empty stream).
    pub seq: SeqNo,
    /// Chain hash of the last event (the fork point for an empty stream of a new epoch).
    pub hash: Hash,
}

impl StreamHead {
    /// An empty stream that continues from `fork`.
    pub fn genesis(fork: Hash) -> StreamHead {
        StreamHead {
            seq: SeqNo::ZERO,
            hash: fork,
        }
    }
}

/// The edge's minting state for one device epoch: the head of each class's stream.
///
/// The shell persists the heads in the same database transaction as the events it seals,
/// so sealing and durability cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealer {
    tenant: TenantId,
    store: StoreId,
    device: DeviceId,
    epoch: Epoch,
    heads: [StreamHead; 3],
}

impl Sealer {
    /// A sealer for a new epoch whose streams fork from `forks` (by class), or start from
    /// [`Hash::ZERO`] on a fresh install.
    pub fn new(
        tenant: TenantId,
        store: StoreId,
        device: DeviceId,
        epoch: Epoch,
        forks: [Hash; 3],
    ) -> Sealer {
        Sealer {
            tenant,
            store,
            device,
            epoch,
            heads: forks.map(StreamHead::genesis),
        }
    }

    /// Resumes from persisted heads.
    pub fn resume(
        tenant: TenantId,
        store: StoreId,
        device: DeviceId,
        epoch: Epoch,
        heads: [StreamHead; 3],
    ) -> Sealer {
        Sealer {
            tenant,
            store,
            device,
            epoch,
            heads,
        }
    }

    /// The epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The head of `class`'s stream.
    pub fn head(&self, class: EventClass) -> StreamHead {
        self.heads[class.index()]
    }

    /// All heads, by class.
    pub fn heads(&self) -> [StreamHead; 3] {
        self.heads
    }

    /// The stream id of `class` in this epoch.
    pub fn stream(&self, class: EventClass) -> StreamId {
        StreamId {
            tenant: self.tenant.clone(),
            store: self.store.clone(),
            device: self.device.clone(),
            epoch: self.epoch,
            class,
        }
    }

    /// Assigns the next key of the body's class, links it and advances the head.
    pub fn seal(&mut self, body: EventBody) -> Event {
        self.seal_encoded(EncodedBody::new(body)).0
    }

    /// [`Sealer::seal`] of a body already encoded; also returns the body's bytes.
    pub fn seal_encoded(&mut self, encoded: EncodedBody) -> (Event, Vec<u8>) {
        let EncodedBody {
            body,
            bytes,
            content_hash,
        } = encoded;
        let class = body.class();
        let head = &mut self.heads[class.index()];
        let key = EventKey {
            stream: StreamId {
                tenant: self.tenant.clone(),
                store: self.store.clone(),
                device: self.device.clone(),
                epoch: self.epoch,
                class,
            },
            seq: head.seq.next(),
        };
        let prev = head.hash;
        let event = Event {
            key,
            prev,
            content_hash,
            body,
        };
        *head = StreamHead {
            seq: event.key.seq,
            hash: event.chain_hash(),
        };
        (event, bytes)
    }
}

/// Why a run of events does not extend a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The body does not hash to the event's content hash (or sits in the wrong class).
    #[error("event {seq}: content does not match its hash")]
    Content {
        /// Position.
        seq: SeqNo,
    },
    /// The event does not name its predecessor's chain hash.
    #[error("event {seq}: chain link broken")]
    Link {
        /// Position.
        seq: SeqNo,
    },
    /// A sequence number is not the one after its predecessor.
    #[error("event {seq}: expected sequence {expected}")]
    Gap {
        /// Position found.
        seq: SeqNo,
        /// Position expected.
        expected: SeqNo,
    },
    /// The events belong to another stream.
    #[error("event {seq}: belongs to another stream")]
    Stream {
        /// Position.
        seq: SeqNo,
    },
}

/// Verifies that `events` extend the stream `stream` whose head is `head`, and returns the
/// new head.
pub fn verify_run(
    stream: &StreamId,
    head: StreamHead,
    events: &[Event],
) -> Result<StreamHead, ChainError> {
    let mut head = head;
    for event in events {
        let seq = event.key.seq;
        if &event.key.stream != stream {
            return Err(ChainError::Stream { seq });
        }
        if seq != head.seq.next() {
            return Err(ChainError::Gap {
                seq,
                expected: head.seq.next(),
            });
        }
        if !event.content_ok() {
            return Err(ChainError::Content { seq });
        }
        if event.prev != head.hash {
            return Err(ChainError::Link { seq });
        }
        head = StreamHead {
            seq,
            hash: event.chain_hash(),
        };
    }
    Ok(head)
}

/// Events of one stream, in order: the unit of sync.
pub type Run = Vec<Event>;
