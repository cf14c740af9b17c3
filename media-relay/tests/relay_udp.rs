//! Integration tests against a real `media-relay` process on loopback: ng
//! offer/answer over UDP, RTP both ways, latching, foreign-source drops,
//! the media timeout, delete freeing ports, the reply cache, and every
//! malformed input the ng server must answer or count.
//!
//! `relay_udp_xdp.rs` runs these same tests with the relay on the AF_XDP
//! datapath: it sets `DATAPATH` to `"xdp"` and includes this file as a
//! module.

#![allow(clippy::unwrap_used, reason = "test harness: a failed unwrap is a failed test")]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use testkit::bencode::{decode, Value};
use testkit::ng::sdp_command;
use testkit::{in_ci, is_root, Netns, NgClient};

/// The datapath these tests run the relay on (`relay_udp_xdp.rs` has its own).
#[allow(dead_code, reason = "unused when relay_udp_xdp.rs includes this file")]
const DATAPATH: &str = "socket";

/// A relay process, killed on drop.
struct Relay {
    child: Child,
    ng: SocketAddr,
    metrics: SocketAddr,
    ports: (u16, u16),
    /// AF_XDP runs: the relay's own network namespace, deleted after it.
    _netns: Option<Netns>,
}

/// On the AF_XDP datapath: a namespace of the test's own with its loopback
/// up, entered by the calling test thread so its sockets meet the relay
/// there. `None` (the test then runs on
/// sockets, saying so) when namespaces cannot be made, except under CI.
fn xdp_netns() -> Option<Netns> {
    let Ok(ns) = Netns::with_lo("rudp") else {
        testkit::skip("no network namespaces (not root?): running this test on the socket datapath");
        return None;
    };
    // A frame sent from an AF_XDP socket on lo has no route attached, so
    // IPv4 looks its 127.0.0.1 source and destination up as if it came from
    // a wire: allow that in this namespace (IPv6 needs nothing).
    for key in ["route_localnet", "accept_local"] {
        for dev in ["all", "lo"] {
            let set = format!("net.ipv4.conf.{dev}.{key}=1");
            ns.sysctl(&set).unwrap_or_else(|e| panic!("sysctl {set}: {e}"));
        }
    }
    ns.enter();
    Some(ns)
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static NEXT_BASE: AtomicU16 = AtomicU16::new(0);

/// A block of ports for one relay: its ng and metrics ports and a media range,
/// spread by pid so parallel test binaries do not collide.
fn port_block() -> (u16, u16, u16, u16) {
    let k = NEXT_BASE.fetch_add(1, Ordering::Relaxed);
    let base = 20000 + (std::process::id() % 40) as u16 * 400 + k * 40;
    (base, base + 1, base + 10, base + 39)
}

fn start_relay(extra: &[&str]) -> Relay {
    // A port may be taken by another process on a shared machine: the relay
    // then exits at once (it names the port), and the next block is tried.
    for _ in 0..5 {
        let (ng, metrics, pmin, pmax) = port_block();
        let mut args = vec![
            "--config-file=none".to_owned(),
            format!("--listen-ng=127.0.0.1:{ng}"),
            format!("--metrics=127.0.0.1:{metrics}"),
            format!("--port-min={pmin}"),
            format!("--port-max={pmax}"),
            "--num-threads=2".to_owned(),
            format!("--log-level={}", std::env::var("XSBC_TEST_RELAY_LOG").unwrap_or_else(|_| "4".into())),
        ];
        if !extra.iter().any(|a| a.starts_with("--interface")) {
            args.push("--interface=127.0.0.1".to_owned());
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let netns = if crate::DATAPATH == "xdp" { xdp_netns() } else { None };
        let mut command = match &netns {
            Some(ns) => {
                // Loopback senders hand over partial UDP checksums (offload
                // that cannot be turned off on lo): recompute them.
                args.extend(["--datapath=xdp", "--xdp-interface=lo", "--xdp-full-checksum"].map(str::to_owned));
                ns.command(env!("CARGO_BIN_EXE_media-relay"))
            }
            None => Command::new(env!("CARGO_BIN_EXE_media-relay")),
        };
        let child = command.args(&args).stdin(Stdio::null()).spawn().expect("spawn media-relay");
        let xdp = netns.is_some();
        let mut r = Relay {
            child,
            ng: SocketAddr::from(([127, 0, 0, 1], ng)),
            metrics: SocketAddr::from(([127, 0, 0, 1], metrics)),
            ports: (pmin, pmax),
            _netns: netns,
        };
        let up = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            testkit::ng::wait_for_udp_ng(r.ng, Duration::from_millis(100))
                || r.child.try_wait().ok().flatten().is_some()
        });
        if up && r.child.try_wait().ok().flatten().is_none() {
            if xdp {
                assert_eq!(metric(&r, "media_relay_datapath{datapath=\"xdp\"}"), 1.0, "the relay runs on AF_XDP");
                // The loopback driver has no native XDP: the relay fell
                // back to generic mode, and says so.
                assert_eq!(metric(&r, "media_relay_xdp_interfaces{mode=\"generic\"}"), 1.0, "lo in generic mode");
                assert_eq!(metric(&r, "media_relay_xdp_interfaces{mode=\"native\"}"), 0.0);
            }
            return r;
        }
        eprintln!("media-relay could not start on ports {ng}/{metrics}; trying another block");
    }
    panic!("media-relay did not answer ping on any port block");
}

