//! Remote media relays: a pool of `media-relay` processes or rtpengines
//! driven over ng ([`ng::NgClient`]), behind the same
//! [`MediaControl`] trait as the embedded relay.
//!
//! - A new call (an offer for a Call-ID the pool does not know) goes to an
//!   UP relay chosen by smooth weighted round robin. An offer the relay
//!   leaves unanswered (timeout, or ICMP unreachable) takes that relay DOWN
//!   at once and moves to the next UP relay in the same call.
//! - A call stays on its relay: answers, re-offers, queries and the delete
//!   go to the relay the call was placed on ([`MediaControl::placement`]),
//!   which is recorded in the dialog and replicated to an HA peer
//!   ([`MediaControl::place`] on takeover).
//! - Relays are probed with `ping` from a thread of their own
//!   ([`spawn_probes`]), with the trunks' hysteresis ([`crate::health`]).
//!
//! Blocking: the calls are synchronous and made from the SIP event loop.
//! A request to an UP relay stalls the loop for at most the relay's
//! `timeout_ms` (default 1 s); a request for a call on a DOWN relay fails
//! at once without being sent. An offer stalls at most the sum of the
//! timeouts of the UP relays that stay silent, and each silent relay is
//! DOWN afterwards, so the stall is paid once per relay failure, not once
//! per call.
//!
//! Ownership: the SIP thread owns the call table (`calls`) and the control
//! sockets; the probe thread owns the probe sockets; health and counters
//! are shared under a lock or in atomics and read by metrics and `sbc ctl`.

pub mod ng;
pub mod report;
mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use media_relay::bencode::Value;
use media_relay::control::{CallReport, MediaControl, RelayError, RelayTotals, SdpRequest};

use crate::config::MediaRelayConfig;
use crate::health::{Health, HealthConfig, State};
use ng::{NgClient, NgError};

/// One remote relay: its clients, health and counters.
pub struct Remote {
    /// Its configuration.
    pub cfg: MediaRelayConfig,
    ctl: NgClient,
    probe: NgClient,
    health: Mutex<Health>,
    /// ng requests sent for calls (probes not included).
    pub requests: AtomicU64,
    /// Of those, left unanswered (timeout or unreachable).
    pub timeouts: AtomicU64,
    /// Of those, answered with an error or a reply that does not decode.
    pub errors: AtomicU64,
    /// Calls placed on it now.
    pub calls: AtomicU64,
    /// Probes unanswered.
    pub probe_failures: AtomicU64,
}

impl Remote {
    fn state(&self) -> State {
        self.health.lock().unwrap_or_else(PoisonError::into_inner).state()
    }

    /// Whether new calls may go to it.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.state() == State::Up
    }

    fn note(&self, t: Option<crate::health::Transition>) {
        if let Some(t) = t {
            match t.to {
                State::Down => tracing::warn!(relay = %self.cfg.name, reason = %t.reason, "media relay DOWN"),
                State::Up => tracing::info!(relay = %self.cfg.name, reason = %t.reason, "media relay UP"),
            }
        }
    }

    /// One request for a call: counted, and a silent relay goes DOWN.
    fn request(&self, what: &str, dict: &Value) -> Result<Value, NgError> {
        self.requests.fetch_add(1, Relaxed);
        let r = self.ctl.request(dict);
        match &r {
            Err(e) if e.is_silence() && !matches!(e, NgError::BadReply(_)) => {
                self.timeouts.fetch_add(1, Relaxed);
                let t = self
                    .health
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .on_hard_failure(&format!("ng {what}: {e}"), Instant::now());
                self.note(t);
            }
            Err(_) => {
                self.errors.fetch_add(1, Relaxed);
            }
            Ok(_) => {}
        }
        r
    }

    /// One probe.
    fn probe_once(&self, now: Instant) {
        let t = match self.probe.ping() {
            Ok(()) => self.health.lock().unwrap_or_else(PoisonError::into_inner).on_probe_ok("pong", now),
            Err(e) => {
                self.probe_failures.fetch_add(1, Relaxed);
                self.health.lock().unwrap_or_else(PoisonError::into_inner).on_failure(&format!("ping: {e}"), now)
            }
        };
        self.note(t);
    }
}

/// The pool of remote relays.
pub struct RelayPool {
    relays: Vec<Remote>,
    /// Call-ID → relay index.
    calls: Mutex<HashMap<String, usize>>,
    /// Smooth weighted round robin: each relay's current weight.
    wrr: Mutex<Vec<i64>>,
}

