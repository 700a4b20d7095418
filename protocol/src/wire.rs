//! The wire format: frames and messages.
//!
//! # Frame
//!
//! ```text
//! offset  size  field
//! 0       2     magic "SY" (0x53 0x59)
//! 2       1     frame format version (FRAME_VERSION = 1)
//! 3       1     message kind
//! 4       4     payload length, u32 little-endian, at most the decoder's frame_len_max
//! 8       n     payload: the message's fields, postcard-encoded
//! 8+n     4     CRC-32 (IEEE) of bytes 2..8+n, u32 little-endian
//! ```
//!
//! A frame with a bad magic, an unknown frame version, a length over the limit or a bad
//! checksum is an error of the byte stream: the stream cannot be resynchronized and the
//! connection is closed. A good frame whose payload does not decode is an error of that
//! message alone.
//!
//! # Message kinds a peer does not know
//!
//! Kinds `0x00..=0x7f` are *required*: a peer that receives one it does not know answers
//! [`Message::Error`] with [`ErrorCode::UnsupportedMessage`] and closes the session. Kinds
//! `0x80..=0xff` are *optional*: an unknown one is skipped silently. A newer peer that adds
//! an optional message can therefore talk to an older one without negotiation; a newer
//! required message is only sent when the negotiated protocol version includes it.
//!
//! # Compression
//!
//! A [`kind::COMPRESSED`] frame's payload is one complete inner frame compressed with
//! zstd. Shells compress large event batches and decompress before handing bytes to a
//! session, refusing output larger than `HEADER_LEN + frame_len_max + TRAILER_LEN` (a
//! decompression bomb is a frame over the limit). This crate does not compress: zstd is not
//! `no_std`, and the sessions see only inner frames.
//!
//! # Enrollment
//!
//! A device without a certificate connects with the enrollment ALPN and sends
//! [`EnrollRequest`] (its one-time token and a certificate signing request); the hub answers
//! [`Enrolled`] or [`Message::Error`]. A device whose certificate expired while offline
//! sends [`RenewRequest`], signed with its old key, within the hub's grace period.
//!
//! # Versions
//!
//! The session protocol version is negotiated in the handshake: the edge's [`Hello`] names
//! the range it speaks, the hub's [`Welcome`] picks the highest version both speak, or
//! answers [`ErrorCode::UnsupportedVersion`]. Version 1 is the only version so far.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::domain::{Alert, ScanEvent};
use crate::event::{
    Epoch, Event, EventBody, EventClass, EventKey, Hash, SeqNo, StreamHead, StreamId,
};
use crate::ids::{DeviceId, StoreId, TenantId};
use crate::time::UnixMillis;

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"SY";
/// The frame layout version.
pub const FRAME_VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 8;
/// Bytes after the payload.
pub const TRAILER_LEN: usize = 4;
/// Default largest payload, in bytes.
pub const FRAME_LEN_MAX_DEFAULT: usize = 8 * 1024 * 1024;
/// The newest session protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest session protocol version this build speaks.
pub const PROTOCOL_VERSION_MIN: u16 = 1;

/// An inclusive range of protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRange {
    /// Oldest.
    pub min: u16,
    /// Newest.
    pub max: u16,
}

impl VersionRange {
    /// What this build speaks.
    pub const CURRENT: VersionRange = VersionRange {
        min: PROTOCOL_VERSION_MIN,
        max: PROTOCOL_VERSION,
    };

    /// The highest version both ranges hold.
    pub fn negotiate(self, other: VersionRange) -> Option<u16> {
        let hi = self.max.min(other.max);
        let lo = self.min.max(other.min);
        (lo <= hi).then_some(hi)
    }
}

/// What an epoch forked from: the streams' heads as the restored data knew them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochLink {
    /// The epoch the data came from.
    pub parent: Epoch,
    /// Per class, the last event of `parent` the restored data held.
    pub heads: [StreamHead; 3],
}

