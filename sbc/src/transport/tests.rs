//! The transport over real loopback sockets: TLS in both directions, the
//! bounds on handshakes and connections, and closed flows that are never
//! dialled again.

use std::io::{Read, Write};
use std::net::TcpStream as StdTcp;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::tls::{self, Identity};
use super::*;

/// A CA and a certificate for 127.0.0.1 signed by it.
struct Pki {
    ca: CertificateDer<'static>,
    server: Identity,
}

fn pki() -> Pki {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &*ca).unwrap();
    let ca_cert: &rcgen::Certificate = ca.as_ref();
    Pki {
        ca: ca_cert.der().clone(),
        server: Identity {
            certs: vec![cert.der().clone()],
            key: PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        },
    }
}

fn roots(ca: &CertificateDer<'static>) -> Arc<rustls::RootCertStore> {
    let mut r = rustls::RootCertStore::empty();
    r.add(ca.clone()).unwrap();
    Arc::new(r)
}

/// A transport on 127.0.0.1 with a TLS port, and limits `limits`.
fn tls_transport(p: &Pki, limits: Limits) -> Transport {
    let mut t = Transport::bind("127.0.0.1:0".parse().unwrap(), true, 65535).unwrap();
    let setup = TlsSetup {
        server: Some(tls::server_config(&p.server).unwrap()),
        dial: HashMap::new(),
        default_client: tls::client_config(Some(roots(&p.ca)), None).unwrap(),
    };
    t.enable_tls(&[Some("127.0.0.1:0".parse().unwrap())], setup, false).unwrap();
    t.set_limits(limits);
    t
}

/// Polls until `done` or 5 s.
fn poll_until(
    t: &mut Transport,
    out: &mut Vec<Inbound>,
    now: Instant,
    mut done: impl FnMut(&Transport, &[Inbound]) -> bool,
) {
    let end = Instant::now() + Duration::from_secs(5);
    while !done(t, out) {
        assert!(Instant::now() < end, "timed out");
        t.poll(Some(Duration::from_millis(20)), out, now).unwrap();
    }
}

const OPTIONS: &[u8] = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n";

#[test]
fn proto_names() {
    assert_eq!(Proto::from_name("tls"), Some(Proto::Tls));
    assert_eq!(Proto::from_name("TCP"), Some(Proto::Tcp));
    assert_eq!(Proto::from_name("sctp"), None);
    assert_eq!(Proto::Tls.via_name(), "TLS");
    assert_eq!(Proto::Tls.uri_param(), ";transport=tls");
    assert!(Proto::Tls.reliable() && !Proto::Udp.reliable());
}

#[test]
fn tls_in_and_back_over_the_same_connection_then_never_redialled() {
    let p = pki();
    let mut t = tls_transport(&p, Limits::default());
    let addr = t.tls_addr(0).unwrap();
    let cfg = tls::client_config(Some(roots(&p.ca)), None).unwrap();
    let client = std::thread::spawn(move || {
        let conn = rustls::ClientConnection::new(cfg, ServerName::from(addr.ip())).unwrap();
        let mut s = rustls::StreamOwned::new(conn, StdTcp::connect(addr).unwrap());
        s.write_all(OPTIONS).unwrap();
        let mut buf = vec![0u8; OPTIONS.len()];
        s.read_exact(&mut buf).unwrap();
        buf
    });
    let now = Instant::now();
    let mut out = Vec::new();
    poll_until(&mut t, &mut out, now, |_, o| !o.is_empty());
    let m = out.remove(0);
    assert_eq!((m.proto, m.data.as_slice()), (Proto::Tls, OPTIONS));
    t.send(&Outbound { data: OPTIONS.to_vec(), dest: m.src, proto: Proto::Tls, realm: 0 }, now).unwrap();
    // Until the client has read the answer, keep flushing.
    let end = Instant::now() + Duration::from_secs(5);
    while !client.is_finished() && Instant::now() < end {
        t.poll(Some(Duration::from_millis(20)), &mut out, now).unwrap();
    }
    assert_eq!(client.join().unwrap(), OPTIONS, "the answer came back over the client's connection");
    // The client is gone: its flow is reported and never dialled.
    poll_until(&mut t, &mut out, now, |t, _| t.connections() == 0);
    assert_eq!(t.take_closed_flows(), vec![Flow { realm: 0, proto: Proto::Tls, peer: m.src }]);
    let e = t.send(&Outbound { data: OPTIONS.to_vec(), dest: m.src, proto: Proto::Tls, realm: 0 }, now).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotConnected);
    assert_eq!(t.connections(), 0, "no new connection to a phone's flow");
    assert_eq!(t.stats, ConnStats::default());
}

