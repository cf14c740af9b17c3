//! The SIP message: start line, raw headers in order, body; typed accessors
//! and the edits a proxy makes.
//!
//! Parsing lives in `parse.rs`, semantic checks in `validate.rs`.

use super::header::{canonical_name, Header};
use super::method::Method;
use super::name_addr::{Contact, NameAddr};
use super::scan::{parse_u32, split_list};
use super::via::Via;

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD Request-URI SIP/2.0`.
    Request {
        /// The method.
        method: Method,
        /// The Request-URI text as received (see [`super::Uri::parse`]).
        uri: String,
    },
    /// `SIP/2.0 code reason`.
    Response {
        /// Status code, 100..=699.
        code: u16,
        /// Reason phrase, possibly empty (non-UTF-8 bytes show as U+FFFD).
        reason: String,
    },
}

/// A SIP request or response.
///
/// Headers are kept raw and in order; typed accessors parse them on each
/// call. Accessors return `None` (or skip list elements) when a value does
/// not parse: call [`Message::validate`] once after parsing to refuse such
/// messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request-Line or Status-Line.
    pub start: StartLine,
    /// Header fields, in wire order.
    pub headers: Vec<Header>,
    /// The body (Content-Length bytes). Change it with [`Message::set_body`]
    /// so Content-Length follows.
    pub body: Vec<u8>,
}

impl Message {
    /// Serializes: start line, raw headers in order, empty line, body.
    /// Content-Length is written as stored (kept as received unless
    /// [`Message::set_body`] changed it).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let head: usize = self.headers.iter().map(|h| h.raw().len()).sum();
        let mut out = Vec::with_capacity(head + self.body.len() + 128);
        match &self.start {
            StartLine::Request { method, uri } => {
                out.extend_from_slice(format!("{method} {uri} SIP/2.0\r\n").as_bytes());
            }
            StartLine::Response { code, reason } => {
                out.extend_from_slice(format!("SIP/2.0 {code} {reason}\r\n").as_bytes());
            }
        }
        for h in &self.headers {
            out.extend_from_slice(h.raw());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// Whether this is a request.
    #[must_use]
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method (`None` for a response; use [`Message::cseq`]).
    #[must_use]
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI text (`None` for a response).
    #[must_use]
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code (`None` for a request).
    #[must_use]
    pub fn code(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// Headers called `name` (any case, compact or full form), in order.
    pub fn headers_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Header> + 'a {
        let canon = canonical_name(name);
        self.headers.iter().filter(move |h| h.is(&canon))
    }

    /// The value of the first header called `name` (any case, compact or full
    /// form).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).next().map(Header::value)
    }

    /// All comma-separated values of the headers called `name`, across
    /// repeated header lines, in order. Commas in quoted strings and `<...>`
    /// do not split; empty elements are dropped. Meant for list headers (Via,
    /// Route, Record-Route, Contact, Allow, Supported, Require ...), not for
    /// headers whose values contain commas (Date, Authorization ...).
    #[must_use]
    pub fn header_values<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.headers_named(name).flat_map(Header::values).collect()
    }

    /// Call-ID.
    #[must_use]
    pub fn call_id(&self) -> Option<&str> {
        self.header("call-id")
    }

    /// CSeq number and method.
    #[must_use]
    pub fn cseq(&self) -> Option<(u32, Method)> {
        parse_cseq(self.header("cseq")?)
    }

    /// Max-Forwards (any value up to `u32::MAX`; [`Message::validate`]
    /// refuses values above 255).
    #[must_use]
    pub fn max_forwards(&self) -> Option<u32> {
        parse_u32(self.header("max-forwards")?)
    }

    /// The From address.
    #[must_use]
    pub fn from(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header("from")?).ok()
    }

    /// The To address.
    #[must_use]
    pub fn to(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header("to")?).ok()
    }

    /// The From tag.
    #[must_use]
    pub fn from_tag(&self) -> Option<String> {
        self.from()?.tag().map(str::to_owned)
    }

    /// The To tag.
    #[must_use]
    pub fn to_tag(&self) -> Option<String> {
        self.to()?.tag().map(str::to_owned)
    }

    /// Every Via value, top first (values that do not parse are skipped).
    #[must_use]
    pub fn vias(&self) -> Vec<Via> {
        self.header_values("via").into_iter().filter_map(|v| Via::parse(v).ok()).collect()
    }

    /// The topmost Via, if it parses.
    #[must_use]
    pub fn top_via(&self) -> Option<Via> {
        self.header_values("via").first().and_then(|v| Via::parse(v).ok())
    }

    /// Every Contact value in order; `*` gives [`Contact::Star`] (values that
    /// do not parse are skipped).
    #[must_use]
    pub fn contacts(&self) -> Vec<Contact> {
        self.header_values("contact").into_iter().filter_map(|v| Contact::parse(v).ok()).collect()
    }

    /// Route values, top first.
    #[must_use]
    pub fn routes(&self) -> Vec<NameAddr> {
        self.name_addrs("route")
    }

    /// Record-Route values, top first.
    #[must_use]
    pub fn record_routes(&self) -> Vec<NameAddr> {
        self.name_addrs("record-route")
    }

    fn name_addrs(&self, name: &str) -> Vec<NameAddr> {
        self.header_values(name).into_iter().filter_map(|v| NameAddr::parse(v).ok()).collect()
    }

    // ---- editing ----------------------------------------------------------

    /// Inserts `h` as the very first header.
    pub fn push_header_front(&mut self, h: Header) {
        self.headers.insert(0, h);
    }

    /// Inserts `h` just before the first header called `name` (e.g. a new Via
    /// above the existing ones), or first of all if there is none.
    pub fn insert_before_first(&mut self, name: &str, h: Header) {
        let canon = canonical_name(name);
        let at = self.headers.iter().position(|x| x.is(&canon)).unwrap_or(0);
        self.headers.insert(at, h);
    }

    /// Appends `h` after the last header.
    pub fn push_header(&mut self, h: Header) {
        self.headers.push(h);
    }

    /// Removes the first comma-separated value of the headers called `name`
    /// (the top Via or Route) and returns it. The header line goes away if it
    /// held only that value; otherwise only that line is rewritten, as
    /// `raw-name: remaining values`. Other lines keep their bytes.
    pub fn remove_first_value(&mut self, name: &str) -> Option<String> {
        let canon = canonical_name(name);
        for i in 0..self.headers.len() {
            let Some(h) = self.headers.get(i).filter(|h| h.is(&canon)) else {
                continue;
            };
            let value = h.value();
            let elems: Vec<(usize, usize)> = split_list(value).into_iter().filter(|(a, b)| a < b).collect();
            let Some(&(a, b)) = elems.first() else {
                continue;
            };
            let first = value.get(a..b).unwrap_or_default().to_owned();
            match elems.get(1) {
                None => {
                    self.headers.remove(i);
                }
                Some(&(next, _)) => {
                    let rest = value.get(next..).unwrap_or_default();
                    let new = Header::new(h.raw_name(), rest);
                    if let Some(slot) = self.headers.get_mut(i) {
                        *slot = new;
                    }
                }
            }
            return Some(first);
        }
        None
    }

    /// Removes every header called `name`.
    pub fn remove_all(&mut self, name: &str) {
        let canon = canonical_name(name);
        self.headers.retain(|h| !h.is(&canon));
    }

    /// Replaces the first header called `name` in place (keeping its position
    /// and the name as written on the wire), or appends `name: value`.
    pub fn set_header(&mut self, name: &str, value: &str) {
        let canon = canonical_name(name);
        match self.headers.iter_mut().find(|h| h.is(&canon)) {
            Some(h) => *h = Header::new(h.raw_name(), value),
            None => self.headers.push(Header::new(name, value)),
        }
    }

    /// Replaces the body and sets Content-Length to its length (in place, or
    /// appended).
    pub fn set_body(&mut self, body: Vec<u8>) {
        self.body = body;
        self.set_header("Content-Length", &self.body.len().to_string());
    }

    /// Replaces the Request-URI (no effect on a response).
    pub fn set_request_uri(&mut self, new_uri: &str) {
        if let StartLine::Request { uri, .. } = &mut self.start {
            new_uri.clone_into(uri);
        }
    }

    /// Builds a response to this request (RFC 3261 8.2.6): every Via in order,
    /// From, To, Call-ID and CSeq copied byte for byte (plus Timestamp for
    /// 100), then `Content-Length: 0` last. To is copied as is: see
    /// [`Message::response_with_tag`] to add the To tag.
    #[must_use]
    pub fn response_to(&self, code: u16, reason: &str) -> Message {
        self.build_response(code, reason, None)
    }

    /// As [`Message::response_to`], and when `code` is above 100 and To has no
    /// tag, `;tag=<to_tag>` is appended to To (RFC 3261 8.2.6.2).
    #[must_use]
    pub fn response_with_tag(&self, code: u16, reason: &str, to_tag: &str) -> Message {
        self.build_response(code, reason, Some(to_tag))
    }

    fn build_response(&self, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let mut headers = Vec::new();
        for h in &self.headers {
            match h.name() {
                "via" | "from" | "call-id" | "cseq" => headers.push(h.clone()),
                "timestamp" if code == 100 => headers.push(h.clone()),
                "to" => match to_tag {
                    Some(tag) if code > 100 && !has_tag(h.value()) => {
                        headers.push(Header::new(h.raw_name(), &format!("{};tag={tag}", h.value())));
                    }
                    _ => headers.push(h.clone()),
                },
                _ => {}
            }
        }
        headers.push(Header::new("Content-Length", "0"));
        let reason = reason.replace(['\r', '\n'], " ");
        Message { start: StartLine::Response { code, reason }, headers, body: Vec::new() }
    }
}

/// Whether a To/From value has a tag parameter (lenient: a value that does
/// not parse counts as tagged when it contains `tag=`).
fn has_tag(value: &str) -> bool {
    match NameAddr::parse(value) {
        Ok(a) => a.tag().is_some(),
        Err(_) => value.to_ascii_lowercase().contains("tag="),
    }
}

/// Parses `number method` (any whitespace between).
pub(crate) fn parse_cseq(v: &str) -> Option<(u32, Method)> {
    let mut it = v.split([' ', '\t']).filter(|s| !s.is_empty());
    let num = parse_u32(it.next()?)?;
    let method = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((num, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "INVITE sip:bob@b.example SIP/2.0\r\n\
Via: SIP/2.0/UDP p1.example;branch=z9hG4bK1, SIP/2.0/UDP p2.example;branch=z9hG4bK2\r\n\
v: SIP/2.0/TCP ua.example;branch=z9hG4bK3\r\n\
Route: <sip:p1.example;lr>,\r\n <sip:p2.example;lr>\r\n\
X-Odd:   keep   this  \r\n\
f: \"Bell, A\" <sip:a@a.example>;tag=1\r\n\
To: <sip:bob@b.example>\r\n\
i: abc@x\r\n\
CSeq: 7 INVITE\r\n\
Timestamp: 54\r\n\
Max-Forwards: 70\r\n\
Contact: *\r\n\
l: 4\r\n\r\nbody";

    fn req() -> Message {
        Message::parse(REQ.as_bytes()).unwrap()
    }

    #[test]
    fn accessors() {
        let m = req();
        assert!(m.is_request());
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.code(), None);
        assert_eq!(m.call_id(), Some("abc@x"));
        assert_eq!(m.header("I"), Some("abc@x"));
        assert_eq!(m.header("CALL-ID"), Some("abc@x"));
        assert_eq!(m.cseq(), Some((7, Method::Invite)));
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.from_tag().as_deref(), Some("1"));
        assert_eq!(m.from().unwrap().display.as_deref(), Some("Bell, A"));
        assert_eq!(m.to_tag(), None);
        assert_eq!(m.header("x-odd"), Some("keep   this"));
        let vias = m.vias();
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[2].transport, "TCP");
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK1"));
        assert_eq!(m.header_values("route"), vec!["<sip:p1.example;lr>", "<sip:p2.example;lr>"]);
        assert_eq!(m.routes()[1].uri.host, "p2.example");
        assert_eq!(m.contacts(), vec![Contact::Star]);
        assert_eq!(m.body, b"body");
    }

    #[test]
    fn header_values_across_lines_and_quotes() {
        let raw = "SIP/2.0 200 OK\r\n\
Contact: \"Bell, A\" <sip:a@x;p=1,2>;q=0.5, <sip:b@y>\r\n\
Subject: a, b\r\n\
m: sip:c@z;expires=5 ,\r\n \"x\\\",y\" <sip:d@w>\r\n\r\n";
        let m = Message::parse(raw.as_bytes()).unwrap();
        assert_eq!(
            m.header_values("CONTACT"),
            vec![r#""Bell, A" <sip:a@x;p=1,2>;q=0.5"#, "<sip:b@y>", "sip:c@z;expires=5", r#""x\",y" <sip:d@w>"#]
        );
        let c = m.contacts();
        assert_eq!(c.len(), 4);
        assert_eq!(c[2].expires(), Some(5));
        assert_eq!(c[3].addr().unwrap().display.as_deref(), Some(r#"x",y"#));
        assert_eq!(m.to_bytes(), raw.as_bytes());
    }

    #[test]
    fn untouched_round_trip() {
        assert_eq!(req().to_bytes(), REQ.as_bytes());
    }

    #[test]
    fn remove_first_value_rewrites_one_line() {
        let mut m = req();
        assert_eq!(m.remove_first_value("Via").as_deref(), Some("SIP/2.0/UDP p1.example;branch=z9hG4bK1"));
        let expect = REQ.replace(
            "Via: SIP/2.0/UDP p1.example;branch=z9hG4bK1, SIP/2.0/UDP p2.example;branch=z9hG4bK2\r\n",
            "Via: SIP/2.0/UDP p2.example;branch=z9hG4bK2\r\n",
        );
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), expect);
        assert_eq!(m.remove_first_value("v").as_deref(), Some("SIP/2.0/UDP p2.example;branch=z9hG4bK2"));
        let expect = expect.replace("Via: SIP/2.0/UDP p2.example;branch=z9hG4bK2\r\n", "");
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), expect);
        assert_eq!(m.remove_first_value("route").as_deref(), Some("<sip:p1.example;lr>"));
        let expect =
            expect.replace("Route: <sip:p1.example;lr>,\r\n <sip:p2.example;lr>\r\n", "Route: <sip:p2.example;lr>\r\n");
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), expect);
        assert_eq!(m.remove_first_value("nope"), None);
    }

    #[test]
    fn insert_set_remove() {
        let mut m = req();
        m.insert_before_first("via", Header::new("Via", "SIP/2.0/UDP sbc.example;branch=z9hG4bKs"));
        m.set_header("max-forwards", "69");
        m.set_header("X-New", "1");
        m.remove_all("x-odd");
        m.set_request_uri("sip:bob@10.0.0.2:5060");
        let expect = REQ
            .replace("INVITE sip:bob@b.example ", "INVITE sip:bob@10.0.0.2:5060 ")
            .replace("Via: SIP/2.0/UDP p1", "Via: SIP/2.0/UDP sbc.example;branch=z9hG4bKs\r\nVia: SIP/2.0/UDP p1")
            .replace("X-Odd:   keep   this  \r\n", "")
            .replace("Max-Forwards: 70", "Max-Forwards: 69")
            .replace("l: 4\r\n", "l: 4\r\nX-New: 1\r\n");
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), expect);

        let mut m = req();
        m.push_header_front(Header::new("X-First", "a"));
        m.insert_before_first("Record-Route", Header::new("Record-Route", "<sip:sbc;lr>"));
        assert_eq!(m.headers[0].raw(), b"Record-Route: <sip:sbc;lr>\r\n");
        assert_eq!(m.headers[1].raw(), b"X-First: a\r\n");
    }

    #[test]
    fn set_body_updates_length_in_place() {
        let mut m = req();
        m.set_body(b"longer body".to_vec());
        let expect = REQ.replace("l: 4\r\n\r\nbody", "l: 11\r\n\r\nlonger body");
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), expect);
        m.remove_all("content-length");
        m.set_body(Vec::new());
        assert!(m.to_bytes().ends_with(b"Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn response_to_copies_and_tags() {
        let m = req();
        let r = m.response_with_tag(486, "Busy Here", "t1");
        let expect = "SIP/2.0 486 Busy Here\r\n\
Via: SIP/2.0/UDP p1.example;branch=z9hG4bK1, SIP/2.0/UDP p2.example;branch=z9hG4bK2\r\n\
v: SIP/2.0/TCP ua.example;branch=z9hG4bK3\r\n\
f: \"Bell, A\" <sip:a@a.example>;tag=1\r\n\
To: <sip:bob@b.example>;tag=t1\r\n\
i: abc@x\r\n\
CSeq: 7 INVITE\r\n\
Content-Length: 0\r\n\r\n";
        assert_eq!(String::from_utf8(r.to_bytes()).unwrap(), expect);
        assert_eq!(r.to_tag().as_deref(), Some("t1"));
        assert_eq!(r.code(), Some(486));

        let trying = m.response_with_tag(100, "Trying", "t1");
        assert_eq!(trying.to_tag(), None);
        assert_eq!(trying.header("timestamp"), Some("54"));
        let again = r.response_with_tag(200, "OK", "t2");
        assert_eq!(m.response_to(404, "Not Found").to_tag(), None);
        assert_eq!(again.to_tag().as_deref(), Some("t1"), "an existing tag is kept");
        assert_eq!(Message::parse(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn cseq_forms() {
        assert_eq!(parse_cseq("0009 INVITE"), Some((9, Method::Invite)));
        assert_eq!(parse_cseq("1 RE%47IST%45R"), Some((1, Method::Other("RE%47IST%45R".into()))));
        assert_eq!(parse_cseq("36893488147419103232 REGISTER"), None);
        assert_eq!(parse_cseq("1"), None);
        assert_eq!(parse_cseq("1 INVITE x"), None);
    }
}
