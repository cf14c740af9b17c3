//! The relay's control plane: the call table, port allocation, and the
//! workers it drives. Implements [`MediaControl`].
//!
//! Ownership: everything in [`State`] is behind one mutex that only control
//! paths take (ng commands, in-process calls, the housekeeping thread). The
//! workers never take it; they are reached through their command rings and
//! answer through their event rings (see [`crate::stream`]).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::RelayConfig;
use crate::control::{
    CallReport, LegReport, MediaControl, MediaReport, RelayError, RelayTotals, SdpRequest, StreamReport,
};
use crate::counters::PaddedCounters;
use crate::datapath::Datapath;
use crate::ha::{MediaRecord, SessionRecord};
use crate::ports::PortAllocator;
use crate::sdp::{self, Sdp};
use crate::stats::StatsSnapshot;
use crate::stream::{ChannelSetup, ClockTable, Command, DirShared, Event, PairSetup};
use crate::sys::monotonic_ns;
use crate::worker::{self, WorkerContext};
use crate::Nanos;

const COMMAND_RING: usize = 8192;
const EVENT_RING: usize = 65536;
const HOUSEKEEPING: Duration = Duration::from_millis(200);

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
}

struct WorkerLink {
    commands: rtrb::Producer<Command>,
    sleeping: Arc<AtomicBool>,
    /// Commands were pushed since the last wakeup check.
    pending_wake: bool,
    events: rtrb::Consumer<Event>,
    waker: Arc<mio::Waker>,
    free_slots: Vec<u32>,
    next_slot: u32,
    /// Slot → (call-id, media index), for latch reports.
    owners: Vec<Option<(Arc<str>, usize)>>,
    /// Slot → RTP ports of both legs, waiting for the worker's `Removed`.
    closing: HashMap<u32, [u16; 2]>,
    /// Removes that did not fit in the ring yet.
    retry_remove: Vec<u32>,
    pairs: usize,
}

/// One `m=` section of a call: both legs, RTP and RTCP.
struct MediaPair {
    worker: usize,
    slot: u32,
    kind: String,
    protocol: String,
    codecs: [Vec<String>; 2],
    /// RTP port of each leg's channel pair (RTCP is +1).
    ports: [u16; 2],
    /// SDP RTP/RTCP addresses of each leg.
    sdp_rtp: [Option<SocketAddr>; 2],
    sdp_rtcp: [Option<SocketAddr>; 2],
    mux: [bool; 2],
    latched: [Option<SocketAddr>; 4],
    shared: [Arc<DirShared>; 4],
    clock: ClockTable,
    /// Local addresses steered to the datapath (RTP and RTCP of both legs).
    steered: Vec<SocketAddr>,
}

struct Call {
    id: Arc<str>,
    created: u64,
    last_signal: u64,
    last_signal_mono: Nanos,
    tags: [Option<String>; 2],
    /// Interface index of each leg.
    iface: [usize; 2],
    medias: Vec<MediaPair>,
    delete_at: Option<Nanos>,
}

