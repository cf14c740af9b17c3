//! Edge policy in-process: source ACLs (403 or silence, counted, no state),
//! trunk sources per realm, the SRTP policy (488 for plain RTP, SRTP
//! passed through), and topology hiding toward a trunk (no internal
//! address in any byte it gets, Call-ID mapped both ways, headers
//! stripped).

use super::sip::{respond, sdp, Request};
use super::{only_to, Harness, Sent, CALLER, TRUNK_A, TRUNK_B};
use crate::sip::Message;

/// Trunk `a` moved to a carrier address outside our host, so that the
/// only internal addresses are the caller's.
const CARRIER: &str = "198.51.100.20:5060";

/// What is internal: the caller's private address, its NAT address and an
/// internal proxy on its path.
const INTERNAL: [&str; 3] = ["10.0.0.1", "192.0.2.10", "10.0.0.99"];

/// The harness config with `sip` keys added to `[sip]`, and trunk `a` at
/// [`CARRIER`] with `a_keys`.
fn config(sip: &str, a_keys: &str) -> String {
    let sip = if sip.is_empty() { String::new() } else { format!("{sip}\n") };
    Harness::config().replace("[sip]\n", &format!("[sip]\n{sip}")).replace(
        &format!("name = \"a\"\naddress = \"{TRUNK_A}\""),
        &format!("name = \"a\"\naddress = \"{CARRIER}\"\n{a_keys}"),
    )
}

fn with(sip: &str, a_keys: &str) -> Harness {
    Harness::with_config(&config(sip, a_keys))
}

const OPTIONS: &str = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-o1\r\n\
    Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=o1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o1\r\n\
    CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

#[test]
fn a_denied_source_gets_a_stateless_403_and_is_counted() {
    let mut h = Harness::with_config(&config("deny = [\"192.0.2.0/24\"]", ""));
    let out = h.send(CALLER, &Request::new("INVITE", "acl1").sdp(6000).build());
    let r = only_to(&out, CALLER);
    assert_eq!((r.code(), out.len()), (403, 1), "a 403 and nothing forwarded: {out:#?}");
    assert_eq!(r.msg.call_id(), Some("acl1"));
    assert_eq!(h.proxy.txn.len(), 0, "no transaction for a denied source");
    assert_eq!(h.relay.allocated(), 0);
    // An ACK and a response are never answered, but they are counted.
    assert!(h.send(CALLER, &Request::new("ACK", "acl1").with_to_tag("x").build()).is_empty());
    let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-nope\r\nFrom: <sip:a@b>;tag=1\r\n\
        To: <sip:c@d>;tag=2\r\nCall-ID: acl2\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    assert!(h.send(CALLER, resp.as_bytes()).is_empty());
    assert_eq!(h.metrics.acl_denied_count(0), 3);
    assert!(h.metrics.render().contains("sbc_acl_denied_total{realm=\"default\"} 3"));
    // Another source is not affected.
    let out = h.send("198.51.100.9:5060", OPTIONS.as_bytes());
    assert_eq!(out[0].code(), 200);
    assert_eq!(h.metrics.acl_denied_count(0), 3);
}

#[test]
fn drop_sends_nothing_and_deny_wins_over_allow() {
    let mut h = with("allow = [\"192.0.2.0/24\"]\ndeny = [\"192.0.2.10\"]\nacl_action = \"drop\"", "");
    assert!(h.send(CALLER, &Request::new("INVITE", "acl3").sdp(6000).build()).is_empty());
    assert!(h.send(CALLER, OPTIONS.as_bytes()).is_empty());
    assert_eq!((h.metrics.acl_denied_count(0), h.proxy.txn.len()), (2, 0));
    // On the allow list and not denied.
    assert_eq!(h.send("192.0.2.11:5060", OPTIONS.as_bytes())[0].code(), 200);
    // Not on the allow list: denied, unless it is a trunk's source.
    assert!(h.send("203.0.113.50:5060", OPTIONS.as_bytes()).is_empty());
    assert_eq!(h.send(CARRIER, OPTIONS.as_bytes())[0].code(), 200, "a trunk's sources are allowed in its realm");
    assert_eq!(h.send(TRUNK_B, OPTIONS.as_bytes())[0].code(), 200);
    assert_eq!(h.metrics.acl_denied_count(0), 3);
}

