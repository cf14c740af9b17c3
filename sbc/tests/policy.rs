//! Edge policy with a real sbc and real sipp on loopback addresses: a
//! caller on 127.0.0.2 calls through the sbc (127.0.0.1) to a trunk on
//! 127.0.0.3 with `topology_hiding` and `callid_rewrite`; every byte the
//! trunk receives (sipp's message trace) is free of the caller's address,
//! while the caller's calls complete. A source on the `deny` list gets a
//! 403 and is counted.
//!
//! The same in network namespaces, on the wire: the phone (10.88.1.2, the
//! inside namespace of `testkit::realms::RealmLab`) and the carrier's trunk
//! (10.88.2.2, the outside namespace) are in ONE realm of the sbc, so only
//! the trunk's `topology_hiding` keeps the phone's address from the trunk.
//! An `AF_PACKET` capture on the trunk's own interface must show no byte
//! naming the phone: not its address (in any header or SDP), not its
//! Call-IDs, not its stripped User-Agent. Needs root, `ip` and sipp; skips
//! without them except under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use support::{Ports, Sbc};
use testkit::capture::{Capture, Captured, Packet};
use testkit::realms::{self, Host, RealmLab};
use testkit::sipp::{SippStats, Template};
use testkit::{ChildGuard, Sipp, TestDir};

/// The caller's address: internal, never to be seen by the trunk.
const CALLER_IP: &str = "127.0.0.2";
/// The trunk's address.
const TRUNK_IP: &str = "127.0.0.3";
/// A source the ACL denies.
const DENIED_IP: &str = "127.0.0.4";

fn start_sbc(dir: &TestDir, p: &Ports) -> Sbc {
    let cfg = format!(
        "[sip]\nlisten = \"127.0.0.1:{sip}\"\ndomains = [\"127.0.0.1\"]\ndeny = [\"{DENIED_IP}/32\"]\n\
         [[trunk]]\nname = \"carrier\"\naddress = \"{TRUNK_IP}:{a}\"\nprobe = false\ntopology_hiding = true\n\
         callid_rewrite = true\nstrip_headers = [\"User-Agent\", \"Server\"]\n\
         [[route]]\nprefix = \"\"\ntrunks = [\"carrier\"]\n\
         [control]\nsocket = \"{ctl}\"\n[cdr]\nfile = \"{cdr}\"\n[metrics]\nlisten = \"127.0.0.1:{m}\"\n\
         [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = {r}\nport_max = {r2}\nworkers = 1\ntimeout = 60\nmetrics = \"off\"\n",
        sip = p.sip,
        a = p.a,
        ctl = dir.join("ctl.sock").display(),
        cdr = dir.join("cdr.jsonl").display(),
        m = p.metrics,
        r = p.relay,
        r2 = p.relay + 199
    );
    Sbc::start(dir, p, &cfg, Some("info"))
}

/// sipp's `-trace_msg` files in `dir` whose name starts with `prefix`, concatenated.
fn message_trace(dir: &TestDir, prefix: &str) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with("_messages.log") {
            text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    text
}

#[test]
fn a_topology_hiding_trunk_never_sees_an_internal_address() {
    let Some(sipp) = Sipp::find() else { return };
    let dir = TestDir::new("policy-hiding");
    let p = Ports::new(52_000 + (std::process::id() % 10) as u16 * 200);
    let s = start_sbc(&dir, &p);
    let sf = Template::scenario("trunk_uas.xml")
        .set("OPTIONS_CODE", 200)
        .set("INVITE_CODE", 200)
        .set("AFTER_ACK", "call")
        .write(&dir, "trunk.xml");
    let _trunk = sipp.cmd(dir.path()).sf(sf).local(TRUNK_IP, p.a).arg("-trace_msg").spawn("trunk");
    std::thread::sleep(Duration::from_millis(300));

    let stf = dir.join("uac.csv");
    let uac = sipp
        .cmd(dir.path())
        .sn("uac")
        .remote(s.sip)
        .arg("-s")
        .arg("1000")
        .local(CALLER_IP, p.uac)
        .calls(2)
        .rate(2)
        .hold_ms(200)
        .timeout_s(30)
        .stats(&stf);
    let _ = uac.finish("uac", Duration::from_secs(40));
    let done = SippStats::read(&stf).map_or(0, |st| st.successful());
    assert_eq!(done, 2, "both calls complete through the hiding trunk:\n{}", s.log());
    let cdrs = s.cdrs();
    assert_eq!(cdrs.len(), 2);
    assert!(cdrs.iter().all(|c| c["target"] == "carrier" && c["end_reason"] == "caller-bye"), "{cdrs:?}");

    let seen = message_trace(&dir, "trunk");
    assert!(seen.contains("INVITE sip:1000@") && seen.contains("BYE sip:"), "the trunk traced the calls:\n{seen}");
    assert!(!seen.contains(CALLER_IP), "the caller's address reached the trunk:\n{seen}");
    // The Call-IDs the caller used never reached the trunk either.
    let caller_ids: Vec<String> = cdrs.iter().filter_map(|c| c["call_id"].as_str().map(str::to_owned)).collect();
    assert!(caller_ids.iter().all(|id| !seen.contains(id.as_str())), "{caller_ids:?}");
    eprintln!("the trunk received {} bytes of SIP, none naming {CALLER_IP}", seen.len());

    // A denied source: a stateless 403, counted.
    let sock = UdpSocket::bind((DENIED_IP, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let local = sock.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-acl1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:scan@{local}>;tag=s1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: acl-1\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        sip = p.sip
    );
    sock.send_to(options.as_bytes(), s.sip).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer to the denied source");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 403 "), "{answer}");
    assert_eq!(s.metric("sbc_acl_denied_total", &[("realm", "default")]), 1.0);
}

