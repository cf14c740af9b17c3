//! High availability: an active/standby pair sharing call state through
//! Redis, with a fenced lease deciding who holds the virtual IPs (one per
//! realm, moved together).
//!
//! One [`Node`] runs on its own thread (`sbc-ha`) and owns everything in
//! this module: the Redis connection, the heartbeat socket, the lease, the
//! outgoing changes and the warm copy. Nothing here runs on the packet or
//! signaling path. The other threads meet it only through:
//!
//! - the [`ToHa`] / [`ToProxy`] channels to and from the signaling thread,
//!   which owns the proxy (dialogs, registrations) and applies what the HA
//!   thread asks for;
//! - the relay ([`Links::relay`]), whose session table the HA thread reads
//!   changes from and installs sessions into through its own API;
//! - [`HaStatus`], written by the HA thread and read by the metrics thread.
//!
//! The parts, one file each:
//!
//! - `lease`: the fenced lease in Redis (token from an `INCR`), renewing
//!   it, and what to do when it cannot be renewed. An active node that loses
//!   the lease, or cannot renew it in time while the peer can reach Redis (or
//!   is silent), removes the addresses before the lease can expire for the
//!   peer. If the peer says Redis is down for it too, Redis itself failed:
//!   the active keeps serving (degraded, no replication) and writes
//!   everything again when Redis is back.
//! - `replication`: dialogs, media sessions and registrations written to
//!   Redis by the active node, and the standby's warm copy read back from it.
//! - `heartbeat`: the UDP datagrams the nodes exchange every check
//!   interval (role, Redis reachability, token) and the planned-handover
//!   messages (`sbc ctl failover`).
//! - `takeover`: becoming active (installing the warm copy, claiming and
//!   announcing every address), handing over, stepping down.
//! - `status`: the `sbc_ha_*` metrics and the `sbc ctl ha` line.
//! - [`vip`]: the virtual IPs on their interfaces and their announcements;
//!   [`redis`]: the Redis connection (AUTH, TLS, Sentinel); [`secret`]: the digest
//!   nonce secret both nodes share.

mod heartbeat;
mod lease;
pub mod redis;
mod replication;
pub mod secret;
mod status;
mod takeover;
pub mod vip;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_relay::relay::Relay;

use heartbeat::{Heartbeat, Msg};
use lease::Lease;
use redis::Redis;
use replication::{Outbox, WarmCopy};
pub use status::HaStatus;
use vip::{Vip, VipSet};

/// `[ha]` settings.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// This node's name (unique in the pair).
    pub node_id: String,
    /// Redis: the server or the sentinels, AUTH and TLS.
    pub redis: redis::RedisTarget,
    /// Key prefix in Redis.
    pub key_prefix: String,
    /// The first realm's virtual IP (the only one without realms), its
    /// prefix and interface.
    pub vip: Vip,
    /// The other realms' virtual IPs, moved together with `vip`.
    pub realm_vips: Vec<RealmVip>,
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

impl HaConfig {
    /// Every virtual IP: `vip`, then each of `realm_vips`.
    pub fn vips(&self) -> impl Iterator<Item = &Vip> {
        std::iter::once(&self.vip).chain(self.realm_vips.iter().map(|r| &r.vip))
    }
}

/// The virtual IP of a realm other than the first (`ha.realm_vips`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmVip {
    /// The realm's name.
    pub realm: String,
    /// Its address, prefix and interface.
    pub vip: Vip,
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
    /// Holds the lease and the virtual IPs.
    Active,
    /// Keeps a warm copy and waits.
    Standby,
}

/// How long the loop sleeps when nothing wakes it.
const TICK: Duration = Duration::from_millis(10);

/// `SCHED_FIFO` priority of the HA thread: above normal threads, below
/// the relay workers' usual real-time priorities.
const HA_PRIORITY: i32 = 10;

