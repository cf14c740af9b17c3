//! What a configuration reload (SIGHUP) may change in a running relay:
//! `relay.timeout` and `relay.max_sessions` (read by the control paths,
//! held in atomics), and the log level (by the binary, through
//! [`crate::logging::init_reloadable`]). Every other key is fixed at
//! start: sockets, the port range, workers, the datapath and XDP, and the
//! keys the workers copy when they start (`flood_ban_pps`, `nat`, ...).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::{to_nanos, Relay};
use crate::config::RelayConfig;

/// The keys a reload applies, as named in the file.
pub const RELOADABLE: [&str; 3] = ["relay.log_level", "relay.timeout", "relay.max_sessions"];

/// The first key, besides [`RELOADABLE`], whose value differs between `old`
/// and `new`: that change needs a restart.
#[must_use]
pub fn restart_key(old: &RelayConfig, new: &RelayConfig) -> Option<&'static str> {
    fn ne<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let (a, b) = (old, new);
    let checks: [(&'static str, bool); 21] = [
        ("relay.interfaces", ne(&a.interfaces, &b.interfaces)),
        ("relay.listen_ng", a.listen_ng != b.listen_ng),
        ("relay.port_min", a.port_min != b.port_min),
        ("relay.port_max", a.port_max != b.port_max),
        ("relay.workers", a.workers != b.workers),
        ("relay.delete_delay", a.delete_delay != b.delete_delay),
        ("relay.nat", a.nat != b.nat),
        ("relay.metrics", a.metrics != b.metrics),
        ("relay.socket_rcvbuf", a.socket_rcvbuf != b.socket_rcvbuf),
        ("relay.ng_cache_size", a.ng_cache_size != b.ng_cache_size),
        ("relay.ng_cache_age", a.ng_cache_age != b.ng_cache_age),
        ("relay.datapath", ne(&a.datapath, &b.datapath)),
        ("relay.xdp_interfaces", a.xdp_interfaces != b.xdp_interfaces),
        ("relay.xdp_queues", a.xdp_queues != b.xdp_queues),
        ("relay.xdp_full_checksum", a.xdp_full_checksum != b.xdp_full_checksum),
        ("relay.xdp_zero_copy", ne(&a.xdp_zero_copy, &b.xdp_zero_copy)),
        ("relay.xdp_bans", ne(&a.xdp_bans, &b.xdp_bans)),
        ("relay.worker_scheduling", ne(&a.worker_scheduling, &b.worker_scheduling)),
        ("relay.cpu_latency_us", a.cpu_latency_us != b.cpu_latency_us),
        ("relay.flood_ban_pps", a.flood_ban_pps != b.flood_ban_pps),
        ("relay.xdp_drop_no_session", a.xdp_drop_no_session != b.xdp_drop_no_session),
    ];
    checks.into_iter().find(|(_, changed)| *changed).map(|(k, _)| k)
}

impl Relay {
    /// Applies the reloadable keys of `cfg` (`timeout`, `max_sessions`):
    /// the next housekeeping pass and the next new call use them.
    pub fn set_tunables(&self, cfg: &RelayConfig) {
        self.tunables.timeout_ns.store(to_nanos(cfg.timeout), Relaxed);
        self.tunables.max_sessions.store(cfg.max_sessions, Relaxed);
    }

    /// The silence after which a call is deleted (`relay.timeout`).
    #[must_use]
    pub fn timeout(&self) -> Duration {
        Duration::from_nanos(self.tunables.timeout_ns.load(Relaxed))
    }

    /// The most concurrent calls (`relay.max_sessions`; 0: ports only).
    #[must_use]
    pub fn max_sessions(&self) -> usize {
        self.tunables.max_sessions.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_reloadable_keys_change_without_a_restart() {
        let base = RelayConfig::from_toml(crate::config::DEFAULT_TOML).unwrap();
        let mut new = base.clone();
        (new.timeout, new.max_sessions, new.log_level) = (Duration::from_secs(5), 10, "debug".into());
        assert_eq!(restart_key(&base, &new), None);
        let mut ports = new.clone();
        ports.port_min += 1;
        assert_eq!(restart_key(&base, &ports), Some("relay.port_min"));
        let mut flood = new.clone();
        flood.flood_ban_pps += 1;
        assert_eq!(restart_key(&base, &flood), Some("relay.flood_ban_pps"));
        let mut bans = new;
        bans.xdp_bans.push(crate::config::BanPrefix { addr: [192, 0, 2, 0].into(), len: 24 });
        assert_eq!(restart_key(&base, &bans), Some("relay.xdp_bans"));
    }
}