struct State {
    calls: HashMap<Arc<str>, Call>,
    ports: PortAllocator,
    workers: Vec<WorkerLink>,
    next_worker: usize,
    totals: RelayTotals,
    /// Calls changed since the last [`Relay::export_changes`]; `None` when
    /// nobody replicates (a single node).
    changed: Option<HashSet<Arc<str>>>,
    /// Told which local addresses carry media (the XDP media-port map).
    datapath: Arc<dyn Datapath>,
}

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
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let sip = Arc::new(crate::sip_handoff::SipHandoff::default());
        let hand_sip = datapath.name() == "xdp" && !cfg.sip_ports.is_empty();
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut links = Vec::with_capacity(cfg.workers);
        let mut counters = Vec::with_capacity(cfg.workers);
        let mut threads = Vec::with_capacity(cfg.workers + 1);
        for i in 0..cfg.workers {
            let (poll, waker) =
                worker::make_poll().map_err(|source| RelayError::Io { op: "creating worker poll", source })?;
            let (cmd_tx, cmd_rx) = rtrb::RingBuffer::new(COMMAND_RING);
            let (ev_tx, ev_rx) = rtrb::RingBuffer::new(EVENT_RING);
            let ctr = Arc::new(PaddedCounters::default());
            let sleeping = Arc::new(AtomicBool::new(false));
            let ctx = WorkerContext {
                sleeping: Arc::clone(&sleeping),
                index: i,
                core: if cores.is_empty() { None } else { Some(cores[i % cores.len()]) },
                commands: cmd_rx,
                events: ev_tx,
                nat: cfg.nat,
                counters: Arc::clone(&ctr),
                shutdown: Arc::clone(&shutdown),
                scheduling: cfg.worker_scheduling,
                sip: hand_sip
                    .then(|| crate::sip_handoff::SipSender::new(sip.ring(), Arc::clone(&sip), cfg.sip_ports.clone())),
            };
            let t = datapath.spawn_worker(ctx, poll)?;
            threads.push(t);
            counters.push(ctr);
            links.push(WorkerLink {
                commands: cmd_tx,
                sleeping,
                pending_wake: false,
                events: ev_rx,
                waker,
                free_slots: Vec::new(),
                next_slot: 0,
                owners: Vec::new(),
                closing: HashMap::new(),
                retry_remove: Vec::new(),
                pairs: 0,
            });
        }
        let state = State {
            calls: HashMap::new(),
            ports: PortAllocator::new(cfg.port_min, cfg.port_max),
            workers: links,
            next_worker: 0,
            totals: RelayTotals::default(),
            changed: None,
            datapath: Arc::clone(&datapath),
        };
        let cpu_latency = cfg.cpu_latency_us.and_then(hold_cpu_latency);
        let relay = Arc::new(Self {
            _cpu_latency: cpu_latency,
            cfg,
            datapath,
            sip,
            state: Mutex::new(state),
            counters,
            shutdown: Arc::clone(&shutdown),
            threads: Mutex::new(Vec::new()),
        });
        let weak: Weak<Self> = Arc::downgrade(&relay);
        let hk = std::thread::Builder::new()
            .name("mr-housekeeping".into())
            .spawn(move || housekeeping(&weak, &shutdown))
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

    /// Stops the workers and joins every thread. Sockets close with them.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        {
            let st = self.lock();
            for w in &st.workers {
                let _ = w.waker.wake();
            }
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for t in threads {
            let _ = t.join();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock must not take the relay down with it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One housekeeping pass: collect worker events, retry queued removes,
    /// finish delayed deletes and time out silent calls. `now` is monotonic ns.
    pub fn housekeep(&self, now: Nanos) {
        let mut st = self.lock();
        st.drain_events();
        st.retry_removes();
        let timeout = to_nanos(self.cfg.timeout);
        let mut expired: Vec<(Arc<str>, bool)> = Vec::new();
        for call in st.calls.values() {
            if let Some(at) = call.delete_at {
                if now >= at {
                    expired.push((Arc::clone(&call.id), false));
                }
                continue;
            }
            let last_media =
                call.medias.iter().flat_map(|m| m.shared.iter()).map(|s| s.last_packet()).max().unwrap_or(0);
            let last = last_media.max(call.last_signal_mono);
            if now.saturating_sub(last) >= timeout {
                expired.push((Arc::clone(&call.id), true));
            }
        }
        for (id, timed_out) in expired {
            if timed_out {
                tracing::info!(call_id = %id, timeout_s = self.cfg.timeout.as_secs(), "no media in either direction: deleting call");
                st.totals.timed_out += 1;
            }
            st.destroy(&id);
        }
        st.wake_workers();
    }

    fn negotiate(&self, req: &SdpRequest<'_>, answer: bool) -> Result<Vec<u8>, RelayError> {
        let parsed = Sdp::parse(req.sdp)?;
        let mut guard = self.lock();
        let st = &mut *guard;
        st.drain_events();
        let ifaces = self.resolve_direction(req)?;
        let created = if st.calls.contains_key(req.call_id) {
            false
        } else {
            if answer {
                return Err(RelayError::UnknownCall);
            }
            if self.cfg.max_sessions > 0 && st.calls.len() >= self.cfg.max_sessions {
                return Err(RelayError::TooManySessions);
            }
            let id: Arc<str> = Arc::from(req.call_id);
            let now = unix_now();
            st.calls.insert(
                Arc::clone(&id),
                Call {
                    id,
                    created: now,
                    last_signal: now,
                    last_signal_mono: monotonic_ns(),
                    tags: [None, None],
                    iface: [ifaces[0].unwrap_or(0), ifaces[1].unwrap_or(0)],
                    medias: Vec::new(),
                    delete_at: None,
                },
            );
            st.totals.created += 1;
            true
        };
        let result = self.negotiate_in(st, req, &parsed, answer);
        if result.is_err() && created {
            st.destroy(req.call_id);
        } else {
            st.mark_changed(req.call_id);
        }
        result
    }

    fn resolve_direction(&self, req: &SdpRequest<'_>) -> Result<[Option<usize>; 2], RelayError> {
        let mut out = [None, None];
        for (i, name) in req.opts.direction.iter().enumerate() {
            if let Some(n) = name {
                out[i] = Some(self.cfg.interface(n).ok_or_else(|| RelayError::UnknownInterface(n.clone()))?);
            }
        }
        Ok(out)
    }

    fn negotiate_in(
        &self,
        st: &mut State,
        req: &SdpRequest<'_>,
        parsed: &Sdp,
        answer: bool,
    ) -> Result<Vec<u8>, RelayError> {
        let State { calls, ports, workers, next_worker, .. } = st;
        let call = calls.get_mut(req.call_id).ok_or(RelayError::UnknownCall)?;
        let side = if answer {
            let to = req.to_tag.ok_or(RelayError::MissingKey("to-tag"))?;
            call.side_of(to, req.from_tag, true)
        } else {
            call.side_of(req.from_tag, req.to_tag.unwrap_or(""), false)
        };
        let other = 1 - side;
        call.last_signal = unix_now();
        call.last_signal_mono = monotonic_ns();
        call.delete_at = None;

        let mut rtp_ports = Vec::with_capacity(parsed.media.len());
        let mut rtcp_ports = Vec::with_capacity(parsed.media.len());
        for (i, m) in parsed.media.iter().enumerate() {
            if i >= call.medias.len() {
                if answer {
                    // An answer cannot add media sections; leave extras alone.
                    rtp_ports.push(None);
                    rtcp_ports.push(None);
                    continue;
                }
                let pair = self.alloc_pair(ports, workers, next_worker, call, i, m.kind.clone(), m.proto.clone())?;
                call.medias.push(pair);
            }
            let pair = &mut call.medias[i];
            let addr = m.remote_addr(parsed).filter(|a| !a.is_unspecified());
            let rtp = addr.filter(|_| m.port != 0).map(|a| SocketAddr::new(a, m.port));
            let rtcp = match (rtp, m.rtcp) {
                (None, _) => None,
                (Some(r), Some((port, a))) => Some(SocketAddr::new(a.unwrap_or(r.ip()), port)),
                (Some(r), None) => Some(SocketAddr::new(r.ip(), r.port().wrapping_add(1))),
            };
            let moved = pair.sdp_rtp[side] != rtp;
            pair.sdp_rtp[side] = rtp;
            pair.sdp_rtcp[side] = rtcp;
            pair.mux[side] = m.rtcp_mux;
            pair.codecs[side] = m.codec_names();
            for pt in m.formats.iter().filter_map(|f| f.parse::<u8>().ok()) {
                if let Some(rate) = m.clock_rate(pt) {
                    pair.clock.insert(pt, rate);
                }
            }
            pair.kind.clone_from(&m.kind);
            pair.protocol.clone_from(&m.proto);
            let w = &mut workers[pair.worker];
            for (ch, peer) in [(side * 2, rtp), (side * 2 + 1, rtcp)] {
                if moved {
                    pair.latched[ch] = None;
                }
                let cmd =
                    Command::SetPeer { slot: pair.slot, channel: ch as u8, peer, relatch: moved, clock: pair.clock };
                if w.commands.push(cmd).is_err() {
                    return Err(RelayError::Busy);
                }
            }
            // The other leg's channels learn the new clock table too.
            for ch in [other * 2, other * 2 + 1] {
                let peer = if ch % 2 == 0 { pair.sdp_rtp[other] } else { pair.sdp_rtcp[other] };
                let cmd =
                    Command::SetPeer { slot: pair.slot, channel: ch as u8, peer, relatch: false, clock: pair.clock };
                if w.commands.push(cmd).is_err() {
                    return Err(RelayError::Busy);
                }
            }
            w.pending_wake = true;
            if m.port == 0 {
                rtp_ports.push(None);
                rtcp_ports.push(None);
            } else {
                let p = pair.ports[other];
                rtp_ports.push(Some(p));
                let both_mux = pair.mux[side] && (pair.mux[other] || !answer);
                rtcp_ports.push(Some(if both_mux { p } else { p + 1 }));
            }
        }
        if !answer {
            call.tags[side] = Some(req.from_tag.to_owned());
        }
        let iface = &self.cfg.interfaces[call.iface[other]];
        let rw = sdp::Rewrite {
            addr: iface.advertised,
            ports: &rtp_ports,
            rtcp_ports: &rtcp_ports,
            replace_origin: req.opts.replace_origin,
            remove_ice: req.opts.ice_remove,
        };
        Ok(sdp::rewrite(req.sdp, &rw)?)
    }

    #[expect(clippy::too_many_arguments, reason = "disjoint borrows of State fields")]
    fn alloc_pair(
        &self,
        ports: &mut PortAllocator,
        workers: &mut [WorkerLink],
        next_worker: &mut usize,
        call: &Call,
        index: usize,
        kind: String,
        protocol: String,
    ) -> Result<MediaPair, RelayError> {
        let mut socks: Vec<(u16, [UdpSocket; 2])> = Vec::with_capacity(2);
        for leg in 0..2 {
            let ip = self.cfg.interfaces[call.iface[leg]].local;
            let rcvbuf = self.cfg.socket_rcvbuf;
            let mut last_err: Option<std::io::Error> = None;
            let got = ports.allocate(|p| {
                bind_pair(ip, p, rcvbuf, self.cfg.freebind)
                    .inspect_err(|e| last_err = Some(std::io::Error::new(e.kind(), e.to_string())))
            });
            match got {
                Some(s) => socks.push(s),
                None => {
                    for (p, _) in &socks {
                        ports.free(*p);
                    }
                    // Either every pair is allocated, or binding failed on the
                    // free ones (another process holds them): say which.
                    tracing::warn!(
                        in_use = ports.in_use(),
                        capacity = ports.capacity(),
                        last_bind_error = ?last_err.map(|e| e.to_string()),
                        "no media port pair available"
                    );
                    return Err(RelayError::NoPorts);
                }
            }
        }
        let mut it = socks.into_iter();
        let (Some(a), Some(b)) = (it.next(), it.next()) else {
            return Err(RelayError::NoPorts);
        };
        let placed = self.place_pair(ports, workers, next_worker, &call.id, index, [a, b], &PairStart::default())?;
        Ok(MediaPair {
            worker: placed.worker,
            slot: placed.slot,
            kind,
            protocol,
            codecs: [Vec::new(), Vec::new()],
            ports: placed.ports,
            sdp_rtp: [None, None],
            sdp_rtcp: [None, None],
            mux: [false, false],
            latched: [None; 4],
            shared: placed.shared,
            clock: ClockTable::default(),
            steered: placed.steered,
        })
    }

    /// The step a new pair and a taken-over one share: steer the bound ports
    /// to the datapath (before any SDP advertises them), hand the sockets to
    /// the least-loaded worker, and record the slot's owner. On failure the
    /// ports are freed and nothing is left steered.
    #[expect(clippy::too_many_arguments, reason = "disjoint borrows of State fields")]
    fn place_pair(
        &self,
        ports: &mut PortAllocator,
        workers: &mut [WorkerLink],
        next_worker: &mut usize,
        call_id: &Arc<str>,
        index: usize,
        socks: [(u16, [UdpSocket; 2]); 2],
        start: &PairStart,
    ) -> Result<Placed, RelayError> {
        let port_of = [socks[0].0, socks[1].0];
        let free_ports = |ports: &mut PortAllocator| {
            ports.free(port_of[0]);
            ports.free(port_of[1]);
        };
        let mut steered = Vec::with_capacity(4);
        for s in socks.iter().flat_map(|(_, pair)| pair.iter()) {
            let Ok(local) = s.local_addr() else { continue };
            if let Err(e) = self.datapath.steer(local) {
                for l in &steered {
                    self.datapath.unsteer(*l);
                }
                free_ports(ports);
                tracing::warn!(error = %e, "steering a media port failed");
                return Err(e);
            }
            steered.push(local);
        }
        // Least-loaded worker, ties broken round robin.
        let n = workers.len();
        let first = *next_worker % n;
        *next_worker = next_worker.wrapping_add(1);
        let wi = (0..n).map(|k| (first + k) % n).min_by_key(|&i| workers[i].pairs).unwrap_or(0);
        let w = &mut workers[wi];
        let slot = w.free_slots.pop().unwrap_or_else(|| {
            w.next_slot += 1;
            w.next_slot - 1
        });
        let shared: [Arc<DirShared>; 4] = std::array::from_fn(|_| Arc::new(DirShared::default()));
        let [(_, [a_rtp, a_rtcp]), (_, [b_rtp, b_rtcp])] = socks;
        let mk = |socket: UdpSocket, c: usize| ChannelSetup {
            socket,
            peer: start.peers[c],
            latched: start.latched[c],
            resume: start.resume[c],
            shared: Arc::clone(&shared[c]),
        };
        let setup = PairSetup { slot, channels: [mk(a_rtp, 0), mk(a_rtcp, 1), mk(b_rtp, 2), mk(b_rtcp, 3)] };
        if w.commands.push(Command::Add(Box::new(setup))).is_err() {
            // The sockets were dropped with the command; the ports are free.
            for l in &steered {
                self.datapath.unsteer(*l);
            }
            free_ports(ports);
            w.free_slots.push(slot);
            return Err(RelayError::Busy);
        }
        if let Some(clock) = start.clock {
            // The pair's clock table travels with a SetPeer (same peer, no relatch).
            let _ = w.commands.push(Command::SetPeer { slot, channel: 0, peer: start.peers[0], relatch: false, clock });
        }
        w.pending_wake = true;
        let si = slot as usize;
        if w.owners.len() <= si {
            w.owners.resize(si + 1, None);
        }
        w.owners[si] = Some((Arc::clone(call_id), index));
        w.pairs += 1;
        Ok(Placed { worker: wi, slot, ports: port_of, shared, steered })
    }
}

