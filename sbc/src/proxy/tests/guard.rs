//! The source guard through the whole proxy: a scanner's User-Agent gets
//! no answer and bans its address; wrong passwords ban; rate limits drop
//! without an answer; a `never_ban` source is never banned; the ctl
//! commands; and a source's bans do not touch other sources.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::sip::Request;
use super::{Harness, Sent, CALLER};
use crate::auth::digest::{Algorithm, Challenge, Credentials};
use crate::auth::users::line_for;
use crate::guard::{DropReason, Reason};

/// The harness's config with `[guard]` holding `guard`.
fn harness(guard: &str) -> Harness {
    Harness::with_config(&format!("{}\n[guard]\n{guard}\n", Harness::config()))
}

/// The harness with `[auth]` (alice, password `alice-pw`) and `[guard]`.
fn auth_harness(guard: &str) -> Harness {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "xsbc-guard-users-{}-{}.txt",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, format!("{}\n", line_for("alice", "127.0.0.1", "alice-pw"))).unwrap();
    let toml = format!(
        "{}\n[auth]\nusers_file = \"{}\"\nsecret = \"0123456789abcdef0123\"\n[guard]\n{guard}\n",
        Harness::config(),
        path.display()
    );
    let h = Harness::with_config(&toml);
    let _ = std::fs::remove_file(path);
    h
}