static COOKIE: AtomicU64 = AtomicU64::new(1);

fn cookie() -> String {
    format!("t{}_{}", std::process::id(), COOKIE.fetch_add(1, Ordering::Relaxed))
}

fn raw(r: &Relay, datagram: &[u8], wait: Duration) -> Option<Vec<u8>> {
    raw_from(&UdpSocket::bind("127.0.0.1:0").unwrap(), r, datagram, wait)
}

/// Sends from a given socket: retransmissions come from the same source.
fn raw_from(s: &UdpSocket, r: &Relay, datagram: &[u8], wait: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(wait)).unwrap();
    s.send_to(datagram, r.ng).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn cmd(r: &Relay, d: &Value) -> Value {
    NgClient::new(r.ng).cmd(d.clone())
}

fn dict(pairs: &[(&str, Value)]) -> Value {
    let mut d = Value::dict();
    for (k, v) in pairs {
        d.insert(k, v.clone());
    }
    d
}

fn s(v: &str) -> Value {
    Value::str(v)
}

fn sdp_for(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
}

/// Port of the first `m=` line.
fn media_port(sdp: &[u8]) -> u16 {
    let t = std::str::from_utf8(sdp).unwrap();
    let m = t.lines().find(|l| l.starts_with("m=")).expect("m= line");
    m.split(' ').nth(1).unwrap().parse().unwrap()
}

fn result(v: &Value) -> &str {
    v.get("result").and_then(Value::as_str).unwrap_or("<none>")
}

fn reason(v: &Value) -> String {
    v.get("error-reason").and_then(Value::as_str).unwrap_or("").to_owned()
}

/// Sets up a call between sockets `a` (caller) and `b` (callee). Returns the
/// relay ports that A and B must send to.
fn setup_call(r: &Relay, call: &str, a: &UdpSocket, b: &UdpSocket) -> (u16, u16) {
    let mut offer = sdp_command("offer", call, "tag-a", None, &sdp_for(a.local_addr().unwrap().port()));
    offer.insert("replace", Value::List(vec![s("origin"), s("session-connection")]));
    let offer = cmd(r, &offer);
    assert_eq!(result(&offer), "ok", "{}", reason(&offer));
    let to_b = media_port(offer.get("sdp").and_then(Value::as_bytes).unwrap());
    let answer = cmd(r, &sdp_command("answer", call, "tag-a", Some("tag-b"), &sdp_for(b.local_addr().unwrap().port())));
    assert_eq!(result(&answer), "ok", "{}", reason(&answer));
    let to_a = media_port(answer.get("sdp").and_then(Value::as_bytes).unwrap());
    (to_a, to_b)
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

/// Up to `n` datagrams, each within 2 s.
fn recv_n(sock: &UdpSocket, n: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    testkit::udp::recv_n(sock, n, Duration::from_secs(2))
}

fn stream_stats(q: &Value, tag: &str, idx: usize) -> Value {
    q.get("tags")
        .and_then(|t| t.get(tag))
        .and_then(|t| t.get("medias"))
        .and_then(|m| m.as_list()?.first().cloned())
        .and_then(|m| m.get("streams").and_then(|s| s.as_list()?.get(idx).cloned()))
        .unwrap_or_else(|| panic!("no stream {idx} for tag {tag} in {q:?}"))
}

fn stat(v: &Value, key: &str) -> i64 {
    v.get("stats").and_then(|s| s.get(key)).and_then(Value::as_int).unwrap_or(-999)
}

/// Sum over workers of the series `name{k="v",...}` (labels may be a subset).
fn metric(r: &Relay, spec: &str) -> f64 {
    testkit::metrics::metric_spec(r.metrics, spec)
}

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    assert!(testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), f), "timed out waiting for {what}");
}

