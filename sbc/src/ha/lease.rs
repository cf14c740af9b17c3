//! The lease: `<prefix>:lease` holds `<node>:<token>` with a PX expiry. The
//! token comes from `INCR <prefix>:epoch` when a node takes the lease, so it
//! only grows; it is the fencing token that every replicated write checks
//! (see [`super::replication`]).
//!
//! [`Lease`] is this node's side of it (token, renewal times). The active
//! node renews it with every write batch, at least once per check interval;
//! when it cannot, [`Node::redis_lost`] decides between stepping down and
//! serving degraded, and [`Node::try_resync`] takes the lease again once
//! Redis is back. All of it runs on the HA thread.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use super::redis::{Redis, Reply, Script};
use super::{Dump, Keys, Node, ToProxy};

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_LUA));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));

const ACQUIRE_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  if ARGV[3] == '1' and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(string.sub(cur, #ARGV[1] + 2))
  end
  return 0
end
local t = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. t, 'PX', ARGV[2])
return t
";

const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// This node's hold on the lease.
pub(super) struct Lease {
    /// The fencing token while this node holds the lease; 0 otherwise.
    pub token: u64,
    /// Active: when the last successful renewal was sent.
    pub renewed_at: Option<Instant>,
    /// Active: when to renew next.
    pub next_renew: Instant,
    /// Standby: when to try to take the lease next.
    pub next_acquire: Instant,
}

impl Lease {
    /// No lease; a starting node listens for the peer's heartbeat for two
    /// intervals before it competes for the lease.
    pub fn new(now: Instant, interval: Duration) -> Self {
        Self { token: 0, renewed_at: None, next_renew: now, next_acquire: now + interval * 2 }
    }

    /// The lease value while this node holds it: `<node>:<token>`.
    pub fn value(&self, node_id: &str) -> Vec<u8> {
        format!("{node_id}:{}", self.token).into_bytes()
    }

    /// Takes the lease if it is free (or, with `adopt`, if this node holds
    /// it already, keeping its token). Returns the token, 0 when another
    /// node holds it.
    pub fn acquire(redis: &mut Redis, keys: &Keys, node_id: &str, ttl: Duration, adopt: bool) -> std::io::Result<u64> {
        let r = redis.eval(
            &ACQUIRE,
            &[&keys.lease, &keys.epoch],
            &[node_id.as_bytes(), ttl.as_millis().to_string().as_bytes(), if adopt { b"1" } else { b"0" }],
        )?;
        match r {
            Reply::Int(t) => Ok(u64::try_from(t).unwrap_or(0)),
            other => Err(std::io::Error::other(format!("unexpected reply {other:?}"))),
        }
    }

    /// Deletes the lease if it still holds this node's value, so the peer
    /// need not wait for it to expire.
    pub fn release(&self, redis: &mut Redis, keys: &Keys, node_id: &str) {
        let _ = redis.eval(&RELEASE, &[&keys.lease], &[&self.value(node_id)]);
    }
}

impl Node {
    pub(super) fn acquire(&mut self, adopt: bool) -> std::io::Result<u64> {
        Lease::acquire(&mut self.redis, &self.keys, &self.cfg.node_id, self.cfg.lease, adopt)
    }

    /// The active node's tick: replicate, and renew the lease with the
    /// write (at least once per interval).
    pub(super) fn active_tick(&mut self, now: Instant) {
        self.collect_relay(now);
        let renew_due = now >= self.lease.next_renew;
        if self.outbox.resync {
            if renew_due {
                self.lease.next_renew = now + self.cfg.interval;
                self.try_resync(now);
            }
            return;
        }
        if !renew_due && self.outbox.is_empty() {
            return;
        }
        if renew_due {
            self.lease.next_renew = now + self.cfg.interval;
        }
        match self.flush(now, false) {
            Ok(true) => {}
            Ok(false) => {
                self.release("another node holds the lease");
            }
            Err(e) => {
                tracing::debug!(error = %e, "HA: renewing the lease failed");
                self.status.set_redis_up(false, &self.cfg.redis);
                self.redis_lost(now);
            }
        }
    }

    /// Renewal failed. Step down before the lease can expire for the peer,
    /// unless the peer cannot reach Redis either (Redis itself is down).
    pub(super) fn redis_lost(&mut self, now: Instant) {
        self.outbox.resync = true;
        let since = self.lease.renewed_at.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        let margin = self.cfg.interval.max(self.cfg.lease / 5);
        if since + margin < self.cfg.lease {
            return;
        }
        let peer_says_redis_down =
            self.hb.peer.is_some_and(|p| !p.redis_ok && now.saturating_duration_since(p.at) < self.cfg.interval * 3);
        if peer_says_redis_down {
            if !self.degraded_logged {
                self.degraded_logged = true;
                self.status.degraded.store(true, Relaxed);
                tracing::error!("HA: Redis is down for both nodes; serving calls without replication (degraded)");
            }
        } else {
            self.release("cannot renew the lease and the peer can reach Redis (or is silent)");
        }
    }

    /// Redis is back after an outage: take the lease again (it may have
    /// expired or been lost with a restart) and write everything.
    pub(super) fn try_resync(&mut self, now: Instant) {
        let since = self.lease.renewed_at.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        match self.acquire(true) {
            Ok(0) => self.release("the lease is held by another node after the Redis outage"),
            Ok(t) => {
                self.lease.token = t;
                self.status.token.store(t, Relaxed);
                let (tx, rx) = std::sync::mpsc::channel();
                let _ = self.links.to_proxy.send(ToProxy::DumpAll(tx));
                (self.links.wake_proxy)();
                let dump: Dump = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
                self.outbox.refill(dump, &self.links.relay);
                let n = self.outbox.len();
                match self.flush(now, true) {
                    Ok(true) => {
                        self.outbox.resync = false;
                        tracing::info!(records = n, token = t, "HA: Redis back; lease renewed and state written again");
                    }
                    Ok(false) => self.release("lost the lease during resync"),
                    Err(e) => tracing::debug!(error = %e, "HA: resync write failed"),
                }
            }
            Err(_) => {
                self.status.set_redis_up(false, &self.cfg.redis);
                if self.status.degraded.load(Relaxed) {
                    // Still degraded: but if the peer now reaches Redis it
                    // may take over, so the split-brain rule applies again.
                    let peer_ok = self.hb.peer.is_some_and(|p| p.redis_ok);
                    if peer_ok && since > self.cfg.lease {
                        self.release("the peer reaches Redis and this node does not");
                    }
                } else {
                    self.redis_lost(now);
                }
            }
        }
    }
}
