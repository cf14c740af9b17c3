//! One typed wrapper per map of the program (the counters are in
//! `counters.rs`). Each takes its map out of a loaded [`Ebpf`] with `take`,
//! or wraps an aya map opened some other way (`new`, e.g. a pinned map).

use std::{
    borrow::{Borrow, BorrowMut},
    net::{IpAddr, SocketAddr},
    os::fd::AsFd,
};

use aya::{
    maps::{lpm_trie::Key, HashMap, LpmTrie, Map, MapData, XskMap},
    Ebpf,
};

use crate::{
    error::is_not_found, types::addr16, BanKey, BanValue, Error, MediaKey, MediaValue, PortRange, MAP_BANS,
    MAP_MEDIA_PORTS, MAP_RELAY_PORTS, MAP_SIP_PORTS, MAP_XSKS,
};

pub(crate) fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, Error> {
    ebpf.take_map(name).ok_or(Error::MissingMap(name))
}

/// `Ok(true)` if removed, `Ok(false)` if there was nothing to remove.
fn removed(result: Result<(), aya::maps::MapError>, map: &'static str) -> Result<bool, Error> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(Error::map("remove", map)(e)),
    }
}

/// `Ok(None)` if the key is absent.
fn found<V>(result: Result<V, aya::maps::MapError>, map: &'static str) -> Result<Option<V>, Error> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(Error::map("get", map)(e)),
    }
}

/// The local addresses and ports steered to `AF_XDP` as media
/// ([`crate::MAP_MEDIA_PORTS`]). Written by whoever owns the session table;
/// an entry goes in before the SDP that advertises it is sent.
pub struct MediaPorts<T>(HashMap<T, MediaKey, MediaValue>);

impl MediaPorts<MapData> {
    /// Takes the map out of a loaded object.
    ///
    /// # Errors
    ///
    /// [`Error::MissingMap`] or [`Error::Map`] if it is missing or mistyped.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        let map = take_map(ebpf, MAP_MEDIA_PORTS)?;
        HashMap::try_from(map).map(Self).map_err(Error::map("open", MAP_MEDIA_PORTS))
    }
}

impl<T: Borrow<MapData>> MediaPorts<T> {
    /// Wraps an already opened map.
    pub const fn new(map: HashMap<T, MediaKey, MediaValue>) -> Self {
        Self(map)
    }

    /// The entry for `local` exactly (no wildcard fallback), if any.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] if the lookup fails for another reason than absence.
    pub fn get(&self, local: SocketAddr) -> Result<Option<MediaValue>, Error> {
        found(self.0.get(&MediaKey::new(local), 0), MAP_MEDIA_PORTS)
    }
}

impl<T: BorrowMut<MapData>> MediaPorts<T> {
    /// Steers UDP to `local` (`0.0.0.0:port` or `[::]:port`: on every local
    /// address) to `AF_XDP`. Replaces an existing entry.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] if the kernel refuses (e.g. the map is full).
    pub fn insert(&mut self, local: SocketAddr, value: MediaValue) -> Result<(), Error> {
        self.0.insert(MediaKey::new(local), value, 0).map_err(Error::map("insert", MAP_MEDIA_PORTS))
    }

    /// Stops steering `local`; `Ok(false)` if it was not steered.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] if the kernel refuses.
    pub fn remove(&mut self, local: SocketAddr) -> Result<bool, Error> {
        removed(self.0.remove(&MediaKey::new(local)), MAP_MEDIA_PORTS)
    }
}

/// Banned source prefixes ([`crate::MAP_BANS`]): every IPv4/IPv6 packet from
/// them is dropped, whatever its protocol.
pub struct Bans<T>(LpmTrie<T, [u8; 16], BanValue>);

fn trie_key(key: BanKey) -> Key<[u8; 16]> {
    Key::new(key.prefix_len, key.addr)
}

impl Bans<MapData> {
    /// Takes the map out of a loaded object.
    ///
    /// # Errors
    ///
    /// [`Error::MissingMap`] or [`Error::Map`] if it is missing or mistyped.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        let map = take_map(ebpf, MAP_BANS)?;
        LpmTrie::try_from(map).map(Self).map_err(Error::map("open", MAP_BANS))
    }
}

impl<T: Borrow<MapData>> Bans<T> {
    /// Wraps an already opened map.
    pub const fn new(map: LpmTrie<T, [u8; 16], BanValue>) -> Self {
        Self(map)
    }

    /// The value of the longest banned prefix containing `addr`, if any:
    /// the same lookup the program does.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] if the lookup fails for another reason than absence.
    pub fn lookup(&self, addr: IpAddr) -> Result<Option<BanValue>, Error> {
        found(self.0.get(&trie_key(BanKey::host(addr)), 0), MAP_BANS)
    }
}

impl<T: BorrowMut<MapData>> Bans<T> {
    /// Bans `addr/prefix_len` (prefix in the address's own family, e.g.
    /// `(203.0.113.0, 24)`). Replaces the value of an existing ban.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPrefix`] for a prefix longer than the address,
    /// [`Error::Map`] if the kernel refuses (e.g. the map is full).
    pub fn ban(&mut self, addr: IpAddr, prefix_len: u8, value: BanValue) -> Result<(), Error> {
        let key = BanKey::new(addr, prefix_len)?;
        self.0.insert(&trie_key(key), value, 0).map_err(Error::map("insert", MAP_BANS))
    }

    /// Lifts exactly the ban `addr/prefix_len`; `Ok(false)` if there was none.
    ///
    /// # Errors
    ///
    /// As for [`Bans::ban`].
    pub fn unban(&mut self, addr: IpAddr, prefix_len: u8) -> Result<bool, Error> {
        let key = BanKey::new(addr, prefix_len)?;
        removed(self.0.remove(&trie_key(key)), MAP_BANS)
    }
}

