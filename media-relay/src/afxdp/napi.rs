//! Threaded NAPI against real-time workers.
//!
//! With threaded NAPI (`/sys/class/net/IF/threaded` = 1) each of an
//! interface's NAPI contexts runs in a kernel thread named `napi/IF-ID`,
//! which feeds the `AF_XDP` worker on its core. When that thread runs at a
//! higher real-time priority than a real-time worker, every packet that
//! finds it idle wakes it and it preempts the worker, one switch per
//! packet. When it runs below the worker, it gets the core only while the
//! worker sleeps, so it delivers in batches. In `xdp-bench` at 100k pps
//! (NAPI thread at FIFO 50, workers at FIFO 40 against 60) that took the
//! `AF_XDP` p99 from 0.08–10 ms with up to 2.2 % loss to a median 11 µs
//! above the in-kernel forwarder's, with at most 0.08 % loss. Operators set these
//! priorities, so the relay reports what it finds (once per thread and
//! priority) instead of changing kernel threads itself.
//!
//! Threads are matched by name, as the kernel names them; the name carries
//! no namespace, so only interfaces with threaded NAPI in the relay's own
//! namespace are looked at.

use std::collections::HashMap;

use crate::config::Scheduling;

/// A kernel thread's scheduling policy and real-time priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `SCHED_*`.
    pub policy: i32,
    /// Real-time priority (0 for the time-sharing policies).
    pub priority: i32,
}

impl Policy {
    fn name(self) -> &'static str {
        match self.policy {
            libc::SCHED_FIFO => "fifo",
            libc::SCHED_RR => "rr",
            libc::SCHED_BATCH => "batch",
            libc::SCHED_IDLE => "idle",
            _ => "other",
        }
    }
}

/// The workers' real-time priority, if they run at one.
fn worker_priority(workers: Scheduling) -> Option<i32> {
    match workers {
        Scheduling::Other => None,
        Scheduling::Fifo(p) | Scheduling::RoundRobin(p) => Some(i32::from(p)),
    }
}

/// Whether a thread with `napi`'s policy preempts a worker at real-time
/// `worker` priority when it wakes. Equal priorities do not preempt.
#[must_use]
pub fn outranks(napi: Policy, worker: i32) -> bool {
    matches!(napi.policy, libc::SCHED_FIFO | libc::SCHED_RR) && napi.priority > worker
}

/// Whether `comm` names a NAPI thread of `interface` (`napi/IF-ID`). A
/// thread's name may be cut to 15 bytes, as the kernel cuts task names.
fn is_napi_thread_of(comm: &str, interface: &str) -> bool {
    let full = format!("napi/{interface}-");
    if comm.len() > 15 || full.len() <= 15 {
        return comm.starts_with(&full);
    }
    full.as_bytes().get(..15).is_some_and(|cut| comm.as_bytes() == cut)
}

/// The policy of thread `pid`, if it still exists.
fn policy_of(pid: i32) -> Option<Policy> {
    let (policy, priority) = crate::sys::thread_scheduling(pid).ok()?;
    Some(Policy { policy, priority })
}

/// Watches the NAPI threads of the `AF_XDP` interfaces (see the module).
pub struct NapiWatch {
    interfaces: Vec<String>,
    workers: Scheduling,
    /// What was last reported per thread.
    seen: HashMap<i32, Policy>,
}

impl NapiWatch {
    /// `None` when the workers use the time-sharing policy: then any
    /// real-time NAPI thread preempts them, as an interrupt would.
    #[must_use]
    pub fn new(interfaces: &[String], workers: Scheduling) -> Option<Self> {
        worker_priority(workers)?;
        Some(Self { interfaces: interfaces.to_vec(), workers, seen: HashMap::new() })
    }

