//! Remote media relays over ng, in network namespaces (10.22.x): the sbc,
//! sipp's caller and callee in a hub namespace, each relay in its own.
//!
//! - Two `media-relay` processes: real sipp calls with RTP spread over both;
//!   `kill -9` of one sends the next new calls to the other at once (an
//!   offer to the dead relay moves on without waiting for probes), and the
//!   calls on the survivor keep their RTP flowing to the end.
//! - A real rtpengine (userspace) as the relay of a call with RTP.
//!
//! The `media-relay` binary is the one built next to `sbc` in the target
//! directory (`cargo build --workspace`, as `scripts/test.sh` does).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use media_relay::bencode::Value;
use sbc::relays::ng::NgClient;
use support::lab::{spawn_in, Proc};
use testkit::netns::Netns;
use testkit::sipp::Template;
use testkit::{Sipp, TestDir};

/// Where sipp's RTP lives (on the hub's loopback, routed to by the relays).
const MEDIA_IP: &str = "10.22.0.1";
const SBC_SIP: &str = "127.0.0.1:5060";
const METRICS: &str = "127.0.0.1:9090";

/// The namespaces: the hub (sbc, sipp) and one per relay.
struct Lab {
    hub: Netns,
    relays: Vec<Netns>,
}

impl Lab {
    /// The hub and `n` relay namespaces; relay `i` is `10.22.{i+1}.2`,
    /// reached over a veth from `10.22.{i+1}.1`, with its default route back
    /// through the hub.
    fn new(n: usize) -> Result<Lab, String> {
        let hub = Netns::with_lo("rrhub")?;
        hub.addr("lo", &format!("{MEDIA_IP}/32"))?;
        let mut relays = Vec::new();
        for i in 1..=n {
            let ns = Netns::with_lo(&format!("rr{i}"))?;
            let (dev, peer) = (format!("rrh{i}"), format!("rrr{i}"));
            hub.veth(&dev, &ns, &peer, None)?;
            hub.addr(&dev, &format!("10.22.{i}.1/24"))?;
            hub.up(&dev)?;
            ns.addr(&peer, &format!("10.22.{i}.2/24"))?;
            ns.up(&peer)?;
            ns.ip(&["route", "add", "default", "via", &format!("10.22.{i}.1")])?;
            relays.push(ns);
        }
        Ok(Lab { hub, relays })
    }

    /// Runs `f` on a thread inside the hub namespace.
    fn in_hub<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.hub.enter();
                f()
            })
            .join()
            .unwrap()
        })
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.in_hub(|| testkit::metrics::metric_sum(METRICS.parse().unwrap(), name, labels))
    }

    /// The call-ids relay `i` holds (ng `list`, from the hub).
    fn calls_on(&self, i: usize) -> BTreeSet<String> {
        self.in_hub(|| {
            let ng = NgClient::new(ng_addr(i), Duration::from_secs(1), 2).unwrap();
            let mut d = Value::dict();
            d.insert("command", Value::str("list"));
            let r = ng.request(&d).unwrap();
            r.get("calls")
                .and_then(Value::as_list)
                .unwrap_or_default()
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
    }
}

fn ng_addr(i: usize) -> SocketAddr {
    format!("10.22.{}.2:2223", i + 1).parse().unwrap()
}

/// The `media-relay` binary next to `sbc`, or `None` (skipped; a failure
/// under CI) when it was not built.
fn media_relay_bin() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_sbc")).with_file_name("media-relay");
    if p.exists() {
        return Some(p);
    }
    testkit::env::skip(&format!("remote relays: {} is not built (cargo build -p media-relay)", p.display()));
    None
}

/// Starts `media-relay` in relay namespace `i` and waits for its ng.
fn start_media_relay(lab: &Lab, dir: &TestDir, bin: &std::path::Path, i: usize) -> Proc {
    let ip = format!("10.22.{}.2", i + 1);
    let cfg = dir.write(
        &format!("relay{i}.toml"),
        format!(
            "[relay]\ninterfaces = [\"{ip}\"]\nlisten_ng = \"{}\"\nport_min = 30000\nport_max = 30199\n\
             workers = 1\ntimeout = 60\nmetrics = \"off\"\nlog_level = \"info\"\n",
            ng_addr(i)
        ),
    );
    let relay = spawn_in(
        lab.relays[i].name(),
        dir.path(),
        &format!("relay{i}"),
        &[bin.to_str().unwrap(), "--config", cfg.to_str().unwrap()],
    );
    wait_ng(lab, i);
    relay
}

