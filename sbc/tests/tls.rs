//! SIP over TLS through a real sbc, with a CA and certificates made in the
//! test (rcgen) and test user agents written with rustls: a call from a
//! TLS phone to a UDP trunk (Via TLS, Record-Route doubled, in-dialog
//! requests both ways), TLS trunks (a certificate not signed by `ca_file`
//! fails the handshake, is counted, and the call fails over at once, or
//! gets 503 with no other trunk; a good one carries the call with the
//! configured SNI), a client that never
//! finishes its handshake (closed after the timeout, counted, others still
//! served), and a phone registered over TLS reached over that same
//! connection, then 480 once it has closed (and the same over TCP). Last,
//! real phones: baresip registering with digest and calling over TLS
//! across two realms in network namespaces, and a wrong password getting
//! neither a registration nor a call (needs root, `ip` and baresip;
//! skipped without them, except under CI=true).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sbc::sip::{Header, Message};
use support::{Ports, Sbc};
use testkit::realms::{self, Host, RealmLab};
use testkit::{ports, TestDir};

const WAIT: Duration = Duration::from_secs(5);

const SDP: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n";

#[expect(deprecated, reason = "ring has no post-quantum key exchange; these test peers do not need it")]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA, and PEM files in `dir`: `NAME.pem` / `NAME.key` for 127.0.0.1
/// signed by it.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca { issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap() }
    }

    fn write_ca(&self, dir: &TestDir, name: &str) -> String {
        let cert: &rcgen::Certificate = self.issuer.as_ref();
        dir.write(name, cert.pem()).display().to_string()
    }

    fn der(&self) -> CertificateDer<'static> {
        let cert: &rcgen::Certificate = self.issuer.as_ref();
        cert.der().clone()
    }

    /// Writes `NAME.pem` and `NAME.key` for these names; returns their paths.
    fn issue(&self, dir: &TestDir, name: &str, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &*self.issuer).unwrap();
        let c = dir.write(&format!("{name}.pem"), cert.pem());
        let k = dir.write(&format!("{name}.key"), key.serialize_pem());
        (c.display().to_string(), k.display().to_string())
    }
}

fn client_config(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A server presenting `cert`; with `clients`, it requires a client
/// certificate issued by that CA.
fn server_config(cert: &str, key: &str, clients: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let b = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
    let b = match clients {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der()).unwrap();
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            b.with_client_cert_verifier(v)
        }
        None => b.with_no_client_auth(),
    };
    Arc::new(b.with_single_cert(certs, key).unwrap())
}

