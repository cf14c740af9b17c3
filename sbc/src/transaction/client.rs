//! Client transactions (RFC 3261 §17.1): INVITE (figure 5) and non-INVITE
//! (figure 6).

use std::time::{Duration, Instant};

use super::{Kind, TimerConfig};

/// Client transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, nothing back (INVITE "Calling", non-INVITE "Trying").
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived; absorbing retransmissions.
    Completed,
    /// Done.
    Terminated,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    /// (Re)transmit these request bytes.
    Send(Vec<u8>),
    /// Build and send the ACK for the non-2xx final response just passed in.
    SendAck,
    /// Pass the response with this code up to the transaction user.
    Deliver(u16),
    /// No final response in time (timer B/F, or the override): the TU sees 408.
    Timeout,
    /// The transport failed.
    TransportError,
    /// The transaction is over; forget it.
    Terminated,
}

/// A client transaction.
#[derive(Debug)]
pub struct ClientTxn {
    kind: Kind,
    state: ClientState,
    request: Vec<u8>,
    reliable: bool,
    cfg: TimerConfig,
    /// Next retransmission (A or E) and its current interval.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer B or F.
    timeout_at: Option<Instant>,
    /// TU-level fast timeout before any provisional (trunk failover).
    override_at: Option<Instant>,
    /// Timer D or K.
    linger_until: Option<Instant>,
    started: Instant,
}

impl ClientTxn {
    /// Starts a transaction: the request goes out at once.
    #[must_use]
    pub fn new(kind: Kind, request: Vec<u8>, reliable: bool, cfg: TimerConfig, now: Instant) -> (Self, Vec<ClientAction>) {
        let t = Self {
            kind,
            state: ClientState::Calling,
            reliable,
            cfg,
            retransmit_at: if reliable { None } else { Some(now + cfg.t1) },
            interval: cfg.t1,
            timeout_at: Some(now + cfg.t1x64()),
            override_at: None,
            linger_until: None,
            started: now,
            request,
        };
        let first = ClientAction::Send(t.request.clone());
        (t, vec![first])
    }

    /// Gives up after `d` if no provisional response has come by then (a
    /// faster failover than timer B/F). No effect once one has.
    pub fn set_timeout_override(&mut self, d: Duration) {
        if self.state == ClientState::Calling {
            self.override_at = Some(self.started + d);
        }
    }

