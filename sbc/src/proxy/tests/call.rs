//! A call through the proxy: INVITE, 100, 180, 200, ACK, BYE; and a
//! re-INVITE inside it.

use super::sip::{respond, Request};
use super::{only_to, Harness, CALLER, RELAY_IP, TRUNK_A};
use crate::sip::Message;

/// Sets up call `call_id` to trunk `a`: returns the INVITE as the trunk got
/// it and the 200 as the caller got it (the ACK is sent too).
fn establish(h: &mut Harness, call_id: &str) -> (Message, Message) {
    let out = h.send(CALLER, &Request::new("INVITE", call_id).sdp(6000).build());
    let invite = only_to(&out, TRUNK_A).msg.clone();
    let out = h.send(TRUNK_A, &respond(&invite, 200, Some(7000)));
    let ok = only_to(&out, CALLER).msg.clone();
    let out = h.send(CALLER, &Request::new("ACK", call_id).in_dialog(&ok).build());
    assert_eq!(only_to(&out, TRUNK_A).method(), "ACK");
    (invite, ok)
}

/// The `m=audio` port of an SDP body.
fn audio_port(m: &Message) -> u16 {
    let body = String::from_utf8_lossy(&m.body);
    let line = body.lines().find(|l| l.starts_with("m=audio ")).expect("an audio line");
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn invite_ringing_answer_ack_bye() {
    let mut h = Harness::new();
    let invite = Request::new("INVITE", "c1").sdp(6000).build();
    let out = h.send(CALLER, &invite);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(only_to(&out, CALLER).code(), 100, "100 Trying to the caller's NAT address (rport)");
    let fwd = only_to(&out, TRUNK_A);
    assert_eq!(fwd.method(), "INVITE");
    assert_eq!(fwd.msg.request_uri(), Some("sip:1000@127.0.0.1:5070"));
    assert_eq!(fwd.msg.max_forwards(), Some(69));
    let vias = fwd.msg.vias();
    assert_eq!(vias.len(), 2, "our Via on top of the caller's");
    assert_eq!((vias[0].host.as_str(), vias[0].port), ("127.0.0.1", Some(5060)));
    assert!(vias[0].branch().unwrap().starts_with("z9hG4bK"));
    assert_eq!(vias[0].rport(), Some(None));
    assert_eq!(vias[1].received(), Some("192.0.2.10"), "received stamped on the caller's Via");
    assert_eq!(vias[1].rport(), Some(Some(40000)));
    assert_eq!(fwd.msg.header_values("record-route"), vec!["<sip:127.0.0.1:5060;lr>"]);
    assert!(fwd.body().contains(&format!("c=IN IP4 {RELAY_IP}\r\n")), "{}", fwd.body());
    assert!(!fwd.body().contains("10.0.0.1"), "the caller's address is anchored away");
    let fwd = fwd.msg.clone();

    let out = h.send(TRUNK_A, &respond(&fwd, 180, None));
    let ringing = only_to(&out, CALLER);
    assert_eq!(ringing.code(), 180);
    assert_eq!(ringing.msg.vias().len(), 1, "our Via is taken off the response");
    // A retransmitted INVITE gets the latest provisional again, and is not forwarded again.
    let out = h.send(CALLER, &invite);
    assert_eq!(only_to(&out, CALLER).code(), 180);
    assert_eq!(out.len(), 1);

    let out = h.send(TRUNK_A, &respond(&fwd, 200, Some(7000)));
    let ok = only_to(&out, CALLER);
    assert_eq!(ok.code(), 200);
    let vias = ok.msg.vias();
    assert_eq!(vias.len(), 1);
    assert_eq!(vias[0].branch(), Some("z9hG4bK-INVITE-c1"));
    assert_eq!(ok.msg.header_values("record-route"), vec!["<sip:127.0.0.1:5060;lr>"]);
    assert!(ok.body().contains(&format!("c=IN IP4 {RELAY_IP}\r\n")), "{}", ok.body());
    assert!(!ok.body().contains("198.51.100.7"), "the trunk's address is anchored away");
    assert_eq!(h.gauge(|m| &m.call_answers), 1);
    assert_eq!(h.gauge(|m| &m.dialogs), 1);
    let ok = ok.msg.clone();

    // The trunk retransmits its 2xx (its transaction here is over): passed
    // on statelessly, with the same anchored SDP.
    let out = h.send(TRUNK_A, &respond(&fwd, 200, Some(7000)));
    let again = only_to(&out, CALLER);
    assert_eq!((again.code(), again.body()), (200, String::from_utf8_lossy(&ok.body).into_owned()));
    // A retransmitted INVITE after the 2xx is absorbed.
    assert!(h.send(CALLER, &invite).is_empty());

    let out = h.send(CALLER, &Request::new("ACK", "c1").in_dialog(&ok).build());
    let ack = only_to(&out, TRUNK_A);
    assert_eq!(ack.method(), "ACK");
    assert_eq!(ack.msg.header("route"), None, "our Route entry is consumed");
    assert_eq!(ack.msg.vias().len(), 2);

    let out = h.send(CALLER, &Request::new("BYE", "c1").cseq(2).in_dialog(&ok).build());
    let bye = only_to(&out, TRUNK_A);
    assert_eq!(bye.method(), "BYE");
    assert_eq!(*h.relay.deleted.lock().unwrap(), vec!["c1".to_owned()], "media deleted on the BYE");
    assert_eq!(h.gauge(|m| &m.dialogs), 0);
    let bye = bye.msg.clone();
    let out = h.send(TRUNK_A, &respond(&bye, 200, None));
    let done = only_to(&out, CALLER);
    assert_eq!((done.code(), done.method().as_str()), (200, "BYE"));
}

#[test]
fn reinvite_in_dialog_reuses_relay_ports() {
    let mut h = Harness::new();
    let (invite, ok) = establish(&mut h, "c2");
    let ports = h.relay.allocated();
    assert_eq!(ports, 2, "one per side");

    let reinvite = Request::new("INVITE", "c2").branch("z9hG4bK-re").cseq(2).in_dialog(&ok).sdp(6002).build();
    let out = h.send(CALLER, &reinvite);
    assert_eq!(only_to(&out, CALLER).code(), 100);
    let fwd = only_to(&out, TRUNK_A);
    assert_eq!(fwd.method(), "INVITE");
    assert_eq!(fwd.msg.to_tag().as_deref(), Some("b1"));
    assert_eq!(fwd.msg.header("record-route"), None, "no Record-Route inside a dialog");
    assert_eq!(audio_port(&fwd.msg), audio_port(&invite), "the callee keeps sending to the same relay port");
    let fwd = fwd.msg.clone();

    let out = h.send(TRUNK_A, &respond(&fwd, 200, Some(7002)));
    let ok2 = only_to(&out, CALLER);
    assert_eq!(ok2.code(), 200);
    assert_eq!(audio_port(&ok2.msg), audio_port(&ok), "the caller keeps sending to the same relay port");
    assert_eq!(h.relay.allocated(), ports, "no new ports for the re-INVITE");
    let calls = h.relay.calls.lock().unwrap();
    let re_offer = &calls[calls.len() - 2];
    assert_eq!(re_offer, &("offer", "c2".to_owned(), "a1".to_owned(), Some("b1".to_owned())));
    drop(calls);
    assert_eq!(h.gauge(|m| &m.call_answers), 1, "a re-INVITE is not a new call");
    assert_eq!(h.gauge(|m| &m.dialogs), 1);
}
