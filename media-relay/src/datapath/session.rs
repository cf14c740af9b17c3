//! The session table both datapaths share: one worker's stream pairs, and
//! everything done to a packet that does not depend on how it moves.
//!
//! It owns, per channel (a leg's RTP or RTCP port): the expected peer from
//! SDP and the latched source (as compact [`Endpoint`]s), the statistics
//! (RFC 3550 [`RtpStats`] on an RTP port; [`OtherStats`] on an RTCP port,
//! where nothing is parsed as RTP) and the foreign-drop count; per pair, the
//! clock rates and the [`PairShared`] blocks it publishes the statistics
//! to. It applies the control plane's [`Command`]s from the command ring,
//! sends [`Event`]s back (holding `Removed` events while the ring is full),
//! and decides each packet's fate: source check and latching, accounting,
//! and the destination (the other leg's latched source, else its SDP
//! address). The I/O is the [`Device`]'s: [`Sessions::poll`] runs one batch
//! of it through the table.
//!
//! Datapath-specific per-channel state (the socket worker's mio socket and
//! overflow counter, the `AF_XDP` worker's next-hop cache and kernel-path
//! socket) is the device's [`Device::Channel`], stored in the pair beside
//! the table's own channels, so a pair is one slot of a chunked array: no
//! box per pair, no allocation per pair but the [`PairShared`] the
//! control plane reads, and growing never moves a pair.
//!
//! Ownership: one table per worker, used only on that worker's thread. The
//! control plane reaches it only through the rings; it reads the statistics
//! only from [`PairShared`], which the table writes (relaxed stores) once per
//! batch for the channels that batch touched ([`Sessions::publish`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use super::device::{Device, To};
use super::flood::FloodWatch;
use crate::counters::LocalCounters;
use crate::rtcp::{on_rtcp, RtcpState};
use crate::rtp::{is_rtcp, RtpPacket};
use crate::stats::{OtherStats, RtpStats};
use crate::stream::{is_rtcp_channel, peer_channel, ClockTable, Command, Endpoint, Event, PairSetup, PairShared};
use crate::Nanos;

/// One receiving channel's session state.
struct Channel {
    /// Where this leg said it receives (from SDP).
    peer: Option<Endpoint>,
    /// The source it latched onto.
    latched: Option<Endpoint>,
    /// Packets dropped for coming from another source.
    foreign: u64,
    /// Local port (when the table indexes ports; else 0).
    port: u16,
    /// In `Sessions::touched`: statistics to publish.
    dirty: bool,
}

impl Channel {
    /// Where packets for this leg's endpoint go.
    fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.peer).map(SocketAddr::from)
    }
}

/// A stream pair: channels by [`crate::stream::A_RTP`] ... [`crate::stream::B_RTCP`].
struct Pair<X> {
    channels: [Channel; 4],
    /// Statistics of the RTP channels ([`crate::stream::A_RTP`], [`crate::stream::B_RTP`]).
    rtp: [RtpStats; 2],
    /// Statistics of the RTCP channels, where everything is other traffic.
    rtcp: [OtherStats; 2],
    /// Each leg's RTCP reports and round trip (from RTCP on either channel).
    reports: [RtcpState; 2],
    /// The device's state of each channel.
    extra: [X; 4],
    /// Payload type clock rates (one table for the pair: both legs use the
    /// payload types of the same offer/answer).
    clock: ClockTable,
    /// Each channel's published statistics, by channel index.
    shared: Arc<PairShared>,
}

/// Pairs by slot, in chunks of [`Slots::CHUNK`] allocated once each:
/// growing the table never moves a pair (no copy on the packet thread, and
/// no outgrown array left resident by the allocator).
struct Slots<T> {
    chunks: Vec<Box<[Option<T>]>>,
}

impl<T> Slots<T> {
    /// Slots per chunk.
    const CHUNK: usize = 32;

    fn get_mut(&mut self, slot: usize) -> Option<&mut T> {
        self.chunks.get_mut(slot / Self::CHUNK)?.get_mut(slot % Self::CHUNK)?.as_mut()
    }

    /// Slot `slot`, allocating chunks up to it.
    fn entry(&mut self, slot: usize) -> &mut Option<T> {
        while self.chunks.len() <= slot / Self::CHUNK {
            self.chunks.push((0..Self::CHUNK).map(|_| None).collect());
        }
        &mut self.chunks[slot / Self::CHUNK][slot % Self::CHUNK]
    }

