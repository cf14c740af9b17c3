//! One worker's `AF_XDP` memory and sockets: a UMEM shared by one socket per
//! interface (all on the worker's queue), each with its own fill,
//! completion, RX and TX rings, and the pool of frames the worker owns.
//!
//! Frame ownership: a frame is in exactly one place at a time: the free
//! pool, a fill ring, an RX ring (kernel side), the worker's hands (between
//! RX and TX or release), a TX ring, or a completion ring. Every path moves
//! it on; a drop puts it back in the pool.

use std::num::NonZeroU32;
use std::os::fd::{AsFd, BorrowedFd};

use xdpilone::xdp::XdpDesc;
use xdpilone::{CompletionQueue, FillQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User};

use crate::config::ZeroCopy;
use crate::sys::xdp::{self as sys, Mmap};

/// Bytes per frame (one packet each).
pub const FRAME_SIZE: u32 = 2048;
/// Frames per worker (64 MiB of UMEM). Room for deep fill rings: when the
/// worker is preempted, the fill rings are what the kernel keeps receiving
/// into (a socket has its receive buffer instead); 6144 frames per
/// interface last about 40 ms at 150k packets/s.
pub const FRAMES: u32 = 32768;
/// Entries of every ring.
pub const RING_SIZE: u32 = 8192;
/// Descriptors handled per ring operation.
pub const BATCH: usize = 64;

/// What went wrong creating a socket, with the step.
#[derive(Debug, thiserror::Error)]
#[error("AF_XDP {step} (ifindex {ifindex}, queue {queue}): errno {errno}{}", hint(*.errno, *.zero_copy))]
pub struct XskError {
    /// Which step failed.
    pub step: &'static str,
    /// Interface.
    pub ifindex: u32,
    /// Queue.
    pub queue: u32,
    /// The kernel's errno.
    pub errno: i32,
    /// Zero-copy was demanded (`relay.xdp_zero_copy = "on"`).
    pub zero_copy: bool,
}

fn hint(errno: i32, zero_copy: bool) -> &'static str {
    if zero_copy && errno == libc::EOPNOTSUPP {
        " (the driver has no AF_XDP zero-copy support, which relay.xdp_zero_copy = \"on\" requires)"
    } else {
        ""
    }
}

/// One `AF_XDP` socket: one interface, the worker's queue.
pub struct XskPort {
    /// Interface index it is bound to.
    pub ifindex: u32,
    fill: FillQueue,
    comp: CompletionQueue,
    /// RX ring.
    pub rx: RingRx,
    /// TX ring.
    pub tx: RingTx,
    /// Frames waiting to be queued on `tx` at the end of the batch.
    pub stage: Vec<XdpDesc>,
    /// The socket, for its kernel statistics.
    user: User,
}

impl XskPort {
    /// The kernel's drop counters of this socket (one `getsockopt`):
    /// `(rx_dropped, rx_ring_full, fill_ring_empty, tx_invalid)`.
    #[must_use]
    pub fn kernel_drops(&self) -> Option<[u64; 4]> {
        let s = self.user.statistics_v2().ok()?;
        Some([s.rx_dropped, s.rx_ring_full, s.rx_fill_ring_empty_descs, s.tx_invalid_descs])
    }

    /// The socket's descriptor, for the XSKMAP and for polling.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        sys::ring_fd(&self.rx)
    }
}

/// The worker's UMEM, its sockets, and the free-frame pool. Field order is
/// drop order: sockets, then the UMEM registration, then the memory.
pub struct Xsk {
    /// One socket per interface, in the order given to [`Xsk::open`].
    pub ports: Vec<XskPort>,
    _umem: Umem,
    /// The frames' memory.
    pub mem: Mmap,
    /// The sockets run in the driver's zero-copy mode (all of them: the
    /// others inherit the first one's mode).
    pub zero_copy: bool,
    /// Addresses of free frames (capacity [`FRAMES`]: never reallocates).
    pub free: Vec<u64>,
}

fn step(step: &'static str, ifindex: u32, queue: u32) -> impl FnOnce(xdpilone::Errno) -> XskError {
    move |e| XskError { step, ifindex, queue, errno: e.get_raw(), zero_copy: false }
}

