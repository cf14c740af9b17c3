//! The relay's control plane: the call table, port allocation, and the
//! workers it drives. Implements [`MediaControl`].
//!
//! Layout:
//! - this module: [`Relay`], its start and shutdown, and the
//!   [`MediaControl`] entry points;
//! - `calls`: the call table (`Call`, `MediaPair`): offer, answer, delete
//!   and the call reports;
//! - `sockets`: binding a media pair's sockets on allocated or claimed ports;
//! - `workers`: the links to the media workers (command and event rings,
//!   wakeups, slots); the only part that speaks the worker protocol of
//!   [`crate::stream`];
//! - `ha`: export and import of sessions for an HA peer;
//! - `housekeeping`: the periodic pass (worker events, delayed deletes,
//!   media timeouts).
//!
//! Ownership: everything in `State` is behind one mutex that only control
//! paths take (the ng thread, in-process callers such as the sbc, the
//! housekeeping thread). The workers never take it; they are reached through
//! their command rings and answer through their event rings (see
//! [`crate::stream`]). The per-direction statistics ([`crate::stream::DirShared`])
//! are written by the worker alone and only read here.

mod calls;
mod ha;
mod housekeeping;
mod quality;
mod reload;
mod sockets;
mod workers;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::RelayConfig;
use crate::control::{CallReport, MediaControl, RelayError, RelayTotals, SdpRequest};
use crate::counters::PaddedCounters;
use crate::datapath::Datapath;
use crate::ports::PortAllocator;
use crate::Nanos;
pub use reload::{restart_key, RELOADABLE};

use calls::Call;
use workers::Workers;

/// The running relay.
pub struct Relay {
    cfg: RelayConfig,
    datapath: Arc<dyn Datapath>,
    sip: Arc<crate::sip_handoff::SipHandoff>,
    state: Mutex<State>,
    counters: Vec<Arc<PaddedCounters>>,
    shutdown: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Holds `relay.cpu_latency_us` while open.
    _cpu_latency: Option<std::fs::File>,
    /// Whether the controller marks answers ([`MediaControl::mark_answered`]):
    /// then only a marked call is watched for one-way audio, else any call
    /// with an answer SDP.
    answers_marked: AtomicBool,
    /// `relay.timeout` and `relay.max_sessions`, which a reload may change.
    tunables: Tunables,
}

/// The settings a configuration reload changes while calls run
/// ([`Relay::set_tunables`]); read by the control paths, never per packet.
#[derive(Debug, Default)]
struct Tunables {
    timeout_ns: std::sync::atomic::AtomicU64,
    max_sessions: std::sync::atomic::AtomicUsize,
}

/// What the control paths share, behind [`Relay`]'s mutex.
struct State {
    /// Boxed, so the table's spare capacity costs a pointer per entry.
    calls: HashMap<Arc<str>, Box<Call>>,
    ports: PortAllocator,
    workers: Workers,
    totals: RelayTotals,
    /// Calls changed since the last [`Relay::export_changes`]; `None` when
    /// nobody replicates (a single node).
    changed: Option<HashSet<Arc<str>>>,
    /// Flooding sources reported by the workers and not yet taken, each
    /// once, at most [`FLOOD_SOURCES_MAX`].
    flood_sources: Vec<std::net::IpAddr>,
    /// Quality events not yet taken, at most [`FLOOD_SOURCES_MAX`].
    quality_events: Vec<crate::control::QualityEvent>,
}

/// Most flooding sources kept between two [`Relay::take_flood_sources`].
const FLOOD_SOURCES_MAX: usize = 4096;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn to_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Holds `us` as the CPU latency limit ([`crate::sys::hold_cpu_latency`]),
/// so that a packet does not wait for an idle core to wake from a deep
/// state (in a VM, for a halted vCPU to be scheduled again). Without the
/// privilege, a warning, and the relay runs without the limit.
fn hold_cpu_latency(us: u32) -> Option<std::fs::File> {
    use crate::sys::CPU_DMA_LATENCY;
    match crate::sys::hold_cpu_latency(us) {
        Ok(f) => {
            tracing::info!(cpu_latency_us = us, "holding the CPU wakeup latency limit ({CPU_DMA_LATENCY})");
            Some(f)
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "relay.cpu_latency_us: cannot set {CPU_DMA_LATENCY} (needs root and the device); idle cores may wake slowly"
            );
            None
        }
    }
}

