//! Eventfd wakeup counters: create one, add one to it, read it.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A new non-blocking, close-on-exec eventfd.
///
/// # Errors
/// The `eventfd` error.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new
    // descriptor that we own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter (wakes its poll).
pub fn wake(fd: RawFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live local buffer to a descriptor we own
    // (through `Mesh`); a full counter gives EAGAIN, which still leaves it
    // readable, so nothing is lost.
    let _ = unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
}

#[cfg(test)]
/// Reads (and resets) the counter into `out`; returns what `read` returned
/// (8, or -1 when the counter is zero).
pub fn read(fd: RawFd, out: &mut [u8; 8]) -> isize {
    // SAFETY: reads at most 8 bytes into a live 8-byte buffer.
    unsafe { libc::read(fd, out.as_mut_ptr().cast(), out.len()) }
}