    fn take(&mut self, slot: usize) -> Option<T> {
        self.chunks.get_mut(slot / Self::CHUNK)?.get_mut(slot % Self::CHUNK)?.take()
    }

    /// Slots allocated.
    fn capacity(&self) -> usize {
        self.chunks.len() * Self::CHUNK
    }
}

/// Verdict of the source check for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceVerdict {
    /// From the latched source.
    Accept,
    /// Latch onto this source, then accept.
    Latch,
    /// From another source: drop.
    Foreign,
}

/// Checks a packet's source against the leg's latched or expected address
/// (any address type: the table passes [`Endpoint`]s).
#[must_use]
pub fn check_source<A: PartialEq>(nat: bool, latched: Option<A>, expected: Option<A>, src: A) -> SourceVerdict {
    match latched {
        Some(l) if l == src => SourceVerdict::Accept,
        Some(_) => SourceVerdict::Foreign,
        None if nat => SourceVerdict::Latch,
        None if expected == Some(src) => SourceVerdict::Latch,
        None => SourceVerdict::Foreign,
    }
}

/// What the table decided for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it out of channel `out` to `dest`.
    Forward {
        /// The outgoing channel's token.
        out: usize,
        /// The other leg's endpoint.
        dest: SocketAddr,
    },
    /// Drop it (counted).
    Drop,
}

/// One worker's session table over devices whose per-channel state is `X`.
pub struct Sessions<X> {
    pairs: Slots<Pair<X>>,
    /// Local UDP port -> channel token + 1 (0: not ours); only for devices
    /// that receive frames for every port at once.
    by_port: Option<Box<[u32]>>,
    /// Channels whose statistics changed since the last publish.
    touched: Vec<u32>,
    /// `Removed` events waiting for room in the event ring.
    pending: VecDeque<Event>,
    commands: rtrb::Consumer<Command>,
    events: rtrb::Producer<Event>,
    /// Latch to any first source, or only to the SDP address.
    nat: bool,
    /// Foreign packets a second from one source that make it a flood (0: off).
    flood_pps: u32,
    /// Counts foreign packets per channel and source.
    flood: FloodWatch,
}

impl<X> Sessions<X> {
    /// A table fed by `commands`, reporting on `events`. With `index_ports`
    /// it keeps a port index (256 KiB) for [`To::Port`] lookups.
    #[must_use]
    pub fn new(commands: rtrb::Consumer<Command>, events: rtrb::Producer<Event>, nat: bool, index_ports: bool) -> Self {
        Self {
            pairs: Slots { chunks: Vec::new() },
            by_port: index_ports.then(|| vec![0u32; 65536].into_boxed_slice()),
            touched: Vec::with_capacity(64),
            pending: VecDeque::new(),
            commands,
            events,
            nat,
            flood_pps: 0,
            flood: FloodWatch::default(),
        }
    }

    /// Reports a source ([`Event::Flood`]) once it sends one channel
    /// `pps` foreign packets within a second; 0 (the default) never.
    pub fn set_flood_limit(&mut self, pps: u32) {
        self.flood_pps = pps;
    }

    /// Whether commands are waiting (checked before the worker sleeps).
    #[must_use]
    pub fn has_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// The device state of channel `token`, if that pair exists.
    pub fn device_channel(&mut self, token: usize) -> Option<&mut X> {
        self.pairs.get_mut(token / 4).map(|p| &mut p.extra[token % 4])
    }

    /// The channel bound to local `port` (port index only).
    #[must_use]
    pub fn lookup(&self, port: u16) -> Option<usize> {
        match self.by_port.as_ref()?.get(usize::from(port)) {
            Some(&t) if t > 0 => Some((t - 1) as usize),
            _ => None,
        }
    }

    /// Applies every queued command.
    pub fn drain_commands<D: Device<Channel = X>>(&mut self, dev: &mut D) {
        while let Ok(cmd) = self.commands.pop() {
            self.apply(cmd, dev);
        }
    }

    /// Applies one command.
    pub fn apply<D: Device<Channel = X>>(&mut self, cmd: Command, dev: &mut D) {
        match cmd {
            Command::Add(setup) => self.add(*setup, dev),
            Command::SetPeer { slot, channel, peer, relatch, clock } => {
                if let Some(pair) = self.pairs.get_mut(slot as usize) {
                    pair.clock = clock;
                    if let Some(ch) = pair.channels.get_mut(usize::from(channel)) {
                        ch.peer = peer.map(Endpoint::from);
                        if relatch {
                            ch.latched = None;
                        }
                    }
                }
            }
            Command::Remove { slot } => self.remove(slot, dev),
        }
    }

