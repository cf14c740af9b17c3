//! Client transactions (RFC 3261 §17.1): the INVITE machine of figure 5
//! and the non-INVITE machine of figure 6.
//!
//! A [`ClientTxn`] owns the request bytes it retransmits and the timers
//! A/B/D (INVITE) or E/F/K (non-INVITE). It never touches a socket or the
//! clock: the caller feeds it responses, transport errors and timer polls,
//! each with `now`, and carries out the [`ClientAction`]s it returns, in
//! order.
//!
//! Not implemented: the RFC 6026 "Accepted" state. A 2xx to an INVITE
//! terminates the transaction as in RFC 3261; 2xx retransmissions that
//! follow match no transaction and are the proxy core's to forward.

use std::time::{Duration, Instant};

use super::timers::{after, earliest, is_due, Growth, Retransmit};
use super::{Kind, TimerConfig};

/// Client transaction state (RFC 3261 figures 5 and 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, no response yet.
    Calling,
    /// Non-INVITE request sent, no response yet.
    Trying,
    /// A provisional response has arrived.
    Proceeding,
    /// A final response has arrived (INVITE: non-2xx); absorbing its
    /// retransmissions until timer D or K fires.
    Completed,
    /// Over. Every further input is ignored; drop the transaction.
    Terminated,
}

/// Something the caller must do, in the order returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    /// (Re)transmit these request bytes to the transaction's destination.
    Send(Vec<u8>),
    /// Build the ACK for the non-2xx final response just passed to
    /// [`ClientTxn::on_response`] (hop-by-hop ACK, RFC 3261 §17.1.1.3) and
    /// send it to the same destination as the request.
    SendAck,
    /// Pass the response just received, with this status code, up to the TU.
    Deliver(u16),
    /// No final response in time (timer B or F, or the TU override): the TU
    /// acts as if it had received a 408.
    Timeout,
    /// The transport failed to send; the TU acts as if it had received a 503.
    TransportError,
    /// The transaction is over; forget it. Always the last action.
    Terminated,
}

/// One client transaction, INVITE or non-INVITE.
#[derive(Debug, Clone)]
pub struct ClientTxn {
    kind: Kind,
    state: ClientState,
    request: Vec<u8>,
    reliable: bool,
    cfg: TimerConfig,
    created: Instant,
    /// Timer A (INVITE) or E (non-INVITE); `None` on reliable transports.
    retransmit: Option<Retransmit>,
    /// Timer B or F.
    timeout_at: Option<Instant>,
    /// TU override of B/F while no response has arrived.
    override_at: Option<Instant>,
    /// Timer D or K, in Completed.
    linger_at: Option<Instant>,
}

impl ClientTxn {
    /// Starts a transaction for `request`: returns it with the first
    /// `Send(request)`. Arms A and B (INVITE) or E and F (non-INVITE); with
    /// `reliable` (TCP, TLS, SCTP) there are no retransmissions and timers
    /// D and K are zero.
    #[must_use]
    pub fn new(
        kind: Kind,
        request: Vec<u8>,
        reliable: bool,
        cfg: TimerConfig,
        now: Instant,
    ) -> (Self, Vec<ClientAction>) {
        let txn = Self {
            kind,
            state: match kind {
                Kind::Invite => ClientState::Calling,
                Kind::NonInvite => ClientState::Trying,
            },
            retransmit: if reliable { None } else { Retransmit::start(now, cfg.t1) },
            timeout_at: after(now, cfg.t1x64()),
            override_at: None,
            linger_at: None,
            created: now,
            reliable,
            cfg,
            request,
        };
        let first = ClientAction::Send(txn.request.clone());
        (txn, vec![first])
    }

    /// A TU-level failover timer (e.g. trunk failover): give up with
    /// [`ClientAction::Timeout`] `d` after the transaction was created, or
    /// at timer B/F if that is sooner, unless a response has arrived by
    /// then. No effect after the first response; a second call replaces
    /// the first.
    pub fn set_timeout_override(&mut self, d: Duration) {
        if self.awaiting_first_response() {
            self.override_at = after(self.created, d);
        }
    }

