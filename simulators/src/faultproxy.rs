//! A UDP fault proxy between one client and one upstream address, for testing sync over a
//! bad network.
//!
//! The proxy listens on one address and forwards every datagram it receives there to the
//! upstream address from a socket of its own; what the upstream answers goes back to the
//! client, which is whoever sent the latest datagram to the listening address (a restarted
//! client with a new port takes over). Each direction has its own [`Faults`]: loss,
//! duplication, and delay with jitter, which reorders datagrams. A [`FaultHandle`] switches
//! a partition on and off, changes the faults while running, and reads [`Stats`].
//!
//! Every decision comes from a seeded RNG per direction: the n-th datagram of a direction
//! meets the same fate under the same seed. What the proxy cannot make repeatable is the
//! traffic itself (when the endpoints send what), so a seed replays the network, not a run.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use storesync_sim::faultproxy::{self, Direction, Faults, ProxyConfig};
//! let faults = Faults { loss: 0.2, duplicate: 0.05, delay_ms: 0, jitter_ms: 200 };
//! let proxy = faultproxy::start(ProxyConfig {
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     upstream: "127.0.0.1:7443".parse().unwrap(),
//!     to_upstream: faults,
//!     to_client: faults,
//!     seed: 7,
//! })
//! .await?;
//! proxy.set_partitioned(true);
//! proxy.set_partitioned(false);
//! proxy.set_faults(Direction::ToUpstream, Faults::NONE);
//! # Ok(()) }
//! ```
//!
//! It does not corrupt, truncate or rate-limit datagrams, and serves one client at a time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Largest datagram forwarded (the UDP maximum).
const DATAGRAM_LEN_MAX: usize = 65_535;

/// Datagrams held back for delay per direction; more are dropped and counted as overflow.
pub const QUEUE_LEN_MAX: usize = 16_384;

/// What happens to the datagrams of one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability that a datagram is dropped, 0.0..=1.0.
    pub loss: f64,
    /// Probability that a datagram that was not dropped is sent twice, each copy with its
    /// own delay.
    pub duplicate: f64,
    /// Delay added to every datagram.
    pub delay_ms: u64,
    /// A further delay, uniform in `0..=jitter_ms`; datagrams overtake each other.
    pub jitter_ms: u64,
}

impl Faults {
    /// A perfect link.
    pub const NONE: Faults = Faults {
        loss: 0.0,
        duplicate: 0.0,
        delay_ms: 0,
        jitter_ms: 0,
    };
}

impl Default for Faults {
    fn default() -> Faults {
        Faults::NONE
    }
}

/// A direction of traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the upstream address.
    ToUpstream,
    /// From the upstream address back to the client.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToUpstream => 0,
            Direction::ToClient => 1,
        }
    }
}

