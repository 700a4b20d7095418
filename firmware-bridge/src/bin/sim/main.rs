//! `storesync-bridge-sim`: the firmware bridge on the host, for tests and simulators.
//!
//! It runs the library's [`storesync_bridge::driver::run`] unchanged on embassy's std
//! executor. The virtual network is in memory and needs no privileges: the firmware's
//! embassy-net stack (10.42.0.2) and a gateway stack (10.42.0.1) are joined by two
//! `embassy-net-driver-channel` devices and a task that copies IP packets between them. The
//! gateway accepts the bridge's TCP connection on the agent port and relays the bytes to
//! the real agent through a host socket (`--agent`), as a store PC on the peripherals' LAN
//! would. A TAP device would need root and `/dev/net/tun`, which CI containers may lack.
//!
//! Scans are JSON lines (the agent's `POST /api/v1/scans` shape) from a file or stdin
//! (`-`). When the input ends the simulator waits until every scan is acknowledged, prints
//! its counters as JSON on stdout and exits 0. Input lines that are not valid scans are
//! reported on stderr with the field and reason, counted, and make the exit status 2.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use async_io::Async;
use clap::Parser;
use embassy_executor::{Executor, Spawner};
use embassy_futures::join::join;
use embassy_futures::select::select;
use embassy_net::tcp::TcpSocket;
use embassy_net::{Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_net_driver_channel as channel;
use embassy_net_driver_channel::driver::{HardwareAddress, LinkState};
use embassy_time::{Duration, Timer, with_timeout};
use static_cell::StaticCell;
use storesync_bridge::driver::{AgentAddress, ScanQueue};
use storesync_bridge::{BridgeSession, Config, Event, OverflowPolicy, Stats};
use storesync_protocol::DeviceId;
use storesync_protocol::validate::{Context, Limits, scan_from_json};

const MTU: usize = 1500;
const FIRMWARE_IP: Ipv4Address = Ipv4Address::new(10, 42, 0, 2);
const GATEWAY_IP: Ipv4Address = Ipv4Address::new(10, 42, 0, 1);
/// The port the gateway listens on for the firmware (the agent's default bridge port).
const GATEWAY_PORT: u16 = 7401;

#[derive(Debug, Parser)]
#[command(
    name = "storesync-bridge-sim",
    about = "The storesync firmware bridge on the host"
)]
struct Args {
    /// JSON lines of scans; `-` for stdin.
    #[arg(long, default_value = "-")]
    input: PathBuf,
    /// The agent's bridge listener on the host.
    #[arg(long, default_value = "127.0.0.1:7401")]
    agent: SocketAddr,
    /// This bridge's device id.
    #[arg(long, default_value = "bridge-sim")]
    device: String,
    /// Unacknowledged scans kept (at most the library's PENDING_LEN_MAX).
    #[arg(long, default_value_t = storesync_bridge::PENDING_LEN_MAX)]
    pending_len_max: usize,
    /// `refuse-newest` or `drop-oldest`.
    #[arg(long, default_value = "refuse-newest")]
    overflow: String,
    /// Scans in flight per connection.
    #[arg(long, default_value_t = 16)]
    in_flight_len_max: usize,
    #[arg(long, default_value_t = 5_000)]
    ack_timeout_ms: u64,
    #[arg(long, default_value_t = 10_000)]
    heartbeat_interval_ms: u64,
    #[arg(long, default_value_t = 250)]
    reconnect_delay_ms_min: u64,
    #[arg(long, default_value_t = 30_000)]
    reconnect_delay_ms_max: u64,
    /// Seed of the reconnect jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

static SCANS: ScanQueue = ScanQueue::new();
static INPUT_DONE: AtomicBool = AtomicBool::new(false);
static INPUT_SCANS: AtomicU64 = AtomicU64::new(0);
static INPUT_REJECTED: AtomicU64 = AtomicU64::new(0);
static AGENT: StaticCell<SocketAddr> = StaticCell::new();
static EXECUTOR: StaticCell<Executor> = StaticCell::new();
static SESSION: StaticCell<BridgeSession> = StaticCell::new();
/// The counters as of the last event.
static LAST_STATS: std::sync::Mutex<Option<Stats>> = std::sync::Mutex::new(None);

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let overflow = match args.overflow.as_str() {
        "refuse-newest" => OverflowPolicy::RefuseNewest,
        "drop-oldest" => OverflowPolicy::DropOldest,
        other => {
            eprintln!(
                "storesync-bridge-sim: --overflow {other}: expected refuse-newest or drop-oldest"
            );
            return std::process::ExitCode::from(2);
        }
    };
    let device = match DeviceId::new(&args.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("storesync-bridge-sim: --device: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut config = Config::new(device);
    config.pending_len_max = args.pending_len_max;
    config.overflow = overflow;
    config.in_flight_len_max = args.in_flight_len_max;
    config.ack_timeout_ms = args.ack_timeout_ms;
    config.heartbeat_interval_ms = args.heartbeat_interval_ms;
    config.reconnect_delay_ms_min = args.reconnect_delay_ms_min;
    config.reconnect_delay_ms_max = args.reconnect_delay_ms_max;
    config.jitter_seed = args.seed;
    let session = SESSION.init(BridgeSession::new(config));
    let agent = AGENT.init(args.agent);

    let input = args.input.clone();
    std::thread::spawn(move || read_input(&input));

    let executor = EXECUTOR.init(Executor::new());
    executor.run(move |spawner| {
        if let Err(e) = start(spawner, session, agent) {
            eprintln!("storesync-bridge-sim: cannot start: {e:?}");
            std::process::exit(1);
        }
    })
}

/// Reads scans and hands them to the driver's queue, waiting while it is full.
fn read_input(path: &std::path::Path) {
    let reader: Box<dyn Read + Send> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        match std::fs::File::open(path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("storesync-bridge-sim: {}: {e}", path.display());
                std::process::exit(1);
            }
        }
    };
    let limits = Limits::default();
    for (index, line) in std::io::BufReader::new(reader).lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("storesync-bridge-sim: reading input: {e}");
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let ctx = Context {
            now_ms,
            limits: &limits,
            store: None,
        };
        let parsed = serde_json::from_str::<serde_json::Value>(&line)
            .map_err(|e| format!("$: not JSON: {e}"))
            .and_then(|v| {
                scan_from_json(&v, &ctx).map_err(|r| {
                    r.errors
                        .iter()
                        .map(|e| format!("{}: {}", e.field, e.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
            });
        match parsed {
            Ok(mut scan) => {
                INPUT_SCANS.fetch_add(1, Ordering::SeqCst);
                loop {
                    match SCANS.try_send(scan) {
                        Ok(()) => break,
                        Err(embassy_sync::channel::TrySendError::Full(back)) => {
                            scan = back;
                            std::thread::sleep(StdDuration::from_millis(2));
                        }
                    }
                }
            }
            Err(reason) => {
                INPUT_REJECTED.fetch_add(1, Ordering::SeqCst);
                eprintln!(
                    "storesync-bridge-sim: line {}: rejected: {reason}",
                    index + 1
                );
            }
        }
    }
    INPUT_DONE.store(true, Ordering::SeqCst);
}

type Device = channel::Device<'static, MTU>;

fn start(
    spawner: Spawner,
    session: &'static mut BridgeSession,
    agent: &'static SocketAddr,
) -> Result<(), embassy_executor::SpawnError> {
    static FIRMWARE_LINK: StaticCell<channel::State<MTU, 4, 4>> = StaticCell::new();
    static GATEWAY_LINK: StaticCell<channel::State<MTU, 4, 4>> = StaticCell::new();
    static FIRMWARE_RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();
    static GATEWAY_RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();

    let (firmware_runner, firmware_device) = channel::new(
        FIRMWARE_LINK.init(channel::State::new()),
        HardwareAddress::Ip,
    );
    let (gateway_runner, gateway_device) = channel::new(
        GATEWAY_LINK.init(channel::State::new()),
        HardwareAddress::Ip,
    );
    let (firmware, firmware_net) = embassy_net::new(
        firmware_device,
        embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(FIRMWARE_IP, 24),
            gateway: Some(GATEWAY_IP),
            dns_servers: heapless::Vec::new(),
        }),
        FIRMWARE_RESOURCES.init(StackResources::new()),
        0x5eed_0001,
    );
    let (gateway, gateway_net) = embassy_net::new(
        gateway_device,
        embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(GATEWAY_IP, 24),
            gateway: None,
            dns_servers: heapless::Vec::new(),
        }),
        GATEWAY_RESOURCES.init(StackResources::new()),
        0x5eed_0002,
    );
    spawner.spawn(net_task(firmware_net)?);
    spawner.spawn(net_task(gateway_net)?);
    spawner.spawn(link_task(firmware_runner, gateway_runner)?);
    for _ in 0..2 {
        spawner.spawn(gateway_task(gateway, *agent)?);
    }
    spawner.spawn(bridge_task(firmware, session)?);
    Ok(())
}

