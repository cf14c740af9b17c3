//! The test kit's only `unsafe`: the system calls std has no wrapper for.
//! Entering a network namespace (setns), signalling a process (kill), an
//! `AF_PACKET` socket that sends whole frames, one that captures every
//! frame of an interface, and an unbound `AF_XDP` socket.
#![expect(unsafe_code, reason = "setns(2), kill(2), AF_PACKET and AF_XDP sockets have no safe wrappers in std")]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Moves the calling thread (only) into the network namespace at `path`
/// (e.g. `/run/netns/NAME`). Sockets it creates afterwards live there;
/// sockets made before stay where they were made.
pub fn enter_netns(path: &str) -> io::Result<()> {
    let ns = std::fs::File::open(path)?;
    // SAFETY: setns(2) takes an fd that `ns` keeps open for the call and a
    // flag; it changes only this thread's namespace and touches no memory.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `sig` to `pid` (or, if `pid` is negative, to that process group).
pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and has no memory-safety
    // preconditions; callers pass ids of processes (or the process group)
    // they spawned and have not yet reaped.
    let _ = unsafe { libc::kill(pid, sig) };
}

/// Takes ownership of the fd a socket(2) call returned, or its error.
fn owned_socket(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is open, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `AF_XDP` socket, not bound to any interface. The kernel accepts it in
/// an XSKMAP, which is all `bpf_redirect_map` looks at; in
/// `BPF_PROG_TEST_RUN` (without live frames) the redirect itself is never
/// carried out.
pub fn unbound_xdp_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; it returns a new fd or -1.
    owned_socket(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })
}

/// The index of interface `dev` in the calling thread's namespace.
fn ifindex(dev: &str) -> io::Result<i32> {
    let name = CString::new(dev).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    i32::try_from(ifindex).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A packet socket that receives every frame (`ETH_P_ALL`), in and out,
/// of one interface of the calling thread's namespace: a capture.
pub struct CaptureSocket {
    fd: OwnedFd,
}

impl CaptureSocket {
    /// Opens the capture on `dev`; each [`CaptureSocket::recv`] waits at
    /// most `timeout`.
    pub fn open(dev: &str, timeout: std::time::Duration) -> io::Result<CaptureSocket> {
        let ifindex = ifindex(dev)?;
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket(2) takes no pointers; it returns a new fd or -1.
        let fd = owned_socket(unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(all))
        })?;
        // SAFETY: all-zero is a valid sockaddr_ll (a plain C struct).
        let mut at: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        at.sll_family = libc::AF_PACKET as u16;
        at.sll_protocol = all;
        at.sll_ifindex = ifindex;
        let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).unwrap_or(libc::socklen_t::MAX);
        // SAFETY: the address is valid for `len` bytes for the call.
        if unsafe { libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(at).cast(), len) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros().max(1)),
        };
        let tv_len = libc::socklen_t::try_from(size_of::<libc::timeval>()).unwrap_or(libc::socklen_t::MAX);
        // SAFETY: `tv` is a valid timeval for `tv_len` bytes for the call.
        let set = unsafe {
            libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, std::ptr::addr_of!(tv).cast(), tv_len)
        };
        if set < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(CaptureSocket { fd })
    }

    /// The next frame into `buf` (its length), or an error (`WouldBlock` /
    /// `TimedOut` when nothing came within the timeout).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the buffer is valid and writable for `buf.len()` bytes.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

/// A packet socket on one interface of the calling thread's network
/// namespace: sends whole Ethernet frames, as they are.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens a raw `AF_PACKET` socket for interface `dev`.
    pub fn open(dev: &str) -> io::Result<PacketSocket> {
        let ifindex = ifindex(dev)?;
        // SAFETY: socket(2) takes no pointers; it returns a new fd or -1.
        let fd = owned_socket(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        Ok(PacketSocket { fd, ifindex })
    }

    /// Sends `frame` (at least an Ethernet header) out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "shorter than an Ethernet header"));
        }
        // SAFETY: all-zero is a valid sockaddr_ll (a plain C struct).
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = self.ifindex;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).unwrap_or(libc::socklen_t::MAX);
        // SAFETY: the buffer and the address are valid for the lengths
        // given, for the duration of the call.
        let sent = unsafe {
            libc::sendto(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0, std::ptr::addr_of!(to).cast(), len)
        };
        match usize::try_from(sent) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(n) => Err(io::Error::other(format!("sent {n} of {} bytes", frame.len()))),
            Err(_) => Err(io::Error::last_os_error()),
        }
    }
}
