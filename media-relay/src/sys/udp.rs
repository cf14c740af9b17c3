//! Batched UDP I/O: `recvmmsg` into a preallocated [`RecvBatch`],
//! `sendmmsg` from it, the receive-queue overflow counter (`SO_RXQ_OVFL`),
//! and socket address conversion.
//!
//! Everything here is called by exactly one thread on buffers it owns (a
//! worker's media sockets; the ng server's control socket, [`recv_many`]
//! and [`send_many`]). No function allocates; each call is one syscall for
//! a whole batch.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Packets per batch syscall.
pub const BATCH: usize = 32;
/// Bytes per packet buffer (larger datagrams are truncated and dropped).
pub const BUF_SIZE: usize = 2048;
/// Control-message space per packet, enough for one `SO_RXQ_OVFL` u32.
const CMSG_SPACE: usize = 32;

/// Preallocated receive storage for one batch, owned by one worker.
pub struct RecvBatch {
    bufs: Box<[[u8; BUF_SIZE]; BATCH]>,
    addrs: [libc::sockaddr_storage; BATCH],
    cmsgs: [[u8; CMSG_SPACE]; BATCH],
    lens: [usize; BATCH],
    truncated: [bool; BATCH],
    overflow: Option<u32>,
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// Allocates the buffers (once, at worker start).
    #[must_use]
    pub fn new() -> Self {
        Self {
            bufs: Box::new([[0u8; BUF_SIZE]; BATCH]),
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            addrs: unsafe { zeroed() },
            cmsgs: [[0u8; CMSG_SPACE]; BATCH],
            lens: [0; BATCH],
            truncated: [false; BATCH],
            overflow: None,
            count: 0,
        }
    }

    /// Number of packets received by the last [`recv`](Self::recv).
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the last receive got nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Payload of packet `i`, `None` if `i` is out of range or it was truncated.
    #[must_use]
    pub fn packet(&self, i: usize) -> Option<&[u8]> {
        if i >= self.count || self.truncated[i] {
            return None;
        }
        self.bufs[i].get(..self.lens[i])
    }

    /// Length of packet `i` as received (0 out of range).
    #[must_use]
    pub fn packet_len(&self, i: usize) -> usize {
        if i < self.count {
            self.lens[i]
        } else {
            0
        }
    }

    /// Source address of packet `i`.
    #[must_use]
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        if i >= self.count {
            return None;
        }
        from_storage(&self.addrs[i])
    }

    /// The socket's cumulative receive-queue drop counter, as last reported
    /// by the kernel in this batch (needs `SO_RXQ_OVFL`, see [`enable_rxq_ovfl`]).
    #[must_use]
    pub fn overflow_counter(&self) -> Option<u32> {
        self.overflow
    }

    /// Receives up to [`BATCH`] datagrams from `fd` without blocking.
    /// Returns 0 when nothing is queued.
    ///
    /// # Errors
    /// Any error of `recvmmsg` other than `EAGAIN`/`EINTR`.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        self.overflow = None;
        // SAFETY: iovec/mmsghdr are plain C structs; zero is a valid initial value.
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iov[i].iov_base = self.bufs[i].as_mut_ptr().cast();
            iov[i].iov_len = BUF_SIZE;
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = std::ptr::addr_of_mut!(self.addrs[i]).cast();
            h.msg_namelen = socklen_of::<libc::sockaddr_storage>();
            h.msg_iov = std::ptr::addr_of_mut!(iov[i]);
            h.msg_iovlen = 1;
            h.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            h.msg_controllen = CMSG_SPACE;
        }
        // SAFETY: every pointer in `hdrs` points into `self` or the local
        // `iov` array, all of which outlive the call; lengths match the buffers.
        let n = unsafe {
            libc::recvmmsg(fd, hdrs.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        let n = usize::try_from(n).unwrap_or(0).min(BATCH);
        for (i, h) in hdrs.iter().enumerate().take(n) {
            self.lens[i] = h.msg_len as usize;
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            if let Some(v) = read_ovfl(&h.msg_hdr) {
                self.overflow = Some(v);
            }
        }
        self.count = n;
        Ok(n)
    }
}

