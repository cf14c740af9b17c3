//! SIP message model and parser (RFC 3261 section 7, 20 and 25).
//!
//! This module owns the bytes-to-[`Message`] step and back. A proxy must
//! forward every header it does not touch byte for byte and in order, so a
//! [`Message`] keeps each header as its raw lines ([`Header`]) and parses typed
//! views ([`Via`], [`NameAddr`], [`Uri`], [`Contact`], CSeq, ...) on demand.
//!
//! Two stages:
//! - [`Message::parse`] (one UDP datagram) and [`Message::parse_stream`] (TCP
//!   framing) split the start line, the header lines and the body, and enforce
//!   the size limits ([`MAX_MESSAGE`], [`MAX_HEADERS`], [`MAX_LINE`]). They fail
//!   only when no message can be framed; [`reject_response`] then builds the
//!   best-effort 400/505 answer.
//! - [`Message::validate`] checks the semantics a proxy relies on (required
//!   and single-valued headers, CSeq, Via, From/To, Request-URI, ...) and
//!   returns the code to answer with ([`ParseError::response_code`]).
//!
//! Choices for the RFC 4475 cases the RFC leaves open:
//! - `regbadct` (addr-spec Contact with `?headers` outside `<>`) and
//!   `badaspec` (spaces inside `<...>`) are accepted, as Kamailio does.
//! - `mismatch02` (unknown method whose CSeq method differs) gets 400, not 501.
//! - URIs whose scheme is not `sip`, `sips` or `tel` are kept opaque
//!   ([`Uri::opaque`]).
//! - A datagram whose header section ends with a complete line but lacks the
//!   empty line is accepted (the body is then empty).
//! - On TCP a message without Content-Length is rejected (RFC 3261 18.3 makes
//!   it mandatory on streams).
//!
//! Nothing here panics on network input, loops without bound, or does more
//! than linear work in the input size.

mod error;
mod header;
mod limits;
mod message;
mod method;
mod name_addr;
mod params;
mod parse;
mod scan;
mod uri;
mod validate;
mod via;

pub use error::{Defect, ParseError};
pub use header::{canonical_name, Header};
pub use limits::{Breach, Limits};
pub use message::{Message, StartLine};
pub use method::Method;
pub use name_addr::{Contact, NameAddr};
pub use params::Params;
pub use parse::{keepalive_len, reject_response};
pub use uri::Uri;
pub use validate::validate_request;
pub use via::Via;

/// Largest message accepted, in bytes (start line, headers and body).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most header fields (not lines: a folded header counts once) accepted.
pub const MAX_HEADERS: usize = 256;
/// Longest physical line accepted in the start line and header section.
pub const MAX_LINE: usize = 8 * 1024;

/// An INVITE that unit tests of several layers start from (an unknown
/// header with odd spacing, a Via with rport).
#[cfg(test)]
pub(crate) const TEST_INVITE: &str = "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.5:5071;branch=z9hG4bK-1;rport\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@x>;tag=a1\r\n\
        To: <sip:bob@127.0.0.1>\r\n\
        Call-ID: c1@x\r\n\
        CSeq: 7 INVITE\r\n\
        X-Unknown:   keep  me \r\n\
        Content-Length: 0\r\n\r\n";