    /// A response with status `code` has matched this transaction
    /// (RFC 3261 §17.1.3). Codes outside 100..=699 are ignored.
    ///
    /// - 1xx in Calling/Trying/Proceeding: `Deliver`; the state becomes
    ///   Proceeding (INVITE: A and B stop; non-INVITE: E continues, every T2).
    /// - INVITE 2xx: `Deliver`, `Terminated`.
    /// - INVITE 300–699: `Deliver`, `SendAck`; Completed until timer D. A
    ///   retransmission of it in Completed: `SendAck` only.
    /// - Non-INVITE 200–699: `Deliver`; Completed until timer K.
    /// - Anything else (late 1xx, 2xx after a non-2xx, duplicates of a
    ///   non-INVITE final): nothing.
    pub fn on_response(&mut self, code: u16, now: Instant) -> Vec<ClientAction> {
        if !(100..=699).contains(&code) {
            return Vec::new();
        }
        let mut out = Vec::new();
        match self.state {
            ClientState::Calling | ClientState::Trying | ClientState::Proceeding => {
                out.push(ClientAction::Deliver(code));
                if code < 200 {
                    self.proceed();
                } else if self.kind == Kind::Invite && code < 300 {
                    self.terminate(&mut out);
                } else {
                    if self.kind == Kind::Invite {
                        out.push(ClientAction::SendAck);
                    }
                    self.complete(now, &mut out);
                }
            }
            ClientState::Completed => {
                if self.kind == Kind::Invite && code >= 300 {
                    out.push(ClientAction::SendAck);
                }
            }
            ClientState::Terminated => {}
        }
        out
    }

    /// Runs every timer due at `now`. Call it at (or after)
    /// [`next_deadline`](Self::next_deadline); calling it early does nothing.
    ///
    /// A timeout (B, F or the override) or D/K expiry wins over a
    /// retransmission due at the same time. A poll later than several
    /// retransmission deadlines sends once and keeps the original schedule.
    pub fn on_timer(&mut self, now: Instant) -> Vec<ClientAction> {
        let mut out = Vec::new();
        if self.state == ClientState::Terminated {
            return out;
        }
        if is_due(self.linger_at, now) {
            self.terminate(&mut out);
        } else if is_due(earliest(self.timeout_at, self.override_at), now) {
            out.push(ClientAction::Timeout);
            self.terminate(&mut out);
        } else if let Some(r) = self.retransmit.filter(|r| r.at <= now) {
            out.push(ClientAction::Send(self.request.clone()));
            let growth = match (self.kind, self.state) {
                (Kind::Invite, _) => Growth::Double,
                (Kind::NonInvite, ClientState::Proceeding) => Growth::Fixed(self.cfg.t2),
                (Kind::NonInvite, _) => Growth::DoubleCapped(self.cfg.t2),
            };
            self.retransmit = r.advance(now, growth);
        }
        out
    }

    /// The transport could not send the request (or the ACK): `TransportError`,
    /// `Terminated`. Nothing once terminated.
    pub fn on_transport_error(&mut self, now: Instant) -> Vec<ClientAction> {
        let _ = now;
        let mut out = Vec::new();
        if self.state != ClientState::Terminated {
            out.push(ClientAction::TransportError);
            self.terminate(&mut out);
        }
        out
    }

    /// When [`on_timer`](Self::on_timer) next has work; `None` when no timer
    /// is armed (terminated, or an INVITE in Proceeding waiting on the TU).
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        let timers = [self.retransmit.map(|r| r.at), self.timeout_at, self.override_at, self.linger_at];
        timers.into_iter().flatten().min()
    }

    /// Current state.
    #[must_use]
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// Whether the transaction is over and can be dropped.
    #[must_use]
    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// INVITE or non-INVITE.
    #[must_use]
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The request bytes this transaction sends (e.g. to build a CANCEL or
    /// the ACK from).
    #[must_use]
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    fn awaiting_first_response(&self) -> bool {
        matches!(self.state, ClientState::Calling | ClientState::Trying)
    }

    /// Enter (or stay in) Proceeding.
    fn proceed(&mut self) {
        self.state = ClientState::Proceeding;
        self.override_at = None;
        if self.kind == Kind::Invite {
            // Figure 5: in Proceeding neither A nor B runs; timer C (the
            // proxy's, RFC 3261 §16.8) is the TU's business.
            self.retransmit = None;
            self.timeout_at = None;
        }
        // Non-INVITE: E keeps its current deadline and then repeats every
        // T2 (§17.1.2.2); F keeps running.
    }

    /// A final response that leaves the transaction in Completed (INVITE
    /// non-2xx, non-INVITE any final): stop A/B or E/F, start D or K.
    fn complete(&mut self, now: Instant, out: &mut Vec<ClientAction>) {
        self.retransmit = None;
        self.timeout_at = None;
        self.override_at = None;
        let linger = match self.kind {
            Kind::Invite => self.cfg.timer_d(),
            Kind::NonInvite => self.cfg.t4,
        };
        if self.reliable || linger.is_zero() {
            self.terminate(out);
        } else {
            self.state = ClientState::Completed;
            self.linger_at = after(now, linger);
        }
    }

    fn terminate(&mut self, out: &mut Vec<ClientAction>) {
        self.state = ClientState::Terminated;
        self.retransmit = None;
        self.timeout_at = None;
        self.override_at = None;
        self.linger_at = None;
        out.push(ClientAction::Terminated);
    }
}
