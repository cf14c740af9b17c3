//! The transaction layer on its own: what it absorbs, what it reports,
//! and how responses find their client transaction by typed key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ClientId, ClientRequest, Endpoint, Event, Failure, TimerConfig};
use crate::metrics::SbcMetrics;
use crate::sip::Message;
use crate::transport::{Inbound, Proto};

const UA: &str = "192.0.2.1:5062";
const NEXT: &str = "127.0.0.1:5070";

fn ep() -> Endpoint {
    Endpoint::new(TimerConfig::default(), Arc::new(SbcMetrics::new(&[])), 7)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn request(method: &str, branch: &str, cseq_method: &str, to_tag: &str) -> Vec<u8> {
    format!(
        "{method} sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@127.0.0.1>{to_tag}\r\nCall-ID: k1\r\n\
         CSeq: 1 {cseq_method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn feed(ep: &mut Endpoint, src: &str, data: Vec<u8>, now: Instant) -> Vec<Event> {
    let inbound = Inbound { data, src: addr(src), proto: Proto::Udp, realm: 0 };
    if ep.admit(&inbound) {
        ep.handle(inbound, now);
    }
    std::iter::from_fn(|| ep.poll_event()).collect()
}

#[test]
fn a_request_is_reported_once_and_its_retransmissions_absorbed() {
    let (mut ep, now) = (ep(), Instant::now());
    let invite = request("INVITE", "z9hG4bKi1", "INVITE", "");
    let ev = feed(&mut ep, UA, invite.clone(), now);
    let [Event::Request { id, .. }] = ev.as_slice() else { panic!("{ev:?}") };
    let out = ep.drain_output();
    assert_eq!(out.len(), 1, "100 Trying");
    assert!(out[0].data.starts_with(b"SIP/2.0 100 "));
    // Same branch, sent-by and method: absorbed, the 100 resent.
    assert!(feed(&mut ep, UA, invite, now).is_empty());
    assert_eq!(ep.drain_output().len(), 1);
    // A 486 goes up; the ACK with the INVITE's branch belongs to it.
    ep.reply(*id, 486, "Busy Here", Vec::new(), now);
    assert!(ep.drain_output()[0].data.starts_with(b"SIP/2.0 486 "));
    assert!(feed(&mut ep, UA, request("ACK", "z9hG4bKi1", "ACK", ";tag=x"), now).is_empty());
    // An ACK on another branch (the ACK for a 2xx) is the call layer's.
    let ev = feed(&mut ep, UA, request("ACK", "z9hG4bKa2", "ACK", ";tag=x"), now);
    assert!(matches!(ev.as_slice(), [Event::Ack { .. }]), "{ev:?}");
}

#[test]
fn responses_match_by_branch_and_cseq_method() {
    let (mut ep, now) = (ep(), Instant::now());
    let ev = feed(&mut ep, UA, request("INVITE", "z9hG4bKi2", "INVITE", ""), now);
    let [Event::Request { id: owner, .. }] = ev.as_slice() else { panic!("{ev:?}") };
    let owner = *owner;
    let out = Message::parse(&request("INVITE", "z9hG4bKdown", "INVITE", "")).unwrap();
    let c = ClientRequest {
        request: out,
        dest: addr(NEXT),
        proto: Proto::Udp,
        realm: 0,
        owner: Some(owner),
        timeout: None,
    };
    let client = ep.start_client(c, now).unwrap();
    ep.drain_output();
    let resp = |code: u16, method: &str| {
        format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKdown\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:bob@127.0.0.1>;tag=b\r\nCall-ID: k1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    let ev = feed(&mut ep, NEXT, resp(180, "INVITE"), now);
    let [Event::Response { id, owner: Some(o), code: 180, .. }] = ev.as_slice() else { panic!("{ev:?}") };
    assert_eq!((*id, *o), (client, owner));
    // Same branch, other CSeq method: another transaction's (here none).
    let ev = feed(&mut ep, NEXT, resp(200, "CANCEL"), now);
    assert!(matches!(ev.as_slice(), [Event::Stray { .. }]), "{ev:?}");
    // A 2xx ends the INVITE client transaction; its retransmission is stray.
    assert!(matches!(feed(&mut ep, NEXT, resp(200, "INVITE"), now).as_slice(), [Event::Response { code: 200, .. }]));
    assert!(matches!(feed(&mut ep, NEXT, resp(200, "INVITE"), now).as_slice(), [Event::Stray { .. }]));
    assert!(ep.drain_output().is_empty(), "a 2xx is not ACKed by the transaction");
}

#[test]
fn an_unanswered_client_transaction_fails_at_its_timeout() {
    let (mut ep, t0) = (ep(), Instant::now());
    let out = Message::parse(&request("OPTIONS", "z9hG4bKo1", "OPTIONS", "")).unwrap();
    let timeout = Some(Duration::from_secs(1));
    let client = ep.start_client(
        ClientRequest { request: out, dest: addr(NEXT), proto: Proto::Udp, realm: 0, owner: None, timeout },
        t0,
    );
    assert_eq!(ep.drain_output().len(), 1);
    assert_eq!(ep.next_deadline(), Some(t0 + Duration::from_millis(500)), "timer E");
    ep.on_timer(t0 + Duration::from_millis(500));
    assert_eq!(ep.drain_output().len(), 1, "retransmitted");
    assert!(ep.poll_event().is_none());
    ep.on_timer(t0 + Duration::from_secs(1));
    let ev: Vec<Event> = std::iter::from_fn(|| ep.poll_event()).collect();
    let [Event::Failed { id, owner: None }] = ev.as_slice() else { panic!("{ev:?}") };
    assert_eq!(Some(*id), client);
    assert_eq!(ep.failure(*id), Some(Failure::Timeout));
    assert!(ep.is_empty());
}

/// Starts a client transaction for `method` (branch `branch`) to `dest`
/// over `proto` from realm 0, with a 30 s failover timer.
fn start(ep: &mut Endpoint, method: &str, branch: &str, dest: &str, proto: Proto, now: Instant) -> ClientId {
    let request = Message::parse(&request(method, branch, method, "")).unwrap();
    let timeout = Some(Duration::from_secs(30));
    let c = ClientRequest { request, dest: addr(dest), proto, realm: 0, owner: None, timeout };
    ep.start_client(c, now).unwrap()
}

#[test]
fn a_transport_error_ends_the_client_transactions_waiting_on_that_destination_at_once() {
    let (mut ep, t0) = (ep(), Instant::now());
    let invite = start(&mut ep, "INVITE", "z9hG4bKt1", NEXT, Proto::Tls, t0);
    let options = start(&mut ep, "OPTIONS", "z9hG4bKt2", NEXT, Proto::Tls, t0);
    // Same address, another transport; another address: not concerned.
    let udp = start(&mut ep, "OPTIONS", "z9hG4bKt3", NEXT, Proto::Udp, t0);
    let other = start(&mut ep, "INVITE", "z9hG4bKt4", "127.0.0.1:5080", Proto::Tls, t0);
    assert_eq!(ep.drain_output().len(), 4);
    assert!(ep.poll_event().is_none());
    // Another realm's connection to the same address is not this one.
    assert_eq!(ep.transport_error(addr(NEXT), Proto::Tls, 1, t0), 0);
    // No time passes: both transactions end now, not at their timeout.
    let at = t0 + Duration::from_millis(40);
    assert_eq!(ep.transport_error(addr(NEXT), Proto::Tls, 0, at), 2);
    let mut failed = Vec::new();
    while let Some(ev) = ep.poll_event() {
        let Event::Failed { id, owner: None } = ev else { panic!("{ev:?}") };
        assert_eq!(ep.failure(id), Some(Failure::Transport), "a transport error, not a timeout");
        failed.push(id);
    }
    assert_eq!(failed, vec![invite, options]);
    assert_eq!(ep.failure(invite), None, "only while its event is the latest polled");
    assert_eq!(ep.failure(options), Some(Failure::Transport), "the latest");
    assert!(ep.drain_output().is_empty(), "nothing is sent for them");
    assert_eq!(ep.len(), 2, "the UDP and the other destination's transactions live on");
    // They still time out as before, reported as timeouts.
    ep.on_timer(t0 + Duration::from_secs(30));
    let mut timed_out = Vec::new();
    while let Some(ev) = ep.poll_event() {
        let Event::Failed { id, .. } = ev else { panic!("{ev:?}") };
        assert_eq!(ep.failure(id), Some(Failure::Timeout));
        timed_out.push(id);
    }
    timed_out.sort_unstable();
    assert_eq!(timed_out, vec![udp, other]);
    // A second report finds nothing left to end.
    assert_eq!(ep.transport_error(addr(NEXT), Proto::Tls, 0, at), 0);
}

#[test]
fn a_transport_error_ends_a_ringing_invite_and_the_server_transactions_answering_there() {
    let (mut ep, now) = (ep(), Instant::now());
    // A request from the UA over its TLS connection, not answered yet.
    ep.handle(
        Inbound { data: request("INVITE", "z9hG4bKs1", "INVITE", ""), src: addr(UA), proto: Proto::Tls, realm: 0 },
        now,
    );
    let Some(Event::Request { id: server, .. }) = ep.poll_event() else { panic!("a request") };
    assert_eq!(ep.drain_output().len(), 1, "100 Trying");
    // An INVITE toward the UA over the same connection, already ringing.
    let ringing = start(&mut ep, "INVITE", "z9hG4bKs2", UA, Proto::Tls, now);
    ep.drain_output();
    let resp = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKs2\r\nFrom: <sip:a@x>;tag=1\r\n\
         To: <sip:bob@127.0.0.1>;tag=b\r\nCall-ID: k1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    ep.handle(Inbound { data: resp.as_bytes().to_vec(), src: addr(UA), proto: Proto::Tls, realm: 0 }, now);
    assert!(matches!(ep.poll_event(), Some(Event::Response { code: 180, .. })));
    assert_eq!(ep.transport_error(addr(UA), Proto::Tls, 0, now), 2);
    let Some(Event::Failed { id, .. }) = ep.poll_event() else { panic!("the ringing INVITE fails too") };
    assert_eq!((id, ep.failure(id)), (ringing, Some(Failure::Transport)));
    assert!(ep.poll_event().is_none(), "a server transaction just ends");
    assert!(ep.is_empty());
    // Its answer has nowhere to go: absorbed.
    ep.reply(server, 486, "Busy Here", Vec::new(), now);
    assert!(ep.drain_output().is_empty());
}

/// `request` with `extra` header lines and a body.
fn with(method: &str, extra: &str, body: &str) -> Vec<u8> {
    let base = String::from_utf8(request(method, "z9hG4bKl1", method, "")).unwrap();
    let base =
        base.replace("Content-Length: 0\r\n\r\n", &format!("{extra}Content-Length: {}\r\n\r\n{body}", body.len()));
    base.into_bytes()
}

#[test]
fn requests_over_a_limit_are_answered_and_counted_before_any_transaction() {
    use crate::sip::{Breach, Limits};
    let metrics = Arc::new(SbcMetrics::new(&[]));
    let mut ep = Endpoint::new(TimerConfig::default(), Arc::clone(&metrics), 7);
    ep.set_limits(Limits { max_headers: 10, max_header_line: 300, max_vias: 2, max_body: 20 });
    let now = Instant::now();
    let long = format!("X-Long: {}\r\n", "a".repeat(300));
    let many: String = (0..4).map(|i| format!("X-{i}: y\r\n")).collect();
    let vias = "Via: SIP/2.0/UDP a;branch=z9hG4bKa, SIP/2.0/UDP b;branch=z9hG4bKb\r\n";
    for (extra, body, breach, status) in [
        (many.as_str(), "", Breach::Headers, "SIP/2.0 400 "),
        (long.as_str(), "", Breach::HeaderLine, "SIP/2.0 513 "),
        (vias, "", Breach::Vias, "SIP/2.0 400 "),
        ("", "012345678901234567890", Breach::Body, "SIP/2.0 413 "),
    ] {
        assert!(feed(&mut ep, UA, with("INVITE", extra, body), now).is_empty(), "{breach:?}");
        let out = ep.drain_output();
        assert_eq!(out.len(), 1, "{breach:?}");
        let text = String::from_utf8_lossy(&out[0].data);
        assert!(text.starts_with(status), "{breach:?}: {text}");
        assert!(text.contains("branch=z9hG4bKl1"), "{text}");
        assert_eq!(metrics.limit_refused_count(breach), 1, "{breach:?}");
        assert!(ep.is_empty(), "no transaction for {breach:?}");
    }
    // Within every limit: an ordinary transaction.
    let ev = feed(&mut ep, UA, with("INVITE", "X-0: y\r\n", "v=0"), now);
    assert!(matches!(ev.as_slice(), [Event::Request { .. }]), "{ev:?}");
    // An ACK and a response over a limit are dropped, and counted.
    let dropped = metrics.dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(feed(&mut ep, UA, with("ACK", &many, ""), now).is_empty());
    let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nContent-Length: 30\r\n\r\n012345678901234567890123456789";
    assert!(feed(&mut ep, NEXT, resp.to_vec(), now).is_empty());
    assert!(ep.drain_output().iter().all(|o| !o.data.starts_with(b"SIP/2.0 4")), "nothing answered");
    assert_eq!(metrics.dropped.load(std::sync::atomic::Ordering::Relaxed), dropped + 2);
    assert_eq!(metrics.limit_refused_count(Breach::Headers), 2);
    assert_eq!(metrics.limit_refused_count(Breach::Body), 2);
}
