//! Answering carriers' digest challenges (RFC 3261 §22.2, §8.1.3.5) on
//! the requests the call layer forwards to a trunk with credentials, and
//! keeping CSeq consistent afterwards.
//!
//! - A branch toward a trunk with `username`/`password` keeps the request
//!   as sent ([`BranchAuth`]). When it gets a 401 or 407, the request is
//!   sent again on a new branch with `Authorization`/`Proxy-Authorization`,
//!   CSeq + 1, same Call-ID and tags. Each challenge (header kind and
//!   realm) is answered once per request (a `stale=true` one once more):
//!   a challenge for a realm already answered means wrong credentials and
//!   the branch fails.
//! - A challenge that is not answered is never passed to the caller, who
//!   cannot answer it for our credentials: the branch ends as a 403, the
//!   next target of the route is tried whatever `failover_codes` says,
//!   and the caller gets `403 Forbidden - Trunk Authentication Failed`
//!   when none is left.
//! - The re-sent request has one more CSeq than the caller's. The dialog
//!   keeps that offset per sender (Call-ID and From-tag): later requests
//!   of that sender (its ACK for the 2xx, BYE, re-INVITE, PRACK's RAck)
//!   go out shifted by it, and the responses it gets carry its own CSeq
//!   back. CANCEL and the ACK for a non-2xx are built by the transaction
//!   layer from the request as sent, so they match the re-sent INVITE.
//! - The offsets of a dialog's senders are replicated with it
//!   (`DialogRecord::cseq_offsets`): the map here is the live index, the
//!   dialog's record is written again whenever an offset grows, and a node
//!   taking over puts them back ([`CarrierAuth::restore_offset`]).
//!
//! - Only a branch whose target names the trunk (its route, or the dialog
//!   the request belongs to) is answered: an in-dialog request that follows
//!   its own headers to a carrier's address gets no credentials.
//!
//! The registrations to carriers are in `trunk_reg`; [`CarrierAuth`] holds
//! the state of both.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::core::Core;
use super::routing::Target;
use super::trunk_reg::Registration;
use crate::auth::digest::{Algorithm, Challenge, Credentials};
use crate::config::{Config, TrunkAuth};
use crate::metrics::SbcMetrics;
use crate::sip::{Header, Message, StartLine};
use crate::transport::Proto;
use crate::txn::{ClientId, ClientRequest, Endpoint, ServerId};

/// The most times one request is re-sent with credentials.
const MAX_RETRIES: u8 = 3;

/// The call layer's carrier-authentication state.
pub(super) struct CarrierAuth {
    /// CSeq offsets by (Call-ID, From-tag of the sender).
    offsets: HashMap<(String, String), Offset>,
    /// One per trunk with `register = true`.
    pub(super) regs: Vec<Registration>,
    /// Outstanding REGISTER client transaction → index in `regs`.
    pub(super) reg_txns: HashMap<ClientId, usize>,
    /// The last time the call layer's timers ran (for `sbc ctl`).
    pub(super) last_now: Option<Instant>,
}

/// How far one sender's CSeq numbers are shifted toward the carrier.
struct Offset {
    n: u32,
    /// When it last grew.
    since: Instant,
}

impl CarrierAuth {
    /// The state for `cfg`'s trunks; registering trunks start unregistered.
    pub(super) fn new(cfg: &Config, metrics: &SbcMetrics) -> Self {
        let regs: Vec<Registration> = cfg
            .trunks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.auth.as_ref()?.register.as_ref().map(|r| Registration::new(i, r.expires)))
            .collect();
        for r in &regs {
            metrics.trunk_registered(r.trunk, Some(false));
        }
        Self { offsets: HashMap::new(), regs, reg_txns: HashMap::new(), last_now: None }
    }
}

