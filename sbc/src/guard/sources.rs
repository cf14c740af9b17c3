//! Per-source rate state (token buckets and offence windows), in a table
//! bounded by `guard.max_sources`: a sweep of spoofed addresses makes the
//! table forget its idle and oldest sources, never grow past the cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::bucket::{Bucket, Window};
use crate::config::GuardConfig;

/// One source address's state.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// Every request.
    pub requests: Bucket,
    /// INVITEs.
    pub invite: Bucket,
    /// REGISTERs.
    pub register: Bucket,
    /// Requests dropped over a rate limit.
    pub rate_drops: Window,
    /// Failed authentications.
    pub auth_failures: Window,
    /// Malformed messages.
    pub malformed: Window,
    /// The latest message.
    pub last_seen: Instant,
}

impl Source {
    fn new(cfg: &GuardConfig, now: Instant) -> Self {
        Self {
            requests: Bucket::new(cfg.requests, now),
            invite: Bucket::new(cfg.invite, now),
            register: Bucket::new(cfg.register, now),
            rate_drops: Window::default(),
            auth_failures: Window::default(),
            malformed: Window::default(),
            last_seen: now,
        }
    }
}

/// The sources, at most `cap`.
#[derive(Debug)]
pub struct Sources {
    map: HashMap<IpAddr, Source>,
    cap: usize,
    /// Sources forgotten to stay under the cap.
    pub evicted: u64,
}

impl Sources {
    /// An empty table of at most `cap` sources.
    #[must_use]
    pub fn new(cap: usize) -> Self {
        Self { map: HashMap::new(), cap: cap.max(2), evicted: 0 }
    }

    /// Sources kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The state of `ip` (made at `now` when new), its `last_seen` set.
    pub fn get(&mut self, ip: IpAddr, cfg: &GuardConfig, now: Instant) -> &mut Source {
        if !self.map.contains_key(&ip) && self.map.len() >= self.cap {
            self.make_room(cfg, now);
        }
        let s = self.map.entry(ip).or_insert_with(|| Source::new(cfg, now));
        s.last_seen = s.last_seen.max(now);
        s
    }

    /// Forgets `ip` (it was banned: its state starts afresh later).
    pub fn forget(&mut self, ip: IpAddr) {
        self.map.remove(&ip);
    }

    /// Frees at least half the table: first the sources idle long enough
    /// that their buckets are full again and their windows closed, then
    /// the least recently seen. Amortised over the inserts that fill the
    /// freed half, so each costs O(log n).
    fn make_room(&mut self, cfg: &GuardConfig, now: Instant) {
        let idle = idle_time(cfg);
        let before = self.map.len();
        self.map.retain(|_, s| now.saturating_duration_since(s.last_seen) < idle);
        let target = self.cap / 2;
        if self.map.len() > target {
            let mut seen: Vec<(Instant, IpAddr)> = self.map.iter().map(|(ip, s)| (s.last_seen, *ip)).collect();
            seen.sort_unstable();
            for (_, ip) in seen.iter().take(self.map.len() - target) {
                self.map.remove(ip);
            }
        }
        self.evicted += (before - self.map.len()) as u64;
    }
}

/// How long a source must be silent for its state to be worth nothing
/// (buckets refilled, windows over).
fn idle_time(cfg: &GuardConfig) -> Duration {
    let refill = |l: crate::config::RateLimit| {
        if l.per_s == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(f64::from(l.burst) / f64::from(l.per_s))
        }
    };
    [refill(cfg.requests), refill(cfg.invite), refill(cfg.register), cfg.window, cfg.auth_window]
        .into_iter()
        .max()
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spoofed_sweep_stays_under_the_cap() {
        let cfg = GuardConfig::default();
        let t0 = Instant::now();
        let mut s = Sources::new(1000);
        // A source that stays active is kept over the sweep's newcomers.
        let busy: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i));
            s.get(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), &cfg, now);
            if i % 100 == 0 {
                s.get(busy, &cfg, now);
            }
            assert!(s.len() <= 1000);
        }
        assert!(s.evicted >= 99_000, "{}", s.evicted);
        assert!(s.map.contains_key(&busy));
    }

    #[test]
    fn idle_sources_go_first() {
        let cfg = GuardConfig::default();
        let t0 = Instant::now();
        let mut s = Sources::new(4);
        let ip = |i: u8| IpAddr::from([192, 0, 2, i]);
        for i in 0..4 {
            s.get(ip(i), &cfg, t0);
        }
        let later = t0 + idle_time(&cfg) + Duration::from_secs(1);
        s.get(ip(3), &cfg, later - Duration::from_millis(1));
        s.get(ip(9), &cfg, later);
        assert_eq!(s.len(), 2, "the three idle ones went");
        assert!(s.map.contains_key(&ip(3)) && s.map.contains_key(&ip(9)));
    }
}
