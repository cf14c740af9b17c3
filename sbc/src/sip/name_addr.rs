//! `name-addr` / `addr-spec` values (From, To, Contact, Route, Record-Route,
//! Refer-To ...) per RFC 3261 20.10 and 25.1.

use std::fmt;

use super::error::ParseError;
use super::params::{self, Params};
use super::scan::{is_token, parse_u32, quoted, skip_wsp, trim_wsp, write_quoted};
use super::uri::Uri;

/// An address with optional display name and header parameters.
///
/// Parsed from either form:
/// - name-addr: `"Bob" <sip:bob@b.example>;tag=x` (URI parameters stay inside
///   the URI);
/// - addr-spec: `sip:bob@b.example;tag=x`: everything after the first `;`
///   belongs to the header, not the URI (RFC 3261 20.10).
///
/// Liberal on purpose: spaces just inside `<` `>` (RFC 4475 badaspec) and a
/// `?headers` part in an addr-spec (regbadct) are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted and unescaped; token display names have their
    /// words joined by one space.
    pub display: Option<String>,
    /// The address.
    pub uri: Uri,
    /// Header parameters (`tag`, `expires`, `q` ...), values as written.
    pub params: Params,
}

const BAD: ParseError = ParseError::Syntax("name-addr");

impl NameAddr {
    /// A bare address without display name or parameters.
    #[must_use]
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr { display: None, uri, params: Params::new() }
    }

    /// Parses one name-addr or addr-spec (one element of a list header).
    ///
    /// # Errors
    /// [`ParseError::Syntax`] on an unbalanced quote, a display name that is
    /// neither quoted nor tokens, a bad URI, bad parameters or trailing text.
    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        let s = trim_wsp(s);
        let b = s.as_bytes();
        // Find how the value starts: quoted display, `<`, or addr-spec.
        let first_special = b.iter().position(|&c| c == b'"' || c == b'<' || c == b';');
        let (display, open) = match first_special.and_then(|i| b.get(i).map(|&c| (i, c))) {
            Some((i, b'"')) => {
                if !trim_wsp(s.get(..i).ok_or(BAD)?).is_empty() {
                    return Err(BAD);
                }
                let (text, end) = quoted(s, i).ok_or(BAD)?;
                let open = skip_wsp(b, end);
                if b.get(open) != Some(&b'<') {
                    return Err(BAD);
                }
                (Some(text), Some(open))
            }
            Some((i, b'<')) => {
                let words = s.get(..i).ok_or(BAD)?;
                let mut display = String::new();
                for w in words.split([' ', '\t']).filter(|w| !w.is_empty()) {
                    if !is_token(w) {
                        return Err(BAD);
                    }
                    if !display.is_empty() {
                        display.push(' ');
                    }
                    display.push_str(w);
                }
                ((!display.is_empty()).then_some(display), Some(i))
            }
            _ => (None, None),
        };
        let (uri, rest) = match open {
            Some(open) => {
                let close = s.get(open..).and_then(|t| t.find('>')).ok_or(BAD)? + open;
                let inner = trim_wsp(s.get(open + 1..close).ok_or(BAD)?);
                (Uri::parse(inner)?, close + 1)
            }
            None => {
                let end = s.find(';').unwrap_or(s.len());
                let spec = trim_wsp(s.get(..end).ok_or(BAD)?);
                (Uri::parse(spec)?, end)
            }
        };
        let params = params::parse_header_params(s, rest).ok_or(BAD)?;
        Ok(NameAddr { display, uri, params })
    }

    /// The value of header parameter `name` (case-insensitive): `Some(None)`
    /// for a parameter without value, `None` when absent.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        params::find(&self.params, name)
    }

    /// Sets header parameter `name` in place, or appends it.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        params::set(&mut self.params, name, value);
    }

    /// Removes header parameter `name`.
    pub fn remove_param(&mut self, name: &str) {
        params::remove(&mut self.params, name);
    }

    /// The `tag` parameter.
    #[must_use]
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }
}

impl fmt::Display for NameAddr {
    /// Always writes the name-addr form: `"display" <uri>;params`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write_quoted(f, d)?;
            f.write_str(" ")?;
        }
        write!(f, "<{}>", self.uri)?;
        params::write(f, &self.params)
    }
}

impl std::str::FromStr for NameAddr {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NameAddr::parse(s)
    }
}

/// One Contact value: `*` (REGISTER remove-all) or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(clippy::large_enum_variant, reason = "Star is rare; boxing every address costs more")]
pub enum Contact {
    /// `Contact: *`.
    Star,
    /// A contact address.
    Addr(NameAddr),
}

