//! Trunk failover with real sipp trunks and a real sbc: a primary that
//! dies and comes back (OPTIONS misses, hysteresis, hold-down), a flapping
//! trunk, 503 failover, OPTIONS answered 404, call caps with 503 and
//! Retry-After, and operator forcing through `sbc ctl`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::time::{Duration, Instant};

use support::{Ports, Sbc};
use testkit::sipp::{SippCmd, SippStats, Template};
use testkit::{ChildGuard, Sipp, TestDir};

fn ports() -> Ports {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ports::new(22000 + (std::process::id() % 10) as u16 * 3000 + k * 400)
}

/// An sbc with trunks `carrier-a` (primary) and `carrier-b` in one route,
/// with extra `[sip]` keys, `carrier-a` keys and `[health]` keys.
fn start_sbc_with(dir: &TestDir, p: &Ports, sip_extra: &str, trunk_a_extra: &str, health: &str) -> Sbc {
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
        ctl = dir.join("ctl.sock").display(),
        cdr = dir.join("cdr.jsonl").display(),
        m = p.metrics,
        r = p.relay,
        r2 = p.relay + 399
    );
    Sbc::start(dir, p, &cfg, Some("info"))
}

fn trunk_up(s: &Sbc, t: &str) -> bool {
    s.metric("sbc_trunk_up", &[("trunk", t)]) == 1.0
}

/// One test: sipp, a scratch dir, its ports and its sbc.
struct Lab {
    sipp: Sipp,
    dir: TestDir,
    p: Ports,
    s: Sbc,
}

impl Lab {
    /// `None` (skipped) without sipp; otherwise an sbc started with
    /// [`start_sbc_with`].
    fn start(label: &str, sip_extra: &str, trunk_a_extra: &str, health: &str) -> Option<Lab> {
        let sipp = Sipp::find()?;
        let dir = TestDir::new(label);
        let p = ports();
        let s = start_sbc_with(&dir, &p, sip_extra, trunk_a_extra, health);
        Some(Lab { sipp, dir, p, s })
    }

    /// A sipp trunk answering OPTIONS with `options` and INVITE with `invite`.
    fn trunk(&self, name: &str, port: u16, options: u16, invite: u16) -> ChildGuard {
        let sf = Template::scenario("trunk_uas.xml")
            .set("OPTIONS_CODE", options)
            .set("INVITE_CODE", invite)
            .set("AFTER_ACK", if invite == 200 { "call" } else { "end" })
            .write(&self.dir, &format!("{name}.xml"));
        self.sipp.uas(self.dir.path(), port).sf(sf).spawn(name)
    }

    /// The primary, `carrier-a`, answering INVITE with `a_invite`, and
    /// `carrier-b` answering everything with 200.
    fn both_trunks(&self, a_invite: u16) -> (ChildGuard, ChildGuard) {
        (self.trunk("carrier-a", self.p.a, 200, a_invite), self.trunk("carrier-b", self.p.b, 200, 200))
    }

    /// A UAC calling 1000 through the sbc with sipp's built-in scenario.
    fn uac(&self) -> SippCmd {
        self.sipp.uac(self.dir.path(), self.s.sip, "1000", self.p.uac).sn("uac")
    }

