//! Dialog state: one well-defined record per call, from the initial INVITE
//! to the end (BYE, failure, CANCEL or timeout). This is the state a backup
//! node will replicate, so everything a call needs lives here, or in the
//! [`DialogRecord`] it is replicated as: the record also carries the call's
//! per-call state kept in indexes elsewhere for speed (the opaque Call-ID
//! shown to a `callid_rewrite` trunk, the CSeq offsets after a carrier's
//! challenge), which a node taking over rebuilds those indexes from.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::caps::{Cap, Caps, SourceCounts};
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
    /// Answered, but the caller's ACK never came within 64×T1: the sbc
    /// sent BYE both ways.
    NoAck,
    /// Answered, but no media either way for `sip.media_timeout_s`: the
    /// sbc sent BYE both ways.
    MediaTimeout,
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
            Self::NoAck => "no-ack",
            Self::MediaTimeout => "media-timeout",
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
    /// The realm it is reached in.
    pub realm: usize,
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
    /// The initial INVITE's CSeq number as the callee saw it (a BYE the sbc
    /// sends the callee goes one above).
    pub invite_cseq: u32,
    /// The caller's own Contact URI, when the callee was given ours in its
    /// place (the call crosses realms): in-dialog requests to the caller
    /// are sent with it as Request-URI.
    pub caller_contact: Option<String>,
    /// The callee's own Contact URI, likewise.
    pub callee_contact: Option<String>,
    /// The INVITE's Vias as the caller sent them, when they were hidden
    /// from the callee: a 2xx retransmitted after its transaction is gone
    /// goes up with them.
    pub caller_vias: Vec<String>,
    /// The remote media relay the call is on (`[[media_relay]]` name);
    /// `None` with the embedded relay or before the offer.
    pub relay: Option<String>,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Dialog {
    /// The CDR record for this dialog ending now.
    #[must_use]
    pub fn cdr(&self, reason: EndReason, end_wall: SystemTime, now: Instant, relay: Value, codecs: &[String]) -> Value {
        let duration = self.answered.map_or(0.0, |a| now.saturating_duration_since(a).as_secs_f64());
        let start = unix(self.started_wall);
        json!({
            "id": crate::cdr::cdr_id(&self.call_id, &self.caller_tag, start),
            "call_id": self.call_id,
            "from": self.from_uri,
            "to": self.to_uri,
            "target": self.target,
            "start": start,
            "answer": self.answered_wall.map(unix),
            "end": unix(end_wall),
            "duration": (duration * 1000.0).round() / 1000.0,
            "end_reason": reason.as_str(),
            "final_code": self.final_code,
            "codecs": codecs,
            "relay": relay,
        })
    }

    /// A 2xx to the INVITE: the dialog is confirmed with the callee's tag.
    pub fn confirm(&mut self, callee_tag: String, code: u16, now: Instant) {
        self.state = DialogState::Confirmed;
        self.callee_tag = Some(callee_tag);
        self.answered = Some(now);
        self.answered_wall = Some(SystemTime::now());
        self.final_code = code;
    }

    /// Which side sent a request with this From-tag: `true` = caller.
    #[must_use]
    pub fn from_caller(&self, from_tag: &str) -> bool {
        from_tag == self.caller_tag
    }

    /// Where a request from the side with `from_tag` goes: the other side,
    /// with that side's own Contact when it was hidden (the Request-URI to
    /// send with).
    #[must_use]
    pub fn toward(&self, from_tag: &str) -> (Option<Peer>, Option<String>) {
        if self.from_caller(from_tag) {
            (self.callee, self.callee_contact.clone())
        } else {
            (Some(self.caller), self.caller_contact.clone())
        }
    }

    /// Keeps the own Contact of the caller (`caller` true) or the callee,
    /// hidden from the other side.
    pub fn keep_contact(&mut self, caller: bool, uri: String) {
        *(if caller { &mut self.caller_contact } else { &mut self.callee_contact }) = Some(uri);
    }
}

