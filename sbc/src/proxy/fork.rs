//! Sequential forking in the call layer (RFC 3261 §16.6–16.7): a
//! [`Forward`] links a server transaction to its branches, tries its
//! targets one after another (trunk failover, skipping DOWN and capped
//! trunks), runs timer C, and passes the best response upstream while
//! keeping the dialog, the anchored media and the trunk counters current.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::core::{Core, Wake};
use super::dialog::{EndReason, Peer};
use super::media::has_sdp;
use super::routing::Target;
use super::{forward, hiding, srtp};
use crate::metrics::TrunkOutcome;
use crate::sip::{Message, Method};
use crate::txn::{ClientId, ClientRequest, Endpoint, ServerId};

/// One request being forwarded, keyed by its server transaction.
pub(super) struct Forward {
    pub(super) request: Message,
    /// Where the request came from (address, transport, realm).
    from: Peer,
    /// The realm of the branch in progress.
    out_realm: usize,
    /// The realm the INVITE's offer is anchored toward (initial INVITEs).
    anchored_realm: Option<usize>,
    /// The offer as it came, for re-anchoring toward another realm.
    offer_sdp: Option<Vec<u8>>,
    pub(super) targets: VecDeque<Target>,
    /// The client transaction of the branch in progress.
    pub(super) current: Option<ClientId>,
    pub(super) canceled: bool,
    final_sent: bool,
    is_invite: bool,
    initial: bool,
    record_route: bool,
    /// The request carried an SDP offer (else a 2xx SDP is a late offer).
    offer_in_request: bool,
    last_code: u16,
    /// Trunk of the branch in progress.
    current_trunk: Option<usize>,
    /// Where the current trunk branch went (a trunk named by DNS keeps
    /// health per target).
    current_dest: Option<std::net::SocketAddr>,
    /// Whether any branch was actually sent.
    attempted: bool,
    /// Whether a trunk was passed over for a cap.
    skipped_cap: bool,
    /// Timer C of the INVITE branch in progress (reset by provisionals).
    timer_c: Option<Instant>,
    /// The branch in progress hides each side from the other (it crosses
    /// realms, or a side is a trunk with topology hiding).
    hide: bool,
    /// The branch in progress goes to a trunk with topology hiding.
    masked: bool,
    /// A trunk was passed over: it requires SRTP and the offer is plain.
    pub(super) skipped_srtp: bool,
    /// Answering the challenges of a trunk with credentials.
    pub(super) auth: super::trunk_auth::BranchAuth,
    /// When the branch in progress went out.
    branch_sent: Option<Instant>,
    /// The source counted in `trunk_invites` for the trunk branch in
    /// progress (taken back when it gets a final answer or fails).
    trunk_counted: Option<std::net::IpAddr>,
}

impl Forward {
    /// The SDP offer of the request as it came (before the relay rewrote
    /// it), when it was anchored.
    pub(super) fn offer(&self) -> Option<&[u8]> {
        self.offer_sdp.as_deref()
    }

    /// The trunks of the branch in progress and of the targets left.
    pub(super) fn trunks_in_use(&self) -> impl Iterator<Item = usize> + '_ {
        self.current_trunk.into_iter().chain(self.targets.iter().filter_map(|t| t.trunk))
    }
}

/// What a new [`Forward`] is made of.
pub(super) struct NewForward {
    /// The request as it will be forwarded (offer anchored, own Routes gone).
    pub(super) request: Message,
    /// Where it came from.
    pub(super) from: Peer,
    /// Where to try it, in order.
    pub(super) targets: VecDeque<Target>,
    /// An initial request (not in a dialog).
    pub(super) initial: bool,
    /// Whether to add our Record-Route.
    pub(super) record_route: bool,
    /// The realm the offer was anchored toward, with the offer as it came
    /// (initial INVITEs with SDP).
    pub(super) anchored: Option<(usize, Vec<u8>)>,
}

fn is_timer_c_branch(f: &Forward, code: u16) -> bool {
    f.is_invite && (101..200).contains(&code)
}

