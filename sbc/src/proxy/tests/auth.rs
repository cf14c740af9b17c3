//! Digest authentication and identity through the whole proxy: 401/407
//! challenges, MD5 and SHA-256, stale nonces, replayed nonce-counts, AOR
//! ownership, toll fraud, trusted sources, inbound calls, RFC 3325 headers.
//!
//! The cast: alice (password `alice-pw`) and bob (`bob-pw`) are users of
//! realm `127.0.0.1`; trunks `a` and `b` as in the other tests; sources in
//! 198.51.100.0/24 are trusted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{addr, only_to, Harness, Sent, CALLER, TRUNK_A};
use crate::auth::digest::{Algorithm, Challenge, Credentials};
use crate::auth::users::line_for;
use crate::sip::Message;

const REALM: &str = "127.0.0.1";
/// Where bob's phone registers from.
const BOB: &str = "192.0.2.20:5062";
/// A source in the trusted prefix.
const TRUSTED: &str = "198.51.100.5:5060";

/// The harness's config with `[auth]` (`extra` lines appended to it) and a
/// users file holding alice and bob.
fn auth_harness(extra: &str) -> Harness {
    auth_harness_on(&Harness::config(), extra)
}

/// [`auth_harness`] on the base configuration `base`.
fn auth_harness_on(base: &str, extra: &str) -> Harness {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "xsbc-users-{}-{}.txt",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let users =
        format!("# test users\n{}\n{}\n", line_for("alice", REALM, "alice-pw"), line_for("bob", REALM, "bob-pw"));
    std::fs::write(&path, users).unwrap();
    let toml = format!(
        "{}\n[auth]\nusers_file = \"{}\"\nsecret = \"0123456789abcdef0123\"\ntrusted = [\"198.51.100.0/24\"]\n{extra}\n",
        base,
        path.display()
    );
    let h = Harness::with_config(&toml);
    let _ = std::fs::remove_file(path);
    h
}

