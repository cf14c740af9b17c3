//! Semantic checks after framing: what a proxy needs to trust before it
//! routes a message (RFC 3261 8.1.1, 8.2.2, 16.3 and the RFC 4475 cases).
//!
//! Checked: the Request-URI; To, From, Call-ID, CSeq and Via present; the
//! single-valued headers appear once; CSeq, Via, From, To, Contact, Route,
//! Record-Route, Max-Forwards, Expires, Date and Content-Type parse, numbers
//! fit (CSeq and Expires in 32 bits, Max-Forwards up to 255); the CSeq method
//! equals the request method. Max-Forwards may be absent (RFC 2543 peers,
//! RFC 4475 inv2543). Other headers are forwarded uninterpreted.

use super::error::{Defect, ParseError};
use super::message::{parse_cseq, Message, StartLine};
use super::name_addr::NameAddr;
use super::scan::{parse_u32, split_list};
use super::uri::Uri;
use super::via::Via;

/// Headers that must appear at most once: (canonical name, display name).
const SINGLE: [(&str, &str); 9] = [
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
    ("from", "From"),
    ("to", "To"),
    ("max-forwards", "Max-Forwards"),
    ("content-length", "Content-Length"),
    ("content-type", "Content-Type"),
    ("expires", "Expires"),
    ("date", "Date"),
];

/// Headers every request and response must carry.
const REQUIRED: [(&str, &str); 5] =
    [("to", "To"), ("from", "From"), ("call-id", "Call-ID"), ("cseq", "CSeq"), ("via", "Via")];

/// Same as [`Message::validate`], for callers that prefer a function.
///
/// # Errors
/// As [`Message::validate`].
pub fn validate_request(msg: &Message) -> Result<(), ParseError> {
    msg.validate()
}

