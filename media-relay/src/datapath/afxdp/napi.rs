//! Threaded NAPI against real-time workers.
//!
//! With threaded NAPI (`/sys/class/net/IF/threaded` = 1) each of an
//! interface's NAPI contexts runs in a kernel thread named `napi/IF-ID`,
//! which feeds the `AF_XDP` worker of its queue. When that thread shares a
//! core with a real-time worker and runs at a higher real-time priority,
//! each time it wakes (with no interrupt coalescing, nearly every packet)
//! it preempts the worker. When it runs below the worker, it gets the core
//! only while the worker sleeps, so it delivers in batches. In `xdp-bench` at 100k pps
//! (NAPI thread at FIFO 50, workers at FIFO 40 against 60) that took the
//! `AF_XDP` p99 from 0.08–10 ms with up to 2.2 % loss to a median 11 µs
//! above the in-kernel forwarder's, with at most 0.08 % loss. Operators set these
//! priorities, so the relay reports what it finds (once per thread and
//! priority) instead of changing kernel threads itself.
//!
//! The threads come from the kernel's generic netlink `netdev` family
//! (NAPI contexts per interface index, with their thread's pid; Linux 6.8
//! and later), asked in the relay's own namespace. On older kernels they
//! are matched by name among kernel threads, for interfaces with
//! `threaded` set; a name carries no namespace, so a same-named interface
//! in another namespace would be reported too. The workers' policy is the
//! configured one; a worker that could not take it (no `CAP_SYS_NICE`)
//! has already said so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
            SCHED_DEADLINE => "deadline",
            _ => "other",
        }
    }
}

/// `SCHED_DEADLINE` (linux/sched.h), above every real-time priority.
const SCHED_DEADLINE: i32 = 6;

/// The `PF_KTHREAD` bit of a task's flags (field 9 of `/proc/PID/stat`).
const PF_KTHREAD: u64 = 0x0020_0000;

/// How often the threads are looked at, at most.
const EVERY: Duration = Duration::from_secs(5);

/// Whether a thread with `napi`'s policy preempts a worker at real-time
/// `worker` priority when it wakes. Equal priorities do not preempt.
#[must_use]
pub fn outranks(napi: Policy, worker: i32) -> bool {
    match napi.policy {
        libc::SCHED_FIFO | libc::SCHED_RR => napi.priority > worker,
        SCHED_DEADLINE => true,
        _ => false,
    }
}

/// Whether `comm` names a NAPI thread of `interface` (`napi/IF-ID`, ID in
/// digits). A thread's name may be cut to 15 bytes, as the kernel cuts
/// task names.
fn is_napi_thread_of(comm: &str, interface: &str) -> bool {
    let full = format!("napi/{interface}-");
    if let Some(id) = comm.strip_prefix(&full) {
        return comm.len() == 15 && id.bytes().all(|b| b.is_ascii_digit())
            || !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    }
    full.len() > 15 && comm.len() == 15 && full.as_bytes().get(..15).is_some_and(|cut| comm.as_bytes() == cut)
}

/// Whether `/proc/PID/stat` says the task is a kernel thread.
fn is_kernel_thread(stat: &str) -> bool {
    // The fields after the name, which is in parentheses: state is the
    // first (field 3), flags the seventh (field 9).
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6))
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// The policy of thread `pid`, if it still exists.
fn policy_of(pid: i32) -> Option<Policy> {
    let (policy, priority) = crate::sys::thread_scheduling(pid).ok()?;
    Some(Policy { policy, priority })
}

/// The NAPI threads of `interface` found by name among kernel threads
/// (kernels without the netdev family's NAPI dump), if it runs threaded.
fn threads_by_name(interface: &str) -> Vec<(i32, String)> {
    let threaded = std::fs::read_to_string(format!("/sys/class/net/{interface}/threaded"));
    if !threaded.is_ok_and(|t| t.trim() != "0") {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for e in dir.filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else { continue };
        let comm = comm.trim();
        if is_napi_thread_of(comm, interface)
            && std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| is_kernel_thread(&s))
        {
            out.push((pid, comm.to_owned()));
        }
    }
    out
}

/// The NAPI threads of `interface` (index `ifindex` in this namespace):
/// from the kernel's netdev family, exactly, or else by name.
fn threads_of(interface: &str, ifindex: u32) -> Vec<(i32, String)> {
    match super::neigh::napi_contexts(ifindex) {
        Ok(napis) => napis
            .iter()
            .filter_map(|n| n.pid)
            .map(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                (pid, comm.trim().to_owned())
            })
            .collect(),
        Err(_) => threads_by_name(interface),
    }
}

/// How many NAPI threads outrank the real-time workers and how many run
/// below them, as of the last look (for `/metrics`).
#[derive(Debug, Default)]
pub struct Ranks {
    above: AtomicUsize,
    below: AtomicUsize,
}

impl Ranks {
    /// (above the workers, below them).
    #[must_use]
    pub fn get(&self) -> (usize, usize) {
        (self.above.load(Relaxed), self.below.load(Relaxed))
    }
}

/// Watches the NAPI threads of the `AF_XDP` interfaces (see the module).
pub struct NapiWatch {
    /// Name and index of each interface.
    interfaces: Vec<(String, u32)>,
    /// The workers' real-time priority, and how the log names their policy.
    worker: i32,
    workers: String,
    /// What was last reported per thread (pid, and its name: pids are
    /// reused).
    seen: HashMap<(i32, String), Policy>,
    last: Option<Instant>,
    ranks: Arc<Ranks>,
}