impl CarrierAuth {
    /// `(From-tag, n)` for each of `tags` (a dialog's senders) whose
    /// requests in call `call_id` are shifted by `n`.
    pub(super) fn offsets_of<'a>(&self, call_id: &str, tags: impl Iterator<Item = &'a str>) -> Vec<(String, u32)> {
        tags.filter_map(|t| {
            let o = self.offsets.get(&(call_id.to_owned(), t.to_owned()))?;
            Some((t.to_owned(), o.n))
        })
        .collect()
    }

    /// Puts back the offset of a sender in a call taken over from the HA
    /// peer.
    pub(super) fn restore_offset(&mut self, call_id: &str, tag: &str, n: u32, now: Instant) {
        self.offsets.insert((call_id.to_owned(), tag.to_owned()), Offset { n, since: now });
    }
}

/// The authentication state of a forward's branch in progress.
#[derive(Default)]
pub(super) struct BranchAuth {
    /// The trunk with credentials the branch goes to.
    trunk: Option<usize>,
    /// The request as last sent on the branch (only toward such a trunk).
    sent: Option<Message>,
    dest: Option<(SocketAddr, Proto, usize)>,
    timeout: Option<Duration>,
    answered: Answered,
}

/// What became of a response on a branch.
pub(super) enum Challenged {
    /// A challenge was answered: the request went out again.
    Retried,
    /// A challenge could not be answered: the response is now a 403 (487
    /// when the caller cancelled) and the branch has failed.
    Refused,
    /// Not a challenge we answer: handle the response as usual.
    NotOurs,
}

/// The challenges answered for one request.
#[derive(Debug, Default)]
pub(super) struct Answered {
    /// `(proxy, realm)` of each challenge answered.
    realms: Vec<(bool, String)>,
    stale_used: bool,
    retries: u8,
}

impl Answered {
    /// Adds credentials to `req` (the request `resp` answers) for every
    /// challenge in the 401/407 `resp` not answered yet, and its CSeq + 1.
    /// One challenge per realm, SHA-256 when offered. False, leaving `req`
    /// alone, when there is none left to answer (the reason is returned).
    pub(super) fn answer(
        &mut self,
        req: &mut Message,
        resp: &Message,
        auth: &TrunkAuth,
        cnonce: &str,
    ) -> Result<(), &'static str> {
        let proxy = resp.code() == Some(407);
        let (challenge_header, credentials_header) =
            if proxy { ("proxy-authenticate", "Proxy-Authorization") } else { ("www-authenticate", "Authorization") };
        let mut offered: Vec<Challenge> = Vec::new();
        for ch in resp.headers_named(challenge_header).filter_map(|h| Challenge::parse(h.value())) {
            match offered.iter_mut().find(|c| c.realm == ch.realm) {
                Some(c) if c.algorithm == Algorithm::Sha256 => {}
                Some(c) => {
                    if ch.algorithm == Algorithm::Sha256 {
                        *c = ch;
                    }
                }
                None => offered.push(ch),
            }
        }
        if offered.is_empty() {
            return Err("no digest challenge with a supported algorithm");
        }
        if self.retries >= MAX_RETRIES {
            return Err("too many challenges for one request");
        }
        let mut stale_used = self.stale_used;
        let fresh: Vec<Challenge> = offered
            .into_iter()
            .filter(|ch| {
                let seen = self.realms.iter().any(|(p, r)| *p == proxy && *r == ch.realm);
                let again = seen && ch.stale && !stale_used;
                stale_used |= again;
                !seen || again
            })
            .collect();
        if fresh.is_empty() {
            return Err("challenged again after answering: wrong credentials?");
        }
        let (Some(method), Some(uri), Some((cseq, _))) =
            (req.method().map(ToString::to_string), req.request_uri().map(str::to_owned), req.cseq())
        else {
            return Err("the request cannot be re-sent");
        };
        for ch in &fresh {
            // A stale nonce's old answer goes.
            req.headers.retain(|h| {
                !(h.name() == credentials_header.to_ascii_lowercase()
                    && Credentials::parse(h.value()).is_some_and(|c| c.realm == ch.realm))
            });
            let c = Credentials::answer(ch, &auth.username, &auth.password, &method, &uri, cnonce, 1);
            req.insert_before_first("content-length", Header::new(credentials_header, &c.to_value()));
            self.realms.push((proxy, ch.realm.clone()));
        }
        self.stale_used = stale_used;
        self.retries += 1;
        req.set_header("cseq", &format!("{} {method}", cseq.wrapping_add(1)));
        Ok(())
    }
}