/// The phone's User-Agent, which the hiding trunk's `strip_headers` removes.
const PHONE_AGENT: &str = "xsbc-test-phone/1.0";

fn sa(host: &str, port: u16) -> SocketAddr {
    SocketAddr::new(host.parse().expect("an address"), port)
}

/// One realm on the inside address; the trunk (in the outside namespace,
/// reached over the sbc's other leg) hides the topology.
fn hiding_config(dir: &TestDir) -> String {
    format!(
        "[sip]\nlisten = \"{sbc}:5060\"\ndomains = [\"{sbc}\"]\n\
         [[trunk]]\nname = \"carrier\"\naddress = \"{carrier}:5060\"\nprobe = false\ntopology_hiding = true\n\
         callid_rewrite = true\nstrip_headers = [\"User-Agent\", \"Server\"]\n\
         [[route]]\nprefix = \"\"\ntrunks = [\"carrier\"]\n[health]\ninterval_ms = 0\n\
         [control]\nsocket = \"off\"\n[cdr]\nfile = \"{cdr}\"\n[metrics]\nlisten = \"127.0.0.1:9100\"\n\
         [relay]\ninterfaces = [\"{sbc}\"]\nlisten_ng = \"off\"\nport_min = 40000\nport_max = 40999\nworkers = 1\n\
         timeout = 60\nmetrics = \"off\"\n",
        sbc = realms::SBC_INSIDE,
        carrier = realms::CARRIER,
        cdr = dir.join("cdr.jsonl").display(),
    )
}

/// What on the trunk's wire names the phone: every problem, once each.
/// `phone_ids` are the Call-IDs the phone sent.
fn trunk_wire_problems(trunk: &Captured, phone_ids: &[String]) -> Vec<String> {
    let mut problems: Vec<String> = Vec::new();
    let mut note = |p: &Packet, what: String| {
        let line = format!("{} -> {} [{}]: {what}", p.src, p.dst, p.start_line());
        if !problems.contains(&line) {
            problems.push(line);
        }
    };
    let phone: IpAddr = realms::PHONE.parse().expect("an address");
    for p in &trunk.packets() {
        if p.src == phone || p.dst == phone {
            note(p, "the phone's address in the IP header".into());
        }
        let text = p.text();
        for l in text.lines().filter(|l| l.contains(realms::PHONE)) {
            note(p, format!("the phone's address in {l:?}"));
        }
        for id in phone_ids.iter().filter(|id| text.contains(id.as_str())) {
            note(p, format!("the phone's Call-ID {id}"));
        }
        if text.contains(PHONE_AGENT) || !p.headers("user-agent").is_empty() {
            note(p, "the stripped User-Agent".into());
        }
    }
    problems
}

