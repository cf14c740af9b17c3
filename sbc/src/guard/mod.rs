//! The source guard: per-source rate limits and automatic bans, checked on
//! every message before it is parsed.
//!
//! The signaling thread owns the [`Guard`] (inside the proxy). For each
//! message from the network, [`Guard::check`] drops it unanswered when its
//! source is banned or over a rate limit (all requests, INVITEs,
//! REGISTERs: the method comes from a scan of the first line, see
//! `peek`), or when its User-Agent is a known scanner (which also bans the
//! source). After the message was handled, [`Guard::after`] is told
//! whether it was malformed and how many authentications failed. Bans
//! also come from sources that keep exceeding their limits, from the media
//! relay (sources that flood relay ports, [`BanEnforcer::flood_sources`])
//! and from `sbc ctl ban` (`ctl`).
//!
//! A ban lasts `ban_time_s`, doubled for each repeat up to
//! `max_ban_time_s`. It is logged, counted, copied to [`SharedBans`] (the
//! transport checks it at TCP/TLS accept and on each UDP datagram),
//! pushed to the [`BanEnforcer`] (the XDP `bans` map on the AF_XDP
//! datapath) and, with `[ha]`, replicated through Redis (`replica`).
//! [`Guard::tick`] lifts the bans that ended. No clock is read here: time
//! comes in as `now`, wall-clock time once at construction.
//!
//! Files: `bucket` (token bucket, windows), `sources` (bounded per-source
//! state), `bans` (the ban list), `peek` (the pre-parse scan), `metrics`,
//! `ctl` (`sbc ctl bans|ban|unban`), `replica` (Redis), `relay` (the embedded
//! relay as the enforcer: XDP bans, media-flood reports).

mod bans;
mod bucket;
mod ctl;
mod metrics;
pub mod peek;
mod relay;
pub mod replica;
mod sources;

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use media_relay::config::BanPrefix;
use serde::{Deserialize, Serialize};

pub use bans::{canonical, Ban, Reason, SharedBans};
pub use bucket::{Bucket, Window};
pub use ctl::parse_duration;
pub use metrics::{DropReason, GuardMetrics};

use crate::config::{Config, GuardConfig};
use crate::metrics::SbcMetrics;
use bans::BanTable;
use peek::{Kind, Method};
use sources::Sources;

/// How often [`BanEnforcer::flood_sources`] is asked.
pub const FLOOD_POLL: Duration = Duration::from_secs(1);

/// Ban lines logged one by one per second at most; past it they are
/// counted and summed up in one line (a sweep of spoofed scanners must not
/// flood the log).
pub const BAN_LOGS_PER_S: u32 = 20;

