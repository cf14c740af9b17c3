//! How media packets move: two backends under one session table, and the
//! choice between them.
//!
//! The control plane ([`crate::relay`]) does not know how packets move: it
//! binds the ports, starts one worker per [`Datapath::workers`] through
//! [`Datapath::spawn_worker`], drives every worker with the same commands
//! (see [`crate::stream`]), and tells the datapath which local addresses
//! carry media ([`Datapath::steer`], before the SDP advertising them is
//! sent; [`Datapath::unsteer`] when the session ends).
//!
//! Layout (imports point one way: backends -> `session`/`device`/`backend`):
//! - [`backend`]: the [`Datapath`] trait and the [`WorkerContext`] every
//!   worker gets (the leaf: it imports no backend).
//! - [`device`]: the batch I/O trait ([`device::Device`]) under the table.
//! - [`session`]: the one session table both backends relay through.
//! - [`flood`]: the per-worker watch for sources flooding a media port.
//! - [`socket`]: [`SocketDatapath`], mio/`recvmmsg` workers.
//! - [`afxdp`]: [`afxdp::AfXdp`], the XDP program steering media to
//!   `AF_XDP` sockets read by its workers.
//! - this module: [`open`], the only place that names both backends.
//!
//! [`open`] picks one from `relay.datapath`: `socket`, `xdp` (an error when
//! XDP cannot run), or `auto` (XDP when it can, else sockets, saying why).

pub mod afxdp;
pub mod backend;
pub mod device;
pub mod flood;
pub mod session;
pub mod socket;

use std::sync::Arc;

pub use backend::Datapath;
pub use socket::SocketDatapath;

use crate::config::{DatapathMode, RelayConfig};
use crate::control::RelayError;

/// Opens the datapath `cfg.datapath` asks for.
///
/// # Errors
/// Only with `datapath = "xdp"`, when XDP cannot run: the error says why.
/// With `auto`, that reason is logged and the socket datapath is used.
pub fn open(cfg: &RelayConfig) -> Result<Arc<dyn Datapath>, RelayError> {
    match cfg.datapath {
        DatapathMode::Socket => Ok(Arc::new(SocketDatapath)),
        DatapathMode::Xdp => match afxdp::AfXdp::open(cfg) {
            Ok(d) => Ok(Arc::new(d)),
            Err(e) => Err(RelayError::Datapath(format!("datapath = \"xdp\", but the AF_XDP datapath cannot run: {e}"))),
        },
        DatapathMode::Auto if cfg.xdp_interfaces.is_empty() => {
            tracing::info!("socket datapath: no relay.xdp_interfaces configured for the AF_XDP datapath");
            Ok(Arc::new(SocketDatapath))
        }
        DatapathMode::Auto => match afxdp::AfXdp::open(cfg) {
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
