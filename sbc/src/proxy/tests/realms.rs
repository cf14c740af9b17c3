//! A call across two realms: the caller in `inside` (realm 0), trunk `a`
//! in `outside` (realm 1, advertised as 203.0.113.7). Each message leaves
//! from the realm of its destination, and what one realm sees of the
//! other is only the sbc.

use super::sip::{respond, Request};
use super::{only_to, Harness, CALLER, TRUNK_A};
use crate::sip::Message;

const OUTSIDE: &str = "203.0.113.7";

/// Realm `inside` on 127.0.0.1:5060, realm `outside` on 127.0.0.2:5060
/// (advertised as [`OUTSIDE`]); trunk `a` is outside, `b` inside.
fn two_realms() -> Harness {
    let toml = Harness::config()
        .replace("[sip]\nlisten = \"127.0.0.1:5060\"", "[sip]")
        .replace(
            "[registrar]",
            "[[realm]]\nname = \"inside\"\nlisten = \"127.0.0.1:5060\"\nmedia = \"inside\"\n\
             [[realm]]\nname = \"outside\"\nlisten = \"127.0.0.2:5060\"\nadvertise = \"203.0.113.7\"\nmedia = \"outside\"\n\
             [registrar]",
        )
        .replace("weight = 1\n", "weight = 1\nrealm = \"outside\"\n")
        .replace("interfaces = [\"127.0.0.1\"]", "interfaces = [\"inside/127.0.0.1\", \"outside/127.0.0.2!203.0.113.7\"]");
    Harness::with_config(&toml)
}

/// No private (inside) address in the headers that route or in the SDP.
fn shows_nothing_inside(m: &Message) {
    let text = String::from_utf8_lossy(&m.to_bytes()).into_owned();
    for name in ["via", "record-route", "contact", "route"] {
        for v in m.header_values(name) {
            assert!(!v.contains("127.0.0.1") && !v.contains("10.0.0.1"), "{name}: {v} in\n{text}");
        }
    }
    assert!(!String::from_utf8_lossy(&m.body).contains("10.0.0.1"), "{text}");
}

#[test]
fn a_call_crosses_the_border_and_each_side_sees_only_the_sbc() {
    let mut h = two_realms();
    let out = h.send_in(0, CALLER, &Request::new("INVITE", "r1").sdp(6000).build());
    assert_eq!(only_to(&out, CALLER).realm, 0, "100 Trying back out of the inside socket");
    let fwd = only_to(&out, TRUNK_A);
    assert_eq!(fwd.realm, 1, "the INVITE leaves from the outside socket");
    let vias = fwd.msg.vias();
    assert_eq!(vias.len(), 1, "only our Via goes outside: {vias:?}");
    assert_eq!((vias[0].host.as_str(), vias[0].port), (OUTSIDE, Some(5060)));
    assert_eq!(
        fwd.msg.header_values("record-route"),
        vec!["<sip:203.0.113.7:5060;lr>"],
        "the outside sees only our outside entry"
    );
    assert_eq!(fwd.msg.header("contact"), Some("<sip:alice@203.0.113.7:5060>"));
    assert_eq!(
        h.relay.directions.lock().unwrap().clone(),
        vec![[Some("inside".to_owned()), Some("outside".to_owned())]],
        "the caller's leg on the inside interface, the callee's outside"
    );
    let invite = fwd.msg.clone();

    // The answer comes back with the caller's own Vias and our inside Contact.
    let out = h.send_in(1, TRUNK_A, &respond(&invite, 200, Some(7000)));
    let ok = only_to(&out, CALLER);
    assert_eq!(ok.realm, 0);
    let vias = ok.msg.vias();
    assert_eq!(vias.len(), 1);
    assert_eq!((vias[0].host.as_str(), vias[0].port, vias[0].received()), ("10.0.0.1", Some(5062), Some("192.0.2.10")));
    assert_eq!(ok.msg.header("contact"), Some("<sip:1000@127.0.0.1:5060>"), "the trunk's address is hidden");
    assert_eq!(
        ok.msg.header_values("record-route"),
        vec!["<sip:127.0.0.1:5060;lr>"],
        "the inside sees our inside entry"
    );
    assert!(!String::from_utf8_lossy(&ok.msg.to_bytes()).contains("127.0.0.1:5070"), "{:?}", ok.msg);
    let ok = ok.msg.clone();

    // ACK and BYE from the caller reach the trunk's real Contact, out of the outside socket.
    let out = h.send_in(0, CALLER, &Request::new("ACK", "r1").in_dialog(&ok).build());
    let ack = only_to(&out, TRUNK_A);
    assert_eq!((ack.realm, ack.msg.request_uri()), (1, Some("sip:1000@127.0.0.1:5070")));
    shows_nothing_inside(&ack.msg);
    let bye = Request::new("BYE", "r1").in_dialog(&ok).cseq(2).build();
    let out = h.send_in(0, CALLER, &bye);
    let fwd_bye = only_to(&out, TRUNK_A);
    assert_eq!((fwd_bye.realm, fwd_bye.msg.request_uri()), (1, Some("sip:1000@127.0.0.1:5070")));
    shows_nothing_inside(&fwd_bye.msg);
    let out = h.send_in(1, TRUNK_A, &respond(&fwd_bye.msg, 200, None));
    assert_eq!(only_to(&out, CALLER).realm, 0);
    assert_eq!(only_to(&out, CALLER).msg.vias().len(), 1);
}

