//! The `AF_XDP` datapath: the XDP program of `xdp_prog` attached to the
//! media interfaces steers packets for our media ports to one `AF_XDP`
//! socket per rx queue, and one pinned worker per queue relays them by
//! rewriting the headers in place (see [`worker`]).
//!
//! - [`AfXdp::open`] loads the program once per interface (each interface
//!   has its own XSKMAP, indexed by rx queue), removes a stale copy of our
//!   program that a crashed run left attached, attaches in native mode
//!   (generic mode with a warning when the driver refuses), checks that
//!   every media interface's network is on one of its devices and that
//!   `AF_XDP` sockets can be bound, and starts the neighbour monitor.
//! - [`umem`]: per-worker UMEM shared by the worker's sockets, and frame
//!   ownership. [`handoff`]: frames that RSS put on another queue than
//!   their session's worker's. [`rewrite`]: header views, rewrite and checksums.
//!   [`neigh`]: routes and neighbours over rtnetlink. [`worker`]: the I/O
//!   loop under the shared session table. The unsafe lives in
//!   [`crate::sys`] (`xdp`, `frame_ring`, `eventfd`, `netlink`).
//!
//! Ownership: the maps are written only by the control plane (through
//! [`crate::datapath::backend::Datapath::steer`], and `ban`/`unban` for the
//! `bans` map; `relay_ports` and the config bans are filled before the
//! program is attached) and by each worker once at start
//! (its XSKMAP entries), all under the one mutex here; the packet path
//! never takes it.

pub mod handoff;
pub mod napi;
pub mod neigh;
pub mod rewrite;
pub mod umem;
pub mod worker;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::MapData;
use aya::programs::XdpMode;
use aya::Ebpf;
use xdp_prog::{
    BanKey, BanValue, Bans, CounterSnapshot, Counters, MediaPorts, MediaValue, PortRange, RelayPorts, SipPorts, Xsks,
    PROGRAM_NAME,
};

use crate::config::{BanPrefix, RelayConfig, ZeroCopy};
use crate::control::RelayError;
use crate::datapath::backend::{Datapath, WorkerContext};
use crate::sys::xdp::SendXsk;
use neigh::NeighTable;
use umem::Xsk;

/// Why the `AF_XDP` datapath cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No interface is configured.
    #[error("no `relay.xdp_interfaces` configured")]
    NoInterfaces,
    /// Reading the kernel's link table failed.
    #[error("reading the interfaces over rtnetlink: {0}")]
    Netlink(#[source] std::io::Error),
    /// A configured interface does not exist.
    #[error("interface `{0}` (relay.xdp_interfaces) does not exist")]
    NoSuchInterface(String),
    /// Loading the XDP program failed.
    #[error("loading the XDP program{}: {}", if *.denied { " (no privileges: needs root or CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW)" } else { "" }, chain(.source))]
    Load {
        /// EPERM from the kernel.
        denied: bool,
        /// What `xdp_prog` said.
        #[source]
        source: xdp_prog::Error,
    },
    /// Another program is attached to the interface.
    #[error("interface `{interface}` already has XDP program `{name}` (id {id}) attached; not replacing it")]
    Occupied {
        /// Interface.
        interface: String,
        /// That program's name.
        name: String,
        /// Its id.
        id: u32,
    },
    /// Removing a stale copy of our program failed.
    #[error("detaching the stale XDP program from `{interface}`: {source}")]
    Detach {
        /// Interface.
        interface: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// Neither native nor generic attach worked.
    #[error("attaching XDP to `{interface}` (native: {native}; generic: {generic})")]
    Attach {
        /// Interface.
        interface: String,
        /// Why native mode failed.
        native: String,
        /// Why generic mode failed.
        generic: String,
    },
    /// A media interface's network is on a device the program is not
    /// attached to: media arriving there would never reach a worker.
    #[error(
        "relay.interfaces `{name}` ({addr}) is on the network of `{device}`, which is not in \
         relay.xdp_interfaces: media arriving there would reach no AF_XDP worker"
    )]
    MediaNotSteered {
        /// The media interface's name.
        name: String,
        /// Its local address.
        addr: IpAddr,
        /// The device its network is on.
        device: String,
    },
    /// A map operation failed.
    #[error("{0}")]
    Map(String),
    /// An `AF_XDP` socket could not be set up.
    #[error("{0}")]
    Xsk(#[from] umem::XskError),
}

/// An error with its sources, e.g. a verifier log.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