impl Core {
    /// Links server transaction `id` to a new [`Forward`] and sends its first branch.
    pub(super) fn open_forward(&mut self, txn: &mut Endpoint, id: ServerId, n: NewForward, now: Instant) {
        let forward = Forward {
            is_invite: n.request.method() == Some(&Method::Invite),
            offer_in_request: has_sdp(&n.request),
            request: n.request,
            from: n.from,
            out_realm: n.from.realm,
            anchored_realm: n.anchored.as_ref().map(|a| a.0),
            offer_sdp: n.anchored.map(|a| a.1),
            targets: n.targets,
            current: None,
            canceled: false,
            final_sent: false,
            initial: n.initial,
            record_route: n.record_route,
            last_code: 0,
            current_trunk: None,
            current_dest: None,
            attempted: false,
            skipped_cap: false,
            timer_c: None,
            hide: false,
            masked: false,
            skipped_srtp: false,
            auth: super::trunk_auth::BranchAuth::default(),
            branch_sent: None,
            trunk_counted: None,
        };
        self.forwards.insert(id, forward);
        txn.set_forwarded(id);
        self.next_branch(txn, id, now);
    }

    /// Timer C (RFC 3261 16.6 step 11): a branch that rang for 3 minutes
    /// without a final answer is cancelled and the next target is tried.
    pub(super) fn timer_c(&mut self, txn: &mut Endpoint, id: ServerId, now: Instant) {
        tracing::debug!(?id, "timer C due");
        let Some(f) = self.forwards.get_mut(&id) else { return };
        if f.final_sent || f.timer_c.is_none_or(|t| t > now) {
            return;
        }
        f.timer_c = None;
        let Some(ck) = f.current.take() else { return };
        if f.last_code == 0 {
            f.last_code = 408;
        }
        tracing::debug!(call_id = ?f.request.call_id(), "timer C: no final answer after ringing; cancelling the branch");
        txn.cancel(ck, now);
        if let Some(i) = self.forwards.get(&id).and_then(|f| f.current_trunk) {
            self.trunk_outcome(i, TrunkOutcome::Timeout);
        }
        self.next_branch(txn, id, now);
    }

    /// Takes the next target a new call may go to, skipping DOWN and capped
    /// trunks (each skip logged and counted).
    fn pick_target(&mut self, id: ServerId, now: Instant) -> Option<Target> {
        loop {
            let f = self.forwards.get_mut(&id)?;
            let target = f.targets.pop_front()?;
            let Some(i) = target.trunk.filter(|_| f.initial && f.is_invite) else { return Some(target) };
            if self.trunk_srtp(Some(i)) && self.forwards.get_mut(&id).is_some_and(srtp::skip_plain) {
                tracing::debug!(trunk = %target.label, "skipping trunk: it requires SRTP and the offer is plain RTP");
                continue;
            }
            match self.trunk_admits(i, now) {
                Ok(()) => return Some(target),
                Err(why) => {
                    use super::trunks::Skip;
                    let outcome = if why == Skip::Down {
                        TrunkOutcome::SkippedDown
                    } else {
                        if let Some(f) = self.forwards.get_mut(&id) {
                            f.skipped_cap = true;
                        }
                        TrunkOutcome::SkippedCap
                    };
                    tracing::debug!(trunk = %target.label, reason = ?why, "skipping trunk for a new call");
                    self.trunk_outcome(i, outcome);
                }
            }
        }
    }

