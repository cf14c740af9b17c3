//! What the call layer sends outside any transaction: the ACK for a 2xx
//! (end to end, along the dialog; it may carry a late answer), 2xx
//! retransmissions whose client transaction is gone, and responses routed
//! through a primary that lists us as its alternate; and the BYEs that end
//! an answered call whose ACK never came.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::core::Core;
use super::dialog::{Dialog, DialogState, EndReason, Peer};
use super::{alternate, forward, identity};
use crate::sip::Message;
use crate::transport::Proto;
use crate::txn::wire::response_dest;
use crate::txn::{ClientRequest, Endpoint};

impl Core {
    /// ACK that matched no server transaction: the ACK for a 2xx, routed
    /// end to end through the dialog. It may carry a late answer. One that
    /// matches no dialog follows its headers only when its source may make
    /// us ([`identity::may_follow_headers`]): an ACK cannot be challenged.
    /// Our realm's credentials (the INVITE's, RFC 3261 §22.1) stay here.
    pub(super) fn session_ack(&mut self, txn: &mut Endpoint, mut msg: Message, from: Peer, now: Instant) {
        let (in_proto, realm) = (from.proto, from.realm);
        self.strip_credentials(&mut msg);
        let on_route = alternate::strip_own_routes(&self.me[0], &mut msg) > 0;
        let call_id = msg.call_id().unwrap_or_default().to_owned();
        let from_tag = msg.from_tag().unwrap_or_default();
        let to_tag = msg.to_tag();
        let mut ruri = None;
        let mut sides = None;
        let (dest, late) = match self.dialogs.find_mut(&call_id, &from_tag, to_tag.as_deref()) {
            Some(d) => {
                d.last_activity = now;
                d.acked = true;
                sides = Some((d.caller, d.callee));
                let (dest, contact) = d.toward(&from_tag);
                ruri = contact;
                let late = d.late_offer;
                d.late_offer = false;
                (dest, late)
            }
            None if on_route && identity::may_follow_headers(&self.cfg, &from) => {
                let hop = alternate::next_hop(&msg).map(|(addr, proto, _)| (addr, proto)).or_else(|| {
                    match self.header_hop(&msg, now) {
                        super::dns::HeaderHop::Resolved(addr, proto) => Some((addr, proto)),
                        _ => None,
                    }
                });
                (hop.map(|(addr, proto)| Peer { addr, proto, realm }), false)
            }
            None if on_route => {
                crate::info_limited!(src = %from.addr, call_id, "dialog-less ACK from an untrusted source dropped");
                (None, false)
            }
            None => (None, false),
        };
        let Some(dest) = dest else {
            self.metrics.dropped.fetch_add(1, Relaxed);
            return;
        };
        if late {
            if let Some(t) = to_tag.as_deref() {
                if let Err(e) = self.anchor(&mut msg, false, &from_tag, Some(t), (realm, dest.realm)) {
                    crate::warn_limited!(call_id, error = %e, "media relay refused the late answer");
                }
            }
        }
        let branch = txn.new_branch();
        let crossing = forward::Crossing {
            me_in: self.me(realm),
            me_out: self.me(dest.realm),
            in_proto,
            out_proto: dest.proto,
            hide: realm != dest.realm || sides.is_some_and(|s| self.dialog_hides(s)),
        };
        let out = forward::branch_request(&msg, &crossing, &branch, ruri.as_deref(), false);
        txn.send(out.to_bytes(), dest.addr, dest.proto, dest.realm);
    }

    /// A response routed through a primary that lists us as its alternate:
    /// drop its Via (ours now), adopt its Record-Route, pass it on.
    pub(super) fn stateless_response(&mut self, txn: &mut Endpoint, mut msg: Message, realm: usize) {
        msg.remove_first_value("via");
        let Some(next) = msg.top_via() else { return };
        let proto = if next.transport.eq_ignore_ascii_case("tcp") { Proto::Tcp } else { Proto::Udp };
        let me = self.me(realm);
        alternate::adopt_record_routes(me, &mut msg, proto);
        let host_ip: Option<IpAddr> = next.host.trim_start_matches('[').trim_end_matches(']').parse().ok();
        let fallback = SocketAddr::new(host_ip.unwrap_or(me.addr), next.port.unwrap_or(5060));
        let dest = response_dest(&next, fallback, proto);
        if let Some(code) = msg.code() {
            self.metrics.response(code);
        }
        tracing::debug!(call_id = ?msg.call_id(), %dest, "forwarding a response for a primary (alternatePath)");
        txn.send(msg.to_bytes(), dest, proto, realm);
    }

