//! Live reload (SIGHUP, `sbc ctl reload`): a configuration parsed and
//! validated in full elsewhere replaces the running one on the signaling
//! thread, in one step, or not at all.
//!
//! - Keys that cannot change while running (sockets, the relay, HA, TLS
//!   listeners, ...) are compared first: any change refuses the whole
//!   reload, naming the key ([`ReloadError::NeedsRestart`]).
//! - Trunk indices never change while running, because dialogs, forwards,
//!   probes, registrations and the per-trunk metrics hold them. A trunk
//!   kept by name keeps its index, its health and its counters (fresh
//!   health when its address, transport or realm changed). A new trunk
//!   takes a new index at the end. A removed trunk stays at its index,
//!   retired: no route names it and it is not probed, so it gets no new
//!   calls, while its established calls keep it (its sources are still
//!   admitted while any dialog uses it). Routes are remapped to the
//!   merged indices.
//! - Everything else that is read from the configuration on each request
//!   (routes, ACLs, limits, timers of the call layer, domains) follows the
//!   new `Arc<Config>`; the guard's lists and rates, the caps and the users
//!   table are handed over.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use super::trunks::TrunkRuntime;
use super::Proxy;
use crate::config::{Config, Trunk};

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// A key that only takes effect at start changed.
    #[error("config key `{0}` changed: it needs a restart (nothing was reloaded)")]
    NeedsRestart(String),
}

/// What a reload changed, as `sbc ctl reload` prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Trunks that are new.
    pub added: Vec<String>,
    /// Trunks removed (retired: they keep their calls).
    pub removed: Vec<String>,
    /// Trunks kept by name whose settings changed.
    pub changed: Vec<String>,
    /// Routes now.
    pub routes: usize,
    /// Users in the users table now (0 without `[auth]`).
    pub users: usize,
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trunks: +{} -{} ~{}, routes: {}, users: {}",
            self.added.len(),
            self.removed.len(),
            self.changed.len(),
            self.routes,
            self.users
        )?;
        for (sign, names) in [('+', &self.added), ('-', &self.removed), ('~', &self.changed)] {
            if !names.is_empty() {
                write!(f, " [{sign}{}]", names.join(&format!(" {sign}")))?;
            }
        }
        Ok(())
    }
}

/// The first key that differs between `old` and `new` and cannot change
/// at run time.
#[must_use]
pub fn restart_key(old: &Config, new: &Config) -> Option<String> {
    fn dbg<T: fmt::Debug>(v: &T) -> String {
        format!("{v:?}")
    }
    if old.realms.len() != new.realms.len() {
        return Some("realm".into());
    }
    let one = old.realms.len() == 1;
    for (i, (a, b)) in old.realms.iter().zip(&new.realms).enumerate() {
        let key = |k: &str| if one { format!("sip.{k}") } else { format!("realm[{i}].{k}") };
        if a.name != b.name {
            return Some(if one { "sip".into() } else { format!("realm[{i}].name") });
        }
        if a.listen != b.listen {
            return Some(key("listen"));
        }
        if a.advertise != b.advertise {
            return Some(key("advertise"));
        }
        if a.media != b.media {
            return Some(key("media"));
        }
        if a.tls_listen != b.tls_listen {
            return Some(key("tls_listen"));
        }
    }
    let auth_fixed = |c: &Config| {
        c.auth.as_ref().map(|a| (a.realm.clone(), a.secret.clone(), a.nonce_lifetime, dbg(&a.algorithms), a.max_nonces))
    };
    let tls = |c: &Config| (c.uses_tls(), dbg(&c.tls.limits), dbg(&c.tls.identity.as_ref().map(|i| &i.certs)));
    let registering = |c: &Config| {
        c.trunks
            .iter()
            .filter_map(|t| Some((t.name.clone(), dbg(&t.auth.as_ref()?.register))))
            .filter(|(_, r)| r != "None")
            .collect::<Vec<_>>()
    };
    // The resolver and the names it watches are set up at start.
    let dns_names =
        |c: &Config| c.trunks.iter().filter_map(|t| Some((t.name.clone(), dbg(t.dns.as_ref()?)))).collect::<Vec<_>>();
    let checks: [(&str, bool); 19] = [
        ("sip.tcp", old.tcp != new.tcp),
        ("sip.max_message_size", old.max_message_size != new.max_message_size),
        ("sip.t1_ms", old.t1 != new.t1),
        ("sip.t2_ms", old.t2 != new.t2),
        ("sip.t4_ms", old.t4 != new.t4),
        ("sip.log_level", old.log_level != new.log_level),
        ("ha", dbg(&old.ha) != dbg(&new.ha)),
        ("metrics.listen", old.metrics != new.metrics),
        ("control.socket", old.control_socket != new.control_socket),
        ("cdr.file", old.cdr_file != new.cdr_file),
        ("media_relay", old.media_relays != new.media_relays),
        ("messages", old.messages != new.messages),
        ("alternate_path", dbg(&old.alternate_path) != dbg(&new.alternate_path)),
        ("tls (tls_cert, tls_key, connection limits)", tls(old) != tls(new)),
        ("auth", old.auth.is_some() != new.auth.is_some()),
        ("auth (realm, secret, nonce_lifetime_s, algorithms, max_nonces)", auth_fixed(old) != auth_fixed(new)),
        ("trunk.register (registering trunks)", registering(old) != registering(new)),
        ("dns", dbg(&old.dns) != dbg(&new.dns)),
        ("trunk.address (trunks named by DNS)", dns_names(old) != dns_names(new)),
    ];
    let relay = media_relay::relay::restart_key(&old.relay, &new.relay).map(str::to_owned);
    relay.or_else(|| checks.into_iter().find(|(_, changed)| *changed).map(|(k, _)| k.to_owned()))
}

