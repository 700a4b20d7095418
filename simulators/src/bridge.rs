//! Scans as a firmware bridge sends them: `BridgeScan` frames of the protocol's wire format
//! over TCP to the agent's bridge listener, each with the bridge's sequence number; the
//! agent answers `BridgeAck` with the highest sequence number it made durable.
//!
//! A batch counts as delivered once its last sequence number is acknowledged. When the
//! connection fails (the agent restarting), the unacknowledged frames are sent again on a
//! new connection; the agent keeps scans by `scanId`, so a resent scan is not stored twice.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context as _, bail};
use storesync_protocol::validate::{Context, Limits, scan_from_json};
use storesync_protocol::wire::{BridgeScan, Decoded, FRAME_LEN_MAX_DEFAULT, Message, decode_frame};
use storesync_protocol::{DeviceId, StoreId};

use crate::chain::{Record, RecordKind};

/// Attempts (connections) per batch before giving up.
const ATTEMPTS_MAX: u32 = 30;
/// How long to wait for an acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// A bridge device sending to one agent; sequence numbers continue across batches.
#[derive(Debug)]
pub struct Bridge {
    addr: String,
    device: DeviceId,
    store: StoreId,
    seq: u64,
}

impl Bridge {
    /// The bridge `device` of `store`, sending to the listener at `addr` (`host:port`).
    pub fn new(addr: &str, store: &str, device: &str) -> anyhow::Result<Bridge> {
        Ok(Bridge {
            addr: addr.to_owned(),
            device: DeviceId::new(device)
                .map_err(|e| anyhow::anyhow!("device id {device}: {e}"))?,
            store: StoreId::new(store).map_err(|e| anyhow::anyhow!("store id {store}: {e}"))?,
            seq: 0,
        })
    }

    /// Sends the scans among `records` and waits until the agent acknowledged all of
    /// them. Returns how many were sent.
    pub fn send(&mut self, records: &[Record]) -> anyhow::Result<u64> {
        let limits = Limits::default();
        let ctx = Context {
            now_ms: i64::MAX / 2,
            limits: &limits,
            store: Some(&self.store),
        };
        let mut frames = Vec::new();
        let first = self.seq + 1;
        for r in records.iter().filter(|r| r.kind == RecordKind::Scan) {
            let scan = scan_from_json(&r.json, &ctx)
                .map_err(|e| anyhow::anyhow!("generated scan is invalid: {e:?}: {}", r.json))?;
            self.seq += 1;
            Message::BridgeScan(BridgeScan {
                device: self.device.clone(),
                seq: self.seq,
                scan,
            })
            .encode_into(&mut frames, FRAME_LEN_MAX_DEFAULT)
            .context("encoding a bridge frame")?;
        }
        let last = self.seq;
        if last < first {
            return Ok(0);
        }
        let mut last_error = String::new();
        for attempt in 0..ATTEMPTS_MAX {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 * u64::from(attempt.min(8))));
            }
            match self.exchange(&frames, last) {
                Ok(()) => return Ok(last - first + 1),
                Err(e) => last_error = format!("{e:#}"),
            }
        }
        bail!(
            "bridge {}: gave up after {ATTEMPTS_MAX} attempts: {last_error}",
            self.addr
        )
    }

    /// One connection: writes every frame and reads acknowledgements up to `last`.
    fn exchange(&self, frames: &[u8], last: u64) -> anyhow::Result<()> {
        let mut stream = TcpStream::connect(&self.addr)
            .with_context(|| format!("connecting to the bridge listener {}", self.addr))?;
        stream.set_read_timeout(Some(ACK_TIMEOUT))?;
        stream.set_write_timeout(Some(ACK_TIMEOUT))?;
        stream.write_all(frames)?;
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                bail!("the agent closed the bridge connection before acknowledging");
            }
            buffer.extend_from_slice(&chunk[..n]);
            while let Some((decoded, used)) = decode_frame(&buffer, FRAME_LEN_MAX_DEFAULT)
                .map_err(|(e, _)| anyhow::anyhow!("bad frame from the agent: {e}"))?
            {
                buffer.drain(..used);
                match decoded {
                    Decoded::Message(Message::BridgeAck(ack)) if ack.device == self.device => {
                        if ack.seq >= last {
                            return Ok(());
                        }
                    }
                    Decoded::Message(Message::Error(e)) => {
                        bail!("the agent refused the frames: {:?}: {}", e.code, e.message)
                    }
                    _ => {}
                }
            }
        }
    }
}
