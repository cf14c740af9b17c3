//! Handing frames between the `AF_XDP` workers of a multi-queue interface.
//!
//! A session's state (latches, statistics, destinations) lives in exactly
//! one worker, its owner. A NIC spreads flows over its rx queues by a hash
//! of the addresses and ports (RSS), so a packet for a session can arrive
//! on any queue, and an `AF_XDP` socket only receives its own queue's
//! packets (XDP cannot redirect to a socket bound to another queue). The
//! worker that receives a packet for a session it does not own copies the
//! frame into an SPSC ring to the owner, which relays it as if it had
//! received it: one writer per session, and no packet lost to the queue
//! choice.
//!
//! - [`Mesh::new`] builds one ring per ordered pair of workers and the
//!   owner table: by local UDP port, the owning worker (written by the
//!   owner when a session is added or removed, read by the others only on
//!   a miss in their own port table).
//! - A handover is one copy of the frame (a frame of RTP is a few hundred
//!   bytes) into a fixed slot. Nothing allocates after start, nothing
//!   locks; a worker that sleeps is woken through its eventfd once per
//!   batch, and only when it said it was going to sleep.
//! - A full ring drops the frame, counted (`reason="queue_handoff_full"`).
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

/// Largest frame handed over (the UMEM frame size).
pub const SLOT: usize = super::umem::FRAME_SIZE as usize;
/// Slots of each ring (1 MiB per ordered pair of workers).
pub const RING: usize = 512;
/// Most workers the owner table can name.
pub const MAX_WORKERS: usize = u8::MAX as usize - 1;

struct Slot {
    len: u16,
    data: [u8; SLOT],
}

struct Ring {
    /// Frames published by the sender (it only grows, wrapping).
    head: CachePadded<AtomicUsize>,
    /// Frames taken by the receiver.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[UnsafeCell<Slot>]>,
}

// SAFETY: a slot is written only by the ring's one sender while it lies
// outside [tail, head), and read only by its one receiver while it lies
// inside; the sender publishes a slot by storing `head` with Release after
// writing it, the receiver loads `head` with Acquire before reading, and the
// receiver returns it by storing `tail` with Release after reading, which
// the sender loads with Acquire before writing it again. `FrameSender` and
// `FrameReceiver` are not `Clone`, and each method takes `&mut self`, so
// there is one of each.
unsafe impl Sync for Ring {}

/// The sending end of one ring.
pub struct FrameSender {
    ring: Arc<Ring>,
    head: usize,
    tail_seen: usize,
}

/// The receiving end of one ring.
pub struct FrameReceiver {
    ring: Arc<Ring>,
    tail: usize,
    head_seen: usize,
}

/// A ring of `RING` frame slots.
#[must_use]
pub fn ring() -> (FrameSender, FrameReceiver) {
    // Zeroed memory straight from the allocator: pages are only backed once
    // a ring has carried frames (most pairs of workers carry few or none).
    let slots = Box::<[UnsafeCell<Slot>]>::new_zeroed_slice(RING);
    // SAFETY: `Slot` is plain integers and bytes (and `UnsafeCell` has its
    // inner type's layout), for which all zeroes is a valid value.
    let slots = unsafe { slots.assume_init() };
    let ring = Arc::new(Ring {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        slots,
    });
    (FrameSender { ring: Arc::clone(&ring), head: 0, tail_seen: 0 }, FrameReceiver { ring, tail: 0, head_seen: 0 })
}

