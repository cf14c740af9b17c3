//! The XDP program, row by row, through `BPF_PROG_TEST_RUN`.
//!
//! Each row is a frame, the action the program must return and the one
//! counter it must increment. Steered rows (media, SIP) are run twice:
//!
//! - with no `AF_XDP` socket in `xsks`: `bpf_redirect_map(.., XDP_PASS)` falls
//!   back to `XDP_PASS`, and both the steering counter and
//!   `redirect_failed` go up;
//! - with an (unbound) `AF_XDP` socket at queue 0, the queue test runs use:
//!   the program returns `XDP_REDIRECT` and only the steering counter goes up.
//!
//! The counters are compared whole, so a row that also bumped some other
//! counter fails. Needs root (or `CAP_BPF` + `CAP_NET_ADMIN`); without it the
//! tests print `SKIPPED: ...`, unless `CI=true`, where they fail.
#![allow(clippy::unwrap_used, reason = "test code: a failed setup step should panic")]

mod support;

use std::net::IpAddr;

use aya::{
    maps::MapData,
    programs::{TestRun, TestRunOptions},
    Ebpf,
};
use support::{load_or_skip, packets::*};
use testkit::unbound_xdp_socket;
use xdp_prog::{
    BanValue, Bans, Counter, CounterSnapshot, Counters, MediaPorts, MediaValue, PortRange, RelayPorts, SipPorts, Xsks,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const RELAY4: &str = "192.0.2.10";
const OTHER4: &str = "192.0.2.99";
const RELAY6: &str = "2001:db8::10";
const OTHER6: &str = "2001:db8::99";
const PEER4: &str = "198.51.100.7";
const PEER6: &str = "2001:db8:1::7";
const MEDIA4: u16 = 30000;
const MEDIA6: u16 = 30002;
const MEDIA_ANY: u16 = 30004;
const SIP: u16 = 5060;
const UNMAPPED: u16 = 40000;
/// The relay's media range on RELAY4 and RELAY6 (`relay_ports`).
const RANGE: PortRange = PortRange { min: 30000, max: 39999 };
/// A port of the range with no session.
const UNUSED: u16 = 30006;
/// A SIP port inside the media range.
const SIP_IN_RANGE: u16 = 35060;
/// A host banned at runtime (reason 2, as the relay's `xdp_ban` does).
const BANNED_AT_RUNTIME: &str = "192.0.2.200";

/// What the program must do with a row's frame.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    Pass,
    Drop,
    /// Redirect to the queue's `AF_XDP` socket (or pass when it has none).
    Steer,
}

struct Row {
    what: &'static str,
    frame: Vec<u8>,
    verdict: Verdict,
    counter: Counter,
}

fn row(what: &'static str, frame: Vec<u8>, verdict: Verdict, counter: Counter) -> Row {
    Row { what, frame, verdict, counter }
}