#[test]
fn handshakes_are_bounded_and_counted() {
    let p = pki();
    let limits = Limits { max_connections: 2, ..Limits::default() };
    let mut t = tls_transport(&p, limits);
    let addr = t.tls_addr(0).unwrap();
    let now = Instant::now();
    let mut out = Vec::new();
    // Bytes that are not TLS: a failed handshake.
    let mut junk = StdTcp::connect(addr).unwrap();
    junk.write_all(b"OPTIONS sip:x SIP/2.0\r\n\r\n").unwrap();
    poll_until(&mut t, &mut out, now, |t, _| t.stats.tls_handshake_failures == 1);
    // A client that never says anything, and one too many.
    let _silent = StdTcp::connect(addr).unwrap();
    let _second = StdTcp::connect(addr).unwrap();
    let _third = StdTcp::connect(addr).unwrap();
    poll_until(&mut t, &mut out, now, |t, _| t.connections() == 2 && t.stats.rejected == 1);
    // 10 s later both are closed as handshake timeouts.
    t.poll(Some(Duration::ZERO), &mut out, now + Duration::from_secs(11)).unwrap();
    assert_eq!(t.connections(), 0);
    assert_eq!(t.stats.tls_handshake_timeouts, 2);
    assert!(out.is_empty());
}

#[test]
fn idle_connections_close_and_count() {
    let p = pki();
    let mut t = tls_transport(&p, Limits { idle: Duration::from_secs(30), ..Limits::default() });
    let tcp = t.realms[0].listener.as_ref().unwrap().local_addr().unwrap();
    let now = Instant::now();
    let mut out = Vec::new();
    let mut c = StdTcp::connect(tcp).unwrap();
    c.write_all(OPTIONS).unwrap();
    poll_until(&mut t, &mut out, now, |_, o| !o.is_empty());
    assert_eq!(out[0].proto, Proto::Tcp);
    t.poll(Some(Duration::ZERO), &mut out, now + Duration::from_secs(20)).unwrap();
    assert_eq!((t.connections(), t.stats.idle_closes), (1, 0));
    t.poll(Some(Duration::ZERO), &mut out, now + Duration::from_secs(31)).unwrap();
    assert_eq!((t.connections(), t.stats.idle_closes), (0, 1));
    assert_eq!(t.take_closed_flows().len(), 1);
}

