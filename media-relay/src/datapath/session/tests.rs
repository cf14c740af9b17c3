//! The session table over in-memory devices: latching, foreign drops,
//! `SetPeer` and relatching, removal, missing destinations, the port
//! index; a fault-injecting and a pcap-writing device wrapper.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use super::*;
use crate::datapath::device::Rx;
use crate::stream::{ChannelSetup, A_RTCP, A_RTP, B_RTCP, B_RTP};

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A received frame of the fake device.
#[derive(Clone)]
struct Frame {
    to: To,
    src: SocketAddr,
    payload: Vec<u8>,
}

/// What the fake device keeps per channel.
struct FakeChannel {
    token: usize,
    _socket: UdpSocket,
}

/// An in-memory device: frames queued in `inbox` come out in batches of
/// up to `batch`; what the table gives back is recorded.
#[derive(Default)]
struct Fake {
    inbox: VecDeque<Frame>,
    rx: Vec<Frame>,
    batch: usize,
    /// (outgoing channel, its device state's token, destination, payload).
    sent: Vec<(usize, usize, SocketAddr, Vec<u8>)>,
    discarded: usize,
    no_session: usize,
    attached: Vec<(usize, Option<SocketAddr>)>,
    detached: Vec<usize>,
    flushes: usize,
}

impl Fake {
    fn push(&mut self, to: To, src: SocketAddr, payload: &[u8]) {
        self.inbox.push_back(Frame { to, src, payload: payload.to_vec() });
    }
}

impl Device for Fake {
    type Channel = FakeChannel;

    fn attach(&mut self, token: usize, socket: UdpSocket, local: Option<SocketAddr>) -> FakeChannel {
        self.attached.push((token, local));
        FakeChannel { token, _socket: socket }
    }

    fn detach(&mut self, token: usize, channel: FakeChannel) {
        assert_eq!(token, channel.token);
        self.detached.push(token);
    }

    fn receive(&mut self, local: &mut LocalCounters) -> usize {
        let max = if self.batch == 0 { 32 } else { self.batch };
        self.rx.clear();
        while self.rx.len() < max {
            let Some(f) = self.inbox.pop_front() else { break };
            self.rx.push(f);
        }
        local.received += self.rx.len() as u64;
        self.rx.len()
    }

    fn frame(&mut self, i: usize, _local: &mut LocalCounters) -> Option<Rx<'_>> {
        let f = self.rx.get(i)?;
        Some(Rx { to: f.to, src: f.src, payload: &f.payload })
    }

    fn no_session(&mut self, _i: usize, local: &mut LocalCounters) {
        local.drop_no_session += 1;
        self.no_session += 1;
    }

    fn transmit(&mut self, i: usize, out: usize, ch: &mut FakeChannel, dest: SocketAddr, local: &mut LocalCounters) {
        local.relayed += 1;
        self.sent.push((out, ch.token, dest, self.rx[i].payload.clone()));
    }

    fn discard(&mut self, _i: usize) {
        self.discarded += 1;
    }

    fn flush(&mut self, _local: &mut LocalCounters) {
        self.flushes += 1;
    }
}

/// A table and the control plane's ends of its rings.
struct Rig<D: Device> {
    table: Sessions<D::Channel>,
    dev: D,
    commands: rtrb::Producer<Command>,
    events: rtrb::Consumer<Event>,
    local: LocalCounters,
    shared: Vec<Arc<PairShared>>,
    ports: Vec<u16>,
}

fn rig<D: Device>(dev: D, nat: bool, index_ports: bool, event_ring: usize) -> Rig<D> {
    let (commands, cmd_rx) = rtrb::RingBuffer::new(64);
    let (ev_tx, events) = rtrb::RingBuffer::new(event_ring);
    Rig {
        table: Sessions::new(cmd_rx, ev_tx, nat, index_ports),
        dev,
        commands,
        events,
        local: LocalCounters::default(),
        shared: Vec::new(),
        ports: Vec::new(),
    }
}

