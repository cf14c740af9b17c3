//! The control plane's links to the media workers: per worker, the command
//! ring, the event ring, the waker, and the bookkeeping of the pair slots it
//! runs. This is the only part of the control plane that speaks the worker
//! protocol ([`Command`], [`Event`], [`PairSetup`]) and steers ports to the
//! datapath.
//!
//! Ownership: [`Workers`] lives in the relay's state, behind its mutex, so
//! only control paths touch it. Each worker thread owns the other ends of
//! its two rings and the pairs it was handed; it answers with events, which
//! [`Workers::drain`] applies. Commands are pushed without waking anybody;
//! [`Workers::wake`], called once at the end of a control operation, wakes
//! only the workers that were sent something and are asleep.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::RelayConfig;
use crate::control::RelayError;
use crate::counters::PaddedCounters;
use crate::datapath::backend::{make_poll, Sleep, WorkerContext};
use crate::datapath::Datapath;
use crate::ports::PortAllocator;
use crate::stats::StatsSnapshot;
use crate::stream::{ChannelSetup, ClockTable, Command, Event, PairSetup, PairShared};

const COMMAND_RING: usize = 8192;
const EVENT_RING: usize = 65536;

/// Where a pair runs: its worker and its slot in that worker's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PairAt {
    /// Worker index.
    pub worker: usize,
    /// Slot in the worker's table.
    pub slot: u32,
}

/// How the channels of a pair start: empty for a new pair, the exported
/// state for one taken over from an HA peer.
#[derive(Default)]
pub(super) struct PairStart {
    /// Expected peer of each channel (from SDP).
    pub peers: [Option<SocketAddr>; 4],
    /// Source already latched on each channel.
    pub latched: [Option<SocketAddr>; 4],
    /// Statistics each channel continues from.
    pub resume: [Option<StatsSnapshot>; 4],
    /// Clock rates to send along (taken-over pairs).
    pub clock: Option<ClockTable>,
}

/// Where [`Workers::place`] put a pair.
pub(super) struct Placed {
    /// Worker and slot.
    pub at: PairAt,
    /// RTP port of each leg.
    pub ports: [u16; 2],
    /// Published statistics of each channel.
    pub shared: Arc<PairShared>,
}

/// A pair's sockets: per leg, its RTP port and the RTP and RTCP sockets.
pub(super) type BoundPair = [(u16, [UdpSocket; 2]); 2];

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

/// The links to every worker.
pub(super) struct Workers {
    links: Vec<WorkerLink>,
    /// Round-robin start for placing the next pair.
    next: usize,
    /// Told which local addresses carry media (the XDP media-port map).
    datapath: Arc<dyn Datapath>,
    /// Local address of each interface, by index: with a pair's ports, the
    /// addresses steered to the datapath.
    locals: Vec<IpAddr>,
}

/// What [`Workers::start`] returns.
pub(super) struct Started {
    /// The links.
    pub workers: Workers,
    /// Each worker's counter block.
    pub counters: Vec<Arc<PaddedCounters>>,
    /// The worker threads.
    pub threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Spawns `cfg.workers` workers on the datapath, one per core round robin.
    pub fn start(
        cfg: &RelayConfig,
        datapath: &Arc<dyn Datapath>,
        sip: &Arc<crate::sip_handoff::SipHandoff>,
        shutdown: &Arc<AtomicBool>,
    ) -> Result<Started, RelayError> {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let hand_sip = datapath.name() == "xdp" && !cfg.sip_ports.is_empty();
        let mut links = Vec::with_capacity(cfg.workers);
        let mut counters = Vec::with_capacity(cfg.workers);
        let mut threads = Vec::with_capacity(cfg.workers + 1);
        for i in 0..cfg.workers {
            let (poll, waker) = make_poll().map_err(|source| RelayError::Io { op: "creating worker poll", source })?;
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
                flood_pps: cfg.flood_ban_pps,
                counters: Arc::clone(&ctr),
                shutdown: Arc::clone(shutdown),
                scheduling: cfg.worker_scheduling,
                sip: hand_sip
                    .then(|| crate::sip_handoff::SipSender::new(sip.ring(), Arc::clone(sip), cfg.sip_ports.clone())),
            };
            threads.push(datapath.spawn_worker(ctx, poll)?);
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
        let locals = cfg.interfaces.iter().map(|i| i.local).collect();
        let workers = Workers { links, next: 0, datapath: Arc::clone(datapath), locals };
        Ok(Started { workers, counters, threads })
    }

