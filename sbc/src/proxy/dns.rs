//! Trunks named by DNS (RFC 3263) in the call layer: each such trunk
//! expands into its resolved targets, in SRV priority and weight order,
//! and has one health state per target.
//!
//! - The resolver thread keeps every trunk's name resolved ahead of its
//!   TTL; the call layer only reads the cache ([`Dns::lookup`]), never
//!   waits on DNS. A trunk whose name has no answer yet (just after start,
//!   or NXDOMAIN) offers no target: routing passes it over like a DOWN
//!   trunk (and a request with no target left gets 503 with Retry-After).
//! - A target that times out, fails at the transport or answers a
//!   `health.failure_codes` code counts a failure against that target, not
//!   against the trunk: the INVITE moves on to the trunk's next target
//!   (then the next trunk), and `health.down_after` failures take the
//!   target DOWN, so later calls skip it.
//! - OPTIONS probes go to every resolved target; the same hysteresis rules
//!   as trunks bring a target back.
//! - The trunk's own state (`sbc ctl trunk NAME down`) still applies to it
//!   as a whole.
//!
//! Owned by the signaling thread, like the rest of the call layer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::core::{Core, Wake};
use super::routing::Target;
use crate::dns::{Dns, HostSpec};
use crate::health::{Health, State, Transition};
use crate::transport::Proto;
use crate::txn::{ClientId, Endpoint};

/// One resolved target of a trunk.
#[derive(Debug)]
pub(super) struct TargetRuntime {
    health: Health,
    next_probe: Option<Instant>,
    probing: bool,
    probe_seq: u32,
    proto: Proto,
    /// Still in the latest resolution.
    current: bool,
}

impl TargetRuntime {
    fn new(h: crate::health::HealthConfig, proto: Proto) -> Self {
        Self { health: Health::new(h), next_probe: None, probing: false, probe_seq: 0, proto, current: true }
    }
}

/// The DNS state of the call layer.
#[derive(Debug, Default)]
pub(super) struct DnsTrunks {
    /// The resolver, when any trunk is named by DNS.
    dns: Option<Dns>,
    /// Health of each target, by trunk index and address.
    targets: HashMap<(usize, SocketAddr), TargetRuntime>,
    /// Outstanding OPTIONS probes to targets.
    pub(super) probes: HashMap<ClientId, (usize, SocketAddr)>,
    /// Whether starting the resolver was tried (it is started once).
    tried: bool,
}

impl DnsTrunks {
    /// Starts the resolver when a trunk is named by DNS (an error is
    /// logged, and those trunks then have no targets).
    pub(super) fn new(cfg: &crate::config::Config) -> Self {
        let watch: Vec<HostSpec> = cfg.trunks.iter().filter_map(|t| t.dns.clone()).collect();
        if watch.is_empty() {
            return Self::default();
        }
        let dns = match Dns::start(&cfg.dns, watch) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::error!(error = %e, "dns: cannot start the resolver; trunks named by DNS have no targets");
                None
            }
        };
        Self { dns, tried: true, ..Self::default() }
    }
}

impl DnsTrunks {
    /// Uses `dns` from now on (tests).
    #[cfg(test)]
    pub(super) fn set_resolver(&mut self, dns: Dns) {
        self.dns = Some(dns);
        self.tried = true;
    }

    /// Forgets outstanding probes (their transactions are gone).
    pub(super) fn clear_probes(&mut self) {
        self.probes.clear();
        for rt in self.targets.values_mut() {
            rt.probing = false;
        }
    }
}

/// The next hop of a request by its headers (first Route, else the
/// Request-URI) when its host is a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HeaderHop {
    /// Not a DNS name (an IP literal, or no usable URI).
    NotDns,
    /// Resolved: the first target.
    Resolved(SocketAddr, Proto),
    /// Being resolved, or the name has no targets.
    Unresolved,
}

/// xorshift64 from a seed (the Call-ID's hash): the SRV weighted draw.
fn draws(seed: u64) -> impl FnMut() -> u32 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        u32::try_from(x >> 32).unwrap_or(0)
    }
}

impl Core {
    fn trunk_name(&self, i: usize) -> &str {
        self.cfg.trunks.get(i).map_or("?", |t| t.name.as_str())
    }