impl<D: Device> Rig<D> {
    /// Adds pair `slot` with these SDP peers (by channel), applies it.
    fn add(&mut self, slot: u32, peers: [Option<SocketAddr>; 4]) {
        let channels = peers.map(|peer| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            self.ports.push(socket.local_addr().unwrap().port());
            ChannelSetup { socket, peer, latched: None, resume: None }
        });
        let shared = Arc::new(PairShared::default());
        self.shared.push(Arc::clone(&shared));
        self.command(Command::Add(Box::new(PairSetup { slot, channels, shared })));
    }

    fn command(&mut self, cmd: Command) {
        self.commands.push(cmd).unwrap();
        self.table.drain_commands(&mut self.dev);
        self.table.flush_events();
    }

    /// Runs batches until the device has nothing left, then publishes.
    fn run(&mut self, now: Nanos) {
        while self.table.poll(&mut self.dev, now, &mut self.local) > 0 {}
        self.table.publish();
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.events.pop().ok()).collect()
    }

    /// Published statistics of channel index `i` (in order of `add`s).
    fn snap(&self, i: usize) -> crate::stream::DirSnapshot {
        self.shared[i / 4][i % 4].read()
    }
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 172];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    p
}

const SDP_A: &str = "10.0.0.1:4000";
const SDP_B: &str = "10.0.0.2:5000";
const NAT_A: &str = "192.0.2.9:5555";

#[test]
fn latching_rules() {
    let sdp = Some(a("10.0.0.1:4000"));
    // NAT mode: first source latches, whatever the SDP said.
    assert_eq!(check_source(true, None, sdp, a("192.0.2.9:5555")), SourceVerdict::Latch);
    // Latched: only that source is accepted.
    assert_eq!(check_source(true, Some(a("192.0.2.9:5555")), sdp, a("192.0.2.9:5555")), SourceVerdict::Accept);
    assert_eq!(check_source(true, Some(a("192.0.2.9:5555")), sdp, a("192.0.2.9:5556")), SourceVerdict::Foreign);
    // Strict mode: only the SDP address latches.
    assert_eq!(check_source(false, None, sdp, a("192.0.2.9:5555")), SourceVerdict::Foreign);
    assert_eq!(check_source(false, None, sdp, a("10.0.0.1:4000")), SourceVerdict::Latch);
    assert_eq!(check_source(false, None, None, a("10.0.0.1:4000")), SourceVerdict::Foreign);
}

#[test]
fn nat_mode_latches_the_first_source_and_forwards_to_the_other_leg() {
    let mut r = rig(Fake::default(), true, false, 16);
    r.add(3, [Some(a(SDP_A)), Some(a(SDP_A)), Some(a(SDP_B)), Some(a(SDP_B))]);
    assert_eq!(r.dev.attached.iter().map(|t| t.0).collect::<Vec<_>>(), vec![12, 13, 14, 15]);
    r.dev.push(To::Token(12 + A_RTP), a(NAT_A), &rtp(1));
    r.dev.push(To::Token(12 + A_RTP), a(NAT_A), &rtp(2));
    r.run(1_000);
    assert_eq!(r.events(), vec![Event::Latched { slot: 3, channel: 0, addr: a(NAT_A) }], "one event per latch");
    let sent: Vec<_> = r.dev.sent.iter().map(|s| (s.0, s.1, s.2)).collect();
    assert_eq!(sent, vec![(12 + B_RTP, 12 + B_RTP, a(SDP_B)); 2], "out of leg B's RTP channel to B's SDP address");
    assert_eq!(r.dev.sent[1].3, rtp(2));
    let s = r.snap(A_RTP);
    assert_eq!((s.stats.packets, s.stats.rtp_packets, s.stats.last_packet), (2, 2, 1_000));
    assert_eq!(r.snap(B_RTP).stats.packets, 0);

    // B answers from its own NAT address: it latches too, and A's latched
    // source (not its SDP address) is where B's packets go.
    r.dev.push(To::Token(12 + B_RTP), a("198.51.100.7:7000"), &rtp(9));
    r.run(2_000);
    assert_eq!(r.dev.sent.last().map(|s| (s.0, s.2)), Some((12 + A_RTP, a(NAT_A))));
    assert_eq!(r.events(), vec![Event::Latched { slot: 3, channel: B_RTP as u8, addr: a("198.51.100.7:7000") }]);
}

