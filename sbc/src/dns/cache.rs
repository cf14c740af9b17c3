//! The answers of RFC 3263 resolutions, kept by TTL. Time is an argument.
//!
//! - A positive answer lives for its TTL (the shortest of the records
//!   used), capped to `[min_ttl, max_ttl]`.
//! - A name that does not exist (or has no usable record) is cached as
//!   negative for `negative_ttl`.
//! - A server failure (timeout, SERVFAIL) keeps a positive answer we
//!   already have for `negative_ttl` more ("serve stale", RFC 8767): a DNS
//!   outage must not take a working carrier away. With nothing to keep, it
//!   is cached as negative for `negative_ttl`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rfc3263::{HostSpec, LookupError, Resolution};

/// TTL caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Shortest time a positive answer is kept.
    pub min_ttl: Duration,
    /// Longest time a positive answer is kept.
    pub max_ttl: Duration,
    /// How long "no such name" (or a failure with nothing to keep) is kept.
    pub negative_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(30),
        }
    }
}

/// A cached answer.
pub type Answer = Result<Arc<Resolution>, LookupError>;

#[derive(Debug, Clone)]
struct Entry {
    answer: Answer,
    expires: Instant,
}

/// Answers by what was asked.
#[derive(Debug, Default)]
pub struct Cache {
    cfg: CacheConfig,
    map: HashMap<HostSpec, Entry>,
}

impl Cache {
    /// An empty cache.
    #[must_use]
    pub fn new(cfg: CacheConfig) -> Self {
        Self { cfg, map: HashMap::new() }
    }

    /// The answer for `spec` if it has not expired at `now`.
    #[must_use]
    pub fn get(&self, spec: &HostSpec, now: Instant) -> Option<&Answer> {
        self.map.get(spec).filter(|e| e.expires > now).map(|e| &e.answer)
    }

    /// The answer for `spec` even if it expired (for `sbc ctl trunks`).
    #[must_use]
    pub fn peek(&self, spec: &HostSpec) -> Option<(&Answer, Instant)> {
        self.map.get(spec).map(|e| (&e.answer, e.expires))
    }

    /// When the answer for `spec` expires.
    #[must_use]
    pub fn expires(&self, spec: &HostSpec) -> Option<Instant> {
        self.map.get(spec).map(|e| e.expires)
    }

    /// Stores the outcome of a resolution made at `now`; returns how long
    /// it is kept.
    pub fn store(&mut self, spec: &HostSpec, outcome: Result<Resolution, LookupError>, now: Instant) -> Duration {
        let c = self.cfg;
        let (answer, keep) = match outcome {
            Ok(r) => {
                let ttl = Duration::from_secs(u64::from(r.ttl)).clamp(c.min_ttl, c.max_ttl.max(c.min_ttl));
                (Ok(Arc::new(r)), ttl)
            }
            Err(LookupError::Failed(why)) => match self.map.get(spec) {
                Some(Entry { answer: Ok(old), .. }) => (Ok(Arc::clone(old)), c.negative_ttl),
                _ => (Err(LookupError::Failed(why)), c.negative_ttl),
            },
            Err(LookupError::NotFound) => (Err(LookupError::NotFound), c.negative_ttl),
        };
        self.map.insert(spec.clone(), Entry { answer, expires: now + keep });
        keep
    }

    /// Drops every answer expired at `now`.
    pub fn purge_expired(&mut self, now: Instant) {
        self.map.retain(|_, e| e.expires > now);
    }

    /// Forgets `spec`.
    pub fn remove(&mut self, spec: &HostSpec) {
        self.map.remove(spec);
    }

    /// Number of names held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