    /// Where a request goes by its headers when the first Route (else the
    /// Request-URI) names a host by DNS: RFC 3263 over the cache. The
    /// resolver is started on first use when no trunk started it.
    pub(super) fn header_hop(&mut self, msg: &crate::sip::Message, now: Instant) -> HeaderHop {
        let uri = match msg.routes().first() {
            Some(r) => r.uri.clone(),
            None => match msg.request_uri().and_then(|u| crate::sip::Uri::parse(u).ok()) {
                Some(u) => u,
                None => return HeaderHop::NotDns,
            },
        };
        let transport = uri.param("transport").flatten().and_then(Proto::from_name);
        let sips = uri.scheme.eq_ignore_ascii_case("sips");
        let hostport = uri.port.map_or_else(|| uri.host.clone(), |p| format!("{}:{p}", uri.host));
        let Some(spec) = HostSpec::parse(&hostport, transport, sips).filter(HostSpec::needs_dns) else {
            return HeaderHop::NotDns;
        };
        if self.dns_trunks.dns.is_none() && !self.dns_trunks.tried {
            self.dns_trunks.tried = true;
            self.dns_trunks.dns = Dns::start(&self.cfg.dns, Vec::new())
                .map_err(|e| tracing::error!(error = %e, "dns: cannot start the resolver"))
                .ok();
        }
        let Some(dns) = &self.dns_trunks.dns else { return HeaderHop::Unresolved };
        match dns.lookup(&spec, now) {
            Some(Ok(r)) => {
                let mut first = draws(0);
                r.order(&mut first).first().map_or(HeaderHop::Unresolved, |(a, p)| HeaderHop::Resolved(*a, *p))
            }
            _ => HeaderHop::Unresolved,
        }
    }

