//! An `AF_XDP` media worker: one thread, pinned, owning one socket per
//! interface on its queue (sharing one UMEM). It receives frames in
//! batches, checks and latches the source and accounts the packet exactly
//! as the socket worker does, rewrites the headers in place and queues the
//! same frame on the egress interface's TX ring: no copy in userspace.
//!
//! Hot path: no allocation, no lock, no syscall per packet. The clock is
//! read once per batch; TX wakeups are per batch. The one exception is the
//! kernel path: a packet whose next hop's MAC is not known yet (or that
//! cannot be rewritten in place) is sent with `sendto` on the leg's UDP
//! socket, so the kernel resolves the neighbour and nothing is lost; it is
//! counted in `media_relay_xdp_kernel_path_total`.
//!
//! The control plane drives it with the same [`Command`]s as the socket
//! worker. The UDP sockets it receives keep the ports reserved and carry
//! the kernel path; steered packets never reach them.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use xdpilone::xdp::XdpDesc;

use super::handoff::MeshPort;
use super::neigh::NeighTable;
use super::rewrite::{self, Checksum, L2};
use super::umem::{Xsk, BATCH, FRAME_SIZE};
use crate::counters::LocalCounters;
use crate::stats::RtpStats;
use crate::stream::{peer_channel, ChannelSetup, ClockTable, Command, DirShared, Event, PairSetup, A_RTCP, B_RTCP};
use crate::sys::monotonic_ns;
use crate::worker::{account_packet, check_source, SourceVerdict, WorkerContext};

/// Empty polls (about 20 ns each) before the worker sleeps in `epoll_wait`.
const SPIN: u32 = 512;
/// The same for a real-time worker, which does not spin. Its wakeup preempts
/// ordinary threads at once, so spinning buys it little, while a spinning
/// real-time worker keeps its core from everything below it, the NAPI
/// thread included when that runs lower. Measured at 100k pps in the bench
/// lab (`xdp-bench --scheduling fifo --priority 40 --sink inline`, NAPI
/// thread at FIFO 50): spinning, 2.2-2.9 % loss and p99 0.8-2.5 ms (median
/// 2.6 %, 1.2 ms, 8 steps); without, 0.03-2.8 % and 0.13-1.6 ms (median
/// 0.8 %, 0.9 ms, 15 steps).
const SPIN_REAL_TIME: u32 = 1;
/// Longest sleep (a missed wakeup costs at most this).
const SLEEP: Duration = Duration::from_millis(20);
/// No port in a [`Hop`].
const NO_PORT: u8 = u8::MAX;
/// How often the sockets' kernel drop counters are read (one syscall each).
const KERNEL_STATS_EVERY: u64 = 1_000_000_000;

/// A channel's cached answer to "how do frames reach the destination".
#[derive(Clone, Copy)]
struct Hop {
    /// Neighbour-table generation it was computed at (0: never).
    generation: u64,
    dest: Option<SocketAddr>,
    /// Index of the egress socket, or [`NO_PORT`]: kernel path.
    port: u8,
    l2: L2,
}

struct Channel {
    socket: UdpSocket,
    local: SocketAddr,
    peer: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    stats: RtpStats,
    foreign: u64,
    shared: Arc<DirShared>,
    rtcp_port: bool,
    hop: Hop,
    dirty: bool,
}

impl Channel {
    fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.peer)
    }
}

struct Pair {
    channels: [Channel; 4],
    clock: ClockTable,
}

/// What the worker does with one received frame.
enum Verdict {
    /// Queue on the TX ring of this port.
    Transmit(usize),
    /// Send the payload through the kernel from this channel.
    Kernel { token: usize, dest: SocketAddr },
    /// Drop (already counted).
    Drop,
}

/// Token of the queue-handoff eventfd (see [`super::handoff`]).
const HANDOFF: Token = Token(usize::MAX - 1);