/// One request: `method` to `ruri`, From `from` (a URI), To `to` (a URI),
/// with `extra` header lines (each ending in CRLF).
fn request(method: &str, ruri: &str, from: &str, to: &str, call_id: &str, cseq: u32, extra: &str) -> Vec<u8> {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK-{call_id}-{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <{from}>;tag=f{cseq}\r\nTo: <{to}>\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\nContact: <sip:x@10.0.0.1:5062>\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A REGISTER for `user`'s AOR with `contact` (and `Expires: 0` for `*`).
fn register(user: &str, contact: Option<&str>, call_id: &str, cseq: u32, extra: &str) -> Vec<u8> {
    let aor = format!("sip:{user}@{REALM}");
    let contact = match contact {
        None => String::new(),
        Some("*") => "Contact: *\r\nExpires: 0\r\n".to_owned(),
        Some(c) => format!("Contact: <{c}>\r\nExpires: 600\r\n"),
    };
    let text = String::from_utf8(request("REGISTER", "sip:127.0.0.1", &aor, &aor, call_id, cseq, extra)).unwrap();
    // Replace the default Contact by the one wanted.
    text.replace("Contact: <sip:x@10.0.0.1:5062>\r\n", &contact).into_bytes()
}

/// The challenges of a 401/407, in order.
fn challenges(s: &Sent) -> Vec<Challenge> {
    let name = if s.code() == 401 { "WWW-Authenticate" } else { "Proxy-Authenticate" };
    s.msg.headers_named(name).map(|h| Challenge::parse(h.value()).expect("a digest challenge")).collect()
}

/// The credentials header line answering `alg`'s challenge of `s`.
fn answer(s: &Sent, alg: Algorithm, user: &str, pw: &str, method: &str, uri: &str, nc: u32) -> String {
    let ch = challenges(s).into_iter().find(|c| c.algorithm == alg).expect("a challenge for the algorithm");
    let name = if s.code() == 401 { "Authorization" } else { "Proxy-Authorization" };
    format!("{name}: {}\r\n", Credentials::answer(&ch, user, pw, method, uri, "c0ffee", nc).to_value())
}

/// The one message to `dest` other than a 100 Trying.
fn only(out: &[Sent], dest: &str) -> Sent {
    let out: Vec<Sent> = out.iter().filter(|s| s.code() != 100).map(copy).collect();
    let s = only_to(&out, dest);
    copy(s)
}

fn copy(s: &Sent) -> Sent {
    Sent { dest: s.dest, realm: s.realm, msg: s.msg.clone() }
}

/// The messages that are not 100 Trying.
fn not_trying(out: Vec<Sent>) -> Vec<Sent> {
    out.into_iter().filter(|s| s.code() != 100).collect()
}

/// What must be equal in two challenges apart from the nonce.
fn shape(s: &Sent) -> (u16, String, Vec<String>) {
    let names = s.msg.headers.iter().map(|h| h.name().to_owned()).collect();
    let reason = match &s.msg.start {
        crate::sip::StartLine::Response { reason, .. } => reason.clone(),
        crate::sip::StartLine::Request { .. } => String::new(),
    };
    (s.code(), reason, names)
}

#[test]
fn register_is_challenged_then_accepted_with_sha256_and_md5() {
    let mut h = auth_harness("");
    let out = h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 1, ""));
    let ch = only(&out, CALLER);
    assert_eq!(ch.code(), 401);
    let c = challenges(&ch);
    assert_eq!(c.len(), 2, "{:#?}", ch.msg);
    assert_eq!((c[0].algorithm, c[1].algorithm), (Algorithm::Sha256, Algorithm::Md5), "SHA-256 first (RFC 8760)");
    assert!(c.iter().all(|c| c.qop_auth && !c.stale && c.realm == REALM));
    assert_eq!(c[0].nonce, c[1].nonce);
    assert_eq!(h.gauge(|m| &m.registrations), 0, "nothing registered without credentials");

    let auth = answer(&ch, Algorithm::Sha256, "alice", "alice-pw", "REGISTER", "sip:127.0.0.1", 1);
    let out = h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 2, &auth));
    let ok = only(&out, CALLER);
    assert_eq!(ok.code(), 200, "{:#?}", ok.msg);
    assert_eq!(ok.msg.header_values("contact"), vec!["<sip:alice@10.0.0.1:5062>;expires=600"]);

    // An old phone: MD5.
    let out = h.send(BOB, &register("bob", Some("sip:bob@192.0.2.20:5062"), "r2", 1, ""));
    let ch = only(&out, BOB);
    let auth = answer(&ch, Algorithm::Md5, "bob", "bob-pw", "REGISTER", "sip:127.0.0.1", 1);
    let out = h.send(BOB, &register("bob", Some("sip:bob@192.0.2.20:5062"), "r2", 2, &auth));
    assert_eq!(only(&out, BOB).code(), 200);
    assert_eq!(h.gauge(|m| &m.registrations), 2);
    assert_eq!((h.gauge(|m| &m.auth.challenges), h.gauge(|m| &m.auth.successes)), (2, 2));
    assert_eq!(h.gauge(|m| &m.auth.users), 2);
    assert!(h.metrics.render().contains("sbc_auth_challenges_total 2"));
}

#[test]
fn algorithms_narrow_the_challenges() {
    let mut h = auth_harness("algorithms = [\"SHA-256\"]");
    let out = h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 1, ""));
    let ch = only(&out, CALLER);
    assert_eq!(challenges(&ch).iter().map(|c| c.algorithm).collect::<Vec<_>>(), vec![Algorithm::Sha256]);
    // MD5 credentials (made up against the same nonce) are not accepted.
    let md5 = Challenge { algorithm: Algorithm::Md5, ..challenges(&ch)[0].clone() };
    let cred = Credentials::answer(&md5, "alice", "alice-pw", "REGISTER", "sip:127.0.0.1", "c", 1);
    let auth = format!("Authorization: {}\r\n", cred.to_value());
    let out = h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 2, &auth));
    assert_eq!(only(&out, CALLER).code(), 401);
}

