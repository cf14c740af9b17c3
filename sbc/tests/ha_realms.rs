//! High availability across two realms, end to end: each sbc node has one
//! leg on an inside LAN and one on an outside LAN, and the pair holds one
//! virtual IP on each. A caller on the inside calls a carrier trunk on the
//! outside (`xsbc-ua`, which measures RTP gaps); the two LANs have no route
//! to each other, so every SIP message and RTP packet crosses the sbc.
//!
//! ```text
//!   caller .1.21 ─┐                    ┌─ eth0 sbc A eth1 ─┐                    ┌─ callee .2.22
//!   redis  .1.1  ─┼─ inside 10.66.1/24 ┤                   ├─ outside 10.66.2/24 ┤
//!                 │   VIP .1.100       └─ eth0 sbc B eth1 ─┘   VIP .2.100        │
//! ```
//!
//! Scenarios: `kill -9` of the active node mid-call (the standby claims both
//! VIPs, media keeps flowing both ways, BYEs from either side end the calls
//! through it) and a planned handover with `sbc ctl failover` (both VIPs move
//! at once). Needs root and `redis-server`; without them the test says so
//! and skips, except under CI=true, where it must run.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use testkit::Netns;

mod support;
use support::lab::{json_lines, remove_unless_failing, sh, sh_out, spawn_in, xsbc_ua, Proc};

static SERIAL: Mutex<()> = Mutex::new(());

const INSIDE: &str = "10.66.1";
const OUTSIDE: &str = "10.66.2";
const VIP_IN: &str = "10.66.1.100";
const VIP_OUT: &str = "10.66.2.100";

/// Whether the lab can run; says why not (and fails under CI=true).
fn can_run() -> bool {
    testkit::env::require_root_and("HA lab", &["redis-server"])
}

struct Lab {
    /// The hosts' namespaces; dropped after the processes in them
    /// (`Drop for Lab` stops those first).
    nets: Vec<(&'static str, Netns)>,
    dir: PathBuf,
    procs: Vec<Proc>,
}

impl Lab {
    fn ns(&self, host: &str) -> String {
        let (_, ns) = self.nets.iter().find(|(h, _)| *h == host).unwrap_or_else(|| panic!("no host {host}"));
        ns.name().to_owned()
    }

    /// Plugs `dev` of `host` into the bridge of `lan` with `addr`.
    fn plug(&self, lan: &str, host: &str, dev: &str, addr: &str) {
        let (lan_ns, ns) = (self.ns(lan), self.ns(host));
        let peer = format!("v{host}{dev}");
        assert!(sh(&["ip", "-n", &lan_ns, "link", "add", &peer, "type", "veth", "peer", "name", dev, "netns", &ns]));
        assert!(sh(&["ip", "-n", &lan_ns, "link", "set", &peer, "master", "br0", "up"]));
        assert!(sh(&["ip", "-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", dev]));
        assert!(sh(&["ip", "-n", &ns, "link", "set", dev, "up"]));
    }

    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xsbc-har-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let nets = ["in", "out", "r", "a", "b", "caller", "callee"]
            .map(|host| (host, Netns::new(&format!("hr{tag}-{host}")).unwrap_or_else(|e| panic!("netns: {e}"))));
        let lab = Self { nets: nets.into(), dir, procs: Vec::new() };
        for lan in ["in", "out"] {
            let ns = lab.ns(lan);
            assert!(sh(&["ip", "-n", &ns, "link", "add", "br0", "type", "bridge"]));
            assert!(sh(&["ip", "-n", &ns, "link", "set", "br0", "up"]));
        }
        lab.plug("in", "r", "eth0", &format!("{INSIDE}.1"));
        lab.plug("in", "caller", "eth0", &format!("{INSIDE}.21"));
        lab.plug("out", "callee", "eth0", &format!("{OUTSIDE}.22"));
        for (node, ip) in [("a", 11), ("b", 12)] {
            lab.plug("in", node, "eth0", &format!("{INSIDE}.{ip}"));
            lab.plug("out", node, "eth1", &format!("{OUTSIDE}.{ip}"));
        }
        for host in ["r", "a", "b", "caller", "callee"] {
            assert!(sh(&["ip", "-n", &lab.ns(host), "link", "set", "lo", "up"]));
        }
        lab
    }