#[test]
fn foreign_sources_are_dropped_and_counted_per_channel() {
    let mut r = rig(Fake::default(), true, false, 16);
    r.add(0, [None, None, Some(a(SDP_B)), Some(a(SDP_B))]);
    r.dev.push(To::Token(A_RTP), a(NAT_A), &rtp(1));
    r.dev.push(To::Token(A_RTP), a("192.0.2.66:5555"), &rtp(2));
    r.dev.push(To::Token(A_RTP), a("192.0.2.9:5556"), &rtp(3));
    r.run(5);
    assert_eq!(r.dev.sent.len(), 1);
    assert_eq!(r.dev.discarded, 2);
    assert_eq!(r.local.drop_foreign, 2);
    let s = r.snap(A_RTP);
    assert_eq!((s.stats.packets, s.foreign_drops), (1, 2), "foreign packets are not accounted");

    // Strict mode: nothing latches but the SDP address.
    let mut r = rig(Fake::default(), false, false, 16);
    r.add(0, [Some(a(SDP_A)), None, Some(a(SDP_B)), None]);
    r.dev.push(To::Token(A_RTP), a(NAT_A), &rtp(1));
    r.dev.push(To::Token(A_RTP), a(SDP_A), &rtp(2));
    r.run(5);
    assert_eq!(r.snap(A_RTP).foreign_drops, 1);
    assert_eq!(r.events(), vec![Event::Latched { slot: 0, channel: 0, addr: a(SDP_A) }]);
    assert_eq!(r.dev.sent.len(), 1);
}

#[test]
fn a_foreign_flood_is_reported_once_per_window_past_the_limit() {
    const SEC: Nanos = crate::datapath::flood::FLOOD_WINDOW;
    let mut r = rig(Fake::default(), true, false, 64);
    r.table.set_flood_limit(5);
    r.add(0, [None, None, Some(a(SDP_B)), Some(a(SDP_B))]);
    r.dev.push(To::Token(A_RTP), a(NAT_A), &rtp(1));
    r.run(0);
    assert!(matches!(r.events()[..], [Event::Latched { .. }]));
    // 4 foreign packets in the window: under the limit.
    for i in 0..4 {
        r.dev.push(To::Token(A_RTP), a("203.0.113.5:4000"), &rtp(100 + i));
    }
    r.run(10);
    assert!(r.events().is_empty());
    // A decoy from elsewhere in the same window is not counted, and does
    // not reset the watch on the first source.
    r.dev.push(To::Token(A_RTP), a("198.51.100.1:9"), &rtp(7));
    // The 5th (from another port of the same host) reaches the limit: one
    // report, however many follow in the window.
    for i in 0..10 {
        r.dev.push(To::Token(A_RTP), a("203.0.113.5:4001"), &rtp(200 + i));
    }
    r.run(SEC / 2);
    assert_eq!(r.events(), vec![Event::Flood { addr: "203.0.113.5".parse().unwrap() }]);
    assert_eq!(r.local.flood_sources, 1);
    assert_eq!(r.snap(A_RTP).foreign_drops, 15, "every foreign packet is still dropped and counted");
    // Next window: reported again if it goes on.
    for i in 0..5 {
        r.dev.push(To::Token(A_RTP), a("203.0.113.5:4000"), &rtp(300 + i));
    }
    r.run(SEC + 20);
    assert_eq!(r.events(), vec![Event::Flood { addr: "203.0.113.5".parse().unwrap() }]);
    // A slow trickle (under the limit per window) never is.
    for w in 2..6 {
        for i in 0..4 {
            r.dev.push(To::Token(A_RTP), a("203.0.113.5:4000"), &rtp(400 + i));
        }
        r.run(w * SEC + 30);
    }
    assert!(r.events().is_empty());
    assert_eq!(r.local.flood_sources, 2);

    // 0 disables it.
    let mut r = rig(Fake::default(), true, false, 64);
    r.add(0, [None, None, Some(a(SDP_B)), Some(a(SDP_B))]);
    r.dev.push(To::Token(A_RTP), a(NAT_A), &rtp(1));
    for i in 0..1000 {
        r.dev.push(To::Token(A_RTP), a("203.0.113.5:4000"), &rtp(i));
    }
    r.run(0);
    assert!(matches!(r.events()[..], [Event::Latched { .. }]));
    assert_eq!((r.local.drop_foreign, r.local.flood_sources), (1000, 0));
}

