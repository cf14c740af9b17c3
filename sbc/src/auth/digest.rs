//! HTTP Digest as SIP uses it (RFC 3261 §22, RFC 7616, RFC 8760): the
//! `WWW-Authenticate`/`Proxy-Authenticate` challenge, the
//! `Authorization`/`Proxy-Authorization` credentials, and the hashes, for
//! MD5 and SHA-256 with `qop=auth` or without qop (RFC 2069 style, for old
//! phones). Both sides use it: the sbc checking its users, and the sbc
//! answering a carrier's challenge.
//!
//! The header syntax is parsed here rather than by a crate because SIP's
//! digest differs from HTTP's in small ways (unquoted `algorithm`, `nc`,
//! `qop` values, lenient phones) and the parameters are few.

use md5::{Digest as _, Md5};
use sha2::Sha256;

/// A digest hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// MD5, the default when a challenge names none.
    Md5,
    /// SHA-256 (RFC 8760).
    Sha256,
}

impl Algorithm {
    /// The token written in headers.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    /// Parses a token, case-insensitively. `-sess` variants are not supported.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Self::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Self::Sha256)
        } else {
            None
        }
    }

    /// The lowercase hex hash of `data`.
    #[must_use]
    pub fn hex(self, data: &[u8]) -> String {
        match self {
            Self::Md5 => to_hex(&Md5::digest(data)),
            Self::Sha256 => to_hex(&Sha256::digest(data)),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// `H(user:realm:password)`, what a users file stores instead of the password.
#[must_use]
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> String {
    alg.hex(format!("{user}:{realm}:{password}").as_bytes())
}

/// The `qop=auth` inputs of a response: nonce-count (8 hex digits as sent)
/// and client nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QopAuth<'a> {
    /// `nc`, as sent.
    pub nc: &'a str,
    /// `cnonce`.
    pub cnonce: &'a str,
}

/// The expected `response` for `method` and digest-uri `uri`.
#[must_use]
pub fn response(alg: Algorithm, ha1: &str, nonce: &str, method: &str, uri: &str, qop: Option<QopAuth<'_>>) -> String {
    let ha2 = alg.hex(format!("{method}:{uri}").as_bytes());
    match qop {
        Some(q) => alg.hex(format!("{ha1}:{nonce}:{}:{}:auth:{ha2}", q.nc, q.cnonce).as_bytes()),
        None => alg.hex(format!("{ha1}:{nonce}:{ha2}").as_bytes()),
    }
}

/// A challenge (`WWW-Authenticate` in a 401, `Proxy-Authenticate` in a 407).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection space.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Opaque value to echo.
    pub opaque: Option<String>,
    /// Hash algorithm.
    pub algorithm: Algorithm,
    /// Whether `qop="auth"` is offered.
    pub qop_auth: bool,
    /// The previous nonce was valid but expired (RFC 7616 §3.3).
    pub stale: bool,
}

impl Challenge {
    /// The header value.
    #[must_use]
    pub fn to_value(&self) -> String {
        let mut v = format!("Digest realm=\"{}\", nonce=\"{}\"", quote(&self.realm), quote(&self.nonce));
        if let Some(o) = &self.opaque {
            v.push_str(&format!(", opaque=\"{}\"", quote(o)));
        }
        v.push_str(&format!(", algorithm={}", self.algorithm.name()));
        if self.qop_auth {
            v.push_str(", qop=\"auth\"");
        }
        if self.stale {
            v.push_str(", stale=true");
        }
        v
    }