/// The per-second budget of ban log lines.
#[derive(Debug, Default)]
struct LogBudget {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogBudget {
    /// Whether one more line may be logged at `now`.
    fn take(&mut self, now: Instant) -> bool {
        self.roll(now);
        if self.logged < BAN_LOGS_PER_S {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Starts a new second when the last one is over, logging what it left out.
    fn roll(&mut self, now: Instant) {
        if self.start.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        if self.suppressed > 0 {
            tracing::warn!(
                bans = self.suppressed,
                "guard: more sources banned in the last second (not logged one by one)"
            );
        }
        *self = Self { start: Some(now), logged: 0, suppressed: 0 };
    }
}

/// Where bans are enforced besides the guard's own check: the AF_XDP
/// datapath's `bans` map. The integrator implements it for the media
/// relay; [`NoEnforcer`] is the default.
pub trait BanEnforcer: Send + Sync {
    /// Starts dropping `p`; true when it is enforced in XDP.
    fn enforce(&self, p: &BanPrefix) -> bool;
    /// Stops dropping `p`.
    fn lift(&self, p: &BanPrefix);
    /// Media sources that flooded relay ports since the last call.
    fn flood_sources(&self) -> Vec<IpAddr>;
}

/// Enforces nothing beyond the guard's own check (the socket datapath).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEnforcer;

impl BanEnforcer for NoEnforcer {
    fn enforce(&self, _: &BanPrefix) -> bool {
        false
    }
    fn lift(&self, _: &BanPrefix) {}
    fn flood_sources(&self) -> Vec<IpAddr> {
        Vec::new()
    }
}

/// A replicated ban (`<prefix>:bans` in Redis, keyed by `net`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// `ADDR/LEN`.
    pub net: String,
    /// [`Reason`] label.
    pub reason: String,
    /// When it ends, Unix seconds.
    pub until: u64,
    /// Offences so far.
    pub offences: u32,
}

/// A change to replicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BanChange {
    /// A ban placed or replaced.
    Put(BanRecord),
    /// The ban on this `ADDR/LEN` was lifted.
    Del(String),
}

/// The media relay's form of a prefix.
#[must_use]
pub fn to_prefix(net: &IpNet) -> BanPrefix {
    BanPrefix { addr: net.network(), len: net.prefix_len() }
}

/// The guard (owned by the signaling thread, inside the proxy).
pub struct Guard {
    cfg: GuardConfig,
    /// Trunks' sources, exempt when `exempt_trunks`.
    trunk_sources: Vec<IpNet>,
    sources: Sources,
    bans: BanTable,
    shared: Arc<SharedBans>,
    metrics: Arc<SbcMetrics>,
    enforcer: Arc<dyn BanEnforcer>,
    /// An `Instant` and the Unix seconds at it.
    base: (Instant, u64),
    /// Changes to replicate, when tracked (`[ha]`).
    changes: Option<Vec<BanChange>>,
    next_flood_poll: Option<Instant>,
    log: LogBudget,
    /// When the replicated list now being loaded was asked for: bans
    /// placed since are not in it.
    load_asked: Option<Instant>,
}

/// Addresses the sbc itself depends on, never limited nor banned: a
/// spoofed flood "from" one of them must not cut the sbc off from its
/// Redis, HA peer, PostgreSQL collector, name servers or remote relays (a
/// ban in the XDP program drops every protocol from the source).
fn infrastructure(cfg: &Config) -> Vec<IpNet> {
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(h) = &cfg.ha {
        ips.extend([h.peer.ip(), h.heartbeat.ip()]);
        match &h.redis.endpoint {
            crate::ha::redis::Endpoint::Direct(host, _) => ips.extend(host.parse::<IpAddr>().ok()),
            crate::ha::redis::Endpoint::Sentinel { sentinels, .. } => ips.extend(sentinels.iter().map(|a| a.ip())),
        }
    }
    ips.extend(cfg.dns.servers.iter().map(|a| a.ip()));
    ips.extend(cfg.media_relays.iter().map(|r| r.ng.ip()));
    if let Some(pg) = cfg.cdr_spool.as_ref().and_then(|c| c.postgres.as_ref()) {
        ips.extend(
            pg.conninfo
                .split_whitespace()
                .filter_map(|kv| kv.strip_prefix("host=").or_else(|| kv.strip_prefix("hostaddr=")))
                .filter_map(|h| h.parse::<IpAddr>().ok()),
        );
    }
    ips.into_iter().filter(|ip| !ip.is_unspecified()).map(IpNet::from).collect()
}

impl Guard {
    /// A guard for `cfg.guard`; `unix_now` is the wall-clock time (Unix
    /// seconds) at `now`.
    #[must_use]
    pub fn new(cfg: &Config, metrics: Arc<SbcMetrics>, now: Instant, unix_now: u64) -> Self {
        let g = cfg.guard.clone();
        let mut trunk_sources: Vec<IpNet> = if g.exempt_trunks {
            cfg.trunks.iter().flat_map(|t| t.policy.sources.clone()).collect()
        } else {
            Vec::new()
        };
        trunk_sources.extend(infrastructure(cfg));
        Self {
            sources: Sources::new(g.max_sources),
            cfg: g,
            trunk_sources,
            bans: BanTable::default(),
            shared: Arc::new(SharedBans::default()),
            metrics,
            enforcer: Arc::new(NoEnforcer),
            base: (now, unix_now),
            changes: None,
            next_flood_poll: None,
            log: LogBudget::default(),
            load_asked: None,
        }
    }

    /// Takes the settings of a reloaded configuration (`never_ban`,
    /// scanner lists, rates, ban durations, trunks' sources); bans in
    /// force and the sources' rate state stay.
    pub fn reconfigure(&mut self, cfg: &Config, now: Instant) {
        let fresh = Self::new(cfg, Arc::clone(&self.metrics), now, self.unix(now));
        self.cfg = fresh.cfg;
        self.trunk_sources = fresh.trunk_sources;
    }

