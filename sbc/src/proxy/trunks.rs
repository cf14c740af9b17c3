//! Trunk runtime state in the proxy: health (probes and passive triggers),
//! concurrent-call and CPS caps, and the operator's `sbc ctl` commands.
//! Every decision is logged with its reason and counts.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::core::{Core, Wake};
use crate::health::{Health, State, Transition};
use crate::metrics::TrunkOutcome;
use crate::sip::Message;
use crate::txn::{ClientRequest, Endpoint};

/// Per-trunk runtime state, owned by the signaling thread.
#[derive(Debug)]
pub(super) struct TrunkRuntime {
    pub(super) health: Health,
    /// Calls routed to the trunk and not yet ended.
    pub(super) calls: u32,
    cps_window: Option<Instant>,
    cps_count: u32,
    next_probe: Option<Instant>,
    probing: bool,
    probe_seq: u32,
    /// The latest alive answer to a probe.
    probe_ok: Option<Instant>,
    /// The latest answers to calls from the two sources answered most
    /// recently (distinct addresses), newest first: enough to know the
    /// latest answer to a source other than any given one.
    answers: [Option<(IpAddr, Instant)>; 2],
    /// The sources whose passive failures count in the current streak of
    /// consecutive failures (probed trunks: each counts once).
    streak: Vec<IpAddr>,
}

impl TrunkRuntime {
    pub(super) fn new(h: crate::health::HealthConfig) -> Self {
        Self {
            health: Health::new(h),
            calls: 0,
            cps_window: None,
            cps_count: 0,
            next_probe: None,
            probing: false,
            probe_seq: 0,
            probe_ok: None,
            answers: [None, None],
            streak: Vec::new(),
        }
    }

    /// Whether the trunk showed it is alive to someone other than `src`
    /// since `since`: a probe answered, or a call from another source.
    fn alive_for_others(&self, src: IpAddr, since: Instant) -> bool {
        self.probe_ok.is_some_and(|t| t >= since)
            || self.answers.iter().flatten().any(|(ip, t)| *ip != src && *t >= since)
    }
}

/// Why a trunk was passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Skip {
    Down,
    CallCap,
    CpsCap,
}

impl Core {
    /// Whether trunk `i` may take a new call now.
    pub(super) fn trunk_admits(&self, i: usize, now: Instant) -> Result<(), Skip> {
        let (Some(rt), Some(t)) = (self.trunks.get(i), self.cfg.trunks.get(i)) else { return Err(Skip::Down) };
        if rt.health.state() == State::Down {
            return Err(Skip::Down);
        }
        if t.max_calls > 0 && rt.calls >= t.max_calls {
            return Err(Skip::CallCap);
        }
        let same_second = rt.cps_window.is_some_and(|w| now.saturating_duration_since(w) < Duration::from_secs(1));
        if t.max_cps > 0 && same_second && rt.cps_count >= t.max_cps {
            return Err(Skip::CpsCap);
        }
        Ok(())
    }

    /// Trunk `i` takes a call.
    pub(super) fn trunk_take(&mut self, i: usize, now: Instant) {
        let Some(rt) = self.trunks.get_mut(i) else { return };
        rt.calls += 1;
        if rt.cps_window.is_none_or(|w| now.saturating_duration_since(w) >= Duration::from_secs(1)) {
            rt.cps_window = Some(now);
            rt.cps_count = 0;
        }
        rt.cps_count += 1;
        self.metrics.trunk_calls(i, rt.calls);
    }

    /// A call on trunk `i` ended or moved on.
    pub(super) fn trunk_release(&mut self, i: usize) {
        let Some(rt) = self.trunks.get_mut(i) else { return };
        rt.calls = rt.calls.saturating_sub(1);
        self.metrics.trunk_calls(i, rt.calls);
    }

    fn log_transition(&self, i: usize, t: &Transition) {
        let name = self.cfg.trunks.get(i).map_or("?", |t| t.name.as_str());
        match t.to {
            State::Down => tracing::warn!(trunk = name, "trunk {name} DOWN: {}", t.reason),
            State::Up => tracing::info!(trunk = name, "trunk {name} UP: {}", t.reason),
        }
        let effective = self.trunks.get(i).is_some_and(|rt| rt.health.state() == State::Up);
        self.metrics.trunk_transition(i, effective);
    }

    /// A failure on trunk `i` (passive or probe).
    pub(super) fn trunk_failure(&mut self, i: usize, what: &str, now: Instant) {
        let Some(rt) = self.trunks.get_mut(i) else { return };
        let t = rt.health.on_failure(what, now);
        let (fails, _) = rt.health.counts();
        tracing::debug!(trunk = i, fails, what, "trunk failure");
        if let Some(t) = t {
            self.log_transition(i, &t);
        }
    }

