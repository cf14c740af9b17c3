//! URIs: SIP/SIPS (RFC 3261 19.1), tel (RFC 3966), and anything else kept
//! opaque.
//!
//! Components are kept as written: `%xx` escapes are not decoded (RFC 4475
//! esc02 compares escaped values), host and parameter names keep their case.

use std::fmt;

use super::error::ParseError;
use super::params::{self, Params};
use super::scan::{parse_digits, take_while};

/// A parsed URI.
///
/// - `sip:`/`sips:`: every field may be set; `host` is non-empty and an IPv6
///   reference keeps its brackets (`[2001:db8::1]`).
/// - `tel:`: the number is in `user`, `host` is empty, parameters in
///   `params`.
/// - other schemes (`http:`, `isbn:`, `soap.beep:` ...): everything after the
///   colon is in `opaque`, the other fields are empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uri {
    /// Scheme as written (compare it case-insensitively).
    pub scheme: String,
    /// User part (or the tel number), escapes kept.
    pub user: Option<String>,
    /// Password after `user:`.
    pub password: Option<String>,
    /// Host name, IPv4 address, or bracketed IPv6 reference; empty for tel and
    /// opaque URIs.
    pub host: String,
    /// Port, if written.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp;lr`).
    pub params: Params,
    /// Header part after `?`, raw.
    pub headers: Option<String>,
    /// Everything after `scheme:` for schemes other than sip, sips and tel.
    pub opaque: Option<String>,
}

const BAD: ParseError = ParseError::Syntax("URI");

impl Uri {
    /// Parses a URI. Whitespace, control characters, `<`, `>` and `"` are
    /// refused anywhere.
    ///
    /// # Errors
    /// [`ParseError::Syntax`] when `s` is not a URI.
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        if s.bytes().any(|b| b <= b' ' || b == 0x7f || b"<>\"".contains(&b)) {
            return Err(BAD);
        }
        let (scheme, rest) = s.split_once(':').ok_or(BAD)?;
        let mut sb = scheme.bytes();
        if !sb.next().is_some_and(|b| b.is_ascii_alphabetic())
            || !sb.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(BAD);
        }
        let mut uri = Uri { scheme: scheme.to_owned(), ..Uri::default() };
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            uri.parse_sip(rest)?;
        } else if scheme.eq_ignore_ascii_case("tel") {
            uri.parse_tel(rest)?;
        } else {
            if rest.is_empty() {
                return Err(BAD);
            }
            uri.opaque = Some(rest.to_owned());
        }
        Ok(uri)
    }

    fn parse_sip(&mut self, rest: &str) -> Result<(), ParseError> {
        // The first '@' ends the userinfo: '@' may not appear unescaped in
        // host, parameters or headers, while the user part may hold ';', '?'
        // and ':' (RFC 4475 intmeth, semiuri).
        let hostpart = match rest.split_once('@') {
            Some((userinfo, hostpart)) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((u, p)) => (u, Some(p.to_owned())),
                    None => (userinfo, None),
                };
                if user.is_empty() {
                    return Err(BAD);
                }
                self.user = Some(user.to_owned());
                self.password = password;
                hostpart
            }
            None => rest,
        };
        let (before_headers, headers) = match hostpart.split_once('?') {
            Some((hp, h)) => (hp, Some(h)),
            None => (hostpart, None),
        };
        let (hostport, param_text) = match before_headers.split_once(';') {
            Some((hp, p)) => (hp, Some(p)),
            None => (before_headers, None),
        };
        let (host, port) = split_host_port(hostport).ok_or(BAD)?;
        host.clone_into(&mut self.host);
        self.port = port;
        if let Some(p) = param_text {
            self.params = parse_uri_params(p)?;
        }
        if let Some(h) = headers {
            if h.is_empty() {
                return Err(BAD);
            }
            self.headers = Some(h.to_owned());
        }
        Ok(())
    }

    fn parse_tel(&mut self, rest: &str) -> Result<(), ParseError> {
        let (number, param_text) = match rest.split_once(';') {
            Some((n, p)) => (n, Some(p)),
            None => (rest, None),
        };
        if number.is_empty() || number.contains(['?', '@']) {
            return Err(BAD);
        }
        self.user = Some(number.to_owned());
        if let Some(p) = param_text {
            self.params = parse_uri_params(p)?;
        }
        Ok(())
    }

    /// The value of URI parameter `name` (case-insensitive): `Some(None)` for
    /// a parameter without value (`;lr`), `None` when absent.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        params::find(&self.params, name)
    }

    /// Sets URI parameter `name` in place, or appends it.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        params::set(&mut self.params, name, value);
    }

    /// Removes URI parameter `name`.
    pub fn remove_param(&mut self, name: &str) {
        params::remove(&mut self.params, name);
    }

    /// Whether the scheme is `sip` or `sips`.
    #[must_use]
    pub fn is_sip(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("sip") || self.scheme.eq_ignore_ascii_case("sips")
    }
}

