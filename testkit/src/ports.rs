//! Ports on loopback that were free a moment ago, chosen so that tests
//! running at the same time on one machine do not collide.

use std::net::{TcpListener, UdpSocket};
use std::time::{SystemTime, UNIX_EPOCH};

/// A UDP port on 127.0.0.1 that was free a moment ago (kernel-assigned).
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
    s.local_addr().expect("local addr").port()
}

/// A port free for both UDP and TCP on 127.0.0.1 a moment ago (a SIP
/// listener binds both), chosen by the kernel so that concurrent test runs
/// on a shared machine do not collide.
pub fn free_sip_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
        let port = u.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Whether something is bound to UDP `127.0.0.1:port` (a bind attempt fails).
pub fn udp_port_in_use(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_err()
}

/// A TCP port on 127.0.0.1 that was free a moment ago (kernel-assigned).
pub fn free_tcp_port() -> u16 {
    let s = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral TCP port");
    s.local_addr().expect("local addr").port()
}

/// The first port of `len` consecutive UDP ports on 127.0.0.1 that were all
/// free a moment ago. The base is even and taken from 20000..32000, below
/// Linux's default ephemeral range, so ports handed out by
/// [`free_udp_port`] (here or in a concurrently running test) do not land
/// inside it; the starting point is derived from the pid and the clock so
/// that parallel tests start at different places.
pub fn free_udp_port_range(len: u16) -> u16 {
    const LOW: u32 = 20_000;
    const HIGH: u32 = 32_000;
    assert!(u32::from(len) < (HIGH - LOW) / 4, "port range too long");
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mut seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
    let span = HIGH - LOW - u32::from(len);
    for _ in 0..200 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let base = (LOW + (seed >> 8) % span) & !1;
        let base = base as u16;
        let all_free = (base..base + len).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free range of {len} UDP ports found in {LOW}..{HIGH}");
}
