//! Server transactions (RFC 3261 §17.2): INVITE (figure 7) and non-INVITE
//! (figure 8).

use std::time::{Duration, Instant};

use super::{Kind, TimerConfig};

/// Server transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Request received ("Trying" for non-INVITE until a provisional).
    Proceeding,
    /// Final response sent; waiting for ACK (INVITE) or absorbing retransmissions.
    Completed,
    /// ACK received (INVITE); absorbing ACK retransmissions.
    Confirmed,
    /// Done.
    Terminated,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAction {
    /// (Re)transmit these response bytes.
    Send(Vec<u8>),
    /// Timer H fired: the ACK never came.
    Timeout,
    /// The transaction is over; forget it.
    Terminated,
}

/// A server transaction.
#[derive(Debug)]
pub struct ServerTxn {
    kind: Kind,
    state: ServerState,
    reliable: bool,
    cfg: TimerConfig,
    last: Option<Vec<u8>>,
    last_final: Option<u16>,
    /// Timer G (INVITE final-response retransmission) and its interval.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer H (wait for ACK).
    ack_deadline: Option<Instant>,
    /// Timer I or J.
    linger_until: Option<Instant>,
}

impl ServerTxn {
    /// A transaction for a request that just arrived.
    #[must_use]
    pub fn new(kind: Kind, reliable: bool, cfg: TimerConfig, _now: Instant) -> Self {
        Self {
            kind,
            state: ServerState::Proceeding,
            reliable,
            cfg,
            last: None,
            last_final: None,
            retransmit_at: None,
            interval: cfg.t1,
            ack_deadline: None,
            linger_until: None,
        }
    }