    /// Parses a header value; `None` unless it is a Digest challenge with a
    /// realm, a nonce and an algorithm we support.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        let p = Params::parse(value)?;
        Some(Self {
            realm: p.get("realm")?.to_owned(),
            nonce: p.get("nonce")?.to_owned(),
            opaque: p.get("opaque").map(str::to_owned),
            algorithm: p.get("algorithm").map_or(Some(Algorithm::Md5), Algorithm::parse)?,
            qop_auth: p.get("qop").is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth"))),
            stale: p.get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

/// Credentials (`Authorization`, `Proxy-Authorization`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Protection space.
    pub realm: String,
    /// The server nonce being answered.
    pub nonce: String,
    /// The digest-uri.
    pub uri: String,
    /// The hex response.
    pub response: String,
    /// Hash algorithm.
    pub algorithm: Algorithm,
    /// `qop=auth` with `nc` and `cnonce` (`None`: no qop).
    pub qop: Option<(String, String)>,
    /// Echoed opaque.
    pub opaque: Option<String>,
}

impl Credentials {
    /// Answers `ch` for `method` to `uri` as `user` with `password`; `cnonce`
    /// and `nc` are used when the challenge offers `qop=auth`.
    #[must_use]
    pub fn answer(ch: &Challenge, user: &str, password: &str, method: &str, uri: &str, cnonce: &str, nc: u32) -> Self {
        let h1 = ha1(ch.algorithm, user, &ch.realm, password);
        let qop = ch.qop_auth.then(|| (format!("{nc:08x}"), cnonce.to_owned()));
        let q = qop.as_ref().map(|(nc, cnonce)| QopAuth { nc, cnonce });
        Self {
            username: user.to_owned(),
            realm: ch.realm.clone(),
            nonce: ch.nonce.clone(),
            uri: uri.to_owned(),
            response: response(ch.algorithm, &h1, &ch.nonce, method, uri, q),
            algorithm: ch.algorithm,
            qop,
            opaque: ch.opaque.clone(),
        }
    }

    /// Whether the response matches `ha1` for `method` (the realm, nonce and
    /// uri checks are the caller's).
    #[must_use]
    pub fn verify(&self, ha1: &str, method: &str) -> bool {
        let q = self.qop.as_ref().map(|(nc, cnonce)| QopAuth { nc, cnonce });
        let want = response(self.algorithm, ha1, &self.nonce, method, &self.uri, q);
        // Constant time in the length of the expected value.
        want.len() == self.response.len()
            && want.bytes().zip(self.response.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase())) == 0
    }

    /// The nonce-count as a number (`None` without qop or when malformed).
    #[must_use]
    pub fn nc(&self) -> Option<u32> {
        self.qop.as_ref().and_then(|(nc, _)| u32::from_str_radix(nc, 16).ok())
    }

    /// The header value.
    #[must_use]
    pub fn to_value(&self) -> String {
        let mut v = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}",
            quote(&self.username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(&self.uri),
            self.response,
            self.algorithm.name()
        );
        if let Some((nc, cnonce)) = &self.qop {
            v.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{}\"", quote(cnonce)));
        }
        if let Some(o) = &self.opaque {
            v.push_str(&format!(", opaque=\"{}\"", quote(o)));
        }
        v
    }

    /// Parses a header value; `None` unless it is Digest with username,
    /// realm, nonce, uri and response, a supported algorithm, and with
    /// `qop=auth` both `nc` and `cnonce`.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        let p = Params::parse(value)?;
        let qop = match p.get("qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => Some((p.get("nc")?.to_owned(), p.get("cnonce")?.to_owned())),
            Some(_) => return None,
        };
        Some(Self {
            username: p.get("username")?.to_owned(),
            realm: p.get("realm")?.to_owned(),
            nonce: p.get("nonce")?.to_owned(),
            uri: p.get("uri")?.to_owned(),
            response: p.get("response")?.to_ascii_lowercase(),
            algorithm: p.get("algorithm").map_or(Some(Algorithm::Md5), Algorithm::parse)?,
            qop,
            opaque: p.get("opaque").map(str::to_owned),
        })
    }
}

/// Escapes `"` and `\` for a quoted-string.
fn quote(s: &str) -> String {
    if s.contains(['"', '\\']) {
        s.replace('\\', "\\\\").replace('"', "\\\"")
    } else {
        s.to_owned()
    }
}