/// Splits `host[:port]`, with `host` a name, an IPv4 address or a bracketed
/// IPv6 reference.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let b = s.as_bytes();
    let host_end = if b.first() == Some(&b'[') {
        let close = s.find(']')?;
        let inner = s.get(1..close)?;
        if inner.is_empty() || !inner.bytes().all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.') {
            return None;
        }
        close + 1
    } else {
        take_while(b, 0, is_host_byte)
    };
    let host = s.get(..host_end).filter(|h| !h.is_empty())?;
    match s.get(host_end..)? {
        "" => Some((host, None)),
        rest => {
            let digits = rest.strip_prefix(':')?;
            if digits.len() > 5 {
                return None;
            }
            let port = u16::try_from(parse_digits(digits)?).ok()?;
            Some((host, Some(port)))
        }
    }
}

/// Host name characters (letters, digits, `-`, `.`, and `_` liberally).
pub(crate) fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'
}

/// Parses `name[=value]` items separated by `;` (the text after the first
/// `;`). Empty names are refused.
fn parse_uri_params(s: &str) -> Result<Params, ParseError> {
    s.split(';')
        .map(|item| {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (item, None),
            };
            if name.is_empty() {
                return Err(BAD);
            }
            Ok((name.to_owned(), value))
        })
        .collect()
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if let Some(o) = &self.opaque {
            return f.write_str(o);
        }
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            if !self.host.is_empty() {
                f.write_str("@")?;
            }
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        params::write(f, &self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Uri {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uri::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(s: &str) -> Uri {
        let u = Uri::parse(s).unwrap();
        assert_eq!(u.to_string(), s, "display round trip");
        u
    }

    #[test]
    fn sip_components() {
        let u = rt("sip:alice:secret@Example.COM:5070;transport=tcp;lr?Subject=hi");
        assert_eq!(u.scheme, "sip");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, "Example.COM");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("TRANSPORT"), Some(Some("tcp")));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.param("maddr"), None);
        assert_eq!(u.headers.as_deref(), Some("Subject=hi"));
        assert!(u.is_sip());
    }

    #[test]
    fn ipv6_and_escapes() {
        let u = rt("sips:[2001:db8::1]:5061");
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.port, Some(5061));
        let u = rt("sip:[::1]");
        assert_eq!((u.host.as_str(), u.port), ("[::1]", None));
        let u = rt("sip:null-%00-null@example.com");
        assert_eq!(u.user.as_deref(), Some("null-%00-null"));
        let u = rt("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
        assert_eq!(u.param("%6C%72"), Some(None));
        assert_ne!(Uri::parse("sip:%61lice@a").unwrap(), Uri::parse("sip:alice@a").unwrap());
    }

    #[test]
    fn odd_user_parts() {
        let u = rt("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(u.host, "example.com");
        let u = rt("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        assert_eq!(u.user.as_deref(), Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"));
        assert_eq!(u.password.as_deref(), Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"));
        assert_eq!(u.host, "example.com");
    }

    #[test]
    fn tel_and_opaque() {
        let u = rt("tel:+1-201-555-0123;phone-context=example.com");
        assert_eq!(u.user.as_deref(), Some("+1-201-555-0123"));
        assert_eq!(u.host, "");
        assert_eq!(u.param("phone-context"), Some(Some("example.com")));
        let u = rt("soap.beep://192.0.2.103:3002");
        assert_eq!(u.opaque.as_deref(), Some("//192.0.2.103:3002"));
        assert_eq!(u.host, "");
        rt("nobodyKnowsThisScheme:totallyopaquecontent");
        rt("isbn:2983792873");
    }

    #[test]
    fn rejects() {
        for s in [
            "<sip:user@example.com>",
            "sip:user@example.com; lr",
            "sip:",
            "sip:@host",
            "sip:host:",
            "sip:host:65536",
            "sip:host:123456",
            "sip:host;;lr",
            "sip:[::1",
            "sip:[zz]",
            "sip:ho st",
            "sip:host?",
            "1sip:host",
            "nocolon",
            "http:",
            "sip:host:5060x",
        ] {
            assert!(Uri::parse(s).is_err(), "{s}");
        }
    }
}