    /// Sets where bans are enforced besides here (the XDP `bans` map).
    /// Bans already in force are pushed to it.
    pub fn set_enforcer(&mut self, e: Arc<dyn BanEnforcer>) {
        for b in self.bans.list() {
            e.enforce(&to_prefix(&b.net));
        }
        self.enforcer = e;
    }

    /// The ban list the transport checks (TCP/TLS accept, UDP receive).
    #[must_use]
    pub fn shared(&self) -> Arc<SharedBans> {
        Arc::clone(&self.shared)
    }

    /// The settings in use.
    #[must_use]
    pub fn config(&self) -> &GuardConfig {
        &self.cfg
    }

    /// The ban covering `ip`, if any.
    #[must_use]
    pub fn ban_of(&self, ip: IpAddr) -> Option<&Ban> {
        self.bans.find(ip)
    }

    /// Bans in force, soonest to end first.
    #[must_use]
    pub fn bans(&self) -> Vec<&Ban> {
        self.bans.list()
    }

    /// Sources with rate state.
    #[must_use]
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// Unix seconds at `now`.
    #[must_use]
    pub fn unix(&self, now: Instant) -> u64 {
        let (at, unix) = self.base;
        if now >= at {
            unix + now.duration_since(at).as_secs()
        } else {
            unix.saturating_sub(at.duration_since(now).as_secs())
        }
    }

    /// Whether `ip` is never rate limited nor banned automatically
    /// (`never_ban`, and trunks' sources when `exempt_trunks`).
    #[must_use]
    pub fn exempt(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.cfg.is_never_ban(ip) || self.trunk_sources.iter().any(|n| n.contains(&ip))
    }

    /// The verdict on a message from `src` before it is parsed: false to
    /// drop it unanswered (counted). Bans first, then the scanner list,
    /// then the rate limits.
    pub fn check(&mut self, src: IpAddr, data: &[u8], now: Instant) -> bool {
        if !self.bans.is_empty() && self.bans.find(src).is_some() {
            self.metrics.guard.dropped(DropReason::Banned);
            return false;
        }
        if !self.cfg.enabled {
            return true;
        }
        let method = match peek::kind(data) {
            Kind::Keepalive | Kind::Response => return true,
            Kind::Request(m) => m,
        };
        let src = src.to_canonical();
        if self.exempt(src) {
            return true;
        }
        if !self.cfg.scanner_user_agents.is_empty() {
            if let Some(ua) = peek::user_agent(data).filter(|ua| peek::matches_any(ua, &self.cfg.scanner_user_agents)) {
                let ua = String::from_utf8_lossy(ua).into_owned();
                tracing::debug!(%src, user_agent = %ua, "scanner User-Agent");
                self.auto_ban(src, Reason::Scanner, now);
                self.metrics.guard.dropped(DropReason::Banned);
                return false;
            }
        }
        let cfg = &self.cfg;
        let s = self.sources.get(src, cfg, now);
        let over = if !s.requests.take(cfg.requests, now) {
            Some(DropReason::Rate)
        } else {
            match method {
                Method::Invite if !s.invite.take(cfg.invite, now) => Some(DropReason::InviteRate),
                Method::Register if !s.register.take(cfg.register, now) => Some(DropReason::RegisterRate),
                _ => None,
            }
        };
        let Some(why) = over else { return true };
        self.metrics.guard.dropped(why);
        let n = s.rate_drops.hit(cfg.window, now);
        if n == 1 {
            tracing::debug!(%src, limit = why.as_str(), "guard: source over its rate limit; its requests are dropped");
        }
        if cfg.ban_after_rate_drops > 0 && n >= cfg.ban_after_rate_drops {
            self.auto_ban(src, Reason::Rate, now);
        }
        self.sync_evicted();
        false
    }