#[test]
fn unknown_user_and_wrong_password_get_the_same_answer() {
    let mut h = auth_harness("");
    let first = only(&h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 1, "")), CALLER);
    let wrong = answer(&first, Algorithm::Sha256, "alice", "guess", "REGISTER", "sip:127.0.0.1", 1);
    let a = only(&h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 2, &wrong)), CALLER);
    let first = only(&h.send(CALLER, &register("mallory", Some("sip:m@10.0.0.1:5062"), "r2", 1, "")), CALLER);
    let unknown = answer(&first, Algorithm::Sha256, "mallory", "guess", "REGISTER", "sip:127.0.0.1", 1);
    let b = only(&h.send(CALLER, &register("mallory", Some("sip:m@10.0.0.1:5062"), "r2", 2, &unknown)), CALLER);
    assert_eq!(a.code(), 401);
    assert_eq!(shape(&a), shape(&b), "same status, reason and headers");
    let (ca, cb) = (challenges(&a), challenges(&b));
    assert_ne!(ca[0].nonce, cb[0].nonce, "each challenge has a fresh nonce");
    for (x, y) in ca.iter().zip(&cb) {
        assert_eq!(x.to_value().replace(&x.nonce, "N"), y.to_value().replace(&y.nonce, "N"));
    }
    assert_eq!(h.gauge(|m| &m.auth.failures), 2);
    assert_eq!(h.gauge(|m| &m.registrations), 0);
}

#[test]
fn an_expired_nonce_gets_stale_true() {
    let mut h = auth_harness("nonce_lifetime_s = 60");
    let ch = only(&h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 1, "")), CALLER);
    let auth = answer(&ch, Algorithm::Sha256, "alice", "alice-pw", "REGISTER", "sip:127.0.0.1", 1);
    h.advance(Duration::from_secs(61));
    let stale = only(&h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 2, &auth)), CALLER);
    assert_eq!(stale.code(), 401);
    assert!(challenges(&stale).iter().all(|c| c.stale), "{:#?}", stale.msg);
    assert_eq!(h.gauge(|m| &m.auth.stale), 1);
    // The new nonce works.
    let auth = answer(&stale, Algorithm::Md5, "alice", "alice-pw", "REGISTER", "sip:127.0.0.1", 1);
    assert_eq!(
        only(&h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 3, &auth)), CALLER).code(),
        200
    );
    // A wrong password on an old nonce is a plain failure, not stale.
    let ch = only(&h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 4, "")), CALLER);
    let wrong = answer(&ch, Algorithm::Sha256, "alice", "guess", "REGISTER", "sip:127.0.0.1", 1);
    h.advance(Duration::from_secs(61));
    let again = only(&h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 5, &wrong)), CALLER);
    assert!(challenges(&again).iter().all(|c| !c.stale));
}

#[test]
fn a_replayed_nonce_count_is_refused() {
    let mut h = auth_harness("");
    let ch = only(&h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 1, "")), CALLER);
    let nc1 = answer(&ch, Algorithm::Sha256, "alice", "alice-pw", "REGISTER", "sip:127.0.0.1", 1);
    assert_eq!(
        only(&h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 2, &nc1)), CALLER).code(),
        200
    );
    // The same credentials again (a captured request replayed as a new one).
    let replay = only(&h.send(CALLER, &register("alice", Some("sip:evil@10.6.6.6:5062"), "r1", 3, &nc1)), CALLER);
    assert_eq!(replay.code(), 401);
    assert_eq!(h.gauge(|m| &m.auth.replays), 1);
    // The next count on the same nonce is fine; going back is not.
    let nc3 = answer(&ch, Algorithm::Sha256, "alice", "alice-pw", "REGISTER", "sip:127.0.0.1", 3);
    assert_eq!(only(&h.send(CALLER, &register("alice", None, "r1", 4, &nc3)), CALLER).code(), 200);
    let nc2 = answer(&ch, Algorithm::Sha256, "alice", "alice-pw", "REGISTER", "sip:127.0.0.1", 2);
    assert_eq!(only(&h.send(CALLER, &register("alice", None, "r1", 5, &nc2)), CALLER).code(), 401);
    assert_eq!(h.gauge(|m| &m.auth.replays), 2);
}

