//! Edge policy with a real sbc and real sipp on loopback addresses: a
//! caller on 127.0.0.2 calls through the sbc (127.0.0.1) to a trunk on
//! 127.0.0.3 with `topology_hiding` and `callid_rewrite`; every byte the
//! trunk receives (sipp's message trace) is free of the caller's address,
//! while the caller's calls complete. A source on the `deny` list gets a
//! 403 and is counted.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use support::{Ports, Sbc};
use testkit::sipp::{SippStats, Template};
use testkit::{Sipp, TestDir};

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
