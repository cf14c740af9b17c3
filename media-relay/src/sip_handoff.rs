//! SIP that arrives on an `AF_XDP` worker: the XDP program steers UDP to the
//! configured SIP ports (the `sip_ports` map) to the workers, with the
//! media. A worker copies each such datagram into its SPSC ring to the
//! signaling plane and wakes it once per batch; the signaling plane drains
//! the rings as if the datagrams had come from its own socket. Replies go
//! out through the signaling plane's ordinary socket.
//!
//! Nothing here allocates on the worker's side: the ring's slots are fixed
//! size and created at start, and a handover is one copy into a slot. A
//! datagram larger than a slot, or one that finds the ring full, is dropped
//! and counted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

/// Largest SIP datagram handed over (bigger ones are dropped and counted;
/// SIP over UDP must stay below the path MTU anyway, RFC 3261 18.1.1).
pub const SIP_MAX: usize = 2048;
/// Slots per worker ring.
pub const RING: usize = 256;

/// One datagram.
#[derive(Clone)]
pub struct SipDatagram {
    /// Sender.
    pub src: SocketAddr,
    /// Where it was sent (one of ours).
    pub dst: SocketAddr,
    /// Bytes used in `data`.
    pub len: u16,
    /// The UDP payload.
    pub data: [u8; SIP_MAX],
}

impl std::fmt::Debug for SipDatagram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipDatagram").field("src", &self.src).field("dst", &self.dst).field("len", &self.len).finish()
    }
}

impl SipDatagram {
    /// The payload.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.data[..usize::from(self.len).min(SIP_MAX)]
    }
}

/// Where the signaling plane picks the rings up and tells the workers how to
/// wake it.
#[derive(Default)]
pub struct SipHandoff {
    consumers: Mutex<Vec<rtrb::Consumer<SipDatagram>>>,
    waker: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for SipHandoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipHandoff").field("waker_set", &self.waker.get().is_some()).finish()
    }
}

impl SipHandoff {
    /// A ring for one worker: its producer goes to the worker, the consumer
    /// waits here for [`take_consumers`](Self::take_consumers).
    #[must_use]
    pub fn ring(&self) -> rtrb::Producer<SipDatagram> {
        let (tx, rx) = rtrb::RingBuffer::new(RING);
        self.consumers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(rx);
        tx
    }

    /// The workers' rings (once; later calls get none).
    pub fn take_consumers(&self) -> Vec<rtrb::Consumer<SipDatagram>> {
        std::mem::take(&mut *self.consumers.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// How workers wake the signaling plane (set once).
    pub fn set_waker(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let _ = self.waker.set(wake);
    }

    /// Wakes the signaling plane, if it said how.
    pub fn wake(&self) {
        if let Some(w) = self.waker.get() {
            w();
        }
    }
}

/// A worker's end: its ring, a reusable slot, and the ports that are SIP.
pub struct SipSender {
    ring: rtrb::Producer<SipDatagram>,
    handoff: Arc<SipHandoff>,
    ports: Vec<u16>,
    pushed: bool,
    /// Datagrams handed over.
    pub delivered: u64,
    /// Dropped: ring full or too large.
    pub dropped: u64,
}

impl SipSender {
    /// A sender for `ports` over `ring`.
    #[must_use]
    pub fn new(ring: rtrb::Producer<SipDatagram>, handoff: Arc<SipHandoff>, ports: Vec<u16>) -> Self {
        Self { ring, handoff, ports, pushed: false, delivered: 0, dropped: 0 }
    }

    /// Whether `port` is a SIP port.
    #[must_use]
    pub fn is_sip(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }

    /// Hands one datagram over; false when it was dropped.
    pub fn send(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> bool {
        if payload.len() > SIP_MAX {
            self.dropped += 1;
            return false;
        }
        let mut data = [0u8; SIP_MAX];
        data[..payload.len()].copy_from_slice(payload);
        // A 2 KiB copy per SIP datagram; SIP rates are far below media's.
        if self.ring.push(SipDatagram { src, dst, len: payload.len() as u16, data }).is_err() {
            self.dropped += 1;
            return false;
        }
        self.pushed = true;
        self.delivered += 1;
        true
    }

    /// Once per batch: wake the signaling plane if anything was handed over.
    pub fn flush(&mut self) {
        if std::mem::take(&mut self.pushed) {
            self.handoff.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn hands_over_counts_drops_and_wakes_once_per_batch() {
        let h = Arc::new(SipHandoff::default());
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&wakes);
        h.set_waker(Box::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        }));
        let mut s = SipSender::new(h.ring(), Arc::clone(&h), vec![5060]);
        assert!(s.is_sip(5060) && !s.is_sip(5061));
        let (src, dst) = ("192.0.2.1:5060".parse().unwrap(), "192.0.2.2:5060".parse().unwrap());
        assert!(s.send(src, dst, b"OPTIONS sip:x SIP/2.0\r\n\r\n"));
        assert!(s.send(src, dst, b"second"));
        assert!(!s.send(src, dst, &[b'x'; SIP_MAX + 1]), "too large");
        s.flush();
        s.flush();
        assert_eq!(wakes.load(Ordering::Relaxed), 1, "one wakeup per batch with datagrams");
        let mut rings = h.take_consumers();
        assert_eq!(rings.len(), 1);
        let d = rings[0].pop().unwrap();
        assert_eq!((d.src, d.dst, d.payload()), (src, dst, &b"OPTIONS sip:x SIP/2.0\r\n\r\n"[..]));
        assert_eq!(rings[0].pop().unwrap().payload(), b"second");
        for _ in 0..RING {
            s.send(src, dst, b"fill");
        }
        assert_eq!((s.delivered, s.dropped), (2 + RING as u64, 1), "the ring holds RING, then drops");
        assert!(!s.send(src, dst, b"full"));
        assert_eq!(s.dropped, 2);
    }
}