#[test]
fn alice_cannot_register_remove_or_query_bob() {
    let mut h = auth_harness("");
    // Bob registers.
    let ch = only(&h.send(BOB, &register("bob", Some("sip:bob@192.0.2.20:5062"), "b1", 1, "")), BOB);
    let auth = answer(&ch, Algorithm::Sha256, "bob", "bob-pw", "REGISTER", "sip:127.0.0.1", 1);
    assert_eq!(only(&h.send(BOB, &register("bob", Some("sip:bob@192.0.2.20:5062"), "b1", 2, &auth)), BOB).code(), 200);
    // Alice, with her own valid credentials, tries bob's AOR three ways.
    for (i, contact) in [Some("sip:bob@10.6.6.6:5062"), Some("*"), None].into_iter().enumerate() {
        let cid = format!("a{i}");
        let ch = only(&h.send(CALLER, &register("bob", contact, &cid, 1, "")), CALLER);
        assert_eq!(ch.code(), 401);
        let auth = answer(&ch, Algorithm::Sha256, "alice", "alice-pw", "REGISTER", "sip:127.0.0.1", 1);
        let r = only(&h.send(CALLER, &register("bob", contact, &cid, 2, &auth)), CALLER);
        assert_eq!(r.code(), 403, "{contact:?}");
        assert!(r.msg.header("contact").is_none(), "bob's bindings are not listed");
    }
    assert_eq!(h.gauge(|m| &m.auth.forbidden), 3);
    // Bob's binding is intact: a call to him still reaches his phone.
    let out = h.send(
        TRUSTED,
        &request("INVITE", "sip:bob@127.0.0.1", "sip:x@carrier.example", "sip:bob@127.0.0.1", "c1", 1, ""),
    );
    assert_eq!(only(&out, BOB).method(), "INVITE");
    // Alice's own query works.
    let ch = only(&h.send(CALLER, &register("alice", None, "q", 1, "")), CALLER);
    let auth = answer(&ch, Algorithm::Md5, "alice", "alice-pw", "REGISTER", "sip:127.0.0.1", 1);
    assert_eq!(only(&h.send(CALLER, &register("alice", None, "q", 2, &auth)), CALLER).code(), 200);
}

/// Registers bob from [`BOB`].
fn register_bob(h: &mut Harness) {
    let ch = only(&h.send(BOB, &register("bob", Some("sip:bob@192.0.2.20:5062"), "b1", 1, "")), BOB);
    let auth = answer(&ch, Algorithm::Sha256, "bob", "bob-pw", "REGISTER", "sip:127.0.0.1", 1);
    assert_eq!(only(&h.send(BOB, &register("bob", Some("sip:bob@192.0.2.20:5062"), "b1", 2, &auth)), BOB).code(), 200);
}