/// Realm `inside` on 127.0.0.1:5060 with `inside` keys, realm `outside` on
/// 127.0.0.2:5060 with `outside` keys; trunk `a` (at [`CARRIER`], with
/// `a_keys`) outside.
fn two_realms(inside: &str, outside: &str, a_keys: &str) -> Harness {
    let toml = config("", a_keys)
        .replace("[sip]\nlisten = \"127.0.0.1:5060\"", "[sip]")
        .replace(
            "[registrar]",
            &format!(
                "[[realm]]\nname = \"inside\"\nlisten = \"127.0.0.1:5060\"\nmedia = \"inside\"\n{inside}\n\
                 [[realm]]\nname = \"outside\"\nlisten = \"127.0.0.2:5060\"\nadvertise = \"203.0.113.7\"\nmedia = \"outside\"\n{outside}\n\
                 [registrar]"
            ),
        )
        .replace("weight = 1\n", "weight = 1\nrealm = \"outside\"\n")
        .replace("interfaces = [\"127.0.0.1\"]", "interfaces = [\"inside/127.0.0.1\", \"outside/127.0.0.2!203.0.113.7\"]");
    Harness::with_config(&toml)
}

#[test]
fn acls_are_per_realm() {
    let mut h = two_realms("", "deny = [\"192.0.2.0/24\"]", "");
    let out = h.send_in(1, CALLER, OPTIONS.as_bytes());
    assert_eq!((out.len(), out[0].code(), out[0].realm), (1, 403, 1), "denied outside");
    let out = h.send_in(0, CALLER, OPTIONS.as_bytes());
    assert_eq!((out.len(), out[0].code()), (1, 200), "the inside has no ACL");
    assert_eq!((h.metrics.acl_denied_count(0), h.metrics.acl_denied_count(1)), (0, 1));
    assert!(h.metrics.render().contains("sbc_acl_denied_total{realm=\"outside\"} 1"));
}