    /// The step a new pair and a taken-over one share: steer the bound ports
    /// (on the interfaces `iface` of each leg) to the datapath, before any
    /// SDP advertises them, hand the sockets to the least-loaded worker, and
    /// record the slot's owner (`call_id`, media `index`). On failure the
    /// ports are freed and nothing is left steered.
    pub fn place(
        &mut self,
        ports: &mut PortAllocator,
        owner: (&Arc<str>, usize),
        iface: [usize; 2],
        socks: BoundPair,
        start: &PairStart,
    ) -> Result<Placed, RelayError> {
        let port_of = [socks[0].0, socks[1].0];
        let free_ports = |ports: &mut PortAllocator| {
            ports.free(port_of[0]);
            ports.free(port_of[1]);
        };
        let steered = self.steered(iface, port_of);
        for (i, local) in steered.iter().enumerate() {
            if let Err(e) = self.datapath.steer(*local) {
                for l in &steered[..i] {
                    self.datapath.unsteer(*l);
                }
                free_ports(ports);
                tracing::warn!(error = %e, "steering a media port failed");
                return Err(e);
            }
        }
        // Least-loaded worker, ties broken round robin.
        let n = self.links.len();
        let first = self.next % n;
        self.next = self.next.wrapping_add(1);
        let wi = (0..n).map(|k| (first + k) % n).min_by_key(|&i| self.links[i].pairs).unwrap_or(0);
        let w = &mut self.links[wi];
        let slot = w.free_slots.pop().unwrap_or_else(|| {
            w.next_slot += 1;
            w.next_slot - 1
        });
        let shared = Arc::new(PairShared::default());
        let [(_, [a_rtp, a_rtcp]), (_, [b_rtp, b_rtcp])] = socks;
        let mk = |socket: UdpSocket, c: usize| ChannelSetup {
            socket,
            peer: start.peers[c],
            latched: start.latched[c],
            resume: start.resume[c],
        };
        let channels = [mk(a_rtp, 0), mk(a_rtcp, 1), mk(b_rtp, 2), mk(b_rtcp, 3)];
        let setup = PairSetup { slot, channels, shared: Arc::clone(&shared) };
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
        w.owners[si] = Some((Arc::clone(owner.0), owner.1));
        w.pairs += 1;
        Ok(Placed { at: PairAt { worker: wi, slot }, ports: port_of, shared })
    }

    /// The local addresses of a pair (RTP and RTCP of both legs), as steered
    /// to the datapath: each leg's interface address with its ports.
    fn steered(&self, iface: [usize; 2], ports: [u16; 2]) -> [SocketAddr; 4] {
        let ip = |leg: usize| self.locals.get(iface[leg]).copied().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        std::array::from_fn(|c| SocketAddr::new(ip(c / 2), ports[c / 2] + (c % 2) as u16))
    }

    /// Tells a pair's channel its new expected peer and the pair's clock
    /// rates; `relatch` forgets the latched source.
    ///
    /// # Errors
    /// [`RelayError::Busy`] when the worker's command ring is full.
    pub fn set_peer(
        &mut self,
        at: PairAt,
        channel: usize,
        peer: Option<SocketAddr>,
        relatch: bool,
        clock: ClockTable,
    ) -> Result<(), RelayError> {
        let w = &mut self.links[at.worker];
        let cmd = Command::SetPeer { slot: at.slot, channel: channel as u8, peer, relatch, clock };
        w.commands.push(cmd).map_err(|_| RelayError::Busy)?;
        w.pending_wake = true;
        Ok(())
    }

    /// Stops steering a pair's addresses (its legs on interfaces `iface`),
    /// forgets its owner and tells its worker to close it. Its ports
    /// (`ports`) are freed when the worker confirms (see [`drain`](Self::drain)).
    pub fn remove(&mut self, at: PairAt, ports: [u16; 2], iface: [usize; 2]) {
        for l in self.steered(iface, ports) {
            self.datapath.unsteer(l);
        }
        let w = &mut self.links[at.worker];
        if let Some(o) = w.owners.get_mut(at.slot as usize) {
            *o = None;
        }
        w.closing.insert(at.slot, ports);
        if w.commands.push(Command::Remove { slot: at.slot }).is_err() {
            w.retry_remove.push(at.slot);
        }
        w.pending_wake = true;
    }

    /// Pushes the removes that found a full ring earlier.
    pub fn retry_removes(&mut self) {
        for w in &mut self.links {
            let pending = std::mem::take(&mut w.retry_remove);
            for slot in pending {
                if w.commands.push(Command::Remove { slot }).is_err() {
                    w.retry_remove.push(slot);
                }
                w.pending_wake = true;
            }
        }
    }

    /// Applies every worker's events: a closed pair frees its ports (in
    /// `ports`) and its slot; a latch is handed to `latched(call_id, media
    /// index, slot, channel, source)` when the slot still has an owner; a
    /// flooding source to `flood`.
    pub fn drain(
        &mut self,
        ports: &mut PortAllocator,
        mut latched: impl FnMut(&Arc<str>, usize, u32, u8, SocketAddr),
        mut flood: impl FnMut(IpAddr),
    ) {
        for w in &mut self.links {
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
                        if let Some((id, idx)) = w.owners.get(slot as usize).and_then(Option::as_ref) {
                            latched(id, *idx, slot, channel, addr);
                        }
                    }
                    Event::Flood { addr } => flood(addr),
                }
            }
        }
    }

    /// Wakes the workers that were sent commands and are asleep. Called
    /// once at the end of every control operation: a busy worker picks the
    /// commands up on its next loop without a wakeup syscall.
    pub fn wake(&mut self) {
        for w in &mut self.links {
            if std::mem::take(&mut w.pending_wake) && Sleep::needs_wake(&w.sleeping) {
                let _ = w.waker.wake();
            }
        }
    }

    /// Wakes every worker (to see the shutdown flag).
    pub fn wake_all(&self) {
        for w in &self.links {
            let _ = w.waker.wake();
        }
    }
}
