//! The namespace lab: two namespaces joined by two veth pairs, the
//! generator's sockets in it, and what the lab's counters say (NAPI
//! pinning, the generator side's drops).

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};

pub(super) fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `ethtool -K DEV FEATURE on|off` inside namespace `ns`; whether it worked.
pub(super) fn ethtool_k(ns: &str, dev: &str, feature: &str, on: bool) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-K", dev, feature, if on { "on" } else { "off" }])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The two namespaces, removed on drop.
pub(super) struct Lab {
    /// The generator's namespace.
    pub(super) gen: String,
    /// The relay's namespace.
    pub(super) relay: String,
}

impl Lab {
    pub(super) fn new(coalesce_us: u64) -> Result<Self, String> {
        let id = std::process::id();
        let lab = Self { gen: format!("xbench-gen-{id}"), relay: format!("xbench-relay-{id}") };
        ip(&["netns", "add", &lab.gen])?;
        ip(&["netns", "add", &lab.relay])?;
        let (g, r) = (lab.gen.as_str(), lab.relay.as_str());
        ip(&["-n", r, "link", "add", "ra", "type", "veth", "peer", "name", "ga", "netns", g])?;
        ip(&["-n", r, "link", "add", "rb", "type", "veth", "peer", "name", "gb", "netns", g])?;
        ip(&["-n", r, "addr", "add", "10.1.0.1/24", "dev", "ra"])?;
        ip(&["-n", r, "addr", "add", "10.2.0.1/24", "dev", "rb"])?;
        ip(&["-n", g, "addr", "add", "10.1.0.2/24", "dev", "ga"])?;
        ip(&["-n", g, "addr", "add", "10.2.0.2/24", "dev", "gb"])?;
        for (ns, dev) in [(r, "ra"), (r, "rb"), (r, "lo"), (g, "ga"), (g, "gb"), (g, "lo")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        // Full UDP checksums from the generator, as from a NIC (a veth would
        // otherwise hand over CHECKSUM_PARTIAL frames).
        for dev in ["ga", "gb"] {
            if !ethtool_k(g, dev, "tx", false) {
                return Err(format!("ethtool -K {dev} tx off failed (is ethtool installed?)"));
            }
        }
        // The relay core carries the relay side's kernel work for every path:
        // with GRO on, `ra` receives through NAPI, and threaded NAPI puts
        // that in a kthread pinned to core 0 (see `pin_napi`) instead of
        // the generator's core, where a veth would otherwise run it.
        let ok = ethtool_k(r, "ra", "gro", true)
            && Command::new("ip")
                .args(["netns", "exec", r, "sh", "-c", "echo 1 > /sys/class/net/ra/threaded"])
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            return Err("threaded NAPI on ra (ethtool -K ra gro on; /sys/class/net/ra/threaded) failed".into());
        }
        if coalesce_us > 0 {
            // Interrupt moderation, as a NIC does it: after a poll that found
            // packets, `ra`'s NAPI is not re-armed by each new packet but
            // polled again when the timer fires. Without it, every packet
            // that finds NAPI idle wakes the NAPI thread.
            let set = format!(
                "echo {} > /sys/class/net/ra/gro_flush_timeout && echo 2 > /sys/class/net/ra/napi_defer_hard_irqs",
                coalesce_us * 1000
            );
            let ok =
                Command::new("ip").args(["netns", "exec", r, "sh", "-c", &set]).status().is_ok_and(|s| s.success());
            if !ok {
                return Err("interrupt moderation on ra (/sys/class/net/ra/gro_flush_timeout) failed".into());
            }
        }
        Ok(lab)
    }

    pub(super) fn enter(&self, ns: &str) -> Result<(), String> {
        crate::enter_netns(&format!("/run/netns/{ns}")).map_err(|e| format!("entering {ns}: {e}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.gen]);
        let _ = ip(&["netns", "del", &self.relay]);
    }
}

pub(super) fn udp(addr: [u8; 4]) -> Result<UdpSocket, String> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).map_err(|e| e.to_string())?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.bind(&SocketAddr::from((addr, 0)).into()).map_err(|e| e.to_string())?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(s.into())
}

pub(super) fn port(s: &UdpSocket) -> u16 {
    s.local_addr().map(|a| a.port()).unwrap_or(0)
}

/// Pins the NAPI kthreads of `ra` (re-created when an XDP program is
/// attached) to core 0, the relay's core, at `SCHED_FIFO` `priority` (0:
/// the normal policy).
pub(super) fn pin_napi(priority: u8) {
    let Ok(dir) = std::fs::read_dir("/proc") else { return };
    for e in dir.filter_map(Result::ok) {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with("napi/ra-") {
            let pid = e.file_name().to_string_lossy().into_owned();
            let _ = Command::new("taskset").args(["-pc", "0", &pid]).stdout(Stdio::null()).status();
            // Like a NIC interrupt on the relay core: it preempts the worker.
            let policy = if priority == 0 { "-o" } else { "-f" };
            let _ =
                Command::new("chrt").args([policy, "-p", &priority.to_string(), &pid]).stdout(Stdio::null()).status();
        }
    }
}

/// Packets the generator's namespace dropped: the sinks' sockets
/// overflowed (`RcvbufErrors`: the harness's core fell behind), or `ga`
/// found `ra`'s receive ring full (its transmit drops: the relay core's
/// NAPI fell behind, as a NIC's ring overflows).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct GenDrops {
    /// The sinks' sockets overflowed.
    pub(super) sinks: u64,
    /// `ra`'s receive ring was full.
    pub(super) ra_ring: u64,
    /// `gb`'s receive drops (with a BPF sink: its ring or backlog was full).
    pub(super) gb_rx: u64,
}

impl GenDrops {
    /// Reads the counters of the calling thread's namespace.
    pub(super) fn read() -> Self {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
        let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
        let sinks = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "RcvbufErrors")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        // `ga: rx bytes packets errs drop fifo frame compressed multicast
        // tx bytes packets errs drop ...`: the transmit drops are the 12th.
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default();
        let field = |ifname: &str, i: usize| -> u64 {
            dev.lines()
                .find_map(|l| l.trim_start().strip_prefix(ifname))
                .and_then(|r| r.split_whitespace().nth(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Self { sinks, ra_ring: field("ga:", 11), gb_rx: field("gb:", 3) }
    }

    pub(super) fn since(self, before: Self) -> Self {
        Self {
            sinks: self.sinks.saturating_sub(before.sinks),
            ra_ring: self.ra_ring.saturating_sub(before.ra_ring),
            gb_rx: self.gb_rx.saturating_sub(before.gb_rx),
        }
    }
}
