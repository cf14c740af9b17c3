//! What the guard needs from a message without parsing it: whether it is
//! a request, its method (the first token of the first line) and its
//! User-Agent, found by a bounded scan of the header bytes.

/// The parts of a message the guard looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A keepalive (CRLFs) or nothing at all.
    Keepalive,
    /// A response (`SIP/2.0 ...`).
    Response,
    /// A request; INVITE and REGISTER are told apart.
    Request(Method),
}

/// The methods with their own rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// INVITE.
    Invite,
    /// REGISTER.
    Register,
    /// Anything else (including garbage).
    Other,
}

/// How far into a message the User-Agent is looked for.
const SCAN_MAX: usize = 8192;

/// Classifies `data` by its first line.
#[must_use]
pub fn kind(data: &[u8]) -> Kind {
    let start = data.iter().position(|&b| b != b'\r' && b != b'\n');
    let Some(start) = start else { return Kind::Keepalive };
    let d = &data[start..];
    if d.len() >= 4 && d[..4].eq_ignore_ascii_case(b"SIP/") {
        return Kind::Response;
    }
    let end = d.iter().position(|&b| b == b' ').unwrap_or(d.len());
    let m = &d[..end];
    Kind::Request(if m == b"INVITE" {
        Method::Invite
    } else if m == b"REGISTER" {
        Method::Register
    } else {
        Method::Other
    })
}

/// The value of the first `User-Agent` header in the header block (the
/// first [`SCAN_MAX`] bytes), trimmed; `None` when there is none.
#[must_use]
pub fn user_agent(data: &[u8]) -> Option<&[u8]> {
    const NAME: &[u8] = b"user-agent";
    let d = &data[..data.len().min(SCAN_MAX)];
    let mut i = 0;
    while i < d.len() {
        let end = d[i..].iter().position(|&b| b == b'\n').map_or(d.len(), |p| i + p);
        let line = &d[i..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() && i > 0 {
            return None; // end of the headers
        }
        if line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            let rest = &line[NAME.len()..];
            let colon = rest.iter().position(|&b| b != b' ' && b != b'\t');
            if let Some(c) = colon.filter(|&c| rest[c] == b':') {
                return Some(rest[c + 1..].trim_ascii());
            }
        }
        i = end + 1;
    }
    None
}

/// Whether `ua` contains one of `needles` (lower-case), ignoring case.
#[must_use]
pub fn matches_any(ua: &[u8], needles: &[String]) -> bool {
    needles.iter().any(|n| {
        let n = n.as_bytes();
        !n.is_empty() && ua.len() >= n.len() && ua.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line() {
        assert_eq!(kind(b"INVITE sip:a@b SIP/2.0\r\n"), Kind::Request(Method::Invite));
        assert_eq!(kind(b"\r\nREGISTER sip:b SIP/2.0\r\n"), Kind::Request(Method::Register));
        assert_eq!(kind(b"OPTIONS sip:b SIP/2.0\r\n"), Kind::Request(Method::Other));
        assert_eq!(kind(b"invite sip:b SIP/2.0\r\n"), Kind::Request(Method::Other), "methods are case-sensitive");
        assert_eq!(kind(b"SIP/2.0 200 OK\r\n"), Kind::Response);
        assert_eq!(kind(b"\r\n\r\n"), Kind::Keepalive);
        assert_eq!(kind(b""), Kind::Keepalive);
        assert_eq!(kind(b"\x00\xff garbage"), Kind::Request(Method::Other));
    }

    #[test]
    fn user_agent_is_found_in_the_headers_only() {
        let m = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nuser-agent :  friendly-scanner 1.0 \r\n\r\n";
        assert_eq!(user_agent(m), Some(&b"friendly-scanner 1.0"[..]));
        let body = b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\nUser-Agent: sipvicious\r\n";
        assert_eq!(user_agent(body), None, "a body line is not a header");
        assert_eq!(user_agent(b"OPTIONS sip:x SIP/2.0\r\nUser-Agents: x\r\n\r\n"), None);
        assert_eq!(user_agent(b"OPTIONS sip:x SIP/2.0\nUser-Agent:sipcli\n\n"), Some(&b"sipcli"[..]));
        assert_eq!(user_agent(b""), None);
        assert_eq!(user_agent(b"User-Agent"), None);
    }

    #[test]
    fn scanner_match_ignores_case() {
        let list: Vec<String> = crate::config::DEFAULT_SCANNERS.iter().map(|s| s.to_ascii_lowercase()).collect();
        assert!(matches_any(b"Friendly-Scanner", &list));
        assert!(matches_any(b"sipvicious 0.3.4", &list));
        assert!(matches_any(b"VaxSIPUserAgent/3.1", &list));
        assert!(matches_any(b"x IWAR y", &list));
        assert!(!matches_any(b"Linphone/5.2", &list));
        assert!(!matches_any(b"sipp", &list));
        assert!(!matches_any(b"", &list));
    }
}
