//! Trunk failover with real sipp trunks and a real sbc: a primary that
//! dies and comes back (OPTIONS misses, hysteresis, hold-down), a flapping
//! trunk, 503 failover, OPTIONS answered 404, call caps with 503 and
//! Retry-After, and operator forcing through `sbc ctl`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

#[path = "../../media-relay/tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use common::{ChildGuard, TestDir};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/trunk_fixtures");
const CALL_FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/call_fixtures");
static NEXT: AtomicU16 = AtomicU16::new(0);

struct Ports {
    sip: u16,
    metrics: u16,
    a: u16,
    b: u16,
    uac: u16,
    relay: u16,
}

fn ports() -> Ports {
    let k = NEXT.fetch_add(1, Ordering::Relaxed);
    // Signaling ports come from the kernel so that concurrent runs on a shared
    // machine do not collide; the relay's media range is spread by pid (the
    // relay skips ports it cannot bind).
    Ports {
        sip: common::free_sip_port(),
        metrics: common::free_tcp_port(),
        a: common::free_sip_port(),
        b: common::free_sip_port(),
        uac: common::free_sip_port(),
        relay: 22000 + (std::process::id() % 10) as u16 * 3000 + k * 400,
    }
}

fn sipp() -> Option<PathBuf> {
    common::require_binary("sipp")
}

struct Sbc {
    guard: ChildGuard,
    sip: SocketAddr,
    metrics: SocketAddr,
    ctl: PathBuf,
    cdr: PathBuf,
}

/// An sbc with trunks `carrier-a` (primary) and `carrier-b` in one route.
fn start_sbc(dir: &TestDir, p: &Ports, trunk_a_extra: &str, health: &str) -> Sbc {
    start_sbc_with(dir, p, "", trunk_a_extra, health)
}

/// The same, with extra `[sip]` keys.
fn start_sbc_with(dir: &TestDir, p: &Ports, sip_extra: &str, trunk_a_extra: &str, health: &str) -> Sbc {
    let ctl = dir.join("ctl.sock");
    let cdr = dir.join("cdr.jsonl");
    let cfg = format!(
        "[sip]\nlisten = \"127.0.0.1:{sip}\"\ndomains = [\"127.0.0.1\"]\ninvite_timeout_ms = 1000\n{sip_extra}\n\
         [[trunk]]\nname = \"carrier-a\"\naddress = \"127.0.0.1:{a}\"\n{trunk_a_extra}\n\
         [[trunk]]\nname = \"carrier-b\"\naddress = \"127.0.0.1:{b}\"\n\
         [[route]]\nprefix = \"\"\ntrunks = [\"carrier-a\", \"carrier-b\"]\n\
         [health]\ninterval_ms = 500\nprobe_timeout_ms = 300\ndown_after = 3\nup_after = 3\nhold_down_s = 3\n{health}\n\
         [control]\nsocket = \"{ctl}\"\n[cdr]\nfile = \"{cdr}\"\n[metrics]\nlisten = \"127.0.0.1:{m}\"\n\
         [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = {r}\nport_max = {r2}\nworkers = 1\ntimeout = 60\nmetrics = \"off\"\n",
        sip = p.sip,
        a = p.a,
        b = p.b,
        ctl = ctl.display(),
        cdr = cdr.display(),
        m = p.metrics,
        r = p.relay,
        r2 = p.relay + 399
    );
    let path = dir.write("sbc.toml", cfg);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sbc"));
    cmd.args(["run", "--config"]).arg(&path).env("RUST_LOG", "info");
    let guard = ChildGuard::spawn("sbc", &mut cmd, dir.path());
    let sip = SocketAddr::from(([127, 0, 0, 1], p.sip));
    assert!(common::wait_for_sip(sip, Duration::from_secs(10)), "sbc up");
    Sbc { guard, sip, metrics: SocketAddr::from(([127, 0, 0, 1], p.metrics)), ctl, cdr }
}

fn metric(s: &Sbc, name: &str, labels: &[(&str, &str)]) -> f64 {
    common::metric_sum(s.metrics, name, labels)
}

fn trunk_up(s: &Sbc, t: &str) -> bool {
    metric(s, "sbc_trunk_up", &[("trunk", t)]) == 1.0
}

