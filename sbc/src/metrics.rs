//! Signaling metrics, exported with the embedded relay's on one `/metrics`.
//!
//! The signaling thread writes these atomics; the exporter thread reads
//! them. Labels are methods, code classes and trunk names: never numbers or
//! call identifiers.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Methods with their own label; everything else counts as `other`.
pub const METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "other",
];

/// Post-dial-delay histogram bucket bounds, seconds.
pub const PDD_BUCKETS: [f64; 9] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

/// How an attempt on a trunk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkOutcome {
    /// 2xx.
    Answered,
    /// A final error response.
    Failed,
    /// No answer in time, or a transport error.
    Timeout,
    /// Not tried: the trunk was DOWN.
    SkippedDown,
    /// Not tried: a call or CPS cap was reached.
    SkippedCap,
}

const OUTCOMES: [&str; 5] = ["answered", "failed", "timeout", "skipped_down", "skipped_cap"];

/// One trunk's series.
#[derive(Debug, Default)]
pub struct TrunkMetrics {
    /// Trunk name (the label).
    pub name: String,
    up: AtomicU64,
    transitions: AtomicU64,
    calls: AtomicU64,
    attempts: [AtomicU64; 5],
    /// Registration to the carrier: 0 none configured, 1 not registered, 2 registered.
    registration: AtomicU64,
    registration_failures: AtomicU64,
    auth_failures: AtomicU64,
}

/// Every signaling counter.
#[derive(Debug, Default)]
pub struct SbcMetrics {
    /// Per-trunk series, in config order (a reload appends new trunks).
    pub trunks: TrunkSeries,
    /// Requests received, by [`METHODS`] index.
    pub requests: [AtomicU64; 14],
    /// Responses sent upstream (forwarded or generated), by class 1..=6.
    pub responses: [AtomicU64; 7],
    /// Messages that did not parse.
    pub parse_errors: AtomicU64,
    /// Messages dropped without an answer (unparseable, not ours, oversize).
    pub dropped: AtomicU64,
    /// Messages refused or dropped over a `[limits]` limit, by
    /// [`Breach::ALL`](crate::sip::Breach::ALL) index.
    limit_refused: [AtomicU64; 4],
    /// Requests refused over a cap, by [`Cap::ALL`](crate::caps::Cap::ALL) index.
    caps_refused: [AtomicU64; 10],
    /// Datagrams the kernel dropped on the SIP sockets' full receive
    /// queues, per realm (named by [`name_realms`](Self::name_realms)).
    rx_queue_drops: std::sync::OnceLock<Vec<(String, AtomicU64)>>,
    /// Server + client transactions alive.
    pub transactions: AtomicU64,
    /// Dialogs alive (early and confirmed).
    pub dialogs: AtomicU64,
    /// Initial INVITEs accepted for routing.
    pub call_attempts: AtomicU64,
    /// Of those, answered with 2xx.
    pub call_answers: AtomicU64,
    /// Of those, ended with a final error response.
    pub call_failures: AtomicU64,
    /// Answered calls ended because the caller's ACK never came (64×T1).
    pub calls_no_ack: AtomicU64,
    /// Registrations accepted.
    pub registrations: AtomicU64,
    /// Live bindings.
    pub bindings: AtomicU64,
    /// Post-dial delay: counts per bucket (cumulative is computed on render).
    pub pdd_buckets: [AtomicU64; 10],
    /// Sum of post-dial delays, microseconds.
    pub pdd_sum_us: AtomicU64,
    /// Number of post-dial-delay observations.
    pub pdd_count: AtomicU64,
    /// Messages refused or dropped by a source ACL, per realm (named once
    /// by [`name_realms`](Self::name_realms)).
    acl_denied: std::sync::OnceLock<Vec<(String, AtomicU64)>>,
    /// Stream (TCP/TLS) connections: open now, refused over a cap, denied
    /// by an ACL, closed over the output cap, TLS handshake failures and
    /// timeouts, idle closes (the transport's counts).
    pub conns: ConnMetrics,
    /// Digest authentication counters.
    pub auth: crate::auth::AuthMetrics,
    /// MESSAGE store-and-forward counters.
    pub messages: crate::messages::MessageMetrics,
    /// The source guard's drops and bans (`sbc_guard_*`).
    pub guard: crate::guard::GuardMetrics,
    /// CDR spool and forwarder series.
    pub cdr: std::sync::Arc<crate::cdr::CdrMetrics>,
    /// Call health and quality per trunk (ASR, NER, ACD, PDD, MOS, one-way audio).
    pub health: crate::call_health::CallHealth,
    /// Configuration reloads (`sbc_config_*`).
    pub reloads: crate::proxy::ReloadMetrics,
}