    fn add<D: Device<Channel = X>>(&mut self, setup: PairSetup, dev: &mut D) {
        let slot = setup.slot as usize;
        if self.pairs.get_mut(slot).is_some() {
            // The control plane never reuses a live slot; treat as a replace.
            self.remove(setup.slot, dev);
        }
        let by_port = &mut self.by_port;
        // A session taken over from an HA peer keeps its latch and counters.
        let resume = |c: usize| setup.channels[c].resume;
        let rtp = [resume(0), resume(2)].map(|r| r.as_ref().map_or_else(RtpStats::new, RtpStats::resume));
        let rtcp = [resume(1), resume(3)].map(|r| r.as_ref().map_or_else(OtherStats::new, OtherStats::resume));
        let mut c = 0;
        let [a, b, c2, d] = setup.channels.map(|s| {
            let token = slot * 4 + c;
            c += 1;
            let local = if by_port.is_some() { s.socket.local_addr().ok() } else { None };
            let port = local.map_or(0, |l| l.port());
            if let (Some(index), Some(_)) = (by_port.as_mut(), local) {
                // Before the device attaches it: a frame for this port that
                // another worker hands over finds the session.
                index[usize::from(port)] = u32::try_from(token + 1).unwrap_or(0);
            }
            let channel = Channel {
                peer: s.peer.map(Endpoint::from),
                latched: s.latched.map(Endpoint::from),
                foreign: 0,
                port,
                dirty: false,
            };
            (channel, dev.attach(token, s.socket, local))
        });
        *self.pairs.entry(slot) = Some(Pair {
            channels: [a.0, b.0, c2.0, d.0],
            rtp,
            rtcp,
            reports: [RtcpState::default(), RtcpState::default()],
            extra: [a.1, b.1, c2.1, d.1],
            clock: ClockTable::default(),
            shared: setup.shared,
        });
        // So that marking channels touched never allocates on the packet path.
        let want = self.pairs.capacity() * 4;
        if self.touched.capacity() < want {
            self.touched.reserve(want - self.touched.len());
        }
    }

    fn remove<D: Device<Channel = X>>(&mut self, slot: u32, dev: &mut D) {
        if let Some(pair) = self.pairs.take(slot as usize) {
            let Pair { channels, extra, .. } = pair;
            for (c, (ch, x)) in channels.iter().zip(extra).enumerate() {
                dev.detach(slot as usize * 4 + c, x);
                self.flood.forget(slot as usize * 4 + c);
                if let Some(index) = self.by_port.as_mut() {
                    if ch.port != 0 {
                        index[usize::from(ch.port)] = 0;
                    }
                }
            }
            self.touched.retain(|&t| t as usize / 4 != slot as usize);
        }
        self.pending.push_back(Event::Removed { slot });
    }

    /// Sends the held `Removed` events, as far as the ring has room.
    pub fn flush_events(&mut self) {
        while let Some(ev) = self.pending.front().copied() {
            if self.events.push(ev).is_err() {
                break;
            }
            self.pending.pop_front();
        }
    }

    /// Runs one batch of `dev` through the table: receive, decide each
    /// frame, give it back, flush. Returns the frames received.
    pub fn poll<D: Device<Channel = X>>(&mut self, dev: &mut D, now: Nanos, local: &mut LocalCounters) -> usize {
        let n = dev.receive(local);
        for i in 0..n {
            let Some(rx) = dev.frame(i, local) else { continue };
            let token = match rx.to {
                To::Token(t) => t,
                To::Port(p) => match self.lookup(p) {
                    Some(t) => t,
                    None => {
                        dev.no_session(i, local);
                        continue;
                    }
                },
            };
            // One lookup of the pair per packet: the decision and the
            // outgoing channel's device state come from it.
            let Some(pair) = self.pairs.get_mut(token / 4) else {
                dev.no_session(i, local);
                continue;
            };
            let mut t = Tables {
                nat: self.nat,
                flood_pps: self.flood_pps,
                flood: &mut self.flood,
                events: &mut self.events,
                touched: &mut self.touched,
            };
            match ingress(pair, &mut t, token, rx.src, rx.payload, now, local) {
                Verdict::Forward { out, dest } => dev.transmit(i, out, &mut pair.extra[out % 4], dest, local),
                Verdict::Drop => dev.discard(i),
            }
        }
        // The statistics are out before the frames: whoever sees a relayed
        // packet and then asks for the counts finds it counted.
        self.publish();
        dev.flush(local);
        n
    }