#[test]
fn a_packet_without_destination_is_accounted_then_dropped() {
    let mut r = rig(Fake::default(), true, false, 16);
    r.add(0, [None, None, None, None]);
    r.dev.push(To::Token(A_RTCP), a(NAT_A), &[0x81, 200, 0, 1, 0, 0, 0, 0]);
    r.run(7);
    assert!(r.dev.sent.is_empty());
    assert_eq!(r.local.drop_no_destination, 1);
    let s = r.snap(A_RTCP);
    assert_eq!((s.stats.packets, s.stats.rtp_packets), (1, 0), "RTCP port: accounted as other traffic");
    // The other leg's SDP arrives: now it has one.
    r.command(Command::SetPeer {
        slot: 0,
        channel: B_RTCP as u8,
        peer: Some(a(SDP_B)),
        relatch: false,
        clock: ClockTable::default(),
    });
    r.dev.push(To::Token(A_RTCP), a(NAT_A), &[0x81, 200, 0, 1, 0, 0, 0, 0]);
    r.run(8);
    assert_eq!(r.dev.sent.iter().map(|s| (s.0, s.2)).collect::<Vec<_>>(), vec![(B_RTCP, a(SDP_B))]);
}

#[test]
fn set_peer_with_relatch_forgets_the_latched_source() {
    let mut r = rig(Fake::default(), false, false, 16);
    r.add(1, [Some(a(SDP_A)), None, Some(a(SDP_B)), None]);
    r.dev.push(To::Token(4 + A_RTP), a(SDP_A), &rtp(1));
    r.run(1);
    assert_eq!(r.events().len(), 1);
    // The endpoint moved (re-INVITE with a new address).
    let moved = a("10.0.0.99:4002");
    let mut clock = ClockTable::default();
    clock.insert(0, 8000);
    r.command(Command::SetPeer { slot: 1, channel: A_RTP as u8, peer: Some(moved), relatch: false, clock });
    r.dev.push(To::Token(4 + A_RTP), moved, &rtp(2));
    r.run(2);
    assert_eq!(r.snap(A_RTP).foreign_drops, 1, "without relatch the old latch holds");
    r.command(Command::SetPeer { slot: 1, channel: A_RTP as u8, peer: Some(moved), relatch: true, clock });
    r.dev.push(To::Token(4 + A_RTP), moved, &rtp(3));
    r.dev.push(To::Token(4 + A_RTP), a(SDP_A), &rtp(4));
    r.run(3);
    assert_eq!(r.events(), vec![Event::Latched { slot: 1, channel: 0, addr: moved }]);
    let s = r.snap(A_RTP);
    assert_eq!((s.stats.packets, s.foreign_drops), (2, 2), "the old source is foreign now");
    // SetPeer for a slot or channel that does not exist changes nothing.
    r.command(Command::SetPeer { slot: 9, channel: 0, peer: None, relatch: true, clock });
    r.command(Command::SetPeer { slot: 1, channel: 7, peer: None, relatch: true, clock });
    r.dev.push(To::Token(4 + A_RTP), moved, &rtp(5));
    r.run(4);
    assert_eq!(r.snap(A_RTP).stats.packets, 3);
}