#[test]
fn no_toll_fraud_whatever_the_from_says() {
    let mut h = auth_harness("");
    let intl = "sip:0044207946000@127.0.0.1";
    for (i, from) in ["sip:alice@127.0.0.1", "sip:someone@carrier.example"].into_iter().enumerate() {
        let cid = format!("fraud{i}");
        let pai = "P-Asserted-Identity: <sip:ceo@127.0.0.1>\r\n";
        let out = not_trying(h.send(CALLER, &request("INVITE", intl, from, intl, &cid, 1, pai)));
        assert_eq!(out.len(), 1, "only the challenge, nothing to the trunk: {out:#?}");
        let ch = only(&out, CALLER);
        assert_eq!(ch.code(), 407, "{from}");
        assert_eq!(challenges(&ch).len(), 2);
        // The ACK of the 407 is absorbed; a CANCEL is never challenged.
        let ack = String::from_utf8(request("ACK", intl, from, intl, &cid, 1, ""))
            .unwrap()
            .replace(&format!("<{intl}>\r\n"), &format!("<{intl}>;tag={}\r\n", ch.msg.to_tag().unwrap()));
        assert!(h.send(CALLER, ack.as_bytes()).is_empty());
        let cancel = String::from_utf8(request("CANCEL", intl, from, intl, &cid, 1, "")).unwrap();
        let out = h.send(CALLER, cancel.as_bytes());
        assert!(out.iter().all(|s| s.code() != 407 && s.dest != addr(TRUNK_A)), "{out:#?}");
        // Wrong credentials: refused again, still nothing to the trunk.
        let wrong = answer(&ch, Algorithm::Sha256, "alice", "guess", "INVITE", intl, 1);
        let out = not_trying(h.send(CALLER, &request("INVITE", intl, from, intl, &cid, 2, &wrong)));
        assert_eq!((out.len(), only(&out, CALLER).code()), (1, 407));
    }
    assert_eq!(h.gauge(|m| &m.call_attempts), 0);
    // With alice's credentials the call goes to the trunk, asserted as alice.
    let out = h.send(CALLER, &request("INVITE", intl, "sip:alice@127.0.0.1", intl, "ok1", 1, ""));
    let ch = only(&out, CALLER);
    let auth = answer(&ch, Algorithm::Sha256, "alice", "alice-pw", "INVITE", intl, 1);
    let spoof = "P-Asserted-Identity: <sip:ceo@127.0.0.1>\r\nP-Preferred-Identity: <sip:ceo@127.0.0.1>\r\n";
    let out =
        h.send(CALLER, &request("INVITE", intl, "sip:alice@127.0.0.1", intl, "ok1", 2, &format!("{auth}{spoof}")));
    let fwd = only(&out, TRUNK_A);
    assert_eq!(fwd.method(), "INVITE");
    assert_eq!(fwd.msg.header_values("p-asserted-identity"), vec!["<sip:alice@127.0.0.1>"]);
    assert!(fwd.msg.header("p-preferred-identity").is_none());
    assert!(fwd.msg.header("proxy-authorization").is_none(), "our realm's credentials stay here");
}

#[test]
fn credentials_for_another_realm_are_forwarded() {
    let mut h = auth_harness("");
    let intl = "sip:0044207946000@127.0.0.1";
    let ch = only(&h.send(CALLER, &request("INVITE", intl, "sip:alice@127.0.0.1", intl, "x1", 1, "")), CALLER);
    let ours = answer(&ch, Algorithm::Sha256, "alice", "alice-pw", "INVITE", intl, 1);
    let theirs = "Proxy-Authorization: Digest username=\"acct\", realm=\"carrier\", nonce=\"n\", uri=\"sip:x\", response=\"00\"\r\n";
    let out =
        h.send(CALLER, &request("INVITE", intl, "sip:alice@127.0.0.1", intl, "x1", 2, &format!("{ours}{theirs}")));
    let fwd = only(&out, TRUNK_A);
    let kept: Vec<&str> = fwd.msg.headers_named("proxy-authorization").map(|h| h.value()).collect();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].contains("realm=\"carrier\""));
}

#[test]
fn trusted_sources_pass_and_keep_their_identity() {
    let mut h = auth_harness("");
    let intl = "sip:0044207946000@127.0.0.1";
    let pai = "P-Asserted-Identity: <sip:+15551234@carrier.example>\r\n";
    // A trusted prefix.
    let out = h.send(TRUSTED, &request("INVITE", intl, "sip:alice@127.0.0.1", intl, "t1", 1, pai));
    let fwd = only(&out, TRUNK_A);
    assert_eq!(fwd.msg.header("p-asserted-identity"), Some("<sip:+15551234@carrier.example>"));
    // A trunk's own address (trunk b sends a call that routes to trunk a).
    let out = h.send("127.0.0.1:5080", &request("INVITE", intl, "sip:x@carrier.example", intl, "t2", 1, ""));
    assert_eq!(only(&out, TRUNK_A).method(), "INVITE");
    assert_eq!(h.gauge(|m| &m.auth.challenges), 0);
}

