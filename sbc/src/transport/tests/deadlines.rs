//! Slow and idle peers over real loopback sockets, on the real clock with
//! short limits: a message trickled slower than `message_deadline` closes
//! its connection, a trickle of bytes does not keep an idle connection
//! open, complete messages do, and TLS connections are capped per source
//! address like TCP ones.

use super::*;

/// Limits with a 1 s message deadline and `idle`.
fn short(idle: Duration) -> Limits {
    Limits { message_deadline: Duration::from_secs(1), idle, ..Limits::default() }
}

/// Polls on the real clock for `d`, calling `tick` every 200 ms (the
/// first time at once) until it returns false.
fn drive(t: &mut Transport, out: &mut Vec<Inbound>, d: Duration, mut tick: impl FnMut(usize) -> bool) {
    let start = Instant::now();
    let mut next = start;
    let mut n = 0;
    let mut ticking = true;
    while start.elapsed() < d {
        if ticking && Instant::now() >= next {
            ticking = tick(n);
            n += 1;
            next += Duration::from_millis(200);
        }
        t.poll(Some(Duration::from_millis(20)), out, Instant::now()).unwrap();
    }
}

/// Whether the peer sees its connection closed (EOF or reset).
fn closed(s: &mut StdTcp) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    matches!(s.read(&mut [0u8; 64]), Ok(0) | Err(_))
}

#[test]
fn a_message_trickled_one_byte_every_200_ms_is_cut_off_at_the_deadline() {
    let (mut t, addr) = tcp_transport(short(Duration::from_secs(30)));
    let mut out = Vec::new();
    let mut c = StdTcp::connect(addr).unwrap();
    let mut sent = 0;
    let mut trickle = |c: &mut StdTcp| {
        sent += 1;
        c.write_all(&OPTIONS[sent - 1..sent]).is_ok()
    };
    drive(&mut t, &mut out, Duration::from_millis(800), |_| trickle(&mut c));
    assert_eq!((t.connections(), t.stats.deadline_closes), (1, 0), "open within the deadline");
    // The deadline counts from the first byte, however the bytes trickle.
    drive(&mut t, &mut out, Duration::from_millis(1400), |_| trickle(&mut c));
    assert_eq!((t.connections(), t.stats.deadline_closes), (0, 1));
    assert!(out.is_empty(), "no message was ever complete");
    assert!(closed(&mut c));
    assert_eq!(t.take_closed_flows().len(), 1);
}

#[test]
fn a_trickle_of_line_ends_does_not_keep_an_idle_connection_open() {
    let (mut t, addr) = tcp_transport(short(Duration::from_secs(1)));
    let mut out = Vec::new();
    let mut c = StdTcp::connect(addr).unwrap();
    c.write_all(OPTIONS).unwrap();
    // A CRLF every 200 ms: bytes, but neither a message nor a keep-alive.
    drive(&mut t, &mut out, Duration::from_millis(2500), |_| c.write_all(b"\r\n").is_ok());
    assert_eq!(out.len(), 1, "the one message was delivered");
    assert_eq!((t.connections(), t.stats.idle_closes, t.stats.deadline_closes), (0, 1, 0));
    assert!(closed(&mut c));
}

#[test]
fn a_connection_sending_complete_messages_stays_open() {
    let (mut t, addr) = tcp_transport(short(Duration::from_secs(1)));
    let mut out = Vec::new();
    let mut c = StdTcp::connect(addr).unwrap();
    let mut keepalive = StdTcp::connect(addr).unwrap();
    // A message every 400 ms, each written in two halves 200 ms apart; and
    // on the other connection an RFC 5626 keep-alive every 600 ms.
    let half = OPTIONS.len() / 2;
    drive(&mut t, &mut out, Duration::from_secs(3), |i| {
        let part = if i % 2 == 0 { &OPTIONS[..half] } else { &OPTIONS[half..] };
        if i % 3 == 0 {
            keepalive.write_all(b"\r\n\r\n").unwrap();
        }
        c.write_all(part).is_ok()
    });
    assert!(out.len() >= 6, "every message delivered: {}", out.len());
    assert!(out.iter().all(|m| m.data == OPTIONS));
    assert_eq!((t.connections(), t.stats.idle_closes, t.stats.deadline_closes), (2, 0, 0));
    // Once both stop, the idle timeout closes both.
    drive(&mut t, &mut out, Duration::from_millis(1500), |_| false);
    assert_eq!((t.connections(), t.stats.idle_closes), (0, 2));
}

#[test]
fn tls_connections_are_capped_per_source_address_too() {
    let p = pki();
    let mut t = tls_transport(&p, Limits { max_connections_per_ip: 2, ..Limits::default() });
    let addr = t.tls_addr(0).unwrap();
    let now = Instant::now();
    let mut out = Vec::new();
    let _a = connect_as("127.0.0.1", addr);
    let _b = connect_as("127.0.0.1", addr);
    let mut third = connect_as("127.0.0.1", addr);
    poll_until(&mut t, &mut out, now, |t, _| t.connections() == 2 && t.stats.rejected == 1);
    assert!(closed(&mut third), "the third TLS connection from the address is closed");
    let _other = connect_as("127.0.0.2", addr);
    poll_until(&mut t, &mut out, now, |t, _| t.connections() == 3);
    assert_eq!(t.stats.rejected, 1);
}

#[test]
fn the_deadline_applies_to_tls_after_the_handshake() {
    let p = pki();
    let mut t = tls_transport(&p, short(Duration::from_secs(30)));
    let addr = t.tls_addr(0).unwrap();
    let cfg = tls::client_config(Some(roots(&p.ca)), None).unwrap();
    let conn = rustls::ClientConnection::new(cfg, ServerName::from(addr.ip())).unwrap();
    let tcp = StdTcp::connect(addr).unwrap();
    tcp.set_nonblocking(true).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut out = Vec::new();
    drive(&mut t, &mut out, Duration::from_secs(3), |i| {
        // Each byte in its own TLS record, flushed.
        let _ = s.write(&OPTIONS[i % OPTIONS.len()..=i % OPTIONS.len()]);
        let _ = s.flush();
        let _ = s.read(&mut [0u8; 64]);
        true
    });
    assert_eq!((t.stats.deadline_closes, t.connections()), (1, 0));
    assert!(out.is_empty());
}