fn read_ovfl(h: &libc::msghdr) -> Option<u32> {
    if h.msg_controllen < size_of::<libc::cmsghdr>() {
        return None;
    }
    // SAFETY: msg_control points at our CMSG_SPACE buffer, which the kernel
    // filled; CMSG_FIRSTHDR/NXTHDR stay within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                let data = libc::CMSG_DATA(c).cast::<u32>();
                return Some(std::ptr::read_unaligned(data));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// Sends the packets `idx` of `batch` to `dest` through `fd`, in as few
/// `sendmmsg` calls as the kernel allows. Returns how many were sent; the
/// rest could not be queued (socket buffer full) and are the caller's to count.
///
/// # Errors
/// A hard error from `sendmmsg` on the first packet.
pub fn send_batch(fd: RawFd, batch: &RecvBatch, idx: &[u8], dest: SocketAddr) -> io::Result<usize> {
    let n = idx.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    let (mut addr, alen) = to_storage(dest);
    // SAFETY: plain C structs; zero is a valid initial value.
    let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for (k, &i) in idx.iter().take(n).enumerate() {
        let i = usize::from(i).min(BATCH - 1);
        iov[k].iov_base = batch.bufs[i].as_ptr().cast_mut().cast();
        iov[k].iov_len = batch.lens[i].min(BUF_SIZE);
        let h = &mut hdrs[k].msg_hdr;
        h.msg_name = std::ptr::addr_of_mut!(addr).cast();
        h.msg_namelen = alen;
        h.msg_iov = std::ptr::addr_of_mut!(iov[k]);
        h.msg_iovlen = 1;
    }
    let mut sent = 0usize;
    while sent < n {
        // SAFETY: hdrs[sent..n] point at live buffers in `batch`, the local
        // `iov` array and `addr`; the kernel only reads them.
        let r =
            unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr().add(sent), (n - sent) as libc::c_uint, libc::MSG_DONTWAIT) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => break,
                _ if sent == 0 => return Err(e),
                _ => break,
            }
        }
        if r == 0 {
            break;
        }
        sent += usize::try_from(r).unwrap_or(0);
    }
    Ok(sent)
}

/// Datagrams per [`recv_many`] / [`send_many`] call, at most.
pub const MANY: usize = 16;

/// Receives up to `bufs.len()` (at most [`MANY`]) datagrams from `fd`
/// without blocking, datagram `i` into `bufs[i]`, its length and source
/// into `meta[i]` (a datagram longer than its buffer is dropped: its
/// length is reported as 0). Returns how many arrived, 0 when nothing is
/// queued.
///
/// # Errors
/// Any error of `recvmmsg` other than `EAGAIN`/`EINTR`.
pub fn recv_many(fd: RawFd, bufs: &mut [Box<[u8]>], meta: &mut [(usize, Option<SocketAddr>)]) -> io::Result<usize> {
    let n = bufs.len().min(meta.len()).min(MANY);
    // SAFETY: plain C structs; zero is a valid initial value.
    let mut addrs: [libc::sockaddr_storage; MANY] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut iov: [libc::iovec; MANY] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MANY] = unsafe { zeroed() };
    for (i, buf) in bufs.iter_mut().take(n).enumerate() {
        iov[i].iov_base = buf.as_mut_ptr().cast();
        iov[i].iov_len = buf.len();
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = std::ptr::addr_of_mut!(addrs[i]).cast();
        h.msg_namelen = socklen_of::<libc::sockaddr_storage>();
        h.msg_iov = std::ptr::addr_of_mut!(iov[i]);
        h.msg_iovlen = 1;
    }
    // SAFETY: hdrs[..n] point at `bufs` (lengths as given), the local
    // `iov` and `addrs` arrays, all of which outlive the call.
    let r =
        unsafe { libc::recvmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Ok(0),
            _ => Err(e),
        };
    }
    let r = usize::try_from(r).unwrap_or(0).min(n);
    for (i, h) in hdrs.iter().enumerate().take(r) {
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        meta[i] = (if truncated { 0 } else { h.msg_len as usize }, from_storage(&addrs[i]));
    }
    Ok(r)
}

