//! Trunk failover (sequential forking, RFC 3261 §16.6): the INVITE moves to
//! the next trunk when one times out, answers with a failover code, or
//! cannot be reached (a transport error, RFC 3261 §16.9: at once).

use std::time::Duration;

use super::sip::{respond, Request};
use super::{addr, only_to, Harness, Sent, CALLER, TRUNK_A, TRUNK_B};
use crate::sip::Message;
use crate::transport::{Flow, Inbound, Proto};

fn branch(m: &Message) -> String {
    m.top_via().and_then(|v| v.branch().map(str::to_owned)).unwrap()
}

#[test]
fn a_trunk_that_does_not_answer_is_left_for_the_next_one() {
    let mut h = Harness::new();
    let out = h.send(CALLER, &Request::new("INVITE", "c6").sdp(6000).build());
    let first = only_to(&out, TRUNK_A).msg.clone();
    // Timer A: the INVITE is retransmitted to trunk a at 0.5 s and 1.5 s.
    for step in [500, 1000] {
        let out = h.advance(Duration::from_millis(step));
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(branch(&only_to(&out, TRUNK_A).msg), branch(&first), "a retransmission");
    }
    // invite_timeout (2 s) passes without a response: trunk b gets the
    // INVITE on a new branch, with the offer as anchored once.
    let out = h.advance(Duration::from_millis(499));
    assert!(out.is_empty(), "{out:#?}");
    let out = h.advance(Duration::from_millis(1));
    assert_eq!(out.len(), 1, "the caller hears nothing yet: {out:#?}");
    let second = only_to(&out, TRUNK_B).msg.clone();
    assert_eq!(second.request_uri(), Some("sip:1000@127.0.0.1:5080"));
    assert_ne!(branch(&second), branch(&first));
    assert_eq!(second.body, first.body);
    assert_eq!(h.relay.calls.lock().unwrap().len(), 1, "one offer for both branches");
    // Trunk a is no longer retransmitted to.
    let out = h.advance(Duration::from_millis(1500));
    assert!(out.iter().all(|s| s.dest != super::addr(TRUNK_A)), "{out:#?}");

    let out = h.send(TRUNK_B, &respond(&second, 200, Some(7000)));
    assert_eq!(only_to(&out, CALLER).code(), 200);
    assert_eq!(h.gauge(|m| &m.call_answers), 1);
}

#[test]
fn a_503_from_the_first_trunk_sends_the_invite_to_the_next() {
    let mut h = Harness::new();
    let out = h.send(CALLER, &Request::new("INVITE", "c7").sdp(6000).build());
    let first = only_to(&out, TRUNK_A).msg.clone();
    let out = h.send(TRUNK_A, &respond(&first, 503, None));
    assert_eq!(out.len(), 2, "{out:#?}");
    let ack = only_to(&out, TRUNK_A);
    assert_eq!(ack.method(), "ACK");
    assert_eq!(branch(&ack.msg), branch(&first));
    let second = only_to(&out, TRUNK_B).msg.clone();
    assert_eq!(second.method(), Some(&crate::sip::Method::Invite));

    let out = h.send(TRUNK_B, &respond(&second, 180, None));
    assert_eq!(only_to(&out, CALLER).code(), 180);
    let out = h.send(TRUNK_B, &respond(&second, 200, Some(7000)));
    assert_eq!(only_to(&out, CALLER).code(), 200);
    assert_eq!(h.gauge(|m| &m.call_failures), 0);
    assert_eq!(h.gauge(|m| &m.dialogs), 1);
}

#[test]
fn when_every_trunk_fails_the_caller_gets_the_last_code() {
    let mut h = Harness::new();
    let out = h.send(CALLER, &Request::new("INVITE", "c8").sdp(6000).build());
    let first = only_to(&out, TRUNK_A).msg.clone();
    let out = h.send(TRUNK_A, &respond(&first, 503, None));
    let second = only_to(&out, TRUNK_B).msg.clone();
    let out = h.send(TRUNK_B, &respond(&second, 500, None));
    assert_eq!(only_to(&out, TRUNK_B).method(), "ACK");
    assert_eq!(only_to(&out, CALLER).code(), 500);
    assert_eq!(h.gauge(|m| &m.call_failures), 1);
    assert_eq!(*h.relay.deleted.lock().unwrap(), vec!["c8".to_owned()]);
}

