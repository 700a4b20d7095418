//! The sync client: drives an [`EdgeSession`] over one QUIC connection at a time.
//!
//! One task owns the session. It reads the outbox when the session asks
//! ([`EdgeAction::Fetch`]), marks acknowledgements durable ([`EdgeAction::Acked`]), reads
//! the outbox heads as soon as the writer has committed something new
//! ([`WriterHandle::completed`], so a sale goes out within a commit's time) and at least
//! every [`SyncOptions::poll_interval_ms`], and re-arms a single timer at
//! [`EdgeSession::poll_timeout`]. A session ends with a typed
//! [`CloseReason`]; transient reasons reconnect after an exponential, jittered delay,
//! identity and version problems after the maximum delay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use storesync_protocol::domain::{AlertKind, Severity};
use storesync_protocol::event::{SeqNo, StreamId};
use storesync_protocol::session::Alarm;
use storesync_protocol::session::{
    CloseReason, EdgeAction, EdgeSession, EdgeSnapshot, EdgeStreamState, SessionConfig,
    reconnect_delay_ms,
};
use storesync_protocol::wire::{self, kind};
use tokio::sync::watch;

use super::enroll::{self, EnrollError};
use super::{ALPN_SYNC, COMPRESS_MIN_BYTES, Enrollment, HUB_SERVER_NAME, Paths, tls};
use crate::alerts::Candidate;
use crate::store::Store;
use crate::writer::WriterHandle;

/// Tunables of the sync client.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Session limits (batch size, window, timeouts).
    pub session: SessionConfig,
    /// Bytes per second the agent may send; `None` for no cap (thin store links set one).
    pub bandwidth_bytes_per_s_max: Option<u64>,
    /// First reconnect delay.
    pub reconnect_delay_ms_base: u64,
    /// Longest reconnect delay.
    pub reconnect_delay_ms_max: u64,
    /// How often the outbox heads are read while connected even without a commit signal
    /// from the writer (a safety net; new events normally go out on the signal).
    pub poll_interval_ms: u64,
    /// Renew the certificate when it expires within this many milliseconds.
    pub renew_before_ms: i64,
    /// How long a connection attempt may take.
    pub connect_timeout_ms: u64,
}

impl Default for SyncOptions {
    fn default() -> SyncOptions {
        SyncOptions {
            session: SessionConfig::default(),
            bandwidth_bytes_per_s_max: None,
            reconnect_delay_ms_base: 500,
            reconnect_delay_ms_max: 60_000,
            poll_interval_ms: 1_000,
            renew_before_ms: 7 * 86_400_000,
            connect_timeout_ms: 10_000,
        }
    }
}

/// What the local API shows about sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// Whether a session is established.
    pub connected: bool,
    /// When the last session was established (Unix ms).
    pub last_connected_ms: Option<i64>,
    /// When the hub last acknowledged something (Unix ms).
    pub last_ack_ms: Option<i64>,
    /// Events not yet acknowledged.
    pub backlog: u64,
    /// Hub clock minus agent clock at the last handshake.
    pub clock_skew_ms: Option<i64>,
    /// Why the last session ended or the last attempt failed.
    pub last_error: Option<String>,
    /// Alarms raised by sessions since start.
    pub alarms: u64,
    /// Reconnect attempts since the last established session.
    pub attempt: u32,
}

/// Everything the client needs.
#[derive(Debug, Clone)]
pub struct SyncContext {
    /// Outbox reads.
    pub store: Store,
    /// Acknowledgements.
    pub writer: WriterHandle,
    /// Where the certificate and key are.
    pub paths: Paths,
    /// The enrollment (hub address, expiry).
    pub enrollment: Enrollment,
    /// Tunables.
    pub options: SyncOptions,
    /// The replicated documents.
    pub docs: crate::docs::Docs,
}

