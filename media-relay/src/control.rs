//! The `MediaControl` trait: offer, answer, delete and query with the same
//! semantics as the ng protocol, so the signaling plane can drive the relay in
//! process and the ng server is a thin codec over the same calls.

use std::net::SocketAddr;

pub use crate::stream::DirSnapshot;

/// Errors of relay operations. Their `Display` text is what the ng protocol
/// returns as `error-reason`.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No call with this call-id.
    #[error("Unknown call-id")]
    UnknownCall,
    /// A tag that this call does not have.
    #[error("Unknown tag")]
    UnknownTag,
    /// The SDP could not be parsed.
    #[error("Failed to parse SDP: {0}")]
    BadSdp(#[from] crate::sdp::SdpError),
    /// The port range is exhausted.
    #[error("Ran out of ports")]
    NoPorts,
    /// The configured session limit is reached.
    #[error("Too many sessions")]
    TooManySessions,
    /// A worker's command ring is full.
    #[error("Relay busy, try again")]
    Busy,
    /// An ng `direction` named an interface that is not configured.
    #[error("Unknown interface `{0}` in direction")]
    UnknownInterface(String),
    /// The SDP's media address is of another family than the leg's
    /// interface (an IPv4 peer on an IPv6 interface, or the reverse):
    /// media could not flow.
    #[error("Address {addr} in the SDP is not of the family of interface `{interface}` ({local})")]
    FamilyMismatch {
        /// The leg's interface name.
        interface: String,
        /// Its local address.
        local: std::net::IpAddr,
        /// The SDP's address.
        addr: std::net::IpAddr,
    },
    /// A required key is missing (ng layer).
    #[error("Missing key `{0}`")]
    MissingKey(&'static str),
    /// The datapath could not start or steer a port.
    #[error("{0}")]
    Datapath(String),
    /// A socket operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Options that shape the SDP rewrite (ng `flags`, `replace`, `ICE`, `direction`).
#[derive(Debug, Clone)]
pub struct SdpOptions {
    /// Also rewrite the `o=` address (`replace: [origin]`).
    pub replace_origin: bool,
    /// Remove ICE attributes (`ICE: remove`; the default).
    pub ice_remove: bool,
    /// Interface names for the offering and the answering side (`direction`).
    pub direction: [Option<String>; 2],
}

impl Default for SdpOptions {
    fn default() -> Self {
        Self { replace_origin: false, ice_remove: true, direction: [None, None] }
    }
}

/// An offer or an answer.
#[derive(Debug, Clone)]
pub struct SdpRequest<'a> {
    /// SIP Call-ID.
    pub call_id: &'a str,
    /// From-tag.
    pub from_tag: &'a str,
    /// To-tag (required for an answer).
    pub to_tag: Option<&'a str>,
    /// The SDP body.
    pub sdp: &'a [u8],
    /// Rewrite options.
    pub opts: SdpOptions,
}

/// Statistics of one receiving stream of a leg (packets *from* that leg).
#[derive(Debug, Clone)]
pub struct StreamReport {
    /// Local port the leg sends to.
    pub local_port: u16,
    /// Latched source, else the SDP address.
    pub endpoint: Option<SocketAddr>,
    /// The address from the leg's SDP.
    pub advertised: Option<SocketAddr>,
    /// Whether the source is latched.
    pub latched: bool,
    /// Counters and RFC 3550 figures.
    pub stats: DirSnapshot,
}

/// One `m=` section of a leg.
#[derive(Debug, Clone)]
pub struct MediaReport {
    /// 1-based `m=` index.
    pub index: usize,
    /// `audio`, `video`, ...
    pub kind: String,
    /// Transport protocol (`RTP/AVP`, `RTP/SAVP`, ...).
    pub protocol: String,
    /// Codecs from the leg's SDP (`PCMU/8000`, ...).
    pub codecs: Vec<String>,
    /// RTP then RTCP.
    pub streams: [StreamReport; 2],
    /// Quality of the media *from* this leg (to the other), see
    /// [`QualityReport`].
    pub quality: QualityReport,
}

/// Quality of one direction of one `m=` section (media from one leg to the
/// other), scored by the relay's control plane every interval (see
/// [`crate::quality`] and `docs/quality.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QualityReport {
    /// The last interval's MOS; 0 before the first scored interval.
    pub mos: f64,
    /// Lowest interval MOS; 0 before the first.
    pub mos_min: f64,
    /// Mean interval MOS; 0 before the first.
    pub mos_mean: f64,
    /// Intervals scored.
    pub intervals: u32,
    /// Loss over the call so far, percent: the relay's count, or the
    /// receiving endpoint's RTCP cumulative count when larger.
    pub loss_pct: f64,
    /// Current interarrival jitter, ms (relay's view or receiver's report,
    /// the larger).
    pub jitter_ms: f64,
    /// Highest jitter seen at an interval, ms.
    pub jitter_max_ms: f64,
    /// Round trip sender - relay - receiver from RTCP, ms; `None` when
    /// neither leg's RTCP gave one.
    pub rtt_ms: Option<f64>,
    /// Flagged as one-way audio: the other direction flowed while this one
    /// was silent for `relay.one_way_after_s`.
    pub one_way: bool,
    /// The SDP of either leg disables this direction (hold: `sendonly`,
    /// `recvonly`, `inactive`, or no address).
    pub held: bool,
    /// Milliseconds since the last packet of this direction (or since the
    /// last offer/answer, if later).
    pub idle_ms: u64,
}