impl NapiWatch {
    /// `None` when the workers use the time-sharing policy: then any
    /// real-time NAPI thread preempts them, as an interrupt would.
    #[must_use]
    pub fn new(interfaces: &[(String, u32)], workers: Scheduling) -> Option<Self> {
        let (name, worker) = match workers {
            Scheduling::Other => return None,
            Scheduling::Fifo(p) => ("fifo", i32::from(p)),
            Scheduling::RoundRobin(p) => ("rr", i32::from(p)),
        };
        Some(Self {
            interfaces: interfaces.to_vec(),
            worker,
            workers: format!("{name} {worker}"),
            seen: HashMap::new(),
            last: None,
            ranks: Arc::new(Ranks::default()),
        })
    }

    /// The counts this watch keeps current.
    #[must_use]
    pub fn ranks(&self) -> Arc<Ranks> {
        Arc::clone(&self.ranks)
    }

    /// Looks at the threads again, unless it did less than 5 s before
    /// `now`; logs each new thread, and each change of a thread's policy.
    pub fn check(&mut self, now: Instant) {
        if self.last.is_some_and(|t| now.saturating_duration_since(t) < EVERY) {
            return;
        }
        self.last = Some(now);
        let worker = self.worker;
        let mut alive = Vec::new();
        for (interface, ifindex) in &self.interfaces {
            for (pid, comm) in threads_of(interface, *ifindex) {
                let Some(now) = policy_of(pid) else { continue };
                if self.seen.insert((pid, comm.clone()), now) != Some(now) {
                    self.report(interface, pid, &comm, now);
                }
                alive.push((pid, comm));
            }
        }
        self.seen.retain(|key, _| alive.contains(key));
        let above = self.seen.values().filter(|p| outranks(**p, worker)).count();
        self.ranks.above.store(above, Relaxed);
        self.ranks.below.store(self.seen.len() - above, Relaxed);
    }

    fn report(&self, interface: &str, pid: i32, comm: &str, now: Policy) {
        let napi = format!("{} {}", now.name(), now.priority);
        if outranks(now, self.worker) {
            tracing::warn!(
                interface,
                thread = comm,
                pid,
                napi = %napi,
                workers = %self.workers,
                "a threaded NAPI thread of an AF_XDP interface outranks the real-time media workers: each \
                 time it wakes it preempts a worker on its core, which costs CPU and adds latency; {}lower the \
                 thread (chrt -f -p PRIORITY {pid}, or chrt -o -p 0 {pid})",
                if now.policy == SCHED_DEADLINE || now.priority >= 99 {
                    String::new()
                } else {
                    format!("set relay.worker_priority above {}, or ", now.priority)
                }
            );
        } else {
            tracing::info!(
                interface,
                thread = comm,
                pid,
                napi = %napi,
                workers = %self.workers,
                "threaded NAPI thread below the real-time media workers: it delivers while they sleep"
            );
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
    fn kernel_threads_are_told_by_their_flags() {
        // A kthread (flags 0x208040) and a user process (0x400100); the
        // name may hold spaces and parentheses.
        assert!(is_kernel_thread("1063 (napi/ra-1063) S 2 0 0 0 -1 2129984 0 0 0 0 0 3 0 0 -51 0 1 0"));
        assert!(!is_kernel_thread("77 (napi/ra-1 (x)) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0"));
        assert!(!is_kernel_thread("garbage"));
    }

    #[test]
    fn only_a_higher_real_time_priority_outranks() {
        assert!(outranks(p(libc::SCHED_FIFO, 50), 40));
        assert!(outranks(p(libc::SCHED_RR, 41), 40));
        assert!(!outranks(p(libc::SCHED_FIFO, 40), 40), "equal priorities do not preempt");
        assert!(!outranks(p(libc::SCHED_FIFO, 50), 60));
        assert!(!outranks(p(libc::SCHED_OTHER, 0), 1));
        assert!(!outranks(p(libc::SCHED_BATCH, 0), 1));
        assert!(outranks(p(SCHED_DEADLINE, 0), 99), "deadline tasks run before every real-time one");
    }

    #[test]
    fn threads_are_matched_by_name_whole_or_cut_to_15_bytes() {
        assert!(is_napi_thread_of("napi/ra-8195", "ra"));
        assert!(!is_napi_thread_of("napi/rb-8195", "ra"));
        assert!(!is_napi_thread_of("napi/ra2-8195", "ra"));
        assert!(!is_napi_thread_of("napi/ra", "ra"));
        assert!(!is_napi_thread_of("napi/ra-x-12", "ra"), "interface ra-x");
        assert!(!is_napi_thread_of("napi/ra-", "ra"));
        // "napi/enp1s0f0np0-12" is cut to its first 15 bytes.
        assert!(is_napi_thread_of("napi/enp1s0f0np", "enp1s0f0np0"));
        assert!(is_napi_thread_of("napi/enp1s0f0np0-12", "enp1s0f0np0"));
        assert!(!is_napi_thread_of("napi/enp1s0f0np1-12", "enp1s0f0np0"));
        assert!(!is_napi_thread_of("napi/enp1s0f0n", "enp1s0f0np0"));
    }

    #[test]
    fn time_sharing_workers_are_not_watched() {
        assert!(NapiWatch::new(&[("ra".into(), 2)], Scheduling::Other).is_none());
        assert!(NapiWatch::new(&[("ra".into(), 2)], Scheduling::Fifo(10)).is_some());
    }

    #[test]
    fn a_threads_policy_reads_back() {
        // The test harness's threads run at the default policy.
        assert_eq!(policy_of(0), Some(p(libc::SCHED_OTHER, 0)));
        assert!(policy_of(-5).is_none(), "no such thread");
    }
}
