//! A call on a remote media relay stays there: the dialog and its
//! replicated record name the relay, and a node that takes the call over
//! pins it to the same relay before driving it.

use super::sip::{respond, Request};
use super::{only_to, Harness, CALLER, TRUNK_A};
use crate::proxy::dialog::DialogRecord;

#[test]
fn the_relay_of_a_call_is_recorded_and_pinned_on_takeover() {
    let mut a = Harness::new();
    *a.relay.remote.lock().unwrap() = Some("relay-2".into());
    let cid = "pin1@10.0.0.1";
    let out = a.send(CALLER, &Request::new("INVITE", cid).sdp(6000).build());
    let invite = only_to(&out, TRUNK_A).msg.clone();
    assert_eq!(a.proxy.core.dialogs.get(cid).unwrap().relay.as_deref(), Some("relay-2"));
    let out = a.send(TRUNK_A, &respond(&invite, 200, Some(7000)));
    only_to(&out, CALLER);
    let dump = a.proxy.dump_dialogs();
    let r: DialogRecord = serde_json::from_str(&dump[0].1).unwrap();
    assert_eq!(r.relay.as_deref(), Some("relay-2"));

    // The standby takes the call over: the call is pinned to relay-2 there.
    let mut b = Harness::new();
    assert_eq!(b.proxy.import_dialogs(&[dump[0].1.clone()], b.now), 1);
    assert_eq!(b.relay.placed.lock().unwrap().get(cid).map(String::as_str), Some("relay-2"));
    let again: DialogRecord = serde_json::from_str(&b.proxy.dump_dialogs()[0].1).unwrap();
    assert_eq!(again.relay.as_deref(), Some("relay-2"), "and it replicates it on");

    // With the embedded relay there is no placement and no key.
    let mut c = Harness::new();
    c.send(CALLER, &Request::new("INVITE", "pin2@10.0.0.1").sdp(6000).build());
    let json = &c.proxy.dump_dialogs()[0].1;
    assert!(!json.contains("\"relay\""), "{json}");
}
