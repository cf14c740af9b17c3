//! Calls through a real sbc with real sipp: 50 calls with RTP anchored in
//! the relay, registration and a call to the registered phone, CANCEL, a
//! 486, retransmissions under loss, TCP, and hold/resume keeping the relay
//! ports. Each test runs its own sbc on its own ports.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use support::{Ports, Sbc};
use testkit::sipp::{SippCmd, SippStats, Template};
use testkit::{ChildGuard, Sipp, TestDir};

/// One test: sipp, a scratch dir, its ports, and its own sbc whose one
/// trunk, `uas`, is the callee at `p.a`.
struct Test {
    sipp: Sipp,
    dir: TestDir,
    p: Ports,
    sbc: Sbc,
}

impl Test {
    /// `None` (skipped) without sipp. `catch_all`: every number routes to
    /// the trunk; otherwise only numbers starting with 9.
    fn start(label: &str, transport: &str, catch_all: bool) -> Option<Test> {
        Self::start_with(label, transport, catch_all, "")
    }

    /// [`start`](Self::start) with `relay_extra` (TOML lines) appended to
    /// the `[relay]` section.
    fn start_with(label: &str, transport: &str, catch_all: bool, relay_extra: &str) -> Option<Test> {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let sipp = Sipp::find()?;
        let dir = TestDir::new(label);
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = Ports::new(30000 + (std::process::id() % 8) as u16 * 3500 + k * 400);
        let prefix = if catch_all { "" } else { "9" };
        let cfg = format!(
            "[sip]\nlisten = \"127.0.0.1:{}\"\ndomains = [\"127.0.0.1\"]\n\
             [[trunk]]\nname = \"uas\"\naddress = \"127.0.0.1:{}\"\ntransport = \"{transport}\"\nprobe = false\n\
             [[route]]\nprefix = \"{prefix}\"\ntrunks = [\"uas\"]\n\
             [health]\ninterval_ms = 0\n[cdr]\nfile = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{}\"\n[control]\nsocket = \"off\"\n\
             [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = {}\nport_max = {}\nworkers = 2\ntimeout = 60\nmetrics = \"off\"\n{relay_extra}",
            p.sip,
            p.a,
            dir.join("cdr.jsonl").display(),
            p.metrics,
            p.relay,
            p.relay + 299
        );
        let sbc = Sbc::start(&dir, &p, &cfg, None);
        Some(Test { sipp, dir, p, sbc })
    }

    /// A sipp UAS on the trunk's port.
    fn uas(&self) -> SippCmd {
        self.sipp.uas(self.dir.path(), self.p.a)
    }

    /// Starts a UAS (stopped after 90 s at the latest) and gives it 300 ms
    /// to bind.
    fn spawn_uas(&self, name: &str, uas: SippCmd) -> ChildGuard {
        let guard = uas.timeout_s(90).trace_err().spawn(name);
        std::thread::sleep(Duration::from_millis(300));
        guard
    }

    /// A sipp UAC calling `service` through the sbc.
    fn uac(&self, service: &str) -> SippCmd {
        self.sipp.uac(self.dir.path(), self.sbc.sip, service, self.p.uac)
    }

    /// Runs a UAC to completion (60 s at most, an error then) and returns
    /// whether it exited 0.
    fn run_uac(&self, uac: SippCmd) -> bool {
        uac.timeout_s(60).timeout_error().trace_err().run_ok("sipp-uac", Duration::from_secs(90))
    }

    /// `uac_expect.xml` expecting the final response `code`, as a file.
    fn expecting(&self, code: u16) -> std::path::PathBuf {
        Template::scenario("uac_expect.xml").set("CODE", code).write(&self.dir, &format!("uac_{code}.xml"))
    }

    fn metric(&self, name: &str) -> f64 {
        self.sbc.metric(name, &[])
    }
}

