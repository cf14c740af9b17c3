//! Routing a new request in the call layer: the registrar and OPTIONS to
//! us, loose routing, Max-Forwards, in-dialog requests along the dialog,
//! initial requests by [`routing::route`] with a new dialog and its offer
//! anchored. Each ends in a local answer or a [`Forward`](super::fork::Forward).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime};

use super::core::Core;
use super::dialog::{Dialog, DialogState, EndReason, Peer};
use super::dns::HeaderHop;
use super::fork::NewForward;
use super::media::has_sdp;
use super::register;
use super::routing::{self, Target};
use super::srtp;
use crate::sip::{Header, Message, Method, Uri};
use crate::txn::{Endpoint, ServerId};

/// Which methods establish a dialog we record-route.
fn dialog_forming(m: &Method) -> bool {
    matches!(m, Method::Invite | Method::Subscribe | Method::Refer | Method::Notify)
}

impl Core {
    /// A new request (not ACK or CANCEL) in server transaction `key`.
    pub(super) fn route_request(
        &mut self,
        txn: &mut Endpoint,
        key: ServerId,
        mut msg: Message,
        from: Peer,
        now: Instant,
    ) {
        let (src, proto, realm) = (from.addr, from.proto, from.realm);
        let method = msg.method().cloned().unwrap_or(Method::Other(String::new()));
        // Loose routing: drop the Route entries that name us (or a primary
        // that lists us as its alternate).
        let on_route = super::alternate::strip_own_routes(&self.me[0], &mut msg) > 0;
        let mf = msg.max_forwards().unwrap_or(70);
        let ruri_text = match &msg.start {
            crate::sip::StartLine::Request { uri, .. } => uri.clone(),
            crate::sip::StartLine::Response { .. } => return,
        };
        let ruri = Uri::parse(&ruri_text).ok();
        let to_us = ruri.as_ref().is_some_and(|u| self.cfg.is_local_host(&u.host, u.port));
        let in_dialog = msg.to_tag().is_some();

        if !in_dialog && to_us && method == Method::Register {
            if !self.auth_register(txn, key, &mut msg, now) {
                return;
            }
            if let Err(cap) = register::check_caps(&self.cfg, &self.location, &msg, src, now) {
                self.refuse_cap(txn, key, cap, src, now);
                return;
            }
            let o = register::register(&self.cfg, &mut self.location, &msg, src, proto, realm, now);
            if o.code == 200 {
                self.metrics.registrations.fetch_add(1, Relaxed);
            } else if o.code == 403 || o.code == 404 {
                self.metrics.guard.register_refused.fetch_add(1, Relaxed);
            }
            tracing::debug!(aor = ?msg.to().map(|t| t.uri.to_string()), code = o.code, src = %src, "REGISTER");
            txn.reply(key, o.code, o.reason, o.headers, now);
            if let (200, Some(to)) = (o.code, msg.to()) {
                let aor = routing::local_aor(&self.cfg, to.uri.user.as_deref());
                self.messages_registered(txn, &aor, now);
            }
            return;
        }
        if !in_dialog && to_us && method == Method::Options && ruri.as_ref().is_none_or(|u| u.user.is_none()) {
            let allow = Header::new("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, UPDATE, PRACK, INFO");
            txn.reply(key, 200, "OK", vec![allow], now);
            return;
        }
        if mf == 0 {
            txn.reply(key, 483, "Too Many Hops", Vec::new(), now);
            return;
        }
        if in_dialog {
            self.route_in_dialog(txn, key, msg, from, on_route, now);
            return;
        }
        if !msg.routes().is_empty() {
            txn.reply(key, 403, "Preloaded Route Not Allowed", Vec::new(), now);
            return;
        }
        let Some(ruri) = ruri else {
            txn.reply(key, 416, "Unsupported URI Scheme", Vec::new(), now);
            return;
        };
        let seed = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            msg.call_id().unwrap_or_default().hash(&mut h);
            h.finish()
        };
        let routed = routing::route(&self.cfg, &self.location, &ruri, seed, now);
        let to_trunk = routed.as_ref().is_ok_and(|t| t.iter().any(|t| t.trunk.is_some()));
        let Some(caller) = self.auth_request(txn, key, &mut msg, from, to_trunk, now) else { return };
        if method == Method::Message && self.hold_message(txn, key, &msg, &ruri, &routed, now) {
            return;
        }
        let targets = match routed {
            Ok(t) => t,
            Err(r) => {
                tracing::debug!(method = %method, code = r.code, "request not routed: {}", r.reason);
                txn.reply(key, r.code, r.reason, Vec::new(), now);
                return;
            }
        };
        // Trunks named by DNS become their resolved targets (from the
        // cache: DNS is never waited for here).
        let routed_any = !targets.is_empty();
        let targets = self.expand_dns(targets, seed, now);
        if routed_any && targets.is_empty() {
            tracing::debug!(method = %method, "no target: the trunks' names are not resolved or all targets are DOWN");
            txn.reply(key, 503, "Service Unavailable - No Target", vec![Header::new("Retry-After", "5")], now);
            return;
        }
        if method == Method::Invite && srtp::plain_offer(&msg) {
            let to_trunks = targets.first().is_some_and(|t| t.trunk.is_some());
            if self.source_srtp(&from) || self.route_srtp(&ruri, to_trunks) {
                self.refuse_plain_rtp(txn, key, realm, now);
                return;
            }
        }
        self.apply_identity(&mut msg, &caller, &targets);
        let out_realm = targets.first().map_or(realm, |t| t.realm);
        let mut anchored = None;
        if method == Method::Invite {
            let admitted = self.dialogs.admit(&self.cfg.caps, src.ip(), has_sdp(&msg)).and_then(|()| {
                let to_trunks = targets.iter().any(|t| t.trunk.is_some());
                let over = self.trunk_invites.of(src.ip()) >= self.cfg.caps.max_trunk_invites_per_source;
                if to_trunks && over {
                    Err(crate::caps::Cap::TrunkInvitesPerSource)
                } else {
                    Ok(())
                }
            });
            if let Err(cap) = admitted {
                self.refuse_cap(txn, key, cap, src, now);
                return;
            }
            self.metrics.call_attempts.fetch_add(1, Relaxed);
            let call_id = msg.call_id().unwrap_or_default().to_owned();
            self.dialogs.insert(Dialog {
                call_id,
                caller_tag: msg.from_tag().unwrap_or_default(),
                callee_tag: None,
                state: DialogState::Early,
                caller: from,
                callee: None,
                from_uri: msg.from().map(|f| f.uri.to_string()).unwrap_or_default(),
                to_uri: msg.to().map(|f| f.uri.to_string()).unwrap_or_default(),
                target: targets.first().map(|t| t.label.clone()).unwrap_or_default(),
                trunk: targets.first().and_then(|t| t.trunk),
                media: has_sdp(&msg),
                started: now,
                started_wall: SystemTime::now(),
                answered: None,
                answered_wall: None,
                pdd_done: false,
                final_code: 0,
                last_activity: now,
                late_offer: !has_sdp(&msg),
                codecs: Vec::new(),
                acked: false,
                ok_sent: 0,
                invite_cseq: msg.cseq().map_or(1, |c| c.0),
                caller_contact: None,
                callee_contact: None,
                caller_vias: Vec::new(),
                relay: None,
            });
            // Anchor the offer once, toward the first target's realm; every
            // branch in that realm carries the same relay SDP.
            let from_tag = msg.from_tag().unwrap_or_default();
            anchored = has_sdp(&msg).then(|| (out_realm, msg.body.clone()));
            if let Err(e) = self.anchor(&mut msg, true, &from_tag, None, (realm, out_realm)) {
                crate::warn_limited!(error = %e, "media relay refused the offer");
                self.end_call(msg.call_id().unwrap_or_default(), EndReason::Failed, 503, now);
                txn.reply(key, 503, "Service Unavailable - Media Relay", vec![Header::new("Retry-After", "5")], now);
                return;
            }
            // A remote relay holds the call from now on: the dialog says which.
            let call_id = msg.call_id().unwrap_or_default();
            let relay = self.media.placement(call_id);
            if let (Some(d), Some(_)) = (self.dialogs.get_mut(call_id), &relay) {
                d.relay = relay;
            }
        }
        let targets = targets.into_iter().collect();
        let fwd =
            NewForward { request: msg, from, targets, initial: true, record_route: dialog_forming(&method), anchored };
        self.open_forward(txn, key, fwd, now);
    }

    fn route_in_dialog(
        &mut self,
        txn: &mut Endpoint,
        key: ServerId,
        mut msg: Message,
        from: Peer,
        on_route: bool,
        now: Instant,
    ) {
        let method = msg.method().cloned().unwrap_or(Method::Other(String::new()));
        self.identity_in_dialog(&mut msg, from);
        let call_id = msg.call_id().unwrap_or_default().to_owned();
        let from_tag = msg.from_tag().unwrap_or_default();
        let to_tag = msg.to_tag();
        // The next hop by the headers, with any alternates it advertised.
        let mut by_headers = super::alternate::next_hop(&msg);
        // The Request-URI the far side gave as its Contact, when we hid it.
        let mut ruri: Option<String> = None;
        let mut sides = None;
        // The trunk the dialog says the request goes to (its credentials
        // answer that carrier's challenges).
        let mut trunk = None;
        let found = match self.dialogs.find_mut(&call_id, &from_tag, to_tag.as_deref()) {
            Some(d) => {
                d.last_activity = now;
                sides = Some((d.trunk, d.caller, d.callee));
                let toward_callee = d.from_caller(&from_tag);
                trunk = d.trunk.filter(|_| toward_callee);
                let (dest, contact) = d.toward(&from_tag);
                ruri = contact;
                Some(dest)
            }
            None => None,
        };
        // With no dialog, a Route or Request-URI host named by DNS (RFC
        // 3263, from the cache); not yet resolved, the sender is asked to
        // retry. Looked up only for requests routed through us, from a
        // source that may make us follow them (with `[auth]`, a trusted
        // one: an unauthenticated peer must not make us resolve names it
        // picks).
        let dns_hop = if found.is_none()
            && on_route
            && by_headers.is_none()
            && super::identity::may_follow_headers(&self.cfg, &from)
        {
            self.header_hop(&msg, now)
        } else {
            HeaderHop::NotDns
        };
        if let HeaderHop::Resolved(addr, proto) = dns_hop {
            by_headers = Some((addr, proto, Vec::new()));
        }
        let dest = match found {
            Some(dest) => {
                self.strip_credentials(&mut msg);
                trunk = trunk.or_else(|| dest.and_then(|p| self.trunk_by_address(p)));
                dest
            }
            // No dialog here, but the request was routed through us (a
            // backup taking over a primary's dialogs): follow its headers,
            // when its source may make us (see `identity`).
            None if on_route && by_headers.is_some() => {
                if !self.auth_dialogless(txn, key, &mut msg, from, now) {
                    return;
                }
                by_headers.as_ref().map(|(addr, proto, _)| Peer { addr: *addr, proto: *proto, realm: from.realm })
            }
            None => None,
        };
        let Some(dest) = dest else {
            if on_route && dns_hop == HeaderHop::Unresolved {
                txn.reply(key, 503, "Service Unavailable - Resolving", vec![Header::new("Retry-After", "1")], now);
                return;
            }
            txn.reply(key, 481, "Call/Transaction Does Not Exist", Vec::new(), now);
            return;
        };
        let alternates: Vec<Target> = by_headers
            .iter()
            .flat_map(|(_, proto, alts)| alts.iter().map(|a| (*a, *proto)))
            .map(|(dest_addr, proto)| Target {
                uri: String::new(),
                dest: dest_addr,
                proto,
                realm: dest.realm,
                trunk: None,
                label: "alternate".into(),
            })
            .collect();
        let srtp_call = sides.is_some_and(|(trunk, a, b)| {
            self.trunk_srtp(trunk) || self.source_srtp(&a) || b.is_some_and(|b| self.source_srtp(&b))
        });
        if matches!(method, Method::Invite | Method::Update) && srtp_call && srtp::plain_offer(&msg) {
            self.refuse_plain_rtp(txn, key, from.realm, now);
            return;
        }
        if method == Method::Bye {
            // The call ends when either side says so. Ending it here, not on
            // the BYE's answer, means a lost or missing answer downstream
            // (the far end already gone, say) cannot leave it open.
            self.end_bye(&call_id, &from_tag, now);
        }
        if matches!(method, Method::Invite | Method::Update | Method::Prack) {
            if let Err(e) = self.anchor(&mut msg, true, &from_tag, to_tag.as_deref(), (from.realm, dest.realm)) {
                crate::warn_limited!(error = %e, "media relay refused a re-offer");
                txn.reply(key, 500, "Media Relay Error", Vec::new(), now);
                return;
            }
        }
        let mut targets = VecDeque::from([Target {
            uri: ruri.unwrap_or_default(),
            dest: dest.addr,
            proto: dest.proto,
            realm: dest.realm,
            trunk,
            label: String::new(),
        }]);
        targets.extend(alternates.into_iter().filter(|a| a.dest != dest.addr));
        let fwd = NewForward { request: msg, from, targets, initial: false, record_route: false, anchored: None };
        self.open_forward(txn, key, fwd, now);
    }
}
