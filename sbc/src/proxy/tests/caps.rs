//! Caps in-process: registrations (in total, per AOR, per source),
//! server transactions, dialogs, media sessions and INVITEs outstanding
//! toward trunks, each refused with 503 and Retry-After past its cap and
//! counted; the counts back at zero once calls end, whichever way they end;
//! and the rule that keeps one source's flood from taking a shared trunk
//! DOWN.

use std::net::IpAddr;
use std::time::Duration;

use super::sip::{respond, Request};
use super::{addr, only_to, Harness, Sent, CALLER, TRUNK_A, TRUNK_B};
use crate::caps::Cap;
use crate::health::State;
use crate::sip::Message;

/// A second source that floods.
const ATTACKER: &str = "198.51.100.66:5060";

fn ip(s: &str) -> IpAddr {
    addr(s).ip()
}

fn with_limits(limits: &str) -> Harness {
    Harness::with_config(&(Harness::config() + "\n[limits]\n" + limits + "\n"))
}

/// A REGISTER of `user` binding `contact` for `expires` seconds.
fn register(user: &str, contact: &str, expires: u32, call_id: &str, cseq: u32) -> Vec<u8> {
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1:5062;branch=z9hG4bK-r-{call_id}-{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=r\r\nTo: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <{contact}>\r\nExpires: {expires}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The one response to `to`, checked to be a 503 with Retry-After, and
/// the refusal counted under `cap`.
fn assert_refused(h: &Harness, out: &[Sent], to: &str, cap: Cap, count: u64) {
    // An INVITE refused in the call layer had its 100 Trying first.
    let finals: Vec<&Sent> = out.iter().filter(|s| s.code() != 100).collect();
    assert_eq!(finals.len(), 1, "nothing but the refusal: {out:#?}");
    let r = finals[0];
    assert_eq!((r.dest, r.code()), (addr(to), 503), "{out:#?}");
    assert_eq!(r.msg.header("retry-after"), Some("5"));
    assert_eq!(h.metrics.cap_refused_count(cap), count, "{}", cap.label());
    let line = format!("sbc_caps_refused_total{{cap=\"{}\"}} {count}\n", cap.label());
    assert!(h.metrics.render().contains(&line), "{line}");
}

fn code_to(out: &[Sent], to: &str) -> u16 {
    only_to(out, to).code()
}

#[test]
fn registrations_are_capped_per_source_per_aor_and_in_total() {
    let mut h = with_limits("max_registrations = 5\nmax_registrations_per_source = 3\nmax_contacts_per_aor = 2");
    let other = "192.0.2.77:5060";
    for u in 0..3 {
        let out = h.send(ATTACKER, &register(&format!("u{u}"), &format!("sip:u{u}@10.1.1.1"), 300, "fa", u + 1));
        assert_eq!(code_to(&out, ATTACKER), 200);
    }
    let out = h.send(ATTACKER, &register("u3", "sip:u3@10.1.1.1", 300, "fa", 10));
    assert_refused(&h, &out, ATTACKER, Cap::RegistrationsPerSource, 1);
    assert_eq!(h.proxy.core.location.from_source(ip(ATTACKER)), 3, "nothing bound for the refused one");
    // A refresh of a binding it holds is not a new one.
    let out = h.send(ATTACKER, &register("u0", "sip:u0@10.1.1.1", 300, "fa", 11));
    assert_eq!(code_to(&out, ATTACKER), 200);
    // Another source still registers: two contacts for one AOR, not three.
    for (i, c) in ["sip:x@10.2.2.1", "sip:x@10.2.2.2"].iter().enumerate() {
        let out = h.send(other, &register("x", c, 300, "fb", i as u32 + 1));
        assert_eq!(code_to(&out, other), 200);
    }
    let out = h.send(other, &register("x", "sip:x@10.2.2.3", 300, "fb", 3));
    assert_refused(&h, &out, other, Cap::ContactsPerAor, 1);
    // Five bindings in all: a sixth, from anyone, is over the total.
    let out = h.send(other, &register("y", "sip:y@10.2.2.9", 300, "fc", 1));
    assert_refused(&h, &out, other, Cap::Registrations, 1);
    assert_eq!(h.gauge(|m| &m.bindings), 5);
    // Unregistering frees a place at once; expiry frees the rest.
    let out = h.send(ATTACKER, &register("u1", "sip:u1@10.1.1.1", 0, "fa", 12));
    assert_eq!(code_to(&out, ATTACKER), 200);
    assert_eq!(h.proxy.core.location.from_source(ip(ATTACKER)), 2);
    let out = h.send(ATTACKER, &register("u3", "sip:u3@10.1.1.1", 300, "fa", 13));
    assert_eq!(code_to(&out, ATTACKER), 200);
    h.advance(Duration::from_secs(301));
    assert_eq!(h.proxy.core.location.len(), 0);
    assert_eq!(h.proxy.core.location.from_source(ip(ATTACKER)), 0);
    assert_eq!(h.gauge(|m| &m.bindings), 0);
}

#[test]
fn server_transactions_are_capped_per_source_and_in_total() {
    let mut h = with_limits("max_transactions = 3\nmax_transactions_per_source = 2");
    for c in ["t1", "t2"] {
        let out = h.send(ATTACKER, &Request::new("INVITE", c).build());
        assert_eq!(only_to(&out, TRUNK_A).method(), "INVITE");
    }
    let out = h.send(ATTACKER, &Request::new("INVITE", "t3").build());
    assert_refused(&h, &out, ATTACKER, Cap::TransactionsPerSource, 1);
    assert_eq!(out.len(), 1, "no transaction, so no 100 Trying either: {out:#?}");
    assert_eq!(h.proxy.txn.server_count(ip(ATTACKER)), (2, 2));
    let out = h.send(CALLER, &Request::new("INVITE", "t4").build());
    assert_eq!(only_to(&out, TRUNK_A).method(), "INVITE");
    let out = h.send(CALLER, &Request::new("INVITE", "t5").build());
    assert_refused(&h, &out, CALLER, Cap::Transactions, 1);
    // A retransmission of a held INVITE is absorbed (its 100 again), not refused.
    let out = h.send(ATTACKER, &Request::new("INVITE", "t1").build());
    assert!(out.iter().all(|s| s.code() == 100), "{out:#?}");
    // Nobody answers: both trunks time out, 408 upstream, timer H ends
    // the server transactions (no ACK comes). Everything is back to zero.
    h.advance(Duration::from_secs(40));
    assert_eq!(h.proxy.txn.server_count(ip(ATTACKER)), (0, 0));
    assert_eq!(h.proxy.core.dialogs.counts(ip(ATTACKER)), [(0, 0), (0, 0)]);
    assert_eq!(h.proxy.core.trunk_invites.total(), 0);
    let out = h.send(ATTACKER, &Request::new("INVITE", "t6").build());
    assert_eq!(only_to(&out, TRUNK_A).method(), "INVITE", "room again");
}

#[test]
fn dialogs_and_media_sessions_are_capped() {
    let mut h = with_limits(
        "max_dialogs = 3\nmax_dialogs_per_source = 2\nmax_media_sessions = 2\nmax_media_sessions_per_source = 1",
    );
    let out = h.send(ATTACKER, &Request::new("INVITE", "d1").sdp(6000).build());
    assert_eq!(only_to(&out, TRUNK_A).method(), "INVITE");
    let out = h.send(ATTACKER, &Request::new("INVITE", "d2").sdp(6002).build());
    assert_refused(&h, &out, ATTACKER, Cap::MediaSessionsPerSource, 1);
    assert_eq!(h.relay.allocated(), 1, "the refused offer never reached the relay");
    // Without an offer it is only a dialog.
    let out = h.send(ATTACKER, &Request::new("INVITE", "d3").build());
    assert_eq!(only_to(&out, TRUNK_A).method(), "INVITE");
    let out = h.send(ATTACKER, &Request::new("INVITE", "d4").build());
    assert_refused(&h, &out, ATTACKER, Cap::DialogsPerSource, 1);
    assert_eq!(h.proxy.core.dialogs.counts(ip(ATTACKER)), [(2, 2), (1, 1)]);
    let out = h.send(CALLER, &Request::new("INVITE", "d5").sdp(6004).build());
    assert_eq!(only_to(&out, TRUNK_A).method(), "INVITE");
    let out = h.send(CALLER, &Request::new("INVITE", "d6").build());
    assert_refused(&h, &out, CALLER, Cap::Dialogs, 1);
    assert_eq!(h.metrics.cap_refused_count(Cap::MediaSessions), 0);
    h.advance(Duration::from_secs(40));
    assert_eq!(h.proxy.core.dialogs.counts(ip(ATTACKER)), [(0, 0), (0, 0)]);
    assert_eq!(h.proxy.core.dialogs.counts(ip(CALLER)), [(0, 0), (0, 0)]);
}

/// The INVITE `call_id` from the caller as trunk `a` got it.
fn invite_to_a(h: &mut Harness, call_id: &str) -> Message {
    let out = h.send(CALLER, &Request::new("INVITE", call_id).sdp(6000).build());
    only_to(&out, TRUNK_A).msg.clone()
}

/// Every count the caps keep, for the caller: transactions, dialogs,
/// media sessions, trunk INVITEs.
fn counts(h: &Harness) -> (usize, [(usize, usize); 2], usize) {
    (
        h.proxy.txn.server_count(ip(CALLER)).1,
        h.proxy.core.dialogs.counts(ip(CALLER)),
        h.proxy.core.trunk_invites.total(),
    )
}

#[test]
fn counts_return_to_zero_on_every_end_path() {
    let mut h = Harness::new();
    let zero = (0, [(0, 0), (0, 0)], 0);
    // Answered, ACKed, BYE.
    let invite = invite_to_a(&mut h, "e1");
    assert_eq!(counts(&h), (1, [(1, 1), (1, 1)], 1));
    let ok = only_to(&h.send(TRUNK_A, &respond(&invite, 200, Some(7000))), CALLER).msg.clone();
    assert_eq!(h.proxy.core.trunk_invites.total(), 0, "answered: no longer outstanding");
    h.send(CALLER, &Request::new("ACK", "e1").in_dialog(&ok).build());
    h.send(CALLER, &Request::new("BYE", "e1").cseq(2).in_dialog(&ok).build());
    let bye = h.proxy.drain_output();
    assert!(bye.is_empty());
    // CANCEL while ringing, then the 487.
    let invite = invite_to_a(&mut h, "e2");
    h.send(TRUNK_A, &respond(&invite, 180, None));
    let cancel = Request::new("CANCEL", "e2").branch("z9hG4bK-INVITE-e2").build();
    h.send(CALLER, &cancel);
    h.send(TRUNK_A, &respond(&invite, 487, None));
    // Failover: trunk a answers 503, trunk b takes the call, caller hangs up.
    let invite = invite_to_a(&mut h, "e3");
    let out = h.send(TRUNK_A, &respond(&invite, 503, None));
    let to_b = only_to(&out, TRUNK_B).msg.clone();
    assert_eq!(h.proxy.core.trunk_invites.total(), 1, "the branch to b is outstanding");
    let ok = only_to(&h.send(TRUNK_B, &respond(&to_b, 200, Some(7002))), CALLER).msg.clone();
    h.send(CALLER, &Request::new("ACK", "e3").in_dialog(&ok).build());
    h.send(CALLER, &Request::new("BYE", "e3").cseq(2).in_dialog(&ok).build());
    // Answered but never ACKed: torn down after 64×T1.
    let invite = invite_to_a(&mut h, "e4");
    h.send(TRUNK_A, &respond(&invite, 200, Some(7004)));
    // No answer at all: both trunks time out, 408.
    h.send(CALLER, &Request::new("INVITE", "e5").sdp(6010).build());
    assert_eq!(h.proxy.core.dialogs.counts(ip(CALLER)), [(2, 2), (2, 2)], "e4 and e5 left; e1, e2, e3 ended");
    h.advance(Duration::from_secs(80));
    assert_eq!(h.gauge(|m| &m.calls_no_ack), 1);
    assert_eq!(counts(&h), zero);
    let deleted = h.relay.deleted.lock().unwrap().clone();
    for c in ["e1", "e2", "e3", "e4", "e5"] {
        assert!(deleted.iter().any(|d| d == c), "media of {c} freed: {deleted:?}");
    }
}

#[test]
fn trunk_invites_outstanding_are_capped_per_source() {
    let mut h = with_limits("max_trunk_invites_per_source = 3");
    let mut held = Vec::new();
    for i in 0..3 {
        let out = h.send(ATTACKER, &Request::new("INVITE", &format!("f{i}")).build());
        held.push(only_to(&out, TRUNK_A).msg.clone());
    }
    let out = h.send(ATTACKER, &Request::new("INVITE", "f3").build());
    assert_refused(&h, &out, ATTACKER, Cap::TrunkInvitesPerSource, 1);
    // Another source is not held back.
    let out = h.send(CALLER, &Request::new("INVITE", "legit").build());
    assert_eq!(only_to(&out, TRUNK_A).method(), "INVITE");
    // A final answer frees a place.
    h.send(TRUNK_A, &respond(&held[0], 486, None));
    let out = h.send(ATTACKER, &Request::new("INVITE", "f4").build());
    assert_eq!(only_to(&out, TRUNK_A).method(), "INVITE");
}

/// A proxy with trunk `a` alone, probed (OPTIONS every 2 s) when `probed`.
fn one_trunk(probed: bool) -> Harness {
    let mut cfg = Harness::config().replace("trunks = [\"a\", \"b\"]", "trunks = [\"a\"]");
    if probed {
        cfg = cfg.replacen("probe = false", "probe = true", 1).replace("interval_ms = 5000", "interval_ms = 2000");
    }
    Harness::with_config(&cfg)
}

/// Moves the clock `secs` on in 100 ms steps; trunk `a` answers its
/// probes with 200 when `answer_probes`. Returns everything else sent.
fn run(h: &mut Harness, secs: u64, answer_probes: bool) -> Vec<Sent> {
    let mut rest = Vec::new();
    for _ in 0..secs * 10 {
        for s in h.advance(Duration::from_millis(100)) {
            if s.method() == "OPTIONS" && s.code() == 0 && s.dest == addr(TRUNK_A) {
                if answer_probes {
                    h.send(TRUNK_A, &respond(&s.msg, 200, None));
                }
            } else {
                rest.push(s);
            }
        }
    }
    rest
}

fn trunk_a(h: &Harness) -> State {
    h.proxy.core.trunks[0].health.state()
}

/// `n` INVITEs from the attacker, each reaching trunk `a`.
fn flood(h: &mut Harness, n: usize) {
    for i in 0..n {
        let out = h.send(ATTACKER, &Request::new("INVITE", &format!("flood{i}")).build());
        let invites = out.iter().filter(|s| s.dest == addr(TRUNK_A) && s.method() == "INVITE").count();
        assert_eq!(invites, 1, "the flood reaches the trunk: {out:#?}");
    }
}

#[test]
fn a_flood_the_trunk_ignores_does_not_take_a_probed_trunk_down() {
    let mut h = one_trunk(true);
    run(&mut h, 2, true);
    flood(&mut h, 20);
    // The trunk ignores every flood INVITE but answers its probes.
    let out = run(&mut h, 5, true);
    let mut timed_out: Vec<&str> =
        out.iter().filter(|s| s.dest == addr(ATTACKER) && s.code() == 408).filter_map(|s| s.msg.call_id()).collect();
    timed_out.sort_unstable();
    timed_out.dedup();
    assert_eq!(timed_out.len(), 20, "every flood INVITE timed out (408, retransmitted for want of an ACK)");
    assert_eq!(trunk_a(&h), State::Up, "20 timeouts from one source do not take it DOWN");
    assert!(h.proxy.core.trunks[0].health.counts().0 <= 1, "one source counts once at most");
    // The legitimate caller's next call still goes to the trunk.
    let invite = invite_to_a(&mut h, "legit");
    let out = h.send(TRUNK_A, &respond(&invite, 200, Some(7000)));
    assert_eq!(code_to(&out, CALLER), 200);
}

#[test]
fn a_probed_trunk_that_answers_nothing_still_goes_down() {
    let mut h = one_trunk(true);
    flood(&mut h, 20);
    run(&mut h, 6, false);
    assert_eq!(trunk_a(&h), State::Down, "missed probes take it DOWN: the rule hides no real outage");
}

#[test]
fn an_unprobed_trunk_answering_another_source_stays_up() {
    let mut h = one_trunk(false);
    flood(&mut h, 10);
    // While the flood waits, the trunk answers the legitimate caller.
    let invite = invite_to_a(&mut h, "legit1");
    h.send(TRUNK_A, &respond(&invite, 180, None));
    run(&mut h, 3, false);
    assert_eq!(trunk_a(&h), State::Up, "the trunk answered others: the flood's timeouts do not count");
    assert_eq!(h.proxy.core.trunks[0].health.counts().0, 0);
    let out = h.send(TRUNK_A, &respond(&invite, 200, Some(7000)));
    assert_eq!(code_to(&out, CALLER), 200);
    let invite = invite_to_a(&mut h, "legit2");
    assert_eq!(invite.call_id(), Some("legit2"));
}

#[test]
fn an_unprobed_trunk_silent_for_everyone_goes_down() {
    // With no probe and no other caller there is nothing to tell a dead
    // trunk from one that ignores a source: three timeouts count.
    let mut h = one_trunk(false);
    flood(&mut h, 3);
    run(&mut h, 3, false);
    assert_eq!(trunk_a(&h), State::Down);
}
