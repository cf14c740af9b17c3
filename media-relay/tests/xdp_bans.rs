//! Edge defences of the relay, in process: runtime bans in the XDP program
//! (`Relay::xdp_ban` / `xdp_unban`), media floods reported by
//! `Relay::take_flood_sources` on both datapaths, and UDP to the relay's
//! unused media ports dropped in XDP.
//!
//! The socket datapath test runs on loopback. The `AF_XDP` one builds:
//!
//! ```text
//! netns peer (xbp): pa 10.55.0.2/24 caller, .4 callee, .66 attacker,
//!                   .9 banned by relay.xdp_bans
//!    | veth
//! netns relay (xbr): ra 10.55.0.1/24, XDP + AF_XDP; the relay runs in
//!                    this process, started from a thread inside it
//! ```
//!
//! and needs root and `ip` (`SKIPPED: ...` otherwise, a failure under `CI=true`).
#![allow(clippy::unwrap_used, reason = "test code: a failed setup step should panic")]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use media_relay::config::{BanPrefix, DatapathMode, RelayConfig};
use media_relay::control::{MediaControl, SdpOptions, SdpRequest};
use media_relay::relay::Relay;
use testkit::{skip, Netns};
use xdp_prog::{Counter, CounterSnapshot};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sdp(addr: SocketAddr) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=sendrecv\r\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

fn media_port(sdp: &[u8]) -> u16 {
    let text = std::str::from_utf8(sdp).unwrap();
    let m = text.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    m.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn rtp(seq: u16) -> [u8; 172] {
    let mut p = [0u8; 172];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&7u32.to_be_bytes());
    p
}

/// Offer from `a`, answer from `b`: the relay ports (A sends to, B sends to).
fn call(relay: &Relay, id: &str, a: &UdpSocket, b: &UdpSocket) -> (u16, u16) {
    let offer_sdp = sdp(a.local_addr().unwrap());
    let offer = SdpRequest {
        call_id: id,
        from_tag: "ta",
        to_tag: None,
        sdp: offer_sdp.as_bytes(),
        opts: SdpOptions::default(),
    };
    let to_b = media_port(&relay.offer(&offer).unwrap());
    let answer_sdp = sdp(b.local_addr().unwrap());
    let answer = SdpRequest {
        call_id: id,
        from_tag: "ta",
        to_tag: Some("tb"),
        sdp: answer_sdp.as_bytes(),
        opts: SdpOptions::default(),
    };
    let to_a = media_port(&relay.answer(&answer).unwrap());
    (to_a, to_b)
}

/// Whether `rx` receives what `from` sends to `to` (one packet).
fn relayed(from: &UdpSocket, to: SocketAddr, rx: &UdpSocket, seq: u16) -> bool {
    from.send_to(&rtp(seq), to).unwrap();
    let mut buf = [0u8; 256];
    rx.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    matches!(rx.recv_from(&mut buf), Ok((172, _)))
}

/// Datagrams the workers received, summed.
fn worker_received(relay: &Relay) -> u64 {
    relay.worker_counters().iter().map(|c| c.received.load(std::sync::atomic::Ordering::Relaxed)).sum()
}

/// A worker counter's Prometheus row, summed over workers (e.g.
/// `media_relay_flood_sources_total`).
fn worker_metric(relay: &Relay, name: &str, labels: &str) -> u64 {
    relay
        .worker_counters()
        .iter()
        .flat_map(|c| c.rows())
        .filter(|(n, l, _, _)| *n == name && *l == labels)
        .map(|(_, _, _, v)| v)
        .sum()
}

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    assert!(testkit::wait_until(Duration::from_secs(5), Duration::from_millis(20), f), "timed out waiting for {what}");
}

/// Sends `n` foreign packets from `attacker` to `to`, then waits until the
/// relay reports a flood; returns what it reported (everything, taken).
fn flood(relay: &Relay, attacker: &UdpSocket, to: SocketAddr, n: u16) -> Vec<IpAddr> {
    for seq in 0..n {
        attacker.send_to(&rtp(seq), to).unwrap();
    }
    let mut got = Vec::new();
    testkit::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        got.extend(relay.take_flood_sources());
        !got.is_empty()
    });
    got
}