#[test]
fn remove_detaches_the_channels_and_reports_even_when_the_ring_is_full() {
    let mut r = rig(Fake::default(), true, true, 1);
    r.add(0, [None, None, Some(a(SDP_B)), None]);
    r.add(2, [None, None, None, None]);
    let port_a = r.ports[A_RTP];
    r.dev.push(To::Port(port_a), a(NAT_A), &rtp(1));
    r.run(1);
    assert_eq!(r.dev.sent.len(), 1, "found by its port");
    assert_eq!(r.events().len(), 1);
    let attached: Vec<_> = r.dev.attached.iter().map(|(t, l)| (*t, l.map(|l| l.port()))).collect();
    let expected: Vec<_> = [0, 1, 2, 3, 8, 9, 10, 11].into_iter().zip(r.ports.iter().map(|&p| Some(p))).collect();
    assert_eq!(attached, expected, "the device learns each channel's local address");
    r.command(Command::Remove { slot: 0 });
    r.command(Command::Remove { slot: 2 });
    assert_eq!(r.dev.detached, vec![0, 1, 2, 3, 8, 9, 10, 11]);
    assert_eq!(r.events(), vec![Event::Removed { slot: 0 }], "the ring holds one");
    r.table.flush_events();
    assert_eq!(r.events(), vec![Event::Removed { slot: 2 }], "held, then sent");
    // Removing a slot that is empty still answers (the control plane waits for it).
    r.command(Command::Remove { slot: 5 });
    assert_eq!(r.events(), vec![Event::Removed { slot: 5 }]);
    r.dev.push(To::Port(port_a), a(NAT_A), &rtp(2));
    r.dev.push(To::Token(A_RTP), a(NAT_A), &rtp(3));
    r.run(2);
    assert_eq!(r.dev.no_session, 2, "neither its port nor its slot finds it");
    assert_eq!(r.table.lookup(port_a), None);
}

#[test]
fn a_live_slot_added_again_is_replaced() {
    let mut r = rig(Fake::default(), true, true, 16);
    r.add(0, [None, None, None, None]);
    r.add(0, [None, None, Some(a(SDP_B)), None]);
    assert_eq!(r.dev.detached, vec![0, 1, 2, 3]);
    assert_eq!(r.events(), vec![Event::Removed { slot: 0 }]);
    r.dev.push(To::Port(r.ports[4]), a(NAT_A), &rtp(1));
    r.dev.push(To::Port(r.ports[0]), a(NAT_A), &rtp(1));
    r.run(1);
    assert_eq!(r.dev.sent.len(), 1);
    assert_eq!(r.dev.no_session, 1, "the old ports are gone");
}

/// Loses every `drop_every`-th frame and swaps every other pair of
/// frames, like a lossy, reordering network in front of the relay.
struct FaultInjector<D> {
    inner: D,
    drop_every: usize,
    reorder: bool,
    seen: usize,
    order: Vec<usize>,
}

impl<D: Device> Device for FaultInjector<D> {
    type Channel = D::Channel;