/// A dialog as it is replicated to an HA peer: wall-clock times instead of
/// this process's monotonic ones, trunks by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DialogRecord {
    /// Call-ID.
    pub call_id: String,
    /// Caller's From-tag.
    pub caller_tag: String,
    /// Callee's To-tag.
    pub callee_tag: Option<String>,
    /// `true` once a 2xx was seen.
    pub confirmed: bool,
    /// Caller address and transport (`udp`/`tcp`).
    pub caller: (SocketAddr, String),
    /// Callee address and transport.
    pub callee: Option<(SocketAddr, String)>,
    /// Realm index of the caller.
    #[serde(default)]
    pub caller_realm: usize,
    /// Realm index of the callee.
    #[serde(default)]
    pub callee_realm: usize,
    /// The caller's own Contact, when hidden from the callee.
    #[serde(default)]
    pub caller_contact: Option<String>,
    /// The callee's own Contact, when hidden from the caller.
    #[serde(default)]
    pub callee_contact: Option<String>,
    /// From URI.
    pub from_uri: String,
    /// To URI.
    pub to_uri: String,
    /// Target label.
    pub target: String,
    /// Trunk name of the current branch.
    pub trunk: Option<String>,
    /// Media anchored.
    pub media: bool,
    /// Start, Unix seconds.
    pub started: f64,
    /// Answer, Unix seconds.
    pub answered: Option<f64>,
    /// Post-dial delay recorded.
    pub pdd_done: bool,
    /// Last final code.
    pub final_code: u16,
    /// Late offer pending in the ACK.
    pub late_offer: bool,
    /// ACK seen.
    pub acked: bool,
    /// The INVITE's CSeq number (see [`Dialog::invite_cseq`]).
    #[serde(default)]
    pub invite_cseq: u32,
    /// The INVITE's Vias as the caller sent them, when hidden from the
    /// callee (see [`Dialog::caller_vias`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caller_vias: Vec<String>,
    /// The Call-ID a `callid_rewrite` trunk knows the call by (the call's
    /// own for a call the trunk started), when it was shown one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_call_id: Option<String>,
    /// `(From-tag, n)`: a sender's requests go to the carrier with CSeq
    /// shifted by `n` (challenges answered for it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cseq_offsets: Vec<(String, u32)>,
    /// The remote media relay the call is on: the new active keeps driving
    /// it after a takeover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
}

fn proto_name(p: Proto) -> String {
    p.via_name().to_ascii_lowercase()
}

fn proto_of(s: &str) -> Proto {
    Proto::from_name(s).unwrap_or(Proto::Udp)
}

impl Dialog {
    /// The record replicated for this dialog, without the state kept
    /// outside it (`external_call_id`, `cseq_offsets`: the proxy adds them).
    #[must_use]
    pub fn record(&self, trunk_name: Option<&str>) -> DialogRecord {
        DialogRecord {
            call_id: self.call_id.clone(),
            caller_tag: self.caller_tag.clone(),
            callee_tag: self.callee_tag.clone(),
            confirmed: self.state == DialogState::Confirmed,
            caller: (self.caller.addr, proto_name(self.caller.proto)),
            callee: self.callee.map(|c| (c.addr, proto_name(c.proto))),
            caller_realm: self.caller.realm,
            callee_realm: self.callee.map_or(0, |c| c.realm),
            caller_contact: self.caller_contact.clone(),
            callee_contact: self.callee_contact.clone(),
            from_uri: self.from_uri.clone(),
            to_uri: self.to_uri.clone(),
            target: self.target.clone(),
            trunk: trunk_name.map(str::to_owned),
            media: self.media,
            started: unix(self.started_wall),
            answered: self.answered_wall.map(unix),
            pdd_done: self.pdd_done,
            final_code: self.final_code,
            late_offer: self.late_offer,
            acked: self.acked,
            invite_cseq: self.invite_cseq,
            caller_vias: self.caller_vias.clone(),
            external_call_id: None,
            cseq_offsets: Vec::new(),
            relay: self.relay.clone(),
        }
    }

    /// The From-tags this dialog's requests come with: the caller's, and
    /// the callee's once known.
    pub fn sender_tags(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.caller_tag.as_str()).chain(self.callee_tag.as_deref())
    }

    /// A dialog taken over from another node, with monotonic times rebuilt
    /// from the wall clock. `trunk` is the index of the record's trunk name.
    #[must_use]
    pub fn from_record(r: &DialogRecord, trunk: Option<usize>, now: Instant, wall_now: SystemTime) -> Self {
        let wall = |t: f64| UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0));
        let mono = |t: f64| {
            let ago = wall_now.duration_since(wall(t)).unwrap_or_default();
            now.checked_sub(ago).unwrap_or(now)
        };
        Self {
            call_id: r.call_id.clone(),
            caller_tag: r.caller_tag.clone(),
            callee_tag: r.callee_tag.clone(),
            state: if r.confirmed { DialogState::Confirmed } else { DialogState::Early },
            caller: Peer { addr: r.caller.0, proto: proto_of(&r.caller.1), realm: r.caller_realm },
            callee: r.callee.as_ref().map(|(a, p)| Peer { addr: *a, proto: proto_of(p), realm: r.callee_realm }),
            from_uri: r.from_uri.clone(),
            to_uri: r.to_uri.clone(),
            target: r.target.clone(),
            trunk,
            media: r.media,
            started: mono(r.started),
            started_wall: wall(r.started),
            answered: r.answered.map(mono),
            answered_wall: r.answered.map(wall),
            pdd_done: r.pdd_done,
            final_code: r.final_code,
            last_activity: now,
            late_offer: r.late_offer,
            codecs: Vec::new(),
            acked: r.acked,
            ok_sent: u32::from(r.confirmed),
            invite_cseq: r.invite_cseq,
            caller_contact: r.caller_contact.clone(),
            callee_contact: r.callee_contact.clone(),
            caller_vias: r.caller_vias.clone(),
            relay: r.relay.clone(),
        }
    }
}

