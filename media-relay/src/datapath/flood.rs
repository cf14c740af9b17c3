//! Spotting a source that floods a media port with foreign packets (packets
//! not from the channel's latched or expected peer), without allocating,
//! locking or asking the clock per packet.
//!
//! [`FloodWatch`] is a small direct-mapped table, allocated once per worker:
//! a (channel, source address) pair hashes to one slot, which counts that
//! pair's foreign packets over a window of [`FLOOD_WINDOW`]. A slot is taken
//! by the first pair seen in it once its window is over, so a flood (almost
//! all the foreign packets) finds its slot within a window; another pair
//! hashing to a slot in use is not counted until that window ends. Reaching
//! the limit reports the source once per window.
//!
//! Per channel, not per source across channels: a media gateway whose
//! packets are foreign on many ports at once (strict latching and an SDP
//! address that is not its source) sends each port an ordinary stream,
//! which must not add up to a flood.
//!
//! Ownership: one per worker, used only on the worker's thread.

use std::net::IpAddr;

use crate::Nanos;

/// Length of a window (the limit is per second).
pub const FLOOD_WINDOW: Nanos = 1_000_000_000;

/// Slots of a watch (a power of two).
const SLOTS: usize = 256;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Channel token + 1; 0: free.
    token: u32,
    src: [u8; 16],
    start: Nanos,
    count: u32,
}

/// A worker's flood watch (about 10 KiB).
#[derive(Debug)]
pub struct FloodWatch {
    slots: Box<[Slot]>,
}

impl Default for FloodWatch {
    fn default() -> Self {
        Self { slots: vec![Slot::default(); SLOTS].into_boxed_slice() }
    }
}

/// The 16-byte form of an address (IPv4 IPv4-mapped).
fn octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn slot_of(token: u32, src: &[u8; 16]) -> usize {
    let x = u128::from_le_bytes(*src);
    let folded = (x as u64) ^ ((x >> 64) as u64) ^ u64::from(token).rotate_left(32);
    // Fibonacci hashing: the top bits of the product.
    (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros())) as usize
}

impl FloodWatch {
    /// Counts one foreign packet from `src` on channel `token` at `now`;
    /// `true` when it is the one that reaches `limit` in the pair's window
    /// (`limit` 0: never).
    pub fn on_foreign(&mut self, token: usize, src: IpAddr, now: Nanos, limit: u32) -> bool {
        if limit == 0 {
            return false;
        }
        let token = u32::try_from(token).unwrap_or(u32::MAX - 1) + 1;
        let src = octets(src);
        let Some(slot) = self.slots.get_mut(slot_of(token, &src)) else { return false };
        if slot.token == 0 || now.saturating_sub(slot.start) >= FLOOD_WINDOW {
            *slot = Slot { token, src, start: now, count: 0 };
        }
        if slot.token != token || slot.src != src {
            return false;
        }
        slot.count = slot.count.saturating_add(1);
        slot.count == limit
    }

    /// Forgets channel `token`'s pairs (the channel was removed, its token
    /// may be reused).
    pub fn forget(&mut self, token: usize) {
        let token = u32::try_from(token).unwrap_or(u32::MAX - 1) + 1;
        for s in self.slots.iter_mut().filter(|s| s.token == token) {
            *s = Slot::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_per_channel_and_source_and_reports_once_a_window() {
        let mut w = FloodWatch::default();
        let flooder = ip("203.0.113.5");
        let hits =
            |w: &mut FloodWatch, token, src, now, n| (0..n).filter(|_| w.on_foreign(token, src, now, 10)).count();
        assert_eq!(hits(&mut w, 4, flooder, 0, 9), 0);
        assert_eq!(hits(&mut w, 4, flooder, 5, 20), 1, "the 10th reports, the rest of the window does not");
        // The same source on other channels: counted apart.
        assert_eq!(hits(&mut w, 5, flooder, 5, 9), 0);
        assert_eq!(hits(&mut w, 6, flooder, 5, 9), 0);
        // Next window.
        assert_eq!(hits(&mut w, 4, flooder, FLOOD_WINDOW, 10), 1);
        // A trickle under the limit every window: never.
        let mut w = FloodWatch::default();
        let n: usize = (0..10).map(|s| hits(&mut w, 4, flooder, s * FLOOD_WINDOW, 9)).sum();
        assert_eq!(n, 0);
        // IPv6 and a disabled limit.
        assert!((0..3).any(|_| w.on_foreign(1, ip("2001:db8::66"), 0, 3)));
        assert!(!(0..100).any(|_| w.on_foreign(1, flooder, 0, 0)));
    }

    #[test]
    fn a_busy_slot_is_taken_over_when_its_window_ends_and_forgotten_with_its_channel() {
        let mut w = FloodWatch::default();
        let flooder = ip("203.0.113.5");
        // Find a source that hashes to the flooder's slot on channel 4.
        let target = slot_of(5, &octets(flooder));
        let decoy = (0..=255u8)
            .flat_map(|a| (0..=255u8).map(move |b| IpAddr::from([198, 51, a, b])))
            .find(|d| slot_of(5, &octets(*d)) == target)
            .unwrap();
        assert!(!w.on_foreign(4, decoy, 0, 3), "the decoy holds the slot for this window");
        assert!(!(0..10).any(|_| w.on_foreign(4, flooder, 1, 3)));
        assert!((0..10).any(|_| w.on_foreign(4, flooder, FLOOD_WINDOW, 3)), "next window the flood has it");
        w.forget(4);
        assert!(!(0..2).any(|_| w.on_foreign(4, flooder, FLOOD_WINDOW + 1, 3)), "counting starts over");
    }
}
