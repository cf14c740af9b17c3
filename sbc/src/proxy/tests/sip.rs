//! A small builder for the SIP the tests' user agents send: requests from
//! the caller ([`Request`]) and responses from a trunk ([`respond`]).

use crate::sip::{Header, Message};

/// The caller's Contact and Via host (behind NAT).
pub(super) const CALLER_HOST: &str = "10.0.0.1:5062";

/// An audio-only SDP at `ip:port`.
pub(super) fn sdp(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n\
         a=rtpmap:0 PCMU/8000\r\n"
    )
}

/// A request from the caller (`alice`, From-tag `a1`) to `1000`.
pub(super) struct Request {
    method: &'static str,
    uri: String,
    branch: String,
    call_id: String,
    cseq: u32,
    to_tag: Option<String>,
    routes: Vec<String>,
    body: Option<String>,
}

impl Request {
    /// `method` for `sip:1000@127.0.0.1` in call `call_id`, CSeq 1.
    pub(super) fn new(method: &'static str, call_id: &str) -> Self {
        Self {
            method,
            uri: "sip:1000@127.0.0.1".into(),
            branch: format!("z9hG4bK-{method}-{call_id}"),
            call_id: call_id.into(),
            cseq: 1,
            to_tag: None,
            routes: Vec::new(),
            body: None,
        }
    }

    /// The top Via branch (a CANCEL carries its INVITE's).
    pub(super) fn branch(mut self, b: &str) -> Self {
        b.clone_into(&mut self.branch);
        self
    }

    /// The CSeq number.
    pub(super) fn cseq(mut self, n: u32) -> Self {
        self.cseq = n;
        self
    }

    /// The To-tag (the ACK for a non-2xx final response carries the response's).
    pub(super) fn with_to_tag(mut self, t: &str) -> Self {
        self.to_tag = Some(t.to_owned());
        self
    }

    /// An in-dialog request: the remote target, To-tag and route set of
    /// the 2xx it follows (its Contact and reversed Record-Route).
    pub(super) fn in_dialog(mut self, ok: &Message) -> Self {
        self.to_tag = ok.to_tag();
        let contact = ok.header("contact").unwrap_or_default();
        contact.trim_start_matches('<').trim_end_matches('>').clone_into(&mut self.uri);
        self.routes = ok.header_values("record-route").into_iter().rev().map(str::to_owned).collect();
        self
    }

    /// An SDP offer (or answer) on the caller's side at `port`.
    pub(super) fn sdp(mut self, port: u16) -> Self {
        self.body = Some(sdp("10.0.0.1", port));
        self
    }

    /// The bytes on the wire.
    pub(super) fn build(&self) -> Vec<u8> {
        let (m, cid) = (self.method, &self.call_id);
        let to_tag = self.to_tag.as_ref().map(|t| format!(";tag={t}")).unwrap_or_default();
        let mut s = format!(
            "{m} {} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER_HOST};branch={};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@10.0.0.1>;tag=a1\r\nTo: <sip:1000@127.0.0.1>{to_tag}\r\nCall-ID: {cid}\r\n\
             CSeq: {} {m}\r\nContact: <sip:alice@{CALLER_HOST}>\r\n",
            self.uri, self.branch, self.cseq
        );
        for r in &self.routes {
            s.push_str(&format!("Route: {r}\r\n"));
        }
        match &self.body {
            Some(b) => s.push_str(&format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}", b.len())),
            None => s.push_str("Content-Length: 0\r\n\r\n"),
        }
        s.into_bytes()
    }
}

/// A trunk's response to `req` (as the trunk received it): its Vias and
/// Record-Route copied, To-tag `b1`, the trunk's Contact, and an SDP
/// answer at `sdp_port` if given.
pub(super) fn respond(req: &Message, code: u16, sdp_port: Option<u16>) -> Vec<u8> {
    let mut r = req.response_with_tag(code, "Reason", "b1");
    if code > 100 && code < 300 {
        for rr in req.header_values("record-route") {
            r.insert_before_first("content-length", Header::new("Record-Route", rr));
        }
        r.insert_before_first("content-length", Header::new("Contact", "<sip:1000@127.0.0.1:5070>"));
    }
    if let Some(port) = sdp_port {
        r.insert_before_first("content-length", Header::new("Content-Type", "application/sdp"));
        r.set_body(sdp("198.51.100.7", port).into_bytes());
    }
    r.to_bytes()
}
