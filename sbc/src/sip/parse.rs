//! Framing: bytes to [`Message`] for datagrams (UDP) and streams (TCP/TLS).
//!
//! This stage splits the start line, the header fields and the body, checks
//! line breaks, NUL bytes, size limits and Content-Length. Header values are
//! not interpreted here except Content-Length; see `validate.rs`.

use super::error::{Defect, ParseError};
use super::header::Header;
use super::message::{Message, StartLine};
use super::method::Method;
use super::scan::{is_token, parse_digits};
use super::{MAX_HEADERS, MAX_LINE, MAX_MESSAGE};

/// Start line and headers, before the body is cut.
struct Head {
    start: StartLine,
    headers: Vec<Header>,
    /// Offset of the first body byte.
    body_start: usize,
}

/// Whether errors concern a request (answerable) or a response.
#[derive(Clone, Copy)]
struct Kind(bool);

impl Kind {
    fn err(self, d: Defect) -> ParseError {
        if self.0 {
            ParseError::Request(d)
        } else {
            ParseError::Response(d)
        }
    }
}

/// Number of leading CR/LF bytes in `buf`: keep-alives (RFC 5626 4.4.1) that
/// a stream reader may drain, and answer, before the next message.
#[must_use]
pub fn keepalive_len(buf: &[u8]) -> usize {
    buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count()
}

/// Whether `buf` starts with a request or a response, for errors found
/// before its head is parsed; fails when the start line is unreadable.
fn kind_of(buf: &[u8]) -> Result<Kind, ParseError> {
    let first = buf.get(..buf.len().min(MAX_LINE + 2)).unwrap_or_default();
    let end = line_end(first, 0).map_or(first.len(), |(end, _)| end);
    match parse_start_line(first.get(..end).unwrap_or_default()) {
        Ok(StartLine::Request { .. }) | Err(ParseError::Request(_) | ParseError::Version) => Ok(Kind(true)),
        Ok(StartLine::Response { .. }) | Err(ParseError::Response(_)) => Ok(Kind(false)),
        Err(e) => Err(e),
    }
}

/// Finds the end of the line starting at `from`: `(content_end, next_line)`,
/// the line break (CRLF or a bare LF) excluded from the content.
fn line_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let lf = buf.get(from..)?.iter().position(|&b| b == b'\n')? + from;
    let end = if lf > from && buf.get(lf - 1) == Some(&b'\r') { lf - 1 } else { lf };
    Some((end, lf + 1))
}

/// Parses the start line text (no line break).
fn parse_start_line(line: &[u8]) -> Result<StartLine, ParseError> {
    if line.len() >= 4 && line.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/")) {
        return parse_status_line(line);
    }
    let sp = line.iter().position(|&b| b == b' ').ok_or(ParseError::StartLine)?;
    let method = std::str::from_utf8(line.get(..sp).unwrap_or_default())
        .ok()
        .filter(|m| is_token(m))
        .ok_or(ParseError::StartLine)?;
    // From here on it is a request: defects are answered with 400.
    let bad = ParseError::Request(Defect::RequestLine);
    if line.contains(&0) {
        return Err(ParseError::Request(Defect::NulByte));
    }
    let rest = std::str::from_utf8(line.get(sp + 1..).unwrap_or_default()).map_err(|_| bad.clone())?;
    let mut parts = rest.split(' ');
    let (Some(uri), Some(version), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad);
    };
    if uri.is_empty() || uri.bytes().any(|b| b < b' ' || b == 0x7f || b >= 0x80) {
        return Err(bad);
    }
    check_version(version, true)?;
    let method: Method = method.parse().map_err(|_| bad)?;
    Ok(StartLine::Request { method, uri: uri.to_owned() })
}

/// Checks `SIP/2.0`; another `SIP/x.y` is 505 for a request.
fn check_version(v: &str, request: bool) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    let numbered = v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
        && v.get(4..)
            .and_then(|n| n.split_once('.'))
            .is_some_and(|(a, b)| parse_digits(a).is_some() && parse_digits(b).is_some());
    Err(match (request, numbered) {
        (true, true) => ParseError::Version,
        (true, false) => ParseError::Request(Defect::RequestLine),
        (false, _) => ParseError::Response(Defect::StatusLine),
    })
}