#[test]
fn inbound_calls_from_untrusted_sources_reach_registered_users() {
    let mut h = auth_harness("");
    register_bob(&mut h);
    let before = h.gauge(|m| &m.auth.challenges);
    let pai = "P-Asserted-Identity: <sip:bank@127.0.0.1>\r\n";
    let out = h.send(
        "203.0.113.50:5060",
        &request("INVITE", "sip:bob@127.0.0.1", "sip:friend@elsewhere.example", "sip:bob@127.0.0.1", "in1", 1, pai),
    );
    let fwd = only(&out, BOB);
    assert_eq!(fwd.method(), "INVITE");
    assert!(fwd.msg.header("p-asserted-identity").is_none(), "an untrusted source asserts nothing");
    assert_eq!(h.gauge(|m| &m.auth.challenges), before);
    // But not with our From (spoofing one of our users), and not to an
    // unregistered user (that goes to the trunk).
    let out = h.send(
        "203.0.113.50:5060",
        &request("INVITE", "sip:bob@127.0.0.1", "sip:alice@127.0.0.1", "sip:bob@127.0.0.1", "in2", 1, ""),
    );
    assert_eq!(only(&out, "203.0.113.50:5060").code(), 407);
    let out = h.send(
        "203.0.113.50:5060",
        &request("MESSAGE", "sip:carol@127.0.0.1", "sip:friend@elsewhere.example", "sip:carol@127.0.0.1", "in3", 1, ""),
    );
    assert_eq!(only(&out, "203.0.113.50:5060").code(), 407);
}

#[test]
fn require_for_inbound_challenges_calls_to_users_too() {
    let mut h = auth_harness("require_for_inbound = true");
    register_bob(&mut h);
    let out = h.send(
        "203.0.113.50:5060",
        &request("INVITE", "sip:bob@127.0.0.1", "sip:friend@elsewhere.example", "sip:bob@127.0.0.1", "in1", 1, ""),
    );
    assert_eq!(only(&out, "203.0.113.50:5060").code(), 407);
    assert!(out.iter().all(|s| s.dest != addr(BOB)));
    // Trusted sources still pass.
    let out = h.send(
        TRUSTED,
        &request("INVITE", "sip:bob@127.0.0.1", "sip:x@carrier.example", "sip:bob@127.0.0.1", "in2", 1, ""),
    );
    assert_eq!(only(&out, BOB).method(), "INVITE");
}

#[test]
fn privacy_id_is_honoured_toward_untrusted_peers_only() {
    let mut h = auth_harness("");
    register_bob(&mut h);
    let call = |h: &mut Harness, ruri: &str, cid: &str| -> Message {
        let privacy = "Privacy: id\r\n";
        let ch = only(&h.send(CALLER, &request("INVITE", ruri, "sip:alice@127.0.0.1", ruri, cid, 1, privacy)), CALLER);
        assert_eq!(ch.code(), 407);
        let auth = answer(&ch, Algorithm::Md5, "alice", "alice-pw", "INVITE", ruri, 1);
        let out =
            h.send(CALLER, &request("INVITE", ruri, "sip:alice@127.0.0.1", ruri, cid, 2, &format!("{auth}{privacy}")));
        out.into_iter().find(|s| s.msg.is_request()).expect("forwarded").msg
    };
    // To bob (a registered phone, untrusted): no PAI.
    let to_bob = call(&mut h, "sip:bob@127.0.0.1", "p1");
    assert!(to_bob.header("p-asserted-identity").is_none(), "{to_bob:#?}");
    // To the trunk (trusted): PAI and Privacy both go, the trunk honours them.
    let to_trunk = call(&mut h, "sip:0044207946000@127.0.0.1", "p2");
    assert_eq!(to_trunk.header("p-asserted-identity"), Some("<sip:alice@127.0.0.1>"));
    assert_eq!(to_trunk.header("privacy"), Some("id"));
}

#[test]
fn without_auth_nothing_is_challenged_or_stripped() {
    let mut h = Harness::new();
    let intl = "sip:0044207946000@127.0.0.1";
    let pai = "P-Asserted-Identity: <sip:ceo@127.0.0.1>\r\n";
    let out = h.send(CALLER, &request("INVITE", intl, "sip:alice@127.0.0.1", intl, "n1", 1, pai));
    assert_eq!(only(&out, TRUNK_A).msg.header("p-asserted-identity"), Some("<sip:ceo@127.0.0.1>"));
}

