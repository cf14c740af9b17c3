//! The program attached in native mode to a veth in a throwaway network
//! namespace, with real traffic from a peer namespace:
//!
//! ```text
//! netns peer: xp0 192.0.2.20/24, 192.0.2.30/24 (banned)
//!    | veth
//! netns relay: xr0 192.0.2.10/24 + XDP (driver mode)
//! ```
//!
//! No `AF_XDP` socket is bound, so steered packets fall back to the kernel
//! and reach ordinary UDP sockets; banned ones never arrive. Needs root and
//! `ip`; prints `SKIPPED: ...` otherwise (fails under `CI=true`).
#![allow(clippy::unwrap_used, reason = "test code: a failed setup step should panic")]

mod support;

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use aya::programs::XdpMode;
use support::{chain, load_or_skip};
use testkit::{skip, Netns};
use xdp_prog::{BanValue, Bans, Counter, Counters, MediaPorts, MediaValue, SipPorts};

fn setup_link(relay: &Netns, peer: &Netns) -> Result<(), String> {
    relay.veth("xr0", peer, "xp0", None)?;
    relay.addr("xr0", "192.0.2.10/24")?;
    peer.addr("xp0", "192.0.2.20/24")?;
    peer.addr("xp0", "192.0.2.30/24")?;
    for (ns, dev) in [(relay, "xr0"), (peer, "xp0"), (relay, "lo"), (peer, "lo")] {
        ns.up(dev)?;
    }
    Ok(())
}

fn bind(addr: &str) -> UdpSocket {
    let socket = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket
}

/// The next datagram's source and payload.
fn recv(socket: &UdpSocket) -> (SocketAddr, Vec<u8>) {
    let mut buf = [0u8; 256];
    let (n, from) = socket.recv_from(&mut buf).unwrap_or_else(|e| panic!("recv on {:?}: {e}", socket.local_addr()));
    (from, buf[..n].to_vec())
}

#[test]
fn attached_to_a_veth_drops_banned_and_passes_unbound_steering() {
    // Namespaces are per thread: do it all on a thread of our own so the
    // test harness's threads never move.
    testkit::in_own_thread(run);
}

fn run() {
    const TEST: &str = "attached_to_a_veth_drops_banned_and_passes_unbound_steering";
    let (relay, peer) = match (Netns::new("xdp-relay"), Netns::new("xdp-peer")) {
        (Ok(r), Ok(p)) => (r, p),
        (Err(e), _) | (_, Err(e)) => return skip(&format!("{TEST}: cannot make network namespaces ({e})")),
    };
    setup_link(&relay, &peer).unwrap();

    relay.enter();
    let Some(mut ebpf) = load_or_skip(TEST) else { return };
    let counters = Counters::take(&mut ebpf).unwrap();
    let mut media = MediaPorts::take(&mut ebpf).unwrap();
    let mut bans = Bans::take(&mut ebpf).unwrap();
    let mut sip = SipPorts::take(&mut ebpf).unwrap();
    media.insert("192.0.2.10:30000".parse().unwrap(), MediaValue::new(1)).unwrap();
    sip.add(5060).unwrap();
    bans.ban("192.0.2.30".parse().unwrap(), 32, BanValue { reason: 1 }).unwrap();
    xdp_prog::attach(&mut ebpf, "xr0", XdpMode::Driver).unwrap_or_else(|e| panic!("{}", chain(&e)));
    let rtp_in = bind("192.0.2.10:30000");
    let sip_in = bind("192.0.2.10:5060");
    let other_in = bind("192.0.2.10:40000");

    peer.enter();
    let good = bind("192.0.2.20:0");
    let banned = bind("192.0.2.30:0");

    // Banned first: if it got through it would be the first to arrive.
    banned.send_to(b"banned", "192.0.2.10:30000").unwrap();
    good.send_to(b"rtp", "192.0.2.10:30000").unwrap();
    good.send_to(b"sip", "192.0.2.10:5060").unwrap();
    good.send_to(b"other", "192.0.2.10:40000").unwrap();
    let from_good = good.local_addr().unwrap();
    assert_eq!(recv(&rtp_in), (from_good, b"rtp".to_vec()), "the banned source's datagram came through");
    assert_eq!(recv(&sip_in), (from_good, b"sip".to_vec()));
    assert_eq!(recv(&other_in), (from_good, b"other".to_vec()));

    let seen = counters.read().unwrap();
    let got = |c: Counter| seen.get(c);
    assert_eq!(got(Counter::DroppedBanned), 1, "{seen:?}");
    assert_eq!(got(Counter::RedirectedMedia), 1, "{seen:?}");
    assert_eq!(got(Counter::RedirectedSip), 1, "{seen:?}");
    assert_eq!(got(Counter::RedirectFailed), 2, "no AF_XDP socket is bound: {seen:?}");
    assert_eq!(got(Counter::PassedNoMatch), 1, "{seen:?}");
    assert!(got(Counter::PassedNotIp) >= 1, "ARP passes: {seen:?}");
    drop(ebpf); // detaches before the namespaces go
}