    /// Current state.
    #[must_use]
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// INVITE or not.
    #[must_use]
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether the transaction is over.
    #[must_use]
    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// When [`on_timer`](Self::on_timer) next has work.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.override_at, self.linger_until].into_iter().flatten().min()
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.retransmit_at = None;
        self.timeout_at = None;
        self.override_at = None;
        self.linger_until = None;
    }

    fn complete(&mut self, now: Instant) -> bool {
        self.retransmit_at = None;
        self.timeout_at = None;
        self.override_at = None;
        let linger = match (self.kind, self.reliable) {
            (_, true) => Duration::ZERO,
            (Kind::Invite, false) => Duration::from_secs(32),
            (Kind::NonInvite, false) => self.cfg.t4,
        };
        if linger.is_zero() {
            self.terminate();
            true
        } else {
            self.state = ClientState::Completed;
            self.linger_until = Some(now + linger);
            false
        }
    }

    /// A response with `code` arrived for this transaction.
    pub fn on_response(&mut self, code: u16, now: Instant) -> Vec<ClientAction> {
        let mut out = Vec::new();
        match (self.state, code) {
            (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                self.state = ClientState::Proceeding;
                self.override_at = None;
                match self.kind {
                    // INVITE: no more retransmissions once anything came back.
                    Kind::Invite => self.retransmit_at = None,
                    // Non-INVITE: keep retransmitting at T2.
                    Kind::NonInvite => {
                        if !self.reliable {
                            self.interval = self.cfg.t2;
                            self.retransmit_at = Some(now + self.cfg.t2);
                        }
                    }
                }
                out.push(ClientAction::Deliver(code));
            }
            (ClientState::Calling | ClientState::Proceeding, 200..=299) if self.kind == Kind::Invite => {
                out.push(ClientAction::Deliver(code));
                self.terminate();
                out.push(ClientAction::Terminated);
            }
            (ClientState::Calling | ClientState::Proceeding, 200..) => {
                out.push(ClientAction::Deliver(code));
                if self.kind == Kind::Invite {
                    out.push(ClientAction::SendAck);
                }
                if self.complete(now) {
                    out.push(ClientAction::Terminated);
                }
            }
            (ClientState::Completed, 300..) if self.kind == Kind::Invite => out.push(ClientAction::SendAck),
            _ => {}
        }
        out
    }

    /// Fires every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<ClientAction> {
        let mut out = Vec::new();
        if self.linger_until.is_some_and(|t| t <= now) {
            self.terminate();
            out.push(ClientAction::Terminated);
            return out;
        }
        let timed_out = self.timeout_at.is_some_and(|t| t <= now) || self.override_at.is_some_and(|t| t <= now);
        if timed_out && matches!(self.state, ClientState::Calling | ClientState::Proceeding) {
            self.terminate();
            out.push(ClientAction::Timeout);
            out.push(ClientAction::Terminated);
            return out;
        }
        if let Some(at) = self.retransmit_at {
            if at <= now {
                out.push(ClientAction::Send(self.request.clone()));
                self.interval = match self.kind {
                    Kind::Invite => self.interval.saturating_mul(2),
                    Kind::NonInvite if self.state == ClientState::Proceeding => self.cfg.t2,
                    Kind::NonInvite => self.interval.saturating_mul(2).min(self.cfg.t2),
                };
                self.retransmit_at = Some(at + self.interval);
            }
        }
        out
    }

    /// The transport could not send the request.
    pub fn on_transport_error(&mut self, _now: Instant) -> Vec<ClientAction> {
        if self.is_terminated() {
            return Vec::new();
        }
        self.terminate();
        vec![ClientAction::TransportError, ClientAction::Terminated]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Steps the clock in 1 ms ticks and records when requests were sent.
    fn sends_until(t: &mut ClientTxn, t0: Instant, end_ms: u64) -> (Vec<u64>, Vec<ClientAction>) {
        let mut sent = Vec::new();
        let mut other = Vec::new();
        let mut ms = 0;
        while ms <= end_ms {
            if let Some(d) = t.next_deadline() {
                let due = u64::try_from(d.duration_since(t0).as_millis()).unwrap();
                if due > end_ms {
                    break;
                }
                ms = due;
                for a in t.on_timer(at(t0, ms)) {
                    match a {
                        ClientAction::Send(_) => sent.push(ms),
                        a => other.push(a),
                    }
                }
            } else {
                break;
            }
        }
        (sent, other)
    }

    #[test]
    fn invite_retransmits_with_doubling_then_times_out_at_32s() {
        let t0 = Instant::now();
        let (mut t, first) = ClientTxn::new(Kind::Invite, b"INVITE".to_vec(), false, TimerConfig::default(), t0);
        assert_eq!(first, vec![ClientAction::Send(b"INVITE".to_vec())]);
        let (sent, other) = sends_until(&mut t, t0, 40_000);
        assert_eq!(sent, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(other, vec![ClientAction::Timeout, ClientAction::Terminated]);
        assert!(t.is_terminated());
    }

    #[test]
    fn non_invite_e_caps_at_t2_and_f_at_32s() {
        let t0 = Instant::now();
        let (mut t, _) = ClientTxn::new(Kind::NonInvite, b"BYE".to_vec(), false, TimerConfig::default(), t0);
        let (sent, other) = sends_until(&mut t, t0, 40_000);
        assert_eq!(&sent[..6], &[500, 1500, 3500, 7500, 11500, 15500]);
        assert_eq!(*sent.last().unwrap(), 31500);
        assert_eq!(other, vec![ClientAction::Timeout, ClientAction::Terminated]);
    }

    #[test]
    fn non_invite_proceeding_retransmits_at_t2() {
        let t0 = Instant::now();
        let (mut t, _) = ClientTxn::new(Kind::NonInvite, b"BYE".to_vec(), false, TimerConfig::default(), t0);
        assert_eq!(t.on_response(180, at(t0, 100)), vec![ClientAction::Deliver(180)]);
        let (sent, _) = sends_until(&mut t, t0, 12_200);
        assert_eq!(sent, vec![4100, 8100, 12100]);
        let a = t.on_response(200, at(t0, 12_200));
        assert_eq!(a, vec![ClientAction::Deliver(200)]);
        assert_eq!(t.state(), ClientState::Completed);
        assert_eq!(t.on_timer(at(t0, 12_200 + 5000)), vec![ClientAction::Terminated], "timer K = T4");
    }

    #[test]
    fn invite_non_2xx_acks_absorbs_retransmissions_and_lingers_32s() {
        let t0 = Instant::now();
        let (mut t, _) = ClientTxn::new(Kind::Invite, b"INVITE".to_vec(), false, TimerConfig::default(), t0);
        assert_eq!(t.on_response(100, at(t0, 50)), vec![ClientAction::Deliver(100)]);
        assert_eq!(t.on_timer(at(t0, 600)), vec![], "no retransmission after a provisional");
        assert_eq!(t.on_response(486, at(t0, 1000)), vec![ClientAction::Deliver(486), ClientAction::SendAck]);
        assert_eq!(t.on_response(486, at(t0, 1500)), vec![ClientAction::SendAck], "retransmitted final: ACK again, no Deliver");
        assert_eq!(t.on_timer(at(t0, 1000 + 31_999)), vec![]);
        assert_eq!(t.on_timer(at(t0, 1000 + 32_000)), vec![ClientAction::Terminated], "timer D");
    }

    #[test]
    fn invite_2xx_terminates_and_reliable_has_no_retransmissions() {
        let t0 = Instant::now();
        let (mut t, _) = ClientTxn::new(Kind::Invite, b"I".to_vec(), true, TimerConfig::default(), t0);
        assert_eq!(t.on_timer(at(t0, 600)), vec![], "no timer A on TCP");
        assert_eq!(t.on_response(200, at(t0, 700)), vec![ClientAction::Deliver(200), ClientAction::Terminated]);
        let (mut t, _) = ClientTxn::new(Kind::Invite, b"I".to_vec(), true, TimerConfig::default(), t0);
        assert_eq!(
            t.on_response(503, at(t0, 700)),
            vec![ClientAction::Deliver(503), ClientAction::SendAck, ClientAction::Terminated],
            "timer D is 0 on reliable transports"
        );
    }

    #[test]
    fn timeout_override_fires_before_provisional_only() {
        let t0 = Instant::now();
        let (mut t, _) = ClientTxn::new(Kind::Invite, b"I".to_vec(), false, TimerConfig::default(), t0);
        t.set_timeout_override(Duration::from_secs(2));
        let (sent, other) = sends_until(&mut t, t0, 2500);
        assert_eq!(sent, vec![500, 1500]);
        assert_eq!(other, vec![ClientAction::Timeout, ClientAction::Terminated]);
        let (mut t, _) = ClientTxn::new(Kind::Invite, b"I".to_vec(), false, TimerConfig::default(), t0);
        t.set_timeout_override(Duration::from_secs(2));
        t.on_response(180, at(t0, 1000));
        assert_eq!(t.on_timer(at(t0, 2500)), vec![], "a ringing branch is not cut by the override");
        assert_eq!(t.next_deadline(), Some(at(t0, 32_000)));
    }

    #[test]
    fn configured_t1_is_honoured_and_transport_error_terminates() {
        let t0 = Instant::now();
        let cfg = TimerConfig { t1: Duration::from_millis(100), ..TimerConfig::default() };
        let (mut t, _) = ClientTxn::new(Kind::Invite, b"I".to_vec(), false, cfg, t0);
        let (sent, other) = sends_until(&mut t, t0, 7000);
        assert_eq!(sent, vec![100, 300, 700, 1500, 3100, 6300]);
        assert_eq!(other, vec![ClientAction::Timeout, ClientAction::Terminated], "B = 64*T1 = 6.4 s");
        let (mut t, _) = ClientTxn::new(Kind::NonInvite, b"O".to_vec(), false, cfg, t0);
        assert_eq!(t.on_transport_error(t0), vec![ClientAction::TransportError, ClientAction::Terminated]);
        assert!(t.on_transport_error(t0).is_empty());
    }
}