/// What the proxy sent, with the transport of each message (the
/// harness's own drain takes UDP only).
fn drain(h: &mut Harness) -> Vec<(Proto, Sent)> {
    let out = h.proxy.drain_output().into_iter();
    out.map(|o| (o.proto, Sent { dest: o.dest, realm: o.realm, msg: Message::parse(&o.data).unwrap() })).collect()
}

/// The harness with trunk `a` (and `b` too when `both`) reached over TCP.
fn tcp_trunks(both: bool) -> Harness {
    let mut toml = Harness::config().replace("transport = \"udp\"", "transport = \"tcp\"");
    if both {
        toml = toml.replace("name = \"b\"\n", "name = \"b\"\ntransport = \"tcp\"\n");
    }
    Harness::with_config(&toml)
}

/// Delivers `data` from `src` over `proto` and returns what was sent.
fn deliver(h: &mut Harness, src: &str, proto: Proto, data: &[u8]) -> Vec<(Proto, Sent)> {
    h.proxy.handle(Inbound { data: data.to_vec(), src: addr(src), proto, realm: 0 }, h.now);
    drain(h)
}

/// The one message sent to `dest`, and its transport.
fn one_to(out: &[(Proto, Sent)], dest: &str) -> (Proto, Message) {
    let to: Vec<&(Proto, Sent)> = out.iter().filter(|(_, s)| s.dest == addr(dest)).collect();
    assert_eq!(to.len(), 1, "one message to {dest}, got {out:#?}");
    (to[0].0, to[0].1.msg.clone())
}

#[test]
fn a_transport_error_toward_the_first_trunk_fails_over_at_once() {
    let mut h = tcp_trunks(false);
    let out = deliver(&mut h, CALLER, Proto::Udp, &Request::new("INVITE", "t1").sdp(6000).build());
    let (proto, first) = one_to(&out, TRUNK_A);
    assert_eq!(proto, Proto::Tcp);
    // The connection to trunk a is refused (or its TLS handshake fails):
    // no time passes, and trunk b has the INVITE on a new branch.
    h.proxy.transport_error(addr(TRUNK_A), Proto::Tcp, 0, h.now);
    let out = drain(&mut h);
    assert_eq!(out.len(), 1, "the caller hears nothing yet: {out:#?}");
    let (proto, second) = one_to(&out, TRUNK_B);
    assert_eq!((proto, second.method()), (Proto::Udp, Some(&crate::sip::Method::Invite)));
    assert_ne!(branch(&second), branch(&first));
    assert_eq!(second.body, first.body, "the offer as anchored once");
    assert_eq!(h.relay.calls.lock().unwrap().len(), 1);
    // Trunk a's health counts a failure, as for a timeout.
    assert_eq!(h.proxy.core.trunks[0].health.counts().0, 1);
    assert!(h.metrics.render().contains("outcome=\"timeout\""), "{}", h.metrics.render());
    // Nothing more goes to trunk a (b's INVITE is retransmitted), and b answers.
    let out = h.advance(Duration::from_millis(1900));
    assert!(!out.is_empty() && out.iter().all(|s| s.dest == addr(TRUNK_B)), "{out:#?}");
    let out = h.send(TRUNK_B, &respond(&second, 200, Some(7000)));
    assert_eq!(only_to(&out, CALLER).code(), 200);
    assert_eq!((h.gauge(|m| &m.call_answers), h.gauge(|m| &m.call_failures)), (1, 0));
}

