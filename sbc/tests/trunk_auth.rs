//! Authenticating to carriers with real sipp carriers and a real sbc: a
//! carrier that challenges INVITEs (407, then 401) and checks the answers,
//! a wrong password that is not retried and reaches the caller as 403, and
//! a carrier that requires registration (401, then 200) and gets refreshes.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::time::Duration;

use sbc::auth::digest::{ha1, Algorithm, Credentials};
use support::{Ports, Sbc};
use testkit::sipp::Template;
use testkit::{ChildGuard, Sipp, TestDir};

const USER: &str = "acme";
const PASSWORD: &str = "s3cret";
const REALM: &str = "carrier.test";

fn ports() -> Ports {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ports::new(21000 + (std::process::id() % 10) as u16 * 300 + k * 100)
}

/// One test: sipp, a scratch dir, its ports and an sbc whose one trunk,
/// `carrier` at port `a`, has our credentials and `trunk_extra` keys.
struct Lab {
    sipp: Sipp,
    dir: TestDir,
    p: Ports,
    s: Sbc,
}

impl Lab {
    fn start(label: &str, password: &str, trunk_extra: &str) -> Option<Lab> {
        let sipp = Sipp::find()?;
        let dir = TestDir::new(label);
        let p = ports();
        let cfg = format!(
            "[sip]\nlisten = \"127.0.0.1:{sip}\"\ndomains = [\"127.0.0.1\"]\n\
             [[trunk]]\nname = \"carrier\"\naddress = \"127.0.0.1:{a}\"\nprobe = false\n\
             username = \"{USER}\"\npassword_file = \"{pw}\"\n{trunk_extra}\n\
             [[route]]\nprefix = \"\"\ntrunks = [\"carrier\"]\n\
             [control]\nsocket = \"{ctl}\"\n[cdr]\nfile = \"{cdr}\"\n[metrics]\nlisten = \"127.0.0.1:{m}\"\n\
             [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = {r}\nport_max = {r2}\nworkers = 1\ntimeout = 60\nmetrics = \"off\"\n",
            sip = p.sip,
            a = p.a,
            pw = dir.write("carrier.pw", format!("{password}\n")).display(),
            ctl = dir.join("ctl.sock").display(),
            cdr = dir.join("cdr.jsonl").display(),
            m = p.metrics,
            r = p.relay,
            r2 = p.relay + 99
        );
        let s = Sbc::start(&dir, &p, &cfg, Some("info"));
        Some(Lab { sipp, dir, p, s })
    }

    /// The carrier: shared scenario `name` with our realm, user and password,
    /// for `calls` calls, its messages traced to `<label>-msgs.log`.
    fn carrier(&self, label: &str, name: &str, calls: u32, expires: u32) -> ChildGuard {
        let sf = Template::scenario(name)
            .set("REALM", REALM)
            .set("USER", USER)
            .set("PASSWORD", PASSWORD)
            .set("EXPIRES", expires)
            .write(&self.dir, &format!("{label}.xml"));
        let msgs = self.dir.join(&format!("{label}-msgs.log"));
        let cmd = self.sipp.uas(self.dir.path(), self.p.a).sf(sf).calls(calls).timeout_s(60);
        cmd.arg("-trace_msg").arg("-message_file").arg(msgs).spawn(label)
    }

    /// One call to 1000 through the sbc (sipp's built-in UAC); whether it
    /// succeeded, and sipp's error log.
    fn call(&self) -> (bool, String) {
        let errors = self.dir.join("uac-errors.log");
        let run = self.sipp.uac(self.dir.path(), self.s.sip, "1000", self.p.uac).sn("uac").calls(1).hold_ms(200);
        let run = run.timeout_s(20).timeout_error().arg("-trace_err").arg("-error_file").arg(&errors);
        let ok = run.finish("uac", Duration::from_secs(30)).is_some_and(|s| s.success());
        (ok, std::fs::read_to_string(errors).unwrap_or_default())
    }
}

/// The requests the carrier received whose method is `method`, from its
/// sipp message log, in order.
fn received(log: &str, method: &str) -> Vec<String> {
    log.split("message received")
        .skip(1)
        .filter_map(|m| m.split_once(":\n\n").map(|(_, msg)| msg.trim_start().to_owned()))
        .filter(|m| m.starts_with(&format!("{method} ")))
        .collect()
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')).map(str::trim))
}

fn wait(what: &str, secs: u64, f: impl FnMut() -> bool) {
    assert!(testkit::wait_until(Duration::from_secs(secs), Duration::from_millis(100), f), "timed out waiting: {what}");
}

