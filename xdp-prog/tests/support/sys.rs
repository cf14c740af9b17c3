//! The tests' only `unsafe`: creating an `AF_XDP` socket and entering a
//! network namespace, which std has no wrappers for.
#![expect(unsafe_code, reason = "socket(2) for AF_XDP and setns(2) have no safe wrappers in std")]

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// An `AF_XDP` socket, not bound to any interface. The kernel accepts it in an
/// XSKMAP, which is all `bpf_redirect_map` looks at; in `BPF_PROG_TEST_RUN`
/// (without live frames) the redirect itself is never carried out.
pub fn unbound_xdp_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; it returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is open, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Moves the calling thread into the network namespace at `path` (e.g.
/// `/run/netns/NAME`). Sockets it creates afterwards live there; sockets
/// made before stay where they were made. Only this thread moves.
pub fn enter_netns(path: &str) -> io::Result<()> {
    let ns = std::fs::File::open(path)?;
    // SAFETY: setns(2) takes an fd that `ns` keeps open for the call and a
    // flag; it changes only this thread's namespace and touches no memory.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
