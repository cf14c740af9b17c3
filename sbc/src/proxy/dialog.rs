//! Dialog state: one well-defined record per call, from the initial INVITE
//! to the end (BYE, failure, CANCEL or timeout). This is the state a backup
//! node will replicate, so everything a call needs lives here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::transport::Proto;

/// Where a dialog stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// INVITE sent, no 2xx yet.
    Early,
    /// 2xx seen.
    Confirmed,
}

/// How a call ended, for the CDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// BYE from the caller.
    CallerBye,
    /// BYE from the callee.
    CalleeBye,
    /// CANCEL before answer.
    Cancel,
    /// A final error response.
    Failed,
    /// No BYE within the dialog timeout, or the INVITE timed out.
    Timeout,
}

impl EndReason {
    /// The CDR string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CallerBye => "caller-bye",
            Self::CalleeBye => "callee-bye",
            Self::Cancel => "cancel",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
        }
    }
}

/// One side of a dialog: where to reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Network address (the source it sent from, for NAT).
    pub addr: SocketAddr,
    /// Transport.
    pub proto: Proto,
}

/// A call's dialog.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// From-tag of the caller.
    pub caller_tag: String,
    /// To-tag of the callee, once known.
    pub callee_tag: Option<String>,
    /// State.
    pub state: DialogState,
    /// Caller side.
    pub caller: Peer,
    /// Callee side (the branch that answered or is being tried).
    pub callee: Option<Peer>,
    /// From URI (for the CDR).
    pub from_uri: String,
    /// To URI (for the CDR).
    pub to_uri: String,
    /// Trunk name or `user:<aor>` of the current branch.
    pub target: String,
    /// Trunk index of the current branch.
    pub trunk: Option<usize>,
    /// Whether media is anchored in the relay.
    pub media: bool,
    /// Monotonic start (INVITE received).
    pub started: Instant,
    /// Wall-clock start.
    pub started_wall: SystemTime,
    /// Monotonic answer time.
    pub answered: Option<Instant>,
    /// Wall-clock answer time.
    pub answered_wall: Option<SystemTime>,
    /// Whether post-dial delay was recorded.
    pub pdd_done: bool,
    /// Last final response code seen for the INVITE.
    pub final_code: u16,
    /// Last in-dialog activity (monotonic).
    pub last_activity: Instant,
    /// The INVITE had no SDP: the 2xx carries the offer and the ACK the answer.
    pub late_offer: bool,
    /// Codecs negotiated (filled from the relay when the call ends).
    pub codecs: Vec<String>,
    /// The ACK for the 2xx passed through.
    pub acked: bool,
    /// 2xx responses sent upstream so far (retransmissions included).
    pub ok_sent: u32,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Dialog {
    /// The CDR record for this dialog ending now.
    #[must_use]
    pub fn cdr(&self, reason: EndReason, end_wall: SystemTime, now: Instant, relay: Value, codecs: &[String]) -> Value {
        let duration = self.answered.map_or(0.0, |a| now.saturating_duration_since(a).as_secs_f64());
        json!({
            "call_id": self.call_id,
            "from": self.from_uri,
            "to": self.to_uri,
            "target": self.target,
            "start": unix(self.started_wall),
            "answer": self.answered_wall.map(unix),
            "end": unix(end_wall),
            "duration": (duration * 1000.0).round() / 1000.0,
            "end_reason": reason.as_str(),
            "final_code": self.final_code,
            "codecs": codecs,
            "relay": relay,
        })
    }

    /// Which side sent a request with this From-tag: `true` = caller.
    #[must_use]
    pub fn from_caller(&self, from_tag: &str) -> bool {
        from_tag == self.caller_tag
    }
}

/// Dialogs keyed by Call-ID (one dialog per Call-ID: the sbc does not fork
/// in parallel, so a call has one confirmed dialog).
#[derive(Debug, Default)]
pub struct Dialogs {
    map: HashMap<String, Dialog>,
}

impl Dialogs {
    /// Empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts (or replaces) a dialog.
    pub fn insert(&mut self, d: Dialog) {
        self.map.insert(d.call_id.clone(), d);
    }

    /// The dialog of a Call-ID whose tags match (either direction). A
    /// request without a To-tag matches while the callee tag is unknown.
    pub fn find_mut(&mut self, call_id: &str, from_tag: &str, to_tag: Option<&str>) -> Option<&mut Dialog> {
        let d = self.map.get_mut(call_id)?;
        let ok = match to_tag {
            Some(t) => {
                (d.caller_tag == from_tag && d.callee_tag.as_deref().is_none_or(|c| c == t))
                    || (d.caller_tag == t && d.callee_tag.as_deref() == Some(from_tag))
            }
            None => d.caller_tag == from_tag,
        };
        if ok {
            Some(d)
        } else {
            None
        }
    }

    /// Removes a dialog.
    pub fn remove(&mut self, call_id: &str) -> Option<Dialog> {
        self.map.remove(call_id)
    }

    /// Read access.
    #[must_use]
    pub fn get(&self, call_id: &str) -> Option<&Dialog> {
        self.map.get(call_id)
    }

    /// Mutable access by Call-ID alone.
    pub fn get_mut(&mut self, call_id: &str) -> Option<&mut Dialog> {
        self.map.get_mut(call_id)
    }

    /// Call-IDs of dialogs idle past `max_idle` at `now`.
    #[must_use]
    pub fn idle(&self, now: Instant, max_idle: std::time::Duration) -> Vec<String> {
        self.map
            .values()
            .filter(|d| now.saturating_duration_since(d.last_activity) > max_idle)
            .map(|d| d.call_id.clone())
            .collect()
    }

    /// Number of dialogs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
