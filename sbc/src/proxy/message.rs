//! MESSAGE store and forward in the call layer (RFC 3428): an out-of-dialog
//! MESSAGE for a user of our domains who is not registered, or routed to
//! trunks that are all DOWN, is stored and answered 202 Accepted. The sbc
//! later delivers it as a UAC, in order per target, when the user
//! registers or a trunk of its route is UP again; it retries on a timeout,
//! 408 or 5xx (backing off), stops on any other final failure, and drops
//! it once its time to live has passed. See `docs/messages.md`.
//!
//! A delivered MESSAGE keeps the From (with its tag), To, Call-ID,
//! Content-Type and body it came with; the CSeq number grows by one per
//! retry so that a retry is never taken for a merged request (RFC 3261
//! §8.2.2.2). Only the active node delivers; each node's store is its own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::core::Core;
use super::routing::{self, Refusal, Target};
use crate::health::State;
use crate::messages::{Kind, LogError, MemoryLog, MessageLog, MessageStore, Outcome, Refused, StoredMessage};
use crate::sip::{Header, Message, Uri};
use crate::txn::{ClientId, ClientRequest, Endpoint, ServerId};

/// The stored messages and their deliveries in progress.
pub(super) struct Mailbox {
    pub(super) store: MessageStore,
    /// Delivery attempt in flight → (message id, queue).
    inflight: HashMap<ClientId, (u64, String)>,
    /// Queues with an attempt in flight (one at a time, for order).
    busy: HashSet<String>,
    /// Per queue: failed attempts of its head and when to try again.
    retry: HashMap<String, (u32, Instant)>,
    /// The first `now` seen and the wall clock then (ms since the epoch):
    /// expiry times are wall-clock, to survive a restart.
    clock: Option<(Instant, u64)>,
}

impl Mailbox {
    /// An empty mailbox over a log in memory.
    pub(super) fn in_memory(cfg: &crate::config::MessagesConfig) -> Self {
        Self::over(MessageStore::empty(Box::new(MemoryLog::default()), cfg.max_messages, cfg.max_per_target))
    }

    fn over(store: MessageStore) -> Self {
        Self { store, inflight: HashMap::new(), busy: HashSet::new(), retry: HashMap::new(), clock: None }
    }