/// A position in one of the device's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The epoch.
    pub epoch: Epoch,
    /// The class.
    pub class: EventClass,
    /// The sequence number.
    pub seq: SeqNo,
}

/// A stream's committed head at the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCommitted {
    /// The epoch.
    pub epoch: Epoch,
    /// The class.
    pub class: EventClass,
    /// Last committed sequence number and its chain hash (zero hash when nothing).
    pub head: StreamHead,
}

/// Edge → hub: the first message of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Versions the edge speaks.
    pub versions: VersionRange,
    /// Who the edge says it is; the hub checks this against the certificate.
    pub tenant: TenantId,
    /// Store.
    pub store: StoreId,
    /// Device.
    pub device: DeviceId,
    /// Current epoch.
    pub epoch: Epoch,
    /// Where the current epoch forked from, if it is not the device's first.
    pub link: Option<EpochLink>,
    /// Every stream the edge holds events of (the current epoch's always), with the
    /// highest sequence number the edge has seen acknowledged.
    pub acked: Vec<StreamPosition>,
    /// The edge's clock, for skew measurement.
    pub now_ms: UnixMillis,
    /// Events waiting to be sent, for fleet status.
    pub backlog: u64,
}

/// Hub → edge: the answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The negotiated version.
    pub version: u16,
    /// For every stream of the hello, the head the hub has committed.
    pub committed: Vec<StreamCommitted>,
    /// The hub's clock.
    pub now_ms: UnixMillis,
}

/// Edge → hub: a run of events of one stream.
///
/// On the wire a batch carries its stream once, the first sequence number, the first
/// event's predecessor hash, the bodies, and the chain hash the sender computed for its last
/// event. The receiver recomputes every content and chain hash and refuses the batch
/// unless they end at that hash: the run is checked end to end for 32 bytes a batch instead
/// of 64 bytes (two hashes) an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBatch {
    /// The sender's number for this batch, echoed in the [`Ack`].
    pub batch_id: u64,
    /// Events with consecutive sequence numbers of one stream.
    pub events: Vec<Event>,
}

#[derive(Serialize, Deserialize)]
struct WireBatch {
    batch_id: u64,
    run: Option<WireRun>,
}

#[derive(Serialize, Deserialize)]
struct WireRun {
    stream: StreamId,
    first_seq: SeqNo,
    prev: Hash,
    last: Hash,
    bodies: Vec<EventBody>,
}

impl EventBatch {
    fn to_wire(&self) -> Result<WireBatch, WireError> {
        let (Some(first), Some(last)) = (self.events.first(), self.events.last()) else {
            return Ok(WireBatch {
                batch_id: self.batch_id,
                run: None,
            });
        };
        for (i, event) in self.events.iter().enumerate() {
            let expected = first.key.seq.0.checked_add(i as u64);
            if event.key.stream != first.key.stream || Some(event.key.seq.0) != expected {
                return Err(WireError::Encode(String::from(
                    "a batch must be a contiguous run of one stream",
                )));
            }
        }
        Ok(WireBatch {
            batch_id: self.batch_id,
            run: Some(WireRun {
                stream: first.key.stream.clone(),
                first_seq: first.key.seq,
                prev: first.prev,
                last: last.chain_hash(),
                bodies: self.events.iter().map(|e| e.body.clone()).collect(),
            }),
        })
    }

    fn from_wire(wire: WireBatch) -> Result<EventBatch, String> {
        let Some(run) = wire.run else {
            return Ok(EventBatch {
                batch_id: wire.batch_id,
                events: Vec::new(),
            });
        };
        let mut events = Vec::with_capacity(run.bodies.len());
        let mut prev = run.prev;
        for (i, body) in run.bodies.into_iter().enumerate() {
            if body.class() != run.stream.class {
                return Err(String::from("an event is not of its stream's class"));
            }
            let seq = run
                .first_seq
                .0
                .checked_add(i as u64)
                .ok_or_else(|| String::from("sequence numbers overflow"))?;
            let event = Event {
                key: EventKey {
                    stream: run.stream.clone(),
                    seq: SeqNo(seq),
                },
                prev,
                content_hash: body.content_hash(),
                body,
            };
            prev = event.chain_hash();
            events.push(event);
        }
        if !events.is_empty() && prev != run.last {
            return Err(String::from(
                "the events do not hash to the batch's declared head",
            ));
        }
        Ok(EventBatch {
            batch_id: wire.batch_id,
            events,
        })
    }
}

