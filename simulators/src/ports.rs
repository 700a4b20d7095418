//! Free local ports for processes that are started later: the demo's layout, the
//! end-to-end tests' hubs and agents.
//!
//! A port is picked below the kernel's ephemeral range. A port the kernel hands out for
//! `bind(0)` lies in the range it also takes the source ports of outgoing connections from
//! (a hub's database connections, clients of an agent), so between the pick and the
//! process's own `bind` one of those could take it, and the process would fail to start.

use rand::Rng as _;

/// The first port of the kernel's ephemeral range (32,768 when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A port free now for TCP (`udp` false) or UDP, below the ephemeral range; from the
/// ephemeral range only when no port below it is (the range starting under 10,000, or 200
/// picks all taken).
fn free_port(udp: bool) -> std::io::Result<u16> {
    let bind = |port: u16| -> std::io::Result<u16> {
        Ok(if udp {
            std::net::UdpSocket::bind(("127.0.0.1", port))?.local_addr()?
        } else {
            std::net::TcpListener::bind(("127.0.0.1", port))?.local_addr()?
        }
        .port())
    };
    let (from, below) = (10_000u16, ephemeral_start());
    if below > from {
        let mut rng = rand::rng();
        for _ in 0..200 {
            if let Ok(port) = bind(rng.random_range(from..below)) {
                return Ok(port);
            }
        }
    }
    bind(0)
}

/// A TCP port free at the time of asking.
pub fn free_tcp_port() -> std::io::Result<u16> {
    free_port(false)
}

/// A UDP port free at the time of asking.
pub fn free_udp_port() -> std::io::Result<u16> {
    free_port(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_and_below_the_ephemeral_range() {
        let below = ephemeral_start();
        for _ in 0..20 {
            let tcp = free_tcp_port().unwrap();
            assert!(tcp < below, "{tcp}");
            std::net::TcpListener::bind(("127.0.0.1", tcp)).unwrap();
            let udp = free_udp_port().unwrap();
            assert!(udp < below, "{udp}");
            std::net::UdpSocket::bind(("127.0.0.1", udp)).unwrap();
        }
    }
}
