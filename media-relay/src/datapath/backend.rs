//! What a datapath backend is, and what each of its workers is given: the
//! leaf of [`crate::datapath`], imported by both backends and by the
//! control plane, importing neither backend.
//!
//! - [`Datapath`]: the control plane's view of a backend (start workers,
//!   steer ports, report its counters).
//! - [`WorkerContext`]: the rings, flags and counters a worker runs with;
//!   [`settle`] pins it and sets its scheduling policy; [`Sleep`] is the
//!   wakeup handshake; [`make_poll`] makes the poll the control plane wakes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Poll, Token, Waker};

use crate::control::RelayError;
use crate::counters::PaddedCounters;
use crate::stream::{Command, Event};

/// A way of moving media packets, with its workers.
pub trait Datapath: Send + Sync {
    /// `"socket"` or `"xdp"`, for logs and metrics.
    fn name(&self) -> &'static str;

    /// How many workers it needs, when it decides (one per `AF_XDP` queue);
    /// `None`: as configured.
    fn workers(&self) -> Option<usize> {
        None
    }

    /// Starts worker `ctx.index` on its own thread.
    ///
    /// # Errors
    /// When the thread or its sockets cannot be set up.
    fn spawn_worker(&self, ctx: WorkerContext, poll: mio::Poll) -> Result<JoinHandle<()>, RelayError>;

    /// Starts steering media sent to `local` to the workers. Called when a
    /// port is allocated, before the SDP that advertises it goes out.
    ///
    /// # Errors
    /// When the steering entry cannot be installed (e.g. the map is full).
    fn steer(&self, _local: SocketAddr) -> Result<(), RelayError> {
        Ok(())
    }

    /// Stops steering `local` (the session ended).
    fn unsteer(&self, _local: SocketAddr) {}

    /// Drops every packet from `prefix` in the XDP program (on every
    /// interface it is attached to). `Ok(false)`: this datapath has no XDP
    /// program, nothing was done.
    ///
    /// # Errors
    /// When the ban map refuses the entry (e.g. it is full).
    fn ban(&self, _prefix: &crate::config::BanPrefix) -> Result<bool, RelayError> {
        Ok(false)
    }

    /// Lifts a ban made with [`Datapath::ban`] (never one from
    /// `relay.xdp_bans`). `Ok(false)`: no XDP program.
    ///
    /// # Errors
    /// When the ban map refuses the removal.
    fn unban(&self, _prefix: &crate::config::BanPrefix) -> Result<bool, RelayError> {
        Ok(false)
    }

    /// The XDP program's counters (summed over CPUs and interfaces), if any.
    fn xdp_counters(&self) -> Option<xdp_prog::CounterSnapshot> {
        None
    }

    /// `AF_XDP` queues in copy mode and in zero-copy mode; `None` for a
    /// datapath without `AF_XDP` sockets.
    fn xdp_queue_modes(&self) -> Option<(usize, usize)> {
        None
    }

    /// Interfaces the XDP program is attached to natively (in the driver)
    /// and in generic (skb) mode; `None` without `AF_XDP`.
    fn xdp_attach_modes(&self) -> Option<(usize, usize)> {
        None
    }

    /// Threaded NAPI threads of the `AF_XDP` interfaces that outrank the
    /// real-time workers, and those below them; `None` without `AF_XDP` or
    /// without real-time workers.
    fn xdp_napi_ranks(&self) -> Option<(usize, usize)> {
        None
    }
}

/// Token of the worker's waker (never a channel token).
pub const WAKER: Token = Token(usize::MAX);

/// What a worker needs to run.
pub struct WorkerContext {
    /// Worker number (also the metrics label).
    pub index: usize,
    /// Core to pin to, if any.
    pub core: Option<core_affinity::CoreId>,
    /// Commands from the control plane.
    pub commands: rtrb::Consumer<Command>,
    /// Events to the control plane.
    pub events: rtrb::Producer<Event>,
    /// Latch to any first source (NAT mode) or only to the SDP address.
    pub nat: bool,
    /// `relay.flood_ban_pps` (0: no flood reports).
    pub flood_pps: u32,
    /// Shared counter block.
    pub counters: Arc<PaddedCounters>,
    /// Set to stop the worker.
    pub shutdown: Arc<AtomicBool>,
    /// True while the worker is about to block in poll: the control plane
    /// wakes it only then (see [`Sleep`]).
    pub sleeping: Arc<AtomicBool>,
    /// SIP handoff to the signaling plane (`AF_XDP` datapath with SIP ports).
    pub sip: Option<crate::sip_handoff::SipSender>,
    /// Scheduling policy (`relay.worker_scheduling`).
    pub scheduling: crate::config::Scheduling,
}

/// What every worker does first on its own thread: pin itself to its
/// core and take its scheduling policy. Failures are logged, not fatal.
/// Returns whether the worker now runs at a real-time policy.
pub fn settle(ctx: &WorkerContext) -> bool {
    if let Some(core) = ctx.core {
        if !core_affinity::set_for_current(core) {
            tracing::warn!(worker = ctx.index, core = core.id, "could not pin worker to its core");
        }
    }
    if ctx.scheduling == crate::config::Scheduling::Other {
        return false;
    }
    match crate::sys::set_thread_scheduling(ctx.scheduling) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                worker = ctx.index,
                policy = ?ctx.scheduling,
                error = %e,
                "relay.worker_scheduling could not be applied (needs CAP_SYS_NICE); the worker runs with the default policy"
            );
            false
        }
    }
}

/// The handshake that lets the control plane skip wakeups while a worker is
/// busy: the worker announces it will sleep, then checks its ring; the
/// control plane pushes, then checks the announcement. With sequentially
/// consistent fences one of them always sees the other.
pub struct Sleep;

impl Sleep {
    /// Control side, after pushing commands: whether a wakeup is needed.
    #[must_use]
    pub fn needs_wake(sleeping: &AtomicBool) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        sleeping.swap(false, Ordering::SeqCst)
    }
}

/// Creates the worker's poll and waker (so the control plane can hold the
/// waker before the thread starts).
///
/// # Errors
/// The epoll or eventfd error.
pub fn make_poll() -> std::io::Result<(Poll, Arc<Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    Ok((poll, waker))
}
