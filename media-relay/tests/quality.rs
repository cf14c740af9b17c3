//! Call quality end to end through a relay on loopback, on the socket
//! datapath and (as root, in a namespace of its own) on `AF_XDP`: a
//! generator sends RTP with a chosen loss and jitter and RTCP SR/RR with a
//! chosen hold time, and the relay's per-direction MOS, loss, jitter and
//! round trip come out as the E-model says; media from one side only is
//! flagged as one-way audio, and a call on hold or in early media is not.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_relay::config::RelayConfig;
use media_relay::control::{MediaControl, QualityEvent, QualityReport, SdpOptions, SdpRequest};
use media_relay::quality;
use media_relay::relay::Relay;

const S: u64 = 1_000_000_000;

fn relay(pmin: u16, one_way_after_s: u64) -> Arc<Relay> {
    relay_on(pmin, one_way_after_s, false)
}

/// A relay on sockets, or (`xdp`) on `AF_XDP` on the loopback of the
/// namespace the calling thread is in.
fn relay_on(pmin: u16, one_way_after_s: u64, xdp: bool) -> Arc<Relay> {
    let mut cfg = RelayConfig::embedded_default();
    if xdp {
        cfg.datapath = media_relay::config::DatapathMode::Xdp;
        (cfg.xdp_interfaces, cfg.xdp_queues, cfg.xdp_full_checksum) = (vec!["lo".into()], 1, true);
    }
    cfg.port_min = pmin;
    cfg.port_max = pmin + 19;
    cfg.workers = 1;
    cfg.listen_ng = None;
    cfg.metrics = None;
    cfg.one_way_after = Duration::from_secs(one_way_after_s);
    // The scoring test runs passes on a clock far ahead of the real one:
    // the media timeout must not end its call.
    cfg.timeout = Duration::from_secs(1_000_000);
    Relay::start(cfg).unwrap()
}

fn base_port(k: u16) -> u16 {
    43000 + (std::process::id() % 50) as u16 * 80 + k * 20
}

fn sdp(port: u16, dir: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n{dir}"
    )
}