/// The store's own alert for a sync alarm, so the manager sees it in the alert list (and
/// the hub in its telemetry) and not in the log alone; `None` for alarms the hub raises
/// itself. Its subject names the stream, so a reconnect that finds the same condition is
/// inside the alert's cool-down.
fn alarm_candidate(alarm: &Alarm) -> Option<Candidate> {
    let stream_subject =
        |stream: &StreamId| format!("sync:{}:{}", stream.epoch.0, stream.class.as_str());
    let seq = |seq: SeqNo| i64::try_from(seq.0).unwrap_or(i64::MAX);
    let (severity, subject, message, facts) = match alarm {
        Alarm::OutboxMissing { stream, from } => (
            Severity::Critical,
            stream_subject(stream),
            format!(
                "the hub needs {} events from {} that this store no longer holds; that stream cannot sync",
                stream.class.as_str(),
                from.0
            ),
            vec![("from_seq".to_owned(), seq(*from))],
        ),
        Alarm::EdgeBehind {
            stream,
            recorded,
            committed,
        } => (
            Severity::Critical,
            stream_subject(stream),
            format!(
                "the hub holds {} {} events of this store's epoch, more than the {} recorded here: the data directory went back in time without a new epoch (restore backups with `storesync-edge restore`)",
                committed.0,
                stream.class.as_str(),
                recorded.0
            ),
            vec![
                ("recorded_seq".to_owned(), seq(*recorded)),
                ("committed_seq".to_owned(), seq(*committed)),
            ],
        ),
        Alarm::HubBehind {
            stream,
            acked,
            committed,
        } => (
            Severity::Warning,
            stream_subject(stream),
            format!(
                "the hub had lost {} events it had acknowledged (it holds {} of {}); they are sent again",
                stream.class.as_str(),
                committed.0,
                acked.0
            ),
            vec![
                ("acked_seq".to_owned(), seq(*acked)),
                ("committed_seq".to_owned(), seq(*committed)),
            ],
        ),
        _ => return None,
    };
    Some(Candidate {
        kind: AlertKind::JournalIntegrity,
        severity,
        subject,
        message,
        facts,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Starts the client; it stops when `stop` turns true.
pub fn spawn(
    ctx: SyncContext,
    stop: watch::Receiver<bool>,
) -> (tokio::task::JoinHandle<()>, watch::Receiver<SyncStatus>) {
    let (status_tx, status_rx) = watch::channel(SyncStatus::default());
    let task = tokio::spawn(run(ctx, stop, status_tx));
    (task, status_rx)
}

async fn snapshot(store: &Store) -> Result<EdgeSnapshot, String> {
    let identity = store.identity();
    let mut streams = store.outbox_streams().await.map_err(|e| e.to_string())?;
    // Older epochs first; the session ranks epochs by their order here.
    streams.sort_by_key(|s| s.epoch == identity.epoch);
    Ok(EdgeSnapshot {
        tenant: identity.tenant.clone(),
        store: identity.store.clone(),
        device: identity.device.clone(),
        epoch: identity.epoch,
        link: identity.link.clone(),
        streams: streams
            .into_iter()
            .map(|s| EdgeStreamState {
                epoch: s.epoch,
                class: s.class,
                recorded: s.head.seq,
                recorded_hash: s.head.hash,
                acked: s.acked,
            })
            .collect(),
    })
}

async fn run(
    mut ctx: SyncContext,
    mut stop: watch::Receiver<bool>,
    status: watch::Sender<SyncStatus>,
) {
    let mut session = loop {
        match snapshot(&ctx.store).await {
            Ok(snapshot) => break EdgeSession::new(ctx.options.session.clone(), snapshot),
            Err(e) => {
                tracing::warn!(error = %e, "sync: reading the outbox failed; retrying");
                status.send_modify(|s| s.last_error = Some(e));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    let mut attempt: u32 = 0;
    let mut endpoint: Option<(SocketAddr, quinn::Endpoint)> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let before = now_ms();
        let outcome = connect_once(&mut ctx, &mut session, &mut stop, &status, &mut endpoint).await;
        let connected = status
            .borrow()
            .last_connected_ms
            .is_some_and(|t| t >= before);
        let (delay_max, reason) = match outcome {
            Ok(Some(CloseReason::Local)) => break,
            Ok(Some(reason)) => {
                let transient = reason.is_transient();
                (
                    if transient {
                        ctx.options.reconnect_delay_ms_max
                    } else {
                        u64::MAX
                    },
                    format!("{reason:?}"),
                )
            }
            Ok(None) => break,
            Err(e) => (ctx.options.reconnect_delay_ms_max, e),
        };
        attempt = if connected {
            0
        } else {
            attempt.saturating_add(1)
        };
        let delay = if delay_max == u64::MAX {
            ctx.options.reconnect_delay_ms_max
        } else {
            reconnect_delay_ms(
                attempt,
                ctx.options.reconnect_delay_ms_base,
                delay_max,
                rand::random::<f64>(),
            )
        };
        tracing::info!(reason = %reason, delay_ms = delay, "sync: session ended");
        status.send_modify(|s| {
            s.connected = false;
            s.last_error = Some(reason);
            s.attempt = attempt;
        });
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
            _ = stop.changed() => break,
        }
    }
    if let Some((_, endpoint)) = endpoint {
        endpoint.close(0u32.into(), b"shutdown");
        endpoint.wait_idle().await;
    }
}

/// One connection: `Ok(Some(reason))` when a session ended, `Ok(None)` on stop, `Err`
/// when no session started.
async fn connect_once(
    ctx: &mut SyncContext,
    session: &mut EdgeSession,
    stop: &mut watch::Receiver<bool>,
    status: &watch::Sender<SyncStatus>,
    endpoint_slot: &mut Option<(SocketAddr, quinn::Endpoint)>,
) -> Result<Option<CloseReason>, String> {
    if ctx.enrollment.not_after_ms - now_ms() < ctx.options.renew_before_ms {
        match enroll::renew(&ctx.paths, &ctx.enrollment, now_ms()).await {
            Ok(renewed) => {
                tracing::info!(
                    not_after_ms = renewed.not_after_ms,
                    "sync: certificate renewed"
                );
                ctx.enrollment = renewed;
            }
            Err(e) if ctx.enrollment.not_after_ms > now_ms() => {
                tracing::warn!(error = %e, "sync: renewal failed; the current certificate is still valid");
            }
            Err(e) => return Err(format!("certificate expired and renewal failed: {e}")),
        }
    }
    let (cert, key, hub_ca) =
        enroll::credentials(&ctx.paths).map_err(|e: EnrollError| e.to_string())?;
    let tls = tls::sync_config(hub_ca, cert, key, ALPN_SYNC).map_err(|e| e.to_string())?;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(tls::transport()));
    let addr = enroll::resolve(&ctx.enrollment.hub)
        .await
        .map_err(|e| e.to_string())?;
    let endpoint = match endpoint_slot {
        Some((bound_for, endpoint)) if bound_for.is_ipv6() == addr.is_ipv6() => endpoint.clone(),
        _ => {
            let endpoint = enroll::endpoint_for(addr).map_err(|e| e.to_string())?;
            *endpoint_slot = Some((addr, endpoint.clone()));
            endpoint
        }
    };
    let connecting = endpoint
        .connect_with(config, addr, HUB_SERVER_NAME)
        .map_err(|e| e.to_string())?;
    let connection = tokio::time::timeout(
        Duration::from_millis(ctx.options.connect_timeout_ms),
        connecting,
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    let mut limiter = ctx.options.bandwidth_bytes_per_s_max.map(Bandwidth::new);
    let frame_len_max = ctx.options.session.frame_len_max;
    session.connect(now_ms());
    let mut inbox: Vec<u8> = Vec::new();
    let mut poll =
        tokio::time::interval(Duration::from_millis(ctx.options.poll_interval_ms.max(1)));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut completed = ctx.writer.completed();
    let started = Instant::now();
    loop {
        // Drain everything the session has to say before waiting.
        loop {
            let mut progressed = false;
            while let Some(frame) = session.poll_transmit() {
                progressed = true;
                if let Err(e) = send_frame(&mut send, frame, limiter.as_mut(), frame_len_max).await
                {
                    session.disconnected(&e);
                }
            }
            while let Some(action) = session.poll_action() {
                progressed = true;
                match action {
                    EdgeAction::Fetch {
                        epoch,
                        class,
                        from,
                        limit,
                    } => match ctx.store.outbox_read(epoch, class, from, limit).await {
                        Ok(events) => session.fetched(now_ms(), epoch, class, events),
                        Err(e) => session.disconnected(&format!("outbox read failed: {e}")),
                    },
                    EdgeAction::Acked {
                        epoch,
                        class,
                        through,
                    } => {
                        if let Err(e) = ctx.writer.mark_acked(epoch, class, through).await {
                            tracing::warn!(error = %e, "sync: recording an acknowledgement failed");
                        }
                        let backlog = session.backlog();
                        status.send_modify(|s| {
                            s.last_ack_ms = Some(now_ms());
                            s.backlog = backlog;
                        });
                    }
                    EdgeAction::Connected { version, skew_ms } => {
                        tracing::info!(
                            version,
                            skew_ms,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "sync: connected"
                        );
                        let backlog = session.backlog();
                        status.send_modify(|s| {
                            s.connected = true;
                            s.last_connected_ms = Some(now_ms());
                            s.clock_skew_ms = Some(skew_ms);
                            s.backlog = backlog;
                            s.attempt = 0;
                        });
                        for message in ctx.docs.connected().await {
                            session.send_doc(now_ms(), message);
                        }
                    }
                    EdgeAction::Alarm(alarm) => {
                        tracing::error!(?alarm, "sync: alarm");
                        status.send_modify(|s| s.alarms += 1);
                        if let Some(candidate) = alarm_candidate(&alarm)
                            && let Err(e) = ctx.writer.raise(candidate, now_ms()).await
                        {
                            tracing::warn!(error = %e, "sync: storing the alarm's alert failed");
                        }
                    }
                    EdgeAction::DocSync(message) => match ctx.docs.receive(message).await {
                        Ok(answers) => {
                            for answer in answers {
                                session.send_doc(now_ms(), answer);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "sync: alarm: document message from the hub refused");
                            status.send_modify(|s| s.alarms += 1);
                            session.disconnected(&format!("document message refused: {e}"));
                        }
                    },
                    EdgeAction::Alert(_) => {}
                    EdgeAction::Closed(reason) => {
                        while let Some(frame) = session.poll_transmit() {
                            let _ =
                                send_frame(&mut send, frame, limiter.as_mut(), frame_len_max).await;
                        }
                        let _ = send.finish();
                        connection.close(0u32.into(), b"session closed");
                        return Ok(Some(reason));
                    }
                    _ => {}
                }
            }
            if !progressed {
                break;
            }
        }
        let deadline = session.poll_timeout().map(|at| {
            let wait = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
            tokio::time::Instant::now() + Duration::from_millis(wait)
        });
        tokio::select! {
            _ = stop.changed() => {
                session.close();
                while let Some(frame) = session.poll_transmit() {
                    let _ = send_frame(&mut send, frame, limiter.as_mut(), frame_len_max).await;
                }
                let _ = send.finish();
                connection.close(0u32.into(), b"shutdown");
                return Ok(None);
            }
            chunk = recv.read_chunk(64 * 1024, true) => match chunk {
                Ok(Some(chunk)) => feed(&mut inbox, &chunk.bytes, session, frame_len_max),
                Ok(None) => session.disconnected("the hub finished the stream"),
                Err(e) => session.disconnected(&e.to_string()),
            },
            _ = sleep_until(deadline) => session.handle_timeout(now_ms()),
            _ = ctx.docs.changed() => {
                for message in ctx.docs.outgoing().await {
                    session.send_doc(now_ms(), message);
                }
            }
            changed = completed.changed(), if completed.has_changed().is_ok() => {
                if changed.is_ok() {
                    read_heads(ctx, session).await;
                }
            }
            _ = poll.tick() => read_heads(ctx, session).await,
        }
    }
}

/// Tells the session how far each outbox stream is recorded.
async fn read_heads(ctx: &SyncContext, session: &mut EdgeSession) {
    match ctx.store.outbox_streams().await {
        Ok(streams) => {
            let now = now_ms();
            for s in streams {
                session.recorded_up_to(now, s.epoch, s.class, s.head);
            }
        }
        Err(e) => tracing::warn!(error = %e, "sync: reading outbox heads failed"),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Splits received bytes into frames, inflating compressed ones, and feeds the session.
fn feed(inbox: &mut Vec<u8>, bytes: &[u8], session: &mut EdgeSession, frame_len_max: usize) {
    inbox.extend_from_slice(bytes);
    let now = now_ms();
    let inflate = |payload: &[u8], capacity: usize| {
        zstd::bulk::decompress(payload, capacity).map_err(|e| e.to_string())
    };
    if let Err(e) = wire::drain_frames(inbox, frame_len_max, inflate, |frame| {
        session.handle_bytes(now, frame)
    }) {
        session.disconnected(&format!("a compressed frame does not inflate: {e}"));
    }
}

/// Writes one frame, compressing large event batches, within the bandwidth cap.
async fn send_frame(
    send: &mut quinn::SendStream,
    frame: Vec<u8>,
    limiter: Option<&mut Bandwidth>,
    frame_len_max: usize,
) -> Result<(), String> {
    let is_batch = frame.get(3) == Some(&kind::EVENT_BATCH);
    let bytes = if is_batch && frame.len() >= COMPRESS_MIN_BYTES {
        match zstd::bulk::compress(&frame, 1) {
            Ok(small) if small.len() < frame.len() => {
                wire::compressed_frame(&small, frame_len_max).unwrap_or(frame)
            }
            _ => frame,
        }
    } else {
        frame
    };
    if let Some(limiter) = limiter {
        limiter.take(bytes.len()).await;
    }
    send.write_all(&bytes).await.map_err(|e| e.to_string())
}

/// A token bucket of bytes: at most one second of burst.
#[derive(Debug)]
struct Bandwidth {
    rate: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl Bandwidth {
    fn new(bytes_per_s: u64) -> Bandwidth {
        let rate = bytes_per_s.max(1) as f64;
        Bandwidth {
            rate,
            tokens: rate,
            last: tokio::time::Instant::now(),
        }
    }

    async fn take(&mut self, bytes: usize) {
        let now = tokio::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        self.tokens -= bytes as f64;
        if self.tokens < 0.0 {
            let wait = -self.tokens / self.rate;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            self.last = tokio::time::Instant::now();
            self.tokens = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cap holds over time: a second of burst, then the configured rate.
    #[tokio::test(start_paused = true)]
    async fn the_bandwidth_cap_paces_frames_to_its_rate() {
        let mut cap = Bandwidth::new(1_000);
        let started = tokio::time::Instant::now();
        cap.take(1_000).await;
        assert_eq!(started.elapsed(), Duration::ZERO, "the burst goes at once");
        for _ in 0..10 {
            cap.take(500).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        assert!(
            (4.9..5.1).contains(&elapsed),
            "6,000 bytes at 1,000/s took {elapsed} s"
        );
        // Idle time refills the bucket, never past one second's worth.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let before = tokio::time::Instant::now();
        cap.take(1_000).await;
        assert_eq!(before.elapsed(), Duration::ZERO);
        cap.take(1_000).await;
        let waited = before.elapsed().as_secs_f64();
        assert!((0.9..1.1).contains(&waited), "{waited} s");
    }
}