/// One leg (tag) of a call.
#[derive(Debug, Clone)]
pub struct LegReport {
    /// The tag; empty while the answering side is unknown.
    pub tag: String,
    /// Its media sections.
    pub medias: Vec<MediaReport>,
}

/// A call's state and statistics.
#[derive(Debug, Clone)]
pub struct CallReport {
    /// Call-ID.
    pub call_id: String,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Last offer/answer, Unix seconds.
    pub last_signal: u64,
    /// Both legs.
    pub legs: Vec<LegReport>,
}

impl CallReport {
    /// Sums over RTP (`rtcp = false`) or RTCP streams of all legs:
    /// `(packets, bytes, foreign drops)`.
    #[must_use]
    pub fn totals(&self, rtcp: bool) -> (u64, u64, u64) {
        let idx = usize::from(rtcp);
        self.legs.iter().flat_map(|l| &l.medias).fold((0, 0, 0), |acc, m| {
            let s = &m.streams[idx].stats;
            (acc.0 + s.stats.packets, acc.1 + s.stats.bytes, acc.2 + s.foreign_drops)
        })
    }
}

/// Something the relay's quality watch found (see
/// [`MediaControl::take_quality_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QualityEvent {
    /// An answered call's media flowed one way only for
    /// `relay.one_way_after_s`: the direction from the leg tagged
    /// `silent_tag` stayed silent while the other flowed.
    OneWay {
        /// Call-ID.
        call_id: String,
        /// 1-based `m=` index.
        media: usize,
        /// The tag of the leg that sends nothing.
        silent_tag: String,
    },
}

/// Relay-wide figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayTotals {
    /// Calls in the table.
    pub sessions: usize,
    /// Port pairs allocated.
    pub port_pairs_in_use: usize,
    /// Port pairs in the range.
    pub port_pairs_total: usize,
    /// Calls created since start.
    pub created: u64,
    /// Calls deleted by command.
    pub deleted: u64,
    /// Calls deleted by the media timeout.
    pub timed_out: u64,
    /// Ended calls that had media both ways.
    pub ended_both: u64,
    /// Ended calls that had media one way only.
    pub ended_oneway: u64,
    /// Ended calls that had no media.
    pub ended_none: u64,
    /// Media directions flagged as one-way audio.
    pub one_way_audio: u64,
}

/// Drives the relay: the in-process equivalent of the ng protocol.
pub trait MediaControl: Send + Sync {
    /// Handles an SDP offer; returns the rewritten SDP for the other side.
    ///
    /// # Errors
    /// See [`RelayError`].
    fn offer(&self, req: &SdpRequest<'_>) -> Result<Vec<u8>, RelayError>;
    /// Handles an SDP answer; returns the rewritten SDP for the offerer.
    ///
    /// # Errors
    /// See [`RelayError`].
    fn answer(&self, req: &SdpRequest<'_>) -> Result<Vec<u8>, RelayError>;
    /// Deletes a call (the whole call; tags are accepted for compatibility).
    ///
    /// # Errors
    /// [`RelayError::UnknownCall`].
    fn delete(&self, call_id: &str, from_tag: Option<&str>) -> Result<CallReport, RelayError>;
    /// Reports a call.
    ///
    /// # Errors
    /// [`RelayError::UnknownCall`].
    fn query(&self, call_id: &str) -> Result<CallReport, RelayError>;
    /// Lists call-ids, at most `limit`.
    fn list(&self, limit: usize) -> Vec<String>;
    /// Relay-wide figures.
    fn totals(&self) -> RelayTotals;
    /// Hands the queued changes to the workers (one wakeup for a batch of
    /// commands). Callers that issue several commands in a row call it once
    /// at the end; a worker also picks changes up by itself within 50 ms.
    fn flush(&self) {}
    /// The name of the relay that holds `call_id`, when the implementation
    /// spreads calls over several relays (the sbc's pool of remote relays);
    /// `None` for a single relay.
    fn placement(&self, _call_id: &str) -> Option<String> {
        None
    }
    /// Pins `call_id` to the relay named `relay` (an HA standby taking over
    /// a call keeps driving the relay the call is on). Ignored by a single
    /// relay.
    fn place(&self, _call_id: &str, _relay: &str) {}
    /// The call was answered (a 2xx to the INVITE): from now on, and not
    /// during early media, it is watched for one-way audio. A controller
    /// that never calls this (ng) has calls watched from their answer SDP.
    fn mark_answered(&self, call_id: &str) {
        let _ = call_id;
    }
    /// The quality events (one-way audio) found since the last call, each
    /// once. The default (a relay without a quality watch) has none.
    fn take_quality_events(&self) -> Vec<QualityEvent> {
        Vec::new()
    }
    /// Call-IDs of calls whose media has stopped in every direction for at
    /// least `idle` (no RTP either way, and no offer/answer, for that
    /// long). The default finds none.
    fn idle_calls(&self, idle: std::time::Duration) -> Vec<String> {
        let _ = idle;
        Vec::new()
    }
}
