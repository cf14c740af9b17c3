//! What the benches read from `/proc`: a process's CPU time and resident
//! memory, and a core's busy and stolen ticks. Ticks are `USER_HZ` (100 a
//! second, 10 ms each).

/// CPU time of process `pid` so far (utime + stime, all its threads), in
/// ticks; 0 if it cannot be read.
#[must_use]
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // Fields after the ")" of the command name: utime is 14th, stime 15th overall.
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
}

/// Resident memory of process `pid`, KiB; 0 if it cannot be read.
#[must_use]
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Ticks of a core: busy (user, nice, system, irq, softirq) and stolen
/// (the hypervisor ran something else while this vCPU wanted to run).
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreTicks {
    /// user + nice + system + irq + softirq.
    pub busy: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
}

impl CoreTicks {
    /// Cores 0 and 1, from one read of `/proc/stat`.
    #[must_use]
    pub fn read() -> [Self; 2] {
        let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let core = |tag: &str| s.lines().find(|l| l.starts_with(tag)).map_or_else(Self::default, Self::parse);
        [core("cpu0 "), core("cpu1 ")]
    }

    /// `cpuN user nice system idle iowait irq softirq steal guest guest_nice`
    #[must_use]
    pub fn parse(line: &str) -> Self {
        let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let f = |i: usize| v.get(i).copied().unwrap_or(0);
        Self { busy: f(0) + f(1) + f(2) + f(5) + f(6), steal: f(7) }
    }

    /// Busy and stolen shares of `secs` since `before`.
    #[must_use]
    pub fn shares(self, before: Self, secs: f64) -> (f64, f64) {
        // Ticks are 10 ms (USER_HZ 100).
        let share = |t: u64| t as f64 / (secs * 100.0);
        (share(self.busy.saturating_sub(before.busy)), share(self.steal.saturating_sub(before.steal)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_ticks_leave_idle_iowait_and_steal_out_of_busy() {
        let t0 = CoreTicks::parse("cpu0 100 5 50 1000 7 3 20 9 0 0");
        assert_eq!((t0.busy, t0.steal), (178, 9));
        let t1 = CoreTicks::parse("cpu0 200 5 100 1100 9 3 40 59 0 0");
        // Over 2 s (200 ticks): 170 busy ticks, 50 stolen.
        let (busy, steal) = t1.shares(t0, 2.0);
        assert!((busy - 0.85).abs() < 1e-9, "{busy}");
        assert!((steal - 0.25).abs() < 1e-9, "{steal}");
        // A short or garbled line reads as zeros rather than failing.
        assert_eq!(CoreTicks::parse("cpu0 1 2").busy, 3);
        assert_eq!(CoreTicks::parse("cpu0").steal, 0);
    }
}
