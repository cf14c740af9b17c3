//! The bench's only unsafe code: `sendmmsg` to many IPv4 destinations at
//! once, entering a network namespace, a process's CPU clock, and the bare
//! relay's batch (`recvmmsg` in, `sendmmsg` out) and its epoll. The
//! generator's sink receives with the relay's own batched receiver.
#![allow(unsafe_code)]

use std::io;
use std::mem::zeroed;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Most packets per call.
pub const MAX: usize = 64;

/// Sends `pkts` (payload, destination) through `fd` without blocking.
/// Returns how many were queued.
pub fn send_many(fd: RawFd, pkts: &[(&[u8], SocketAddrV4)]) -> usize {
    let n = pkts.len().min(MAX);
    if n == 0 {
        return 0;
    }
    // SAFETY: plain C structs; all-zero is a valid value.
    let mut addrs: [libc::sockaddr_in; MAX] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut iov: [libc::iovec; MAX] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX] = unsafe { zeroed() };
    for (k, (data, dest)) in pkts.iter().take(n).enumerate() {
        addrs[k].sin_family = libc::AF_INET as libc::sa_family_t;
        addrs[k].sin_port = dest.port().to_be();
        addrs[k].sin_addr.s_addr = u32::from(*dest.ip()).to_be();
        iov[k].iov_base = data.as_ptr().cast_mut().cast();
        iov[k].iov_len = data.len();
        hdrs[k].msg_hdr.msg_name = std::ptr::addr_of_mut!(addrs[k]).cast();
        hdrs[k].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        hdrs[k].msg_hdr.msg_iov = std::ptr::addr_of_mut!(iov[k]);
        hdrs[k].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every pointer refers to the local arrays or to `pkts`, which
    // outlive the call; the kernel only reads them.
    let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    usize::try_from(r).unwrap_or(0)
}

/// Waits up to `timeout_ms` until one of `fds` is readable.
pub fn wait_readable(fds: &[RawFd], timeout_ms: i32) {
    let mut p: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `p` is a valid array of pollfd for the duration of the call.
    let _ = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
}

/// Moves the calling thread (only) into the network namespace at `path`
/// (e.g. `/run/netns/NAME`): sockets it creates afterwards live there.
///
/// # Errors
/// Opening the namespace or `setns`.
pub fn enter_netns(path: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(path)?;
    // SAFETY: setns(2) takes an fd that `ns` keeps open for the call and a
    // flag; it changes this thread's namespace and touches no memory.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// CPU time of process `pid` (all its threads, running or exited) in
/// nanoseconds, from its CPU-time clock: the sum that `/proc/PID/stat`
/// splits into utime and stime, without the 10 ms ticks. `None` if the
/// process is gone.
#[must_use]
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the one clockid_t written.
    if unsafe { libc::clock_getcpuclockid(pid, &raw mut clock) } != 0 {
        return None;
    }
    // SAFETY: plain C struct; all-zero is a valid value.
    let mut ts: libc::timespec = unsafe { zeroed() };
    // SAFETY: `ts` is a valid place for the one timespec written.
    if unsafe { libc::clock_gettime(clock, &raw mut ts) } < 0 {
        return None;
    }
    Some(u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?)
}

/// Datagrams per `recvmmsg` and `sendmmsg` of the bare relay: media-relay's
/// batch.
pub const BATCH: usize = 32;
/// Receive buffer per datagram.
const BUF: usize = 2048;

/// One batch of received datagrams, sent on as they are.
pub struct Batch {
    bufs: Vec<[u8; BUF]>,
    lens: [usize; BATCH],
}

impl Default for Batch {
    fn default() -> Self {
        Self { bufs: vec![[0; BUF]; BATCH], lens: [0; BATCH] }
    }
}

impl Batch {
    /// Receives up to [`BATCH`] datagrams from `fd` without blocking (no
    /// source addresses, no control messages); 0 when nothing is queued or
    /// on an error.
    pub fn recv(&mut self, fd: RawFd) -> usize {
        // SAFETY: plain C structs; all-zero is a valid value.
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, buf) in self.bufs.iter_mut().enumerate() {
            iov[i].iov_base = buf.as_mut_ptr().cast();
            iov[i].iov_len = BUF;
            hdrs[i].msg_hdr.msg_iov = std::ptr::addr_of_mut!(iov[i]);
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every pointer in `hdrs` refers to `iov` or `self.bufs`,
        // which outlive the call; each iovec's length is its buffer's.
        let r = unsafe {
            libc::recvmmsg(fd, hdrs.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        let n = usize::try_from(r).unwrap_or(0).min(BATCH);
        for (len, h) in self.lens.iter_mut().zip(&hdrs).take(n) {
            *len = (h.msg_len as usize).min(BUF);
        }
        n
    }

    /// Sends the first `n` datagrams received through `fd` to `dest`
    /// without blocking; returns how many were queued.
    pub fn send(&self, fd: RawFd, n: usize, dest: SocketAddrV4) -> usize {
        let n = n.min(BATCH);
        // SAFETY: plain C structs; all-zero is a valid value.
        let mut addr: libc::sockaddr_in = unsafe { zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = dest.port().to_be();
        addr.sin_addr.s_addr = u32::from(*dest.ip()).to_be();
        // SAFETY: as above.
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..n {
            iov[i].iov_base = self.bufs[i].as_ptr().cast_mut().cast();
            iov[i].iov_len = self.lens[i];
            hdrs[i].msg_hdr.msg_name = std::ptr::addr_of_mut!(addr).cast();
            hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = std::ptr::addr_of_mut!(iov[i]);
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every pointer refers to `addr`, `iov` or `self.bufs`,
        // which outlive the call; the kernel only reads them.
        let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
        usize::try_from(r).unwrap_or(0)
    }
}

/// Events per [`Epoll::wait`].
pub const EVENTS: usize = 64;

/// An epoll instance (level-triggered, read readiness), closed on drop.
pub struct Epoll(OwnedFd);

impl Epoll {
    /// A new epoll instance.
    ///
    /// # Errors
    /// `epoll_create1`.
    pub fn new() -> io::Result<Self> {
        // SAFETY: no pointers; returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for reading; [`Epoll::wait`] reports it as `token`.
    ///
    /// # Errors
    /// `epoll_ctl`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: `ev` is valid for the call; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &raw mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (-1: for ever) for readable descriptors and
    /// writes their tokens to `tokens`; returns how many (0 on a timeout or
    /// an interrupted wait).
    pub fn wait(&self, tokens: &mut [u64; EVENTS], timeout_ms: i32) -> usize {
        // SAFETY: plain C structs; all-zero is a valid value.
        let mut evs: [libc::epoll_event; EVENTS] = unsafe { zeroed() };
        // SAFETY: `evs` holds EVENTS entries, as the kernel is told.
        let r = unsafe { libc::epoll_wait(self.0.as_raw_fd(), evs.as_mut_ptr(), EVENTS as libc::c_int, timeout_ms) };
        let n = usize::try_from(r).unwrap_or(0).min(EVENTS);
        for (t, ev) in tokens.iter_mut().zip(&evs).take(n) {
            *t = ev.u64;
        }
        n
    }
}