    fn attach(&mut self, token: usize, socket: UdpSocket, local: Option<SocketAddr>) -> D::Channel {
        self.inner.attach(token, socket, local)
    }
    fn detach(&mut self, token: usize, channel: D::Channel) {
        self.inner.detach(token, channel);
    }
    fn receive(&mut self, local: &mut LocalCounters) -> usize {
        let n = self.inner.receive(local);
        self.order = (0..n).collect();
        if self.reorder {
            for k in (0..n.saturating_sub(1)).step_by(4) {
                self.order.swap(k, k + 1);
            }
        }
        n
    }
    fn frame(&mut self, i: usize, local: &mut LocalCounters) -> Option<Rx<'_>> {
        let j = self.order[i];
        self.seen += 1;
        if self.drop_every > 0 && self.seen.is_multiple_of(self.drop_every) {
            self.inner.discard(j);
            return None;
        }
        self.inner.frame(j, local)
    }
    fn no_session(&mut self, i: usize, local: &mut LocalCounters) {
        self.inner.no_session(self.order[i], local);
    }
    fn transmit(&mut self, i: usize, out: usize, ch: &mut D::Channel, dest: SocketAddr, local: &mut LocalCounters) {
        self.inner.transmit(self.order[i], out, ch, dest, local);
    }
    fn discard(&mut self, i: usize) {
        self.inner.discard(self.order[i]);
    }
    fn flush(&mut self, local: &mut LocalCounters) {
        self.inner.flush(local);
    }
}

#[test]
fn loss_and_reordering_in_front_of_the_table_show_in_its_statistics() {
    let dev = FaultInjector { inner: Fake::default(), drop_every: 10, reorder: true, seen: 0, order: Vec::new() };
    let mut r = rig(dev, true, false, 16);
    r.add(0, [None, None, Some(a(SDP_B)), None]);
    let mut clock = ClockTable::default();
    clock.insert(0, 8000);
    r.command(Command::SetPeer { slot: 0, channel: B_RTP as u8, peer: Some(a(SDP_B)), relatch: false, clock });
    // 105 frames: the tenth loss is followed by frames that reveal it.
    for seq in 0..105 {
        r.dev.inner.push(To::Token(A_RTP), a(NAT_A), &rtp(seq));
    }
    r.run(1);
    let s = r.snap(A_RTP).stats;
    assert_eq!(s.packets, 95);
    assert_eq!(s.lost, 10, "every tenth frame lost");
    assert!(s.reordered > 0, "swapped pairs arrive late: {s:?}");
    assert_eq!(r.dev.inner.sent.len(), 95);
    assert_eq!(r.dev.inner.discarded, 10);
}

/// Writes every frame the table receives and transmits to a pcap image
/// (raw IPv4, link type 101), for reading a test's traffic in Wireshark.
struct PcapWriter<D> {
    inner: D,
    out: Vec<u8>,
    /// The frame last returned by `frame`, for recording it on transmit.
    last: Vec<u8>,
    records: u32,
}

impl<D> PcapWriter<D> {
    fn new(inner: D) -> Self {
        let mut out = Vec::new();
        for v in
            [0xa1b2_c3d4u32.to_le_bytes(), [2, 0, 4, 0], [0; 4], [0; 4], 65535u32.to_le_bytes(), 101u32.to_le_bytes()]
        {
            out.extend_from_slice(&v);
        }
        Self { inner, out, last: Vec::new(), records: 0 }
    }

    fn record(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else { return };
        let len = 28 + payload.len();
        let mut ip = [0u8; 28];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&s.ip().octets());
        ip[16..20].copy_from_slice(&d.ip().octets());
        let sum = ip[..20].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
        let sum = !u16::try_from((sum & 0xffff) + (sum >> 16)).unwrap();
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip[20..22].copy_from_slice(&s.port().to_be_bytes());
        ip[22..24].copy_from_slice(&d.port().to_be_bytes());
        ip[24..26].copy_from_slice(&u16::try_from(len - 20).unwrap().to_be_bytes());
        let l = u32::try_from(len).unwrap();
        for v in [self.records.to_le_bytes(), [0; 4], l.to_le_bytes(), l.to_le_bytes()] {
            self.out.extend_from_slice(&v);
        }
        self.out.extend_from_slice(&ip);
        self.out.extend_from_slice(payload);
        self.records += 1;
    }
}

const ANY: &str = "0.0.0.0:0";

impl<D: Device> Device for PcapWriter<D> {
    type Channel = D::Channel;

