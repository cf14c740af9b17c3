//! A media worker: one thread, pinned to one core, owning the UDP sockets of
//! its stream pairs. It polls them with mio and moves packets in batches
//! (`recvmmsg` in, `sendmmsg` out).
//!
//! Hot path rules: per packet there is no allocation, no lock and no syscall;
//! the clock is read once per batch and passed down. The control plane
//! reaches the worker only through its bounded command ring.
//!
//! Fairness under overload: sockets with queued packets sit in a round-robin
//! ready queue and each visit reads at most one batch, so a busy socket can
//! never starve the others, and no socket is ever abandoned: when the kernel
//! drops because a receive queue overflowed, the drop is counted (from
//! `SO_RXQ_OVFL`) and the socket is served again on the next round.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token, Waker};

use crate::counters::{LocalCounters, PaddedCounters};
use crate::rtp::{is_rtcp, RtpPacket};
use crate::stats::RtpStats;
use crate::stream::{peer_channel, ChannelSetup, ClockTable, Command, DirShared, Event, A_RTCP, B_RTCP};
use crate::sys::{self, RecvBatch, BATCH};

/// Token of the worker's waker (never a channel token).
pub const WAKER: Token = Token(usize::MAX);

/// What a worker needs to run.
pub struct WorkerContext {
    /// Worker number (also the metrics label).
    pub index: usize,
    /// Core to pin to, if any.
    pub core: Option<core_affinity::CoreId>,
    /// Commands from the control plane.
    pub commands: rtrb::Consumer<Command>,
    /// Events to the control plane.
    pub events: rtrb::Producer<Event>,
    /// Latch to any first source (NAT mode) or only to the SDP address.
    pub nat: bool,
    /// Shared counter block.
    pub counters: Arc<PaddedCounters>,
    /// Set to stop the worker.
    pub shutdown: Arc<AtomicBool>,
    /// True while the worker is about to block in poll: the control plane
    /// wakes it only then (see [`Sleep`]).
    pub sleeping: Arc<AtomicBool>,
    /// SIP handoff to the signaling plane (`AF_XDP` datapath with SIP ports).
    pub sip: Option<crate::sip_handoff::SipSender>,
    /// Scheduling policy (`relay.worker_scheduling`).
    pub scheduling: crate::config::Scheduling,
}

/// What every worker does first on its own thread: pin itself to its
/// core and take its scheduling policy. Failures are logged, not fatal.
/// Returns whether the worker now runs at a real-time policy.
pub fn settle(ctx: &WorkerContext) -> bool {
    if let Some(core) = ctx.core {
        if !core_affinity::set_for_current(core) {
            tracing::warn!(worker = ctx.index, core = core.id, "could not pin worker to its core");
        }
    }
    if ctx.scheduling == crate::config::Scheduling::Other {
        return false;
    }
    match sys::set_thread_scheduling(ctx.scheduling) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                worker = ctx.index,
                policy = ?ctx.scheduling,
                error = %e,
                "relay.worker_scheduling could not be applied (needs CAP_SYS_NICE); the worker runs with the default policy"
            );
            false
        }
    }
}

/// The handshake that lets the control plane skip wakeups while a worker is
/// busy: the worker announces it will sleep, then checks its ring; the
/// control plane pushes, then checks the announcement. With sequentially
/// consistent fences one of them always sees the other.
pub struct Sleep;

impl Sleep {
    /// Control side, after pushing commands: whether a wakeup is needed.
    #[must_use]
    pub fn needs_wake(sleeping: &AtomicBool) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        sleeping.swap(false, Ordering::SeqCst)
    }
}

struct Channel {
    socket: mio::net::UdpSocket,
    fd: RawFd,
    peer: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    stats: RtpStats,
    foreign: u64,
    overflow_seen: u32,
    queued: bool,
    shared: Arc<DirShared>,
    rtcp_port: bool,
}

impl Channel {
    /// Where packets for this leg's endpoint go.
    fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.peer)
    }
}

struct Pair {
    channels: [Channel; 4],
    /// Payload type clock rates (one table for the pair: both legs use the
    /// payload types of the same offer/answer).
    clock: ClockTable,
}

/// Verdict of the source check for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceVerdict {
    Accept,
    Latch,
    Foreign,
}

/// Checks a packet's source against the leg's latched or expected address.
/// Shared with the `AF_XDP` worker, so both datapaths latch alike.
pub(crate) fn check_source(
    nat: bool,
    latched: Option<SocketAddr>,
    expected: Option<SocketAddr>,
    src: SocketAddr,
) -> SourceVerdict {
    match latched {
        Some(l) if l == src => SourceVerdict::Accept,
        Some(_) => SourceVerdict::Foreign,
        None if nat => SourceVerdict::Latch,
        None if expected == Some(src) => SourceVerdict::Latch,
        None => SourceVerdict::Foreign,
    }
}

