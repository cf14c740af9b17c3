//! `AF_XDP`: the UMEM mapping and access to its frames, its registration,
//! the sockets' descriptors, TX wakeups and options, and moving a worker's
//! sockets to its thread.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// An anonymous, page-aligned, populated memory mapping: the UMEM area.
/// Owned by one worker; unmapped on drop (after the sockets using it,
/// which the worker drops first).
pub struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving it to
// another thread moves the ownership with it.
unsafe impl Send for Mmap {}

impl Mmap {
    /// Maps `len` bytes of zeroed anonymous memory.
    ///
    /// # Errors
    /// The `mmap` error.
    pub fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Self { ptr, len })
    }

    /// The whole area, for registering it as UMEM.
    #[must_use]
    pub fn area(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }

    /// The bytes `[offset, offset + len)`, or `None` when out of the area.
    ///
    /// Callers only ask for frames they own: received from an RX ring and
    /// not yet handed back to a fill or TX ring, so the kernel does not
    /// touch them meanwhile. `&mut self` makes the borrow exclusive on our
    /// side.
    pub fn slice_mut(&mut self, offset: u64, len: usize) -> Option<&mut [u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: [start, end) lies inside the mapping (checked above), the
        // mapping lives as long as `self`, and the exclusive borrow of
        // `self` keeps any other Rust reference into it from coexisting.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), len) })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region mapped in `new`; no slice
        // borrowed from it can outlive `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Registers `mem` as the UMEM of a new `AF_XDP` socket.
///
/// # Errors
/// The kernel's errno.
pub fn register_umem(cfg: xdpilone::UmemConfig, mem: &Mmap) -> Result<xdpilone::Umem, xdpilone::Errno> {
    // SAFETY: the area is a page-aligned mapping; the caller (`Xsk`) keeps
    // `mem` alive, and drops it only after the UMEM and its sockets.
    unsafe { xdpilone::Umem::new(cfg, mem.area()) }
}

/// The descriptor of an `AF_XDP` socket, borrowed from its RX ring.
#[must_use]
pub fn ring_fd(rx: &xdpilone::RingRx) -> BorrowedFd<'_> {
    // SAFETY: the ring holds a reference-counted owner of the descriptor,
    // so it stays open for as long as `rx` is borrowed.
    unsafe { BorrowedFd::borrow_raw(rx.as_raw_fd()) }
}

/// A zero-length `sendto` on a TX ring's socket, which makes the kernel
/// send what the ring holds (copy mode: up to 32 frames in the call).
/// Returns the errno on failure.
#[must_use]
pub fn kick_tx(tx: &xdpilone::RingTx) -> Option<i32> {
    // SAFETY: no buffer or address is passed; the ring holds the socket
    // open while `tx` is borrowed.
    let r = unsafe { libc::sendto(tx.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
    if r < 0 {
        io::Error::last_os_error().raw_os_error()
    } else {
        None
    }
}

/// Whether a bound `AF_XDP` socket runs in the driver's zero-copy mode
/// (`XDP_OPTIONS`); `None` when the kernel does not say.
#[must_use]
pub fn xsk_zero_copy(fd: BorrowedFd<'_>) -> Option<bool> {
    let mut opts = libc::xdp_options { flags: 0 };
    let mut len = std::mem::size_of::<libc::xdp_options>() as libc::socklen_t;
    // SAFETY: `opts` and `len` are valid for writes of the sizes given, and
    // `fd` is open for the duration of the call.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            std::ptr::addr_of_mut!(opts).cast(),
            std::ptr::addr_of_mut!(len),
        )
    };
    (r == 0).then_some(opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
}

/// An [`crate::datapath::afxdp::umem::Xsk`] on its way from the thread that opened it to the
/// worker that will own it.
pub struct SendXsk(pub crate::datapath::afxdp::umem::Xsk);

impl SendXsk {
    /// The sockets, on the thread that will own them.
    #[must_use]
    pub fn into_inner(self) -> crate::datapath::afxdp::umem::Xsk {
        self.0
    }
}

// SAFETY: an `Xsk` owns everything it points into: its memory mapping and
// the rings mapped from its own sockets (kept open by the reference-counted
// descriptors inside). Nothing in it is tied to the creating thread, and it
// is moved whole, so exactly one thread uses it at a time.
unsafe impl Send for SendXsk {}
