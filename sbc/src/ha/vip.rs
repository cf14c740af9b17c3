//! The virtual IP: adding it to and removing it from the interface, and
//! announcing the move (gratuitous ARP for IPv4, an unsolicited neighbour
//! advertisement for IPv6) so the neighbours' caches point at this node at
//! once instead of when their entries expire.
//!
//! Addresses are changed with iproute2's `ip` (always present where the sbc
//! runs); the announcements are built here and sent on the interface.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;

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

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("running `ip`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

impl Vip {
    fn cidr(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }

    /// Whether the interface holds the address now.
    #[must_use]
    pub fn held(&self) -> bool {
        ip(&["-o", "addr", "show", "dev", &self.dev])
            .is_ok_and(|s| s.split_whitespace().any(|w| w.split('/').next() == Some(&self.addr.to_string())))
    }

    /// Adds the address (no duplicate address detection for IPv6: the pair
    /// guarantees uniqueness through the lease).
    ///
    /// # Errors
    /// What `ip` said.
    pub fn add(&self) -> Result<(), String> {
        let cidr = self.cidr();
        let mut args = vec!["addr", "add", cidr.as_str(), "dev", self.dev.as_str()];
        if self.addr.is_ipv6() {
            args.push("nodad");
        }
        match ip(&args) {
            Ok(_) => Ok(()),
            Err(e) if e.contains("File exists") => Ok(()),
            Err(e) => Err(format!("adding {cidr} to {}: {e}", self.dev)),
        }
    }

    /// Removes the address; `Ok(false)` when it was not there.
    ///
    /// # Errors
    /// What `ip` said.
    pub fn remove(&self) -> Result<bool, String> {
        let cidr = self.cidr();
        match ip(&["addr", "del", cidr.as_str(), "dev", self.dev.as_str()]) {
            Ok(_) => Ok(true),
            Err(e) if e.contains("Cannot assign") || e.contains("not found") => Ok(false),
            Err(e) => Err(format!("removing {cidr} from {}: {e}", self.dev)),
        }
    }
}

/// Sends the announcements. Its packet socket is opened once: opening and
/// closing one waits for an RCU grace period in the kernel (tens of
/// milliseconds), which would add to every takeover.
pub struct Announcer {
    vip: Vip,
    packet: Option<std::os::fd::OwnedFd>,
}

impl Announcer {
    /// An announcer for `vip`; for IPv4 it opens its packet socket now.
    ///
    /// # Errors
    /// When the packet socket cannot be opened (no `CAP_NET_RAW`).
    pub fn new(vip: Vip) -> io::Result<Self> {
        let packet = if vip.addr.is_ipv4() { Some(packet_socket()?) } else { None };
        Ok(Self { vip, packet })
    }

    /// Tells the link that the address is here now.
    ///
    /// # Errors
    /// Socket errors.
    pub fn announce(&self) -> io::Result<()> {
        let mac = mac_of(&self.vip.dev)?;
        match (self.vip.addr, &self.packet) {
            (IpAddr::V4(a), Some(fd)) => send_garp(fd, &self.vip.dev, mac, a),
            (IpAddr::V4(a), None) => send_garp(&packet_socket()?, &self.vip.dev, mac, a),
            (IpAddr::V6(a), _) => send_unsolicited_na(&self.vip.dev, mac, a),
        }
    }
}

/// A send-only packet socket (protocol 0: it receives nothing).
fn packet_socket() -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain socket(2) call; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
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

fn ifindex(dev: &str) -> io::Result<u32> {
    sysfs(dev, "ifindex")?.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad ifindex"))
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

fn send_garp(owned: &std::os::fd::OwnedFd, dev: &str, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
    let index = i32::try_from(ifindex(dev)?).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "ifindex"))?;
    let proto = 0x0806u16.to_be();
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for op in [1u16, 2] {
        let frame = garp_frame(mac, ip, op);
        // SAFETY: the buffer and the address are valid for the given lengths
        // for the duration of the call.
        let n = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(owned),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::addr_of!(sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
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
    s.set_multicast_if_v6(ifindex(dev)?)?;
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
