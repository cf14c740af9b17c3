//! Authenticating to carriers: a trunk with credentials answers 401/407
//! once per challenge (CSeq + 1, new branch, same Call-ID and tags), the
//! dialog's later requests keep matching (ACK, BYE, CANCEL), a wrong
//! password is not retried twice, and `register = true` registers,
//! refreshes and backs off. Calls from the carrier to our numbers still
//! route by the routes.

use std::time::Duration;

use super::sip::{respond, Request};
use super::{only_to, Harness, Sent, CALLER, TRUNK_A, TRUNK_B};
use crate::auth::digest::{ha1, Algorithm, Credentials};
use crate::sip::{Header, Message};

const USER: &str = "acme";
const PASSWORD: &str = "s3cret";
const REALM: &str = "carrier.test";

/// Trunks `a` (with credentials, and `extra` keys) and `b`, in one route.
fn config(extra: &str) -> String {
    Harness::config().replace(
        &format!("address = \"{TRUNK_A}\"\n"),
        &format!("address = \"{TRUNK_A}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n{extra}\n"),
    )
}

/// `code` (401 or 407) to `req` with the given challenges (header values).
pub(super) fn challenge(req: &Message, code: u16, challenges: &[String]) -> Vec<u8> {
    let mut r = req.response_with_tag(code, "Authentication Required", "ch1");
    let name = if code == 407 { "Proxy-Authenticate" } else { "WWW-Authenticate" };
    for c in challenges {
        r.insert_before_first("content-length", Header::new(name, c));
    }
    r.to_bytes()
}

pub(super) fn digest(nonce: &str, alg: &str) -> String {
    format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm={alg}, qop=\"auth\"")
}

fn cseq(m: &Message) -> u32 {
    m.cseq().unwrap().0
}

fn branch(m: &Message) -> String {
    m.top_via().and_then(|v| v.branch().map(str::to_owned)).unwrap()
}

/// The credentials in `header` of `m`, checked against our password.
fn verified(m: &Message, header: &str, alg: Algorithm, nonce: &str) -> Credentials {
    let c = Credentials::parse(m.header(header).unwrap_or_else(|| panic!("no {header}: {m:?}"))).unwrap();
    assert_eq!((c.username.as_str(), c.realm.as_str(), c.nonce.as_str(), c.algorithm), (USER, REALM, nonce, alg));
    assert_eq!(Some(c.uri.as_str()), m.request_uri(), "digest-uri is the Request-URI");
    let method = m.method().unwrap().to_string();
    assert!(c.verify(&ha1(alg, USER, REALM, PASSWORD), &method), "the response matches our password");
    c
}

/// The caller's INVITE `call_id`, challenged by trunk `a` with `code`,
/// offering MD5 and SHA-256. Returns the first and the re-sent INVITE.
fn invite_challenged(h: &mut Harness, call_id: &str, code: u16) -> (Message, Message) {
    let out = h.send(CALLER, &Request::new("INVITE", call_id).sdp(6000).build());
    let first = only_to(&out, TRUNK_A).msg.clone();
    assert_eq!(cseq(&first), 1);
    assert!(first.header("proxy-authorization").is_none() && first.header("authorization").is_none());
    let out = h.send(TRUNK_A, &challenge(&first, code, &[digest("n-md5", "MD5"), digest("n-sha", "SHA-256")]));
    assert!(
        out.iter().all(|s| s.dest != super::addr(CALLER)),
        "the caller never sees the carrier's challenge: {out:#?}"
    );
    let to_a: Vec<&Sent> = out.iter().filter(|s| s.dest == super::addr(TRUNK_A)).collect();
    assert_eq!(to_a.len(), 2, "{out:#?}");
    assert_eq!((to_a[0].method().as_str(), cseq(&to_a[0].msg)), ("ACK", 1), "hop-by-hop ACK for the challenge");
    let again = to_a[1].msg.clone();
    assert_eq!(again.method().map(ToString::to_string).as_deref(), Some("INVITE"));
    assert_eq!(cseq(&again), 2, "CSeq + 1");
    assert_eq!(again.call_id(), first.call_id());
    assert_eq!(again.from_tag(), first.from_tag());
    assert_eq!(again.to_tag(), None);
    assert_ne!(branch(&again), branch(&first), "a new branch");
    assert_eq!(again.body, first.body);
    (first, again)
}

