//! The stateful proxy (RFC 3261 §16), sans I/O: messages and the time go
//! in, messages to send come out. The signaling thread owns it.
//!
//! It is two layers with a narrow interface:
//!
//! - The transaction layer ([`crate::txn::Endpoint`]) owns every server and
//!   client transaction, their timers and retransmissions, absorbs
//!   retransmitted requests and responses, and matches responses, ACK and
//!   CANCEL to transactions. It reports [`crate::txn::Event`]s.
//! - The call layer (`core::Core`) acts on those events: routing,
//!   sequential forking over targets (`fork`), dialogs, media anchoring
//!   through [`MediaControl`], trunks, the registrar, AlternatePath and the
//!   HA hooks. It answers with commands to the transaction layer (respond,
//!   start a client transaction, cancel, send statelessly) and never sees a
//!   socket.
//!
//! [`Proxy`] is the driver API around both: [`Proxy::handle`],
//! [`Proxy::on_timer`], [`Proxy::drain_output`], [`Proxy::next_deadline`],
//! and what the transport reports back: [`Proxy::transport_error`],
//! [`Proxy::flow_closed`].

mod acl;
pub mod alternate;
mod caps;
mod core;
pub mod dialog;
mod dns;
mod fork;
pub mod forward;
mod hiding;
mod identity;
mod media;
mod message;
mod quality;
pub mod register;
mod reload;
mod replica;
mod request;
pub mod routing;
mod srtp;
mod stateless;
mod trunk_auth;
mod trunk_reg;
mod trunks;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use media_relay::control::MediaControl;

use crate::cdr::CdrWriter;
use crate::config::Config;
use crate::metrics::SbcMetrics;
use crate::transport::{Flow, Inbound, Outbound, Proto};
use crate::txn::{Endpoint, TimerConfig};

pub use media::MediaError;
pub use reload::{restart_key, ReloadError, ReloadMetrics, ReloadSummary};

use self::core::Core;

/// The proxy: the transaction layer and the call layer above it.
pub struct Proxy {
    txn: Endpoint,
    core: Core,
    /// Source ACLs, checked before anything else.
    acl: acl::Gate,
    /// Topology hiding and Call-ID mapping at the edge toward trunks.
    edge: hiding::Boundary,
    /// The time of the latest input (for the edge's bookkeeping on output).
    clock: Instant,
    /// Per-source rate limits and bans, checked before anything else.
    guard: crate::guard::Guard,
}