#[test]
fn offer_answer_and_rtp_both_ways_with_stats() {
    let r = start_relay(&[]);
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (to_a, to_b) = setup_call(&r, "call-both", &a, &b);
    assert!(to_a >= r.ports.0 && to_a <= r.ports.1 && to_a % 2 == 0, "even port in range: {to_a}");
    assert_ne!(to_a, to_b);
    for seq in 0..20u16 {
        a.send_to(&rtp(seq), ("127.0.0.1", to_a)).unwrap();
    }
    let got = recv_n(&b, 20);
    assert_eq!(got.len(), 20, "B receives all of A's packets");
    assert_eq!(got[0].1.port(), to_b, "B sees the relay's B-side port as source (symmetric RTP)");
    assert_eq!(got[5].0, rtp(5), "payload unchanged");
    // Skip seq 25 to create one loss, send 30 in all.
    for seq in (20..31u16).filter(|s| *s != 25) {
        b.send_to(&rtp(seq), ("127.0.0.1", to_b)).unwrap();
    }
    let back = recv_n(&a, 10);
    assert_eq!(back.len(), 10);
    assert_eq!(back[0].1.port(), to_a);

    let q = cmd(&r, &dict(&[("command", s("query")), ("call-id", s("call-both"))]));
    assert_eq!(result(&q), "ok");
    let from_a = stream_stats(&q, "tag-a", 0);
    let from_b = stream_stats(&q, "tag-b", 0);
    assert_eq!(stat(&from_a, "packets"), 20);
    assert_eq!(stat(&from_a, "lost"), 0);
    assert_eq!(stat(&from_b, "packets"), 10);
    assert_eq!(stat(&from_b, "expected"), 11);
    assert_eq!(stat(&from_b, "lost"), 1, "one gap in B's sequence numbers");
    assert_eq!(from_a.get("local port").and_then(Value::as_int), Some(i64::from(to_a)));
    assert!(metric(&r, "media_relay_packets_relayed_total") >= 30.0);
    if crate::DATAPATH == "xdp" {
        // Steered by the XDP program, and sent from the AF_XDP TX ring.
        assert!(metric(&r, "media_relay_xdp_packets_total{verdict=\"redirected_media\"}") >= 30.0);
        assert_eq!(metric(&r, "media_relay_xdp_kernel_path_total"), 0.0);
    }
}

