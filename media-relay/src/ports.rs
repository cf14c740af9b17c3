//! The media port allocator: even RTP ports with RTCP on the next odd port,
//! from a configured range.
//!
//! Owned by the control plane (never touched by workers). Allocation walks a
//! cursor round-robin through the range, so a port just freed is reused as
//! late as possible and stray packets of an ended call do not land in a new
//! one.

/// Allocates RTP/RTCP port pairs from an inclusive range.
#[derive(Debug)]
pub struct PortAllocator {
    /// First even port of the range.
    base: u16,
    /// `used[i]` is true when the pair (base + 2i, base + 2i + 1) is taken.
    used: Vec<bool>,
    cursor: usize,
    in_use: usize,
}

impl PortAllocator {
    /// A range `[min, max]`. The first pair starts at the first even port
    /// `>= min`; the last pair must end at or below `max`.
    #[must_use]
    pub fn new(min: u16, max: u16) -> Self {
        let base = min + (min & 1);
        let pairs = if max > base { (usize::from(max) - usize::from(base)).div_ceil(2) } else { 0 };
        Self { base, used: vec![false; pairs], cursor: 0, in_use: 0 }
    }

    /// Number of pairs in the range.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.used.len()
    }

    /// Number of pairs currently allocated.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Takes the next free pair for which `try_bind(rtp_port)` succeeds and
    /// returns its RTP port. A pair whose bind fails (something else holds
    /// the port) is skipped. `None` when the range is exhausted.
    pub fn allocate<T, E>(&mut self, mut try_bind: impl FnMut(u16) -> Result<T, E>) -> Option<(u16, T)> {
        let n = self.used.len();
        for _ in 0..n {
            let i = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            if self.used[i] {
                continue;
            }
            let port = self.port_of(i);
            if let Ok(t) = try_bind(port) {
                self.used[i] = true;
                self.in_use += 1;
                return Some((port, t));
            }
        }
        None
    }

    /// Takes a given pair (a session taken over from another node keeps its
    /// ports). False when the port is outside the range, odd, or taken.
    pub fn claim(&mut self, rtp_port: u16) -> bool {
        if rtp_port < self.base || !(rtp_port - self.base).is_multiple_of(2) {
            return false;
        }
        let i = usize::from(rtp_port - self.base) / 2;
        match self.used.get_mut(i) {
            Some(slot) if !*slot => {
                *slot = true;
                self.in_use += 1;
                true
            }
            _ => false,
        }
    }

    /// Returns a pair to the pool. Unknown or already free ports are ignored.
    pub fn free(&mut self, rtp_port: u16) {
        if rtp_port < self.base || !(rtp_port - self.base).is_multiple_of(2) {
            return;
        }
        let i = usize::from(rtp_port - self.base) / 2;
        if let Some(slot) = self.used.get_mut(i) {
            if *slot {
                *slot = false;
                self.in_use -= 1;
            }
        }
    }

    fn port_of(&self, i: usize) -> u16 {
        // i < pairs, so base + 2i <= max fits in u16.
        self.base + u16::try_from(i * 2).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: u16) -> Result<(), ()> {
        Ok(())
    }

    #[test]
    fn pairs_are_even_and_in_range() {
        let mut a = PortAllocator::new(30001, 30010);
        assert_eq!(a.capacity(), 4); // 30002,30004,30006,30008 (+1 each <= 30010)
        let mut got = vec![];
        while let Some((p, ())) = a.allocate(ok) {
            got.push(p);
        }
        assert_eq!(got, vec![30002, 30004, 30006, 30008]);
        assert!(a.allocate(ok).is_none(), "exhausted range returns None");
        assert_eq!(a.in_use(), 4);
    }

    #[test]
    fn free_then_reuse_round_robin() {
        let mut a = PortAllocator::new(30000, 30007);
        let (p1, ()) = a.allocate(ok).unwrap();
        let (p2, ()) = a.allocate(ok).unwrap();
        a.free(p1);
        // The cursor moves on: the next allocation is not the port just freed.
        let (p3, ()) = a.allocate(ok).unwrap();
        assert_ne!(p3, p1);
        assert_ne!(p3, p2);
        a.free(p2);
        a.free(p2); // double free is ignored
        a.free(1); // out of range is ignored
        assert_eq!(a.in_use(), 1);
    }

    #[test]
    fn busy_ports_are_skipped() {
        let mut a = PortAllocator::new(30000, 30007);
        let (p, ()) = a.allocate(|p| if p == 30000 { Err(()) } else { Ok(()) }).unwrap();
        assert_eq!(p, 30002);
        assert_eq!(a.in_use(), 1);
    }

    #[test]
    fn claim_takes_exact_pairs() {
        let mut a = PortAllocator::new(30000, 30007);
        assert!(a.claim(30002));
        assert!(!a.claim(30002), "a taken pair cannot be claimed twice");
        assert!(!a.claim(30003), "odd ports are not pair starts");
        assert!(!a.claim(31000), "outside the range");
        assert_eq!(a.in_use(), 1);
        let got: Vec<u16> = std::iter::from_fn(|| a.allocate(ok).map(|(p, ())| p)).collect();
        assert_eq!(got, vec![30000, 30004, 30006], "allocation skips the claimed pair");
    }

    #[test]
    fn degenerate_range() {
        let mut a = PortAllocator::new(30000, 30000);
        assert_eq!(a.capacity(), 0);
        assert!(a.allocate(ok).is_none());
    }
}
