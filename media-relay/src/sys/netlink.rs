//! A raw netlink socket (`NETLINK_ROUTE`, `NETLINK_GENERIC`): open, bind,
//! send a request, receive a datagram.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A `NETLINK_ROUTE` socket.
pub struct Netlink {
    fd: OwnedFd,
}

impl Netlink {
    /// Opens a socket subscribed to the multicast `groups` (0: none), with
    /// a receive timeout so a reader can check for shutdown.
    ///
    /// # Errors
    /// The `socket`/`bind`/`setsockopt` error.
    pub fn open(groups: u32, timeout_ms: u32) -> io::Result<Self> {
        Self::open_protocol(libc::NETLINK_ROUTE, groups, timeout_ms)
    }

    /// [`Netlink::open`] for another netlink `protocol` (`NETLINK_GENERIC`).
    ///
    /// # Errors
    /// The `socket`/`bind`/`setsockopt` error.
    pub fn open_protocol(protocol: libc::c_int, groups: u32, timeout_ms: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain old data; all-zero is valid.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups = groups;
        // SAFETY: `sa` is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sa).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: libc::time_t::from(timeout_ms / 1000),
            tv_usec: libc::suseconds_t::from((timeout_ms % 1000) * 1000),
        };
        // SAFETY: SO_RCVTIMEO takes a timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let big: libc::c_int = 1 << 20;
        // SAFETY: SO_RCVBUF takes an int. Failure only means a smaller buffer.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                std::ptr::from_ref(&big).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(Self { fd })
    }

    /// Sends one request to the kernel.
    ///
    /// # Errors
    /// The `send` error.
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: `msg` is valid for reads of its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one datagram (several netlink messages) into `buf`;
    /// `nonblocking` returns `WouldBlock` instead of waiting.
    ///
    /// # Errors
    /// The `recv` error (`WouldBlock` on timeout).
    pub fn recv(&self, buf: &mut [u8], nonblocking: bool) -> io::Result<usize> {
        let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// The descriptor (for logging).
    #[must_use]
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