/// A sipp trunk answering OPTIONS with `options` and INVITE with `invite`.
fn trunk(dir: &TestDir, sipp: &Path, name: &str, port: u16, options: u16, invite: u16) -> ChildGuard {
    let xml = std::fs::read_to_string(format!("{FIX}/trunk_uas.xml"))
        .unwrap()
        .replace("@OPTIONS_CODE@", &options.to_string())
        .replace("@INVITE_CODE@", &invite.to_string())
        .replace("@AFTER_ACK@", if invite == 200 { "call" } else { "end" });
    let sf = dir.write(&format!("{name}.xml"), xml);
    let mut cmd = Command::new(sipp);
    cmd.current_dir(dir.path()).arg("-sf").arg(&sf).args(["-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin"]);
    ChildGuard::spawn(name, &mut cmd, dir.path())
}

/// Places `n` calls of `ms` through the sbc; returns the successful count.
fn calls(dir: &TestDir, sipp: &Path, s: &Sbc, p: &Ports, n: u32, ms: u32, rate: u32) -> u32 {
    let stf = dir.join(&format!("uac-{}.csv", common_counter()));
    let mut cmd = Command::new(sipp);
    cmd.current_dir(dir.path())
        .args(["-sn", "uac", &s.sip.to_string(), "-s", "1000", "-i", "127.0.0.1", "-p", &p.uac.to_string()])
        .args(["-m", &n.to_string(), "-d", &ms.to_string(), "-r", &rate.to_string(), "-nostdin", "-timeout", "60s"])
        .args(["-trace_stat", "-stf"])
        .arg(&stf);
    let mut g = ChildGuard::spawn("uac", &mut cmd, dir.path());
    let _ = g.wait_timeout(Duration::from_secs(90));
    let text = std::fs::read_to_string(&stf).unwrap_or_default();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(';').collect()).collect();
    let Some(h) = rows.first() else { return 0 };
    let col = h.iter().position(|c| *c == "SuccessfulCall(C)").unwrap();
    rows.last().unwrap()[col].parse().unwrap_or(0)
}

fn common_counter() -> u64 {
    static C: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    C.fetch_add(1, Ordering::Relaxed)
}

fn targets(s: &Sbc) -> Vec<String> {
    std::fs::read_to_string(&s.cdr)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["target"].as_str().map(str::to_owned))
        .collect()
}

/// Seconds since midnight of a log line's leading RFC 3339 UTC timestamp.
fn log_seconds(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?;
    let time = ts.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, sec) =
        (parts.next()?.parse::<f64>().ok()?, parts.next()?.parse::<f64>().ok()?, parts.next()?.parse::<f64>().ok()?);
    Some(h * 3600.0 + m * 60.0 + sec)
}

fn wait(what: &str, secs: u64, f: impl FnMut() -> bool) {
    assert!(common::wait_until(Duration::from_secs(secs), Duration::from_millis(100), f), "timed out waiting: {what}");
}