/// Dialogs keyed by Call-ID (one dialog per Call-ID: the sbc does not fork
/// in parallel, so a call has one confirmed dialog).
#[derive(Debug, Default)]
pub struct Dialogs {
    map: HashMap<String, Dialog>,
    /// Call-IDs touched since the last [`take_changed`](Self::take_changed);
    /// `None` unless an HA peer replicates them.
    changed: Option<HashSet<String>>,
    /// Dialogs by their caller's address, in step with `map`.
    by_source: SourceCounts,
    /// Of those, the ones whose INVITE carried an offer anchored at the
    /// relay (media sessions).
    media_by_source: SourceCounts,
}

impl Dialogs {
    /// Empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts recording which dialogs change.
    pub fn track_changes(&mut self) {
        if self.changed.is_none() {
            self.changed = Some(HashSet::new());
        }
    }

    /// The Call-IDs changed (inserted, modified or removed) since the last call.
    pub fn take_changed(&mut self) -> Vec<String> {
        self.changed.as_mut().map(|c| c.drain().collect()).unwrap_or_default()
    }

    /// Records that the dialog of `call_id`, if there is one, changed in
    /// state kept outside it (its record is written again).
    pub fn mark_changed(&mut self, call_id: &str) {
        if self.map.contains_key(call_id) {
            self.touch(call_id);
        }
    }

    fn touch(&mut self, call_id: &str) {
        if let Some(c) = self.changed.as_mut() {
            if !c.contains(call_id) {
                c.insert(call_id.to_owned());
            }
        }
    }

    /// Every dialog.
    pub fn iter(&self) -> impl Iterator<Item = &Dialog> {
        self.map.values()
    }

    /// Forgets every dialog without recording the removals (a node that
    /// stopped being active: the new active owns them).
    pub fn clear(&mut self) {
        self.map.clear();
        self.by_source.clear();
        self.media_by_source.clear();
        if let Some(c) = self.changed.as_mut() {
            c.clear();
        }
    }

    /// Inserts (or replaces) a dialog.
    pub fn insert(&mut self, d: Dialog) {
        self.touch(&d.call_id);
        self.count(&d, true);
        if let Some(old) = self.map.insert(d.call_id.clone(), d) {
            self.count(&old, false);
        }
    }

    fn count(&mut self, d: &Dialog, add: bool) {
        let ip = d.caller.addr.ip();
        let sets: &mut [&mut SourceCounts] =
            if d.media { &mut [&mut self.by_source, &mut self.media_by_source] } else { &mut [&mut self.by_source] };
        for c in sets.iter_mut() {
            if add {
                c.add(ip);
            } else {
                c.remove(ip);
            }
        }
    }

    /// Whether a new call from `ip` (with an offer to anchor, `media`)
    /// fits under the dialog and media-session caps.
    ///
    /// # Errors
    /// The cap it would break.
    pub fn admit(&self, caps: &Caps, ip: IpAddr, media: bool) -> Result<(), Cap> {
        self.by_source.admit(
            ip,
            1,
            (caps.max_dialogs, caps.max_dialogs_per_source),
            (Cap::Dialogs, Cap::DialogsPerSource),
        )?;
        if media {
            let limits = (caps.max_media_sessions, caps.max_media_sessions_per_source);
            self.media_by_source.admit(ip, 1, limits, (Cap::MediaSessions, Cap::MediaSessionsPerSource))?;
        }
        Ok(())
    }

    /// Dialogs whose caller is `ip`, and in all; media sessions likewise.
    #[must_use]
    pub fn counts(&self, ip: IpAddr) -> [(usize, usize); 2] {
        [(self.by_source.of(ip), self.by_source.total()), (self.media_by_source.of(ip), self.media_by_source.total())]
    }

    /// The dialog of a Call-ID whose tags match (either direction). A
    /// request without a To-tag matches while the callee tag is unknown.
    pub fn find_mut(&mut self, call_id: &str, from_tag: &str, to_tag: Option<&str>) -> Option<&mut Dialog> {
        let d = self.map.get(call_id)?;
        let ok = match to_tag {
            Some(t) => {
                (d.caller_tag == from_tag && d.callee_tag.as_deref().is_none_or(|c| c == t))
                    || (d.caller_tag == t && d.callee_tag.as_deref() == Some(from_tag))
            }
            None => d.caller_tag == from_tag,
        };
        if ok {
            self.touch(call_id);
            self.map.get_mut(call_id)
        } else {
            None
        }
    }

    /// Removes a dialog.
    pub fn remove(&mut self, call_id: &str) -> Option<Dialog> {
        let d = self.map.remove(call_id)?;
        self.count(&d, false);
        self.touch(call_id);
        Some(d)
    }

    /// Read access.
    #[must_use]
    pub fn get(&self, call_id: &str) -> Option<&Dialog> {
        self.map.get(call_id)
    }

    /// Mutable access by Call-ID alone.
    pub fn get_mut(&mut self, call_id: &str) -> Option<&mut Dialog> {
        if self.map.contains_key(call_id) {
            self.touch(call_id);
        }
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