impl FrameSender {
    /// Copies `frame` into the next slot; false when the ring is full or
    /// the frame is larger than a slot.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        let Ok(len) = u16::try_from(frame.len()) else { return false };
        if frame.len() > SLOT {
            return false;
        }
        if self.head.wrapping_sub(self.tail_seen) >= RING {
            self.tail_seen = self.ring.tail.load(Ordering::Acquire);
            if self.head.wrapping_sub(self.tail_seen) >= RING {
                return false;
            }
        }
        let cell = &self.ring.slots[self.head % RING];
        // SAFETY: the slot at `head` is outside [tail, head): the receiver
        // does not read it until `head` moves past it below, and this is the
        // only sender (see `Ring`).
        let slot = unsafe { &mut *cell.get() };
        slot.data[..frame.len()].copy_from_slice(frame);
        slot.len = len;
        self.head = self.head.wrapping_add(1);
        self.ring.head.store(self.head, Ordering::Release);
        true
    }
}

impl FrameReceiver {
    /// Whether a frame is waiting.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tail == self.ring.head.load(Ordering::Acquire)
    }

    /// Copies the oldest frame into `out` and frees its slot; returns its
    /// length (cut to `out.len()`), or `None` when the ring is empty.
    pub fn pop_into(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.tail == self.head_seen {
            self.head_seen = self.ring.head.load(Ordering::Acquire);
            if self.tail == self.head_seen {
                return None;
            }
        }
        let cell = &self.ring.slots[self.tail % RING];
        // SAFETY: the slot at `tail` is inside [tail, head): the sender
        // published it (Acquire above) and does not write it again until
        // `tail` moves past it below.
        let slot = unsafe { &*cell.get() };
        let n = usize::from(slot.len).min(out.len()).min(SLOT);
        out[..n].copy_from_slice(&slot.data[..n]);
        self.tail = self.tail.wrapping_add(1);
        self.ring.tail.store(self.tail, Ordering::Release);
        Some(n)
    }
}

/// What the workers share: who owns each port, who sleeps, how to wake.
pub struct Mesh {
    /// By local UDP port: owning worker + 1 (0: nobody).
    owners: Box<[AtomicU8]>,
    sleeping: Box<[CachePadded<AtomicBool>]>,
    /// One eventfd per worker, registered in its poll.
    wake: Box<[OwnedFd]>,
}

/// One worker's side of the mesh.
pub struct MeshPort {
    index: usize,
    mesh: Arc<Mesh>,
    /// By target worker (`None` for this one).
    out: Vec<Option<FrameSender>>,
    /// From every other worker.
    inbound: Vec<FrameReceiver>,
    /// Targets handed a frame since the last [`MeshPort::flush`].
    pending: Vec<bool>,
    /// Which inbound ring is served first next time (fairness).
    next: usize,
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new
    // descriptor that we own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Mesh {
    /// The rings and owner table for `workers` workers, and each worker's
    /// port, in worker order.
    ///
    /// # Errors
    /// Creating an eventfd failed, or there are more than [`MAX_WORKERS`].
    pub fn build(workers: usize) -> io::Result<Vec<MeshPort>> {
        if workers > MAX_WORKERS {
            return Err(io::Error::other(format!("at most {MAX_WORKERS} AF_XDP queues are supported")));
        }
        let wake = (0..workers).map(|_| eventfd()).collect::<io::Result<Vec<_>>>()?.into_boxed_slice();
        let mesh = Arc::new(Self {
            owners: (0..=u16::MAX).map(|_| AtomicU8::new(0)).collect(),
            sleeping: (0..workers).map(|_| CachePadded::new(AtomicBool::new(false))).collect(),
            wake,
        });
        let mut out: Vec<Vec<Option<FrameSender>>> =
            (0..workers).map(|_| (0..workers).map(|_| None).collect()).collect();
        let mut inbound: Vec<Vec<FrameReceiver>> = (0..workers).map(|_| Vec::new()).collect();
        for (from, row) in out.iter_mut().enumerate() {
            for (to, cell) in row.iter_mut().enumerate() {
                if from != to {
                    let (tx, rx) = ring();
                    *cell = Some(tx);
                    inbound[to].push(rx);
                }
            }
        }
        Ok(out
            .into_iter()
            .zip(inbound)
            .enumerate()
            .map(|(index, (out, inbound))| MeshPort {
                index,
                mesh: Arc::clone(&mesh),
                out,
                inbound,
                pending: vec![false; workers],
                next: 0,
            })
            .collect())
    }
}