    /// What handling a message from `src` showed: whether it was
    /// malformed (unparseable or over a message limit), and how many
    /// authentications failed with it.
    pub fn after(&mut self, src: IpAddr, malformed: bool, auth_failures: u64, now: Instant) {
        if !self.cfg.enabled || (!malformed && auth_failures == 0) {
            return;
        }
        let src = src.to_canonical();
        if self.exempt(src) {
            return;
        }
        let cfg = &self.cfg;
        let s = self.sources.get(src, cfg, now);
        let mut reason = None;
        if malformed && cfg.malformed_per_window > 0 && s.malformed.hit(cfg.window, now) >= cfg.malformed_per_window {
            reason = Some(Reason::Malformed);
        }
        for _ in 0..auth_failures {
            if cfg.auth_failures > 0 && s.auth_failures.hit(cfg.auth_window, now) >= cfg.auth_failures {
                reason = Some(Reason::Auth);
            }
        }
        if let Some(r) = reason {
            self.auto_ban(src, r, now);
        }
        self.sync_evicted();
    }

    fn sync_evicted(&self) {
        self.metrics.guard.evicted.store(self.sources.evicted, Relaxed);
    }

    /// How long the next automatic ban of `net` lasts, and its offence
    /// count: `ban_time`, doubled for each earlier offence, at most
    /// `max_ban_time`.
    #[must_use]
    pub fn next_ban_time(&self, net: &IpNet, now: Instant) -> (Duration, u32) {
        let offences = self.bans.next_offence(net, now);
        let factor = 1u32 << (offences - 1).min(20);
        (self.cfg.ban_time.saturating_mul(factor).min(self.cfg.max_ban_time), offences)
    }

    fn auto_ban(&mut self, ip: IpAddr, reason: Reason, now: Instant) {
        if self.exempt(ip) {
            return;
        }
        let net = IpNet::from(ip);
        if let Err(e) = self.ban(net, reason, None, now) {
            tracing::debug!(%ip, "guard: not banned: {e}");
        }
    }

    /// Bans `net` for `reason`, for `time` (`None`: the escalated automatic
    /// time, or `ban_time` for a manual ban). Refused for a prefix that
    /// overlaps `never_ban`. Returns the ban.
    ///
    /// # Errors
    /// Why it was refused.
    pub fn ban(&mut self, net: IpNet, reason: Reason, time: Option<Duration>, now: Instant) -> Result<Ban, String> {
        let net = canonical(net);
        if let Some(n) = self.cfg.never_ban.iter().find(|n| n.contains(&net.network()) || net.contains(&n.network())) {
            return Err(format!("{net} overlaps never_ban {n}: it is never banned"));
        }
        let (auto_time, offences) = self.next_ban_time(&net, now);
        let time = time.unwrap_or(if reason == Reason::Manual { self.cfg.ban_time } else { auto_time });
        if self.bans.get(&net).is_none() && self.bans.len() >= self.cfg.max_bans {
            if let Some(old) = self.bans.soonest() {
                tracing::warn!(prefix = %old, max = self.cfg.max_bans, "guard: ban list full; the ban ending soonest is lifted");
                self.lift(&old);
            }
        }
        let until_unix = self.unix(now) + time.as_secs();
        let ban = Ban { net, reason, placed: now, until: now + time, until_unix, offences };
        let replaced = self.bans.insert(ban.clone()).is_some();
        if net.prefix_len() == net.max_prefix_len() {
            self.sources.forget(net.addr());
        }
        let xdp = self.enforcer.enforce(&to_prefix(&net));
        self.shared.add(net);
        self.metrics.guard.banned(reason);
        self.metrics.guard.active.store(self.bans.len() as u64, Relaxed);
        self.record(BanChange::Put(record(&ban)));
        if reason == Reason::Manual || self.log.take(now) {
            tracing::warn!(
                addr = %net,
                reason = reason.as_str(),
                duration_s = time.as_secs(),
                offences,
                xdp,
                replaced,
                "guard: source banned"
            );
        }
        Ok(ban)
    }

    /// Lifts the ban on exactly `net`; returns it.
    pub fn unban(&mut self, net: IpNet) -> Option<Ban> {
        let net = canonical(net);
        let b = self.lift(&net)?;
        tracing::info!(addr = %net, reason = b.reason.as_str(), "guard: ban lifted");
        Some(b)
    }

    fn lift(&mut self, net: &IpNet) -> Option<Ban> {
        let b = self.bans.remove(net)?;
        self.enforcer.lift(&to_prefix(net));
        self.shared.remove(*net);
        self.metrics.guard.active.store(self.bans.len() as u64, Relaxed);
        self.record(BanChange::Del(net.to_string()));
        Some(b)
    }

