//! High availability, end to end: two sbc processes in their own network
//! namespaces on one bridge, sharing a virtual IP, with a real Redis in a
//! third and the caller and callee (`xsbc-ua`, which measures RTP gaps) in
//! two more.
//!
//! ```text
//!   caller .21 ─┐                ┌─ sbc A .11 ─┐
//!   callee .22 ─┼── bridge (lan) ┼─ sbc B .12 ─┼─ VIP .100 (whoever is active)
//!   redis  .1  ─┘                └─────────────┘
//! ```
//!
//! Scenarios: a takeover mid-call after `kill -9` of the active node, a
//! takeover while a call rings, a planned handover with `sbc ctl failover`,
//! a split brain (the active node loses its path to Redis), a Redis
//! restart, and a takeover of calls to a trunk with topology hiding and
//! `callid_rewrite`. Needs root and `redis-server`; without them the test
//! says so and skips, except under CI=true, where it must run.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::Netns;

mod support;
use support::lab::{json_lines, remove_unless_failing, sh, sh_out, spawn_in, xsbc_ua, Proc};

static SERIAL: Mutex<()> = Mutex::new(());

const NET: &str = "10.77.0";
const VIP: &str = "10.77.0.100";

/// Whether the lab can run; says why not (and fails under CI=true).
fn can_run() -> bool {
    testkit::env::require_root_and("HA lab", &["redis-server"])
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

struct Lab {
    /// The hosts' namespaces, named uniquely per process; dropped after
    /// the processes in them (`Drop for Lab` stops those first).
    nets: Vec<(&'static str, Netns)>,
    dir: PathBuf,
    procs: Vec<Proc>,
    /// `relay.datapath` of both nodes ("socket" or "xdp").
    datapath: &'static str,
    /// Extra keys of the trunk, on both nodes.
    trunk_keys: &'static str,
    /// The `[ha]` lines saying how nodes a and b reach Redis.
    ha_redis: [String; 2],
    /// Extra `[cdr]` keys (the collector); when set, each node also gets
    /// its own spool directory.
    cdr_keys: String,
    /// Extra `redis-server` arguments.
    redis_extra: Vec<String>,
    /// `redis-cli` arguments that authenticate it.
    cli_auth: Vec<String>,
}

impl Lab {
    fn ns(&self, host: &str) -> String {
        let (_, ns) = self.nets.iter().find(|(h, _)| *h == host).unwrap_or_else(|| panic!("no host {host}"));
        ns.name().to_owned()
    }

    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xsbc-ha-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let nets = ["lan", "r", "a", "b", "caller", "callee"]
            .map(|host| (host, Netns::new(&format!("ha{tag}-{host}")).unwrap_or_else(|e| panic!("netns: {e}"))));
        let plain = format!("redis = \"{NET}.1:6379\"");
        let lab = Self {
            nets: nets.into(),
            dir,
            procs: Vec::new(),
            datapath: "socket",
            trunk_keys: "",
            ha_redis: [plain.clone(), plain],
            cdr_keys: String::new(),
            redis_extra: Vec::new(),
            cli_auth: Vec::new(),
        };
        let lan = lab.ns("lan");
        assert!(sh(&["ip", "-n", &lan, "link", "add", "br0", "type", "bridge"]));
        assert!(sh(&["ip", "-n", &lan, "link", "set", "br0", "up"]));
        for (host, ip) in [("r", 1), ("a", 11), ("b", 12), ("caller", 21), ("callee", 22)] {
            let ns = lab.ns(host);
            let peer = format!("v{host}");
            assert!(sh(&[
                "ip", "-n", &lan, "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", &ns
            ]));
            assert!(sh(&["ip", "-n", &lan, "link", "set", &peer, "master", "br0", "up"]));
            assert!(sh(&["ip", "-n", &ns, "addr", "add", &format!("{NET}.{ip}/24"), "dev", "eth0"]));
            assert!(sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]));
            assert!(sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]));
        }
        lab
    }

    fn spawn(&mut self, host: &str, name: &str, cmd: &[&str]) -> usize {
        let p = spawn_in(&self.ns(host), &self.dir, name, cmd);
        self.procs.push(p);
        self.procs.len() - 1
    }

    fn start_redis(&mut self) -> usize {
        self.start_redis_on("redis", 6379, &[])
    }

    /// A `redis-server` on `{NET}.1:port` (with `redis_extra`, then `extra`).
    fn start_redis_on(&mut self, name: &str, port: u16, extra: &[&str]) -> usize {
        let (bind, port_s) = (format!("{NET}.1"), port.to_string());
        // A replica writes the RDB it receives: into the lab directory.
        let dir = self.dir.to_str().unwrap().to_owned();
        let dbfile = format!("{name}.rdb");
        let mut cmd = vec![
            "redis-server",
            "--dir",
            &dir,
            "--dbfilename",
            &dbfile,
            "--bind",
            &bind,
            "--port",
            &port_s,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ];
        let redis_extra = self.redis_extra.clone();
        cmd.extend(redis_extra.iter().map(String::as_str));
        cmd.extend_from_slice(extra);
        let i = self.spawn("r", name, &cmd);
        let ping = [port_s.as_str(), "PING"];
        assert!(wait(Duration::from_secs(10), || self.redis_at(&ping).contains("PONG")), "redis did not start");
        i
    }

    /// `redis-cli -p PORT ARGS...` (`args[0]` is the port), authenticated.
    fn redis_at(&self, args: &[&str]) -> String {
        let ns = self.ns("r");
        let mut cmd = vec!["ip", "netns", "exec", ns.as_str(), "redis-cli", "-h", "10.77.0.1", "-p", args[0]];
        cmd.extend(self.cli_auth.iter().map(String::as_str));
        cmd.extend_from_slice(&args[1..]);
        sh_out(&cmd)
    }

    fn redis(&self, args: &[&str]) -> String {
        let ns = self.ns("r");
        let mut cmd = vec!["ip", "netns", "exec", ns.as_str(), "redis-cli", "-h", "10.77.0.1"];
        cmd.extend(self.cli_auth.iter().map(String::as_str));
        cmd.extend_from_slice(args);
        sh_out(&cmd)
    }

    fn sbc_config(&self, node: &str, lease_ms: u64, interval_ms: u64) -> PathBuf {
        let (me, peer) = if node == "a" { (11, 12) } else { (12, 11) };
        let text = format!(
            r#"[sip]
listen = "{VIP}:5060"
tcp = false
domains = ["{VIP}"]
invite_timeout_ms = 2000
log_level = "info"

[[trunk]]
name = "callee"
address = "{NET}.22:5060"
probe = false
{trunk_keys}

[[route]]
prefix = ""
trunks = ["callee"]

[cdr]
file = "{dir}/cdr-{node}.jsonl"
{cdr_keys}

[metrics]
listen = "{NET}.{me}:9100"

[control]
socket = "{dir}/ctl-{node}.sock"

[relay]
interfaces = ["{VIP}"]
listen_ng = "off"
port_min = 40000
port_max = 40999
workers = 1
timeout = 60
metrics = "off"
datapath = "{datapath}"
xdp_interfaces = ["eth0"]
# The UAs send over veth with partial (offloaded) UDP checksums.
xdp_full_checksum = true

[ha]
node_id = "{node}"
{ha_redis}
vip = "{VIP}/24"
interface = "eth0"
heartbeat = "{NET}.{me}:7010"
peer = "{NET}.{peer}:7010"
lease_ms = {lease_ms}
check_interval_ms = {interval_ms}
"#,
            dir = self.dir.display(),
            datapath = self.datapath,
            trunk_keys = self.trunk_keys,
            ha_redis = self.ha_redis[usize::from(node != "a")],
            cdr_keys = if self.cdr_keys.is_empty() {
                String::new()
            } else {
                format!("spool_dir = \"{}/spool-{node}\"\n{}", self.dir.display(), self.cdr_keys)
            },
        );
        let p = self.dir.join(format!("sbc-{node}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn start_sbc(&mut self, node: &str, lease_ms: u64, interval_ms: u64) -> usize {
        let cfg = self.sbc_config(node, lease_ms, interval_ms);
        let bin = env!("CARGO_BIN_EXE_sbc");
        self.spawn(node, &format!("sbc-{node}"), &[bin, "run", "--config", cfg.to_str().unwrap()])
    }

    fn ctl(&self, node: &str, words: &[&str]) -> String {
        let sock = self.dir.join(format!("ctl-{node}.sock"));
        let mut cmd = vec![env!("CARGO_BIN_EXE_sbc"), "ctl", "--socket", sock.to_str().unwrap()];
        cmd.extend_from_slice(words);
        sh_out(&cmd)
    }

    /// The node's Prometheus text (fetched inside its namespace).
    fn metrics(&self, node: &str) -> String {
        let ip = if node == "a" { 11 } else { 12 };
        let script = format!(
            "exec 3<>/dev/tcp/{NET}.{ip}/9100 && printf 'GET /metrics HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3 && cat <&3"
        );
        sh_out(&["ip", "netns", "exec", &self.ns(node), "bash", "-c", &script])
    }

    /// Sum of a metric's samples in `text` (any labels).
    fn metric_sum(text: &str, name: &str) -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn holds_vip(&self, node: &str) -> bool {
        sh_out(&["ip", "-n", &self.ns(node), "-o", "addr", "show", "dev", "eth0"]).contains(&format!("{VIP}/"))
    }

    fn ua(&mut self, host: &str, name: &str, args: &[&str]) -> usize {
        let report = self.dir.join(format!("{name}.jsonl"));
        let ip = if host == "caller" { format!("{NET}.21") } else { format!("{NET}.22") };
        // A second UA on the same host ("probe") takes other ports.
        let (sip_port, base) = match (host, name) {
            ("caller", "probe") => ("5062", "24000"),
            ("caller", "bobcall") => ("5063", "26000"),
            ("caller", _) => ("5060", "20000"),
            (_, "callee2") => ("5064", "34000"),
            _ => ("5060", "30000"),
        };
        let local = format!("{ip}:{sip_port}");
        let proxy = format!("{VIP}:5060");
        let cmd =
            xsbc_ua(if host == "caller" { "caller" } else { "callee" }, &local, &proxy, (&ip, base), &report, args);
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        self.spawn(host, name, &refs)
    }

    fn report(&self, name: &str) -> Vec<serde_json::Value> {
        json_lines(&self.dir.join(format!("{name}.jsonl")))
    }

    fn cdrs(&self, node: &str) -> Vec<serde_json::Value> {
        json_lines(&self.dir.join(format!("cdr-{node}.jsonl")))
    }

    /// One scenario's lab: serialized with the others (they share names and
    /// cores), skipped (or failed under CI) when it cannot run, with Redis
    /// and both nodes started. The guard must outlive the lab.
    fn pair(
        tag: &str,
        lease_ms: u64,
        interval_ms: u64,
        datapath: &'static str,
    ) -> Option<(std::sync::MutexGuard<'static, ()>, Self)> {
        Self::pair_with(tag, (lease_ms, interval_ms), datapath, "")
    }

    /// [`pair`](Self::pair) with `trunk_keys` added to the trunk.
    fn pair_with(
        tag: &str,
        (lease_ms, interval_ms): (u64, u64),
        datapath: &'static str,
        trunk_keys: &'static str,
    ) -> Option<(std::sync::MutexGuard<'static, ()>, Self)> {
        let (serial, mut lab) = Self::unstarted(tag, &[])?;
        lab.datapath = datapath;
        lab.trunk_keys = trunk_keys;
        lab.start_pair(lease_ms, interval_ms);
        Some((serial, lab))
    }

    /// A lab with nothing started yet (serialized, skipped when it cannot
    /// run); `bins` are needed besides `redis-server`.
    fn unstarted(tag: &str, bins: &[&str]) -> Option<(std::sync::MutexGuard<'static, ()>, Self)> {
        let serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !can_run() || !testkit::env::require_root_and("HA lab", bins) {
            return None;
        }
        Some((serial, Self::new(tag)))
    }

    /// Starts Redis and both nodes; returns once `a` is active and `b` standby.
    fn start_pair(&mut self, lease_ms: u64, interval_ms: u64) {
        self.start_redis();
        self.start_nodes(lease_ms, interval_ms);
    }

    /// Starts both nodes; returns once `a` is active and `b` standby.
    fn start_nodes(&mut self, lease_ms: u64, interval_ms: u64) {
        self.start_sbc("a", lease_ms, interval_ms);
        assert!(wait(Duration::from_secs(10), || self.holds_vip("a")), "node a did not take the VIP");
        self.start_sbc("b", lease_ms, interval_ms);
        assert!(
            wait(Duration::from_secs(10), || self.ctl("b", &["ha"]).contains("role standby")
                && self.ctl("b", &["ha"]).contains("peer active")),
            "node b did not come up as standby: {}",
            self.ctl("b", &["ha"])
        );
        assert!(!self.holds_vip("b"));
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

fn gaps(r: &[serde_json::Value]) -> Vec<f64> {
    let mut g: Vec<f64> = r.iter().map(|c| c["max_gap_ms"].as_f64().unwrap_or(f64::MAX)).collect();
    g.sort_by(f64::total_cmp);
    g
}

fn summary(label: &str, g: &[f64]) -> String {
    if g.is_empty() {
        return format!("{label}: no calls");
    }
    format!(
        "{label}: largest RTP gap per call p50 {:.0} ms, max {:.0} ms over {} calls",
        g[g.len() / 2],
        g[g.len() - 1],
        g.len()
    )
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

/// Every call answered, ended by a BYE that got 200, media both ways.
fn check_calls(label: &str, caller: &[serde_json::Value], callee: &[serde_json::Value], n: usize) -> String {
    assert_eq!(caller.len(), n, "{label}: caller placed {} calls", caller.len());
    for c in caller {
        assert_eq!(c["answered"], true, "{label}: call not answered: {c}");
        let ended = c["ended"].as_str().unwrap_or("");
        assert!(
            ended == "bye-received" || (ended == "bye-sent" && c["bye_code"] == 200),
            "{label}: call did not end cleanly: {c}"
        );
        assert!(c["rtp_received"].as_u64().unwrap_or(0) > 10, "{label}: caller got no media: {c}");
    }
    let ids: Vec<&str> = caller.iter().filter_map(|c| c["call_id"].as_str()).collect();
    let callee: Vec<&serde_json::Value> =
        callee.iter().filter(|c| c["call_id"].as_str().is_some_and(|id| ids.contains(&id))).collect();
    assert_eq!(callee.len(), n, "{label}: callee saw {} of the calls", callee.len());
    for c in &callee {
        let ended = c["ended"].as_str().unwrap_or("");
        assert!(
            ended == "bye-received" || (ended == "bye-sent" && c["bye_code"] == 200),
            "{label}: callee side did not end cleanly: {c}"
        );
        assert!(c["rtp_received"].as_u64().unwrap_or(0) > 10, "{label}: callee got no media: {c}");
    }
    // Packets sent by one side that the other did not count (the last one or
    // two of each call can cross the BYE and are not counted either).
    let missing = |from: &[&serde_json::Value], to: &[&serde_json::Value]| -> u64 {
        from.iter()
            .map(|f| {
                let got = to.iter().find(|t| t["call_id"] == f["call_id"]).and_then(|t| t["rtp_received"].as_u64());
                f["rtp_sent"].as_u64().unwrap_or(0).saturating_sub(got.unwrap_or(0))
            })
            .sum()
    };
    let caller_refs: Vec<&serde_json::Value> = caller.iter().collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{label}: packets not received: caller->callee {}, callee->caller {} (of about {} per direction)",
        missing(&caller_refs, &callee),
        missing(&callee, &caller_refs),
        caller.iter().map(|c| c["rtp_sent"].as_u64().unwrap_or(0)).sum::<u64>()
    );
    let _ = writeln!(s, "{}", summary(&format!("{label} callee->caller"), &gaps(caller)));
    let callee: Vec<serde_json::Value> = callee.into_iter().cloned().collect();
    let _ = write!(s, "{}", summary(&format!("{label} caller->callee"), &gaps(&callee)));
    s
}

/// `kill -9` of the active node with 20 calls up (half hung up by the
/// callee afterwards), and new calls started right after the kill.
fn kill_scenario(tag: &str, lease_ms: u64, interval_ms: u64, datapath: &'static str, max_gap_ms: f64) {
    let Some((_serial, mut lab)) = Lab::pair(tag, lease_ms, interval_ms, datapath) else { return };
    let n = 20;
    lab.ua("callee", "callee", &["--run-ms", "60000", "--duration-ms", "12000"]);
    // A registered phone (bob, on the callee host at port 5064): it
    // registers, then answers there.
    let reg = Command::new("ip")
        .args(["netns", "exec", &lab.ns("callee"), env!("CARGO_BIN_EXE_xsbc-ua"), "register"])
        .args(["--local", &format!("{NET}.22:5064"), "--proxy", &format!("{VIP}:5060"), "--user", "bob"])
        .output()
        .unwrap();
    assert!(reg.status.success(), "REGISTER failed: {}", String::from_utf8_lossy(&reg.stderr));
    lab.ua("callee", "callee2", &["--run-ms", "60000"]);
    let caller = lab.ua(
        "caller",
        "caller",
        &["--calls", "20", "--rate", "10", "--duration-ms", "12000", "--callee-hangup-odd", "--max-ms", "50000"],
    );
    // Every call is up and has media.
    assert!(
        wait(Duration::from_secs(15), || {
            let r = lab.report("caller");
            r.len() == n && r.iter().all(|c| c["rtp_received"].as_u64().unwrap_or(0) > 20)
        }),
        "calls did not come up: {:?}",
        lab.report("caller")
    );
    assert!(lab.holds_vip("a"));
    if datapath == "xdp" {
        // SIP itself came through the AF_XDP workers' handoff.
        let m = lab.metrics("a");
        let handed = Lab::metric_sum(&m, "media_relay_sip_handoff_total");
        assert!(handed >= 40.0, "SIP datagrams handed over on node a: {handed}\n{m}");
    }
    let killed_at = unix_ms();
    lab.procs[1].kill9(); // sbc-a
    let killed = Instant::now();
    // New calls start right away, one every 50 ms, while the standby takes over.
    let probe =
        lab.ua("caller", "probe", &["--calls", "20", "--rate", "20", "--duration-ms", "200", "--max-ms", "30000"]);
    assert!(wait(Duration::from_secs(5), || lab.holds_vip("b")), "b did not take the VIP: {}", lab.ctl("b", &["ha"]));
    let vip_moved_ms = killed.elapsed().as_millis();
    // bob's registration was replicated: a call to bob reaches port 5064
    // (without it, the route to the trunk would send it to port 5060).
    let bobcall = lab.ua(
        "caller",
        "bobcall",
        &["--to", "bob", "--calls", "1", "--rate", "0", "--duration-ms", "500", "--max-ms", "20000"],
    );
    assert!(lab.procs[caller].wait_exit(Duration::from_secs(60)), "caller did not finish");
    assert!(lab.procs[probe].wait_exit(Duration::from_secs(30)), "probe caller did not finish");
    assert!(lab.procs[bobcall].wait_exit(Duration::from_secs(30)), "call to bob did not finish");
    assert_eq!(lab.report("bobcall")[0]["ended"], "bye-sent", "call to bob: {:?}", lab.report("bobcall"));
    assert!(
        wait(Duration::from_secs(3), || lab.report("callee2").len() == 1),
        "the call to the registered user did not reach its contact: {:?}",
        lab.report("callee2")
    );
    settle(&lab);
    let text = check_calls("kill -9 takeover", &lab.report("caller"), &lab.report("callee"), n);
    let probe = lab.report("probe");
    assert_eq!(probe.len(), 20);
    for p in &probe {
        assert_eq!(p["ended"], "bye-sent", "a new call via the standby failed: {p}");
    }
    let first_new_ms =
        probe.iter().filter_map(|p| p["answered_unix_ms"].as_u64()).min().unwrap().saturating_sub(killed_at);
    // The standby ended every call and wrote the CDRs.
    let cdrs = lab.cdrs("b");
    let taken: Vec<_> = cdrs.iter().collect();
    assert_eq!(taken.len(), n + 21, "standby CDRs (20 taken over, 20 new, 1 to bob): {cdrs:?}");
    for c in &taken {
        let r = c["end_reason"].as_str().unwrap_or("");
        assert!(r == "caller-bye" || r == "callee-bye", "CDR: {c}");
    }
    if datapath == "xdp" {
        let m = lab.metrics("b");
        let handed = Lab::metric_sum(&m, "media_relay_sip_handoff_total");
        assert!(handed >= 40.0, "SIP datagrams handed over on node b: {handed}");
        eprintln!("SIP via the AF_XDP handoff on node b: {handed} datagrams");
    }
    let callee_byes = taken.iter().filter(|c| c["end_reason"] == "callee-bye").count();
    assert!(callee_byes >= n / 2, "callee BYEs through the standby: {callee_byes}");
    eprintln!(
        "HA kill -9 ({datapath} datapath, lease {lease_ms} ms, check every {interval_ms} ms): VIP on the standby {vip_moved_ms} ms after the kill; first new call answered via the standby {first_new_ms} ms after the kill\n{text}"
    );
    // Media kept flowing through the takeover. The gap itself is a figure
    // (printed above, quoted in docs/ha.md), not a timed assertion: the
    // bound only catches media that stopped.
    for c in lab.report("caller").iter().chain(lab.report("callee").iter()) {
        assert!(c["max_gap_ms"].as_f64().unwrap() < max_gap_ms, "media gap over {max_gap_ms} ms: {c}");
    }
}

#[test]
fn takeover_after_kill_keeps_calls_and_media() {
    // The default lease and check interval.
    kill_scenario("k", 120, 30, "socket", 1000.0);
}

#[test]
fn takeover_after_kill_with_the_former_600_ms_lease() {
    // The default before the HA thread ran SCHED_FIFO.
    kill_scenario("f", 600, 100, "socket", 1000.0);
}

#[test]
fn takeover_after_kill_on_the_af_xdp_datapath() {
    // Both nodes relay media over AF_XDP on their eth0; the standby enters
    // the taken-over sessions' ports in its XDP media-port map.
    kill_scenario("x", 120, 30, "xdp", 1000.0);
}

#[test]
fn takeover_while_ringing_then_answer_works() {
    let Some((_serial, mut lab)) = Lab::pair("r", 600, 100, "socket") else { return };
    lab.ua("callee", "callee", &["--run-ms", "30000", "--ring-ms", "3000"]);
    let caller =
        lab.ua("caller", "caller", &["--calls", "2", "--rate", "10", "--duration-ms", "3000", "--max-ms", "25000"]);
    // Both calls ring on node a (early dialogs), then a dies.
    assert!(wait(Duration::from_secs(5), || lab.report("callee").len() == 2), "calls did not reach the callee");
    std::thread::sleep(Duration::from_millis(500));
    assert!(lab.report("caller").iter().all(|c| c["answered"] == false), "answered too early");
    lab.procs[1].kill9();
    assert!(wait(Duration::from_secs(5), || lab.holds_vip("b")));
    assert!(lab.procs[caller].wait_exit(Duration::from_secs(30)), "caller did not finish");
    settle(&lab);
    let text = check_calls("ringing takeover", &lab.report("caller"), &lab.report("callee"), 2);
    let cdrs = lab.cdrs("b");
    assert_eq!(cdrs.len(), 2, "CDRs on the standby: {cdrs:?}");
    for c in &cdrs {
        assert!(c["answer"].as_f64().is_some(), "answered after the takeover, CDR: {c}");
        assert_eq!(c["end_reason"], "caller-bye");
    }
    eprintln!("{text}");
}

/// A trunk with topology hiding and `callid_rewrite`: the callee knows each
/// call by an opaque Call-ID. After `kill -9` of the active node, BYEs from
/// either side still end the calls through the standby (which shows the
/// callee the same Call-IDs and maps its own back).
#[test]
fn takeover_keeps_the_call_ids_a_hiding_trunk_knows() {
    let keys = "topology_hiding = true\ncallid_rewrite = true";
    let Some((_serial, mut lab)) = Lab::pair_with("h", (600, 100), "socket", keys) else { return };
    let n = 4;
    lab.ua("callee", "callee", &["--run-ms", "40000", "--duration-ms", "6000"]);
    let caller = lab.ua(
        "caller",
        "caller",
        &["--calls", "4", "--rate", "10", "--duration-ms", "6000", "--callee-hangup-odd", "--max-ms", "30000"],
    );
    assert!(
        wait(Duration::from_secs(10), || {
            let (r, e) = (lab.report("caller"), lab.report("callee"));
            r.len() == n && e.len() == n && r.iter().all(|c| c["rtp_received"].as_u64().unwrap_or(0) > 20)
        }),
        "calls did not come up: {:?}",
        lab.report("caller")
    );
    let ids = |name: &str| -> Vec<String> {
        lab.report(name).iter().filter_map(|c| c["call_id"].as_str().map(str::to_owned)).collect()
    };
    let (ours, theirs) = (ids("caller"), ids("callee"));
    assert!(theirs.iter().all(|id| !ours.contains(id)), "the trunk sees opaque Call-IDs: {ours:?} {theirs:?}");
    lab.procs[1].kill9(); // sbc-a
    assert!(wait(Duration::from_secs(5), || lab.holds_vip("b")), "b did not take the VIP: {}", lab.ctl("b", &["ha"]));
    assert!(lab.procs[caller].wait_exit(Duration::from_secs(30)), "caller did not finish");
    let _ = wait(Duration::from_secs(3), || lab.report("callee").iter().all(|c| !c["ended"].is_null()));
    for c in lab.report("caller").iter().chain(lab.report("callee").iter()) {
        let ended = c["ended"].as_str().unwrap_or("");
        assert!(
            ended == "bye-received" || (ended == "bye-sent" && c["bye_code"] == 200),
            "a call did not end cleanly through the new active: {c}"
        );
    }
    let cdrs = lab.cdrs("b");
    assert_eq!(cdrs.len(), n, "the new active ends every call: {cdrs:?}");
    let by = |r: &str| cdrs.iter().filter(|c| c["end_reason"] == r).count();
    assert_eq!((by("caller-bye"), by("callee-bye")), (n / 2, n / 2), "{cdrs:?}");
    eprintln!("hiding trunk with callid_rewrite: {n} calls ended by BYEs from both sides after the takeover");
}

#[test]
fn planned_handover_with_ctl_failover() {
    let Some((_serial, mut lab)) = Lab::pair("p", 600, 100, "socket") else { return };
    let n = 10;
    lab.ua("callee", "callee", &["--run-ms", "40000", "--duration-ms", "8000"]);
    let caller = lab.ua(
        "caller",
        "caller",
        &["--calls", "10", "--rate", "10", "--duration-ms", "8000", "--callee-hangup-odd", "--max-ms", "30000"],
    );
    assert!(wait(Duration::from_secs(10), || {
        let r = lab.report("caller");
        r.len() == n && r.iter().all(|c| c["rtp_received"].as_u64().unwrap_or(0) > 20)
    }));
    // A ban placed on the active is replicated through Redis.
    let banned = lab.ctl("a", &["ban", "192.0.2.77", "--for", "1h"]);
    assert!(banned.starts_with("ok"), "ctl ban: {banned}");
    let out = lab.ctl("a", &["failover"]);
    assert!(out.starts_with("ok"), "ctl failover: {out}");
    assert!(lab.holds_vip("b") || wait(Duration::from_secs(2), || lab.holds_vip("b")));
    assert!(!lab.holds_vip("a"));
    assert!(lab.ctl("a", &["ha"]).contains("role standby"));
    // The new active has it, with its remaining time.
    assert!(
        wait(Duration::from_secs(3), || lab.ctl("b", &["bans"]).contains("192.0.2.77/32")),
        "the ban did not reach the new active: {}",
        lab.ctl("b", &["bans"])
    );
    let line = lab.ctl("b", &["bans"]).lines().find(|l| l.starts_with("192.0.2.77/32")).unwrap_or_default().to_owned();
    assert!(line.contains("manual") && (3500..=3600).any(|s| line.contains(&format!(" {s} "))), "{line}");
    assert!(lab.procs[caller].wait_exit(Duration::from_secs(30)));
    settle(&lab);
    let text = check_calls("planned handover", &lab.report("caller"), &lab.report("callee"), n);
    eprintln!("{out}{text}");
    assert_eq!(lab.cdrs("b").len(), n, "the new active ends every call");
    // Report the measured gap; assert it stays well under the crash case.
    // Measured at about one packet interval (20 ms plus jitter); the bound
    // leaves room for a loaded machine.
    for c in lab.report("caller").iter().chain(lab.report("callee").iter()) {
        assert!(c["max_gap_ms"].as_f64().unwrap() < 200.0, "planned handover gap: {c}");
    }
}

#[test]
fn split_brain_active_drops_vip_before_standby_claims_it() {
    let Some((_serial, lab)) = Lab::pair("s", 600, 100, "socket") else { return };
    // Cut a's path to Redis only (the peers still hear each other).
    assert!(sh(&["ip", "-n", &lab.ns("a"), "route", "add", "blackhole", &format!("{NET}.1/32")]));
    let t0 = Instant::now();
    let mut a_dropped: Option<Duration> = None;
    let mut b_claimed: Option<Duration> = None;
    let mut both = false;
    while t0.elapsed() < Duration::from_secs(6) {
        let (a, b) = (lab.holds_vip("a"), lab.holds_vip("b"));
        if a && b {
            both = true;
        }
        if !a && a_dropped.is_none() {
            a_dropped = Some(t0.elapsed());
        }
        if b && b_claimed.is_none() {
            b_claimed = Some(t0.elapsed());
        }
        if a_dropped.is_some() && b_claimed.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!both, "both nodes held the VIP at once");
    let (a_ms, b_ms) = (a_dropped.expect("a never dropped the VIP"), b_claimed.expect("b never claimed the VIP"));
    assert!(a_ms < b_ms, "a dropped at {a_ms:?}, b claimed at {b_ms:?}");
    eprintln!(
        "split brain: a dropped the VIP after {} ms, b claimed it after {} ms",
        a_ms.as_millis(),
        b_ms.as_millis()
    );
    // Healed: a stays standby behind b's lease.
    assert!(sh(&["ip", "-n", &lab.ns("a"), "route", "del", "blackhole", &format!("{NET}.1/32")]));
    std::thread::sleep(Duration::from_secs(2));
    assert!(lab.holds_vip("b") && !lab.holds_vip("a"));
}

#[test]
fn redis_restart_keeps_calls_and_resumes_replication() {
    let Some((_serial, mut lab)) = Lab::pair("d", 600, 100, "socket") else { return };
    let n = 6;
    lab.ua("callee", "callee", &["--run-ms", "40000"]);
    let caller =
        lab.ua("caller", "caller", &["--calls", "6", "--rate", "10", "--duration-ms", "9000", "--max-ms", "30000"]);
    assert!(wait(Duration::from_secs(10), || {
        let r = lab.report("caller");
        r.len() == n && r.iter().all(|c| c["rtp_received"].as_u64().unwrap_or(0) > 10)
    }));
    assert!(
        lab.redis(&["HLEN", "xsbc:dialogs"]).trim() == n.to_string(),
        "replicated dialogs: {}",
        lab.redis(&["HLEN", "xsbc:dialogs"])
    );
    lab.procs[0].kill9(); // redis
    std::thread::sleep(Duration::from_secs(2));
    // Redis down for both: a stays active, degraded.
    assert!(lab.holds_vip("a") && !lab.holds_vip("b"));
    let status = lab.ctl("a", &["ha"]);
    assert!(status.contains("role active") && status.contains("degraded"), "{status}");
    lab.start_redis(); // empty: nothing was persisted
    assert!(
        wait(Duration::from_secs(5), || lab.redis(&["HLEN", "xsbc:dialogs"]).trim() == n.to_string()),
        "replication did not resume: {} dialogs in Redis",
        lab.redis(&["HLEN", "xsbc:dialogs"])
    );
    assert!(lab.redis(&["GET", "xsbc:lease"]).starts_with("a:"));
    assert!(lab.procs[caller].wait_exit(Duration::from_secs(30)));
    settle(&lab);
    let text = check_calls("redis restart", &lab.report("caller"), &lab.report("callee"), n);
    assert!(lab.holds_vip("a") && !lab.holds_vip("b"));
    eprintln!("{text}");
}

/// Redis with AUTH: node a logs in as the ACL user `sbc` (password from a
/// file; the user may only touch `xsbc:*` keys, so every script must declare
/// its keys), node b with the default user's `requirepass` password. The
/// pair forms, calls are replicated, and Redis refuses clients without AUTH.
#[test]
fn redis_with_auth_acl_user_and_requirepass() {
    let Some((_serial, mut lab)) = Lab::unstarted("u", &[]) else { return };
    let pw = lab.dir.join("redis-pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    lab.redis_extra = ["--requirepass", "masterpw", "--user", "sbc", "on", ">s3cret", "~xsbc:*", "&*", "+@all"]
        .map(str::to_owned)
        .into();
    lab.cli_auth = ["--user", "sbc", "--pass", "s3cret", "--no-auth-warning"].map(str::to_owned).into();
    lab.ha_redis = [
        format!("redis = \"{NET}.1:6379\"\nredis_username = \"sbc\"\nredis_password_file = \"{}\"", pw.display()),
        format!("redis = \"redis://:masterpw@{NET}.1:6379\""),
    ];
    lab.start_pair(600, 100);
    assert!(lab.redis(&["GET", "xsbc:lease"]).starts_with("a:"), "lease: {}", lab.redis(&["GET", "xsbc:lease"]));
    let no_auth = sh_out(&["ip", "netns", "exec", &lab.ns("r"), "redis-cli", "-h", "10.77.0.1", "GET", "xsbc:lease"]);
    assert!(no_auth.contains("NOAUTH"), "Redis answered a client without AUTH: {no_auth}");
    lab.ua("callee", "callee", &["--run-ms", "20000"]);
    let caller =
        lab.ua("caller", "caller", &["--calls", "2", "--rate", "10", "--duration-ms", "3000", "--max-ms", "15000"]);
    assert!(
        wait(Duration::from_secs(8), || lab.redis(&["HLEN", "xsbc:dialogs"]).trim() == "2"),
        "dialogs not replicated: {}",
        lab.redis(&["HLEN", "xsbc:dialogs"])
    );
    // The standby (password only) reads them back.
    assert!(
        wait(Duration::from_secs(5), || Lab::metric_sum(&lab.metrics("b"), "sbc_ha_warm_dialogs") >= 2.0),
        "standby warm copy: {}",
        lab.metrics("b")
    );
    assert!(lab.procs[caller].wait_exit(Duration::from_secs(15)));
    settle(&lab);
    eprintln!("{}", check_calls("redis auth", &lab.report("caller"), &lab.report("callee"), 2));
    assert!(lab.holds_vip("a") && !lab.holds_vip("b"));
}

/// Redis behind Sentinel: a master (:6379), a replica (:6380) and three
/// sentinels (:26379-26381, quorum 2). With calls up, the master is killed
/// (`kill -9`); the sentinels promote the replica. No call drops, the
/// active node stays active (no false takeover), and replication goes on
/// against the new master: a call placed after the failover reaches the
/// standby's warm copy.
#[test]
fn redis_sentinel_failover_keeps_calls_and_the_active_node() {
    let Some((_serial, mut lab)) = Lab::unstarted("e", &["redis-sentinel"]) else { return };
    let master = lab.start_redis_on("redis", 6379, &[]);
    lab.start_redis_on("replica", 6380, &["--replicaof", &format!("{NET}.1"), "6379"]);
    for (k, port) in [26379, 26380, 26381].into_iter().enumerate() {
        let conf = lab.dir.join(format!("sentinel-{k}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind {NET}.1\nprotected-mode no\ndaemonize no\n\
                 sentinel monitor mymaster {NET}.1 6379 2\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n\
                 sentinel parallel-syncs mymaster 1\n"
            ),
        )
        .unwrap();
        lab.spawn("r", &format!("sentinel-{k}"), &["redis-sentinel", conf.to_str().unwrap()]);
    }
    // Every sentinel knows the replica and the two other sentinels.
    assert!(
        wait(Duration::from_secs(20), || [26379, 26380, 26381].iter().all(|p| {
            let m = lab.redis_at(&[&p.to_string(), "SENTINEL", "master", "mymaster"]);
            m.contains("num-slaves\n1\n") && m.contains("num-other-sentinels\n2\n")
        })),
        "sentinels not ready: {}",
        lab.redis_at(&["26379", "SENTINEL", "master", "mymaster"])
    );
    let sentinels =
        format!("sentinels = [\"{NET}.1:26379\", \"{NET}.1:26380\", \"{NET}.1:26381\"]\nmaster_name = \"mymaster\"");
    lab.ha_redis = [sentinels.clone(), sentinels];
    lab.start_nodes(120, 30); // the default lease
    let n = 4;
    lab.ua("callee", "callee", &["--run-ms", "40000"]);
    let caller =
        lab.ua("caller", "caller", &["--calls", "4", "--rate", "10", "--duration-ms", "14000", "--max-ms", "30000"]);
    assert!(wait(Duration::from_secs(10), || {
        let r = lab.report("caller");
        r.len() == n && r.iter().all(|c| c["rtp_received"].as_u64().unwrap_or(0) > 10)
    }));
    assert!(wait(Duration::from_secs(5), || lab.redis_at(&["6380", "HLEN", "xsbc:dialogs"]).trim() == "4"));
    let takeovers_b = Lab::metric_sum(&lab.metrics("b"), "sbc_ha_takeovers_total");
    let killed = Instant::now();
    lab.procs[master].kill9();
    // Until the new master has the lease and the state, a keeps the VIP
    // and b never takes it.
    let mut promoted_ms = None;
    while killed.elapsed() < Duration::from_secs(20) {
        assert!(lab.holds_vip("a") && !lab.holds_vip("b"), "false takeover: {}", lab.ctl("b", &["ha"]));
        if promoted_ms.is_none() && lab.redis_at(&["6380", "ROLE"]).starts_with("master") {
            promoted_ms = Some(killed.elapsed().as_millis());
        }
        if promoted_ms.is_some()
            && lab.redis_at(&["6380", "GET", "xsbc:lease"]).starts_with("a:")
            && lab.redis_at(&["6380", "HLEN", "xsbc:dialogs"]).trim() == "4"
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let promoted_ms = promoted_ms.expect("the sentinels did not promote the replica");
    let resumed_ms = killed.elapsed().as_millis();
    assert!(
        lab.redis_at(&["6380", "GET", "xsbc:lease"]).starts_with("a:"),
        "the new master has no lease of a: {}",
        lab.ctl("a", &["ha"])
    );
    // A call after the failover is replicated to the standby.
    let probe =
        lab.ua("caller", "probe", &["--calls", "1", "--rate", "0", "--duration-ms", "4000", "--max-ms", "20000"]);
    assert!(
        wait(Duration::from_secs(8), || Lab::metric_sum(&lab.metrics("b"), "sbc_ha_warm_dialogs") >= 5.0),
        "the standby did not learn the new call: {}",
        lab.ctl("b", &["ha"])
    );
    assert!(lab.procs[caller].wait_exit(Duration::from_secs(30)), "caller did not finish");
    assert!(lab.procs[probe].wait_exit(Duration::from_secs(20)), "probe did not finish");
    settle(&lab);
    let text = check_calls("redis sentinel failover", &lab.report("caller"), &lab.report("callee"), n);
    assert_eq!(lab.report("probe")[0]["ended"], "bye-sent", "call after the failover: {:?}", lab.report("probe"));
    assert!(lab.holds_vip("a") && !lab.holds_vip("b"));
    assert!(lab.ctl("a", &["ha"]).contains("role active"), "{}", lab.ctl("a", &["ha"]));
    let takeovers_b_after = Lab::metric_sum(&lab.metrics("b"), "sbc_ha_takeovers_total");
    assert!((takeovers_b_after - takeovers_b).abs() < 0.5, "node b took over {takeovers_b_after} times");
    for c in lab.report("caller").iter().chain(lab.report("callee").iter()) {
        assert!(c["max_gap_ms"].as_f64().unwrap() < 1000.0, "media stopped during the Redis failover: {c}");
    }
    eprintln!(
        "Redis Sentinel failover (kill -9 of the master): replica promoted after {promoted_ms} ms, lease and state on the new master after {resumed_ms} ms, no takeover of the pair\n{text}"
    );
}

/// The default lease (120 ms, renewed every 30 ms from a `SCHED_FIFO`
/// thread) on a box whose cores are busy with `yes > /dev/null` (two per
/// core): 10 calls up for 10 s without a takeover or a release (false
/// failovers), then `kill -9` of the active under the same load.
#[test]
fn default_lease_under_cpu_load_no_false_failover_then_takeover() {
    let Some((_serial, mut lab)) = Lab::pair("l", 120, 30, "socket") else { return };
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let mut hogs: Vec<std::process::Child> = (0..cores * 2)
        .map(|_| Command::new("yes").stdout(std::process::Stdio::null()).spawn().expect("yes runs"))
        .collect();
    let n = 10;
    lab.ua("callee", "callee", &["--run-ms", "60000"]);
    let caller =
        lab.ua("caller", "caller", &["--calls", "10", "--rate", "10", "--duration-ms", "16000", "--max-ms", "40000"]);
    assert!(wait(Duration::from_secs(10), || {
        let r = lab.report("caller");
        r.len() == n && r.iter().all(|c| c["rtp_received"].as_u64().unwrap_or(0) > 10)
    }));
    let t0 = Instant::now();
    let mut both_or_moved = 0;
    while t0.elapsed() < Duration::from_secs(10) {
        if !lab.holds_vip("a") || lab.holds_vip("b") {
            both_or_moved += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ma, mb) = (lab.metrics("a"), lab.metrics("b"));
    let false_failovers =
        Lab::metric_sum(&mb, "sbc_ha_takeovers_total") + Lab::metric_sum(&ma, "sbc_ha_releases_total");
    let killed = Instant::now();
    lab.procs[1].kill9(); // sbc-a
    assert!(wait(Duration::from_secs(5), || lab.holds_vip("b")), "b did not take the VIP");
    let vip_ms = killed.elapsed().as_millis();
    assert!(lab.procs[caller].wait_exit(Duration::from_secs(40)), "caller did not finish");
    for h in &mut hogs {
        let _ = h.kill();
        let _ = h.wait();
    }
    settle(&lab);
    let text = check_calls("kill -9 under CPU load", &lab.report("caller"), &lab.report("callee"), n);
    eprintln!(
        "default lease under CPU load ({} busy loops on {cores} cores): {false_failovers} false failovers (takeovers by the standby plus releases by the active) in 10 s; VIP on the standby {vip_ms} ms after kill -9\n{text}",
        cores * 2
    );
    assert_eq!(false_failovers, 0.0, "false failovers under load");
    assert_eq!(both_or_moved, 0, "the VIP moved or was held twice under load");
    for c in lab.report("caller").iter().chain(lab.report("callee").iter()) {
        assert!(c["max_gap_ms"].as_f64().unwrap() < 1000.0, "media stopped under load: {c}");
    }
}

/// CDRs of an HA pair while the PostgreSQL collector is down: calls that
/// ended on the active node wait in its spool; it is killed (`kill -9`);
/// the standby takes over and ends the other calls into its own spool; the
/// killed node comes back as standby. Once PostgreSQL starts, both nodes
/// forward, and every call has exactly one row.
#[test]
fn cdrs_of_a_takeover_reach_postgres_once_from_both_nodes() {
    let serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !can_run() {
        return;
    }
    let mut lab = Lab::new("c");
    let Some(mut pg) = testkit::postgres::Postgres::require_in("ha-cdr", Some(&lab.ns("r")), &format!("{NET}.1"))
    else {
        return;
    };
    lab.cdr_keys = format!(
        "postgres = \"{}\"\nprobe_interval_ms = 100\ndown_after = 2\nup_after = 2\nhold_down_ms = 300",
        pg.conninfo_at(&format!("{NET}.1"))
    );
    lab.start_pair(600, 100);
    lab.ua("callee", "callee", &["--run-ms", "60000"]);
    // Short calls end on node a; long ones are up when it is killed.
    let short =
        lab.ua("caller", "caller", &["--calls", "5", "--rate", "10", "--duration-ms", "500", "--max-ms", "20000"]);
    let long =
        lab.ua("caller", "probe", &["--calls", "8", "--rate", "10", "--duration-ms", "6000", "--max-ms", "40000"]);
    assert!(lab.procs[short].wait_exit(Duration::from_secs(20)), "short calls did not finish");
    assert!(
        wait(Duration::from_secs(10), || lab.cdrs("a").len() == 5
            && lab.report("probe").iter().filter(|c| c["answered"] == true).count() == 8),
        "short calls ended on a ({:?}), long ones up ({:?})",
        lab.cdrs("a"),
        lab.report("probe")
    );
    lab.procs[1].kill9(); // sbc-a
    assert!(wait(Duration::from_secs(5), || lab.holds_vip("b")), "b did not take the VIP: {}", lab.ctl("b", &["ha"]));
    assert!(lab.procs[long].wait_exit(Duration::from_secs(40)), "long calls did not finish");
    let long_calls = lab.report("probe");
    assert_eq!(long_calls.len(), 8);
    for c in &long_calls {
        assert_eq!(c["ended"], "bye-sent", "a taken-over call did not end cleanly: {c}");
    }
    assert!(wait(Duration::from_secs(5), || lab.cdrs("b").len() >= 8), "standby CDRs: {:?}", lab.cdrs("b"));
    // Node a comes back (as standby) with its spool; then the collector starts.
    lab.start_sbc("a", 600, 100);
    assert!(wait(Duration::from_secs(10), || lab.ctl("a", &["ha"]).contains("role standby")));
    let spooled = |node: &str| Lab::metric_sum(&lab.metrics(node), "sbc_cdr_spool_records");
    assert_eq!(spooled("a"), 5.0, "node a's CDRs survived kill -9 in its spool");
    assert!(spooled("b") >= 8.0);
    pg.start();
    assert_eq!(
        pg.query("SELECT 1"),
        Ok(vec!["1".to_owned()]),
        "{}",
        std::fs::read_to_string(pg.log()).unwrap_or_default()
    );
    let rows = || pg.query("SELECT call_id FROM cdr ORDER BY received").unwrap_or_default();
    let want: std::collections::BTreeSet<String> = lab
        .report("caller")
        .iter()
        .chain(long_calls.iter())
        .filter_map(|c| c["call_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(want.len(), 13);
    assert!(
        wait(Duration::from_secs(30), || rows().len() >= 13 && spooled("a") == 0.0 && spooled("b") == 0.0),
        "rows: {:?}",
        rows()
    );
    std::thread::sleep(Duration::from_millis(500));
    let got = rows();
    let distinct: std::collections::BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(distinct.len(), got.len(), "one row per call: {got:?}");
    assert_eq!(distinct, want, "every call has its row");
    let fwd = |node: &str| Lab::metric_sum(&lab.metrics(node), "sbc_cdr_forwarded_total");
    assert_eq!(fwd("a"), 5.0, "node a forwarded its spool");
    assert!(fwd("b") >= 8.0, "node b forwarded the taken-over calls");
    // PostgreSQL runs in the lab's namespace: stopped before it goes.
    drop(pg);
    drop(lab);
    drop(serial);
}