#[test]
fn dialling_tls_verifies_the_server() {
    let p = pki();
    let mut server = tls_transport(&p, Limits::default());
    let addr = server.tls_addr(0).unwrap();
    let other = pki();
    // A client trusting another CA: the handshake fails on its side.
    let mut client = Transport::bind("127.0.0.1:0".parse().unwrap(), false, 65535).unwrap();
    let setup = TlsSetup {
        server: None,
        dial: HashMap::new(),
        default_client: tls::client_config(Some(roots(&other.ca)), None).unwrap(),
    };
    client.enable_tls(&[None], setup, false).unwrap();
    let now = Instant::now();
    let mut out = Vec::new();
    client.send(&Outbound { data: OPTIONS.to_vec(), dest: addr, proto: Proto::Tls, realm: 0 }, now).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while client.stats.tls_handshake_failures == 0 {
        assert!(Instant::now() < end, "no handshake failure");
        client.poll(Some(Duration::from_millis(10)), &mut out, now).unwrap();
        server.poll(Some(Duration::from_millis(10)), &mut out, now).unwrap();
    }
    assert!(out.is_empty(), "nothing delivered");
    let lost = client.take_undelivered();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!((lost[0].dest, lost[0].proto, lost[0].realm), (addr, Proto::Tls, 0), "a transport error for the trunk");
    assert_eq!(client.connections(), 0);
    // With the right CA the message arrives over TLS.
    let mut good = Transport::bind("127.0.0.1:0".parse().unwrap(), false, 65535).unwrap();
    let setup = TlsSetup {
        server: None,
        dial: HashMap::new(),
        default_client: tls::client_config(Some(roots(&p.ca)), None).unwrap(),
    };
    good.enable_tls(&[None], setup, false).unwrap();
    good.send(&Outbound { data: OPTIONS.to_vec(), dest: addr, proto: Proto::Tls, realm: 0 }, now).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while out.is_empty() {
        assert!(Instant::now() < end, "not delivered");
        good.poll(Some(Duration::from_millis(10)), &mut out, now).unwrap();
        server.poll(Some(Duration::from_millis(10)), &mut out, now).unwrap();
    }
    assert_eq!((out[0].proto, out[0].data.as_slice()), (Proto::Tls, OPTIONS));
    assert_eq!(good.stats, ConnStats::default());
    assert!(good.take_undelivered().is_empty());
}

/// A loopback TCP address nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn a_refused_connect_is_a_transport_error_for_its_destination() {
    let mut t = Transport::bind("127.0.0.1:0".parse().unwrap(), true, 65535).unwrap();
    let dest = closed_port();
    let now = Instant::now();
    let mut out = Vec::new();
    let o = Outbound { data: OPTIONS.to_vec(), dest, proto: Proto::Tcp, realm: 0 };
    // Refused at once, or when the kernel says so: either way it is reported.
    if t.send(&o, now).is_ok() {
        poll_until(&mut t, &mut out, now, |t, _| !t.undelivered.is_empty());
        let lost = t.take_undelivered();
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert_eq!((lost[0].dest, lost[0].proto, lost[0].realm), (dest, Proto::Tcp, 0));
    }
    assert_eq!(t.connections(), 0);
    assert!(t.take_closed_flows().is_empty(), "a connection we dialled is no peer's flow");
}

#[test]
fn a_dialled_tls_connection_whose_handshake_never_ends_is_a_transport_error() {
    let p = pki();
    let mut t = tls_transport(&p, Limits { handshake: Duration::from_secs(2), ..Limits::default() });
    // A listener that accepts (in the kernel) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = silent.local_addr().unwrap();
    let now = Instant::now();
    let mut out = Vec::new();
    t.send(&Outbound { data: OPTIONS.to_vec(), dest, proto: Proto::Tls, realm: 0 }, now).unwrap();
    t.poll(Some(Duration::from_millis(50)), &mut out, now + Duration::from_secs(1)).unwrap();
    assert!(t.take_undelivered().is_empty(), "not before the handshake timeout");
    t.poll(Some(Duration::ZERO), &mut out, now + Duration::from_secs(3)).unwrap();
    let lost = t.take_undelivered();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!((lost[0].dest, lost[0].proto), (dest, Proto::Tls));
    assert_eq!((t.connections(), t.stats.tls_handshake_timeouts), (0, 1));
}

