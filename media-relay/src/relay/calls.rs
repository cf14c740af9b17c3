//! The call table: a [`Call`] per Call-ID, a [`MediaPair`] per `m=`
//! section, and the offer, answer and delete logic that changes them.
//!
//! Ownership: calls live in the relay's state, behind its mutex; only
//! control paths (ng, in-process callers, housekeeping) read or write them.
//! A pair's latched sources are copied here from the workers' events; its
//! statistics ([`PairShared`]) are written by its worker and only read here.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use super::quality::{sdp_direction, PairQuality};
use super::sockets;
use super::workers::{PairAt, PairStart, Placed};
use super::{to_nanos, unix_now, Relay, State};
use crate::control::{CallReport, LegReport, MediaReport, RelayError, SdpRequest, StreamReport};
use crate::sdp::{self, Sdp};
use crate::stream::{ClockTable, Endpoint, PairShared};
use crate::sys::monotonic_ns;
use crate::Nanos;

/// Text that is nearly always one of a few values (`audio`, `RTP/AVP`):
/// those are kept without an allocation.
pub(super) type Label = Cow<'static, str>;

/// Media types and transport protocols seen in practice.
const LABELS: [&str; 18] = [
    "audio",
    "video",
    "image",
    "application",
    "text",
    "message",
    "RTP/AVP",
    "RTP/SAVP",
    "RTP/AVPF",
    "RTP/SAVPF",
    "UDP/TLS/RTP/SAVP",
    "UDP/TLS/RTP/SAVPF",
    "udptl",
    "UDP/TLS/UDPTL",
    "UDP/DTLS/SCTP",
    "DTLS/SCTP",
    "TCP/MSRP",
    "TCP/TLS/MSRP",
];

/// `s` as a [`Label`].
pub(super) fn label(s: &str) -> Label {
    LABELS.iter().find(|k| **k == s).map_or_else(|| Cow::Owned(s.to_owned()), |k| Cow::Borrowed(*k))
}

/// A leg's codec names, each followed by one space (as
/// [`crate::sdp::Media::write_codec_names`] writes them): one allocation
/// for the whole list, none when empty.
pub(super) type Codecs = Box<str>;

/// The names of a [`Codecs`].
pub(super) fn codec_names(codecs: &str) -> Vec<String> {
    codecs.split(' ').filter(|c| !c.is_empty()).map(str::to_owned).collect()
}

/// A [`Codecs`] of `names` (which hold no spaces: they come from SDP tokens).
pub(super) fn join_codecs(names: &[String]) -> Codecs {
    names.iter().fold(String::new(), |acc, n| acc + n + " ").into_boxed_str()
}

/// `addrs` as compact [`Endpoint`]s.
pub(super) fn endpoints<const N: usize>(addrs: [Option<SocketAddr>; N]) -> [Option<Endpoint>; N] {
    addrs.map(|a| a.map(Endpoint::from))
}

/// `endpoints` as socket addresses.
pub(super) fn socket_addrs<const N: usize>(endpoints: [Option<Endpoint>; N]) -> [Option<SocketAddr>; N] {
    endpoints.map(|e| e.map(SocketAddr::from))
}

/// One `m=` section of a call: both legs, RTP and RTCP.
pub(super) struct MediaPair {
    /// The worker and slot running it.
    pub at: PairAt,
    pub kind: Label,
    pub protocol: Label,
    pub codecs: [Codecs; 2],
    /// RTP port of each leg's channel pair (RTCP is +1).
    pub ports: [u16; 2],
    /// SDP RTP/RTCP addresses of each leg.
    pub sdp_rtp: [Option<Endpoint>; 2],
    pub sdp_rtcp: [Option<Endpoint>; 2],
    pub mux: [bool; 2],
    /// Latched source of each channel, as last reported by the worker.
    pub latched: [Option<Endpoint>; 4],
    /// Each channel's statistics, written by the worker.
    pub shared: Arc<PairShared>,
    pub clock: ClockTable,
    /// Interval MOS, one-way flags and SDP directions (control side only).
    pub quality: Box<PairQuality>,
}

