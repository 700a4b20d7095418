//! The embassy-net shell: one task that drives a [`BridgeSession`] over a TCP socket.
//!
//! It selects over three inputs — bytes from the socket, scans from a [`ScanQueue`], the
//! session's timer — feeds them to the session, performs the connects, writes and closes
//! the session asks for, and hands every [`Event`] to an observer. It holds no protocol
//! state of its own.

use embassy_futures::select::{Either, Either3, select, select3};
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpAddress, IpEndpoint, Stack};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_time::{Duration, Instant, Timer, with_timeout};
use storesync_protocol::ScanEvent;

use crate::session::{Action, BridgeSession, CloseReason, Event, OverflowPolicy, Stats};

/// Scans waiting for the driver. When it is full the producer must tell the operator
/// (the driver stops taking scans while the ring is full under
/// [`OverflowPolicy::RefuseNewest`]).
pub const SCAN_QUEUE_LEN: usize = 8;

/// The queue through which scanners hand scans to the driver. A `static` works:
/// `static SCANS: ScanQueue = ScanQueue::new();`.
pub type ScanQueue = Channel<CriticalSectionRawMutex, ScanEvent, SCAN_QUEUE_LEN>;

/// Socket receive buffer (acknowledgements are small).
const SOCKET_RX_LEN: usize = 1024;
/// Socket send buffer: room for a window of scan frames.
const SOCKET_TX_LEN: usize = 4096;

/// Where the agent's bridge listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAddress {
    /// A configured address.
    Fixed(IpEndpoint),
    /// The IPv4 gateway the network configuration (DHCP) provided, at this port: the
    /// store PC is usually the peripherals' gateway.
    Gateway {
        /// The agent's bridge port.
        port: u16,
    },
}

impl AgentAddress {
    fn resolve(&self, stack: Stack<'_>) -> Option<IpEndpoint> {
        match *self {
            AgentAddress::Fixed(endpoint) => Some(endpoint),
            AgentAddress::Gateway { port } => {
                let gateway = stack.config_v4()?.gateway?;
                Some(IpEndpoint::new(IpAddress::Ipv4(gateway), port))
            }
        }
    }
}

fn now_ms() -> u64 {
    Instant::now().as_millis()
}

fn report(session: &mut BridgeSession, observe: &mut dyn FnMut(Event, &Stats)) {
    while let Some(event) = session.poll_event() {
        let stats = session.stats();
        observe(event, &stats);
    }
}

/// Takes a scan from `scans` when the session can hold it; otherwise never resolves.
async fn next_scan(session: &BridgeSession, scans: &ScanQueue) -> ScanEvent {
    let can_take = session.has_room() || session.config().overflow == OverflowPolicy::DropOldest;
    if can_take {
        scans.receive().await
    } else {
        core::future::pending().await
    }
}

async fn until(deadline_ms: Option<u64>) {
    match deadline_ms {
        Some(ms) => Timer::at(Instant::from_millis(ms)).await,
        None => core::future::pending().await,
    }
}

fn record(session: &mut BridgeSession, scan: ScanEvent) {
    // A refusal is counted and reported by the session itself (`Stats`, `Event`).
    let _ = session.record(scan);
}

/// Runs the bridge forever: connects to `agent`, sends every scan taken from `scans`,
/// retransmits until acknowledged, reconnects with backoff. `observe` sees every event
/// with the counters at that moment.
pub async fn run(
    stack: Stack<'_>,
    agent: AgentAddress,
    session: &mut BridgeSession,
    scans: &ScanQueue,
    observe: &mut dyn FnMut(Event, &Stats),
) -> ! {
    let mut rx_buffer = [0u8; SOCKET_RX_LEN];
    let mut tx_buffer = [0u8; SOCKET_TX_LEN];
    loop {
        report(session, observe);
        match session.poll_action() {
            Some(Action::Connect) => {
                let mut socket = TcpSocket::new(stack, &mut rx_buffer, &mut tx_buffer);
                let connect_timeout = Duration::from_millis(session.config().connect_timeout_ms);
                socket.set_timeout(Some(connect_timeout));
                let connected = match agent.resolve(stack) {
                    Some(endpoint) => matches!(
                        with_timeout(connect_timeout, socket.connect(endpoint)).await,
                        Ok(Ok(()))
                    ),
                    None => false,
                };
                if connected {
                    // After the handshake the session's acknowledgement timeout is the
                    // liveness check; the socket's own is only a backstop.
                    let ack_timeout = session.config().ack_timeout_ms;
                    socket.set_timeout(Some(Duration::from_millis(ack_timeout.saturating_mul(4))));
                    socket.set_nagle_enabled(false);
                    session.handle_connected(now_ms());
                    connection(&mut socket, session, scans, observe).await;
                } else {
                    session.handle_connect_failed(now_ms());
                }
                socket.abort();
                let _ = with_timeout(Duration::from_millis(100), socket.flush()).await;
            }
            // Not connected: nothing to close.
            Some(Action::Close(_)) => {}
            None => {
                let deadline = session.poll_timeout();
                let woken = select(next_scan(session, scans), until(deadline)).await;
                match woken {
                    Either::First(scan) => record(session, scan),
                    Either::Second(()) => session.handle_timeout(now_ms()),
                }
            }
        }
    }
}

/// Drives one established connection until it ends.
async fn connection(
    socket: &mut TcpSocket<'_>,
    session: &mut BridgeSession,
    scans: &ScanQueue,
    observe: &mut dyn FnMut(Event, &Stats),
) {
    let mut read_buffer = [0u8; 256];
    let write_timeout = Duration::from_millis(session.config().ack_timeout_ms);
    loop {
        while let Some(frame) = session.poll_transmit(now_ms()) {
            match with_timeout(write_timeout, write_all(socket, frame)).await {
                Ok(Ok(())) => {}
                Ok(Err(())) => session.handle_link_lost(now_ms(), CloseReason::LinkError),
                Err(_) => session.handle_link_lost(now_ms(), CloseReason::WriteStalled),
            }
        }
        if !session.is_connected() {
            // Closed by the session (its action is only informative here) or lost.
            let _ = session.poll_action();
            report(session, observe);
            return;
        }
        report(session, observe);
        let deadline = session.poll_timeout();
        let readable = select3(
            socket.read(&mut read_buffer),
            next_scan(session, scans),
            until(deadline),
        )
        .await;
        match readable {
            Either3::First(Ok(0)) => session.handle_link_lost(now_ms(), CloseReason::PeerClosed),
            Either3::First(Ok(n)) => {
                session.handle_received(now_ms(), read_buffer.get(..n).unwrap_or_default());
            }
            Either3::First(Err(_)) => session.handle_link_lost(now_ms(), CloseReason::LinkError),
            Either3::Second(scan) => record(session, scan),
            Either3::Third(()) => session.handle_timeout(now_ms()),
        }
    }
}

async fn write_all(socket: &mut TcpSocket<'_>, mut bytes: &[u8]) -> Result<(), ()> {
    while !bytes.is_empty() {
        match socket.write(bytes).await {
            Ok(0) | Err(_) => return Err(()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
        }
    }
    Ok(())
}