/// A remote relay's failure as the trait's error (its text names the relay).
fn relay_error(name: &str, e: &NgError) -> RelayError {
    match e {
        NgError::Rejected(r) if r.eq_ignore_ascii_case("Unknown call-id") => RelayError::UnknownCall,
        _ => RelayError::Datapath(format!("media relay {name}: {e}")),
    }
}

impl RelayPool {
    /// A pool over `cfgs`, with the trunks' hysteresis thresholds.
    ///
    /// # Errors
    /// When a client socket cannot be opened.
    pub fn new(cfgs: &[MediaRelayConfig], thresholds: HealthConfig) -> Result<Self, NgError> {
        let mut relays = Vec::with_capacity(cfgs.len());
        for c in cfgs {
            // A probe answers within the interval or counts as lost.
            let probe_timeout = c.timeout.min(c.probe_interval);
            relays.push(Remote {
                ctl: NgClient::new(c.ng, c.timeout, c.retransmits)?,
                probe: NgClient::new(c.ng, probe_timeout, c.retransmits)?,
                health: Mutex::new(Health::new(thresholds)),
                cfg: c.clone(),
                requests: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                probe_failures: AtomicU64::new(0),
            });
        }
        let n = relays.len();
        Ok(Self { relays, calls: Mutex::new(HashMap::new()), wrr: Mutex::new(vec![0; n]) })
    }