    fn spawn(&mut self, host: &str, name: &str, cmd: &[&str]) -> usize {
        let p = spawn_in(&self.ns(host), &self.dir, name, cmd);
        self.procs.push(p);
        self.procs.len() - 1
    }

    fn start_redis(&mut self) {
        let bind = format!("{INSIDE}.1");
        self.spawn(
            "r",
            "redis",
            &[
                "redis-server",
                "--bind",
                &bind,
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
        );
        let ns = self.ns("r");
        assert!(
            wait(Duration::from_secs(10), || sh_out(&["ip", "netns", "exec", &ns, "redis-cli", "-h", &bind, "PING"])
                .contains("PONG")),
            "redis did not start"
        );
    }

    fn sbc_config(&self, node: &str) -> PathBuf {
        let (me, peer) = if node == "a" { (11, 12) } else { (12, 11) };
        let text = format!(
            r#"[sip]
tcp = false
domains = ["{VIP_IN}", "{VIP_OUT}"]
invite_timeout_ms = 2000
log_level = "info"

[[realm]]
name = "inside"
listen = "{VIP_IN}:5060"
media = "inside"

[[realm]]
name = "outside"
listen = "{VIP_OUT}:5060"
media = "outside"

[[trunk]]
name = "carrier"
address = "{OUTSIDE}.22:5060"
realm = "outside"
probe = false

[[route]]
prefix = ""
trunks = ["carrier"]

[cdr]
file = "{dir}/cdr-{node}.jsonl"

[metrics]
listen = "off"

[control]
socket = "{dir}/ctl-{node}.sock"

[relay]
interfaces = ["inside/{VIP_IN}", "outside/{VIP_OUT}"]
listen_ng = "off"
port_min = 40000
port_max = 40999
workers = 1
timeout = 60
metrics = "off"
datapath = "socket"

[ha]
node_id = "{node}"
redis = "{INSIDE}.1:6379"
vip = "{VIP_IN}/24"
interface = "eth0"
realm_vips = [{{ realm = "outside", vip = "{VIP_OUT}/24", interface = "eth1" }}]
heartbeat = "{INSIDE}.{me}:7010"
peer = "{INSIDE}.{peer}:7010"
"#,
            dir = self.dir.display(),
        );
        let p = self.dir.join(format!("sbc-{node}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn start_sbc(&mut self, node: &str) -> usize {
        let cfg = self.sbc_config(node);
        let bin = env!("CARGO_BIN_EXE_sbc");
        let out = sh_out(&[bin, "check-config", "--config", cfg.to_str().unwrap()]);
        assert!(
            out.contains(&format!("{VIP_IN}/24 on eth0, {VIP_OUT}/24 on eth1")),
            "check-config names both VIPs: {out}"
        );
        self.spawn(node, &format!("sbc-{node}"), &[bin, "run", "--config", cfg.to_str().unwrap()])
    }

    fn ctl(&self, node: &str, words: &[&str]) -> String {
        let sock = self.dir.join(format!("ctl-{node}.sock"));
        let mut cmd = vec![env!("CARGO_BIN_EXE_sbc"), "ctl", "--socket", sock.to_str().unwrap()];
        cmd.extend_from_slice(words);
        sh_out(&cmd)
    }

    /// Which of the two VIPs `node` holds, from `ip addr` in its namespace:
    /// (inside on eth0, outside on eth1).
    fn vips(&self, node: &str) -> (bool, bool) {
        let addrs = |dev: &str| sh_out(&["ip", "-n", &self.ns(node), "-o", "addr", "show", "dev", dev]);
        (addrs("eth0").contains(&format!("{VIP_IN}/24")), addrs("eth1").contains(&format!("{VIP_OUT}/24")))
    }

    fn ua(&mut self, host: &str, args: &[&str]) -> usize {
        let report = self.dir.join(format!("{host}.jsonl"));
        let (ip, proxy, base) = if host == "caller" {
            (format!("{INSIDE}.21"), VIP_IN, "20000")
        } else {
            (format!("{OUTSIDE}.22"), VIP_OUT, "30000")
        };
        let local = format!("{ip}:5060");
        let proxy = format!("{proxy}:5060");
        let cmd = xsbc_ua(host, &local, &proxy, (&ip, base), &report, args);
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        self.spawn(host, host, &refs)
    }

    fn report(&self, name: &str) -> Vec<serde_json::Value> {
        json_lines(&self.dir.join(format!("{name}.jsonl")))
    }

    fn cdrs(&self, node: &str) -> Vec<serde_json::Value> {
        json_lines(&self.dir.join(format!("cdr-{node}.jsonl")))
    }

    /// One scenario's lab, serialized with the others, skipped (or failed
    /// under CI) when it cannot run; Redis and both nodes started, `a`
    /// active with both VIPs, `b` standby with none. The guard must outlive
    /// the lab.
    fn pair(tag: &str) -> Option<(std::sync::MutexGuard<'static, ()>, Self)> {
        let serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !can_run() {
            return None;
        }
        let mut lab = Self::new(tag);
        lab.start_redis();
        lab.start_sbc("a");
        assert!(wait(Duration::from_secs(10), || lab.vips("a") == (true, true)), "node a did not take both VIPs");
        lab.start_sbc("b");
        assert!(
            wait(Duration::from_secs(10), || {
                let s = lab.ctl("b", &["ha"]);
                s.contains("role standby") && s.contains("peer active")
            }),
            "node b did not come up as standby: {}",
            lab.ctl("b", &["ha"])
        );
        assert_eq!(lab.vips("b"), (false, false), "the standby holds no VIP");
        let status = lab.ctl("a", &["ha"]);
        assert!(status.contains(&format!("vip {VIP_IN} held, {VIP_OUT} held")), "sbc ctl ha on a: {status}");
        Some((serial, lab))
    }

    /// Places `n` calls from the inside to the outside (odd ones hung up by
    /// the callee) and waits until every one has media both ways.
    fn calls_up(&mut self, n: usize, duration_ms: u64) -> usize {
        self.ua("callee", &["--run-ms", "60000"]);
        let caller = self.ua(
            "caller",
            &[
                "--calls",
                &n.to_string(),
                "--rate",
                "10",
                "--duration-ms",
                &duration_ms.to_string(),
                "--callee-hangup-odd",
                "--max-ms",
                "40000",
            ],
        );
        assert!(
            wait(Duration::from_secs(10), || {
                let (r, e) = (self.report("caller"), self.report("callee"));
                r.len() == n
                    && e.len() == n
                    && r.iter().chain(e.iter()).all(|c| c["rtp_received"].as_u64().unwrap_or(0) > 20)
            }),
            "calls did not come up with media both ways: caller {:?} callee {:?}",
            self.report("caller"),
            self.report("callee")
        );
        caller
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.procs.clear();
        remove_unless_failing(&self.dir);
    }
}

fn wait(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    testkit::wait_until(timeout, Duration::from_millis(20), cond)
}

/// Waits until the callee's report shows every call of the caller's ended.
fn settle(lab: &Lab) {
    let _ = wait(Duration::from_secs(3), || {
        let ids: Vec<String> =
            lab.report("caller").iter().filter_map(|c| c["call_id"].as_str().map(str::to_owned)).collect();
        let callee = lab.report("callee");
        ids.iter().all(|id| callee.iter().any(|c| c["call_id"] == id.as_str() && !c["ended"].is_null()))
    });
}

/// Every call answered and ended by a BYE that got 200, media both ways
/// with no gap of `max_gap_ms` or more; returns a summary line.
fn check_calls(label: &str, lab: &Lab, n: usize, max_gap_ms: f64) -> String {
    let (caller, callee) = (lab.report("caller"), lab.report("callee"));
    assert_eq!(caller.len(), n, "{label}: caller placed {} calls", caller.len());
    assert_eq!(callee.len(), n, "{label}: callee answered {} calls", callee.len());
    let mut largest: f64 = 0.0;
    for c in caller.iter().chain(callee.iter()) {
        assert_eq!(c["answered"], true, "{label}: call not answered: {c}");
        let ended = c["ended"].as_str().unwrap_or("");
        assert!(
            ended == "bye-received" || (ended == "bye-sent" && c["bye_code"] == 200),
            "{label}: call did not end cleanly: {c}"
        );
        assert!(c["rtp_received"].as_u64().unwrap_or(0) > 50, "{label}: too little media: {c}");
        let gap = c["max_gap_ms"].as_f64().unwrap_or(f64::MAX);
        assert!(gap < max_gap_ms, "{label}: media gap of {gap} ms: {c}");
        largest = largest.max(gap);
    }
    let byes = |who: &str| caller.iter().filter(|c| c["ended"] == who).count();
    assert!(byes("bye-sent") > 0 && byes("bye-received") > 0, "{label}: BYEs from both sides: {caller:?}");
    format!("{label}: {n} calls inside -> outside, largest RTP gap {largest:.0} ms (either direction)")
}

#[test]
fn takeover_after_kill_moves_both_vips_and_keeps_media() {
    let Some((_serial, mut lab)) = Lab::pair("k") else { return };
    let n = 4;
    let caller = lab.calls_up(n, 8000);
    let killed = Instant::now();
    lab.procs[1].kill9(); // sbc-a
    assert!(
        wait(Duration::from_secs(5), || lab.vips("b") == (true, true)),
        "b did not take both VIPs: {:?}; {}",
        lab.vips("b"),
        lab.ctl("b", &["ha"])
    );
    let moved_ms = killed.elapsed().as_millis();
    let status = lab.ctl("b", &["ha"]);
    assert!(
        status.contains("role active") && status.contains(&format!("vip {VIP_IN} held, {VIP_OUT} held")),
        "{status}"
    );
    // The calls end after the takeover (8 s after the answer): the caller's
    // BYEs go out on the inside, the callee's on the outside, both to b.
    assert!(lab.procs[caller].wait_exit(Duration::from_secs(40)), "caller did not finish");
    settle(&lab);
    let text = check_calls("kill -9 takeover, two realms", &lab, n, 1000.0);
    let cdrs = lab.cdrs("b");
    assert_eq!(cdrs.len(), n, "the new active ends every call: {cdrs:?}");
    for c in &cdrs {
        let r = c["end_reason"].as_str().unwrap_or("");
        assert!(r == "caller-bye" || r == "callee-bye", "CDR: {c}");
    }
    eprintln!("both VIPs on the standby {moved_ms} ms after the kill\n{text}");
}

#[test]
fn planned_handover_moves_both_vips() {
    let Some((_serial, mut lab)) = Lab::pair("p") else { return };
    let n = 2;
    let caller = lab.calls_up(n, 6000);
    let out = lab.ctl("a", &["failover"]);
    assert!(out.starts_with("ok"), "ctl failover: {out}");
    assert!(wait(Duration::from_secs(2), || lab.vips("b") == (true, true)), "b holds {:?}", lab.vips("b"));
    assert_eq!(lab.vips("a"), (false, false), "a released both VIPs");
    assert!(lab.ctl("a", &["ha"]).contains("role standby"));
    assert!(lab.procs[caller].wait_exit(Duration::from_secs(30)), "caller did not finish");
    settle(&lab);
    let text = check_calls("planned handover, two realms", &lab, n, 200.0);
    assert_eq!(lab.cdrs("b").len(), n, "the new active ends every call");
    eprintln!("{out}{text}");
}