#[test]
fn primary_failure_moves_calls_and_hysteresis_brings_it_back() {
    let Some(sipp) = sipp() else { return };
    let dir = TestDir::new("trunk-primary");
    let p = ports();
    let s = start_sbc(&dir, &p, "", "");
    let mut a = trunk(&dir, &sipp, "carrier-a", p.a, 200, 200);
    let _b = trunk(&dir, &sipp, "carrier-b", p.b, 200, 200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(calls(&dir, &sipp, &s, &p, 2, 100, 10), 2);
    assert!(targets(&s).iter().all(|t| t == "carrier-a"), "the primary takes calls while it is up");

    let _ = a.stop(Duration::ZERO);
    let killed = Instant::now();
    assert_eq!(calls(&dir, &sipp, &s, &p, 1, 100, 1), 1, "the next call completes via the secondary");
    let switch = killed.elapsed();
    eprintln!("first call completed via carrier-b {switch:?} after carrier-a died");
    assert_eq!(targets(&s).last().map(String::as_str), Some("carrier-b"));
    // Three probe misses at 500 ms, plus the INVITE timeout counted above.
    wait("carrier-a DOWN", 5, || !trunk_up(&s, "carrier-a"));
    let down_at = Instant::now();
    let log = std::fs::read_to_string(s.guard.stderr_path()).unwrap();
    assert!(log.contains("trunk carrier-a DOWN: 3 consecutive failures"), "the decision is logged with its reason");
    // While DOWN, new calls skip it without waiting.
    let before = metric(&s, "sbc_trunk_attempts_total", &[("trunk", "carrier-a"), ("outcome", "skipped_down")]);
    let t0 = Instant::now();
    assert_eq!(calls(&dir, &sipp, &s, &p, 1, 100, 1), 1);
    assert!(metric(&s, "sbc_trunk_attempts_total", &[("trunk", "carrier-a"), ("outcome", "skipped_down")]) > before);
    eprintln!("a call while carrier-a is DOWN took {:?} end to end", t0.elapsed());

    // Back again: UP only after 3 good probes and the 3 s hold-down.
    let _a2 = trunk(&dir, &sipp, "carrier-a2", p.a, 200, 200);
    wait("carrier-a UP", 10, || trunk_up(&s, "carrier-a"));
    // Measure the hold-down on the sbc's own clock: the times of its DOWN and
    // UP decisions in its log (the test only sees them when it polls).
    let log = std::fs::read_to_string(s.guard.stderr_path()).unwrap();
    let at = |what: &str| log.lines().find(|l| l.contains(what)).and_then(log_seconds).expect(what);
    let up_after = at("trunk carrier-a UP") - at("trunk carrier-a DOWN");
    eprintln!(
        "carrier-a UP again {up_after:.3} s after it went DOWN (hold-down 3 s; seen by the test after {:?})",
        down_at.elapsed()
    );
    assert!(up_after >= 3.0, "hold-down respected: {up_after:.3} s");
    assert_eq!(metric(&s, "sbc_trunk_transitions_total", &[("trunk", "carrier-a")]), 2.0);
    assert_eq!(calls(&dir, &sipp, &s, &p, 1, 100, 1), 1);
    assert_eq!(targets(&s).last().map(String::as_str), Some("carrier-a"), "failback to the primary");
}

#[test]
fn flapping_trunk_is_damped_by_the_hysteresis() {
    let Some(sipp) = sipp() else { return };
    let dir = TestDir::new("trunk-flap");
    let p = ports();
    let s = start_sbc(&dir, &p, "", "");
    let _b = trunk(&dir, &sipp, "carrier-b", p.b, 200, 200);
    // carrier-a flaps: 2 s up, 2 s down, for 30 s.
    let start = Instant::now();
    let mut k = 0;
    while start.elapsed() < Duration::from_secs(30) {
        let mut a = trunk(&dir, &sipp, &format!("flap-{k}"), p.a, 200, 200);
        std::thread::sleep(Duration::from_secs(2));
        let _ = a.stop(Duration::ZERO);
        std::thread::sleep(Duration::from_secs(2));
        k += 1;
    }
    let transitions = metric(&s, "sbc_trunk_transitions_total", &[("trunk", "carrier-a")]);
    // Each DOWN→UP cycle needs at least the 3 s hold-down.
    let bound = 2.0 * (30.0_f64 / 3.0).ceil() + 1.0;
    eprintln!("carrier-a flapped {k} times in 30 s; the sbc made {transitions} transitions (bound {bound})");
    assert!(transitions >= 1.0, "the dead periods were noticed");
    assert!(transitions <= bound, "{transitions} transitions");
}

#[test]
fn a_503_from_the_primary_fails_over_and_counts_against_it() {
    let Some(sipp) = sipp() else { return };
    let dir = TestDir::new("trunk-503");
    let p = ports();
    // No probes: only real calls judge the trunk here.
    let s = start_sbc(&dir, &p, "probe = false", "");
    let _a = trunk(&dir, &sipp, "carrier-a", p.a, 200, 503);
    let _b = trunk(&dir, &sipp, "carrier-b", p.b, 200, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(calls(&dir, &sipp, &s, &p, 4, 100, 2), 4, "every call completes via carrier-b");
    assert!(targets(&s).iter().all(|t| t == "carrier-b"));
    wait("carrier-a DOWN after three 503s", 3, || !trunk_up(&s, "carrier-a"));
    assert_eq!(metric(&s, "sbc_trunk_attempts_total", &[("trunk", "carrier-a"), ("outcome", "failed")]), 3.0);
    assert_eq!(metric(&s, "sbc_trunk_attempts_total", &[("trunk", "carrier-a"), ("outcome", "skipped_down")]), 1.0);
}

#[test]
fn options_answered_404_is_alive_unless_configured_otherwise() {
    let Some(sipp) = sipp() else { return };
    let dir = TestDir::new("trunk-404");
    let p = ports();
    let s = start_sbc(&dir, &p, "", "");
    let _a = trunk(&dir, &sipp, "carrier-a", p.a, 404, 200);
    std::thread::sleep(Duration::from_secs(3));
    assert!(trunk_up(&s, "carrier-a"), "any answer to OPTIONS means alive by default");
    drop(s);
    let dir2 = TestDir::new("trunk-404-strict");
    let p2 = ports();
    let s2 = start_sbc(&dir2, &p2, "", "alive_codes = [200]");
    let _a2 = trunk(&dir2, &sipp, "carrier-a", p2.a, 404, 200);
    wait("carrier-a DOWN when only 200 counts", 5, || !trunk_up(&s2, "carrier-a"));
    let log = std::fs::read_to_string(s2.guard.stderr_path()).unwrap();
    assert!(log.contains("OPTIONS answered 404"), "the reason names the answer");
}

#[test]
fn call_caps_overflow_to_the_next_trunk_then_503() {
    let Some(sipp) = sipp() else { return };
    let dir = TestDir::new("trunk-cap");
    let p = ports();
    let s = start_sbc(&dir, &p, "max_calls = 2", "");
    let _a = trunk(&dir, &sipp, "carrier-a", p.a, 200, 200);
    let _b = trunk(&dir, &sipp, "carrier-b", p.b, 200, 200);
    std::thread::sleep(Duration::from_millis(300));
    // Three overlapping 3 s calls: the third overflows to carrier-b.
    assert_eq!(calls(&dir, &sipp, &s, &p, 3, 3000, 10), 3);
    let t = targets(&s);
    assert_eq!(t.iter().filter(|x| *x == "carrier-a").count(), 2, "{t:?}");
    assert_eq!(t.iter().filter(|x| *x == "carrier-b").count(), 1, "{t:?}");
    assert!(metric(&s, "sbc_trunk_attempts_total", &[("trunk", "carrier-a"), ("outcome", "skipped_cap")]) >= 1.0);
    // With carrier-b forced down, the capped primary leaves nothing: 503.
    let out = common_ctl(&s, "trunk carrier-b down");
    assert!(out.starts_with("ok"), "{out}");
    let mut hold = Command::new(&sipp);
    hold.current_dir(dir.path())
        .args(["-sn", "uac", &s.sip.to_string(), "-s", "1000", "-i", "127.0.0.1", "-p", &p.uac.to_string()])
        .args(["-m", "2", "-d", "4000", "-r", "10", "-nostdin", "-timeout", "30s"]);
    let mut holder = ChildGuard::spawn("holder", &mut hold, dir.path());
    std::thread::sleep(Duration::from_millis(800));
    let busy = dir.write(
        "uac_503.xml",
        std::fs::read_to_string(format!("{CALL_FIX}/uac_expect.xml")).unwrap().replace("@CODE@", "503"),
    );
    let mut one = Command::new(&sipp);
    one.current_dir(dir.path())
        .args([
            "-sf",
            busy.to_str().unwrap(),
            &s.sip.to_string(),
            "-s",
            "1000",
            "-i",
            "127.0.0.1",
            "-p",
            &common::free_sip_port().to_string(),
        ])
        .args(["-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error", "-trace_msg", "-message_file"])
        .arg(dir.join("msgs.log"));
    let mut g = ChildGuard::spawn("uac-503", &mut one, dir.path());
    assert!(
        g.wait_timeout(Duration::from_secs(30)).expect("done").success(),
        "the third call gets 503\n{}",
        g.log_tail(20)
    );
    let msgs = std::fs::read_to_string(dir.join("msgs.log")).unwrap_or_default();
    assert!(msgs.contains("Retry-After:"), "503 carries Retry-After");
    let _ = holder.wait_timeout(Duration::from_secs(20));
}

fn common_ctl(s: &Sbc, cmd: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sbc"))
        .args(["ctl", "--socket"])
        .arg(&s.ctl)
        .args(cmd.split_whitespace())
        .output()
        .expect("sbc ctl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn operators_force_trunks_through_sbc_ctl() {
    let Some(sipp) = sipp() else { return };
    let dir = TestDir::new("trunk-ctl");
    let p = ports();
    let s = start_sbc(&dir, &p, "", "");
    let _a = trunk(&dir, &sipp, "carrier-a", p.a, 200, 200);
    let _b = trunk(&dir, &sipp, "carrier-b", p.b, 200, 200);
    let table = common_ctl(&s, "trunks");
    assert!(table.contains("carrier-a") && table.contains("carrier-b") && table.contains("UP"), "{table}");
    assert!(common_ctl(&s, "trunk carrier-a down").starts_with("ok: trunk carrier-a is DOWN"));
    assert!(common_ctl(&s, "trunks").lines().any(|l| l.starts_with("carrier-a") && l.contains("DOWN")));
    assert_eq!(calls(&dir, &sipp, &s, &p, 1, 100, 1), 1);
    assert_eq!(targets(&s).last().map(String::as_str), Some("carrier-b"), "forced DOWN is skipped");
    let log = std::fs::read_to_string(s.guard.stderr_path()).unwrap();
    assert!(log.contains("audit: operator forced trunk carrier-a down"), "the command is audited");
    assert!(common_ctl(&s, "trunk carrier-a auto").starts_with("ok: trunk carrier-a is UP"));
    assert_eq!(calls(&dir, &sipp, &s, &p, 1, 100, 1), 1);
    assert_eq!(targets(&s).last().map(String::as_str), Some("carrier-a"));
    assert!(common_ctl(&s, "trunk nope down").starts_with("error: no trunk named"));
}

/// The Call-ID in one of sipp's "aborting call" error lines: `... Call-ID
/// 'ID'` (any case), `Call-Id: ID, ... aborting call`, or `... for call: ID`.
fn aborted_call_id(line: &str) -> Option<&str> {
    let lower = line.to_ascii_lowercase();
    if !lower.contains("abort") {
        return None;
    }
    if let Some(i) = lower.find("call-id '") {
        let rest = &line[i + "call-id '".len()..];
        return rest.split_once('\'').map(|(id, _)| id);
    }
    if let Some(i) = lower.find("call-id: ") {
        let rest = &line[i + "call-id: ".len()..];
        return rest.split([',', ' ']).next().filter(|id| !id.is_empty());
    }
    let i = lower.find("for call: ")?;
    line[i + "for call: ".len()..].split_whitespace().next()
}

#[test]
fn sipp_abort_lines_name_their_call() {
    let cases = [
        ("2026-11-23\t19:22:50.04: Aborting call on UDP retransmission timeout for Call-ID '57-1@127.0.0.1'", "57-1@127.0.0.1"),
        ("Aborting call on unexpected message for Call-Id '8-2@h': while expecting '200'", "8-2@h"),
        ("Call-Id: 9-3@h, receive timeout on message sip:5 without label to jump to (ontimeout attribute): aborting call", "9-3@h"),
        ("Aborting call on an unexpected BYE for call: 10-4@h", "10-4@h"),
        ("Aborted call with Call-ID '11-5@h'", "11-5@h"),
    ];
    for (line, id) in cases {
        assert_eq!(aborted_call_id(line), Some(id), "{line}");
    }
    assert_eq!(aborted_call_id("Dead call 60-1@h (aborted at index 8), received 'SIP/2.0 481'"), None);
}

/// The figure for the issue: calls lost when the primary dies under 20 CPS.
/// Calls already answered on the dead trunk cannot be saved (their BYE has
/// nowhere to go); every new attempt must complete via the secondary.
#[test]
fn calls_lost_when_the_primary_dies_under_20_cps() {
    let Some(sipp) = sipp() else { return };
    let dir = TestDir::new("trunk-load");
    let p = ports();
    let s = start_sbc(&dir, &p, "", "");
    let mut a = trunk(&dir, &sipp, "carrier-a", p.a, 200, 200);
    let _b = trunk(&dir, &sipp, "carrier-b", p.b, 200, 200);
    std::thread::sleep(Duration::from_millis(500));
    let stf = dir.join("load.csv");
    let mut cmd = Command::new(&sipp);
    cmd.current_dir(dir.path())
        .args(["-sn", "uac", &s.sip.to_string(), "-s", "1000", "-i", "127.0.0.1", "-p", &p.uac.to_string()])
        .args(["-m", "160", "-r", "20", "-d", "200", "-nostdin", "-timeout", "60s", "-trace_stat", "-stf"])
        .arg(&stf)
        .args(["-trace_err", "-error_file"])
        .arg(dir.join("errors.log"));
    let mut load = ChildGuard::spawn("uac-load", &mut cmd, dir.path());
    std::thread::sleep(Duration::from_secs(3));
    let in_progress_on_a = metric(&s, "sbc_trunk_calls_active", &[("trunk", "carrier-a")]);
    let kill_started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let _ = a.stop(Duration::ZERO);
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let _ = load.wait_timeout(Duration::from_secs(60));
    let text = std::fs::read_to_string(&stf).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(';').collect()).collect();
    let col = |n: &str| rows[0].iter().position(|c| *c == n).unwrap();
    let last = rows.last().unwrap();
    let ok: u32 = last[col("SuccessfulCall(C)")].parse().unwrap();
    let failed: u32 = last[col("FailedCall(C)")].parse().unwrap();
    eprintln!(
        "160 calls at 20 CPS, carrier-a killed at 3 s with {in_progress_on_a} calls up on it: {ok} completed, {failed} failed"
    );
    assert_eq!(ok + failed, 160);
    // Which calls failed, by Call-ID, from sipp's error log.
    let errors = std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default();
    let mut lost: Vec<&str> = errors.lines().filter_map(aborted_call_id).collect();
    lost.sort_unstable();
    lost.dedup();
    assert_eq!(lost.len(), failed as usize, "every failed call is named in sipp's error log:\n{errors}");
    // Each of them must have been up on carrier-a when it died: answered
    // there before the kill (a 200 already on its way is answered a moment
    // after it) and torn down no earlier than just before it (a BYE the sbc
    // forwarded a moment before the kill may never have been answered).
    let cdrs: Vec<serde_json::Value> = std::fs::read_to_string(&s.cdr)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for id in &lost {
        let r = cdrs.iter().find(|r| r["call_id"] == *id);
        if let Some(r) = r {
            let at = |k: &str| r[k].as_f64().map(|t| format!("{:+.3} s", t - kill_started));
            eprintln!("lost {id}: answered {:?}, ended {:?} from the kill", at("answer"), at("end"));
        }
        let up = r.is_some_and(|r| {
            r["target"] == "carrier-a"
                && r["answer"].as_f64().is_some_and(|a| a <= killed_at + 0.5)
                && r["end"].as_f64().is_some_and(|e| e >= kill_started - 0.5)
        });
        assert!(
            up,
            "only calls already up on the dead trunk may fail; {id} was not (kill at {kill_started:.3}): {r:?}"
        );
    }
    assert!(targets(&s).iter().filter(|t| *t == "carrier-b").count() >= 60, "the rest went to carrier-b");
}

/// Timer C: a primary that rings and never answers is cancelled after
/// `timer_c_s` and the call completes on the next trunk.
#[test]
fn timer_c_cancels_a_branch_that_rings_forever() {
    let Some(sipp) = sipp() else { return };
    let dir = TestDir::new("trunk-timer-c");
    let p = ports();
    let s = start_sbc_with(&dir, &p, "timer_c_s = 2", "probe = false", "");
    let mut cmd = Command::new(&sipp);
    cmd.current_dir(dir.path())
        .args(["-sf", &format!("{CALL_FIX}/uas_ring_forever.xml"), "-i", "127.0.0.1", "-p", &p.a.to_string()])
        .args(["-m", "1", "-nostdin", "-timeout", "30s"]);
    let mut a = ChildGuard::spawn("ringer", &mut cmd, dir.path());
    let _b = trunk(&dir, &sipp, "carrier-b", p.b, 200, 200);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    assert_eq!(calls(&dir, &sipp, &s, &p, 1, 100, 1), 1, "the call completes on carrier-b");
    let took = t0.elapsed();
    eprintln!("call completed via carrier-b {took:?} after a 2 s timer C on the ringing primary");
    assert!(took >= Duration::from_secs(2), "not before timer C");
    assert!(
        a.wait_timeout(Duration::from_secs(10)).expect("ringer done").success(),
        "the ringing branch got its CANCEL"
    );
    assert_eq!(targets(&s).last().map(String::as_str), Some("carrier-b"));
}