fn parse_status_line(line: &[u8]) -> Result<StartLine, ParseError> {
    let bad = ParseError::Response(Defect::StatusLine);
    if line.contains(&0) {
        return Err(bad);
    }
    let mut parts = line.splitn(3, |&b| b == b' ');
    let version = std::str::from_utf8(parts.next().unwrap_or_default()).map_err(|_| bad.clone())?;
    check_version(version, false)?;
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 {
        return Err(bad);
    }
    let code = std::str::from_utf8(code).ok().and_then(parse_digits).ok_or(bad.clone())?;
    let code = u16::try_from(code).ok().filter(|c| (100..=699).contains(c)).ok_or(bad)?;
    let reason = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    Ok(StartLine::Response { code, reason })
}

/// Checks one line's content for bare CR and stray NUL (NUL is allowed only
/// as a quoted-pair, `\` NUL, as in RFC 4475 intmeth).
fn check_line(line: &[u8], kind: Kind) -> Result<(), ParseError> {
    if line.len() > MAX_LINE {
        return Err(kind.err(Defect::LineTooLong));
    }
    let mut prev = 0u8;
    for &b in line {
        match b {
            b'\r' => return Err(kind.err(Defect::HeaderLine)),
            0 if prev != b'\\' => return Err(kind.err(Defect::NulByte)),
            _ => {}
        }
        prev = b;
    }
    Ok(())
}

/// Parses the start line and the header section of `buf` (leading CR/LF
/// already skipped). With `lenient`, stops quietly at the first bad header
/// line instead of failing (used to answer broken requests).
fn parse_head(buf: &[u8], lenient: bool) -> Result<Head, ParseError> {
    let (first_end, pos, terminated) = match line_end(buf, 0) {
        Some((end, next)) => (end, next, true),
        None => (buf.len(), buf.len(), false),
    };
    let start = parse_start_line(buf.get(..first_end).unwrap_or_default())?;
    let kind = Kind(matches!(start, StartLine::Request { .. }));
    if first_end > MAX_LINE {
        return Err(kind.err(Defect::LineTooLong));
    }
    if buf.get(..first_end).is_some_and(|l| l.contains(&b'\r')) {
        return Err(kind.err(if kind.0 { Defect::RequestLine } else { Defect::StatusLine }));
    }
    if !terminated {
        return Err(kind.err(Defect::Unterminated));
    }
    let mut headers = Vec::new();
    match scan_headers(buf, pos, kind, &mut headers) {
        Ok(body_start) => Ok(Head { start, headers, body_start }),
        Err(_) if lenient => Ok(Head { start, headers, body_start: buf.len() }),
        Err(e) => Err(e),
    }
}

/// Collects the header fields from `pos` into `headers` (a field being a line
/// plus its continuation lines) and returns the offset of the body: after
/// the empty line, or the end of `buf` when the last field ends there.
fn scan_headers(buf: &[u8], mut pos: usize, kind: Kind, headers: &mut Vec<Header>) -> Result<usize, ParseError> {
    let mut current: Option<usize> = None;
    let mut finish = |current: Option<usize>, to: usize| -> Result<(), ParseError> {
        if let Some(from) = current {
            let raw = buf.get(from..to).unwrap_or_default();
            headers.push(Header::from_raw(raw).map_err(|d| kind.err(d))?);
            if headers.len() > MAX_HEADERS {
                return Err(kind.err(Defect::TooManyHeaders));
            }
        }
        Ok(())
    };
    loop {
        if pos >= buf.len() {
            // The section ends with a complete line but no empty line:
            // accepted, the body is empty.
            finish(current, pos)?;
            return Ok(buf.len());
        }
        let (end, next) = line_end(buf, pos).ok_or(kind.err(Defect::Unterminated))?;
        check_line(buf.get(pos..end).unwrap_or_default(), kind)?;
        if end == pos {
            finish(current, pos)?;
            return Ok(next);
        }
        if buf.get(pos).is_some_and(|&b| b == b' ' || b == b'\t') {
            if current.is_none() {
                return Err(kind.err(Defect::HeaderLine));
            }
        } else {
            finish(current, pos)?;
            current = Some(pos);
        }
        pos = next;
    }
}

/// The Content-Length of `headers`: `None` if absent.
fn content_length(headers: &[Header], kind: Kind) -> Result<Option<usize>, ParseError> {
    let mut found = headers.iter().filter(|h| h.is("content-length"));
    let Some(h) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(kind.err(Defect::MultipleContentLength));
    }
    let n = parse_digits(h.value()).ok_or(kind.err(Defect::ContentLength))?;
    // Anything above the message limit cannot be satisfied.
    Ok(Some(usize::try_from(n).unwrap_or(usize::MAX).min(MAX_MESSAGE + 1)))
}