#[test]
fn a_transport_error_toward_the_last_target_answers_503_at_once() {
    let mut h = tcp_trunks(true);
    let out = deliver(&mut h, CALLER, Proto::Udp, &Request::new("INVITE", "t2").sdp(6000).build());
    one_to(&out, TRUNK_A);
    h.proxy.transport_error(addr(TRUNK_A), Proto::Tcp, 0, h.now);
    let (proto, _) = one_to(&drain(&mut h), TRUNK_B);
    assert_eq!(proto, Proto::Tcp);
    // An error toward another realm's or transport's connection is not this one.
    h.proxy.transport_error(addr(TRUNK_B), Proto::Tls, 0, h.now);
    h.proxy.transport_error(addr(TRUNK_B), Proto::Tcp, 1, h.now);
    assert!(drain(&mut h).is_empty());
    h.proxy.transport_error(addr(TRUNK_B), Proto::Tcp, 0, h.now);
    let out = drain(&mut h);
    let (_, up) = one_to(&out, CALLER);
    assert_eq!(up.code(), Some(503), "as if the trunk had answered 503 (RFC 3261 §16.9)");
    assert_eq!(h.gauge(|m| &m.call_failures), 1);
    assert_eq!(*h.relay.deleted.lock().unwrap(), vec!["t2".to_owned()]);
}

/// A phone registered over TCP from this address.
const PHONE: &str = "192.0.2.20:43000";

/// Registers user 1000 over TCP from [`PHONE`]; returns its flow.
fn register_over_tcp(h: &mut Harness) -> Flow {
    let register = "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.2:5062;branch=z9hG4bK-treg;rport\r\n\
        Max-Forwards: 70\r\nFrom: <sip:1000@127.0.0.1>;tag=r1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: treg\r\n\
        CSeq: 1 REGISTER\r\nContact: <sip:1000@10.0.0.2:5062;transport=tcp>\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n";
    let out = deliver(h, PHONE, Proto::Tcp, register.as_bytes());
    assert_eq!(one_to(&out, PHONE).1.code(), Some(200));
    Flow { realm: 0, proto: Proto::Tcp, peer: addr(PHONE) }
}

#[test]
fn a_call_ringing_over_a_phones_connection_ends_at_once_when_it_closes() {
    let mut h = Harness::new();
    let flow = register_over_tcp(&mut h);
    assert_eq!(h.proxy.binding_flows(h.now), vec![flow], "what an HA takeover loses");
    let out = deliver(&mut h, CALLER, Proto::Udp, &Request::new("INVITE", "t3").sdp(6000).build());
    let (proto, inv) = one_to(&out, PHONE);
    assert_eq!(proto, Proto::Tcp, "over the phone's own connection");
    let ringing = inv.response_with_tag(180, "Ringing", "p1");
    let out = deliver(&mut h, PHONE, Proto::Tcp, &ringing.to_bytes());
    assert_eq!(one_to(&out, CALLER).1.code(), Some(180));
    // The connection closes: the binding goes, and the call does not wait
    // for timer C.
    h.proxy.flow_closed(flow);
    let out = drain(&mut h);
    assert_eq!(one_to(&out, CALLER).1.code(), Some(503), "{out:#?}");
    assert!(h.proxy.binding_flows(h.now).is_empty());
    assert_eq!(h.gauge(|m| &m.bindings), 0);
    // The next call takes the static route: nothing goes to the phone's address.
    let out = deliver(&mut h, CALLER, Proto::Udp, &Request::new("INVITE", "t4").sdp(6002).build());
    one_to(&out, TRUNK_A);
    assert!(out.iter().all(|(_, s)| s.dest != addr(PHONE)), "{out:#?}");
}

#[test]
fn bindings_taken_over_name_the_connections_the_new_active_does_not_hold() {
    let mut old = Harness::new();
    let flow = register_over_tcp(&mut old);
    let mut new = Harness::new();
    assert_eq!(new.proxy.import_bindings(&old.proxy.dump_bindings(old.now), new.now), 1);
    assert_eq!(new.gauge(|m| &m.bindings), 1);
    assert_eq!(new.proxy.binding_flows(new.now), vec![flow]);
    // The signaling loop has the transport count them as closed, which
    // reports them back as closed flows: the bindings go, and a call to
    // the user does not try the phone's address.
    new.proxy.flow_closed(flow);
    assert_eq!(new.gauge(|m| &m.bindings), 0);
    let out = deliver(&mut new, CALLER, Proto::Udp, &Request::new("INVITE", "t5").sdp(6000).build());
    one_to(&out, TRUNK_A);
    assert!(out.iter().all(|(_, s)| s.dest != addr(PHONE)), "{out:#?}");
}