/// Reads framed SIP messages from a stream (TLS or not) until `timeout`.
fn read_message(s: &mut impl Read, buf: &mut Vec<u8>, timeout: Duration) -> Option<Message> {
    let end = Instant::now() + timeout;
    loop {
        while let Ok(Some(n)) = sbc::transport::frame(buf, 65535) {
            let m: Vec<u8> = buf.drain(..n).collect();
            if m.iter().all(|&b| b == b'\r' || b == b'\n') {
                continue;
            }
            return Some(Message::parse(&m).expect("the sbc sends SIP that parses"));
        }
        if Instant::now() > end {
            return None;
        }
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
}

/// A byte stream to the sbc: TLS or plain TCP.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A phone speaking SIP over TLS (or TCP) to the sbc.
struct TlsPhone {
    s: Box<dyn Stream>,
    buf: Vec<u8>,
    local: SocketAddr,
}

impl TlsPhone {
    fn connect(addr: SocketAddr, ca: &Ca) -> TlsPhone {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let local = tcp.local_addr().unwrap();
        let conn = rustls::ClientConnection::new(client_config(ca), ServerName::from(addr.ip())).unwrap();
        TlsPhone { s: Box::new(rustls::StreamOwned::new(conn, tcp)), buf: Vec::new(), local }
    }

    fn connect_tcp(addr: SocketAddr) -> TlsPhone {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let local = tcp.local_addr().unwrap();
        TlsPhone { s: Box::new(tcp), buf: Vec::new(), local }
    }

    fn send(&mut self, m: &[u8]) {
        self.s.write_all(m).unwrap();
        self.s.flush().unwrap();
    }

    /// The next message that is not a provisional response.
    fn recv(&mut self) -> Option<Message> {
        loop {
            let m = read_message(&mut self.s, &mut self.buf, WAIT)?;
            if m.code().is_none_or(|c| c >= 200) {
                return Some(m);
            }
        }
    }
}

/// A UDP user agent (a trunk, or a caller).
struct UdpUa {
    sock: UdpSocket,
}

impl UdpUa {
    fn bind(port: u16) -> UdpUa {
        let sock = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        UdpUa { sock }
    }

    fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn send(&self, m: &[u8], to: SocketAddr) {
        self.sock.send_to(m, to).unwrap();
    }

    /// The next message that is not a provisional response, and its source.
    fn recv(&self) -> Option<(Message, SocketAddr)> {
        let end = Instant::now() + WAIT;
        let mut buf = [0u8; 65535];
        while Instant::now() < end {
            if let Ok((n, src)) = self.sock.recv_from(&mut buf) {
                let m = Message::parse(&buf[..n]).unwrap();
                if m.code().is_none_or(|c| c >= 200) {
                    return Some((m, src));
                }
            }
        }
        None
    }
}

/// An INVITE from `local` over `proto` (with SDP).
fn invite(ruri: &str, proto: &str, local: SocketAddr, call_id: &str) -> Vec<u8> {
    let t = proto.to_ascii_lowercase();
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/{proto} {local};branch=z9hG4bK-{call_id};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:carol@127.0.0.1>;tag=c-{call_id}\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:carol@{local};transport={t}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
    .into_bytes()
}

/// A UAS's answer: the Record-Route copied, a Contact at `contact`, SDP for a 200.
fn answer(req: &Message, code: u16, contact: &str) -> Vec<u8> {
    let mut r = req.response_with_tag(code, "OK", "uas-tag");
    for rr in req.header_values("record-route") {
        r.push_header(Header::new("Record-Route", rr));
    }
    r.push_header(Header::new("Contact", &format!("<{contact}>")));
    if code == 200 && req.method() == Some(&sbc::sip::Method::Invite) {
        r.push_header(Header::new("Content-Type", "application/sdp"));
        r.set_body(SDP.as_bytes().to_vec());
    }
    r.to_bytes()
}

/// An in-dialog request from the side that received `resp` to its
/// request `req` (the caller: route set = Record-Route reversed, target =
/// Contact), or from the callee of `req` (route set = Record-Route as is,
/// target = the request's Contact).
fn in_dialog(
    method: &str,
    req: &Message,
    resp: &Message,
    from_caller: bool,
    proto: &str,
    local: SocketAddr,
) -> Vec<u8> {
    let (mut routes, target, from, to) = if from_caller {
        let target = contact_uri(resp);
        (resp.header_values("record-route"), target, req.header("from").unwrap(), resp.header("to").unwrap())
    } else {
        (req.header_values("record-route"), contact_uri(req), resp.header("to").unwrap(), req.header("from").unwrap())
    };
    if from_caller {
        routes.reverse();
    }
    let cseq = if method == "ACK" { 1 } else { 2 };
    let mut s = format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/{proto} {local};branch=z9hG4bK-{method}-{cseq}-{}\r\nMax-Forwards: 70\r\n",
        u8::from(from_caller)
    );
    for r in routes {
        s.push_str(&format!("Route: {r}\r\n"));
    }
    s.push_str(&format!(
        "From: {from}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        req.call_id().unwrap()
    ));
    s.into_bytes()
}

fn contact_uri(m: &Message) -> String {
    match m.contacts().into_iter().next() {
        Some(sbc::sip::Contact::Addr(na)) => na.uri.to_string(),
        _ => panic!("no Contact in {m:?}"),
    }
}

/// One test's sbc: UDP on `p.sip`, TLS on `tls`, a CA and its certificate.
struct Test {
    dir: TestDir,
    p: Ports,
    tls: SocketAddr,
    ca: Ca,
    sbc: Option<Sbc>,
    /// `sip.invite_timeout_ms` of the next [`start`](Self::start).
    invite_timeout_ms: u64,
}

impl Test {
    fn new(label: &str) -> Test {
        let dir = TestDir::new(label);
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = Ports::new(41000 + (std::process::id() % 8) as u16 * 1000 + k * 200);
        let tls = SocketAddr::from(([127, 0, 0, 1], ports::free_tcp_port()));
        Test { dir, p, tls, ca: Ca::new(), sbc: None, invite_timeout_ms: 1000 }
    }

    /// Starts the sbc with `trunks` (TOML: trunk and route tables) and
    /// extra `[sip]` keys.
    fn start(&mut self, sip_extra: &str, trunks: &str) {
        let (cert, key) = self.ca.issue(&self.dir, "sbc", &["127.0.0.1", "sbc.test"]);
        let p = &self.p;
        let cfg = format!(
            "[sip]\nlisten = \"127.0.0.1:{}\"\ndomains = [\"127.0.0.1\"]\ntls_listen = \"{}\"\n\
             tls_cert = \"{cert}\"\ntls_key = \"{key}\"\ninvite_timeout_ms = {}\n{sip_extra}\n{trunks}\n\
             [health]\ninterval_ms = 0\n[cdr]\nfile = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{}\"\n[control]\nsocket = \"off\"\n\
             [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = {}\nport_max = {}\nworkers = 1\ntimeout = 60\nmetrics = \"off\"\n",
            p.sip,
            self.tls,
            self.invite_timeout_ms,
            self.dir.join("cdr.jsonl").display(),
            p.metrics,
            p.relay,
            p.relay + 199
        );
        self.sbc = Some(Sbc::start(&self.dir, &self.p, &cfg, Some("info")));
    }