impl MeshPort {
    /// This worker's wakeup descriptor, to register in its poll.
    #[must_use]
    pub fn wake_fd(&self) -> RawFd {
        self.mesh.wake.get(self.index).map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Records this worker as the owner of `port`.
    pub fn claim(&self, port: u16) {
        let me = u8::try_from(self.index + 1).unwrap_or(0);
        self.mesh.owners[usize::from(port)].store(me, Ordering::Release);
    }

    /// Forgets `port`, if this worker still owns it.
    pub fn release(&self, port: u16) {
        let me = u8::try_from(self.index + 1).unwrap_or(0);
        let _ = self.mesh.owners[usize::from(port)].compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The worker that owns `port`, when it is another one.
    #[must_use]
    pub fn other_owner(&self, port: u16) -> Option<usize> {
        let o = usize::from(self.mesh.owners[usize::from(port)].load(Ordering::Acquire));
        (o != 0 && o - 1 != self.index).then(|| o - 1)
    }

    /// Hands `frame` to worker `to`; false when its ring is full.
    pub fn forward(&mut self, to: usize, frame: &[u8]) -> bool {
        let Some(Some(tx)) = self.out.get_mut(to) else { return false };
        if !tx.push(frame) {
            return false;
        }
        self.pending[to] = true;
        true
    }

    /// Once per batch: wakes the workers handed frames that are asleep.
    pub fn flush(&mut self) {
        for (to, p) in self.pending.iter_mut().enumerate() {
            if !std::mem::take(p) {
                continue;
            }
            // Pairs with the fence in `sleep`: either the target sees the
            // frame before it sleeps, or we see that it sleeps.
            fence(Ordering::SeqCst);
            if self.mesh.sleeping[to].swap(false, Ordering::SeqCst) {
                if let Some(fd) = self.mesh.wake.get(to) {
                    wake(fd.as_raw_fd());
                }
            }
        }
    }

    /// Whether any other worker handed this one a frame not taken yet.
    #[must_use]
    pub fn has_inbound(&self) -> bool {
        self.inbound.iter().any(|r| !r.is_empty())
    }

    /// Announces that the worker is about to sleep; false (and not
    /// sleeping) when a frame is already waiting.
    pub fn sleep(&self) -> bool {
        self.mesh.sleeping[self.index].store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.has_inbound() {
            self.mesh.sleeping[self.index].store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The worker is awake again.
    pub fn woke(&self) {
        self.mesh.sleeping[self.index].store(false, Ordering::Relaxed);
    }

    /// Offers the inbound rings to `take` in turn, starting with a
    /// different one each call, until it returns false (it has had enough).
    pub fn receive(&mut self, mut take: impl FnMut(&mut FrameReceiver) -> bool) {
        let n = self.inbound.len();
        if n == 0 {
            return;
        }
        let first = self.next % n;
        self.next = self.next.wrapping_add(1);
        for k in 0..n {
            if !take(&mut self.inbound[(first + k) % n]) {
                break;
            }
        }
    }
}

/// Adds one to an eventfd's counter (wakes its poll).
fn wake(fd: RawFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live local buffer to a descriptor we own
    // (through `Mesh`); a full counter gives EAGAIN, which still leaves it
    // readable, so nothing is lost.
    let _ = unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_order_refuses_when_full_and_reuses_slots() {
        let (mut tx, mut rx) = ring();
        let mut buf = [0u8; SLOT];
        assert!(rx.is_empty());
        assert_eq!(rx.pop_into(&mut buf), None);
        for i in 0..RING {
            assert!(tx.push(&[(i % 251) as u8; 100][..=i % 100]), "slot {i}");
        }
        assert!(!tx.push(b"one too many"), "a full ring refuses");
        assert!(!rx.is_empty());
        for i in 0..RING {
            let n = rx.pop_into(&mut buf).unwrap();
            assert_eq!(n, i % 100 + 1);
            assert!(buf[..n].iter().all(|&b| b == (i % 251) as u8), "frame {i} intact");
        }
        assert_eq!(rx.pop_into(&mut buf), None);
        assert!(tx.push(&[7; SLOT]), "a full-size frame fits");
        assert!(!tx.push(&[7; SLOT + 1]), "a larger one does not");
        assert_eq!(rx.pop_into(&mut buf), Some(SLOT));
        let mut small = [0u8; 10];
        assert!(tx.push(&[9; 50]));
        assert_eq!(rx.pop_into(&mut small), Some(10), "cut to the buffer");
    }

    #[test]
    fn ring_moves_every_frame_between_threads_in_order() {
        let (mut tx, mut rx) = ring();
        const N: u32 = 200_000;
        let t = std::thread::spawn(move || {
            let mut i = 0u32;
            while i < N {
                let len = 4 + (i % 300) as usize;
                let mut f = [0u8; 304];
                f[..4].copy_from_slice(&i.to_be_bytes());
                f[len - 1] = (i % 256) as u8;
                if tx.push(&f[..len]) {
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let mut buf = [0u8; SLOT];
        let mut next = 0u32;
        while next < N {
            if let Some(n) = rx.pop_into(&mut buf) {
                let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
                assert_eq!(i, next, "in order, none lost or repeated");
                assert_eq!(n, 4 + (i % 300) as usize);
                assert_eq!(buf[n - 1], (i % 256) as u8, "the frame's last byte arrived with it");
                next += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        t.join().unwrap();
    }

    #[test]
    fn mesh_routes_by_owner_and_wakes_only_sleepers() {
        let mut ports = Mesh::build(3).unwrap();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|p| p.wake_fd() >= 0));
        ports[2].claim(30_000);
        assert_eq!(ports[0].other_owner(30_000), Some(2));
        assert_eq!(ports[2].other_owner(30_000), None, "its own port");
        assert_eq!(ports[0].other_owner(30_002), None, "nobody's");
        ports[1].release(30_000);
        assert_eq!(ports[0].other_owner(30_000), Some(2), "only the owner releases");

        // Worker 2 sleeps; worker 0 hands it a frame and wakes it once.
        assert!(ports[2].sleep());
        assert!(ports[0].forward(2, b"frame for two"));
        ports[0].flush();
        let mut counter = [0u8; 8];
        // SAFETY (test): reads 8 bytes into a live buffer from the eventfd.
        let r = unsafe { libc::read(ports[2].wake_fd(), counter.as_mut_ptr().cast(), 8) };
        assert_eq!((r, u64::from_ne_bytes(counter)), (8, 1), "one wakeup");
        assert!(ports[2].has_inbound());
        assert!(!ports[2].sleep(), "a waiting frame keeps it awake");
        ports[2].woke();
        // Awake now: no further wakeup syscalls.
        assert!(ports[0].forward(2, b"second"));
        ports[0].flush();
        let r = unsafe { libc::read(ports[2].wake_fd(), counter.as_mut_ptr().cast(), 8) };
        assert_eq!(r, -1, "no wakeup for a worker that is awake");

        let mut got = Vec::new();
        ports[2].receive(|rx| {
            let mut buf = [0u8; SLOT];
            while let Some(n) = rx.pop_into(&mut buf) {
                got.push(buf[..n].to_vec());
            }
            true
        });
        assert_eq!(got, vec![b"frame for two".to_vec(), b"second".to_vec()]);
        ports[2].release(30_000);
        assert_eq!(ports[0].other_owner(30_000), None);
        assert!(!ports[0].forward(0, b"to itself"), "no ring to itself");
    }
}
