//! The resolver thread: RFC 3263 lookups through hickory-resolver, off
//! the SIP event loop.
//!
//! Ownership: the thread is the only writer of the shared [`Cache`]; the
//! SIP loop only reads it (a short lock, never held across I/O) and asks
//! for names through a channel that never blocks. Watched names (trunk
//! hosts) are refreshed before they expire, so the SIP loop always finds
//! them; other names (Route and Request-URI hosts) are resolved when first
//! asked for and then on each ask after they expire.

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts};
use hickory_resolver::error::ResolveErrorKind;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::Resolver;

use super::cache::{Answer, Cache, CacheConfig};
use super::rfc3263::{self, HostSpec, Lookup, LookupError, Naptr, Srv};

/// `[dns]`: where to ask and how long to keep answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers (empty: `/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// TTL caps.
    pub cache: CacheConfig,
}

/// How a request path gets resolutions: cached answers now, or `None`
/// (the name is being resolved; ask again shortly).
#[derive(Clone)]
pub struct Dns {
    cache: Arc<Mutex<Cache>>,
    ask: SyncSender<HostSpec>,
}

/// Names waiting to be resolved; asks past it are dropped (and made again
/// by the next request for the name).
const QUEUE: usize = 256;

/// Past this many cached names, expired ones are dropped before a new one
/// is stored; past twice as many, names nobody watches are not cached.
const CACHE_SOFT_CAP: usize = 4096;

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dns")
    }
}

impl Dns {
    /// Starts the resolver thread; `watch` is kept resolved (trunk hosts).
    ///
    /// # Errors
    /// The system resolver configuration cannot be read, or the thread
    /// cannot start.
    pub fn start(cfg: &DnsConfig, watch: Vec<HostSpec>) -> std::io::Result<Self> {
        let resolver = hickory(cfg)?;
        let cache = Arc::new(Mutex::new(Cache::new(cfg.cache)));
        let (ask, rx) = mpsc::sync_channel(QUEUE);
        let shared = Arc::clone(&cache);
        std::thread::Builder::new().name("dns".into()).spawn(move || run(&resolver, &shared, &rx, watch))?;
        Ok(Self { cache, ask })
    }

    /// A resolver with no thread: its cache holds what tests put in.
    #[cfg(test)]
    #[must_use]
    pub fn fixed(cfg: CacheConfig) -> Self {
        let (ask, _) = mpsc::sync_channel(1);
        Self { cache: Arc::new(Mutex::new(Cache::new(cfg))), ask }
    }

    /// Stores an answer (tests).
    #[cfg(test)]
    pub fn insert(&self, spec: &HostSpec, answer: Result<rfc3263::Resolution, LookupError>, now: Instant) {
        if let Ok(mut c) = self.cache.lock() {
            c.store(spec, answer, now);
        }
    }

    /// The cached answer for `spec` at `now`; on a miss (or an expired
    /// answer) the resolver thread is asked and `None` is returned.
    #[must_use]
    pub fn lookup(&self, spec: &HostSpec, now: Instant) -> Option<Answer> {
        let hit = self.cache.lock().ok().and_then(|c| c.get(spec, now).cloned());
        if hit.is_none() {
            // Never blocks: a full queue drops the ask.
            let _ = self.ask.try_send(spec.clone());
        }
        hit
    }

    /// The latest answer for `spec`, expired or not, and when it expires.
    #[must_use]
    pub fn peek(&self, spec: &HostSpec) -> Option<(Answer, Instant)> {
        self.cache.lock().ok().and_then(|c| c.peek(spec).map(|(a, t)| (a.clone(), t)))
    }
}

fn hickory(cfg: &DnsConfig) -> std::io::Result<Resolver> {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    opts.ndots = 0;
    if cfg.servers.is_empty() {
        let (config, mut sys) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| std::io::Error::other(format!("reading /etc/resolv.conf: {e}")))?;
        sys.timeout = opts.timeout;
        sys.attempts = opts.attempts;
        return Resolver::new(config, sys);
    }
    let mut config = ResolverConfig::new();
    for s in &cfg.servers {
        config.add_name_server(NameServerConfig::new(*s, Protocol::Udp));
        config.add_name_server(NameServerConfig::new(*s, Protocol::Tcp));
    }
    Resolver::new(config, opts)
}

