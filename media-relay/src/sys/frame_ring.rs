//! The SPSC frame ring the `AF_XDP` workers hand frames over with (see
//! [`crate::datapath::afxdp::handoff`]): fixed slots of one UMEM frame,
//! one sender and one receiver, indices on their own cache lines.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

/// Largest frame handed over (the UMEM frame size).
pub const SLOT: usize = crate::datapath::afxdp::umem::FRAME_SIZE as usize;
/// Slots of each ring (1 MiB per ordered pair of workers).
pub const RING: usize = 512;

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
}
