//! AlternatePath end to end, on four loopback addresses:
//!
//! ```text
//! UAC (this test, 127.0.0.1) → primary sbc P (127.0.0.11) → sbc S (127.0.0.13) → sipp UAS (127.0.0.14)
//!                               backup sbc B (127.0.0.12), listed by P in alternatePath
//! ```
//!
//! The UAS rings, then answers 2 s later; the test kills P (SIGKILL) as soon
//! as the 180 arrives. S sends the 200 to P, gets no ACK, and resends the
//! 2xx to the alternate P advertised in its Via. B finds itself in P's
//! alternatePath list, takes P's Via as its own, rewrites P's Record-Route to
//! itself and passes the 200 on. The ACK and the BYE then flow through B.
//! The UAC is a small scripted UA here because sipp always sends to the one
//! address on its command line, while this UAC must follow the route set.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use sbc::sip::Message;
use testkit::{ChildGuard, Sipp, TestDir};

fn sbc_config(
    dir: &TestDir,
    name: &str,
    ip: &str,
    trunk: &str,
    alternate: Option<&str>,
    relay_base: u16,
) -> std::path::PathBuf {
    let alt = alternate.map_or_else(
        || "[alternate_path]\nenabled = false\n".to_owned(),
        |b| format!("[alternate_path]\nenabled = true\nbackups = [\"{b}\"]\n"),
    );
    let text = format!(
        "[sip]\nlisten = \"{ip}:5060\"\ndomains = [\"{ip}\"]\ninvite_timeout_ms = 4000\n\
         [[trunk]]\nname = \"next\"\naddress = \"{trunk}\"\n\
         [[route]]\nprefix = \"\"\ntrunks = [\"next\"]\n\
         [health]\ninterval_ms = 0\n\
         {alt}\
         [cdr]\nfile = \"{cdr}\"\n[metrics]\nlisten = \"off\"\n[control]\nsocket = \"off\"\n\
         [relay]\ninterfaces = [\"{ip}\"]\nlisten_ng = \"off\"\nport_min = {relay_base}\nport_max = {}\n\
         workers = 1\ntimeout = 60\nmetrics = \"off\"\n",
        relay_base + 99,
        cdr = dir.join(&format!("{name}-cdr.jsonl")).display(),
    );
    dir.write(&format!("{name}.toml"), text)
}

fn start_sbc(dir: &TestDir, name: &str, cfg: &std::path::Path) -> ChildGuard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sbc"));
    cmd.args(["run", "--config"]).arg(cfg).env("RUST_LOG", "info");
    ChildGuard::spawn(name, &mut cmd, dir.path())
}

