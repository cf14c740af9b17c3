//! High availability: an active/standby pair sharing call state through
//! Redis, with a fenced lease deciding who holds the virtual IP.
//!
//! - **Lease.** `<prefix>:lease` holds `<node>:<token>` with a PX expiry.
//!   The token comes from `INCR <prefix>:epoch` when a node takes the lease,
//!   so it only grows. The active node renews it every check interval.
//!   Every replicated write runs in a Lua script that first checks the lease
//!   value, so a node that lost the lease cannot overwrite the new active's
//!   state (fencing).
//! - **State.** Dialogs (`<prefix>:dialogs`) and media sessions
//!   (`<prefix>:media`) are hashes of JSON records keyed by Call-ID, and
//!   registrations (`<prefix>:bindings`) keyed by address-of-record. Each
//!   change is also appended to the stream `<prefix>:log`, which the standby
//!   reads to keep a warm copy. Writes are coalesced per call and sent in
//!   batches from this thread, never from the packet or signaling path.
//! - **Takeover.** When the lease is free and the peer does not say it is
//!   active, the standby takes the lease, installs every session on the
//!   same ports (sockets bound with `IP_FREEBIND`), adds the virtual IP and
//!   announces it (gratuitous ARP or unsolicited NA).
//! - **Stepping down.** An active node that loses the lease, or cannot
//!   renew it in time while the peer can reach Redis (or is silent), removes
//!   the address before the lease can expire for the peer. If the peer says
//!   Redis is down for it too, Redis itself failed: the active keeps serving
//!   (degraded, no replication) and writes everything again when Redis is back.
//! - **Heartbeats.** The nodes exchange a UDP datagram every check interval
//!   with their role and whether they reach Redis; planned handover
//!   (`sbc ctl failover`) runs over the same socket.

pub mod redis;
pub mod vip;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use mio::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_relay::ha::SessionRecord;
use media_relay::relay::Relay;

use redis::{Redis, Reply};
use vip::Vip;

/// `[ha]` settings.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// This node's name (unique in the pair).
    pub node_id: String,
    /// Redis server.
    pub redis: SocketAddr,
    /// Key prefix in Redis.
    pub key_prefix: String,
    /// The virtual IP, its prefix and interface.
    pub vip: Vip,
    /// Where this node listens for the peer's heartbeats.
    pub heartbeat: SocketAddr,
    /// The peer's heartbeat address.
    pub peer: SocketAddr,
    /// Lease time.
    pub lease: Duration,
    /// Check (renew, heartbeat, takeover attempt) interval.
    pub interval: Duration,
    /// How often the statistics of every session are written again.
    pub stats_sync: Duration,
}

/// Signaling thread → HA thread.
#[derive(Debug)]
pub enum ToHa {
    /// Dialog and registration changes: `Some(json)` live, `None` ended.
    Changes {
        /// By Call-ID.
        dialogs: Vec<(String, Option<String>)>,
        /// By address-of-record.
        bindings: Vec<(String, Option<String>)>,
    },
    /// `sbc ctl failover`: the reply goes to the sender.
    Failover(Sender<String>),
    /// `sbc ctl ha`: status text.
    Status(Sender<String>),
}

/// HA thread → signaling thread.
#[derive(Debug)]
pub enum ToProxy {
    /// Install these dialog and registration records; answer with the
    /// number of dialogs.
    Import {
        /// Dialog records.
        dialogs: Vec<String>,
        /// `(aor, bindings)` records.
        bindings: Vec<(String, String)>,
        /// Where the count goes.
        reply: Sender<usize>,
    },
    /// Serve (true) or stand by (false). Standing down forgets every call.
    SetActive(bool),
    /// Every live dialog and registration, for a full write after Redis
    /// comes back.
    DumpAll(Sender<Dump>),
}

/// Everything the signaling thread replicates: `(key, json)` pairs.
#[derive(Debug, Default)]
pub struct Dump {
    /// Dialogs by Call-ID.
    pub dialogs: Vec<(String, String)>,
    /// Registrations by AOR.
    pub bindings: Vec<(String, String)>,
}

/// Role of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the lease and the virtual IP.
    Active,
    /// Keeps a warm copy and waits.
    Standby,
}

/// What the exporter and `sbc ctl ha` read.
#[derive(Debug, Default)]
pub struct HaStatus {
    active: AtomicBool,
    redis_up: AtomicBool,
    degraded: AtomicBool,
    token: AtomicU64,
    takeovers: AtomicU64,
    releases: AtomicU64,
    writes: AtomicU64,
    write_errors: AtomicU64,
    pending: AtomicU64,
    warm_dialogs: AtomicU64,
    warm_sessions: AtomicU64,
    last_takeover_ms: AtomicU64,
}

