//! The kernel's links, routes and neighbours, kept current over rtnetlink,
//! so the `AF_XDP` workers can address frames to the next hop themselves.
//!
//! Ownership: one monitor thread listens to the kernel's link, neighbour and
//! route notifications; on any change it dumps the three tables again and
//! publishes an immutable [`Snapshot`] (an `ArcSwap`, read without locks)
//! and bumps a generation counter. Workers cache a resolution per channel
//! and look again only when the generation changes. A destination whose
//! neighbour is unknown resolves to `None`: the worker then sends through
//! the kernel (which resolves it with ARP/ND, and the monitor picks the new
//! entry up).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::sys::netlink::Netlink;

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u32 = 254;
const RTN_UNICAST: u8 = 1;
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;
const IFF_LOOPBACK: u32 = 0x8;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE`.
const GROUPS: u32 = 0x1 | 0x4 | 0x40 | 0x400;
/// `XDP_FLAGS_SKB_MODE`, `XDP_FLAGS_DRV_MODE`.
const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address (all zero when it has none, e.g. loopback).
    pub mac: [u8; 6],
    /// Id of the XDP program attached, 0 when none.
    pub xdp_prog_id: u32,
    /// How it is attached (`IFLA_XDP_ATTACHED`: 1 driver, 2 generic, 3 offload).
    pub xdp_mode: u8,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
}

/// One neighbour (ARP/NDP) entry in a usable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neigh {
    /// Interface index.
    pub ifindex: u32,
    /// Its IP address.
    pub ip: IpAddr,
    /// Its hardware address.
    pub mac: [u8; 6],
}

/// One unicast route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix.
    pub dst: IpAddr,
    /// Prefix length.
    pub len: u8,
    /// Gateway, if not on-link.
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub oif: u32,
    /// Metric (lower wins among equal prefixes).
    pub metric: u32,
}

/// Where to put a frame for a destination: the egress interface and the
/// MACs of the hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface index.
    pub ifindex: u32,
    /// Our MAC on it.
    pub src_mac: [u8; 6],
    /// The next hop's MAC.
    pub dst_mac: [u8; 6],
}

/// The three tables at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Interfaces.
    pub links: Vec<Link>,
    /// Usable neighbour entries.
    pub neighs: Vec<Neigh>,
    /// Main-table unicast routes.
    pub routes: Vec<Route>,
}

fn prefix_match(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

impl Snapshot {
    /// The route for `dst` (longest prefix, then lowest metric).
    #[must_use]
    pub fn route(&self, dst: IpAddr) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| prefix_match(r.dst, r.len, dst))
            .min_by_key(|r| (std::cmp::Reverse(r.len), r.metric))
    }

    /// The interface with `index`.
    #[must_use]
    pub fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    /// The interface called `name`.
    #[must_use]
    pub fn link_by_name(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// Route lookup, then the next hop's neighbour entry. `None` when there
    /// is no route or the neighbour is not (yet) known. A loopback
    /// destination (in the local table, not the main one) goes out of the
    /// loopback interface, whose MAC is all zero.
    #[must_use]
    pub fn resolve(&self, dst: IpAddr) -> Option<NextHop> {
        if dst.is_loopback() {
            // The local table wins over every main-table route, the default included.
            let lo = self.links.iter().find(|l| l.loopback)?;
            return Some(NextHop { ifindex: lo.index, src_mac: lo.mac, dst_mac: lo.mac });
        }
        let route = self.route(dst)?;
        let hop = route.gateway.unwrap_or(dst);
        let neigh = self.neighs.iter().find(|n| n.ifindex == route.oif && n.ip == hop)?;
        let link = self.link(route.oif)?;
        Some(NextHop { ifindex: route.oif, src_mac: link.mac, dst_mac: neigh.mac })
    }
}

/// Iterates `(type, payload)` over the rtattrs in `b`.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((kind, payload))
    })
}

fn ne_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

fn ip_of(family: u8, b: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(..4)?).ok()?))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b.get(..16)?).ok()?))),
        _ => None,
    }
}

fn mac_of(b: &[u8]) -> Option<[u8; 6]> {
    b.get(..6)?.try_into().ok()
}

/// Parses one `RTM_NEWLINK` body (after the netlink header).
fn parse_link(body: &[u8]) -> Option<Link> {
    let index = ne_u32(body.get(4..8)?)?;
    let flags = ne_u32(body.get(8..12)?)?;
    let loopback = flags & IFF_LOOPBACK != 0;
    let mut link = Link { index, name: String::new(), mac: [0; 6], xdp_prog_id: 0, xdp_mode: 0, loopback };
    for (kind, v) in attrs(body.get(16..)?) {
        match kind {
            IFLA_ADDRESS => link.mac = mac_of(v).unwrap_or([0; 6]),
            IFLA_IFNAME => link.name = String::from_utf8_lossy(v.split(|&c| c == 0).next().unwrap_or(v)).into_owned(),
            IFLA_XDP => {
                for (k, x) in attrs(v) {
                    match k {
                        IFLA_XDP_ATTACHED => link.xdp_mode = x.first().copied().unwrap_or(0),
                        IFLA_XDP_PROG_ID => link.xdp_prog_id = ne_u32(x).unwrap_or(0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

/// Parses one `RTM_NEWNEIGH` body; `None` for unusable entries.
fn parse_neigh(body: &[u8]) -> Option<Neigh> {
    let family = *body.first()?;
    let ifindex = ne_u32(body.get(4..8)?)?;
    let state = u16::from_ne_bytes([*body.get(8)?, *body.get(9)?]);
    if state & NUD_USABLE == 0 {
        return None;
    }
    let (mut ip, mut mac) = (None, None);
    for (kind, v) in attrs(body.get(12..)?) {
        match kind {
            NDA_DST => ip = ip_of(family, v),
            NDA_LLADDR => mac = mac_of(v),
            _ => {}
        }
    }
    Some(Neigh { ifindex, ip: ip?, mac: mac? })
}

/// Parses one `RTM_NEWROUTE` body; `None` unless main-table unicast.
fn parse_route(body: &[u8]) -> Option<Route> {
    let family = *body.first()?;
    let len = *body.get(1)?;
    let mut table = u32::from(*body.get(4)?);
    if *body.get(7)? != RTN_UNICAST {
        return None;
    }
    let unspecified = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AF_INET6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut r = Route { dst: unspecified, len, gateway: None, oif: 0, metric: 0 };
    for (kind, v) in attrs(body.get(12..)?) {
        match kind {
            RTA_DST => r.dst = ip_of(family, v)?,
            RTA_GATEWAY => r.gateway = ip_of(family, v),
            RTA_OIF => r.oif = ne_u32(v)?,
            RTA_PRIORITY => r.metric = ne_u32(v).unwrap_or(0),
            RTA_TABLE => table = ne_u32(v).unwrap_or(table),
            _ => {}
        }
    }
    (table == RT_TABLE_MAIN && r.oif != 0).then_some(r)
}

/// Iterates `(type, body)` over the netlink messages in one datagram.
fn messages(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < NLMSG_HDR {
            return None;
        }
        let len = usize::try_from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]])).ok()?;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        if len < NLMSG_HDR || len > b.len() {
            return None;
        }
        let body = &b[NLMSG_HDR..len];
        b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((kind, body))
    })
}

fn request(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(NLMSG_HDR + body.len()).unwrap_or(u32::MAX);
    let mut m = Vec::with_capacity(NLMSG_HDR + body.len());
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// Dumps one table; calls `each` with every message body of type `want`.
fn dump(nl: &Netlink, kind: u16, header_len: usize, want: u16, each: impl FnMut(&[u8])) -> std::io::Result<()> {
    dump_with(nl, kind, NLM_F_DUMP, &vec![0u8; header_len], want, each)
}

/// Sends one request with `body` and `flags` (besides `NLM_F_REQUEST`);
/// calls `each` with every answer of type `want`, until the kernel says
/// it is done (for a request that is not a dump: after the first answer).
fn dump_with(
    nl: &Netlink,
    kind: u16,
    flags: u16,
    body: &[u8],
    want: u16,
    mut each: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    nl.send(&request(kind, NLM_F_REQUEST | flags, u32::from(kind), body))?;
    let single = flags & NLM_F_DUMP == 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = nl.recv(&mut buf, false)?;
        for (t, body) in messages(&buf[..n]) {
            match t {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let code = body.get(..4).and_then(ne_u32).map_or(0, u32::cast_signed);
                    return Err(std::io::Error::from_raw_os_error(-code));
                }
                t if t == want => {
                    each(body);
                    if single {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
    }
}

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_CMD_NAPI_GET: u8 = 11;
const NETDEV_A_NAPI_IFINDEX: u16 = 1;
const NETDEV_A_NAPI_ID: u16 = 2;
const NETDEV_A_NAPI_PID: u16 = 4;

/// Appends one netlink attribute (length, type, value, padding to 4) to
/// `b`, which must end 4-aligned.
fn push_attr(b: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(value);
    b.resize(b.len().next_multiple_of(4), 0);
}

/// A generic netlink message body: the genl header (command, version 1),
/// then one attribute.
fn genl_body(cmd: u8, attr: u16, value: &[u8]) -> Vec<u8> {
    let mut b = vec![cmd, 1, 0, 0];
    push_attr(&mut b, attr, value);
    b
}

/// One NAPI context of an interface, from the kernel's netdev family:
/// its id, and its thread's pid when it runs threaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Napi {
    /// NAPI id (the `N` of the thread name `napi/IF-N`).
    pub id: u32,
    /// The thread, when this NAPI context is threaded.
    pub pid: Option<i32>,
}

/// Parses one `NETDEV_CMD_NAPI_GET` answer (genl header, then attributes).
fn parse_napi(body: &[u8]) -> Option<(u32, Napi)> {
    let mut ifindex = None;
    let mut napi = Napi { id: 0, pid: None };
    for (kind, v) in attrs(body.get(4..)?) {
        match kind {
            NETDEV_A_NAPI_IFINDEX => ifindex = ne_u32(v),
            NETDEV_A_NAPI_ID => napi.id = ne_u32(v)?,
            NETDEV_A_NAPI_PID => napi.pid = ne_u32(v).map(u32::cast_signed).filter(|p| *p > 0),
            _ => {}
        }
    }
    Some((ifindex?, napi))
}

/// The NAPI contexts of interface `ifindex` in this network namespace,
/// from the generic netlink `netdev` family (Linux 6.8 and later report
/// the thread).
///
/// # Errors
/// A socket error, or the kernel has no `netdev` family or no NAPI dump.
pub fn napi_contexts(ifindex: u32) -> std::io::Result<Vec<Napi>> {
    let nl = Netlink::open_protocol(libc::NETLINK_GENERIC, 0, 2000)?;
    let mut family = None;
    let body = genl_body(CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_NAME, b"netdev\0");
    dump_with(&nl, GENL_ID_CTRL, 0, &body, GENL_ID_CTRL, |b| {
        family = b.get(4..).and_then(|a| {
            attrs(a)
                .find(|(k, _)| *k == CTRL_ATTR_FAMILY_ID)
                .and_then(|(_, v)| Some(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?)))
        });
    })?;
    let family = family.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
    let mut out = Vec::new();
    let body = genl_body(NETDEV_CMD_NAPI_GET, NETDEV_A_NAPI_IFINDEX, &ifindex.to_ne_bytes());
    dump_with(&nl, family, NLM_F_DUMP, &body, family, |b| {
        if let Some((i, n)) = parse_napi(b) {
            if i == ifindex {
                out.push(n);
            }
        }
    })?;
    Ok(out)
}

/// Reads the three tables from the kernel.
///
/// # Errors
/// A netlink socket or dump error.
pub fn read_snapshot() -> std::io::Result<Snapshot> {
    let nl = Netlink::open(0, 2000)?;
    let mut s = Snapshot::default();
    dump(&nl, RTM_GETLINK, 16, RTM_NEWLINK, |b| s.links.extend(parse_link(b)))?;
    dump(&nl, RTM_GETNEIGH, 12, RTM_NEWNEIGH, |b| s.neighs.extend(parse_neigh(b)))?;
    dump(&nl, RTM_GETROUTE, 12, RTM_NEWROUTE, |b| s.routes.extend(parse_route(b)))?;
    Ok(s)
}

/// Detaches whatever XDP program is attached to `ifindex` in `mode`
/// (`IFLA_XDP_ATTACHED` value: 1 driver, 2 generic), as `ip link set dev X
/// xdp off` does.
///
/// # Errors
/// The kernel's answer.
pub fn detach_xdp(ifindex: u32, mode: u8) -> std::io::Result<()> {
    let nl = Netlink::open(0, 2000)?;
    let flags = if mode == 2 { XDP_FLAGS_SKB_MODE } else { XDP_FLAGS_DRV_MODE };
    let mut body = vec![0u8; 16];
    body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    // IFLA_XDP { IFLA_XDP_FD = -1, IFLA_XDP_FLAGS = flags }
    let mut nested = Vec::new();
    push_attr(&mut nested, IFLA_XDP_FD, &(-1i32).to_ne_bytes());
    push_attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    push_attr(&mut body, IFLA_XDP | 0x8000, &nested);
    nl.send(&request(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, 1, &body))?;
    let mut buf = vec![0u8; 8192];
    let n = nl.recv(&mut buf, false)?;
    for (t, b) in messages(&buf[..n]) {
        if t == NLMSG_ERROR {
            let code = b.get(..4).and_then(ne_u32).map_or(0, u32::cast_signed);
            return if code == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(-code)) };
        }
    }
    Err(std::io::Error::other("no netlink acknowledgement"))
}