    fn sbc(&self) -> &Sbc {
        self.sbc.as_ref().unwrap()
    }

    fn udp(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.p.sip))
    }

    fn metric(&self, name: &str) -> f64 {
        self.sbc().metric(name, &[])
    }
}

fn udp_trunk(name: &str, port: u16) -> String {
    format!("[[trunk]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\nprobe = false\n")
}

#[test]
fn a_call_from_tls_to_udp_doubles_the_record_route_and_runs_both_ways() {
    let mut t = Test::new("tls-call");
    t.start("", &format!("{}[[route]]\nprefix = \"9\"\ntrunks = [\"uas\"]\n", udp_trunk("uas", t.p.a)));
    let uas = UdpUa::bind(t.p.a);
    let mut phone = TlsPhone::connect(t.tls, &t.ca);
    phone.send(&invite("sip:9123@127.0.0.1", "TLS", phone.local, "tls-call-1"));
    let (inv, from) = uas.recv().expect("the INVITE reaches the UDP trunk");
    let rr = inv.header_values("record-route");
    let (sip, tls) = (t.p.sip, t.tls.port());
    assert_eq!(
        rr,
        vec![format!("<sip:127.0.0.1:{sip};lr>"), format!("<sip:127.0.0.1:{tls};transport=tls;lr>")],
        "one Record-Route per transport, the UDP side's on top"
    );
    let vias = inv.vias();
    assert_eq!((vias[0].transport.as_str(), vias[0].port), ("UDP", Some(sip)));
    assert_eq!(vias[1].transport, "TLS", "the phone's own Via is kept");
    let uas_contact = format!("sip:9123@{}", uas.local());
    uas.send(&answer(&inv, 200, &uas_contact), from);
    let ok = phone.recv().expect("the 200 comes back over TLS");
    assert_eq!(ok.code(), Some(200));
    assert_eq!(ok.header_values("record-route").len(), 2);
    assert_eq!(ok.top_via().unwrap().transport, "TLS");
    // ACK from the caller along the route set, over TLS, arrives over UDP.
    let orig = Message::parse(&invite("sip:9123@127.0.0.1", "TLS", phone.local, "tls-call-1")).unwrap();
    phone.send(&in_dialog("ACK", &orig, &ok, true, "TLS", phone.local));
    let (ack, _) = uas.recv().expect("the ACK reaches the trunk");
    assert_eq!(ack.method(), Some(&sbc::sip::Method::Ack));
    // BYE from the callee over UDP reaches the phone over its TLS connection.
    uas.send(&in_dialog("BYE", &inv, &ok, false, "UDP", uas.local()), t.udp());
    let bye = phone.recv().expect("the BYE reaches the phone");
    assert_eq!(bye.method(), Some(&sbc::sip::Method::Bye));
    let top = bye.top_via().unwrap();
    assert_eq!((top.transport.as_str(), top.port), ("TLS", Some(tls)), "our Via names TLS and the TLS port");
    phone.send(&bye.response_to(200, "OK").to_bytes());
    let (done, _) = uas.recv().expect("the BYE's 200 reaches the callee");
    assert_eq!(done.code(), Some(200));
    assert!(testkit::wait_until(WAIT, Duration::from_millis(100), || t.metric("sbc_dialogs_active") == 0.0));
    assert_eq!(t.metric("sbc_tls_handshake_failures_total"), 0.0);
}

/// A TLS trunk on `port` presenting `cert` (and requiring a client
/// certificate from `clients`): answers each INVITE with 200 and records
/// the SNI each client sent. Handshakes that fail are skipped.
fn tls_trunk(port: u16, cert: &str, key: &str, clients: Option<&Ca>) -> Arc<Mutex<Vec<Option<String>>>> {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let config = server_config(cert, key, clients);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            let Ok((tcp, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            tcp.set_nonblocking(false).unwrap();
            tcp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let mut s = rustls::StreamOwned::new(rustls::ServerConnection::new(Arc::clone(&config)).unwrap(), tcp);
            let mut buf = Vec::new();
            while let Some(m) = read_message(&mut s, &mut buf, Duration::from_secs(5)) {
                seen2.lock().unwrap().push(s.conn.server_name().map(str::to_owned));
                if m.method() == Some(&sbc::sip::Method::Invite) {
                    let _ = s.write_all(&answer(&m, 200, &format!("sip:trunk@127.0.0.1:{port};transport=tls")));
                }
            }
        }
    });
    seen
}