fn media_port(sdp: &[u8]) -> u16 {
    let text = std::str::from_utf8(sdp).unwrap();
    let m = text.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    m.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A call between sockets `a` (offerer, tag "ta") and `b` (tag "tb");
/// returns the relay ports each side sends to.
fn call(r: &Relay, id: &str, a: &UdpSocket, b: &UdpSocket, b_dir: &str) -> (u16, u16) {
    let pa = a.local_addr().unwrap().port();
    let pb = b.local_addr().unwrap().port();
    let offer = sdp(pa, "");
    let req =
        SdpRequest { call_id: id, from_tag: "ta", to_tag: None, sdp: offer.as_bytes(), opts: SdpOptions::default() };
    let to_b = r.offer(&req).unwrap();
    let answer = sdp(pb, b_dir);
    let req = SdpRequest {
        call_id: id,
        from_tag: "ta",
        to_tag: Some("tb"),
        sdp: answer.as_bytes(),
        opts: SdpOptions::default(),
    };
    let to_a = r.answer(&req).unwrap();
    (media_port(&to_b), media_port(&to_a))
}

fn rtp(seq: u16, ts: u32, ssrc: u32) -> [u8; 172] {
    let mut p = [0u8; 172];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

/// An SR with NTP timestamp `ntp` and no report block.
fn sr(ntp: u64) -> Vec<u8> {
    let mut v = vec![0x80, 200, 0, 6, 0, 0, 0, 1];
    v.extend_from_slice(&ntp.to_be_bytes());
    v.extend_from_slice(&[0; 12]);
    v
}

/// An RR with one block: `fraction` lost, `jitter` (ts units), LSR, DLSR.
fn rr(fraction: u8, jitter: u32, lsr: u32, dlsr: u32) -> Vec<u8> {
    let mut v = vec![0x81, 201, 0, 7, 0, 0, 0, 2, 0, 0, 0, 1, fraction, 0, 0, 0, 0, 0, 0, 0];
    v.extend_from_slice(&jitter.to_be_bytes());
    v.extend_from_slice(&lsr.to_be_bytes());
    v.extend_from_slice(&dlsr.to_be_bytes());
    v
}

/// Sends `n` RTP packets from `from` to the relay port in a burst, leaving
/// out one in every `drop_every` (0: none). The burst arrives within
/// microseconds, so the timestamps make the jitter: they alternate between
/// 0 and `2 * jitter_ts`, and the relay's RFC 3550 jitter converges on
/// `2 * jitter_ts` units (a little less where a loss skips an alternation).
fn send_rtp(from: &UdpSocket, port: u16, first_seq: u16, n: u16, drop_every: u16, jitter_ts: u32, ssrc: u32) {
    for i in 0..n {
        let seq = first_seq.wrapping_add(i);
        if drop_every > 0 && i % drop_every == drop_every / 2 {
            continue;
        }
        let ts = if i % 2 == 0 { 0 } else { 2 * jitter_ts };
        from.send_to(&rtp(seq, ts, ssrc), ("127.0.0.1", port)).unwrap();
        if i % 8 == 7 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Waits until the relay has counted `want` RTP packets from leg `leg`.
fn wait_counted(r: &Relay, id: &str, leg: usize, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = r.query(id).unwrap().legs[leg].medias[0].streams[0].stats.stats.rtp_packets;
        if got >= want {
            return;
        }
        assert!(Instant::now() < deadline, "relay counted {got} of {want} packets from leg {leg}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn q(r: &Relay, id: &str, leg: usize) -> QualityReport {
    r.query(id).unwrap().legs[leg].medias[0].quality
}

#[test]
fn loss_jitter_and_round_trip_move_mos_as_the_e_model_says() {
    mos_case(&relay(base_port(0), 0));
}

/// The same on the `AF_XDP` datapath, in a namespace with XDP on its
/// loopback (generic mode).
#[test]
fn loss_jitter_and_round_trip_move_mos_on_af_xdp() {
    if !testkit::env::require_root_and("loss_jitter_and_round_trip_move_mos_on_af_xdp", &["ip"]) {
        return;
    }
    let ns = testkit::Netns::with_lo("mrq").unwrap();
    // Frames sent from an AF_XDP socket on lo are routed as if from a wire.
    for key in ["route_localnet", "accept_local"] {
        for dev in ["all", "lo"] {
            ns.sysctl(&format!("net.ipv4.conf.{dev}.{key}=1")).unwrap();
        }
    }
    ns.enter();
    let r = relay_on(base_port(2), 0, true);
    assert_eq!(r.datapath().name(), "xdp");
    mos_case(&r);
}

fn mos_case(r: &Relay) {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (to_b_port, to_a_port) = call(r, "q1", &a, &b, "");
    // Leg A's relay port is the one B's SDP was rewritten to, and back.
    let (a_sends_to, b_sends_to) = (to_a_port, to_b_port);

    // Test-chosen clock for the scoring passes, far past the real one, so
    // the housekeeping thread's own passes never end an interval.
    let t0 = media_relay::os::monotonic_ns() + 10_000 * S;
    r.housekeep(t0);

    // RTT: A's SR passes the relay; B holds it 100 ms (DLSR 6554) and
    // answers ~150 ms after the relay saw it: relay<->B about 50 ms.
    let ntp: u64 = 0x0000_1234_5678_0000;
    a.send_to(&sr(ntp), ("127.0.0.1", a_sends_to)).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    b.send_to(&rr(0, 0, (ntp >> 16) as u32, 6554), ("127.0.0.1", b_sends_to)).unwrap();

    // A -> B: 5 % loss (every 20th of 400), jitter 10 ms (80 units each way).
    send_rtp(&a, a_sends_to, 1000, 400, 20, 80, 0xa);
    // B -> A: clean.
    send_rtp(&b, b_sends_to, 5000, 400, 0, 0, 0xb);
    wait_counted(r, "q1", 0, 380);
    wait_counted(r, "q1", 1, 400);
    r.housekeep(t0 + 5 * S);

    let ab = q(r, "q1", 0);
    let ba = q(r, "q1", 1);
    assert_eq!((ab.intervals, ba.intervals), (1, 1), "{ab:?} {ba:?}");
    let rtt = ab.rtt_ms.expect("a round trip from the SR/RR pair");
    assert!((45.0..250.0).contains(&rtt), "relay<->B round trip {rtt} ms, want about 50");
    assert_eq!(ba.rtt_ms, ab.rtt_ms, "both directions cross the same two legs");
    // Loss as sent; jitter converged to about 160 units = 20 ms.
    assert!((ab.loss_pct - 5.0).abs() < 0.01, "{ab:?}");
    assert!((ab.jitter_ms - 20.0).abs() < 2.0, "{ab:?}");
    assert!(ba.loss_pct < 0.01 && ba.jitter_ms < 2.0, "{ba:?}");

    // The E-model with the measured inputs: G.711 (PLC), BurstR 1.
    let expect = |loss: f64, jitter: f64| {
        let d = quality::one_way_delay(rtt, jitter, 20.0);
        quality::mos(quality::r_factor(&quality::G711, loss, 1.0, d))
    };
    // Tolerance 0.02 MOS: the inputs above are read back from the same
    // report, so only rounding between scoring and reading remains.
    assert!((ab.mos - expect(5.0, ab.jitter_ms)).abs() < 0.02, "{ab:?} want {}", expect(5.0, ab.jitter_ms));
    assert!((ba.mos - expect(0.0, ba.jitter_ms)).abs() < 0.02, "{ba:?} want {}", expect(0.0, ba.jitter_ms));
    // And in absolute terms: 5 % loss costs G.711 about half a point
    // (R 93.2 -> ~75, MOS ~3.8); the clean side stays near 4.4.
    assert!((3.6..3.95).contains(&ab.mos), "{ab:?}");
    assert!((4.3..4.42).contains(&ba.mos), "{ba:?}");
    assert_eq!((ab.mos_min, ab.mos_mean), (ab.mos, ab.mos));

    // Second interval: A -> B gets worse (10 % loss); B reports 25 % loss
    // in its RR, which the model takes as the larger figure.
    b.send_to(&rr(64, 0, 0, 0), ("127.0.0.1", b_sends_to)).unwrap();
    send_rtp(&a, a_sends_to, 1400, 400, 10, 80, 0xa);
    wait_counted(r, "q1", 0, 380 + 360);
    std::thread::sleep(Duration::from_millis(50));
    r.housekeep(t0 + 10 * S);
    let ab2 = q(r, "q1", 0);
    eprintln!("A->B {ab:?}\nB->A {ba:?}\nA->B second interval {ab2:?}");
    assert_eq!(ab2.intervals, 2);
    assert!((ab2.mos - expect(25.0, ab2.jitter_ms)).abs() < 0.02, "{ab2:?} want {}", expect(25.0, ab2.jitter_ms));
    assert!(ab2.mos < ab.mos);
    assert_eq!(ab2.mos_min, ab2.mos);
    assert!((ab2.mos_mean - f64::midpoint(ab.mos, ab2.mos)).abs() < 1e-9);
    assert!(ab2.jitter_max_ms >= ab.jitter_ms - 0.01, "{ab:?} {ab2:?}");
    // B -> A had no packets this interval: not scored.
    assert_eq!(q(r, "q1", 1).intervals, 1);
    // Third interval: 12.5 % loss in bursts (5 in a row of every 40), the
    // receiver's report back to 0: BurstR = 1 / (10/350 + 10/50) = 4.375.
    b.send_to(&rr(0, 0, 0, 0), ("127.0.0.1", b_sends_to)).unwrap();
    for i in 0..400u16 {
        if (20..25).contains(&(i % 40)) {
            continue;
        }
        let ts = if i % 2 == 0 { 0 } else { 160 };
        a.send_to(&rtp(1800 + i, ts, 0xa), ("127.0.0.1", a_sends_to)).unwrap();
        if i % 8 == 7 {
            // Paced as send_rtp does, so the relay's socket never overflows.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    wait_counted(r, "q1", 0, 740 + 350);
    std::thread::sleep(Duration::from_millis(50));
    r.housekeep(t0 + 15 * S);
    let ab3 = q(r, "q1", 0);
    assert_eq!(ab3.intervals, 3);
    let burst_r = 1.0 / (10.0 / 350.0 + 10.0 / 50.0);
    let d = quality::one_way_delay(rtt, ab3.jitter_ms, 20.0);
    let want = quality::mos(quality::r_factor(&quality::G711, 12.5, burst_r, d));
    assert!((ab3.mos - want).abs() < 0.02, "{ab3:?} want {want}");
    // Scored as random loss it would have been higher.
    assert!(ab3.mos < quality::mos(quality::r_factor(&quality::G711, 12.5, 1.0, d)) - 0.1);
    // The receiving endpoint's own view is in the report too.
    let rep = r.query("q1").unwrap();
    assert_eq!(rep.legs[1].medias[0].streams[0].stats.rtcp.fraction_lost, 0);
    assert_eq!(rep.legs[1].medias[0].streams[0].stats.rtcp.blocks, 3);
    assert_eq!(rep.legs[0].medias[0].streams[0].stats.rtcp.srs, 1);
    r.shutdown();
}

/// Sends 20 ms RTP from `from` for `secs` seconds (real time).
fn talk(from: &UdpSocket, port: u16, secs: f64) {
    let n = (secs * 50.0) as u16;
    for i in 0..n {
        from.send_to(&rtp(i, u32::from(i) * 160, 0x77), ("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn media_from_one_side_only_is_one_way_audio_and_hold_is_not() {
    let r = relay(base_port(1), 1);
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (_, a_port) = call(&r, "ow", &a, &b, "");
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    let d = UdpSocket::bind("127.0.0.1:0").unwrap();
    // The callee put the call on hold: it only receives.
    let (_, c_port) = call(&r, "hold", &c, &d, "a=recvonly\r\n");
    let e = UdpSocket::bind("127.0.0.1:0").unwrap();
    let f = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Early media: an answer SDP (a 183), but the call is not answered yet.
    let (_, e_port) = call(&r, "early", &e, &f, "");
    // The controller marks answers: "ow" and "hold" were answered.
    r.mark_answered("ow");
    r.mark_answered("hold");
    let _ = r.take_quality_events();
    // Only the callers talk, for 2.5 s against a 1 s threshold.
    let t1 = std::thread::spawn(move || talk(&c, c_port, 2.5));
    let t2 = std::thread::spawn(move || talk(&e, e_port, 2.5));
    talk(&a, a_port, 2.5);
    t1.join().unwrap();
    t2.join().unwrap();
    let events = r.take_quality_events();
    assert_eq!(
        events,
        vec![QualityEvent::OneWay { call_id: "ow".into(), media: 1, silent_tag: "tb".into() }],
        "one-way on the answered call whose callee is silent; nothing on hold or in early media"
    );
    assert!(q(&r, "ow", 1).one_way && !q(&r, "ow", 0).one_way);
    let held = q(&r, "hold", 1);
    assert!(held.held && !held.one_way, "{held:?}");
    assert_eq!(r.totals().one_way_audio, 1);
    // Flagged once: no second event.
    std::thread::sleep(Duration::from_millis(400));
    assert!(r.take_quality_events().is_empty());
    // Both calls are now silent both ways: idle_calls finds them after 1 s.
    assert!(r.idle_calls(Duration::from_secs(30)).is_empty());
    std::thread::sleep(Duration::from_millis(1100));
    let mut idle = r.idle_calls(Duration::from_secs(1));
    idle.sort();
    assert_eq!(idle, vec!["early".to_owned(), "hold".to_owned(), "ow".to_owned()]);
    r.shutdown();
}