/// Sends each `(destination, datagram)` of `msgs` (at most [`MANY`]) from
/// `fd`, in as few `sendmmsg` calls as the kernel allows. A datagram that
/// cannot be sent is handed to `failed` with its index and the error, and
/// the rest are still sent.
pub fn send_many(fd: RawFd, msgs: &[(SocketAddr, &[u8])], mut failed: impl FnMut(usize, io::Error)) {
    let n = msgs.len().min(MANY);
    // SAFETY: plain C structs; zero is a valid initial value.
    let mut addrs: [(libc::sockaddr_storage, libc::socklen_t); MANY] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut iov: [libc::iovec; MANY] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MANY] = unsafe { zeroed() };
    for (i, (to, data)) in msgs.iter().take(n).enumerate() {
        addrs[i] = to_storage(*to);
        iov[i].iov_base = data.as_ptr().cast_mut().cast();
        iov[i].iov_len = data.len();
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = std::ptr::addr_of_mut!(addrs[i].0).cast();
        h.msg_namelen = addrs[i].1;
        h.msg_iov = std::ptr::addr_of_mut!(iov[i]);
        h.msg_iovlen = 1;
    }
    let mut sent = 0usize;
    while sent < n {
        // SAFETY: hdrs[sent..n] point at the datagrams of `msgs` and the
        // local `iov` and `addrs` arrays, all alive; the kernel only reads them.
        let r =
            unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr().add(sent), (n - sent) as libc::c_uint, libc::MSG_DONTWAIT) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                // The first datagram failed: report it and go on with the next.
                failed(sent, e);
                sent += 1;
            }
            continue;
        }
        // 0 is not returned for a non-empty vector; count it as a failure
        // of the first to be sure the loop ends.
        match usize::try_from(r).unwrap_or(0) {
            0 => {
                failed(sent, io::Error::from(io::ErrorKind::WriteZero));
                sent += 1;
            }
            k => sent += k,
        }
    }
}