#[test]
fn a_capture_of_a_hiding_trunks_wire_holds_no_internal_address() {
    if !testkit::env::require_root_and("policy: hiding trunk capture", &["ip", "sipp"]) {
        return;
    }
    let Some(sipp) = Sipp::find() else { return };
    let dir = TestDir::new("policy-hiding-wire");
    let lab = RealmLab::new("thide").unwrap_or_else(|e| panic!("building the lab: {e}"));
    lab.check().unwrap_or_else(|e| panic!("the lab is not what it should be: {e}"));
    // One realm: the carrier reaches the sbc's inside address over the
    // sbc's outside leg (the sbc still forwards nothing, and the phone
    // stays out of the carrier's reach).
    lab.outside.ip(&["route", "add", &format!("{}/32", realms::SBC_INSIDE), "via", realms::SBC_OUTSIDE]).unwrap();
    assert!(lab.can_send(Host::Outside, sa(realms::PHONE, 9)).is_err(), "the carrier can reach the phone");

    let cfg = dir.write("sbc.toml", hiding_config(&dir));
    let mut cmd = lab.sbc.command(env!("CARGO_BIN_EXE_sbc"));
    cmd.args(["run", "--config"]).arg(&cfg);
    let mut sbc = ChildGuard::spawn("sbc", &mut cmd, dir.path());
    let sbc_sip = sa(realms::SBC_INSIDE, 5060);
    let up = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        sbc.assert_running();
        let from = realms::PHONE.parse().expect("an address");
        lab.run_in(Host::Inside, move || testkit::sip::sip_options_from(from, sbc_sip, Duration::from_millis(300)))
            .is_some_and(|r| r.starts_with("SIP/2.0 200"))
    });
    assert!(up, "the sbc does not answer OPTIONS from the phone\n{}", sbc.log_tail(40));

    const CALLS: u32 = 2;
    let uas = sipp
        .cmd(dir.path())
        .netns(lab.outside.name())
        .local(realms::CARRIER, 5060)
        .scenario("uas_echo.xml")
        .media(realms::CARRIER, Some(6000))
        .arg("-rtp_echo")
        .calls(CALLS)
        .timeout_s(30)
        .trace_err()
        .log_file(dir.join("trunk_log.txt"));
    let mut uas = uas.spawn("trunk");
    std::thread::sleep(Duration::from_millis(300));
    let uac = Template::scenario("hiding_uac.xml")
        .set("USER_AGENT", PHONE_AGENT)
        .set("PAUSE_MS", 300)
        .write(&dir, "phone.xml");
    let phone_side = lab.capture(Host::Inside).unwrap_or_else(|e| panic!("{e}"));
    let trunk_side = lab.capture(Host::Outside).unwrap_or_else(|e| panic!("{e}"));
    let ok = sipp
        .cmd(dir.path())
        .netns(lab.inside.name())
        .sf(&uac)
        .remote(sbc_sip)
        .arg("-s")
        .arg("1000")
        .local(realms::PHONE, 5062)
        .media(realms::PHONE, Some(6000))
        .calls(CALLS)
        .rate(2)
        .timeout_s(30)
        .timeout_error()
        .trace_err()
        .log_file(dir.join("phone_log.txt"))
        .run_ok("phone", Duration::from_secs(40));
    let (phone_side, trunk_side) = (Capture::stop(phone_side), Capture::stop(trunk_side));
    for c in [&phone_side, &trunk_side] {
        let _ = c.save(&dir.join(&format!("hiding-{}.pcap", c.label)));
    }
    assert!(ok, "the phone's calls through the hiding trunk failed\n{}", sbc.log_tail(60));
    let st = uas.wait_timeout(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "the trunk's UAS did not finish cleanly\n{}", uas.log_tail(30));

    // What the phone sent: its Call-IDs and User-Agent, its address everywhere.
    let phone_sip = phone_side.sip();
    let phone_invites: Vec<&Packet> = phone_sip
        .iter()
        .filter(|p| p.start_line().starts_with("INVITE ") && p.src.to_string() == realms::PHONE)
        .collect();
    let mut phone_ids: Vec<String> =
        phone_invites.iter().filter_map(|p| p.headers("call-id").first().cloned()).collect();
    phone_ids.sort();
    phone_ids.dedup();
    assert_eq!(phone_ids.len(), CALLS as usize, "the phone's INVITEs: {phone_ids:?}");
    assert!(phone_ids.iter().all(|id| id.contains(realms::PHONE)), "sipp's Call-IDs name the phone: {phone_ids:?}");
    let invite = phone_invites[0];
    assert!(invite.headers("user-agent").iter().any(|ua| ua.contains(PHONE_AGENT) && ua.contains(realms::PHONE)));
    assert!(invite.body().contains(&format!("c=IN IP4 {}", realms::PHONE)), "{}", invite.text());

    // What the trunk saw: the calls, from the sbc, naming the sbc alone.
    let trunk_sip = trunk_side.sip();
    let to_trunk: Vec<&Packet> = trunk_sip.iter().filter(|p| p.dst.to_string() == realms::CARRIER).collect();
    let starts: Vec<String> = to_trunk.iter().map(|p| p.start_line()).collect();
    let count = |method: &str| starts.iter().filter(|l| l.starts_with(method)).count();
    assert!(
        count("INVITE ") >= CALLS as usize && count("ACK ") >= CALLS as usize && count("BYE ") >= CALLS as usize,
        "{starts:?}"
    );
    let mut problems = trunk_wire_problems(&trunk_side, &phone_ids);
    for p in to_trunk.iter().filter(|p| p.start_line().starts_with("INVITE ")) {
        let vias: Vec<String> =
            p.headers("via").iter().flat_map(|v| v.split(',').map(|s| s.trim().to_owned())).collect();
        if vias.len() != 1 || !vias[0].contains(realms::SBC_INSIDE) {
            problems.push(format!("the INVITE's Vias are not the sbc's alone: {vias:?}"));
        }
        let sdp = p.body();
        let named =
            |prefix: &str| sdp.lines().any(|l| l.starts_with(prefix) && l.trim_end().ends_with(realms::SBC_INSIDE));
        if !(named("c=IN IP4 ") && named("o=")) {
            problems.push(format!("the INVITE's SDP does not name the relay ({}):\n{sdp}", realms::SBC_INSIDE));
        }
    }
    sbc.assert_running();
    drop(sbc);
    assert!(problems.is_empty(), "{} problems on the trunk's wire:\n{}", problems.len(), problems.join("\n"));
    eprintln!(
        "the trunk's wire: {} SIP messages ({} to the trunk), none naming {} or its Call-IDs",
        trunk_sip.len(),
        to_trunk.len(),
        realms::PHONE
    );
}
