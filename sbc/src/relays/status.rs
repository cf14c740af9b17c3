//! What the pool shows: the `sbc ctl relays` table and the per-relay
//! Prometheus series.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::PoisonError;

use super::RelayPool;

impl RelayPool {
    /// `sbc ctl relays`: one line per relay.
    #[must_use]
    pub fn table(&self) -> String {
        let mut out = String::from(
            "RELAY                NG                     WEIGHT STATE  CALLS  REQUESTS  TIMEOUTS  ERRORS  PROBE_FAILS  TRANSITIONS\n",
        );
        for r in &self.relays {
            let h = r.health.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = writeln!(
                out,
                "{:<20} {:<22} {:<6} {:<6} {:<6} {:<9} {:<9} {:<7} {:<12} {}",
                r.cfg.name,
                r.cfg.ng.to_string(),
                r.cfg.weight,
                h.state().as_str(),
                r.calls.load(Relaxed),
                r.requests.load(Relaxed),
                r.timeouts.load(Relaxed),
                r.errors.load(Relaxed),
                r.probe_failures.load(Relaxed),
                h.transitions(),
            );
        }
        out
    }

    /// The per-relay series, in the hand-written style of
    /// [`crate::metrics`].
    #[must_use]
    pub fn render_metrics(&self) -> String {
        let mut o = String::with_capacity(1024);
        type Get = fn(&super::Remote) -> u64;
        let series: [(&str, &str, &str, Get); 5] = [
            ("sbc_media_relay_up", "gauge", "Remote media relay state (1 UP, 0 DOWN).", |r| u64::from(r.is_up())),
            ("sbc_media_relay_requests_total", "counter", "ng requests sent for calls.", |r| r.requests.load(Relaxed)),
            (
                "sbc_media_relay_timeouts_total",
                "counter",
                "ng requests for calls left unanswered (timeout or unreachable).",
                |r| r.timeouts.load(Relaxed),
            ),
            (
                "sbc_media_relay_errors_total",
                "counter",
                "ng requests for calls answered with an error or a reply that does not decode.",
                |r| r.errors.load(Relaxed),
            ),
            ("sbc_media_relay_calls_active", "gauge", "Calls placed on the relay.", |r| r.calls.load(Relaxed)),
        ];
        for (name, kind, help, get) in series {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for r in &self.relays {
                let _ = writeln!(o, "{name}{{relay=\"{}\"}} {}", r.cfg.name, get(r));
            }
        }
        o
    }
}
