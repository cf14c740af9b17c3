//! xsbc media relay: anchored RTP sessions on a socket or `AF_XDP`
//! datapath, driven by the rtpengine-compatible ng control protocol.
//!
//! Layout (one concern per module):
//! - [`config`]: the TOML configuration and its validation.
//! - [`relay`]: the control plane (call table, ports, workers), implementing
//!   [`control::MediaControl`].
//! - `datapath`: the session table both datapaths relay through, the
//!   socket and `AF_XDP` backends (XDP program, UMEM, header rewrite), and
//!   the choice.
//! - `stream`: what control and workers share, and the ring messages.
//! - [`ng`]: the ng protocol codec and server; [`bencode`] its encoding.
//! - [`sdp`]: SDP parsing and the anchoring rewrite.
//! - [`rtp`], `stats`: zero-copy RTP/RTCP views, RFC 3550 statistics.
//! - [`rtcp`]: endpoints' RTCP reports and round trips; [`quality`]: the
//!   E-model (MOS) per direction.
//! - [`metrics`], `counters`: Prometheus exposition of every counter.
//! - [`ha`]: session records exported to and imported from an HA peer.
//! - `ports`: the port allocator. `sys`: the only `unsafe` code (raw
//!   system calls, the UMEM mapping, the handoff ring); [`os`] is what
//!   the binaries and the bench use of it.
//! - [`logging`]: the tracing setup both binaries use.

// The public API: what the sbc, the `media-relay` binary, the bench and
// the tests need, and the parsers (RTP/RTCP, SDP) fuzz targets drive.
// Everything else is the crate's own.
pub mod bencode;
pub mod config;
pub mod control;
pub mod ha;
pub mod logging;
pub mod metrics;
pub mod ng;
pub mod quality;
pub mod relay;
pub mod rtcp;
pub mod rtp;
pub mod sdp;

mod counters;
mod datapath;
mod ports;
mod sip_handoff;
mod stats;
mod stream;
mod sys;

/// What the binaries and the bench need of the operating system layer
/// (`sys`, where all of the crate's `unsafe` lives).
pub mod os {
    pub use crate::sys::{block_signals, hold_cpu_latency, monotonic_ns, wait_for_signal, RecvBatch};
}

/// What tools need to know of the `AF_XDP` datapath's view of the kernel:
/// its neighbour, link and route snapshot and the interfaces' NAPI contexts.
pub mod afxdp {
    /// The kernel's neighbour table and NAPI contexts, as the `AF_XDP`
    /// workers read them.
    pub mod neigh {
        pub use crate::datapath::afxdp::neigh::{napi_contexts, read_snapshot, Napi, Snapshot};
    }
    /// The workers' frame parser and header rewrite (pure functions), for
    /// the fuzz targets.
    pub mod rewrite {
        pub use crate::datapath::afxdp::rewrite::{parse, rewrite, translate, Checksum, Parsed, L2, TRANSLATE_GROWTH};
    }
}

/// Monotonic time in nanoseconds. Always passed in as an argument on the
/// packet path, so parsers and statistics never read a clock themselves.
pub type Nanos = u64;