    /// Wall-clock milliseconds at `now`.
    fn wall_ms(&mut self, now: Instant) -> u64 {
        let (base, wall) = *self.clock.get_or_insert_with(|| {
            let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
            (now, u64::try_from(wall).unwrap_or(u64::MAX))
        });
        let since = now.saturating_duration_since(base).as_millis();
        wall.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

/// The queue a MESSAGE for `ruri` waits in.
fn queue_key(kind: Kind, aor: &str) -> String {
    match kind {
        Kind::User => format!("user:{aor}"),
        Kind::Trunk => format!("route:{aor}"),
    }
}

impl Core {
    /// Replaces the message log (a durable spool): the pending set is
    /// what the log replays.
    pub(super) fn set_message_log(&mut self, log: Box<dyn MessageLog>) -> Result<(), LogError> {
        let c = &self.cfg.messages;
        self.mailbox = Mailbox::over(MessageStore::open(log, c.max_messages, c.max_per_target)?);
        self.message_gauge();
        Ok(())
    }

    fn message_gauge(&self) {
        self.metrics.messages.pending.store(self.mailbox.store.len() as u64, Relaxed);
    }

    fn trunk_down(&self, i: Option<usize>) -> bool {
        i.is_some_and(|i| self.trunks.get(i).is_none_or(|t| t.health.state() == State::Down))
    }

    /// Whether a MESSAGE for `ruri` that found no binding is for a user of
    /// ours: one that has registered, or one of the `[auth]` users (any
    /// user part when there is no `[auth]`).
    fn user_of_ours(&self, ruri: &Uri) -> bool {
        let Some(user) = ruri.user.as_deref().filter(|u| !u.is_empty()) else { return false };
        self.location.is_known(&routing::local_aor(&self.cfg, Some(user)))
            || self.auth.as_ref().is_none_or(|a| a.knows(user))
    }

    /// An initial MESSAGE (authenticated like any request) that may have to
    /// wait: stored and answered 202, or refused over a cap. False when it
    /// is routed as usual (its target is reachable, or it is not ours).
    pub(super) fn hold_message(
        &mut self,
        txn: &mut Endpoint,
        key: ServerId,
        msg: &Message,
        ruri: &Uri,
        routed: &Result<Vec<Target>, Refusal>,
        now: Instant,
    ) -> bool {
        if !self.cfg.messages.enabled || !self.active {
            return false;
        }
        let local = self.cfg.is_local_host(&ruri.host, ruri.port);
        let aor = if local {
            routing::local_aor(&self.cfg, ruri.user.as_deref())
        } else {
            crate::location::aor_key(ruri.user.as_deref(), ruri.host.trim_start_matches('[').trim_end_matches(']'))
        };
        // A target reachable again while older messages for it still wait
        // (a delivery being retried): this one queues behind them, in order.
        let queued = |kind| self.mailbox.store.head(&queue_key(kind, &aor)).is_some();
        let kind = match routed {
            Ok(t) if !t.is_empty() && t.iter().all(|t| self.trunk_down(t.trunk)) => Kind::Trunk,
            Ok(t) if local && t.iter().all(|t| t.trunk.is_none()) && queued(Kind::User) => Kind::User,
            Ok(t) if t.iter().all(|t| t.trunk.is_some()) && queued(Kind::Trunk) => Kind::Trunk,
            Err(r) if matches!(r.code, 404 | 480) && local && self.user_of_ours(ruri) => Kind::User,
            _ => return false,
        };
        let stored_ms = self.mailbox.wall_ms(now);
        let ttl_ms = u64::try_from(self.cfg.messages.ttl.as_millis()).unwrap_or(u64::MAX);
        let m = StoredMessage {
            id: 0,
            key: queue_key(kind, &aor),
            kind,
            ruri: ruri.to_string(),
            from: msg.header("from").unwrap_or_default().to_owned(),
            to: msg.header("to").unwrap_or_default().to_owned(),
            call_id: msg.call_id().unwrap_or_default().to_owned(),
            cseq: msg.cseq().map_or(1, |c| c.0),
            content_type: msg.header("content-type").map(str::to_owned),
            stored_ms,
            expires_ms: stored_ms.saturating_add(ttl_ms),
            body: msg.body.clone(),
        };
        let queue = m.key.clone();
        let (code, reason, extra) = match self.mailbox.store.store(m) {
            Ok(id) => {
                self.metrics.messages.stored.fetch_add(1, Relaxed);
                tracing::info!(id, queue, call_id = ?msg.call_id(), "MESSAGE stored until its target is reachable");
                (202, "Accepted", Vec::new())
            }
            Err(e) => {
                self.metrics.messages.refused.fetch_add(1, Relaxed);
                tracing::warn!(queue, error = %e, "MESSAGE not stored");
                match e {
                    Refused::TargetFull => (486, "Busy Here - Too Many Stored Messages", Vec::new()),
                    Refused::Full | Refused::Log(_) => {
                        (503, "Service Unavailable - Message Store Full", vec![Header::new("Retry-After", "60")])
                    }
                }
            }
        };
        self.message_gauge();
        txn.reply(key, code, reason, extra, now);
        if code == 202 {
            self.pump_messages(txn, &queue, now);
        }
        true
    }

    /// A binding was added for `aor`: its stored messages go now.
    pub(super) fn messages_registered(&mut self, txn: &mut Endpoint, aor: &str, now: Instant) {
        let key = queue_key(Kind::User, aor);
        self.mailbox.retry.remove(&key);
        self.pump_messages(txn, &key, now);
    }

    /// Once a second: expire what is due, then try every queue.
    pub(super) fn messages_tick(&mut self, txn: &mut Endpoint, now: Instant) {
        if !self.active {
            return;
        }
        let wall = self.mailbox.wall_ms(now);
        let in_flight: HashSet<u64> = self.mailbox.inflight.values().map(|(id, _)| *id).collect();
        for id in self.mailbox.store.expired(wall) {
            if !in_flight.contains(&id) {
                self.message_done(id, Outcome::Expired);
            }
        }
        let keys = self.mailbox.store.keys();
        // A queue emptied by expiry leaves no retry state behind (the keys
        // come from Request-URIs: they must not pile up).
        if self.mailbox.retry.len() > keys.len() {
            let live: HashSet<&String> = keys.iter().collect();
            self.mailbox.retry.retain(|k, _| live.contains(k));
        }
        for key in keys {
            self.pump_messages(txn, &key, now);
        }
    }

    fn message_done(&mut self, id: u64, outcome: Outcome) {
        let Some(m) = self.mailbox.store.finish(id, outcome) else { return };
        let counter = match outcome {
            Outcome::Delivered => &self.metrics.messages.delivered,
            Outcome::Expired => &self.metrics.messages.expired,
            Outcome::Failed => &self.metrics.messages.failed,
        };
        counter.fetch_add(1, Relaxed);
        tracing::info!(id, queue = m.key, call_id = m.call_id, ?outcome, "stored MESSAGE done");
        self.message_gauge();
    }

    /// Where a stored message can go now: a binding of its user, or (for a
    /// trunk route) the first target that is a binding or an UP trunk.
    fn delivery_target(&self, m: &StoredMessage, now: Instant) -> Option<Target> {
        let ruri = Uri::parse(&m.ruri).ok()?;
        let targets = self.expand_dns(routing::route(&self.cfg, &self.location, &ruri, m.id, now).ok()?, m.id, now);
        targets.into_iter().find(|t| match m.kind {
            Kind::User => t.trunk.is_none(),
            Kind::Trunk => !self.trunk_down(t.trunk),
        })
    }

    /// Sends the head of queue `key` when nothing of it is in flight, its
    /// retry time has come and its target is reachable. Expired heads go.
    fn pump_messages(&mut self, txn: &mut Endpoint, key: &str, now: Instant) {
        if self.mailbox.busy.contains(key) || self.mailbox.retry.get(key).is_some_and(|(_, at)| *at > now) {
            return;
        }
        let wall = self.mailbox.wall_ms(now);
        let m = loop {
            let Some(m) = self.mailbox.store.head(key).cloned() else { return };
            if m.expires_ms > wall {
                break m;
            }
            self.message_done(m.id, Outcome::Expired);
        };
        let Some(target) = self.delivery_target(&m, now) else { return };
        let attempts = self.mailbox.retry.get(key).map_or(0, |r| r.0);
        let Some(request) = self.delivery_request(txn, &m, &target, attempts) else {
            tracing::warn!(id = m.id, "stored MESSAGE does not make a request; dropped");
            self.message_done(m.id, Outcome::Failed);
            return;
        };
        let c = ClientRequest {
            request,
            dest: target.dest,
            proto: target.proto,
            realm: target.realm,
            owner: None,
            timeout: None,
        };
        if let Some(id) = txn.start_client(c, now) {
            tracing::info!(id = m.id, queue = key, target = %target.label, dest = %target.dest, attempt = attempts + 1, "delivering a stored MESSAGE");
            self.mailbox.inflight.insert(id, (m.id, key.to_owned()));
            self.mailbox.busy.insert(key.to_owned());
        }
    }

    /// The MESSAGE we send for `m` to `target` as a UAC.
    fn delivery_request(
        &self,
        txn: &mut Endpoint,
        m: &StoredMessage,
        target: &Target,
        attempts: u32,
    ) -> Option<Message> {
        let me = self.me(target.realm).hostport_for(target.proto);
        let branch = txn.new_branch();
        let ruri = if target.uri.is_empty() { m.ruri.as_str() } else { target.uri.as_str() };
        let ctype = m.content_type.as_ref().map(|c| format!("Content-Type: {c}\r\n")).unwrap_or_default();
        let text = format!(
            "MESSAGE {ruri} SIP/2.0\r\nVia: SIP/2.0/{} {me};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} MESSAGE\r\n{ctype}Content-Length: 0\r\n\r\n",
            target.proto.via_name(),
            m.from,
            m.to,
            m.call_id,
            m.cseq.saturating_add(attempts),
        );
        let mut msg = Message::parse(text.as_bytes()).ok()?;
        msg.set_body(m.body.clone());
        Some(msg)
    }

    /// A response to (`Some(code)`), or the end without one (`None`) of, a
    /// client transaction. True when it was a delivery of ours.
    pub(super) fn on_message_result(
        &mut self,
        txn: &mut Endpoint,
        id: ClientId,
        code: Option<u16>,
        now: Instant,
    ) -> bool {
        if code.is_some_and(|c| c < 200) {
            return self.mailbox.inflight.contains_key(&id);
        }
        let Some((mid, key)) = self.mailbox.inflight.remove(&id) else { return false };
        self.mailbox.busy.remove(&key);
        match code {
            Some(c) if (200..300).contains(&c) => {
                self.mailbox.retry.remove(&key);
                self.message_done(mid, Outcome::Delivered);
            }
            Some(c) if c != 408 && !(500..600).contains(&c) => {
                tracing::info!(id = mid, code = c, "stored MESSAGE refused by its target; not retried");
                self.mailbox.retry.remove(&key);
                self.message_done(mid, Outcome::Failed);
            }
            _ => {
                let c = &self.cfg.messages;
                let attempts = self.mailbox.retry.get(&key).map_or(0, |r| r.0) + 1;
                let backoff = backoff(c.retry_min, c.retry_max, attempts);
                tracing::info!(
                    id = mid,
                    ?code,
                    attempts,
                    retry_in_s = backoff.as_secs(),
                    "stored MESSAGE not delivered; will retry"
                );
                self.metrics.messages.retries.fetch_add(1, Relaxed);
                self.mailbox.retry.insert(key.clone(), (attempts, now + backoff));
                self.timers.push(std::cmp::Reverse((now + backoff, super::core::Wake::Tick)));
                return true;
            }
        }
        self.pump_messages(txn, &key, now);
        true
    }
}

/// How long until the retry after `attempts` failed attempts: `min`,
/// doubling, at most `max`.
fn backoff(min: Duration, max: Duration, attempts: u32) -> Duration {
    min.saturating_mul(1 << (attempts.max(1) - 1).min(20)).min(max)
}