#[test]
fn a_request_from_the_far_side_reaches_the_callers_own_contact() {
    let mut h = two_realms();
    let out = h.send_in(0, CALLER, &Request::new("INVITE", "r2").sdp(6000).build());
    let invite = only_to(&out, TRUNK_A).msg.clone();
    let out = h.send_in(1, TRUNK_A, &respond(&invite, 200, Some(7000)));
    let ok = only_to(&out, CALLER).msg.clone();
    h.send_in(0, CALLER, &Request::new("ACK", "r2").in_dialog(&ok).build());
    // The trunk hangs up: its BYE goes to the route set it learned (ours
    // outside) with our Contact as Request-URI.
    let bye = "BYE sip:alice@203.0.113.7:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-t-bye\r\n\
         Route: <sip:203.0.113.7:5060;lr>\r\nMax-Forwards: 70\r\n\
         From: <sip:1000@127.0.0.1>;tag=b1\r\nTo: <sip:alice@10.0.0.1>;tag=a1\r\nCall-ID: r2\r\nCSeq: 1 BYE\r\n\
         Content-Length: 0\r\n\r\n";
    let out = h.send_in(1, TRUNK_A, bye.as_bytes());
    let fwd = only_to(&out, CALLER);
    assert_eq!(fwd.realm, 0, "toward the caller, out of the inside socket");
    assert_eq!(fwd.msg.request_uri(), Some("sip:alice@10.0.0.1:5062"), "the caller's own Contact");
    let vias = fwd.msg.vias();
    assert_eq!(vias.len(), 1, "the trunk's Via is not shown inside: {vias:?}");
    assert_eq!((vias[0].host.as_str(), vias[0].port), ("127.0.0.1", Some(5060)));
    assert_eq!(h.relay.deleted.lock().unwrap().clone(), vec!["r2".to_owned()]);
}

#[test]
fn one_realm_calls_keep_their_vias_and_contact() {
    // Within one realm nothing is hidden (as before realms existed).
    let mut h = Harness::new();
    let out = h.send(CALLER, &Request::new("INVITE", "r3").sdp(6000).build());
    let fwd = only_to(&out, TRUNK_A);
    assert_eq!(fwd.msg.vias().len(), 2);
    assert_eq!(fwd.msg.header("contact"), Some("<sip:alice@10.0.0.1:5062>"));
    assert_eq!(h.relay.directions.lock().unwrap().clone(), vec![[None, None]]);
}

#[test]
fn a_phone_registered_inside_is_called_from_outside() {
    let mut h = two_realms();
    let register = "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK-reg1;rport\r\n\
        Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=r1\r\nTo: <sip:alice@127.0.0.1>\r\nCall-ID: reg1\r\n\
        CSeq: 1 REGISTER\r\nContact: <sip:alice@10.0.0.1:5062>\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n";
    let out = h.send_in(0, CALLER, register.as_bytes());
    assert_eq!((only_to(&out, CALLER).code(), only_to(&out, CALLER).realm), (200, 0));
    let invite = format!(
        "INVITE sip:alice@{OUTSIDE}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-in1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+15550100@carrier.example>;tag=c1\r\nTo: <sip:alice@{OUTSIDE}>\r\n\
         Call-ID: in1\r\nCSeq: 1 INVITE\r\nContact: <sip:+15550100@127.0.0.1:5070>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{}",
        super::sip::sdp("198.51.100.7", 7000).len(),
        super::sip::sdp("198.51.100.7", 7000)
    );
    let out = h.send_in(1, TRUNK_A, invite.as_bytes());
    let fwd = only_to(&out, CALLER);
    assert_eq!(fwd.realm, 0, "the registered phone is reached out of the realm it registered on");
    assert_eq!(fwd.msg.request_uri(), Some("sip:alice@10.0.0.1:5062"));
    assert_eq!(fwd.msg.vias().len(), 1);
    assert_eq!(
        fwd.msg.header("contact"),
        Some("<sip:+15550100@127.0.0.1:5060>"),
        "the carrier's Contact is ours inside"
    );
    assert_eq!(fwd.msg.header_values("record-route"), vec!["<sip:127.0.0.1:5060;lr>"], "only our inside entry");
    assert_eq!(
        h.relay.directions.lock().unwrap().clone(),
        vec![[Some("outside".to_owned()), Some("inside".to_owned())]]
    );
}