#[test]
fn a_trunk_whose_certificate_is_not_from_ca_file_fails_over_and_is_counted_and_mutual_tls_works() {
    let mut t = Test::new("tls-trunk");
    let rogue = Ca::new();
    let (bad_cert, bad_key) = rogue.issue(&t.dir, "rogue", &["127.0.0.1", "carrier.test"]);
    let (good_cert, good_key) = t.ca.issue(&t.dir, "carrier", &["carrier.test"]);
    let ca_file = t.ca.write_ca(&t.dir, "ca.pem");
    let (bad_port, good_port) = (ports::free_tcp_port(), ports::free_tcp_port());
    let bad_seen = tls_trunk(bad_port, &bad_cert, &bad_key, None);
    // Mutual TLS: the sbc presents its listener's certificate (from the same CA).
    let good_seen = tls_trunk(good_port, &good_cert, &good_key, Some(&t.ca));
    let tls_trunk_cfg = |name: &str, port: u16| {
        format!(
            "[[trunk]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\ntransport = \"tls\"\nca_file = \"{ca_file}\"\n\
             server_name = \"carrier.test\"\nprobe = false\n"
        )
    };
    let trunks = format!(
        "{}{}{}[[route]]\nprefix = \"7\"\ntrunks = [\"bad\", \"uas\"]\n[[route]]\nprefix = \"8\"\ntrunks = [\"good\"]\n\
         [[route]]\nprefix = \"6\"\ntrunks = [\"bad\"]\n",
        tls_trunk_cfg("bad", bad_port),
        tls_trunk_cfg("good", good_port),
        udp_trunk("uas", t.p.a)
    );
    // Long enough that a failover at the timeout cannot pass for one at
    // the handshake failure.
    t.invite_timeout_ms = 4000;
    let soon = Duration::from_millis(t.invite_timeout_ms / 2);
    t.start("", &trunks);
    let uas = UdpUa::bind(t.p.a);
    let caller = UdpUa::bind(0);
    // The bad trunk first: its certificate is refused, which is a
    // transport error: the call moves on at once, not at the timeout.
    let sent = Instant::now();
    caller.send(&invite("sip:7001@127.0.0.1", "UDP", caller.local(), "tls-trunk-1"), t.udp());
    let (inv, from) = uas.recv().expect("the call fails over to the UDP trunk");
    let took = sent.elapsed();
    assert!(took < soon, "failed over after {took:?}, not well before invite_timeout_ms = {}", t.invite_timeout_ms);
    uas.send(&answer(&inv, 200, &format!("sip:7001@{}", uas.local())), from);
    let (ok, _) = caller.recv().unwrap();
    assert_eq!(ok.code(), Some(200));
    assert!(t.metric("sbc_tls_handshake_failures_total") >= 1.0);
    assert!(bad_seen.lock().unwrap().is_empty(), "nothing was sent to the rogue trunk");
    // With no other trunk, the caller gets 503 (as if the trunk had said
    // so, RFC 3261 §16.9), again before the timeout.
    // (Another caller: this one does not ACK, so the 503 is repeated to it.)
    let lone = UdpUa::bind(0);
    let sent = Instant::now();
    lone.send(&invite("sip:6001@127.0.0.1", "UDP", lone.local(), "tls-trunk-3"), t.udp());
    let (r, _) = lone.recv().expect("an answer");
    let took = sent.elapsed();
    assert_eq!(r.code(), Some(503));
    assert!(took < soon, "answered after {took:?}, not well before invite_timeout_ms = {}", t.invite_timeout_ms);
    assert!(t.metric("sbc_tls_handshake_failures_total") >= 2.0);
    assert!(bad_seen.lock().unwrap().is_empty());
    // The good trunk carries a call over mutual TLS, with the configured SNI.
    caller.send(&invite("sip:8001@127.0.0.1", "UDP", caller.local(), "tls-trunk-2"), t.udp());
    let (ok, _) = caller.recv().expect("the TLS trunk answers");
    assert_eq!(ok.code(), Some(200));
    assert_eq!(good_seen.lock().unwrap().first().cloned().flatten().as_deref(), Some("carrier.test"));
    let rr = ok.header_values("record-route");
    assert_eq!(rr.len(), 2, "UDP caller, TLS trunk: {rr:?}");
    assert!(rr.iter().any(|r| r.contains("transport=tls")), "{rr:?}");
}