impl Relay {
    /// Starts the workers and the housekeeping thread.
    ///
    /// # Errors
    /// When a worker's poll cannot be created.
    pub fn start(mut cfg: RelayConfig) -> Result<Arc<Self>, RelayError> {
        cfg.resolve_workers();
        let datapath = crate::datapath::open(&cfg)?;
        if let Some(n) = datapath.workers() {
            cfg.workers = n;
        }
        let sip = Arc::new(crate::sip_handoff::SipHandoff::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let started = Workers::start(&cfg, &datapath, &sip, &shutdown)?;
        let mut threads = started.threads;
        let state = State {
            calls: HashMap::new(),
            ports: PortAllocator::new(cfg.port_min, cfg.port_max),
            workers: started.workers,
            totals: RelayTotals::default(),
            changed: None,
            flood_sources: Vec::new(),
            quality_events: Vec::new(),
        };
        let cpu_latency = cfg.cpu_latency_us.and_then(hold_cpu_latency);
        let tunables = Tunables::default();
        tunables.timeout_ns.store(to_nanos(cfg.timeout), Ordering::Relaxed);
        tunables.max_sessions.store(cfg.max_sessions, Ordering::Relaxed);
        let relay = Arc::new(Self {
            tunables,
            _cpu_latency: cpu_latency,
            answers_marked: AtomicBool::new(false),
            cfg,
            datapath,
            sip,
            state: Mutex::new(state),
            counters: started.counters,
            shutdown: Arc::clone(&shutdown),
            threads: Mutex::new(Vec::new()),
        });
        let weak: Weak<Self> = Arc::downgrade(&relay);
        let hk = std::thread::Builder::new()
            .name("mr-housekeeping".into())
            .spawn(move || housekeeping::run(&weak, &shutdown))
            .map_err(|source| RelayError::Io { op: "spawning housekeeping thread", source })?;
        threads.push(hk);
        *relay.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = threads;
        tracing::info!(
            workers = relay.cfg.workers,
            ports = %format!("{}-{}", relay.cfg.port_min, relay.cfg.port_max),
            interfaces = ?relay.cfg.interfaces.iter().map(|i| i.local).collect::<Vec<_>>(),
            datapath = relay.datapath.name(),
            "media relay started"
        );
        Ok(relay)
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    /// SIP datagrams the datapath steered to its workers (the signaling
    /// plane takes the rings and sets the waker).
    #[must_use]
    pub fn sip_handoff(&self) -> &Arc<crate::sip_handoff::SipHandoff> {
        &self.sip
    }

    /// The datapath moving the packets.
    #[must_use]
    pub fn datapath(&self) -> &dyn Datapath {
        &*self.datapath
    }

    /// The per-worker counter blocks (for the metrics exporter).
    #[must_use]
    pub fn worker_counters(&self) -> &[Arc<PaddedCounters>] {
        &self.counters
    }

    /// Drops every packet from `p` in the XDP program, on every interface
    /// it is attached to, until [`Relay::xdp_unban`]. `Ok(true)`: enforced
    /// in XDP (already so for a `relay.xdp_bans` prefix); `Ok(false)`: the
    /// socket datapath, which has no XDP program (nothing done).
    ///
    /// # Errors
    /// [`RelayError::Datapath`] when the ban map refuses the entry (e.g. it
    /// is full); no interface keeps it then.
    pub fn xdp_ban(&self, p: &crate::config::BanPrefix) -> Result<bool, RelayError> {
        let done = self.datapath.ban(p)?;
        if done {
            tracing::debug!(prefix = %p, "XDP ban added");
        }
        Ok(done)
    }

    /// Lifts a ban made with [`Relay::xdp_ban`]. A `relay.xdp_bans` prefix
    /// is never lifted. `Ok(false)`: the socket datapath (nothing done).
    ///
    /// # Errors
    /// [`RelayError::Datapath`] when the ban map refuses the removal.
    pub fn xdp_unban(&self, p: &crate::config::BanPrefix) -> Result<bool, RelayError> {
        let done = self.datapath.unban(p)?;
        if done {
            tracing::debug!(prefix = %p, "XDP ban lifted");
        }
        Ok(done)
    }

    /// The sources that flooded a latched media port with foreign packets
    /// (more than `relay.flood_ban_pps` in a second) since the last call,
    /// each once. On both datapaths; empty when `relay.flood_ban_pps = 0`.
    #[must_use]
    pub fn take_flood_sources(&self) -> Vec<std::net::IpAddr> {
        let mut st = self.lock();
        st.drain_events();
        std::mem::take(&mut st.flood_sources)
    }

    /// Stops the workers and joins every thread. Sockets close with them.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        self.lock().workers.wake_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for t in threads {
            let _ = t.join();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock must not take the relay down with it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// Applies what the workers reported: closed pairs free their ports and
    /// slots, latched sources are recorded in their calls.
    fn drain_events(&mut self) {
        let State { workers, ports, calls, changed, flood_sources, .. } = self;
        let flood = |addr: std::net::IpAddr| {
            if flood_sources.len() < FLOOD_SOURCES_MAX && !flood_sources.contains(&addr) {
                flood_sources.push(addr);
            }
        };
        let latched = |id: &Arc<str>, index: usize, slot: u32, channel: u8, addr: std::net::SocketAddr| {
            let Some(m) = calls.get_mut(id).and_then(|c| c.medias.get_mut(index)) else { return };
            if m.at.slot != slot {
                return;
            }
            if let Some(l) = m.latched.get_mut(usize::from(channel)) {
                *l = Some(addr.into());
            }
            if let Some(c) = changed.as_mut() {
                c.insert(Arc::clone(id));
            }
        };
        workers.drain(ports, latched, flood);
    }

    fn mark_changed(&mut self, call_id: &str) {
        if let (Some(c), Some(call)) = (self.changed.as_mut(), self.calls.get(call_id)) {
            c.insert(Arc::clone(&call.id));
        }
    }
}

impl MediaControl for Relay {
    fn offer(&self, req: &SdpRequest<'_>) -> Result<Vec<u8>, RelayError> {
        self.negotiate(req, false)
    }

    fn answer(&self, req: &SdpRequest<'_>) -> Result<Vec<u8>, RelayError> {
        self.negotiate(req, true)
    }

    fn delete(&self, call_id: &str, _from_tag: Option<&str>) -> Result<CallReport, RelayError> {
        self.delete_call(call_id)
    }

    fn query(&self, call_id: &str) -> Result<CallReport, RelayError> {
        let mut st = self.lock();
        st.drain_events();
        st.calls.get(call_id).map(|c| c.report()).ok_or(RelayError::UnknownCall)
    }

    fn list(&self, limit: usize) -> Vec<String> {
        let st = self.lock();
        st.calls.keys().take(limit).map(|k| k.to_string()).collect()
    }

    fn flush(&self) {
        self.lock().workers.wake();
    }

    fn mark_answered(&self, call_id: &str) {
        self.answers_marked.store(true, Ordering::Relaxed);
        if let Some(c) = self.lock().calls.get_mut(call_id) {
            c.answered.get_or_insert(crate::sys::monotonic_ns());
        }
    }

    fn take_quality_events(&self) -> Vec<crate::control::QualityEvent> {
        std::mem::take(&mut self.lock().quality_events)
    }

    fn idle_calls(&self, idle: Duration) -> Vec<String> {
        self.idle_calls_at(crate::sys::monotonic_ns(), to_nanos(idle))
    }

    fn totals(&self) -> RelayTotals {
        let mut st = self.lock();
        st.drain_events();
        let mut t = st.totals;
        t.sessions = st.calls.len();
        t.port_pairs_in_use = st.ports.in_use();
        t.port_pairs_total = st.ports.capacity();
        t
    }
}
