//! The socket datapath: one worker thread per core, owning the UDP sockets
//! of its stream pairs, polling them with mio and moving packets in batches
//! (`recvmmsg` in, `sendmmsg` out). The session logic is the shared
//! [`Sessions`] table; this module is the I/O loop and its [`Device`].
//!
//! Hot path rules: per packet there is no allocation, no lock and no syscall;
//! the clock is read once per batch and passed down (the one syscall that is
//! not per batch is per socket: `SO_RXQ_OVFL`, at its first packets). The
//! control plane reaches the worker only through its bounded command ring.
//!
//! Fairness under overload: sockets with queued packets sit in a round-robin
//! ready queue and each visit reads at most one batch, so a busy socket can
//! never starve the others, and no socket is ever abandoned: when the kernel
//! drops because a receive queue overflowed, the drop is counted (from
//! `SO_RXQ_OVFL`) and the socket is served again on the next round.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use super::backend::{settle, Datapath, WorkerContext, WAKER};
use super::device::{Device, Rx, To};
use super::session::Sessions;
use crate::control::RelayError;
use crate::counters::LocalCounters;
use crate::sys::{self, RecvBatch, BATCH};

/// UDP sockets polled with mio, `recvmmsg`/`sendmmsg` in batches.
#[derive(Debug, Default, Clone, Copy)]
pub struct SocketDatapath;

impl Datapath for SocketDatapath {
    fn name(&self) -> &'static str {
        "socket"
    }

    fn spawn_worker(&self, ctx: WorkerContext, poll: mio::Poll) -> Result<JoinHandle<()>, RelayError> {
        std::thread::Builder::new()
            .name(format!("mr-worker-{}", ctx.index))
            .spawn(move || run(ctx, poll))
            .map_err(|source| RelayError::Io { op: "spawning worker thread", source })
    }
}

/// The socket device's state of one channel.
pub struct SocketChannel {
    socket: mio::net::UdpSocket,
    /// The kernel's receive-queue drop counter, as last seen.
    overflow_seen: u32,
    /// `SO_RXQ_OVFL` is on (see [`serve`]).
    overflow_on: bool,
    /// In the ready queue.
    queued: bool,
}

/// The worker's sockets seen as one [`Device`]: [`SocketDevice::select`]
/// picks the socket the next batch is read from.
pub struct SocketDevice {
    poll: Poll,
    /// Channels with (possibly) queued packets, served round-robin.
    ready: VecDeque<usize>,
    batch: RecvBatch,
    /// Channel and descriptor the next batch is read from.
    token: usize,
    fd: RawFd,
    /// Indexes of the batch's packets to forward, to `out_fd` / `dest`.
    fwd: [u8; BATCH],
    nfwd: usize,
    fwd_bytes: u64,
    out_fd: RawFd,
    dest: Option<SocketAddr>,
}

impl SocketDevice {
    fn new(poll: Poll) -> Self {
        Self {
            poll,
            ready: VecDeque::with_capacity(1024),
            batch: RecvBatch::new(),
            token: 0,
            fd: -1,
            fwd: [0; BATCH],
            nfwd: 0,
            fwd_bytes: 0,
            out_fd: -1,
            dest: None,
        }
    }

    /// The next batch is read from channel `token`'s socket.
    fn select(&mut self, token: usize, ch: &SocketChannel) {
        self.token = token;
        self.fd = ch.socket.as_raw_fd();
    }

    fn enqueue(&mut self, token: usize, ch: &mut SocketChannel) {
        if !ch.queued {
            ch.queued = true;
            self.ready.push_back(token);
        }
    }

    /// Sends the staged packets (one destination, one socket).
    fn send_staged(&mut self, local: &mut LocalCounters) {
        let nfwd = std::mem::take(&mut self.nfwd);
        let fwd_bytes = std::mem::take(&mut self.fwd_bytes);
        let Some(dest) = self.dest.take() else { return };
        if nfwd == 0 {
            return;
        }
        let (sent, unreachable) = match sys::send_batch(self.out_fd, &self.batch, &self.fwd[..nfwd], dest) {
            Ok(s) => (s, false),
            Err(e) => {
                tracing::debug!(error = %e, %dest, "sendmmsg failed");
                (0, sys::unreachable(e.raw_os_error()))
            }
        };
        local.relayed += sent as u64;
        local.send_failed((nfwd - sent) as u64, unreachable);
        if sent == nfwd {
            local.relayed_bytes += fwd_bytes;
        } else {
            let partial: u64 = self.fwd[..sent].iter().map(|&i| self.batch.packet_len(usize::from(i)) as u64).sum();
            local.relayed_bytes += partial;
        }
    }
}

impl Device for SocketDevice {
    type Channel = SocketChannel;

    fn attach(&mut self, token: usize, socket: UdpSocket, _local: Option<SocketAddr>) -> SocketChannel {
        let socket = mio::net::UdpSocket::from_std(socket);
        if self.ready.capacity() < token + 1 {
            self.ready.reserve(token + 1 - self.ready.len());
        }
        let mut channel = SocketChannel { socket, overflow_seen: 0, overflow_on: false, queued: false };
        // Packets already queued on a registered socket need no read here:
        // `EPOLL_CTL_ADD` checks the socket's readiness and queues the event,
        // so the next poll reports it (one `recvmmsg` per new socket saved).
        if let Err(e) = self.poll.registry().register(&mut channel.socket, Token(token), Interest::READABLE) {
            tracing::error!(error = %e, "registering a media socket failed; it is served once now");
            self.enqueue(token, &mut channel);
        }
        channel
    }