fn wait_ng(lab: &Lab, i: usize) {
    let up = lab.in_hub(|| {
        let ng = NgClient::new(ng_addr(i), Duration::from_millis(300), 1).unwrap();
        testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || ng.ping().is_ok())
    });
    assert!(up, "relay {i} did not answer ng ping");
}

/// Starts the sbc in the hub with `relays` as `[[media_relay]]` tables
/// (and any `[health]` keys in front of them).
fn start_sbc(lab: &Lab, dir: &TestDir, relays: &str) -> Proc {
    let cfg = dir.write(
        "sbc.toml",
        format!(
            "[sip]\nlisten = \"{SBC_SIP}\"\ndomains = [\"127.0.0.1\"]\n\
             [[trunk]]\nname = \"uas\"\naddress = \"127.0.0.1:5070\"\nprobe = false\n\
             [[route]]\nprefix = \"\"\ntrunks = [\"uas\"]\n\
             [health]\ninterval_ms = 0\n[cdr]\nfile = \"{}\"\n[metrics]\nlisten = \"{METRICS}\"\n\
             [control]\nsocket = \"{}\"\n\
             [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = 40000\nport_max = 40099\n\
             workers = 1\ntimeout = 60\nmetrics = \"off\"\n{relays}",
            dir.join("cdr.jsonl").display(),
            dir.join("ctl.sock").display(),
        ),
    );
    let sbc = spawn_in(
        lab.hub.name(),
        dir.path(),
        "sbc",
        &[env!("CARGO_BIN_EXE_sbc"), "run", "--config", cfg.to_str().unwrap()],
    );
    let up = lab.in_hub(|| testkit::sip::wait_for_sip(SBC_SIP.parse().unwrap(), Duration::from_secs(10)));
    assert!(up, "sbc did not answer OPTIONS");
    sbc
}

