//! The ban list: banned prefixes with their reason, expiry and offence
//! count, bounded; the offence history that makes repeat bans longer; and
//! [`SharedBans`], the copy the transport checks at TCP/TLS accept and on
//! every UDP datagram.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// How long a source's offences are remembered after its last ban ended.
pub const OFFENCE_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// Why a source was banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// It kept exceeding its rate limits.
    Rate,
    /// Too many failed authentications.
    Auth,
    /// Its User-Agent is a known scanner.
    Scanner,
    /// Too many malformed messages.
    Malformed,
    /// It flooded relay ports with media.
    MediaFlood,
    /// `sbc ctl ban`.
    Manual,
}

impl Reason {
    /// Every reason, in metric order.
    pub const ALL: [Self; 6] = [Self::Rate, Self::Auth, Self::Scanner, Self::Malformed, Self::MediaFlood, Self::Manual];

    /// The label (logs, metrics, `sbc ctl bans`, replication).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Auth => "auth",
            Self::Scanner => "scanner",
            Self::Malformed => "malformed",
            Self::MediaFlood => "media_flood",
            Self::Manual => "manual",
        }
    }

    /// The reason labelled `s` (an unknown label reads as manual).
    #[must_use]
    pub fn parse(s: &str) -> Self {
        Self::ALL.into_iter().find(|r| r.as_str() == s).unwrap_or(Self::Manual)
    }

    /// Its index in [`ALL`](Self::ALL).
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The banned prefix.
    pub net: IpNet,
    /// Why.
    pub reason: Reason,
    /// When it was placed (or installed from the replicated list).
    pub placed: Instant,
    /// When it ends.
    pub until: Instant,
    /// When it ends, Unix seconds (replicated).
    pub until_unix: u64,
    /// The source's bans so far, this one included.
    pub offences: u32,
}

/// The canonical form of a prefix: IPv4-mapped IPv6 hosts as IPv4, host
/// bits cleared.
#[must_use]
pub fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() == 128 => IpNet::from(IpAddr::V6(v6.addr()).to_canonical()),
        n => n.trunc(),
    }
}

/// The bans in force, bounded. Host bans are found by one hash lookup,
/// wider prefixes by a scan of the (few) prefix bans.
#[derive(Debug, Default)]
pub struct BanTable {
    bans: HashMap<IpNet, Ban>,
    /// The keys of `bans` wider than one host.
    nets: Vec<IpNet>,
    /// Each ban's end, soonest first; entries whose ban was lifted or
    /// replaced are skipped when they come up (and dropped when the heap
    /// grows past twice the bans).
    ends: BinaryHeap<Reverse<(Instant, IpNet)>>,
    /// Offences per prefix and when its last ban ends.
    history: HashMap<IpNet, (u32, Instant)>,
}

impl BanTable {
    /// Bans in force.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bans.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// The ban covering `ip`, if any (whether expired or not: expiry is the
    /// tick's job).
    #[must_use]
    pub fn find(&self, ip: IpAddr) -> Option<&Ban> {
        let ip = ip.to_canonical();
        if let Some(b) = self.bans.get(&IpNet::from(ip)) {
            return Some(b);
        }
        self.nets.iter().find(|n| n.contains(&ip)).and_then(|n| self.bans.get(n))
    }

    /// The ban on exactly `net`.
    #[must_use]
    pub fn get(&self, net: &IpNet) -> Option<&Ban> {
        self.bans.get(net)
    }

    /// Every ban, soonest to expire first.
    #[must_use]
    pub fn list(&self) -> Vec<&Ban> {
        let mut v: Vec<&Ban> = self.bans.values().collect();
        v.sort_by_key(|b| (b.until, b.net));
        v
    }

    /// The offence count `net` would have with one more ban at `now`.
    #[must_use]
    pub fn next_offence(&self, net: &IpNet, now: Instant) -> u32 {
        match self.history.get(net) {
            Some((n, last)) if now.saturating_duration_since(*last) < OFFENCE_MEMORY => n.saturating_add(1),
            _ => 1,
        }
    }