/// Hub → edge: everything of a stream up to `through` is durably committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The batch this answers.
    pub batch_id: u64,
    /// Epoch.
    pub epoch: Epoch,
    /// Class.
    pub class: EventClass,
    /// The committed head.
    pub through: SeqNo,
}

/// Which replicated document a sync message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DocId {
    /// The tenant's catalog and alert rules.
    Tenant,
    /// The store's document: alert acknowledgements, tasks, settings.
    Store,
}

/// Either direction: one automerge sync protocol message, opaque to this crate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocSync {
    /// The document.
    pub doc: DocId,
    /// The automerge sync message bytes.
    pub data: Vec<u8>,
}

/// Either direction: I am alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender's clock.
    pub now_ms: UnixMillis,
    /// Events the sender has waiting (edge) or zero (hub).
    pub backlog: u64,
}

/// Error codes. Codes are stable numbers on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// No common protocol version.
    UnsupportedVersion,
    /// A required message kind the receiver does not know.
    UnsupportedMessage,
    /// A message out of place (events before the handshake, say).
    Protocol,
    /// The identity in the handshake is not the certificate's.
    Identity,
    /// A stream's hash chain or sequence is broken; the batch was not committed.
    Integrity,
    /// The receiver could not commit; retry later.
    Unavailable,
    /// A limit was exceeded.
    Limit,
}

/// Either direction: what went wrong. The sender closes the session after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// Machine-readable.
    pub code: ErrorCode,
    /// For people and logs.
    pub message: String,
}

/// Bridge → agent: one scan with the bridge's own sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeScan {
    /// The bridge device.
    pub device: DeviceId,
    /// The bridge's sequence number, starting at 1.
    pub seq: u64,
    /// The scan.
    pub scan: ScanEvent,
}

/// Agent → bridge: everything through `seq` is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeAck {
    /// The bridge device.
    pub device: DeviceId,
    /// The highest durable sequence number.
    pub seq: u64,
}

/// Device → hub (enrollment ALPN): a one-time token and a CSR for the device's new key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The token `storesync-hub enroll-token` printed.
    pub token: String,
    /// The device id the agent minted at `init`; its events carry it.
    pub device: DeviceId,
    /// PKCS#10 certificate signing request, DER.
    pub csr_der: Vec<u8>,
}

/// Device → hub (enrollment ALPN): renew a certificate, proving possession of its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    /// The current (possibly expired) certificate, DER.
    pub cert_der: Vec<u8>,
    /// PKCS#10 request for the new key, DER.
    pub csr_der: Vec<u8>,
    /// The device's clock.
    pub now_ms: UnixMillis,
    /// Signature by the current certificate's key over [`RenewRequest::signed_bytes`].
    pub signature: Vec<u8>,
}

impl RenewRequest {
    /// What the signature covers: a domain tag, the new CSR and the time.
    pub fn signed_bytes(csr_der: &[u8], now_ms: UnixMillis) -> Vec<u8> {
        let mut out = Vec::with_capacity(csr_der.len() + 32);
        out.extend_from_slice(b"storesync/renew/v1\0");
        out.extend_from_slice(&now_ms.to_le_bytes());
        out.extend_from_slice(csr_der);
        out
    }
}

