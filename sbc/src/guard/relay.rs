//! The embedded media relay as the guard's enforcer: on the AF_XDP datapath
//! a ban goes into the XDP program's `bans` map (the attacker's packets die
//! in the driver), and the relay's media-flood reports become bans. On the
//! socket datapath `xdp_ban` does nothing and the guard's own list, checked
//! before parsing, is the only enforcement.

use std::net::IpAddr;

use media_relay::config::BanPrefix;
use media_relay::relay::Relay;

impl super::BanEnforcer for Relay {
    fn enforce(&self, p: &BanPrefix) -> bool {
        self.xdp_ban(p).unwrap_or_else(|e| {
            crate::warn_limited!(prefix = %p, error = %e, "guard: ban not installed in XDP");
            false
        })
    }

    fn lift(&self, p: &BanPrefix) {
        if let Err(e) = self.xdp_unban(p) {
            crate::warn_limited!(prefix = %p, error = %e, "guard: ban not removed from XDP");
        }
    }

    fn flood_sources(&self) -> Vec<IpAddr> {
        self.take_flood_sources()
    }
}