/// Refreshes a watched name when this much of its lifetime is left.
fn refresh_margin(keep: Duration) -> Duration {
    (keep / 10).max(Duration::from_millis(500)).min(keep / 2)
}

fn run(resolver: &Resolver, cache: &Mutex<Cache>, rx: &Receiver<HostSpec>, watch: Vec<HostSpec>) {
    let mut dns = Hickory(resolver);
    // Next refresh of each watched name.
    let mut due: Vec<(HostSpec, Instant)> = watch.into_iter().map(|s| (s, Instant::now())).collect();
    loop {
        let now = Instant::now();
        for (spec, at) in &mut due {
            if *at <= now {
                let keep = resolve_into(&mut dns, cache, spec);
                *at = Instant::now() + keep.saturating_sub(refresh_margin(keep));
            }
        }
        let next = due.iter().map(|(_, at)| *at).min();
        let wait = next.map_or(Duration::from_secs(3600), |n| n.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait) {
            Ok(spec) => {
                let now = Instant::now();
                let (fresh, full) = cache.lock().map_or((true, true), |mut c| {
                    if c.len() >= CACHE_SOFT_CAP {
                        c.purge_expired(now);
                    }
                    (c.get(&spec, now).is_some(), c.len() >= 2 * CACHE_SOFT_CAP)
                });
                if full && !fresh {
                    crate::warn_limited!(host = %spec.host, "dns: cache full, name not resolved");
                } else if !fresh {
                    resolve_into(&mut dns, cache, &spec);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn resolve_into(dns: &mut Hickory<'_>, cache: &Mutex<Cache>, spec: &HostSpec) -> Duration {
    let outcome = rfc3263::resolve(spec, dns);
    match &outcome {
        Ok(r) => {
            let targets: Vec<String> =
                r.servers.iter().map(|s| format!("{}:{:?}/{}", s.name, s.addrs, s.priority)).collect();
            tracing::debug!(host = %spec.host, ttl = r.ttl, ?targets, "dns: resolved");
        }
        Err(e) => tracing::warn!(host = %spec.host, error = ?e, "dns: no targets"),
    }
    cache.lock().map_or(Duration::from_secs(5), |mut c| c.store(spec, outcome, Instant::now()))
}

/// hickory's synchronous resolver as a [`Lookup`].
struct Hickory<'r>(&'r Resolver);

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn lookup_err(e: &hickory_resolver::error::ResolveError) -> LookupError {
    match e.kind() {
        ResolveErrorKind::NoRecordsFound { .. } => LookupError::NotFound,
        _ => LookupError::Failed(e.to_string()),
    }
}

impl Hickory<'_> {
    fn records<T>(&self, name: &str, t: RecordType, f: impl Fn(&RData) -> Option<T>) -> rfc3263::Answer<T> {
        let l = self.0.lookup(fqdn(name), t).map_err(|e| lookup_err(&e))?;
        let ttl = l.record_iter().map(hickory_resolver::proto::rr::Record::ttl).min().unwrap_or(0);
        let out: Vec<T> = l.record_iter().filter_map(|r| r.data().and_then(&f)).collect();
        Ok((out, ttl))
    }
}

impl Lookup for Hickory<'_> {
    fn naptr(&mut self, name: &str) -> rfc3263::Answer<Naptr> {
        self.records(name, RecordType::NAPTR, |d| match d {
            RData::NAPTR(n) => Some(Naptr {
                order: n.order(),
                preference: n.preference(),
                flags: String::from_utf8_lossy(n.flags()).into_owned(),
                service: String::from_utf8_lossy(n.services()).into_owned(),
                replacement: n.replacement().to_ascii(),
            }),
            _ => None,
        })
    }

    fn srv(&mut self, name: &str) -> rfc3263::Answer<Srv> {
        self.records(name, RecordType::SRV, |d| match d {
            RData::SRV(s) => {
                Some(Srv { priority: s.priority(), weight: s.weight(), port: s.port(), target: s.target().to_ascii() })
            }
            _ => None,
        })
    }

    fn addrs(&mut self, name: &str) -> rfc3263::Answer<IpAddr> {
        let l = self.0.lookup_ip(fqdn(name)).map_err(|e| lookup_err(&e))?;
        let ttl = l.as_lookup().record_iter().map(hickory_resolver::proto::rr::Record::ttl).min().unwrap_or(0);
        Ok((l.iter().collect(), ttl))
    }
}
