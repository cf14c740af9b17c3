//! Trunk health with hysteresis. Time is passed in (`now`); the proxy feeds
//! in probe results (OPTIONS) and passive outcomes (timeouts, transport
//! errors, failure codes on real calls) and gets transitions back.
//!
//! Rules:
//! - UP → DOWN after `down_after` consecutive failures (any mix of probe
//!   and passive failures; a success in between resets the count).
//! - DOWN → UP only after `up_after` consecutive probe successes AND at
//!   least `hold_down` since it went DOWN. Passive successes never bring a
//!   trunk up: no calls are sent to a DOWN trunk to find out.
//! - Failback window: for `failback_window` after coming UP, a single
//!   failure sends it DOWN again (probation), so a flapping trunk cannot
//!   collect calls between flaps.
//! - An operator can force UP or DOWN; forcing is sticky until `auto`.

use std::time::{Duration, Instant};

/// Health thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Consecutive failures that take a trunk DOWN.
    pub down_after: u32,
    /// Consecutive probe successes that bring it UP (with the hold-down).
    pub up_after: u32,
    /// Minimum time DOWN.
    pub hold_down: Duration,
    /// Probation after coming UP (zero: none).
    pub failback_window: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { down_after: 3, up_after: 3, hold_down: Duration::from_secs(10), failback_window: Duration::ZERO }
    }
}

/// UP or DOWN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Usable.
    Up,
    /// Skipped by routing.
    Down,
}

impl State {
    /// `UP` / `DOWN`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "UP",
            Self::Down => "DOWN",
        }
    }
}

/// A state change, with the reason to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new state.
    pub to: State,
    /// Why, e.g. "3 consecutive failures (last: OPTIONS timeout)".
    pub reason: String,
}

/// One trunk's health.
#[derive(Debug, Clone)]
pub struct Health {
    cfg: HealthConfig,
    state: State,
    fails: u32,
    oks: u32,
    down_since: Option<Instant>,
    up_since: Option<Instant>,
    forced: Option<State>,
    transitions: u64,
}

impl Health {
    /// A trunk starts UP (calls may go to it before the first probe).
    #[must_use]
    pub fn new(cfg: HealthConfig) -> Self {
        Self { cfg, state: State::Up, fails: 0, oks: 0, down_since: None, up_since: None, forced: None, transitions: 0 }
    }

    /// The state routing sees (forced state wins).
    #[must_use]
    pub fn state(&self) -> State {
        self.forced.unwrap_or(self.state)
    }

    /// The measured state, ignoring any operator force.
    #[must_use]
    pub fn measured(&self) -> State {
        self.state
    }

    /// The operator's forced state, if any.
    #[must_use]
    pub fn forced(&self) -> Option<State> {
        self.forced
    }

    /// Number of measured transitions so far.
    #[must_use]
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// Consecutive failures and successes right now.
    #[must_use]
    pub fn counts(&self) -> (u32, u32) {
        (self.fails, self.oks)
    }

    /// Forces a state (`None`: back to measured).
    pub fn force(&mut self, s: Option<State>) {
        self.forced = s;
    }

    fn go(&mut self, to: State, reason: String, now: Instant) -> Option<Transition> {
        self.state = to;
        self.transitions += 1;
        match to {
            State::Down => {
                self.down_since = Some(now);
                self.up_since = None;
            }
            State::Up => {
                self.up_since = Some(now);
                self.down_since = None;
            }
        }
        self.fails = 0;
        self.oks = 0;
        Some(Transition { to, reason })
    }

    /// A failure (probe timeout, transport error, failure code, INVITE timeout).
    pub fn on_failure(&mut self, what: &str, now: Instant) -> Option<Transition> {
        self.oks = 0;
        self.fails = self.fails.saturating_add(1);
        if self.state == State::Down {
            return None;
        }
        let probation = self.up_since.is_some_and(|t| {
            !self.cfg.failback_window.is_zero() && now.saturating_duration_since(t) < self.cfg.failback_window
        });
        if probation {
            return self.go(State::Down, format!("failure within the failback window ({what})"), now);
        }
        if self.fails >= self.cfg.down_after {
            let n = self.fails;
            return self.go(State::Down, format!("{n} consecutive failures (last: {what})"), now);
        }
        None
    }

    /// A failure that is proof enough on its own (a relay that left a
    /// control request unanswered through all retransmissions): DOWN at
    /// once, as Kamailio's rtpengine module disables such a node. The
    /// hold-down and `up_after` probe successes still apply to come back.
    pub fn on_hard_failure(&mut self, what: &str, now: Instant) -> Option<Transition> {
        self.oks = 0;
        self.fails = self.fails.saturating_add(1);
        if self.state == State::Down {
            return None;
        }
        self.go(State::Down, format!("no answer ({what})"), now)
    }

