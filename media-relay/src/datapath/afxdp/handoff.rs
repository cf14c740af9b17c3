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

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::sys::eventfd::{eventfd, wake};
use crate::sys::frame_ring::{ring, FrameReceiver, FrameSender};

/// Most workers the owner table can name.
pub const MAX_WORKERS: usize = u8::MAX as usize - 1;

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

#[cfg(test)]
mod tests {
    use super::*;

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
        let r = crate::sys::eventfd::read(ports[2].wake_fd(), &mut counter);
        assert_eq!((r, u64::from_ne_bytes(counter)), (8, 1), "one wakeup");
        assert!(ports[2].has_inbound());
        assert!(!ports[2].sleep(), "a waiting frame keeps it awake");
        ports[2].woke();
        // Awake now: no further wakeup syscalls.
        assert!(ports[0].forward(2, b"second"));
        ports[0].flush();
        let r = crate::sys::eventfd::read(ports[2].wake_fd(), &mut counter);
        assert_eq!(r, -1, "no wakeup for a worker that is awake");

        let mut got = Vec::new();
        ports[2].receive(|rx| {
            let mut buf = [0u8; crate::sys::frame_ring::SLOT];
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