/// One interface's program instance and its maps.
struct Attached {
    name: String,
    media: MediaPorts<MapData>,
    bans: Bans<MapData>,
    xsks: Xsks<MapData>,
    counters: Counters<MapData>,
    /// Attached in generic (skb) mode, the driver having refused native mode.
    generic: bool,
    /// Holds the program and its link: dropping it detaches.
    _ebpf: Ebpf,
}

/// The `AF_XDP` datapath.
pub struct AfXdp {
    queues: usize,
    /// Queues whose sockets run in the driver's zero-copy mode.
    zero_copy_queues: usize,
    attached: Arc<Mutex<Vec<Attached>>>,
    checksum: rewrite::Checksum,
    /// Each queue's sockets, until its worker takes them.
    sockets: Mutex<Vec<Option<SendXsk>>>,
    /// Each queue's end of the cross-queue handoff (several queues only),
    /// until its worker takes it.
    mesh: Mutex<Vec<Option<handoff::MeshPort>>>,
    neigh: Arc<NeighTable>,
    shutdown: Arc<AtomicBool>,
    monitor: Mutex<Option<JoinHandle<()>>>,
    /// How the NAPI threads rank against real-time workers (see [`napi`]).
    napi_ranks: Option<Arc<napi::Ranks>>,
    /// The map keys of `relay.xdp_bans`: a runtime unban never lifts them.
    config_bans: HashSet<BanKey>,
}

/// Most queues (the XSKMAP's size, and `relay.xdp_queues`' limit).
const MAX_QUEUES: usize = 64;
/// `BanValue::reason` of the prefixes from `relay.xdp_bans` (the program
/// ignores it; tools reading the map see who put an entry there).
pub const BANNED_BY_CONFIG: u32 = 1;
/// `BanValue::reason` of the prefixes banned at runtime ([`AfXdp`]'s
/// [`Datapath::ban`], e.g. by the sbc's guard).
pub const BANNED_AT_RUNTIME: u32 = 2;

/// Warns when the kernel may pick a local port of the media range for
/// another program's UDP socket (a DNS lookup, say): the XDP program drops
/// UDP to the range's unused ports on the media addresses, replies included.
fn warn_ephemeral_overlap(min: u16, max: u16) {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{f}")).unwrap_or_default();
    let ephemeral: Vec<u16> = read("ip_local_port_range").split_whitespace().filter_map(|p| p.parse().ok()).collect();
    let [lo, hi] = ephemeral[..] else { return };
    if hi < min || lo > max {
        return;
    }
    let wanted = format!("{min}-{max}");
    let reserved = read("ip_local_reserved_ports");
    let covers = |r: &str| {
        let (a, b) = r.trim().split_once('-').unwrap_or((r.trim(), r.trim()));
        a.parse::<u16>().is_ok_and(|a| a <= min) && b.parse::<u16>().is_ok_and(|b| b >= max)
    };
    if reserved.split(',').any(covers) {
        return;
    }
    tracing::warn!(
        ephemeral = %format!("{lo}-{hi}"),
        media = %wanted,
        "the kernel's ephemeral ports overlap the media port range, where the XDP program drops UDP to ports \
         without a session: replies to other programs' UDP sockets on the media addresses could be dropped. \
         Reserve the range (sysctl net.ipv4.ip_local_reserved_ports={min}-{max}) or set relay.xdp_drop_no_session = false"
    );
}

/// Number of rx queues of `interface` (from sysfs), at least 1.
fn rx_queues(interface: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{interface}/queues"))
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
        .unwrap_or(1)
        .max(1)
}

/// Checks that every media interface's network (`relay.interfaces`) is on
/// a device of `ifindexes` (`relay.xdp_interfaces`): media arriving on
/// another device would reach only the legs' UDP sockets, which no `AF_XDP`
/// worker reads. The device is the one of the address's connected route;
/// an address without one (a /32 VIP, loopback) is not checked.
fn check_media_devices(cfg: &RelayConfig, snap: &neigh::Snapshot, ifindexes: &[u32]) -> Result<(), Error> {
    for iface in &cfg.interfaces {
        let connected = snap.route(iface.local).filter(|r| r.gateway.is_none() && r.len > 0);
        let Some(route) = connected.filter(|_| !iface.local.is_loopback()) else { continue };
        if !ifindexes.contains(&route.oif) {
            return Err(Error::MediaNotSteered {
                name: iface.name.clone(),
                addr: iface.local,
                device: snap.link(route.oif).map_or_else(|| format!("ifindex {}", route.oif), |l| l.name.clone()),
            });
        }
    }
    Ok(())
}

