//! One header field: its raw bytes as received, plus the canonical name and
//! the unfolded value for lookups.

use std::borrow::Cow;

use super::error::Defect;
use super::scan::{is_token_byte, is_wsp, split_list, trim_wsp};

/// A header field.
///
/// `raw` holds the bytes exactly as they will be sent: the whole field with
/// its folded continuation lines and its final line break. Headers the proxy
/// does not touch are forwarded from `raw`, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    raw: Vec<u8>,
    name: String,
    raw_name: String,
    value: String,
}

/// Compact forms (RFC 3261 7.3.3 and the IANA SIP parameters registry).
const COMPACT: [(&str, &str); 20] = [
    ("a", "accept-contact"),
    ("b", "referred-by"),
    ("c", "content-type"),
    ("d", "request-disposition"),
    ("e", "content-encoding"),
    ("f", "from"),
    ("i", "call-id"),
    ("j", "reject-contact"),
    ("k", "supported"),
    ("l", "content-length"),
    ("m", "contact"),
    ("n", "identity-info"),
    ("o", "event"),
    ("r", "refer-to"),
    ("s", "subject"),
    ("t", "to"),
    ("u", "allow-events"),
    ("v", "via"),
    ("x", "session-expires"),
    ("y", "identity"),
];

/// The canonical form of a header name: lowercase, compact forms expanded
/// (`"V"` and `"Via"` both give `"via"`).
#[must_use]
pub fn canonical_name(name: &str) -> Cow<'static, str> {
    if name.len() == 1 {
        if let Some((_, full)) = COMPACT.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)) {
            return Cow::Borrowed(full);
        }
    }
    Cow::Owned(name.to_ascii_lowercase())
}

impl Header {
    /// A generated header, serialized as `Name: value\r\n`. `name` is kept as
    /// given on the wire; CR and LF in `value` are replaced by spaces so a
    /// value can never inject a header line.
    #[must_use]
    pub fn new(name: &str, value: &str) -> Header {
        let value = trim_wsp(value).replace(['\r', '\n'], " ");
        let raw = format!("{name}: {value}\r\n").into_bytes();
        Header { raw, name: canonical_name(name).into_owned(), raw_name: name.to_owned(), value }
    }

    /// Builds a header from its raw bytes (`name: value` and any folded lines,
    /// with the final line break). The caller has checked line breaks and NUL
    /// bytes; this checks the name.
    pub(crate) fn from_raw(raw: &[u8]) -> Result<Header, Defect> {
        let colon = raw.iter().position(|&b| b == b':').ok_or(Defect::HeaderLine)?;
        let name_bytes = raw.get(..colon).ok_or(Defect::HeaderLine)?;
        let name_len = name_bytes.iter().rposition(|&b| !is_wsp(b)).map_or(0, |p| p + 1);
        let name_bytes = name_bytes.get(..name_len).ok_or(Defect::HeaderLine)?;
        if name_bytes.is_empty() || !name_bytes.iter().all(|&b| is_token_byte(b)) {
            return Err(Defect::HeaderLine);
        }
        // Token bytes are ASCII.
        let raw_name = String::from_utf8_lossy(name_bytes).into_owned();
        let value = unfold(raw.get(colon + 1..).unwrap_or_default());
        Ok(Header { raw: raw.to_vec(), name: canonical_name(&raw_name).into_owned(), raw_name, value })
    }

    /// Canonical name: lowercase, compact forms expanded.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as written on the wire (`"l"`, `"MaX-fOrWaRdS"`).
    #[must_use]
    pub fn raw_name(&self) -> &str {
        &self.raw_name
    }

    /// The value with folded lines joined by one space, trimmed. Bytes that
    /// are not UTF-8 show as U+FFFD here (`raw` keeps them).
    #[must_use]
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The exact bytes of the field, final line break included.
    #[must_use]
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Whether this header has canonical name `canonical` (already lowercase
    /// and expanded, see [`canonical_name`]).
    pub(crate) fn is(&self, canonical: &str) -> bool {
        self.name == canonical
    }

    /// The comma-separated elements of the value, trimmed, empty ones
    /// dropped. Commas inside quoted strings and `<...>` do not split.
    #[must_use]
    pub fn values(&self) -> Vec<&str> {
        split_list(&self.value)
            .into_iter()
            .filter_map(|(a, b)| self.value.get(a..b))
            .filter(|v| !v.is_empty())
            .collect()
    }
}

/// Joins folded lines (line break plus leading whitespace becomes one SP),
/// drops the final line break, trims, and decodes UTF-8 lossily.
fn unfold(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\r' || b == b'\n' {
            while bytes.get(i).is_some_and(|&c| c == b'\r' || c == b'\n' || is_wsp(c)) {
                i += 1;
            }
            if i < bytes.len() {
                out.push(b' ');
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
    let s = String::from_utf8_lossy(&out);
    trim_wsp(&s).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case() {
        for (short, full) in [("i", "call-id"), ("M", "contact"), ("l", "content-length"), ("n", "identity-info")] {
            assert_eq!(canonical_name(short), full);
        }
        assert_eq!(canonical_name("MaX-fOrWaRdS"), "max-forwards");
        assert_eq!(canonical_name("q"), "q");
        let h = Header::from_raw(b"V :  SIP/2.0/TCP sip22.example.com\r\n").unwrap();
        assert_eq!((h.name(), h.raw_name(), h.value()), ("via", "V", "SIP/2.0/TCP sip22.example.com"));
    }

    #[test]
    fn folded() {
        let raw = b"cseq: 0009\r\n  INVITE\r\n";
        let h = Header::from_raw(raw).unwrap();
        assert_eq!(h.value(), "0009 INVITE");
        assert_eq!(h.raw(), raw);
        let h = Header::from_raw(b"Contact:\r\n  <sip:a@b>\r\n").unwrap();
        assert_eq!(h.value(), "<sip:a@b>");
        let h = Header::from_raw(b"s :\r\n").unwrap();
        assert_eq!((h.name(), h.value()), ("subject", ""));
    }

    #[test]
    fn values_split() {
        let h = Header::from_raw(b"Accept: application/sdp, application/pkcs7-mime,\r\n        multipart/mixed\r\n")
            .unwrap();
        assert_eq!(h.values(), vec!["application/sdp", "application/pkcs7-mime", "multipart/mixed"]);
        let h = Header::new("Contact", r#""Bell, A" <sip:a@b>, <sip:c@d>"#);
        assert_eq!(h.values(), vec![r#""Bell, A" <sip:a@b>"#, "<sip:c@d>"]);
    }

    #[test]
    fn generated() {
        let h = Header::new("Max-Forwards", "70");
        assert_eq!(h.raw(), b"Max-Forwards: 70\r\n");
        assert_eq!(h.name(), "max-forwards");
        let h = Header::new("X", "a\r\nInjected: yes");
        assert_eq!(h.raw(), b"X: a  Injected: yes\r\n");
    }

    #[test]
    fn bad_names() {
        for raw in [&b"no colon\r\n"[..], b": empty\r\n", b"Bad Name: x\r\n", b"Na\xffme: x\r\n"] {
            assert_eq!(Header::from_raw(raw), Err(Defect::HeaderLine));
        }
    }
}