fn ctl(dir: &TestDir, cmd: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sbc"))
        .args(["ctl", "--socket"])
        .arg(dir.join("ctl.sock"))
        .arg(cmd)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The trunk: a sipp UAS in the hub answering on port 5070 and echoing
/// RTP, for `secs` at most; ready when this returns.
fn echo_uas(sipp: &Sipp, lab: &Lab, dir: &TestDir, secs: u32) -> testkit::ChildGuard {
    let uas = sipp
        .uas(dir.path(), 5070)
        .netns(lab.hub.name())
        .scenario("uas_echo.xml")
        .media(MEDIA_IP, Some(6000))
        .arg("-rtp_echo")
        .timeout_s(secs)
        .trace_err()
        .spawn("uas");
    std::thread::sleep(Duration::from_millis(300));
    uas
}

/// The `uac_rtp.xml` scenario streaming `secs` seconds of audio.
fn uac_scenario(dir: &TestDir, name: &str, secs: usize) -> PathBuf {
    let audio = dir.write(&format!("{name}.raw"), vec![0xd5u8; secs * 50 * 160]);
    Template::scenario("uac_rtp.xml")
        .set("AUDIO", audio.display())
        .set("PAUSE_MS", secs * 1000 + 300)
        .write(dir, &format!("{name}.xml"))
}

/// RTP packets the relay counted from each leg of a CDR.
fn leg_packets(cdr: &serde_json::Value) -> Vec<u64> {
    cdr["relay"]
        .as_array()
        .map(|legs| legs.iter().map(|l| l["media"][0]["packets"].as_u64().unwrap_or(0)).collect())
        .unwrap_or_default()
}

fn cdrs(dir: &TestDir) -> Vec<serde_json::Value> {
    support::lab::json_lines(&dir.join("cdr.jsonl"))
}

#[test]
fn calls_spread_over_two_relays_and_survive_the_loss_of_one() {
    if !testkit::env::require_root_and("remote relays", &["ip", "sipp"]) {
        return;
    }
    let (Some(bin), Some(sipp)) = (media_relay_bin(), Sipp::find()) else { return };
    let dir = TestDir::new("sbc-remote-relays");
    let lab = Lab::new(2).expect("lab");
    let mut relays: Vec<Proc> = (0..2).map(|i| start_media_relay(&lab, &dir, &bin, i)).collect();
    let tables = (0..2)
        .map(|i| format!("[[media_relay]]\nname = \"r{i}\"\nng = \"{}\"\nweight = 1\n", ng_addr(i)))
        .collect::<String>();
    let _sbc = start_sbc(&lab, &dir, &tables);
    let _uas = echo_uas(&sipp, &lab, &dir, 90);

    // Six 8-second calls with RTP: three on each relay.
    let long = uac_scenario(&dir, "long", 8);
    let mut first = sipp
        .uac(dir.path(), SBC_SIP, "1000", 5080)
        .netns(lab.hub.name())
        .sf(&long)
        .media(MEDIA_IP, None)
        .calls(6)
        .rate(20)
        .timeout_s(60)
        .trace_err()
        .spawn("uac-long");
    let spread = testkit::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        lab.metric("sbc_media_relay_calls_active", &[]) == 6.0
    });
    assert!(spread, "six calls placed:\n{}", ctl(&dir, "relays"));
    for r in ["r0", "r1"] {
        assert_eq!(lab.metric("sbc_media_relay_calls_active", &[("relay", r)]), 3.0, "{}", ctl(&dir, "relays"));
    }
    let on_survivor = lab.calls_on(1);
    assert_eq!(on_survivor.len(), 3, "relay r1 holds three calls: {on_survivor:?}");
    std::thread::sleep(Duration::from_secs(1));

    // kill -9 relay r0, and call again at once (its probes need three
    // misses to take it DOWN): every new call lands on r1.
    relays[0].kill9();
    let killed = Instant::now();
    let killed_wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let short = uac_scenario(&dir, "short", 2);
    let ok = sipp
        .uac(dir.path(), SBC_SIP, "1000", 5082)
        .netns(lab.hub.name())
        .sf(&short)
        .media(MEDIA_IP, None)
        .calls(4)
        .rate(20)
        .timeout_s(30)
        .timeout_error()
        .trace_err()
        .run_ok("uac-after-kill", Duration::from_secs(40));
    assert!(ok, "calls after the kill succeed");
    let table = ctl(&dir, "relays");
    assert!(
        lab.metric("sbc_media_relay_timeouts_total", &[("relay", "r0")]) >= 1.0,
        "an offer went to the dead relay and moved on: {table}"
    );
    assert_eq!(lab.metric("sbc_media_relay_up", &[("relay", "r0")]), 0.0, "{table}");
    assert!(table.lines().any(|l| l.starts_with("r0") && l.contains("DOWN")), "{table}");
    assert!(killed.elapsed() < Duration::from_secs(15));

    assert!(first.wait_timeout(Duration::from_secs(40)).is_some(), "the long calls ended");
    let records = cdrs(&dir);
    assert_eq!(records.len(), 10, "one CDR per call");
    // The calls on the survivor kept their RTP to the end: 8 s at 50
    // packets a second, each way.
    for r in records.iter().filter(|r| on_survivor.contains(r["call_id"].as_str().unwrap_or_default())) {
        let p = leg_packets(r);
        assert_eq!(p.len(), 2, "{r}");
        assert!(p.iter().all(|&n| n >= 380), "RTP flowed through r1 for the whole call: {r}");
    }
    // The calls made after the kill had media through r1.
    let after: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["start"].as_f64().is_some_and(|t| t >= killed_wall)).collect();
    assert_eq!(after.len(), 4);
    for r in after {
        assert_eq!(r["final_code"], 200, "{r}");
        assert!(leg_packets(r).iter().all(|&n| n > 50), "{r}");
    }
    assert_eq!(lab.metric("sbc_media_relay_calls_active", &[]), 0.0);
    support::lab::remove_unless_failing(dir.path());
}

#[test]
fn a_call_with_rtp_through_rtpengine() {
    if !testkit::env::require_root_and("remote relays with rtpengine", &["ip", "sipp", "rtpengine"]) {
        return;
    }
    let Some(sipp) = Sipp::find() else { return };
    let dir = TestDir::new("sbc-rtpengine");
    let lab = Lab::new(1).expect("lab");
    let _rtpengine = spawn_in(
        lab.relays[0].name(),
        dir.path(),
        "rtpengine",
        &[
            "rtpengine",
            "--config-file=none",
            "--table=-1",
            "--interface=10.22.1.2",
            &format!("--listen-ng={}", ng_addr(0)),
            "--port-min=35000",
            "--port-max=35999",
            "--delete-delay=0",
            "--foreground",
            "--log-stderr",
            "--log-level=6",
            "--num-threads=1",
        ],
    );
    wait_ng(&lab, 0);
    let _sbc = start_sbc(&lab, &dir, &format!("[[media_relay]]\nname = \"rtpengine\"\nng = \"{}\"\n", ng_addr(0)));
    let _uas = echo_uas(&sipp, &lab, &dir, 60);
    let sf = uac_scenario(&dir, "call", 3);
    let ok = sipp
        .uac(dir.path(), SBC_SIP, "1000", 5080)
        .netns(lab.hub.name())
        .sf(&sf)
        .media(MEDIA_IP, None)
        .calls(1)
        .timeout_s(30)
        .timeout_error()
        .trace_err()
        .run_ok("uac", Duration::from_secs(40));
    assert!(ok, "the call through rtpengine succeeds");
    let records = cdrs(&dir);
    assert_eq!(records.len(), 1);
    let p = leg_packets(&records[0]);
    assert_eq!(p.len(), 2, "rtpengine's delete reports both legs: {}", records[0]);
    assert!(p.iter().all(|&n| n >= 100), "RTP went both ways through rtpengine: {}", records[0]);
    let table = ctl(&dir, "relays");
    assert!(table.lines().any(|l| l.starts_with("rtpengine") && l.contains("UP")), "{table}");
    assert!(lab.metric("sbc_media_relay_requests_total", &[("relay", "rtpengine")]) >= 3.0, "{table}");
    assert_eq!(lab.metric("sbc_media_relay_errors_total", &[]), 0.0, "{table}");
    support::lab::remove_unless_failing(dir.path());
}