/// Hub → device: the signed certificate and what the device must pin and hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    /// Tenant the certificate binds.
    pub tenant: TenantId,
    /// Store the certificate binds.
    pub store: StoreId,
    /// Device id the certificate binds.
    pub device: DeviceId,
    /// The device certificate, DER.
    pub cert_der: Vec<u8>,
    /// The tenant CA that issued it, DER.
    pub tenant_ca_der: Vec<u8>,
    /// The CA the hub's server certificate chains to, DER: the device pins it.
    pub hub_ca_der: Vec<u8>,
    /// The tenant's token-signing public key (PEM), for checking managers' tokens offline.
    pub token_key_pem: String,
    /// The `iss` of the hub's tokens.
    pub token_issuer: String,
    /// The `aud` of the hub's tokens.
    pub token_audience: String,
    /// When the certificate expires.
    pub not_after_ms: UnixMillis,
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Edge → hub handshake.
    Hello(Hello),
    /// Hub → edge handshake answer.
    Welcome(Welcome),
    /// Edge → hub events.
    EventBatch(EventBatch),
    /// Hub → edge acknowledgement.
    Ack(Ack),
    /// Document sync, both ways.
    DocSync(DocSync),
    /// An alert pushed live, both ways.
    Alert(Alert),
    /// Liveness, both ways.
    Heartbeat(Heartbeat),
    /// Error, then close.
    Error(ErrorMsg),
    /// Bridge → agent scan.
    BridgeScan(BridgeScan),
    /// Agent → bridge acknowledgement.
    BridgeAck(BridgeAck),
    /// Device → hub enrollment.
    EnrollRequest(EnrollRequest),
    /// Device → hub renewal.
    RenewRequest(RenewRequest),
    /// Hub → device certificate.
    Enrolled(Enrolled),
}

/// Message kind numbers. Below 0x80 required, from 0x80 optional.
pub mod kind {
    /// [`super::Message::Hello`].
    pub const HELLO: u8 = 0x01;
    /// [`super::Message::Welcome`].
    pub const WELCOME: u8 = 0x02;
    /// [`super::Message::EventBatch`].
    pub const EVENT_BATCH: u8 = 0x03;
    /// [`super::Message::Ack`].
    pub const ACK: u8 = 0x04;
    /// [`super::Message::DocSync`].
    pub const DOC_SYNC: u8 = 0x05;
    /// [`super::Message::Error`].
    pub const ERROR: u8 = 0x06;
    /// A zstd-compressed inner frame (see the module docs); never a [`super::Message`].
    pub const COMPRESSED: u8 = 0x07;
    /// [`super::Message::BridgeScan`].
    pub const BRIDGE_SCAN: u8 = 0x10;
    /// [`super::Message::BridgeAck`].
    pub const BRIDGE_ACK: u8 = 0x11;
    /// [`super::Message::EnrollRequest`].
    pub const ENROLL_REQUEST: u8 = 0x20;
    /// [`super::Message::RenewRequest`].
    pub const RENEW_REQUEST: u8 = 0x21;
    /// [`super::Message::Enrolled`].
    pub const ENROLLED: u8 = 0x22;
    /// [`super::Message::Heartbeat`] (optional).
    pub const HEARTBEAT: u8 = 0x80;
    /// [`super::Message::Alert`] (optional).
    pub const ALERT: u8 = 0x81;
    /// First optional kind.
    pub const OPTIONAL_MIN: u8 = 0x80;
}

/// Why bytes are not a frame or a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The stream does not start with [`MAGIC`].
    #[error("bad magic {0:02x?}")]
    Magic([u8; 2]),
    /// Unknown frame format version.
    #[error("unsupported frame version {0}")]
    FrameVersion(u8),
    /// Payload length over the limit.
    #[error("frame payload of {len} bytes exceeds frame_len_max = {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Checksum mismatch.
    #[error("frame checksum mismatch")]
    Checksum,
    /// The payload does not decode as its kind.
    #[error("message kind {kind:#04x} does not decode: {reason}")]
    Payload {
        /// Kind.
        kind: u8,
        /// Decoder's reason.
        reason: String,
    },
    /// The message does not encode (a programmer error surfaced as a value).
    #[error("message does not encode: {0}")]
    Encode(String),
}