fn rows() -> Vec<Row> {
    use Counter::*;
    use Verdict::*;
    let rtp4 = ipv4(PEER4, RELAY4, PROTO_UDP, &udp(MEDIA4));
    let rtp6 = ipv6(PEER6, RELAY6, PROTO_UDP, &udp(MEDIA6));
    let options = [0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00]; // router alert, NOPs, end
    let mut bad_version = ipv4(PEER4, RELAY4, PROTO_UDP, &udp(MEDIA4));
    bad_version[0] = 0x65;
    let mut short_ihl = ipv4(PEER4, RELAY4, PROTO_UDP, &udp(MEDIA4));
    short_ihl[0] = 0x44;
    let mut long_ihl = ipv4(PEER4, RELAY4, PROTO_UDP, &[]);
    long_ihl[0] = 0x4f; // claims 60 bytes of header, has 20
    let frag_hdr = [PROTO_UDP, 0, 0, 1, 0, 0, 0, 9];
    vec![
        row("IPv4 RTP to a mapped media port", eth(ETH_IPV4, &rtp4), Steer, RedirectedMedia),
        row("IPv6 RTP to a mapped media port", eth(ETH_IPV6, &rtp6), Steer, RedirectedMedia),
        row("IPv4 SIP to the SIP port", udp4(PEER4, RELAY4, SIP), Steer, RedirectedSip),
        row("IPv6 SIP to the SIP port", udp6(PEER6, RELAY6, SIP), Steer, RedirectedSip),
        row("802.1Q-tagged IPv4 RTP", tagged(ETH_8021Q, 100, ETH_IPV4, &rtp4), Steer, RedirectedMedia),
        row("802.1ad-tagged IPv6 RTP", tagged(ETH_8021AD, 100, ETH_IPV6, &rtp6), Steer, RedirectedMedia),
        row(
            "IPv4 with options (IHL 7) to a media port",
            eth(ETH_IPV4, &ipv4_with(PEER4, RELAY4, PROTO_UDP, 0, &options, &udp(MEDIA4))),
            Steer,
            RedirectedMedia,
        ),
        row(
            "IPv4 with DF set is not a fragment",
            eth(ETH_IPV4, &ipv4_with(PEER4, RELAY4, PROTO_UDP, IP_DF, &[], &udp(MEDIA4))),
            Steer,
            RedirectedMedia,
        ),
        row("wildcard media port, other IPv4 address", udp4(PEER4, OTHER4, MEDIA_ANY), Steer, RedirectedMedia),
        row("wildcard media port, other IPv6 address", udp6(PEER6, OTHER6, MEDIA_ANY), Steer, RedirectedMedia),
        row("media port mapped on another address only", udp4(PEER4, OTHER4, MEDIA4), Pass, PassedNoMatch),
        row("IPv4 UDP to a port outside the maps", udp4(PEER4, RELAY4, UNMAPPED), Pass, PassedNoMatch),
        row("IPv6 UDP to a port outside the maps", udp6(PEER6, RELAY6, UNMAPPED), Pass, PassedNoMatch),
        row("IPv4 UDP to an unused port of the relay range", udp4(PEER4, RELAY4, UNUSED), Drop, DroppedNoSession),
        row("IPv6 UDP to an unused port of the relay range", udp6(PEER6, RELAY6, UNUSED), Drop, DroppedNoSession),
        row("lowest port of the relay range, a session's", udp4(PEER4, RELAY4, RANGE.min), Steer, RedirectedMedia),
        row("highest port of the relay range, unused", udp4(PEER4, RELAY4, RANGE.max), Drop, DroppedNoSession),
        row("just below the relay range", udp4(PEER4, RELAY4, RANGE.min - 1), Pass, PassedNoMatch),
        row("just above the relay range", udp4(PEER4, RELAY4, RANGE.max + 1), Pass, PassedNoMatch),
        row("relay range port on an address without one", udp6(PEER6, OTHER6, UNUSED), Pass, PassedNoMatch),
        row("SIP port inside the relay range", udp4(PEER4, RELAY4, SIP_IN_RANGE), Steer, RedirectedSip),
        row("host banned at runtime, RTP", udp4(BANNED_AT_RUNTIME, RELAY4, MEDIA4), Drop, DroppedBanned),
        row("host banned at runtime, unused relay port", udp4(BANNED_AT_RUNTIME, RELAY4, UNUSED), Drop, DroppedBanned),
        row("banned IPv4 /24 source, RTP", udp4("203.0.113.9", RELAY4, MEDIA4), Drop, DroppedBanned),
        row(
            "banned IPv4 host, SIP over TCP",
            eth(ETH_IPV4, &ipv4("198.51.100.66", RELAY4, PROTO_TCP, &tcp_syn(SIP))),
            Drop,
            DroppedBanned,
        ),
        row(
            "banned IPv4 source, a fragment",
            eth(ETH_IPV4, &ipv4_with("203.0.113.9", RELAY4, PROTO_UDP, IP_MF, &[], &udp(MEDIA4))),
            Drop,
            DroppedBanned,
        ),
        row("neighbour of a banned IPv4 host", udp4("198.51.100.67", RELAY4, SIP), Steer, RedirectedSip),
        row("banned IPv6 /48 source", udp6("2001:db8:bad:7::1", RELAY6, MEDIA6), Drop, DroppedBanned),
        row("IPv6 just outside the banned /48", udp6("2001:db8:bae::1", RELAY6, MEDIA6), Steer, RedirectedMedia),
        row("TCP SIP", eth(ETH_IPV4, &ipv4(PEER4, RELAY4, PROTO_TCP, &tcp_syn(SIP))), Pass, PassedNotUdp),
        row("ICMP echo", eth(ETH_IPV4, &ipv4(PEER4, RELAY4, PROTO_ICMP, &echo(8))), Pass, PassedNotUdp),
        row("ICMPv6 echo", eth(ETH_IPV6, &ipv6(PEER6, RELAY6, PROTO_ICMPV6, &echo(128))), Pass, PassedNotUdp),
        row(
            "IPv6 UDP behind a fragment header",
            eth(ETH_IPV6, &ipv6(PEER6, RELAY6, PROTO_V6_FRAGMENT, &[&frag_hdr[..], &udp(MEDIA6)].concat())),
            Pass,
            PassedNotUdp,
        ),
        row("ARP request", eth(ETH_ARP, &arp_request()), Pass, PassedNotIp),
        row(
            "two VLAN tags (QinQ)",
            tagged(ETH_8021AD, 10, ETH_8021Q, &[&[0, 100][..], &ETH_IPV4.to_be_bytes(), &rtp4].concat()),
            Pass,
            PassedNotIp,
        ),
        row("VLAN tag cut short", eth(ETH_8021Q, &[0, 100]), Pass, PassedTruncated),
        row("IPv4 header cut at 10 bytes", eth(ETH_IPV4, &rtp4[..10]), Pass, PassedTruncated),
        row("IPv4 IHL 15 with a 20-byte header", eth(ETH_IPV4, &long_ihl), Pass, PassedTruncated),
        row("IPv4 IHL below 5", eth(ETH_IPV4, &short_ihl), Pass, PassedTruncated),
        row("ethertype IPv4, version 6", eth(ETH_IPV4, &bad_version), Pass, PassedTruncated),
        row("IPv4 UDP header cut at 4 bytes", eth(ETH_IPV4, &rtp4[..24]), Pass, PassedTruncated),
        row("IPv6 header cut at 20 bytes", eth(ETH_IPV6, &rtp6[..20]), Pass, PassedTruncated),
        row("IPv6 UDP header cut at 4 bytes", eth(ETH_IPV6, &rtp6[..44]), Pass, PassedTruncated),
        row(
            "first IPv4 fragment (MF) to a media port",
            eth(ETH_IPV4, &ipv4_with(PEER4, RELAY4, PROTO_UDP, IP_MF, &[], &udp(MEDIA4))),
            Pass,
            PassedFragment,
        ),
        row(
            "later IPv4 fragment (offset 185)",
            eth(ETH_IPV4, &ipv4_with(PEER4, RELAY4, PROTO_UDP, 185, &[], b"rest of the datagram")),
            Pass,
            PassedFragment,
        ),
    ]
}

