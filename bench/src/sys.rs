//! `sendmmsg` to many IPv4 destinations at once, and entering a network
//! namespace (the bench's only unsafe code). Receiving uses the relay's own
//! batched receiver.
#![allow(unsafe_code)]

use std::mem::zeroed;
use std::net::SocketAddrV4;
use std::os::fd::RawFd;

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