#[test]
fn credentials_for_another_server_are_refused() {
    let mut h = auth_harness("");
    let ch = only(&h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 1, "")), CALLER);
    let elsewhere = answer(&ch, Algorithm::Sha256, "alice", "alice-pw", "REGISTER", "sip:registrar.example", 1);
    let r = only(&h.send(CALLER, &register("alice", Some("sip:alice@10.0.0.1:5062"), "r1", 2, &elsewhere)), CALLER);
    assert_eq!(r.code(), 401);
    assert_eq!(h.gauge(|m| &m.auth.failures), 1);
    // The digest-uri must be the Request-URI: neither the server's address
    // alone nor another user of it (a captured credential re-aimed at
    // another number).
    let invite = |cseq: u32, extra: &str| {
        request("INVITE", "sip:0044@127.0.0.1", "sip:alice@127.0.0.1", "sip:0044@127.0.0.1", "i1", cseq, extra)
    };
    for (i, uri) in ["sip:127.0.0.1", "sip:0045@127.0.0.1", "sip:0044@127.0.0.1:5070"].into_iter().enumerate() {
        let cseq = 2 * u32::try_from(i).unwrap() + 1;
        let ch = only(&h.send(CALLER, &invite(cseq, "")), CALLER);
        let wrong = answer(&ch, Algorithm::Md5, "alice", "alice-pw", "INVITE", uri, 1);
        let out = not_trying(h.send(CALLER, &invite(cseq + 1, &wrong)));
        assert_eq!((out.len(), only(&out, CALLER).code()), (1, 407), "digest-uri {uri}");
    }
    let ch = only(&h.send(CALLER, &invite(7, "")), CALLER);
    // Same URI, other case of host and other parameters: fine.
    let exact = answer(&ch, Algorithm::Md5, "alice", "alice-pw", "INVITE", "sip:0044@127.0.0.1;user=phone", 1);
    assert_eq!(only(&h.send(CALLER, &invite(8, &exact)), TRUNK_A).method(), "INVITE");
}