#[test]
fn a_client_that_never_finishes_the_handshake_is_closed_and_others_are_served() {
    let mut t = Test::new("tls-stall");
    t.start("tls_handshake_timeout_ms = 1000", "");
    let mut silent = TcpStream::connect(t.tls).unwrap();
    silent.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // Another client is served meanwhile.
    let mut phone = TlsPhone::connect(t.tls, &t.ca);
    let local = phone.local;
    phone.send(
        format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-o1\r\nMax-Forwards: 70\r\n\
             From: <sip:carol@127.0.0.1>;tag=o1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(phone.recv().and_then(|m| m.code()), Some(200));
    // The silent one is closed by the sbc after the timeout.
    let start = Instant::now();
    let mut b = [0u8; 16];
    let closed = loop {
        match silent.read(&mut b) {
            Ok(0) => break true,
            Ok(_) => break false,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if start.elapsed() > Duration::from_secs(5) {
                    break false;
                }
            }
            Err(_) => break true,
        }
    };
    assert!(closed, "the sbc closed the stalled connection");
    assert!(start.elapsed() >= Duration::from_millis(500), "not before the timeout");
    assert!(
        testkit::wait_until(WAIT, Duration::from_millis(100), || t.metric("sbc_tls_handshake_timeouts_total") == 1.0)
    );
    assert_eq!(t.metric("sbc_tls_handshake_failures_total"), 0.0);
}