    /// Sends the forward's request to its next target, or answers upstream
    /// with the best final response when none is left.
    fn next_branch(&mut self, txn: &mut Endpoint, id: ServerId, now: Instant) {
        self.settle_trunk_invite(id);
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
            } else if !f.attempted && f.skipped_srtp {
                extra.push(srtp::warning(self.me.get(f.from.realm).unwrap_or(&self.me[0])));
                (488, "Not Acceptable Here")
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
            let (is_invite, initial) = (f.is_invite, f.initial);
            let call_id = f.request.call_id().unwrap_or_default().to_owned();
            f.final_sent = true;
            self.forwards.remove(&id);
            let reason_for = if code == 487 { EndReason::Cancel } else { EndReason::Failed };
            if is_invite && initial {
                self.metrics.call_failures.fetch_add(1, Relaxed);
                self.end_call(&call_id, reason_for, code, now);
            }
            txn.reply(id, code, reason, extra, now);
            return;
        };
        if !self.anchor_toward(id, target.realm) {
            self.next_branch(txn, id, now);
            return;
        }
        let target_peer = Peer { addr: target.dest, proto: target.proto, realm: target.realm };
        let masked = self.hides(&target_peer);
        let from_hides = self.forwards.get(&id).is_some_and(|f| f.from.realm != target.realm || self.hides(&f.from));
        let branch = txn.new_branch();
        let Some(f) = self.forwards.get_mut(&id) else { return };
        f.attempted = true;
        (f.hide, f.masked) = (masked || from_hides, masked);
        f.out_realm = target.realm;
        let ruri = if target.uri.is_empty() { None } else { Some(target.uri.as_str()) };
        let hide = f.hide;
        let crossing = forward::Crossing {
            me_in: self.me.get(f.from.realm).unwrap_or(&self.me[0]),
            me_out: self.me.get(target.realm).unwrap_or(&self.me[0]),
            in_proto: f.from.proto,
            out_proto: target.proto,
            hide,
        };
        let out = forward::branch_request(&f.request, &crossing, &branch, ruri, f.record_route);
        let call_trunk = target.trunk.filter(|_| f.is_invite && f.initial);
        f.current_trunk = call_trunk;
        f.current_dest = call_trunk.map(|_| target.dest);
        let sender_contact = hide.then(|| f.request.contacts().into_iter().next()).flatten();
        let from_tag = f.request.from_tag().unwrap_or_default();
        if let Some(d) = f.request.call_id().and_then(|c| self.dialogs.get_mut(c)) {
            if f.is_invite && f.initial {
                d.callee = Some(target_peer);
                d.caller_vias = if hide {
                    f.request.header_values("via").into_iter().map(str::to_owned).collect()
                } else {
                    Vec::new()
                };
                d.target.clone_from(&target.label);
                d.trunk = call_trunk;
            }
            // The sender's own Contact, hidden from the other realm: requests
            // to it go there.
            if let Some(crate::sip::Contact::Addr(na)) = sender_contact {
                d.keep_contact(d.from_caller(&from_tag), na.uri.to_string());
            }
        }
        if f.is_invite && f.initial {
            tracing::debug!(call_id = ?f.request.call_id(), target = %target.label, dest = %target.dest, "routing INVITE");
        }
        // A fast timeout when there is somewhere else to try.
        let fast = f.is_invite || !f.targets.is_empty();
        f.branch_sent = Some(now);
        if call_trunk.is_some() {
            let ip = f.from.addr.ip();
            f.trunk_counted = Some(ip);
            self.trunk_invites.add(ip);
        }
        if let Some(i) = call_trunk {
            self.trunk_take(i, now);
        }
        let timeout = fast.then_some(self.cfg.invite_timeout);
        let out = self.prepare_branch(id, out, &target, timeout);
        let c = ClientRequest {
            request: out,
            dest: target.dest,
            proto: target.proto,
            realm: target.realm,
            owner: Some(id),
            timeout,
        };
        let client = txn.start_client(c, now);
        if let Some(f) = self.forwards.get_mut(&id) {
            f.current = client;
        }
    }

    /// The trunk branch of the forward of `id` got its final answer or
    /// failed: its source's count of INVITEs outstanding toward trunks
    /// goes back down.
    pub(super) fn settle_trunk_invite(&mut self, id: ServerId) {
        if let Some(ip) = self.forwards.get_mut(&id).and_then(|f| f.trunk_counted.take()) {
            self.trunk_invites.remove(ip);
        }
    }

    /// Before a branch of an initial INVITE goes to `realm`: when its offer
    /// was anchored toward another realm, the relay session is made again
    /// toward this one (the SDP must name the relay's address there).
    /// False when the relay refuses: the target is skipped.
    fn anchor_toward(&mut self, id: ServerId, realm: usize) -> bool {
        let Some(f) = self.forwards.get(&id) else { return false };
        let (Some(anchored), Some(original)) = (f.anchored_realm, f.offer_sdp.clone()) else { return true };
        if anchored == realm {
            return true;
        }
        let mut request = f.request.clone();
        let (call_id, from_tag, from_realm) =
            (request.call_id().unwrap_or_default().to_owned(), request.from_tag().unwrap_or_default(), f.from.realm);
        let _ = self.media.delete(&call_id, Some(&from_tag));
        request.set_body(original);
        match self.anchor(&mut request, true, &from_tag, None, (from_realm, realm)) {
            Ok(()) => {
                if let Some(f) = self.forwards.get_mut(&id) {
                    f.request = request;
                    f.anchored_realm = Some(realm);
                }
                true
            }
            Err(e) => {
                crate::warn_limited!(call_id, error = %e, "media relay refused the offer toward another realm; skipping the target");
                if let Some(f) = self.forwards.get_mut(&id) {
                    f.anchored_realm = None;
                    f.last_code = 503;
                }
                false
            }
        }
    }

    /// Branch `branch` of the forward of `id` got no answer: try the next
    /// target. A timeout counts as a 408, a transport error as a 503
    /// (RFC 3261 §16.9), should no other target answer.
    pub(super) fn on_branch_failure(&mut self, txn: &mut Endpoint, id: ServerId, branch: ClientId, now: Instant) {
        let transport = txn.failure(branch) == Some(crate::txn::Failure::Transport);
        let Some(f) = self.forwards.get_mut(&id) else { return };
        if f.current != Some(branch) || f.final_sent {
            return;
        }
        f.current = None;
        if f.last_code == 0 {
            f.last_code = if transport { 503 } else { 408 };
        }
        let (src, sent, dest) = (f.from.addr.ip(), f.branch_sent.unwrap_or(now), f.current_dest);
        if let Some(i) = f.current_trunk {
            self.trunk_outcome(i, TrunkOutcome::Timeout);
            self.trunk_passive_failure((i, dest), src, sent, "INVITE timeout or transport error", now);
        }
        self.next_branch(txn, id, now);
    }

    /// A response (not absorbed by its transaction) on branch `branch` of
    /// the forward of `id`. Responses of a branch given up on are ignored.
    pub(super) fn on_branch_response(
        &mut self,
        txn: &mut Endpoint,
        id: ServerId,
        branch: ClientId,
        mut resp: Message,
        code: u16,
        now: Instant,
    ) {
        use super::trunk_auth::Challenged;
        let (code, auth_failed) = match self.on_challenge(txn, (id, branch), code, &mut resp, now) {
            Challenged::Retried => return,
            Challenged::Refused => (resp.code().unwrap_or(403), true),
            Challenged::NotOurs => (code, false),
        };
        let Some(f) = self.forwards.get_mut(&id) else { return };
        if f.current != Some(branch) {
            return;
        }
        if let Some(i) = f.current_trunk {
            let src = f.from.addr.ip();
            self.trunk_answered(i, src, now);
        }
        let Some(f) = self.forwards.get_mut(&id) else { return };
        if code == 100 {
            return; // hop by hop
        }
        if is_timer_c_branch(f, code) {
            let at = now + self.cfg.timer_c;
            f.timer_c = Some(at);
            tracing::debug!(?id, "timer C armed");
            self.timers.push(std::cmp::Reverse((at, Wake::TimerC(id))));
        }
        resp.remove_first_value("via");
        if f.hide {
            // The other side saw only our Via: the response goes up with
            // the Vias the request came with, and our Contact in place of
            // the far side's (kept for requests to it).
            let me_in = self.me.get(f.from.realm).unwrap_or(&self.me[0]);
            let hidden = forward::back_across(&mut resp, &f.request.header_values("via"), me_in, f.from.proto);
            let from_tag = f.request.from_tag().unwrap_or_default();
            if let (Some(uri), Some(d)) = (hidden, resp.call_id().and_then(|c| self.dialogs.get_mut(c))) {
                // The response comes from the side the request went to.
                d.keep_contact(!d.from_caller(&from_tag), uri);
            }
            if f.masked {
                hiding::unmask_response(&mut resp, &f.request, me_in);
            }
        }
        if code >= 300 {
            self.branch_failed(txn, id, resp, code, auth_failed, now);
        } else {
            self.branch_answered(txn, id, resp, code, now);
        }
    }

    /// A final failure on the current branch: the next target for a
    /// failover code (or a carrier challenge we could not answer,
    /// `auth_failed`), else the response goes upstream and the call ends.
    fn branch_failed(
        &mut self,
        txn: &mut Endpoint,
        id: ServerId,
        resp: Message,
        code: u16,
        auth_failed: bool,
        now: Instant,
    ) {
        self.settle_trunk_invite(id);
        let Some(f) = self.forwards.get_mut(&id) else { return };
        let (is_invite, initial) = (f.is_invite, f.initial);
        let req_from = f.request.from_tag().unwrap_or_default();
        let call_id = resp.call_id().unwrap_or_default().to_owned();
        let trunk = f.current_trunk;
        let (src, sent, dest) = (f.from.addr.ip(), f.branch_sent.unwrap_or(now), f.current_dest);
        f.last_code = code;
        f.current = None;
        if let Some(i) = trunk {
            self.trunk_outcome(i, TrunkOutcome::Failed);
            self.metrics.health.attempt(i, code);
            if self.cfg.health.failure_codes.contains(&code) {
                self.trunk_passive_failure((i, dest), src, sent, &format!("{code} on INVITE"), now);
            }
        }
        let Some(f) = self.forwards.get_mut(&id) else { return };
        if !f.canceled && (auth_failed || self.cfg.failover_codes.contains(&code)) && !f.targets.is_empty() {
            tracing::debug!(call_id, code, "next hop failed; trying the next target");
            self.next_branch(txn, id, now);
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
        txn.respond(id, &resp, now);
    }

    /// A provisional (not 100) or 2xx on the current branch: media
    /// anchored, the dialog and the trunk updated, the response sent up.
    fn branch_answered(&mut self, txn: &mut Endpoint, id: ServerId, mut resp: Message, code: u16, now: Instant) {
        let Some(f) = self.forwards.get(&id) else { return };
        let (is_invite, initial, offer_in_request) = (f.is_invite, f.initial, f.offer_in_request);
        // The response's sender is the branch's side; the request's is `from`.
        let realms = (f.out_realm, f.from.realm);
        let req_from = f.request.from_tag().unwrap_or_default();
        let call_id = resp.call_id().unwrap_or_default().to_owned();
        let (trunk, dest) = (f.current_trunk, f.current_dest);
        // 1xx (not 100) and 2xx.
        if is_invite {
            let to_tag = resp.to_tag().unwrap_or_default();
            // SDP in a response: an answer to the request's offer, or a late offer.
            let anchored = if offer_in_request {
                self.anchor(&mut resp, false, &to_tag, Some(&req_from), realms)
            } else {
                self.anchor(&mut resp, true, &to_tag, Some(&req_from), realms)
            };
            if let Err(e) = anchored {
                crate::warn_limited!(call_id, error = %e, "media relay refused the answer");
            }
            if initial {
                if let Some(d) = self.dialogs.get_mut(&call_id) {
                    if !d.pdd_done && code >= 180 {
                        d.pdd_done = true;
                        self.metrics.post_dial_delay(now.saturating_duration_since(d.started).as_secs_f64());
                        if let Some(i) = d.trunk {
                            self.metrics.health.pdd(i, now.saturating_duration_since(d.started).as_secs_f64());
                        }
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
                    // Watched for one-way audio from now, not in early media.
                    self.media.mark_answered(&call_id);
                }
            }
        } else if (200..300).contains(&code) && resp.cseq().is_some_and(|c| c.1 == Method::Bye) {
            self.end_bye(&call_id, &req_from, now);
        } else if offer_in_request && resp.cseq().is_some_and(|c| matches!(c.1, Method::Update | Method::Prack)) {
            // The answer to an UPDATE or PRACK offer.
            let to_tag = resp.to_tag().unwrap_or_default();
            if let Err(e) = self.anchor(&mut resp, false, &to_tag, Some(&req_from), realms) {
                crate::warn_limited!(call_id, error = %e, "media relay refused the answer");
            }
        }
        if (200..300).contains(&code) {
            self.settle_trunk_invite(id);
            if let Some(i) = trunk {
                self.trunk_outcome(i, TrunkOutcome::Answered);
                self.trunk_call_ok(i);
                self.dns_target_ok(i, dest);
            }
            if let Some(f) = self.forwards.get_mut(&id) {
                f.final_sent = true;
            }
            self.forwards.remove(&id);
        }
        txn.respond(id, &resp, now);
    }
}