impl Message {
    /// Checks the semantics listed in this module's documentation.
    ///
    /// Errors on a request carry code 400 ([`ParseError::Request`]); errors
    /// on a response carry none ([`ParseError::Response`]): drop it.
    ///
    /// # Errors
    /// The first defect found.
    pub fn validate(&self) -> Result<(), ParseError> {
        let request = self.is_request();
        let bad = |d: Defect| {
            if request {
                ParseError::Request(d)
            } else {
                ParseError::Response(d)
            }
        };

        if let StartLine::Request { uri, .. } = &self.start {
            let u = Uri::parse(uri).map_err(|_| bad(Defect::RequestUri))?;
            // RFC 3261 19.1.5: headers are not allowed in a Request-URI.
            if u.is_sip() && u.headers.is_some() {
                return Err(bad(Defect::RequestUri));
            }
        }

        let mut single = [0usize; SINGLE.len()];
        let mut vias = 0usize;
        for h in &self.headers {
            if let Some(i) = SINGLE.iter().position(|(n, _)| h.is(n)) {
                if let Some(c) = single.get_mut(i) {
                    *c += 1;
                }
            }
            if h.is("via") {
                vias += 1;
            }
        }
        for ((_, shown), count) in SINGLE.iter().zip(single) {
            if count > 1 {
                return Err(bad(Defect::Duplicate(shown)));
            }
        }
        for (name, shown) in REQUIRED {
            let present = if name == "via" { vias > 0 } else { self.header(name).is_some() };
            if !present {
                return Err(bad(Defect::Missing(shown)));
            }
        }

        let call_id = self.call_id().unwrap_or_default();
        if call_id.is_empty() || call_id.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad(Defect::Malformed("Call-ID")));
        }
        let (_, cseq_method) =
            parse_cseq(self.header("cseq").unwrap_or_default()).ok_or(bad(Defect::Malformed("CSeq")))?;
        if let StartLine::Request { method, .. } = &self.start {
            if *method != cseq_method {
                return Err(bad(Defect::CSeqMismatch));
            }
        }
        for (name, shown) in [("from", "From"), ("to", "To")] {
            NameAddr::parse(self.header(name).unwrap_or_default()).map_err(|_| bad(Defect::Malformed(shown)))?;
        }

        self.each_value("via", |v| Via::parse(v).is_ok()).map_err(|()| bad(Defect::Malformed("Via")))?;
        for (name, shown) in [("route", "Route"), ("record-route", "Record-Route")] {
            self.each_value(name, |v| NameAddr::parse(v).is_ok()).map_err(|()| bad(Defect::Malformed(shown)))?;
        }
        self.check_contacts().map_err(|()| bad(Defect::Malformed("Contact")))?;

        if let Some(v) = self.header("max-forwards") {
            if parse_u32(v).is_none_or(|n| n > 255) {
                return Err(bad(Defect::Malformed("Max-Forwards")));
            }
        }
        if let Some(v) = self.header("expires") {
            if parse_u32(v).is_none() {
                return Err(bad(Defect::Malformed("Expires")));
            }
        }
        // RFC 3261 20.17: rfc1123-date, always in GMT (RFC 4475 baddate).
        if let Some(v) = self.header("date") {
            if !v.ends_with(" GMT") {
                return Err(bad(Defect::Malformed("Date")));
            }
        }
        if let Some(v) = self.header("content-type") {
            if !v.contains('/') {
                return Err(bad(Defect::Malformed("Content-Type")));
            }
        }
        Ok(())
    }

    /// Runs `ok` on every comma-separated value of the headers called `name`;
    /// an empty value (`a,,b`, RFC 4475 badinv01) fails too.
    fn each_value(&self, name: &str, ok: impl Fn(&str) -> bool) -> Result<(), ()> {
        for h in self.headers_named(name) {
            let v = h.value();
            for (a, b) in split_list(v) {
                if !v.get(a..b).is_some_and(|e| !e.is_empty() && ok(e)) {
                    return Err(());
                }
            }
        }
        Ok(())
    }

    /// Contact values parse, `*` stands alone, `expires` fits in 32 bits.
    fn check_contacts(&self) -> Result<(), ()> {
        let mut count = 0usize;
        let mut star = false;
        self.each_value("contact", |v| {
            if v == "*" {
                return true;
            }
            NameAddr::parse(v).is_ok_and(|a| a.param("expires").is_none_or(|e| e.and_then(parse_u32).is_some()))
        })?;
        for v in self.header_values("contact") {
            count += 1;
            star |= v == "*";
        }
        if star && count > 1 {
            return Err(());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "INVITE sip:bob@b.example SIP/2.0\r\n\
Via: SIP/2.0/UDP a.example;branch=z9hG4bK1\r\n\
From: <sip:a@a.example>;tag=1\r\n\
To: <sip:bob@b.example>\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:a@10.0.0.1>;expires=60\r\n\
Content-Length: 0\r\n\r\n";

    fn check(edit: impl Fn(&str) -> String) -> Result<(), ParseError> {
        Message::parse(edit(OK).as_bytes()).and_then(|m| m.validate())
    }

    #[test]
    fn accepts_good_request() {
        assert_eq!(check(str::to_owned), Ok(()));
        assert_eq!(check(|s| s.replace("Max-Forwards: 70\r\n", "")), Ok(()));
        assert_eq!(check(|s| s.replace("<sip:a@10.0.0.1>;expires=60", "*")), Ok(()));
    }

    #[test]
    fn rejects() {
        let req = ParseError::Request;
        let cases: Vec<(String, ParseError)> = vec![
            (OK.replace("Call-ID: c1\r\n", ""), req(Defect::Missing("Call-ID"))),
            (OK.replace("Via: SIP/2.0/UDP a.example;branch=z9hG4bK1\r\n", ""), req(Defect::Missing("Via"))),
            (OK.replace("CSeq: 1 INVITE", "CSeq: 1 BYE"), req(Defect::CSeqMismatch)),
            (OK.replace("CSeq: 1 INVITE", "CSeq: 4294967296 INVITE"), req(Defect::Malformed("CSeq"))),
            (OK.replace("Call-ID: c1\r\n", "Call-ID: c1\r\ni: c2\r\n"), req(Defect::Duplicate("Call-ID"))),
            (OK.replace("Max-Forwards: 70", "Max-Forwards: 256"), req(Defect::Malformed("Max-Forwards"))),
            (OK.replace("expires=60", "expires=4294967296"), req(Defect::Malformed("Contact"))),
            (OK.replace(">;expires=60", ">, *"), req(Defect::Malformed("Contact"))),
            (OK.replace("branch=z9hG4bK1", "branch=z9hG4bK1,"), req(Defect::Malformed("Via"))),
            (OK.replace("sip:bob@b.example SIP", "sip:bob@b.example?Route=x SIP"), req(Defect::RequestUri)),
            (OK.replace("sip:bob@b.example SIP", "<sip:bob@b.example> SIP"), req(Defect::RequestUri)),
            (
                OK.replace("Content-Length: 0", "Date: Fri, 01 Jan 2010 16:00:00 EST\r\nContent-Length: 0"),
                req(Defect::Malformed("Date")),
            ),
            (
                OK.replace("Content-Length: 0", "Expires: 99999999999\r\nContent-Length: 0"),
                req(Defect::Malformed("Expires")),
            ),
            (
                OK.replace("Content-Length: 0", "Route: <sip:p;lr>,,<sip:q>\r\nContent-Length: 0"),
                req(Defect::Malformed("Route")),
            ),
        ];
        for (input, want) in cases {
            let got = Message::parse(input.as_bytes()).and_then(|m| m.validate());
            assert_eq!(got, Err(want), "{input}");
        }
    }

    #[test]
    fn response_errors_have_no_code() {
        let m = Message::parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCSeq: 99999999999 OPTIONS\r\n\r\n").unwrap();
        let e = m.validate().unwrap_err();
        assert!(matches!(e, ParseError::Response(_)));
        assert_eq!(e.response_code(), None);
    }
}
