//! The sbc's interface to the kernel: every `unsafe` block of the crate is
//! here, each with its `SAFETY` comment, and nowhere else.
//!
//! - Interface indexes (`if_nametoindex(3)`).
//! - A send-only `AF_PACKET` socket for gratuitous ARP.
//! - Interface addresses over rtnetlink: `RTM_NEWADDR`, `RTM_DELADDR` and an
//!   `RTM_GETADDR` dump on a `NETLINK_ROUTE` socket. The messages are built
//!   and parsed by `netlink-packet-route`, the socket is `netlink-sys`' plain
//!   blocking one (no async runtime), so this part needs no `unsafe` of its own.
//!
//! - Datagram receive with `SO_RXQ_OVFL`: `recvmsg(2)` and its control
//!   message, which carries the socket's count of datagrams the kernel
//!   dropped on a full receive queue.
//!
//! Errors are the kernel's `io::Error`s unchanged (`EEXIST`, `EADDRNOTAVAIL`
//! …): what they mean to the caller is decided by the caller.
#![expect(unsafe_code, reason = "the sbc's raw syscalls (AF_PACKET, if_nametoindex, recvmsg) live in this one module")]

use std::ffi::CString;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// The index of interface `dev` in this process's network namespace.
///
/// # Errors
/// `ENODEV` when there is no such interface, `InvalidInput` for a name with
/// a NUL byte.
pub fn if_index(dev: &str) -> io::Result<u32> {
    let name = CString::new(dev).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call;
    // if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// Turns on `SO_RXQ_OVFL` on a datagram socket: each datagram read with
/// [`recv_counting_drops`] then carries the socket's kernel drop count.
///
/// # Errors
/// The `setsockopt(2)` error.
pub fn enable_rxq_ovfl(sock: &impl AsRawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid descriptor, and a pointer to a c_int that outlives the
    // call with its exact size; setsockopt only reads it.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads one datagram into `buf` (non-blocking sockets give `WouldBlock`):
/// the bytes stored, the source, and the socket's running total of kernel
/// receive-queue drops when the kernel attached it (`SO_RXQ_OVFL` on, and
/// at least one drop so far).
///
/// # Errors
/// The `recvmsg(2)` error; `InvalidData` for a source that is not IP.
pub fn recv_counting_drops(
    sock: &impl AsRawFd,
    buf: &mut [u8],
) -> io::Result<(usize, std::net::SocketAddr, Option<u32>)> {
    // SAFETY: sockaddr_storage and msghdr are plain C structs for which all
    // zero bytes are a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in msg points at a live local (addr, iov, control)
    // or at buf, each with the length given; the kernel writes within them.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut drops = None;
    // SAFETY: msg was filled by recvmsg, so its control pointer and length
    // describe the control messages the kernel wrote into `control`.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !c.is_null() {
        // SAFETY: c is non-null and points at a cmsghdr inside `control`
        // (CMSG_FIRSTHDR/CMSG_NXTHDR check the bounds).
        let (level, ty) = unsafe { ((*c).cmsg_level, (*c).cmsg_type) };
        if level == libc::SOL_SOCKET && ty == libc::SO_RXQ_OVFL {
            // SAFETY: an SO_RXQ_OVFL message carries one u32 after its header,
            // inside `control`; read_unaligned makes no alignment assumption.
            drops = Some(unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()) });
        }
        // SAFETY: msg and c are as above.
        c = unsafe { libc::CMSG_NXTHDR(&raw const msg, c) };
    }
    // SAFETY: the kernel initialised `msg_namelen` bytes of addr.
    let src = unsafe { socket2::SockAddr::new(addr, msg.msg_namelen) }
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram source is not IP"))?;
    Ok((usize::try_from(n).unwrap_or(0), src, drops))
}

/// A send-only packet socket (protocol 0: it receives nothing).
#[derive(Debug)]
pub struct PacketSocket(OwnedFd);