/// The UDP ports steered to `AF_XDP` as SIP, on every local address
/// ([`crate::MAP_SIP_PORTS`]).
pub struct SipPorts<T>(HashMap<T, u16, u32>);

impl SipPorts<MapData> {
    /// Takes the map out of a loaded object.
    ///
    /// # Errors
    ///
    /// [`Error::MissingMap`] or [`Error::Map`] if it is missing or mistyped.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        let map = take_map(ebpf, MAP_SIP_PORTS)?;
        HashMap::try_from(map).map(Self).map_err(Error::map("open", MAP_SIP_PORTS))
    }
}

impl<T: Borrow<MapData>> SipPorts<T> {
    /// Wraps an already opened map.
    pub const fn new(map: HashMap<T, u16, u32>) -> Self {
        Self(map)
    }

    /// Whether `port` is steered.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] if the lookup fails for another reason than absence.
    pub fn contains(&self, port: u16) -> Result<bool, Error> {
        found(self.0.get(&port, 0), MAP_SIP_PORTS).map(|v| v.is_some())
    }
}

impl<T: BorrowMut<MapData>> SipPorts<T> {
    /// Steers UDP to `port` to `AF_XDP` as SIP.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] if the kernel refuses (the map holds 16 ports).
    pub fn add(&mut self, port: u16) -> Result<(), Error> {
        self.0.insert(port, 0, 0).map_err(Error::map("insert", MAP_SIP_PORTS))
    }

    /// Stops steering `port`; `Ok(false)` if it was not steered.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] if the kernel refuses.
    pub fn remove(&mut self, port: u16) -> Result<bool, Error> {
        removed(self.0.remove(&port), MAP_SIP_PORTS)
    }
}

/// The relay's media port range on each local address
/// ([`crate::MAP_RELAY_PORTS`]): UDP to a port of the range that is not in
/// [`MediaPorts`] has no session and is dropped
/// ([`crate::Counter::DroppedNoSession`]).
pub struct RelayPorts<T>(HashMap<T, [u8; 16], PortRange>);

/// The map key of `local`: all zero for an unspecified address (any address).
fn relay_key(local: IpAddr) -> [u8; 16] {
    if local.is_unspecified() {
        [0; 16]
    } else {
        addr16(local)
    }
}

impl RelayPorts<MapData> {
    /// Takes the map out of a loaded object.
    ///
    /// # Errors
    ///
    /// [`Error::MissingMap`] or [`Error::Map`] if it is missing or mistyped.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        let map = take_map(ebpf, MAP_RELAY_PORTS)?;
        HashMap::try_from(map).map(Self).map_err(Error::map("open", MAP_RELAY_PORTS))
    }
}

impl<T: Borrow<MapData>> RelayPorts<T> {
    /// Wraps an already opened map.
    pub const fn new(map: HashMap<T, [u8; 16], PortRange>) -> Self {
        Self(map)
    }

    /// The range on `local` exactly (no any-address fallback), if any.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] if the lookup fails for another reason than absence.
    pub fn get(&self, local: IpAddr) -> Result<Option<PortRange>, Error> {
        found(self.0.get(&relay_key(local), 0), MAP_RELAY_PORTS)
    }
}

impl<T: BorrowMut<MapData>> RelayPorts<T> {
    /// Sets the media port range on `local` (`0.0.0.0` or `::`: on every
    /// address). Replaces an existing range.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] if the kernel refuses (the map holds 64 addresses).
    pub fn set(&mut self, local: IpAddr, range: PortRange) -> Result<(), Error> {
        self.0.insert(relay_key(local), range, 0).map_err(Error::map("insert", MAP_RELAY_PORTS))
    }

    /// Removes the range on `local`; `Ok(false)` if there was none.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] if the kernel refuses.
    pub fn remove(&mut self, local: IpAddr) -> Result<bool, Error> {
        removed(self.0.remove(&relay_key(local)), MAP_RELAY_PORTS)
    }
}

/// The `AF_XDP` socket of each rx queue ([`crate::MAP_XSKS`]). A steered
/// packet on a queue with no socket here goes to the kernel and counts as
/// [`crate::Counter::RedirectFailed`].
pub struct Xsks<T>(XskMap<T>);

impl Xsks<MapData> {
    /// Takes the map out of a loaded object.
    ///
    /// # Errors
    ///
    /// [`Error::MissingMap`] or [`Error::Map`] if it is missing or mistyped.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        let map = take_map(ebpf, MAP_XSKS)?;
        XskMap::try_from(map).map(Self).map_err(Error::map("open", MAP_XSKS))
    }
}

impl<T: Borrow<MapData>> Xsks<T> {
    /// Wraps an already opened map.
    pub const fn new(map: XskMap<T>) -> Self {
        Self(map)
    }

    /// How many queues the map has room for (64 unless changed at load
    /// with `EbpfLoader::map_max_entries`).
    pub fn len(&self) -> u32 {
        self.0.len()
    }

    /// Whether the map has no room at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: BorrowMut<MapData>> Xsks<T> {
    /// Makes `socket` (an `AF_XDP` socket bound to `queue`) receive the
    /// packets steered on rx queue `queue`.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] if `queue` is out of range or `socket` is not `AF_XDP`.
    pub fn set(&mut self, queue: u32, socket: impl AsFd) -> Result<(), Error> {
        self.0.set(queue, socket.as_fd(), 0).map_err(Error::map("insert", MAP_XSKS))
    }

    /// Removes the socket of `queue`; its steered packets go to the kernel.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] if `queue` is out of range.
    pub fn unset(&mut self, queue: u32) -> Result<bool, Error> {
        removed(self.0.unset(queue), MAP_XSKS)
    }
}