/// Runs `n` calls of `secs` seconds of RTP through the sbc (sipp in the
/// hub, local port `port`); whether all succeeded.
fn calls(lab: &Lab, dir: &TestDir, sipp: &Sipp, port: u16, n: u32, secs: usize) -> bool {
    let sf = uac_scenario(dir, &format!("calls{port}"), secs);
    sipp.uac(dir.path(), SBC_SIP, "1000", port)
        .netns(lab.hub.name())
        .sf(&sf)
        .media(MEDIA_IP, None)
        .calls(n)
        .rate(20)
        .timeout_s(30)
        .timeout_error()
        .trace_err()
        .run_ok(&format!("uac{port}"), Duration::from_secs(40))
}

#[test]
fn a_silent_relay_costs_one_timeout_and_comes_back_after_the_hold_down() {
    if !testkit::env::require_root_and("remote relays", &["ip", "sipp"]) {
        return;
    }
    let (Some(bin), Some(sipp)) = (media_relay_bin(), Sipp::find()) else { return };
    let dir = TestDir::new("sbc-relay-silent");
    let lab = Lab::new(2).expect("lab");
    let relays: Vec<Proc> = (0..2).map(|i| start_media_relay(&lab, &dir, &bin, i)).collect();
    let tables =
        (0..2).map(|i| format!("[[media_relay]]\nname = \"r{i}\"\nng = \"{}\"\n", ng_addr(i))).collect::<String>();
    // The sbc's own [health] section is written by start_sbc: the relays
    // use its defaults (3 misses DOWN, 3 answers and 10 s back UP).
    let _sbc = start_sbc(&lab, &dir, &tables);
    let _uas = echo_uas(&sipp, &lab, &dir, 90);

    // Relay r0 stops answering (SIGSTOP: no ICMP, its socket still takes
    // the datagrams). The first offer to it waits out the 1 s timeout and
    // moves to r1; r0 is DOWN from then on, so the others do not wait.
    let pid = relays[0].child.as_ref().unwrap().id().to_string();
    assert!(support::lab::sh(&["kill", "-STOP", &pid]));
    let t = Instant::now();
    assert!(calls(&lab, &dir, &sipp, 5084, 4, 1), "calls while r0 is silent");
    let took = t.elapsed();
    let table = ctl(&dir, "relays");
    assert_eq!(lab.metric("sbc_media_relay_timeouts_total", &[("relay", "r0")]), 1.0, "one stall: {table}");
    assert_eq!(lab.metric("sbc_media_relay_up", &[("relay", "r0")]), 0.0, "{table}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    let r0_requests = lab.metric("sbc_media_relay_requests_total", &[("relay", "r0")]);
    assert_eq!(r0_requests, 1.0, "only the offer that timed out went to r0: {table}");
    let records = cdrs(&dir);
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| leg_packets(r).iter().all(|&n| n > 20)), "media through r1: {records:?}");

    // r0 answers again: its probes bring it back after the hold-down, and
    // new calls are spread over both again.
    assert!(support::lab::sh(&["kill", "-CONT", &pid]));
    let back = testkit::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        lab.metric("sbc_media_relay_up", &[("relay", "r0")]) == 1.0
    });
    assert!(back, "r0 came back UP: {}", ctl(&dir, "relays"));
    assert!(calls(&lab, &dir, &sipp, 5086, 4, 1), "calls after r0 is back");
    let table = ctl(&dir, "relays");
    // Two of the four calls: offer, answer and delete each.
    assert_eq!(lab.metric("sbc_media_relay_requests_total", &[("relay", "r0")]), r0_requests + 6.0, "{table}");
    assert_eq!(lab.metric("sbc_media_relay_errors_total", &[]), 0.0, "{table}");
    drop(relays);
    support::lab::remove_unless_failing(dir.path());
}
