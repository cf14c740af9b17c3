//! Server transactions (RFC 3261 §17.2): the INVITE machine of figure 7
//! and the non-INVITE machine of figure 8.
//!
//! A [`ServerTxn`] owns the last response it sent and the timers G/H/I
//! (INVITE) or J (non-INVITE). The TU hands it each response to send, with
//! its status code and bytes; the transaction absorbs request
//! retransmissions by resending the last response and, for INVITE,
//! retransmits a non-2xx final response until the ACK arrives.
//!
//! This proxy is stateful and sends its own 100 Trying for an INVITE
//! through [`ServerTxn::send_response`]; the transaction does not generate
//! one. Not implemented: the RFC 6026 "Accepted" state. A 2xx to an INVITE
//! terminates the transaction as in RFC 3261; its retransmissions are
//! end-to-end (the UAS's, forwarded by the proxy core).

use std::time::Instant;

use super::timers::{after, is_due, Growth, Retransmit};
use super::{Kind, TimerConfig};

/// Server transaction state (RFC 3261 figures 7 and 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE request received, nothing sent yet.
    Trying,
    /// INVITE received (its initial state), or a provisional response sent.
    Proceeding,
    /// A final response sent (INVITE: 300–699); retransmitting or
    /// re-sending it until the ACK (INVITE) or timer J (non-INVITE).
    Completed,
    /// INVITE only: the ACK arrived; absorbing ACK retransmissions until
    /// timer I.
    Confirmed,
    /// Over. Every further input is ignored; drop the transaction.
    Terminated,
}

/// Something the caller must do, in the order returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAction {
    /// (Re)transmit these response bytes to the request's source
    /// (RFC 3261 §18.2.2).
    Send(Vec<u8>),
    /// Timer H fired: no ACK arrived for the non-2xx final response. The
    /// TU is told (RFC 3261 §17.2.1); there is nothing to send.
    Timeout,
    /// The transport could not send a response (RFC 3261 §17.2.4).
    TransportError,
    /// The transaction is over; forget it. Always the last action.
    Terminated,
}

/// One server transaction, INVITE or non-INVITE.
#[derive(Debug, Clone)]
pub struct ServerTxn {
    kind: Kind,
    state: ServerState,
    reliable: bool,
    cfg: TimerConfig,
    /// The most recent response sent (provisional or final).
    last: Option<Vec<u8>>,
    last_final_code: Option<u16>,
    /// Timer G; `None` on reliable transports.
    retransmit: Option<Retransmit>,
    /// Timer H.
    timeout_at: Option<Instant>,
    /// Timer I (Confirmed) or J (non-INVITE Completed).
    linger_at: Option<Instant>,
}

impl ServerTxn {
    /// A transaction for a request that has just arrived and matched no
    /// existing one. INVITE starts in Proceeding, non-INVITE in Trying; no
    /// timer runs until a final response is sent.
    #[must_use]
    pub fn new(kind: Kind, reliable: bool, cfg: TimerConfig, now: Instant) -> Self {
        let _ = now;
        Self {
            kind,
            state: match kind {
                Kind::Invite => ServerState::Proceeding,
                Kind::NonInvite => ServerState::Trying,
            },
            reliable,
            cfg,
            last: None,
            last_final_code: None,
            retransmit: None,
            timeout_at: None,
            linger_at: None,
        }
    }

    /// The request arrived again: `Send` the last response if there is one
    /// (Proceeding: the latest provisional; Completed: the final). Absorbed
    /// silently in Trying, Confirmed and Terminated.
    pub fn on_request_retransmission(&mut self, now: Instant) -> Vec<ServerAction> {
        let _ = now;
        match (self.state, &self.last) {
            (ServerState::Proceeding | ServerState::Completed, Some(bytes)) => vec![ServerAction::Send(bytes.clone())],
            _ => Vec::new(),
        }
    }