/// The Redis keys of the pair, under the configured prefix.
struct Keys {
    lease: Vec<u8>,
    epoch: Vec<u8>,
    dialogs: Vec<u8>,
    media: Vec<u8>,
    log: Vec<u8>,
    bindings: Vec<u8>,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let key = |k: &str| format!("{prefix}:{k}").into_bytes();
        Self {
            lease: key("lease"),
            epoch: key("epoch"),
            dialogs: key("dialogs"),
            media: key("media"),
            log: key("log"),
            bindings: key("bindings"),
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

/// The HA state machine of one node. It runs on the HA thread and owns all
/// of its fields.
pub struct Node {
    cfg: HaConfig,
    links: Links,
    status: Arc<HaStatus>,
    redis: Redis,
    keys: Keys,
    hb: Heartbeat,
    /// Every virtual IP with its announcer.
    vips: VipSet,
    /// Wakes the loop when a heartbeat or handover message arrives.
    poll: mio::Poll,
    role: Role,
    lease: Lease,
    /// Active: changes waiting to be written.
    outbox: Outbox,
    degraded_logged: bool,
    /// Standby: the warm copy.
    warm: WarmCopy,
    /// Standby: sessions installed for a planned handover ("prepare").
    prepared_at: Option<Instant>,
    /// Re-announcements of the addresses after a takeover.
    reannounce: Vec<Instant>,
}

impl Node {
    /// A node; binds the heartbeat socket.
    ///
    /// # Errors
    /// When the heartbeat address cannot be bound.
    pub fn new(cfg: HaConfig, links: Links, status: Arc<HaStatus>) -> std::io::Result<Self> {
        let mut hb = Heartbeat::bind(cfg.heartbeat, cfg.peer)?;
        let poll = mio::Poll::new()?;
        let vips = VipSet::new(cfg.vips().cloned())?;
        hb.register(poll.registry())?;
        let now = Instant::now();
        let redis =
            Redis::new(cfg.redis.clone(), cfg.interval.clamp(Duration::from_millis(20), Duration::from_millis(500)));
        Ok(Self {
            links,
            status,
            redis,
            keys: Keys::new(&cfg.key_prefix),
            hb,
            vips,
            poll,
            role: Role::Standby,
            lease: Lease::new(now, cfg.interval),
            outbox: Outbox::new(now, cfg.stats_sync),
            degraded_logged: false,
            warm: WarmCopy::default(),
            prepared_at: None,
            reannounce: Vec::new(),
            cfg,
        })
    }

    /// Runs until shutdown.
    pub fn run(mut self) {
        tracing::info!(node = %self.cfg.node_id, vips = %self.vips.list(), lease_ms = self.cfg.lease.as_millis() as u64, "HA: starting as standby");
        // The lease is short: its renewal (and the heartbeat) must not wait
        // behind busy threads. The loop sleeps between short ticks.
        match crate::sys::set_thread_fifo(HA_PRIORITY) {
            Ok(()) => tracing::info!(priority = HA_PRIORITY, "HA: thread runs SCHED_FIFO"),
            Err(e) => {
                tracing::warn!(error = %e, "HA: thread not real-time (needs CAP_SYS_NICE); a loaded box may delay lease renewals")
            }
        }
        for addr in self.vips.release() {
            tracing::warn!(vip = %addr, "HA: removed a virtual IP left from an earlier run");
        }
        self.links.relay.track_changes();
        let _ = self.links.to_proxy.send(ToProxy::SetActive(false));
        (self.links.wake_proxy)();
        let mut next_hb = Instant::now();
        while !self.links.shutdown.load(Relaxed) {
            let now = Instant::now();
            self.read_heartbeats(now);
            self.read_proxy(now);
            match self.role {
                Role::Active => self.active_tick(now),
                Role::Standby => self.standby_tick(now),
            }
            if now >= next_hb {
                self.send_heartbeat();
                next_hb = now + self.cfg.interval;
            }
            if self.role != Role::Active {
                // Never announce addresses this node gave up.
                self.reannounce.clear();
            }
            self.reannounce.retain(|t| {
                if *t <= now {
                    self.vips.announce();
                    false
                } else {
                    true
                }
            });
            self.status.pending.store(self.outbox.len() as u64, Relaxed);
            // Sleep one tick, or less when the peer says something.
            let mut events = mio::Events::with_capacity(4);
            if self.poll.poll(&mut events, Some(TICK)).is_err() {
                std::thread::sleep(TICK);
            }
        }
        if self.role == Role::Active {
            // An orderly stop hands the addresses back at once.
            let _ = self.flush(Instant::now(), false);
            self.vips.release();
            self.lease.release(&mut self.redis, &self.keys, &self.cfg.node_id);
            tracing::info!("HA: stopped; virtual IPs released");
        }
    }

    fn send_heartbeat(&self) {
        let active = self.role == Role::Active;
        let redis_up = self.status.redis_up.load(Relaxed);
        self.hb.send(&heartbeat::state_text(&self.cfg.node_id, active, redis_up, self.lease.token));
    }

    fn read_heartbeats(&mut self, now: Instant) {
        while let Some(m) = self.hb.recv() {
            match m {
                Msg::State { active, redis_ok, token } => {
                    self.hb.heard(now, active, redis_ok, token);
                    if self.role == Role::Active && active && token > self.lease.token {
                        // Never two active nodes: the newer lease wins.
                        self.release("the peer holds a newer lease");
                    }
                }
                Msg::Prepare if self.role == Role::Standby => self.prepare(now),
                Msg::Go if self.role == Role::Standby => {
                    tracing::info!("HA: the peer handed over; taking over");
                    self.lease.next_acquire = now;
                    self.try_acquire(now);
                }
                Msg::Ready | Msg::Go | Msg::Prepare => {}
            }
        }
    }

    fn read_proxy(&mut self, now: Instant) {
        while let Ok(m) = self.links.from_proxy.try_recv() {
            match m {
                ToHa::Changes { dialogs, bindings } => {
                    if self.role == Role::Active {
                        self.outbox.proxy_changes(dialogs, bindings);
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
}
