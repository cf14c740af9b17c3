//! xsbc media relay: anchored RTP sessions on a socket datapath, driven by
//! the rtpengine-compatible ng control protocol.
//!
//! Layout (one concern per module):
//! - [`bencode`]: the bencode codec used by the ng protocol.
//! - [`sdp`]: SDP parsing and the anchoring rewrite.
//! - [`rtp`]: zero-copy RTP/RTCP header views.
//! - [`stats`]: RFC 3550 per-direction statistics (loss, jitter, ...).

pub mod bencode;
pub mod rtp;
pub mod sdp;
pub mod stats;

/// Monotonic time in nanoseconds. Always passed in as an argument on the
/// packet path, so parsers and statistics never read a clock themselves.
pub type Nanos = u64;