    /// The TU sends a response with status `code`: returns `Send(bytes)`
    /// and moves the machine on.
    ///
    /// - 1xx in Trying/Proceeding: Proceeding; remembered for request
    ///   retransmissions.
    /// - INVITE 2xx: `Terminated` (RFC 3261; 2xx retransmission is the
    ///   UAS's job).
    /// - INVITE 300–699: Completed; timer G (T1, doubling, capped at T2;
    ///   unreliable only) and timer H (64·T1).
    /// - Non-INVITE 200–699: Completed until timer J (64·T1 unreliable; on
    ///   a reliable transport, `Terminated` at once).
    ///
    /// Ignored (nothing returned, nothing sent) once a final response has
    /// gone out, and for codes outside 100..=699.
    pub fn send_response(&mut self, code: u16, bytes: Vec<u8>, now: Instant) -> Vec<ServerAction> {
        if !(100..=699).contains(&code) || !matches!(self.state, ServerState::Trying | ServerState::Proceeding) {
            return Vec::new();
        }
        let mut out = vec![ServerAction::Send(bytes.clone())];
        self.last = Some(bytes);
        if code < 200 {
            self.state = ServerState::Proceeding;
            return out;
        }
        self.last_final_code = Some(code);
        match self.kind {
            Kind::Invite if code < 300 => self.terminate(&mut out),
            Kind::Invite => {
                self.state = ServerState::Completed;
                self.retransmit = if self.reliable { None } else { Retransmit::start(now, self.cfg.t1) };
                self.timeout_at = after(now, self.cfg.t1x64());
            }
            Kind::NonInvite => {
                let j = self.cfg.t1x64();
                if self.reliable || j.is_zero() {
                    self.terminate(&mut out);
                } else {
                    self.state = ServerState::Completed;
                    self.linger_at = after(now, j);
                }
            }
        }
        out
    }

    /// An ACK matched this transaction (RFC 3261 §17.2.3: same branch as
    /// the INVITE). In INVITE Completed: Confirmed, G and H stop, timer I
    /// (T4 unreliable; reliable: `Terminated` at once). Absorbed otherwise.
    pub fn on_ack(&mut self, now: Instant) -> Vec<ServerAction> {
        let mut out = Vec::new();
        if self.kind == Kind::Invite && self.state == ServerState::Completed {
            self.retransmit = None;
            self.timeout_at = None;
            if self.reliable || self.cfg.t4.is_zero() {
                self.terminate(&mut out);
            } else {
                self.state = ServerState::Confirmed;
                self.linger_at = after(now, self.cfg.t4);
            }
        }
        out
    }

    /// Runs every timer due at `now`. Call it at (or after)
    /// [`next_deadline`](Self::next_deadline); calling it early does nothing.
    ///
    /// Timer H, I or J wins over a G retransmission due at the same time. A
    /// poll later than several G deadlines sends once and keeps the schedule.
    pub fn on_timer(&mut self, now: Instant) -> Vec<ServerAction> {
        let mut out = Vec::new();
        if self.state == ServerState::Terminated {
            return out;
        }
        if is_due(self.linger_at, now) {
            self.terminate(&mut out);
        } else if is_due(self.timeout_at, now) {
            out.push(ServerAction::Timeout);
            self.terminate(&mut out);
        } else if let Some(r) = self.retransmit.filter(|r| r.at <= now) {
            if let Some(bytes) = &self.last {
                out.push(ServerAction::Send(bytes.clone()));
            }
            self.retransmit = r.advance(now, Growth::DoubleCapped(self.cfg.t2));
        }
        out
    }

    /// The transport could not send a response (after any RFC 3263
    /// fallback the caller tried): `TransportError`, `Terminated`. Nothing
    /// once terminated.
    pub fn on_transport_error(&mut self, now: Instant) -> Vec<ServerAction> {
        let _ = now;
        let mut out = Vec::new();
        if self.state != ServerState::Terminated {
            out.push(ServerAction::TransportError);
            self.terminate(&mut out);
        }
        out
    }

    /// When [`on_timer`](Self::on_timer) next has work; `None` when no timer
    /// is armed (waiting on the TU for a final response, or terminated).
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit.map(|r| r.at), self.timeout_at, self.linger_at].into_iter().flatten().min()
    }

    /// Current state.
    #[must_use]
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// Whether the transaction is over and can be dropped.
    #[must_use]
    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }

    /// INVITE or non-INVITE.
    #[must_use]
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Status code of the final response sent, if one has been.
    #[must_use]
    pub fn last_final_code(&self) -> Option<u16> {
        self.last_final_code
    }

    fn terminate(&mut self, out: &mut Vec<ServerAction>) {
        self.state = ServerState::Terminated;
        self.retransmit = None;
        self.timeout_at = None;
        self.linger_at = None;
        out.push(ServerAction::Terminated);
    }
}