#[test]
fn a_media_flood_is_reported_on_the_socket_datapath() {
    let base = testkit::ports::free_udp_port_range(20);
    let mut cfg = RelayConfig::embedded_default();
    (cfg.port_min, cfg.port_max, cfg.workers) = (base, base + 19, 1);
    (cfg.listen_ng, cfg.metrics, cfg.datapath) = (None, None, DatapathMode::Socket);
    cfg.flood_ban_pps = 100;
    let relay = Relay::start(cfg).unwrap();
    assert!(!relay.xdp_ban(&BanPrefix::host(ip("127.0.0.66"))).unwrap(), "no XDP on sockets");
    assert!(!relay.xdp_unban(&BanPrefix::host(ip("127.0.0.66"))).unwrap());

    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (to_a, _) = call(&relay, "flood-sock", &a, &b);
    let to_a = SocketAddr::from(([127, 0, 0, 1], to_a));
    assert!(relayed(&a, to_a, &b, 1), "A latches and is relayed");

    // Under the limit: foreign, dropped, not reported.
    let attacker = UdpSocket::bind("127.0.0.66:0").unwrap();
    for seq in 0..50 {
        attacker.send_to(&rtp(seq), to_a).unwrap();
    }
    wait_until("50 foreign drops", || {
        worker_metric(&relay, "media_relay_drops_total", "reason=\"foreign_source\"") >= 50
    });
    assert!(relay.take_flood_sources().is_empty());
    assert_eq!(worker_metric(&relay, "media_relay_flood_sources_total", ""), 0);

    // Past it (300 within the second, counting the 50 before if still in
    // their window): reported once, then nothing more to take.
    assert_eq!(flood(&relay, &attacker, to_a, 300), vec![ip("127.0.0.66")]);
    assert!(relay.take_flood_sources().is_empty(), "taken");
    assert!(worker_metric(&relay, "media_relay_flood_sources_total", "") >= 1);
    assert!(relayed(&a, to_a, &b, 2), "the call goes on");
    relay.shutdown();
}

const RELAY: &str = "10.55.0.1";
const CALLER: &str = "10.55.0.2";
const CALLEE: &str = "10.55.0.4";
const ATTACKER: &str = "10.55.0.66";
const BANNED_BY_CONFIG: &str = "10.55.0.9";
const PORT_MIN: u16 = 30000;
const PORT_MAX: u16 = 30099;

struct Lab {
    peer: Netns,
    relay: Netns,
}

impl Lab {
    fn new() -> Result<Self, String> {
        let lab = Self { peer: Netns::new("xbp")?, relay: Netns::new("xbr")? };
        let (p, r) = (&lab.peer, &lab.relay);
        r.veth("ra", p, "pa", None)?;
        r.addr("ra", &format!("{RELAY}/24"))?;
        for a in [CALLER, CALLEE, ATTACKER, BANNED_BY_CONFIG] {
            p.addr("pa", &format!("{a}/24"))?;
        }
        for (ns, dev) in [(r, "ra"), (r, "lo"), (p, "pa"), (p, "lo")] {
            ns.up(dev)?;
        }
        Ok(lab)
    }

    /// A UDP socket bound in the peer namespace (the thread returns to the
    /// relay's).
    fn peer_socket(&self, addr: &str) -> UdpSocket {
        self.peer.enter();
        let s = UdpSocket::bind((ip(addr), 0)).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        self.relay.enter();
        s
    }
}

fn xdp(relay: &Relay) -> CounterSnapshot {
    relay.datapath().xdp_counters().expect("the AF_XDP datapath has XDP counters")
}