impl Xsk {
    /// Creates the UMEM and binds one socket per interface to `queue`. The
    /// first socket owns the UMEM; the others share it, each with its own
    /// fill and completion rings, bound with no flags of their own (they
    /// inherit the first one's mode).
    ///
    /// With [`ZeroCopy::Auto`] the kernel picks zero-copy for the first
    /// socket when its driver supports it, and the others must follow; if
    /// one of them cannot, everything is bound again in copy mode.
    ///
    /// # Errors
    /// The step that failed and the kernel's errno.
    pub fn open(ifindexes: &[u32], queue: u32, mode: ZeroCopy) -> Result<Self, XskError> {
        let flags = match mode {
            ZeroCopy::Auto => 0,
            ZeroCopy::On => SocketConfig::XDP_BIND_ZEROCOPY,
            ZeroCopy::Off => SocketConfig::XDP_BIND_COPY,
        };
        match Self::open_with(ifindexes, queue, flags) {
            // A later interface inherits the first one's zero-copy mode as a
            // requirement; copy mode may still work there. (The kernel falls
            // back to copy mode by itself for the first.)
            Err(e) if mode == ZeroCopy::Auto && e.step == "bind" && ifindexes.first() != Some(&e.ifindex) => {
                tracing::info!(
                    queue,
                    ifindex = e.ifindex,
                    errno = e.errno,
                    "binding AF_XDP on a later interface failed (it takes the first one's mode, zero copy where that \
                     driver has it); binding the queue again in copy mode"
                );
                // The kernel releases the closed sockets' hold on the queue
                // asynchronously: until then a new bind there gets EBUSY.
                let mut tries = 0;
                loop {
                    match Self::open_with(ifindexes, queue, SocketConfig::XDP_BIND_COPY) {
                        Err(e) if e.errno == libc::EBUSY && tries < 50 => {
                            tries += 1;
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                        done => break done,
                    }
                }
            }
            Err(mut e) => {
                e.zero_copy = mode == ZeroCopy::On;
                Err(e)
            }
            ok => ok,
        }
    }

    fn open_with(ifindexes: &[u32], queue: u32, bind_flags: u16) -> Result<Self, XskError> {
        let first = ifindexes.first().copied().unwrap_or(0);
        let mem = Mmap::new((FRAMES * FRAME_SIZE) as usize).map_err(|e| XskError {
            step: "mmap",
            ifindex: first,
            queue,
            errno: e.raw_os_error().unwrap_or(0),
            zero_copy: false,
        })?;
        let cfg = UmemConfig {
            fill_size: RING_SIZE,
            complete_size: RING_SIZE,
            frame_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
        };
        let umem = sys::register_umem(cfg, &mem).map_err(step("UMEM registration", first, queue))?;
        let ring = NonZeroU32::new(RING_SIZE);
        let mut ports = Vec::with_capacity(ifindexes.len());
        for (i, &ifindex) in ifindexes.iter().enumerate() {
            let mut info = IfInfo::invalid();
            info.from_ifindex(ifindex).map_err(step("interface lookup", ifindex, queue))?;
            info.set_queue(queue);
            let sock = if i == 0 { Socket::with_shared(&info, &umem) } else { Socket::new(&info) }
                .map_err(step("socket", ifindex, queue))?;
            let device = umem.fq_cq(&sock).map_err(step("fill/completion rings", ifindex, queue))?;
            let sc = SocketConfig { rx_size: ring, tx_size: ring, bind_flags: if i == 0 { bind_flags } else { 0 } };
            let user = umem.rx_tx(&sock, &sc).map_err(step("rx/tx rings", ifindex, queue))?;
            umem.bind(&user).map_err(step("bind", ifindex, queue))?;
            let rx = user.map_rx().map_err(step("mapping the RX ring", ifindex, queue))?;
            let tx = user.map_tx().map_err(step("mapping the TX ring", ifindex, queue))?;
            let (fill, comp) = device.into_parts();
            ports.push(XskPort { ifindex, fill, comp, rx, tx, stage: Vec::with_capacity(BATCH * 2), user });
        }
        let free = (0..u64::from(FRAMES)).rev().map(|i| i * u64::from(FRAME_SIZE)).collect();
        let zero_copy = ports.first().and_then(|p| sys::xsk_zero_copy(p.fd())).unwrap_or(false);
        let mut xsk = Self { ports, _umem: umem, mem, free, zero_copy };
        // Split the frames over the fill rings, keeping the rest for TX.
        for p in 0..xsk.ports.len() {
            xsk.refill(p, RING_SIZE as usize / 2 + RING_SIZE as usize / 4);
        }
        Ok(xsk)
    }

    /// Puts up to `max` free frames on port `p`'s fill ring (looping: a
    /// reservation may get fewer slots than are free).
    pub fn refill(&mut self, p: usize, max: usize) {
        let Some(port) = self.ports.get_mut(p) else { return };
        let mut left = max.min(self.free.len());
        while left > 0 {
            let want = u32::try_from(left).unwrap_or(u32::MAX);
            let mut w = port.fill.fill(want);
            let cap = w.capacity() as usize;
            if cap == 0 {
                break;
            }
            let free = &mut self.free;
            // Never take more frames than there are slots: an item taken
            // from the pool but not inserted would be lost.
            let n = w.insert((0..cap).map_while(|_| free.pop())) as usize;
            w.commit();
            left = left.saturating_sub(n);
            if n < cap {
                break;
            }
        }
    }

    /// How many frames port `p`'s fill ring holds.
    #[must_use]
    pub fn fill_level(&self, p: usize) -> u32 {
        self.ports.get(p).map_or(0, |port| port.fill.pending())
    }

    /// Takes completed TX frames of port `p` back into the pool.
    pub fn reap(&mut self, p: usize) -> usize {
        let Some(port) = self.ports.get_mut(p) else { return 0 };
        let mut total = 0;
        loop {
            let mut r = port.comp.complete(RING_SIZE);
            let mut n = 0;
            while let Some(addr) = r.read() {
                self.free.push(addr & !u64::from(FRAME_SIZE - 1));
                n += 1;
            }
            r.release();
            total += n;
            if n == 0 {
                return total;
            }
        }
    }

    /// Receives up to `out.len()` descriptors from port `p`'s RX ring into
    /// `out`; the frames are the caller's until handed on.
    pub fn receive(&mut self, p: usize, out: &mut [XdpDesc]) -> usize {
        let Some(port) = self.ports.get_mut(p) else { return 0 };
        let want = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let mut r = port.rx.receive(want);
        let mut n = 0;
        while n < out.len() {
            let Some(d) = r.read() else { break };
            out[n] = d;
            n += 1;
        }
        r.release();
        n
    }

    /// Returns a frame the worker is done with to the pool.
    pub fn release(&mut self, addr: u64) {
        self.free.push(addr & !u64::from(FRAME_SIZE - 1));
    }

    /// Queues port `p`'s staged frames on its TX ring and kicks the kernel
    /// until it has taken them (copy mode sends at most 32 per kick). Frames
    /// that find no room after a few kicks are dropped back to the pool;
    /// returns `(sent, dropped)`.
    pub fn flush(&mut self, p: usize) -> Flushed {
        let Some(port) = self.ports.get_mut(p) else { return Flushed::default() };
        let total = port.stage.len();
        if total == 0 {
            return Flushed::default();
        }
        let mut off = 0;
        let mut stalls = 0;
        let mut kicks = Kicks { copy_mode: !self.zero_copy, ..Kicks::default() };
        while off < total {
            let want = u32::try_from(total - off).unwrap_or(u32::MAX);
            let n = {
                let mut w = port.tx.transmit(want);
                let cap = w.capacity() as usize;
                let n = w.insert(port.stage[off..].iter().copied().take(cap)) as usize;
                w.commit();
                n
            };
            off += n;
            if off < total {
                kicks.kick(&port.tx);
                stalls += 1;
                if stalls > 16 {
                    break;
                }
            }
        }
        // In copy mode each kick sends up to 32 frames in the call, so kick
        // until the ring is empty. In zero-copy mode a kick only schedules
        // the driver, which drains the ring afterwards: one is enough.
        let rounds = if self.zero_copy { 1 } else { 64 };
        for _ in 0..rounds {
            if port.tx.pending() == 0 {
                break;
            }
            kicks.kick(&port.tx);
        }
        let dropped = total - off;
        let mut staged = std::mem::take(&mut port.stage);
        for d in staged.drain(off..) {
            self.free.push(d.addr & !u64::from(FRAME_SIZE - 1));
        }
        staged.clear();
        if let Some(port) = self.ports.get_mut(p) {
            port.stage = staged;
        }
        self.reap(p);
        Flushed {
            sent: off,
            dropped,
            refused: kicks.refused,
            unreachable: kicks.refused > 0 || crate::sys::unreachable(kicks.error),
        }
    }
}

/// What the TX wakeups of one flush reported.
#[derive(Debug, Default)]
struct Kicks {
    /// Copy mode: the kernel transmits in the `sendto` call itself.
    copy_mode: bool,
    /// Frames the kernel took off the ring and dropped without sending.
    refused: usize,
    /// The last failure other than back-pressure.
    error: Option<i32>,
}

impl Kicks {
    /// One TX wakeup (`sendto(fd, NULL, 0, MSG_DONTWAIT)`): asks the kernel
    /// to send what the TX ring holds. In copy mode the kernel builds an
    /// sk_buff per frame and hands it to the driver; when the device
    /// cannot send (down, no carrier) it completes that frame unsent and
    /// the call fails with `EBUSY`, one frame per call. Those frames would
    /// otherwise pass for relayed. In zero-copy mode the call only wakes
    /// the driver, and `EBUSY` is back-pressure.
    fn kick(&mut self, tx: &RingTx) {
        match sys::kick_tx(tx) {
            Some(libc::EBUSY) if self.copy_mode => self.refused += 1,
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) | None => {}
            e => self.error = e.or(self.error),
        }
    }
}

/// What [`Xsk::flush`] did with the staged frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Frames queued on the TX ring.
    pub sent: usize,
    /// Frames that did not fit and went back to the pool.
    pub dropped: usize,
    /// Frames on the ring that the kernel dropped unsent (copy mode, an
    /// egress device that is down or has no carrier).
    pub refused: usize,
    /// The kernel refused to send because the destination cannot be
    /// reached now (for example the interface is down): see
    /// [`crate::sys::unreachable`].
    pub unreachable: bool,
}

impl AsFd for XskPort {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}