/// Whether a trunk's health must start afresh: it is somewhere else now.
fn moved(a: &Trunk, b: &Trunk) -> bool {
    a.address != b.address || a.transport != b.transport || a.realm != b.realm
}

impl Proxy {
    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &Arc<Config> {
        &self.core.cfg
    }

    /// Replaces the running configuration with `new` (parsed and validated
    /// by [`Config::from_file`]), keeping every call, binding, ban and
    /// transaction. See the module docs for how trunks carry over.
    ///
    /// # Errors
    /// A key that needs a restart changed: nothing changes.
    pub fn reload(&mut self, new: &Config, now: Instant) -> Result<ReloadSummary, ReloadError> {
        let old = Arc::clone(&self.core.cfg);
        if let Some(key) = restart_key(&old, new) {
            return Err(ReloadError::NeedsRestart(key));
        }
        let mut summary = ReloadSummary { routes: new.routes.len(), ..ReloadSummary::default() };
        // Trunks in use by a dialog or a forward in progress.
        let in_use: BTreeSet<usize> = self
            .core
            .dialogs
            .iter()
            .filter_map(|d| d.trunk)
            .chain(self.core.forwards.values().flat_map(|f| f.trunks_in_use()))
            .collect();
        let mut merged: Vec<Trunk> = Vec::with_capacity(old.trunks.len().max(new.trunks.len()));
        let mut index_of_new = vec![0usize; new.trunks.len()];
        let mut fresh = Vec::new();
        for (i, ot) in old.trunks.iter().enumerate() {
            if let Some(j) = new.trunks.iter().position(|t| t.name == ot.name) {
                let nt = &new.trunks[j];
                index_of_new[j] = i;
                if self.core.retired.remove(&i) {
                    summary.added.push(nt.name.clone());
                    fresh.push(i);
                } else if moved(ot, nt) {
                    summary.changed.push(nt.name.clone());
                    fresh.push(i);
                } else if format!("{ot:?}") != format!("{nt:?}") {
                    summary.changed.push(nt.name.clone());
                }
                merged.push(nt.clone());
            } else {
                let mut retired = ot.clone();
                retired.probe = false;
                if !in_use.contains(&i) {
                    // No call left on it: its sources are no longer a trunk's.
                    retired.policy.sources.clear();
                }
                if self.core.retired.insert(i) {
                    summary.removed.push(ot.name.clone());
                }
                merged.push(retired);
            }
        }
        for (j, nt) in new.trunks.iter().enumerate() {
            if !old.trunks.iter().any(|t| t.name == nt.name) {
                index_of_new[j] = merged.len();
                summary.added.push(nt.name.clone());
                merged.push(nt.clone());
            }
        }
        let mut cfg = new.clone();
        cfg.trunks = merged;
        for r in &mut cfg.routes {
            for i in r.trunks.iter_mut().flatten() {
                *i = index_of_new[*i];
            }
        }
        // Health: kept by index, fresh for moved, re-added and new trunks
        // (the count of calls on it carries over, for its cap).
        let thresholds = cfg.health.thresholds;
        for i in fresh {
            let calls = self.core.trunks.get(i).map_or(0, |rt| rt.calls);
            let mut rt = TrunkRuntime::new(thresholds);
            rt.calls = calls;
            self.core.trunks[i] = rt;
            self.core.metrics.trunk_state(i, true);
        }
        while self.core.trunks.len() < cfg.trunks.len() {
            self.core.trunks.push(TrunkRuntime::new(thresholds));
        }
        for t in cfg.trunks.iter().skip(self.core.metrics.trunks.len()) {
            self.core.metrics.trunks.push(&t.name);
            self.core.metrics.health.push(&t.name);
        }
        let cfg = Arc::new(cfg);
        self.txn.set_limits(cfg.limits);
        self.txn.set_caps(cfg.caps);
        self.guard.reconfigure(&cfg, now);
        if let Some(a) = &cfg.auth {
            summary.users = self.set_users(a.users.clone());
        }
        self.core.cfg = cfg;
        for name in &summary.removed {
            tracing::info!(trunk = %name, "reload: trunk removed; it keeps its established calls and gets no new ones");
        }
        Ok(summary)
    }
}

