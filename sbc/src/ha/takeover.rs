//! Role changes: the standby waiting and taking over (after a failure, or
//! in a planned handover), the active handing over or stepping down.
//!
//! - **Takeover.** When the lease is free and the peer does not say it is
//!   active, the standby takes the lease, installs every session on the
//!   same ports (sockets bound with `IP_FREEBIND`), adds every virtual IP
//!   (one per realm) and announces each (gratuitous ARP or unsolicited NA),
//!   then announces them again a few times.
//! - **Planned handover** (`sbc ctl failover`): the active writes
//!   everything, tells the standby to `prepare` (install the warm copy),
//!   waits for `ready`, removes the addresses, releases the lease and says
//!   `go`; the standby then takes the lease and claims the addresses first.
//! - **Stepping down** ([`Node::release`]): remove the addresses, then forget
//!   every call (they belong to the new active).
//!
//! All of it runs on the HA thread. The proxy is told what to do over the
//! [`ToProxy`] channel (and woken); the relay is called directly.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use media_relay::ha::SessionRecord;

use super::heartbeat::{Msg, GO, PREPARE, READY};
use super::{Node, Role, ToProxy};

impl Node {
    /// The standby's tick: keep the warm copy current, drop a planned
    /// handover that never came, and try for the lease when the peer is not
    /// active.
    pub(super) fn standby_tick(&mut self, now: Instant) {
        if self.warm.pos.is_none() {
            match self.warm.load(&mut self.redis, &self.keys, &self.status) {
                Ok(()) => self.status.set_redis_up(true, &self.cfg.redis),
                Err(e) => {
                    tracing::debug!(error = %e, "HA: loading the warm copy failed");
                    self.status.set_redis_up(false, &self.cfg.redis);
                }
            }
        } else if let Err(e) = self.warm.read_stream(&mut self.redis, &self.keys, &self.status) {
            tracing::debug!(error = %e, "HA: reading the change stream failed");
            self.status.set_redis_up(false, &self.cfg.redis);
            self.warm.pos = None;
        }
        if let Some(at) = self.prepared_at {
            if now.saturating_duration_since(at) > Duration::from_secs(5) {
                tracing::warn!("HA: planned handover did not complete; dropping the prepared sessions");
                self.prepared_at = None;
                let _ = self.links.to_proxy.send(ToProxy::SetActive(false));
                (self.links.wake_proxy)();
                self.links.relay.clear();
            }
        }
        if now >= self.lease.next_acquire {
            self.lease.next_acquire = now + self.cfg.interval;
            if !self.hb.peer_active(now, self.cfg.lease) {
                self.try_acquire(now);
            }
        }
    }

    /// Takes the lease if it is free, and then takes over.
    pub(super) fn try_acquire(&mut self, now: Instant) {
        match self.acquire(false) {
            Ok(0) => {}
            Ok(t) => {
                self.status.set_redis_up(true, &self.cfg.redis);
                self.lease.token = t;
                self.status.token.store(t, Relaxed);
                self.take_over(now);
            }
            Err(e) => {
                tracing::debug!(error = %e, "HA: lease attempt failed");
                self.status.set_redis_up(false, &self.cfg.redis);
            }
        }
    }

