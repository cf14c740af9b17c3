//! High availability: export sessions as they change, import them on the
//! node that takes over. The import binds the same ports (with `freebind`
//! configured, before this host holds the address), restores the latched
//! sources and continues the statistics. The records themselves are
//! defined in [`crate::ha`].
//!
//! Ownership: the set of changed calls lives in the relay's state, behind
//! its mutex; it exists only once [`Relay::track_changes`] was called (the
//! replication thread of an HA node), and every control path adds to it.

use std::collections::HashSet;
use std::sync::Arc;

use super::calls::{codec_names, endpoints, join_codecs, label, socket_addrs, Call, MediaPair};
use super::workers::PairStart;
use super::{sockets, unix_now, Relay, State};
use crate::control::RelayError;
use crate::ha::{MediaRecord, SessionRecord};
use crate::stats::StatsSnapshot;
use crate::stream::ClockTable;
use crate::sys::monotonic_ns;

impl Relay {
    /// Starts recording which calls change, for [`export_changes`](Self::export_changes).
    pub fn track_changes(&self) {
        let mut st = self.lock();
        if st.changed.is_none() {
            st.changed = Some(HashSet::new());
        }
    }

    /// The calls changed since the last call: `Some(record)` for a live
    /// call, `None` for one that ended. Empty unless
    /// [`track_changes`](Self::track_changes) was called.
    pub fn export_changes(&self) -> Vec<(String, Option<SessionRecord>)> {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.drain_events();
        let Some(changed) = st.changed.as_mut() else { return Vec::new() };
        let ids: Vec<Arc<str>> = changed.drain().collect();
        ids.into_iter()
            .map(|id| {
                let rec = st.calls.get(&id).filter(|c| c.delete_at.is_none()).map(|c| c.record());
                (id.to_string(), rec)
            })
            .collect()
    }

    /// Every live call.
    pub fn export_all(&self) -> Vec<SessionRecord> {
        let mut st = self.lock();
        st.drain_events();
        st.calls.values().filter(|c| c.delete_at.is_none()).map(|c| c.record()).collect()
    }

    /// Installs a call exported by another node on the same ports. Returns
    /// `Ok(false)` when the call is already here.
    ///
    /// # Errors
    /// When a port is outside the range or taken, or binding fails; nothing
    /// of the call is left installed then.
    pub fn import(&self, rec: &SessionRecord) -> Result<bool, RelayError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.drain_events();
        if st.calls.contains_key(rec.call_id.as_str()) {
            return Ok(false);
        }
        let n_if = self.cfg.interfaces.len();
        let id: Arc<str> = Arc::from(rec.call_id.as_str());
        let mut call = Box::new(Call {
            id: Arc::clone(&id),
            created: rec.created,
            last_signal: unix_now(),
            last_signal_mono: monotonic_ns(),
            tags: rec.tags.clone().map(|t| t.map(String::into_boxed_str)),
            iface: rec.iface.map(|i| if i < n_if { i } else { 0 }),
            medias: Vec::with_capacity(rec.medias.len()),
            delete_at: None,
            // A call taken over with both legs is taken as answered.
            answered: rec.tags[1].is_some().then(monotonic_ns),
        });
        let mut failed = None;
        for (i, m) in rec.medias.iter().enumerate() {
            match self.install_pair(st, &call, i, m) {
                Ok(p) => call.medias.push(p),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        st.calls.insert(Arc::clone(&id), call);
        if let Some(e) = failed {
            st.destroy(&id);
            st.workers.wake();
            return Err(e);
        }
        st.totals.created += 1;
        st.mark_changed(&id);
        st.workers.wake();
        Ok(true)
    }

    /// Drops every call (a node that stopped being active).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.drain_events();
        let ids: Vec<Arc<str>> = st.calls.keys().cloned().collect();
        for id in ids {
            st.destroy(&id);
        }
        st.workers.wake();
    }

    fn install_pair(
        &self,
        st: &mut State,
        call: &Call,
        index: usize,
        m: &MediaRecord,
    ) -> Result<MediaPair, RelayError> {
        let ips = call.iface.map(|k| self.cfg.interfaces[k].local);
        let socks = sockets::bind_claimed(&mut st.ports, ips, m.ports, self.cfg.socket_rcvbuf, self.cfg.freebind)?;
        let mut clock = ClockTable::default();
        for &(pt, rate) in &m.clock {
            clock.insert(pt, rate);
        }
        let start = PairStart {
            peers: std::array::from_fn(|c| if c.is_multiple_of(2) { m.sdp_rtp[c / 2] } else { m.sdp_rtcp[c / 2] }),
            latched: m.latched,
            resume: std::array::from_fn(|c| Some(m.streams[c])),
            clock: Some(clock),
        };
        let placed = st.workers.place(&mut st.ports, (&call.id, index), call.iface, socks, &start)?;
        Ok(MediaPair {
            at: placed.at,
            kind: label(&m.kind),
            protocol: label(&m.protocol),
            codecs: [join_codecs(&m.codecs[0]), join_codecs(&m.codecs[1])],
            ports: placed.ports,
            sdp_rtp: endpoints(m.sdp_rtp),
            sdp_rtcp: endpoints(m.sdp_rtcp),
            mux: m.mux,
            latched: endpoints(m.latched),
            shared: placed.shared,
            clock,
            // Not replicated: scoring and one-way watch start afresh.
            quality: Box::default(),
        })
    }
}

impl Call {
    /// The record an HA peer imports.
    fn record(&self) -> SessionRecord {
        SessionRecord {
            call_id: self.id.to_string(),
            created: self.created,
            tags: self.tags.clone().map(|t| t.map(String::from)),
            iface: self.iface,
            medias: self
                .medias
                .iter()
                .map(|m| MediaRecord {
                    kind: m.kind.to_string(),
                    protocol: m.protocol.to_string(),
                    codecs: [codec_names(&m.codecs[0]), codec_names(&m.codecs[1])],
                    ports: m.ports,
                    sdp_rtp: socket_addrs(m.sdp_rtp),
                    sdp_rtcp: socket_addrs(m.sdp_rtcp),
                    mux: m.mux,
                    latched: socket_addrs(m.latched),
                    clock: m.clock.entries().collect(),
                    streams: std::array::from_fn(|c| StatsSnapshot { last_packet: 0, ..m.shared[c].read().stats }),
                })
                .collect(),
        }
    }
}