    /// A passive failure on trunk `i` (a timeout, a transport error or a
    /// failure code) of a call from `src` whose branch went out at `sent`.
    /// So that one source cannot take a shared trunk DOWN:
    ///
    /// - it is not counted when the trunk has answered a probe or another
    ///   source's call since shortly before the branch went out (the trunk
    ///   is up, and ignoring this source);
    /// - on a probed trunk, each source counts once per streak of
    ///   consecutive failures: it takes failures from `down_after`
    ///   sources, or missed probes, to take it DOWN.
    ///
    /// A trunk named by DNS takes the failure on the target `dest` instead.
    pub(super) fn trunk_passive_failure(
        &mut self,
        (i, dest): (usize, Option<std::net::SocketAddr>),
        src: IpAddr,
        sent: Instant,
        what: &str,
        now: Instant,
    ) {
        if self.dns_target_failure(i, dest, what, now) {
            return;
        }
        let probed = !self.cfg.health.interval.is_zero() && self.cfg.trunks.get(i).is_some_and(|t| t.probe);
        let since = sent.checked_sub(self.cfg.invite_timeout).unwrap_or(sent);
        let Some(rt) = self.trunks.get_mut(i) else { return };
        if rt.alive_for_others(src, since) {
            tracing::debug!(trunk = i, %src, what, "trunk failure not counted: the trunk answers others");
            return;
        }
        if rt.health.counts().0 == 0 {
            rt.streak.clear();
        }
        if probed && rt.streak.contains(&src) {
            tracing::debug!(trunk = i, %src, what, "trunk failure not counted: this source already counts");
            return;
        }
        if !rt.streak.contains(&src) {
            rt.streak.push(src);
        }
        self.trunk_failure(i, what, now);
    }

    /// Trunk `i` answered (any response) a call from `src`.
    pub(super) fn trunk_answered(&mut self, i: usize, src: IpAddr, now: Instant) {
        let Some(rt) = self.trunks.get_mut(i) else { return };
        rt.answers = match rt.answers {
            [Some((ip, _)), second] if ip == src => [Some((src, now)), second],
            [first, _] => [Some((src, now)), first],
        };
    }

    /// A successful call on trunk `i`.
    pub(super) fn trunk_call_ok(&mut self, i: usize) {
        if let Some(rt) = self.trunks.get_mut(i) {
            rt.health.on_call_ok();
        }
    }

    /// Counts an attempt outcome on trunk `i`.
    pub(super) fn trunk_outcome(&self, i: usize, o: TrunkOutcome) {
        self.metrics.trunk_attempt(i, o);
        // Failures are counted with their code where they happen.
        match o {
            TrunkOutcome::Answered => self.metrics.health.attempt(i, 200),
            TrunkOutcome::Timeout => self.metrics.health.attempt(i, 0),
            _ => {}
        }
    }

    /// Sends due OPTIONS probes; trunks that are not probed come back after
    /// their hold-down.
    pub(super) fn probe_trunks(&mut self, txn: &mut Endpoint, now: Instant) {
        let interval = self.cfg.health.interval;
        for i in 0..self.trunks.len() {
            // A trunk named by DNS is probed (and recovers) per target.
            let probed = !interval.is_zero() && self.cfg.trunks.get(i).is_some_and(|t| t.probe && t.dns.is_none());
            if !probed {
                if let Some(t) = self.trunks[i].health.on_unprobed_tick(now) {
                    self.log_transition(i, &t);
                }
            }
        }
        if interval.is_zero() {
            return;
        }
        for i in 0..self.trunks.len() {
            let Some(t) = self.cfg.trunks.get(i) else { continue };
            let rt = &mut self.trunks[i];
            if !t.probe || t.dns.is_some() || rt.probing || rt.next_probe.is_some_and(|n| n > now) {
                continue;
            }
            rt.probing = true;
            rt.next_probe = Some(probe_cadence(rt.next_probe, now, interval));
            rt.probe_seq += 1;
            let (seq, dest, proto) = (rt.probe_seq, t.address, t.transport.proto());
            if let Some(id) = self.send_probe(txn, i, dest, proto, seq, now) {
                self.probes.insert(id, i);
            }
        }
    }