    /// A 2xx retransmission for an INVITE whose client transaction is gone:
    /// re-anchor (same ports) and send it up the Via path.
    pub(super) fn stateless_2xx(&mut self, txn: &mut Endpoint, mut msg: Message, realm: usize, now: Instant) {
        msg.remove_first_value("via");
        let call_id = msg.call_id().unwrap_or_default().to_owned();
        // The caller's realm and, when the call crosses realms, the Vias the
        // callee never saw.
        let (up_realm, up_proto) =
            self.dialogs.get(&call_id).map_or((realm, None), |d| (d.caller.realm, Some(d.caller.proto)));
        let hidden = self.dialogs.get(&call_id).is_some_and(|d| self.dialog_hides((d.caller, d.callee)));
        if let (true, Some(proto), Some(d)) = (up_realm != realm || hidden, up_proto, self.dialogs.get(&call_id)) {
            let vias: Vec<&str> = d.caller_vias.iter().map(String::as_str).collect();
            let contact = forward::back_across(&mut msg, &vias, self.me(up_realm), proto);
            // A call answered here after a takeover: the caller's requests
            // go to the callee's own Contact, which the caller never sees.
            if let (Some(c), Some(d)) = (contact, self.dialogs.get_mut(&call_id)) {
                if d.state == DialogState::Early || d.callee_contact.is_none() {
                    d.keep_contact(false, c);
                }
            }
        }
        let Some(next) = msg.top_via() else { return };
        if let (Some(from), Some(to)) = (msg.from_tag(), msg.to_tag()) {
            if self.dialogs.get(&call_id).is_some_and(|d| !d.late_offer) {
                let _ = self.anchor(&mut msg, false, &to, Some(&from), (realm, up_realm));
            }
        }
        let proto = if next.transport.eq_ignore_ascii_case("tcp") { Proto::Tcp } else { Proto::Udp };
        let me = self.me(up_realm);
        alternate::adopt_record_routes(me, &mut msg, proto);
        let host_ip: Option<IpAddr> = next.host.trim_start_matches('[').trim_end_matches(']').parse().ok();
        let fallback = SocketAddr::new(host_ip.unwrap_or(me.addr), next.port.unwrap_or(5060));
        let mut dest = response_dest(&next, fallback, proto);
        // An early dialog taken over from the HA peer is answered here.
        if let Some(d) = self.dialogs.get_mut(&call_id).filter(|d| d.state == DialogState::Early) {
            d.confirm(msg.to_tag().unwrap_or_default(), msg.code().unwrap_or(200), now);
            d.ok_sent = 0;
            self.metrics.call_answers.fetch_add(1, Relaxed);
            tracing::debug!(call_id, "2xx for a taken-over early dialog: call answered");
        }
        // The 2xx is being retransmitted and no ACK has come back: the hop we
        // sent it to may be gone. If it advertised alternates, try them in turn.
        let alts = alternate::addresses(&next.params);
        if let Some(d) = self.dialogs.get_mut(&call_id) {
            if !d.acked && d.ok_sent >= 1 && !alts.is_empty() {
                let k = (d.ok_sent as usize - 1) % alts.len();
                tracing::debug!(call_id, primary = %dest, alternate = %alts[k], "2xx not acknowledged: resending via alternatePath");
                dest = alts[k];
            }
            d.ok_sent += 1;
        }
        self.metrics.response(200);
        txn.send(msg.to_bytes(), dest, proto, up_realm);
    }

    /// An answered call whose ACK never came: BYE to the callee (so it
    /// stops its call and its 2xx retransmissions) and to the caller (alive
    /// but on a lost ACK path), then the call ends as [`EndReason::NoAck`]
    /// (media freed, CDR written).
    ///
    /// The BYEs are built from the dialog: Request-URI the side's own
    /// Contact when it was hidden, else its address; no Route set (right
    /// when no record-routing proxy stands beyond us); toward the callee
    /// the CSeq one above the INVITE's as the callee saw it, toward the
    /// caller 1 (the callee is assumed to have sent it no request yet).
    /// The edge maps the Call-ID for a `callid_rewrite` trunk, as for any
    /// message sent to it.
    pub(super) fn end_unacked(&mut self, txn: &mut Endpoint, call_id: &str, now: Instant) {
        let Some(d) = self.dialogs.get(call_id).cloned() else { return };
        crate::info_limited!(call_id, "2xx never acknowledged: ending the call with BYE both ways");
        // The callee saw the caller's CSeq shifted by the challenges answered for it.
        let shift = self.carrier.offsets_of(call_id, std::iter::once(d.caller_tag.as_str())).first().map_or(0, |o| o.1);
        let reason = "SIP;cause=408;text=\"ACK timeout\"";
        self.send_bye(txn, &d, true, d.invite_cseq.wrapping_add(shift).wrapping_add(1), reason, now);
        self.send_bye(txn, &d, false, 1, reason, now);
        self.metrics.calls_no_ack.fetch_add(1, Relaxed);
        self.end_call(call_id, EndReason::NoAck, 0, now);
    }

    /// One BYE the sbc originates in dialog `d`, to the callee (`to_callee`,
    /// as if from the caller) or to the caller (as if from the callee),
    /// with `reason` as its Reason header.
    pub(super) fn send_bye(
        &self,
        txn: &mut Endpoint,
        d: &Dialog,
        to_callee: bool,
        cseq: u32,
        reason: &str,
        now: Instant,
    ) {
        let callee_tag = d.callee_tag.as_deref().unwrap_or_default();
        let caller = (d.from_uri.as_str(), d.caller_tag.as_str());
        let callee = (d.to_uri.as_str(), callee_tag);
        let (peer, contact, (from_uri, from_tag), (to_uri, to_tag)) = if to_callee {
            let Some(peer) = d.callee else { return };
            (peer, d.callee_contact.as_deref(), caller, callee)
        } else {
            (d.caller, d.caller_contact.as_deref(), callee, caller)
        };
        let ruri = contact.map_or_else(|| format!("sip:{}", peer.addr), str::to_owned);
        let me = self.me(peer.realm).hostport_for(peer.proto);
        let branch = txn.new_branch();
        let text = format!(
            "BYE {ruri} SIP/2.0\r\nVia: SIP/2.0/{} {me};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <{from_uri}>;tag={from_tag}\r\nTo: <{to_uri}>;tag={to_tag}\r\nCall-ID: {}\r\n\
             CSeq: {cseq} BYE\r\nReason: {reason}\r\nUser-Agent: xsbc\r\n\
             Content-Length: 0\r\n\r\n",
            peer.proto.via_name(),
            d.call_id
        );
        let Ok(request) = Message::parse(text.as_bytes()) else { return };
        let bye = ClientRequest {
            request,
            dest: peer.addr,
            proto: peer.proto,
            realm: peer.realm,
            owner: None,
            timeout: None,
        };
        let _ = txn.start_client(bye, now);
    }
}
