//! An `AF_XDP` media worker: one thread, pinned, owning one socket per
//! interface on its queue (sharing one UMEM). It receives frames in
//! batches, checks and latches the source and accounts the packet exactly
//! as the socket worker does, rewrites the headers in place and queues the
//! same frame on the egress interface's TX ring: no copy in userspace.
//! Between an IPv4 and an IPv6 leg the IP header is replaced and the frame
//! moves within its UMEM frame (into the headroom in front of it).
//!
//! Hot path: no allocation, no lock, no syscall per packet. The clock is
//! read once per batch; TX wakeups are per batch. The one exception is the
//! kernel path: a packet whose next hop's MAC is not known yet (or that
//! cannot be rewritten in place) is sent with `sendto` on the leg's UDP
//! socket, so the kernel resolves the neighbour and nothing is lost; it is
//! counted in `media_relay_xdp_kernel_path_total`.
//!
//! The session logic (latching, accounting, destinations, commands) is
//! the shared [`Sessions`] table, driven with the same commands as the
//! socket worker; this module is the I/O loop and its [`Device`],
//! [`XskDevice`]. The UDP sockets the table hands it keep the ports
//! reserved and carry the kernel path; steered packets never reach them.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use xdpilone::xdp::XdpDesc;

use super::handoff::MeshPort;
use super::neigh::NeighTable;
use super::rewrite::{self, Checksum, Parsed, L2};
use super::umem::{Xsk, BATCH, FRAME_SIZE};
use crate::counters::LocalCounters;
use crate::datapath::backend::{settle, WorkerContext};
use crate::datapath::device::{Device, Rx, To};
use crate::datapath::session::Sessions;
use crate::sip_handoff::SipSender;
use crate::sys::monotonic_ns;

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
/// Where in its UMEM frame a frame handed over by another worker is put:
/// room for [`rewrite::translate`] to grow it. Received frames already
/// have the kernel's headroom (256 bytes) and are at most
/// `FRAME_SIZE` - 256 long, so a handed one always fits.
const HANDED_HEADROOM: u64 = 64;
const _: () = assert!(HANDED_HEADROOM as usize >= rewrite::TRANSLATE_GROWTH);
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

/// The `AF_XDP` device's state of one channel.
pub struct XskChannel {
    /// Keeps the port reserved; sends the kernel path.
    socket: UdpSocket,
    local: SocketAddr,
    hop: Hop,
}

/// Where the device's next batch comes from.
#[derive(Clone, Copy)]
enum Source {
    /// The RX ring of socket `p`.
    Port(usize),
    /// Frames other queues' workers handed over.
    Handed,
}

/// Token of the queue-handoff eventfd (see [`super::handoff`]).
const HANDOFF: Token = Token(usize::MAX - 1);

/// One worker's `AF_XDP` sockets (sharing one UMEM) seen as a [`Device`]:
/// a batch is one socket's RX ring or the frames handed over; frames are
/// rewritten in place and staged on the egress socket's TX ring, which the
/// worker flushes once per round.
pub struct XskDevice {
    xsk: Xsk,
    neigh: Arc<NeighTable>,
    checksum: Checksum,
    /// Interface of each socket of `xsk`, by index.
    ifindexes: Vec<u32>,
    /// Rings to and from the other queues' workers (several queues only).
    mesh: Option<MeshPort>,
    sip: Option<SipSender>,
    source: Source,
    descs: [XdpDesc; BATCH],
    /// The headers of the frame last returned by [`Device::frame`].
    parsed: Option<Parsed>,
}

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
    let real_time = settle(&ctx);
    let WorkerContext { commands, events, nat, flood_pps, counters, shutdown, sleeping, sip, .. } = ctx;
    let mut w = Worker {
        spin: if real_time { SPIN_REAL_TIME } else { SPIN },
        table: Sessions::new(commands, events, nat, true),
        dev: XskDevice {
            checksum,
            ifindexes: xsk.ports.iter().map(|p| p.ifindex).collect(),
            mesh,
            sip,
            source: Source::Handed,
            descs: [XdpDesc::default(); BATCH],
            parsed: None,
            xsk,
            neigh,
        },
        local: LocalCounters::default(),
        counters,
        shutdown,
        sleeping,
        poll,
    };
    w.table.set_flood_limit(flood_pps);
    for p in 0..w.dev.xsk.ports.len() {
        let fd = w.dev.xsk.ports[p].fd();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        if let Err(e) = w.poll.registry().register(&mut SourceFd(&raw), Token(p), Interest::READABLE) {
            tracing::warn!(error = %e, "registering an AF_XDP socket with epoll failed; the worker will poll it");
        }
    }
    if let Some(m) = &w.dev.mesh {
        let fd = m.wake_fd();
        if let Err(e) = w.poll.registry().register(&mut SourceFd(&fd), HANDOFF, Interest::READABLE) {
            tracing::warn!(error = %e, "registering the queue-handoff eventfd failed; handed-over frames wait for the next poll timeout");
        }
    }
    w.main_loop();
}

