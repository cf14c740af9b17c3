//! The virtual IPs: adding them to and removing them from their interfaces,
//! and announcing the move (gratuitous ARP for IPv4, an unsolicited
//! neighbour advertisement for IPv6) so the neighbours' caches point at this
//! node at once instead of when their entries expire. A pair bordering
//! several realms holds one address per realm; [`VipSet`] moves them
//! together.
//!
//! Addresses are changed over rtnetlink (`RTM_NEWADDR` / `RTM_DELADDR`, in
//! `crate::sys`); the announcements are built here and sent on the
//! interface. Only the HA thread calls into this module.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::Error;
use crate::sys;

/// An address with its prefix on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// Interface name.
    pub dev: String,
}

impl Vip {
    fn ifindex(&self) -> Result<u32, Error> {
        sys::if_index(&self.dev).map_err(|source| Error::Interface { dev: self.dev.clone(), source })
    }

    /// Whether the interface holds the address now.
    #[must_use]
    pub fn held(&self) -> bool {
        sys::if_index(&self.dev).and_then(|i| sys::addresses(i, self.addr)).is_ok_and(|held| held.contains(&self.addr))
    }

    /// Adds the address (no duplicate address detection for IPv6: the pair
    /// guarantees uniqueness through the lease). Present already is fine.
    ///
    /// # Errors
    /// No such interface, or what the kernel said.
    pub fn add(&self) -> Result<(), Error> {
        match sys::address_add(self.ifindex()?, self.addr, self.prefix, self.addr.is_ipv6()) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(source) => Err(Error::VipAdd { addr: self.addr, prefix: self.prefix, dev: self.dev.clone(), source }),
        }
    }

    /// Removes the address; `Ok(false)` when it was not there.
    ///
    /// # Errors
    /// No such interface, or what the kernel said.
    pub fn remove(&self) -> Result<bool, Error> {
        match sys::address_del(self.ifindex()?, self.addr, self.prefix) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(false),
            Err(source) => {
                Err(Error::VipRemove { addr: self.addr, prefix: self.prefix, dev: self.dev.clone(), source })
            }
        }
    }
}

/// Sends the announcements. Its packet socket is opened once: opening and
/// closing one waits for an RCU grace period in the kernel (tens of
/// milliseconds), which would add to every takeover.
pub struct Announcer {
    vip: Vip,
    packet: Option<sys::PacketSocket>,
}

impl Announcer {
    /// An announcer for `vip`; for IPv4 it opens its packet socket now.
    ///
    /// # Errors
    /// When the packet socket cannot be opened (no `CAP_NET_RAW`).
    pub fn new(vip: Vip) -> io::Result<Self> {
        let packet = if vip.addr.is_ipv4() { Some(sys::PacketSocket::open()?) } else { None };
        Ok(Self { vip, packet })
    }

    /// Tells the link that the address is here now.
    ///
    /// # Errors
    /// Socket errors.
    pub fn announce(&self) -> io::Result<()> {
        let mac = mac_of(&self.vip.dev)?;
        match (self.vip.addr, &self.packet) {
            (IpAddr::V4(a), Some(s)) => send_garp(s, &self.vip.dev, mac, a),
            (IpAddr::V4(a), None) => send_garp(&sys::PacketSocket::open()?, &self.vip.dev, mac, a),
            (IpAddr::V6(a), _) => send_unsolicited_na(&self.vip.dev, mac, a),
        }
    }
}

/// Every virtual IP of the pair (the first realm's, then the others'),
/// each with its announcer. They are claimed, announced and released
/// together: a node holds all of them or none.
pub struct VipSet {
    entries: Vec<(Vip, Announcer)>,
}

impl VipSet {
    /// A set for `vips`; opens each announcer's socket now.
    ///
    /// # Errors
    /// When a packet socket cannot be opened (no `CAP_NET_RAW`).
    pub fn new(vips: impl IntoIterator<Item = Vip>) -> io::Result<Self> {
        let entries = vips.into_iter().map(|v| Ok((v.clone(), Announcer::new(v)?))).collect::<io::Result<_>>()?;
        Ok(Self { entries })
    }

    /// The addresses, in configuration order.
    pub fn vips(&self) -> impl Iterator<Item = &Vip> {
        self.entries.iter().map(|(v, _)| v)
    }

    /// Adds every address, then announces every one. Failures are logged
    /// and the rest still go on.
    pub fn claim(&self) {
        for (v, _) in &self.entries {
            if let Err(e) = v.add() {
                tracing::error!("HA: {e}");
            }
        }
        self.announce();
    }