    /// Publishes the statistics of every channel touched since the last
    /// call to its [`crate::stream::DirShared`] (once per batch or round).
    pub fn publish(&mut self) {
        for &t in &self.touched {
            if let Some(pair) = self.pairs.get_mut(t as usize / 4) {
                let c = t as usize % 4;
                let ch = &mut pair.channels[c];
                ch.dirty = false;
                let snap = if is_rtcp_channel(c) { pair.rtcp[c / 2].snapshot() } else { pair.rtp[c / 2].snapshot() };
                pair.shared[c].publish(&snap, ch.foreign);
                // The leg's RTCP view goes with its RTP channel's figures.
                pair.shared[c & !1].publish_rtcp(&pair.reports[c / 2].report);
            }
        }
        self.touched.clear();
    }
}

/// What [`ingress`] needs of the table besides the packet's pair.
struct Tables<'a> {
    nat: bool,
    flood_pps: u32,
    flood: &'a mut FloodWatch,
    events: &'a mut rtrb::Producer<Event>,
    touched: &'a mut Vec<u32>,
}

/// Decides one packet received on channel `token` (of `pair`) from `src`:
/// checks and latches the source, accounts it, and picks its destination.
fn ingress<X>(
    pair: &mut Pair<X>,
    t: &mut Tables<'_>,
    token: usize,
    src: SocketAddr,
    payload: &[u8],
    now: Nanos,
    local: &mut LocalCounters,
) -> Verdict {
    let (slot, c) = (token / 4, token % 4);
    let ch = &mut pair.channels[c];
    let from = Endpoint::from(src);
    match check_source(t.nat, ch.latched, ch.peer, from) {
        SourceVerdict::Accept => {}
        SourceVerdict::Latch => {
            ch.latched = Some(from);
            // Slots come from u32 commands; channels are 0..4.
            let ev = Event::Latched { slot: slot as u32, channel: c as u8, addr: src };
            if t.events.push(ev).is_err() {
                local.events_lost += 1;
            }
        }
        SourceVerdict::Foreign => {
            ch.foreign += 1;
            local.drop_foreign += 1;
            // A dual-stack socket reports IPv4 sources IPv4-mapped.
            let ip = src.ip().to_canonical();
            if t.flood.on_foreign(token, ip, now, t.flood_pps) {
                local.flood_sources += 1;
                if t.events.push(Event::Flood { addr: ip }).is_err() {
                    local.events_lost += 1;
                }
            }
            touch(ch, t.touched, token);
            return Verdict::Drop;
        }
    }
    if is_rtcp_channel(c) || is_rtcp(payload) {
        // RTCP on its port or muxed: read the reports (a few a second).
        on_rtcp(&mut pair.reports, c / 2, payload, now);
    }
    if is_rtcp_channel(c) {
        // An RTCP port: everything on it is other traffic.
        pair.rtcp[c / 2].on_other(payload.len(), now);
    } else {
        account_packet(&mut pair.rtp[c / 2], false, &pair.clock, payload, now);
    }
    touch(ch, t.touched, token);
    let out = peer_channel(c);
    match pair.channels[out].destination() {
        Some(dest) => Verdict::Forward { out: slot * 4 + out, dest },
        None => {
            local.drop_no_destination += 1;
            Verdict::Drop
        }
    }
}

fn touch(ch: &mut Channel, touched: &mut Vec<u32>, token: usize) {
    if !ch.dirty {
        ch.dirty = true;
        touched.push(u32::try_from(token).unwrap_or(u32::MAX));
    }
}

/// Accounts one accepted UDP payload in a direction's statistics (RTP by
/// its header, anything else as other traffic; everything on an RTCP port
/// as other traffic).
pub fn account_packet(stats: &mut RtpStats, rtcp_port: bool, clock: &ClockTable, pkt: &[u8], now: Nanos) {
    if rtcp_port || is_rtcp(pkt) {
        stats.on_other(pkt.len(), now);
        return;
    }
    match RtpPacket::new_checked(pkt) {
        Ok(rtp) if rtp.version() == 2 => {
            let rate = clock.rate(rtp.payload_type());
            stats.on_rtp(rtp.sequence_number(), rtp.timestamp(), rtp.ssrc(), pkt.len(), rate, now);
        }
        _ => stats.on_other(pkt.len(), now),
    }
}

#[cfg(test)]
mod tests;