/// Runs until shutdown, on the sockets of `xsk`. With several queues,
/// `mesh` connects it to the other queues' workers.
pub fn run(
    ctx: WorkerContext,
    poll: Poll,
    xsk: Xsk,
    neigh: Arc<NeighTable>,
    checksum: Checksum,
    mesh: Option<MeshPort>,
) {
    let real_time = crate::worker::settle(&ctx);
    let mut w = Worker {
        spin: if real_time { SPIN_REAL_TIME } else { SPIN },
        checksum,
        ifindexes: xsk.ports.iter().map(|p| p.ifindex).collect(),
        pairs: Vec::new(),
        by_port: vec![0u32; 65536].into_boxed_slice(),
        local: LocalCounters::default(),
        descs: [XdpDesc::default(); BATCH],
        touched: Vec::with_capacity(BATCH * 2),
        pending_events: std::collections::VecDeque::new(),
        mesh,
        ctx,
        poll,
        xsk,
        neigh,
    };
    for p in 0..w.xsk.ports.len() {
        let fd = w.xsk.ports[p].fd();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        if let Err(e) = w.poll.registry().register(&mut SourceFd(&raw), Token(p), Interest::READABLE) {
            tracing::warn!(error = %e, "registering an AF_XDP socket with epoll failed; the worker will poll it");
        }
    }
    if let Some(m) = &w.mesh {
        let fd = m.wake_fd();
        if let Err(e) = w.poll.registry().register(&mut SourceFd(&fd), HANDOFF, Interest::READABLE) {
            tracing::warn!(error = %e, "registering the queue-handoff eventfd failed; handed-over frames wait for the next poll timeout");
        }
    }
    w.main_loop();
}

struct Worker {
    ctx: WorkerContext,
    poll: Poll,
    xsk: Xsk,
    neigh: Arc<NeighTable>,
    checksum: Checksum,
    /// Interface of each socket of `xsk`, by index.
    ifindexes: Vec<u32>,
    pairs: Vec<Option<Box<Pair>>>,
    /// Local UDP port -> channel token + 1 (0: not ours).
    by_port: Box<[u32]>,
    local: LocalCounters,
    descs: [XdpDesc; BATCH],
    touched: Vec<u32>,
    pending_events: std::collections::VecDeque<Event>,
    /// Rings to and from the other queues' workers (several queues only).
    mesh: Option<MeshPort>,
    /// Empty rounds before sleeping ([`SPIN`] or [`SPIN_REAL_TIME`]).
    spin: u32,
}

