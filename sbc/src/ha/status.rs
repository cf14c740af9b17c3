//! What the HA thread tells the outside: the `sbc_ha_*` Prometheus series
//! ([`HaStatus`]) and the `sbc ctl ha` line.
//!
//! Only the HA thread writes [`HaStatus`]; the metrics thread reads it
//! (relaxed atomics: each value stands alone, none guards another).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use super::{Node, Role};

/// What the exporter and `sbc ctl ha` read.
#[derive(Debug, Default)]
pub struct HaStatus {
    pub(super) active: AtomicBool,
    pub(super) redis_up: AtomicBool,
    pub(super) degraded: AtomicBool,
    pub(super) token: AtomicU64,
    pub(super) takeovers: AtomicU64,
    pub(super) releases: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) write_errors: AtomicU64,
    pub(super) pending: AtomicU64,
    pub(super) warm_dialogs: AtomicU64,
    pub(super) warm_sessions: AtomicU64,
    pub(super) last_takeover_ms: AtomicU64,
}

impl HaStatus {
    /// Prometheus text.
    #[must_use]
    pub fn render(&self) -> String {
        let flag = |b: &AtomicBool| u64::from(b.load(Relaxed));
        let rows: [(&str, &str, &str, u64); 12] = [
            ("sbc_ha_active", "gauge", "1 when this node holds the lease and the virtual IP.", flag(&self.active)),
            ("sbc_ha_redis_up", "gauge", "1 when the last Redis operation succeeded.", flag(&self.redis_up)),
            (
                "sbc_ha_degraded",
                "gauge",
                "1 when active without replication (Redis down for both nodes).",
                flag(&self.degraded),
            ),
            (
                "sbc_ha_lease_token",
                "gauge",
                "Fencing token of the lease this node holds (0: none).",
                self.token.load(Relaxed),
            ),
            ("sbc_ha_takeovers_total", "counter", "Times this node became active.", self.takeovers.load(Relaxed)),
            (
                "sbc_ha_releases_total",
                "counter",
                "Times this node gave up the virtual IP.",
                self.releases.load(Relaxed),
            ),
            ("sbc_ha_replicated_writes_total", "counter", "Records written to Redis.", self.writes.load(Relaxed)),
            (
                "sbc_ha_write_errors_total",
                "counter",
                "Batches that could not be written to Redis.",
                self.write_errors.load(Relaxed),
            ),
            ("sbc_ha_pending_records", "gauge", "Changes waiting to be written to Redis.", self.pending.load(Relaxed)),
            ("sbc_ha_warm_dialogs", "gauge", "Dialogs in the standby's warm copy.", self.warm_dialogs.load(Relaxed)),
            (
                "sbc_ha_warm_sessions",
                "gauge",
                "Media sessions in the standby's warm copy.",
                self.warm_sessions.load(Relaxed),
            ),
            (
                "sbc_ha_last_takeover_ms",
                "gauge",
                "Milliseconds the last takeover took, from taking the lease to announcing the address.",
                self.last_takeover_ms.load(Relaxed),
            ),
        ];
        let mut o = String::new();
        for (name, kind, help, v) in rows {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        o
    }

    /// Records whether the last Redis operation succeeded, logging the edges.
    pub(super) fn set_redis_up(&self, up: bool, redis: &super::redis::RedisTarget) {
        let was = self.redis_up.swap(up, Relaxed);
        if was && !up {
            tracing::warn!(redis = %redis, "HA: Redis unreachable");
        } else if !was && up {
            tracing::info!(redis = %redis, "HA: Redis reachable");
        }
    }
}

impl Node {
    /// The `sbc ctl ha` line.
    pub(super) fn status_text(&self, now: Instant) -> String {
        let peer = match self.hb.peer {
            Some(p) => format!(
                "{} (token {}, {} ms ago, redis {})",
                if p.active { "active" } else { "standby" },
                p.token,
                now.saturating_duration_since(p.at).as_millis(),
                if p.redis_ok { "up" } else { "down" }
            ),
            None => "never heard".into(),
        };
        format!(
            "node {} role {} token {} redis {}{} vip {} peer {}\n",
            self.cfg.node_id,
            if self.role == Role::Active { "active" } else { "standby" },
            self.lease.token,
            if self.status.redis_up.load(Relaxed) { "up" } else { "down" },
            if self.status.degraded.load(Relaxed) { " (degraded)" } else { "" },
            self.vips.describe(),
            peer
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_every_series() {
        let s = HaStatus::default();
        s.active.store(true, Relaxed);
        s.takeovers.fetch_add(2, Relaxed);
        let text = s.render();
        assert!(text.contains("sbc_ha_active 1\n"));
        assert!(text.contains("sbc_ha_takeovers_total 2\n"));
        assert!(text.contains("sbc_ha_redis_up 0\n"));
        for name in ["sbc_ha_degraded", "sbc_ha_lease_token", "sbc_ha_pending_records", "sbc_ha_warm_sessions"] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }
}