#[test]
fn fifty_calls_with_rtp_through_the_relay() {
    let Some(t) = Test::start("sbc-50calls", "udp", true) else { return };
    let audio = t.dir.write("pcma.raw", vec![0xd5u8; 75 * 160]);
    let uac =
        Template::scenario("uac_rtp.xml").set("AUDIO", audio.display()).set("PAUSE_MS", 2000).write(&t.dir, "uac.xml");
    let _uas =
        t.spawn_uas("uas", t.uas().scenario("uas_echo.xml").media("127.0.0.1", Some(t.p.relay + 350)).arg("-rtp_echo"));
    assert!(t.run_uac(t.uac("1000").sf(&uac).media("127.0.0.1", None).calls(50).rate(10).limit(30)));
    t.sbc.wait_gauge_zero("sbc_dialogs_active");
    t.sbc.wait_gauge_zero("media_relay_ports_in_use");
    let records = t.sbc.cdrs();
    assert_eq!(records.len(), 50, "one CDR per call");
    let ids: BTreeSet<&str> = records.iter().filter_map(|r| r["call_id"].as_str()).collect();
    assert_eq!(ids.len(), 50, "distinct call-ids");
    for r in &records {
        assert_eq!(r["end_reason"], "caller-bye", "{r}");
        assert_eq!(r["final_code"], 200);
        let legs = r["relay"].as_array().expect("relay stats");
        assert_eq!(legs.len(), 2);
        for leg in legs {
            let pk = leg["media"][0]["packets"].as_u64().unwrap_or(0);
            assert!(pk > 0, "RTP from leg {} went through the relay: {r}", leg["from_tag"]);
        }
    }
    assert_eq!(t.metric("sbc_call_answers_total"), 50.0);
    assert_eq!(t.sbc.metric("media_relay_sessions_ended_total", &[("media", "both")]), 50.0);
    // Quality in the CDR: both directions flowed on loopback without loss.
    for r in &records {
        for leg in r["relay"].as_array().unwrap() {
            let m = &leg["media"][0];
            assert_eq!(m["one_way_audio"], false, "{r}");
            assert!(m["loss_pct"].as_f64().is_some_and(|l| l < 1.0), "{r}");
            assert!(m["mos_mean"].is_null() || m["mos_mean"].as_f64().is_some_and(|v| (1.0..=4.5).contains(&v)), "{r}");
        }
    }
    // Call health of the trunk.
    let trunk = [("trunk", "uas")];
    assert_eq!(t.sbc.metric("sbc_trunk_answers_total", &trunk), 50.0);
    assert_eq!(t.sbc.metric("sbc_trunk_asr", &trunk), 1.0);
    assert_eq!(t.sbc.metric("sbc_trunk_ner", &trunk), 1.0);
    assert_eq!(t.sbc.metric("sbc_trunk_post_dial_delay_seconds_count", &trunk), 50.0);
    assert!(t.sbc.metric("sbc_trunk_acd_seconds", &trunk) >= 1.5);
    assert_eq!(t.sbc.metric("sbc_one_way_audio_total", &trunk), 0.0);
}

#[test]
fn a_callee_that_sends_no_media_is_one_way_audio_scored_by_trunk() {
    // The UAS answers but sends no RTP (no echo); the caller talks 4 s.
    let Some(t) = Test::start_with("sbc-oneway", "udp", true, "one_way_after_s = 2\n") else { return };
    let audio = t.dir.write("pcma.raw", vec![0xd5u8; 200 * 160]);
    let uac =
        Template::scenario("uac_rtp.xml").set("AUDIO", audio.display()).set("PAUSE_MS", 6000).write(&t.dir, "uac.xml");
    let _uas = t.spawn_uas("uas", t.uas().scenario("uas_echo.xml").media("127.0.0.1", Some(t.p.relay + 350)));
    assert!(t.run_uac(t.uac("1000").sf(&uac).media("127.0.0.1", None).calls(2).rate(10).limit(2)));
    t.sbc.wait_gauge_zero("sbc_dialogs_active");
    let records = t.sbc.cdrs();
    assert_eq!(records.len(), 2);
    for r in &records {
        let legs = r["relay"].as_array().unwrap();
        let caller = legs.iter().find(|l| l["media"][0]["packets"].as_u64().unwrap_or(0) > 0).expect("caller's RTP");
        let callee = legs.iter().find(|l| l["media"][0]["packets"].as_u64().unwrap_or(0) == 0).expect("silent callee");
        assert_eq!(callee["media"][0]["one_way_audio"], true, "{r}");
        assert_eq!(caller["media"][0]["one_way_audio"], false, "{r}");
        // The caller's 6 s of RTP were scored (5 s intervals).
        assert!(caller["media"][0]["mos_mean"].as_f64().is_some_and(|m| m > 4.0), "{r}");
    }
    assert_eq!(t.sbc.metric("sbc_one_way_audio_total", &[("trunk", "uas")]), 2.0);
    assert_eq!(t.sbc.metric("sbc_trunk_mos_count", &[("trunk", "uas")]), 2.0);
}