/// An INVITE from the carrier (its Call-ID `cid`) to 1000, with a plain
/// RTP offer.
fn carrier_invite(cid: &str, from: &str) -> Vec<u8> {
    let body = sdp("198.51.100.7", 7000);
    format!(
        "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{cid}\r\nMax-Forwards: 70\r\n\
         From: <sip:+15550100@198.51.100.20>;tag=c1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: {cid}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:+15550100@{from}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn a_request_is_from_a_trunk_only_from_its_sources_in_its_realm() {
    let mut h = two_realms("", "", "sources = [\"198.51.100.0/25\"]\nmedia_security = \"srtp\"");
    // From the carrier's sources in its realm: the trunk's SRTP policy applies.
    let out = h.send_in(1, "198.51.100.5:5060", &carrier_invite("src1", "198.51.100.5:5060"));
    assert!(out.iter().any(|s| s.dest == super::addr("198.51.100.5:5060") && s.code() == 488), "{out:#?}");
    // The same address in the other realm is not the trunk: routed as usual.
    let out = h.send_in(0, "198.51.100.5:5060", &carrier_invite("src2", "198.51.100.5:5060"));
    assert!(out.iter().any(|s| s.method() == "INVITE" && s.dest == super::addr(TRUNK_B)), "{out:#?}");
    // Outside its sources (its own address no longer counts): not the trunk.
    let out = h.send_in(1, "198.51.100.200:5060", &carrier_invite("src3", "198.51.100.200:5060"));
    assert!(out.iter().all(|s| s.code() != 488), "{out:#?}");
    let cfg = &h.proxy.core.cfg;
    let ip = |s: &str| s.parse().unwrap();
    assert_eq!(cfg.trunk_at(ip("198.51.100.5"), 1), Some(0));
    assert_eq!(cfg.trunk_at(ip("198.51.100.5"), 0), None);
    assert_eq!(cfg.trunk_at(ip("127.0.0.1"), 0), Some(1), "trunk b, by its address");
}

/// An SDES-SRTP offer from the caller.
fn srtp_invite(cid: &str) -> Vec<u8> {
    let plain = String::from_utf8(Request::new("INVITE", cid).sdp(6000).build()).unwrap();
    let (head, body) = plain.split_once("\r\n\r\n").unwrap();
    let body = body.replace("RTP/AVP 0\r\n", "RTP/SAVP 0\r\n")
        + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
    let head = head.replace(
        &format!("Content-Length: {}", plain.split_once("\r\n\r\n").unwrap().1.len()),
        &format!("Content-Length: {}", body.len()),
    );
    format!("{head}\r\n\r\n{body}").into_bytes()
}

#[test]
fn an_srtp_trunk_refuses_plain_rtp_with_488_and_takes_srtp() {
    let mut h = with("", "media_security = \"srtp\"");
    // Plain RTP: trunk `a` is passed over, `b` (any) takes the call.
    let out = h.send(CALLER, &Request::new("INVITE", "s1").sdp(6000).build());
    assert!(out.iter().all(|s| s.dest != super::addr(CARRIER)), "{out:#?}");
    only_to(&out, TRUNK_B);
    // An SDES offer goes to `a`.
    let out = h.send(CALLER, &srtp_invite("s2"));
    assert_eq!(only_to(&out, CARRIER).method(), "INVITE");
    // With `b` requiring SRTP too, a plain offer has nowhere to go: 488.
    let toml = config("", "media_security = \"srtp\"") + "media_security = \"srtp\"\n";
    let mut h = Harness::with_config(&toml);
    assert_eq!(h.proxy.core.cfg.trunks[1].policy.media_security, crate::config::MediaSecurity::Srtp);
    let out = h.send(CALLER, &Request::new("INVITE", "s3").sdp(6000).build());
    let r = final_to_caller(&out);
    assert_eq!(r.code(), 488, "{out:#?}");
    assert!(r.msg.header("warning").is_some_and(|w| w.contains("SRTP required")));
    assert_eq!(h.relay.deleted.lock().unwrap().clone(), vec!["s3".to_owned()], "the anchored offer is released");
}

#[test]
fn a_route_requiring_srtp_refuses_plain_rtp_before_any_state() {
    let toml =
        Harness::config().replace("trunks = [\"a\", \"b\"]", "trunks = [\"a\", \"b\"]\nmedia_security = \"srtp\"");
    let mut h = Harness::with_config(&toml);
    let out = h.send(CALLER, &Request::new("INVITE", "s4").sdp(6000).build());
    assert_eq!(final_to_caller(&out).code(), 488);
    assert_eq!((h.relay.allocated(), h.proxy.core.dialogs.len()), (0, 0), "refused before anchoring");
    let out = h.send(CALLER, &srtp_invite("s5"));
    assert_eq!(only_to(&out, TRUNK_A).method(), "INVITE");
}

#[test]
fn a_plain_re_offer_on_an_srtp_trunk_call_is_refused() {
    let mut h = with("", "media_security = \"srtp\"");
    let out = h.send(CALLER, &srtp_invite("s6"));
    let invite = only_to(&out, CARRIER).msg.clone();
    let out = h.send(CARRIER, &respond(&invite, 200, Some(7000)));
    let ok = only_to(&out, CALLER).msg.clone();
    h.send(CALLER, &Request::new("ACK", "s6").in_dialog(&ok).build());
    let reinvite = Request::new("INVITE", "s6").in_dialog(&ok).cseq(2).branch("z9hG4bK-re-s6").sdp(6002).build();
    let out = h.send(CALLER, &reinvite);
    assert_eq!(final_to_caller(&out).code(), 488, "{out:#?}");
}

#[test]
fn the_relay_passes_srtp_through_untouched() {
    let text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
        m=audio 6000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32\r\n\
        m=video 6002 UDP/TLS/RTP/SAVPF 96\r\na=fingerprint:sha-256 AB:CD:EF\r\na=setup:actpass\r\n";
    let rw = media_relay::sdp::Rewrite {
        addr: "203.0.113.1".parse().unwrap(),
        ports: &[Some(40_000), Some(40_002)],
        rtcp_ports: &[None, None],
        replace_origin: true,
        remove_ice: false,
    };
    let out = String::from_utf8(media_relay::sdp::rewrite(text.as_bytes(), &rw).unwrap()).unwrap();
    assert!(out.contains("m=audio 40000 RTP/SAVP 0\r\n"), "{out}");
    assert!(out.contains("m=video 40002 UDP/TLS/RTP/SAVPF 96\r\n"), "{out}");
    for line in text.lines().filter(|l| l.starts_with("a=crypto") || l.starts_with("a=fingerprint")) {
        assert!(out.contains(line), "{line} kept byte for byte in\n{out}");
    }
    assert!(crate::proxy::srtp::offer_is_secure(out.as_bytes()));
}

/// The final response `out` holds for the caller (after any 100 Trying).
fn final_to_caller(out: &[Sent]) -> &Sent {
    let finals: Vec<&Sent> = out.iter().filter(|s| s.dest == super::addr(CALLER) && s.code() >= 200).collect();
    assert_eq!(finals.len(), 1, "one final response to the caller: {out:#?}");
    finals[0]
}

/// A 2xx as the caller's next requests see it: the internal proxy on its
/// path pops its own Route entry, so only ours is left.
fn proxy_popped(mut ok: Message) -> Message {
    ok.remove_all("record-route");
    ok.push_header(crate::sip::Header::new("Record-Route", "<sip:127.0.0.1:5060;lr>"));
    ok
}

/// Every byte of every message to the carrier is free of internal addresses.
fn nothing_internal(out: &[Sent]) {
    for s in out.iter().filter(|s| s.dest == super::addr(CARRIER)) {
        let text = String::from_utf8_lossy(&s.msg.to_bytes()).into_owned();
        for ip in INTERNAL {
            assert!(!text.contains(ip), "{ip} in a message to the carrier:\n{text}");
        }
    }
}

/// An INVITE from the caller through an internal proxy (Record-Route
/// 10.0.0.99) with a User-Agent, in call `cid`, top Via branch `branch`.
fn internal_invite(cid: &str, branch: &str) -> Vec<u8> {
    let plain = String::from_utf8(Request::new("INVITE", cid).branch(branch).sdp(6000).build()).unwrap();
    plain
        .replacen(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRecord-Route: <sip:10.0.0.99;lr>\r\nUser-Agent: PBX 1.0 (10.0.0.1)\r\n",
            1,
        )
        .into_bytes()
}

#[test]
fn a_hiding_trunk_sees_no_internal_address() {
    let mut h = with("", "topology_hiding = true\nstrip_headers = [\"User-Agent\", \"Server\"]");
    let out = h.send(CALLER, &internal_invite("th1", "z9hG4bK-th1"));
    nothing_internal(&out);
    let fwd = only_to(&out, CARRIER).msg.clone();
    assert_eq!(fwd.vias().len(), 1, "only our Via");
    assert_eq!(fwd.header_values("record-route"), vec!["<sip:127.0.0.1:5060;lr>"], "only our Record-Route");
    assert_eq!(fwd.header("contact"), Some("<sip:alice@127.0.0.1:5060>"), "our Contact");
    assert_eq!(fwd.header("user-agent"), None, "stripped");
    assert_eq!(fwd.header("from"), Some("<sip:alice@127.0.0.1>;tag=a1"), "the From host is ours");

    // The answer goes back as the caller would expect it (the internal
    // proxy pops its own Route from the caller's next requests).
    let mut ok = Message::parse(&respond(&fwd, 200, Some(7000))).unwrap();
    ok.insert_before_first("content-length", crate::sip::Header::new("Server", "Carrier SBC"));
    let out = h.send(CARRIER, &ok.to_bytes());
    let up = only_to(&out, CALLER).msg.clone();
    assert_eq!(up.vias()[0].host, "10.0.0.1", "the caller's own Vias");
    assert_eq!(up.header("from"), Some("<sip:alice@10.0.0.1>;tag=a1"), "From as the caller sent it");
    assert_eq!(up.header("to"), Some("<sip:1000@127.0.0.1>;tag=b1"));
    assert_eq!(
        up.header_values("record-route"),
        vec!["<sip:127.0.0.1:5060;lr>", "<sip:10.0.0.99;lr>"],
        "the internal proxy's entry is back below ours"
    );
    assert_eq!(up.header("server"), Some("Carrier SBC"), "stripped only toward the trunk");
    let up = proxy_popped(up);

    // ACK, re-INVITE and BYE from the caller: nothing internal either.
    let out = h.send(CALLER, &Request::new("ACK", "th1").in_dialog(&up).build());
    nothing_internal(&out);
    assert_eq!(only_to(&out, CARRIER).msg.request_uri(), Some("sip:1000@127.0.0.1:5070"), "the trunk's own Contact");
    let out =
        h.send(CALLER, &Request::new("INVITE", "th1").in_dialog(&up).cseq(2).branch("z9hG4bK-re1").sdp(6002).build());
    nothing_internal(&out);
    let re = only_to(&out, CARRIER).msg.clone();
    assert_eq!(re.vias().len(), 1);
    let out = h.send(CARRIER, &respond(&re, 200, Some(7002)));
    assert_eq!(only_to(&out, CALLER).code(), 200);
    let out = h.send(CALLER, &Request::new("BYE", "th1").in_dialog(&up).cseq(3).build());
    nothing_internal(&out);
    let bye = only_to(&out, CARRIER).msg.clone();
    let out = h.send(CARRIER, &respond(&bye, 200, None));
    assert_eq!(only_to(&out, CALLER).code(), 200);
}

#[test]
fn cancel_and_the_ack_of_an_error_to_a_hiding_trunk_match_what_it_saw() {
    let mut h = with("", "topology_hiding = true\ncallid_rewrite = true");
    let out = h.send(CALLER, &internal_invite("c9@10.0.0.1", "z9hG4bK-c9"));
    let invite = only_to(&out, CARRIER).msg.clone();
    let out = h.send(CARRIER, &respond(&invite, 180, None));
    assert_eq!(only_to(&out, CALLER).code(), 180);
    let cancel = Request::new("CANCEL", "c9@10.0.0.1").branch("z9hG4bK-c9").build();
    let out = h.send(CALLER, &cancel);
    nothing_internal(&out);
    let down = only_to(&out, CARRIER).msg.clone();
    assert_eq!(down.method().map(ToString::to_string).as_deref(), Some("CANCEL"));
    for name in ["from", "to", "call-id", "via"] {
        assert_eq!(down.header(name), invite.header(name), "the CANCEL's {name} is its INVITE's as the trunk saw it");
    }
    assert!(h.send(CARRIER, &respond(&down, 200, None)).is_empty());
    let out = h.send(CARRIER, &respond(&invite, 487, None));
    nothing_internal(&out);
    let ack = only_to(&out, CARRIER).msg.clone();
    assert_eq!((ack.header("from"), ack.header("call-id")), (invite.header("from"), invite.header("call-id")));
    let up = out.iter().find(|s| s.dest == super::addr(CALLER)).expect("the 487 goes up");
    assert_eq!((up.code(), up.msg.call_id()), (487, Some("c9@10.0.0.1")));
}

#[test]
fn a_call_from_a_hiding_trunk_gets_answers_with_nothing_internal() {
    let mut h = with("", "topology_hiding = true");
    let register = "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK-reg1;rport\r\n\
        Max-Forwards: 70\r\nFrom: <sip:1000@127.0.0.1>;tag=r1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: reg1\r\n\
        CSeq: 1 REGISTER\r\nContact: <sip:1000@10.0.0.1:5062>\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(only_to(&h.send(CALLER, register.as_bytes()), CALLER).code(), 200);
    let out = h.send(CARRIER, &carrier_invite("in1", CARRIER));
    nothing_internal(&out);
    let fwd = only_to(&out, CALLER).msg.clone();
    assert_eq!(fwd.vias().len(), 1, "the carrier's Via is not shown inside either");
    // The phone answers through an internal proxy; the carrier sees only us.
    let mut ok = fwd.response_with_tag(200, "OK", "p1");
    for rr in ["<sip:10.0.0.99;lr>"].into_iter().chain(fwd.header_values("record-route")) {
        ok.insert_before_first("content-length", crate::sip::Header::new("Record-Route", rr));
    }
    ok.insert_before_first("content-length", crate::sip::Header::new("Contact", "<sip:1000@10.0.0.1:5062>"));
    let out = h.send(CALLER, &ok.to_bytes());
    nothing_internal(&out);
    let down = only_to(&out, CARRIER).msg.clone();
    assert_eq!(down.code(), Some(200));
    assert_eq!(down.vias()[0].host, "198.51.100.20", "the carrier's own Via");
    assert_eq!(down.header("contact"), Some("<sip:1000@127.0.0.1:5060>"));
    assert_eq!(down.header_values("record-route"), vec!["<sip:127.0.0.1:5060;lr>"]);
    // The carrier hangs up: the BYE reaches the phone's own Contact.
    let bye = "BYE sip:1000@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-cbye\r\n\
        Route: <sip:127.0.0.1:5060;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:+15550100@198.51.100.20>;tag=c1\r\n\
        To: <sip:1000@127.0.0.1>;tag=p1\r\nCall-ID: in1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
    let out = h.send(CARRIER, bye.as_bytes());
    let fwd = only_to(&out, CALLER);
    assert_eq!(fwd.msg.request_uri(), Some("sip:1000@10.0.0.1:5062"));
    let out = h.send(CALLER, &fwd.msg.response_to(200, "OK").to_bytes());
    nothing_internal(&out);
    assert_eq!(only_to(&out, CARRIER).code(), 200);
}

#[test]
fn the_call_id_is_mapped_both_ways() {
    let mut h = with("", "topology_hiding = true\ncallid_rewrite = true\nstrip_headers = [\"User-Agent\"]");
    let cid = "c1-42@10.0.0.1";
    let out = h.send(CALLER, &internal_invite(cid, "z9hG4bK-c1"));
    nothing_internal(&out);
    let fwd = only_to(&out, CARRIER).msg.clone();
    let ext = fwd.call_id().unwrap().to_owned();
    assert_ne!(ext, cid);
    assert_eq!(only_to(&out, CALLER).msg.call_id(), Some(cid), "100 Trying keeps the caller's");
    let out = h.send(CARRIER, &respond(&fwd, 200, Some(7000)));
    let up = proxy_popped(only_to(&out, CALLER).msg.clone());
    assert_eq!(up.call_id(), Some(cid), "mapped back on responses");
    let out = h.send(CALLER, &Request::new("ACK", cid).branch("z9hG4bK-c1a").in_dialog(&up).build());
    assert_eq!(only_to(&out, CARRIER).msg.call_id(), Some(ext.as_str()));
    // The carrier hangs up with the Call-ID it knows.
    let bye = format!(
        "BYE sip:alice@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-xbye\r\n\
         Route: <sip:127.0.0.1:5060;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:1000@127.0.0.1>;tag=b1\r\n\
         To: <sip:alice@127.0.0.1>;tag=a1\r\nCall-ID: {ext}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let out = h.send(CARRIER, bye.as_bytes());
    let down = only_to(&out, CALLER).msg.clone();
    assert_eq!((down.method().map(ToString::to_string), down.call_id()), (Some("BYE".into()), Some(cid)));
    let out = h.send(CALLER, &down.response_to(200, "OK").to_bytes());
    let ok = only_to(&out, CARRIER);
    assert_eq!((ok.code(), ok.msg.call_id()), (200, Some(ext.as_str())), "the BYE's answer in the carrier's Call-ID");
    assert_eq!(h.relay.deleted.lock().unwrap().clone(), vec![cid.to_owned()], "the call ended");

    // A second call hung up by the caller.
    let cid2 = "c2-43@10.0.0.1";
    let out = h.send(CALLER, &internal_invite(cid2, "z9hG4bK-c2"));
    let fwd = only_to(&out, CARRIER).msg.clone();
    let ext2 = fwd.call_id().unwrap().to_owned();
    assert!(ext2 != ext && ext2 != cid2);
    let out = h.send(CARRIER, &respond(&fwd, 200, Some(7000)));
    let up = proxy_popped(only_to(&out, CALLER).msg.clone());
    h.send(CALLER, &Request::new("ACK", cid2).branch("z9hG4bK-c2a").in_dialog(&up).build());
    let out = h.send(CALLER, &Request::new("BYE", cid2).branch("z9hG4bK-c2b").in_dialog(&up).cseq(2).build());
    nothing_internal(&out);
    let bye = only_to(&out, CARRIER).msg.clone();
    assert_eq!(bye.call_id(), Some(ext2.as_str()));
    let out = h.send(CARRIER, &respond(&bye, 200, None));
    assert_eq!(only_to(&out, CALLER).msg.call_id(), Some(cid2));
    assert_eq!(h.relay.deleted.lock().unwrap().len(), 2);

    // A call the carrier starts keeps its own Call-ID both ways.
    let out = h.send(CARRIER, &carrier_invite("carrier-own-1", CARRIER));
    let to_carrier: Vec<_> = out.iter().filter(|s| s.dest == super::addr(CARRIER)).collect();
    assert!(!to_carrier.is_empty());
    assert!(to_carrier.iter().all(|s| s.msg.call_id() == Some("carrier-own-1")), "{to_carrier:#?}");
    // The mappings of ended calls are forgotten.
    assert!(h.proxy.edge.mapped() >= 2);
    // (A signaling loop sends what the proxy has after each input or timer.)
    for _ in 0..80 {
        h.advance(std::time::Duration::from_secs(1));
    }
    assert_eq!(h.proxy.edge.mapped(), 0, "{:?}", h.proxy.edge);
}

#[test]
fn strip_headers_alone_removes_them_toward_the_trunk() {
    let mut h = with("", "strip_headers = [\"User-Agent\", \"X-Internal\"]");
    let invite = String::from_utf8(Request::new("INVITE", "st1").sdp(6000).build()).unwrap().replacen(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nUser-Agent: PBX\r\nx-internal: secret\r\n",
        1,
    );
    let out = h.send(CALLER, invite.as_bytes());
    let fwd = only_to(&out, CARRIER).msg.clone();
    assert_eq!((fwd.header("user-agent"), fwd.header("x-internal")), (None, None));
    assert_eq!(fwd.vias().len(), 2, "no topology hiding without topology_hiding");
}
