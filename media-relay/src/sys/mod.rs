//! The one place for `unsafe` in the media relay: every system call and
//! raw-memory access the crate makes goes through a safe function here.
//! Each unsafe block says why it is sound in a `// SAFETY:` comment; the
//! rest of the crate denies `unsafe_code` (workspace lint).
//!
//! - [`udp`]: `recvmmsg`/`sendmmsg` batches and `SO_RXQ_OVFL`.
//! - [`xdp`]: the `AF_XDP` UMEM mapping, its rings' descriptors, TX kicks.
//! - [`frame_ring`]: the SPSC frame ring between `AF_XDP` workers.
//! - [`eventfd`]: wakeup counters.
//! - [`netlink`]: raw netlink sockets.
//! - this module: clocks, thread scheduling, signals, the CPU latency limit.
#![expect(unsafe_code, reason = "the crate's one module of system calls and raw memory; see the module doc")]

pub mod eventfd;
pub mod frame_ring;
pub mod netlink;
pub mod udp;
pub mod xdp;

pub use udp::{enable_rxq_ovfl, send_batch, RecvBatch, BATCH};

use std::io;
use std::mem::{zeroed, MaybeUninit};

/// Whether a send error means the destination cannot be reached now (the
/// egress link is down, or there is no route), rather than a full buffer.
#[must_use]
pub fn unreachable(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::ENETDOWN | libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENXIO))
}

/// Sets the calling thread's scheduling policy (`SCHED_FIFO` or
/// `SCHED_RR` with `priority`, or back to `SCHED_OTHER`).
///
/// # Errors
/// The `sched_setscheduler` error: `EPERM` without `CAP_SYS_NICE` (or an
/// `RLIMIT_RTPRIO` allowing it).
pub fn set_thread_scheduling(policy: crate::config::Scheduling) -> io::Result<()> {
    use crate::config::Scheduling;
    let (policy, priority) = match policy {
        Scheduling::Other => (libc::SCHED_OTHER, 0),
        Scheduling::Fifo(p) => (libc::SCHED_FIFO, libc::c_int::from(p)),
        Scheduling::RoundRobin(p) => (libc::SCHED_RR, libc::c_int::from(p)),
    };
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: pid 0 is the calling thread; `param` is a live sched_param.
    if unsafe { libc::sched_setscheduler(0, policy, &raw const param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Scheduling policy (`SCHED_*`, without the reset-on-fork flag) and
/// real-time priority of thread `tid` (0: the calling thread).
///
/// # Errors
/// The thread does not exist (ESRCH), or the caller may not see it.
pub fn thread_scheduling(tid: i32) -> io::Result<(i32, i32)> {
    // SAFETY: a plain syscall on a thread id.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    if policy < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a live sched_param the kernel writes.
    if unsafe { libc::sched_getparam(tid, &raw mut param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((policy & !libc::SCHED_RESET_ON_FORK, param.sched_priority))
}

/// Monotonic clock in nanoseconds (vDSO, no syscall). Read once per batch
/// and passed into the packet path.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: clock_gettime writes a timespec into our stack slot.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, ts.as_mut_ptr()) };
    if r != 0 {
        return 0;
    }
    // SAFETY: initialised by the successful call above.
    let ts = unsafe { ts.assume_init() };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and in every
/// thread it spawns afterwards), so that [`wait_for_signal`] receives them.
///
/// # Errors
/// The `pthread_sigmask` error.
pub fn block_signals() -> io::Result<()> {
    let set = signal_set();
    // SAFETY: `set` is a valid, initialised sigset_t on our stack.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Waits for SIGINT, SIGTERM or SIGHUP (blocked by [`block_signals`]) and
/// returns its number.
#[must_use]
pub fn wait_for_signal() -> i32 {
    let set = signal_set();
    let mut sig: libc::c_int = 0;
    // SAFETY: valid sigset and an out-pointer to our stack.
    let r = unsafe { libc::sigwait(&set, &mut sig) };
    if r == 0 {
        sig
    } else {
        libc::SIGTERM
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// The kernel's CPU latency limit file: while it is open, no core enters an
/// idle state that takes longer than the written value to leave.
pub const CPU_DMA_LATENCY: &str = "/dev/cpu_dma_latency";

/// Writes `us` to [`CPU_DMA_LATENCY`] (a native-endian `i32`). The limit
/// holds while the returned file is open; the kernel drops it when the file
/// is closed, also when the process dies.
///
/// # Errors
/// Opening (needs root and the device) or writing failed.
pub fn hold_cpu_latency(us: u32) -> io::Result<std::fs::File> {
    use std::io::Write;
    let v = i32::try_from(us).unwrap_or(i32::MAX);
    let mut f = std::fs::OpenOptions::new().write(true).open(CPU_DMA_LATENCY)?;
    f.write_all(&v.to_ne_bytes())?;
    Ok(f)
}