#[test]
fn a_407_is_answered_and_the_dialog_keeps_matching() {
    let mut h = Harness::with_config(&config(""));
    let (_, again) = invite_challenged(&mut h, "ta1", 407);
    verified(&again, "proxy-authorization", Algorithm::Sha256, "n-sha");
    assert!(again.header("authorization").is_none());

    let out = h.send(TRUNK_A, &respond(&again, 200, Some(7000)));
    let ok = only_to(&out, CALLER);
    assert_eq!((ok.code(), cseq(&ok.msg)), (200, 1), "the caller sees its own CSeq");
    let ok = ok.msg.clone();
    assert_eq!(h.gauge(|m| &m.call_answers), 1);
    // A retransmission of the 2xx, passed on statelessly, is mapped back too.
    let out = h.send(TRUNK_A, &respond(&again, 200, Some(7000)));
    assert_eq!((only_to(&out, CALLER).code(), cseq(&only_to(&out, CALLER).msg)), (200, 1));

    // The caller's ACK and BYE reach the carrier shifted by the offset.
    let out = h.send(CALLER, &Request::new("ACK", "ta1").in_dialog(&ok).build());
    let ack = only_to(&out, TRUNK_A);
    assert_eq!((ack.method().as_str(), cseq(&ack.msg)), ("ACK", 2), "the ACK for the 2xx has the INVITE's CSeq");
    let out = h.send(CALLER, &Request::new("BYE", "ta1").cseq(2).in_dialog(&ok).build());
    let bye = only_to(&out, TRUNK_A).msg.clone();
    assert_eq!(cseq(&bye), 3, "strictly above the carrier's INVITE");
    let out = h.send(TRUNK_A, &respond(&bye, 200, None));
    let done = only_to(&out, CALLER);
    assert_eq!((done.code(), done.method().as_str(), cseq(&done.msg)), (200, "BYE", 2));
    assert_eq!(h.gauge(|m| &m.dialogs), 0);
    assert!(h.metrics.render().contains("sbc_trunk_auth_failures_total{trunk=\"a\"} 0"));
}

#[test]
fn a_second_challenge_is_not_answered_again() {
    let mut h = Harness::with_config(&config(""));
    let (_, again) = invite_challenged(&mut h, "ta2", 401);
    verified(&again, "authorization", Algorithm::Sha256, "n-sha");
    // Wrong credentials: the carrier challenges the answer again.
    let out = h.send(TRUNK_A, &challenge(&again, 401, &[digest("n-sha2", "SHA-256")]));
    assert_eq!(only_to(&out, TRUNK_A).method(), "ACK", "no third INVITE to a: {out:#?}");
    // The branch failed: the next trunk gets the call (CSeq still above the
    // caller's, no credentials of a's).
    let to_b = only_to(&out, TRUNK_B).msg.clone();
    assert_eq!(to_b.method().map(ToString::to_string).as_deref(), Some("INVITE"));
    assert!(to_b.header("authorization").is_none());
    assert!(out.iter().all(|s| s.dest != super::addr(CALLER)), "{out:#?}");
    let out = h.send(TRUNK_B, &respond(&to_b, 200, Some(7000)));
    assert_eq!((only_to(&out, CALLER).code(), cseq(&only_to(&out, CALLER).msg)), (200, 1));
    assert!(h.metrics.render().contains("sbc_trunk_auth_failures_total{trunk=\"a\"} 1"));
}

#[test]
fn an_unanswerable_challenge_on_the_last_trunk_is_a_403_for_the_caller() {
    let cfg = config("").replace("trunks = [\"a\", \"b\"]", "trunks = [\"a\"]");
    let mut h = Harness::with_config(&cfg);
    let (_, again) = invite_challenged(&mut h, "ta3", 407);
    let out = h.send(TRUNK_A, &challenge(&again, 407, &[digest("n-2", "MD5")]));
    let r = only_to(&out, CALLER);
    assert_eq!((r.code(), cseq(&r.msg)), (403, 1));
    assert!(r.msg.header("proxy-authenticate").is_none(), "the carrier's challenge is not passed on");
    assert_eq!(h.gauge(|m| &m.call_failures), 1);
    assert_eq!(h.gauge(|m| &m.dialogs), 0);
}