impl HaStatus {
    /// Prometheus text.
    #[must_use]
    pub fn render(&self) -> String {
        let flag = |b: &AtomicBool| u64::from(b.load(Relaxed));
        let rows: [(&str, &str, &str, u64); 12] = [
            ("sbc_ha_active", "gauge", "1 when this node holds the lease and the virtual IP.", flag(&self.active)),
            ("sbc_ha_redis_up", "gauge", "1 when the last Redis operation succeeded.", flag(&self.redis_up)),
            (
                "sbc_ha_degraded",
                "gauge",
                "1 when active without replication (Redis down for both nodes).",
                flag(&self.degraded),
            ),
            (
                "sbc_ha_lease_token",
                "gauge",
                "Fencing token of the lease this node holds (0: none).",
                self.token.load(Relaxed),
            ),
            ("sbc_ha_takeovers_total", "counter", "Times this node became active.", self.takeovers.load(Relaxed)),
            (
                "sbc_ha_releases_total",
                "counter",
                "Times this node gave up the virtual IP.",
                self.releases.load(Relaxed),
            ),
            ("sbc_ha_replicated_writes_total", "counter", "Records written to Redis.", self.writes.load(Relaxed)),
            (
                "sbc_ha_write_errors_total",
                "counter",
                "Batches that could not be written to Redis.",
                self.write_errors.load(Relaxed),
            ),
            ("sbc_ha_pending_records", "gauge", "Changes waiting to be written to Redis.", self.pending.load(Relaxed)),
            ("sbc_ha_warm_dialogs", "gauge", "Dialogs in the standby's warm copy.", self.warm_dialogs.load(Relaxed)),
            (
                "sbc_ha_warm_sessions",
                "gauge",
                "Media sessions in the standby's warm copy.",
                self.warm_sessions.load(Relaxed),
            ),
            (
                "sbc_ha_last_takeover_ms",
                "gauge",
                "Milliseconds the last takeover took, from taking the lease to announcing the address.",
                self.last_takeover_ms.load(Relaxed),
            ),
        ];
        let mut o = String::new();
        for (name, kind, help, v) in rows {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        o
    }
}

const ACQUIRE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  if ARGV[3] == '1' and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(string.sub(cur, #ARGV[1] + 2))
  end
  return 0
end
local t = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. t, 'PX', ARGV[2])
return t
";

const WRITE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[5])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', '100000', '*', 'k', 'reset', 'id', '', 'v', '')
end
for i = 4, #ARGV, 3 do
  local h = KEYS[2]
  if ARGV[i] == 'm' then h = KEYS[3] elseif ARGV[i] == 'b' then h = KEYS[5] end
  if ARGV[i + 2] == '' then redis.call('HDEL', h, ARGV[i + 1]) else redis.call('HSET', h, ARGV[i + 1], ARGV[i + 2]) end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', '100000', '*', 'k', ARGV[i], 'id', ARGV[i + 1], 'v', ARGV[i + 2])
end
return 1
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Records per write script call.
const BATCH: usize = 500;
const TICK: Duration = Duration::from_millis(10);

/// What the peer last said.
#[derive(Debug, Clone, Copy)]
struct PeerView {
    at: Instant,
    active: bool,
    redis_ok: bool,
    token: u64,
}

/// Kind of a replicated record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Dialog,
    Media,
    Binding,
}

impl Kind {
    fn tag(self) -> &'static [u8] {
        match self {
            Self::Dialog => b"d",
            Self::Media => b"m",
            Self::Binding => b"b",
        }
    }
}

/// Links to the rest of the process.
pub struct Links {
    /// The embedded relay.
    pub relay: Arc<Relay>,
    /// Commands to the signaling thread.
    pub to_proxy: Sender<ToProxy>,
    /// Wakes the signaling thread's poll.
    pub wake_proxy: Arc<dyn Fn() + Send + Sync>,
    /// Changes and requests from the signaling thread.
    pub from_proxy: Receiver<ToHa>,
    /// Set when the process stops.
    pub shutdown: Arc<AtomicBool>,
}

/// The HA state machine of one node.
pub struct Node {
    cfg: HaConfig,
    links: Links,
    status: Arc<HaStatus>,
    redis: Redis,
    hb: UdpSocket,
    announcer: vip::Announcer,
    /// Wakes the loop when a heartbeat or handover message arrives.
    poll: mio::Poll,
    role: Role,
    token: u64,
    /// Active: when the last successful renewal was sent.
    renewed_at: Option<Instant>,
    next_renew: Instant,
    next_hb: Instant,
    next_stats: Instant,
    next_acquire: Instant,
    pending: HashMap<(Kind, String), Option<String>>,
    /// Active: Redis was unreachable; write everything again when it is back.
    resync: bool,
    degraded_logged: bool,
    peer: Option<PeerView>,
    /// Standby: the warm copy and the stream position it reflects.
    warm_dialogs: HashMap<String, String>,
    warm_media: HashMap<String, String>,
    warm_bindings: HashMap<String, String>,
    stream_pos: Option<String>,
    /// Standby: sessions installed for a planned handover ("prepare").
    prepared_at: Option<Instant>,
    /// Re-announcements of the address after a takeover.
    reannounce: Vec<Instant>,
}