    /// Sends an OPTIONS probe for trunk `i` to `dest` (the trunk's address,
    /// or one of its resolved targets).
    pub(super) fn send_probe(
        &mut self,
        txn: &mut Endpoint,
        i: usize,
        dest: std::net::SocketAddr,
        proto: crate::transport::Proto,
        seq: u32,
        now: Instant,
    ) -> Option<crate::txn::ClientId> {
        let realm = self.cfg.trunks.get(i)?.realm;
        let branch = txn.new_branch();
        let tag = txn.unique();
        let me = self.me(realm).hostport();
        let text = format!(
            "OPTIONS sip:{dest} SIP/2.0\r\nVia: SIP/2.0/{} {me};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:xsbc@{me}>;tag={tag}\r\nTo: <sip:{dest}>\r\nCall-ID: probe-{tag}@{me}\r\n\
             CSeq: {seq} OPTIONS\r\nUser-Agent: xsbc\r\nContent-Length: 0\r\n\r\n",
            proto.via_name()
        );
        let msg = Message::parse(text.as_bytes()).ok()?;
        let timeout = Some(self.cfg.health.probe_timeout);
        let probe = ClientRequest { request: msg, dest, proto, realm, owner: None, timeout };
        txn.start_client(probe, now)
    }

    /// The result of a probe of trunk `i`: `Some(code)` or `None` for no answer.
    pub(super) fn probe_result(&mut self, i: usize, code: Option<u16>, now: Instant) {
        let interval = self.cfg.health.interval;
        let alive =
            code.is_some_and(|c| self.cfg.health.alive_codes.is_empty() || self.cfg.health.alive_codes.contains(&c));
        let Some(rt) = self.trunks.get_mut(i) else { return };
        rt.probing = false;
        let next = rt.next_probe.unwrap_or(now + interval);
        let t = match code {
            Some(c) if alive => {
                rt.probe_ok = Some(now);
                rt.health.on_probe_ok(&format!("OPTIONS answered {c}"), now)
            }
            Some(c) => rt.health.on_failure(&format!("OPTIONS answered {c}"), now),
            None => rt.health.on_failure("OPTIONS timeout", now),
        };
        self.timers.push(std::cmp::Reverse((next.max(now), Wake::Tick)));
        if let Some(t) = t {
            self.log_transition(i, &t);
        }
    }

    /// `sbc ctl` commands: `trunks`, `trunk NAME up|down|auto`.
    pub(super) fn control(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["trunks"] => self.trunk_table(),
            ["trunk", name, what] => {
                let Some(i) = self.cfg.trunks.iter().position(|t| t.name == *name) else {
                    return format!("error: no trunk named `{name}`\n");
                };
                let force = match *what {
                    "up" => Some(State::Up),
                    "down" => Some(State::Down),
                    "auto" => None,
                    _ => return "error: want up, down or auto\n".into(),
                };
                self.trunks[i].health.force(force);
                tracing::warn!(trunk = *name, action = *what, "audit: operator forced trunk {name} {what}");
                let up = self.trunks[i].health.state() == State::Up;
                self.metrics.trunk_state(i, up);
                format!("ok: trunk {name} is {}\n", self.trunks[i].health.state().as_str())
            }
            ["calls"] => self.calls_table(Instant::now()),
            ["call", id] => self.call_detail(id, Instant::now()),
            _ => "error: commands are `trunks`, `trunk NAME up|down|auto`, `calls`, `call CALLID`, `bans`, `ban ADDR[/LEN] [--for DURATION]`, `unban ADDR[/LEN]`
".into(),
        }
    }

    fn trunk_table(&self) -> String {
        let mut out =
            String::from("TRUNK                ADDRESS                STATE  FORCED  CALLS  FAILS  OKS  TRANSITIONS  REGISTRATION EXPIRES LAST\n");
        for (i, t) in self.cfg.trunks.iter().enumerate() {
            let rt = &self.trunks[i];
            let (f, o) = rt.health.counts();
            let address = t.dns.as_ref().map_or_else(
                || t.address.to_string(),
                |d| d.port.map_or_else(|| d.host.clone(), |p| format!("{}:{p}", d.host)),
            );
            out.push_str(&format!(
                "{:<20} {:<22} {:<6} {:<7} {:<6} {:<6} {:<4} {:<12} {}\n",
                t.name,
                address,
                if self.retired.contains(&i) { "RETIRED" } else { rt.health.state().as_str() },
                rt.health.forced().map_or("-", State::as_str),
                rt.calls,
                f,
                o,
                rt.health.transitions(),
                self.registration_columns(i)
            ));
            out.push_str(&self.dns_rows(i, Instant::now()));
        }
        out
    }
}

/// When the probe after one due at `next` goes: probes run on a fixed
/// cadence from when each was sent, so a miss (judged after
/// `probe_timeout`) does not stretch the interval; after a pause (no probe
/// due for longer than `interval`) the cadence restarts from `now`.
pub(super) fn probe_cadence(next: Option<Instant>, now: Instant, interval: Duration) -> Instant {
    match next {
        Some(n) if now.saturating_duration_since(n) < interval => n + interval,
        _ => now + interval,
    }
}