impl AfXdp {
    /// Loads and attaches the program on every `relay.xdp_interfaces`
    /// entry and checks that `AF_XDP` sockets bind there.
    ///
    /// # Errors
    /// [`Error`], saying which step failed and why.
    pub fn open(cfg: &RelayConfig) -> Result<Self, Error> {
        if cfg.xdp_interfaces.is_empty() {
            return Err(Error::NoInterfaces);
        }
        let snap = neigh::read_snapshot().map_err(Error::Netlink)?;
        let mut ifindexes = Vec::new();
        for name in &cfg.xdp_interfaces {
            let link = snap.link_by_name(name).ok_or_else(|| Error::NoSuchInterface(name.clone()))?;
            ifindexes.push(link.index);
        }
        check_media_devices(cfg, &snap, &ifindexes)?;
        let queues = if cfg.xdp_queues > 0 {
            cfg.xdp_queues
        } else {
            let found = cfg.xdp_interfaces.iter().map(|i| rx_queues(i)).min().unwrap_or(1);
            if found > MAX_QUEUES {
                tracing::warn!(
                    found,
                    used = MAX_QUEUES,
                    "more rx queues than the XSKMAP holds: set relay.xdp_queues and reduce the NIC's channels \
                     (ethtool -L IF combined N) to match, or media arriving on the other queues is not relayed"
                );
            }
            found.min(MAX_QUEUES)
        };
        let mut attached = Vec::new();
        for name in &cfg.xdp_interfaces {
            attached.push(attach_one(name, &snap, cfg)?);
        }
        if cfg.xdp_drop_no_session {
            warn_ephemeral_overlap(cfg.port_min, cfg.port_max);
        }
        if !cfg.xdp_bans.is_empty() {
            tracing::info!(
                prefixes = cfg.xdp_bans.len(),
                interfaces = ?cfg.xdp_interfaces,
                "relay.xdp_bans: the XDP program drops every packet from these sources"
            );
        }
        // Every socket is bound here, so any failure (no AF_XDP support, a
        // queue that does not exist, ...) happens before a worker starts
        // and `auto` can still fall back.
        let mut sockets = Vec::with_capacity(queues);
        let mut zero_copy_queues = 0;
        let mut mode = cfg.xdp_zero_copy;
        for q in 0..queues {
            let queue = u32::try_from(q).unwrap_or(u32::MAX);
            let xsk = Xsk::open(&ifindexes, queue, mode)?;
            zero_copy_queues += usize::from(xsk.zero_copy);
            if mode == ZeroCopy::Auto && !xsk.zero_copy {
                // The other queues would end the same way: skip the attempt.
                mode = ZeroCopy::Off;
            }
            for (port, a) in xsk.ports.iter().zip(attached.iter_mut()) {
                a.xsks.set(queue, port.fd()).map_err(|e| {
                    Error::Map(format!("registering the socket of `{}` queue {queue}: {}", a.name, chain(&e)))
                })?;
            }
            sockets.push(Some(SendXsk(xsk)));
        }
        let neigh = Arc::new(NeighTable::new(snap));
        let shutdown = Arc::new(AtomicBool::new(false));
        // Also looks, every few seconds, at how threaded NAPI ranks against
        // real-time workers (NAPI threads come and go with `threaded`).
        let named: Vec<(String, u32)> = cfg.xdp_interfaces.iter().cloned().zip(ifindexes.iter().copied()).collect();
        let mut napi = napi::NapiWatch::new(&named, cfg.worker_scheduling);
        let napi_ranks = napi.as_ref().map(napi::NapiWatch::ranks);
        let monitor = neigh
            .monitor(Arc::clone(&shutdown), Duration::from_secs(5), move |now| {
                if let Some(w) = napi.as_mut() {
                    w.check(now);
                }
            })
            .map_err(Error::Netlink)?;
        tracing::info!(
            interfaces = ?cfg.xdp_interfaces,
            queues,
            zero_copy_queues,
            umem_mib = (queues * (umem::FRAMES * umem::FRAME_SIZE) as usize) >> 20,
            "AF_XDP datapath ready"
        );
        // A session lives in one worker; RSS may deliver its packets to any
        // queue, whose worker hands them to the owner (see `handoff`).
        let mesh = if queues > 1 {
            handoff::Mesh::build(queues)
                .map_err(|e| Error::Map(format!("setting up the handoff between {queues} AF_XDP queues: {e}")))?
                .into_iter()
                .map(Some)
                .collect()
        } else {
            Vec::new()
        };
        if zero_copy_queues < queues {
            tracing::info!(
                copy_mode_queues = queues - zero_copy_queues,
                "AF_XDP copy mode: the kernel copies each frame between the NIC's buffers and the UMEM (no driver \
                 zero-copy support on these interfaces, or relay.xdp_zero_copy = \"off\")"
            );
        }
        Ok(Self {
            queues,
            zero_copy_queues,
            attached: Arc::new(Mutex::new(attached)),
            sockets: Mutex::new(sockets),
            mesh: Mutex::new(mesh),
            checksum: if cfg.xdp_full_checksum { rewrite::Checksum::Full } else { rewrite::Checksum::Incremental },
            neigh,
            shutdown,
            monitor: Mutex::new(Some(monitor)),
            napi_ranks,
            config_bans: cfg.xdp_bans.iter().map(BanPrefix::key).collect(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Attached>> {
        self.attached.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Loads the program for `name`, removes a stale copy of ours, attaches.
fn attach_one(name: &str, snap: &neigh::Snapshot, cfg: &RelayConfig) -> Result<Attached, Error> {
    let (sip_ports, bans) = (&cfg.sip_ports, &cfg.xdp_bans);
    if let Some(link) = snap.link_by_name(name).filter(|l| l.xdp_prog_id != 0) {
        let id = link.xdp_prog_id;
        let prog_name = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == id)
            .and_then(|p| p.name_as_str().map(str::to_owned))
            .unwrap_or_default();
        if prog_name != PROGRAM_NAME {
            return Err(Error::Occupied { interface: name.to_owned(), name: prog_name, id });
        }
        neigh::detach_xdp(link.index, link.xdp_mode)
            .map_err(|source| Error::Detach { interface: name.to_owned(), source })?;
        tracing::warn!(interface = name, id, "detached a stale xsbc XDP program left attached by an earlier run");
    }
    let mut ebpf = xdp_prog::load().map_err(|source| Error::Load { denied: source.is_permission_denied(), source })?;
    let media = MediaPorts::take(&mut ebpf).map_err(|e| Error::Map(chain(&e)))?;
    let xsks = Xsks::take(&mut ebpf).map_err(|e| Error::Map(chain(&e)))?;
    let counters = Counters::take(&mut ebpf).map_err(|e| Error::Map(chain(&e)))?;
    // SIP to these ports is steered to the workers too and handed to the
    // signaling plane (crate::sip_handoff).
    let mut sip = SipPorts::take(&mut ebpf).map_err(|e| Error::Map(chain(&e)))?;
    for &p in sip_ports {
        sip.add(p).map_err(|e| Error::Map(format!("adding SIP port {p} on `{name}`: {}", chain(&e))))?;
    }
    // Before the program is attached: no packet from a banned source gets
    // through in between.
    let mut banned = Bans::take(&mut ebpf).map_err(|e| Error::Map(chain(&e)))?;
    for b in bans {
        banned
            .ban(b.addr, b.len, BanValue { reason: BANNED_BY_CONFIG })
            .map_err(|e| Error::Map(format!("relay.xdp_bans: adding {b} on `{name}`: {}", chain(&e))))?;
    }
    // UDP to a port of the media range without a session is dropped.
    if cfg.xdp_drop_no_session {
        let mut relay = RelayPorts::take(&mut ebpf).map_err(|e| Error::Map(chain(&e)))?;
        let range = PortRange { min: cfg.port_min, max: cfg.port_max };
        for iface in &cfg.interfaces {
            relay.set(iface.local, range).map_err(|e| {
                Error::Map(format!("setting the media port range of {} on `{name}`: {}", iface.local, chain(&e)))
            })?;
        }
    }
    let generic = match xdp_prog::attach(&mut ebpf, name, XdpMode::Driver) {
        Ok(()) => false,
        Err(native) => {
            let native = chain(&native);
            if let Err(generic) = xdp_prog::attach(&mut ebpf, name, XdpMode::Skb) {
                return Err(Error::Attach { interface: name.to_owned(), native, generic: chain(&generic) });
            }
            tracing::warn!(
                interface = name,
                reason = %native,
                "native XDP attach failed; using generic (skb) mode, which is slower"
            );
            true
        }
    };
    Ok(Attached { name: name.to_owned(), media, bans: banned, xsks, counters, generic, _ebpf: ebpf })
}

/// A ban map error as a [`RelayError`], saying so when the map is full.
fn ban_error(op: &str, prefix: &BanPrefix, interface: &str, e: &xdp_prog::Error) -> RelayError {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut full = false;
    while let Some(err) = next {
        full |= err.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) == Some(libc::ENOSPC);
        next = err.source();
    }
    let why =
        if full { format!("the XDP ban map is full ({} prefixes)", xdp_prog::BANS_MAX_ENTRIES) } else { chain(e) };
    RelayError::Datapath(format!("{op} the XDP ban {prefix} on `{interface}`: {why}"))
}

impl Drop for AfXdp {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(t) = self.monitor.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = t.join();
        }
    }
}

impl Datapath for AfXdp {
    fn name(&self) -> &'static str {
        "xdp"
    }

    fn workers(&self) -> Option<usize> {
        Some(self.queues)
    }

    fn spawn_worker(&self, ctx: WorkerContext, poll: mio::Poll) -> Result<JoinHandle<()>, RelayError> {
        let queue = ctx.index;
        let xsk = self
            .sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(queue)
            .and_then(Option::take)
            .ok_or_else(|| RelayError::Datapath(format!("no AF_XDP sockets for queue {queue}")))?;
        let neigh = Arc::clone(&self.neigh);
        let checksum = self.checksum;
        let mesh =
            self.mesh.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_mut(queue).and_then(Option::take);
        std::thread::Builder::new()
            .name(format!("mr-xdp-{queue}"))
            .spawn(move || {
                // A method call moves the whole wrapper into the closure.
                worker::run(ctx, poll, xsk.into_inner(), neigh, checksum, mesh);
            })
            .map_err(|source| RelayError::Io { op: "spawning worker thread", source })
    }

    fn steer(&self, local: SocketAddr) -> Result<(), RelayError> {
        let mut maps = self.lock();
        for a in maps.iter_mut() {
            a.media
                .insert(local, MediaValue::new(u32::from(local.port())))
                .map_err(|e| RelayError::Datapath(format!("steering {local} on `{}`: {}", a.name, chain(&e))))?;
        }
        Ok(())
    }

    fn unsteer(&self, local: SocketAddr) {
        let mut maps = self.lock();
        for a in maps.iter_mut() {
            if let Err(e) = a.media.remove(local) {
                tracing::warn!(%local, interface = %a.name, error = %chain(&e), "removing a media-port entry failed");
            }
        }
    }

    fn ban(&self, prefix: &BanPrefix) -> Result<bool, RelayError> {
        if self.config_bans.contains(&prefix.key()) {
            return Ok(true); // already dropped, and it stays a config ban
        }
        let mut maps = self.lock();
        let value = BanValue { reason: BANNED_AT_RUNTIME };
        for i in 0..maps.len() {
            if let Err(e) = maps[i].bans.ban(prefix.addr, prefix.len, value) {
                let err = ban_error("adding", prefix, &maps[i].name, &e);
                // All interfaces or none: undo the ones done.
                for a in &mut maps[..i] {
                    let _ = a.bans.unban(prefix.addr, prefix.len);
                }
                return Err(err);
            }
        }
        Ok(true)
    }

    fn unban(&self, prefix: &BanPrefix) -> Result<bool, RelayError> {
        if self.config_bans.contains(&prefix.key()) {
            tracing::info!(%prefix, "not lifting a ban from relay.xdp_bans");
            return Ok(true);
        }
        let mut maps = self.lock();
        for a in maps.iter_mut() {
            a.bans.unban(prefix.addr, prefix.len).map_err(|e| ban_error("removing", prefix, &a.name, &e))?;
        }
        Ok(true)
    }

    fn xdp_counters(&self) -> Option<CounterSnapshot> {
        let maps = self.lock();
        let mut sum = CounterSnapshot::default();
        for a in maps.iter() {
            if let Ok(s) = a.counters.read() {
                for (i, v) in s.0.iter().enumerate() {
                    sum.0[i] = sum.0[i].wrapping_add(*v);
                }
            }
        }
        Some(sum)
    }

    fn xdp_queue_modes(&self) -> Option<(usize, usize)> {
        Some((self.queues - self.zero_copy_queues, self.zero_copy_queues))
    }

    fn xdp_attach_modes(&self) -> Option<(usize, usize)> {
        let maps = self.lock();
        let generic = maps.iter().filter(|a| a.generic).count();
        Some((maps.len() - generic, generic))
    }

    fn xdp_napi_ranks(&self) -> Option<(usize, usize)> {
        self.napi_ranks.as_ref().map(|r| r.get())
    }
}