impl Proxy {
    /// A proxy for `cfg`, anchoring media through `media`.
    #[must_use]
    pub fn new(cfg: Arc<Config>, media: Arc<dyn MediaControl>, metrics: Arc<SbcMetrics>, cdr: CdrWriter) -> Self {
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
            );
            h.finish()
        };
        let timer_cfg = TimerConfig { t1: cfg.t1, t2: cfg.t2, t4: cfg.t4 };
        metrics.name_realms(&cfg.realms.iter().map(|r| r.name.clone()).collect::<Vec<_>>());
        let mut txn = Endpoint::new(timer_cfg, Arc::clone(&metrics), seed);
        txn.set_limits(cfg.limits);
        txn.set_caps(cfg.caps);
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let guard = crate::guard::Guard::new(&cfg, Arc::clone(&metrics), Instant::now(), unix);
        Self {
            guard,
            txn,
            core: Core::new(cfg, media, metrics, cdr),
            acl: acl::Gate::default(),
            edge: hiding::Boundary::default(),
            clock: Instant::now(),
        }
    }

    /// Takes the messages to send.
    pub fn drain_output(&mut self) -> Vec<Outbound> {
        let (cfg, me, now) = (&self.core.cfg, &self.core.me, self.clock);
        self.txn.drain_output().into_iter().map(|o| self.edge.outbound(cfg, me, o, now)).collect()
    }

    /// The earliest time [`on_timer`](Self::on_timer) has work.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.txn.next_deadline(), self.core.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Handles one message from the network.
    pub fn handle(&mut self, inbound: Inbound, now: Instant) {
        self.clock = now;
        // Bans and rate limits, before anything is parsed.
        let src = inbound.src.ip();
        if !self.guard.check(src, &inbound.data, now) {
            return;
        }
        match self.acl.check(&self.core.cfg, &self.core.metrics, &inbound, now) {
            acl::Verdict::Pass => {}
            acl::Verdict::Drop => return,
            acl::Verdict::Reject(r) => {
                self.txn.send(r, inbound.src, inbound.proto, inbound.realm);
                return;
            }
        }
        // Message limits, before any state (Call-ID mapping, transaction).
        if !self.txn.admit(&inbound) {
            self.guard.after(src, true, 0, now);
            return;
        }
        let before = self.guard_feedback();
        let inbound = self.edge.inbound(&self.core.cfg, inbound, now);
        self.txn.handle(inbound, now);
        self.run_events(now);
        self.core.update_gauges(&self.txn);
        let after = self.guard_feedback();
        self.guard.after(src, after.0 > before.0, after.1.saturating_sub(before.1), now);
    }

    /// Counts the guard learns from around one message: parse errors, and
    /// failed authentications (wrong password or unknown user, a REGISTER
    /// for an AOR the user does not own, REGISTERs refused 403/404).
    fn guard_feedback(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.core.metrics;
        let auth = m.auth.failures.load(Relaxed) + m.auth.forbidden.load(Relaxed);
        (m.parse_errors.load(Relaxed), auth + m.guard.register_refused.load(Relaxed))
    }

    /// The source guard (bans, rate limits).
    #[must_use]
    pub fn guard(&self) -> &crate::guard::Guard {
        &self.guard
    }

    /// The source guard, to set its enforcer, track or import bans.
    pub fn guard_mut(&mut self) -> &mut crate::guard::Guard {
        &mut self.guard
    }

    /// Fires every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) {
        self.clock = now;
        let dialogs = &self.core.dialogs;
        self.edge.sweep(now, self.txn.timer_config().t1 * 64, |c| dialogs.get(c).is_some());
        self.txn.on_timer(now);
        self.run_events(now);
        self.core.on_timer(&mut self.txn, now);
        self.run_events(now);
        self.core.update_gauges(&self.txn);
        self.guard.tick(now);
    }

    /// The transport could not deliver to `dest` over `proto` from `realm`
    /// (RFC 3261 §18.4: connect refused, TLS handshake failed or timed
    /// out, connection closed before the message went out, a closed flow).
    /// The client transactions waiting on it end at once, which the call
    /// layer takes as a 503 (§16.9): the next target is tried now, or 503
    /// goes upstream, and a trunk's health counts a failure. Server
    /// transactions answering there end.
    pub fn transport_error(&mut self, dest: std::net::SocketAddr, proto: Proto, realm: usize, now: Instant) {
        self.clock = now;
        let n = self.txn.transport_error(dest, proto, realm, now);
        if n > 0 {
            crate::info_limited!(%dest, proto = proto.via_name(), transactions = n, "transport error ends the transactions toward it");
        }
        self.run_events(now);
        self.core.update_gauges(&self.txn);
    }

    /// A connection a phone opened to us closed: the bindings it
    /// registered over it can no longer be reached (RFC 5626 flow failure;
    /// calls to them now fail over, or get 480), and the transactions
    /// waiting on it end as on a transport error.
    pub fn flow_closed(&mut self, flow: Flow) {
        let n = self.core.location.remove_flow(flow.realm, flow.proto.into(), flow.peer);
        if n > 0 {
            crate::info_limited!(peer = %flow.peer, proto = flow.proto.via_name(), bindings = n, "connection closed; its bindings are gone");
        }
        let now = self.clock;
        self.transport_error(flow.peer, flow.proto, flow.realm, now);
    }

    /// The connections (TCP and TLS flows) that registered bindings are
    /// reached over. After an HA takeover none of them is held here: the
    /// transport counts them as closed ([`crate::transport::Transport::lose_flows`]).
    #[must_use]
    pub fn binding_flows(&self, now: Instant) -> Vec<Flow> {
        let mut flows: Vec<Flow> = self
            .core
            .location
            .aors()
            .iter()
            .flat_map(|aor| self.core.location.lookup(aor, now))
            .map(|b| Flow { realm: b.realm, proto: b.transport.proto(), peer: b.source })
            .filter(|f| f.proto.reliable())
            .collect();
        flows.sort_unstable_by_key(|f| (f.realm, f.peer, f.proto.via_name()));
        flows.dedup();
        flows
    }

    /// Keeps stored MESSAGEs in `log` (a durable spool) from now on: the
    /// messages it replays are pending again. Without it they are kept in
    /// memory only.
    ///
    /// # Errors
    /// The log cannot be read.
    pub fn set_message_log(
        &mut self,
        log: Box<dyn crate::messages::MessageLog>,
    ) -> Result<(), crate::messages::LogError> {
        self.core.set_message_log(log)
    }

    /// Opens the MESSAGE store's spool when `[messages] spool_dir` is set
    /// (creating it), and takes back the messages pending there.
    ///
    /// # Errors
    /// The directory cannot be created or read ([`crate::error::Error::OpenMessages`]).
    pub fn open_message_spool(&mut self) -> crate::error::Result<()> {
        let Some(dir) = self.core.cfg.messages.spool_dir.clone() else { return Ok(()) };
        let opened = crate::messages::SpoolLog::open(&dir, self.core.cfg.messages.max_spool_bytes)
            .and_then(|log| self.set_message_log(Box::new(log)));
        opened.map_err(|source| crate::error::Error::OpenMessages { path: dir, source })
    }

    /// `sbc ctl` commands: `trunks`, `trunk NAME up|down|auto`.
    /// `sbc ctl` commands: `trunks`, `trunk NAME up|down|auto`, `bans`,
    /// `ban ADDR[/LEN] [--for DURATION]`, `unban ADDR[/LEN]`.
    pub fn control(&mut self, line: &str) -> String {
        let now = self.clock.max(Instant::now());
        self.guard.control(line, now).unwrap_or_else(|| self.core.control(line))
    }

    /// Hands every pending transaction event to the call layer.
    fn run_events(&mut self, now: Instant) {
        while let Some(ev) = self.txn.poll_event() {
            self.core.on_event(ev, &mut self.txn, now);
        }
    }
}