impl PacketSocket {
    /// Opens the socket.
    ///
    /// # Errors
    /// `EPERM` without `CAP_NET_RAW`.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call with constant arguments; the result is
        // checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends `frame` (a whole Ethernet frame) out of interface `ifindex` to
    /// the broadcast address, with link-layer protocol `ethertype`.
    ///
    /// # Errors
    /// The `sendto(2)` error.
    pub fn send_broadcast(&self, ifindex: u32, ethertype: u16, frame: &[u8]) -> io::Result<()> {
        let index = i32::try_from(ifindex).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "ifindex"))?;
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ethertype.to_be();
        sll.sll_ifindex = index;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: the buffer and the address are valid for the given lengths
        // for the duration of the call, and the descriptor is open (owned by
        // self).
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
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
        Ok(())
    }
}

/// The `ifaddrmsg` and attributes naming `addr/prefix` on `ifindex`, as
/// `ip addr add|del ADDR/PREFIX dev DEV` sends them (`IFA_LOCAL` and
/// `IFA_ADDRESS` both the address).
fn address_message(ifindex: u32, addr: IpAddr, prefix: u8, nodad: bool) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.prefix_len = prefix;
    m.header.index = ifindex;
    if nodad {
        m.header.flags = AddressHeaderFlags::Nodad;
    }
    m.attributes = vec![AddressAttribute::Local(addr), AddressAttribute::Address(addr)];
    m
}

/// Adds `addr/prefix` to interface `ifindex` (`RTM_NEWADDR`, create, exclusive).
/// `nodad` skips IPv6 duplicate address detection.
///
/// # Errors
/// The kernel's answer: `EEXIST` when the address is there already.
pub fn address_add(ifindex: u32, addr: IpAddr, prefix: u8, nodad: bool) -> io::Result<()> {
    let m = RouteNetlinkMessage::NewAddress(address_message(ifindex, addr, prefix, nodad));
    rtnl_request(m, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).map(drop)
}

/// Removes `addr/prefix` from interface `ifindex` (`RTM_DELADDR`).
///
/// # Errors
/// The kernel's answer: `EADDRNOTAVAIL` when the address is not there.
pub fn address_del(ifindex: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
    let m = RouteNetlinkMessage::DelAddress(address_message(ifindex, addr, prefix, false));
    rtnl_request(m, NLM_F_REQUEST | NLM_F_ACK).map(drop)
}

/// Every address of interface `ifindex` in the family of `family_of`
/// (an `RTM_GETADDR` dump).
///
/// # Errors
/// Socket errors or an answer that does not parse.
pub fn addresses(ifindex: u32, family_of: IpAddr) -> io::Result<Vec<IpAddr>> {
    let mut q = AddressMessage::default();
    q.header.family = if family_of.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let answers = rtnl_request(RouteNetlinkMessage::GetAddress(q), NLM_F_REQUEST | NLM_F_DUMP)?;
    let mut out = Vec::new();
    for a in answers {
        let RouteNetlinkMessage::NewAddress(m) = a else { continue };
        if m.header.index != ifindex {
            continue;
        }
        for attr in m.attributes {
            if let AddressAttribute::Local(ip) | AddressAttribute::Address(ip) = attr {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    Ok(out)
}

/// Sends one request on a fresh `NETLINK_ROUTE` socket and collects the
/// answer: the messages of a dump until `NLMSG_DONE`, or nothing for an
/// acknowledged request. A negative acknowledgement becomes its errno.
fn rtnl_request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);
    sock.send(&buf, 0)?;
    let mut out = Vec::new();
    loop {
        let (data, _) = sock.recv_from_full()?;
        let mut off = 0;
        while off + 4 <= data.len() {
            let len = u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
            if len < 16 || off + len > data.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
            }
            let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..off + len]);
            off += len.next_multiple_of(4);
            let m = match parsed {
                Ok(m) => m,
                // One record the crate cannot decode does not spoil a dump.
                Err(e) if flags & NLM_F_DUMP == NLM_F_DUMP => {
                    tracing::debug!(error = %e, "netlink: skipping an undecodable message");
                    continue;
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            };
            match m.payload {
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                _ => {}
            }
        }
    }
}