#[test]
fn latching_and_foreign_source_drops() {
    let r = start_relay(&[]);
    let a_sdp = UdpSocket::bind("127.0.0.1:0").unwrap(); // what A's SDP says
    let a_nat = UdpSocket::bind("127.0.0.1:0").unwrap(); // where A really sends from (NAT)
    let intruder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (to_a, to_b) = setup_call(&r, "call-latch", &a_sdp, &b);
    a_nat.send_to(&rtp(1), ("127.0.0.1", to_a)).unwrap();
    assert_eq!(recv_n(&b, 1).len(), 1, "first packet latches and is relayed");
    // B's media now goes to the latched NAT address, not the SDP one.
    b.send_to(&rtp(1), ("127.0.0.1", to_b)).unwrap();
    let got = recv_n(&a_nat, 1);
    assert_eq!(got.len(), 1, "return media reaches the latched source");
    a_sdp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(a_sdp.recv_from(&mut [0u8; 64]).is_err(), "nothing goes to the stale SDP address");
    // Another source sending to A's port is dropped and counted.
    for seq in 0..5u16 {
        intruder.send_to(&rtp(seq), ("127.0.0.1", to_a)).unwrap();
    }
    b.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(b.recv_from(&mut [0u8; 2048]).is_err(), "foreign packets are not relayed");
    wait_until("foreign drops counted", || metric(&r, "media_relay_drops_total{reason=\"foreign_source\"}") >= 5.0);
    let q = cmd(&r, &dict(&[("command", s("query")), ("call-id", s("call-latch"))]));
    let from_a = stream_stats(&q, "tag-a", 0);
    assert_eq!(stat(&from_a, "errors"), 5);
    let ep = from_a.get("endpoint").and_then(|e| e.get("port")).and_then(Value::as_int);
    assert_eq!(ep, Some(i64::from(a_nat.local_addr().unwrap().port())), "query shows the latched endpoint");
}

/// A socket on a free port and another on the port above it.
fn rtp_rtcp_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..100 {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let Some(next) = rtp.local_addr().unwrap().port().checked_add(1) else { continue };
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", next)) {
            return (rtp, rtcp);
        }
    }
    panic!("no two adjacent free UDP ports on 127.0.0.1 in 100 tries");
}