/// The shared, always-current neighbour table.
pub struct NeighTable {
    snapshot: ArcSwap<Snapshot>,
    generation: AtomicU64,
}

impl NeighTable {
    /// A table holding `snapshot`, generation 1.
    #[must_use]
    pub fn new(snapshot: Snapshot) -> Self {
        Self { snapshot: ArcSwap::from_pointee(snapshot), generation: AtomicU64::new(1) }
    }

    /// Bumped on every published change. Workers compare it with the value
    /// their cached resolutions were made at.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current snapshot (lock-free).
    #[must_use]
    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Publishes a new snapshot if it differs.
    pub fn publish(&self, s: Snapshot) {
        if *self.snapshot.load_full() != s {
            self.snapshot.store(Arc::new(s));
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Starts the monitor thread: it re-reads the tables whenever the
    /// kernel reports a change, and every `refresh` in any case (a
    /// notification lost to a full socket buffer is then recovered).
    /// `on_refresh` runs on that thread at its start and after each
    /// re-read, with the time.
    ///
    /// # Errors
    /// Opening the netlink socket or spawning the thread.
    pub fn monitor(
        self: &Arc<Self>,
        shutdown: Arc<AtomicBool>,
        refresh: Duration,
        mut on_refresh: impl FnMut(std::time::Instant) + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let nl = Netlink::open(GROUPS, 100)?;
        let table = Arc::clone(self);
        std::thread::Builder::new().name("mr-neigh".into()).spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut last = std::time::Instant::now();
            on_refresh(last);
            while !shutdown.load(Ordering::Relaxed) {
                let changed = match nl.recv(&mut buf, false) {
                    Ok(_) => true,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
                    // ENOBUFS: notifications were lost; re-read everything.
                    Err(_) => true,
                };
                if !changed && last.elapsed() < refresh {
                    continue;
                }
                // Coalesce a burst of notifications into one re-read.
                while nl.recv(&mut buf, true).is_ok() {}
                last = std::time::Instant::now();
                match read_snapshot() {
                    Ok(s) => table.publish(s),
                    Err(e) => tracing::warn!(error = %e, "re-reading the neighbour table failed"),
                }
                on_refresh(last);
            }
            tracing::debug!(fd = nl.raw(), "neighbour monitor stopped");
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, v: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        push_attr(&mut b, kind, v);
        b
    }

    #[test]
    fn genl_requests_and_napi_answers() {
        // CTRL_CMD_GETFAMILY v1, then the name attribute, padded to 4.
        let b = genl_body(CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_NAME, b"netdev\0");
        assert_eq!(&b[..4], &[3, 1, 0, 0]);
        assert_eq!(attrs(&b[4..]).collect::<Vec<_>>(), vec![(CTRL_ATTR_FAMILY_NAME, &b"netdev\0"[..])]);
        // An answer: genl header, ifindex 7, id 8195, irq 0, pid 4242.
        let mut ans = vec![NETDEV_CMD_NAPI_GET, 1, 0, 0];
        ans.extend(attr(NETDEV_A_NAPI_IFINDEX, &7u32.to_ne_bytes()));
        ans.extend(attr(NETDEV_A_NAPI_ID, &8195u32.to_ne_bytes()));
        ans.extend(attr(3, &0u32.to_ne_bytes()));
        ans.extend(attr(NETDEV_A_NAPI_PID, &4242u32.to_ne_bytes()));
        assert_eq!(parse_napi(&ans), Some((7, Napi { id: 8195, pid: Some(4242) })));
        // Not threaded: no pid attribute.
        let mut plain = vec![NETDEV_CMD_NAPI_GET, 1, 0, 0];
        plain.extend(attr(NETDEV_A_NAPI_IFINDEX, &7u32.to_ne_bytes()));
        plain.extend(attr(NETDEV_A_NAPI_ID, &8196u32.to_ne_bytes()));
        assert_eq!(parse_napi(&plain), Some((7, Napi { id: 8196, pid: None })));
        // No interface index, or a cut message: nothing.
        assert_eq!(parse_napi(&[NETDEV_CMD_NAPI_GET, 1, 0, 0]), None);
        assert_eq!(parse_napi(&[1, 2]), None);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn snap() -> Snapshot {
        Snapshot {
            links: vec![
                Link { index: 1, name: "lo".into(), mac: [0; 6], xdp_prog_id: 0, xdp_mode: 0, loopback: true },
                Link {
                    index: 2,
                    name: "eth0".into(),
                    mac: [2, 0, 0, 0, 0, 2],
                    xdp_prog_id: 0,
                    xdp_mode: 0,
                    loopback: false,
                },
                Link {
                    index: 3,
                    name: "eth1".into(),
                    mac: [2, 0, 0, 0, 0, 3],
                    xdp_prog_id: 0,
                    xdp_mode: 0,
                    loopback: false,
                },
            ],
            neighs: vec![
                Neigh { ifindex: 2, ip: ip("10.0.0.1"), mac: [0xaa; 6] },
                Neigh { ifindex: 3, ip: ip("10.1.0.9"), mac: [0xbb; 6] },
                Neigh { ifindex: 3, ip: ip("2001:db8::9"), mac: [0xcc; 6] },
            ],
            routes: vec![
                Route { dst: ip("0.0.0.0"), len: 0, gateway: Some(ip("10.0.0.1")), oif: 2, metric: 0 },
                Route { dst: ip("10.1.0.0"), len: 24, gateway: None, oif: 3, metric: 100 },
                Route { dst: ip("10.1.0.0"), len: 16, gateway: Some(ip("10.0.0.1")), oif: 2, metric: 0 },
                Route { dst: ip("2001:db8::"), len: 64, gateway: None, oif: 3, metric: 0 },
            ],
        }
    }

    #[test]
    fn on_link_destination_uses_its_own_neighbour() {
        let hop = snap().resolve(ip("10.1.0.9")).unwrap();
        assert_eq!(hop, NextHop { ifindex: 3, src_mac: [2, 0, 0, 0, 0, 3], dst_mac: [0xbb; 6] });
        let hop = snap().resolve(ip("2001:db8::9")).unwrap();
        assert_eq!(hop.dst_mac, [0xcc; 6]);
    }

    #[test]
    fn remote_destination_goes_to_the_gateway() {
        // 192.0.2.7 only matches the default route: the gateway's MAC.
        let hop = snap().resolve(ip("192.0.2.7")).unwrap();
        assert_eq!(hop, NextHop { ifindex: 2, src_mac: [2, 0, 0, 0, 0, 2], dst_mac: [0xaa; 6] });
        // The longest prefix wins over a lower metric.
        assert_eq!(snap().route(ip("10.1.0.200")).unwrap().len, 24);
    }

    #[test]
    fn loopback_destinations_leave_through_lo() {
        for dst in ["127.0.0.1", "::1"] {
            assert_eq!(snap().resolve(ip(dst)), Some(NextHop { ifindex: 1, src_mac: [0; 6], dst_mac: [0; 6] }));
        }
        let mut s = snap();
        s.links.retain(|l| !l.loopback);
        assert_eq!(s.resolve(ip("127.0.0.1")), None);
    }

    #[test]
    fn unknown_neighbour_or_route_is_none() {
        assert_eq!(snap().resolve(ip("10.1.0.10")), None);
        let mut s = snap();
        s.routes.retain(|r| r.len != 0);
        assert_eq!(s.resolve(ip("192.0.2.7")), None);
    }

    #[test]
    fn parses_netlink_messages_and_ignores_garbage() {
        // An RTM_NEWNEIGH for 10.1.0.9 on ifindex 3, REACHABLE.
        let mut body = vec![AF_INET, 0, 0, 0];
        body.extend_from_slice(&3u32.to_ne_bytes());
        body.extend_from_slice(&0x02u16.to_ne_bytes());
        body.extend_from_slice(&[0, 1]);
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&NDA_DST.to_ne_bytes());
        body.extend_from_slice(&[10, 1, 0, 9]);
        body.extend_from_slice(&10u16.to_ne_bytes());
        body.extend_from_slice(&NDA_LLADDR.to_ne_bytes());
        body.extend_from_slice(&[0xbb; 6]);
        body.extend_from_slice(&[0, 0]);
        let msg = request(RTM_NEWNEIGH, 0, 7, &body);
        let got: Vec<_> = messages(&msg).filter(|(t, _)| *t == RTM_NEWNEIGH).map(|(_, b)| parse_neigh(b)).collect();
        assert_eq!(got, vec![Some(Neigh { ifindex: 3, ip: ip("10.1.0.9"), mac: [0xbb; 6] })]);
        // An INCOMPLETE entry is not usable.
        let mut incomplete = body.clone();
        incomplete[8..10].copy_from_slice(&0x01u16.to_ne_bytes());
        assert_eq!(parse_neigh(&incomplete), None);
        // Every truncation parses to something or nothing, never panics.
        for n in 0..msg.len() {
            for (_, b) in messages(&msg[..n]) {
                let _ = (parse_neigh(b), parse_link(b), parse_route(b));
            }
            let _ = (parse_neigh(&body[..n.min(body.len())]), parse_route(&body[..n.min(body.len())]));
        }
    }
}
