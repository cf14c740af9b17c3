//! The transaction layer on its own: what it absorbs, what it reports,
//! and how responses find their client transaction by typed key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ClientRequest, Endpoint, Event, TimerConfig};
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
    ep.handle(Inbound { data, src: addr(src), proto: Proto::Udp, realm: 0 }, now);
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
    assert!(ep.is_empty());
}
