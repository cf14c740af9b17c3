//! An answered call whose ACK never comes: after 64×T1 the sbc sends BYE
//! both ways, frees the media, writes the CDR (`no-ack`) and counts it; an
//! ACK in time keeps the call, one after the cleanup is absorbed. Dialogs
//! taken over from the HA peer are ended the same way, by the active node.

use std::path::PathBuf;
use std::time::Duration;

use super::sip::{respond, Request};
use super::{only_to, Harness, Sent, CALLER, TRUNK_A};
use crate::cdr::CdrWriter;
use crate::sip::Message;

/// 64×T1 with the default T1 of 500 ms.
const LIMIT: Duration = Duration::from_secs(32);

/// The INVITE for `call_id` sent, answered by trunk `a`: returns the 200
/// as the caller got it. No ACK.
fn answer(h: &mut Harness, call_id: &str) -> Message {
    let out = h.send(CALLER, &Request::new("INVITE", call_id).sdp(6000).build());
    let invite = only_to(&out, TRUNK_A).msg.clone();
    let out = h.send(TRUNK_A, &respond(&invite, 200, Some(7000)));
    only_to(&out, CALLER).msg.clone()
}

fn byes(out: &[Sent]) -> Vec<&Sent> {
    out.iter().filter(|s| s.msg.method().is_some_and(|m| m.to_string() == "BYE")).collect()
}

/// Sends the CDRs of `h` to a fresh file, returned.
fn cdr_file(h: &mut Harness, name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("xsbc-noack-{name}-{}.cdr", std::process::id()));
    let _ = std::fs::remove_file(&path);
    h.proxy.core.cdr = CdrWriter::open(Some(&path)).unwrap();
    path
}

/// The BYE pair sent after the limit (the first to each side, when `out`
/// holds retransmissions too): `(to the callee, to the caller)`.
fn assert_byes<'a>(out: &'a [Sent], call_id: &str) -> (&'a Sent, &'a Sent) {
    let b = byes(out);
    assert!(b.len() >= 2 && b.len() == out.len(), "{out:#?}");
    let first = |to: &str| *b.iter().find(|s| s.dest == super::addr(to)).expect("a BYE to each side");
    let (to_callee, to_caller) = (first(TRUNK_A), first(CALLER));
    for s in [to_callee, to_caller] {
        assert_eq!(s.method(), "BYE");
        assert_eq!(s.msg.call_id(), Some(call_id));
        assert_eq!(s.msg.header("route"), None);
        let via = &s.msg.vias()[0];
        assert_eq!((via.host.as_str(), via.port), ("127.0.0.1", Some(5060)), "the sbc's own Via");
    }
    // Toward the callee: the caller's identity, one CSeq above the INVITE.
    assert_eq!((to_callee.msg.from_tag().as_deref(), to_callee.msg.to_tag().as_deref()), (Some("a1"), Some("b1")));
    assert_eq!(to_callee.msg.cseq().map(|c| c.0), Some(2));
    assert_eq!(to_callee.msg.request_uri(), Some("sip:127.0.0.1:5070"));
    // Toward the caller: the callee's identity, at the caller's NAT address.
    assert_eq!((to_caller.msg.from_tag().as_deref(), to_caller.msg.to_tag().as_deref()), (Some("b1"), Some("a1")));
    assert_eq!(to_caller.msg.request_uri(), Some("sip:192.0.2.10:40000"));
    (to_callee, to_caller)
}

