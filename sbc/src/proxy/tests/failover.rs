//! Trunk failover (sequential forking, RFC 3261 §16.6): the INVITE moves to
//! the next trunk when one times out or answers with a failover code.

use std::time::Duration;

use super::sip::{respond, Request};
use super::{only_to, Harness, CALLER, TRUNK_A, TRUNK_B};
use crate::sip::Message;

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
