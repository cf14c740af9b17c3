//! The call layer's state and its entry points: what it owns, how each
//! transaction event reaches the code that handles it, its own timers
//! (timer C, trunk probes, the once-a-second sweep) and the gauges.
//!
//! The call layer talks to the transaction layer only through the
//! [`Endpoint`] passed into each entry point, never to a socket.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_relay::control::MediaControl;

use super::alternate;
use super::dialog::{DialogState, Dialogs, EndReason, Peer};
use super::fork::Forward;
use super::forward::Me;
use super::trunk_auth::CarrierAuth;
use super::trunks::TrunkRuntime;
use crate::cdr::CdrWriter;
use crate::config::Config;
use crate::location::Location;
use crate::metrics::SbcMetrics;
use crate::sip::Method;
use crate::txn::{ClientId, Endpoint, Event, ServerId};

/// Something the call layer must do at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Wake {
    /// Timer C of the forward of this server transaction.
    TimerC(ServerId),
    /// Probes or the sweep may be due.
    Tick,
}

/// The call layer.
pub(super) struct Core {
    pub(super) cfg: Arc<Config>,
    /// Our identity in each realm, by realm index (never empty).
    pub(super) me: Vec<Me>,
    pub(super) media: Arc<dyn MediaControl>,
    pub(super) metrics: Arc<SbcMetrics>,
    pub(super) location: Location,
    pub(super) dialogs: Dialogs,
    /// Requests being forwarded, by their server transaction.
    pub(super) forwards: HashMap<ServerId, Forward>,
    pub(super) timers: BinaryHeap<Reverse<(Instant, Wake)>>,
    pub(super) cdr: CdrWriter,
    last_sweep: Option<Instant>,
    pub(super) trunks: Vec<TrunkRuntime>,
    /// Client transaction of each outstanding OPTIONS probe → trunk.
    pub(super) probes: HashMap<ClientId, usize>,
    /// False on an HA standby: no trunk probes.
    pub(super) active: bool,
    /// Challenges answered for carriers, CSeq offsets, registrations.
    pub(super) carrier: CarrierAuth,
    /// Digest authentication, when `[auth]` is configured.
    pub(super) auth: Option<crate::auth::Authenticator>,
    /// MESSAGEs stored until their target is reachable.
    pub(super) mailbox: super::message::Mailbox,
    /// INVITE branches waiting for a trunk's final answer, by the source
    /// of the call (`max_trunk_invites_per_source`).
    pub(super) trunk_invites: crate::caps::SourceCounts,
    /// Trunks named by DNS: the resolver and each target's health.
    pub(super) dns_trunks: super::dns::DnsTrunks,
    /// Indices of trunks a reload removed (kept for their calls).
    pub(super) retired: std::collections::BTreeSet<usize>,
}

/// A per-process value that makes this node's nonces differ from the
/// other HA node's.
fn node_seed(cfg: &Config) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(cfg.realms.len());
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