#[test]
fn flows_held_elsewhere_count_as_closed_and_are_never_dialled() {
    let p = pki();
    let mut t = tls_transport(&p, Limits::default());
    let tcp = t.realms[0].listener.as_ref().unwrap().local_addr().unwrap();
    let now = Instant::now();
    let mut out = Vec::new();
    // A phone connected here: its flow is held and stays.
    let mut held = StdTcp::connect(tcp).unwrap();
    held.write_all(OPTIONS).unwrap();
    poll_until(&mut t, &mut out, now, |_, o| !o.is_empty());
    let here = Flow { realm: 0, proto: Proto::Tcp, peer: out[0].src };
    // A phone that was connected to the node this one took over from: a
    // listener stands at its address, to show that nothing dials it.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let gone = Flow { realm: 0, proto: Proto::Tls, peer: elsewhere.local_addr().unwrap() };
    let udp = Flow { realm: 0, proto: Proto::Udp, peer: gone.peer };
    assert_eq!(t.lose_flows(&[here, gone, udp], now), 1);
    assert_eq!(t.take_closed_flows(), vec![gone], "reported as closed, so its bindings go");
    let e =
        t.send(&Outbound { data: OPTIONS.to_vec(), dest: gone.peer, proto: Proto::Tls, realm: 0 }, now).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotConnected);
    t.poll(Some(Duration::from_millis(50)), &mut out, now).unwrap();
    assert!(elsewhere.accept().is_err(), "no connection was attempted");
    assert_eq!(t.connections(), 1);
    // The held flow still carries messages.
    t.send(&Outbound { data: OPTIONS.to_vec(), dest: here.peer, proto: Proto::Tcp, realm: 0 }, now).unwrap();
    let mut buf = vec![0u8; OPTIONS.len()];
    held.read_exact(&mut buf).unwrap();
    assert_eq!(buf, OPTIONS);
}

/// A blocking TCP connection to `dest` from `ip` (any port), receiving
/// into a small buffer so that a peer that never reads fills up soon.
fn connect_as(ip: &str, dest: SocketAddr) -> StdTcp {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.bind(&SocketAddr::new(ip.parse().unwrap(), 0).into()).unwrap();
    s.connect(&dest.into()).unwrap();
    s.into()
}

/// A plain TCP transport on 127.0.0.1 with `limits`, and its TCP address.
fn tcp_transport(limits: Limits) -> (Transport, SocketAddr) {
    let mut t = Transport::bind("127.0.0.1:0".parse().unwrap(), true, 65535).unwrap();
    t.set_limits(limits);
    let addr = t.realms[0].listener.as_ref().unwrap().local_addr().unwrap();
    (t, addr)
}

/// A 4 KiB message.
fn big() -> Vec<u8> {
    let mut m = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nContent-Length: 4000\r\n\r\n".to_vec();
    m.resize(m.len() + 4000, b'x');
    m
}

#[test]
fn a_peer_that_never_reads_is_closed_once_its_output_passes_the_cap() {
    let cap = 64 * 1024;
    let (mut t, addr) = tcp_transport(Limits { max_output: cap, ..Limits::default() });
    let now = Instant::now();
    let mut out = Vec::new();
    let mut c = connect_as("127.0.0.1", addr);
    c.write_all(OPTIONS).unwrap();
    poll_until(&mut t, &mut out, now, |_, o| !o.is_empty());
    let peer = out[0].src;
    let o = Outbound { data: big(), dest: peer, proto: Proto::Tcp, realm: 0 };
    let mut sent = 0;
    while t.connections() == 1 {
        assert!(sent < 100_000, "still open after {sent} messages");
        t.send(&o, now).unwrap();
        sent += 1;
        assert!(t.conns.values().all(|c| c.wbuf.len() <= cap), "pending output stays under the cap");
    }
    assert_eq!(t.stats.output_overflows, 1);
    let lost = t.take_undelivered();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!((lost[0].dest, lost[0].proto), (peer, Proto::Tcp));
    assert_eq!(t.take_closed_flows(), vec![Flow { realm: 0, proto: Proto::Tcp, peer }]);
}