/// Registers alice over `proto` (a Contact nobody listens on), calls her
/// from UDP, and expects the INVITE over her own connection; once that
/// connection closes, her binding is gone and a call gets 480.
fn registered_phone_is_reached_over_its_connection(proto: &str) {
    let mut t = Test::new(&format!("{}-reg", proto.to_ascii_lowercase()));
    t.start("", "");
    let (mut phone, port, param) = if proto == "TLS" {
        (TlsPhone::connect(t.tls, &t.ca), t.tls.port(), ";transport=tls")
    } else {
        (TlsPhone::connect_tcp(t.udp()), t.p.sip, ";transport=tcp")
    };
    let contact = format!("sip:alice@192.0.2.55:5061;transport={}", proto.to_ascii_lowercase());
    phone.send(
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{proto} 192.0.2.55:5061;branch=z9hG4bK-r1;rport\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@127.0.0.1>;tag=r1\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: reg-1\r\nCSeq: 1 REGISTER\r\n\
             Contact: <{contact}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(phone.recv().and_then(|m| m.code()), Some(200), "registered");
    let caller = UdpUa::bind(0);
    caller.send(&invite("sip:alice@127.0.0.1", "UDP", caller.local(), "reg-call-1"), t.udp());
    let inv = phone.recv().expect("the INVITE arrives over the phone's own connection");
    assert_eq!(inv.request_uri(), Some(contact.as_str()));
    let top = inv.top_via().unwrap();
    assert_eq!((top.transport.as_str(), top.port), (proto, Some(port)));
    assert_eq!(
        inv.header_values("record-route"),
        vec![format!("<sip:127.0.0.1:{port}{param};lr>"), format!("<sip:127.0.0.1:{};lr>", t.p.sip)]
    );
    phone.send(&answer(&inv, 200, &contact));
    let (ok, _) = caller.recv().expect("the answer reaches the caller");
    assert_eq!(ok.code(), Some(200));
    // The phone goes away: its binding goes with its connection, and the
    // sbc does not dial the address the connection came from.
    drop(phone);
    assert!(testkit::wait_until(WAIT, Duration::from_millis(100), || t.metric("sbc_registrar_bindings") == 0.0));
    caller.send(&invite("sip:alice@127.0.0.1", "UDP", caller.local(), "reg-call-2"), t.udp());
    let (r, _) = caller.recv().expect("an answer");
    assert_eq!(r.code(), Some(480));
    assert_eq!(t.metric("sbc_sip_connections"), 0.0, "no connection was opened toward the phone");
}

#[test]
fn a_phone_registered_over_tls_is_called_over_that_connection_then_480_once_it_closed() {
    registered_phone_is_reached_over_its_connection("TLS");
}

#[test]
fn a_phone_registered_over_tcp_is_called_over_that_connection_then_480_once_it_closed() {
    registered_phone_is_reached_over_its_connection("TCP");
}

/// A baresip configuration directory `dir/NAME` listening on `listen`,
/// with one account line; audio is a sine source and the ALSA null sink.
fn baresip_conf(dir: &TestDir, name: &str, listen: &str, account: &str, ca_file: &str) -> String {
    let conf = dir.join(name);
    std::fs::create_dir_all(&conf).unwrap();
    let config = format!(
        "poll_method epoll\nsip_listen {listen}\nsip_cafile {ca_file}\n\
         audio_player alsa,null\naudio_source ausine,440\naudio_alert alsa,null\n\
         ausrc_srate 48000\nauplay_srate 48000\nausrc_channels 2\nauplay_channels 2\n\
         module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule ausine.so\nmodule alsa.so\n\
         module_app account.so\nmodule_app menu.so\n"
    );
    std::fs::write(conf.join("config"), config).unwrap();
    std::fs::write(conf.join("accounts"), format!("{account}\n")).unwrap();
    conf.display().to_string()
}

/// baresip in `host`'s namespace with config `conf`, verbose, then `args`.
fn baresip(lab: &RealmLab, host: Host, dir: &TestDir, name: &str, conf: &str, args: &[&str]) -> support::lab::Proc {
    let mut cmd = vec!["baresip", "-v", "-f", conf];
    cmd.extend_from_slice(args);
    support::lab::spawn_in(lab.ns(host).name(), dir.path(), name, &cmd)
}

/// The exchanges of `method` in a baresip log written with `-s` (SIP
/// trace), in order: a request as `METHOD`, or `METHOD auth=USER` when it
/// carries credentials (Authorization or Proxy-Authorization), and a final
/// response as its code (provisional ones left out).
fn sip_trace(log: &str, method: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Each traced message: a `#` line, a `PROTO SRC -> DST` line, then the
    // message with CRLF line ends.
    for block in log.split("#\n").skip(1) {
        let mut lines = block.lines().skip(1).map(|l| l.trim_end_matches('\r'));
        let Some(start) = lines.next() else { continue };
        let mut cseq = None;
        let mut user = None;
        for l in lines.take_while(|l| !l.is_empty()) {
            let Some((name, value)) = l.split_once(':') else { continue };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "cseq" {
                cseq = value.split_whitespace().nth(1).map(str::to_owned);
            } else if name == "authorization" || name == "proxy-authorization" {
                let u = value.split_once("username=\"").and_then(|(_, r)| r.split_once('"'));
                user = Some(u.map_or("?", |(u, _)| u).to_owned());
            }
        }
        if cseq.as_deref() != Some(method) {
            continue;
        }
        if let Some(code) = start.strip_prefix("SIP/2.0 ").and_then(|r| r.get(..3)) {
            if !code.starts_with('1') {
                out.push(code.to_owned());
            }
        } else if start.starts_with(method) {
            out.push(user.map_or_else(|| method.to_owned(), |u| format!("{method} auth={u}")));
        }
    }
    out
}

/// Whether `trace` begins with `want`.
fn begins(trace: &[String], want: &[&str]) -> bool {
    trace.len() >= want.len() && trace.iter().zip(want).all(|(t, w)| t == w)
}

/// The real phones: baresip phones inside register with the sbc over TLS
/// with digest (401, then credentials) and call across the border to a
/// baresip carrier on UDP (407, then credentials: the toll path), and the
/// carrier, trusted by its address, calls a phone back without a
/// challenge, over the connection the phone registered on; both calls
/// carry RTP both ways through the relay. Then a phone with a wrong
/// password gets neither a registration nor a call to the carrier.
#[test]
fn baresip_registers_with_digest_and_calls_over_tls_across_the_border() {
    use std::net::IpAddr;
    if !testkit::env::require_root_and("baresip over TLS in namespaces", &["ip", "baresip"]) {
        return;
    }
    let dir = TestDir::new("tls-baresip");
    let lab = RealmLab::new("tlsbs").unwrap_or_else(|e| panic!("building the lab: {e}"));
    lab.check().unwrap_or_else(|e| panic!("the lab is not what it should be: {e}"));
    let ca = Ca::new();
    let (cert, key) = ca.issue(&dir, "sbc", &[realms::SBC_INSIDE]);
    let ca_file = ca.write_ca(&dir, "ca.pem");
    let (inside, outside, carrier) = (realms::SBC_INSIDE, realms::SBC_OUTSIDE, realms::CARRIER);
    // The digest realm is the first domain. baresip 1.0 gives up on a
    // challenge list that names SHA-256 at all: MD5 only.
    let mut users = String::new();
    for (user, pw) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        users.push_str(&sbc::auth::users::line_for(user, "sbc.example", pw));
        users.push('\n');
    }
    let users = dir.write("users.txt", users);
    // The wrong password's phone shares alice's address, and baresip
    // retries its REGISTER at each new challenge: the guard would ban the
    // address (reason `auth`) before the test sees the challenges, so
    // failed logins do not ban here (bans are tested in tests/guard.rs).
    let cfg = format!(
        "[sip]\ndomains = [\"sbc.example\", \"{inside}\"]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n\
         [[realm]]\nname = \"inside\"\nlisten = \"{inside}:5060\"\ntls_listen = \"{inside}:5061\"\nmedia = \"inside\"\n\
         [[realm]]\nname = \"outside\"\nlisten = \"{outside}:5060\"\nmedia = \"outside\"\n\
         [[trunk]]\nname = \"carrier\"\naddress = \"{carrier}:5060\"\nrealm = \"outside\"\nprobe = false\n\
         [[route]]\nprefix = \"\"\ntrunks = [\"carrier\"]\n\
         [health]\ninterval_ms = 0\n[cdr]\nfile = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:9100\"\n[control]\nsocket = \"off\"\n\
         [relay]\ninterfaces = [\"inside/{inside}\", \"outside/{outside}\"]\nlisten_ng = \"off\"\nport_min = 40000\n\
         port_max = 40999\nworkers = 1\ntimeout = 60\nmetrics = \"off\"\n\
         [auth]\nusers_file = \"{}\"\nalgorithms = [\"MD5\"]\n\
         [guard]\nauth_failures = 0\n",
        dir.join("cdr.jsonl").display(),
        users.display()
    );
    let cfg_path = dir.write("sbc.toml", cfg);
    let mut cmd = lab.sbc.command(env!("CARGO_BIN_EXE_sbc"));
    cmd.args(["run", "--config"]).arg(&cfg_path);
    let _sbc = testkit::ChildGuard::spawn("sbc", &mut cmd, dir.path());
    let phone_ip: IpAddr = realms::PHONE.parse().unwrap();
    let sbc_sip = SocketAddr::new(inside.parse().unwrap(), 5060);
    let up = (0..20).any(|_| {
        lab.run_in(Host::Inside, move || {
            testkit::sip::sip_options_from(phone_ip, sbc_sip, Duration::from_millis(500)).is_some()
        })
    });
    assert!(up, "the sbc answers OPTIONS inside");
    let metric = |name: &'static str| {
        lab.run_in(Host::Sbc, move || testkit::metrics::metric_spec(SocketAddr::from(([127, 0, 0, 1], 9100)), name))
    };
    let log = |p: &support::lab::Proc| std::fs::read_to_string(&p.log).unwrap_or_default();
    // The carrier answers every call (UDP, no registration).
    let carrier_conf = baresip_conf(
        &dir,
        "carrier",
        &format!("{carrier}:5060"),
        &format!("<sip:carrier@{carrier}>;regint=0;answermode=auto"),
        &ca_file,
    );
    let carrier_ua = baresip(&lab, Host::Outside, &dir, "carrier", &carrier_conf, &[]);
    // Alice registers over TLS, with digest, and answers.
    let alice_conf = baresip_conf(
        &dir,
        "alice",
        &format!("{}:5070", realms::PHONE),
        &format!("<sip:alice@{inside}:5061;transport=tls>;auth_pass=alice-pw;regint=300;answermode=auto"),
        &ca_file,
    );
    let alice = baresip(&lab, Host::Inside, &dir, "alice", &alice_conf, &["-s"]);
    assert!(
        testkit::wait_until(Duration::from_secs(10), Duration::from_millis(200), || metric("sbc_registrar_bindings")
            == 1.0),
        "alice registered over TLS"
    );
    assert_eq!(metric("sbc_sip_connections"), 1.0, "over her own connection to the TLS port");
    let want = ["REGISTER", "401", "REGISTER auth=alice", "200"];
    assert!(
        testkit::wait_until(WAIT, Duration::from_millis(100), || begins(&sip_trace(&log(&alice), "REGISTER"), &want)),
        "alice's REGISTER is challenged, then accepted with her credentials: {:?}",
        sip_trace(&log(&alice), "REGISTER")
    );
    assert_eq!((metric("sbc_auth_challenges_total"), metric("sbc_auth_successes_total")), (1.0, 1.0));
    // The carrier calls alice: UDP outside, TLS inside over her connection;
    // the carrier is trusted by its address, so not challenged.
    let pstn_conf = baresip_conf(
        &dir,
        "pstn",
        &format!("{carrier}:5080"),
        &format!("<sip:pstn@{carrier}:5080>;regint=0"),
        &ca_file,
    );
    let dial_alice = format!("/dial sip:alice@{outside}");
    let mut pstn = baresip(&lab, Host::Outside, &dir, "pstn", &pstn_conf, &["-e", &dial_alice, "-t", "8"]);
    assert!(pstn.wait_exit(Duration::from_secs(20)), "the carrier's caller ends its call");
    assert_eq!(metric("sbc_auth_challenges_total"), 1.0, "the carrier's call was not challenged");
    // Bob, registered over TLS with digest too, calls out to the carrier:
    // the toll path, challenged with 407.
    let bob_conf = baresip_conf(
        &dir,
        "bob",
        &format!("{}:5070", realms::PBX),
        &format!("<sip:bob@{inside}:5061;transport=tls>;auth_pass=bob-pw;regint=300"),
        &ca_file,
    );
    let dial_out = format!("/dial sip:carrier@{inside}:5061");
    let mut bob = baresip(&lab, Host::Inside, &dir, "bob", &bob_conf, &["-s", "-e", &dial_out, "-t", "8"]);
    assert!(bob.wait_exit(Duration::from_secs(20)), "bob ends his call");
    for (who, p) in [("the carrier's caller", &pstn), ("alice", &alice), ("bob", &bob), ("the carrier", &carrier_ua)] {
        assert!(log(p).contains("Call established"), "{who}: no call established");
    }
    let bob_log = log(&bob);
    let (register, invite) = (sip_trace(&bob_log, "REGISTER"), sip_trace(&bob_log, "INVITE"));
    assert!(begins(&register, &["REGISTER", "401", "REGISTER auth=bob", "200"]), "bob registers: {register:?}");
    assert!(
        begins(&invite, &["INVITE", "407", "INVITE auth=bob", "200"]),
        "bob's call to the carrier is challenged, then goes through with his credentials: {invite:?}"
    );
    assert!(metric("sbc_auth_challenges_total") >= 3.0);
    assert!(metric("sbc_auth_successes_total") >= 3.0, "two REGISTERs and the INVITE authenticated");
    assert_eq!(metric("sbc_auth_failures_total"), 0.0);
    let cdr_path = dir.join("cdr.jsonl");
    assert!(
        testkit::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            support::lab::json_lines(&cdr_path).len() >= 2
        }),
        "two CDRs"
    );
    for r in support::lab::json_lines(&cdr_path) {
        assert_eq!(r["final_code"], 200, "{r}");
        let legs = r["relay"].as_array().unwrap_or_else(|| panic!("no relay statistics: {r}"));
        let packets: Vec<u64> = legs.iter().map(|l| l["media"][0]["packets"].as_u64().unwrap_or(0)).collect();
        assert!(
            packets.len() == 2 && packets.iter().all(|&n| n >= 50),
            "RTP both ways through the relay {packets:?}: {r}"
        );
    }
    assert_eq!(metric("sbc_tls_handshake_failures_total"), 0.0);
    // A phone with alice's name and a wrong password: its REGISTER and its
    // call to the carrier are challenged again after its credentials.
    let (registrations, successes) = (metric("sbc_registrations_total"), metric("sbc_auth_successes_total"));
    let carrier_calls = log(&carrier_ua).matches("Call established").count();
    let mallory_conf = baresip_conf(
        &dir,
        "mallory",
        &format!("{}:5072", realms::PHONE),
        &format!("<sip:alice@{inside}:5061;transport=tls>;auth_pass=not-alice-pw;regint=300"),
        &ca_file,
    );
    let mut mallory = baresip(&lab, Host::Inside, &dir, "mallory", &mallory_conf, &["-s", "-e", &dial_out, "-t", "4"]);
    assert!(mallory.wait_exit(Duration::from_secs(15)), "the wrong password's phone quits");
    let mallory_log = log(&mallory);
    for (method, challenge) in [("REGISTER", "401"), ("INVITE", "407")] {
        let trace = sip_trace(&mallory_log, method);
        let tried = trace.iter().position(|t| *t == format!("{method} auth=alice"));
        assert!(
            tried.is_some_and(|i| trace.get(i + 1).map(String::as_str) == Some(challenge)),
            "a wrong password's {method} is challenged again: {trace:?}"
        );
        assert!(!trace.iter().any(|t| t.starts_with('2')), "no {method} of the wrong password succeeds: {trace:?}");
    }
    assert!(!mallory_log.contains("Call established"), "the wrong password's call went through");
    assert_eq!(log(&carrier_ua).matches("Call established").count(), carrier_calls, "the carrier got no call");
    assert_eq!(metric("sbc_registrations_total"), registrations);
    assert_eq!(metric("sbc_auth_successes_total"), successes);
    assert!(metric("sbc_auth_failures_total") >= 2.0);
    drop(alice);
    drop(carrier_ua);
    support::lab::remove_unless_failing(dir.path());
}
