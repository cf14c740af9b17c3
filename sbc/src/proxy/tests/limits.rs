//! Message limits in-process: a request over a `[limits]` limit is answered
//! before any transaction, dialog or media exists, and counted.

use super::sip::Request;
use super::{only_to, Harness, CALLER};
use crate::sip::Breach;

#[test]
fn an_invite_over_max_body_gets_413_and_no_state() {
    let mut h = Harness::with_config(&(Harness::config() + "\n[limits]\nmax_body = 50\n"));
    let invite = Request::new("INVITE", "lim1").sdp(6000).build();
    let out = h.send(CALLER, &invite);
    let r = only_to(&out, CALLER);
    assert_eq!((r.code(), out.len()), (413, 1), "a 413 and nothing forwarded: {out:#?}");
    assert_eq!(r.msg.call_id(), Some("lim1"));
    assert_eq!(h.proxy.txn.len(), 0, "no transaction");
    assert_eq!(h.relay.allocated(), 0, "no media");
    assert_eq!(h.metrics.limit_refused_count(Breach::Body), 1);
    assert!(h.metrics.render().contains("sbc_sip_limit_refused_total{reason=\"body\"} 1"));
    // Without a body the same call goes through.
    let out = h.send(CALLER, &Request::new("INVITE", "lim2").build());
    assert!(out.iter().any(|s| s.code() == 100), "{out:#?}");
    assert_eq!(h.metrics.limit_refused_count(Breach::Body), 1);
}