    fn attach(&mut self, token: usize, socket: UdpSocket, local: Option<SocketAddr>) -> D::Channel {
        self.inner.attach(token, socket, local)
    }
    fn detach(&mut self, token: usize, channel: D::Channel) {
        self.inner.detach(token, channel);
    }
    fn receive(&mut self, local: &mut LocalCounters) -> usize {
        self.inner.receive(local)
    }
    fn frame(&mut self, i: usize, local: &mut LocalCounters) -> Option<Rx<'_>> {
        let (src, payload) = {
            let rx = self.inner.frame(i, local)?;
            (rx.src, rx.payload.to_vec())
        };
        self.record(src, a(ANY), &payload);
        self.last = payload;
        self.inner.frame(i, local)
    }
    fn no_session(&mut self, i: usize, local: &mut LocalCounters) {
        self.inner.no_session(i, local);
    }
    fn transmit(&mut self, i: usize, out: usize, ch: &mut D::Channel, dest: SocketAddr, local: &mut LocalCounters) {
        let last = std::mem::take(&mut self.last);
        self.record(a(ANY), dest, &last);
        self.inner.transmit(i, out, ch, dest, local);
    }
    fn discard(&mut self, i: usize) {
        self.inner.discard(i);
    }
    fn flush(&mut self, local: &mut LocalCounters) {
        self.inner.flush(local);
    }
}

#[test]
fn the_pcap_wrapper_records_what_comes_in_and_goes_out() {
    let mut r = rig(PcapWriter::new(Fake::default()), true, false, 16);
    r.add(0, [None, None, Some(a(SDP_B)), None]);
    r.add(1, [None, None, None, None]);
    r.dev.inner.push(To::Token(A_RTP), a(NAT_A), &rtp(1));
    r.dev.inner.push(To::Token(4 + A_RTP), a(NAT_A), &rtp(2));
    r.run(1);
    assert_eq!(r.dev.records, 3, "two in, one out (the second has no destination)");
    let pcap = &r.dev.out;
    assert_eq!(&pcap[..4], &0xa1b2_c3d4u32.to_le_bytes());
    assert_eq!(&pcap[20..24], &101u32.to_le_bytes());
    // The second record is the transmitted copy: to B's SDP address.
    let second = 24 + 16 + 28 + 172;
    assert_eq!(&pcap[second + 16 + 16..second + 16 + 20], &[10, 0, 0, 2]);
    assert_eq!(&pcap[second + 16 + 22..second + 16 + 24], &5000u16.to_be_bytes());
}

/// The per-call state of a worker stays compact (issue 17: memory per
/// call); a field added to a channel shows up here.
#[test]
fn per_channel_state_is_compact() {
    use std::mem::size_of;
    assert_eq!(size_of::<Option<Endpoint>>(), 24);
    assert!(size_of::<Channel>() <= 64, "{}", size_of::<Channel>());
    assert!(size_of::<OtherStats>() <= 32, "{}", size_of::<OtherStats>());
    // Four channels, two full (with the loss-event count of issue 21) and two RTCP statistics, two legs. RTCP
    // reports (issue 21), a clock table and a pointer, besides the
    // device's state.
    assert!(size_of::<crate::rtcp::RtcpState>() <= 44, "{}", size_of::<crate::rtcp::RtcpState>());
    let pair = size_of::<Pair<()>>();
    assert!(pair <= 4 * 64 + 2 * 144 + 2 * 32 + 2 * 44 + 44 + 8 + 4, "{pair}");
    assert!(size_of::<ClockTable>() <= 44, "{}", size_of::<ClockTable>());
}

#[test]
fn endpoints_round_trip() {
    for s in ["192.0.2.9:5555", "[2001:db8::7]:40000", "0.0.0.0:0", "[::ffff:10.0.0.1]:9"] {
        let e = Endpoint::from(a(s));
        assert_eq!(SocketAddr::from(e), a(s));
    }
    assert_ne!(Endpoint::from(a("10.0.0.1:9")), Endpoint::from(a("[::ffff:10.0.0.1]:9")));
    assert_ne!(Endpoint::from(a("10.0.0.1:9")), Endpoint::from(a("10.0.0.1:10")));
    // A link-local peer keeps its interface.
    let ll = SocketAddr::V6(std::net::SocketAddrV6::new("fe80::7".parse().unwrap(), 5004, 0, 3));
    assert_eq!(SocketAddr::from(Endpoint::from(ll)), ll);
}