#[test]
fn a_trunk_without_credentials_passes_challenges_on_as_before() {
    let mut h = Harness::new();
    let out = h.send(CALLER, &Request::new("INVITE", "ta4").sdp(6000).build());
    let first = only_to(&out, TRUNK_A).msg.clone();
    let out = h.send(TRUNK_A, &challenge(&first, 407, &[digest("n1", "MD5")]));
    let r = only_to(&out, CALLER);
    assert_eq!(r.code(), 407);
    assert!(r.msg.header("proxy-authenticate").is_some());
}

#[test]
fn a_challenge_that_crosses_the_cancel_is_not_answered() {
    let mut h = Harness::with_config(&config(""));
    let out = h.send(CALLER, &Request::new("INVITE", "ta6").sdp(6000).build());
    let first = only_to(&out, TRUNK_A).msg.clone();
    let out = h.send(TRUNK_A, &respond(&first, 180, None));
    assert_eq!(only_to(&out, CALLER).code(), 180);
    let out = h.send(CALLER, &Request::new("CANCEL", "ta6").branch("z9hG4bK-INVITE-ta6").build());
    assert_eq!(only_to(&out, TRUNK_A).method(), "CANCEL");
    let out = h.send(TRUNK_A, &challenge(&first, 407, &[digest("n1", "MD5")]));
    assert_eq!(only_to(&out, TRUNK_A).method(), "ACK", "no INVITE after the CANCEL: {out:#?}");
    let r = only_to(&out, CALLER);
    assert_eq!(r.code(), 487);
    assert!(r.msg.header("proxy-authenticate").is_none());
}

#[test]
fn cancel_after_a_retry_matches_the_new_invite() {
    let mut h = Harness::with_config(&config(""));
    let (_, again) = invite_challenged(&mut h, "ta5", 407);
    let out = h.send(TRUNK_A, &respond(&again, 180, None));
    assert_eq!((only_to(&out, CALLER).code(), cseq(&only_to(&out, CALLER).msg)), (180, 1));
    let cancel = Request::new("CANCEL", "ta5").branch("z9hG4bK-INVITE-ta5").build();
    let out = h.send(CALLER, &cancel);
    assert_eq!((only_to(&out, CALLER).code(), only_to(&out, CALLER).method().as_str()), (200, "CANCEL"));
    let down = only_to(&out, TRUNK_A).msg.clone();
    assert_eq!(down.method().map(ToString::to_string).as_deref(), Some("CANCEL"));
    assert_eq!(branch(&down), branch(&again), "the re-sent INVITE's branch");
    assert_eq!(cseq(&down), 2, "the re-sent INVITE's CSeq");
    assert!(h.send(TRUNK_A, &respond(&down, 200, None)).is_empty());
    let out = h.send(TRUNK_A, &respond(&again, 487, None));
    let ack = only_to(&out, TRUNK_A);
    assert_eq!((ack.method().as_str(), cseq(&ack.msg)), ("ACK", 2));
    let r = only_to(&out, CALLER);
    assert_eq!((r.code(), cseq(&r.msg)), (487, 1));
}

/// The registration row of trunk `a` in `sbc ctl trunks`.
fn reg_row(h: &mut Harness) -> String {
    let table = h.proxy.control("trunks");
    assert!(table.lines().next().unwrap().contains("REGISTRATION"), "{table}");
    table.lines().find(|l| l.starts_with("a ")).unwrap().to_owned()
}

/// The one REGISTER in `out`, to trunk `a`.
fn register_in(out: &[Sent]) -> Message {
    let r = only_to(out, TRUNK_A);
    assert_eq!(r.method(), "REGISTER", "{out:#?}");
    r.msg.clone()
}

