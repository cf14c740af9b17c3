//! The `#[repr(C)]` keys and values of the maps, laid out exactly like the
//! structs in `src/xsbc.bpf.c`. Sizes are asserted at compile time here and
//! compared with the compiled object's map definitions in the unit tests.
//! (`aya::Pod` for these types is implemented in [`crate::sys`].)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::Error;

/// Key of [`crate::MAP_MEDIA_PORTS`]: a local (destination) address and UDP
/// port that the program steers to the `AF_XDP` sockets. C: `struct media_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MediaKey {
    /// Destination address in network order, IPv4 as IPv4-mapped IPv6. All
    /// zero is the wildcard: the port is steered on every local address.
    pub addr: [u8; 16],
    /// Destination UDP port, host order.
    pub port: u16,
    /// Always 0 (hash keys compare every byte).
    pub pad: u16,
}

/// Value of [`crate::MAP_MEDIA_PORTS`]. C: `struct media_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MediaValue {
    /// Opaque to the program; lets userspace tell whose entry it is.
    pub session_id: u32,
    /// Reserved, 0.
    pub flags: u32,
}

/// Key of [`crate::MAP_BANS`], an LPM trie over source prefixes.
/// C: `struct ban_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BanKey {
    /// Prefix length over `addr`, 0..=128 (an IPv4 /N is N + 96).
    pub prefix_len: u32,
    /// Network order, IPv4 as IPv4-mapped IPv6, bits past the prefix zero.
    pub addr: [u8; 16],
}

/// Value of [`crate::MAP_BANS`]. C: `struct ban_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BanValue {
    /// Opaque to the program; why userspace banned the prefix.
    pub reason: u32,
}

/// Value of [`crate::MAP_RELAY_PORTS`], whose key is a local address in
/// the 16-byte form (`[u8; 16]`, all zero for any address): the relay's
/// media port range there. C: `struct port_range`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// Lowest media port, host order, inclusive.
    pub min: u16,
    /// Highest media port, host order, inclusive.
    pub max: u16,
}

const _: () = {
    assert!(size_of::<PortRange>() == 4);
    assert!(size_of::<MediaKey>() == 20 && align_of::<MediaKey>() == 2);
    assert!(size_of::<MediaValue>() == 8);
    assert!(size_of::<BanKey>() == 20 && align_of::<BanKey>() == 4);
    assert!(size_of::<BanValue>() == 4);
};

/// Bits an IPv4 prefix is shifted by in the IPv4-mapped form.
const V4_MAPPED_BITS: u8 = 96;

/// The 16-byte map form of an address (IPv4 becomes IPv4-mapped).
pub(crate) fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address back from its 16-byte form (IPv4-mapped becomes IPv4).
fn from_addr16(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

impl MediaKey {
    /// The key for packets to `local`. An unspecified address (`0.0.0.0`,
    /// `::`) gives the wildcard key, which matches every local address.
    #[must_use]
    pub fn new(local: SocketAddr) -> Self {
        let addr = if local.ip().is_unspecified() { [0; 16] } else { addr16(local.ip()) };
        Self { addr, port: local.port(), pad: 0 }
    }

    /// Whether this is the any-address key made from `0.0.0.0` or `::`.
    #[must_use]
    pub fn is_wildcard(&self) -> bool {
        self.addr == [0; 16]
    }

    /// The socket address the key stands for (`[::]:port` for the wildcard).
    #[must_use]
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(from_addr16(self.addr), self.port)
    }
}

impl MediaValue {
    /// A value for `session_id` with no flags.
    #[must_use]
    pub const fn new(session_id: u32) -> Self {
        Self { session_id, flags: 0 }
    }
}