impl WireError {
    /// Whether the byte stream is unusable after this error.
    pub fn is_fatal_to_stream(&self) -> bool {
        !matches!(self, WireError::Payload { .. })
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A message this build knows.
    Message(Message),
    /// A kind this build does not know; see the module doc for what to do.
    Unknown {
        /// The kind.
        kind: u8,
    },
}

impl Decoded {
    /// Whether an unknown kind may be skipped.
    pub fn is_optional_unknown(&self) -> bool {
        matches!(self, Decoded::Unknown { kind } if *kind >= kind::OPTIONAL_MIN)
    }
}

fn payload<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    postcard::to_allocvec(value).map_err(|e| WireError::Encode(alloc::format!("{e}")))
}

impl Message {
    /// The kind number.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => kind::HELLO,
            Message::Welcome(_) => kind::WELCOME,
            Message::EventBatch(_) => kind::EVENT_BATCH,
            Message::Ack(_) => kind::ACK,
            Message::DocSync(_) => kind::DOC_SYNC,
            Message::Alert(_) => kind::ALERT,
            Message::Heartbeat(_) => kind::HEARTBEAT,
            Message::Error(_) => kind::ERROR,
            Message::BridgeScan(_) => kind::BRIDGE_SCAN,
            Message::BridgeAck(_) => kind::BRIDGE_ACK,
            Message::EnrollRequest(_) => kind::ENROLL_REQUEST,
            Message::RenewRequest(_) => kind::RENEW_REQUEST,
            Message::Enrolled(_) => kind::ENROLLED,
        }
    }

    fn payload(&self) -> Result<Vec<u8>, WireError> {
        match self {
            Message::Hello(m) => payload(m),
            Message::Welcome(m) => payload(m),
            Message::EventBatch(m) => payload(&m.to_wire()?),
            Message::Ack(m) => payload(m),
            Message::DocSync(m) => payload(m),
            Message::Alert(m) => payload(m),
            Message::Heartbeat(m) => payload(m),
            Message::Error(m) => payload(m),
            Message::BridgeScan(m) => payload(m),
            Message::BridgeAck(m) => payload(m),
            Message::EnrollRequest(m) => payload(m),
            Message::RenewRequest(m) => payload(m),
            Message::Enrolled(m) => payload(m),
        }
    }

    /// Encodes into one frame appended to `out`, refusing payloads over `frame_len_max`.
    pub fn encode_into(&self, out: &mut Vec<u8>, frame_len_max: usize) -> Result<(), WireError> {
        let body = self.payload()?;
        if body.len() > frame_len_max || u32::try_from(body.len()).is_err() {
            return Err(WireError::TooLarge {
                len: body.len(),
                max: frame_len_max,
            });
        }
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(FRAME_VERSION);
        out.push(self.kind());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(out.get(start + 2..).unwrap_or_default());
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Encodes into a new frame with the default size limit.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        self.encode_into(&mut out, FRAME_LEN_MAX_DEFAULT)?;
        Ok(out)
    }

    /// Decodes a payload of `kind`.
    pub fn decode_payload(kind: u8, bytes: &[u8]) -> Result<Decoded, WireError> {
        fn de<'a, T: Deserialize<'a>>(kind: u8, bytes: &'a [u8]) -> Result<T, WireError> {
            match postcard::take_from_bytes::<T>(bytes) {
                Ok((value, [])) => Ok(value),
                Ok((_, rest)) => Err(WireError::Payload {
                    kind,
                    reason: alloc::format!("{} trailing bytes", rest.len()),
                }),
                Err(e) => Err(WireError::Payload {
                    kind,
                    reason: alloc::format!("{e}"),
                }),
            }
        }
        let message = match kind {
            kind::HELLO => Message::Hello(de(kind, bytes)?),
            kind::WELCOME => Message::Welcome(de(kind, bytes)?),
            kind::EVENT_BATCH => Message::EventBatch(
                EventBatch::from_wire(de(kind, bytes)?)
                    .map_err(|reason| WireError::Payload { kind, reason })?,
            ),
            kind::ACK => Message::Ack(de(kind, bytes)?),
            kind::DOC_SYNC => Message::DocSync(de(kind, bytes)?),
            kind::ALERT => Message::Alert(de(kind, bytes)?),
            kind::HEARTBEAT => Message::Heartbeat(de(kind, bytes)?),
            kind::ERROR => Message::Error(de(kind, bytes)?),
            kind::BRIDGE_SCAN => Message::BridgeScan(de(kind, bytes)?),
            kind::BRIDGE_ACK => Message::BridgeAck(de(kind, bytes)?),
            kind::ENROLL_REQUEST => Message::EnrollRequest(de(kind, bytes)?),
            kind::RENEW_REQUEST => Message::RenewRequest(de(kind, bytes)?),
            kind::ENROLLED => Message::Enrolled(de(kind, bytes)?),
            other => return Ok(Decoded::Unknown { kind: other }),
        };
        Ok(Decoded::Message(message))
    }
}