/// Puts the calling thread under `SCHED_FIFO` at `priority` (1 to 99).
///
/// # Errors
/// The `sched_setscheduler` error: `EPERM` without `CAP_SYS_NICE`.
pub fn set_thread_fifo(priority: i32) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: pid 0 is the calling thread; `param` is a live sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn address_message_layout() {
        let m = address_message(7, "10.0.0.100".parse().unwrap(), 24, false);
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        // ifaddrmsg: family, prefix length, flags, scope, index.
        assert_eq!(&buf[..4], &[libc::AF_INET as u8, 24, 0, 0]);
        assert_eq!(u32::from_ne_bytes(buf[4..8].try_into().unwrap()), 7);
        // IFA_LOCAL (2) then IFA_ADDRESS (1), each 4 + 4 bytes.
        assert_eq!(u16::from_ne_bytes(buf[8..10].try_into().unwrap()), 8);
        assert_eq!(u16::from_ne_bytes(buf[10..12].try_into().unwrap()), 2);
        assert_eq!(&buf[12..16], &[10, 0, 0, 100]);
        assert_eq!(u16::from_ne_bytes(buf[18..20].try_into().unwrap()), 1);
        assert_eq!(&buf[20..24], &[10, 0, 0, 100]);
        let v6 = address_message(3, "fd00::100".parse().unwrap(), 64, true);
        let mut buf = vec![0u8; v6.buffer_len()];
        v6.emit(&mut buf);
        assert_eq!(&buf[..3], &[libc::AF_INET6 as u8, 64, 0x02], "IFA_F_NODAD");
    }

    #[test]
    fn unknown_interface_is_enodev() {
        let e = if_index("xsbc-no-such0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
    }

    /// Adds and removes an address on `lo` of a throwaway network namespace
    /// (this test's thread alone moves into it), checking with `ip -o addr`
    /// what the kernel holds. Needs root; fails instead of skipping under CI=true.
    #[test]
    fn address_add_and_remove_in_a_namespace() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        std::thread::spawn(move || {
            // SAFETY: unshare(2) with a constant flag; it only changes this
            // thread's network namespace, which the thread never shares.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let e = io::Error::last_os_error();
                assert!(!ci, "this test must run under CI=true, but unshare(CLONE_NEWNET) failed: {e}");
                eprintln!("SKIPPED: needs root for a network namespace ({e})");
                return;
            }
            let shown = || {
                let out = std::process::Command::new("ip").args(["-o", "addr", "show", "dev", "lo"]).output();
                String::from_utf8_lossy(&out.expect("ip runs").stdout).into_owned()
            };
            let lo = if_index("lo").unwrap();
            for (addr, prefix, text) in [("10.99.0.100", 24, "10.99.0.100/24"), ("fd00:99::100", 64, "fd00:99::100/64")]
            {
                let addr: IpAddr = addr.parse().unwrap();
                assert!(!shown().contains(text));
                address_add(lo, addr, prefix, addr.is_ipv6()).unwrap();
                assert!(shown().contains(text), "{text} added: {}", shown());
                assert!(addresses(lo, addr).unwrap().contains(&addr));
                let again = address_add(lo, addr, prefix, addr.is_ipv6()).unwrap_err();
                assert_eq!(again.raw_os_error(), Some(libc::EEXIST));
                address_del(lo, addr, prefix).unwrap();
                assert!(!shown().contains(text), "{text} removed: {}", shown());
                assert!(!addresses(lo, addr).unwrap().contains(&addr));
                let gone = address_del(lo, addr, prefix).unwrap_err();
                assert_eq!(gone.raw_os_error(), Some(libc::EADDRNOTAVAIL));
            }
        })
        .join()
        .unwrap();
    }
}