/// Gives `req` a new top Via branch.
pub(super) fn set_branch(req: &mut Message, branch: &str) {
    let Some(mut via) = req.top_via() else { return };
    via.set_param("branch", Some(branch));
    req.remove_first_value("via");
    req.insert_before_first("via", Header::new("Via", &via.to_string()));
}

/// Shifts a request's CSeq number (and a PRACK's RAck CSeq) by `n`.
fn shift_request(req: &mut Message, n: u32) {
    if let Some((num, method)) = req.cseq() {
        req.set_header("cseq", &format!("{} {method}", num.wrapping_add(n)));
    }
    let rack = req.header("rack").map(str::to_owned);
    let parts: Option<Vec<&str>> = rack.as_deref().map(|r| r.split_whitespace().collect());
    if let Some([rseq, num, method]) = parts.as_deref() {
        if let Ok(num) = num.parse::<u32>() {
            req.set_header("rack", &format!("{rseq} {} {method}", num.wrapping_add(n)));
        }
    }
}

/// Gives `resp` the CSeq number `n` (the one its request came with).
fn set_response_cseq(resp: &mut Message, n: u32) {
    if let Some((num, method)) = resp.cseq() {
        if num != n {
            resp.set_header("cseq", &format!("{n} {method}"));
        }
    }
}

/// Turns a carrier's challenge into the 403 the branch ends with.
fn into_forbidden(resp: &mut Message) {
    resp.start = StartLine::Response { code: 403, reason: "Forbidden - Trunk Authentication Failed".into() };
    resp.remove_all("www-authenticate");
    resp.remove_all("proxy-authenticate");
}

fn sender_key(m: &Message) -> (String, String) {
    (m.call_id().unwrap_or_default().to_owned(), m.from_tag().unwrap_or_default())
}

impl Core {
    /// The trunk with credentials a target reaches: the one its route (or,
    /// in dialog, the dialog) names. Never a trunk found by the address of
    /// a target taken from a request's own headers: anyone could aim those
    /// at a carrier to have our credentials answer its challenge.
    fn auth_trunk(&self, target: &Target) -> Option<usize> {
        target.trunk.filter(|i| self.cfg.trunks.get(*i).is_some_and(|t| t.auth.is_some()))
    }

    /// The trunk whose address a dialog's recorded peer is (a trunk that
    /// called in, say), in the peer's realm.
    pub(super) fn trunk_by_address(&self, peer: super::dialog::Peer) -> Option<usize> {
        let canon = SocketAddr::new(peer.addr.ip().to_canonical(), peer.addr.port());
        self.cfg.trunks.iter().position(|t| t.realm == peer.realm && (t.address == peer.addr || t.address == canon))
    }

    /// A branch request about to go to `target`: its CSeq shifted by the
    /// sender's offset, and kept for a challenge when the target is a trunk
    /// with credentials.
    pub(super) fn prepare_branch(
        &mut self,
        id: ServerId,
        mut out: Message,
        target: &Target,
        timeout: Option<Duration>,
    ) -> Message {
        let trunk = self.auth_trunk(target);
        let Some(f) = self.forwards.get_mut(&id) else { return out };
        if let Some(o) = self.carrier.offsets.get(&sender_key(&f.request)) {
            shift_request(&mut out, o.n);
        }
        f.auth = match trunk {
            Some(i) => BranchAuth {
                trunk: Some(i),
                sent: Some(out.clone()),
                dest: Some((target.dest, target.proto, target.realm)),
                timeout,
                answered: Answered::default(),
            },
            None => BranchAuth::default(),
        };
        out
    }