impl Message {
    /// Parses one datagram holding exactly one message.
    ///
    /// Leading CR/LF are skipped. The body is Content-Length bytes; bytes
    /// after it are ignored (RFC 4475 dblreq). Without Content-Length the
    /// body is the rest of the datagram (RFC 3261 18.3).
    ///
    /// # Errors
    /// See [`ParseError`]: [`ParseError::Empty`] for a keep-alive,
    /// [`ParseError::StartLine`] when nothing can be answered, otherwise a
    /// request/response defect (limits, line breaks, NUL, Content-Length).
    pub fn parse(datagram: &[u8]) -> Result<Message, ParseError> {
        let buf = datagram.get(keepalive_len(datagram)..).unwrap_or_default();
        if buf.is_empty() {
            return Err(ParseError::Empty);
        }
        if buf.len() > MAX_MESSAGE {
            return Err(kind_of(buf)?.err(Defect::TooLarge));
        }
        let head = parse_head(buf, false)?;
        let kind = Kind(matches!(head.start, StartLine::Request { .. }));
        let rest = buf.get(head.body_start..).unwrap_or_default();
        let body = match content_length(&head.headers, kind)? {
            Some(n) => rest.get(..n).ok_or(kind.err(Defect::ContentLengthTooLarge))?,
            None => rest,
        };
        Ok(Message { start: head.start, headers: head.headers, body: body.to_vec() })
    }

    /// Frames one message from the front of a stream buffer.
    ///
    /// Leading CR/LF keep-alives are skipped (and counted as consumed once a
    /// message follows). Returns `Ok(None)` until a whole message is
    /// buffered, then the message and the number of bytes it used. A missing
    /// Content-Length is an error (400): RFC 3261 18.3 makes it mandatory on
    /// streams, and guessing would desynchronize the stream.
    ///
    /// # Errors
    /// As [`Message::parse`], plus [`Defect::ContentLengthMissing`], and
    /// [`Defect::TooLarge`] once more than [`MAX_MESSAGE`] bytes are
    /// buffered without a complete header section. After an error the stream
    /// cannot be resynchronized: close the connection.
    pub fn parse_stream(buf: &[u8]) -> Result<Option<(Message, usize)>, ParseError> {
        let skip = keepalive_len(buf);
        let data = buf.get(skip..).unwrap_or_default();
        if data.is_empty() {
            return Ok(None);
        }
        let Some(head_len) = find_head_end(data) else {
            // Fail early on a start line that can never become a message.
            if let Some((end, _)) = line_end(data, 0) {
                parse_start_line(data.get(..end).unwrap_or_default())?;
            }
            if data.len() > MAX_MESSAGE {
                return Err(kind_of(data)?.err(Defect::TooLarge));
            }
            return Ok(None);
        };
        let head = parse_head(data.get(..head_len).unwrap_or_default(), false)?;
        let kind = Kind(matches!(head.start, StartLine::Request { .. }));
        let cl = content_length(&head.headers, kind)?.ok_or(kind.err(Defect::ContentLengthMissing))?;
        let total = head.body_start.saturating_add(cl);
        if total > MAX_MESSAGE {
            return Err(kind.err(Defect::TooLarge));
        }
        let Some(body) = data.get(head.body_start..total) else {
            return Ok(None);
        };
        let msg = Message { start: head.start, headers: head.headers, body: body.to_vec() };
        Ok(Some((msg, skip + total)))
    }
}

/// Length of the start line and header section including the empty line, if
/// it is all in `data` (looked for in the first [`MAX_MESSAGE`] bytes only).
fn find_head_end(data: &[u8]) -> Option<usize> {
    let limit = data.len().min(MAX_MESSAGE + 1);
    let mut pos = 0;
    while let Some((end, next)) = line_end(data.get(..limit)?, pos) {
        if end == pos && pos > 0 {
            return Some(next);
        }
        pos = next;
    }
    None
}

/// The answer to a datagram that [`Message::parse`] or [`Message::validate`]
/// refused with a response code (400 or 505), built from whatever parses
/// (RFC 3261 8.2.6: Vias, From, To, Call-ID, CSeq copied as received).
///
/// `None` when `err` has no response code, when the start line or Via is
/// unreadable (nowhere to answer), or for ACK (never answered).
#[must_use]
pub fn reject_response(datagram: &[u8], err: &ParseError, to_tag: Option<&str>) -> Option<Message> {
    let code = err.response_code()?;
    let reason = err.reason_phrase()?;
    let buf = datagram.get(keepalive_len(datagram)..).unwrap_or_default();
    let cut = buf.len().min(MAX_MESSAGE);
    let head = match parse_head(buf.get(..cut).unwrap_or_default(), true) {
        Ok(h) => h,
        Err(_) => lenient_request_head(buf.get(..cut).unwrap_or_default())?,
    };
    let req = Message { start: head.start, headers: head.headers, body: Vec::new() };
    if !req.is_request() || req.method() == Some(&Method::Ack) || req.header("via").is_none() {
        return None;
    }
    Some(match to_tag {
        Some(tag) => req.response_with_tag(code, &reason, tag),
        None => req.response_to(code, &reason),
    })
}