/// Stream connection series, copied from the transport's counts.
#[derive(Debug, Default)]
pub struct ConnMetrics {
    /// Open TCP and TLS connections.
    pub open: AtomicU64,
    /// Connections refused over `max_connections` or `max_connections_per_ip`.
    pub rejected: AtomicU64,
    /// Connections closed at accept because the realm's ACL denies the source.
    pub acl_denied: AtomicU64,
    /// Connections closed because their pending output passed the cap.
    pub output_overflows: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_handshake_failures: AtomicU64,
    /// TLS handshakes (or connects) that timed out.
    pub tls_handshake_timeouts: AtomicU64,
    /// Connections closed after being idle.
    pub idle_closes: AtomicU64,
    /// Connections closed because a message did not arrive complete in time.
    pub deadline_closes: AtomicU64,
}

impl ConnMetrics {
    /// Copies the transport's figures.
    pub fn store(&self, open: usize, s: &crate::transport::ConnStats) {
        self.open.store(open as u64, Relaxed);
        self.rejected.store(s.rejected, Relaxed);
        self.acl_denied.store(s.acl_denied, Relaxed);
        self.output_overflows.store(s.output_overflows, Relaxed);
        self.tls_handshake_failures.store(s.tls_handshake_failures, Relaxed);
        self.tls_handshake_timeouts.store(s.tls_handshake_timeouts, Relaxed);
        self.idle_closes.store(s.idle_closes, Relaxed);
        self.deadline_closes.store(s.deadline_closes, Relaxed);
    }
}

impl SbcMetrics {
    /// Metrics for these trunks (all start UP).
    #[must_use]
    pub fn new(trunk_names: &[String]) -> Self {
        let trunks = TrunkSeries::default();
        for n in trunk_names {
            trunks.push(n);
        }
        Self { trunks, health: crate::call_health::CallHealth::new(trunk_names), ..Self::default() }
    }

    /// Names the realms, for the per-realm series (the first call wins).
    pub fn name_realms(&self, names: &[String]) {
        let _ = self.acl_denied.set(names.iter().map(|n| (n.clone(), AtomicU64::new(0))).collect());
        let _ = self.rx_queue_drops.set(names.iter().map(|n| (n.clone(), AtomicU64::new(0))).collect());
    }