    /// A response on branch `branch` of the forward of `id`: its CSeq made
    /// the request's again, and a 401/407 from a trunk with credentials
    /// answered (see the module docs).
    pub(super) fn on_challenge(
        &mut self,
        txn: &mut Endpoint,
        (id, branch): (ServerId, ClientId),
        code: u16,
        resp: &mut Message,
        now: Instant,
    ) -> Challenged {
        let Some(f) = self.forwards.get_mut(&id).filter(|f| f.current == Some(branch)) else {
            return Challenged::NotOurs;
        };
        if let Some((n, _)) = f.request.cseq() {
            set_response_cseq(resp, n);
        }
        if code != 401 && code != 407 {
            return Challenged::NotOurs;
        }
        if f.canceled && f.auth.trunk.is_some() {
            // The caller gave up: the challenge is moot.
            resp.start = StartLine::Response { code: 487, reason: "Request Terminated".into() };
            resp.remove_all("www-authenticate");
            resp.remove_all("proxy-authenticate");
            return Challenged::Refused;
        }
        let (Some(i), Some(sent), Some((dest, proto, realm))) = (f.auth.trunk, f.auth.sent.as_ref(), f.auth.dest)
        else {
            return Challenged::NotOurs;
        };
        let Some(t) = self.cfg.trunks.get(i) else { return Challenged::NotOurs };
        let Some(auth) = t.auth.as_ref() else { return Challenged::NotOurs };
        let mut req = sent.clone();
        let cnonce = txn.unique();
        let call_id = f.request.call_id().unwrap_or_default().to_owned();
        if let Err(why) = f.auth.answered.answer(&mut req, resp, auth, &cnonce) {
            crate::warn_limited!(trunk = %t.name, code, call_id, "carrier challenge not answered: {why}; the branch fails with 403");
            self.metrics.trunk_auth_failed(i);
            into_forbidden(resp);
            return Challenged::Refused;
        }
        set_branch(&mut req, &txn.new_branch());
        tracing::debug!(trunk = %t.name, code, call_id, "answering the carrier's challenge");
        let c = ClientRequest { request: req.clone(), dest, proto, realm, owner: Some(id), timeout: f.auth.timeout };
        f.auth.sent = Some(req);
        let key = sender_key(&f.request);
        f.current = txn.start_client(c, now);
        if f.current.is_none() {
            into_forbidden(resp);
            return Challenged::Refused;
        }
        let o = self.carrier.offsets.entry(key).or_insert(Offset { n: 0, since: now });
        o.n += 1;
        o.since = now;
        // The dialog's record carries the offset to the HA peer.
        self.dialogs.mark_changed(&call_id);
        Challenged::Retried
    }

    /// An ACK for a 2xx on its way to the other side: shifted like the
    /// sender's other requests.
    pub(super) fn shift_ack(&self, ack: &mut Message) {
        if let Some(o) = self.carrier.offsets.get(&sender_key(ack)) {
            shift_request(ack, o.n);
        }
    }

    /// A 2xx retransmission passed on statelessly: the CSeq its sender used.
    pub(super) fn unshift_response(&self, resp: &mut Message) {
        if let (Some(o), Some((n, _))) = (self.carrier.offsets.get(&sender_key(resp)), resp.cseq()) {
            set_response_cseq(resp, n.wrapping_sub(o.n));
        }
    }

    /// The carrier work due at `now`: registrations (on the active node)
    /// and forgetting the offsets of calls that are gone.
    pub(super) fn carrier_tick(&mut self, txn: &mut Endpoint, now: Instant) {
        self.carrier.last_now = Some(now);
        let linger = txn.timer_config().t1x64();
        let dialogs = &self.dialogs;
        self.carrier.offsets.retain(|(call_id, _), o| {
            dialogs.get(call_id).is_some() || now.saturating_duration_since(o.since) < linger
        });
        if self.active {
            self.register_trunks(txn, now);
        } else {
            self.registrations_stand_down();
        }
    }
}
