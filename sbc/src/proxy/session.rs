//! Call-level proxy logic: routing a new request, sequential forking over
//! its targets, dialog tracking, media anchoring, and ending calls (media
//! deleted, CDR written).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime};

use media_relay::control::{SdpOptions, SdpRequest};

use super::dialog::{Dialog, DialogState, EndReason, Peer};
use super::routing::{self, Target};
use super::{client_key, forward, register, Forward, Proxy};
use crate::sip::{Header, Message, Method, Uri};
use crate::transport::{Inbound, Proto};

fn is_timer_c_branch(f: &super::Forward, code: u16) -> bool {
    f.is_invite && (101..200).contains(&code)
}

fn has_sdp(m: &Message) -> bool {
    !m.body.is_empty()
        && m.header("content-type").is_some_and(|c| c.trim().to_ascii_lowercase().starts_with("application/sdp"))
}

/// Which methods establish a dialog we record-route.
fn dialog_forming(m: &Method) -> bool {
    matches!(m, Method::Invite | Method::Subscribe | Method::Refer | Method::Notify)
}

impl Proxy {
    /// Anchors an SDP body: `offer` from the side with tag `owner` to `other`.
    fn anchor(&self, msg: &mut Message, offer: bool, owner: &str, other: Option<&str>) -> Result<(), String> {
        if !has_sdp(msg) {
            return Ok(());
        }
        let Some(call_id) = msg.call_id().map(str::to_owned) else { return Ok(()) };
        let opts = SdpOptions { replace_origin: true, ..SdpOptions::default() };
        let out = if offer {
            self.media.offer(&SdpRequest { call_id: &call_id, from_tag: owner, to_tag: other, sdp: &msg.body, opts })
        } else {
            let from = other.unwrap_or_default();
            self.media.answer(&SdpRequest {
                call_id: &call_id,
                from_tag: from,
                to_tag: Some(owner),
                sdp: &msg.body,
                opts,
            })
        };
        match out {
            Ok(sdp) => {
                msg.set_body(sdp);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    pub(super) fn route_request(&mut self, key: &str, mut msg: Message, inb: &Inbound, now: Instant) {
        let method = msg.method().cloned().unwrap_or(Method::Other(String::new()));
        // Loose routing: drop the Route entries that name us (or a primary
        // that lists us as its alternate).
        let on_route = super::alternate::strip_own_routes(&self.me, &mut msg) > 0;
        let mf = msg.max_forwards().unwrap_or(70);
        let ruri_text = match &msg.start {
            crate::sip::StartLine::Request { uri, .. } => uri.clone(),
            crate::sip::StartLine::Response { .. } => return,
        };
        let ruri = Uri::parse(&ruri_text).ok();
        let to_us = ruri.as_ref().is_some_and(|u| self.cfg.is_local_host(&u.host, u.port));
        let in_dialog = msg.to_tag().is_some();

        if !in_dialog && to_us && method == Method::Register {
            let o = register::register(&self.cfg, &mut self.location, &msg, inb.src, inb.proto, now);
            if o.code == 200 {
                self.metrics.registrations.fetch_add(1, Relaxed);
            }
            tracing::info!(aor = ?msg.to().map(|t| t.uri.to_string()), code = o.code, src = %inb.src, "REGISTER");
            self.reply(key, o.code, o.reason, o.headers, now);
            return;
        }
        if !in_dialog && to_us && method == Method::Options && ruri.as_ref().is_none_or(|u| u.user.is_none()) {
            let allow = Header::new("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, UPDATE, PRACK, INFO");
            self.reply(key, 200, "OK", vec![allow], now);
            return;
        }
        if mf == 0 {
            self.reply(key, 483, "Too Many Hops", Vec::new(), now);
            return;
        }
        if in_dialog {
            self.route_in_dialog(key, msg, inb, on_route, now);
            return;
        }
        if !msg.routes().is_empty() {
            self.reply(key, 403, "Preloaded Route Not Allowed", Vec::new(), now);
            return;
        }
        let Some(ruri) = ruri else {
            self.reply(key, 416, "Unsupported URI Scheme", Vec::new(), now);
            return;
        };
        let seed = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            msg.call_id().unwrap_or_default().hash(&mut h);
            h.finish()
        };
        let targets = match routing::route(&self.cfg, &self.location, &ruri, seed, now) {
            Ok(t) => t,
            Err(r) => {
                tracing::info!(method = %method, code = r.code, "request not routed: {}", r.reason);
                self.reply(key, r.code, r.reason, Vec::new(), now);
                return;
            }
        };
        if method == Method::Invite {
            self.metrics.call_attempts.fetch_add(1, Relaxed);
            let call_id = msg.call_id().unwrap_or_default().to_owned();
            self.dialogs.insert(Dialog {
                call_id,
                caller_tag: msg.from_tag().unwrap_or_default(),
                callee_tag: None,
                state: DialogState::Early,
                caller: Peer { addr: inb.src, proto: inb.proto },
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
            });
            // Anchor the offer once; every branch carries the same relay SDP.
            let from_tag = msg.from_tag().unwrap_or_default();
            if let Err(e) = self.anchor(&mut msg, true, &from_tag, None) {
                tracing::warn!(error = %e, "media relay refused the offer");
                self.end_call(msg.call_id().unwrap_or_default(), EndReason::Failed, 503, now);
                self.reply(key, 503, "Service Unavailable - Media Relay", vec![Header::new("Retry-After", "5")], now);
                return;
            }
        }
        let targets = targets.into_iter().collect();
        self.open_forward(key, msg, inb.proto, targets, true, dialog_forming(&method), now);
    }

    fn route_in_dialog(&mut self, key: &str, mut msg: Message, inb: &Inbound, on_route: bool, now: Instant) {
        let method = msg.method().cloned().unwrap_or(Method::Other(String::new()));
        let call_id = msg.call_id().unwrap_or_default().to_owned();
        let from_tag = msg.from_tag().unwrap_or_default();
        let to_tag = msg.to_tag();
        // The next hop by the headers, with any alternates it advertised.
        let by_headers = super::alternate::next_hop(&msg);
        let alternates: Vec<Target> = by_headers
            .iter()
            .flat_map(|(_, proto, alts)| alts.iter().map(|a| (*a, *proto)))
            .map(|(dest, proto)| Target { uri: String::new(), dest, proto, trunk: None, label: "alternate".into() })
            .collect();
        let dest = match self.dialogs.find_mut(&call_id, &from_tag, to_tag.as_deref()) {
            Some(d) => {
                d.last_activity = now;
                if d.from_caller(&from_tag) {
                    d.callee
                } else {
                    Some(d.caller)
                }
            }
            // No dialog here, but the request was routed through us (a
            // backup taking over a primary's dialogs): follow its headers.
            None if on_route => by_headers.map(|(addr, proto, _)| Peer { addr, proto }),
            None => None,
        };
        let Some(dest) = dest else {
            self.reply(key, 481, "Call/Transaction Does Not Exist", Vec::new(), now);
            return;
        };
        if method == Method::Bye {
            // The call ends when either side says so. Ending it here, not on
            // the BYE's answer, means a lost or missing answer downstream
            // (the far end already gone, say) cannot leave it open.
            self.end_bye(&call_id, &from_tag, now);
        }
        if matches!(method, Method::Invite | Method::Update | Method::Prack) {
            if let Err(e) = self.anchor(&mut msg, true, &from_tag, to_tag.as_deref()) {
                tracing::warn!(error = %e, "media relay refused a re-offer");
                self.reply(key, 500, "Media Relay Error", Vec::new(), now);
                return;
            }
        }
        let mut targets = VecDeque::from([Target {
            uri: String::new(),
            dest: dest.addr,
            proto: dest.proto,
            trunk: None,
            label: String::new(),
        }]);
        targets.extend(alternates.into_iter().filter(|a| a.dest != dest.addr));
        self.open_forward(key, msg, inb.proto, targets, false, false, now);
    }

    /// Links a server transaction to a new [`Forward`] and sends its first branch.
    #[expect(clippy::too_many_arguments, reason = "the parts of a Forward")]
    fn open_forward(
        &mut self,
        key: &str,
        request: Message,
        in_proto: Proto,
        targets: VecDeque<Target>,
        initial: bool,
        record_route: bool,
        now: Instant,
    ) {
        let id = self.next_fwd;
        self.next_fwd += 1;
        let forward = Forward {
            server: key.to_owned(),
            is_invite: request.method() == Some(&Method::Invite),
            offer_in_request: has_sdp(&request),
            request,
            in_proto,
            targets,
            current: None,
            canceled: false,
            final_sent: false,
            initial,
            record_route,
            last_code: 0,
            current_trunk: None,
            attempted: false,
            skipped_cap: false,
            timer_c: None,
        };
        self.forwards.insert(id, forward);
        if let Some(e) = self.servers.get_mut(key) {
            e.fwd = Some(id);
        }
        self.next_branch(id, now);
    }

    /// Takes the next target a new call may go to, skipping DOWN and capped
    /// trunks (each skip logged and counted).
    fn pick_target(&mut self, id: u64, now: Instant) -> Option<Target> {
        loop {
            let f = self.forwards.get_mut(&id)?;
            let target = f.targets.pop_front()?;
            let Some(i) = target.trunk.filter(|_| f.initial && f.is_invite) else { return Some(target) };
            match self.trunk_admits(i, now) {
                Ok(()) => return Some(target),
                Err(why) => {
                    use super::trunks::Skip;
                    let outcome = if why == Skip::Down {
                        crate::metrics::TrunkOutcome::SkippedDown
                    } else {
                        if let Some(f) = self.forwards.get_mut(&id) {
                            f.skipped_cap = true;
                        }
                        crate::metrics::TrunkOutcome::SkippedCap
                    };
                    tracing::info!(trunk = %target.label, reason = ?why, "skipping trunk for a new call");
                    self.trunk_outcome(i, outcome);
                }
            }
        }
    }

    /// Sends the forward's request to its next target, or answers upstream
    /// with the best final response when none is left.
    fn next_branch(&mut self, id: u64, now: Instant) {
        // The branch that just ended no longer holds its trunk.
        let prev = self.forwards.get_mut(&id).and_then(|f| f.current_trunk.take());
        if let Some(i) = prev {
            self.trunk_release(i);
            let call_id = self.forwards.get(&id).and_then(|f| f.request.call_id().map(str::to_owned));
            if let Some(d) = call_id.and_then(|c| self.dialogs.get_mut(&c)) {
                d.trunk = None;
            }
        }
        let Some(target) = self.pick_target(id, now) else {
            let Some(f) = self.forwards.get_mut(&id) else { return };
            let mut extra = Vec::new();
            let (code, reason) = if f.canceled {
                (487, "Request Terminated")
            } else if f.last_code == 408 {
                (408, "Request Timeout")
            } else if f.last_code >= 300 {
                (f.last_code, "No Route Available")
            } else if !f.attempted {
                extra.push(crate::sip::Header::new("Retry-After", if f.skipped_cap { "1" } else { "5" }));
                (
                    503,
                    if f.skipped_cap {
                        "Service Unavailable - Trunk Capacity"
                    } else {
                        "Service Unavailable - No Trunk Up"
                    },
                )
            } else {
                (408, "Request Timeout")
            };
            let (server, is_invite, initial) = (f.server.clone(), f.is_invite, f.initial);
            let call_id = f.request.call_id().unwrap_or_default().to_owned();
            f.final_sent = true;
            self.forwards.remove(&id);
            let reason_for = if code == 487 { EndReason::Cancel } else { EndReason::Failed };
            if is_invite && initial {
                self.metrics.call_failures.fetch_add(1, Relaxed);
                self.end_call(&call_id, reason_for, code, now);
            }
            self.reply(&server, code, reason, extra, now);
            return;
        };
        let branch = self.new_branch();
        let Some(f) = self.forwards.get_mut(&id) else { return };
        f.attempted = true;
        let ruri = if target.uri.is_empty() { None } else { Some(target.uri.as_str()) };
        let out =
            forward::branch_request(&f.request, &self.me, &branch, ruri, f.in_proto, target.proto, f.record_route);
        let method = out.method().cloned().unwrap_or(Method::Other(String::new()));
        let key = client_key(&branch, &method);
        f.current = Some(key.clone());
        let call_trunk = target.trunk.filter(|_| f.is_invite && f.initial);
        f.current_trunk = call_trunk;
        if f.is_invite && f.initial {
            if let Some(d) = f.request.call_id().and_then(|c| self.dialogs.get_mut(c)) {
                d.callee = Some(Peer { addr: target.dest, proto: target.proto });
                d.target.clone_from(&target.label);
                d.trunk = call_trunk;
            }
            tracing::info!(call_id = ?f.request.call_id(), target = %target.label, dest = %target.dest, "routing INVITE");
        }
        // A fast timeout when there is somewhere else to try.
        let fast = f.is_invite || !f.targets.is_empty();
        if let Some(i) = call_trunk {
            self.trunk_take(i, now);
        }
        let bytes = out.to_bytes();
        let timeout = fast.then_some(self.cfg.invite_timeout);
        self.start_client(key, out, bytes, target.dest, target.proto, Some(id), timeout, now);
    }

    /// The current branch was cancelled by timer C: try the next target.
    pub(super) fn on_branch_failure_after_cancel(&mut self, id: u64, now: Instant) {
        if let Some(i) = self.forwards.get(&id).and_then(|f| f.current_trunk) {
            self.trunk_outcome(i, crate::metrics::TrunkOutcome::Timeout);
        }
        self.next_branch(id, now);
    }

    pub(super) fn on_branch_failure(&mut self, id: u64, branch_key: &str, now: Instant) {
        let Some(f) = self.forwards.get_mut(&id) else { return };
        if f.current.as_deref() != Some(branch_key) || f.final_sent {
            return;
        }
        f.current = None;
        if f.last_code == 0 {
            f.last_code = 408;
        }
        if let Some(i) = f.current_trunk {
            self.trunk_outcome(i, crate::metrics::TrunkOutcome::Timeout);
            self.trunk_failure(i, "INVITE timeout or transport error", now);
        }
        self.next_branch(id, now);
    }

    pub(super) fn on_branch_response(&mut self, id: u64, branch_key: &str, mut resp: Message, code: u16, now: Instant) {
        let Some(f) = self.forwards.get_mut(&id) else { return };
        if f.current.as_deref() != Some(branch_key) {
            return;
        }
        if code == 100 {
            return; // hop by hop
        }
        if is_timer_c_branch(f, code) {
            let at = now + self.cfg.timer_c;
            f.timer_c = Some(at);
            tracing::debug!(id, "timer C armed");
            self.timers.push(std::cmp::Reverse((at, super::TimerRef::C(id))));
        }
        let Some(f) = self.forwards.get_mut(&id) else { return };
        resp.remove_first_value("via");
        let (server, is_invite, initial, offer_in_request) =
            (f.server.clone(), f.is_invite, f.initial, f.offer_in_request);
        let req_from = f.request.from_tag().unwrap_or_default();
        let call_id = resp.call_id().unwrap_or_default().to_owned();
        let trunk = f.current_trunk;
        if code >= 300 {
            f.last_code = code;
            f.current = None;
            if let Some(i) = trunk {
                self.trunk_outcome(i, crate::metrics::TrunkOutcome::Failed);
                if self.cfg.health.failure_codes.contains(&code) {
                    self.trunk_failure(i, &format!("{code} on INVITE"), now);
                }
            }
            let Some(f) = self.forwards.get_mut(&id) else { return };
            if !f.canceled && self.cfg.failover_codes.contains(&code) && !f.targets.is_empty() {
                tracing::info!(call_id, code, "next hop failed; trying the next target");
                self.next_branch(id, now);
                return;
            }
            f.final_sent = true;
            self.forwards.remove(&id);
            if is_invite && initial {
                self.metrics.call_failures.fetch_add(1, Relaxed);
                let reason = if code == 487 { EndReason::Cancel } else { EndReason::Failed };
                self.end_call(&call_id, reason, code, now);
            }
            if !is_invite && resp.cseq().is_some_and(|c| c.1 == Method::Bye) {
                self.end_bye(&call_id, &req_from, now);
            }
            self.respond_via(&server, &resp, now);
            return;
        }
        // 1xx (not 100) and 2xx.
        if is_invite {
            let to_tag = resp.to_tag().unwrap_or_default();
            // SDP in a response: an answer to the request's offer, or a late offer.
            let anchored = if offer_in_request {
                self.anchor(&mut resp, false, &to_tag, Some(&req_from))
            } else {
                self.anchor(&mut resp, true, &to_tag, Some(&req_from))
            };
            if let Err(e) = anchored {
                tracing::warn!(call_id, error = %e, "media relay refused the answer");
            }
            if initial {
                if let Some(d) = self.dialogs.get_mut(&call_id) {
                    if !d.pdd_done && code >= 180 {
                        d.pdd_done = true;
                        self.metrics.post_dial_delay(now.saturating_duration_since(d.started).as_secs_f64());
                    }
                    if (200..300).contains(&code) {
                        d.confirm(to_tag.clone(), code, now);
                        d.ok_sent = 1;
                        // A late offer in the 2xx is answered in the ACK.
                        d.late_offer = d.late_offer && has_sdp(&resp);
                    }
                }
                if (200..300).contains(&code) {
                    self.metrics.call_answers.fetch_add(1, Relaxed);
                }
            }
        } else if (200..300).contains(&code) && resp.cseq().is_some_and(|c| c.1 == Method::Bye) {
            self.end_bye(&call_id, &req_from, now);
        } else if offer_in_request && resp.cseq().is_some_and(|c| matches!(c.1, Method::Update | Method::Prack)) {
            // The answer to an UPDATE or PRACK offer.
            let to_tag = resp.to_tag().unwrap_or_default();
            if let Err(e) = self.anchor(&mut resp, false, &to_tag, Some(&req_from)) {
                tracing::warn!(call_id, error = %e, "media relay refused the answer");
            }
        }
        if (200..300).contains(&code) {
            if let Some(i) = trunk {
                self.trunk_outcome(i, crate::metrics::TrunkOutcome::Answered);
                self.trunk_call_ok(i);
            }
            if let Some(f) = self.forwards.get_mut(&id) {
                f.final_sent = true;
            }
            self.forwards.remove(&id);
        }
        self.respond_via(&server, &resp, now);
    }

    fn end_bye(&mut self, call_id: &str, from_tag: &str, now: Instant) {
        let reason = match self.dialogs.get(call_id) {
            Some(d) if d.from_caller(from_tag) => EndReason::CallerBye,
            Some(_) => EndReason::CalleeBye,
            None => return,
        };
        self.end_call(call_id, reason, 0, now);
    }

    /// Ends a call: deletes its media session and writes its CDR.
    pub(super) fn end_call(&mut self, call_id: &str, reason: EndReason, code: u16, now: Instant) {
        let Some(mut d) = self.dialogs.remove(call_id) else { return };
        if code != 0 {
            d.final_code = code;
        }
        if let Some(i) = d.trunk.take() {
            self.trunk_release(i);
        }
        let (relay, codecs) = match self.media.delete(call_id, Some(&d.caller_tag)) {
            Ok(report) => {
                let mut codecs: Vec<String> = Vec::new();
                for c in report.legs.iter().flat_map(|l| l.medias.iter().flat_map(|m| m.codecs.iter())) {
                    if !codecs.contains(c) {
                        codecs.push(c.clone());
                    }
                }
                (crate::cdr::relay_stats(&report), codecs)
            }
            Err(_) => (serde_json::Value::Null, Vec::new()),
        };
        tracing::info!(call_id, reason = reason.as_str(), code = d.final_code, "call ended");
        let rec = d.cdr(reason, SystemTime::now(), now, relay, &codecs);
        self.cdr.write(&rec);
    }

    /// ACK that matched no server transaction: the ACK for a 2xx, routed
    /// end to end through the dialog. It may carry a late answer.
    pub(super) fn session_ack(&mut self, mut msg: Message, inb: &Inbound, now: Instant) {
        let on_route = super::alternate::strip_own_routes(&self.me, &mut msg) > 0;
        let call_id = msg.call_id().unwrap_or_default().to_owned();
        let from_tag = msg.from_tag().unwrap_or_default();
        let to_tag = msg.to_tag();
        let (dest, late) = match self.dialogs.find_mut(&call_id, &from_tag, to_tag.as_deref()) {
            Some(d) => {
                d.last_activity = now;
                d.acked = true;
                let dest = if d.from_caller(&from_tag) { d.callee } else { Some(d.caller) };
                let late = d.late_offer;
                d.late_offer = false;
                (dest, late)
            }
            None if on_route => (super::alternate::next_hop(&msg).map(|(addr, proto, _)| Peer { addr, proto }), false),
            None => (None, false),
        };
        let Some(dest) = dest else {
            self.metrics.dropped.fetch_add(1, Relaxed);
            return;
        };
        if late {
            if let Some(t) = to_tag.as_deref() {
                if let Err(e) = self.anchor(&mut msg, false, &from_tag, Some(t)) {
                    tracing::warn!(call_id, error = %e, "media relay refused the late answer");
                }
            }
        }
        let branch = self.new_branch();
        let out = forward::branch_request(&msg, &self.me, &branch, None, inb.proto, dest.proto, false);
        self.send(out.to_bytes(), dest.addr, dest.proto);
    }

    /// A response routed through a primary that lists us as its alternate:
    /// drop its Via (ours now), adopt its Record-Route, pass it on.
    pub(super) fn stateless_response(&mut self, mut msg: Message) {
        msg.remove_first_value("via");
        let Some(next) = msg.top_via() else { return };
        let proto = if next.transport.eq_ignore_ascii_case("tcp") { Proto::Tcp } else { Proto::Udp };
        super::alternate::adopt_record_routes(&self.me, &mut msg, proto);
        let host_ip: Option<IpAddr> = next.host.trim_start_matches('[').trim_end_matches(']').parse().ok();
        let fallback = SocketAddr::new(host_ip.unwrap_or(self.me.addr), next.port.unwrap_or(5060));
        let dest = forward::response_dest(&next, fallback, proto);
        if let Some(code) = msg.code() {
            self.metrics.response(code);
        }
        tracing::info!(call_id = ?msg.call_id(), %dest, "forwarding a response for a primary (alternatePath)");
        self.send(msg.to_bytes(), dest, proto);
    }

    /// A 2xx retransmission for an INVITE whose client transaction is gone:
    /// re-anchor (same ports) and send it up the Via path.
    pub(super) fn stateless_2xx(&mut self, mut msg: Message, now: Instant) {
        msg.remove_first_value("via");
        let Some(next) = msg.top_via() else { return };
        let call_id = msg.call_id().unwrap_or_default().to_owned();
        if let (Some(from), Some(to)) = (msg.from_tag(), msg.to_tag()) {
            if self.dialogs.get(&call_id).is_some_and(|d| !d.late_offer) {
                let _ = self.anchor(&mut msg, false, &to, Some(&from));
            }
        }
        let proto = if next.transport.eq_ignore_ascii_case("tcp") { Proto::Tcp } else { Proto::Udp };
        super::alternate::adopt_record_routes(&self.me, &mut msg, proto);
        let host_ip: Option<IpAddr> = next.host.trim_start_matches('[').trim_end_matches(']').parse().ok();
        let fallback = SocketAddr::new(host_ip.unwrap_or(self.me.addr), next.port.unwrap_or(5060));
        let mut dest = forward::response_dest(&next, fallback, proto);
        // An early dialog taken over from the HA peer is answered here.
        if let Some(d) = self.dialogs.get_mut(&call_id).filter(|d| d.state == DialogState::Early) {
            d.confirm(msg.to_tag().unwrap_or_default(), msg.code().unwrap_or(200), now);
            d.ok_sent = 0;
            self.metrics.call_answers.fetch_add(1, Relaxed);
            tracing::info!(call_id, "2xx for a taken-over early dialog: call answered");
        }
        // The 2xx is being retransmitted and no ACK has come back: the hop we
        // sent it to may be gone. If it advertised alternates, try them in turn.
        let alts = super::alternate::addresses(&next.params);
        if let Some(d) = self.dialogs.get_mut(&call_id) {
            if !d.acked && d.ok_sent >= 1 && !alts.is_empty() {
                let k = (d.ok_sent as usize - 1) % alts.len();
                tracing::info!(call_id, primary = %dest, alternate = %alts[k], "2xx not acknowledged: resending via alternatePath");
                dest = alts[k];
            }
            d.ok_sent += 1;
        }
        self.metrics.response(200);
        self.send(msg.to_bytes(), dest, proto);
    }

    /// Once a second: expire bindings and end dialogs idle past the timeout.
    pub(super) fn sweep(&mut self, now: Instant) {
        self.location.expire(now);
        self.accepted.retain(|_, until| *until > now);
        for call_id in self.dialogs.idle(now, self.cfg.dialog_timeout) {
            tracing::info!(call_id, "dialog timed out");
            self.end_call(&call_id, EndReason::Timeout, 0, now);
        }
        // Early dialogs whose forward is gone (e.g. CANCEL raced the answer) end too.
        let stale: Vec<String> = self
            .dialogs
            .idle(now, std::time::Duration::from_secs(300))
            .into_iter()
            .filter(|c| self.dialogs.get(c).is_some_and(|d| d.state == DialogState::Early))
            .collect();
        for call_id in stale {
            self.end_call(&call_id, EndReason::Timeout, 408, now);
        }
    }
}