    fn detach(&mut self, token: usize, channel: SocketChannel) {
        // Dropping the socket closes it; closing removes it from epoll, so
        // no deregister syscall is needed.
        drop(channel);
        self.ready.retain(|&t| t != token);
    }

    fn receive(&mut self, local: &mut LocalCounters) -> usize {
        let n = match self.batch.recv(self.fd) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, token = self.token, "recvmmsg failed");
                return 0;
            }
        };
        if n > 0 {
            local.batches += 1;
            local.received += n as u64;
        }
        n
    }

    fn frame(&mut self, i: usize, local: &mut LocalCounters) -> Option<Rx<'_>> {
        let src = self.batch.source(i)?;
        let Some(payload) = self.batch.packet(i) else {
            local.drop_oversize += 1;
            return None;
        };
        Some(Rx { to: To::Token(self.token), src, payload })
    }

    fn transmit(
        &mut self,
        i: usize,
        _out: usize,
        channel: &mut SocketChannel,
        dest: SocketAddr,
        local: &mut LocalCounters,
    ) {
        let fd = channel.socket.as_raw_fd();
        if self.nfwd > 0 && (self.out_fd != fd || self.dest != Some(dest)) {
            // One sendmmsg goes to one destination (a batch from one socket
            // normally has one).
            self.send_staged(local);
        }
        self.out_fd = fd;
        self.dest = Some(dest);
        // i < BATCH <= 255
        self.fwd[self.nfwd] = i as u8;
        self.nfwd += 1;
        self.fwd_bytes += self.batch.packet_len(i) as u64;
    }

    fn discard(&mut self, _i: usize) {}

    fn flush(&mut self, local: &mut LocalCounters) {
        self.send_staged(local);
    }
}

/// Runs a worker until `ctx.shutdown` is set.
pub fn run(ctx: WorkerContext, poll: Poll) {
    let _ = settle(&ctx);
    let WorkerContext { index, commands, events, nat, flood_pps, counters, shutdown, sleeping, .. } = ctx;
    let mut table = Sessions::new(commands, events, nat, false);
    table.set_flood_limit(flood_pps);
    let mut dev = SocketDevice::new(poll);
    let mut local = LocalCounters::default();
    let mut events = Events::with_capacity(1024);
    while !shutdown.load(Ordering::Relaxed) {
        table.drain_commands(&mut dev);
        table.flush_events();
        let mut timeout = if dev.ready.is_empty() { Duration::from_millis(50) } else { Duration::ZERO };
        if !timeout.is_zero() {
            sleeping.store(true, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            if table.has_commands() {
                timeout = Duration::ZERO;
            }
        }
        let polled = dev.poll.poll(&mut events, Some(timeout));
        sleeping.store(false, Ordering::Relaxed);
        if let Err(e) = polled {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(worker = index, error = %e, "poll failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        // Commands queued before these packets arrived (a SetPeer from the
        // answer that preceded the first RTP, say) apply before serving them.
        table.drain_commands(&mut dev);
        for ev in &events {
            let t = ev.token();
            if t == WAKER {
                continue;
            }
            if let Some(ch) = table.device_channel(t.0) {
                dev.enqueue(t.0, ch);
            }
        }
        // One round: every ready socket gets at most one batch.
        let round = dev.ready.len();
        for _ in 0..round {
            let Some(t) = dev.ready.pop_front() else { break };
            let full = serve(&mut table, &mut dev, t, &mut local);
            if full {
                dev.ready.push_back(t);
            } else if let Some(ch) = table.device_channel(t) {
                ch.queued = false;
            }
        }
        table.publish();
        local.publish(&counters);
    }
}

/// Reads one batch from channel `token` and forwards it. Returns true when
/// the batch was full (more may be queued).
fn serve(table: &mut Sessions<SocketChannel>, dev: &mut SocketDevice, token: usize, local: &mut LocalCounters) -> bool {
    let Some(ch) = table.device_channel(token) else { return false };
    dev.select(token, ch);
    let now = sys::monotonic_ns();
    let n = table.poll(dev, now, local);
    if n == 0 {
        return false;
    }
    let Some(ch) = table.device_channel(token) else { return false };
    if !ch.overflow_on {
        // The drop counter is turned on at a socket's first packets, once
        // per socket, not when it is attached: a call that never carries
        // media costs no syscall for it. The kernel counts drops from the
        // socket's creation, so none before this is missed: the counter
        // comes with the packets queued after it.
        ch.overflow_on = true;
        if let Err(e) = sys::enable_rxq_ovfl(ch.socket.as_raw_fd()) {
            tracing::debug!(error = %e, "SO_RXQ_OVFL not available");
        }
    }
    if let Some(ovfl) = dev.batch.overflow_counter() {
        let delta = ovfl.wrapping_sub(ch.overflow_seen);
        ch.overflow_seen = ovfl;
        local.drop_rx_overflow += u64::from(delta);
    }
    n == BATCH
}