#[test]
fn a_tls_peer_that_never_reads_is_closed_once_its_output_passes_the_cap() {
    let p = pki();
    let mut t = tls_transport(&p, Limits { max_output: 64 * 1024, ..Limits::default() });
    let addr = t.tls_addr(0).unwrap();
    let cfg = tls::client_config(Some(roots(&p.ca)), None).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let conn = rustls::ClientConnection::new(cfg, ServerName::from(addr.ip())).unwrap();
        let mut s = rustls::StreamOwned::new(conn, connect_as("127.0.0.1", addr));
        s.write_all(OPTIONS).unwrap();
        // Holds the connection open, reading nothing.
        let _ = done_rx.recv();
    });
    let now = Instant::now();
    let mut out = Vec::new();
    poll_until(&mut t, &mut out, now, |_, o| !o.is_empty());
    let o = Outbound { data: big(), dest: out[0].src, proto: Proto::Tls, realm: 0 };
    let mut sent = 0;
    while t.connections() == 1 {
        assert!(sent < 100_000, "still open after {sent} messages");
        t.send(&o, now).unwrap();
        sent += 1;
    }
    assert_eq!(t.stats.output_overflows, 1);
    assert_eq!(t.take_undelivered().len(), 1);
    drop(done_tx);
    client.join().unwrap();
}

#[test]
fn a_connection_whose_output_stalls_closes_after_the_idle_time() {
    let (mut t, addr) = tcp_transport(Limits { idle: Duration::from_secs(30), ..Limits::default() });
    let now = Instant::now();
    let mut out = Vec::new();
    let mut c = connect_as("127.0.0.1", addr);
    c.write_all(OPTIONS).unwrap();
    poll_until(&mut t, &mut out, now, |_, o| !o.is_empty());
    let peer = out[0].src;
    // Fill the sockets until output waits with us (under the cap).
    let o = Outbound { data: big(), dest: peer, proto: Proto::Tcp, realm: 0 };
    let mut sent = 0;
    while t.conns.values().all(|c| c.wbuf.len() < 256 * 1024) {
        assert!(sent < 10_000, "the kernel took {sent} messages");
        t.send(&o, now).unwrap();
        sent += 1;
    }
    // Until the kernel takes no more (its buffers grow without telling).
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        let tokens: Vec<Token> = t.conns.keys().copied().collect();
        for k in tokens {
            t.flush(k, now);
        }
        t.poll(Some(Duration::from_millis(20)), &mut out, now).unwrap();
    }
    assert!(t.conns.values().all(|c| !c.idle_output()), "output still waits");
    // The peer keeps talking but reads nothing: that is no progress.
    c.write_all(OPTIONS).unwrap();
    out.clear();
    poll_until(&mut t, &mut out, now + Duration::from_secs(20), |_, o| !o.is_empty());
    assert_eq!((t.connections(), t.stats.idle_closes), (1, 0));
    t.poll(Some(Duration::ZERO), &mut out, now + Duration::from_secs(31)).unwrap();
    assert_eq!((t.connections(), t.stats.idle_closes), (0, 1));
    let lost = t.take_undelivered();
    assert_eq!(lost.len(), 1, "the stalled output was lost: {lost:?}");
    assert_eq!(lost[0].dest, peer);
    assert_eq!(t.stats.output_overflows, 0);
}

#[test]
fn accepted_connections_are_capped_per_source_address() {
    let (mut t, addr) = tcp_transport(Limits { max_connections_per_ip: 2, ..Limits::default() });
    let now = Instant::now();
    let mut out = Vec::new();
    let first = connect_as("127.0.0.1", addr);
    let _second = connect_as("127.0.0.1", addr);
    let mut third = connect_as("127.0.0.1", addr);
    poll_until(&mut t, &mut out, now, |t, _| t.connections() == 2 && t.stats.rejected == 1);
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(third.read(&mut [0u8; 16]).unwrap_or(0), 0, "the third is closed");
    let _other = connect_as("127.0.0.2", addr);
    poll_until(&mut t, &mut out, now, |t, _| t.connections() == 3);
    // A slot freed by a close is taken again.
    drop(first);
    poll_until(&mut t, &mut out, now, |t, _| t.connections() == 2);
    let _again = connect_as("127.0.0.1", addr);
    poll_until(&mut t, &mut out, now, |t, _| t.connections() == 3);
    assert_eq!(t.stats.rejected, 1);
}