#[test]
fn a_challenging_carrier_gets_verified_credentials_and_the_call_goes_through() {
    let Some(t) = Lab::start("trunk-auth-ok", PASSWORD, "") else { return };
    let mut carrier = t.carrier("carrier", "carrier_auth_uas.xml", 1, 0);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, errors) = t.call();
    assert!(ok, "the call is answered after both challenges:\n{errors}\n{}", t.s.log());
    let status = carrier.wait_timeout(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "the carrier checked the credentials:\n{}", carrier.log_tail(30));
    let log = std::fs::read_to_string(t.dir.join("carrier-msgs.log")).unwrap();
    let invites = received(&log, "INVITE");
    assert_eq!(invites.len(), 3, "one INVITE, then one per challenge:\n{log}");
    let cseqs: Vec<&str> = invites.iter().filter_map(|m| header(m, "CSeq")).collect();
    assert_eq!(cseqs, ["1 INVITE", "2 INVITE", "3 INVITE"]);
    let call_ids: Vec<&str> = invites.iter().filter_map(|m| header(m, "Call-ID")).collect();
    assert!(call_ids.windows(2).all(|w| w[0] == w[1]), "{call_ids:?}");
    // The Proxy-Authorization (which sipp's verifyauth does not check) is
    // checked here, in both re-sent INVITEs.
    for m in &invites[1..] {
        let c = Credentials::parse(header(m, "Proxy-Authorization").expect("Proxy-Authorization")).unwrap();
        assert_eq!((c.username.as_str(), c.realm.as_str(), c.algorithm), (USER, REALM, Algorithm::Md5));
        assert!(c.verify(&ha1(Algorithm::Md5, USER, REALM, PASSWORD), "INVITE"), "{m}");
    }
    assert!(header(&invites[2], "Authorization").is_some());
    let byes = received(&log, "BYE");
    let bye_cseqs: Vec<&str> = byes.iter().filter_map(|m| header(m, "CSeq")).collect();
    assert_eq!(bye_cseqs, ["4 BYE"], "the caller's BYE (CSeq 2) shifted past the carrier's INVITE");
    assert_eq!(t.s.metric("sbc_trunk_auth_failures_total", &[("trunk", "carrier")]), 0.0);
}

#[test]
fn a_wrong_password_is_not_retried_and_the_caller_gets_403() {
    let Some(t) = Lab::start("trunk-auth-wrong", "not-the-password", "") else { return };
    let mut carrier = t.carrier("carrier", "carrier_auth_uas.xml", 1, 0);
    std::thread::sleep(Duration::from_millis(300));
    let (ok, errors) = t.call();
    assert!(!ok, "the call fails");
    assert!(errors.contains("SIP/2.0 403 Forbidden - Trunk Authentication Failed"), "{errors}");
    assert!(!errors.contains("WWW-Authenticate"), "the carrier's challenge is not passed on: {errors}");
    let status = carrier.wait_timeout(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{}", carrier.log_tail(30));
    let log = std::fs::read_to_string(t.dir.join("carrier-msgs.log")).unwrap();
    assert_eq!(received(&log, "INVITE").len(), 3, "no answer to the third challenge:\n{log}");
    assert_eq!(t.s.metric("sbc_trunk_auth_failures_total", &[("trunk", "carrier")]), 1.0);
}

#[test]
fn the_sbc_registers_to_a_carrier_and_refreshes() {
    let Some(t) = Lab::start("trunk-reg", PASSWORD, "register = true\nregister_domain = \"carrier.test\"") else {
        return;
    };
    // The registrar grants 4 s: a refresh comes after 2 s.
    let mut carrier = t.carrier("registrar", "carrier_registrar_uas.xml", 1, 4);
    let registered = || t.s.metric("sbc_trunk_registered", &[("trunk", "carrier")]) == 1.0;
    wait("registered", 40, registered);
    let row = t.s.ctl("trunks");
    assert!(row.lines().any(|l| l.starts_with("carrier") && l.contains("registered") && l.ends_with("200")), "{row}");
    let status = carrier.wait_timeout(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "two registrations, each verified:\n{}", carrier.log_tail(30));
    let log = std::fs::read_to_string(t.dir.join("registrar-msgs.log")).unwrap();
    let regs = received(&log, "REGISTER");
    assert_eq!(regs.len(), 4, "{log}");
    assert_eq!(header(&regs[0], "To"), Some("<sip:acme@carrier.test>"));
    let contact = format!("<sip:acme@127.0.0.1:{}>", t.s.sip.port());
    assert_eq!(header(&regs[0], "Contact"), Some(contact.as_str()));
    let call_ids: Vec<&str> = regs.iter().filter_map(|m| header(m, "Call-ID")).collect();
    assert!(call_ids.windows(2).all(|w| w[0] == w[1]), "one Call-ID for the registration: {call_ids:?}");
    let cseqs: Vec<&str> = regs.iter().filter_map(|m| header(m, "CSeq")).collect();
    assert_eq!(cseqs, ["1 REGISTER", "2 REGISTER", "3 REGISTER", "4 REGISTER"]);
    // The registrar is gone: the next refresh fails and is retried later.
    wait("refresh failed", 45, || t.s.metric("sbc_trunk_registration_failures_total", &[("trunk", "carrier")]) >= 1.0);
    assert_eq!(t.s.metric("sbc_trunk_registered", &[("trunk", "carrier")]), 0.0);
    assert!(t.s.ctl("trunks").lines().any(|l| l.starts_with("carrier") && l.contains("failed")));
}