    /// Counts a message from a source realm `realm`'s ACL denies.
    pub fn acl_denied(&self, realm: usize) {
        if let Some((_, c)) = self.acl_denied.get().and_then(|v| v.get(realm)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Counts a message refused or dropped over a `[limits]` limit.
    pub fn limit_refused(&self, b: crate::sip::Breach) {
        if let Some(i) = crate::sip::Breach::ALL.iter().position(|x| *x == b) {
            self.limit_refused[i].fetch_add(1, Relaxed);
        }
    }

    /// Messages refused or dropped over limit `b` so far.
    #[must_use]
    pub fn limit_refused_count(&self, b: crate::sip::Breach) -> u64 {
        crate::sip::Breach::ALL.iter().position(|x| *x == b).map_or(0, |i| self.limit_refused[i].load(Relaxed))
    }

    /// Counts a request refused over cap `c`.
    pub fn cap_refused(&self, c: crate::caps::Cap) {
        self.caps_refused[c.index()].fetch_add(1, Relaxed);
    }

    /// Requests refused over cap `c` so far.
    #[must_use]
    pub fn cap_refused_count(&self, c: crate::caps::Cap) -> u64 {
        self.caps_refused[c.index()].load(Relaxed)
    }

    /// Stores the kernel's receive-queue drop count (a running total) for
    /// realm `realm`'s SIP socket.
    pub fn rx_queue_drops(&self, realm: usize, total: u64) {
        if let Some((_, c)) = self.rx_queue_drops.get().and_then(|v| v.get(realm)) {
            c.store(total, Relaxed);
        }
    }

    /// Messages realm `realm`'s ACL denied so far.
    #[must_use]
    pub fn acl_denied_count(&self, realm: usize) -> u64 {
        self.acl_denied.get().and_then(|v| v.get(realm)).map_or(0, |(_, c)| c.load(Relaxed))
    }

    /// A trunk changed state by measurement.
    pub fn trunk_transition(&self, i: usize, up: bool) {
        if let Some(t) = self.trunks.get(i) {
            t.transitions.fetch_add(1, Relaxed);
            t.up.store(u64::from(up), Relaxed);
        }
    }

    /// A trunk's state as routing sees it.
    pub fn trunk_state(&self, i: usize, up: bool) {
        if let Some(t) = self.trunks.get(i) {
            t.up.store(u64::from(up), Relaxed);
        }
    }

    /// Calls active on a trunk.
    pub fn trunk_calls(&self, i: usize, n: u32) {
        if let Some(t) = self.trunks.get(i) {
            t.calls.store(u64::from(n), Relaxed);
        }
    }

    /// Counts an attempt outcome on a trunk.
    pub fn trunk_attempt(&self, i: usize, o: TrunkOutcome) {
        if let Some(t) = self.trunks.get(i) {
            t.attempts[o as usize].fetch_add(1, Relaxed);
        }
    }

    /// A trunk's registration state: `None` when it does not register.
    pub fn trunk_registered(&self, i: usize, registered: Option<bool>) {
        if let Some(t) = self.trunks.get(i) {
            t.registration.store(registered.map_or(0, |r| 1 + u64::from(r)), Relaxed);
        }
    }

    /// Counts a failed registration attempt to a trunk.
    pub fn trunk_registration_failed(&self, i: usize) {
        if let Some(t) = self.trunks.get(i) {
            t.registration_failures.fetch_add(1, Relaxed);
        }
    }

    /// Counts a carrier challenge the sbc could not answer (wrong or missing
    /// credentials, unsupported algorithm).
    pub fn trunk_auth_failed(&self, i: usize) {
        if let Some(t) = self.trunks.get(i) {
            t.auth_failures.fetch_add(1, Relaxed);
        }
    }

    /// Counts a received request.
    pub fn request(&self, method: &str) {
        let i = METHODS.iter().position(|m| *m == method).unwrap_or(METHODS.len() - 1);
        self.requests[i].fetch_add(1, Relaxed);
    }

    /// Counts a response sent upstream.
    pub fn response(&self, code: u16) {
        let class = usize::from(code / 100).min(6);
        self.responses[class].fetch_add(1, Relaxed);
    }

    /// Records a post-dial delay.
    pub fn post_dial_delay(&self, secs: f64) {
        let i = PDD_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(PDD_BUCKETS.len());
        self.pdd_buckets[i].fetch_add(1, Relaxed);
        self.pdd_sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
        self.pdd_count.fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition of the signaling metrics.
    #[must_use]
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let _ = writeln!(
            o,
            "# HELP sbc_sip_requests_total SIP requests received, by method.\n# TYPE sbc_sip_requests_total counter"
        );
        for (i, m) in METHODS.iter().enumerate() {
            let _ = writeln!(o, "sbc_sip_requests_total{{method=\"{m}\"}} {}", self.requests[i].load(Relaxed));
        }
        let _ = writeln!(o, "# HELP sbc_sip_responses_total SIP responses sent upstream, by code class.\n# TYPE sbc_sip_responses_total counter");
        for c in 1..=6 {
            let _ = writeln!(o, "sbc_sip_responses_total{{class=\"{c}xx\"}} {}", self.responses[c].load(Relaxed));
        }
        let one = |o: &mut String, name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", v.load(Relaxed));
        };
        one(&mut o, "sbc_sip_parse_errors_total", "counter", "SIP messages that did not parse.", &self.parse_errors);
        one(&mut o, "sbc_sip_dropped_total", "counter", "SIP messages dropped without an answer.", &self.dropped);
        one(&mut o, "sbc_transactions_active", "gauge", "SIP transactions alive.", &self.transactions);
        one(&mut o, "sbc_dialogs_active", "gauge", "Dialogs alive (early and confirmed).", &self.dialogs);
        one(&mut o, "sbc_call_attempts_total", "counter", "Initial INVITEs routed.", &self.call_attempts);
        one(&mut o, "sbc_call_answers_total", "counter", "Calls answered (2xx).", &self.call_answers);
        one(
            &mut o,
            "sbc_calls_no_ack_total",
            "counter",
            "Answered calls ended for want of an ACK.",
            &self.calls_no_ack,
        );
        one(
            &mut o,
            "sbc_call_failures_total",
            "counter",
            "Calls that ended with a final error response.",
            &self.call_failures,
        );
        one(&mut o, "sbc_registrations_total", "counter", "REGISTERs accepted.", &self.registrations);
        one(&mut o, "sbc_registrar_bindings", "gauge", "Live registrar bindings.", &self.bindings);
        let c = &self.conns;
        one(&mut o, "sbc_sip_connections", "gauge", "Open SIP TCP and TLS connections.", &c.open);
        one(&mut o, "sbc_sip_connections_rejected_total", "counter", "Connections refused at the cap.", &c.rejected);
        one(
            &mut o,
            "sbc_sip_connections_denied_total",
            "counter",
            "Connections closed at accept: the realm's ACL denies the source.",
            &c.acl_denied,
        );
        one(
            &mut o,
            "sbc_sip_connection_output_overflows_total",
            "counter",
            "Connections closed: pending output over the cap (the peer does not read).",
            &c.output_overflows,
        );
        one(
            &mut o,
            "sbc_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed.",
            &c.tls_handshake_failures,
        );
        one(
            &mut o,
            "sbc_tls_handshake_timeouts_total",
            "counter",
            "TLS handshakes not finished in time.",
            &c.tls_handshake_timeouts,
        );
        one(&mut o, "sbc_sip_connection_idle_closes_total", "counter", "Connections closed idle.", &c.idle_closes);
        one(
            &mut o,
            "sbc_sip_connection_deadline_closes_total",
            "counter",
            "Connections closed because a message did not arrive complete within message_deadline_ms.",
            &c.deadline_closes,
        );
        let attempts = self.call_attempts.load(Relaxed);
        let answers = self.call_answers.load(Relaxed);
        let asr = if attempts == 0 { 0.0 } else { answers as f64 / attempts as f64 };
        let _ = writeln!(
            o,
            "# HELP sbc_asr Answer-seizure ratio: answers / attempts.\n# TYPE sbc_asr gauge\nsbc_asr {asr}"
        );
        let _ = writeln!(
            o,
            "# HELP sbc_post_dial_delay_seconds INVITE to first ringing or answer.\n# TYPE sbc_post_dial_delay_seconds histogram"
        );
        let mut cum = 0;
        for (i, b) in PDD_BUCKETS.iter().enumerate() {
            cum += self.pdd_buckets[i].load(Relaxed);
            let _ = writeln!(o, "sbc_post_dial_delay_seconds_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.pdd_buckets[PDD_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(o, "sbc_post_dial_delay_seconds_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(o, "sbc_post_dial_delay_seconds_sum {}", self.pdd_sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(o, "sbc_post_dial_delay_seconds_count {}", self.pdd_count.load(Relaxed));
        if let Some(realms) = self.acl_denied.get() {
            let _ = writeln!(o, "# HELP sbc_acl_denied_total SIP messages from sources a realm's ACL denies (answered 403 or dropped).\n# TYPE sbc_acl_denied_total counter");
            for (name, c) in realms {
                let _ = writeln!(o, "sbc_acl_denied_total{{realm=\"{name}\"}} {}", c.load(Relaxed));
            }
        }
        let _ = writeln!(o, "# HELP sbc_sip_limit_refused_total SIP messages over a [limits] limit (answered 400/413/513 or dropped), by limit.\n# TYPE sbc_sip_limit_refused_total counter");
        for (b, c) in crate::sip::Breach::ALL.iter().zip(&self.limit_refused) {
            let _ = writeln!(o, "sbc_sip_limit_refused_total{{reason=\"{}\"}} {}", b.label(), c.load(Relaxed));
        }
        let _ = writeln!(o, "# HELP sbc_caps_refused_total Requests refused (503) over a cap of [limits], by cap.\n# TYPE sbc_caps_refused_total counter");
        for (c, n) in crate::caps::Cap::ALL.iter().zip(&self.caps_refused) {
            let _ = writeln!(o, "sbc_caps_refused_total{{cap=\"{}\"}} {}", c.label(), n.load(Relaxed));
        }
        if let Some(realms) = self.rx_queue_drops.get() {
            let _ = writeln!(o, "# HELP sbc_sip_rx_queue_drops_total Datagrams the kernel dropped on a full SIP socket receive queue.\n# TYPE sbc_sip_rx_queue_drops_total counter");
            for (name, c) in realms {
                let _ = writeln!(o, "sbc_sip_rx_queue_drops_total{{realm=\"{name}\"}} {}", c.load(Relaxed));
            }
        }
        self.auth.render(&mut o);
        self.messages.render(&mut o);
        self.guard.render(&mut o);
        self.health.render(&mut o);
        self.reloads.render(&mut o);
        if !self.trunks.is_empty() {
            let _ = writeln!(
                o,
                "# HELP sbc_trunk_up Trunk state as routing sees it (1 UP, 0 DOWN).\n# TYPE sbc_trunk_up gauge"
            );
            for t in &self.trunks {
                let _ = writeln!(o, "sbc_trunk_up{{trunk=\"{}\"}} {}", t.name, t.up.load(Relaxed));
            }
            let _ = writeln!(o, "# HELP sbc_trunk_transitions_total Measured UP/DOWN transitions.\n# TYPE sbc_trunk_transitions_total counter");
            for t in &self.trunks {
                let _ =
                    writeln!(o, "sbc_trunk_transitions_total{{trunk=\"{}\"}} {}", t.name, t.transitions.load(Relaxed));
            }
            let _ = writeln!(o, "# HELP sbc_trunk_calls_active Calls routed to the trunk and not ended.\n# TYPE sbc_trunk_calls_active gauge");
            for t in &self.trunks {
                let _ = writeln!(o, "sbc_trunk_calls_active{{trunk=\"{}\"}} {}", t.name, t.calls.load(Relaxed));
            }
            let _ = writeln!(o, "# HELP sbc_trunk_attempts_total INVITE attempts by trunk and outcome.\n# TYPE sbc_trunk_attempts_total counter");
            for t in &self.trunks {
                for (k, name) in OUTCOMES.iter().enumerate() {
                    let _ = writeln!(
                        o,
                        "sbc_trunk_attempts_total{{trunk=\"{}\",outcome=\"{name}\"}} {}",
                        t.name,
                        t.attempts[k].load(Relaxed)
                    );
                }
            }
            self.render_trunk_auth(&mut o);
        }
        self.cdr.render(&mut o);
        o
    }

    /// The carrier authentication and registration series.
    fn render_trunk_auth(&self, o: &mut String) {
        let _ = writeln!(o, "# HELP sbc_trunk_auth_failures_total Carrier challenges not answered (wrong or missing credentials).\n# TYPE sbc_trunk_auth_failures_total counter");
        for t in &self.trunks {
            let _ =
                writeln!(o, "sbc_trunk_auth_failures_total{{trunk=\"{}\"}} {}", t.name, t.auth_failures.load(Relaxed));
        }
        let registering: Vec<_> = self.trunks.iter().filter(|t| t.registration.load(Relaxed) > 0).collect();
        if registering.is_empty() {
            return;
        }
        let _ = writeln!(o, "# HELP sbc_trunk_registered Registration to the carrier (1 registered, 0 not).\n# TYPE sbc_trunk_registered gauge");
        for t in &registering {
            let _ = writeln!(
                o,
                "sbc_trunk_registered{{trunk=\"{}\"}} {}",
                t.name,
                u64::from(t.registration.load(Relaxed) == 2)
            );
        }
        let _ = writeln!(o, "# HELP sbc_trunk_registration_failures_total Failed REGISTER attempts to the carrier.\n# TYPE sbc_trunk_registration_failures_total counter");
        for t in &registering {
            let _ = writeln!(
                o,
                "sbc_trunk_registration_failures_total{{trunk=\"{}\"}} {}",
                t.name,
                t.registration_failures.load(Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_and_asr() {
        let m = SbcMetrics::default();
        m.call_attempts.store(4, Relaxed);
        m.call_answers.store(3, Relaxed);
        m.post_dial_delay(0.2);
        m.post_dial_delay(3.0);
        m.request("INVITE");
        m.request("FOO");
        m.response(486);
        let r = m.render();
        assert!(r.contains("sbc_asr 0.75"), "{r}");
        assert!(r.contains("sbc_post_dial_delay_seconds_bucket{le=\"0.25\"} 1"));
        assert!(r.contains("sbc_post_dial_delay_seconds_bucket{le=\"5\"} 2"));
        assert!(r.contains("sbc_post_dial_delay_seconds_count 2"));
        assert!(r.contains("sbc_sip_requests_total{method=\"other\"} 1"));
        assert!(r.contains("sbc_sip_responses_total{class=\"4xx\"} 1"));
        assert!(!r.contains("sbc_acl_denied_total"), "no realm series before the realms are named");
    }

    #[test]
    fn acl_denials_per_realm() {
        let m = SbcMetrics::default();
        m.name_realms(&["inside".into(), "outside".into()]);
        m.acl_denied(1);
        m.acl_denied(1);
        m.acl_denied(7);
        assert_eq!((m.acl_denied_count(0), m.acl_denied_count(1)), (0, 2));
        let r = m.render();
        assert!(r.contains("sbc_acl_denied_total{realm=\"inside\"} 0"), "{r}");
        assert!(r.contains("sbc_acl_denied_total{realm=\"outside\"} 2"), "{r}");
    }

    #[test]
    fn connection_bounds_are_rendered() {
        let m = SbcMetrics::default();
        let s = crate::transport::ConnStats { rejected: 3, acl_denied: 2, output_overflows: 1, ..Default::default() };
        m.conns.store(5, &s);
        let r = m.render();
        assert!(r.contains("sbc_sip_connections 5"), "{r}");
        assert!(r.contains("sbc_sip_connections_rejected_total 3"), "{r}");
        assert!(r.contains("sbc_sip_connections_denied_total 2"), "{r}");
        assert!(r.contains("sbc_sip_connection_output_overflows_total 1"), "{r}");
    }

    #[test]
    fn limit_refusals_and_rx_queue_drops_render() {
        let m = SbcMetrics::new(&[]);
        m.limit_refused(crate::sip::Breach::Body);
        m.limit_refused(crate::sip::Breach::Body);
        m.limit_refused(crate::sip::Breach::Vias);
        m.name_realms(&["inside".into(), "outside".into()]);
        m.rx_queue_drops(1, 42);
        m.rx_queue_drops(9, 1);
        let r = m.render();
        assert!(r.contains("sbc_sip_limit_refused_total{reason=\"body\"} 2"), "{r}");
        assert!(r.contains("sbc_sip_limit_refused_total{reason=\"vias\"} 1"), "{r}");
        assert!(r.contains("sbc_sip_limit_refused_total{reason=\"headers\"} 0"), "{r}");
        assert!(r.contains("sbc_sip_rx_queue_drops_total{realm=\"inside\"} 0"), "{r}");
        assert!(r.contains("sbc_sip_rx_queue_drops_total{realm=\"outside\"} 42"), "{r}");
    }
}

/// The per-trunk series, by trunk index. Written by the signaling thread
/// (a reload appends the trunks it adds), read by the metrics thread.
#[derive(Debug, Default)]
pub struct TrunkSeries(std::sync::RwLock<Vec<std::sync::Arc<TrunkMetrics>>>);

impl TrunkSeries {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<std::sync::Arc<TrunkMetrics>>> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The series of trunk `i`.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<std::sync::Arc<TrunkMetrics>> {
        self.read().get(i).cloned()
    }

    /// How many trunks have series.
    #[must_use]
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no trunk has series.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The series now, in trunk order.
    #[must_use]
    pub fn iter(&self) -> std::vec::IntoIter<std::sync::Arc<TrunkMetrics>> {
        self.read().clone().into_iter()
    }

    /// Series for one more trunk, `name` (it starts UP).
    pub fn push(&self, name: &str) {
        let t = TrunkMetrics { name: name.to_owned(), ..TrunkMetrics::default() };
        t.up.store(1, Relaxed);
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(std::sync::Arc::new(t));
    }
}

impl IntoIterator for &TrunkSeries {
    type Item = std::sync::Arc<TrunkMetrics>;
    type IntoIter = std::vec::IntoIter<std::sync::Arc<TrunkMetrics>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}