impl MediaPair {
    /// A pair just placed on a worker, before any SDP of it is applied.
    pub fn new(placed: Placed, kind: &str, protocol: &str) -> Self {
        Self {
            at: placed.at,
            kind: label(kind),
            protocol: label(protocol),
            codecs: [Codecs::default(), Codecs::default()],
            ports: placed.ports,
            sdp_rtp: [None, None],
            sdp_rtcp: [None, None],
            mux: [false, false],
            latched: [None; 4],
            shared: placed.shared,
            clock: ClockTable::default(),
            quality: Box::default(),
        }
    }
}

/// A call: two legs (A offered first, B answered) and their media.
pub(super) struct Call {
    pub id: Arc<str>,
    /// Unix seconds.
    pub created: u64,
    /// Last offer or answer, Unix seconds.
    pub last_signal: u64,
    /// Last offer or answer, monotonic (for the media timeout).
    pub last_signal_mono: Nanos,
    /// Each leg's tag (exact size: `Box<str>`, not `String`).
    pub tags: [Option<Box<str>>; 2],
    /// Interface index of each leg.
    pub iface: [usize; 2],
    pub medias: Vec<MediaPair>,
    /// When a delayed delete takes effect.
    pub delete_at: Option<Nanos>,
    /// When the controller said the call was answered
    /// ([`crate::control::MediaControl::mark_answered`]), monotonic.
    pub answered: Option<Nanos>,
}

impl Relay {
    /// An offer (`answer` false) or an answer: creates the call on a first
    /// offer, applies the SDP to its pairs and returns the rewritten SDP.
    pub(super) fn negotiate(&self, req: &SdpRequest<'_>, answer: bool) -> Result<Vec<u8>, RelayError> {
        let parsed = Sdp::parse(req.sdp)?;
        let mut guard = self.lock();
        let st = &mut *guard;
        st.drain_events();
        let ifaces = self.resolve_direction(req)?;
        let created = if st.calls.contains_key(req.call_id) {
            false
        } else {
            if answer {
                return Err(RelayError::UnknownCall);
            }
            if self.max_sessions() > 0 && st.calls.len() >= self.max_sessions() {
                return Err(RelayError::TooManySessions);
            }
            let id: Arc<str> = Arc::from(req.call_id);
            let now = unix_now();
            st.calls.insert(
                Arc::clone(&id),
                Box::new(Call {
                    id,
                    created: now,
                    last_signal: now,
                    last_signal_mono: monotonic_ns(),
                    tags: [None, None],
                    iface: [ifaces[0].unwrap_or(0), ifaces[1].unwrap_or(0)],
                    medias: Vec::with_capacity(parsed.media.len()),
                    delete_at: None,
                    answered: None,
                }),
            );
            st.totals.created += 1;
            true
        };
        let result = self.negotiate_in(st, req, &parsed, answer);
        if result.is_err() && created {
            st.destroy(req.call_id);
        } else {
            st.mark_changed(req.call_id);
        }
        result
    }

    fn resolve_direction(&self, req: &SdpRequest<'_>) -> Result<[Option<usize>; 2], RelayError> {
        let mut out = [None, None];
        for (i, name) in req.opts.direction.iter().enumerate() {
            if let Some(n) = name {
                out[i] = Some(self.cfg.interface(n).ok_or_else(|| RelayError::UnknownInterface(n.clone()))?);
            }
        }
        Ok(out)
    }

    /// Checks that every anchored media address of `parsed` is of the
    /// family of interface `iface` (the side's), which its socket is bound
    /// in; an interface on an unspecified address takes either.
    fn check_families(&self, parsed: &Sdp, iface: usize) -> Result<(), RelayError> {
        let i = &self.cfg.interfaces[iface];
        let addrs = parsed.media.iter().filter(|m| m.port != 0).filter_map(|m| m.remote_addr(parsed));
        match addrs.filter(|a| !a.is_unspecified()).find(|a| a.is_ipv4() != i.local.is_ipv4()) {
            Some(addr) if !i.local.is_unspecified() => {
                Err(RelayError::FamilyMismatch { interface: i.name.clone(), local: i.local, addr })
            }
            _ => Ok(()),
        }
    }

