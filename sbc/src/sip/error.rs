//! Parse and validation errors, and the response each one calls for.

use std::fmt;

/// What is wrong with a message (the reason of a [`ParseError`]).
///
/// `&'static str` payloads name the header concerned, as written in RFC 3261
/// ("Call-ID", "Via", ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// The message is larger than [`super::MAX_MESSAGE`].
    TooLarge,
    /// More header fields than [`super::MAX_HEADERS`].
    TooManyHeaders,
    /// A line longer than [`super::MAX_LINE`].
    LineTooLong,
    /// A NUL byte in the start line or the header section (outside a
    /// quoted-pair).
    NulByte,
    /// A header line that is not `name: value`, a bare CR, or a continuation
    /// line with no header before it.
    HeaderLine,
    /// The start line or the header section ends in the middle of a line.
    Unterminated,
    /// The Request-Line is not `Method SP Request-URI SP SIP/2.0`.
    RequestLine,
    /// The Request-URI does not parse, or carries `?headers` in a SIP URI.
    RequestUri,
    /// The Status-Line is not `SIP/2.0 SP 3DIGIT SP reason` with a code in
    /// 100..=699.
    StatusLine,
    /// Content-Length is not a number (e.g. negative).
    ContentLength,
    /// Content-Length is missing on a stream transport.
    ContentLengthMissing,
    /// Content-Length is larger than the bytes that follow the headers.
    ContentLengthTooLarge,
    /// Several Content-Length headers.
    MultipleContentLength,
    /// A mandatory header is missing.
    Missing(&'static str),
    /// A header that allows one value appears several times.
    Duplicate(&'static str),
    /// A header value does not parse (or a number in it overflows).
    Malformed(&'static str),
    /// The CSeq method differs from the request method.
    CSeqMismatch,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => f.write_str("message too large"),
            Self::TooManyHeaders => f.write_str("too many headers"),
            Self::LineTooLong => f.write_str("line too long"),
            Self::NulByte => f.write_str("NUL byte in header"),
            Self::HeaderLine => f.write_str("malformed header line"),
            Self::Unterminated => f.write_str("unterminated header section"),
            Self::RequestLine => f.write_str("malformed Request-Line"),
            Self::RequestUri => f.write_str("malformed Request-URI"),
            Self::StatusLine => f.write_str("malformed Status-Line"),
            Self::ContentLength => f.write_str("malformed Content-Length"),
            Self::ContentLengthMissing => f.write_str("Content-Length required"),
            Self::ContentLengthTooLarge => f.write_str("Content-Length larger than message"),
            Self::MultipleContentLength => f.write_str("multiple Content-Length"),
            Self::Missing(h) => write!(f, "missing {h}"),
            Self::Duplicate(h) => write!(f, "multiple {h}"),
            Self::Malformed(h) => write!(f, "malformed {h}"),
            Self::CSeqMismatch => f.write_str("CSeq method mismatch"),
        }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but CR/LF (a keep-alive) or nothing at all.
    #[error("empty message")]
    Empty,
    /// The first line is neither a Request-Line nor a Status-Line: nobody can
    /// be answered.
    #[error("unreadable start line")]
    StartLine,
    /// A request in a SIP version other than 2.0 (answer 505).
    #[error("unsupported SIP version")]
    Version,
    /// A malformed request (answer 400).
    #[error("bad request: {0}")]
    Request(Defect),
    /// A malformed response (drop it: responses are never answered).
    #[error("bad response: {0}")]
    Response(Defect),
    /// A standalone [`super::Uri`], [`super::NameAddr`], [`super::Via`] or
    /// method did not parse; the payload names what. Message-level checks
    /// turn this into [`ParseError::Request`] or [`ParseError::Response`].
    #[error("malformed {0}")]
    Syntax(&'static str),
}

impl ParseError {
    /// The status code a server should answer the offending request with:
    /// 400, 505 for a foreign SIP version, `None` when nothing can be
    /// answered (unreadable start line, keep-alive, or a response).
    #[must_use]
    pub fn response_code(&self) -> Option<u16> {
        match self {
            Self::Version => Some(505),
            Self::Request(_) | Self::Syntax(_) => Some(400),
            Self::Empty | Self::StartLine | Self::Response(_) => None,
        }
    }

    /// The reason phrase to go with [`Self::response_code`], e.g.
    /// `"Bad Request - Content-Length larger than message"`.
    #[must_use]
    pub fn reason_phrase(&self) -> Option<String> {
        match self {
            Self::Version => Some("Version Not Supported".to_owned()),
            Self::Request(d) => Some(format!("Bad Request - {d}")),
            Self::Syntax(what) => Some(format!("Bad Request - malformed {what}")),
            Self::Empty | Self::StartLine | Self::Response(_) => None,
        }
    }

    /// The defect, for errors tied to a message.
    #[must_use]
    pub fn defect(&self) -> Option<Defect> {
        match self {
            Self::Request(d) | Self::Response(d) => Some(*d),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_phrases() {
        let e = ParseError::Request(Defect::ContentLengthTooLarge);
        assert_eq!(e.response_code(), Some(400));
        assert_eq!(e.reason_phrase().as_deref(), Some("Bad Request - Content-Length larger than message"));
        assert_eq!(ParseError::Version.response_code(), Some(505));
        assert_eq!(ParseError::Response(Defect::StatusLine).response_code(), None);
        assert_eq!(ParseError::StartLine.reason_phrase(), None);
        assert_eq!(ParseError::Request(Defect::Missing("Call-ID")).to_string(), "bad request: missing Call-ID");
    }
}