fn args(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

impl Node {
    /// A node; binds the heartbeat socket.
    ///
    /// # Errors
    /// When the heartbeat address cannot be bound.
    pub fn new(cfg: HaConfig, links: Links, status: Arc<HaStatus>) -> std::io::Result<Self> {
        let std_hb = std::net::UdpSocket::bind(cfg.heartbeat)?;
        std_hb.set_nonblocking(true)?;
        let mut hb = UdpSocket::from_std(std_hb);
        let poll = mio::Poll::new()?;
        let announcer = vip::Announcer::new(cfg.vip.clone())?;
        poll.registry().register(&mut hb, mio::Token(0), mio::Interest::READABLE)?;
        let now = Instant::now();
        let redis = Redis::new(cfg.redis, cfg.interval.clamp(Duration::from_millis(20), Duration::from_millis(500)));
        Ok(Self {
            links,
            status,
            redis,
            hb,
            announcer,
            poll,
            role: Role::Standby,
            token: 0,
            renewed_at: None,
            next_renew: now,
            next_hb: now,
            next_stats: now + cfg.stats_sync,
            // A starting node listens for a peer's heartbeat before it
            // competes for the lease.
            next_acquire: now + cfg.interval * 2,
            pending: HashMap::new(),
            resync: false,
            degraded_logged: false,
            peer: None,
            warm_dialogs: HashMap::new(),
            warm_media: HashMap::new(),
            warm_bindings: HashMap::new(),
            stream_pos: None,
            prepared_at: None,
            reannounce: Vec::new(),
            cfg,
        })
    }

    fn key(&self, k: &str) -> Vec<u8> {
        format!("{}:{k}", self.cfg.key_prefix).into_bytes()
    }

    fn lease_value(&self) -> Vec<u8> {
        format!("{}:{}", self.cfg.node_id, self.token).into_bytes()
    }

    fn set_redis_up(&mut self, up: bool) {
        let was = self.status.redis_up.swap(up, Relaxed);
        if was && !up {
            tracing::warn!(redis = %self.cfg.redis, "HA: Redis unreachable");
        } else if !was && up {
            tracing::info!(redis = %self.cfg.redis, "HA: Redis reachable");
        }
    }

    /// Runs until shutdown.
    pub fn run(mut self) {
        tracing::info!(node = %self.cfg.node_id, vip = %self.cfg.vip.addr, dev = %self.cfg.vip.dev, lease_ms = self.cfg.lease.as_millis() as u64, "HA: starting as standby");
        match self.cfg.vip.remove() {
            Ok(true) => tracing::warn!(vip = %self.cfg.vip.addr, "HA: removed a virtual IP left from an earlier run"),
            Ok(false) => {}
            Err(e) => tracing::error!("HA: {e}"),
        }
        self.links.relay.track_changes();
        let _ = self.links.to_proxy.send(ToProxy::SetActive(false));
        (self.links.wake_proxy)();
        while !self.links.shutdown.load(Relaxed) {
            let now = Instant::now();
            self.read_heartbeats(now);
            self.read_proxy(now);
            match self.role {
                Role::Active => self.active_tick(now),
                Role::Standby => self.standby_tick(now),
            }
            if now >= self.next_hb {
                self.send_heartbeat();
                self.next_hb = now + self.cfg.interval;
            }
            if self.role != Role::Active {
                // Never announce an address this node gave up.
                self.reannounce.clear();
            }
            self.reannounce.retain(|t| {
                if *t <= now {
                    if let Err(e) = self.announcer.announce() {
                        tracing::warn!(error = %e, "HA: announcing the virtual IP failed");
                    }
                    false
                } else {
                    true
                }
            });
            self.status.pending.store(self.pending.len() as u64, Relaxed);
            // Sleep one tick, or less when the peer says something.
            let mut events = mio::Events::with_capacity(4);
            if self.poll.poll(&mut events, Some(TICK)).is_err() {
                std::thread::sleep(TICK);
            }
        }
        if self.role == Role::Active {
            // An orderly stop hands the address back at once.
            let _ = self.flush(Instant::now(), false);
            let _ = self.cfg.vip.remove();
            let _ = self.redis.cmd(&[b"EVAL", RELEASE.as_bytes(), b"1", &self.key("lease"), &self.lease_value()]);
            tracing::info!("HA: stopped; virtual IP released");
        }
    }

    fn send_heartbeat(&self) {
        let msg = format!(
            "xsbc-ha hb {} {} {} {}",
            self.cfg.node_id,
            if self.role == Role::Active { "active" } else { "standby" },
            u8::from(self.status.redis_up.load(Relaxed)),
            self.token
        );
        self.send_peer(&msg);
    }

    fn send_peer(&self, msg: &str) {
        if let Err(e) = self.hb.send_to(msg.as_bytes(), self.cfg.peer) {
            tracing::debug!(error = %e, "HA: heartbeat send failed");
        }
    }

    fn read_heartbeats(&mut self, now: Instant) {
        let mut buf = [0u8; 512];
        while let Ok((n, src)) = self.hb.recv_from(&mut buf) {
            if src.ip() != self.cfg.peer.ip() {
                continue;
            }
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let w: Vec<&str> = text.split_whitespace().collect();
            match w.as_slice() {
                ["xsbc-ha", "hb", _node, role, redis, token] => {
                    let token = token.parse().unwrap_or(0);
                    self.peer = Some(PeerView { at: now, active: *role == "active", redis_ok: *redis == "1", token });
                    if self.role == Role::Active && *role == "active" && token > self.token {
                        // Never two active nodes: the newer lease wins.
                        self.release("the peer holds a newer lease");
                    }
                }
                ["xsbc-ha", "prepare"] if self.role == Role::Standby => self.prepare(now),
                ["xsbc-ha", "go"] if self.role == Role::Standby => {
                    tracing::info!("HA: the peer handed over; taking over");
                    self.next_acquire = now;
                    self.try_acquire(now, true);
                }
                ["xsbc-ha", "ready"] | ["xsbc-ha", "go"] | ["xsbc-ha", "prepare"] => {}
                _ => tracing::debug!(%src, "HA: unknown heartbeat message"),
            }
        }
    }

    fn peer_active(&self, now: Instant) -> bool {
        self.peer.is_some_and(|p| p.active && now.saturating_duration_since(p.at) < self.cfg.lease)
    }

    fn read_proxy(&mut self, now: Instant) {
        while let Ok(m) = self.links.from_proxy.try_recv() {
            match m {
                ToHa::Changes { dialogs, bindings } => {
                    if self.role == Role::Active {
                        for (id, v) in dialogs {
                            self.pending.insert((Kind::Dialog, id), v);
                        }
                        for (aor, v) in bindings {
                            self.pending.insert((Kind::Binding, aor), v);
                        }
                    }
                }
                ToHa::Failover(reply) => {
                    let r = self.handover(now);
                    let _ = reply.send(r);
                }
                ToHa::Status(reply) => {
                    let _ = reply.send(self.status_text(now));
                }
            }
        }
    }

    fn status_text(&self, now: Instant) -> String {
        let peer = match self.peer {
            Some(p) => format!(
                "{} (token {}, {} ms ago, redis {})",
                if p.active { "active" } else { "standby" },
                p.token,
                now.saturating_duration_since(p.at).as_millis(),
                if p.redis_ok { "up" } else { "down" }
            ),
            None => "never heard".into(),
        };
        format!(
            "node {} role {} token {} redis {}{} vip {} {} peer {}\n",
            self.cfg.node_id,
            if self.role == Role::Active { "active" } else { "standby" },
            self.token,
            if self.status.redis_up.load(Relaxed) { "up" } else { "down" },
            if self.status.degraded.load(Relaxed) { " (degraded)" } else { "" },
            self.cfg.vip.addr,
            if self.cfg.vip.held() { "held" } else { "not held" },
            peer
        )
    }

    // ---- active ----

    fn collect_relay(&mut self, now: Instant) {
        for (id, rec) in self.links.relay.export_changes() {
            let v = rec.and_then(|r| serde_json::to_string(&r).ok());
            self.pending.insert((Kind::Media, id), v);
        }
        if now >= self.next_stats {
            self.next_stats = now + self.cfg.stats_sync;
            for r in self.links.relay.export_all() {
                if let Ok(v) = serde_json::to_string(&r) {
                    self.pending.insert((Kind::Media, r.call_id.clone()), Some(v));
                }
            }
        }
    }

    fn active_tick(&mut self, now: Instant) {
        self.collect_relay(now);
        let renew_due = now >= self.next_renew;
        if self.resync {
            if renew_due {
                self.next_renew = now + self.cfg.interval;
                self.try_resync(now);
            }
            return;
        }
        if !renew_due && self.pending.is_empty() {
            return;
        }
        if renew_due {
            self.next_renew = now + self.cfg.interval;
        }
        match self.flush(now, false) {
            Ok(true) => {}
            Ok(false) => {
                self.release("another node holds the lease");
            }
            Err(e) => {
                tracing::debug!(error = %e, "HA: renewing the lease failed");
                self.set_redis_up(false);
                self.redis_lost(now);
            }
        }
    }

    /// Writes the pending changes (renewing the lease with them). `Ok(false)`
    /// when the lease is no longer ours.
    fn flush(&mut self, now: Instant, reset: bool) -> std::io::Result<bool> {
        let mut ops: Vec<((Kind, String), Option<String>)> = self.pending.drain().collect();
        // Dialog records before media records does not matter; keep batches bounded.
        let keys = [self.key("lease"), self.key("dialogs"), self.key("media"), self.key("log"), self.key("bindings")];
        let lease = self.lease_value();
        let ms = self.cfg.lease.as_millis().to_string().into_bytes();
        let mut first = true;
        let mut result = Ok(true);
        let sent_at = now;
        loop {
            let take = ops.len().min(BATCH);
            let chunk: Vec<_> = ops.drain(..take).collect();
            let mut cmd: Vec<Vec<u8>> = args(&[b"EVAL", WRITE.as_bytes(), b"5"]);
            cmd.extend(keys.iter().cloned());
            cmd.push(lease.clone());
            cmd.push(ms.clone());
            cmd.push(if reset && first { b"1".to_vec() } else { b"0".to_vec() });
            for ((k, id), v) in &chunk {
                cmd.push(k.tag().to_vec());
                cmd.push(id.clone().into_bytes());
                cmd.push(v.clone().unwrap_or_default().into_bytes());
            }
            first = false;
            match self.redis.pipeline(&[cmd]) {
                Ok(r) => match r.first() {
                    Some(Reply::Int(1)) => {
                        self.status.writes.fetch_add(chunk.len() as u64, Relaxed);
                    }
                    Some(Reply::Int(_)) => {
                        result = Ok(false);
                        break;
                    }
                    other => {
                        self.status.write_errors.fetch_add(1, Relaxed);
                        tracing::warn!(reply = ?other, "HA: Redis refused a write");
                        for (k, v) in chunk {
                            self.pending.entry(k).or_insert(v);
                        }
                        result = Err(std::io::Error::other("write refused"));
                        break;
                    }
                },
                Err(e) => {
                    self.status.write_errors.fetch_add(1, Relaxed);
                    // Keep them for later (newer changes win).
                    for (k, v) in chunk.into_iter().chain(ops.drain(..)) {
                        self.pending.entry(k).or_insert(v);
                    }
                    result = Err(e);
                    break;
                }
            }
            if ops.is_empty() {
                break;
            }
        }
        if let Ok(true) = result {
            self.renewed_at = Some(sent_at);
            self.set_redis_up(true);
            if self.status.degraded.swap(false, Relaxed) {
                tracing::info!("HA: replication resumed");
            }
            self.degraded_logged = false;
        }
        result
    }

    /// Renewal failed. Step down before the lease can expire for the peer,
    /// unless the peer cannot reach Redis either (Redis itself is down).
    fn redis_lost(&mut self, now: Instant) {
        self.resync = true;
        let since = self.renewed_at.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        let margin = self.cfg.interval.max(self.cfg.lease / 5);
        if since + margin < self.cfg.lease {
            return;
        }
        let peer_says_redis_down =
            self.peer.is_some_and(|p| !p.redis_ok && now.saturating_duration_since(p.at) < self.cfg.interval * 3);
        if peer_says_redis_down {
            if !self.degraded_logged {
                self.degraded_logged = true;
                self.status.degraded.store(true, Relaxed);
                tracing::error!("HA: Redis is down for both nodes; serving calls without replication (degraded)");
            }
        } else {
            self.release("cannot renew the lease and the peer can reach Redis (or is silent)");
        }
    }

    /// Redis is back after an outage: take the lease again (it may have
    /// expired or been lost with a restart) and write everything.
    fn try_resync(&mut self, now: Instant) {
        let since = self.renewed_at.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        match self.acquire(true) {
            Ok(0) => self.release("the lease is held by another node after the Redis outage"),
            Ok(t) => {
                self.token = t;
                self.status.token.store(t, Relaxed);
                let (tx, rx) = std::sync::mpsc::channel();
                let _ = self.links.to_proxy.send(ToProxy::DumpAll(tx));
                (self.links.wake_proxy)();
                let dump: Dump = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
                self.pending.clear();
                for (id, v) in dump.dialogs {
                    self.pending.insert((Kind::Dialog, id), Some(v));
                }
                for (aor, v) in dump.bindings {
                    self.pending.insert((Kind::Binding, aor), Some(v));
                }
                let _ = self.links.relay.export_changes();
                for r in self.links.relay.export_all() {
                    if let Ok(v) = serde_json::to_string(&r) {
                        self.pending.insert((Kind::Media, r.call_id.clone()), Some(v));
                    }
                }
                let n = self.pending.len();
                match self.flush(now, true) {
                    Ok(true) => {
                        self.resync = false;
                        tracing::info!(records = n, token = t, "HA: Redis back; lease renewed and state written again");
                    }
                    Ok(false) => self.release("lost the lease during resync"),
                    Err(e) => tracing::debug!(error = %e, "HA: resync write failed"),
                }
            }
            Err(_) => {
                self.set_redis_up(false);
                if self.status.degraded.load(Relaxed) {
                    // Still degraded: but if the peer now reaches Redis it
                    // may take over, so the split-brain rule applies again.
                    let peer_ok = self.peer.is_some_and(|p| p.redis_ok);
                    if peer_ok && since > self.cfg.lease {
                        self.release("the peer reaches Redis and this node does not");
                    }
                } else {
                    self.redis_lost(now);
                }
            }
        }
    }

    fn acquire(&mut self, adopt: bool) -> std::io::Result<u64> {
        let r = self.redis.cmd(&[
            b"EVAL",
            ACQUIRE.as_bytes(),
            b"2",
            &self.key("lease"),
            &self.key("epoch"),
            self.cfg.node_id.as_bytes(),
            self.cfg.lease.as_millis().to_string().as_bytes(),
            if adopt { b"1" } else { b"0" },
        ])?;
        match r {
            Reply::Int(t) => Ok(u64::try_from(t).unwrap_or(0)),
            other => Err(std::io::Error::other(format!("unexpected reply {other:?}"))),
        }
    }

    /// Gives up the address and every call (they belong to the new active).
    fn release(&mut self, why: &str) {
        if let Err(e) = self.cfg.vip.remove() {
            tracing::error!("HA: {e}");
        }
        tracing::warn!(reason = why, vip = %self.cfg.vip.addr, "HA: released the virtual IP; now standby");
        self.become_standby();
    }

    /// The standby's state, after the address is gone: no token, nothing
    /// pending, the proxy and the relay emptied (their calls belong to the
    /// new active), a heartbeat saying so.
    fn become_standby(&mut self) {
        self.role = Role::Standby;
        self.token = 0;
        self.status.token.store(0, Relaxed);
        self.status.active.store(false, Relaxed);
        self.status.degraded.store(false, Relaxed);
        self.status.releases.fetch_add(1, Relaxed);
        self.pending.clear();
        self.reannounce.clear();
        self.resync = false;
        self.renewed_at = None;
        self.stream_pos = None;
        let _ = self.links.to_proxy.send(ToProxy::SetActive(false));
        (self.links.wake_proxy)();
        self.links.relay.clear();
        let _ = self.links.relay.export_changes();
        self.next_acquire = Instant::now() + self.cfg.lease;
        self.send_heartbeat();
    }

    /// Planned handover to the peer.
    fn handover(&mut self, now: Instant) -> String {
        if self.role != Role::Active {
            return "error: this node is not active\n".into();
        }
        if self.peer.is_none_or(|p| now.saturating_duration_since(p.at) > self.cfg.lease || !p.redis_ok) {
            return "error: the peer is not heard from or cannot reach Redis\n".into();
        }
        self.collect_relay(now);
        if !matches!(self.flush(now, false), Ok(true)) {
            return "error: cannot write the state to Redis\n".into();
        }
        self.send_peer("xsbc-ha prepare");
        let t0 = Instant::now();
        let mut buf = [0u8; 512];
        let mut ready = false;
        while t0.elapsed() < Duration::from_secs(3) {
            // Keep replicating while the peer installs.
            self.collect_relay(Instant::now());
            let _ = self.flush(Instant::now(), false);
            if let Ok((n, src)) = self.hb.recv_from(&mut buf) {
                if src.ip() == self.cfg.peer.ip() && &buf[..n] == b"xsbc-ha ready" {
                    ready = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if !ready {
            return "error: the peer did not get ready within 3 s; still active\n".into();
        }
        let prepared = t0.elapsed();
        self.collect_relay(Instant::now());
        if !matches!(self.flush(Instant::now(), false), Ok(true)) {
            return "error: cannot write the state to Redis; still active\n".into();
        }
        let t1 = Instant::now();
        if let Err(e) = self.cfg.vip.remove() {
            tracing::error!("HA: {e}");
        }
        let _ = self.redis.cmd(&[b"EVAL", RELEASE.as_bytes(), b"1", &self.key("lease"), &self.lease_value()]);
        for _ in 0..3 {
            self.send_peer("xsbc-ha go");
        }
        self.become_standby();
        tracing::info!(prepare_ms = prepared.as_millis() as u64, "HA: handed over to the peer (planned)");
        format!(
            "ok: handed over to {} (peer ready after {} ms, address released {} ms later)\n",
            self.cfg.peer,
            prepared.as_millis(),
            t1.saturating_duration_since(t0 + prepared).as_millis()
        )
    }

    // ---- standby ----

    fn standby_tick(&mut self, now: Instant) {
        if self.stream_pos.is_none() {
            match self.load_warm() {
                Ok(()) => self.set_redis_up(true),
                Err(e) => {
                    tracing::debug!(error = %e, "HA: loading the warm copy failed");
                    self.set_redis_up(false);
                }
            }
        } else if let Err(e) = self.read_stream() {
            tracing::debug!(error = %e, "HA: reading the change stream failed");
            self.set_redis_up(false);
            self.stream_pos = None;
        }
        if let Some(at) = self.prepared_at {
            if now.saturating_duration_since(at) > Duration::from_secs(5) {
                tracing::warn!("HA: planned handover did not complete; dropping the prepared sessions");
                self.prepared_at = None;
                let _ = self.links.to_proxy.send(ToProxy::SetActive(false));
                (self.links.wake_proxy)();
                self.links.relay.clear();
            }
        }
        if now >= self.next_acquire {
            self.next_acquire = now + self.cfg.interval;
            if !self.peer_active(now) {
                self.try_acquire(now, false);
            }
        }
    }

    fn try_acquire(&mut self, now: Instant, _planned: bool) {
        match self.acquire(false) {
            Ok(0) => {}
            Ok(t) => {
                self.set_redis_up(true);
                self.token = t;
                self.status.token.store(t, Relaxed);
                self.take_over(now);
            }
            Err(e) => {
                tracing::debug!(error = %e, "HA: lease attempt failed");
                self.set_redis_up(false);
            }
        }
    }

    fn load_warm(&mut self) -> std::io::Result<()> {
        let r = self.redis.pipeline(&[
            args(&[b"XREVRANGE", &self.key("log"), b"+", b"-", b"COUNT", b"1"]),
            args(&[b"HGETALL", &self.key("dialogs")]),
            args(&[b"HGETALL", &self.key("media")]),
            args(&[b"HGETALL", &self.key("bindings")]),
        ])?;
        let pos = r[0].items().first().and_then(|e| e.items().first()).and_then(Reply::as_text);
        let pairs = |rep: &Reply| -> HashMap<String, String> {
            rep.items().chunks(2).filter_map(|kv| Some((kv.first()?.as_text()?, kv.get(1)?.as_text()?))).collect()
        };
        self.warm_dialogs = pairs(&r[1]);
        self.warm_media = pairs(&r[2]);
        self.warm_bindings = pairs(&r[3]);
        self.stream_pos = Some(pos.unwrap_or_else(|| "0-0".into()));
        self.update_warm_gauges();
        tracing::info!(dialogs = self.warm_dialogs.len(), sessions = self.warm_media.len(), "HA: warm copy loaded");
        Ok(())
    }

    fn update_warm_gauges(&self) {
        self.status.warm_dialogs.store(self.warm_dialogs.len() as u64, Relaxed);
        self.status.warm_sessions.store(self.warm_media.len() as u64, Relaxed);
    }

    /// Applies new stream entries to the warm copy. Returns how many.
    fn read_stream(&mut self) -> std::io::Result<usize> {
        let mut total = 0;
        loop {
            let pos = self.stream_pos.clone().unwrap_or_else(|| "0-0".into());
            let r = self.redis.cmd(&[b"XREAD", b"COUNT", b"1000", b"STREAMS", &self.key("log"), pos.as_bytes()])?;
            let entries = r.items().first().and_then(|s| s.items().get(1)).map(Reply::items).unwrap_or_default();
            if entries.is_empty() {
                break;
            }
            for e in entries {
                let Some(id) = e.items().first().and_then(Reply::as_text) else { continue };
                let fields: HashMap<String, String> = e
                    .items()
                    .get(1)
                    .map(Reply::items)
                    .unwrap_or_default()
                    .chunks(2)
                    .filter_map(|kv| Some((kv.first()?.as_text()?, kv.get(1)?.as_text()?)))
                    .collect();
                let (k, cid, v) = (
                    fields.get("k").map_or("", String::as_str),
                    fields.get("id").cloned().unwrap_or_default(),
                    fields.get("v").cloned().unwrap_or_default(),
                );
                let map = match k {
                    "d" => Some(&mut self.warm_dialogs),
                    "m" => Some(&mut self.warm_media),
                    "b" => Some(&mut self.warm_bindings),
                    "reset" => {
                        self.warm_dialogs.clear();
                        self.warm_media.clear();
                        self.warm_bindings.clear();
                        None
                    }
                    _ => None,
                };
                if let Some(map) = map {
                    if v.is_empty() {
                        map.remove(&cid);
                    } else {
                        map.insert(cid, v);
                    }
                }
                self.stream_pos = Some(id);
                total += 1;
            }
            if entries.len() < 1000 {
                break;
            }
        }
        if total > 0 {
            self.update_warm_gauges();
        }
        Ok(total)
    }

    /// Installs the warm copy: media sessions in the relay, dialogs in the
    /// proxy. Returns (sessions, dialogs) installed.
    fn install_warm(&mut self) -> (usize, usize) {
        let mut sessions = 0;
        for (id, text) in &self.warm_media {
            match serde_json::from_str::<SessionRecord>(text) {
                Ok(rec) => match self.links.relay.import(&rec) {
                    Ok(true) => sessions += 1,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(call_id = %id, error = %e, "HA: could not install a media session"),
                },
                Err(e) => tracing::warn!(call_id = %id, error = %e, "HA: media record does not parse"),
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let dialogs: Vec<String> = self.warm_dialogs.values().cloned().collect();
        let bindings: Vec<(String, String)> = self.warm_bindings.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let _ = self.links.to_proxy.send(ToProxy::Import { dialogs, bindings, reply: tx });
        (self.links.wake_proxy)();
        let dialogs = rx.recv_timeout(Duration::from_secs(2)).unwrap_or(0);
        (sessions, dialogs)
    }

    /// Adds the virtual IP and announces it.
    fn claim_address(&mut self) {
        if let Err(e) = self.cfg.vip.add() {
            tracing::error!("HA: {e}");
        }
        if let Err(e) = self.announcer.announce() {
            tracing::warn!(error = %e, "HA: announcing the virtual IP failed");
        }
    }

    /// Planned handover, standby side: install everything, say ready.
    fn prepare(&mut self, now: Instant) {
        let caught_up = if self.stream_pos.is_none() { self.load_warm() } else { self.read_stream().map(|_| ()) };
        if let Err(e) = caught_up {
            tracing::warn!(error = %e, "HA: prepare: reading the change stream failed");
        }
        let (s, d) = self.install_warm();
        tracing::info!(sessions = s, dialogs = d, "HA: prepared for a planned handover");
        self.prepared_at = Some(now);
        self.send_peer("xsbc-ha ready");
    }

    fn take_over(&mut self, _now: Instant) {
        let t0 = Instant::now();
        // A planned handover installed the sessions already ("prepare"):
        // claim the address first, then pick up what changed since.
        let planned = self.prepared_at.take().is_some();
        if planned {
            self.claim_address();
        }
        // The last changes the old active wrote.
        if self.stream_pos.is_none() {
            if let Err(e) = self.load_warm() {
                tracing::error!(error = %e, "HA: taking over without a warm copy");
            }
        }
        if let Err(e) = self.read_stream() {
            tracing::warn!(error = %e, "HA: catching up the change stream failed");
        }
        let t_caught_up = Instant::now();
        let (sessions, dialogs) = self.install_warm();
        let t_installed = Instant::now();
        let _ = self.links.to_proxy.send(ToProxy::SetActive(true));
        (self.links.wake_proxy)();
        if !planned {
            self.claim_address();
        }
        let done = Instant::now();
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
        tracing::info!(
            planned,
            catch_up_ms = ms(t0, t_caught_up),
            install_ms = ms(t_caught_up, t_installed),
            total_ms = ms(t0, done),
            "HA: takeover steps"
        );
        self.reannounce =
            vec![done + Duration::from_millis(100), done + Duration::from_millis(500), done + Duration::from_secs(2)];
        let ms = done.saturating_duration_since(t0).as_millis() as u64;
        self.role = Role::Active;
        self.renewed_at = Some(t0);
        self.next_renew = done;
        self.resync = false;
        self.status.active.store(true, Relaxed);
        self.status.takeovers.fetch_add(1, Relaxed);
        self.status.last_takeover_ms.store(ms, Relaxed);
        self.warm_dialogs.clear();
        self.warm_media.clear();
        self.warm_bindings.clear();
        self.stream_pos = None;
        self.update_warm_gauges();
        // The imported sessions are in Redis already.
        let _ = self.links.relay.export_changes();
        tracing::warn!(token = self.token, sessions, dialogs, takeover_ms = ms, vip = %self.cfg.vip.addr, "HA: took over; now active");
        self.send_heartbeat();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_every_series() {
        let s = HaStatus::default();
        s.active.store(true, Relaxed);
        s.takeovers.fetch_add(2, Relaxed);
        let text = s.render();
        assert!(text.contains("sbc_ha_active 1\n"));
        assert!(text.contains("sbc_ha_takeovers_total 2\n"));
        assert!(text.contains("sbc_ha_redis_up 0\n"));
        for name in ["sbc_ha_degraded", "sbc_ha_lease_token", "sbc_ha_pending_records", "sbc_ha_warm_sessions"] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }
}
