//! MESSAGE store and forward (RFC 3428) with a real sbc and real sipp: a
//! MESSAGE to a user who is not registered is answered 202 and reaches the
//! user's phone, in order, when it registers; a MESSAGE to a trunk that is
//! DOWN (it does not answer OPTIONS) is held and reaches the trunk, in
//! order, once it answers again.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::time::Duration;

use support::{Ports, Sbc};
use testkit::sipp::Template;
use testkit::{ports, Sipp, TestDir};

/// An sbc for our domain 127.0.0.1: numbers starting with 9 go to trunk
/// `carrier` (probed every 300 ms, DOWN after 2 misses, UP after 2
/// answers and 1 s), stored MESSAGEs in `messages/` of `dir`.
fn start_sbc(dir: &TestDir, p: &Ports) -> Sbc {
    let cfg = format!(
        "[sip]\nlisten = \"127.0.0.1:{sip}\"\ndomains = [\"127.0.0.1\"]\n\
         [[trunk]]\nname = \"carrier\"\naddress = \"127.0.0.1:{a}\"\n\
         [[route]]\nprefix = \"9\"\ntrunks = [\"carrier\"]\n\
         [health]\ninterval_ms = 300\nprobe_timeout_ms = 200\ndown_after = 2\nup_after = 2\nhold_down_s = 1\n\
         [messages]\nspool_dir = \"{spool}\"\nttl_s = 600\n\
         [control]\nsocket = \"{ctl}\"\n[cdr]\nfile = \"{cdr}\"\n[metrics]\nlisten = \"127.0.0.1:{m}\"\n\
         [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = {r}\nport_max = {r2}\nworkers = 1\ntimeout = 60\nmetrics = \"off\"\n",
        sip = p.sip,
        a = p.a,
        spool = dir.join("messages").display(),
        ctl = dir.join("ctl.sock").display(),
        cdr = dir.join("cdr.jsonl").display(),
        m = p.metrics,
        r = p.relay,
        r2 = p.relay + 99
    );
    Sbc::start(dir, p, &cfg, Some("info"))
}

fn wait(what: &str, secs: u64, f: impl FnMut() -> bool) {
    assert!(testkit::wait_until(Duration::from_secs(secs), Duration::from_millis(100), f), "timed out waiting: {what}");
}

/// One test: sipp, a scratch dir, its ports and its sbc.
struct Lab {
    sipp: Sipp,
    dir: TestDir,
    p: Ports,
    s: Sbc,
}

impl Lab {
    fn start(label: &str) -> Option<Lab> {
        let sipp = Sipp::find()?;
        let dir = TestDir::new(label);
        let p = Ports::new(ports::free_udp_port_range(100));
        let s = start_sbc(&dir, &p);
        Some(Lab { sipp, dir, p, s })
    }

    /// Sends message_uac.xml's two MESSAGEs to `user` with Call-ID
    /// `<cid>-1`, expecting 202 to each.
    fn send_two(&self, user: &str, cid: &str) {
        let sf = Template::scenario("message_uac.xml").set("USER", user).set("EXPECT", 202).write(&self.dir, "uac.xml");
        let run = self.sipp.uac(self.dir.path(), self.s.sip, user, self.p.uac).sf(sf).calls(1).timeout_s(20);
        assert!(
            run.arg("-cid_str").arg(format!("{cid}-%u")).run_ok("sender", Duration::from_secs(30)),
            "both MESSAGEs answered 202"
        );
        assert_eq!(self.s.metric("sbc_messages_stored_total", &[]), 2.0);
        assert_eq!(self.s.metric("sbc_messages_pending", &[]), 2.0);
        assert!(self.dir.join("messages").is_dir(), "stored in the spool directory");
    }

    fn assert_delivered(&self) {
        wait("both stored MESSAGEs delivered", 20, || self.s.metric("sbc_messages_delivered_total", &[]) == 2.0);
        assert_eq!(self.s.metric("sbc_messages_pending", &[]), 0.0);
        assert_eq!(self.s.metric("sbc_messages_failed_total", &[]), 0.0);
    }
}

#[test]
fn a_message_to_an_offline_user_is_delivered_when_it_registers() {
    let Some(t) = Lab::start("msg-offline") else { return };
    t.send_two("bob", "offline");
    // Nothing can be delivered yet.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(t.s.metric("sbc_messages_delivered_total", &[]), 0.0);
    // bob's phone registers (on the Call-ID the MESSAGEs keep, so that
    // sipp takes them in the same call) and gets both, in order.
    let sf = Template::scenario("message_phone.xml").set("USER", "bob").write(&t.dir, "phone.xml");
    let phone = t.sipp.uac(t.dir.path(), t.s.sip, "bob", ports::free_sip_port()).sf(sf).calls(1).timeout_s(20);
    assert!(
        phone.arg("-cid_str").arg("offline-%u").run_ok("phone", Duration::from_secs(30)),
        "the phone got both, in order"
    );
    t.assert_delivered();
}

#[test]
fn a_message_to_a_down_trunk_is_delivered_when_it_comes_back() {
    let Some(t) = Lab::start("msg-trunk") else { return };
    // Nothing answers the probes: the trunk goes DOWN.
    wait("trunk carrier DOWN", 10, || t.s.metric("sbc_trunk_up", &[("trunk", "carrier")]) == 0.0);
    t.send_two("9123", "trunk");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(t.s.metric("sbc_messages_delivered_total", &[]), 0.0, "held while the trunk is DOWN");
    // The trunk starts answering: UP after 2 answers and the hold-down,
    // then both MESSAGEs arrive in order.
    let sf = Template::scenario("message_trunk_uas.xml").write(&t.dir, "trunk.xml");
    let mut trunk = t.sipp.uas(t.dir.path(), t.p.a).sf(sf).trace_err().spawn("trunk");
    wait("trunk carrier UP", 15, || t.s.metric("sbc_trunk_up", &[("trunk", "carrier")]) == 1.0);
    t.assert_delivered();
    trunk.assert_running();
    assert!(t.s.log().contains("delivering a stored MESSAGE"), "{}", t.s.log());
}
