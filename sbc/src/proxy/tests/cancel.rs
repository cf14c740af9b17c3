//! CANCEL (RFC 3261 §9, §16.10): answered 200 at once and passed down the
//! pending branch; the race with a 2xx; and the 487 that ends the call.

use super::sip::{respond, Request};
use super::{only_to, Harness, CALLER, RELAY_IP, TRUNK_A};

/// INVITE `call_id` to trunk `a`, 180 back, then the caller's CANCEL.
/// Returns the INVITE and the CANCEL as the trunk got them.
fn ring_then_cancel(h: &mut Harness, call_id: &str) -> (crate::sip::Message, crate::sip::Message) {
    let out = h.send(CALLER, &Request::new("INVITE", call_id).sdp(6000).build());
    let invite = only_to(&out, TRUNK_A).msg.clone();
    let out = h.send(TRUNK_A, &respond(&invite, 180, None));
    assert_eq!(only_to(&out, CALLER).code(), 180);

    let cancel = Request::new("CANCEL", call_id).branch(&format!("z9hG4bK-INVITE-{call_id}")).build();
    let out = h.send(CALLER, &cancel);
    assert_eq!(out.len(), 2, "{out:#?}");
    let answered = only_to(&out, CALLER);
    assert_eq!((answered.code(), answered.method().as_str()), (200, "CANCEL"));
    let down = only_to(&out, TRUNK_A);
    assert_eq!(down.method(), "CANCEL");
    assert_eq!(down.msg.top_via().unwrap().branch(), invite.top_via().unwrap().branch(), "the INVITE branch's CANCEL");
    assert_eq!(down.msg.cseq().map(|c| c.0), Some(1));
    assert_eq!(down.msg.request_uri(), invite.request_uri());
    (invite, down.msg.clone())
}

#[test]
fn a_200_that_crosses_the_cancel_still_gets_through_and_the_call_stands() {
    let mut h = Harness::new();
    let (invite, cancel) = ring_then_cancel(&mut h, "c3");
    // The trunk had answered before the CANCEL reached it.
    let out = h.send(TRUNK_A, &respond(&invite, 200, Some(7000)));
    let ok = only_to(&out, CALLER);
    assert_eq!((ok.code(), ok.method().as_str()), (200, "INVITE"), "a 2xx is always forwarded (§16.7)");
    assert!(ok.body().contains(RELAY_IP));
    let ok = ok.msg.clone();
    // Its answer to the CANCEL (nothing left to cancel) stops here.
    assert!(h.send(TRUNK_A, &respond(&cancel, 200, None)).is_empty());
    // The call is up as far as the proxy is concerned: the caller, which
    // got a 2xx after its CANCEL, ACKs and hangs up with a BYE (§9.1, §15).
    assert_eq!(h.gauge(|m| &m.call_answers), 1);
    assert_eq!(h.gauge(|m| &m.call_failures), 0);
    assert_eq!(h.gauge(|m| &m.dialogs), 1);
    assert!(h.relay.deleted.lock().unwrap().is_empty(), "media stays anchored until the BYE");
    let out = h.send(CALLER, &Request::new("ACK", "c3").in_dialog(&ok).build());
    assert_eq!(only_to(&out, TRUNK_A).method(), "ACK");
    let out = h.send(CALLER, &Request::new("BYE", "c3").cseq(2).in_dialog(&ok).build());
    assert_eq!(only_to(&out, TRUNK_A).method(), "BYE");
    assert_eq!(*h.relay.deleted.lock().unwrap(), vec!["c3".to_owned()]);
    assert_eq!(h.gauge(|m| &m.dialogs), 0);
}

#[test]
fn cancel_before_the_answer_ends_the_call_with_487() {
    let mut h = Harness::new();
    let (invite, cancel) = ring_then_cancel(&mut h, "c4");
    assert!(h.send(TRUNK_A, &respond(&cancel, 200, None)).is_empty());
    let out = h.send(TRUNK_A, &respond(&invite, 487, None));
    assert_eq!(out.len(), 2, "{out:#?}");
    let ack = only_to(&out, TRUNK_A);
    assert_eq!(ack.method(), "ACK", "hop-by-hop ACK for the 487");
    assert_eq!(ack.msg.top_via().unwrap().branch(), invite.top_via().unwrap().branch());
    assert_eq!(ack.msg.to_tag().as_deref(), Some("b1"));
    let terminated = only_to(&out, CALLER);
    assert_eq!(terminated.code(), 487);
    assert_eq!(h.gauge(|m| &m.call_failures), 1);
    assert_eq!(h.gauge(|m| &m.dialogs), 0);
    assert_eq!(*h.relay.deleted.lock().unwrap(), vec!["c4".to_owned()]);
    // The caller's ACK for the 487 belongs to the INVITE transaction: absorbed.
    let ack = Request::new("ACK", "c4").branch("z9hG4bK-INVITE-c4").with_to_tag("b1").build();
    assert!(h.send(CALLER, &ack).is_empty());
    // A retransmitted 487 is ACKed again by the client transaction, not passed up.
    let out = h.send(TRUNK_A, &respond(&invite, 487, None));
    assert_eq!(only_to(&out, TRUNK_A).method(), "ACK");
    assert_eq!(out.len(), 1);
}

#[test]
fn cancel_for_nothing_gets_481() {
    let mut h = Harness::new();
    let out = h.send(CALLER, &Request::new("CANCEL", "c5").build());
    let r = only_to(&out, CALLER);
    assert_eq!((r.code(), r.method().as_str()), (481, "CANCEL"));
    assert_eq!(out.len(), 1);
}