fn options(call_id: &str, user_agent: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:x@10.0.0.1>;tag=f\r\nTo: <sip:127.0.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\nUser-Agent: {user_agent}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn register(call_id: &str, cseq: u32, auth: &str) -> Vec<u8> {
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK-{call_id}-{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=f{cseq}\r\nTo: <sip:alice@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:alice@10.0.0.1:5062>\r\nExpires: 600\r\n\
         {auth}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The Authorization line answering `s`'s MD5 challenge with `pw`.
fn answer(s: &Sent, pw: &str) -> String {
    let ch = s
        .msg
        .headers_named("WWW-Authenticate")
        .filter_map(|h| Challenge::parse(h.value()))
        .find(|c| c.algorithm == Algorithm::Md5)
        .expect("an MD5 challenge");
    let cred = Credentials::answer(&ch, "alice", pw, "REGISTER", "sip:127.0.0.1", "c0ffee", 1);
    format!("Authorization: {}\r\n", cred.to_value())
}

fn codes(out: &[Sent]) -> Vec<u16> {
    out.iter().map(Sent::code).collect()
}

#[test]
fn a_scanner_gets_no_answer_and_its_address_is_banned() {
    let mut h = harness("");
    let scanner = "192.0.2.66:5070";
    assert!(h.send(scanner, &options("s1", "friendly-scanner")).is_empty(), "no answer to a scanner");
    // The same address from another port, with an honest User-Agent: dropped too.
    assert!(h.send("192.0.2.66:5999", &options("s2", "Linphone/5.2")).is_empty());
    assert!(h.send("192.0.2.66:5999", &Request::new("INVITE", "c1").sdp(4000).build()).is_empty());
    // Anyone else is answered.
    assert_eq!(codes(&h.send(CALLER, &options("s3", "Linphone/5.2"))), vec![200]);
    assert_eq!(h.metrics.guard.bans_count(Reason::Scanner), 1);
    assert_eq!(h.metrics.guard.dropped_count(DropReason::Banned), 3, "the scanner's message and the two after");
    assert_eq!(h.gauge(|m| &m.guard.active), 1);
    let list = h.proxy.control("bans");
    assert!(list.lines().nth(1).is_some_and(|l| l.starts_with("192.0.2.66/32") && l.contains("scanner")), "{list}");
    let metrics = h.metrics.render();
    assert!(metrics.contains("sbc_guard_bans_total{reason=\"scanner\"} 1"), "{metrics}");
    assert!(metrics.contains("sbc_guard_bans_active 1"), "{metrics}");
}

#[test]
fn the_ban_ends_after_ban_time() {
    let mut h = harness("ban_time_s = 30");
    let scanner = "192.0.2.66:5070";
    h.send(scanner, &options("s1", "sipvicious"));
    h.advance(std::time::Duration::from_secs(29));
    assert!(h.send(scanner, &options("s2", "Linphone")).is_empty());
    h.advance(std::time::Duration::from_secs(2));
    assert_eq!(codes(&h.send(scanner, &options("s3", "Linphone"))), vec![200], "the ban expired");
    assert_eq!(h.gauge(|m| &m.guard.active), 0);
}

#[test]
fn wrong_passwords_ban_the_source() {
    let mut h = auth_harness("auth_failures = 3\nauth_window_s = 60");
    let src = "192.0.2.30:5062";
    for i in 1..=3u32 {
        let out = h.send(src, &register("r1", 2 * i - 1, ""));
        assert_eq!(codes(&out), vec![401], "challenge {i}");
        let out = h.send(src, &register("r1", 2 * i, &answer(&out[0], "wrong")));
        assert_eq!(codes(&out), vec![401], "a wrong password is challenged again ({i})");
    }
    assert_eq!(h.proxy.guard().ban_of("192.0.2.30".parse().unwrap()).map(|b| b.reason), Some(Reason::Auth));
    assert!(h.send(src, &register("r2", 1, "")).is_empty(), "banned: no challenge any more");
    // The right password from another address still works.
    let other = "192.0.2.31:5062";
    let out = h.send(other, &register("r3", 1, ""));
    let out = h.send(other, &register("r3", 2, &answer(&out[0], "alice-pw")));
    assert_eq!(codes(&out), vec![200]);
    assert_eq!(h.metrics.guard.bans_count(Reason::Auth), 1);
}

#[test]
fn a_never_ban_source_is_never_banned() {
    let mut h = auth_harness("never_ban = [\"192.0.2.0/28\"]\nauth_failures = 2\ninvite_per_s = 1\ninvite_burst = 1");
    let src = "192.0.2.10:40000";
    assert_eq!(codes(&h.send(src, &options("s1", "friendly-scanner"))), vec![200]);
    for i in 1..=5u32 {
        let out = h.send(src, &register("r1", 2 * i - 1, ""));
        let out = h.send(src, &register("r1", 2 * i, &answer(&out[0], "wrong")));
        assert_eq!(codes(&out), vec![401]);
    }
    assert!(h.proxy.guard().bans().is_empty());
    let reply = h.proxy.control("ban 192.0.2.10");
    assert!(reply.starts_with("error") && reply.contains("never_ban"), "{reply}");
    assert!(h.proxy.control("ban 192.0.2.0/24").starts_with("error"), "a prefix covering it is refused too");
    assert!(h.proxy.guard().bans().is_empty());
}

#[test]
fn invites_over_the_rate_get_no_answer() {
    let mut h = harness("invite_per_s = 1\ninvite_burst = 2\nban_after_rate_drops = 3");
    let send = |h: &mut Harness, id: &str| h.send(CALLER, &Request::new("INVITE", id).sdp(4000).build());
    assert!(codes(&send(&mut h, "c1")).contains(&100));
    assert!(codes(&send(&mut h, "c2")).contains(&100));
    assert!(send(&mut h, "c3").is_empty(), "over the burst: no 100 Trying, nothing forwarded");
    assert_eq!(h.metrics.guard.dropped_count(DropReason::InviteRate), 1);
    // Other requests from the caller still pass.
    assert_eq!(codes(&h.send(CALLER, &options("o1", "x"))), vec![200]);
    h.now += std::time::Duration::from_secs(1);
    assert!(codes(&send(&mut h, "c4")).contains(&100), "refilled");
    assert!(send(&mut h, "c5").is_empty());
    assert!(send(&mut h, "c6").is_empty());
    assert_eq!(h.proxy.guard().ban_of(super::addr(CALLER).ip()).map(|b| b.reason), Some(Reason::Rate));
    assert!(h.send(CALLER, &options("o2", "x")).is_empty(), "banned now");
}

#[test]
fn malformed_messages_ban() {
    let mut h = harness("malformed_per_window = 5");
    let src = "192.0.2.40:5060";
    for i in 0..4 {
        h.send(src, format!("garbage {i}\r\n\r\n").as_bytes());
    }
    assert!(h.proxy.guard().bans().is_empty());
    h.send(src, b"\x01\x02 not sip\r\n\r\n");
    assert_eq!(h.proxy.guard().ban_of("192.0.2.40".parse().unwrap()).map(|b| b.reason), Some(Reason::Malformed));
}

#[test]
fn ctl_ban_list_and_unban() {
    let mut h = harness("");
    assert_eq!(h.proxy.control("ban 192.0.2.0/24 --for 10m"), "ok: 192.0.2.0/24 banned for 600s\n");
    assert!(h.send(CALLER, &options("o1", "x")).is_empty(), "the caller is in the banned prefix");
    let list = h.proxy.control("bans");
    assert!(list.contains("192.0.2.0/24") && list.contains("manual"), "{list}");
    assert_eq!(h.proxy.control("unban 192.0.2.0/24"), "ok: 192.0.2.0/24 unbanned\n");
    assert_eq!(codes(&h.send(CALLER, &options("o2", "x"))), vec![200]);
    assert!(h.proxy.control("unban 192.0.2.0/24").starts_with("error"));
    assert!(h.proxy.control("trunks").starts_with("TRUNK"), "the trunk commands still work");
}