struct Fixture {
    ebpf: Ebpf,
    counters: Counters<MapData>,
    media: MediaPorts<MapData>,
    bans: Bans<MapData>,
    sip: SipPorts<MapData>,
    relay: RelayPorts<MapData>,
    xsks: Xsks<MapData>,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Loads the program and fills its maps as the rows expect.
fn fixture(test: &str) -> Option<Fixture> {
    let mut ebpf = load_or_skip(test)?;
    let mut f = Fixture {
        counters: Counters::take(&mut ebpf).unwrap(),
        media: MediaPorts::take(&mut ebpf).unwrap(),
        bans: Bans::take(&mut ebpf).unwrap(),
        sip: SipPorts::take(&mut ebpf).unwrap(),
        relay: RelayPorts::take(&mut ebpf).unwrap(),
        xsks: Xsks::take(&mut ebpf).unwrap(),
        ebpf,
    };
    f.media.insert(format!("{RELAY4}:{MEDIA4}").parse().unwrap(), MediaValue::new(1)).unwrap();
    f.media.insert(format!("[{RELAY6}]:{MEDIA6}").parse().unwrap(), MediaValue::new(2)).unwrap();
    f.media.insert(format!("0.0.0.0:{MEDIA_ANY}").parse().unwrap(), MediaValue::new(3)).unwrap();
    f.bans.ban(ip("203.0.113.0"), 24, BanValue { reason: 1 }).unwrap();
    f.bans.ban(ip("198.51.100.66"), 32, BanValue { reason: 2 }).unwrap();
    f.bans.ban(ip("2001:db8:bad::"), 48, BanValue { reason: 3 }).unwrap();
    f.bans.ban(ip(BANNED_AT_RUNTIME), 32, BanValue { reason: 2 }).unwrap();
    f.sip.add(SIP).unwrap();
    f.sip.add(SIP_IN_RANGE).unwrap();
    f.relay.set(ip(RELAY4), RANGE).unwrap();
    f.relay.set(ip(RELAY6), RANGE).unwrap();
    Some(f)
}

impl Fixture {
    /// Runs one frame; returns the action and what the counters did.
    fn run(&mut self, frame: &[u8]) -> (u32, CounterSnapshot) {
        let before = self.counters.read().unwrap();
        let program = xdp_prog::program(&mut self.ebpf).unwrap();
        let result = program
            .test_run(TestRunOptions { data_in: Some(frame), ..TestRunOptions::default() })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {}", support::chain(&e)));
        let after = self.counters.read().unwrap();
        (result.return_value, after.since(&before))
    }