    /// Adds or replaces a ban; records the offence. Returns the ban it
    /// replaced.
    pub fn insert(&mut self, ban: Ban) -> Option<Ban> {
        let net = ban.net;
        self.history.insert(net, (ban.offences, ban.until));
        self.ends.push(Reverse((ban.until, net)));
        let old = self.bans.insert(net, ban);
        if self.ends.len() > 2 * self.bans.len() + 1024 {
            self.ends = self.bans.values().map(|b| Reverse((b.until, b.net))).collect();
        }
        if old.is_none() && !is_host(&net) {
            self.nets.push(net);
        }
        old
    }

    /// Lifts the ban on exactly `net`.
    pub fn remove(&mut self, net: &IpNet) -> Option<Ban> {
        let b = self.bans.remove(net)?;
        self.nets.retain(|n| n != net);
        Some(b)
    }

    /// Drops the heap's top entries that no longer match a ban.
    fn skip_stale(&mut self) {
        while let Some(Reverse((until, net))) = self.ends.peek() {
            if self.bans.get(net).is_some_and(|b| b.until == *until) {
                return;
            }
            self.ends.pop();
        }
    }

    /// The ban that expires soonest (what goes when the table is full).
    pub fn soonest(&mut self) -> Option<IpNet> {
        self.skip_stale();
        self.ends.peek().map(|Reverse((_, net))| *net)
    }

    /// Removes and returns the bans ended at `now`; forgets offences older
    /// than [`OFFENCE_MEMORY`], and the oldest ones past `history_cap`.
    /// Costs nothing when no ban ended.
    pub fn expire(&mut self, now: Instant, history_cap: usize) -> Vec<Ban> {
        let mut out = Vec::new();
        loop {
            self.skip_stale();
            match self.ends.peek() {
                Some(Reverse((until, net))) if *until <= now => {
                    let net = *net;
                    self.ends.pop();
                    out.extend(self.remove(&net));
                }
                _ => break,
            }
        }
        if self.history.len() > history_cap {
            self.history.retain(|_, (_, last)| now.saturating_duration_since(*last) < OFFENCE_MEMORY);
            if self.history.len() > history_cap {
                let mut ages: Vec<(Instant, IpNet)> = self.history.iter().map(|(n, (_, t))| (*t, *n)).collect();
                ages.sort_unstable();
                for (_, n) in ages.iter().take(self.history.len() - history_cap / 2) {
                    self.history.remove(n);
                }
            }
        }
        out
    }

    /// Offence records kept.
    #[cfg(test)]
    #[must_use]
    pub fn history_len(&self) -> usize {
        self.history.len()
    }
}

fn is_host(n: &IpNet) -> bool {
    n.prefix_len() == n.max_prefix_len()
}

/// The banned prefixes, readable from other threads (the transport's
/// accept and UDP receive checks). Written only by the guard, one change
/// at a time.
#[derive(Debug, Default)]
pub struct SharedBans {
    inner: RwLock<(HashSet<IpAddr>, Vec<IpNet>)>,
}

