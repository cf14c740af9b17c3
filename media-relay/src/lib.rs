//! xsbc media relay: anchored RTP sessions on a socket or `AF_XDP`
//! datapath, driven by the rtpengine-compatible ng control protocol.
//!
//! Layout (one concern per module):
//! - [`config`]: the TOML configuration and its validation.
//! - [`relay`]: the control plane (call table, ports, workers), implementing
//!   [`control::MediaControl`].
//! - [`datapath`]: the session table both datapaths relay through, the
//!   socket and `AF_XDP` backends (XDP program, UMEM, header rewrite), and
//!   the choice. [`worker`] and [`afxdp`] are its old paths.
//! - [`stream`]: what control and workers share, and the ring messages.
//! - [`ng`]: the ng protocol codec and server; [`bencode`] its encoding.
//! - [`sdp`]: SDP parsing and the anchoring rewrite.
//! - [`rtp`], [`stats`]: zero-copy RTP/RTCP views, RFC 3550 statistics.
//! - [`metrics`], [`counters`]: Prometheus exposition of every counter.
//! - [`ha`]: session records exported to and imported from an HA peer.
//! - [`ports`]: the port allocator. [`sys`]: the only `unsafe` code (raw
//!   system calls, the UMEM mapping, the handoff ring).
//! - [`logging`]: the tracing setup both binaries use.

pub mod bencode;
pub mod config;
pub mod control;
pub mod counters;
pub mod datapath;
pub mod ha;
pub mod logging;
pub mod metrics;
pub mod ng;
pub mod ports;
pub mod relay;
pub mod rtp;
pub mod sdp;
pub mod sip_handoff;
pub mod stats;
pub mod stream;
pub mod sys;
pub mod worker;

pub use datapath::afxdp;

/// Monotonic time in nanoseconds. Always passed in as an argument on the
/// packet path, so parsers and statistics never read a clock themselves.
pub type Nanos = u64;