#[test]
fn cancel_crosses_with_its_invite_and_the_487_comes_back_inside() {
    let mut h = two_realms();
    let out = h.send_in(0, CALLER, &Request::new("INVITE", "r5").sdp(6000).build());
    let invite = only_to(&out, TRUNK_A).msg.clone();
    let out = h.send_in(1, TRUNK_A, &respond(&invite, 180, None));
    let ringing = only_to(&out, CALLER);
    assert_eq!((ringing.realm, ringing.code()), (0, 180));
    assert_eq!(
        ringing.msg.header("contact"),
        Some("<sip:1000@127.0.0.1:5060>"),
        "the trunk's Contact is hidden in 1xx"
    );
    let cancel = Request::new("CANCEL", "r5").branch("z9hG4bK-INVITE-r5").build();
    let out = h.send_in(0, CALLER, &cancel);
    assert_eq!((only_to(&out, CALLER).realm, only_to(&out, CALLER).code()), (0, 200));
    let down = only_to(&out, TRUNK_A);
    assert_eq!((down.realm, down.method().as_str()), (1, "CANCEL"), "the CANCEL leaves from the INVITE's realm");
    assert_eq!(down.msg.vias().len(), 1, "the CANCEL carries only our Via, like its INVITE");
    shows_nothing_inside(&down.msg);
    let down = down.msg.clone();
    assert!(h.send_in(1, TRUNK_A, &respond(&down, 200, None)).is_empty());
    let out = h.send_in(1, TRUNK_A, &respond(&invite, 487, None));
    let ack = only_to(&out, TRUNK_A);
    assert_eq!((ack.realm, ack.method().as_str()), (1, "ACK"), "the hop-by-hop ACK for the 487, outside");
    let up = only_to(&out, CALLER);
    assert_eq!((up.realm, up.code()), (0, 487));
    assert_eq!(up.msg.vias().len(), 1);
    assert_eq!(up.msg.vias()[0].host, "10.0.0.1", "the caller's own Via is back on the 487");
}

#[test]
fn prack_and_update_in_the_early_dialog_reach_the_trunks_own_contact() {
    let mut h = two_realms();
    let out = h.send_in(0, CALLER, &Request::new("INVITE", "r6").sdp(6000).build());
    let invite = only_to(&out, TRUNK_A).msg.clone();
    let out = h.send_in(1, TRUNK_A, &respond(&invite, 183, Some(7000)));
    let early = only_to(&out, CALLER).msg.clone();
    assert_eq!(early.header("contact"), Some("<sip:1000@127.0.0.1:5060>"));
    for (method, cseq, sdp) in [("PRACK", 2, false), ("UPDATE", 3, true)] {
        let mut req = Request::new(method, "r6").in_dialog(&early).cseq(cseq);
        if sdp {
            req = req.sdp(6002);
        }
        let out = h.send_in(0, CALLER, &req.build());
        let fwd = only_to(&out, TRUNK_A);
        assert_eq!(fwd.realm, 1, "{method}");
        assert_eq!(fwd.msg.request_uri(), Some("sip:1000@127.0.0.1:5070"), "{method} to the trunk's own Contact");
        shows_nothing_inside(&fwd.msg);
        let out = h.send_in(1, TRUNK_A, &respond(&fwd.msg, 200, sdp.then_some(7002)));
        let ok = only_to(&out, CALLER);
        assert_eq!((ok.realm, ok.code()), (0, 200), "{method}");
        assert_eq!(ok.msg.vias()[0].host, "10.0.0.1");
    }
}

#[test]
fn a_retransmitted_2xx_goes_back_inside_with_the_callers_vias() {
    let mut h = two_realms();
    let out = h.send_in(0, CALLER, &Request::new("INVITE", "r7").sdp(6000).build());
    let invite = only_to(&out, TRUNK_A).msg.clone();
    let ok = respond(&invite, 200, Some(7000));
    let first = only_to(&h.send_in(1, TRUNK_A, &ok), CALLER).msg.clone();
    // No ACK yet: the trunk sends its 200 again, outside any transaction.
    let out = h.send_in(1, TRUNK_A, &ok);
    let again = only_to(&out, CALLER);
    assert_eq!((again.realm, again.code()), (0, 200), "out of the inside socket");
    assert_eq!(again.msg.header_values("via"), first.header_values("via"), "the caller's own Vias");
    assert_eq!(again.msg.header_values("record-route"), vec!["<sip:127.0.0.1:5060;lr>"]);
    assert_eq!(again.msg.header("contact"), Some("<sip:1000@127.0.0.1:5060>"));
}