    /// Replaces each target that is a trunk named by DNS by its resolved
    /// targets that are not DOWN, in SRV order (drawn from `seed`).
    pub(super) fn expand_dns(&self, targets: Vec<Target>, seed: u64, now: Instant) -> Vec<Target> {
        let mut out = Vec::with_capacity(targets.len());
        let mut rand = draws(seed);
        for t in targets {
            let Some((i, spec)) =
                t.trunk.and_then(|i| self.cfg.trunks.get(i).and_then(|c| c.dns.clone()).map(|s| (i, s)))
            else {
                out.push(t);
                continue;
            };
            let answer = self.dns_trunks.dns.as_ref().and_then(|d| d.lookup(&spec, now));
            let resolution = match answer {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    crate::warn_limited!(trunk = self.trunk_name(i), error = ?e, "trunk passed over: DNS gave no targets");
                    continue;
                }
                None => {
                    crate::warn_limited!(trunk = self.trunk_name(i), "trunk passed over: its name is not resolved yet");
                    continue;
                }
            };
            for (addr, proto) in resolution.order(&mut rand) {
                let down = self.dns_trunks.targets.get(&(i, addr)).is_some_and(|rt| rt.health.state() == State::Down);
                if down {
                    tracing::debug!(trunk = self.trunk_name(i), %addr, "skipping a DOWN target");
                    continue;
                }
                out.push(Target { dest: addr, proto, ..t.clone() });
            }
        }
        out
    }

    /// A failure on target `dest` of trunk `i`; `false` when the trunk is
    /// not named by DNS (the trunk itself takes the failure).
    pub(super) fn dns_target_failure(&mut self, i: usize, dest: Option<SocketAddr>, what: &str, now: Instant) -> bool {
        if self.cfg.trunks.get(i).is_none_or(|t| t.dns.is_none()) {
            return false;
        }
        let Some(dest) = dest else { return true };
        let health = self.cfg.health.thresholds;
        let rt = self.dns_trunks.targets.entry((i, dest)).or_insert_with(|| TargetRuntime::new(health, Proto::Udp));
        let t = rt.health.on_failure(what, now);
        self.log_target(i, dest, t.as_ref());
        true
    }

    /// A call through target `dest` of trunk `i` succeeded.
    pub(super) fn dns_target_ok(&mut self, i: usize, dest: Option<SocketAddr>) {
        if let Some(rt) = dest.and_then(|d| self.dns_trunks.targets.get_mut(&(i, d))) {
            rt.health.on_call_ok();
        }
    }

    fn log_target(&self, i: usize, dest: SocketAddr, t: Option<&Transition>) {
        let Some(t) = t else { return };
        let name = self.trunk_name(i);
        match t.to {
            State::Down => {
                tracing::warn!(trunk = name, target = %dest, "trunk {name} target {dest} DOWN: {}", t.reason)
            }
            State::Up => tracing::info!(trunk = name, target = %dest, "trunk {name} target {dest} UP: {}", t.reason),
        }
    }

    /// Keeps the target table in step with the cache (new targets appear,
    /// targets no longer resolved are dropped) and sends due probes.
    pub(super) fn probe_dns_targets(&mut self, txn: &mut Endpoint, now: Instant) {
        let Some(dns) = self.dns_trunks.dns.clone() else { return };
        for rt in self.dns_trunks.targets.values_mut() {
            rt.current = false;
        }
        let health = self.cfg.health.thresholds;
        for (i, t) in self.cfg.trunks.iter().enumerate() {
            let Some(spec) = &t.dns else { continue };
            let Some((Ok(r), _)) = dns.peek(spec) else { continue };
            for s in &r.servers {
                for a in &s.addrs {
                    let rt =
                        self.dns_trunks.targets.entry((i, *a)).or_insert_with(|| TargetRuntime::new(health, s.proto));
                    rt.current = true;
                    rt.proto = s.proto;
                }
            }
        }
        self.dns_trunks.targets.retain(|_, rt| rt.current || rt.probing);
        let interval = self.cfg.health.interval;
        let mut due = Vec::new();
        for (&(i, addr), rt) in &mut self.dns_trunks.targets {
            let probed = !interval.is_zero() && self.cfg.trunks.get(i).is_some_and(|t| t.probe);
            if !probed {
                let t = rt.health.on_unprobed_tick(now);
                due.push((i, addr, None, t));
                continue;
            }
            if rt.probing || rt.next_probe.is_some_and(|n| n > now) {
                continue;
            }
            rt.probing = true;
            rt.next_probe = Some(super::trunks::probe_cadence(rt.next_probe, now, interval));
            rt.probe_seq += 1;
            due.push((i, addr, Some((rt.proto, rt.probe_seq)), None));
        }
        for (i, addr, probe, transition) in due {
            self.log_target(i, addr, transition.as_ref());
            let Some((proto, seq)) = probe else { continue };
            match self.send_probe(txn, i, addr, proto, seq, now) {
                Some(id) => {
                    self.dns_trunks.probes.insert(id, (i, addr));
                }
                None => {
                    if let Some(rt) = self.dns_trunks.targets.get_mut(&(i, addr)) {
                        rt.probing = false;
                    }
                }
            }
        }
    }

    /// The result of a probe of a target: `Some(code)` or `None` for no
    /// answer. `false` when `id` was not a target probe.
    pub(super) fn dns_probe_result(&mut self, id: ClientId, code: Option<u16>, now: Instant) -> bool {
        let Some((i, addr)) = self.dns_trunks.probes.remove(&id) else { return false };
        let interval = self.cfg.health.interval;
        let alive =
            code.is_some_and(|c| self.cfg.health.alive_codes.is_empty() || self.cfg.health.alive_codes.contains(&c));
        let Some(rt) = self.dns_trunks.targets.get_mut(&(i, addr)) else { return true };
        rt.probing = false;
        let next = rt.next_probe.unwrap_or(now + interval);
        let t = match code {
            Some(c) if alive => rt.health.on_probe_ok(&format!("OPTIONS answered {c}"), now),
            Some(c) => rt.health.on_failure(&format!("OPTIONS answered {c}"), now),
            None => rt.health.on_failure("OPTIONS timeout", now),
        };
        self.timers.push(std::cmp::Reverse((next.max(now), Wake::Tick)));
        self.log_target(i, addr, t.as_ref());
        true
    }

    /// Lines of `sbc ctl trunks` under trunk `i`: its name's resolution
    /// and each target's state.
    pub(super) fn dns_rows(&self, i: usize, now: Instant) -> String {
        let Some(spec) = self.cfg.trunks.get(i).and_then(|t| t.dns.as_ref()) else { return String::new() };
        let Some(dns) = &self.dns_trunks.dns else { return "  dns: resolver not running\n".into() };
        let Some((answer, expires)) = dns.peek(spec) else { return "  dns: not resolved yet\n".into() };
        let ttl = expires.saturating_duration_since(now).as_secs();
        let r = match answer {
            Ok(r) => r,
            Err(e) => return format!("  dns: {e:?} (asked again in {ttl}s)\n"),
        };
        let mut out = String::new();
        let mut servers: Vec<_> = r.servers.iter().collect();
        servers.sort_by_key(|s| s.priority);
        for s in servers {
            for a in &s.addrs {
                let (state, fails) = self
                    .dns_trunks
                    .targets
                    .get(&(i, *a))
                    .map_or(("UP", 0), |rt| (rt.health.state().as_str(), rt.health.counts().0));
                out.push_str(&format!(
                    "  -> {:<22} {:<4} {:<6} prio={} weight={} fails={} name={} ttl={}s\n",
                    a.to_string(),
                    s.proto.via_name(),
                    state,
                    s.priority,
                    s.weight,
                    fails,
                    s.name,
                    ttl
                ));
            }
        }
        out
    }
}