/// `200 OK` to a REGISTER, granting `expires` to its Contact.
fn granted(req: &Message, expires: u32) -> Vec<u8> {
    let mut r = req.response_with_tag(200, "OK", "reg");
    let contact = req.header("contact").unwrap().to_owned();
    r.insert_before_first("content-length", Header::new("Contact", &format!("{contact};expires={expires}")));
    r.to_bytes()
}

fn final_to(req: &Message, code: u16) -> Vec<u8> {
    req.response_with_tag(code, "No", "reg").to_bytes()
}

#[test]
fn registration_answers_the_challenge_refreshes_and_backs_off() {
    let mut h = Harness::with_config(&config("register = true\nregister_expires = 600"));
    let out = h.advance(Duration::ZERO);
    let reg = register_in(&out);
    assert_eq!(reg.request_uri(), Some("sip:127.0.0.1:5070"));
    assert_eq!(reg.header("to"), Some("<sip:acme@127.0.0.1:5070>"));
    assert_eq!(reg.header("contact"), Some("<sip:acme@127.0.0.1:5060>"), "our Contact in the trunk's realm");
    assert_eq!(reg.header("expires"), Some("600"));
    assert!(reg_row(&mut h).contains("registering"));
    assert!(h.metrics.render().contains("sbc_trunk_registered{trunk=\"a\"} 0"));

    // Challenged: answered once, CSeq + 1, same Call-ID.
    let ch = format!("Digest realm=\"{REALM}\", nonce=\"r1\", qop=\"auth\"");
    let out = h.send(TRUNK_A, &challenge(&reg, 401, &[ch]));
    let authed = register_in(&out);
    verified(&authed, "authorization", Algorithm::Md5, "r1");
    assert_eq!((cseq(&authed), authed.call_id()), (cseq(&reg) + 1, reg.call_id()));
    assert_ne!(branch(&authed), branch(&reg));
    assert!(h.send(TRUNK_A, &granted(&authed, 300)).is_empty());
    let row = reg_row(&mut h);
    assert!(row.contains("registered") && row.contains("300s") && row.ends_with("200"), "{row}");
    assert!(h.metrics.render().contains("sbc_trunk_registered{trunk=\"a\"} 1"));

    // Refreshed at half the granted expiry, on the same Call-ID.
    assert!(h.advance(Duration::from_secs(149)).is_empty());
    assert!(reg_row(&mut h).contains(" 151s "), "{}", reg_row(&mut h));
    let refresh = register_in(&h.advance(Duration::from_secs(1)));
    assert_eq!((refresh.call_id(), cseq(&refresh)), (reg.call_id(), cseq(&authed) + 1));
    assert!(refresh.header("authorization").is_none());

    // Refused: failed, retried after 30 s, then 60 s (exponential backoff).
    let out = h.send(TRUNK_A, &final_to(&refresh, 403));
    assert!(out.is_empty(), "{out:#?}");
    let row = reg_row(&mut h);
    assert!(row.contains("failed") && row.ends_with("403"), "{row}");
    let m = h.metrics.render();
    assert!(m.contains("sbc_trunk_registered{trunk=\"a\"} 0"), "{m}");
    assert!(m.contains("sbc_trunk_registration_failures_total{trunk=\"a\"} 1"), "{m}");
    assert!(h.advance(Duration::from_secs(29)).is_empty());
    let retry = register_in(&h.advance(Duration::from_secs(1)));
    assert!(h.send(TRUNK_A, &final_to(&retry, 503)).is_empty());
    assert!(h.advance(Duration::from_secs(59)).is_empty());
    let retry = register_in(&h.advance(Duration::from_secs(1)));
    // A wrong password: the second challenge for the realm is not answered.
    let ch = format!("Digest realm=\"{REALM}\", nonce=\"r2\", algorithm=SHA-256, qop=\"auth\"");
    let authed = register_in(&h.send(TRUNK_A, &challenge(&retry, 401, std::slice::from_ref(&ch))));
    verified(&authed, "authorization", Algorithm::Sha256, "r2");
    assert!(h.send(TRUNK_A, &challenge(&authed, 401, &[ch])).is_empty(), "not answered twice");
    assert!(reg_row(&mut h).ends_with("401"));
    assert!(h.advance(Duration::from_secs(119)).is_empty(), "the backoff doubled again");
    let retry = register_in(&h.advance(Duration::from_secs(1)));
    // Back: registered, and the backoff starts over.
    assert!(h.send(TRUNK_A, &granted(&retry, 600)).is_empty());
    assert!(reg_row(&mut h).contains("registered"));
    assert!(h.metrics.render().contains("sbc_trunk_registered{trunk=\"a\"} 1"));
}