#[embassy_executor::task(pool_size = 2)]
async fn net_task(mut runner: embassy_net::Runner<'static, Device>) -> ! {
    runner.run().await
}

/// The wire between the two stacks: copies every IP packet each way.
#[embassy_executor::task]
async fn link_task(
    firmware: channel::Runner<'static, MTU>,
    gateway: channel::Runner<'static, MTU>,
) {
    let (firmware_state, mut firmware_rx, mut firmware_tx) = firmware.split();
    let (gateway_state, mut gateway_rx, mut gateway_tx) = gateway.split();
    firmware_state.set_link_state(LinkState::Up);
    gateway_state.set_link_state(LinkState::Up);
    join(
        copy_packets(&mut firmware_tx, &mut gateway_rx),
        copy_packets(&mut gateway_tx, &mut firmware_rx),
    )
    .await;
}

async fn copy_packets(from: &mut channel::TxRunner<'_, MTU>, to: &mut channel::RxRunner<'_, MTU>) {
    loop {
        let packet = from.tx_buf().await;
        let len = packet.len();
        let slot = to.rx_buf().await;
        let len = len.min(slot.len());
        if let (Some(dst), Some(src)) = (slot.get_mut(..len), packet.get(..len)) {
            dst.copy_from_slice(src);
        }
        to.rx_done(len);
        from.tx_done();
    }
}

