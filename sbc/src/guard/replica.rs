//! Ban replication for an HA pair: every ban placed or lifted is written
//! to the Redis hash `<key_prefix>:bans` (field `ADDR/LEN`, value a JSON
//! [`BanRecord`] with the absolute Unix expiry), and read back at start
//! and on a takeover, so the node that takes over keeps the bans.
//!
//! A thread of its own (`sbc-bans`) owns the Redis connection: the
//! signaling thread only sends changes over a channel and collects loaded
//! records, so a slow or absent Redis never blocks it. Changes wait while
//! Redis is unreachable (bounded; the newest win) and are written once it
//! is back. Bans are not fenced by the HA lease: either node's bans are
//! worth keeping.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{BanChange, BanRecord};
use crate::ha::redis::{Redis, RedisTarget, Reply};

/// Changes kept while Redis is unreachable, at most.
const PENDING_CAP: usize = 100_000;
/// How long to wait before trying an unreachable Redis again.
const RETRY: Duration = Duration::from_secs(1);

enum Op {
    Change(BanChange),
    Load,
}

/// The signaling thread's end of the ban replication.
pub struct BanReplica {
    tx: Sender<Op>,
    loaded: Receiver<Vec<BanRecord>>,
}

impl BanReplica {
    /// Starts the `sbc-bans` thread writing to the hash `<key_prefix>:bans`
    /// on `redis`; it stops when `shutdown` is set.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(redis: impl Into<RedisTarget>, key_prefix: &str, shutdown: Arc<AtomicBool>) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (loaded_tx, loaded) = std::sync::mpsc::channel();
        let key = format!("{key_prefix}:bans").into_bytes();
        let redis: RedisTarget = redis.into();
        std::thread::Builder::new().name("sbc-bans".into()).spawn(move || {
            Worker { redis: Redis::new(redis, Duration::from_millis(500)), key, pending: VecDeque::new(), load: false }
                .run(&rx, &loaded_tx, &shutdown);
        })?;
        Ok(Self { tx, loaded })
    }

    /// Queues a change for Redis.
    pub fn send(&self, c: BanChange) {
        let _ = self.tx.send(Op::Change(c));
    }

    /// Asks for every replicated ban (the answer comes in [`try_loaded`](Self::try_loaded)).
    pub fn request_load(&self) {
        let _ = self.tx.send(Op::Load);
    }

    /// Records loaded since the last call, if a load finished.
    #[must_use]
    pub fn try_loaded(&self) -> Option<Vec<BanRecord>> {
        let mut out: Option<Vec<BanRecord>> = None;
        while let Ok(v) = self.loaded.try_recv() {
            out.get_or_insert_with(Vec::new).extend(v);
        }
        out
    }
}

struct Worker {
    redis: Redis,
    key: Vec<u8>,
    pending: VecDeque<BanChange>,
    load: bool,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Worker {
    fn run(mut self, rx: &Receiver<Op>, loaded: &Sender<Vec<BanRecord>>, shutdown: &AtomicBool) {
        let mut wait = Duration::from_millis(200);
        let mut failing = false;
        while !shutdown.load(Relaxed) {
            match rx.recv_timeout(wait) {
                Ok(op) => self.take(op),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(op) = rx.try_recv() {
                self.take(op);
            }
            if self.pending.is_empty() && !self.load {
                wait = Duration::from_millis(200);
                continue;
            }
            match self.flush(loaded) {
                Ok(()) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("guard: ban replication resumed");
                    }
                    wait = Duration::from_millis(200);
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, pending = self.pending.len(), "guard: bans not replicated (Redis); retrying every second");
                    }
                    wait = RETRY;
                }
            }
        }
    }

    fn take(&mut self, op: Op) {
        match op {
            Op::Load => self.load = true,
            Op::Change(c) => {
                if self.pending.len() >= PENDING_CAP {
                    self.pending.pop_front();
                }
                self.pending.push_back(c);
            }
        }
    }

    fn flush(&mut self, loaded: &Sender<Vec<BanRecord>>) -> std::io::Result<()> {
        // Newest change per prefix, in order.
        let mut last: HashMap<String, usize> = HashMap::new();
        for (i, c) in self.pending.iter().enumerate() {
            let k = match c {
                BanChange::Put(r) => r.net.clone(),
                BanChange::Del(n) => n.clone(),
            };
            last.insert(k, i);
        }
        let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
        for (i, c) in self.pending.iter().enumerate() {
            match c {
                BanChange::Put(r) if last.get(&r.net) == Some(&i) => {
                    let v = serde_json::to_vec(r).map_err(std::io::Error::other)?;
                    cmds.push(vec![b"HSET".to_vec(), self.key.clone(), r.net.clone().into_bytes(), v]);
                }
                BanChange::Del(n) if last.get(n) == Some(&i) => {
                    cmds.push(vec![b"HDEL".to_vec(), self.key.clone(), n.clone().into_bytes()]);
                }
                _ => {}
            }
        }
        for chunk in cmds.chunks(500) {
            let replies = self.redis.pipeline(chunk)?;
            if let Some(Reply::Error(e)) = replies.iter().find(|r| matches!(r, Reply::Error(_))) {
                return Err(std::io::Error::other(format!("Redis refused a ban write: {e}")));
            }
        }
        self.pending.clear();
        if self.load {
            let recs = self.read_all()?;
            self.load = false;
            let _ = loaded.send(recs);
        }
        Ok(())
    }

    /// Every ban still running; removes the ended ones from Redis.
    fn read_all(&mut self) -> std::io::Result<Vec<BanRecord>> {
        let r = self.redis.cmd(&[b"HGETALL", &self.key])?;
        let now = unix_now();
        let mut out = Vec::new();
        let mut ended = Vec::new();
        for kv in r.items().chunks(2) {
            let (Some(k), Some(v)) = (kv.first().and_then(Reply::as_text), kv.get(1).and_then(Reply::as_text)) else {
                continue;
            };
            match serde_json::from_str::<BanRecord>(&v) {
                Ok(rec) if rec.until > now => out.push(rec),
                _ => ended.push(k),
            }
        }
        if !ended.is_empty() {
            let mut cmd = vec![b"HDEL".to_vec(), self.key.clone()];
            cmd.extend(ended.into_iter().map(String::into_bytes));
            self.redis.pipeline(&[cmd])?;
        }
        tracing::info!(bans = out.len(), "guard: replicated bans loaded from Redis");
        Ok(out)
    }
}