struct Worker {
    table: Sessions<XskChannel>,
    dev: XskDevice,
    local: LocalCounters,
    counters: Arc<crate::counters::PaddedCounters>,
    shutdown: Arc<std::sync::atomic::AtomicBool>,
    sleeping: Arc<std::sync::atomic::AtomicBool>,
    poll: Poll,
    /// Empty rounds before sleeping ([`SPIN`] or [`SPIN_REAL_TIME`]).
    spin: u32,
}

impl Worker {
    fn main_loop(&mut self) {
        let mut events = Events::with_capacity(16);
        let mut idle = 0u32;
        let mut stats_at = 0;
        let mut rounds = 0u32;
        while !self.shutdown.load(Ordering::Relaxed) {
            self.table.drain_commands(&mut self.dev);
            self.table.flush_events();
            rounds = rounds.wrapping_add(1);
            if rounds.is_multiple_of(1024) || idle >= self.spin {
                let now = monotonic_ns();
                if now.saturating_sub(stats_at) >= KERNEL_STATS_EVERY {
                    stats_at = now;
                    self.kernel_drops();
                    self.local.publish(&self.counters);
                }
            }
            let got = self.round();
            if got > 0 {
                idle = 0;
                self.local.publish(&self.counters);
                continue;
            }
            idle += 1;
            if idle < self.spin {
                std::hint::spin_loop();
                continue;
            }
            // Sleep until a socket has frames or the control plane wakes us.
            self.sleeping.store(true, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            let xsk = &self.dev.xsk;
            let ready = (0..xsk.ports.len()).any(|p| xsk.ports[p].rx.available() > 0);
            let handed = self.dev.mesh.as_ref().is_some_and(|m| !m.sleep());
            if !self.table.has_commands() && !ready && !handed {
                let _ = self.poll.poll(&mut events, Some(SLEEP));
            }
            self.sleeping.store(false, Ordering::Relaxed);
            if let Some(m) = &self.dev.mesh {
                m.woke();
            }
        }
    }

    /// One pass over every socket: reap TX completions, refill, receive one
    /// batch each, then transmit. Returns the frames received.
    fn round(&mut self) -> usize {
        let dev = &mut self.dev;
        let nports = dev.xsk.ports.len();
        for p in 0..nports {
            dev.xsk.reap(p);
            let level = dev.xsk.fill_level(p) as usize;
            let target = super::umem::RING_SIZE as usize * 3 / 4;
            if level < target {
                dev.xsk.refill(p, target - level);
            }
        }
        let handed = dev.mesh.as_ref().is_some_and(MeshPort::has_inbound);
        if !handed && !dev.xsk.ports.iter().any(|p| p.rx.available() > 0) {
            return 0;
        }
        let mut total = 0;
        let now = monotonic_ns();
        for p in 0..nports {
            self.dev.source = Source::Port(p);
            total += self.table.poll(&mut self.dev, now, &mut self.local);
        }
        if handed {
            // Frames of our sessions that arrived on other queues.
            self.dev.source = Source::Handed;
            total += self.table.poll(&mut self.dev, now, &mut self.local);
        }
        let dev = &mut self.dev;
        if let Some(m) = dev.mesh.as_mut() {
            // One wakeup per batch of each sleeping worker we handed frames.
            m.flush();
        }
        if let Some(sip) = dev.sip.as_mut() {
            // One wakeup of the signaling plane per batch.
            sip.flush();
            self.local.sip_handoff = sip.delivered;
            self.local.drop_sip = sip.dropped;
        }
        for p in 0..nports {
            dev.flush_port(p, &mut self.local);
        }
        self.table.publish();
        total
    }

    /// Reads the sockets' kernel drop counters into the local counters.
    fn kernel_drops(&mut self) {
        let mut sum = [0u64; 4];
        for p in &self.dev.xsk.ports {
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
}

impl XskDevice {
    /// Copies up to a batch of frames other workers handed over into free
    /// frames of our UMEM; frames stay in their rings while none is free.
    fn take_handed(&mut self) -> usize {
        let Some(mesh) = self.mesh.as_mut() else { return 0 };
        let xsk = &mut self.xsk;
        let out = &mut self.descs;
        let mut n = 0;
        mesh.receive(|rx| {
            // `pop_into` reads the sender's position only when its cached
            // copy runs out; an empty ring gives the frame straight back.
            while n < BATCH {
                let Some(addr) = xsk.free.pop() else { return false };
                // Behind headroom, as the kernel puts received frames,
                // so that an IPv4 frame can grow into an IPv6 one.
                let at = addr + HANDED_HEADROOM;
                let Some(buf) = xsk.mem.slice_mut(at, (u64::from(FRAME_SIZE) - HANDED_HEADROOM) as usize) else {
                    xsk.release(addr);
                    return false;
                };
                match rx.pop_into(buf) {
                    Some(len) => {
                        out[n] = XdpDesc { addr: at, len: u32::try_from(len).unwrap_or(0), options: 0 };
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

    /// Sends port `p`'s staged frames and counts what could not be sent.
    fn flush_port(&mut self, p: usize, local: &mut LocalCounters) {
        let f = self.xsk.flush(p);
        count_flush(local, f);
    }

    /// Sends frame `d`'s payload through the kernel from `socket`.
    fn kernel_path(&mut self, d: XdpDesc, socket: &UdpSocket, dest: SocketAddr, local: &mut LocalCounters) {
        let sent = match self.xsk.mem.slice_mut(d.addr, d.len as usize) {
            Some(frame) => match rewrite::parse(frame) {
                Ok(p) => socket.send_to(&frame[p.payload], dest).map_err(|e| e.raw_os_error()),
                Err(_) => Err(None),
            },
            None => Err(None),
        };
        match sent {
            Ok(bytes) => {
                local.kernel_path += 1;
                local.relayed += 1;
                local.relayed_bytes += bytes as u64;
            }
            Err(errno) => local.send_failed(1, crate::sys::unreachable(errno)),
        }
        self.xsk.release(d.addr);
    }
}

/// Counts what a TX flush could not send: frames it gave back, and
/// frames the kernel dropped unsent, were counted as relayed when they
/// were staged.
fn count_flush(local: &mut LocalCounters, f: super::umem::Flushed) {
    local.send_failed(f.dropped as u64, f.unreachable);
    // The kernel completed these unsent: the egress device cannot send.
    local.send_failed(f.refused as u64, true);
    local.relayed = local.relayed.saturating_sub((f.dropped + f.refused) as u64);
}

impl Device for XskDevice {
    type Channel = XskChannel;

    fn attach(&mut self, _token: usize, socket: UdpSocket, local: Option<SocketAddr>) -> XskChannel {
        let local = local.or_else(|| socket.local_addr().ok()).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        // After the table's port index: a frame handed to us finds the session.
        if let Some(m) = &self.mesh {
            m.claim(local.port());
        }
        XskChannel { socket, local, hop: Hop { generation: 0, dest: None, port: NO_PORT, l2: L2::default() } }
    }

    fn detach(&mut self, _token: usize, channel: XskChannel) {
        if let Some(m) = &self.mesh {
            m.release(channel.local.port());
        }
    }

    fn receive(&mut self, local: &mut LocalCounters) -> usize {
        match self.source {
            Source::Port(p) => {
                let n = self.xsk.receive(p, &mut self.descs);
                if n > 0 {
                    local.batches += 1;
                    local.received += n as u64;
                }
                n
            }
            Source::Handed => self.take_handed(),
        }
    }

    fn frame(&mut self, i: usize, local: &mut LocalCounters) -> Option<Rx<'_>> {
        let d = self.descs[i];
        let parsed = match self.xsk.mem.slice_mut(d.addr, d.len as usize).map(|f| rewrite::parse(f)) {
            Some(Ok(p)) => p,
            _ => {
                local.drop_malformed += 1;
                self.xsk.release(d.addr);
                return None;
            }
        };
        if let Some(sip) = self.sip.as_mut().filter(|s| s.is_sip(parsed.dst.port())) {
            // SIP for the signaling plane: one copy into its ring.
            if let Some(frame) = self.xsk.mem.slice_mut(d.addr, d.len as usize) {
                sip.send(parsed.src, parsed.dst, &frame[parsed.payload.clone()]);
            }
            self.xsk.release(d.addr);
            return None;
        }
        let (to, src, payload) = (To::Port(parsed.dst.port()), parsed.src, parsed.payload.clone());
        self.parsed = Some(parsed);
        // `parse` checked the payload lies in the frame, so this is the
        // frame's payload (the fallback only keeps the types simple).
        let frame = self.xsk.mem.slice_mut(d.addr, d.len as usize).unwrap_or_default();
        Some(Rx { to, src, payload: frame.get(payload).unwrap_or_default() })
    }

    fn no_session(&mut self, i: usize, local: &mut LocalCounters) {
        let d = self.descs[i];
        let port = self.parsed.take().map(|p| p.dst.port());
        // Another queue's worker may own the session (RSS put the flow on
        // our queue): hand the frame over. Handed frames are never handed on.
        let owner = match (self.source, port) {
            (Source::Port(_), Some(port)) => self.mesh.as_ref().and_then(|m| m.other_owner(port)),
            _ => None,
        };
        match (owner, self.mesh.as_mut(), self.xsk.mem.slice_mut(d.addr, d.len as usize)) {
            (Some(to), Some(m), Some(frame)) => {
                if m.forward(to, frame) {
                    local.queue_handoff += 1;
                } else {
                    local.drop_handoff += 1;
                }
            }
            _ => local.drop_no_session += 1,
        }
        self.xsk.release(d.addr);
    }

    fn transmit(&mut self, i: usize, _out: usize, ch: &mut XskChannel, dest: SocketAddr, local: &mut LocalCounters) {
        let d = self.descs[i];
        let Some(parsed) = self.parsed.take() else {
            self.xsk.release(d.addr);
            return;
        };
        let generation = self.neigh.generation();
        if ch.hop.generation != generation || ch.hop.dest != Some(dest) {
            ch.hop = resolve(&self.neigh, &self.ifindexes, dest, generation);
        }
        let hop = ch.hop;
        let out = if hop.port == NO_PORT || ch.local.ip().is_unspecified() || parsed.vlan {
            None
        } else if parsed.src.is_ipv4() == dest.is_ipv4() {
            self.xsk.mem.slice_mut(d.addr, d.len as usize).and_then(|frame| {
                rewrite::rewrite(frame, &parsed, &hop.l2, ch.local, dest, self.checksum).ok().map(|()| d)
            })
        } else {
            // Between IPv4 and IPv6 the IP header changes size: the frame
            // moves within its UMEM frame (into the headroom in front of it).
            let base = d.addr & !u64::from(FRAME_SIZE - 1);
            let head = (d.addr - base) as usize;
            self.xsk.mem.slice_mut(base, head + d.len as usize).and_then(|buf| {
                let r = rewrite::translate(buf, head, &parsed, &hop.l2, ch.local, dest, self.checksum).ok()?;
                Some(XdpDesc { addr: base + r.start as u64, len: u32::try_from(r.len()).ok()?, options: 0 })
            })
        };
        let Some(out) = out else {
            self.kernel_path(d, &ch.socket, dest, local);
            return;
        };
        local.relayed_bytes += parsed.payload.len() as u64;
        let port = usize::from(hop.port);
        if let Some(p) = self.xsk.ports.get_mut(port) {
            p.stage.push(XdpDesc { addr: out.addr, len: out.len, options: 0 });
            local.relayed += 1;
            if p.stage.len() >= p.stage.capacity() {
                self.flush_port(port, local);
            }
        } else {
            self.xsk.release(d.addr);
        }
    }

    fn discard(&mut self, i: usize) {
        self.parsed = None;
        self.xsk.release(self.descs[i].addr);
    }

    fn flush(&mut self, _local: &mut LocalCounters) {
        // The worker flushes every port once per round (see `Worker::round`).
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