struct Worker {
    ctx: WorkerContext,
    poll: Poll,
    /// Boxed, so the slot table grows by pointers, not by whole pairs.
    pairs: Vec<Option<Box<Pair>>>,
    ready: VecDeque<usize>,
    batch: RecvBatch,
    fwd: [u8; BATCH],
    local: LocalCounters,
    pending_events: VecDeque<Event>,
}

/// Creates the worker's poll and waker (so the control plane can hold the
/// waker before the thread starts).
///
/// # Errors
/// The epoll or eventfd error.
pub fn make_poll() -> std::io::Result<(Poll, Arc<Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    Ok((poll, waker))
}

/// Runs a worker until `ctx.shutdown` is set.
pub fn run(ctx: WorkerContext, poll: Poll) {
    let _ = settle(&ctx);
    let mut w = Worker {
        ctx,
        poll,
        pairs: Vec::new(),
        ready: VecDeque::with_capacity(1024),
        batch: RecvBatch::new(),
        fwd: [0; BATCH],
        local: LocalCounters::default(),
        pending_events: VecDeque::new(),
    };
    w.main_loop();
}

impl Worker {
    fn main_loop(&mut self) {
        let mut events = Events::with_capacity(1024);
        while !self.ctx.shutdown.load(Ordering::Relaxed) {
            self.drain_commands();
            self.flush_events();
            let mut timeout = if self.ready.is_empty() { Duration::from_millis(50) } else { Duration::ZERO };
            if !timeout.is_zero() {
                self.ctx.sleeping.store(true, Ordering::SeqCst);
                std::sync::atomic::fence(Ordering::SeqCst);
                if !self.ctx.commands.is_empty() {
                    timeout = Duration::ZERO;
                }
            }
            let polled = self.poll.poll(&mut events, Some(timeout));
            self.ctx.sleeping.store(false, Ordering::Relaxed);
            if let Err(e) = polled {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(worker = self.ctx.index, error = %e, "poll failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            // Commands queued before these packets arrived (a SetPeer from the
            // answer that preceded the first RTP, say) apply before serving them.
            self.drain_commands();
            for ev in &events {
                let t = ev.token();
                if t == WAKER {
                    continue;
                }
                self.enqueue(t.0);
            }
            // One round: every ready socket gets at most one batch.
            let round = self.ready.len();
            for _ in 0..round {
                let Some(t) = self.ready.pop_front() else { break };
                let full = self.serve(t);
                if full {
                    self.ready.push_back(t);
                } else if let Some(ch) = self.channel_mut(t) {
                    ch.queued = false;
                }
            }
            self.local.publish(&self.ctx.counters);
        }
    }

    fn enqueue(&mut self, token: usize) {
        if let Some(ch) = self.channel_mut(token) {
            if !ch.queued {
                ch.queued = true;
                self.ready.push_back(token);
            }
        }
    }

    fn channel_mut(&mut self, token: usize) -> Option<&mut Channel> {
        self.pairs.get_mut(token / 4)?.as_mut().map(|p| &mut p.channels[token % 4])
    }

    /// Reads one batch from channel `token` and forwards it. Returns true when
    /// the batch was full (more may be queued).
    fn serve(&mut self, token: usize) -> bool {
        let slot = token / 4;
        let c = token % 4;
        let Some(Some(pair)) = self.pairs.get_mut(slot) else { return false };
        let (out_fd, dest) = {
            let out = &pair.channels[peer_channel(c)];
            (out.fd, out.destination())
        };
        let clock = pair.clock;
        let ch = &mut pair.channels[c];
        let n = match self.batch.recv(ch.fd) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, port = ?ch.socket.local_addr().ok(), "recvmmsg failed");
                return false;
            }
        };
        if n == 0 {
            return false;
        }
        let now = sys::monotonic_ns();
        self.local.batches += 1;
        self.local.received += n as u64;
        if let Some(ovfl) = self.batch.overflow_counter() {
            let delta = ovfl.wrapping_sub(ch.overflow_seen);
            ch.overflow_seen = ovfl;
            self.local.drop_rx_overflow += u64::from(delta);
        }
        let mut nfwd = 0usize;
        let mut fwd_bytes = 0u64;
        for i in 0..n {
            let Some(src) = self.batch.source(i) else { continue };
            let Some(pkt) = self.batch.packet(i) else {
                self.local.drop_oversize += 1;
                continue;
            };
            match check_source(self.ctx.nat, ch.latched, ch.peer, src) {
                SourceVerdict::Accept => {}
                SourceVerdict::Latch => {
                    ch.latched = Some(src);
                    let ev = Event::Latched { slot: slot as u32, channel: c as u8, addr: src };
                    if self.ctx.events.push(ev).is_err() {
                        self.local.events_lost += 1;
                    }
                }
                SourceVerdict::Foreign => {
                    ch.foreign += 1;
                    self.local.drop_foreign += 1;
                    continue;
                }
            }
            account(ch, &clock, pkt, now);
            if dest.is_none() {
                self.local.drop_no_destination += 1;
                continue;
            }
            // i < BATCH <= 255
            self.fwd[nfwd] = i as u8;
            nfwd += 1;
            fwd_bytes += pkt.len() as u64;
        }
        ch.shared.publish(&ch.stats.snapshot(), ch.foreign);
        if let (Some(dest), true) = (dest, nfwd > 0) {
            let (sent, unreachable) = match sys::send_batch(out_fd, &self.batch, &self.fwd[..nfwd], dest) {
                Ok(s) => (s, false),
                Err(e) => {
                    tracing::debug!(error = %e, %dest, "sendmmsg failed");
                    (0, sys::unreachable(e.raw_os_error()))
                }
            };
            self.local.relayed += sent as u64;
            self.local.send_failed((nfwd - sent) as u64, unreachable);
            if sent == nfwd {
                self.local.relayed_bytes += fwd_bytes;
            } else {
                let partial: u64 = self.fwd[..sent].iter().map(|&i| self.batch.packet_len(usize::from(i)) as u64).sum();
                self.local.relayed_bytes += partial;
            }
        }
        n == BATCH
    }

    fn drain_commands(&mut self) {
        while let Ok(cmd) = self.ctx.commands.pop() {
            match cmd {
                Command::Add(setup) => self.add(*setup),
                Command::SetPeer { slot, channel, peer, relatch, clock } => {
                    if let Some(Some(pair)) = self.pairs.get_mut(slot as usize) {
                        pair.clock = clock;
                    }
                    let token = slot as usize * 4 + usize::from(channel);
                    if let Some(ch) = self.channel_mut(token) {
                        ch.peer = peer;
                        if relatch {
                            ch.latched = None;
                        }
                    }
                }
                Command::Remove { slot } => self.remove(slot),
            }
        }
    }

    fn add(&mut self, setup: crate::stream::PairSetup) {
        let slot = setup.slot as usize;
        if self.pairs.len() <= slot {
            self.pairs.resize_with(slot + 1, || None);
        }
        if self.pairs[slot].is_some() {
            // The control plane never reuses a live slot; treat as a replace.
            self.remove(setup.slot);
        }
        let mut chans = setup.channels.into_iter().enumerate().map(|(c, s)| self.make_channel(slot, c, s));
        let (Some(a), Some(b), Some(c), Some(d)) = (chans.next(), chans.next(), chans.next(), chans.next()) else {
            return;
        };
        self.pairs[slot] = Some(Box::new(Pair { channels: [a, b, c, d], clock: ClockTable::default() }));
        let want = self.pairs.len() * 4;
        if self.ready.capacity() < want {
            self.ready.reserve(want - self.ready.len());
        }
        // Packets may already be queued on the new sockets (edge-triggered
        // registration reports them), but serve them once to be sure.
        for c in 0..4 {
            self.enqueue(slot * 4 + c);
        }
    }

    fn make_channel(&self, slot: usize, c: usize, s: ChannelSetup) -> Channel {
        let fd = s.socket.as_raw_fd();
        if let Err(e) = sys::enable_rxq_ovfl(fd) {
            tracing::debug!(error = %e, "SO_RXQ_OVFL not available");
        }
        let mut socket = mio::net::UdpSocket::from_std(s.socket);
        if let Err(e) = self.poll.registry().register(&mut socket, Token(slot * 4 + c), Interest::READABLE) {
            tracing::error!(error = %e, "registering a media socket failed; it will be polled in rounds only");
        }
        Channel {
            socket,
            fd,
            peer: s.peer,
            latched: s.latched,
            stats: s.resume.as_ref().map_or_else(RtpStats::new, RtpStats::resume),
            foreign: 0,
            overflow_seen: 0,
            queued: false,
            shared: s.shared,
            rtcp_port: c == A_RTCP || c == B_RTCP,
        }
    }

    fn remove(&mut self, slot: u32) {
        if let Some(p) = self.pairs.get_mut(slot as usize).and_then(Option::take) {
            // Dropping the channels closes the sockets; closing removes them
            // from epoll, so no deregister syscall is needed.
            drop(p);
            self.ready.retain(|&t| t / 4 != slot as usize);
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

/// Accounts one accepted packet in the channel's statistics.
fn account(ch: &mut Channel, clock: &ClockTable, pkt: &[u8], now: crate::Nanos) {
    account_packet(&mut ch.stats, ch.rtcp_port, clock, pkt, now);
}

/// Accounts one accepted UDP payload in a direction's statistics (RTP by
/// its header, anything else as other traffic). Shared with the `AF_XDP`
/// worker.
pub(crate) fn account_packet(stats: &mut RtpStats, rtcp_port: bool, clock: &ClockTable, pkt: &[u8], now: crate::Nanos) {
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
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

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
}