    /// Places `n` calls of `ms` through the sbc; returns the successful count.
    fn calls(&self, n: u32, ms: u32, rate: u32) -> u64 {
        static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let stf = self.dir.join(&format!("uac-{}.csv", RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let run = self.uac().calls(n).hold_ms(ms).rate(rate).timeout_s(60).stats(&stf);
        let _ = run.finish("uac", Duration::from_secs(90));
        SippStats::read(&stf).map_or(0, |st| st.successful())
    }
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
    assert!(testkit::wait_until(Duration::from_secs(secs), Duration::from_millis(100), f), "timed out waiting: {what}");
}

#[test]
fn primary_failure_moves_calls_and_hysteresis_brings_it_back() {
    let Some(t) = Lab::start("trunk-primary", "", "", "") else { return };
    let s = &t.s;
    let (mut a, _b) = t.both_trunks(200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(t.calls(2, 100, 10), 2);
    assert!(s.targets().iter().all(|t| t == "carrier-a"), "the primary takes calls while it is up");

    let _ = a.stop(Duration::ZERO);
    let killed = Instant::now();
    assert_eq!(t.calls(1, 100, 1), 1, "the next call completes via the secondary");
    let switch = killed.elapsed();
    eprintln!("first call completed via carrier-b {switch:?} after carrier-a died");
    assert_eq!(s.targets().last().map(String::as_str), Some("carrier-b"));
    // Three probe misses at 500 ms, plus the INVITE timeout counted above.
    wait("carrier-a DOWN", 5, || !trunk_up(s, "carrier-a"));
    let down_at = Instant::now();
    let log = s.log();
    assert!(log.contains("trunk carrier-a DOWN: 3 consecutive failures"), "the decision is logged with its reason");
    // While DOWN, new calls skip it without waiting.
    let before = s.metric("sbc_trunk_attempts_total", &[("trunk", "carrier-a"), ("outcome", "skipped_down")]);
    let t0 = Instant::now();
    assert_eq!(t.calls(1, 100, 1), 1);
    assert!(s.metric("sbc_trunk_attempts_total", &[("trunk", "carrier-a"), ("outcome", "skipped_down")]) > before);
    eprintln!("a call while carrier-a is DOWN took {:?} end to end", t0.elapsed());

    // Back again: UP only after 3 good probes and the 3 s hold-down.
    let _a2 = t.trunk("carrier-a2", t.p.a, 200, 200);
    wait("carrier-a UP", 10, || trunk_up(s, "carrier-a"));
    // Measure the hold-down on the sbc's own clock: the times of its DOWN and
    // UP decisions in its log (the test only sees them when it polls).
    let log = s.log();
    let at = |what: &str| log.lines().find(|l| l.contains(what)).and_then(log_seconds).expect(what);
    let up_after = at("trunk carrier-a UP") - at("trunk carrier-a DOWN");
    eprintln!(
        "carrier-a UP again {up_after:.3} s after it went DOWN (hold-down 3 s; seen by the test after {:?})",
        down_at.elapsed()
    );
    assert!(up_after >= 3.0, "hold-down respected: {up_after:.3} s");
    assert_eq!(s.metric("sbc_trunk_transitions_total", &[("trunk", "carrier-a")]), 2.0);
    assert_eq!(t.calls(1, 100, 1), 1);
    assert_eq!(s.targets().last().map(String::as_str), Some("carrier-a"), "failback to the primary");
}

#[test]
fn flapping_trunk_is_damped_by_the_hysteresis() {
    let Some(t) = Lab::start("trunk-flap", "", "", "") else { return };
    let s = &t.s;
    let _b = t.trunk("carrier-b", t.p.b, 200, 200);
    // carrier-a flaps: 2 s up, 2 s down, for 30 s.
    let start = Instant::now();
    let mut k = 0;
    while start.elapsed() < Duration::from_secs(30) {
        let mut a = t.trunk(&format!("flap-{k}"), t.p.a, 200, 200);
        std::thread::sleep(Duration::from_secs(2));
        let _ = a.stop(Duration::ZERO);
        std::thread::sleep(Duration::from_secs(2));
        k += 1;
    }
    let transitions = s.metric("sbc_trunk_transitions_total", &[("trunk", "carrier-a")]);
    // Each DOWN→UP cycle needs at least the 3 s hold-down.
    let bound = 2.0 * (30.0_f64 / 3.0).ceil() + 1.0;
    eprintln!("carrier-a flapped {k} times in 30 s; the sbc made {transitions} transitions (bound {bound})");
    assert!(transitions >= 1.0, "the dead periods were noticed");
    assert!(transitions <= bound, "{transitions} transitions");
}

#[test]
fn a_503_from_the_primary_fails_over_and_counts_against_it() {
    // No probes: only real calls judge the trunk here.
    let Some(t) = Lab::start("trunk-503", "", "probe = false", "") else { return };
    let s = &t.s;
    let (_a, _b) = t.both_trunks(503);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(t.calls(4, 100, 2), 4, "every call completes via carrier-b");
    assert!(s.targets().iter().all(|t| t == "carrier-b"));
    wait("carrier-a DOWN after three 503s", 3, || !trunk_up(s, "carrier-a"));
    assert_eq!(s.metric("sbc_trunk_attempts_total", &[("trunk", "carrier-a"), ("outcome", "failed")]), 3.0);
    assert_eq!(s.metric("sbc_trunk_attempts_total", &[("trunk", "carrier-a"), ("outcome", "skipped_down")]), 1.0);
}

#[test]
fn options_answered_404_is_alive_unless_configured_otherwise() {
    let Some(t) = Lab::start("trunk-404", "", "", "") else { return };
    let s = &t.s;
    let _a = t.trunk("carrier-a", t.p.a, 404, 200);
    std::thread::sleep(Duration::from_secs(3));
    assert!(trunk_up(s, "carrier-a"), "any answer to OPTIONS means alive by default");
    drop(t);
    let Some(t2) = Lab::start("trunk-404-strict", "", "", "alive_codes = [200]") else { return };
    let _a2 = t2.trunk("carrier-a", t2.p.a, 404, 200);
    wait("carrier-a DOWN when only 200 counts", 5, || !trunk_up(&t2.s, "carrier-a"));
    let log = t2.s.log();
    assert!(log.contains("OPTIONS answered 404"), "the reason names the answer");
}

#[test]
fn call_caps_overflow_to_the_next_trunk_then_503() {
    let Some(t) = Lab::start("trunk-cap", "", "max_calls = 2", "") else { return };
    let s = &t.s;
    let (_a, _b) = t.both_trunks(200);
    std::thread::sleep(Duration::from_millis(300));
    // Three overlapping 3 s calls: the third overflows to carrier-b.
    assert_eq!(t.calls(3, 3000, 10), 3);
    let targets = s.targets();
    assert_eq!(targets.iter().filter(|x| *x == "carrier-a").count(), 2, "{targets:?}");
    assert_eq!(targets.iter().filter(|x| *x == "carrier-b").count(), 1, "{targets:?}");
    assert!(s.metric("sbc_trunk_attempts_total", &[("trunk", "carrier-a"), ("outcome", "skipped_cap")]) >= 1.0);
    // With carrier-b forced down, the capped primary leaves nothing: 503.
    let out = s.ctl("trunk carrier-b down");
    assert!(out.starts_with("ok"), "{out}");
    let mut holder = t.uac().calls(2).hold_ms(4000).rate(10).timeout_s(30).spawn("holder");
    std::thread::sleep(Duration::from_millis(800));
    let busy = Template::scenario("uac_expect.xml").set("CODE", 503).write(&t.dir, "uac_503.xml");
    let one = t.sipp.uac(t.dir.path(), s.sip, "1000", testkit::ports::free_sip_port()).sf(busy).calls(1);
    let one = one.timeout_s(20).timeout_error().arg("-trace_msg").arg("-message_file").arg(t.dir.join("msgs.log"));
    let mut g = one.spawn("uac-503");
    assert!(
        g.wait_timeout(Duration::from_secs(30)).expect("done").success(),
        "the third call gets 503\n{}",
        g.log_tail(20)
    );
    let msgs = std::fs::read_to_string(t.dir.join("msgs.log")).unwrap_or_default();
    assert!(msgs.contains("Retry-After:"), "503 carries Retry-After");
    let _ = holder.wait_timeout(Duration::from_secs(20));
}

#[test]
fn operators_force_trunks_through_sbc_ctl() {
    let Some(t) = Lab::start("trunk-ctl", "", "", "") else { return };
    let s = &t.s;
    let (_a, _b) = t.both_trunks(200);
    let table = s.ctl("trunks");
    assert!(table.contains("carrier-a") && table.contains("carrier-b") && table.contains("UP"), "{table}");
    assert!(s.ctl("trunk carrier-a down").starts_with("ok: trunk carrier-a is DOWN"));
    assert!(s.ctl("trunks").lines().any(|l| l.starts_with("carrier-a") && l.contains("DOWN")));
    assert_eq!(t.calls(1, 100, 1), 1);
    assert_eq!(s.targets().last().map(String::as_str), Some("carrier-b"), "forced DOWN is skipped");
    let log = s.log();
    assert!(log.contains("audit: operator forced trunk carrier-a down"), "the command is audited");
    assert!(s.ctl("trunk carrier-a auto").starts_with("ok: trunk carrier-a is UP"));
    assert_eq!(t.calls(1, 100, 1), 1);
    assert_eq!(s.targets().last().map(String::as_str), Some("carrier-a"));
    assert!(s.ctl("trunk nope down").starts_with("error: no trunk named"));
}

/// A line of sipp's error log split into its entries. Each entry starts
/// with a `YYYY-MM-DD<TAB>` date, and sipp does not end an entry with a
/// newline, so two entries can share a line.
fn sipp_log_entries(line: &str) -> Vec<&str> {
    let b = line.as_bytes();
    let date_at = |i: usize| {
        b.len() > i + 10
            && [0, 1, 2, 3, 5, 6, 8, 9].iter().all(|&k| b[i + k].is_ascii_digit())
            && (b[i + 4], b[i + 7], b[i + 10]) == (b'-', b'-', b'\t')
    };
    let mut starts: Vec<usize> = (1..b.len()).filter(|&i| date_at(i)).collect();
    starts.insert(0, 0);
    starts.push(b.len());
    starts.windows(2).map(|w| &line[w[0]..w[1]]).collect()
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
    let shared = "'2026-12-07\t16:22:17.79\t1.79: Aborting call on UDP retransmission timeout for Call-ID '57-1@h'\
                  2026-12-07\t16:22:17.79\t1.79: Aborting call on UDP retransmission timeout for Call-ID '58-1@h'";
    let ids: Vec<&str> = sipp_log_entries(shared).into_iter().filter_map(aborted_call_id).collect();
    assert_eq!(ids, ["57-1@h", "58-1@h"], "two entries on one line");
}

/// The figure for the issue: calls lost when the primary dies under 20 CPS.
/// Calls already answered on the dead trunk cannot be saved (their BYE has
/// nowhere to go); every new attempt must complete via the secondary.
#[test]
fn calls_lost_when_the_primary_dies_under_20_cps() {
    let Some(t) = Lab::start("trunk-load", "", "", "") else { return };
    let s = &t.s;
    let (mut a, _b) = t.both_trunks(200);
    std::thread::sleep(Duration::from_millis(500));
    let stf = t.dir.join("load.csv");
    let load = t.uac().calls(160).rate(20).hold_ms(200).timeout_s(60).stats(&stf);
    let mut load = load.arg("-trace_err").arg("-error_file").arg(t.dir.join("errors.log")).spawn("uac-load");
    std::thread::sleep(Duration::from_secs(3));
    let in_progress_on_a = s.metric("sbc_trunk_calls_active", &[("trunk", "carrier-a")]);
    let kill_started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let _ = a.stop(Duration::ZERO);
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let _ = load.wait_timeout(Duration::from_secs(60));
    let stats = SippStats::read(&stf).expect("sipp's statistics");
    let (ok, failed) = (stats.get("SuccessfulCall(C)").unwrap(), stats.get("FailedCall(C)").unwrap());
    eprintln!(
        "160 calls at 20 CPS, carrier-a killed at 3 s with {in_progress_on_a} calls up on it: {ok} completed, {failed} failed"
    );
    assert_eq!(ok + failed, 160);
    // Which calls failed, by Call-ID, from sipp's error log.
    let errors = std::fs::read_to_string(t.dir.join("errors.log")).unwrap_or_default();
    let mut lost: Vec<&str> = errors.lines().flat_map(sipp_log_entries).filter_map(aborted_call_id).collect();
    lost.sort_unstable();
    lost.dedup();
    assert_eq!(lost.len(), failed as usize, "every failed call is named in sipp's error log:\n{errors}");
    // Each of them must have been up on carrier-a when it died: answered
    // there before the kill (a 200 already on its way is answered a moment
    // after it) and torn down no earlier than just before it (a BYE the sbc
    // forwarded a moment before the kill may never have been answered).
    let cdrs = s.cdrs();
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
    assert!(s.targets().iter().filter(|t| *t == "carrier-b").count() >= 60, "the rest went to carrier-b");
}

/// Timer C: a primary that rings and never answers is cancelled after
/// `timer_c_s` and the call completes on the next trunk.
#[test]
fn timer_c_cancels_a_branch_that_rings_forever() {
    let Some(t) = Lab::start("trunk-timer-c", "timer_c_s = 2", "probe = false", "") else { return };
    let s = &t.s;
    let mut a = t.sipp.uas(t.dir.path(), t.p.a).scenario("uas_ring_forever.xml").calls(1).timeout_s(30).spawn("ringer");
    let _b = t.trunk("carrier-b", t.p.b, 200, 200);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    assert_eq!(t.calls(1, 100, 1), 1, "the call completes on carrier-b");
    let took = t0.elapsed();
    eprintln!("call completed via carrier-b {took:?} after a 2 s timer C on the ringing primary");
    assert!(took >= Duration::from_secs(2), "not before timer C");
    assert!(
        a.wait_timeout(Duration::from_secs(10)).expect("ringer done").success(),
        "the ringing branch got its CANCEL"
    );
    assert_eq!(s.targets().last().map(String::as_str), Some("carrier-b"));
}