    /// Installs the warm copy: media sessions in the relay, dialogs in the
    /// proxy. Returns (sessions, dialogs) installed.
    fn install_warm(&mut self) -> (usize, usize) {
        let mut sessions = 0;
        for (id, text) in &self.warm.media {
            match serde_json::from_str::<SessionRecord>(text) {
                Ok(rec) => match self.links.relay.import(&rec) {
                    Ok(true) => sessions += 1,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(call_id = %id, error = %e, "HA: could not install a media session"),
                },
                Err(e) => tracing::warn!(call_id = %id, error = %e, "HA: media record does not parse"),
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let dialogs: Vec<String> = self.warm.dialogs.values().cloned().collect();
        let bindings: Vec<(String, String)> = self.warm.bindings.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let _ = self.links.to_proxy.send(ToProxy::Import { dialogs, bindings, reply: tx });
        (self.links.wake_proxy)();
        let dialogs = rx.recv_timeout(Duration::from_secs(2)).unwrap_or(0);
        (sessions, dialogs)
    }

    /// Adds every virtual IP, then announces each.
    fn claim_address(&mut self) {
        self.vips.claim();
    }

    /// Planned handover, standby side: install everything, say ready.
    pub(super) fn prepare(&mut self, now: Instant) {
        if let Err(e) = self.catch_up() {
            tracing::warn!(error = %e, "HA: prepare: reading the change stream failed");
        }
        let (s, d) = self.install_warm();
        tracing::info!(sessions = s, dialogs = d, "HA: prepared for a planned handover");
        self.prepared_at = Some(now);
        self.hb.send(READY);
    }

    fn take_over(&mut self, _now: Instant) {
        let t0 = Instant::now();
        // A planned handover installed the sessions already ("prepare"):
        // claim the addresses first, then pick up what changed since.
        let planned = self.prepared_at.take().is_some();
        if planned {
            self.claim_address();
        }
        // The last changes the old active wrote.
        if self.warm.pos.is_none() {
            if let Err(e) = self.warm.load(&mut self.redis, &self.keys, &self.status) {
                tracing::error!(error = %e, "HA: taking over without a warm copy");
            }
        }
        if let Err(e) = self.warm.read_stream(&mut self.redis, &self.keys, &self.status) {
            tracing::warn!(error = %e, "HA: catching up the change stream failed");
        }
        let t_caught_up = Instant::now();
        let (sessions, dialogs) = self.install_warm();
        let t_installed = Instant::now();
        let _ = self.links.to_proxy.send(ToProxy::SetActive(true));
        (self.links.wake_proxy)();
        if !planned {
            self.claim_address();
        }
        let done = Instant::now();
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
        tracing::info!(
            planned,
            catch_up_ms = ms(t0, t_caught_up),
            install_ms = ms(t_caught_up, t_installed),
            total_ms = ms(t0, done),
            "HA: takeover steps"
        );
        self.reannounce =
            vec![done + Duration::from_millis(100), done + Duration::from_millis(500), done + Duration::from_secs(2)];
        let ms = done.saturating_duration_since(t0).as_millis() as u64;
        self.role = Role::Active;
        self.lease.renewed_at = Some(t0);
        self.lease.next_renew = done;
        self.outbox.resync = false;
        self.status.active.store(true, Relaxed);
        self.status.takeovers.fetch_add(1, Relaxed);
        self.status.last_takeover_ms.store(ms, Relaxed);
        self.warm.clear(&self.status);
        // The imported sessions are in Redis already.
        let _ = self.links.relay.export_changes();
        tracing::warn!(token = self.lease.token, sessions, dialogs, takeover_ms = ms, vips = %self.vips.list(), "HA: took over; now active");
        self.send_heartbeat();
    }

    /// Planned handover to the peer.
    pub(super) fn handover(&mut self, now: Instant) -> String {
        if self.role != Role::Active {
            return "error: this node is not active\n".into();
        }
        if self.hb.peer.is_none_or(|p| now.saturating_duration_since(p.at) > self.cfg.lease || !p.redis_ok) {
            return "error: the peer is not heard from or cannot reach Redis\n".into();
        }
        self.collect_relay(now);
        if !matches!(self.flush(now, false), Ok(true)) {
            return "error: cannot write the state to Redis\n".into();
        }
        self.hb.send(PREPARE);
        let t0 = Instant::now();
        let mut ready = false;
        while t0.elapsed() < Duration::from_secs(3) {
            // Keep replicating while the peer installs.
            self.collect_relay(Instant::now());
            let _ = self.flush(Instant::now(), false);
            if self.hb.recv() == Some(Msg::Ready) {
                ready = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if !ready {
            return "error: the peer did not get ready within 3 s; still active\n".into();
        }
        let prepared = t0.elapsed();
        self.collect_relay(Instant::now());
        if !matches!(self.flush(Instant::now(), false), Ok(true)) {
            return "error: cannot write the state to Redis; still active\n".into();
        }
        let t1 = Instant::now();
        self.vips.release();
        self.lease.release(&mut self.redis, &self.keys, &self.cfg.node_id);
        for _ in 0..3 {
            self.hb.send(GO);
        }
        self.become_standby();
        tracing::info!(prepare_ms = prepared.as_millis() as u64, "HA: handed over to the peer (planned)");
        format!(
            "ok: handed over to {} (peer ready after {} ms, addresses released {} ms later)\n",
            self.cfg.peer,
            prepared.as_millis(),
            t1.saturating_duration_since(t0 + prepared).as_millis()
        )
    }

    /// Gives up the addresses and every call (they belong to the new active).
    pub(super) fn release(&mut self, why: &str) {
        self.vips.release();
        tracing::warn!(reason = why, vips = %self.vips.list(), "HA: released the virtual IPs; now standby");
        self.become_standby();
    }

    /// The standby's state, after the addresses are gone: no token, nothing
    /// pending, the proxy and the relay emptied (their calls belong to the
    /// new active), a heartbeat saying so.
    fn become_standby(&mut self) {
        self.role = Role::Standby;
        self.lease.token = 0;
        self.status.token.store(0, Relaxed);
        self.status.active.store(false, Relaxed);
        self.status.degraded.store(false, Relaxed);
        self.status.releases.fetch_add(1, Relaxed);
        self.outbox.clear();
        self.reannounce.clear();
        self.lease.renewed_at = None;
        self.warm.pos = None;
        let _ = self.links.to_proxy.send(ToProxy::SetActive(false));
        (self.links.wake_proxy)();
        self.links.relay.clear();
        let _ = self.links.relay.export_changes();
        self.lease.next_acquire = Instant::now() + self.cfg.lease;
        self.send_heartbeat();
    }
}