/// Reload counters (written by the signaling thread, read by the metrics
/// thread).
#[derive(Debug, Default)]
pub struct ReloadMetrics {
    ok: std::sync::atomic::AtomicU64,
    error: std::sync::atomic::AtomicU64,
    /// Unix seconds of the last successful reload (0: none yet).
    last_ok: std::sync::atomic::AtomicU64,
}

impl ReloadMetrics {
    /// Counts a reload attempt; a success at `unix_now` (Unix seconds).
    pub fn count(&self, ok: bool, unix_now: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        if ok {
            self.ok.fetch_add(1, Relaxed);
            self.last_ok.store(unix_now, Relaxed);
        } else {
            self.error.fetch_add(1, Relaxed);
        }
    }

    /// Reloads so far: (ok, error).
    #[must_use]
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.ok.load(Relaxed), self.error.load(Relaxed))
    }

    /// Appends the `sbc_config_*` series.
    pub fn render(&self, o: &mut String) {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let (ok, error) = self.counts();
        let _ = writeln!(
            o,
            "# HELP sbc_config_reloads_total Configuration reloads (SIGHUP, sbc ctl reload), by result.\n\
             # TYPE sbc_config_reloads_total counter\n\
             sbc_config_reloads_total{{result=\"ok\"}} {ok}\n\
             sbc_config_reloads_total{{result=\"error\"}} {error}\n\
             # HELP sbc_config_last_reload_success_timestamp_seconds When the configuration was last reloaded (0: never).\n\
             # TYPE sbc_config_last_reload_success_timestamp_seconds gauge\n\
             sbc_config_last_reload_success_timestamp_seconds {}",
            self.last_ok.load(Relaxed)
        );
    }
}

impl Proxy {
    /// Applies a configuration file read and parsed for a reload (`loaded`:
    /// what [`Config::from_file`] gave), from `origin` (`SIGHUP`, `sbc ctl
    /// reload`): logs the outcome, counts it in `sbc_config_reloads_total`
    /// and returns the reply for `sbc ctl` (`ok: ...` or `error: ...`).
    pub fn apply_reload(
        &mut self,
        loaded: Result<Config, crate::config::ConfigError>,
        origin: &str,
        now: Instant,
    ) -> String {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let result = loaded.map_err(|e| e.to_string()).and_then(|c| self.reload(&c, now).map_err(|e| e.to_string()));
        self.core.metrics.reloads.count(result.is_ok(), unix);
        match result {
            Ok(summary) => {
                tracing::info!(origin, "configuration reloaded: {summary}");
                format!("ok: configuration reloaded: {summary}\n")
            }
            Err(e) => {
                tracing::error!(origin, "configuration not reloaded, the running one stays: {e}");
                format!("error: configuration not reloaded, the running one stays: {e}\n")
            }
        }
    }
}
