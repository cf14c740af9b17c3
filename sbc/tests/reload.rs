//! Live reload with a real sbc and real sipp: a call through trunk
//! `carrier-a` is up, the file is rewritten to route to `carrier-b` (and
//! `carrier-a` removed), `sbc ctl reload` takes it; the call in progress
//! ends with its BYE through the removed trunk, new calls go to
//! `carrier-b`. A broken file and a restart-only change are refused by
//! `sbc ctl reload` and by SIGHUP alike, naming the key, and calls keep
//! going to `carrier-b`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::time::Duration;

use support::{Ports, Sbc};
use testkit::sipp::{SippStats, Template};
use testkit::{ChildGuard, Sipp, TestDir};

fn config(dir: &TestDir, p: &Ports, trunks: &str, route: &str) -> String {
    format!(
        "[sip]\nlisten = \"127.0.0.1:{sip}\"\ndomains = [\"127.0.0.1\"]\ninvite_timeout_ms = 1000\n\
         {trunks}\n[[route]]\nprefix = \"\"\ntrunks = [{route}]\n\
         [control]\nsocket = \"{ctl}\"\n[cdr]\nfile = \"{cdr}\"\n[metrics]\nlisten = \"127.0.0.1:{m}\"\n\
         [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = {r}\nport_max = {r2}\nworkers = 1\ntimeout = 60\nmetrics = \"off\"\n",
        sip = p.sip,
        ctl = dir.join("ctl.sock").display(),
        cdr = dir.join("cdr.jsonl").display(),
        m = p.metrics,
        r = p.relay,
        r2 = p.relay + 199
    )
}

fn trunk(name: &str, port: u16) -> String {
    format!("[[trunk]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\nprobe = false\n")
}

fn uas(sipp: &Sipp, dir: &TestDir, name: &str, port: u16) -> ChildGuard {
    let sf = Template::scenario("trunk_uas.xml")
        .set("OPTIONS_CODE", 200)
        .set("INVITE_CODE", 200)
        .set("AFTER_ACK", "call")
        .write(dir, &format!("{name}.xml"));
    sipp.uas(dir.path(), port).sf(sf).spawn(name)
}

fn wait(what: &str, secs: u64, f: impl FnMut() -> bool) {
    assert!(testkit::wait_until(Duration::from_secs(secs), Duration::from_millis(100), f), "timed out waiting: {what}");
}

#[test]
fn reload_moves_new_calls_and_leaves_the_call_in_progress_alone() {
    let Some(sipp) = Sipp::find() else { return };
    let dir = TestDir::new("reload");
    let p = Ports::new(33000 + (std::process::id() % 20) as u16 * 200);
    let s = Sbc::start(&dir, &p, &config(&dir, &p, &trunk("carrier-a", p.a), "\"carrier-a\""), Some("info"));
    let (_a, _b) = (uas(&sipp, &dir, "carrier-a", p.a), uas(&sipp, &dir, "carrier-b", p.b));
    std::thread::sleep(Duration::from_millis(300));
    let uac = |name: &str, n: u32, hold_ms: u32| {
        sipp.uac(dir.path(), s.sip, "1000", testkit::ports::free_sip_port())
            .sn("uac")
            .calls(n)
            .rate(10)
            .hold_ms(hold_ms)
            .timeout_s(60)
            .stats(dir.join(&format!("{name}.csv")))
    };
    let successful = |name: &str| SippStats::read(&dir.join(&format!("{name}.csv"))).map_or(0, |st| st.successful());

    // A long call through carrier-a.
    let mut long = uac("long", 1, 6000).spawn("long");
    wait("the long call is up", 5, || s.metric("sbc_dialogs_active", &[]) == 1.0);

    // The file now routes to carrier-b; carrier-a is gone from it.
    let path = dir.join("sbc.toml");
    let to_b = config(&dir, &p, &trunk("carrier-b", p.b), "\"carrier-b\"");
    std::fs::write(&path, &to_b).unwrap();
    let reply = s.ctl("reload");
    assert!(
        reply.starts_with("ok: configuration reloaded: trunks: +1 -1 ~0, routes: 1, users: 0"),
        "{reply}{}",
        s.log()
    );
    assert!(s.ctl("trunks").lines().any(|l| l.starts_with("carrier-a") && l.contains("RETIRED")));

    // New calls go to carrier-b while the long call is up.
    assert!(uac("after", 2, 100).run_ok("after", Duration::from_secs(30)));
    assert_eq!(successful("after"), 2);
    // The long call ends normally: its BYE reaches carrier-a and is answered.
    assert!(long.wait_timeout(Duration::from_secs(20)).is_some_and(|st| st.success()), "{}", long.log_tail(30));
    assert_eq!(successful("long"), 1);
    let targets = s.targets();
    assert_eq!(targets.len(), 3, "{targets:?}");
    let long_cdr = s.cdrs().into_iter().find(|c| c["target"] == "carrier-a").expect("the long call's CDR");
    assert_eq!(targets.iter().filter(|t| *t == "carrier-b").count(), 2, "{targets:?}");
    eprintln!("the long call's CDR after the reload: {long_cdr}");
    s.wait_gauge_zero("sbc_dialogs_active");

    // A broken file: refused with the key named, by ctl and by SIGHUP.
    std::fs::write(&path, to_b.replace("trunks = [\"carrier-b\"]", "trunks = [\"carrier-x\"]")).unwrap();
    let reply = s.ctl("reload");
    assert!(reply.starts_with("error: configuration not reloaded") && reply.contains("route[0].trunks"), "{reply}");
    let hup = std::process::Command::new("kill").args(["-HUP", &s.guard.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    wait("the SIGHUP reload is refused in the log", 5, || {
        s.log().lines().filter(|l| l.contains("configuration not reloaded") && l.contains("route[0].trunks")).count()
            >= 2
    });
    // A restart-only key.
    std::fs::write(&path, to_b.replace(&format!("127.0.0.1:{}\"\ndomains", p.sip), "127.0.0.1:1\"\ndomains")).unwrap();
    let reply = s.ctl("reload");
    assert!(reply.contains("`sip.listen`") && reply.contains("needs a restart"), "{reply}");
    assert_eq!(s.metric("sbc_config_reloads_total", &[("result", "ok")]), 1.0);
    assert_eq!(s.metric("sbc_config_reloads_total", &[("result", "error")]), 3.0);
    assert!(s.metric("sbc_config_last_reload_success_timestamp_seconds", &[]) > 1.0e9);

    // Calls still go to carrier-b.
    assert!(uac("still", 1, 100).run_ok("still", Duration::from_secs(30)));
    assert_eq!(s.targets().last().map(String::as_str), Some("carrier-b"));
}