/// Where the proxy listens, where it forwards, and its faults.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The address clients send to (port 0 picks a free one; see [`FaultHandle::local_addr`]).
    pub listen: SocketAddr,
    /// The address datagrams are forwarded to.
    pub upstream: SocketAddr,
    /// Faults from the client to the upstream address.
    pub to_upstream: Faults,
    /// Faults from the upstream address to the client.
    pub to_client: Faults,
    /// Seed of the fault decisions.
    pub seed: u64,
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams sent on (copies included).
    pub sent: u64,
    /// Datagrams dropped by the loss probability.
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Datagrams dropped by a partition (on arrival or when due).
    pub partitioned: u64,
    /// Datagrams dropped because the delay queue was full.
    pub overflowed: u64,
    /// Datagrams that could not be sent (no client yet, or a socket error).
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    sent: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    partitioned: AtomicU64,
    overflowed: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Stats {
        Stats {
            received: self.received.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            partitioned: self.partitioned.load(Ordering::Relaxed),
            overflowed: self.overflowed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// State shared by the two pumps and the handle.
#[derive(Debug)]
struct Shared {
    faults: [Mutex<Faults>; 2],
    partitioned: [AtomicBool; 2],
    counters: [Counters; 2],
    /// Whoever sent the latest datagram to the listening address.
    client: Mutex<Option<SocketAddr>>,
}

impl Shared {
    fn faults(&self, direction: Direction) -> Faults {
        *self.faults[direction.index()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn partitioned(&self, direction: Direction) -> bool {
        self.partitioned[direction.index()].load(Ordering::SeqCst)
    }

    fn client(&self) -> Option<SocketAddr> {
        *self.client.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_client(&self, addr: SocketAddr) {
        *self.client.lock().unwrap_or_else(PoisonError::into_inner) = Some(addr);
    }
}

/// Controls a running proxy; dropping it stops the proxy.
#[derive(Debug)]
pub struct FaultHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    seed: u64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FaultHandle {
    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The seed of the fault decisions.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Drops everything in both directions while `on`, including datagrams already delayed.
    pub fn set_partitioned(&self, on: bool) {
        for direction in [Direction::ToUpstream, Direction::ToClient] {
            self.set_partitioned_one_way(direction, on);
        }
    }

    /// Drops everything in one direction while `on`.
    pub fn set_partitioned_one_way(&self, direction: Direction, on: bool) {
        self.shared.partitioned[direction.index()].store(on, Ordering::SeqCst);
    }

    /// Replaces the faults of one direction, from the next datagram on.
    pub fn set_faults(&self, direction: Direction, faults: Faults) {
        *self.shared.faults[direction.index()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// Ends the partition and removes all faults: a perfect link from now on.
    pub fn heal(&self) {
        self.set_partitioned(false);
        self.set_faults(Direction::ToUpstream, Faults::NONE);
        self.set_faults(Direction::ToClient, Faults::NONE);
    }

    /// The counters of one direction.
    pub fn stats(&self, direction: Direction) -> Stats {
        self.shared.counters[direction.index()].snapshot()
    }
}

impl Drop for FaultHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds the sockets and starts forwarding on the current tokio runtime.
pub async fn start(config: ProxyConfig) -> std::io::Result<FaultHandle> {
    let listen = Arc::new(UdpSocket::bind(config.listen).await?);
    let local_addr = listen.local_addr()?;
    let unspecified: SocketAddr = if config.upstream.is_ipv6() {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    } else {
        (std::net::Ipv4Addr::LOCALHOST, 0).into()
    };
    let upstream = Arc::new(UdpSocket::bind(unspecified).await?);
    upstream.connect(config.upstream).await?;
    let shared = Arc::new(Shared {
        faults: [Mutex::new(config.to_upstream), Mutex::new(config.to_client)],
        partitioned: [AtomicBool::new(false), AtomicBool::new(false)],
        counters: [Counters::default(), Counters::default()],
        client: Mutex::new(None),
    });
    let tasks = vec![
        tokio::spawn(pump(
            Direction::ToUpstream,
            Arc::clone(&shared),
            Arc::clone(&listen),
            Arc::clone(&upstream),
            ChaCha8Rng::seed_from_u64(config.seed),
        )),
        tokio::spawn(pump(
            Direction::ToClient,
            Arc::clone(&shared),
            upstream,
            listen,
            // A different stream per direction, still a function of the one seed.
            ChaCha8Rng::seed_from_u64(config.seed ^ 0x9e37_79b9_7f4a_7c15),
        )),
    ];
    Ok(FaultHandle {
        shared,
        local_addr,
        seed: config.seed,
        tasks,
    })
}

/// What the RNG decided for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Lost,
    /// Delivered after this many milliseconds, and a copy after the second when duplicated.
    Delivered(u64, Option<u64>),
}

/// Draws the same number of values for every datagram, so that one datagram's fate does not
/// shift the decisions of the ones after it when the faults change.
fn decide(rng: &mut ChaCha8Rng, faults: &Faults) -> Fate {
    let loss_roll: f64 = rng.random();
    let duplicate_roll: f64 = rng.random();
    let jitter_first: f64 = rng.random();
    let jitter_second: f64 = rng.random();
    let delay = |roll: f64| faults.delay_ms + (roll * (faults.jitter_ms as f64 + 1.0)) as u64;
    if loss_roll < faults.loss {
        return Fate::Lost;
    }
    let copy = (duplicate_roll < faults.duplicate).then(|| delay(jitter_second));
    Fate::Delivered(delay(jitter_first), copy)
}

/// One direction: receive, decide, hold back, send when due.
async fn pump(
    direction: Direction,
    shared: Arc<Shared>,
    from: Arc<UdpSocket>,
    to: Arc<UdpSocket>,
    mut rng: ChaCha8Rng,
) {
    let counters = &shared.counters[direction.index()];
    // Ordered by due time, then by arrival, so equal delays keep the arrival order.
    let mut queue: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
    let mut arrivals: u64 = 0;
    let mut buf = vec![0u8; DATAGRAM_LEN_MAX];
    loop {
        let due = queue.peek().map(|Reverse((at, _, _))| *at);
        tokio::select! {
            received = receive(direction, &shared, &from, &mut buf) => {
                let Ok(len) = received else {
                    // ICMP errors (an upstream not listening yet) surface here; the socket
                    // stays usable.
                    continue;
                };
                Counters::bump(&counters.received);
                if shared.partitioned(direction) {
                    Counters::bump(&counters.partitioned);
                    continue;
                }
                let now = Instant::now();
                match decide(&mut rng, &shared.faults(direction)) {
                    Fate::Lost => Counters::bump(&counters.lost),
                    Fate::Delivered(first, copy) => {
                        for delay_ms in std::iter::once(first).chain(copy) {
                            if queue.len() >= QUEUE_LEN_MAX {
                                Counters::bump(&counters.overflowed);
                                continue;
                            }
                            arrivals += 1;
                            let at = now + Duration::from_millis(delay_ms);
                            queue.push(Reverse((at, arrivals, buf[..len].to_vec())));
                        }
                        if copy.is_some() {
                            Counters::bump(&counters.duplicated);
                        }
                    }
                }
            }
            () = sleep_until(due) => {
                let now = Instant::now();
                while let Some(Reverse((at, _, _))) = queue.peek() {
                    if *at > now {
                        break;
                    }
                    let Some(Reverse((_, _, datagram))) = queue.pop() else {
                        break;
                    };
                    if shared.partitioned(direction) {
                        Counters::bump(&counters.partitioned);
                        continue;
                    }
                    let sent = match direction {
                        Direction::ToUpstream => to.send(&datagram).await.is_ok(),
                        Direction::ToClient => match shared.client() {
                            Some(client) => to.send_to(&datagram, client).await.is_ok(),
                            None => false,
                        },
                    };
                    Counters::bump(if sent { &counters.sent } else { &counters.failed });
                }
            }
        }
    }
}

async fn receive(
    direction: Direction,
    shared: &Shared,
    from: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match direction {
        Direction::ToUpstream => {
            let (len, client) = from.recv_from(buf).await?;
            shared.set_client(client);
            Ok(len)
        }
        Direction::ToClient => from.recv(buf).await,
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

    use super::*;

    /// An upstream echo server, a proxy in front of it and a client socket.
    async fn rig(to_upstream: Faults, to_client: Faults, seed: u64) -> (FaultHandle, UdpSocket) {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; DATAGRAM_LEN_MAX];
            while let Ok((len, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..len], from).await;
            }
        });
        let proxy = start(ProxyConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream,
            to_upstream,
            to_client,
            seed,
        })
        .await
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(proxy.local_addr()).await.unwrap();
        (proxy, client)
    }

    /// Sends `0..count` as 4-byte datagrams and collects what comes back until nothing
    /// arrives for `quiet_ms`. Sends are paced and answers drained as they come, so that no
    /// socket buffer on loopback overflows and every loss is the proxy's.
    async fn exchange(client: &UdpSocket, count: u32, quiet_ms: u64) -> Vec<u32> {
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        let mut take = |len: usize, buf: &[u8; 16]| {
            assert_eq!(len, 4);
            got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        };
        for n in 0..count {
            client.send(&n.to_be_bytes()).await.unwrap();
            if n % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(2)).await;
                while let Ok(len) = client.try_recv(&mut buf) {
                    take(len, &buf);
                }
            }
        }
        while let Ok(Ok(len)) =
            tokio::time::timeout(Duration::from_millis(quiet_ms), client.recv(&mut buf)).await
        {
            take(len, &buf);
        }
        got
    }

    #[tokio::test]
    async fn a_perfect_link_delivers_everything_in_order() {
        let (proxy, client) = rig(Faults::NONE, Faults::NONE, 1).await;
        let got = exchange(&client, 500, 300).await;
        assert_eq!(got, (0..500).collect::<Vec<_>>());
        let up = proxy.stats(Direction::ToUpstream);
        assert_eq!((up.received, up.sent, up.lost), (500, 500, 0));
        assert_eq!(proxy.stats(Direction::ToClient).sent, 500);
    }

    #[tokio::test]
    async fn total_loss_delivers_nothing() {
        let lossy = Faults {
            loss: 1.0,
            ..Faults::NONE
        };
        let (proxy, client) = rig(lossy, Faults::NONE, 2).await;
        assert!(exchange(&client, 200, 300).await.is_empty());
        let up = proxy.stats(Direction::ToUpstream);
        assert_eq!((up.received, up.lost, up.sent), (200, 200, 0));

        // Loss on the way back only: the upstream sees everything, the client nothing.
        let (proxy, client) = rig(Faults::NONE, lossy, 2).await;
        assert!(exchange(&client, 200, 300).await.is_empty());
        assert_eq!(proxy.stats(Direction::ToUpstream).sent, 200);
        assert_eq!(proxy.stats(Direction::ToClient).lost, 200);
    }

    #[tokio::test]
    async fn certain_duplication_doubles_every_datagram() {
        let double = Faults {
            duplicate: 1.0,
            ..Faults::NONE
        };
        let (proxy, client) = rig(double, Faults::NONE, 3).await;
        let got = exchange(&client, 200, 300).await;
        // Equal delays keep the arrival order: each datagram, then its copy.
        let expected: Vec<u32> = (0..200).flat_map(|n| [n, n]).collect();
        assert_eq!(got, expected);
        assert_eq!(proxy.stats(Direction::ToUpstream).duplicated, 200);
    }

    #[tokio::test]
    async fn jitter_reorders_but_loses_nothing() {
        let jittery = Faults {
            jitter_ms: 50,
            ..Faults::NONE
        };
        let (_proxy, client) = rig(jittery, Faults::NONE, 4).await;
        let mut got = exchange(&client, 300, 400).await;
        assert_ne!(got, (0..300).collect::<Vec<_>>(), "nothing was reordered");
        got.sort_unstable();
        assert_eq!(got, (0..300).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_partition_drops_everything_until_it_heals() {
        let (proxy, client) = rig(Faults::NONE, Faults::NONE, 5).await;
        proxy.set_partitioned(true);
        assert!(exchange(&client, 100, 300).await.is_empty());
        assert_eq!(proxy.stats(Direction::ToUpstream).partitioned, 100);
        proxy.set_partitioned(false);
        assert_eq!(
            exchange(&client, 100, 300).await,
            (0..100).collect::<Vec<_>>()
        );

        // One way: requests arrive, answers do not.
        proxy.set_partitioned_one_way(Direction::ToClient, true);
        assert!(exchange(&client, 100, 300).await.is_empty());
        assert_eq!(proxy.stats(Direction::ToUpstream).sent, 200);
    }

    #[tokio::test]
    async fn delayed_datagrams_are_dropped_when_a_partition_starts() {
        let slow = Faults {
            delay_ms: 300,
            ..Faults::NONE
        };
        let (proxy, client) = rig(slow, Faults::NONE, 6).await;
        for n in 0..10u32 {
            client.send(&n.to_be_bytes()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        proxy.set_partitioned(true);
        tokio::time::sleep(Duration::from_millis(400)).await;
        proxy.heal();
        assert!(exchange(&client, 0, 200).await.is_empty());
        assert_eq!(proxy.stats(Direction::ToUpstream).partitioned, 10);
    }

    #[test]
    fn the_same_seed_decides_the_same_fates() {
        let faults = Faults {
            loss: 0.2,
            duplicate: 0.05,
            delay_ms: 10,
            jitter_ms: 200,
        };
        let fates = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..1000)
                .map(|_| decide(&mut rng, &faults))
                .collect::<Vec<_>>()
        };
        assert_eq!(fates(42), fates(42));
        assert_ne!(fates(42), fates(43));
        let all = fates(42);
        let lost = all.iter().filter(|f| **f == Fate::Lost).count();
        let copies = all
            .iter()
            .filter(|f| matches!(f, Fate::Delivered(_, Some(_))))
            .count();
        assert!((150..250).contains(&lost), "{lost} lost of 1000");
        assert!((20..80).contains(&copies), "{copies} copies of 1000");
        for fate in all {
            if let Fate::Delivered(first, copy) = fate {
                assert!((10..=210).contains(&first));
                assert!(copy.is_none_or(|c| (10..=210).contains(&c)));
            }
        }
    }
}