#[test]
fn rtcp_on_its_own_port() {
    let r = start_relay(&[]);
    // RTCP endpoints at port+1 of the SDP ports, as RFC 3550 implies.
    let (a, a_rtcp) = rtp_rtcp_pair();
    let (b, b_rtcp) = rtp_rtcp_pair();
    let (to_a, to_b) = setup_call(&r, "call-rtcp", &a, &b);
    let rr = [0x81u8, 201, 0, 7, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    a_rtcp.send_to(&rr, ("127.0.0.1", to_a + 1)).unwrap();
    let got = recv_n(&b_rtcp, 1);
    assert_eq!(got.len(), 1, "RTCP relayed to B's RTCP port");
    assert_eq!(got[0].1.port(), to_b + 1, "from the relay's RTCP port");
    assert_eq!(got[0].0, rr);
}

#[test]
fn delete_frees_ports_and_reply_cache() {
    let r = start_relay(&[]);
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (to_a, to_b) = setup_call(&r, "call-del", &a, &b);
    assert_eq!(metric(&r, "media_relay_ports_in_use"), 4.0);

    // A retransmitted delete (same cookie) gets the same reply, executed once.
    let msg = {
        let mut m = b"retx-cookie-1 ".to_vec();
        dict(&[("command", s("delete")), ("call-id", s("call-del")), ("from-tag", s("tag-a"))]).encode(&mut m);
        m
    };
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let first = raw_from(&client, &r, &msg, Duration::from_secs(3)).unwrap();
    let second = raw_from(&client, &r, &msg, Duration::from_secs(3)).unwrap();
    assert_eq!(first, second, "cached reply is byte-identical");
    let v = decode(first.strip_prefix(b"retx-cookie-1 ").unwrap()).unwrap();
    assert_eq!(result(&v), "ok", "{}", reason(&v));
    assert_eq!(metric(&r, "media_relay_ng_cache_hits_total"), 1.0);
    assert_eq!(metric(&r, "media_relay_ng_commands_total{command=\"delete\"}"), 1.0, "executed once");

    wait_until("ports freed", || metric(&r, "media_relay_ports_in_use") == 0.0);
    // The sockets are closed: we can bind the relay's ports ourselves.
    for p in [to_a, to_a + 1, to_b, to_b + 1] {
        UdpSocket::bind(("127.0.0.1", p)).unwrap_or_else(|e| panic!("port {p} still held: {e}"));
    }
    let q = cmd(&r, &dict(&[("command", s("query")), ("call-id", s("call-del"))]));
    assert_eq!(result(&q), "error");
    let l = cmd(&r, &dict(&[("command", s("list"))]));
    assert_eq!(l.get("calls").and_then(Value::as_list).map(<[Value]>::len), Some(0));
}

#[test]
fn media_timeout_deletes_silent_calls() {
    let r = start_relay(&["--timeout=2"]);
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (to_a, _) = setup_call(&r, "call-silent", &a, &b);
    // Media flows for a moment, then stops.
    for seq in 0..3u16 {
        a.send_to(&rtp(seq), ("127.0.0.1", to_a)).unwrap();
    }
    assert_eq!(recv_n(&b, 3).len(), 3);
    assert_eq!(metric(&r, "media_relay_sessions_active"), 1.0);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(metric(&r, "media_relay_sessions_active"), 1.0, "not deleted before the timeout");
    wait_until("timeout deletes the call", || {
        metric(&r, "media_relay_sessions_deleted_total{reason=\"timeout\"}") == 1.0
    });
    wait_until("ports freed after timeout", || metric(&r, "media_relay_ports_in_use") == 0.0);
    assert_eq!(metric(&r, "media_relay_sessions_active"), 0.0);
    assert_eq!(metric(&r, "media_relay_sessions_ended_total{media=\"oneway\"}"), 1.0);
}

#[test]
fn malformed_inputs_get_errors_or_counted_drops() {
    let r = start_relay(&[]);
    let bad = |body: &[u8]| -> Value {
        let mut m = format!("{} ", cookie()).into_bytes();
        m.extend_from_slice(body);
        let reply = raw(&r, &m, Duration::from_secs(3)).expect("a reply");
        let (_, b) = reply.split_at(reply.iter().position(|&c| c == b' ').unwrap() + 1);
        decode(b).unwrap()
    };
    let v = bad(b"d7:command4:pin");
    assert_eq!(result(&v), "error");
    assert!(reason(&v).to_lowercase().contains("bencode"), "{}", reason(&v));
    let v = bad(b"i42e");
    assert_eq!(result(&v), "error");
    let v = bad(b"d7:command5:jumpse");
    assert_eq!((result(&v), reason(&v).as_str()), ("error", "Unrecognized command"));
    let v = bad(b"d7:command5:offer7:call-id1:x8:from-tag1:ae");
    assert_eq!((result(&v), reason(&v).as_str()), ("error", "Missing key `sdp`"));
    let v = bad(b"d7:command6:answer7:call-id7:nothere8:from-tag1:a6:to-tag1:b3:sdp3:v=0e");
    assert_eq!((result(&v), reason(&v).as_str()), ("error", "Unknown call-id"));
    let v = bad(b"d7:command6:delete7:call-id7:nothere8:from-tag1:ae");
    assert_eq!((result(&v), reason(&v).as_str()), ("error", "Unknown call-id"));
    let v = bad(b"d7:command5:offer7:call-id1:y8:from-tag1:a3:sdp9:not a sdpe");
    assert_eq!(result(&v), "error");
    assert!(reason(&v).contains("SDP"), "{}", reason(&v));
    // Nothing leaked from the failed offer.
    assert_eq!(metric(&r, "media_relay_ports_in_use"), 0.0);
    assert_eq!(metric(&r, "media_relay_sessions_active"), 0.0);
    // No cookie at all: no reply, counted.
    assert!(raw(&r, b"nocookiehere", Duration::from_millis(300)).is_none());
    assert!(raw(&r, b"", Duration::from_millis(300)).is_none());
    wait_until("dropped datagrams counted", || metric(&r, "media_relay_ng_dropped_total") == 2.0);
    // Still alive and answering.
    assert_eq!(result(&cmd(&r, &dict(&[("command", s("ping"))]))), "pong");
}

#[test]
fn exhausted_port_range_is_an_error_reply() {
    // 30 ports: 15 RTP/RTCP pairs; each call takes 2 (one per leg).
    let r = start_relay(&[]);
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ok = 0;
    let mut last = Value::dict();
    for i in 0..20 {
        last = cmd(
            &r,
            &sdp_command("offer", &format!("exhaust-{i}"), "x", None, &sdp_for(a.local_addr().unwrap().port())),
        );
        if result(&last) != "ok" {
            break;
        }
        ok += 1;
    }
    assert!(ok >= 3, "some calls fit ({ok})");
    assert_eq!((result(&last), reason(&last).as_str()), ("error", "Ran out of ports"));
    // Deleting one call makes room again.
    let d = cmd(&r, &dict(&[("command", s("delete")), ("call-id", s("exhaust-0"))]));
    assert_eq!(result(&d), "ok");
    wait_until("room again", || {
        let v = cmd(&r, &sdp_command("offer", "exhaust-again", "x", None, &sdp_for(a.local_addr().unwrap().port())));
        result(&v) == "ok"
    });
}

#[test]
fn reinvite_keeps_ports_and_statistics_command() {
    let r = start_relay(&[]);
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (to_a, to_b) = setup_call(&r, "call-re", &a, &b);
    // Re-offer from B (hold), answered by A: same ports on both sides.
    let reoffer = cmd(
        &r,
        &sdp_command(
            "offer",
            "call-re",
            "tag-b",
            Some("tag-a"),
            &sdp_for(b.local_addr().unwrap().port()).replace("sendrecv", "sendonly"),
        ),
    );
    assert_eq!(result(&reoffer), "ok", "{}", reason(&reoffer));
    assert_eq!(media_port(reoffer.get("sdp").and_then(Value::as_bytes).unwrap()), to_a);
    let reanswer = cmd(
        &r,
        &sdp_command(
            "answer",
            "call-re",
            "tag-b",
            Some("tag-a"),
            &sdp_for(a.local_addr().unwrap().port()).replace("sendrecv", "recvonly"),
        ),
    );
    assert_eq!(result(&reanswer), "ok", "{}", reason(&reanswer));
    assert_eq!(media_port(reanswer.get("sdp").and_then(Value::as_bytes).unwrap()), to_b);
    assert_eq!(metric(&r, "media_relay_ports_in_use"), 4.0, "no new ports for a re-INVITE");
    let st = cmd(&r, &dict(&[("command", s("statistics"))]));
    let cur = st.get("statistics").and_then(|s| s.get("currentstatistics")).unwrap();
    assert_eq!(cur.get("sessionsown").and_then(Value::as_int), Some(1));
}

#[test]
fn rtcp_mux_flows_on_the_rtp_ports() {
    let r = start_relay(&[]);
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mux = |p: u16| sdp_for(p) + &format!("a=rtcp:{p}\r\na=rtcp-mux\r\n");
    let offer = cmd(&r, &sdp_command("offer", "call-mux", "tag-a", None, &mux(a.local_addr().unwrap().port())));
    let offer_sdp = String::from_utf8(offer.get("sdp").and_then(Value::as_bytes).unwrap().to_vec()).unwrap();
    let to_b = media_port(offer_sdp.as_bytes());
    assert!(offer_sdp.contains(&format!("a=rtcp:{to_b}\r\n")), "a=rtcp names the RTP port under mux:\n{offer_sdp}");
    assert!(offer_sdp.contains("a=rtcp-mux\r\n"));
    let answer =
        cmd(&r, &sdp_command("answer", "call-mux", "tag-a", Some("tag-b"), &mux(b.local_addr().unwrap().port())));
    let to_a = media_port(answer.get("sdp").and_then(Value::as_bytes).unwrap());
    // RTP and an RTCP receiver report, both on the RTP port.
    let rr = [0x80u8, 201, 0, 1, 9, 9, 9, 9];
    a.send_to(&rtp(1), ("127.0.0.1", to_a)).unwrap();
    a.send_to(&rr, ("127.0.0.1", to_a)).unwrap();
    let got = recv_n(&b, 2);
    assert_eq!(got.len(), 2);
    assert!(got.iter().any(|(p, _)| p[..] == rr[..]), "muxed RTCP relayed on the RTP path");
    let q = cmd(&r, &dict(&[("command", s("query")), ("call-id", s("call-mux"))]));
    let from_a = stream_stats(&q, "tag-a", 0);
    assert_eq!(stat(&from_a, "packets"), 2);
    assert_eq!(stat(&from_a, "rtp-packets"), 1, "the RTCP packet is not counted as RTP");
}

#[test]
fn ipv6_relay() {
    if UdpSocket::bind("[::1]:0").is_err() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI machines must have IPv6 loopback");
        eprintln!("SKIPPED: no IPv6 loopback on this machine");
        return;
    }
    let r = start_relay(&["--interface=::1"]);
    let a = UdpSocket::bind("[::1]:0").unwrap();
    let b = UdpSocket::bind("[::1]:0").unwrap();
    let sdp6 =
        |p: u16| format!("v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio {p} RTP/AVP 8\r\n");
    let offer = cmd(&r, &sdp_command("offer", "call-v6", "a", None, &sdp6(a.local_addr().unwrap().port())));
    assert_eq!(result(&offer), "ok", "{}", reason(&offer));
    let osdp = offer.get("sdp").and_then(Value::as_bytes).unwrap();
    assert!(String::from_utf8_lossy(osdp).contains("c=IN IP6 ::1\r\n"));
    let to_b = media_port(osdp);
    let answer = cmd(&r, &sdp_command("answer", "call-v6", "a", Some("b"), &sdp6(b.local_addr().unwrap().port())));
    let to_a = media_port(answer.get("sdp").and_then(Value::as_bytes).unwrap());
    a.send_to(&rtp(7), ("::1", to_a)).unwrap();
    assert_eq!(recv_n(&b, 1).len(), 1);
    b.send_to(&rtp(8), ("::1", to_b)).unwrap();
    let back = recv_n(&a, 1);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].1, SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, to_a)));
}