/// The `name=value` list after the `Digest` scheme token.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(value: &str) -> Option<Self> {
        let v = value.trim_start();
        let (scheme, mut rest) = v.split_at(v.find(|c: char| c.is_ascii_whitespace())?);
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        let mut out = Vec::new();
        loop {
            rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == ',');
            if rest.is_empty() {
                return Some(Self(out));
            }
            let eq = rest.find('=')?;
            let name = rest[..eq].trim().to_ascii_lowercase();
            rest = rest[eq + 1..].trim_start();
            let value = if let Some(q) = rest.strip_prefix('"') {
                let mut val = String::new();
                let mut chars = q.char_indices();
                let end = loop {
                    match chars.next()? {
                        (i, '"') => break i,
                        (_, '\\') => val.push(chars.next()?.1),
                        (_, c) => val.push(c),
                    }
                };
                rest = &q[end + 1..];
                val
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                let val = rest[..end].trim().to_owned();
                rest = &rest[end..];
                val
            };
            if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
                return None;
            }
            out.push((name, value));
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 2617 §3.5's example, an MD5 qop=auth answer with known values.
    #[test]
    fn md5_qop_auth_matches_the_rfc_example() {
        let h1 = ha1(Algorithm::Md5, "Mufasa", "testrealm@host.com", "Circle Of Life");
        let q = QopAuth { nc: "00000001", cnonce: "0a4f113b" };
        let r = response(Algorithm::Md5, &h1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET", "/dir/index.html", Some(q));
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    // RFC 7616 §3.9.1's SHA-256 example.
    #[test]
    fn sha256_matches_the_rfc_example() {
        let h1 = ha1(Algorithm::Sha256, "Mufasa", "http-auth@example.org", "Circle of Life");
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let q = QopAuth { nc: "00000001", cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ" };
        let r = response(Algorithm::Sha256, &h1, nonce, "GET", "/dir/index.html", Some(q));
        assert_eq!(r, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
    }

    #[test]
    fn credentials_answer_verify_and_round_trip() {
        let ch = Challenge {
            realm: "example.com".into(),
            nonce: "n\"1".into(),
            opaque: Some("op".into()),
            algorithm: Algorithm::Sha256,
            qop_auth: true,
            stale: false,
        };
        assert_eq!(Challenge::parse(&ch.to_value()), Some(ch.clone()));
        let c = Credentials::answer(&ch, "alice", "secret", "REGISTER", "sip:example.com", "abc", 7);
        assert_eq!(c.nc(), Some(7));
        let parsed = Credentials::parse(&c.to_value()).unwrap();
        assert_eq!(parsed, c);
        let h1 = ha1(Algorithm::Sha256, "alice", "example.com", "secret");
        assert!(parsed.verify(&h1, "REGISTER"));
        assert!(!parsed.verify(&h1, "INVITE"), "the method is part of the hash");
        assert!(!parsed.verify(&ha1(Algorithm::Sha256, "alice", "example.com", "wrong"), "REGISTER"));
    }

    #[test]
    fn lenient_phone_syntax_parses() {
        let v = "Digest  username=\"bob\",realm=\"x\", nonce=\"n\", uri=\"sip:x\", response=\"ABCD\", \
                 algorithm=md5, qop=auth, nc=0000000a, cnonce=\"c\"";
        let c = Credentials::parse(v).unwrap();
        assert_eq!(
            (c.username.as_str(), c.algorithm, c.nc(), c.response.as_str()),
            ("bob", Algorithm::Md5, Some(10), "abcd")
        );
        let no_qop = Credentials::parse("Digest username=\"b\", realm=\"x\", nonce=\"n\", uri=\"u\", response=\"r\"");
        assert_eq!(no_qop.map(|c| c.qop), Some(None));
        let ch = Challenge::parse("Digest realm=\"x\", nonce=\"n\", qop=\"auth,auth-int\", stale=TRUE").unwrap();
        assert!(ch.qop_auth && ch.stale && ch.algorithm == Algorithm::Md5);
    }

    #[test]
    fn malformed_or_unsupported_values_are_refused() {
        for v in [
            "",
            "Basic abc",
            "Digest",
            "Digest username=\"a\"",
            "Digest username=\"a, realm=\"x\"",
            "Digest username=\"a\", realm=\"x\", nonce=\"n\", uri=\"u\", response=\"r\", algorithm=MD5-sess",
            "Digest username=\"a\", realm=\"x\", nonce=\"n\", uri=\"u\", response=\"r\", qop=auth",
            "Digest username=\"a\", realm=\"x\", nonce=\"n\", uri=\"u\", response=\"r\", qop=auth-int, nc=1, cnonce=c",
        ] {
            assert_eq!(Credentials::parse(v), None, "{v}");
        }
        assert_eq!(Challenge::parse("Digest realm=\"x\", nonce=\"n\", algorithm=SHA-512-256"), None);
    }
}