impl BanKey {
    /// The key for `addr/prefix_len` (`prefix_len` counted in the address's
    /// own family: at most 32 for IPv4, 128 for IPv6). Bits past the prefix
    /// are cleared, so `192.0.2.7/24` and `192.0.2.0/24` are the same key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPrefix`] when `prefix_len` is longer than the address.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, Error> {
        let (max, offset) = match addr {
            IpAddr::V4(_) => (32, V4_MAPPED_BITS),
            IpAddr::V6(_) => (128, 0),
        };
        if prefix_len > max {
            return Err(Error::InvalidPrefix { addr, prefix_len });
        }
        let bits = u32::from(prefix_len + offset);
        let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
        let masked = u128::from_be_bytes(addr16(addr)) & mask;
        Ok(Self { prefix_len: bits, addr: masked.to_be_bytes() })
    }

    /// The key that matches exactly `addr` (a /32 or /128).
    #[must_use]
    pub fn host(addr: IpAddr) -> Self {
        Self { prefix_len: 128, addr: addr16(addr) }
    }

    /// The prefix back as `(address, prefix length in its own family)`.
    /// Prefixes inside `::ffff:0:0/96` come back as IPv4.
    #[must_use]
    pub fn prefix(&self) -> (IpAddr, u8) {
        let len = u8::try_from(self.prefix_len.min(128)).unwrap_or(128);
        match from_addr16(self.addr) {
            IpAddr::V4(v4) if len >= V4_MAPPED_BITS => (IpAddr::V4(v4), len - V4_MAPPED_BITS),
            IpAddr::V4(v4) => (IpAddr::V6(v4.to_ipv6_mapped()), len),
            IpAddr::V6(v6) => (IpAddr::V6(v6), len),
        }
    }
}

impl From<Ipv4Addr> for BanKey {
    fn from(addr: Ipv4Addr) -> Self {
        Self::host(IpAddr::V4(addr))
    }
}

impl From<Ipv6Addr> for BanKey {
    fn from(addr: Ipv6Addr) -> Self {
        Self::host(IpAddr::V6(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_key_v4_is_v4_mapped_with_host_order_port() {
        let key = MediaKey::new("192.0.2.10:30000".parse().unwrap());
        let mut want = [0u8; 16];
        want[10..].copy_from_slice(&[0xff, 0xff, 192, 0, 2, 10]);
        assert_eq!(key, MediaKey { addr: want, port: 30000, pad: 0 });
        assert_eq!(key.socket_addr(), "192.0.2.10:30000".parse().unwrap());
        assert!(!key.is_wildcard());
    }

    #[test]
    fn media_key_v6_and_wildcards() {
        let key = MediaKey::new("[2001:db8::10]:30002".parse().unwrap());
        assert_eq!(key.addr, "2001:db8::10".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(key.socket_addr(), "[2001:db8::10]:30002".parse().unwrap());
        let any4 = MediaKey::new("0.0.0.0:5000".parse().unwrap());
        let any6 = MediaKey::new("[::]:5000".parse().unwrap());
        assert_eq!(any4, any6);
        assert!(any4.is_wildcard());
        assert_eq!(any4.addr, [0; 16]);
    }

    #[test]
    fn ban_key_maps_v4_prefixes_and_masks_host_bits() {
        let key = BanKey::new("203.0.113.77".parse().unwrap(), 24).unwrap();
        assert_eq!(key.prefix_len, 120);
        assert_eq!(&key.addr[10..], &[0xff, 0xff, 203, 0, 113, 0]);
        assert_eq!(key.prefix(), ("203.0.113.0".parse().unwrap(), 24));
        assert_eq!(
            BanKey::new("198.51.100.66".parse().unwrap(), 32).unwrap(),
            BanKey::from(Ipv4Addr::new(198, 51, 100, 66))
        );
    }

    #[test]
    fn ban_key_v6_prefixes() {
        let key = BanKey::new("2001:db8:bad:1::1".parse().unwrap(), 48).unwrap();
        assert_eq!(key.prefix_len, 48);
        assert_eq!(key.prefix(), ("2001:db8:bad::".parse().unwrap(), 48));
        let all = BanKey::new("::1".parse().unwrap(), 0).unwrap();
        assert_eq!((all.prefix_len, all.addr), (0, [0; 16]));
        let host = BanKey::from("2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(host.prefix_len, 128);
    }

    #[test]
    fn ban_key_rejects_overlong_prefixes() {
        for (addr, len) in [("192.0.2.1", 33), ("2001:db8::1", 129)] {
            let err = BanKey::new(addr.parse().unwrap(), len).unwrap_err();
            assert!(matches!(err, Error::InvalidPrefix { prefix_len, .. } if prefix_len == len), "{err}");
        }
    }
}
