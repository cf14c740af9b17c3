//! Topology hiding toward trunks (`topology_hiding`, `callid_rewrite`,
//! `strip_headers`).
//!
//! Two places do it:
//!
//! - The call layer treats a call with a hiding trunk on either side like
//!   a call that crosses realms ([`Core::hides`], [`Core::dialog_hides`]):
//!   only our Via goes on, the Contact is ours (the far side's own kept in
//!   the dialog), and responses go back with the Vias their request came
//!   with. [`unmask_response`] puts back what the trunk never saw.
//! - The [`Boundary`], between the proxy and the sockets, edits every
//!   message to such a trunk after the call layer is done with it, so the
//!   messages the transaction layer builds itself (100 Trying, CANCEL,
//!   hop-by-hop ACK, retransmissions) are covered too: it removes the
//!   `strip_headers`, the Record-Route entries of the internal side, and
//!   internal addresses in From and To, and swaps the Call-ID for an
//!   opaque one. On the way in it maps the opaque Call-ID back, so the
//!   transaction and call layers only ever see the internal one.
//!
//! The Call-ID mapping of a call is replicated with its dialog
//! (`DialogRecord::external_call_id`): the maps here are the live index,
//! [`Boundary::take_fresh`] names the calls whose mapping is new (their
//! record is written again) and [`Boundary::adopt`] puts back the mapping
//! of a call taken over from the HA peer.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::core::Core;
use super::dialog::Peer;
use super::forward::{self, Me};
use crate::config::{Config, Trunk};
use crate::sip::{Header, Message, NameAddr};
use crate::transport::{Inbound, Outbound};

impl Core {
    /// Whether `peer` is a trunk with `topology_hiding`.
    pub(super) fn hides(&self, peer: &Peer) -> bool {
        trunk(&self.cfg, peer.addr, peer.realm).is_some_and(|t| t.policy.topology_hiding)
    }

    /// Whether the two sides of a dialog (caller, callee) see each other
    /// only through us: they are in different realms, or either is a
    /// hiding trunk.
    pub(super) fn dialog_hides(&self, (caller, callee): (Peer, Option<Peer>)) -> bool {
        self.hides(&caller) || callee.is_some_and(|c| c.realm != caller.realm || self.hides(&c))
    }
}

fn trunk(cfg: &Config, addr: SocketAddr, realm: usize) -> Option<&Trunk> {
    cfg.trunk_of(addr, realm).and_then(|i| cfg.trunks.get(i))
}