#[test]
fn runtime_bans_floods_and_unused_ports_in_xdp() {
    if !testkit::env::require_root_and("runtime_bans_floods_and_unused_ports_in_xdp", &["ip"]) {
        return;
    }
    let lab = match Lab::new() {
        Ok(lab) => lab,
        Err(e) => return skip(&format!("cannot build the namespace lab: {e}")),
    };
    // The relay's threads start here, so they live in the relay namespace.
    lab.relay.enter();
    let mut cfg = RelayConfig::embedded_default();
    cfg.interfaces = vec![media_relay::config::Interface::parse(RELAY).unwrap()];
    (cfg.port_min, cfg.port_max, cfg.workers) = (PORT_MIN, PORT_MAX, 1);
    (cfg.listen_ng, cfg.metrics, cfg.datapath) = (None, None, DatapathMode::Xdp);
    (cfg.xdp_interfaces, cfg.xdp_queues, cfg.xdp_full_checksum) = (vec!["ra".into()], 1, true);
    cfg.xdp_bans = vec![BanPrefix::host(ip(BANNED_BY_CONFIG))];
    cfg.flood_ban_pps = 100;
    let relay: Arc<Relay> = Relay::start(cfg).unwrap();
    assert_eq!(relay.datapath().name(), "xdp");

    let a = lab.peer_socket(CALLER);
    let b = lab.peer_socket(CALLEE);
    let attacker = lab.peer_socket(ATTACKER);
    let config_banned = lab.peer_socket(BANNED_BY_CONFIG);
    let (to_a, _) = call(&relay, "xdp-bans", &a, &b);
    let to_a = SocketAddr::new(ip(RELAY), to_a);
    // The first packets may find the neighbour unresolved; retry a few.
    wait_until("A relayed to B", || relayed(&a, to_a, &b, 1));

    // Banned at runtime: dropped in XDP, the worker sees nothing.
    let attacker_ban = BanPrefix::host(ip(ATTACKER));
    assert!(relay.xdp_ban(&attacker_ban).unwrap(), "enforced in XDP");
    let (before, seen) = (xdp(&relay), worker_received(&relay));
    for seq in 0..20 {
        attacker.send_to(&rtp(seq), to_a).unwrap();
    }
    wait_until("20 banned drops", || xdp(&relay).since(&before).get(Counter::DroppedBanned) >= 20);
    assert!(relayed(&a, to_a, &b, 2), "the caller is still relayed");
    assert_eq!(xdp(&relay).since(&before).get(Counter::DroppedBanned), 20);
    assert_eq!(worker_received(&relay) - seen, 1, "only the caller's packet reached the worker");

    // Unbanned: the attacker's packets reach the worker again (as foreign).
    assert!(relay.xdp_unban(&attacker_ban).unwrap());
    let (before, foreign) =
        (xdp(&relay), worker_metric(&relay, "media_relay_drops_total", "reason=\"foreign_source\""));
    for seq in 0..20 {
        attacker.send_to(&rtp(seq), to_a).unwrap();
    }
    wait_until("20 foreign drops in the worker", || {
        worker_metric(&relay, "media_relay_drops_total", "reason=\"foreign_source\"") - foreign >= 20
    });
    assert_eq!(xdp(&relay).since(&before).get(Counter::DroppedBanned), 0);

    // A flood of foreign packets on the latched port is reported.
    assert_eq!(flood(&relay, &attacker, to_a, 300), vec![ip(ATTACKER)]);
    assert!(relay.take_flood_sources().is_empty());

    // A relay.xdp_bans prefix is never lifted at runtime.
    let config_ban = BanPrefix::host(ip(BANNED_BY_CONFIG));
    assert!(relay.xdp_unban(&config_ban).unwrap());
    let before = xdp(&relay);
    for seq in 0..5 {
        config_banned.send_to(&rtp(seq), to_a).unwrap();
    }
    wait_until("the config ban still drops", || xdp(&relay).since(&before).get(Counter::DroppedBanned) >= 5);
    // A prefix ban covers its hosts; lifting it lets them through.
    let net = BanPrefix::new(ip("10.55.0.64"), 26).unwrap();
    assert!(relay.xdp_ban(&net).unwrap());
    let before = xdp(&relay);
    attacker.send_to(&rtp(1), to_a).unwrap();
    wait_until("the /26 drops the attacker", || xdp(&relay).since(&before).get(Counter::DroppedBanned) >= 1);
    assert!(relay.xdp_unban(&net).unwrap());

    // UDP to a port of the range with no session: dropped in XDP; above the
    // range: passed to the kernel.
    let (before, seen) = (xdp(&relay), worker_received(&relay));
    let unused = SocketAddr::new(ip(RELAY), PORT_MAX - 1);
    let outside = SocketAddr::new(ip(RELAY), PORT_MAX + 1);
    for seq in 0..10 {
        attacker.send_to(&rtp(seq), unused).unwrap();
        attacker.send_to(&rtp(seq), outside).unwrap();
    }
    wait_until("10 no-session drops", || xdp(&relay).since(&before).get(Counter::DroppedNoSession) >= 10);
    wait_until("10 passed", || xdp(&relay).since(&before).get(Counter::PassedNoMatch) >= 10);
    assert_eq!(xdp(&relay).since(&before).get(Counter::DroppedNoSession), 10);
    assert_eq!(worker_received(&relay), seen, "none reached the worker");

    // A session made now gets its first packet through.
    let c = lab.peer_socket(CALLER);
    let d = lab.peer_socket(CALLEE);
    let (to_c, _) = call(&relay, "xdp-bans-2", &c, &d);
    assert!(relayed(&c, SocketAddr::new(ip(RELAY), to_c), &d, 1), "the first packet of a new session is relayed");
    relay.shutdown();
    drop(lab);
}