#[test]
fn registered_phone_is_reached_and_unknown_users_get_404() {
    let Some(t) = Test::start("sbc-register", "udp", false) else { return };
    let p = &t.p;
    // The phone registers from its port; the sbc reaches it at that source
    // address. sipp in client mode cannot take an INVITE with a new Call-ID,
    // so the REGISTER is sent from the test, and then a sipp UAS takes over
    // the same port to answer the call.
    {
        let s = std::net::UdpSocket::bind(("127.0.0.1", p.a)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let reg = format!(
            "REGISTER sip:127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{ph};branch=z9hG4bKreg1;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=r1\r\nTo: <sip:alice@127.0.0.1>\r\n\
             Call-ID: reg-{pid}@127.0.0.1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:{ph}>\r\n\
             Expires: 300\r\nContent-Length: 0\r\n\r\n",
            sip = p.sip,
            ph = p.a,
            pid = std::process::id()
        );
        s.send_to(reg.as_bytes(), t.sbc.sip).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf).expect("REGISTER answered");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("SIP/2.0 200"), "{text}");
        assert!(text.contains(&format!("<sip:alice@127.0.0.1:{}>;expires=300", p.a)), "binding echoed: {text}");
    }
    assert_eq!(t.metric("sbc_registrar_bindings"), 1.0);
    let mut phone = t.spawn_uas("phone", t.uas().sn("uas").calls(1));
    assert!(t.run_uac(t.uac("alice").sn("uac").calls(1).hold_ms(500)));
    let st = phone.wait_timeout(Duration::from_secs(20)).expect("phone done");
    assert!(st.success(), "the phone got the call\n{}", phone.log_tail(30));
    let r = t.sbc.cdrs();
    assert_eq!(r[0]["target"].as_str(), Some("user:alice@127.0.0.1"), "{r:?}");
    // Nobody registered as bob and no route for him: 404.
    assert!(t.run_uac(t.uac("bob").sf(t.expecting(404)).calls(1)));
}

#[test]
fn cancel_before_answer() {
    let Some(t) = Test::start("sbc-cancel", "udp", true) else { return };
    let mut uas = t.spawn_uas("uas", t.uas().scenario("uas_ring_forever.xml").calls(1));
    assert!(t.run_uac(t.uac("1000").scenario("uac_cancel.xml").calls(1)));
    assert!(uas.wait_timeout(Duration::from_secs(20)).expect("uas done").success(), "{}", uas.log_tail(30));
    t.sbc.wait_gauge_zero("media_relay_ports_in_use");
    let r = t.sbc.cdrs();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0]["end_reason"].as_str(), r[0]["final_code"].as_u64()), (Some("cancel"), Some(487)));
}

#[test]
fn busy_callee_reaches_the_caller_and_frees_media() {
    let Some(t) = Test::start("sbc-486", "udp", true) else { return };
    let mut uas = t.spawn_uas("uas", t.uas().scenario("uas_busy.xml").calls(1));
    assert!(t.run_uac(t.uac("1000").sf(t.expecting(486)).calls(1)));
    assert!(uas.wait_timeout(Duration::from_secs(20)).expect("uas done").success(), "the UAS got its hop-by-hop ACK");
    t.sbc.wait_gauge_zero("media_relay_ports_in_use");
    let r = t.sbc.cdrs();
    assert_eq!((r[0]["end_reason"].as_str(), r[0]["final_code"].as_u64()), (Some("failed"), Some(486)));
    assert_eq!(t.metric("sbc_call_failures_total"), 1.0);
}