impl Worker {
    fn main_loop(&mut self) {
        let mut events = Events::with_capacity(16);
        let mut idle = 0u32;
        let mut stats_at = 0;
        let mut rounds = 0u32;
        while !self.ctx.shutdown.load(Ordering::Relaxed) {
            self.drain_commands();
            self.flush_events();
            rounds = rounds.wrapping_add(1);
            if rounds.is_multiple_of(1024) || idle >= self.spin {
                let now = monotonic_ns();
                if now.saturating_sub(stats_at) >= KERNEL_STATS_EVERY {
                    stats_at = now;
                    self.kernel_drops();
                    self.local.publish(&self.ctx.counters);
                }
            }
            let got = self.round();
            if got > 0 {
                idle = 0;
                self.local.publish(&self.ctx.counters);
                continue;
            }
            idle += 1;
            if idle < self.spin {
                std::hint::spin_loop();
                continue;
            }
            // Sleep until a socket has frames or the control plane wakes us.
            self.ctx.sleeping.store(true, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            let ready = (0..self.xsk.ports.len()).any(|p| self.xsk.ports[p].rx.available() > 0);
            let handed = self.mesh.as_ref().is_some_and(|m| !m.sleep());
            if self.ctx.commands.is_empty() && !ready && !handed {
                let _ = self.poll.poll(&mut events, Some(SLEEP));
            }
            self.ctx.sleeping.store(false, Ordering::Relaxed);
            if let Some(m) = &self.mesh {
                m.woke();
            }
        }
    }

    /// One pass over every socket: reap TX completions, refill, receive one
    /// batch each, then transmit. Returns the frames received.
    fn round(&mut self) -> usize {
        let nports = self.xsk.ports.len();
        for p in 0..nports {
            self.xsk.reap(p);
            let level = self.xsk.fill_level(p) as usize;
            let target = super::umem::RING_SIZE as usize * 3 / 4;
            if level < target {
                self.xsk.refill(p, target - level);
            }
        }
        let handed = self.mesh.as_ref().is_some_and(MeshPort::has_inbound);
        if !handed && !self.xsk.ports.iter().any(|p| p.rx.available() > 0) {
            return 0;
        }
        let mut total = 0;
        let now = monotonic_ns();
        for p in 0..nports {
            let mut descs = self.descs;
            let n = self.xsk.receive(p, &mut descs);
            if n == 0 {
                continue;
            }
            total += n;
            self.local.batches += 1;
            self.local.received += n as u64;
            for d in &descs[..n] {
                self.handle(*d, now, false);
            }
        }
        if handed {
            // Frames of our sessions that arrived on other queues.
            let mut descs = self.descs;
            let n = self.take_handed(&mut descs);
            total += n;
            for d in &descs[..n] {
                self.handle(*d, now, true);
            }
        }
        if let Some(m) = self.mesh.as_mut() {
            // One wakeup per batch of each sleeping worker we handed frames.
            m.flush();
        }
        if let Some(sip) = self.ctx.sip.as_mut() {
            // One wakeup of the signaling plane per batch.
            sip.flush();
            self.local.sip_handoff = sip.delivered;
            self.local.drop_sip = sip.dropped;
        }
        for p in 0..nports {
            let f = self.xsk.flush(p);
            self.count_flush(f);
        }
        // Taken out and put back: the vector keeps its capacity.
        let mut touched = std::mem::take(&mut self.touched);
        for &t in &touched {
            if let Some(ch) = self.channel_mut(t as usize) {
                ch.dirty = false;
                ch.shared.publish(&ch.stats.snapshot(), ch.foreign);
            }
        }
        touched.clear();
        self.touched = touched;
        total
    }

    /// Reads the sockets' kernel drop counters into the local counters.
    fn kernel_drops(&mut self) {
        let mut sum = [0u64; 4];
        for p in &self.xsk.ports {
            if let Some(d) = p.kernel_drops() {
                for (s, v) in sum.iter_mut().zip(d) {
                    *s += v;
                }
            }
        }
        self.local.xsk_rx_dropped = sum[0];
        self.local.xsk_rx_ring_full = sum[1];
        self.local.xsk_fill_ring_empty = sum[2];
        self.local.xsk_tx_invalid = sum[3];
    }

    fn channel_mut(&mut self, token: usize) -> Option<&mut Channel> {
        self.pairs.get_mut(token / 4)?.as_mut().map(|p| &mut p.channels[token % 4])
    }

    /// Copies up to a batch of frames other workers handed over into free
    /// frames of our UMEM; frames stay in their rings while none is free.
    fn take_handed(&mut self, out: &mut [XdpDesc; BATCH]) -> usize {
        let Some(mesh) = self.mesh.as_mut() else { return 0 };
        let xsk = &mut self.xsk;
        let mut n = 0;
        mesh.receive(|rx| {
            // `pop_into` reads the sender's position only when its cached
            // copy runs out; an empty ring gives the frame straight back.
            while n < BATCH {
                let Some(addr) = xsk.free.pop() else { return false };
                let Some(buf) = xsk.mem.slice_mut(addr, FRAME_SIZE as usize) else {
                    xsk.release(addr);
                    return false;
                };
                match rx.pop_into(buf) {
                    Some(len) => {
                        out[n] = XdpDesc { addr, len: u32::try_from(len).unwrap_or(0), options: 0 };
                        n += 1;
                    }
                    None => {
                        xsk.release(addr);
                        break;
                    }
                }
            }
            n < BATCH
        });
        n
    }

    /// Counts what a TX flush could not send: frames it gave back, and
    /// frames the kernel dropped unsent, were counted as relayed when they
    /// were staged.
    fn count_flush(&mut self, f: super::umem::Flushed) {
        self.local.send_failed(f.dropped as u64, f.unreachable);
        // The kernel completed these unsent: the egress device cannot send.
        self.local.send_failed(f.refused as u64, true);
        self.local.relayed = self.local.relayed.saturating_sub((f.dropped + f.refused) as u64);
    }

    /// `handed`: the frame came from another queue's worker (it is never
    /// handed on again).
    fn handle(&mut self, d: XdpDesc, now: crate::Nanos, handed: bool) {
        let verdict = self.decide(d, now, handed);
        match verdict {
            Verdict::Transmit(port) => {
                if let Some(p) = self.xsk.ports.get_mut(port) {
                    p.stage.push(XdpDesc { addr: d.addr, len: d.len, options: 0 });
                    self.local.relayed += 1;
                    if p.stage.len() >= p.stage.capacity() {
                        let f = self.xsk.flush(port);
                        self.count_flush(f);
                    }
                } else {
                    self.xsk.release(d.addr);
                }
            }
            Verdict::Kernel { token, dest } => {
                let len = d.len as usize;
                let sent = match (self.xsk.mem.slice_mut(d.addr, len), self.pairs.get(token / 4)) {
                    (Some(frame), Some(Some(pair))) => match rewrite::parse(frame) {
                        Ok(p) => {
                            let payload = &frame[p.payload.clone()];
                            pair.channels[token % 4].socket.send_to(payload, dest).map_err(|e| e.raw_os_error())
                        }
                        Err(_) => Err(None),
                    },
                    _ => Err(None),
                };
                match sent {
                    Ok(bytes) => {
                        self.local.kernel_path += 1;
                        self.local.relayed += 1;
                        self.local.relayed_bytes += bytes as u64;
                    }
                    Err(errno) => self.local.send_failed(1, crate::sys::unreachable(errno)),
                }
                self.xsk.release(d.addr);
            }
            Verdict::Drop => self.xsk.release(d.addr),
        }
    }

    /// Parse, look up, check the source, account, rewrite. Side effects on
    /// statistics and latching happen here; the frame's fate is returned.
    fn decide(&mut self, d: XdpDesc, now: crate::Nanos, handed: bool) -> Verdict {
        let generation = self.neigh.generation();
        let Some(frame) = self.xsk.mem.slice_mut(d.addr, d.len as usize) else {
            self.local.drop_malformed += 1;
            return Verdict::Drop;
        };
        let Ok(parsed) = rewrite::parse(frame) else {
            self.local.drop_malformed += 1;
            return Verdict::Drop;
        };
        if let Some(sip) = self.ctx.sip.as_mut().filter(|s| s.is_sip(parsed.dst.port())) {
            // SIP for the signaling plane: one copy into its ring.
            sip.send(parsed.src, parsed.dst, &frame[parsed.payload.clone()]);
            return Verdict::Drop;
        }
        let token = match self.by_port.get(usize::from(parsed.dst.port())) {
            Some(&t) if t > 0 => (t - 1) as usize,
            _ => {
                // Another queue's worker may own the session (RSS put the
                // flow on our queue): hand the frame over.
                let owner =
                    if handed { None } else { self.mesh.as_ref().and_then(|m| m.other_owner(parsed.dst.port())) };
                match (owner, self.mesh.as_mut()) {
                    (Some(to), Some(m)) => {
                        if m.forward(to, frame) {
                            self.local.queue_handoff += 1;
                        } else {
                            self.local.drop_handoff += 1;
                        }
                    }
                    _ => self.local.drop_no_session += 1,
                }
                return Verdict::Drop;
            }
        };
        let (slot, c) = (token / 4, token % 4);
        let Some(Some(pair)) = self.pairs.get_mut(slot) else {
            self.local.drop_no_session += 1;
            return Verdict::Drop;
        };
        let clock = pair.clock;
        let ch = &mut pair.channels[c];
        match check_source(self.ctx.nat, ch.latched, ch.peer, parsed.src) {
            SourceVerdict::Accept => {}
            SourceVerdict::Latch => {
                ch.latched = Some(parsed.src);
                let ev = Event::Latched { slot: slot as u32, channel: c as u8, addr: parsed.src };
                if self.ctx.events.push(ev).is_err() {
                    self.local.events_lost += 1;
                }
            }
            SourceVerdict::Foreign => {
                ch.foreign += 1;
                self.local.drop_foreign += 1;
                if !ch.dirty {
                    ch.dirty = true;
                    self.touched.push(token as u32);
                }
                return Verdict::Drop;
            }
        }
        let payload = &frame[parsed.payload.clone()];
        account_packet(&mut ch.stats, ch.rtcp_port, &clock, payload, now);
        let bytes = payload.len() as u64;
        if !ch.dirty {
            ch.dirty = true;
            self.touched.push(token as u32);
        }
        let out_token = slot * 4 + peer_channel(c);
        let out = &mut pair.channels[peer_channel(c)];
        let Some(dest) = out.destination() else {
            self.local.drop_no_destination += 1;
            return Verdict::Drop;
        };
        if out.hop.generation != generation || out.hop.dest != Some(dest) {
            out.hop = resolve(&self.neigh, &self.ifindexes, dest, generation);
        }
        let hop = out.hop;
        if hop.port == NO_PORT || out.local.ip().is_unspecified() || parsed.vlan {
            return Verdict::Kernel { token: out_token, dest };
        }
        if rewrite::rewrite(frame, &parsed, &hop.l2, out.local, dest, self.checksum).is_err() {
            return Verdict::Kernel { token: out_token, dest };
        }
        self.local.relayed_bytes += bytes;
        Verdict::Transmit(usize::from(hop.port))
    }

    fn drain_commands(&mut self) {
        while let Ok(cmd) = self.ctx.commands.pop() {
            match cmd {
                Command::Add(setup) => self.add(*setup),
                Command::SetPeer { slot, channel, peer, relatch, clock } => {
                    if let Some(Some(pair)) = self.pairs.get_mut(slot as usize) {
                        pair.clock = clock;
                        if let Some(ch) = pair.channels.get_mut(usize::from(channel)) {
                            ch.peer = peer;
                            if relatch {
                                ch.latched = None;
                            }
                        }
                    }
                }
                Command::Remove { slot } => self.remove(slot),
            }
        }
    }

    fn add(&mut self, setup: PairSetup) {
        let slot = setup.slot as usize;
        if self.pairs.len() <= slot {
            self.pairs.resize_with(slot + 1, || None);
        }
        if self.pairs[slot].is_some() {
            self.remove(setup.slot);
        }
        let mut chans = setup.channels.into_iter().enumerate().map(|(c, s)| make_channel(c, s));
        let (Some(a), Some(b), Some(c), Some(d)) = (chans.next(), chans.next(), chans.next(), chans.next()) else {
            return;
        };
        let channels = [a, b, c, d];
        for (c, ch) in channels.iter().enumerate() {
            if let Some(e) = self.by_port.get_mut(usize::from(ch.local.port())) {
                *e = u32::try_from(slot * 4 + c + 1).unwrap_or(0);
            }
            // After our own table: a frame handed to us finds the session.
            if let Some(m) = &self.mesh {
                m.claim(ch.local.port());
            }
        }
        self.pairs[slot] = Some(Box::new(Pair { channels, clock: ClockTable::default() }));
    }

    fn remove(&mut self, slot: u32) {
        if let Some(p) = self.pairs.get_mut(slot as usize).and_then(Option::take) {
            for ch in &p.channels {
                if let Some(m) = &self.mesh {
                    m.release(ch.local.port());
                }
                if let Some(e) = self.by_port.get_mut(usize::from(ch.local.port())) {
                    *e = 0;
                }
            }
            self.touched.retain(|&t| t as usize / 4 != slot as usize);
            drop(p);
        }
        self.pending_events.push_back(Event::Removed { slot });
    }

    fn flush_events(&mut self) {
        while let Some(ev) = self.pending_events.front().copied() {
            if self.ctx.events.push(ev).is_err() {
                break;
            }
            self.pending_events.pop_front();
        }
    }
}

fn make_channel(c: usize, s: ChannelSetup) -> Channel {
    let local = s.socket.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    Channel {
        socket: s.socket,
        local,
        peer: s.peer,
        // A session taken over from an HA peer keeps its latch and counters.
        latched: s.latched,
        stats: s.resume.as_ref().map_or_else(RtpStats::new, RtpStats::resume),
        foreign: 0,
        shared: s.shared,
        rtcp_port: c == A_RTCP || c == B_RTCP,
        hop: Hop { generation: 0, dest: None, port: NO_PORT, l2: L2::default() },
        dirty: false,
    }
}

/// Where frames to `dest` go: the egress socket and MACs, or the kernel
/// path when the route leaves through an interface we have no socket on,
/// or the neighbour is unknown.
fn resolve(neigh: &NeighTable, ifindexes: &[u32], dest: SocketAddr, generation: u64) -> Hop {
    let snap = neigh.load();
    let found = snap.resolve(dest.ip()).and_then(|hop| {
        let port = ifindexes.iter().position(|&i| i == hop.ifindex)?;
        Some((u8::try_from(port).ok()?, L2 { src: hop.src_mac, dst: hop.dst_mac }))
    });
    match found {
        Some((port, l2)) => Hop { generation, dest: Some(dest), port, l2 },
        None => Hop { generation, dest: Some(dest), port: NO_PORT, l2: L2::default() },
    }
}
