//! Configurable message limits (`[limits]`), checked on the raw bytes of
//! every inbound message before it is parsed or any state is created:
//! header count, header line length, Via count and body size.

/// The limits in force; the defaults are generous enough for every
/// well-formed message (and the RFC 4475 torture tests: `longreq` carries
/// 34 Vias, so `max_vias` defaults to Max-Forwards' usual 70).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most header lines (folded continuation lines included).
    pub max_headers: usize,
    /// Longest line of the header section, CRLF excluded (start line too).
    pub max_header_line: usize,
    /// Most Via values, counted over every Via header.
    pub max_vias: usize,
    /// Largest body, bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_headers: 100, max_header_line: 4096, max_vias: 70, max_body: 16384 }
    }
}

/// Which limit a message broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    /// More than `max_headers` header lines.
    Headers,
    /// A line longer than `max_header_line`.
    HeaderLine,
    /// More than `max_vias` Via values.
    Vias,
    /// A body over `max_body`.
    Body,
}

impl Breach {
    /// Every breach, in metric order.
    pub const ALL: [Self; 4] = [Self::Headers, Self::HeaderLine, Self::Vias, Self::Body];

    /// The metric label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Headers => "headers",
            Self::HeaderLine => "header_line",
            Self::Vias => "vias",
            Self::Body => "body",
        }
    }

    /// The status code and reason phrase a request breaking it is answered
    /// with.
    #[must_use]
    pub fn answer(self) -> (u16, &'static str) {
        match self {
            Self::Headers => (400, "Bad Request - too many headers"),
            Self::Vias => (400, "Bad Request - too many Via headers"),
            Self::HeaderLine => (513, "Message Too Large"),
            Self::Body => (413, "Request Entity Too Large"),
        }
    }
}

impl Limits {
    /// Checks `data` (one framed message) against the limits.
    ///
    /// # Errors
    /// The first limit broken.
    pub fn check(&self, data: &[u8]) -> Result<(), Breach> {
        let end = data.windows(4).position(|w| w == b"\r\n\r\n");
        let (head, body_len) = match end {
            Some(e) => (data.get(..e).unwrap_or_default(), data.len().saturating_sub(e + 4)),
            None => (data, 0),
        };
        let (mut headers, mut vias) = (0usize, 0usize);
        for (i, line) in head.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > self.max_header_line {
                return Err(Breach::HeaderLine);
            }
            if i == 0 || line.is_empty() {
                continue;
            }
            headers += 1;
            if headers > self.max_headers {
                return Err(Breach::Headers);
            }
            if let Some(values) = via_values(line) {
                vias += values;
                if vias > self.max_vias {
                    return Err(Breach::Vias);
                }
            }
        }
        if body_len > self.max_body {
            return Err(Breach::Body);
        }
        Ok(())
    }
}

/// The number of comma-separated values when `line` is a Via header
/// (`Via` or `v`), commas inside quotes not counted.
fn via_values(line: &[u8]) -> Option<usize> {
    let colon = line.iter().position(|b| *b == b':')?;
    let name = line.get(..colon)?.trim_ascii();
    if !(name.eq_ignore_ascii_case(b"via") || name.eq_ignore_ascii_case(b"v")) {
        return None;
    }
    let mut quoted = false;
    let mut n = 1;
    for b in line.get(colon + 1..).unwrap_or_default() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => n += 1,
            _ => {}
        }
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(extra: &str, body: &str) -> Vec<u8> {
        format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn defaults_pass_an_ordinary_message() {
        assert_eq!(Limits::default().check(&msg("", "v=0\r\n")), Ok(()));
    }

    #[test]
    fn each_limit_is_enforced_and_its_boundary_passes() {
        let l = Limits { max_headers: 7, max_header_line: 60, max_vias: 3, max_body: 10 };
        // 5 base headers + X-A + Content-Length = 7.
        assert_eq!(l.check(&msg("X-A: 1\r\n", "")), Ok(()));
        assert_eq!(l.check(&msg("X-A: 1\r\nX-B: 2\r\n", "")), Err(Breach::Headers));
        assert_eq!(l.check(&msg(&format!("X-A: {}\r\n", "a".repeat(55)), "")), Ok(()));
        assert_eq!(l.check(&msg(&format!("X-A: {}\r\n", "a".repeat(56)), "")), Err(Breach::HeaderLine));
        assert_eq!(l.check(&msg("v: SIP/2.0/UDP a, SIP/2.0/UDP b\r\n", "")), Ok(()));
        assert_eq!(l.check(&msg("v: SIP/2.0/UDP a, SIP/2.0/UDP b;x=\"p,q\"\r\n", "")), Ok(()));
        assert_eq!(l.check(&msg("Via: SIP/2.0/UDP a, SIP/2.0/UDP b, SIP/2.0/UDP c\r\n", "")), Err(Breach::Vias));
        assert_eq!(l.check(&msg("", "0123456789")), Ok(()));
        assert_eq!(l.check(&msg("", "0123456789a")), Err(Breach::Body));
    }

    #[test]
    fn answers_name_the_limit() {
        assert_eq!(Breach::Headers.answer().0, 400);
        assert_eq!(Breach::Vias.answer().0, 400);
        assert_eq!(Breach::HeaderLine.answer().0, 513);
        assert_eq!(Breach::Body.answer().0, 413);
        assert_eq!(Breach::ALL.map(Breach::label), ["headers", "header_line", "vias", "body"]);
    }
}