#[test]
fn a_registration_that_gets_no_answer_is_retried() {
    let mut h = Harness::with_config(&config("register = true"));
    let reg = register_in(&h.advance(Duration::ZERO));
    assert_eq!(reg.header("expires"), Some("3600"));
    // Retransmissions until timer F (64·T1), then failed with 408.
    let out = h.advance(Duration::from_secs(32));
    assert!(out.iter().all(|s| s.method() == "REGISTER" && cseq(&s.msg) == cseq(&reg)), "{out:#?}");
    let row = reg_row(&mut h);
    assert!(row.contains("failed") && row.ends_with("408"), "{row}");
    let out = h.advance(Duration::from_secs(30));
    let retry = out.iter().filter(|s| s.method() == "REGISTER" && cseq(&s.msg) > cseq(&reg)).count();
    assert_eq!(retry, 1, "{out:#?}");
}

#[test]
fn only_the_active_node_registers() {
    let mut h = Harness::with_config(&config("register = true"));
    let reg = register_in(&h.advance(Duration::ZERO));
    assert!(h.send(TRUNK_A, &granted(&reg, 600)).is_empty());
    assert!(reg_row(&mut h).contains("registered"));
    // The node becomes the standby: its transactions are gone, it does not register.
    h.proxy.stand_down();
    h.proxy.set_active(false);
    assert!(h.advance(Duration::from_secs(3600)).is_empty());
    assert!(reg_row(&mut h).contains("unregistered"));
    assert!(h.metrics.render().contains("sbc_trunk_registered{trunk=\"a\"} 0"));
    // Active again: it registers at once.
    h.proxy.set_active(true);
    let again = register_in(&h.advance(Duration::from_millis(10)));
    assert_eq!(again.call_id(), reg.call_id());
    assert!(cseq(&again) > cseq(&reg));
}

#[test]
fn calls_from_the_carrier_to_our_numbers_route_as_before() {
    let mut h = Harness::with_config(&config("register = true"));
    let _ = h.advance(Duration::ZERO);
    // A phone registers the number 15550100 (a DID of ours).
    let phone = "192.0.2.50:5062";
    let register = "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.50:5062;branch=z9hG4bK-did1;rport\r\n\
        Max-Forwards: 70\r\nFrom: <sip:15550100@127.0.0.1>;tag=p1\r\nTo: <sip:15550100@127.0.0.1>\r\nCall-ID: did-reg\r\n\
        CSeq: 1 REGISTER\r\nContact: <sip:15550100@192.0.2.50:5062>\r\nExpires: 300\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(only_to(&h.send(phone, register.as_bytes()), phone).code(), 200);
    // The carrier calls the DID at the Contact we registered with it.
    let sdp = super::sip::sdp("198.51.100.7", 7000);
    let invite = format!(
        "INVITE sip:15550100@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK_A};branch=z9hG4bK-did-in\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+15557777@carrier.test>;tag=c9\r\nTo: <sip:15550100@127.0.0.1>\r\n\
         Call-ID: did-call\r\nCSeq: 7 INVITE\r\nContact: <sip:+15557777@{TRUNK_A}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let out = h.send(TRUNK_A, invite.as_bytes());
    let fwd = only_to(&out, phone);
    assert_eq!(fwd.msg.request_uri(), Some("sip:15550100@192.0.2.50:5062"));
    assert_eq!(cseq(&fwd.msg), 7, "the carrier's own CSeq is not touched");
    let out = h.send(phone, &respond(&fwd.msg, 200, Some(7100)));
    assert_eq!(only_to(&out, TRUNK_A).code(), 200);
}