/// The store PC's side of the LAN: accepts the firmware's connection and relays it to the
/// agent's host socket, closing each side when the other closes.
#[embassy_executor::task(pool_size = 2)]
async fn gateway_task(stack: embassy_net::Stack<'static>, agent: SocketAddr) {
    let mut rx_buffer = [0u8; 8192];
    let mut tx_buffer = [0u8; 8192];
    loop {
        let mut socket = TcpSocket::new(stack, &mut rx_buffer, &mut tx_buffer);
        if socket.accept(GATEWAY_PORT).await.is_err() {
            continue;
        }
        match Async::<TcpStream>::connect(agent).await {
            Ok(host) => {
                let _ = host.get_ref().set_nodelay(true);
                relay(&mut socket, &host).await;
                let _ = host.get_ref().shutdown(std::net::Shutdown::Both);
                socket.close();
                let _ = with_timeout(Duration::from_millis(500), socket.flush()).await;
            }
            Err(_) => {
                // Agent down: refuse the firmware's connection as the agent would.
            }
        }
        socket.abort();
        let _ = with_timeout(Duration::from_millis(100), socket.flush()).await;
    }
}

async fn relay(socket: &mut TcpSocket<'_>, host: &Async<TcpStream>) {
    let (mut reader, mut writer) = socket.split();
    let upstream = async {
        let mut buffer = [0u8; 2048];
        loop {
            let n = match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let bytes = buffer.get(..n).unwrap_or_default();
            if host.write_with(|mut s| s.write_all(bytes)).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let mut buffer = [0u8; 2048];
        loop {
            let n = match host.read_with(|mut s| s.read(&mut buffer)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut bytes = buffer.get(..n).unwrap_or_default();
            while !bytes.is_empty() {
                match writer.write(bytes).await {
                    Ok(0) | Err(_) => return,
                    Ok(written) => bytes = bytes.get(written..).unwrap_or_default(),
                }
            }
        }
    };
    select(upstream, downstream).await;
}

#[embassy_executor::task]
async fn bridge_task(stack: embassy_net::Stack<'static>, session: &'static mut BridgeSession) {
    let agent = AgentAddress::Gateway { port: GATEWAY_PORT };
    let mut observe = |event: Event, stats: &Stats| {
        eprintln!("storesync-bridge-sim: {event:?}");
        if let Ok(mut last) = LAST_STATS.lock() {
            *last = Some(*stats);
        }
    };
    // Exits once the input has ended and every scan read is acknowledged.
    let watch = async {
        loop {
            Timer::after(Duration::from_millis(20)).await;
            if !INPUT_DONE.load(Ordering::SeqCst) || !SCANS.is_empty() {
                continue;
            }
            let last = LAST_STATS.lock().ok().and_then(|s| *s).unwrap_or_default();
            if last.recorded == INPUT_SCANS.load(Ordering::SeqCst) && last.pending_len == 0 {
                finish(&last);
            }
        }
    };
    select(
        storesync_bridge::driver::run(stack, agent, session, &SCANS, &mut observe),
        watch,
    )
    .await;
}

fn finish(stats: &Stats) -> ! {
    let rejected = INPUT_REJECTED.load(Ordering::SeqCst);
    let summary = serde_json::json!({
        "recorded": stats.recorded,
        "acked": stats.acked,
        "ackedThrough": stats.acked_through,
        "pending": stats.pending_len,
        "framesSent": stats.frames_sent,
        "framesResent": stats.frames_resent,
        "heartbeatsSent": stats.heartbeats_sent,
        "refusedFull": stats.refused_full,
        "droppedOldest": stats.dropped_oldest,
        "connects": stats.connects,
        "connectFailures": stats.connect_failures,
        "disconnects": stats.disconnects,
        "inputRejected": rejected,
    });
    println!("{summary}");
    let _ = std::io::stdout().flush();
    std::process::exit(if rejected > 0 { 2 } else { 0 });
}