#[test]
fn answered_never_acked_is_ended_with_bye_both_ways() {
    let mut h = Harness::new();
    let cdr = cdr_file(&mut h, "ended");
    let ok = answer(&mut h, "na1");
    assert_eq!(h.gauge(|m| &m.dialogs), 1);

    let out = h.advance(LIMIT - Duration::from_secs(1));
    assert!(byes(&out).is_empty(), "nothing before 64×T1: {out:#?}");
    assert_eq!(h.gauge(|m| &m.dialogs), 1);

    let out = h.advance(Duration::from_secs(2));
    assert_eq!(byes(&out).len(), 2, "one BYE each way: {out:#?}");
    let (to_callee, to_caller) = assert_byes(&out, "na1");
    let (bye_callee, bye_caller) = (to_callee.msg.clone(), to_caller.msg.clone());
    assert_eq!(*h.relay.deleted.lock().unwrap(), vec!["na1".to_owned()], "media freed");
    assert_eq!(h.gauge(|m| &m.dialogs), 0);
    assert_eq!(h.gauge(|m| &m.calls_no_ack), 1);
    assert!(h.metrics.render().contains("sbc_calls_no_ack_total 1\n"));
    let text = std::fs::read_to_string(&cdr).unwrap();
    let _ = std::fs::remove_file(&cdr);
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["call_id"], "na1");
    assert_eq!(lines[0]["end_reason"], "no-ack");
    assert_eq!(lines[0]["final_code"], 200);

    // The BYEs are retransmitted until answered; the answers end them.
    let out = h.advance(Duration::from_millis(600));
    assert_eq!(byes(&out).len(), 2, "BYE retransmitted over UDP: {out:#?}");
    assert!(h.send(TRUNK_A, &respond(&bye_callee, 200, None)).is_empty());
    assert!(h.send(CALLER, &respond(&bye_caller, 200, None)).is_empty());
    let out = h.advance(Duration::from_secs(40));
    assert!(byes(&out).is_empty(), "answered BYEs are not sent again: {out:#?}");

    // The ACK arriving after the cleanup is absorbed: no call, no second
    // end. At most it follows its Route on to the callee, which has the BYE.
    let out = h.send(CALLER, &Request::new("ACK", "na1").in_dialog(&ok).build());
    assert!(out.iter().all(|s| s.dest == super::addr(TRUNK_A) && s.method() == "ACK"), "{out:#?}");
    assert_eq!((h.gauge(|m| &m.dialogs), h.gauge(|m| &m.calls_no_ack)), (0, 1));
    assert_eq!(h.relay.deleted.lock().unwrap().len(), 1);
}

#[test]
fn an_ack_in_time_keeps_the_call() {
    let mut h = Harness::new();
    let ok = answer(&mut h, "na2");
    let out = h.advance(LIMIT - Duration::from_secs(2));
    assert!(byes(&out).is_empty());
    let out = h.send(CALLER, &Request::new("ACK", "na2").in_dialog(&ok).build());
    assert_eq!(only_to(&out, TRUNK_A).method(), "ACK");
    let out = h.advance(LIMIT * 3);
    assert!(byes(&out).is_empty(), "{out:#?}");
    assert_eq!(h.gauge(|m| &m.dialogs), 1);
    assert_eq!(h.gauge(|m| &m.calls_no_ack), 0);
    assert!(h.relay.deleted.lock().unwrap().is_empty());
}

#[test]
fn an_unacked_dialog_taken_over_is_ended_by_the_active_node_only() {
    let mut a = Harness::new();
    answer(&mut a, "na3");
    let records: Vec<String> = a.proxy.dump_dialogs().into_iter().map(|(_, j)| j).collect();
    assert_eq!(records.len(), 1);

    // A standby holding the record leaves it alone.
    let mut standby = Harness::new();
    standby.proxy.set_active(false);
    assert_eq!(standby.proxy.import_dialogs(&records, standby.now), 1);
    let out = standby.advance(LIMIT * 2);
    assert!(byes(&out).is_empty(), "{out:#?}");
    assert_eq!(standby.gauge(|m| &m.dialogs), 1);

    // The node taking over ends it 64×T1 after the answer.
    let mut b = Harness::new();
    assert_eq!(b.proxy.import_dialogs(&records, b.now), 1);
    let out = b.advance(LIMIT + Duration::from_secs(1));
    assert_byes(&out, "na3");
    assert_eq!(*b.relay.deleted.lock().unwrap(), vec!["na3".to_owned()]);
    assert_eq!((b.gauge(|m| &m.dialogs), b.gauge(|m| &m.calls_no_ack)), (0, 1));
}