    /// The relays, in configuration order.
    #[must_use]
    pub fn relays(&self) -> &[Remote] {
        &self.relays
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The order in which a new call tries the UP relays: the weighted round
    /// robin's pick first, then the others by weight.
    fn candidates(&self) -> Vec<usize> {
        let up: Vec<usize> = (0..self.relays.len()).filter(|&i| self.relays[i].is_up()).collect();
        let mut wrr = self.wrr.lock().unwrap_or_else(PoisonError::into_inner);
        let total: i64 = up.iter().map(|&i| i64::from(self.relays[i].cfg.weight)).sum();
        let mut order = up.clone();
        order.sort_by_key(|&i| std::cmp::Reverse(self.relays[i].cfg.weight));
        let mut best = None;
        for &i in &up {
            wrr[i] += i64::from(self.relays[i].cfg.weight);
            if best.is_none_or(|b: usize| wrr[i] > wrr[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            wrr[b] -= total;
            order.retain(|&i| i != b);
            order.insert(0, b);
        }
        order
    }

    fn sdp_dict(command: &str, req: &SdpRequest<'_>) -> Value {
        let mut d = Value::dict();
        d.insert("command", Value::str(command))
            .insert("call-id", Value::str(req.call_id))
            .insert("from-tag", Value::str(req.from_tag));
        if let Some(t) = req.to_tag {
            d.insert("to-tag", Value::str(t));
        }
        d.insert("sdp", Value::Bytes(req.sdp.to_vec()));
        if req.opts.replace_origin {
            d.insert("replace", Value::List(vec![Value::str("origin"), Value::str("session-connection")]));
        }
        d.insert("ICE", Value::str(if req.opts.ice_remove { "remove" } else { "pass" }));
        if let [Some(a), Some(b)] = &req.opts.direction {
            d.insert("direction", Value::List(vec![Value::str(a), Value::str(b)]));
        }
        d.insert("flags", Value::List(vec![Value::str("trust-address")]));
        d
    }

    /// The relay a known call is on, if it may be asked now: a call on a
    /// DOWN relay fails at once rather than stall the caller.
    fn relay_of(&self, call_id: &str) -> Result<Option<usize>, RelayError> {
        let Some(i) = self.calls().get(call_id).copied() else { return Ok(None) };
        let r = &self.relays[i];
        if r.is_up() {
            Ok(Some(i))
        } else {
            Err(RelayError::Datapath(format!("media relay {} is DOWN", r.cfg.name)))
        }
    }

    fn sdp_of(name: &str, reply: &Value) -> Result<Vec<u8>, RelayError> {
        reply
            .get("sdp")
            .and_then(Value::as_bytes)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| RelayError::Datapath(format!("media relay {name}: reply without sdp")))
    }

    /// Forgets a call (it ended) and returns its relay.
    fn forget(&self, call_id: &str) -> Option<usize> {
        let i = self.calls().remove(call_id)?;
        self.relays[i].calls.fetch_sub(1, Relaxed);
        Some(i)
    }
}

impl MediaControl for RelayPool {
    fn offer(&self, req: &SdpRequest<'_>) -> Result<Vec<u8>, RelayError> {
        let dict = Self::sdp_dict("offer", req);
        if let Some(i) = self.relay_of(req.call_id)? {
            let r = &self.relays[i];
            return r
                .request("offer", &dict)
                .map_err(|e| relay_error(&r.cfg.name, &e))
                .and_then(|v| Self::sdp_of(&r.cfg.name, &v));
        }
        let mut last = RelayError::Datapath("no media relay is UP".into());
        for i in self.candidates() {
            let r = &self.relays[i];
            match r.request("offer", &dict) {
                Ok(v) => {
                    let sdp = Self::sdp_of(&r.cfg.name, &v)?;
                    if self.calls().insert(req.call_id.to_owned(), i).is_none() {
                        r.calls.fetch_add(1, Relaxed);
                    }
                    return Ok(sdp);
                }
                Err(e) if e.is_silence() => {
                    tracing::warn!(relay = %r.cfg.name, call_id = req.call_id, error = %e, "media relay did not answer the offer; trying the next one");
                    last = relay_error(&r.cfg.name, &e);
                }
                Err(e) => return Err(relay_error(&r.cfg.name, &e)),
            }
        }
        Err(last)
    }

    fn answer(&self, req: &SdpRequest<'_>) -> Result<Vec<u8>, RelayError> {
        let i = self.relay_of(req.call_id)?.ok_or(RelayError::UnknownCall)?;
        let r = &self.relays[i];
        let v = r.request("answer", &Self::sdp_dict("answer", req)).map_err(|e| relay_error(&r.cfg.name, &e))?;
        Self::sdp_of(&r.cfg.name, &v)
    }

    fn delete(&self, call_id: &str, from_tag: Option<&str>) -> Result<CallReport, RelayError> {
        let up = self.relay_of(call_id);
        let Some(i) = self.forget(call_id) else { return Err(RelayError::UnknownCall) };
        up?;
        let r = &self.relays[i];
        let mut d = Value::dict();
        d.insert("command", Value::str("delete")).insert("call-id", Value::str(call_id));
        if let Some(t) = from_tag {
            d.insert("from-tag", Value::str(t));
        }
        let v = r.request("delete", &d).map_err(|e| relay_error(&r.cfg.name, &e))?;
        Ok(report::call_report(call_id, &v))
    }

    fn query(&self, call_id: &str) -> Result<CallReport, RelayError> {
        let i = self.relay_of(call_id)?.ok_or(RelayError::UnknownCall)?;
        let r = &self.relays[i];
        let mut d = Value::dict();
        d.insert("command", Value::str("query")).insert("call-id", Value::str(call_id));
        let v = r.request("query", &d).map_err(|e| relay_error(&r.cfg.name, &e))?;
        Ok(report::call_report(call_id, &v))
    }

    fn list(&self, limit: usize) -> Vec<String> {
        self.calls().keys().take(limit).cloned().collect()
    }

    fn totals(&self) -> RelayTotals {
        RelayTotals { sessions: self.calls().len(), ..RelayTotals::default() }
    }

    fn placement(&self, call_id: &str) -> Option<String> {
        self.calls().get(call_id).map(|&i| self.relays[i].cfg.name.clone())
    }

    fn place(&self, call_id: &str, relay: &str) {
        let Some(i) = self.relays.iter().position(|r| r.cfg.name == relay) else {
            tracing::warn!(call_id, relay, "HA: a taken-over call names a media relay that is not configured");
            return;
        };
        if let Some(old) = self.calls().insert(call_id.to_owned(), i) {
            self.relays[old].calls.fetch_sub(1, Relaxed);
        }
        self.relays[i].calls.fetch_add(1, Relaxed);
    }
}

/// Probes every relay with `ping` at its interval until `shutdown`.
///
/// # Errors
/// When the thread cannot be started.
pub fn spawn_probes(pool: Arc<RelayPool>, shutdown: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("sbc-relay-probe".into()).spawn(move || {
        let mut next: Vec<Instant> = vec![Instant::now(); pool.relays.len()];
        while !shutdown.load(Relaxed) {
            let now = Instant::now();
            for (i, r) in pool.relays.iter().enumerate() {
                if now >= next[i] {
                    r.probe_once(now);
                    next[i] = Instant::now() + r.cfg.probe_interval;
                }
            }
            let wake = next.iter().min().copied().unwrap_or(now + Duration::from_secs(1));
            std::thread::sleep(wake.saturating_duration_since(Instant::now()).min(Duration::from_millis(100)));
        }
    })
}

#[cfg(test)]
mod tests;