    /// Runs every row and returns the failures, one line each.
    fn check_rows(&mut self, socket_present: bool) -> Vec<String> {
        let mut failures = Vec::new();
        for row in rows() {
            let (action, delta) = self.run(&row.frame);
            let mut want = CounterSnapshot::default();
            want.0[row.counter as usize] = 1;
            let want_action = match row.verdict {
                Verdict::Pass => XDP_PASS,
                Verdict::Drop => XDP_DROP,
                Verdict::Steer if socket_present => XDP_REDIRECT,
                Verdict::Steer => {
                    want.0[Counter::RedirectFailed as usize] = 1;
                    XDP_PASS
                }
            };
            if (action, delta) != (want_action, want) {
                failures.push(format!(
                    "{}: got action {action}, counters {:?}; want {want_action}, {:?}",
                    row.what,
                    nonzero(&delta),
                    nonzero(&want)
                ));
            }
        }
        failures
    }
}

fn nonzero(s: &CounterSnapshot) -> Vec<(&'static str, u64)> {
    s.iter().filter(|(_, v)| *v != 0).map(|(c, v)| (c.name(), v)).collect()
}

#[test]
fn verdicts_without_an_afxdp_socket() {
    let Some(mut f) = fixture("verdicts_without_an_afxdp_socket") else { return };
    let failures = f.check_rows(false);
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows().len(), failures.join("\n"));
}

#[test]
fn verdicts_with_an_afxdp_socket_on_the_queue() {
    let Some(mut f) = fixture("verdicts_with_an_afxdp_socket_on_the_queue") else { return };
    let socket = unbound_xdp_socket().expect("creating an AF_XDP socket");
    f.xsks.set(0, &socket).unwrap_or_else(|e| panic!("{}", support::chain(&e)));
    let failures = f.check_rows(true);
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows().len(), failures.join("\n"));

    // Without the socket the same frame falls back to the kernel.
    assert!(f.xsks.unset(0).unwrap());
    let (action, delta) = f.run(&udp4(PEER4, RELAY4, MEDIA4));
    assert_eq!(action, XDP_PASS);
    assert_eq!(nonzero(&delta), [("redirected_media", 1), ("redirect_failed", 1)]);
}

#[test]
fn map_wrappers_round_trip_and_steer() {
    let Some(mut f) = fixture("map_wrappers_round_trip_and_steer") else { return };
    let media4 = format!("{RELAY4}:{MEDIA4}").parse().unwrap();
    assert_eq!(f.media.get(media4).unwrap(), Some(MediaValue::new(1)));
    assert!(f.media.remove(media4).unwrap());
    assert!(!f.media.remove(media4).unwrap());
    assert_eq!(f.media.get(media4).unwrap(), None);
    let (action, delta) = f.run(&udp4(PEER4, RELAY4, MEDIA4));
    assert_eq!((action, nonzero(&delta)), (XDP_DROP, vec![("dropped_no_session", 1)]), "a session's port, removed");
    f.media.insert(media4, MediaValue::new(9)).unwrap();
    let (_, delta) = f.run(&udp4(PEER4, RELAY4, MEDIA4));
    assert_eq!(nonzero(&delta)[0], ("redirected_media", 1), "a new session's port is steered at once");

    assert_eq!(f.relay.get(ip(RELAY4)).unwrap(), Some(RANGE));
    assert!(f.relay.remove(ip(RELAY4)).unwrap());
    assert!(!f.relay.remove(ip(RELAY4)).unwrap());
    let (_, delta) = f.run(&udp4(PEER4, RELAY4, UNUSED));
    assert_eq!(nonzero(&delta), [("passed_no_match", 1)], "without a range the port is not ours");
    f.relay.set("0.0.0.0".parse().unwrap(), RANGE).unwrap();
    let (_, delta) = f.run(&udp4(PEER4, OTHER4, UNUSED));
    assert_eq!(nonzero(&delta), [("dropped_no_session", 1)], "an any-address range covers every address");

    assert_eq!(f.bans.lookup(ip("203.0.113.200")).unwrap(), Some(BanValue { reason: 1 }));
    assert_eq!(f.bans.lookup(ip("2001:db8:bad:ffff::1")).unwrap(), Some(BanValue { reason: 3 }));
    assert_eq!(f.bans.lookup(ip("203.0.114.1")).unwrap(), None);
    assert!(f.bans.unban(ip("203.0.113.55"), 24).unwrap(), "host bits are masked");
    assert!(!f.bans.unban(ip("203.0.113.0"), 24).unwrap());
    assert!(f.bans.ban(ip("203.0.113.0"), 33, BanValue::default()).is_err());
    let (action, _) = f.run(&udp4("203.0.113.9", RELAY4, SIP));
    assert_eq!(action, XDP_PASS, "an unbanned source is no longer dropped");

    assert!(f.sip.contains(SIP).unwrap());
    assert!(f.sip.remove(SIP).unwrap());
    assert!(!f.sip.contains(SIP).unwrap());
    let (_, delta) = f.run(&udp4(PEER4, RELAY4, SIP));
    assert_eq!(nonzero(&delta), [("passed_no_match", 1)]);
    assert_eq!(f.xsks.len(), 64);
}