    fn negotiate_in(
        &self,
        st: &mut State,
        req: &SdpRequest<'_>,
        parsed: &Sdp,
        answer: bool,
    ) -> Result<Vec<u8>, RelayError> {
        let State { calls, ports, workers, .. } = st;
        let call = calls.get_mut(req.call_id).ok_or(RelayError::UnknownCall)?;
        let side = if answer {
            let to = req.to_tag.ok_or(RelayError::MissingKey("to-tag"))?;
            call.side_of(to, req.from_tag, true)
        } else {
            call.side_of(req.from_tag, req.to_tag.unwrap_or(""), false)
        };
        let other = 1 - side;
        self.check_families(parsed, call.iface[side])?;
        call.last_signal = unix_now();
        call.last_signal_mono = monotonic_ns();
        call.delete_at = None;

        let mut rtp_ports = Vec::with_capacity(parsed.media.len());
        let mut rtcp_ports = Vec::with_capacity(parsed.media.len());
        if !answer {
            // Exactly the sections offered: a pair is large, and a call rarely has more.
            call.medias.reserve_exact(parsed.media.len().saturating_sub(call.medias.len()));
        }
        let mut codecs = String::new();
        for (i, m) in parsed.media.iter().enumerate() {
            if i >= call.medias.len() {
                if answer {
                    // An answer cannot add media sections; leave extras alone.
                    rtp_ports.push(None);
                    rtcp_ports.push(None);
                    continue;
                }
                let ips = call.iface.map(|k| self.cfg.interfaces[k].local);
                let socks = sockets::bind_new(ports, ips, self.cfg.socket_rcvbuf, self.cfg.freebind)?;
                let placed = workers.place(ports, (&call.id, i), call.iface, socks, &PairStart::default())?;
                call.medias.push(MediaPair::new(placed, &m.kind, &m.proto));
            }
            let pair = &mut call.medias[i];
            let addr = m.remote_addr(parsed).filter(|a| !a.is_unspecified());
            let rtp = addr.filter(|_| m.port != 0).map(|a| SocketAddr::new(a, m.port));
            let rtcp = match (rtp, m.rtcp) {
                (None, _) => None,
                (Some(r), Some((port, a))) => Some(SocketAddr::new(a.unwrap_or(r.ip()), port)),
                (Some(r), None) => Some(SocketAddr::new(r.ip(), r.port().wrapping_add(1))),
            };
            let moved = pair.sdp_rtp[side] != rtp.map(Endpoint::from);
            pair.sdp_rtp[side] = rtp.map(Endpoint::from);
            pair.sdp_rtcp[side] = rtcp.map(Endpoint::from);
            pair.mux[side] = m.rtcp_mux;
            pair.quality.sdp_dir[side] = sdp_direction(m.direction.as_deref());
            codecs.clear();
            m.write_codec_names(&mut codecs);
            if *pair.codecs[side] != *codecs {
                pair.codecs[side] = codecs.as_str().into();
            }
            for pt in m.formats.iter().filter_map(|f| f.parse::<u8>().ok()) {
                if let Some(rate) = m.clock_rate(pt) {
                    pair.clock.insert(pt, rate);
                }
            }
            if pair.kind != m.kind.as_str() {
                pair.kind = label(&m.kind);
            }
            if pair.protocol != m.proto.as_str() {
                pair.protocol = label(&m.proto);
            }
            for (ch, peer) in [(side * 2, rtp), (side * 2 + 1, rtcp)] {
                if moved {
                    pair.latched[ch] = None;
                }
                workers.set_peer(pair.at, ch, peer, moved, pair.clock)?;
            }
            // The other leg's channels learn the new clock table too.
            for ch in [other * 2, other * 2 + 1] {
                let peer = if ch % 2 == 0 { pair.sdp_rtp[other] } else { pair.sdp_rtcp[other] };
                workers.set_peer(pair.at, ch, peer.map(SocketAddr::from), false, pair.clock)?;
            }
            if m.port == 0 {
                rtp_ports.push(None);
                rtcp_ports.push(None);
            } else {
                let p = pair.ports[other];
                rtp_ports.push(Some(p));
                let both_mux = pair.mux[side] && (pair.mux[other] || !answer);
                rtcp_ports.push(Some(if both_mux { p } else { p + 1 }));
            }
        }
        if !answer {
            call.tags[side] = Some(req.from_tag.into());
        }
        let iface = &self.cfg.interfaces[call.iface[other]];
        let rw = sdp::Rewrite {
            addr: iface.advertised,
            ports: &rtp_ports,
            rtcp_ports: &rtcp_ports,
            replace_origin: req.opts.replace_origin,
            remove_ice: req.opts.ice_remove,
        };
        Ok(sdp::rewrite_parsed(req.sdp, parsed, &rw)?)
    }

