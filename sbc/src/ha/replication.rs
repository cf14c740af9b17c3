//! Replication: the call state the standby needs to take over, written to
//! Redis by the active node ([`Outbox`]) and read back by the standby
//! ([`WarmCopy`]).
//!
//! Dialogs (`<prefix>:dialogs`) and media sessions (`<prefix>:media`) are
//! hashes of JSON records keyed by Call-ID, registrations
//! (`<prefix>:bindings`) keyed by address-of-record. Each change is also
//! appended to the stream `<prefix>:log`, which the standby reads to keep a
//! warm copy. Every write runs in a Lua script that first checks the lease
//! value, so a node that lost the lease cannot overwrite the new active's
//! state (fencing), and renews the lease with the same call.
//!
//! Changes are coalesced per record (newest wins) and sent in batches from
//! the HA thread, never from the packet or signaling path: the signaling
//! thread sends its changes over a channel ([`super::ToHa::Changes`]), the
//! relay's are collected from [`Relay::export_changes`]. Both types live on
//! the HA thread, which alone reads and writes them.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use media_relay::relay::Relay;

use super::redis::{Redis, Reply, Script};
use super::{Dump, HaStatus, Keys, Node};

static WRITE: LazyLock<Script> = LazyLock::new(|| Script::new(WRITE_LUA));

const WRITE_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[5])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', '100000', '*', 'k', 'reset', 'id', '', 'v', '')
end
for i = 4, #ARGV, 3 do
  local h = KEYS[2]
  if ARGV[i] == 'm' then h = KEYS[3] elseif ARGV[i] == 'b' then h = KEYS[5] end
  if ARGV[i + 2] == '' then redis.call('HDEL', h, ARGV[i + 1]) else redis.call('HSET', h, ARGV[i + 1], ARGV[i + 2]) end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', '100000', '*', 'k', ARGV[i], 'id', ARGV[i + 1], 'v', ARGV[i + 2])
end
return 1
";

/// Records per write script call.
const BATCH: usize = 500;

/// Kind of a replicated record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Dialog,
    Media,
    Binding,
}

impl Kind {
    fn tag(self) -> &'static [u8] {
        match self {
            Self::Dialog => b"d",
            Self::Media => b"m",
            Self::Binding => b"b",
        }
    }
}