/// Head of a request whose Request-Line is malformed (several spaces, bad
/// version ...): the method token is kept, the rest of the line dropped.
fn lenient_request_head(buf: &[u8]) -> Option<Head> {
    let (_, next) = line_end(buf, 0)?;
    let first = buf.get(..next)?;
    let sp = first.iter().position(|&b| b == b' ')?;
    let method: Method = std::str::from_utf8(first.get(..sp)?).ok()?.parse().ok()?;
    let mut fake = format!("{method} sip:invalid SIP/2.0\r\n").into_bytes();
    fake.extend_from_slice(buf.get(next..)?);
    let mut head = parse_head(&fake, true).ok()?;
    head.body_start = 0;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 3\r\n\r\nabc";

    #[test]
    fn datagram_basics() {
        let m = Message::parse(OPTIONS).unwrap();
        assert_eq!(m.method(), Some(&Method::Options));
        assert_eq!(m.body, b"abc");
        assert_eq!(m.to_bytes(), OPTIONS);
        // Leading keep-alive CRLFs and trailing junk after the body.
        let mut d = b"\r\n\r\n".to_vec();
        d.extend_from_slice(OPTIONS);
        d.extend_from_slice(b"JUNK");
        assert_eq!(Message::parse(&d).unwrap(), m);
        assert_eq!(Message::parse(b"\r\n\r\n"), Err(ParseError::Empty));
        assert_eq!(Message::parse(b""), Err(ParseError::Empty));
    }

    #[test]
    fn bare_lf_and_missing_cl() {
        let m = Message::parse(b"SIP/2.0 200 OK\nVia: SIP/2.0/UDP h\n\nrest of it").unwrap();
        assert_eq!(m.code(), Some(200));
        assert_eq!(m.header("via"), Some("SIP/2.0/UDP h"));
        assert_eq!(m.body, b"rest of it");
    }

    #[test]
    fn start_line_errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", ParseError::Request(Defect::RequestLine)),
            (b"INVITE sip:a@b SIP/2.0 \r\n\r\n", ParseError::Request(Defect::RequestLine)),
            (b"INVITE sip:a@b; lr SIP/2.0\r\n\r\n", ParseError::Request(Defect::RequestLine)),
            (b"INVITE sip:a@b SIP/7.0\r\n\r\n", ParseError::Version),
            (b"INVITE sip:a@b HTTP/1.1\r\n\r\n", ParseError::Request(Defect::RequestLine)),
            (b"INVITE sip:a@b SIP/2.0", ParseError::Request(Defect::Unterminated)),
            (b"\x16\x03\x01garbage\r\n\r\n", ParseError::StartLine),
            (b"GARBAGE\r\n", ParseError::StartLine),
            (b"SIP/2.0 4294967301 big\r\n\r\n", ParseError::Response(Defect::StatusLine)),
            (b"SIP/2.0 099 low\r\n\r\n", ParseError::Response(Defect::StatusLine)),
            (b"SIP/3.0 200 OK\r\n\r\n", ParseError::Response(Defect::StatusLine)),
        ];
        for (input, want) in cases {
            assert_eq!(Message::parse(input).as_ref().err(), Some(want), "{}", String::from_utf8_lossy(input));
        }
        let m = Message::parse(b"SIP/2.0 100 \r\n\r\n").unwrap();
        assert_eq!(m.start, StartLine::Response { code: 100, reason: String::new() });
    }

    #[test]
    fn header_errors() {
        let base = "OPTIONS sip:a@b SIP/2.0\r\n";
        let cases: &[(&str, Defect)] = &[
            (" folded: first\r\n\r\n", Defect::HeaderLine),
            ("No-Colon\r\n\r\n", Defect::HeaderLine),
            ("A: b\rc\r\n\r\n", Defect::HeaderLine),
            ("A: b\0c\r\n\r\n", Defect::NulByte),
            ("A: b\r\nB: c", Defect::Unterminated),
            ("l: 10\r\n\r\nabc", Defect::ContentLengthTooLarge),
            ("l: -999\r\n\r\nabc", Defect::ContentLength),
            ("l: 1\r\nContent-Length: 1\r\n\r\nabc", Defect::MultipleContentLength),
        ];
        for (rest, want) in cases {
            let input = format!("{base}{rest}");
            assert_eq!(Message::parse(input.as_bytes()), Err(ParseError::Request(*want)), "{rest:?}");
        }
        // NUL as a quoted-pair is allowed.
        assert!(Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nTo: \"a\\\0\" <sip:a@b>\r\n\r\n").is_ok());
    }

    #[test]
    fn limits() {
        let mut many = String::from("OPTIONS sip:a@b SIP/2.0\r\n");
        for i in 0..MAX_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        assert!(Message::parse(format!("{many}\r\n").as_bytes()).is_ok());
        many.push_str("X-last: v\r\n\r\n");
        assert_eq!(Message::parse(many.as_bytes()), Err(ParseError::Request(Defect::TooManyHeaders)));

        let long = format!("OPTIONS sip:a@b SIP/2.0\r\nX: {}\r\n\r\n", "a".repeat(MAX_LINE));
        assert_eq!(Message::parse(long.as_bytes()), Err(ParseError::Request(Defect::LineTooLong)));
        let big = format!("OPTIONS sip:a@b SIP/2.0\r\n\r\n{}", "a".repeat(MAX_MESSAGE));
        assert_eq!(Message::parse(big.as_bytes()), Err(ParseError::Request(Defect::TooLarge)));
        let resp = format!("SIP/2.0 200 OK\r\n\r\n{}", "a".repeat(MAX_MESSAGE));
        assert_eq!(Message::parse(resp.as_bytes()), Err(ParseError::Response(Defect::TooLarge)));
    }

    #[test]
    fn stream_framing() {
        let mut buf = b"\r\n\r\n".to_vec();
        buf.extend_from_slice(OPTIONS);
        buf.extend_from_slice(&OPTIONS[..20]);
        for cut in 0..4 + OPTIONS.len() {
            assert_eq!(Message::parse_stream(&buf[..cut]), Ok(None), "cut {cut}");
        }
        let (m, used) = Message::parse_stream(&buf).unwrap().unwrap();
        assert_eq!(used, 4 + OPTIONS.len());
        assert_eq!(m.body, b"abc");
        assert_eq!(Message::parse_stream(&buf[used..]), Ok(None));

        let no_cl = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n";
        assert_eq!(Message::parse_stream(no_cl), Err(ParseError::Request(Defect::ContentLengthMissing)));
        let mut endless = b"OPTIONS ".to_vec();
        endless.resize(MAX_MESSAGE + 1, b'a');
        assert_eq!(Message::parse_stream(&endless[..MAX_MESSAGE]), Ok(None));
        assert_eq!(Message::parse_stream(&endless), Err(ParseError::Request(Defect::TooLarge)));
        assert_eq!(Message::parse_stream(b"\x16\x03\x01 junk\r\n"), Err(ParseError::StartLine));
        let huge_cl = b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999999999999999999\r\n\r\n";
        assert_eq!(Message::parse_stream(huge_cl), Err(ParseError::Request(Defect::TooLarge)));
        assert_eq!(keepalive_len(b"\r\n\r\nX"), 4);
    }

    #[test]
    fn reject_builds_answer() {
        let d = b"INVITE  sip:a@b  SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
        let err = Message::parse(d).unwrap_err();
        let r = reject_response(d, &err, Some("sbc1")).unwrap();
        assert_eq!(r.code(), Some(400));
        assert_eq!(r.start, StartLine::Response { code: 400, reason: "Bad Request - malformed Request-Line".into() });
        assert_eq!(r.to_tag().as_deref(), Some("sbc1"));
        assert_eq!(r.header("cseq"), Some("1 INVITE"));

        let d = b"OPTIONS sip:a@b SIP/7.0\r\nVia: SIP/2.0/UDP h\r\nl: 0\r\n\r\n";
        let err = Message::parse(d).unwrap_err();
        assert_eq!(reject_response(d, &err, None).unwrap().code(), Some(505));

        let ack = b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nl: 9\r\n\r\n";
        let err = Message::parse(ack).unwrap_err();
        assert_eq!(reject_response(ack, &err, None), None);
        let resp = b"SIP/2.0 999 x\r\n\r\n";
        assert_eq!(reject_response(resp, &Message::parse(resp).unwrap_err(), None), None);
    }
}
