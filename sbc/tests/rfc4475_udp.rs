//! Sends each of the 49 RFC 4475 torture messages over UDP to a running sbc
//! and checks what comes back: valid requests are answered (routed or
//! refused, never 400), invalid ones get 400 (505 for badvers, 483 for
//! zeromf) or a counted drop, responses are dropped and counted. Afterwards
//! the sbc still answers OPTIONS.
//!
//! The messages name documentation hosts, so the sbc and the sender run in a
//! network namespace with only `lo` up: nothing can leave the machine. Needs
//! root (`ip netns`); without it the test says so and skips, except under
//! CI=true, where it must run.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sbc::sip::{Header, Message};
use testkit::{skip, ChildGuard, Netns, TestDir};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A response other than 400/505 (routed, refused or answered).
    Answered,
    /// Exactly this code.
    Code(u16),
    /// 400, or no answer and a counted drop/parse error.
    RejectOrDrop,
    /// A response message: never answered, counted as dropped.
    DroppedResponse,
}

fn expectation(name: &str) -> Expect {
    match name {
        "badvers" => Expect::Code(505),
        "zeromf" => Expect::Code(483),
        "bcast" | "scalarlg" | "unreason" | "noreason" | "bigcode" => Expect::DroppedResponse,
        // 3.1.2 invalid messages, and the 3.3 ones a proxy must reject.
        "badinv01" | "clerr" | "ncl" | "scalar02" | "quotbal" | "ltgtruri" | "lwsruri" | "lwsstart" | "trws"
        | "escruri" | "baddate" | "baddn" | "mismatch01" | "mismatch02" | "insuf" | "multi01" | "mcl01" => {
            Expect::RejectOrDrop
        }
        // regbadct and badaspec: RFC 4475 lets an element be liberal.
        "regbadct" | "badaspec" => Expect::Answered,
        _ => Expect::Answered,
    }
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/rfc4475")
}

/// Points the top Via's sent-by at the sender, leaving the rest as it is.
fn retarget_via(data: &[u8], me: SocketAddr) -> Vec<u8> {
    if let Ok(mut m) = Message::parse(data) {
        if let Some(mut v) = m.top_via() {
            v.host = me.ip().to_string();
            v.port = Some(me.port());
            m.remove_first_value("via");
            m.insert_before_first("via", Header::new("Via", &v.to_string()));
            return m.to_bytes();
        }
    }
    // Unparseable: rewrite the first Via line's sent-by textually.
    let text = String::from_utf8_lossy(data).into_owned();
    let mut out = String::with_capacity(text.len());
    let mut done = false;
    for line in text.split_inclusive("\r\n") {
        let lower = line.to_ascii_lowercase();
        if !done && (lower.starts_with("via") || lower.starts_with("v:") || lower.starts_with("v ")) {
            if let Some(p) = line.find("SIP/2.0/") {
                let rest = &line[p + 8..];
                let t_end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
                let after = rest[t_end..].trim_start();
                let host_end = after.find([';', ',', '\r']).unwrap_or(after.len());
                out.push_str(&line[..p + 8]);
                out.push_str(&rest[..t_end]);
                out.push(' ');
                out.push_str(&me.to_string());
                out.push_str(&after[host_end..]);
                done = true;
                continue;
            }
        }
        out.push_str(line);
    }
    if done {
        out.into_bytes()
    } else {
        data.to_vec()
    }
}

/// The value of the first header named `name` (or its compact form) in raw bytes.
fn raw_header(data: &[u8], name: &str, compact: &str) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let head = text.split("\r\n\r\n").next()?.to_owned();
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(compact)).then(|| v.trim().to_owned())
    })
}

/// Response codes that arrive within `wait` for the request identified by
/// `call_id` and `cseq`. Earlier INVITEs' final responses keep being
/// retransmitted (nobody ACKs them here), so others are ignored.
fn codes_for(sock: &UdpSocket, wait: Duration, call_id: Option<&str>, cseq: Option<&str>) -> Vec<u16> {
    let deadline = Instant::now() + wait;
    let mut codes = Vec::new();
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .unwrap();
        let Ok(n) = sock.recv(&mut buf) else { break };
        let data = &buf[..n];
        if raw_header(data, "call-id", "i").as_deref() != call_id || raw_header(data, "cseq", "cseq").as_deref() != cseq
        {
            continue;
        }
        let t = String::from_utf8_lossy(data);
        if let Some(code) = t.strip_prefix("SIP/2.0 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok()) {
            codes.push(code);
            if code >= 200 {
                break;
            }
        }
    }
    codes
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().parse::<f64>().unwrap_or(0.0))
        .sum()
}

fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut b = String::new();
    s.read_to_string(&mut b).unwrap();
    b
}