impl SharedBans {
    /// Whether `ip` is banned (cheap: one read lock and a hash lookup).
    #[must_use]
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let Ok(g) = self.inner.read() else { return false };
        g.0.contains(&ip) || g.1.iter().any(|n| n.contains(&ip))
    }

    /// Adds a (canonical) prefix.
    pub(super) fn add(&self, net: IpNet) {
        if let Ok(mut g) = self.inner.write() {
            if is_host(&net) {
                g.0.insert(net.addr());
            } else if !g.1.contains(&net) {
                g.1.push(net);
            }
        }
    }

    /// Removes a (canonical) prefix.
    pub(super) fn remove(&self, net: IpNet) {
        if let Ok(mut g) = self.inner.write() {
            if is_host(&net) {
                g.0.remove(&net.addr());
            } else {
                g.1.retain(|n| *n != net);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(net: &str, until: Instant, offences: u32) -> Ban {
        Ban { net: net.parse().unwrap(), reason: Reason::Rate, placed: until, until, until_unix: 0, offences }
    }

    #[test]
    fn hosts_and_prefixes_are_found() {
        let t0 = Instant::now();
        let mut t = BanTable::default();
        t.insert(ban("192.0.2.7/32", t0, 1));
        t.insert(ban("198.51.100.0/24", t0, 1));
        t.insert(ban("2001:db8::/32", t0, 1));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(t.find(ip("192.0.2.7")).is_some());
        assert!(t.find(ip("::ffff:192.0.2.7")).is_some(), "v4-mapped sources match");
        assert!(t.find(ip("192.0.2.8")).is_none());
        assert!(t.find(ip("198.51.100.200")).is_some());
        assert!(t.find(ip("2001:db8:1::5")).is_some());
        assert!(t.find(ip("2001:db9::5")).is_none());
        let shared = SharedBans::default();
        for b in t.list() {
            shared.add(b.net);
        }
        assert!(shared.is_banned(ip("198.51.100.9")) && shared.is_banned(ip("192.0.2.7")));
        assert!(!shared.is_banned(ip("192.0.2.9")));
        assert!(t.remove(&"198.51.100.0/24".parse().unwrap()).is_some());
        assert!(t.find(ip("198.51.100.200")).is_none());
        shared.remove("198.51.100.0/24".parse().unwrap());
        assert!(!shared.is_banned(ip("198.51.100.9")));
    }

    #[test]
    fn expiry_and_offence_memory() {
        let t0 = Instant::now();
        let mut t = BanTable::default();
        let net: IpNet = "192.0.2.7/32".parse().unwrap();
        assert_eq!(t.next_offence(&net, t0), 1);
        t.insert(ban("192.0.2.7/32", t0 + Duration::from_secs(10), 1));
        t.insert(ban("192.0.2.8/32", t0 + Duration::from_secs(20), 1));
        assert_eq!(t.soonest(), Some(net));
        let gone = t.expire(t0 + Duration::from_secs(10), 100);
        assert_eq!(gone.len(), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.next_offence(&net, t0 + Duration::from_secs(11)), 2, "a repeat offender");
        let much_later = t0 + Duration::from_secs(10) + OFFENCE_MEMORY;
        assert_eq!(t.next_offence(&net, much_later), 1, "forgiven after a day");
    }

    #[test]
    fn a_replaced_ban_ends_at_its_new_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = BanTable::default();
        t.insert(ban("192.0.2.1/32", t0 + s(10), 1));
        t.insert(ban("192.0.2.1/32", t0 + s(5), 1));
        t.insert(ban("192.0.2.2/32", t0 + s(20), 1));
        t.insert(ban("192.0.2.2/32", t0 + s(30), 1));
        assert_eq!(t.soonest(), Some("192.0.2.1/32".parse().unwrap()));
        assert_eq!(t.expire(t0 + s(5), 100).len(), 1, "the shortened ban");
        assert!(t.expire(t0 + s(20), 100).is_empty(), "the lengthened ban is not over at its old end");
        assert_eq!(t.expire(t0 + s(30), 100).len(), 1);
        assert!(t.is_empty() && t.soonest().is_none());
        // Lifted bans leave nothing behind that ends later.
        t.insert(ban("192.0.2.3/32", t0 + s(40), 1));
        t.remove(&"192.0.2.3/32".parse().unwrap());
        assert!(t.expire(t0 + s(40), 100).is_empty());
    }

    #[test]
    fn offence_history_is_bounded() {
        let t0 = Instant::now();
        let mut t = BanTable::default();
        for i in 0..1000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            t.insert(Ban {
                net: IpNet::from(IpAddr::V4(ip)),
                reason: Reason::Scanner,
                placed: t0,
                until: t0,
                until_unix: 0,
                offences: 1,
            });
        }
        t.expire(t0, 100);
        assert!(t.is_empty());
        assert!(t.history_len() <= 100, "{}", t.history_len());
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical("::ffff:192.0.2.1/128".parse().unwrap()), "192.0.2.1/32".parse::<IpNet>().unwrap());
        assert_eq!(canonical("10.1.2.3/8".parse().unwrap()), "10.0.0.0/8".parse::<IpNet>().unwrap());
        assert_eq!(Reason::parse("scanner"), Reason::Scanner);
        assert_eq!(Reason::parse("??"), Reason::Manual);
    }
}