pub(super) fn args(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// The active node's changes waiting to be written: `Some(json)` live,
/// `None` ended.
pub(super) struct Outbox {
    pending: HashMap<(Kind, String), Option<String>>,
    /// Redis was unreachable; write everything again when it is back.
    pub resync: bool,
    /// When every session's statistics are written again.
    next_stats: Instant,
}

impl Outbox {
    /// Empty; the first full statistics write is `stats_sync` from `now`.
    pub fn new(now: Instant, stats_sync: Duration) -> Self {
        Self { pending: HashMap::new(), resync: false, next_stats: now + stats_sync }
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Forgets everything (the records belong to the new active).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.resync = false;
    }

    /// The signaling thread's dialog and registration changes.
    pub fn proxy_changes(&mut self, dialogs: Vec<(String, Option<String>)>, bindings: Vec<(String, Option<String>)>) {
        for (id, v) in dialogs {
            self.pending.insert((Kind::Dialog, id), v);
        }
        for (aor, v) in bindings {
            self.pending.insert((Kind::Binding, aor), v);
        }
    }

    /// The relay's changed sessions, and every session when the periodic
    /// statistics write is due.
    pub fn collect_relay(&mut self, relay: &Relay, now: Instant, stats_sync: Duration) {
        for (id, rec) in relay.export_changes() {
            let v = rec.and_then(|r| serde_json::to_string(&r).ok());
            self.pending.insert((Kind::Media, id), v);
        }
        if now >= self.next_stats {
            self.next_stats = now + stats_sync;
            self.all_sessions(relay);
        }
    }

    fn all_sessions(&mut self, relay: &Relay) {
        for r in relay.export_all() {
            if let Ok(v) = serde_json::to_string(&r) {
                self.pending.insert((Kind::Media, r.call_id.clone()), Some(v));
            }
        }
    }

    /// Replaces what is waiting with the whole state: the signaling
    /// thread's `dump` and every relay session.
    pub fn refill(&mut self, dump: Dump, relay: &Relay) {
        self.pending.clear();
        for (id, v) in dump.dialogs {
            self.pending.insert((Kind::Dialog, id), Some(v));
        }
        for (aor, v) in dump.bindings {
            self.pending.insert((Kind::Binding, aor), Some(v));
        }
        let _ = relay.export_changes();
        self.all_sessions(relay);
    }

    /// Writes everything waiting in batches, renewing the lease (`lease` is
    /// its value, `ttl_ms` its time) with each; `reset` first empties the
    /// replicated state. `Ok(false)` when the lease is no longer ours.
    /// What could not be written stays waiting (newer changes win).
    pub fn write(
        &mut self,
        redis: &mut Redis,
        keys: &Keys,
        lease: &[u8],
        ttl_ms: &[u8],
        reset: bool,
        status: &HaStatus,
    ) -> std::io::Result<bool> {
        let mut ops: Vec<((Kind, String), Option<String>)> = self.pending.drain().collect();
        // Dialog records before media records does not matter; keep batches bounded.
        let key_args = [&keys.lease, &keys.dialogs, &keys.media, &keys.log, &keys.bindings];
        let mut first = true;
        loop {
            let take = ops.len().min(BATCH);
            let chunk: Vec<_> = ops.drain(..take).collect();
            let mut cmd: Vec<Vec<u8>> = Vec::with_capacity(3 + 3 * chunk.len());
            cmd.push(lease.to_vec());
            cmd.push(ttl_ms.to_vec());
            cmd.push(if reset && first { b"1".to_vec() } else { b"0".to_vec() });
            for ((k, id), v) in &chunk {
                cmd.push(k.tag().to_vec());
                cmd.push(id.clone().into_bytes());
                cmd.push(v.clone().unwrap_or_default().into_bytes());
            }
            first = false;
            let argv: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
            let keys: Vec<&[u8]> = key_args.iter().map(|k| k.as_slice()).collect();
            match redis.eval(&WRITE, &keys, &argv) {
                Ok(r) => match r {
                    Reply::Int(1) => {
                        status.writes.fetch_add(chunk.len() as u64, Relaxed);
                    }
                    Reply::Int(_) => return Ok(false),
                    other => {
                        status.write_errors.fetch_add(1, Relaxed);
                        tracing::warn!(reply = ?other, "HA: Redis refused a write");
                        for (k, v) in chunk.into_iter().chain(ops.drain(..)) {
                            self.pending.entry(k).or_insert(v);
                        }
                        return Err(std::io::Error::other("write refused"));
                    }
                },
                Err(e) => {
                    status.write_errors.fetch_add(1, Relaxed);
                    // Keep them for later (newer changes win).
                    for (k, v) in chunk.into_iter().chain(ops.drain(..)) {
                        self.pending.entry(k).or_insert(v);
                    }
                    return Err(e);
                }
            }
            if ops.is_empty() {
                return Ok(true);
            }
        }
    }
}

/// The standby's copy of the replicated state and the stream position it
/// reflects.
#[derive(Default)]
pub(super) struct WarmCopy {
    /// Dialog records by Call-ID.
    pub dialogs: HashMap<String, String>,
    /// Media session records by Call-ID.
    pub media: HashMap<String, String>,
    /// Registration records by AOR.
    pub bindings: HashMap<String, String>,
    /// The last stream entry applied; `None` until loaded.
    pub pos: Option<String>,
}

impl WarmCopy {
    /// Loads the hashes and the stream position at once.
    pub fn load(&mut self, redis: &mut Redis, keys: &Keys, status: &HaStatus) -> std::io::Result<()> {
        let r = redis.pipeline(&[
            args(&[b"XREVRANGE", &keys.log, b"+", b"-", b"COUNT", b"1"]),
            args(&[b"HGETALL", &keys.dialogs]),
            args(&[b"HGETALL", &keys.media]),
            args(&[b"HGETALL", &keys.bindings]),
        ])?;
        let pos = r[0].items().first().and_then(|e| e.items().first()).and_then(Reply::as_text);
        let pairs = |rep: &Reply| -> HashMap<String, String> {
            rep.items().chunks(2).filter_map(|kv| Some((kv.first()?.as_text()?, kv.get(1)?.as_text()?))).collect()
        };
        self.dialogs = pairs(&r[1]);
        self.media = pairs(&r[2]);
        self.bindings = pairs(&r[3]);
        self.pos = Some(pos.unwrap_or_else(|| "0-0".into()));
        self.update_gauges(status);
        tracing::info!(dialogs = self.dialogs.len(), sessions = self.media.len(), "HA: warm copy loaded");
        Ok(())
    }

    /// Forgets everything, position included.
    pub fn clear(&mut self, status: &HaStatus) {
        self.dialogs.clear();
        self.media.clear();
        self.bindings.clear();
        self.pos = None;
        self.update_gauges(status);
    }

    fn update_gauges(&self, status: &HaStatus) {
        status.warm_dialogs.store(self.dialogs.len() as u64, Relaxed);
        status.warm_sessions.store(self.media.len() as u64, Relaxed);
    }

    /// Applies new stream entries. Returns how many.
    pub fn read_stream(&mut self, redis: &mut Redis, keys: &Keys, status: &HaStatus) -> std::io::Result<usize> {
        let mut total = 0;
        loop {
            let pos = self.pos.clone().unwrap_or_else(|| "0-0".into());
            let r = redis.cmd(&[b"XREAD", b"COUNT", b"1000", b"STREAMS", &keys.log, pos.as_bytes()])?;
            let entries = r.items().first().and_then(|s| s.items().get(1)).map(Reply::items).unwrap_or_default();
            if entries.is_empty() {
                break;
            }
            for e in entries {
                let Some(id) = e.items().first().and_then(Reply::as_text) else { continue };
                let fields: HashMap<String, String> = e
                    .items()
                    .get(1)
                    .map(Reply::items)
                    .unwrap_or_default()
                    .chunks(2)
                    .filter_map(|kv| Some((kv.first()?.as_text()?, kv.get(1)?.as_text()?)))
                    .collect();
                let (k, cid, v) = (
                    fields.get("k").map_or("", String::as_str),
                    fields.get("id").cloned().unwrap_or_default(),
                    fields.get("v").cloned().unwrap_or_default(),
                );
                let map = match k {
                    "d" => Some(&mut self.dialogs),
                    "m" => Some(&mut self.media),
                    "b" => Some(&mut self.bindings),
                    "reset" => {
                        self.dialogs.clear();
                        self.media.clear();
                        self.bindings.clear();
                        None
                    }
                    _ => None,
                };
                if let Some(map) = map {
                    if v.is_empty() {
                        map.remove(&cid);
                    } else {
                        map.insert(cid, v);
                    }
                }
                self.pos = Some(id);
                total += 1;
            }
            if entries.len() < 1000 {
                break;
            }
        }
        if total > 0 {
            self.update_gauges(status);
        }
        Ok(total)
    }
}

impl Node {
    /// Queues the relay's changes for writing.
    pub(super) fn collect_relay(&mut self, now: Instant) {
        self.outbox.collect_relay(&self.links.relay, now, self.cfg.stats_sync);
    }

    /// Writes the pending changes (renewing the lease with them). `Ok(false)`
    /// when the lease is no longer ours.
    pub(super) fn flush(&mut self, now: Instant, reset: bool) -> std::io::Result<bool> {
        let lease = self.lease.value(&self.cfg.node_id);
        let ttl_ms = self.cfg.lease.as_millis().to_string().into_bytes();
        let result = self.outbox.write(&mut self.redis, &self.keys, &lease, &ttl_ms, reset, &self.status);
        if let Ok(true) = result {
            self.lease.renewed_at = Some(now);
            self.status.set_redis_up(true, &self.cfg.redis);
            if self.status.degraded.swap(false, Relaxed) {
                tracing::info!("HA: replication resumed");
            }
            self.degraded_logged = false;
        }
        result
    }

    /// Refreshes the warm copy: loads it when it is not loaded, else applies
    /// the new stream entries.
    pub(super) fn catch_up(&mut self) -> std::io::Result<()> {
        if self.warm.pos.is_none() {
            self.warm.load(&mut self.redis, &self.keys, &self.status)
        } else {
            self.warm.read_stream(&mut self.redis, &self.keys, &self.status).map(drop)
        }
    }
}