    /// Current state.
    #[must_use]
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// Whether the transaction is over.
    #[must_use]
    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }

    /// The final response code sent, if any.
    #[must_use]
    pub fn last_final_code(&self) -> Option<u16> {
        self.last_final
    }

    /// When [`on_timer`](Self::on_timer) next has work.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.ack_deadline, self.linger_until].into_iter().flatten().min()
    }

    fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.retransmit_at = None;
        self.ack_deadline = None;
        self.linger_until = None;
    }

    /// The request arrived again: resend the last response, if any.
    pub fn on_request_retransmission(&mut self, _now: Instant) -> Vec<ServerAction> {
        match (self.state, &self.last) {
            (ServerState::Proceeding | ServerState::Completed, Some(b)) => vec![ServerAction::Send(b.clone())],
            _ => Vec::new(),
        }
    }

    /// The TU sends a response with `code`.
    pub fn send_response(&mut self, code: u16, bytes: Vec<u8>, now: Instant) -> Vec<ServerAction> {
        if self.state != ServerState::Proceeding {
            return Vec::new();
        }
        let mut out = vec![ServerAction::Send(bytes.clone())];
        self.last = Some(bytes);
        if code < 200 {
            return out;
        }
        self.last_final = Some(code);
        match (self.kind, code) {
            (Kind::Invite, 200..=299) => {
                // 2xx retransmissions are end to end, not the transaction's.
                self.terminate();
                out.push(ServerAction::Terminated);
            }
            (Kind::Invite, _) => {
                self.state = ServerState::Completed;
                if !self.reliable {
                    self.interval = self.cfg.t1;
                    self.retransmit_at = Some(now + self.cfg.t1);
                }
                self.ack_deadline = Some(now + self.cfg.t1x64());
            }
            (Kind::NonInvite, _) => {
                if self.reliable {
                    self.terminate();
                    out.push(ServerAction::Terminated);
                } else {
                    self.state = ServerState::Completed;
                    self.linger_until = Some(now + self.cfg.t1x64());
                }
            }
        }
        out
    }

    /// An ACK matched this (INVITE) transaction.
    pub fn on_ack(&mut self, now: Instant) -> Vec<ServerAction> {
        if self.kind != Kind::Invite || self.state != ServerState::Completed {
            return Vec::new();
        }
        self.retransmit_at = None;
        self.ack_deadline = None;
        if self.reliable {
            self.terminate();
            return vec![ServerAction::Terminated];
        }
        self.state = ServerState::Confirmed;
        self.linger_until = Some(now + self.cfg.t4);
        Vec::new()
    }

    /// Fires every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<ServerAction> {
        let mut out = Vec::new();
        if self.linger_until.is_some_and(|t| t <= now) {
            self.terminate();
            out.push(ServerAction::Terminated);
            return out;
        }
        if self.ack_deadline.is_some_and(|t| t <= now) {
            self.terminate();
            out.push(ServerAction::Timeout);
            out.push(ServerAction::Terminated);
            return out;
        }
        if let (Some(at), Some(last)) = (self.retransmit_at, &self.last) {
            if at <= now {
                out.push(ServerAction::Send(last.clone()));
                self.interval = self.interval.saturating_mul(2).min(self.cfg.t2);
                self.retransmit_at = Some(at + self.interval);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn invite_486_retransmits_on_g_until_ack_then_i() {
        let t0 = Instant::now();
        let mut s = ServerTxn::new(Kind::Invite, false, TimerConfig::default(), t0);
        assert_eq!(s.send_response(100, b"100".to_vec(), t0), vec![ServerAction::Send(b"100".to_vec())]);
        assert_eq!(s.on_request_retransmission(at(t0, 10)), vec![ServerAction::Send(b"100".to_vec())]);
        s.send_response(486, b"486".to_vec(), at(t0, 1000));
        let mut sent = Vec::new();
        let mut ms = 1000;
        while let Some(d) = s.next_deadline() {
            let due = u64::try_from(d.duration_since(t0).as_millis()).unwrap();
            if due > 12_000 {
                break;
            }
            ms = due;
            for a in s.on_timer(at(t0, ms)) {
                if a == ServerAction::Send(b"486".to_vec()) {
                    sent.push(ms);
                }
            }
        }
        assert_eq!(sent, vec![1500, 2500, 4500, 8500, 12500].into_iter().filter(|m| *m <= 12_000).collect::<Vec<_>>());
        assert_eq!(s.on_request_retransmission(at(t0, ms)), vec![ServerAction::Send(b"486".to_vec())]);
        assert_eq!(s.on_ack(at(t0, 12_100)), vec![]);
        assert_eq!(s.state(), ServerState::Confirmed);
        assert_eq!(s.on_request_retransmission(at(t0, 12_200)), vec![], "absorbed in Confirmed");
        assert_eq!(s.on_timer(at(t0, 12_100 + 5000)), vec![ServerAction::Terminated], "timer I = T4");
    }

    #[test]
    fn invite_h_times_out_without_ack() {
        let t0 = Instant::now();
        let mut s = ServerTxn::new(Kind::Invite, true, TimerConfig::default(), t0);
        s.send_response(503, b"503".to_vec(), t0);
        assert_eq!(s.on_timer(at(t0, 31_999)), vec![], "no G on TCP");
        assert_eq!(s.on_timer(at(t0, 32_000)), vec![ServerAction::Timeout, ServerAction::Terminated]);
    }

    #[test]
    fn invite_2xx_terminates_at_once() {
        let t0 = Instant::now();
        let mut s = ServerTxn::new(Kind::Invite, false, TimerConfig::default(), t0);
        assert_eq!(
            s.send_response(200, b"200".to_vec(), t0),
            vec![ServerAction::Send(b"200".to_vec()), ServerAction::Terminated]
        );
        assert_eq!(s.last_final_code(), Some(200));
    }

    #[test]
    fn non_invite_j_and_reliable() {
        let t0 = Instant::now();
        let mut s = ServerTxn::new(Kind::NonInvite, false, TimerConfig::default(), t0);
        assert_eq!(s.on_request_retransmission(t0), vec![], "nothing to resend yet");
        s.send_response(200, b"200".to_vec(), t0);
        assert_eq!(s.on_request_retransmission(at(t0, 100)), vec![ServerAction::Send(b"200".to_vec())]);
        assert_eq!(s.on_timer(at(t0, 31_999)), vec![]);
        assert_eq!(s.on_timer(at(t0, 32_000)), vec![ServerAction::Terminated], "timer J = 64*T1");
        let mut s = ServerTxn::new(Kind::NonInvite, true, TimerConfig::default(), t0);
        assert_eq!(
            s.send_response(404, b"404".to_vec(), t0),
            vec![ServerAction::Send(b"404".to_vec()), ServerAction::Terminated]
        );
        assert_eq!(s.send_response(200, b"x".to_vec(), t0), vec![], "nothing after the end");
    }
}