    /// Deletes a call now, or marks it for deletion after `delete_delay`.
    pub(super) fn delete_call(&self, call_id: &str) -> Result<CallReport, RelayError> {
        let mut st = self.lock();
        st.drain_events();
        let delay = to_nanos(self.cfg.delete_delay);
        if delay == 0 {
            let r = st.destroy(call_id).ok_or(RelayError::UnknownCall)?;
            st.totals.deleted += 1;
            return Ok(r);
        }
        let call = st.calls.get_mut(call_id).ok_or(RelayError::UnknownCall)?;
        if call.delete_at.is_none() {
            call.delete_at = Some(monotonic_ns().saturating_add(delay));
            st.totals.deleted += 1;
        }
        st.calls.get(call_id).map(|c| c.report()).ok_or(RelayError::UnknownCall)
    }
}

impl State {
    /// Removes a call from the table and tells the workers to close its
    /// sockets; ports are freed when they confirm.
    pub(super) fn destroy(&mut self, call_id: &str) -> Option<CallReport> {
        let call = self.calls.remove(call_id)?;
        if let Some(c) = self.changed.as_mut() {
            c.insert(Arc::clone(&call.id));
        }
        let report = call.report();
        let from_a = call.medias.iter().any(|m| m.shared[0].read().stats.packets > 0);
        let from_b = call.medias.iter().any(|m| m.shared[2].read().stats.packets > 0);
        match (from_a, from_b) {
            (true, true) => self.totals.ended_both += 1,
            (false, false) => self.totals.ended_none += 1,
            _ => self.totals.ended_oneway += 1,
        }
        for m in &call.medias {
            self.workers.remove(m.at, m.ports, call.iface);
        }
        Some(report)
    }
}

impl Call {
    /// Which leg a tag belongs to, assigning it if the call does not know it
    /// yet. `answer` = the tag is the answering side's (to-tag).
    fn side_of(&mut self, tag: &str, other_tag: &str, answer: bool) -> usize {
        if self.tags[0].as_deref() == Some(tag) {
            return 0;
        }
        if self.tags[1].as_deref() == Some(tag) {
            return 1;
        }
        if answer {
            // A new to-tag: the callee (or, after forking, the winning branch).
            self.tags[1] = Some(tag.into());
            return 1;
        }
        if self.tags[0].is_none() {
            return 0;
        }
        if self.tags[0].as_deref() == Some(other_tag) {
            self.tags[1] = Some(tag.into());
            return 1;
        }
        // A re-offer with a from-tag we have never seen: it replaces leg A.
        0
    }

    /// The call's state and statistics, as `query` and `delete` report them.
    pub fn report(&self) -> CallReport {
        let now = monotonic_ns();
        let legs = (0..2)
            .map(|leg| LegReport {
                tag: self.tags[leg].as_deref().unwrap_or_default().to_owned(),
                medias: self
                    .medias
                    .iter()
                    .enumerate()
                    .map(|(i, m)| MediaReport {
                        index: i + 1,
                        kind: m.kind.to_string(),
                        protocol: m.protocol.to_string(),
                        codecs: codec_names(&m.codecs[leg]),
                        quality: m.quality_report(leg, now, self.last_signal_mono),
                        streams: [0, 1].map(|k| {
                            let ch = leg * 2 + k;
                            let sdp = if k == 0 { m.sdp_rtp[leg] } else { m.sdp_rtcp[leg] };
                            StreamReport {
                                local_port: m.ports[leg] + k as u16,
                                endpoint: m.latched[ch].or(sdp).map(SocketAddr::from),
                                advertised: sdp.map(SocketAddr::from),
                                latched: m.latched[ch].is_some(),
                                stats: m.shared[ch].read(),
                            }
                        }),
                    })
                    .collect(),
            })
            .collect();
        CallReport { call_id: self.id.to_string(), created: self.created, last_signal: self.last_signal, legs }
    }
}

#[cfg(test)]
#[test]
fn media_pair_is_compact() {
    // Addresses as 24-byte endpoints, statistics in one allocation per pair.
    // Plus one pointer to the quality state (issue 21).
    assert!(std::mem::size_of::<MediaPair>() <= 360, "{}", std::mem::size_of::<MediaPair>());
}