    /// Announces every address again.
    pub fn announce(&self) {
        for (v, a) in &self.entries {
            if let Err(e) = a.announce() {
                tracing::warn!(vip = %v.addr, dev = %v.dev, error = %e, "HA: announcing the virtual IP failed");
            }
        }
    }

    /// Removes every address; returns the ones that were there. Failures
    /// are logged and the rest still go.
    pub fn release(&self) -> Vec<IpAddr> {
        let mut removed = Vec::new();
        for (v, _) in &self.entries {
            match v.remove() {
                Ok(true) => removed.push(v.addr),
                Ok(false) => {}
                Err(e) => tracing::error!("HA: {e}"),
            }
        }
        removed
    }

    /// `ADDR held` or `ADDR not held` for each address, for `sbc ctl ha`.
    #[must_use]
    pub fn describe(&self) -> String {
        let words: Vec<String> = self
            .entries
            .iter()
            .map(|(v, _)| format!("{} {}", v.addr, if v.held() { "held" } else { "not held" }))
            .collect();
        words.join(", ")
    }

    /// The addresses as one log field, e.g. `10.0.0.100/24 on eth0, 192.0.2.10/24 on eth1`.
    #[must_use]
    pub fn list(&self) -> String {
        list(self.vips())
    }
}

/// Addresses as one text, e.g. `10.0.0.100/24 on eth0, 192.0.2.10/24 on eth1`.
#[must_use]
pub fn list<'a>(vips: impl IntoIterator<Item = &'a Vip>) -> String {
    let words: Vec<String> = vips.into_iter().map(|v| format!("{}/{} on {}", v.addr, v.prefix, v.dev)).collect();
    words.join(", ")
}

fn sysfs(dev: &str, file: &str) -> io::Result<String> {
    if dev.contains('/') || dev.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    Ok(std::fs::read_to_string(format!("/sys/class/net/{dev}/{file}"))?.trim().to_owned())
}

/// The interface's MAC address.
///
/// # Errors
/// The interface does not exist or has no Ethernet address.
pub fn mac_of(dev: &str) -> io::Result<[u8; 6]> {
    let text = sysfs(dev, "address")?;
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short MAC"))?;
        *b = u8::from_str_radix(p, 16).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad MAC"))?;
    }
    Ok(mac)
}

/// A gratuitous ARP frame: an ARP request (`op` 1) or reply (`op` 2) whose
/// sender and target address are both `ip`, broadcast.
#[must_use]
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr, op: u16) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    if op == 2 {
        f[32..38].copy_from_slice(&[0xff; 6]);
    }
    f[38..42].copy_from_slice(&ip.octets());
    f
}

fn send_garp(socket: &sys::PacketSocket, dev: &str, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
    let index = sys::if_index(dev)?;
    for op in [1u16, 2] {
        socket.send_broadcast(index, 0x0806, &garp_frame(mac, ip, op))?;
    }
    Ok(())
}

/// An ICMPv6 neighbour advertisement for `target` with the override flag
/// and the target link-layer address option (the kernel fills the checksum).
#[must_use]
pub fn na_message(mac: [u8; 6], target: Ipv6Addr) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = 136;
    m[4] = 0x20; // Override
    m[8..24].copy_from_slice(&target.octets());
    m[24] = 2; // target link-layer address
    m[25] = 1; // 8 octets
    m[26..32].copy_from_slice(&mac);
    m
}

fn send_unsolicited_na(dev: &str, mac: [u8; 6], target: Ipv6Addr) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.bind_device(Some(dev.as_bytes()))?;
    s.set_multicast_hops_v6(255)?;
    s.set_multicast_if_v6(sys::if_index(dev)?)?;
    s.bind(&SocketAddr::new(IpAddr::V6(target), 0).into())?;
    let all_nodes: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    s.send_to(&na_message(mac, target), &SocketAddr::new(IpAddr::V6(all_nodes), 0).into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_frame_layout() {
        let mac = [2, 0, 0, 0, 0, 9];
        let f = garp_frame(mac, Ipv4Addr::new(10, 0, 0, 100), 1);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[28..32], &[10, 0, 0, 100], "sender IP");
        assert_eq!(&f[38..42], &[10, 0, 0, 100], "target IP equals sender IP");
        assert_eq!(garp_frame(mac, Ipv4Addr::new(10, 0, 0, 100), 2)[21], 2);
    }

    #[test]
    fn na_layout() {
        let t: Ipv6Addr = "fd00::100".parse().unwrap();
        let m = na_message([2, 0, 0, 0, 0, 9], t);
        assert_eq!(m[0], 136);
        assert_eq!(m[4] & 0x20, 0x20);
        assert_eq!(&m[8..24], &t.octets());
        assert_eq!(&m[26..32], &[2, 0, 0, 0, 0, 9]);
    }
}
