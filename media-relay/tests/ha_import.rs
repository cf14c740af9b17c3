//! A session exported by one relay and imported by another (what an HA
//! standby does on takeover) is relayed on the same ports, keeps its latched
//! sources (a foreign source is still refused) and continues its counters.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use media_relay::config::RelayConfig;
use media_relay::control::{MediaControl, SdpOptions, SdpRequest};
use media_relay::relay::Relay;

fn relay(pmin: u16) -> Arc<Relay> {
    let mut cfg = RelayConfig::embedded_default();
    cfg.port_min = pmin;
    cfg.port_max = pmin + 19;
    cfg.workers = 1;
    cfg.listen_ng = None;
    cfg.metrics = None;
    Relay::start(cfg).unwrap()
}

fn sdp(port: u16) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
}

fn media_port(sdp: &[u8]) -> u16 {
    let text = std::str::from_utf8(sdp).unwrap();
    let m = text.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    m.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn rtp(seq: u16) -> [u8; 172] {
    let mut p = [0u8; 172];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&7u32.to_be_bytes());
    p
}

fn relayed(from: &UdpSocket, to_port: u16, rx: &UdpSocket, seq: u16) -> bool {
    from.send_to(&rtp(seq), ("127.0.0.1", to_port)).unwrap();
    let mut buf = [0u8; 256];
    rx.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    matches!(rx.recv_from(&mut buf), Ok((172, _)))
}

fn drain(s: &UdpSocket) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 256];
    while s.recv_from(&mut buf).is_ok() {}
}

#[test]
fn exported_session_resumes_on_another_relay() {
    let base = 47000 + (std::process::id() % 50) as u16 * 40;
    let a = relay(base);
    a.track_changes();
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (cp, ep) = (caller.local_addr().unwrap().port(), callee.local_addr().unwrap().port());
    let opts = SdpOptions::default;
    let offer = a
        .offer(&SdpRequest { call_id: "c1", from_tag: "ft", to_tag: None, sdp: sdp(cp).as_bytes(), opts: opts() })
        .unwrap();
    let answer = a
        .answer(&SdpRequest {
            call_id: "c1",
            from_tag: "ft",
            to_tag: Some("tt"),
            sdp: sdp(ep).as_bytes(),
            opts: opts(),
        })
        .unwrap();
    // The caller sends to the port in the answer, the callee to the offer's.
    let (to_b_port, to_a_port) = (media_port(&answer), media_port(&offer));
    for seq in 0..5 {
        assert!(relayed(&caller, to_b_port, &callee, seq), "caller -> callee on relay A");
        assert!(relayed(&callee, to_a_port, &caller, seq), "callee -> caller on relay A");
    }
    // Latched: the stranger's packets are dropped.
    assert!(!relayed(&stranger, to_b_port, &callee, 99));
    std::thread::sleep(Duration::from_millis(50));
    let changes = a.export_changes();
    let rec = changes.iter().find(|(id, _)| id == "c1").and_then(|(_, r)| r.clone()).expect("c1 was exported");
    let m = &rec.medias[0];
    assert_eq!(m.latched[0].map(|s: SocketAddr| s.port()), Some(cp), "leg A latched to the caller");
    assert_eq!(m.latched[2].map(|s: SocketAddr| s.port()), Some(ep), "leg B latched to the callee");
    assert!(m.streams[0].packets >= 5);
    // Node A dies; node B installs the session on the same ports.
    a.shutdown();
    drop(a);
    let b = relay(base);
    assert!(b.import(&rec).unwrap());
    assert!(!b.import(&rec).unwrap(), "a second import is a no-op");
    drain(&caller);
    drain(&callee);
    // The stranger speaks first: without the restored latch, the new relay
    // would latch onto it (nat = true).
    assert!(!relayed(&stranger, to_b_port, &callee, 100), "the latch survived the import");
    for seq in 5..10 {
        assert!(relayed(&caller, to_b_port, &callee, seq), "caller -> callee on relay B");
        assert!(relayed(&callee, to_a_port, &caller, seq), "callee -> caller on relay B");
    }
    std::thread::sleep(Duration::from_millis(50));
    let q = b.query("c1").unwrap();
    let from_caller = &q.legs[0].medias[0].streams[0].stats;
    assert!(from_caller.stats.packets >= 10, "counters continue: {from_caller:?}");
    assert_eq!(from_caller.stats.lost, 0);
    // Ending it frees the ports.
    b.delete("c1", None).unwrap();
    assert!(a_wait(|| b.totals().port_pairs_in_use == 0));
    b.shutdown();
}

fn a_wait(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..50 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
