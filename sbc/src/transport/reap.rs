//! The transport's clean-up pass: connections that overstayed their
//! handshake, message deadline or idle time are closed, and old closed
//! flows are forgotten.

use std::time::Instant;

use super::{Transport, GONE_MEMORY};

impl Transport {
    /// Closes what has overstayed: unfinished handshakes and connects,
    /// idle connections and connections whose output is stalled; forgets
    /// old closed flows.
    pub(super) fn reap(&mut self, now: Instant) {
        let mut timed_out = Vec::new();
        let mut idle = Vec::new();
        let mut late = Vec::new();
        for (t, c) in &self.conns {
            let age = now.saturating_duration_since(c.opened);
            if (c.handshaking() || !c.connected) && age > self.limits.handshake {
                timed_out.push(*t);
            } else if c.msg_started.is_some_and(|s| now.saturating_duration_since(s) > self.limits.message_deadline) {
                late.push(*t);
            } else if c.idle_output() && now.saturating_duration_since(c.last_used) > self.limits.idle {
                idle.push(*t);
            } else if !c.idle_output() && now.saturating_duration_since(c.last_write) > self.limits.idle {
                // The peer takes nothing we send (its window stays shut).
                idle.push(*t);
            }
        }
        for t in timed_out {
            if let Some(c) = self.conns.get(&t) {
                crate::info_limited!(peer = %c.peer, proto = c.proto.via_name(), "closing connection: handshake timed out");
            }
            self.stats.tls_handshake_timeouts += 1;
            self.close(t, now, "connect or TLS handshake timed out");
        }
        for t in late {
            if let Some(c) = self.conns.get(&t) {
                crate::info_limited!(peer = %c.peer, proto = c.proto.via_name(), "closing connection: a message did not arrive complete in time");
            }
            self.stats.deadline_closes += 1;
            self.close(t, now, "a message did not arrive complete within message_deadline");
        }
        for t in idle {
            self.stats.idle_closes += 1;
            self.close(t, now, "idle, or its output stalled");
        }
        if !self.gone.is_empty() {
            self.gone.retain(|_, at| now.saturating_duration_since(*at) < GONE_MEMORY);
        }
    }
}