fn ip_of(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// A response from a hiding trunk on its way back to the side its request
/// came from: From and To as that side sent them (the trunk saw ours), and
/// the Record-Route entries the trunk never saw (those below ours in the
/// request, `request`) back below our entry in `me`'s realm.
pub(super) fn unmask_response(resp: &mut Message, request: &Message, me: &Me) {
    if let Some(from) = request.header("from") {
        resp.set_header("from", from);
    }
    if let (Some(to), Some(tag)) = (request.header("to"), resp.to_tag()) {
        let to = if request.to_tag().is_some() { to.to_owned() } else { format!("{to};tag={tag}") };
        resp.set_header("to", &to);
    }
    let below = request.header_values("record-route");
    let rrs = resp.header_values("record-route");
    if below.is_empty() || rrs.is_empty() {
        return;
    }
    let Some(ours) = resp.record_routes().iter().position(|r| me.is(&r.uri.host, r.uri.port)) else { return };
    let values: Vec<String> =
        rrs.iter().take(ours + 1).map(|v| (*v).to_owned()).chain(below.iter().map(|v| (*v).to_owned())).collect();
    resp.remove_all("record-route");
    for v in values.iter().rev() {
        resp.insert_before_first("record-route", Header::new("Record-Route", v));
    }
}

/// One Call-ID shown to a trunk in place of an internal one.
#[derive(Debug)]
struct Mapped {
    external: String,
    last_used: Instant,
}

/// The edits at the edge to and from trunks with `topology_hiding`,
/// `callid_rewrite` or `strip_headers` (owned by the signaling thread,
/// inside the `Proxy`).
#[derive(Debug, Default)]
pub(super) struct Boundary {
    /// Internal Call-ID → the one the trunk sees (itself for a call the
    /// trunk started).
    to_external: HashMap<String, Mapped>,
    /// The trunk's Call-ID → the internal one.
    to_internal: HashMap<String, String>,
    keys: RandomState,
    counter: u64,
    last_sweep: Option<Instant>,
    /// Internal Call-IDs mapped since the last [`take_fresh`](Self::take_fresh);
    /// `None` unless an HA peer replicates the calls.
    fresh: Option<Vec<String>>,
}

impl Boundary {
    /// A message from the network: from a trunk with `callid_rewrite`, the
    /// Call-ID it knows is mapped back to ours (a Call-ID it made itself
    /// is kept, and kept toward it).
    pub(super) fn inbound(&mut self, cfg: &Config, mut inb: Inbound, now: Instant) -> Inbound {
        if !trunk(cfg, inb.src, inb.realm).is_some_and(|t| t.policy.callid_rewrite) {
            return inb;
        }
        let Ok(mut msg) = Message::parse(&inb.data) else { return inb };
        let Some(external) = msg.call_id().map(str::to_owned) else { return inb };
        let internal = match self.to_internal.get(&external) {
            Some(i) => i.clone(),
            None => {
                self.to_internal.insert(external.clone(), external.clone());
                external.clone()
            }
        };
        let mapped = self.to_external.entry(internal.clone()).or_insert_with(|| {
            if let Some(f) = self.fresh.as_mut() {
                f.push(internal.clone());
            }
            Mapped { external: external.clone(), last_used: now }
        });
        mapped.last_used = now;
        if internal != external {
            msg.set_header("call-id", &internal);
            inb.data = msg.to_bytes();
        }
        inb
    }

    /// A message about to be sent: toward a trunk with a policy, its
    /// `strip_headers` removed, internal addresses masked
    /// (`topology_hiding`) and the Call-ID made opaque (`callid_rewrite`).
    /// `me` is our identity by realm.
    pub(super) fn outbound(&mut self, cfg: &Config, me: &[Me], mut out: Outbound, now: Instant) -> Outbound {
        let Some(t) = trunk(cfg, out.dest, out.realm) else { return out };
        let p = &t.policy;
        if !p.topology_hiding && !p.callid_rewrite && p.strip_headers.is_empty() {
            return out;
        }
        let Ok(mut msg) = Message::parse(&out.data) else { return out };
        for h in &p.strip_headers {
            msg.remove_all(h);
        }
        if let (true, Some(me)) = (p.topology_hiding, me.get(out.realm).or_else(|| me.first())) {
            let trunk_ip =
                |ip: IpAddr| ip == t.address.ip() || p.sources.iter().any(|n| n.contains(&ip.to_canonical()));
            mask(&mut msg, me, &trunk_ip, out.proto);
        }
        if p.callid_rewrite {
            if let Some(internal) = msg.call_id().map(str::to_owned) {
                let external = self.external(&internal, now);
                msg.set_header("call-id", &external);
            }
        }
        out.data = msg.to_bytes();
        out
    }

    /// The Call-ID a trunk sees for `internal`: the one it was shown
    /// before, or a new opaque one.
    fn external(&mut self, internal: &str, now: Instant) -> String {
        if let Some(m) = self.to_external.get_mut(internal) {
            m.last_used = now;
            return m.external.clone();
        }
        let mut external = String::with_capacity(32);
        for _ in 0..2 {
            self.counter += 1;
            let mut h = self.keys.build_hasher();
            h.write(internal.as_bytes());
            h.write_u64(self.counter);
            external.push_str(&format!("{:016x}", h.finish()));
        }
        self.to_internal.insert(external.clone(), internal.to_owned());
        self.to_external.insert(internal.to_owned(), Mapped { external: external.clone(), last_used: now });
        if let Some(f) = self.fresh.as_mut() {
            f.push(internal.to_owned());
        }
        external
    }

    /// The Call-ID a trunk was shown for `internal`, if any.
    pub(super) fn external_of(&self, internal: &str) -> Option<&str> {
        self.to_external.get(internal).map(|m| m.external.as_str())
    }

    /// Starts recording which Call-IDs get mapped.
    pub(super) fn track_changes(&mut self) {
        self.fresh.get_or_insert_with(Vec::new);
    }

    /// The internal Call-IDs mapped since the last call (their dialogs'
    /// records now carry the mapping).
    pub(super) fn take_fresh(&mut self) -> Vec<String> {
        self.fresh.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Installs the mapping of a call taken over from the HA peer,
    /// replacing any this node still had for either Call-ID.
    pub(super) fn adopt(&mut self, internal: &str, external: &str, now: Instant) {
        if let Some(old) = self.to_external.remove(internal) {
            self.to_internal.remove(&old.external);
        }
        if let Some(old) = self.to_internal.remove(external) {
            self.to_external.remove(&old);
        }
        self.to_internal.insert(external.to_owned(), internal.to_owned());
        self.to_external.insert(internal.to_owned(), Mapped { external: external.to_owned(), last_used: now });
    }

    /// Forgets, at most once a second, the Call-IDs unused for `idle`
    /// whose call is over (`live` says whether a dialog still has it).
    pub(super) fn sweep(&mut self, now: Instant, idle: Duration, live: impl Fn(&str) -> bool) {
        if self.to_external.is_empty()
            || self.last_sweep.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_sweep = Some(now);
        let gone: Vec<String> = self
            .to_external
            .iter()
            .filter(|(internal, m)| now.saturating_duration_since(m.last_used) > idle && !live(internal))
            .map(|(internal, _)| internal.clone())
            .collect();
        for internal in gone {
            if let Some(m) = self.to_external.remove(&internal) {
                self.to_internal.remove(&m.external);
            }
        }
    }

    /// Call-IDs mapped now.
    #[cfg(test)]
    pub(super) fn mapped(&self) -> usize {
        self.to_external.len()
    }
}

/// Masks internal addresses in a message to a hiding trunk (`is_trunk`
/// tells its own addresses): From and To hosts that are internal IP
/// addresses become ours, Record-Route keeps only our entry and the
/// trunk's side, and a Contact that is not ours becomes ours.
fn mask(msg: &mut Message, me: &Me, is_trunk: &dyn Fn(IpAddr) -> bool, proto: crate::transport::Proto) {
    let ours = |ip: IpAddr| ip == me.addr || me.ours.iter().any(|(o, _)| *o == ip);
    for name in ["from", "to"] {
        let Some(mut na) = msg.header(name).and_then(|v| NameAddr::parse(v).ok()) else { continue };
        if ip_of(&na.uri.host).is_some_and(|ip| !ours(ip) && !is_trunk(ip)) {
            na.uri.host = host_of(me.addr);
            na.uri.port = None;
            msg.set_header(name, &na.to_string());
        }
    }
    let rrs = msg.record_routes();
    if !rrs.is_empty() {
        let first_ours = rrs.iter().position(|r| me.is(&r.uri.host, r.uri.port));
        let values: Vec<String> = match first_ours {
            // A request: ours on top, the internal side below it.
            Some(k) if msg.is_request() => rrs.iter().take(k + 1).map(ToString::to_string).collect(),
            // A response: the internal side above ours, the trunk's below.
            Some(k) => rrs.iter().skip(k).map(ToString::to_string).collect(),
            None => Vec::new(),
        };
        msg.remove_all("record-route");
        for v in values.iter().rev() {
            msg.insert_before_first("record-route", Header::new("Record-Route", v));
        }
    }
    let contact_host = msg.contacts().into_iter().next().and_then(|c| c.addr().map(|na| na.uri.host.clone()));
    if contact_host.is_some_and(|h| ip_of(&h).is_none_or(|ip| !ours(ip) && !is_trunk(ip))) {
        forward::hide_contact(msg, me, proto);
    }
}
