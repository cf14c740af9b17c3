//! MESSAGE store and forward (RFC 3428) through the whole proxy: a
//! MESSAGE for a user who is not registered is answered 202 and delivered
//! in order when the user registers; a final 4xx stops a delivery, a 5xx
//! or a timeout is retried; stored messages expire; a MESSAGE for trunks
//! that are all DOWN is held until one is UP; the pending set survives a
//! restart over the same spool
//! directory; with digest auth on, a MESSAGE from our users is challenged
//! before anything is stored.
//!
//! The cast: the caller as in the other tests sends to `bob` (no route
//! catches him: only numbers starting with 9 go to trunks `a` and `b`);
//! bob's phone registers from [`BOB`].

use std::time::Duration;

use super::{only_to, Harness, Sent, CALLER, TRUNK_A};
use crate::sip::Message;

/// Where bob's phone registers from.
const BOB: &str = "192.0.2.30:5062";

/// Trunks `a` and `b` for numbers starting with 9, messages kept for 60 s,
/// at most 3 per target.
fn config() -> String {
    Harness::config().replace("prefix = \"\"", "prefix = \"9\"")
        + "\n[messages]\nttl_s = 60\nmax_per_target = 3\nretry_min_s = 2\nretry_max_s = 8\n"
}

/// A MESSAGE from the caller to `ruri` with a text body.
fn message(ruri: &str, call_id: &str, body: &str) -> Vec<u8> {
    format!(
        "MESSAGE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK-m-{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=fa-{call_id}\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 5 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// bob registers from [`BOB`]; returns what the proxy sent.
fn register_bob(h: &mut Harness) -> Vec<Sent> {
    let text = "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.3:5062;branch=z9hG4bK-bobreg;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@127.0.0.1>;tag=r1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: bobreg\r\n\
         CSeq: 1 REGISTER\r\nContact: <sip:bob@10.0.0.3:5062>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n";
    h.send(BOB, text.as_bytes())
}

fn ok(req: &Message, code: u16) -> Vec<u8> {
    req.response_with_tag(code, "Reason", "bt").to_bytes()
}

/// Sends `n` MESSAGEs to bob (bodies `m1`..) and checks each got 202.
fn store_for_bob(h: &mut Harness, n: usize) {
    for i in 1..=n {
        let out = h.send(CALLER, &message("sip:bob@127.0.0.1", &format!("m{i}"), &format!("m{i}")));
        assert_eq!(out.len(), 1, "only the answer: {out:#?}");
        assert_eq!(only_to(&out, CALLER).code(), 202);
    }
}

fn pending(h: &Harness) -> u64 {
    h.gauge(|m| &m.messages.pending)
}

#[test]
fn an_offline_user_gets_its_messages_in_order_when_it_registers() {
    let mut h = Harness::with_config(&config());
    store_for_bob(&mut h, 2);
    assert_eq!((h.gauge(|m| &m.messages.stored), pending(&h)), (2, 2));
    assert!(h.advance(Duration::from_secs(3)).is_empty(), "nowhere to deliver yet");
    // bob registers: the first message goes to his phone at once, alone.
    let out = register_bob(&mut h);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert!(out.iter().any(|s| s.code() == 200 && s.method() == "REGISTER"));
    let first = out.iter().find(|s| s.method() == "MESSAGE").unwrap().msg.clone();
    assert_eq!(first.request_uri(), Some("sip:bob@10.0.0.3:5062"));
    assert_eq!(first.body, b"m1");
    assert_eq!(first.call_id(), Some("m1"), "the original Call-ID");
    assert_eq!(first.from_tag().as_deref(), Some("fa-m1"), "the original From");
    assert_eq!(first.header("content-type"), Some("text/plain"));
    assert_eq!(first.vias().len(), 1, "sent by the sbc as a UAC");
    assert_eq!(first.cseq().map(|c| c.0), Some(5));
    // Its 200 releases the second.
    let out = h.send(BOB, &ok(&first, 200));
    let second = only_to(&out, BOB).msg.clone();
    assert_eq!(second.body, b"m2");
    let out = h.send(BOB, &ok(&second, 200));
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!((h.gauge(|m| &m.messages.delivered), pending(&h)), (2, 0));
    assert!(h.metrics.render().contains("sbc_messages_delivered_total 2"));
    // Now bob is online: a MESSAGE is proxied as before, not stored.
    let out = h.send(CALLER, &message("sip:bob@127.0.0.1", "m3", "m3"));
    let fwd = only_to(&out, BOB);
    assert_eq!(fwd.msg.vias().len(), 2, "proxied: the caller's Via below ours");
    assert_eq!(h.gauge(|m| &m.messages.stored), 2);
}

#[test]
fn a_final_4xx_stops_a_delivery_and_a_5xx_or_timeout_is_retried() {
    let mut h = Harness::with_config(&config());
    store_for_bob(&mut h, 2);
    let out = register_bob(&mut h);
    let first = out.iter().find(|s| s.method() == "MESSAGE").unwrap().msg.clone();
    // A 503: retried after retry_min_s (2 s), with the next CSeq; the
    // second message waits its turn.
    assert!(h.send(BOB, &ok(&first, 503)).is_empty());
    assert_eq!(h.gauge(|m| &m.messages.retries), 1);
    // bob is registered, but older messages for him wait: a new one
    // queues behind them rather than overtake them.
    let out = h.send(CALLER, &message("sip:bob@127.0.0.1", "m3", "m3"));
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(only_to(&out, CALLER).code(), 202);
    assert!(h.advance(Duration::from_millis(1500)).is_empty());
    let out = h.advance(Duration::from_millis(600));
    let again = only_to(&out, BOB).msg.clone();
    assert_eq!((again.body.as_slice(), again.cseq().map(|c| c.0)), (&b"m1"[..], Some(6)));
    // No answer at all (timer F, 32 s): retried after 4 s this time.
    let out = h.advance(Duration::from_secs(32));
    assert!(out.iter().all(|s| s.msg.body == b"m1"), "retransmissions of m1 only: {out:#?}");
    assert_eq!(h.gauge(|m| &m.messages.retries), 2);
    let mut third = None;
    for _ in 0..5 {
        third = h.advance(Duration::from_secs(1)).into_iter().find(|s| s.method() == "MESSAGE").map(|s| s.msg);
        if third.is_some() {
            break;
        }
    }
    let third = third.expect("a third attempt");
    assert_eq!(third.cseq().map(|c| c.0), Some(7));
    // A 404 is final: m1 failed, and m2 goes at once.
    let out = h.send(BOB, &ok(&third, 404));
    let second = only_to(&out, BOB).msg.clone();
    assert_eq!(second.body, b"m2");
    assert_eq!((h.gauge(|m| &m.messages.failed), pending(&h)), (1, 2));
    let out = h.send(BOB, &ok(&second, 200));
    let last = only_to(&out, BOB).msg.clone();
    assert_eq!(last.body, b"m3");
    assert!(h.send(BOB, &ok(&last, 200)).is_empty());
    assert_eq!((h.gauge(|m| &m.messages.delivered), pending(&h)), (2, 0));
    // Nothing waits now: the next one is proxied.
    let out = h.send(CALLER, &message("sip:bob@127.0.0.1", "m4", "m4"));
    assert_eq!(only_to(&out, BOB).msg.vias().len(), 2);
}

#[test]
fn stored_messages_expire_after_their_ttl_and_caps_refuse() {
    let mut h = Harness::with_config(&config());
    store_for_bob(&mut h, 3);
    // max_per_target = 3: the fourth for bob is refused with 486.
    let out = h.send(CALLER, &message("sip:bob@127.0.0.1", "m4", "m4"));
    assert_eq!(only_to(&out, CALLER).code(), 486);
    assert_eq!(h.gauge(|m| &m.messages.refused), 1);
    assert!(h.advance(Duration::from_secs(59)).is_empty());
    assert_eq!(pending(&h), 3);
    h.advance(Duration::from_secs(2));
    assert_eq!((h.gauge(|m| &m.messages.expired), pending(&h)), (3, 0));
    let out = register_bob(&mut h);
    assert_eq!(out.len(), 1, "nothing left to deliver: {out:#?}");
}

#[test]
fn a_message_for_a_down_trunk_is_held_until_it_is_up() {
    let mut h = Harness::with_config(&config());
    // Trunks up: proxied to trunk a as before.
    let out = h.send(CALLER, &message("sip:9123@127.0.0.1", "t0", "t0"));
    let t0 = only_to(&out, TRUNK_A).msg.clone();
    assert_eq!(t0.vias().len(), 2);
    assert_eq!(only_to(&h.send(TRUNK_A, &ok(&t0, 200)), CALLER).code(), 200);
    for t in ["a", "b"] {
        assert!(h.proxy.control(&format!("trunk {t} down")).starts_with("ok"));
    }
    let out = h.send(CALLER, &message("sip:9123@127.0.0.1", "t1", "hello"));
    assert_eq!(only_to(&out, CALLER).code(), 202);
    assert!(h.advance(Duration::from_secs(5)).is_empty(), "held while DOWN");
    // Trunk b comes back first: the message goes there.
    h.proxy.control("trunk b auto");
    let out = h.advance(Duration::from_secs(1));
    let m = only_to(&out, super::TRUNK_B).msg.clone();
    assert_eq!((m.request_uri(), m.body.as_slice()), (Some("sip:9123@127.0.0.1:5080"), &b"hello"[..]));
    h.send(super::TRUNK_B, &ok(&m, 202));
    assert_eq!((h.gauge(|m| &m.messages.delivered), pending(&h)), (1, 0));
}

#[test]
fn pending_messages_survive_a_restart_over_the_same_spool() {
    let dir = std::env::temp_dir().join(format!("xsbc-msg-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let toml = config() + &format!("spool_dir = \"{}\"\n", dir.display());
    let mut h = Harness::with_config(&toml);
    h.proxy.open_message_spool().unwrap();
    store_for_bob(&mut h, 2);
    drop(h);
    // A new process over the same directory: both are pending, in order.
    let mut h = Harness::with_config(&toml);
    h.proxy.open_message_spool().unwrap();
    assert_eq!(pending(&h), 2);
    let out = register_bob(&mut h);
    let first = out.iter().find(|s| s.method() == "MESSAGE").unwrap().msg.clone();
    assert_eq!(first.body, b"m1");
    let out = h.send(BOB, &ok(&first, 200));
    let second = only_to(&out, BOB).msg.clone();
    assert_eq!(second.body, b"m2");
    drop(h);
    // Delivered ones are not delivered again after another restart.
    let mut h = Harness::with_config(&toml);
    h.proxy.open_message_spool().unwrap();
    assert_eq!(pending(&h), 1);
    let out = register_bob(&mut h);
    assert_eq!(out.iter().find(|s| s.method() == "MESSAGE").unwrap().msg.body, b"m2");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn with_digest_auth_a_message_from_our_user_is_challenged_before_it_is_stored() {
    let users = std::env::temp_dir().join(format!("xsbc-msg-users-{}.txt", std::process::id()));
    let line = crate::auth::users::line_for("bob", "127.0.0.1", "bob-pw");
    std::fs::write(&users, format!("{line}\n")).unwrap();
    let toml =
        format!("{}\n[auth]\nusers_file = \"{}\"\nsecret = \"0123456789abcdef0123\"\n", config(), users.display());
    let mut h = Harness::with_config(&toml);
    let _ = std::fs::remove_file(&users);
    // From alice@127.0.0.1 (one of our domains), no credentials: 407.
    let out = h.send(CALLER, &message("sip:bob@127.0.0.1", "a1", "hi"));
    assert_eq!(only_to(&out, CALLER).code(), 407);
    assert_eq!((h.gauge(|m| &m.messages.stored), pending(&h)), (0, 0));
}
