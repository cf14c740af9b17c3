//! HA takeover of calls with per-call edge state: a call through a trunk
//! with `callid_rewrite` and topology hiding, challenged by the carrier
//! (407, re-sent with CSeq + 1), is replicated from one proxy as the HA
//! thread does (the dialog changes after every signaling-loop pass, into a
//! store standing for Redis) and imported into a second proxy, which then
//! carries the call on as the first would have: the trunk keeps seeing its
//! opaque Call-ID and the shifted CSeq, the caller its own.

use std::collections::HashMap;

use super::sip::{respond, Request};
use super::trunk_auth::{challenge, digest};
use super::{addr, only_to, Harness, Sent, CALLER};
use crate::proxy::dialog::DialogRecord;
use crate::sip::Message;
use crate::transport::{Inbound, Proto};

/// The carrier: trunk `a`, hiding, rewriting Call-IDs, with credentials.
const CARRIER: &str = "198.51.100.20:5060";

fn config() -> String {
    Harness::config().replace(
        &format!("name = \"a\"\naddress = \"{}\"", super::TRUNK_A),
        &format!(
            "name = \"a\"\naddress = \"{CARRIER}\"\ntopology_hiding = true\ncallid_rewrite = true\n\
             username = \"acme\"\npassword = \"s3cret\""
        ),
    )
}

/// An HA node in the test: a proxy, and what it replicated (Call-ID →
/// record), as the standby's warm copy would hold it.
struct Node {
    h: Harness,
    store: HashMap<String, String>,
}

impl Node {
    fn new() -> Self {
        let mut h = Harness::with_config(&config());
        h.proxy.track_changes();
        Self { h, store: HashMap::new() }
    }

    /// One pass of the signaling loop: the message in, the dialog changes
    /// out to the store, then what goes on the wire (in that order, as in
    /// `main`), and the changes of the next pass.
    fn send(&mut self, src: &str, data: &[u8]) -> Vec<Sent> {
        let inb = Inbound { data: data.to_vec(), src: addr(src), proto: Proto::Udp, realm: 0 };
        self.h.proxy.handle(inb, self.h.now);
        self.replicate();
        let out = self.h.drain();
        self.replicate();
        out
    }

    fn replicate(&mut self) {
        for (call_id, json) in self.h.proxy.take_dialog_changes() {
            match json {
                Some(j) => self.store.insert(call_id, j),
                None => self.store.remove(&call_id),
            };
        }
    }

    /// The record replicated for `call_id`.
    fn record(&self, call_id: &str) -> DialogRecord {
        serde_json::from_str(&self.store[call_id]).unwrap()
    }

    /// A new node taking over from this one: it imports the store.
    fn take_over(&self) -> Node {
        // The store holds what a full dump would.
        let dump: HashMap<String, String> = self.h.proxy.dump_dialogs().into_iter().collect();
        assert_eq!(dump.len(), self.store.len());
        for (id, json) in &dump {
            let (a, b): (DialogRecord, DialogRecord) =
                (serde_json::from_str(json).unwrap(), serde_json::from_str(&self.store[id]).unwrap());
            assert_eq!(a, b, "the changes replicated add up to the dump");
        }
        let mut next = Node::new();
        let records: Vec<String> = self.store.values().cloned().collect();
        assert_eq!(next.h.proxy.import_dialogs(&records, next.h.now), records.len());
        next.replicate();
        next
    }
}

fn cseq(m: &Message) -> u32 {
    m.cseq().unwrap().0
}

/// The caller's call `cid` through the carrier, which challenges the
/// INVITE with a 407, then rings (180) and, if `answer`, answers (200,
/// ACK). Returns the re-sent INVITE as the carrier got it, and the 2xx as
/// the caller got it.
fn call(n: &mut Node, cid: &str, answer: bool) -> (Message, Option<Message>) {
    let out = n.send(CALLER, &Request::new("INVITE", cid).sdp(6000).build());
    let first = only_to(&out, CARRIER).msg.clone();
    let ext = first.call_id().unwrap().to_owned();
    assert_ne!(ext, cid, "the carrier sees an opaque Call-ID");
    let out = n.send(CARRIER, &challenge(&first, 407, &[digest("n1", "MD5")]));
    let again = out.iter().find(|s| s.dest == addr(CARRIER) && s.method() == "INVITE").unwrap().msg.clone();
    assert_eq!((cseq(&again), again.call_id()), (2, Some(ext.as_str())));
    assert!(again.header("proxy-authorization").is_some());
    let out = n.send(CARRIER, &respond(&again, 180, None));
    assert_eq!((only_to(&out, CALLER).code(), only_to(&out, CALLER).msg.call_id()), (180, Some(cid)));
    if !answer {
        return (again, None);
    }
    let out = n.send(CARRIER, &respond(&again, 200, Some(7000)));
    let ok = only_to(&out, CALLER).msg.clone();
    assert_eq!((ok.code(), cseq(&ok), ok.call_id()), (Some(200), 1, Some(cid)));
    let out = n.send(CALLER, &Request::new("ACK", cid).in_dialog(&ok).build());
    assert_eq!(cseq(&only_to(&out, CARRIER).msg), 2);
    (again, Some(ok))
}