/// How the channels of a pair start: empty for a new pair, the exported
/// state for one taken over from an HA peer.
#[derive(Default)]
struct PairStart {
    peers: [Option<SocketAddr>; 4],
    latched: [Option<SocketAddr>; 4],
    resume: [Option<StatsSnapshot>; 4],
    clock: Option<ClockTable>,
}

/// Where [`Relay::place_pair`] put a pair.
struct Placed {
    worker: usize,
    slot: u32,
    ports: [u16; 2],
    shared: [Arc<DirShared>; 4],
    steered: Vec<SocketAddr>,
}

/// Binds the RTP socket on `port` and the RTCP socket on `port + 1`.
fn bind_pair(ip: IpAddr, port: u16, rcvbuf: usize, freebind: bool) -> std::io::Result<[UdpSocket; 2]> {
    let one = |p: u16| -> std::io::Result<UdpSocket> {
        // SOCK_NONBLOCK at creation saves a syscall per socket.
        let s =
            Socket::new(Domain::for_address(SocketAddr::new(ip, p)), Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
        if rcvbuf > 0 {
            s.set_recv_buffer_size(rcvbuf)?;
        }
        if freebind {
            if ip.is_ipv4() {
                s.set_freebind(true)?;
            } else {
                s.set_freebind_ipv6(true)?;
            }
        }
        s.bind(&SocketAddr::new(ip, p).into())?;
        Ok(s.into())
    };
    Ok([one(port)?, one(port + 1)?])
}

impl Call {
    /// Which leg a tag belongs to, assigning it if the call does not know it
    /// yet. `answer` = the tag is the answering side's (to-tag).
    fn side_of(&mut self, tag: &str, other_tag: &str, answer: bool) -> usize {
        if self.tags[0].as_deref() == Some(tag) {
            return 0;
        }
        if self.tags[1].as_deref() == Some(tag) {
            return 1;
        }
        if answer {
            // A new to-tag: the callee (or, after forking, the winning branch).
            self.tags[1] = Some(tag.to_owned());
            return 1;
        }
        if self.tags[0].is_none() {
            return 0;
        }
        if self.tags[0].as_deref() == Some(other_tag) {
            self.tags[1] = Some(tag.to_owned());
            return 1;
        }
        // A re-offer with a from-tag we have never seen: it replaces leg A.
        0
    }

    fn report(&self) -> CallReport {
        let legs = (0..2)
            .map(|leg| LegReport {
                tag: self.tags[leg].clone().unwrap_or_default(),
                medias: self
                    .medias
                    .iter()
                    .enumerate()
                    .map(|(i, m)| MediaReport {
                        index: i + 1,
                        kind: m.kind.clone(),
                        protocol: m.protocol.clone(),
                        codecs: m.codecs[leg].clone(),
                        streams: [0, 1].map(|k| {
                            let ch = leg * 2 + k;
                            let sdp = if k == 0 { m.sdp_rtp[leg] } else { m.sdp_rtcp[leg] };
                            StreamReport {
                                local_port: m.ports[leg] + k as u16,
                                endpoint: m.latched[ch].or(sdp),
                                advertised: sdp,
                                latched: m.latched[ch].is_some(),
                                stats: m.shared[ch].read(),
                            }
                        }),
                    })
                    .collect(),
            })
            .collect();
        CallReport { call_id: self.id.to_string(), created: self.created, last_signal: self.last_signal, legs }
    }
}

impl State {
    fn mark_changed(&mut self, call_id: &str) {
        if let (Some(c), Some(call)) = (self.changed.as_mut(), self.calls.get(call_id)) {
            c.insert(Arc::clone(&call.id));
        }
    }

    /// Wakes the workers that were sent commands and are asleep. Called
    /// once at the end of every control operation: a busy worker picks the
    /// commands up on its next loop without a wakeup syscall.
    fn wake_workers(&mut self) {
        for w in &mut self.workers {
            if std::mem::take(&mut w.pending_wake) && crate::worker::Sleep::needs_wake(&w.sleeping) {
                let _ = w.waker.wake();
            }
        }
    }

    fn drain_events(&mut self) {
        let State { workers, ports, calls, changed, .. } = self;
        for w in workers.iter_mut() {
            while let Ok(ev) = w.events.pop() {
                match ev {
                    Event::Removed { slot } => {
                        if let Some(p) = w.closing.remove(&slot) {
                            ports.free(p[0]);
                            ports.free(p[1]);
                            w.free_slots.push(slot);
                            w.pairs = w.pairs.saturating_sub(1);
                        }
                    }
                    Event::Latched { slot, channel, addr } => {
                        let owner = w.owners.get(slot as usize).and_then(Option::as_ref);
                        if let Some((id, idx)) = owner {
                            if let Some(m) = calls.get_mut(id).and_then(|c| c.medias.get_mut(*idx)) {
                                if m.slot == slot {
                                    if let Some(l) = m.latched.get_mut(usize::from(channel)) {
                                        *l = Some(addr);
                                    }
                                    if let Some(c) = changed.as_mut() {
                                        c.insert(Arc::clone(id));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn retry_removes(&mut self) {
        for w in &mut self.workers {
            let pending = std::mem::take(&mut w.retry_remove);
            for slot in pending {
                if w.commands.push(Command::Remove { slot }).is_err() {
                    w.retry_remove.push(slot);
                }
                w.pending_wake = true;
            }
        }
    }

    /// Removes a call from the table and tells the workers to close its
    /// sockets; ports are freed when they confirm.
    fn destroy(&mut self, call_id: &str) -> Option<CallReport> {
        let call = self.calls.remove(call_id)?;
        if let Some(c) = self.changed.as_mut() {
            c.insert(Arc::clone(&call.id));
        }
        let report = call.report();
        let from_a = call.medias.iter().any(|m| m.shared[0].read().stats.packets > 0);
        let from_b = call.medias.iter().any(|m| m.shared[2].read().stats.packets > 0);
        match (from_a, from_b) {
            (true, true) => self.totals.ended_both += 1,
            (false, false) => self.totals.ended_none += 1,
            _ => self.totals.ended_oneway += 1,
        }
        for m in &call.medias {
            for l in &m.steered {
                self.datapath.unsteer(*l);
            }
            let w = &mut self.workers[m.worker];
            if let Some(o) = w.owners.get_mut(m.slot as usize) {
                *o = None;
            }
            w.closing.insert(m.slot, m.ports);
            if w.commands.push(Command::Remove { slot: m.slot }).is_err() {
                w.retry_remove.push(m.slot);
            }
            w.pending_wake = true;
        }
        Some(report)
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
        let mut st = self.lock();
        st.drain_events();
        let delay = to_nanos(self.cfg.delete_delay);
        if delay == 0 {
            let r = st.destroy(call_id).ok_or(RelayError::UnknownCall)?;
            st.totals.deleted += 1;
            return Ok(r);
        }
        let call = st.calls.get_mut(call_id).ok_or(RelayError::UnknownCall)?;
        if call.delete_at.is_none() {
            call.delete_at = Some(monotonic_ns().saturating_add(delay));
            st.totals.deleted += 1;
        }
        st.calls.get(call_id).map(Call::report).ok_or(RelayError::UnknownCall)
    }

    fn query(&self, call_id: &str) -> Result<CallReport, RelayError> {
        let mut st = self.lock();
        st.drain_events();
        st.calls.get(call_id).map(Call::report).ok_or(RelayError::UnknownCall)
    }

    fn list(&self, limit: usize) -> Vec<String> {
        let st = self.lock();
        st.calls.keys().take(limit).map(|k| k.to_string()).collect()
    }

    fn flush(&self) {
        self.lock().wake_workers();
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

/// High availability: export sessions as they change, import them on the
/// node that takes over. The import binds the same ports (with
/// `freebind` configured, before this host holds the address), restores the
/// latched sources and continues the statistics.
impl Relay {
    /// Starts recording which calls change, for [`export_changes`](Self::export_changes).
    pub fn track_changes(&self) {
        let mut st = self.lock();
        if st.changed.is_none() {
            st.changed = Some(HashSet::new());
        }
    }

    /// The calls changed since the last call: `Some(record)` for a live
    /// call, `None` for one that ended. Empty unless
    /// [`track_changes`](Self::track_changes) was called.
    pub fn export_changes(&self) -> Vec<(String, Option<SessionRecord>)> {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.drain_events();
        let Some(changed) = st.changed.as_mut() else { return Vec::new() };
        let ids: Vec<Arc<str>> = changed.drain().collect();
        ids.into_iter()
            .map(|id| {
                let rec = st.calls.get(&id).filter(|c| c.delete_at.is_none()).map(Call::record);
                (id.to_string(), rec)
            })
            .collect()
    }

    /// Every live call.
    pub fn export_all(&self) -> Vec<SessionRecord> {
        let mut st = self.lock();
        st.drain_events();
        st.calls.values().filter(|c| c.delete_at.is_none()).map(Call::record).collect()
    }

    /// Installs a call exported by another node on the same ports. Returns
    /// `Ok(false)` when the call is already here.
    ///
    /// # Errors
    /// When a port is outside the range or taken, or binding fails; nothing
    /// of the call is left installed then.
    pub fn import(&self, rec: &SessionRecord) -> Result<bool, RelayError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.drain_events();
        if st.calls.contains_key(rec.call_id.as_str()) {
            return Ok(false);
        }
        let n_if = self.cfg.interfaces.len();
        let id: Arc<str> = Arc::from(rec.call_id.as_str());
        let mut call = Call {
            id: Arc::clone(&id),
            created: rec.created,
            last_signal: unix_now(),
            last_signal_mono: monotonic_ns(),
            tags: rec.tags.clone(),
            iface: rec.iface.map(|i| if i < n_if { i } else { 0 }),
            medias: Vec::with_capacity(rec.medias.len()),
            delete_at: None,
        };
        let mut failed = None;
        for (i, m) in rec.medias.iter().enumerate() {
            match self.install_pair(st, &call, i, m) {
                Ok(p) => call.medias.push(p),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        st.calls.insert(Arc::clone(&id), call);
        if let Some(e) = failed {
            st.destroy(&id);
            st.wake_workers();
            return Err(e);
        }
        st.totals.created += 1;
        st.mark_changed(&id);
        st.wake_workers();
        Ok(true)
    }

    /// Drops every call (a node that stopped being active).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.drain_events();
        let ids: Vec<Arc<str>> = st.calls.keys().cloned().collect();
        for id in ids {
            st.destroy(&id);
        }
        st.wake_workers();
    }

    fn install_pair(
        &self,
        st: &mut State,
        call: &Call,
        index: usize,
        m: &MediaRecord,
    ) -> Result<MediaPair, RelayError> {
        let mut socks: Vec<[UdpSocket; 2]> = Vec::with_capacity(2);
        for leg in 0..2 {
            let port = m.ports[leg];
            let ip = self.cfg.interfaces[call.iface[leg]].local;
            let bound = if st.ports.claim(port) {
                bind_pair(ip, port, self.cfg.socket_rcvbuf, self.cfg.freebind).inspect_err(|_| st.ports.free(port))
            } else {
                Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("port {port} is taken or out of range")))
            };
            match bound {
                Ok(s) => socks.push(s),
                Err(source) => {
                    if leg == 1 {
                        st.ports.free(m.ports[0]);
                    }
                    return Err(RelayError::Io { op: "binding a taken-over session's ports", source });
                }
            }
        }
        let [a, b]: [[UdpSocket; 2]; 2] = socks.try_into().map_err(|_| RelayError::NoPorts)?;
        let mut clock = ClockTable::default();
        for &(pt, rate) in &m.clock {
            clock.insert(pt, rate);
        }
        let start = PairStart {
            peers: std::array::from_fn(|c| if c.is_multiple_of(2) { m.sdp_rtp[c / 2] } else { m.sdp_rtcp[c / 2] }),
            latched: m.latched,
            resume: std::array::from_fn(|c| Some(m.streams[c])),
            clock: Some(clock),
        };
        let State { ports, workers, next_worker, .. } = st;
        let placed =
            self.place_pair(ports, workers, next_worker, &call.id, index, [(m.ports[0], a), (m.ports[1], b)], &start)?;
        Ok(MediaPair {
            worker: placed.worker,
            slot: placed.slot,
            kind: m.kind.clone(),
            protocol: m.protocol.clone(),
            codecs: m.codecs.clone(),
            ports: placed.ports,
            sdp_rtp: m.sdp_rtp,
            sdp_rtcp: m.sdp_rtcp,
            mux: m.mux,
            latched: m.latched,
            shared: placed.shared,
            clock,
            steered: placed.steered,
        })
    }
}

impl Call {
    fn record(&self) -> SessionRecord {
        SessionRecord {
            call_id: self.id.to_string(),
            created: self.created,
            tags: self.tags.clone(),
            iface: self.iface,
            medias: self
                .medias
                .iter()
                .map(|m| MediaRecord {
                    kind: m.kind.clone(),
                    protocol: m.protocol.clone(),
                    codecs: m.codecs.clone(),
                    ports: m.ports,
                    sdp_rtp: m.sdp_rtp,
                    sdp_rtcp: m.sdp_rtcp,
                    mux: m.mux,
                    latched: m.latched,
                    clock: m.clock.entries().collect(),
                    streams: std::array::from_fn(|c| StatsSnapshot { last_packet: 0, ..m.shared[c].read().stats }),
                })
                .collect(),
        }
    }
}

fn housekeeping(relay: &Weak<Relay>, shutdown: &AtomicBool) {
    while !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(HOUSEKEEPING);
        let Some(r) = relay.upgrade() else { return };
        r.housekeep(monotonic_ns());
    }
}