    /// Lifts the bans that ended; asks the relay for flooding media
    /// sources (at most every [`FLOOD_POLL`]) and bans them.
    pub fn tick(&mut self, now: Instant) {
        self.log.roll(now);
        let history_cap = self.cfg.max_bans.saturating_mul(2);
        let ended = self.bans.expire(now, history_cap);
        if !ended.is_empty() {
            for b in &ended {
                self.enforcer.lift(&to_prefix(&b.net));
                self.shared.remove(b.net);
                self.record(BanChange::Del(b.net.to_string()));
            }
            if ended.len() <= BAN_LOGS_PER_S as usize {
                for b in &ended {
                    tracing::info!(addr = %b.net, reason = b.reason.as_str(), "guard: ban expired");
                }
            } else {
                tracing::info!(bans = ended.len(), "guard: bans expired");
            }
            self.metrics.guard.active.store(self.bans.len() as u64, Relaxed);
        }
        if self.next_flood_poll.is_none_or(|t| now >= t) {
            self.next_flood_poll = Some(now + FLOOD_POLL);
            for ip in self.enforcer.flood_sources() {
                let ip = ip.to_canonical();
                if self.cfg.enabled && !self.exempt(ip) && self.bans.find(ip).is_none() {
                    self.auto_ban(ip, Reason::MediaFlood, now);
                }
            }
        }
    }

    /// Keeps the changes to replicate (`[ha]`), for [`take_changes`](Self::take_changes).
    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// The changes since the last call (none unless tracked).
    pub fn take_changes(&mut self) -> Vec<BanChange> {
        self.changes.as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn record(&mut self, c: BanChange) {
        if let Some(v) = &mut self.changes {
            v.push(c);
        }
    }

    /// Notes that the replicated list was asked for at `now` (call it
    /// when asking): bans placed after are kept by the next
    /// [`import`](Self::import) even though the list lacks them.
    pub fn load_asked(&mut self, now: Instant) {
        self.load_asked = Some(now);
    }

    /// Takes the replicated ban list (at start, or on an HA takeover) as
    /// the truth: installs the bans still running that are not in force
    /// here (never a `never_ban` one), and lifts the ones in force here,
    /// placed before the list was asked for, that it no longer holds
    /// (lifted or ended on the other node). Returns how many were installed.
    pub fn import(&mut self, records: &[BanRecord], now: Instant) -> usize {
        let unix_now = self.unix(now);
        let mut n = 0;
        let mut held = std::collections::HashSet::new();
        for r in records {
            let Ok(net) = r.net.parse::<IpNet>().map(canonical) else { continue };
            if r.until <= unix_now {
                continue;
            }
            held.insert(net);
            if self.bans.get(&net).is_some_and(|b| b.until_unix >= r.until) {
                continue;
            }
            if self.cfg.never_ban.iter().any(|n| n.contains(&net.network()) || net.contains(&n.network())) {
                continue;
            }
            let ban = Ban {
                net,
                reason: Reason::parse(&r.reason),
                placed: now,
                // A corrupt end time in Redis must not overflow the clock.
                until: now
                    .checked_add(Duration::from_secs(r.until - unix_now).min(self.cfg.max_ban_time.saturating_mul(4)))
                    .unwrap_or(now),
                until_unix: r.until,
                offences: r.offences.max(1),
            };
            self.bans.insert(ban);
            self.enforcer.enforce(&to_prefix(&net));
            self.shared.add(net);
            n += 1;
        }
        let asked = self.load_asked.take().unwrap_or(now);
        let gone: Vec<IpNet> =
            self.bans.list().iter().filter(|b| b.placed < asked && !held.contains(&b.net)).map(|b| b.net).collect();
        for net in &gone {
            self.bans.remove(net);
            self.enforcer.lift(&to_prefix(net));
            self.shared.remove(*net);
        }
        self.metrics.guard.active.store(self.bans.len() as u64, Relaxed);
        if n > 0 || !gone.is_empty() {
            tracing::info!(installed = n, lifted = gone.len(), "guard: replicated ban list applied");
        }
        n
    }
}

/// The replicated form of a ban.
#[must_use]
pub fn record(b: &Ban) -> BanRecord {
    BanRecord { net: b.net.to_string(), reason: b.reason.as_str().into(), until: b.until_unix, offences: b.offences }
}

#[cfg(test)]
mod tests;