/// A stream whose socket queue overflows is still served: the drops are
/// counted, and as soon as the flood stops its packets flow again. Another
/// call on the same relay keeps working throughout.
#[test]
fn overflowing_stream_is_counted_and_recovers() {
    if crate::DATAPATH == "xdp" {
        // The receive-queue overflow counter (SO_RXQ_OVFL) is the socket
        // datapath's; AF_XDP drops show in media_relay_xsk_kernel_drops_total.
        eprintln!("not applicable on the AF_XDP datapath: socket receive-queue overflow");
        return;
    }
    let (ng, metrics, pmin, pmax) = port_block();
    let cfg = format!(
        "[relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"127.0.0.1:{ng}\"\nport_min = {pmin}\nport_max = {pmax}\n\
         workers = 1\ntimeout = 60\nmetrics = \"127.0.0.1:{metrics}\"\nsocket_rcvbuf = 4096\nlog_level = \"warn\"\n"
    );
    let path = std::env::temp_dir().join(format!("mr-overflow-{}.toml", std::process::id()));
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_media-relay"))
        .arg(format!("--config={}", path.display()))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let r = Relay {
        child,
        ng: SocketAddr::from(([127, 0, 0, 1], ng)),
        metrics: SocketAddr::from(([127, 0, 0, 1], metrics)),
        ports: (pmin, pmax),
        _netns: None,
    };
    assert!(testkit::ng::wait_for_udp_ng(r.ng, Duration::from_secs(10)), "relay up");
    let (a1, b1) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
    let (a2, b2) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
    let (to_a1, _) = setup_call(&r, "flooded", &a1, &b1);
    let (to_a2, _) = setup_call(&r, "quiet", &a2, &b2);
    b1.set_nonblocking(true).unwrap();
    // Flood call 1 far beyond what a 4 KiB receive buffer holds.
    let mut drained = 0usize;
    let mut buf = [0u8; 2048];
    for round in 0..200u16 {
        for k in 0..100u16 {
            let _ = a1.send_to(&rtp(round.wrapping_mul(100).wrapping_add(k)), ("127.0.0.1", to_a1));
        }
        while b1.recv_from(&mut buf).is_ok() {
            drained += 1;
        }
    }
    wait_until("overflow drops counted", || metric(&r, "media_relay_drops_total{reason=\"rx_queue_overflow\"}") > 0.0);
    // Drain what is still in flight, then the flooded stream must work again.
    std::thread::sleep(Duration::from_millis(300));
    while b1.recv_from(&mut buf).is_ok() {
        drained += 1;
    }
    assert!(drained > 0, "some of the flood was relayed");
    b1.set_nonblocking(false).unwrap();
    for seq in 0..10u16 {
        a1.send_to(&rtp(60000 + seq), ("127.0.0.1", to_a1)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(recv_n(&b1, 10).len(), 10, "the flooded stream is served again after the flood");
    for seq in 0..10u16 {
        a2.send_to(&rtp(seq), ("127.0.0.1", to_a2)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(recv_n(&b2, 10).len(), 10, "the other call is unaffected");
    let _ = std::fs::remove_file(&path);
}

/// `--scheduling=fifo --priority=7` (rtpengine's options): the media
/// workers run `SCHED_FIFO` at priority 7, the other threads keep the
/// default policy. Without root the relay says so and keeps running.
#[test]
fn workers_take_the_real_time_policy() {
    let r = start_relay(&["--scheduling=fifo", "--priority=7"]);
    let pid = r.child.id();
    let mut workers = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().filter_map(Result::ok) {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command: 40 is rt_priority, 41 the policy (1 = FIFO).
        let f: Vec<&str> = stat.rsplit_once(')').map_or("", |x| x.1).split_whitespace().collect();
        let (prio, policy) = (f.get(37).copied().unwrap_or("?"), f.get(38).copied().unwrap_or("?"));
        if comm.starts_with("mr-worker") || comm.starts_with("mr-xdp") {
            workers += 1;
            if in_ci() || is_root() {
                assert_eq!((policy, prio), ("1", "7"), "{} runs SCHED_FIFO at 7", comm.trim());
            }
        } else {
            assert_eq!(policy, "0", "{} keeps SCHED_OTHER", comm.trim());
        }
    }
    // The AF_XDP datapath runs one worker per queue of the loopback: one.
    let expected = if crate::DATAPATH == "xdp" { 1 } else { 2 };
    assert_eq!(workers, expected, "every worker found");
    let q = cmd(&r, &dict(&[("command", s("ping"))]));
    assert_eq!(result(&q), "pong");
    // The real-time workers relay: a slow stream, which lets an AF_XDP
    // worker fall asleep between packets (a missed wakeup would still be
    // covered by its 20 ms sleep limit, so this checks relaying, not the
    // wakeup itself).
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (to_a, _) = setup_call(&r, "call-rt", &a, &b);
    for seq in 0..10u16 {
        a.send_to(&rtp(seq), ("127.0.0.1", to_a)).unwrap();
        assert_eq!(recv_n(&b, 1).len(), 1, "packet {seq} relayed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The CPU wakeup latency limit the kernel applies now (`None`: unreadable,
/// which needs root).
fn cpu_latency_now() -> Option<i32> {
    let b = std::fs::read("/dev/cpu_dma_latency").ok()?;
    Some(i32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// `--cpu-latency-us` (`relay.cpu_latency_us`): the kernel's limit is the
/// relay's while it runs, and goes back when the process dies, even when
/// it is killed.
#[test]
fn cpu_latency_limit_is_held_while_the_relay_runs() {
    let Some(before) = cpu_latency_now() else {
        assert!(!in_ci(), "CI=true: /dev/cpu_dma_latency must be readable (run as root)");
        eprintln!("skipping: /dev/cpu_dma_latency is not readable (needs root)");
        return;
    };
    let want = 3;
    if before <= want {
        assert!(!in_ci(), "another process holds a CPU latency limit of {before} us; cannot observe ours");
        eprintln!("skipping: another process holds a CPU latency limit of {before} us");
        return;
    }
    let r = start_relay(&["--cpu-latency-us=3"]);
    wait_until("the relay holds the limit", || cpu_latency_now() == Some(want));
    let q = cmd(&r, &dict(&[("command", s("ping"))]));
    assert_eq!(result(&q), "pong");
    drop(r);
    wait_until("the limit is released with the killed relay", || cpu_latency_now() == Some(before));
}