/// The headers by which the two requests must agree (the branches differ
/// from node to node).
fn same_request(a: &Sent, b: &Sent) {
    assert_eq!(a.dest, b.dest);
    assert_eq!(a.msg.request_uri(), b.msg.request_uri());
    for name in ["call-id", "cseq", "from", "to", "contact", "route", "record-route", "max-forwards"] {
        assert_eq!(a.msg.header_values(name), b.msg.header_values(name), "{name}");
    }
    assert_eq!(a.msg.vias().len(), b.msg.vias().len());
}

#[test]
fn the_replicated_record_carries_the_call_id_mapping_and_the_cseq_offset() {
    let mut a = Node::new();
    let (again, _) = call(&mut a, "ha1@10.0.0.1", true);
    let r = a.record("ha1@10.0.0.1");
    assert_eq!(r.external_call_id.as_deref(), again.call_id());
    assert_eq!(r.cseq_offsets, vec![("a1".to_owned(), 1)]);
    // A call without either: the record has neither key, and a record
    // without them (from a node before this state was replicated) imports.
    let toml = Harness::config();
    let mut plain = Harness::with_config(&toml);
    let out = plain.send(CALLER, &Request::new("INVITE", "ha-plain").sdp(6000).build());
    only_to(&out, super::TRUNK_A);
    let json = &plain.proxy.dump_dialogs()[0].1;
    for key in ["external_call_id", "cseq_offsets", "caller_vias"] {
        assert!(!json.contains(key), "{key} in {json}");
    }
    let mut b = Harness::with_config(&toml);
    assert_eq!(b.proxy.import_dialogs(std::slice::from_ref(json), b.now), 1);
    let r: DialogRecord = serde_json::from_str(json).unwrap();
    assert_eq!((r.external_call_id, r.cseq_offsets, r.caller_vias.len()), (None, Vec::new(), 0));
}

#[test]
fn after_a_takeover_the_callers_bye_reaches_the_carrier_as_before() {
    let mut a = Node::new();
    let cid = "ha2@10.0.0.1";
    let (again, ok) = call(&mut a, cid, true);
    let ok = ok.unwrap();
    let mut b = a.take_over();
    // The new active writes the calls it took over with the same state.
    let (was, is) = (a.record(cid), b.record(cid));
    assert_eq!(
        (is.external_call_id, is.cseq_offsets, is.caller_vias),
        (was.external_call_id, was.cseq_offsets, was.caller_vias)
    );

    // The caller hangs up through the new active: what the carrier gets is
    // what the old active sends for the same BYE.
    let bye = Request::new("BYE", cid).cseq(2).in_dialog(&ok).build();
    let (old, new) = (a.send(CALLER, &bye), b.send(CALLER, &bye));
    let (old, new) = (only_to(&old, CARRIER), only_to(&new, CARRIER));
    same_request(old, new);
    assert_eq!(new.method(), "BYE");
    assert_eq!(new.msg.call_id(), again.call_id(), "the carrier's Call-ID");
    assert_eq!(cseq(&new.msg), 3, "shifted by the challenge, above the carrier's INVITE");
    assert_eq!(new.msg.header("from"), again.header("from"), "From as the carrier knows it");
    let text = String::from_utf8_lossy(&new.msg.to_bytes()).into_owned();
    assert!(!text.contains("10.0.0.1") && !text.contains("192.0.2.10"), "nothing internal:\n{text}");

    // The carrier's answer reaches the caller in the caller's terms.
    let out = b.send(CARRIER, &respond(&new.msg, 200, None));
    let up = only_to(&out, CALLER);
    assert_eq!((up.code(), up.method().as_str(), cseq(&up.msg), up.msg.call_id()), (200, "BYE", 2, Some(cid)));
    assert_eq!(b.h.gauge(|m| &m.dialogs), 0, "the call ended on the new active");
    assert_eq!(b.h.relay.deleted.lock().unwrap().clone(), vec![cid.to_owned()]);
    assert!(b.store.is_empty(), "its record is deleted");

    // The state goes with the call.
    for _ in 0..80 {
        b.h.advance(std::time::Duration::from_secs(1));
    }
    assert_eq!(b.h.proxy.edge.mapped(), 0);
    assert!(b.h.proxy.core.carrier.offsets_of(cid, ["a1"].into_iter()).is_empty());
}