/// The attack on the header-following path: a request with a To-tag that
/// matches no dialog, a Route naming us and a trunk's address as its
/// Request-URI, as if we stood in for a primary.
fn dialogless(method: &str, call_id: &str, extra: &str) -> Vec<u8> {
    let ruri = "sip:+442079460000@127.0.0.1:5070";
    let body = if method == "INVITE" { super::sip::sdp("10.0.0.1", 6000) } else { String::new() };
    let ctype = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK-{call_id}-{method};rport\r\n\
         Route: <sip:127.0.0.1:5060;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:x@elsewhere.example>;tag=f1\r\n\
         To: <{ruri}>;tag=x\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:x@10.0.0.1:5062>\r\n\
         {extra}{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The configuration of [`auth_harness`] with credentials on trunk `a`.
fn trunk_with_credentials() -> String {
    Harness::config().replace(
        &format!("address = \"{TRUNK_A}\"\n"),
        &format!("address = \"{TRUNK_A}\"\nusername = \"acme\"\npassword = \"s3cret\"\n"),
    )
}

#[test]
fn an_untrusted_source_cannot_steer_a_dialogless_request_to_a_trunk() {
    let mut h = auth_harness_on(&trunk_with_credentials(), "");
    for method in ["INVITE", "BYE", "UPDATE"] {
        let out = not_trying(h.send(CALLER, &dialogless(method, &format!("steer-{method}"), "")));
        assert!(out.iter().all(|s| s.dest != addr(TRUNK_A)), "{method}: nothing to the trunk: {out:#?}");
        assert_eq!((out.len(), only(&out, CALLER).code()), (1, 407), "{method}");
    }
    // An ACK cannot be challenged: it goes nowhere.
    assert!(h.send(CALLER, &dialogless("ACK", "steer-ack", "")).is_empty());
    assert_eq!(h.relay.allocated(), 0, "no media anchored");
    assert_eq!(h.gauge(|m| &m.auth.successes), 0);
}

#[test]
fn dialogless_requests_from_trusted_or_authenticated_sources_follow_their_headers() {
    let mut h = auth_harness_on(&trunk_with_credentials(), "");
    // A trusted source (standing in for a primary's peer): forwarded as before.
    let out = h.send(TRUSTED, &dialogless("BYE", "alt1", ""));
    let bye = only(&out, TRUNK_A).msg.clone();
    assert_eq!(bye.method().map(ToString::to_string).as_deref(), Some("BYE"));
    // The carrier's challenge is not answered with trunk a's credentials:
    // the headers, not a route or a dialog, chose the trunk.
    let ch = super::trunk_auth::challenge(&bye, 401, &[super::trunk_auth::digest("n1", "MD5")]);
    let out = h.send(TRUNK_A, &ch);
    assert!(out.iter().all(|s| s.dest != addr(TRUNK_A) || s.method() == "ACK"), "{out:#?}");
    assert!(out.iter().all(|s| s.msg.header("authorization").is_none()));
    let ack = h.send(TRUSTED, &dialogless("ACK", "alt1", ""));
    assert_eq!(only(&ack, TRUNK_A).method(), "ACK", "a trusted source's ACK follows its headers");
    // A user of ours (a phone whose call ran through the primary) answers
    // the challenge; its credentials stay here.
    let ch = only(&h.send(CALLER, &dialogless("BYE", "alt2", "")), CALLER);
    let auth = answer(&ch, Algorithm::Sha256, "alice", "alice-pw", "BYE", "sip:+442079460000@127.0.0.1:5070", 1);
    // (A new Call-ID, so a new transaction: same Via branch otherwise.)
    let out = h.send(CALLER, &dialogless("BYE", "alt3", &auth));
    let fwd = only(&out, TRUNK_A);
    assert!(fwd.msg.header("proxy-authorization").is_none(), "{:#?}", fwd.msg);
}

#[test]
fn our_credentials_do_not_reach_the_trunk_in_dialog() {
    use super::sip::respond;
    let mut h = auth_harness("");
    let intl = "sip:0044207946000@127.0.0.1";
    let from = "sip:alice@127.0.0.1";
    let ch = only(&h.send(CALLER, &request("INVITE", intl, from, intl, "cred1", 1, "")), CALLER);
    let auth = answer(&ch, Algorithm::Sha256, "alice", "alice-pw", "INVITE", intl, 1);
    let out = h.send(CALLER, &request("INVITE", intl, from, intl, "cred1", 2, &auth));
    let inv = only(&out, TRUNK_A).msg.clone();
    let out = h.send(TRUNK_A, &respond(&inv, 200, None));
    let ok = only(&out, CALLER).msg.clone();
    let in_dialog = |method: &str, cseq: u32| {
        let routes: String = ok.header_values("record-route").iter().rev().map(|r| format!("Route: {r}\r\n")).collect();
        let text = String::from_utf8(request(
            method,
            "sip:1000@127.0.0.1:5070",
            from,
            intl,
            "cred1",
            cseq,
            &format!("{routes}{auth}"),
        ))
        .unwrap();
        text.replace(&format!("To: <{intl}>\r\n"), &format!("To: <{intl}>;tag={}\r\n", ok.to_tag().unwrap()))
            .replace(&format!("tag=f{cseq}"), "tag=f2")
            .replace(&format!("branch=z9hG4bK-cred1-{cseq}"), &format!("branch=z9hG4bK-cred1-{method}"))
            .into_bytes()
    };
    // RFC 3261 §22.1: the ACK for the 2xx repeats the INVITE's credentials;
    // phones add them to later requests too.
    let out = h.send(CALLER, &in_dialog("ACK", 2));
    let ack = only(&out, TRUNK_A);
    assert_eq!(ack.method(), "ACK");
    assert!(ack.msg.header("proxy-authorization").is_none(), "{:#?}", ack.msg);
    let out = h.send(CALLER, &in_dialog("BYE", 3));
    let bye = only(&out, TRUNK_A);
    assert_eq!(bye.method(), "BYE");
    assert!(bye.msg.header("proxy-authorization").is_none(), "{:#?}", bye.msg);
}