impl Contact {
    /// Parses one Contact value.
    ///
    /// # Errors
    /// As [`NameAddr::parse`].
    pub fn parse(s: &str) -> Result<Contact, ParseError> {
        if trim_wsp(s) == "*" {
            Ok(Contact::Star)
        } else {
            NameAddr::parse(s).map(Contact::Addr)
        }
    }

    /// The `expires` parameter in seconds; `None` if absent, `*`, or not a
    /// number up to `u32::MAX`.
    #[must_use]
    pub fn expires(&self) -> Option<u32> {
        match self {
            Contact::Star => None,
            Contact::Addr(a) => a.param("expires").flatten().and_then(parse_u32),
        }
    }

    /// The address, unless this is `*`.
    #[must_use]
    pub fn addr(&self) -> Option<&NameAddr> {
        match self {
            Contact::Star => None,
            Contact::Addr(a) => Some(a),
        }
    }
}

impl fmt::Display for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contact::Star => f.write_str("*"),
            Contact::Addr(a) => a.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse(r#""Bob" <sip:bob@b.example;transport=tcp>;tag=x;lr"#).unwrap();
        assert_eq!(a.display.as_deref(), Some("Bob"));
        assert_eq!(a.uri.param("transport"), Some(Some("tcp")));
        assert_eq!(a.tag(), Some("x"));
        assert_eq!(a.param("LR"), Some(None));
        assert_eq!(a.to_string(), r#""Bob" <sip:bob@b.example;transport=tcp>;tag=x;lr"#);

        let a = NameAddr::parse("sip:bob@b.example;tag=x").unwrap();
        assert_eq!(a.display, None);
        assert!(a.uri.params.is_empty(), "addr-spec params belong to the header");
        assert_eq!(a.tag(), Some("x"));
        assert_eq!(a.to_string(), "<sip:bob@b.example>;tag=x");
    }

    #[test]
    fn rfc4475_shapes() {
        // wsinv
        let a = NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(a.tag(), Some("1918181833n"));
        let a = NameAddr::parse(r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#).unwrap();
        assert_eq!(a.display.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(a.tag(), Some("98asjd8"));
        assert_eq!(a.to_string(), r#""J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8"#);
        // lwsdisp
        let a = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display.as_deref(), Some("caller"));
        // intmeth
        let a = NameAddr::parse("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\";tag=_token~1'+`*%!-.").unwrap();
        assert_eq!(a.display.as_deref(), Some("token1~` token2'+_ token3*%!.-"));
        assert_eq!(a.tag(), Some("_token~1'+`*%!-."));
        let a = NameAddr::parse("\"BEL:\\\x07 NUL:\\\0 DEL:\\\x7f\" <sip:x@example.com>").unwrap();
        assert_eq!(a.display.as_deref(), Some("BEL:\x07 NUL:\0 DEL:\x7f"));
        assert!(NameAddr::parse(&a.to_string()).is_ok());
        // badaspec (liberal), regbadct (liberal)
        let a = NameAddr::parse(r#""Watson, Thomas" < sip:t.watson@example.org >"#).unwrap();
        assert_eq!(a.uri.host, "example.org");
        let a = NameAddr::parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E").unwrap();
        assert_eq!(a.uri.headers.as_deref(), Some("Route=%3Csip:sip.example.com%3E"));
        // unksm2
        let a = NameAddr::parse("<http://www.example.com>;tag=3234233").unwrap();
        assert_eq!(a.uri.opaque.as_deref(), Some("//www.example.com"));
        assert_eq!(NameAddr::parse("isbn:2983792873").unwrap().uri.scheme, "isbn");
    }

    #[test]
    fn rejects() {
        for s in [
            r#""Mr. J. User <sip:j.user@example.com>"#,          // quotbal
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43", // baddn
            r#""Joe" <sip:joe@example.org>;;;;"#,                // badinv01
            "<sip:a@b",
            "<sip:a@b> junk",
            r#"x "Bob" <sip:a@b>"#,
            r#""Bob" sip:a@b"#,
            "",
            "<>",
            "sip:a b@c",
        ] {
            assert!(NameAddr::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn contacts() {
        assert_eq!(Contact::parse(" * ").unwrap(), Contact::Star);
        let c = Contact::parse("<sip:a@b>;expires=3600").unwrap();
        assert_eq!(c.expires(), Some(3600));
        let c = Contact::parse("<sip:a@b>;expires=280297596632815").unwrap();
        assert_eq!(c.expires(), None);
        assert_eq!(Contact::Star.to_string(), "*");
    }
}