#[test]
fn rfc4475_torture_messages_over_udp() {
    let dir = testdata();
    if !dir.is_dir() {
        skip(&format!("{} is missing", dir.display()));
        return;
    }
    let ns = match Netns::with_lo("rfc4475") {
        Ok(ns) => ns,
        Err(e) => {
            skip(&format!("cannot create a network namespace (needs root and iproute2): {e}"));
            return;
        }
    };
    let tmp = TestDir::new("rfc4475");
    let cfg = sbc::config::DEFAULT_TOML
        .replace("file = \"sbc-cdr.jsonl\"", &format!("file = \"{}\"", tmp.join("cdr.jsonl").display()))
        .replace("socket = \"/tmp/xsbc-sbc.sock\"", &format!("socket = \"{}\"", tmp.join("ctl.sock").display()));
    let cfg_path = tmp.write("sbc.toml", cfg);
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_sbc"));
    cmd.args(["run", "--config"]).arg(&cfg_path).env("RUST_LOG", "debug");
    let sbc = ChildGuard::spawn("sbc", &mut cmd, tmp.path());

    // Everything below runs on a thread inside the namespace.
    let files: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "dat"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(files.len(), 49, "the RFC 4475 suite has 49 messages");
    let report = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<Vec<String>, String> {
                ns.enter();
                let sbc_addr: SocketAddr = "127.0.0.1:5060".parse().unwrap();
                let metrics_addr: SocketAddr = "127.0.0.1:9102".parse().unwrap();
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                let me = sock.local_addr().unwrap();
                let options = |sock: &UdpSocket, n: u32| -> Vec<u16> {
                    let msg = format!(
                        "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKprobe{n}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:127.0.0.1>\r\n\
                 Call-ID: probe-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
                    );
                    sock.send_to(msg.as_bytes(), sbc_addr).unwrap();
                    codes_for(
                        sock,
                        Duration::from_millis(500),
                        Some(&format!("probe-{n}")),
                        Some(&format!("{n} OPTIONS")),
                    )
                };
                let deadline = Instant::now() + Duration::from_secs(15);
                while !options(&sock, 0).contains(&200) {
                    if Instant::now() > deadline {
                        return Err("sbc never answered OPTIONS".into());
                    }
                }
                let mut failures = Vec::new();
                for (i, f) in files.iter().enumerate() {
                    let name = f.file_stem().unwrap().to_string_lossy().into_owned();
                    let data = std::fs::read(f).unwrap();
                    let before = scrape(metrics_addr);
                    let dropped_before =
                        metric(&before, "sbc_sip_dropped_total") + metric(&before, "sbc_sip_parse_errors_total");
                    // Many of the files share a branch: a fresh source port per file
                    // keeps their transactions apart (the sent-by differs).
                    let one = UdpSocket::bind("127.0.0.1:0").unwrap();
                    one.send_to(&retarget_via(&data, one.local_addr().unwrap()), sbc_addr).unwrap();
                    let call_id = raw_header(&data, "call-id", "i");
                    let cseq = raw_header(&data, "cseq", "cseq");
                    let codes = codes_for(&one, Duration::from_millis(400), call_id.as_deref(), cseq.as_deref());
                    let after = scrape(metrics_addr);
                    let dropped_after =
                        metric(&after, "sbc_sip_dropped_total") + metric(&after, "sbc_sip_parse_errors_total");
                    let counted = dropped_after > dropped_before;
                    let finals: Vec<u16> = codes.iter().copied().filter(|c| *c >= 200).collect();
                    let ok = match expectation(&name) {
                        Expect::Code(c) => finals == vec![c],
                        Expect::Answered => finals.len() == 1 && finals[0] != 400 && finals[0] != 505,
                        Expect::RejectOrDrop => finals == vec![400] || (finals.is_empty() && counted),
                        Expect::DroppedResponse => codes.is_empty() && counted,
                    };
                    if !ok {
                        failures.push(format!(
                            "{name}: expected {:?}, got responses {codes:?} (drop counted: {counted})",
                            expectation(&name)
                        ));
                    }
                    let alive = options(&sock, u32::try_from(i).unwrap() + 1);
                    if !alive.contains(&200) {
                        failures.push(format!("{name}: sbc did not answer OPTIONS afterwards ({alive:?})"));
                        break;
                    }
                }
                Ok(failures)
            })
            .join()
            .expect("sender thread")
    });
    let failures = match report {
        Ok(f) => f,
        Err(e) => panic!("{e}\nsbc log tail:\n{}", sbc.log_tail(30)),
    };
    assert!(failures.is_empty(), "RFC 4475 mismatches:\n{}", failures.join("\n"));
}
