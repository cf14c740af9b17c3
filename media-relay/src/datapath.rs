//! The one I/O trait both datapaths implement, and the choice between them.
//!
//! The control plane ([`crate::relay`]) does not know how packets move: it
//! binds the ports, starts one worker per [`Datapath::workers`] through
//! [`Datapath::spawn_worker`], drives every worker with the same commands
//! (see [`crate::stream`]), and tells the datapath which local addresses
//! carry media ([`Datapath::steer`], before the SDP advertising them is
//! sent; [`Datapath::unsteer`] when the session ends).
//!
//! - [`SocketDatapath`]: the mio/`recvmmsg` workers of [`crate::worker`].
//! - [`crate::afxdp::AfXdp`]: the XDP program steering media to `AF_XDP`
//!   sockets read by the workers of [`crate::afxdp`].
//!
//! [`open`] picks one from `relay.datapath`: `socket`, `xdp` (an error when
//! XDP cannot run), or `auto` (XDP when it can, else sockets, saying why).

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::{DatapathMode, RelayConfig};
use crate::control::RelayError;
use crate::worker::{self, WorkerContext};

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

/// UDP sockets polled with mio, `recvmmsg`/`sendmmsg` in batches.
#[derive(Debug, Default, Clone, Copy)]
pub struct SocketDatapath;

impl Datapath for SocketDatapath {
    fn name(&self) -> &'static str {
        "socket"
    }

    fn spawn_worker(&self, ctx: WorkerContext, poll: mio::Poll) -> Result<JoinHandle<()>, RelayError> {
        std::thread::Builder::new()
            .name(format!("mr-worker-{}", ctx.index))
            .spawn(move || worker::run(ctx, poll))
            .map_err(|source| RelayError::Io { op: "spawning worker thread", source })
    }
}

/// Opens the datapath `cfg.datapath` asks for.
///
/// # Errors
/// Only with `datapath = "xdp"`, when XDP cannot run: the error says why.
/// With `auto`, that reason is logged and the socket datapath is used.
pub fn open(cfg: &RelayConfig) -> Result<Arc<dyn Datapath>, RelayError> {
    match cfg.datapath {
        DatapathMode::Socket => Ok(Arc::new(SocketDatapath)),
        DatapathMode::Xdp => match crate::afxdp::AfXdp::open(cfg) {
            Ok(d) => Ok(Arc::new(d)),
            Err(e) => Err(RelayError::Datapath(format!("datapath = \"xdp\", but the AF_XDP datapath cannot run: {e}"))),
        },
        DatapathMode::Auto if cfg.xdp_interfaces.is_empty() => {
            tracing::info!("socket datapath: no relay.xdp_interfaces configured for the AF_XDP datapath");
            Ok(Arc::new(SocketDatapath))
        }
        DatapathMode::Auto => match crate::afxdp::AfXdp::open(cfg) {
            Ok(d) => Ok(Arc::new(d)),
            Err(e) => {
                tracing::warn!(reason = %e, "AF_XDP datapath unavailable; falling back to the socket datapath");
                if !cfg.xdp_bans.is_empty() {
                    tracing::warn!(
                        prefixes = cfg.xdp_bans.len(),
                        "relay.xdp_bans are NOT enforced: the socket datapath has no XDP program to drop them"
                    );
                }
                Ok(Arc::new(SocketDatapath))
            }
        },
    }
}