/// An SR with NTP timestamp `ntp` (no report block).
fn sr(ntp: u64) -> Vec<u8> {
    let mut v = vec![0x80, 200, 0, 6, 0, 0, 0, 1];
    v.extend_from_slice(&ntp.to_be_bytes());
    v.extend_from_slice(&[0; 12]);
    v
}

/// An RR with one block: `fraction` lost, cumulative 3, highest 9, jitter 40, LSR, DLSR.
fn rr(fraction: u8, lsr: u32, dlsr: u32) -> Vec<u8> {
    let mut v = vec![0x81, 201, 0, 7, 0, 0, 0, 2, 0, 0, 0, 1, fraction, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 40];
    v.extend_from_slice(&lsr.to_be_bytes());
    v.extend_from_slice(&dlsr.to_be_bytes());
    v
}

/// RTCP on a leg's own RTCP port and muxed on its RTP port both reach the
/// leg's report (published with its RTP channel's figures), the round trip
/// pairs an SR of one leg with the other leg's RR, and RTCP from a foreign
/// source is dropped before it is read. The RTCP is still relayed as is.
#[test]
fn rtcp_on_either_port_gives_each_legs_report_and_round_trip() {
    const MS: Nanos = 1_000_000;
    let mut r = rig(Fake::default(), true, false, 16);
    r.add(0, [Some(a(SDP_A)), Some(a(SDP_A)), Some(a(SDP_B)), Some(a(SDP_B))]);
    // Leg A's SR on its RTCP port at 1 s; leg B's RR (muxed, on its RTP
    // port) at 1.2 s echoing it after holding it 150 ms: 50 ms.
    let ntp = 0x0000_0005_0006_0000u64;
    r.dev.push(To::Token(A_RTCP), a(NAT_A), &sr(ntp));
    r.run(1000 * MS);
    r.dev.push(To::Token(B_RTP), a("198.51.100.7:7000"), &rr(26, 0x0005_0006, 9830));
    r.run(1200 * MS);
    let (sa, sb) = (r.snap(A_RTP), r.snap(B_RTP));
    assert_eq!((sa.rtcp.srs, sa.rtcp.blocks), (1, 0), "leg A's SR, published on A's RTP channel");
    let rb = sb.rtcp;
    assert_eq!((rb.blocks, rb.fraction_lost, rb.cumulative_lost, rb.jitter), (1, 26, 3, 40));
    assert!(rb.rtt_us.abs_diff(50_000) <= 16, "{}", rb.rtt_us);
    assert_eq!(r.snap(A_RTCP).rtcp, crate::rtcp::RtcpReport::default(), "nothing on the RTCP channel's own");
    // Muxed RTCP is other traffic to the RTP statistics, relayed unchanged.
    assert_eq!((sb.stats.packets, sb.stats.rtp_packets), (1, 0));
    assert_eq!(r.dev.sent.len(), 2);
    assert_eq!(r.dev.sent[1].3, rr(26, 0x0005_0006, 9830));
    // A foreign source's RR on B's latched RTCP port is dropped unread.
    r.dev.push(To::Token(B_RTCP), a("198.51.100.7:7001"), &rr(200, 0, 0));
    r.dev.push(To::Token(B_RTCP), a("203.0.113.66:9"), &rr(99, 0, 0));
    r.run(1300 * MS);
    assert_eq!(r.snap(B_RTP).rtcp.fraction_lost, 200, "the latched source's report, not the foreigner's");
    assert_eq!(r.snap(B_RTCP).foreign_drops, 1);
}