/// Receives until a message satisfying `want` arrives (others are returned too).
fn recv_until(
    sock: &UdpSocket,
    deadline: Duration,
    mut want: impl FnMut(&Message) -> bool,
) -> Option<(Message, SocketAddr)> {
    let end = Instant::now() + deadline;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < end {
        sock.set_read_timeout(Some(end.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .unwrap();
        let Ok((n, from)) = sock.recv_from(&mut buf) else { break };
        let Ok(m) = Message::parse(&buf[..n]) else { continue };
        if want(&m) {
            return Some((m, from));
        }
    }
    None
}

#[test]
fn alternate_path_takes_over_a_dialog_when_the_primary_dies() {
    let Some(sipp) = Sipp::find() else { return };
    let dir = TestDir::new("alternate-path");
    let (p_ip, b_ip, s_ip, uas_ip) = ("127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14");
    let p_cfg = sbc_config(&dir, "primary", p_ip, &format!("{s_ip}:5060"), Some(&format!("{b_ip}:5060")), 46000);
    let b_cfg = sbc_config(&dir, "backup", b_ip, &format!("{s_ip}:5060"), None, 46200);
    let s_cfg = sbc_config(&dir, "second", s_ip, &format!("{uas_ip}:5070"), None, 46400);
    let mut primary = start_sbc(&dir, "primary", &p_cfg);
    let _backup = start_sbc(&dir, "backup", &b_cfg);
    let _second = start_sbc(&dir, "second", &s_cfg);
    for ip in [p_ip, b_ip, s_ip] {
        let a: SocketAddr = format!("{ip}:5060").parse().unwrap();
        assert!(testkit::sip::wait_for_sip(a, Duration::from_secs(10)), "sbc on {ip} did not come up");
    }
    let uas = sipp.cmd(dir.path()).scenario("uas_slow_answer.xml").local(uas_ip, 5070).calls(1);
    let mut uas = uas.timeout_s(40).timeout_error().spawn("uas");
    std::thread::sleep(Duration::from_millis(300));

    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = ua.local_addr().unwrap();
    let call_id = format!("alt-{}@127.0.0.1", std::process::id());
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";
    let invite = format!(
        "INVITE sip:1000@{p_ip}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKuac1;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:uac@127.0.0.1>;tag=uac1\r\nTo: <sip:1000@{p_ip}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:uac@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    ua.send_to(invite.as_bytes(), format!("{p_ip}:5060")).unwrap();
    // Ringing: the INVITE reached the UAS. Now the primary dies.
    let ringing = recv_until(&ua, Duration::from_secs(10), |m| m.code() == Some(180));
    assert!(ringing.is_some(), "no 180 through the primary\n{}", primary.log_tail(20));
    let killed_at = Instant::now();
    let _ = primary.stop(Duration::ZERO);

    let (ok, from) = recv_until(&ua, Duration::from_secs(15), |m| m.code() == Some(200))
        .unwrap_or_else(|| panic!("the 200 never reached the caller\nUAS: {}", uas.log_tail(20)));
    let took = killed_at.elapsed();
    eprintln!("200 OK reached the caller {took:?} after the primary was killed, from {from}");
    assert_eq!(from.ip().to_string(), b_ip, "the 200 came through the backup");
    let rr = ok.header_values("record-route");
    eprintln!("Record-Route seen by the caller: {rr:?}");
    assert!(rr.iter().any(|r| r.contains(b_ip)), "backup took over the primary's Record-Route: {rr:?}");
    assert!(!rr.iter().any(|r| r.contains(p_ip)), "the dead primary is gone from the route set: {rr:?}");
    assert!(rr.iter().any(|r| r.contains(s_ip)));
    assert_eq!(ok.vias().len(), 1, "only the caller's own Via is left");

    // The route set, reversed for the caller; ACK and BYE go to its first hop.
    let routes: Vec<String> = rr.iter().rev().map(|s| (*s).to_owned()).collect();
    let contact =
        ok.contacts().into_iter().find_map(|c| c.addr().map(|a| a.uri.to_string())).expect("200 has a Contact");
    let to = ok.header("to").unwrap().to_owned();
    let route_lines: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
    let first_hop: SocketAddr = format!("{b_ip}:5060").parse().unwrap();
    let ack = format!(
        "ACK {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKuac2;rport\r\n{route_lines}Max-Forwards: 70\r\n\
         From: <sip:uac@127.0.0.1>;tag=uac1\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    ua.send_to(ack.as_bytes(), first_hop).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let bye = format!(
        "BYE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKuac3;rport\r\n{route_lines}Max-Forwards: 70\r\n\
         From: <sip:uac@127.0.0.1>;tag=uac1\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    ua.send_to(bye.as_bytes(), first_hop).unwrap();
    let bye_ok =
        recv_until(&ua, Duration::from_secs(10), |m| m.code() == Some(200) && m.cseq().is_some_and(|c| c.0 == 2));
    let (bye_ok, from) = bye_ok.unwrap_or_else(|| panic!("no 200 for BYE\nUAS: {}", uas.log_tail(20)));
    assert_eq!(from.ip().to_string(), b_ip, "the BYE's answer came back through the backup");
    assert_eq!(bye_ok.vias().len(), 1);
    let status = uas.wait_timeout(Duration::from_secs(15)).expect("sipp UAS finished");
    assert!(status.success(), "the UAS saw INVITE, ACK and BYE in order\n{}", uas.log_tail(30));
    // The second sbc ended the call and wrote its CDR.
    let cdr = std::fs::read_to_string(dir.join("second-cdr.jsonl")).unwrap_or_default();
    assert!(cdr.contains(&call_id) && cdr.contains("caller-bye"), "CDR at the second sbc: {cdr}");
}
