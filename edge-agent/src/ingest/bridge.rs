//! The firmware-bridge listener: `storesync_protocol::wire` frames over TCP.
//!
//! A bridge sends [`Message::BridgeScan`] frames; the agent answers [`Message::BridgeAck`]
//! with the highest sequence number that is durable, only after the writer committed it.
//! Every frame already buffered is committed in one group, then acknowledged once. A scan
//! that fails validation is kept as a dead letter (with the raw frame) and acknowledged
//! too: it is durable, and resending it would not make it valid. A stream error (bad magic,
//! checksum, oversized frame) closes the connection; a frame whose payload does not decode
//! is dead-lettered and the stream continues. When the writer cannot commit (disk full),
//! nothing is acknowledged and the connection is closed so the bridge resends later.

use std::collections::BTreeMap;
use std::sync::Arc;

use storesync_protocol::DeviceId;
use storesync_protocol::validate::{FieldError, scan_from_json};
use storesync_protocol::wire::{BridgeAck, Decoded, ErrorCode, ErrorMsg, Message, decode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{context, now_ms};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::writer::{Record, Submission, WriterHandle};

/// Accepts bridge connections until `stop` flips.
pub async fn serve(
    listener: TcpListener,
    settings: Arc<Settings>,
    writer: WriterHandle,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(
        settings.config.limits.bridge_connections_max,
    ));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "bridge accept failed");
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, "too many bridge connections; refusing");
            continue;
        };
        let settings = Arc::clone(&settings);
        let writer = writer.clone();
        let metrics = Arc::clone(&metrics);
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(socket, &settings, &writer, &metrics, stop).await {
                tracing::info!(%peer, error = %e, "bridge connection closed");
            }
            drop(permit);
        });
    }
}

async fn send(socket: &mut TcpStream, message: &Message, frame_max: usize) -> std::io::Result<()> {
    let mut out = Vec::new();
    message
        .encode_into(&mut out, frame_max)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    socket.write_all(&out).await
}

async fn connection(
    mut socket: TcpStream,
    settings: &Settings,
    writer: &WriterHandle,
    metrics: &Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let frame_max = settings.config.limits.frame_bytes_max;
    let mut buffer: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = socket.read(&mut chunk) => r?,
            _ = stop.changed() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let now = now_ms();
        let ctx = context(now, &settings.record_limits, &settings.store);
        let mut submissions = Vec::new();
        let mut acks: BTreeMap<DeviceId, u64> = BTreeMap::new();
        let mut fatal = None;
        loop {
            match decode_frame(&buffer, frame_max) {
                Ok(None) => break,
                Ok(Some((decoded, used))) => {
                    let raw: Vec<u8> = buffer.drain(..used).collect();
                    match decoded {
                        Decoded::Message(Message::BridgeScan(frame)) => {
                            let source = format!("bridge:{}:{}", frame.device, frame.seq);
                            let parsed = scan_from_json(&frame.scan.to_json(), &ctx)
                                .map(Record::Scan)
                                .map_err(|r| r.errors);
                            let seq = acks.entry(frame.device.clone()).or_insert(0);
                            *seq = (*seq).max(frame.seq);
                            submissions.push(Submission {
                                source,
                                kind: "frame",
                                raw,
                                parsed,
                                resubmit_of: None,
                            });
                        }
                        Decoded::Message(Message::Heartbeat(_)) => {}
                        Decoded::Message(other) => {
                            fatal = Some(format!(
                                "unexpected message kind {:#04x} from a bridge",
                                other.kind()
                            ));
                            break;
                        }
                        unknown @ Decoded::Unknown { kind } => {
                            if !unknown.is_optional_unknown() {
                                let _ = send(
                                    &mut socket,
                                    &Message::Error(ErrorMsg {
                                        code: ErrorCode::UnsupportedMessage,
                                        message: format!(
                                            "unknown required message kind {kind:#04x}"
                                        ),
                                    }),
                                    frame_max,
                                )
                                .await;
                                fatal = Some(format!("unknown required message kind {kind:#04x}"));
                                break;
                            }
                        }
                    }
                }
                Err((error, used)) if !error.is_fatal_to_stream() => {
                    let raw: Vec<u8> = buffer.drain(..used.min(buffer.len())).collect();
                    submissions.push(Submission {
                        source: "bridge:undecodable".into(),
                        kind: "frame",
                        raw,
                        parsed: Err(vec![FieldError {
                            field: "$".into(),
                            reason: error.to_string(),
                        }]),
                        resubmit_of: None,
                    });
                }
                Err((error, _)) => {
                    let _ = send(
                        &mut socket,
                        &Message::Error(ErrorMsg {
                            code: if matches!(
                                error,
                                storesync_protocol::wire::WireError::TooLarge { .. }
                            ) {
                                ErrorCode::Limit
                            } else {
                                ErrorCode::Protocol
                            },
                            message: error.to_string(),
                        }),
                        frame_max,
                    )
                    .await;
                    fatal = Some(error.to_string());
                    break;
                }
            }
        }
        if !submissions.is_empty() {
            metrics.bridge_frames(submissions.len() as u64);
            // Durable first, then acknowledged.
            if let Err(e) = writer.submit(submissions, now).await {
                return Err(std::io::Error::other(format!(
                    "not recorded, not acknowledged: {e}"
                )));
            }
            for (device, seq) in acks {
                send(
                    &mut socket,
                    &Message::BridgeAck(BridgeAck { device, seq }),
                    frame_max,
                )
                .await?;
            }
        }
        if let Some(reason) = fatal {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, reason));
        }
        if buffer.len() > frame_max + 64 {
            // decode_frame refuses oversized frames from their header, so this is only a
            // safety net for memory.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "frame buffer over limit",
            ));
        }
    }
}
