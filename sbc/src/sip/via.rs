//! Via values (RFC 3261 20.42, 18.2.1; rport from RFC 3581).

use std::fmt;

use super::error::ParseError;
use super::params::{self, Params};
use super::scan::{is_token_byte, is_wsp, skip_wsp, take_while};
use super::uri::{is_host_byte, split_host_port};

/// One Via value: `SIP/2.0/UDP host:port;branch=z9hG4bK...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport, upper-cased: `UDP`, `TCP`, `TLS`, `SCTP`, `WS` ... (unknown
    /// ones are kept).
    pub transport: String,
    /// sent-by host: a name, an IPv4 address or a bracketed IPv6 reference.
    pub host: String,
    /// sent-by port, if written.
    pub port: Option<u16>,
    /// Via parameters in order, values as written.
    pub params: Params,
}

const BAD: ParseError = ParseError::Syntax("Via");

impl Via {
    /// A Via with a branch parameter and nothing else.
    #[must_use]
    pub fn new(transport: &str, host: &str, port: Option<u16>, branch: &str) -> Via {
        Via {
            transport: transport.to_ascii_uppercase(),
            host: host.to_owned(),
            port,
            params: vec![("branch".to_owned(), Some(branch.to_owned()))],
        }
    }

    /// Parses one Via value (one element of the comma-separated list).
    /// Whitespace is allowed around `/`, `:`, `;` and `=` (RFC 4475 wsinv);
    /// the protocol must be `SIP/2.0`.
    ///
    /// # Errors
    /// [`ParseError::Syntax`] on anything else.
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        let b = s.as_bytes();
        let mut i = skip_wsp(b, 0);
        let mut parts = [""; 3];
        for (n, part) in parts.iter_mut().enumerate() {
            if n > 0 {
                if b.get(i) != Some(&b'/') {
                    return Err(BAD);
                }
                i = skip_wsp(b, i + 1);
            }
            let end = take_while(b, i, is_token_byte);
            *part = s.get(i..end).filter(|p| !p.is_empty()).ok_or(BAD)?;
            i = skip_wsp(b, end);
        }
        let [name, version, transport] = parts;
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err(BAD);
        }
        // At least one whitespace between sent-protocol and sent-by.
        if !b.get(i.wrapping_sub(1)).is_some_and(|&c| is_wsp(c)) {
            return Err(BAD);
        }
        let host_start = i;
        let host_end = if b.get(i) == Some(&b'[') {
            s.get(i..).and_then(|t| t.find(']')).ok_or(BAD)? + i + 1
        } else {
            take_while(b, i, is_host_byte)
        };
        i = skip_wsp(b, host_end);
        let port_text = if b.get(i) == Some(&b':') {
            let start = skip_wsp(b, i + 1);
            i = take_while(b, start, |c| c.is_ascii_digit());
            Some(s.get(start..i).ok_or(BAD)?)
        } else {
            None
        };
        let host = s.get(host_start..host_end).ok_or(BAD)?;
        let sent_by = match port_text {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let (host, port) = split_host_port(&sent_by).ok_or(BAD)?;
        let params = params::parse_header_params(s, i).ok_or(BAD)?;
        Ok(Via { transport: transport.to_ascii_uppercase(), host: host.to_owned(), port, params })
    }

    /// The value of parameter `name` (case-insensitive): `Some(None)` for a
    /// parameter without value, `None` when absent.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        params::find(&self.params, name)
    }

    /// Sets parameter `name` in place, or appends it.
    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        params::set(&mut self.params, name, value);
    }

    /// The `branch` parameter.
    #[must_use]
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// The `received` parameter.
    #[must_use]
    pub fn received(&self) -> Option<&str> {
        self.param("received").flatten()
    }

    /// The `rport` parameter: `None` if absent, `Some(None)` when present
    /// without a (valid) port, `Some(Some(port))` when filled in.
    #[must_use]
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport").map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// Whether the branch carries the RFC 3261 magic cookie `z9hG4bK`
    /// (otherwise the sender is RFC 2543, RFC 4475 inv2543).
    #[must_use]
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        params::write(f, &self.params)
    }
}

impl std::str::FromStr for Via {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Via::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        let v = Via::parse("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "127.0.0.1");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.branch(), Some("z9hG4bK-d87543"));
        assert_eq!(v.rport(), Some(None));
        assert!(v.has_rfc3261_branch());
        assert_eq!(v.to_string(), "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543;rport");
    }

    #[test]
    fn ipv6_received_rport() {
        let v = Via::parse("SIP/2.0/tls [2001:db8::9]:5061;received=2001:db8::1;rport=1234").unwrap();
        assert_eq!(v.transport, "TLS");
        assert_eq!(v.host, "[2001:db8::9]");
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.received(), Some("2001:db8::1"));
        assert_eq!(v.rport(), Some(Some(1234)));
        let mut v = Via::new("udp", "[::1]", None, "z9hG4bK1");
        v.set_param("received", Some("192.0.2.1"));
        assert_eq!(v.to_string(), "SIP/2.0/UDP [::1];branch=z9hG4bK1;received=192.0.2.1");
    }

    #[test]
    fn odd_whitespace() {
        let v = Via::parse("SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!((v.host.as_str(), v.branch()), ("192.0.2.2", Some("390skdjuw")));
        assert!(!v.has_rfc3261_branch());
        let v = Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8").unwrap();
        assert_eq!((v.transport.as_str(), v.host.as_str()), ("TCP", "spindle.example.com"));
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        let v = Via::parse("SIP/2.0/UDP host : 5060 ;branch= z9hG4bK30239").unwrap();
        assert_eq!((v.port, v.branch()), (Some(5060), Some("z9hG4bK30239")));
        let v = Via::parse("SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en").unwrap();
        assert_eq!(v.transport, "UNKNOWN");
        assert_eq!(Via::parse("SIP/2.0/UDP iftgw.example.com").unwrap().branch(), None);
    }

    #[test]
    fn rejects() {
        for s in [
            "SIP/2.0/UDP 192.0.2.15;;",
            ";",
            "",
            "SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw",
            "SIP/2.0/UDPhost",
            "SIP/2.0/UDP",
            "SIP/2.0 UDP host",
            "SIP/2.0/UDP host:",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP host junk",
            "SIP/2.0/UDP host;branch=",
        ] {
            assert!(Via::parse(s).is_err(), "{s}");
        }
    }
}