#[test]
fn retransmissions_under_loss_complete_without_duplicate_dialogs() {
    let Some(t) = Test::start("sbc-loss", "udp", true) else { return };
    let _uas = t.spawn_uas("uas", t.uas().sn("uas").arg("-lost").arg("10"));
    let stats = t.dir.join("loss.csv");
    let uac = t.uac("1000").sn("uac").calls(20).rate(5).hold_ms(200).arg("-lost").arg("10");
    let _ = uac.timeout_s(80).stats(&stats).finish("uac-loss", Duration::from_secs(100)).expect("sipp finished");
    let ok = SippStats::read(&stats).and_then(|s| s.get("SuccessfulCall(C)")).expect("sipp's statistics");
    eprintln!("{ok} of 20 calls succeeded with 10% loss on both sides");
    assert!(ok >= 17, "retransmissions recover nearly every call: {ok}/20");
    // A call sipp gave up on (say, every retransmission of one message lost)
    // keeps its dialog until the dialog timeout. A few more can stay open:
    // when sipp's simulated loss drops its own BYE, its built-in UAC may take
    // a retransmitted 200 of the INVITE as the BYE's answer (it does not
    // check the CSeq method) and count the call as complete, although the
    // BYE never left; the sbc rightly keeps that dialog. Seen up to twice in
    // one run of 20 calls. What this test is about, that no retransmission
    // creates a second dialog, is checked exactly below.
    let failed = (20 - ok) as f64;
    assert!(
        testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            t.metric("sbc_dialogs_active") <= failed + 3.0
        }),
        "dialogs left: {} with {failed} failed calls",
        t.metric("sbc_dialogs_active")
    );
    let records = t.sbc.cdrs();
    let ids: BTreeSet<String> = records.iter().filter_map(|r| r["call_id"].as_str().map(str::to_owned)).collect();
    assert_eq!(ids.len(), records.len(), "no duplicate dialogs: one CDR per Call-ID");
    assert!(records.len() <= 20);
    assert_eq!(
        t.metric("sbc_call_attempts_total"),
        records.len() as f64 + t.metric("sbc_dialogs_active"),
        "one attempt per call (ended or still open), retransmissions absorbed"
    );
}

#[test]
fn a_call_over_tcp() {
    let Some(t) = Test::start("sbc-tcp", "tcp", true) else { return };
    let _uas = t.spawn_uas("uas", t.uas().sn("uas").tcp());
    assert!(t.run_uac(t.uac("1000").sn("uac").tcp().calls(3).hold_ms(300)));
    t.sbc.wait_gauge_zero("sbc_dialogs_active");
    assert_eq!(t.sbc.cdrs().len(), 3);
}

#[test]
fn hold_and_resume_keep_the_relay_ports() {
    let Some(t) = Test::start("sbc-hold", "udp", true) else { return };
    let uas = t.uas().scenario("uas_reinvite.xml").calls(1).log_file(t.dir.join("uas_log.txt"));
    let mut uas = t.spawn_uas("uas", uas);
    assert!(t.run_uac(t.uac("1000").scenario("uac_hold.xml").calls(1).log_file(t.dir.join("uac_log.txt"))));
    assert!(uas.wait_timeout(Duration::from_secs(20)).expect("uas done").success(), "{}", uas.log_tail(30));
    let grab = |file: &str, tag: &str| -> Vec<String> {
        t.dir.read(file).lines().filter_map(|l| l.split_once(tag).map(|(_, p)| p.trim().to_owned())).collect()
    };
    let offers = grab("uas_log.txt", "OFFERPORT");
    let answers = grab("uac_log.txt", "ANSWERPORT");
    eprintln!("relay ports seen by the callee: {offers:?}, by the caller: {answers:?}");
    assert_eq!(offers.len(), 3, "initial INVITE and two re-INVITEs reached the callee");
    assert_eq!(answers.len(), 3);
    assert!(offers.iter().all(|o| *o == offers[0]), "the callee-facing relay port never changed");
    assert!(answers.iter().all(|a| *a == answers[0]), "the caller-facing relay port never changed");
    assert_ne!(offers[0], answers[0]);
    t.sbc.wait_gauge_zero("media_relay_ports_in_use");
}