impl Core {
    pub(super) fn new(
        cfg: Arc<Config>,
        media: Arc<dyn MediaControl>,
        metrics: Arc<SbcMetrics>,
        cdr: CdrWriter,
    ) -> Self {
        let (cfg_trunks, health) = (cfg.trunks.len(), cfg.health.thresholds);
        let alternate = cfg.alternate_path.enabled.then(|| alternate::param_value(&cfg.alternate_path.backups));
        let ours: Vec<_> = cfg
            .realms
            .iter()
            .flat_map(|r| {
                let tls = r.tls_listen.map(|t| [(r.advertise, t.port()), (t.ip(), t.port())]);
                [(r.advertise, r.listen.port()), (r.listen.ip(), r.listen.port())]
                    .into_iter()
                    .chain(tls.into_iter().flatten())
            })
            .filter(|(ip, _)| !ip.is_unspecified())
            .collect();
        let me = cfg
            .realms
            .iter()
            .map(|r| Me {
                addr: r.advertise,
                port: r.listen.port(),
                tls_port: r.tls_listen.map(|t| t.port()),
                alternate: alternate.clone(),
                ours: ours.clone(),
            })
            .collect();
        let auth = Self::new_authenticator(&cfg, node_seed(&cfg));
        if let Some(a) = &auth {
            metrics.auth.users.store(a.user_count() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let mailbox = super::message::Mailbox::in_memory(&cfg.messages);
        let dns_trunks = super::dns::DnsTrunks::new(&cfg);
        Self {
            auth,
            mailbox,
            me,
            carrier: CarrierAuth::new(&cfg, &metrics),
            cfg,
            media,
            metrics,
            location: Location::new(),
            dialogs: Dialogs::new(),
            forwards: HashMap::new(),
            timers: BinaryHeap::new(),
            cdr,
            last_sweep: None,
            trunks: (0..cfg_trunks).map(|_| TrunkRuntime::new(health)).collect(),
            probes: HashMap::new(),
            active: true,
            trunk_invites: crate::caps::SourceCounts::default(),
            dns_trunks,
            retired: std::collections::BTreeSet::new(),
        }
    }

    /// Our identity in `realm` (the first realm's for an unknown index).
    pub(super) fn me(&self, realm: usize) -> &Me {
        self.me.get(realm).unwrap_or(&self.me[0])
    }

    /// The relay interface names for a call whose offer comes from realm
    /// `offerer` and goes to realm `answerer` (the ng `direction`).
    pub(super) fn direction(&self, offerer: usize, answerer: usize) -> [Option<String>; 2] {
        let media = |r: usize| self.cfg.realms.get(r).and_then(|r| r.media.clone());
        [media(offerer), media(answerer)]
    }

    /// When [`on_timer`](Self::on_timer) next has work.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    pub(super) fn update_gauges(&self, txn: &Endpoint) {
        self.metrics.transactions.store(txn.len() as u64, Relaxed);
        self.metrics.dialogs.store(self.dialogs.len() as u64, Relaxed);
        self.metrics.bindings.store(self.location.len() as u64, Relaxed);
    }

    /// One event from the transaction layer.
    pub(super) fn on_event(&mut self, ev: Event, txn: &mut Endpoint, now: Instant) {
        match ev {
            Event::Request { id, msg, src, proto, realm } => {
                self.route_request(txn, id, msg, Peer { addr: src, proto, realm }, now);
            }
            Event::Ack { mut msg, src, proto, realm } => {
                self.shift_ack(&mut msg);
                self.session_ack(txn, msg, Peer { addr: src, proto, realm }, now);
            }
            Event::Cancel { id, invite } => self.on_cancel(txn, id, invite, now),
            Event::Response { id, owner, code, msg } => {
                if owner.is_none() && self.on_message_result(txn, id, Some(code), now) {
                    return;
                }
                if self.on_register_result(txn, id, Some((code, &msg)), now) {
                    return;
                }
                if code >= 200 {
                    if let Some(i) = self.probes.remove(&id) {
                        self.probe_result(i, Some(code), now);
                    } else if self.dns_probe_result(id, Some(code), now) {
                        return;
                    }
                }
                if let Some(owner) = owner {
                    self.on_branch_response(txn, owner, id, msg, code, now);
                }
            }
            Event::Failed { id, owner } => {
                if owner.is_none() && self.on_message_result(txn, id, None, now) {
                    return;
                }
                if self.on_register_result(txn, id, None, now) {
                    return;
                }
                if let Some(i) = self.probes.remove(&id) {
                    self.probe_result(i, None, now);
                } else if self.dns_probe_result(id, None, now) {
                    return;
                }
                if let Some(owner) = owner {
                    self.on_branch_failure(txn, owner, id, now);
                }
            }
            Event::Stray { msg, realm } => self.stray_response(txn, msg, realm, now),
        }
    }

    /// A CANCEL (RFC 3261 §16.10): 200 when it matches a forwarded INVITE,
    /// whose pending branch is then cancelled and no further one tried;
    /// 481 otherwise.
    fn on_cancel(&mut self, txn: &mut Endpoint, id: ServerId, invite: Option<ServerId>, now: Instant) {
        let Some(invite) = invite else {
            txn.reply(id, 481, "Call/Transaction Does Not Exist", Vec::new(), now);
            return;
        };
        txn.reply(id, 200, "OK", Vec::new(), now);
        let current = self.forwards.get_mut(&invite).and_then(|f| {
            f.canceled = true;
            f.targets.clear();
            f.current
        });
        if let Some(ck) = current {
            txn.cancel(ck, now);
        }
    }

    /// Runs the call layer's timers due at `now`: timer C, trunk probes,
    /// and once a second the sweep.
    pub(super) fn on_timer(&mut self, txn: &mut Endpoint, now: Instant) {
        while let Some(Reverse((t, _))) = self.timers.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((_, w))) = self.timers.pop() else { break };
            if let Wake::TimerC(id) = w {
                self.timer_c(txn, id, now);
            }
        }
        if self.active {
            self.probe_trunks(txn, now);
            self.probe_dns_targets(txn, now);
        }
        self.carrier_tick(txn, now);
        let sweep_due = self.last_sweep.is_none_or(|l| now.duration_since(l).as_secs() >= 1);
        if sweep_due {
            self.last_sweep = Some(now);
            self.sweep(txn, now);
            self.messages_tick(txn, now);
            self.timers.push(Reverse((now + Duration::from_secs(1), Wake::Tick)));
        }
    }

    /// Once a second: expire bindings and end dialogs idle past the timeout.
    fn sweep(&mut self, txn: &mut Endpoint, now: Instant) {
        self.location.expire(now);
        if let Some(a) = &mut self.auth {
            a.expire(now);
        }
        txn.sweep(now);
        // Answered but never acknowledged within 64×T1 (RFC 3261 §13.3.1.4):
        // BYE both ways. A standby leaves its replicated dialogs to the active.
        if self.active {
            let limit = txn.timer_config().t1 * 64;
            let unacked: Vec<String> = self
                .dialogs
                .iter()
                .filter(|d| d.state == DialogState::Confirmed && !d.acked)
                .filter(|d| d.answered.is_some_and(|a| now.saturating_duration_since(a) > limit))
                .map(|d| d.call_id.clone())
                .collect();
            for call_id in unacked {
                self.end_unacked(txn, &call_id, now);
            }
        }
        self.quality_tick(txn, now);
        for call_id in self.dialogs.idle(now, self.cfg.dialog_timeout) {
            tracing::debug!(call_id, "dialog timed out");
            self.end_call(&call_id, EndReason::Timeout, 0, now);
        }
        // Early dialogs whose forward is gone (e.g. CANCEL raced the answer) end too.
        let stale: Vec<String> = self
            .dialogs
            .idle(now, Duration::from_secs(300))
            .into_iter()
            .filter(|c| self.dialogs.get(c).is_some_and(|d| d.state == DialogState::Early))
            .collect();
        for call_id in stale {
            self.end_call(&call_id, EndReason::Timeout, 408, now);
        }
    }

    /// A response that matched no client transaction: a retransmitted 2xx
    /// to an INVITE (end to end), a response routed through a primary that
    /// lists us as its alternate, or a stray. Forwarded statelessly if the
    /// top Via is ours.
    fn stray_response(&mut self, txn: &mut Endpoint, msg: crate::sip::Message, realm: usize, now: Instant) {
        let parts = msg.top_via().and_then(|v| Some((v, msg.cseq()?.1, msg.code()?)));
        let Some((via, method, code)) = parts.filter(|(v, _, _)| alternate::via_is_ours(&self.me[0], v)) else {
            self.metrics.dropped.fetch_add(1, Relaxed);
            return;
        };
        if method == Method::Invite && (200..300).contains(&code) {
            let mut msg = msg;
            self.unshift_response(&mut msg);
            self.stateless_2xx(txn, msg, realm, now);
        } else if !self.me[0].is(&via.host, via.port) {
            self.stateless_response(txn, msg, realm);
        } else {
            self.metrics.dropped.fetch_add(1, Relaxed);
        }
    }
}