#[test]
fn a_source_the_realms_acl_denies_is_closed_at_accept() {
    let (mut t, addr) = tcp_transport(Limits::default());
    let acl = crate::config::Acl { deny: vec!["127.0.0.2/32".parse().unwrap()], ..Default::default() };
    t.set_admission(Box::new(move |realm, ip| realm == 0 && acl.permits(ip, false)));
    let now = Instant::now();
    let mut out = Vec::new();
    let mut denied = connect_as("127.0.0.2", addr);
    let _ = denied.write_all(OPTIONS);
    poll_until(&mut t, &mut out, now, |t, _| t.stats.acl_denied == 1);
    assert_eq!(t.connections(), 0);
    denied.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(denied.read(&mut [0u8; 16]).unwrap_or(0), 0, "closed at once");
    assert!(out.is_empty(), "nothing it sent was read");
    let mut allowed = connect_as("127.0.0.1", addr);
    allowed.write_all(OPTIONS).unwrap();
    poll_until(&mut t, &mut out, now, |_, o| !o.is_empty());
    assert_eq!((t.connections(), t.stats.acl_denied), (1, 1));
}

#[test]
fn a_trunk_is_still_dialled_when_accepted_connections_are_at_their_cap() {
    let (mut t, addr) = tcp_transport(Limits { max_connections: 2, ..Limits::default() });
    let now = Instant::now();
    let mut out = Vec::new();
    let _a = connect_as("127.0.0.1", addr);
    let _b = connect_as("127.0.0.2", addr);
    let _c = connect_as("127.0.0.3", addr);
    poll_until(&mut t, &mut out, now, |t, _| t.connections() == 2 && t.stats.rejected == 1);
    let trunk = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = trunk.local_addr().unwrap();
    t.send(&Outbound { data: OPTIONS.to_vec(), dest, proto: Proto::Tcp, realm: 0 }, now).unwrap();
    let (mut s, _) = trunk.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = vec![0u8; OPTIONS.len()];
    let end = Instant::now() + Duration::from_secs(5);
    let mut got = 0;
    while got < buf.len() {
        assert!(Instant::now() < end, "timed out");
        t.poll(Some(Duration::from_millis(20)), &mut out, now).unwrap();
        if let Ok(n) = s.read(&mut buf[got..]) {
            got += n;
        }
    }
    assert_eq!(buf, OPTIONS);
    assert_eq!(t.connections(), 3);
    assert!(t.take_undelivered().is_empty());
}

#[test]
fn kernel_receive_queue_drops_are_counted() {
    let mut t = Transport::bind("127.0.0.1:0".parse().unwrap(), false, 4096).unwrap();
    let to = t.local_addr().unwrap();
    socket2::SockRef::from(&t.realms[0].udp).set_recv_buffer_size(4096).unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagram = format!("OPTIONS sip:a@b SIP/2.0\r\n{}\r\n", "X: y\r\n".repeat(60));
    assert_eq!(t.rx_queue_drops().collect::<Vec<_>>(), [0], "nothing dropped before the flood");
    // Nobody reads while 500 datagrams arrive: most overflow the tiny queue.
    for _ in 0..500 {
        tx.send_to(datagram.as_bytes(), to).unwrap();
    }
    let (mut out, now) = (Vec::new(), Instant::now());
    for _ in 0..5 {
        t.poll(Some(Duration::from_millis(50)), &mut out, now).unwrap();
    }
    assert!(!out.is_empty() && out.len() < 500, "{} datagrams read", out.len());
    // The kernel stamps its drop count on datagrams queued after a drop: the
    // next one brings the total.
    tx.send_to(datagram.as_bytes(), to).unwrap();
    for _ in 0..5 {
        t.poll(Some(Duration::from_millis(50)), &mut out, now).unwrap();
    }
    let drops = t.rx_queue_drops().next().unwrap();
    assert_eq!(drops, 501 - out.len() as u64, "every datagram is either read or counted as dropped");
}

mod deadlines;