    /// Looks at the threads again; logs each new thread, and each change of
    /// a thread's policy.
    pub fn check(&mut self) {
        let Some(worker) = worker_priority(self.workers) else { return };
        let threaded: Vec<&String> = self
            .interfaces
            .iter()
            .filter(|i| std::fs::read_to_string(format!("/sys/class/net/{i}/threaded")).is_ok_and(|t| t.trim() != "0"))
            .collect();
        if threaded.is_empty() {
            self.seen.clear();
            return;
        }
        let Ok(dir) = std::fs::read_dir("/proc") else { return };
        let mut alive = Vec::new();
        for e in dir.filter_map(Result::ok) {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else { continue };
            let comm = comm.trim();
            let Some(interface) = threaded.iter().find(|i| is_napi_thread_of(comm, i)) else { continue };
            let Some(now) = policy_of(pid) else { continue };
            alive.push(pid);
            if self.seen.insert(pid, now) == Some(now) {
                continue;
            }
            let workers = format!("{} {worker}", Policy { policy: self.policy(), priority: worker }.name());
            let napi = format!("{} {}", now.name(), now.priority);
            if outranks(now, worker) {
                tracing::warn!(
                    interface = %interface,
                    thread = comm,
                    pid,
                    napi = %napi,
                    workers = %workers,
                    "a threaded NAPI thread of an AF_XDP interface outranks the real-time media workers: it \
                     preempts a worker for every packet it delivers, which costs CPU and adds latency; set \
                     relay.worker_priority above {}, or lower the thread (chrt -f -p PRIORITY {pid})",
                    now.priority
                );
            } else {
                tracing::info!(
                    interface = %interface,
                    thread = comm,
                    pid,
                    napi = %napi,
                    workers = %workers,
                    "threaded NAPI thread below the real-time media workers: it delivers while they sleep"
                );
            }
        }
        self.seen.retain(|pid, _| alive.contains(pid));
    }

    fn policy(&self) -> i32 {
        match self.workers {
            Scheduling::RoundRobin(_) => libc::SCHED_RR,
            _ => libc::SCHED_FIFO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn p(policy: i32, priority: i32) -> Policy {
        Policy { policy, priority }
    }

    #[test]
    fn only_a_higher_real_time_priority_outranks() {
        assert!(outranks(p(libc::SCHED_FIFO, 50), 40));
        assert!(outranks(p(libc::SCHED_RR, 41), 40));
        assert!(!outranks(p(libc::SCHED_FIFO, 40), 40), "equal priorities do not preempt");
        assert!(!outranks(p(libc::SCHED_FIFO, 50), 60));
        assert!(!outranks(p(libc::SCHED_OTHER, 0), 1));
        assert!(!outranks(p(libc::SCHED_BATCH, 0), 1));
    }

    #[test]
    fn threads_are_matched_by_name_whole_or_cut_to_15_bytes() {
        assert!(is_napi_thread_of("napi/ra-8195", "ra"));
        assert!(!is_napi_thread_of("napi/rb-8195", "ra"));
        assert!(!is_napi_thread_of("napi/ra2-8195", "ra"));
        assert!(!is_napi_thread_of("napi/ra", "ra"));
        // "napi/enp1s0f0np0-12" is cut to its first 15 bytes.
        assert!(is_napi_thread_of("napi/enp1s0f0np", "enp1s0f0np0"));
        assert!(is_napi_thread_of("napi/enp1s0f0np0-12", "enp1s0f0np0"));
        assert!(!is_napi_thread_of("napi/enp1s0f0np1-12", "enp1s0f0np0"));
        assert!(!is_napi_thread_of("napi/enp1s0f0n", "enp1s0f0np0"));
    }

    #[test]
    fn time_sharing_workers_are_not_watched() {
        assert!(NapiWatch::new(&["ra".into()], Scheduling::Other).is_none());
        assert!(NapiWatch::new(&["ra".into()], Scheduling::Fifo(10)).is_some());
    }

    #[test]
    fn a_threads_policy_reads_back() {
        // The test harness's threads run at the default policy.
        assert_eq!(policy_of(0), Some(p(libc::SCHED_OTHER, 0)));
        assert!(policy_of(-5).is_none(), "no such thread");
    }
}
