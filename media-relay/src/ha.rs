//! What a media session looks like outside the relay, for high
//! availability: the active node exports [`SessionRecord`]s as sessions
//! change and a standby imports them on takeover, binding the same ports
//! (see `Relay::export_changes`, `Relay::import`).
//!
//! The records are plain data (serde), so the replication layer chooses the
//! encoding and the store.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::stats::StatsSnapshot;

/// One call's media state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// SIP Call-ID.
    pub call_id: String,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Tags of leg A (offerer) and leg B.
    pub tags: [Option<String>; 2],
    /// Interface index of each leg.
    pub iface: [usize; 2],
    /// The `m=` sections.
    pub medias: Vec<MediaRecord>,
}

/// One `m=` section: both legs, RTP and RTCP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// `audio`, `video`, ...
    pub kind: String,
    /// Transport protocol.
    pub protocol: String,
    /// Codecs of each leg.
    pub codecs: [Vec<String>; 2],
    /// Local RTP port of each leg (RTCP is +1).
    pub ports: [u16; 2],
    /// SDP RTP address of each leg.
    pub sdp_rtp: [Option<SocketAddr>; 2],
    /// SDP RTCP address of each leg.
    pub sdp_rtcp: [Option<SocketAddr>; 2],
    /// rtcp-mux of each leg.
    pub mux: [bool; 2],
    /// Latched source of each channel (A RTP, A RTCP, B RTP, B RTCP).
    pub latched: [Option<SocketAddr>; 4],
    /// Payload type → clock rate.
    pub clock: Vec<(u8, u32)>,
    /// Statistics of each channel when exported (`last_packet` is zero: a
    /// monotonic time means nothing on another host).
    pub streams: [StatsSnapshot; 4],
}
