//! Heartbeats: the UDP datagrams the two nodes exchange every check interval,
//! saying their role, whether they reach Redis and their lease token, plus the
//! three messages of a planned handover (`prepare`, `ready`, `go`).
//!
//! [`Heartbeat`] owns the socket and what the peer last said ([`PeerView`]).
//! It lives on the HA thread, which alone reads and writes it; what a message
//! makes the node do is decided by the caller.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;

/// The handover messages.
pub(super) const PREPARE: &str = "xsbc-ha prepare";
pub(super) const READY: &str = "xsbc-ha ready";
pub(super) const GO: &str = "xsbc-ha go";

/// What the peer last said.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerView {
    /// When it said it.
    pub at: Instant,
    /// It holds the lease.
    pub active: bool,
    /// It reaches Redis.
    pub redis_ok: bool,
    /// Its lease token (0: none).
    pub token: u64,
}

/// A message from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Msg {
    /// A heartbeat: role, Redis reachability, lease token.
    State {
        /// It says it is active.
        active: bool,
        /// It reaches Redis.
        redis_ok: bool,
        /// Its lease token.
        token: u64,
    },
    /// Planned handover: install the warm copy and answer `ready`.
    Prepare,
    /// Planned handover: installed, go ahead.
    Ready,
    /// Planned handover: the address is released, take over.
    Go,
}

impl Msg {
    /// Parses a datagram; `None` for anything else.
    pub fn parse(data: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(data);
        let w: Vec<&str> = text.split_whitespace().collect();
        match w.as_slice() {
            ["xsbc-ha", "hb", _node, role, redis, token] => Some(Self::State {
                active: *role == "active",
                redis_ok: *redis == "1",
                token: token.parse().unwrap_or(0),
            }),
            ["xsbc-ha", "prepare"] => Some(Self::Prepare),
            ["xsbc-ha", "ready"] => Some(Self::Ready),
            ["xsbc-ha", "go"] => Some(Self::Go),
            _ => None,
        }
    }
}

/// The heartbeat text of a node.
pub(super) fn state_text(node_id: &str, active: bool, redis_up: bool, token: u64) -> String {
    format!("xsbc-ha hb {node_id} {} {} {token}", if active { "active" } else { "standby" }, u8::from(redis_up))
}

/// The heartbeat socket and the peer's last word.
pub(super) struct Heartbeat {
    sock: UdpSocket,
    peer_addr: SocketAddr,
    /// What the peer last said, if it ever did.
    pub peer: Option<PeerView>,
}

impl Heartbeat {
    /// Binds `local`; the peer is at `peer_addr`.
    pub fn bind(local: SocketAddr, peer_addr: SocketAddr) -> std::io::Result<Self> {
        let std_hb = std::net::UdpSocket::bind(local)?;
        std_hb.set_nonblocking(true)?;
        Ok(Self { sock: UdpSocket::from_std(std_hb), peer_addr, peer: None })
    }

    /// Registers the socket with the HA loop's poll, so the loop wakes when
    /// the peer says something.
    pub fn register(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        registry.register(&mut self.sock, mio::Token(0), mio::Interest::READABLE)
    }

    /// Sends `msg` to the peer (a failure is only logged: the next interval
    /// sends again).
    pub fn send(&self, msg: &str) {
        if let Err(e) = self.sock.send_to(msg.as_bytes(), self.peer_addr) {
            tracing::debug!(error = %e, "HA: heartbeat send failed");
        }
    }

    /// The next message from the peer; `None` when nothing is waiting.
    /// Datagrams from elsewhere are dropped, unknown ones logged.
    pub fn recv(&self) -> Option<Msg> {
        let mut buf = [0u8; 512];
        while let Ok((n, src)) = self.sock.recv_from(&mut buf) {
            if src.ip() != self.peer_addr.ip() {
                continue;
            }
            match Msg::parse(&buf[..n]) {
                Some(m) => return Some(m),
                None => tracing::debug!(%src, "HA: unknown heartbeat message"),
            }
        }
        None
    }

    /// Records a heartbeat received at `now`.
    pub fn heard(&mut self, now: Instant, active: bool, redis_ok: bool, token: u64) {
        self.peer = Some(PeerView { at: now, active, redis_ok, token });
    }

    /// Whether the peer said within `lease` that it is active.
    pub fn peer_active(&self, now: Instant, lease: Duration) -> bool {
        self.peer.is_some_and(|p| p.active && now.saturating_duration_since(p.at) < lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse() {
        let hb = state_text("node-a", true, false, 42);
        assert_eq!(hb, "xsbc-ha hb node-a active 0 42");
        assert_eq!(Msg::parse(hb.as_bytes()), Some(Msg::State { active: true, redis_ok: false, token: 42 }));
        assert_eq!(
            Msg::parse(state_text("b", false, true, 0).as_bytes()),
            Some(Msg::State { active: false, redis_ok: true, token: 0 })
        );
        assert_eq!(Msg::parse(PREPARE.as_bytes()), Some(Msg::Prepare));
        assert_eq!(Msg::parse(READY.as_bytes()), Some(Msg::Ready));
        assert_eq!(Msg::parse(GO.as_bytes()), Some(Msg::Go));
        assert_eq!(Msg::parse(b"xsbc-ha hb a active 1"), None);
        assert_eq!(Msg::parse(b"\xff\xfe"), None);
    }
}
