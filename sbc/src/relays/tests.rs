//! The pool against fake ng relays on loopback.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use media_relay::bencode::{self, Value};
use media_relay::control::{MediaControl, SdpOptions, SdpRequest};

use super::*;
use crate::config::MediaRelayConfig;

/// A fake relay answering offers with `sdp <name>`, deletes with an empty
/// report, and pings with pong, while `alive`; silent otherwise. Counts
/// the commands it saw.
struct Fake {
    addr: SocketAddr,
    alive: Arc<AtomicBool>,
    seen: Arc<AtomicU32>,
}

fn fake(name: &'static str) -> Fake {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let alive = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(AtomicU32::new(0));
    let (a, s) = (Arc::clone(&alive), Arc::clone(&seen));
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((len, from)) = sock.recv_from(&mut buf) {
            let Some((cookie, body)) = media_relay::ng::split_cookie(&buf[..len]) else { continue };
            let cmd = bencode::decode(body).unwrap();
            let command = cmd.get("command").and_then(Value::as_str).unwrap_or_default().to_owned();
            if command != "ping" {
                s.fetch_add(1, Relaxed);
            }
            if !a.load(Relaxed) {
                continue;
            }
            let mut r = Value::dict();
            match command.as_str() {
                "ping" => {
                    r.insert("result", Value::str("pong"));
                }
                "offer" | "answer" => {
                    r.insert("result", Value::str("ok")).insert("sdp", Value::str(&format!("sdp {name}")));
                }
                _ => {
                    r.insert("result", Value::str("ok"));
                }
            }
            let mut out = cookie.to_vec();
            out.push(b' ');
            r.encode(&mut out);
            let _ = sock.send_to(&out, from);
        }
    });
    Fake { addr, alive, seen }
}

fn cfg(name: &str, addr: SocketAddr, weight: u32) -> MediaRelayConfig {
    MediaRelayConfig {
        name: name.into(),
        ng: addr,
        weight,
        timeout: Duration::from_millis(300),
        retransmits: 2,
        probe_interval: Duration::from_millis(100),
    }
}

fn offer(pool: &RelayPool, call_id: &str) -> Result<String, RelayError> {
    let req = SdpRequest { call_id, from_tag: "ft", to_tag: None, sdp: b"v=0\r\n", opts: SdpOptions::default() };
    pool.offer(&req).map(|s| String::from_utf8(s).unwrap())
}

fn thresholds() -> HealthConfig {
    HealthConfig { down_after: 2, up_after: 2, hold_down: Duration::from_millis(200), failback_window: Duration::ZERO }
}

#[test]
fn calls_spread_by_weight_and_stay_on_their_relay() {
    let (a, b) = (fake("a"), fake("b"));
    let pool = RelayPool::new(&[cfg("a", a.addr, 3), cfg("b", b.addr, 1)], thresholds()).unwrap();
    let mut on_a = 0;
    for n in 0..8 {
        let sdp = offer(&pool, &format!("c{n}")).unwrap();
        on_a += usize::from(sdp == "sdp a");
        assert_eq!(pool.placement(&format!("c{n}")).as_deref(), Some(&sdp[4..]));
    }
    assert_eq!(on_a, 6, "3:1 weights");
    // A re-offer and the answer of c0 go where c0 is.
    let home = pool.placement("c0").unwrap();
    assert_eq!(offer(&pool, "c0").unwrap(), format!("sdp {home}"));
    let req =
        SdpRequest { call_id: "c0", from_tag: "ft", to_tag: Some("tt"), sdp: b"v=0\r\n", opts: SdpOptions::default() };
    assert_eq!(pool.answer(&req).unwrap(), format!("sdp {home}").into_bytes());
    assert_eq!(pool.relays()[0].calls.load(Relaxed), 6);
    pool.delete("c0", Some("ft")).unwrap();
    assert_eq!(pool.placement("c0"), None);
    assert_eq!(pool.totals().sessions, 7);
    assert!(matches!(pool.delete("c0", None), Err(RelayError::UnknownCall)));
    assert!(matches!(pool.answer(&req), Err(RelayError::UnknownCall)));
}

#[test]
fn a_silent_relay_is_skipped_at_once_and_taken_down() {
    let (a, b) = (fake("a"), fake("b"));
    let pool = RelayPool::new(&[cfg("a", a.addr, 1), cfg("b", b.addr, 1)], thresholds()).unwrap();
    a.alive.store(false, Relaxed);
    // The first pick is `a`: the offer waits out its timeout, then `b` takes it.
    let t = Instant::now();
    assert_eq!(offer(&pool, "x1").unwrap(), "sdp b");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(600), "{took:?}");
    assert_eq!(a.seen.load(Relaxed), 3, "first send and two retransmissions");
    assert!(!pool.relays()[0].is_up());
    assert_eq!(pool.relays()[0].timeouts.load(Relaxed), 1);
    // The next calls do not wait: `a` is DOWN.
    let t = Instant::now();
    for n in 0..4 {
        assert_eq!(offer(&pool, &format!("y{n}")).unwrap(), "sdp b");
    }
    assert!(t.elapsed() < Duration::from_millis(100));
    // A call placed on `a` before it failed fails fast instead of stalling.
    pool.place("old", "a");
    let t = Instant::now();
    assert!(pool.query("old").is_err());
    assert!(pool.delete("old", None).is_err());
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(pool.relays()[0].calls.load(Relaxed), 0);
}

#[test]
fn probes_bring_a_relay_back_after_the_hold_down() {
    let (a, b) = (fake("a"), fake("b"));
    let pool = Arc::new(RelayPool::new(&[cfg("a", a.addr, 1), cfg("b", b.addr, 1)], thresholds()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let h = spawn_probes(Arc::clone(&pool), Arc::clone(&stop)).unwrap();
    a.alive.store(false, Relaxed);
    let wait = |up: bool| {
        let t = Instant::now();
        while pool.relays()[0].is_up() != up {
            assert!(t.elapsed() < Duration::from_secs(5), "relay a never became up={up}");
            thread::sleep(Duration::from_millis(20));
        }
    };
    wait(false);
    assert!(pool.table().contains("DOWN"));
    assert!(pool.render_metrics().contains("sbc_media_relay_up{relay=\"a\"} 0"));
    a.alive.store(true, Relaxed);
    wait(true);
    assert!(pool.render_metrics().contains("sbc_media_relay_up{relay=\"a\"} 1"));
    stop.store(true, Relaxed);
    h.join().unwrap();
}

#[test]
fn no_relay_up_refuses_the_offer() {
    let a = fake("a");
    let pool = RelayPool::new(&[cfg("a", a.addr, 1)], thresholds()).unwrap();
    a.alive.store(false, Relaxed);
    assert!(offer(&pool, "z").is_err());
    let t = Instant::now();
    let e = offer(&pool, "z2").unwrap_err();
    assert!(e.to_string().contains("no media relay is UP"), "{e}");
    assert!(t.elapsed() < Duration::from_millis(50));
}