#[test]
fn after_a_takeover_the_carriers_bye_reaches_the_caller_as_before() {
    let mut a = Node::new();
    let cid = "ha3@10.0.0.1";
    let (again, ok) = call(&mut a, cid, true);
    let ok = ok.unwrap();
    let mut b = a.take_over();
    let ext = again.call_id().unwrap().to_owned();

    // A retransmitted 2xx (the ACK was lost) goes up statelessly with the
    // caller's CSeq, and the caller's ACK goes down shifted.
    let out = b.send(CARRIER, &respond(&again, 200, Some(7000)));
    let up = only_to(&out, CALLER);
    assert_eq!((up.code(), cseq(&up.msg), up.msg.call_id()), (200, 1, Some(cid)));
    let out = b.send(CALLER, &Request::new("ACK", cid).in_dialog(&ok).build());
    let ack = only_to(&out, CARRIER);
    assert_eq!((cseq(&ack.msg), ack.msg.call_id()), (2, Some(ext.as_str())));

    // The carrier hangs up with the Call-ID it knows.
    let bye = format!(
        "BYE sip:alice@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bK-hbye\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1000@127.0.0.1>;tag=b1\r\nTo: {}\r\nCall-ID: {ext}\r\n\
         CSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n",
        again.header("from").unwrap()
    );
    let (old, new) = (a.send(CARRIER, bye.as_bytes()), b.send(CARRIER, bye.as_bytes()));
    let (old, new) = (only_to(&old, CALLER), only_to(&new, CALLER));
    same_request(old, new);
    assert_eq!((new.method().as_str(), new.msg.call_id(), cseq(&new.msg)), ("BYE", Some(cid), 5));
    assert_eq!(new.msg.request_uri(), Some("sip:alice@10.0.0.1:5062"), "the caller's own Contact");

    // The caller's answer goes back in the carrier's Call-ID (each node's
    // BYE answered).
    let (old, new) = (
        a.send(CALLER, &old.msg.response_to(200, "OK").to_bytes()),
        b.send(CALLER, &new.msg.response_to(200, "OK").to_bytes()),
    );
    let (old, new) = (only_to(&old, CARRIER), only_to(&new, CARRIER));
    assert_eq!((new.code(), new.msg.call_id(), cseq(&new.msg)), (200, Some(ext.as_str()), 5));
    assert_eq!(old.msg.header_values("via"), new.msg.header_values("via"));
    assert_eq!(b.h.gauge(|m| &m.dialogs), 0);
}

#[test]
fn a_call_ringing_at_the_takeover_is_answered_through_the_new_active() {
    let mut a = Node::new();
    let cid = "ha4@10.0.0.1";
    let (again, _) = call(&mut a, cid, false);
    assert!(!a.record(cid).caller_vias.is_empty(), "the Vias the carrier never saw are replicated");
    let mut b = a.take_over();

    // The 2xx matches no transaction on the new active: it goes up
    // statelessly, along the caller's own Vias, in the caller's terms. Its
    // Contact (not the 180's) is where the caller's requests go, as on the
    // old active.
    let mut answer = Message::parse(&respond(&again, 200, Some(7000))).unwrap();
    answer.set_header("contact", "<sip:1000@198.51.100.21:5060>");
    let old = a.send(CARRIER, &answer.to_bytes());
    let out = b.send(CARRIER, &answer.to_bytes());
    let ok = only_to(&out, CALLER).msg.clone();
    assert_eq!((ok.code(), cseq(&ok), ok.call_id()), (Some(200), 1, Some(cid)));
    assert_eq!(ok.vias(), only_to(&old, CALLER).msg.vias(), "the caller's own Vias");
    assert_eq!(ok.header("contact"), only_to(&old, CALLER).msg.header("contact"));
    assert_eq!(b.h.gauge(|m| &m.call_answers), 1);

    let ack = Request::new("ACK", cid).in_dialog(&ok).build();
    let (old, out) = (a.send(CALLER, &ack), b.send(CALLER, &ack));
    same_request(only_to(&old, CARRIER), only_to(&out, CARRIER));
    let ack = only_to(&out, CARRIER);
    assert_eq!((cseq(&ack.msg), ack.msg.call_id()), (2, again.call_id()));
    let bye = Request::new("BYE", cid).cseq(2).in_dialog(&ok).build();
    let (old, out) = (a.send(CALLER, &bye), b.send(CALLER, &bye));
    same_request(only_to(&old, CARRIER), only_to(&out, CARRIER));
    let bye = only_to(&out, CARRIER).msg.clone();
    assert_eq!((cseq(&bye), bye.call_id()), (3, again.call_id()));
    assert_eq!(bye.request_uri(), Some("sip:1000@198.51.100.21:5060"), "the carrier's own Contact");
    let out = b.send(CARRIER, &respond(&bye, 200, None));
    assert_eq!((only_to(&out, CALLER).code(), cseq(&only_to(&out, CALLER).msg)), (200, 2));
}
