//! Registration caps with a real sipp and a real sbc: one source
//! registering 200 distinct users against `max_registrations_per_source =
//! 50` gets 50 bindings and 150 answers of 503, counted; another source
//! still registers.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::time::Duration;

use support::{Ports, Sbc};
use testkit::sipp::{SippStats, Template};
use testkit::{Sipp, TestDir};

/// REGISTER of `u<call number>@<remote>` (or `@PREFIX@<n>`), expecting 200.
const REGISTER: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register distinct users">
  <send retrans="500"><![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:@PREFIX@[call_number]@[remote_ip]>;tag=[pid]r[call_number]
      To: <sip:@PREFIX@[call_number]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:@PREFIX@[call_number]@[local_ip]:[local_port]>
      Expires: 600
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200"/>
</scenario>
"#;

fn config(dir: &TestDir, p: &Ports) -> String {
    format!(
        "[sip]\nlisten = \"127.0.0.1:{sip}\"\ndomains = [\"127.0.0.1\"]\n\
         [[trunk]]\nname = \"carrier\"\naddress = \"127.0.0.1:{a}\"\nprobe = false\n\
         [[route]]\nprefix = \"\"\ntrunks = [\"carrier\"]\n[health]\ninterval_ms = 0\n\
         [control]\nsocket = \"{ctl}\"\n[cdr]\nfile = \"{cdr}\"\n[metrics]\nlisten = \"127.0.0.1:{m}\"\n\
         [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = {r}\nport_max = {r2}\nworkers = 1\ntimeout = 60\nmetrics = \"off\"\n\
         [limits]\nmax_registrations_per_source = 50\n",
        sip = p.sip,
        a = p.a,
        ctl = dir.join("ctl.sock").display(),
        cdr = dir.join("cdr.jsonl").display(),
        m = p.metrics,
        r = p.relay,
        r2 = p.relay + 29,
    )
}

/// Runs sipp from `ip` registering `n` users `<prefix>1..n`; returns its
/// (successful, failed) counts.
fn register(sipp: &Sipp, dir: &TestDir, s: &Sbc, ip: &str, prefix: &str, n: u32) -> (u64, u64) {
    let sf = Template::new(REGISTER).set("PREFIX", prefix).write(dir, &format!("reg-{prefix}.xml"));
    let stf = dir.join(&format!("reg-{prefix}.csv"));
    let port = testkit::ports::free_sip_port();
    sipp.cmd(dir.path())
        .sf(&sf)
        .remote(s.sip)
        .local(ip, port)
        .calls(n)
        .rate(100)
        .limit(50)
        .timeout_s(30)
        .stats(&stf)
        .finish(&format!("sipp-{prefix}"), Duration::from_secs(40));
    let stats = SippStats::read(&stf).expect("sipp's statistics");
    (stats.successful(), stats.failed())
}

#[test]
fn a_register_flood_from_one_source_is_capped_and_another_source_still_registers() {
    let Some(sipp) = Sipp::find() else { return };
    let dir = TestDir::new("caps-register");
    let p = Ports::new(23000 + (std::process::id() % 10) as u16 * 40);
    let s = Sbc::start(&dir, &p, &config(&dir, &p), Some("info"));

    let (ok, failed) = register(&sipp, &dir, &s, "127.0.0.1", "flood", 200);
    assert_eq!((ok, failed), (50, 150), "50 bound, the other 150 refused");
    assert_eq!(s.metric("sbc_registrar_bindings", &[]), 50.0);
    assert_eq!(s.metric("sbc_caps_refused_total", &[("cap", "registrations_per_source")]), 150.0);
    assert_eq!(s.metric("sbc_sip_responses_total", &[("class", "5xx")]), 150.0);

    let (ok, failed) = register(&sipp, &dir, &s, "127.0.0.2", "other", 10);
    assert_eq!((ok, failed), (10, 0), "another source is not held back");
    assert_eq!(s.metric("sbc_registrar_bindings", &[]), 60.0);
    // The refusals are logged, but not one line each.
    let refusals = s.log().lines().filter(|l| l.contains("over a cap")).count();
    assert!((1..=5).contains(&refusals), "{refusals} log lines for 150 refusals");
}