    /// A successful probe (an alive OPTIONS answer).
    pub fn on_probe_ok(&mut self, what: &str, now: Instant) -> Option<Transition> {
        self.fails = 0;
        self.oks = self.oks.saturating_add(1);
        if self.state == State::Up {
            return None;
        }
        let held = self.down_since.is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.hold_down);
        if self.oks >= self.cfg.up_after && held {
            let n = self.oks;
            return self.go(State::Up, format!("{n} consecutive successes after the hold-down (last: {what})"), now);
        }
        None
    }

    /// For a trunk that is not probed: with no probes to confirm recovery,
    /// it comes back UP once the hold-down has passed (the failback window,
    /// if set, then sends it DOWN again at the first failure).
    pub fn on_unprobed_tick(&mut self, now: Instant) -> Option<Transition> {
        let held = self.down_since.is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.hold_down);
        if self.state == State::Down && held {
            return self.go(State::Up, "hold-down elapsed (trunk is not probed)".to_owned(), now);
        }
        None
    }

    /// A call through the trunk succeeded: it breaks a run of failures, but
    /// never brings a DOWN trunk back.
    pub fn on_call_ok(&mut self) {
        if self.state == State::Up {
            self.fails = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn down_after_n_up_after_m_and_hold_down() {
        let t0 = Instant::now();
        let mut h = Health::new(HealthConfig::default());
        assert_eq!(h.on_failure("OPTIONS timeout", s(t0, 0)), None);
        assert_eq!(h.on_failure("OPTIONS timeout", s(t0, 1)), None);
        let t = h.on_failure("OPTIONS timeout", s(t0, 2)).unwrap();
        assert_eq!(t.to, State::Down);
        assert_eq!(t.reason, "3 consecutive failures (last: OPTIONS timeout)");
        // Three successes but inside the 10 s hold-down: still DOWN.
        for k in 3..6 {
            assert_eq!(h.on_probe_ok("200", s(t0, k)), None);
        }
        assert_eq!(h.state(), State::Down);
        // Past the hold-down, the next success (run of 4) brings it up.
        let t = h.on_probe_ok("200", s(t0, 12)).unwrap();
        assert_eq!(t.to, State::Up);
        assert_eq!(h.transitions(), 2);
    }

    #[test]
    fn a_success_breaks_a_run_of_failures() {
        let t0 = Instant::now();
        let mut h = Health::new(HealthConfig::default());
        h.on_failure("x", t0);
        h.on_failure("x", t0);
        h.on_call_ok();
        assert_eq!(h.on_failure("x", t0), None);
        assert_eq!(h.on_failure("x", t0), None);
        assert!(h.on_failure("x", t0).is_some());
        // A failed probe resets the run of successes while DOWN.
        let late = s(t0, 20);
        h.on_probe_ok("ok", late);
        h.on_probe_ok("ok", late);
        h.on_failure("x", late);
        assert_eq!(h.on_probe_ok("ok", late), None, "the run restarted");
    }

    #[test]
    fn failback_window_is_probation() {
        let t0 = Instant::now();
        let cfg = HealthConfig { failback_window: Duration::from_secs(30), ..HealthConfig::default() };
        let mut h = Health::new(cfg);
        for _ in 0..3 {
            h.on_failure("x", t0);
        }
        for k in 0..3 {
            h.on_probe_ok("ok", s(t0, 10 + k));
        }
        assert_eq!(h.state(), State::Up);
        let t = h.on_failure("503", s(t0, 20)).unwrap();
        assert_eq!(t.to, State::Down, "one failure inside the window");
        assert!(t.reason.contains("failback window"));
    }

    #[test]
    fn flapping_is_bounded_by_the_hold_down() {
        // Probe every second. A 2 s on / 2 s off flap never gives three
        // failures in a row: the trunk never goes DOWN.
        let t0 = Instant::now();
        let mut h = Health::new(HealthConfig::default());
        for sec in 0..30u64 {
            if (sec / 2) % 2 == 1 {
                h.on_probe_ok("200", s(t0, sec));
            } else {
                h.on_failure("timeout", s(t0, sec));
            }
        }
        assert_eq!(h.transitions(), 0);
        // A 3 s / 3 s flap: DOWN at 2 s; the 3-5 s and 9-11 s successes fall
        // inside the 10 s hold-down; UP at 17 s; DOWN again at 20 s; 27-29 s
        // is again inside the hold-down. Three transitions, where an
        // unguarded checker would have made ten.
        let mut h = Health::new(HealthConfig::default());
        let mut at = Vec::new();
        for sec in 0..30u64 {
            let t =
                if (sec / 3) % 2 == 1 { h.on_probe_ok("200", s(t0, sec)) } else { h.on_failure("timeout", s(t0, sec)) };
            if let Some(t) = t {
                at.push((sec, t.to));
            }
        }
        assert_eq!(at, vec![(2, State::Down), (17, State::Up), (20, State::Down)]);
    }

    #[test]
    fn an_unprobed_trunk_returns_after_the_hold_down() {
        let t0 = Instant::now();
        let mut h = Health::new(HealthConfig::default());
        for _ in 0..3 {
            h.on_failure("503 on INVITE", t0);
        }
        assert_eq!(h.on_unprobed_tick(s(t0, 9)), None, "inside the 10 s hold-down");
        let t = h.on_unprobed_tick(s(t0, 10)).unwrap();
        assert_eq!(t.to, State::Up);
        assert_eq!(h.on_unprobed_tick(s(t0, 11)), None, "already UP");
    }

    #[test]
    fn a_hard_failure_is_down_at_once_and_recovers_by_probes() {
        let t0 = Instant::now();
        let mut h = Health::new(HealthConfig::default());
        let t = h.on_hard_failure("ng offer timeout", t0).unwrap();
        assert_eq!(t.to, State::Down);
        assert_eq!(h.on_hard_failure("again", t0), None, "already DOWN");
        for k in 10..12 {
            assert_eq!(h.on_probe_ok("pong", s(t0, k)), None);
        }
        assert_eq!(h.on_probe_ok("pong", s(t0, 12)).map(|t| t.to), Some(State::Up));
    }

    #[test]
    fn operator_force_is_sticky_until_auto() {
        let t0 = Instant::now();
        let mut h = Health::new(HealthConfig::default());
        h.force(Some(State::Down));
        assert_eq!(h.state(), State::Down);
        assert_eq!(h.measured(), State::Up);
        h.on_probe_ok("ok", t0);
        assert_eq!(h.state(), State::Down);
        h.force(None);
        assert_eq!(h.state(), State::Up);
    }
}