/// Asks the kernel to report the socket's receive-queue drop counter with
/// every datagram.
///
/// # Errors
/// The `setsockopt` error.
pub fn enable_rxq_ovfl(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd owned by the caller; option value is a c_int on our stack.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            std::ptr::addr_of!(one).cast(),
            socklen_of::<libc::c_int>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).unwrap_or(0)
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: ss_family says this storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let a = unsafe { &*std::ptr::from_ref(s).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*std::ptr::from_ref(s).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn to_storage(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: plain old data; zero is valid.
    let mut s: libc::sockaddr_storage = unsafe { zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let p = unsafe { &mut *std::ptr::from_mut(&mut s).cast::<libc::sockaddr_in>() };
            p.sin_family = libc::AF_INET as libc::sa_family_t;
            p.sin_port = a.port().to_be();
            p.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            (s, socklen_of::<libc::sockaddr_in>())
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let p = unsafe { &mut *std::ptr::from_mut(&mut s).cast::<libc::sockaddr_in6>() };
            p.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            p.sin6_port = a.port().to_be();
            p.sin6_addr.s6_addr = a.ip().octets();
            p.sin6_flowinfo = a.flowinfo();
            p.sin6_scope_id = a.scope_id();
            (s, socklen_of::<libc::sockaddr_in6>())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_v4_and_overflow_counter() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_rxq_ovfl(rx.as_raw_fd()).unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 20], rx.local_addr().unwrap()).unwrap();
        }
        let mut b = RecvBatch::new();
        let n = b.recv(rx.as_raw_fd()).unwrap();
        assert_eq!(n, 5);
        assert_eq!(b.packet(3), Some(&[3u8; 20][..]));
        assert_eq!(b.source(0), Some(tx.local_addr().unwrap()));
        // The kernel attaches the counter only once something was dropped.
        assert_eq!(b.overflow_counter(), None);
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 0, "empty socket gives 0, not an error");
        // Forward packets 1 and 4 to the sink through `tx`.
        b.count = 5;
        let sent = send_batch(tx.as_raw_fd(), &b, &[1, 4], sink.local_addr().unwrap()).unwrap();
        assert_eq!(sent, 2);
        let mut buf = [0u8; 64];
        let (l, from) = sink.recv_from(&mut buf).unwrap();
        assert_eq!((l, buf[0], from), (20, 1, tx.local_addr().unwrap()));
    }

    #[test]
    fn overflow_counter_reports_kernel_drops() {
        let rx = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        rx.set_recv_buffer_size(2048).unwrap();
        rx.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        let rx: UdpSocket = rx.into();
        enable_rxq_ovfl(rx.as_raw_fd()).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            tx.send_to(&[7u8; 200], rx.local_addr().unwrap()).unwrap();
        }
        let mut b = RecvBatch::new();
        let mut queued = 0;
        loop {
            let n = b.recv(rx.as_raw_fd()).unwrap();
            if n == 0 {
                break;
            }
            queued += n;
        }
        assert!(queued > 0 && queued < 200, "a 2 KiB buffer holds some, not all: {queued}");
        // The kernel stamps the running drop count on datagrams queued after
        // the drops, so the next datagram carries it.
        tx.send_to(&[8u8; 20], rx.local_addr().unwrap()).unwrap();
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 1);
        let dropped = b.overflow_counter().expect("drop counter reported");
        assert_eq!(dropped as usize + queued, 200, "every datagram is either queued or counted");
    }

    #[test]
    fn many_round_trip_with_sources_and_failures() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut bufs: Vec<Box<[u8]>> = (0..MANY).map(|_| vec![0u8; 64].into_boxed_slice()).collect();
        let mut meta = [(0usize, None); MANY];
        assert_eq!(recv_many(rx.as_raw_fd(), &mut bufs, &mut meta).unwrap(), 0, "nothing queued");
        a.send_to(b"one", rx.local_addr().unwrap()).unwrap();
        b.send_to(&[9u8; 100], rx.local_addr().unwrap()).unwrap();
        a.send_to(b"three", rx.local_addr().unwrap()).unwrap();
        assert_eq!(recv_many(rx.as_raw_fd(), &mut bufs, &mut meta).unwrap(), 3);
        assert_eq!((&bufs[0][..meta[0].0], meta[0].1), (&b"one"[..], Some(a.local_addr().unwrap())));
        assert_eq!(meta[1], (0, Some(b.local_addr().unwrap())), "longer than its buffer: dropped");
        assert_eq!(&bufs[2][..meta[2].0], b"three");
        // Replies in one call; one to an IPv6 address from an IPv4 socket
        // fails on its own and the others still go.
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let msgs = [(a.local_addr().unwrap(), &b"r1"[..]), (v6, &b"x"[..]), (b.local_addr().unwrap(), &b"r2"[..])];
        let mut failures = Vec::new();
        send_many(rx.as_raw_fd(), &msgs, |i, _| failures.push(i));
        assert_eq!(failures, vec![1]);
        let mut buf = [0u8; 16];
        assert_eq!(a.recv_from(&mut buf).unwrap(), (2, rx.local_addr().unwrap()));
        assert_eq!(&buf[..2], b"r1");
        assert_eq!(b.recv(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"r2");
    }

    #[test]
    fn batch_round_trip_v6() {
        let Ok(rx) = UdpSocket::bind("[::1]:0") else {
            eprintln!("no IPv6 loopback here; skipping the IPv6 half");
            return;
        };
        let tx = UdpSocket::bind("[::1]:0").unwrap();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        let mut b = RecvBatch::new();
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 1);
        assert_eq!(b.source(0), Some(tx.local_addr().unwrap()));
        let sent = send_batch(rx.as_raw_fd(), &b, &[0], tx.local_addr().unwrap()).unwrap();
        assert_eq!(sent, 1);
    }
}