/// Splits a byte stream into frames. Feed bytes with [`FrameDecoder::push`], take frames
/// with [`FrameDecoder::next_frame`] until it returns `Ok(None)`.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    frame_len_max: usize,
    failed: bool,
}

impl FrameDecoder {
    /// A decoder refusing payloads over `frame_len_max` bytes.
    pub fn new(frame_len_max: usize) -> FrameDecoder {
        FrameDecoder {
            buffer: Vec::new(),
            frame_len_max,
            failed: false,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// Bytes received but not yet decoded.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed. After a stream
    /// error every later call returns the same kind of error.
    pub fn next_frame(&mut self) -> Result<Option<Decoded>, WireError> {
        if self.failed {
            return Err(WireError::Magic([0, 0]));
        }
        match decode_frame(&self.buffer, self.frame_len_max) {
            Ok(None) => Ok(None),
            Ok(Some((decoded, used))) => {
                self.buffer.drain(..used);
                Ok(Some(decoded))
            }
            Err((error, used)) => {
                if error.is_fatal_to_stream() {
                    self.failed = true;
                    self.buffer.clear();
                } else {
                    self.buffer.drain(..used);
                }
                Err(error)
            }
        }
    }
}

/// Wraps `compressed` (zstd of one complete frame) in a [`kind::COMPRESSED`] frame.
pub fn compressed_frame(compressed: &[u8], frame_len_max: usize) -> Result<Vec<u8>, WireError> {
    if compressed.len() > frame_len_max || u32::try_from(compressed.len()).is_err() {
        return Err(WireError::TooLarge {
            len: compressed.len(),
            max: frame_len_max,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + compressed.len() + TRAILER_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(FRAME_VERSION);
    out.push(kind::COMPRESSED);
    out.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
    out.extend_from_slice(compressed);
    let crc = crc32fast::hash(out.get(2..).unwrap_or_default());
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// A checked frame whose payload is not decoded yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// Message kind.
    pub kind: u8,
    /// Payload bytes.
    pub payload: &'a [u8],
    /// Bytes the whole frame takes.
    pub len: usize,
}

/// Splits the first complete frame off `bytes`, checking magic, version, length and
/// checksum but not decoding the payload; `Ok(None)` when incomplete. Shells use it to find
/// [`kind::COMPRESSED`] frames before handing bytes to a session.
pub fn split_frame(bytes: &[u8], frame_len_max: usize) -> Result<Option<RawFrame<'_>>, WireError> {
    let Some(header) = bytes.get(..HEADER_LEN) else {
        if let Some(first) = bytes.first()
            && *first != MAGIC[0]
        {
            return Err(WireError::Magic([
                *first,
                bytes.get(1).copied().unwrap_or(0),
            ]));
        }
        return Ok(None);
    };
    if header[..2] != MAGIC {
        return Err(WireError::Magic([header[0], header[1]]));
    }
    if header[2] != FRAME_VERSION {
        return Err(WireError::FrameVersion(header[2]));
    }
    let kind = header[3];
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > frame_len_max {
        return Err(WireError::TooLarge {
            len,
            max: frame_len_max,
        });
    }
    let total = HEADER_LEN + len + TRAILER_LEN;
    let Some(frame) = bytes.get(..total) else {
        return Ok(None);
    };
    let (covered, trailer) = frame.split_at(HEADER_LEN + len);
    let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if crc32fast::hash(&covered[2..]) != expected {
        return Err(WireError::Checksum);
    }
    Ok(Some(RawFrame {
        kind,
        payload: &covered[HEADER_LEN..],
        len: total,
    }))
}

/// Hands the complete frames at the start of `inbox` to `deliver`, inflating
/// [`kind::COMPRESSED`] frames with `inflate` (given the payload and the largest output it
/// may produce), and removes what was consumed. After a stream error the remaining bytes go
/// to `deliver`, so the session names the error and closes, and `inbox` is emptied.
/// Returns the inflater's error, after which the connection should close. Compression is
/// the shell's (zstd is not `no_std`); the framing rule is this crate's.
pub fn drain_frames(
    inbox: &mut Vec<u8>,
    frame_len_max: usize,
    mut inflate: impl FnMut(&[u8], usize) -> Result<Vec<u8>, String>,
    mut deliver: impl FnMut(&[u8]),
) -> Result<(), String> {
    let mut used = 0usize;
    loop {
        let rest = inbox.get(used..).unwrap_or_default();
        match split_frame(rest, frame_len_max) {
            Ok(None) => break,
            Ok(Some(raw)) => {
                let len = raw.len;
                if raw.kind == kind::COMPRESSED {
                    let capacity = HEADER_LEN + frame_len_max + TRAILER_LEN;
                    match inflate(raw.payload, capacity) {
                        Ok(inner) => deliver(&inner),
                        Err(e) => {
                            inbox.clear();
                            return Err(e);
                        }
                    }
                } else {
                    deliver(rest.get(..len).unwrap_or_default());
                }
                used += len;
            }
            Err(_) => {
                deliver(rest);
                inbox.clear();
                return Ok(());
            }
        }
    }
    inbox.drain(..used);
    Ok(())
}

/// Decodes one frame from the start of `bytes`: `Ok(None)` when incomplete, otherwise the
/// message and the number of bytes it took. A payload error reports how many bytes to skip.
pub fn decode_frame(
    bytes: &[u8],
    frame_len_max: usize,
) -> Result<Option<(Decoded, usize)>, (WireError, usize)> {
    let raw = match split_frame(bytes, frame_len_max) {
        Ok(Some(raw)) => raw,
        Ok(None) => return Ok(None),
        Err(e) => return Err((e, 0)),
    };
    match Message::decode_payload(raw.kind, raw.payload) {
        Ok(decoded) => Ok(Some((decoded, raw.len))),
        Err(e) => Err((e, raw.len)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_frames_delivers_inflates_and_keeps_partial_frames() {
        let plain = Message::Heartbeat(Heartbeat {
            now_ms: 1,
            backlog: 2,
        })
        .encode()
        .unwrap();
        // An identity "compression": the inner frame as is.
        let wrapped = compressed_frame(&plain, 1024).unwrap();
        let mut inbox = Vec::new();
        inbox.extend_from_slice(&plain);
        inbox.extend_from_slice(&wrapped);
        inbox.extend_from_slice(&plain[..5]);
        let mut delivered = Vec::new();
        let result = drain_frames(
            &mut inbox,
            1024,
            |p, _| Ok(p.to_vec()),
            |f| delivered.push(f.to_vec()),
        );
        assert_eq!(result, Ok(()));
        assert_eq!(delivered, vec![plain.clone(), plain.clone()]);
        assert_eq!(
            inbox,
            plain[..5].to_vec(),
            "a partial frame waits for more bytes"
        );

        let mut inbox = wrapped.clone();
        let result = drain_frames(&mut inbox, 1024, |_, _| Err("bomb".into()), |_| {});
        assert_eq!(result, Err("bomb".into()));
        assert!(inbox.is_empty());

        let mut inbox = b"garbage".to_vec();
        let mut delivered = Vec::new();
        assert_eq!(
            drain_frames(
                &mut inbox,
                1024,
                |p, _| Ok(p.to_vec()),
                |f| delivered.push(f.to_vec())
            ),
            Ok(())
        );
        assert_eq!(
            delivered,
            vec![b"garbage".to_vec()],
            "the session gets the bytes and names the error"
        );
        assert!(inbox.is_empty());
    }

    #[test]
    fn negotiation() {
        let a = VersionRange { min: 1, max: 3 };
        assert_eq!(a.negotiate(VersionRange { min: 2, max: 5 }), Some(3));
        assert_eq!(a.negotiate(VersionRange { min: 4, max: 5 }), None);
        assert_eq!(
            VersionRange::CURRENT.negotiate(VersionRange::CURRENT),
            Some(PROTOCOL_VERSION)
        );
    }

    #[test]
    fn unknown_kinds() {
        let mut frame = Message::Heartbeat(Heartbeat {
            now_ms: 5,
            backlog: 0,
        })
        .encode()
        .unwrap();
        // Rewrite the kind to an unknown optional one and fix the checksum.
        frame[3] = 0xfe;
        let n = frame.len();
        let crc = crc32fast::hash(&frame[2..n - 4]);
        frame[n - 4..].copy_from_slice(&crc.to_le_bytes());
        let (decoded, used) = decode_frame(&frame, 1024).unwrap().unwrap();
        assert_eq!(used, n);
        assert!(decoded.is_optional_unknown());
        frame[3] = 0x7e;
        let crc = crc32fast::hash(&frame[2..n - 4]);
        frame[n - 4..].copy_from_slice(&crc.to_le_bytes());
        let (decoded, _) = decode_frame(&frame, 1024).unwrap().unwrap();
        assert_eq!(decoded, Decoded::Unknown { kind: 0x7e });
        assert!(!decoded.is_optional_unknown());
    }

    #[test]
    fn stream_errors() {
        let frame = Message::Heartbeat(Heartbeat {
            now_ms: 5,
            backlog: 7,
        })
        .encode()
        .unwrap();
        let mut corrupt = frame.clone();
        let last = corrupt.len() - 5;
        corrupt[last] ^= 0x01;
        assert_eq!(
            decode_frame(&corrupt, 1024).unwrap_err().0,
            WireError::Checksum
        );
        assert!(matches!(
            decode_frame(b"GET / HTTP/1.1\r\n", 1024),
            Err((WireError::Magic(_), _))
        ));
        assert!(matches!(
            decode_frame(&frame, 1),
            Err((WireError::TooLarge { .. }, _))
        ));
        // Incomplete is not an error.
        assert_eq!(decode_frame(&frame[..frame.len() - 1], 1024).unwrap(), None);

        let mut decoder = FrameDecoder::new(1024);
        for byte in frame.iter().chain(frame.iter()) {
            decoder.push(&[*byte]);
        }
        assert!(matches!(
            decoder.next_frame(),
            Ok(Some(Decoded::Message(Message::Heartbeat(_))))
        ));
        assert!(matches!(
            decoder.next_frame(),
            Ok(Some(Decoded::Message(Message::Heartbeat(_))))
        ));
        assert_eq!(decoder.next_frame(), Ok(None));
    }
}
