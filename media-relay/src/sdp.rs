//! SDP (RFC 4566) parsing and the media-anchoring rewrite.
//!
//! This module owns the relay's view of a session description: [`Sdp::parse`]
//! extracts what anchoring needs (addresses, ports, RTCP, codecs) and
//! [`rewrite`] points the media at the relay while keeping every other byte.
//!
//! Both are line based and lenient about line endings: CRLF, bare LF and a
//! final line without any ending are all accepted, and each line keeps its
//! own ending in the rewritten output. Blank lines are tolerated anywhere,
//! and trailing blanks (or stray CRs) are ignored when a line is interpreted.
//! Lines the relay does not interpret may even hold non-UTF-8 bytes; they
//! are copied through untouched. Neither function panics on any input.
//!
//! Strictness: lines that decide where media goes (`m=`, `c=`, `a=rtcp`)
//! must be well formed, or the whole body is rejected with the line number.
//! Informational lines (`o=` address, `a=rtpmap`) that do not parse are
//! ignored rather than rejected. Host names are not accepted in `c=` or
//! `a=rtcp` (a relay needs addresses), but are fine in `o=`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

/// Why an SDP body was rejected. Line numbers count from 1 and include
/// blank lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body has no `v=` line at all (empty or only blank lines).
    #[error("empty SDP body")]
    Empty,
    /// A line the relay must interpret is not valid UTF-8.
    #[error("SDP line {line}: not valid UTF-8")]
    NotUtf8 {
        /// 1-based line number.
        line: usize,
    },
    /// A line is malformed.
    #[error("SDP line {line}: {what}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        what: &'static str,
    },
}

/// The parts of a session description the relay cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    /// Address in the `o=` line, if it is an IP literal (it may be a host name).
    pub origin_addr: Option<IpAddr>,
    /// Session-level `c=` address (first one, before any `m=`).
    pub session_addr: Option<IpAddr>,
    /// The media sections, in order.
    pub media: Vec<Media>,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Media type: `"audio"`, `"video"`, `"image"`, `"application"`, ...
    pub kind: String,
    /// Transport port; 0 means the stream is disabled or rejected.
    pub port: u16,
    /// Transport protocol: `"RTP/AVP"`, `"RTP/SAVP"`, `"UDP/TLS/RTP/SAVPF"`, ...
    pub proto: String,
    /// The format list as given (payload type numbers for RTP).
    pub formats: Vec<String>,
    /// Media-level `c=` address (first one in the section).
    pub addr: Option<IpAddr>,
    /// `a=rtcp:PORT [IN IP4|IP6 addr]` (RFC 3605), first one in the section.
    pub rtcp: Option<(u16, Option<IpAddr>)>,
    /// `a=rtcp-mux` is present (RFC 5761).
    pub rtcp_mux: bool,
    /// `(payload type, encoding name, clock rate)` from each well-formed `a=rtpmap`.
    pub rtpmap: Vec<(u8, String, u32)>,
    /// Media-level `sendrecv`/`sendonly`/`recvonly`/`inactive` (last one
    /// wins); session-level direction attributes are not folded in.
    pub direction: Option<String>,
}

/// What to put in the rewritten SDP. See [`rewrite`].
#[derive(Debug, Clone, Copy)]
pub struct Rewrite<'a> {
    /// Relay address to advertise. Written as `IN IP4 a` or `IN IP6 a`
    /// according to its family, whatever family the original used.
    pub addr: IpAddr,
    /// Per `m=` section, in order: `Some(relay RTP port)` to anchor the
    /// section, or `None` to leave it untouched. Sections beyond the end of
    /// the slice are left untouched, and so is any section whose original
    /// port is 0, whatever is given here.
    pub ports: &'a [Option<u16>],
    /// Per `m=` section: relay RTCP port for `a=rtcp` (with rtcp-mux the
    /// caller passes the RTP port). If an anchored section has an `a=rtcp`
    /// line but no RTCP port is given here, the line is removed, so the peer
    /// falls back to RTP port + 1 on the relay instead of its old peer.
    pub rtcp_ports: &'a [Option<u16>],
    /// Also rewrite the address in the `o=` line (rtpengine `replace=origin`).
    pub replace_origin: bool,
    /// Drop ICE attributes (rtpengine `ICE=remove`): `candidate`,
    /// `remote-candidates`, `end-of-candidates`, `ice-ufrag`, `ice-pwd`,
    /// `ice-options`, `ice-lite`, `ice-mismatch` and `ice-pacing`, at
    /// session level and in anchored sections.
    pub remove_ice: bool,
}

impl Sdp {
    /// Parses an SDP body. See the module docs for what is strict and what
    /// is lenient. A body with no `m=` section is not an error.
    ///
    /// # Errors
    ///
    /// [`SdpError::Empty`] if there is no `v=` line, [`SdpError::BadLine`]
    /// for a malformed line (or one before `v=`), [`SdpError::NotUtf8`] for
    /// an `m=`, `c=` or `a=rtcp` line that is not UTF-8.
    pub fn parse(text: &[u8]) -> Result<Sdp, SdpError> {
        let mut sdp = Sdp { origin_addr: None, session_addr: None, media: Vec::new() };
        let mut seen_version = false;
        for line in lines(text) {
            let item = classify(&line)?;
            if matches!(item, Item::Blank) {
                continue;
            }
            if !seen_version {
                if !matches!(item, Item::Version) {
                    return Err(bad(&line, "SDP must start with a v= line"));
                }
                seen_version = true;
                continue;
            }
            match (item, sdp.media.last_mut()) {
                (Item::Origin(origin), None) => {
                    sdp.origin_addr = origin.and_then(|o| o.addr);
                }
                (Item::Connection(addr), None) => {
                    sdp.session_addr.get_or_insert(addr);
                }
                (Item::Connection(addr), Some(m)) => {
                    m.addr.get_or_insert(addr);
                }
                (Item::Media(ml), _) => sdp.media.push(Media {
                    kind: ml.kind.to_owned(),
                    port: ml.port,
                    proto: ml.proto.to_owned(),
                    formats: ml.formats.iter().map(|f| (*f).to_owned()).collect(),
                    addr: None,
                    rtcp: None,
                    rtcp_mux: false,
                    rtpmap: Vec::new(),
                    direction: None,
                }),
                (Item::Attr(attr), Some(m)) => match attr {
                    Attr::Rtcp { port, addr } => {
                        m.rtcp.get_or_insert((port, addr));
                    }
                    Attr::RtcpMux => m.rtcp_mux = true,
                    Attr::Rtpmap(pt, name, rate) => m.rtpmap.push((pt, name.to_owned(), rate)),
                    Attr::Direction(d) => m.direction = Some(d.to_owned()),
                    Attr::Ice | Attr::Other => {}
                },
                _ => {}
            }
        }
        if seen_version {
            Ok(sdp)
        } else {
            Err(SdpError::Empty)
        }
    }
}

impl Media {
    /// Where the peer wants this section's media: the media-level `c=`
    /// address, else the session-level one.
    #[must_use]
    pub fn remote_addr(&self, sdp: &Sdp) -> Option<IpAddr> {
        self.addr.or(sdp.session_addr)
    }

    /// RTP clock rate of payload type `pt`: from this section's `a=rtpmap`,
    /// else from the RFC 3551 static payload type table.
    #[must_use]
    pub fn clock_rate(&self, pt: u8) -> Option<u32> {
        self.rtpmap
            .iter()
            .find(|(p, _, _)| *p == pt)
            .map(|(_, _, rate)| *rate)
            .or_else(|| static_payload(pt).map(|(_, rate)| rate))
    }

    /// `"NAME/rate"` for each format, in format order, e.g.
    /// `["PCMU/8000", "telephone-event/8000"]`. Names come from `a=rtpmap`,
    /// else from the RFC 3551 static table. Formats that are not payload
    /// type numbers, or dynamic types without an `a=rtpmap`, are skipped.
    #[must_use]
    pub fn codec_names(&self) -> Vec<String> {
        let mut joined = String::new();
        self.write_codec_names(&mut joined);
        joined.split(' ').filter(|c| !c.is_empty()).map(str::to_owned).collect()
    }

    /// The names of [`codec_names`](Self::codec_names), each followed by
    /// one space, appended to `out` without any other allocation. Names
    /// never contain a space (`a=rtpmap` fields are split on blanks).
    pub fn write_codec_names(&self, out: &mut String) {
        for pt in self.formats.iter().filter_map(|f| digits::<u8>(f)) {
            let _ = match self.rtpmap.iter().find(|(p, _, _)| *p == pt) {
                Some((_, name, rate)) => write!(out, "{name}/{rate} "),
                None => match static_payload(pt) {
                    Some((name, rate)) => write!(out, "{name}/{rate} "),
                    None => continue,
                },
            };
        }
    }
}

/// RFC 3551 static payload types: (encoding name, clock rate).
fn static_payload(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        5 => ("DVI4", 8000),
        6 => ("DVI4", 16000),
        7 => ("LPC", 8000),
        8 => ("PCMA", 8000),
        // RFC 3551 4.5.2: the RTP clock is 8000 although G.722 samples at 16 kHz.
        9 => ("G722", 8000),
        10 | 11 => ("L16", 44100),
        12 => ("QCELP", 8000),
        13 => ("CN", 8000),
        14 => ("MPA", 90000),
        15 => ("G728", 8000),
        16 => ("DVI4", 11025),
        17 => ("DVI4", 22050),
        18 => ("G729", 8000),
        25 => ("CelB", 90000),
        26 => ("JPEG", 90000),
        28 => ("nv", 90000),
        31 => ("H261", 90000),
        32 => ("MPV", 90000),
        33 => ("MP2T", 90000),
        34 => ("H263", 90000),
        _ => return None,
    })
}

/// Rewrites `text` so the anchored media flows through the relay.
///
/// Per line, everything not listed here is copied byte for byte with its
/// own line ending (`v=`, `s=`, `t=`, `b=`, unknown lines, other `a=`):
/// - Anchored section (`rw.ports[i]` is `Some` and the original port is
///   nonzero): the `m=` port field is replaced (a `/<count>` suffix and the
///   rest of the line are kept); each `c=` gets `IN IP4|IP6 <rw.addr>`;
///   `a=rtcp` gets the RTCP port and, if it had one, the relay address, or
///   is dropped when no RTCP port is given.
/// - Session-level `c=` gets the relay address when at least one section
///   is anchored. An untouched section with a nonzero port that relied on
///   it gets a copy of the original session `c=` line (after its `m=` and
///   `i=` lines), so it keeps pointing where it did.
/// - `c=` addresses of `0.0.0.0` / `::` (RFC 2543-style hold) are kept, so
///   a hold still reads as a hold.
/// - Multicast suffixes (`/ttl`, `/count`) on rewritten `c=` lines are
///   dropped: the relay address is unicast.
/// - `o=` gets the relay address when `rw.replace_origin` is set (if the
///   line has all six fields).
/// - ICE attributes are dropped when `rw.remove_ice` is set (see
///   [`Rewrite::remove_ice`]).
///
/// Whether the body ends with a line ending is preserved. The input is
/// validated with [`Sdp::parse`] first.
///
/// # Errors
///
/// Exactly those of [`Sdp::parse`]; nothing is written on error.
pub fn rewrite(text: &[u8], rw: &Rewrite<'_>) -> Result<Vec<u8>, SdpError> {
    let sdp = Sdp::parse(text)?;
    rewrite_parsed(text, &sdp, rw)
}

/// [`rewrite`] of a body already parsed: `sdp` must be `Sdp::parse(text)`
/// (the relay parses once to learn the media, then rewrites).
///
/// # Errors
///
/// Those of [`Sdp::parse`] (none when `sdp` came from `text`).
pub fn rewrite_parsed(text: &[u8], sdp: &Sdp, rw: &Rewrite<'_>) -> Result<Vec<u8>, SdpError> {
    let anchored: Vec<Option<u16>> = sdp
        .media
        .iter()
        .zip(rw.ports.iter().copied().chain(std::iter::repeat(None)))
        .map(|(m, port)| port.filter(|_| m.port != 0))
        .collect();
    let mut state = Rewriter {
        rw,
        sdp,
        rewrite_session_c: anchored.iter().any(Option::is_some)
            && sdp.session_addr.is_some_and(|a| !a.is_unspecified()),
        anchored,
        conn: match rw.addr {
            IpAddr::V4(a) => format!("IN IP4 {a}"),
            IpAddr::V6(a) => format!("IN IP6 {a}"),
        },
        section: None,
        session_c_line: None,
        pending_c: None,
    };

    let mut out = Vec::with_capacity(text.len() + 64);
    let mut last_ending: &[u8] = b"\r\n";
    for line in lines(text) {
        let item = classify(&line)?;
        if let Some((c_line, ending)) = state.pending_c {
            if !line.content.starts_with(b"i=") {
                out.extend_from_slice(c_line);
                out.extend_from_slice(ending);
                state.pending_c = None;
            }
        }
        if !line.ending.is_empty() {
            last_ending = line.ending;
        }
        match state.line(&line, item, &mut out) {
            Verdict::Keep => {
                out.extend_from_slice(line.content);
                out.extend_from_slice(line.ending);
            }
            Verdict::Written => out.extend_from_slice(line.ending),
            Verdict::Drop => {}
        }
    }

    if let Some((c_line, _)) = state.pending_c {
        // The section ran to the end of the body, whose last line may lack
        // an ending; the trim below restores that.
        if !ends_with_eol(&out) {
            out.extend_from_slice(last_ending);
        }
        out.extend_from_slice(c_line);
        out.extend_from_slice(last_ending);
    }
    // Keep the input's "ends with a newline or not": a dropped or inserted
    // final line must not change it. (Blank lines that only separated a
    // dropped final line go with it.)
    if !ends_with_eol(text) {
        while out.last() == Some(&b'\n') {
            out.pop();
            if out.last() == Some(&b'\r') {
                out.pop();
            }
        }
    }
    Ok(out)
}

/// What [`Rewriter::line`] did with a line.
enum Verdict {
    /// Copy the line and its ending unchanged.
    Keep,
    /// The new content was written; append the original ending.
    Written,
    /// Leave the line out, ending included.
    Drop,
}

/// State of one [`rewrite`] pass.
struct Rewriter<'t, 'r> {
    rw: &'r Rewrite<'r>,
    sdp: &'r Sdp,
    /// Per section: the relay port if the section is anchored.
    anchored: Vec<Option<u16>>,
    rewrite_session_c: bool,
    /// `IN IP4 <addr>` or `IN IP6 <addr>` for the relay.
    conn: String,
    /// Index of the current `m=` section; `None` at session level.
    section: Option<usize>,
    /// First session-level `c=` line, as it was.
    session_c_line: Option<&'t [u8]>,
    /// Session `c=` line to insert into the current (untouched) section,
    /// with the line ending to put after it.
    pending_c: Option<(&'t [u8], &'t [u8])>,
}

impl<'t> Rewriter<'t, '_> {
    fn line(&mut self, line: &Line<'t>, item: Item<'t>, out: &mut Vec<u8>) -> Verdict {
        let anchored_port = self.section.and_then(|i| self.anchored.get(i).copied().flatten());
        match item {
            Item::Origin(Some(Origin { span, .. })) if self.rw.replace_origin => {
                // The span covers "<nettype> <addrtype> <address>".
                let value = line.value_str().unwrap_or_default();
                out.extend_from_slice(b"o=");
                out.extend_from_slice(value.get(..span.start).unwrap_or_default().as_bytes());
                out.extend_from_slice(self.conn.as_bytes());
                out.extend_from_slice(value.get(span.end..).unwrap_or_default().as_bytes());
                Verdict::Written
            }
            Item::Connection(addr) if !addr.is_unspecified() => {
                let rewrite_it = if self.section.is_none() {
                    self.session_c_line.get_or_insert(line.content);
                    self.rewrite_session_c
                } else {
                    anchored_port.is_some()
                };
                if !rewrite_it {
                    return Verdict::Keep;
                }
                out.extend_from_slice(b"c=");
                out.extend_from_slice(self.conn.as_bytes());
                Verdict::Written
            }
            Item::Media(ml) => self.media_line(line, &ml, out),
            Item::Attr(Attr::Rtcp { addr, .. }) if anchored_port.is_some() => {
                let idx = self.section.unwrap_or_default();
                let Some(rtcp_port) = self.rw.rtcp_ports.get(idx).copied().flatten() else {
                    // A stale peer port must not survive.
                    return Verdict::Drop;
                };
                let _ = write!(ByteSink(out), "a=rtcp:{rtcp_port}");
                if addr.is_some() {
                    out.push(b' ');
                    out.extend_from_slice(self.conn.as_bytes());
                }
                Verdict::Written
            }
            Item::Attr(Attr::Ice) if self.rw.remove_ice && (self.section.is_none() || anchored_port.is_some()) => {
                Verdict::Drop
            }
            _ => Verdict::Keep,
        }
    }

    fn media_line(&mut self, line: &Line<'t>, ml: &MediaLine<'_>, out: &mut Vec<u8>) -> Verdict {
        let idx = self.section.map_or(0, |i| i + 1);
        self.section = Some(idx);
        if let Some(port) = self.anchored.get(idx).copied().flatten() {
            let value = line.value_str().unwrap_or_default();
            out.extend_from_slice(b"m=");
            out.extend_from_slice(value.get(..ml.port_span.start).unwrap_or_default().as_bytes());
            let _ = write!(ByteSink(out), "{port}");
            out.extend_from_slice(value.get(ml.port_span.end..).unwrap_or_default().as_bytes());
            return Verdict::Written;
        }
        let relied_on_session = self.sdp.media.get(idx).is_some_and(|m| m.addr.is_none());
        if ml.port != 0 && self.rewrite_session_c && relied_on_session {
            self.pending_c = self.session_c_line.map(|c_line| (c_line, line.ending));
        }
        Verdict::Keep
    }
}

fn ends_with_eol(b: &[u8]) -> bool {
    b.last() == Some(&b'\n')
}

/// Space, tab, or a CR that is not part of a CRLF ending.
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r')
}

/// `fmt::Write` into a byte buffer, to format numbers without allocating.
struct ByteSink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteSink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// One line of the body, split from its ending.
struct Line<'a> {
    /// 1-based line number.
    no: usize,
    /// The line without its ending.
    content: &'a [u8],
    /// `"\r\n"`, `"\n"`, or empty for a last line without an ending.
    ending: &'a [u8],
}

impl<'a> Line<'a> {
    /// The part after `x=`.
    fn value(&self) -> &'a [u8] {
        self.content.get(2..).unwrap_or_default()
    }

    fn value_str(&self) -> Result<&'a str, SdpError> {
        std::str::from_utf8(self.value()).map_err(|_| SdpError::NotUtf8 { line: self.no })
    }

    /// The value without trailing blanks or stray CRs, for interpretation.
    /// It is a prefix of [`Line::value`], so offsets into it hold for both.
    fn field(&self) -> &'a [u8] {
        let value = self.value();
        let end = value.iter().rposition(|b| !is_blank(*b)).map_or(0, |i| i + 1);
        value.get(..end).unwrap_or_default()
    }

    fn field_str(&self) -> Result<&'a str, SdpError> {
        std::str::from_utf8(self.field()).map_err(|_| SdpError::NotUtf8 { line: self.no })
    }
}

fn lines(text: &[u8]) -> impl Iterator<Item = Line<'_>> {
    text.split_inclusive(|&b| b == b'\n').enumerate().map(|(i, raw)| {
        let ending_len = if raw.ends_with(b"\r\n") { 2 } else { usize::from(raw.ends_with(b"\n")) };
        let (content, ending) = raw.split_at(raw.len().saturating_sub(ending_len));
        Line { no: i + 1, content, ending }
    })
}

fn bad(line: &Line<'_>, what: &'static str) -> SdpError {
    SdpError::BadLine { line: line.no, what }
}

/// What a line means to the relay.
enum Item<'a> {
    Blank,
    Version,
    /// `None` when the line does not have the six fields.
    Origin(Option<Origin>),
    Connection(IpAddr),
    Media(MediaLine<'a>),
    Attr(Attr<'a>),
    Other,
}

struct Origin {
    addr: Option<IpAddr>,
    /// Byte range of `<nettype> <addrtype> <address>` in the line's value.
    span: Range<usize>,
}

struct MediaLine<'a> {
    kind: &'a str,
    port: u16,
    /// Byte range of the port digits (without `/<count>`) in the line's value.
    port_span: Range<usize>,
    proto: &'a str,
    formats: Vec<&'a str>,
}

enum Attr<'a> {
    Rtcp { port: u16, addr: Option<IpAddr> },
    RtcpMux,
    Rtpmap(u8, &'a str, u32),
    Direction(&'a str),
    Ice,
    Other,
}

fn classify<'a>(line: &Line<'a>) -> Result<Item<'a>, SdpError> {
    let content = line.content;
    if content.iter().all(|b| is_blank(*b)) {
        return Ok(Item::Blank);
    }
    let kind = match content {
        [k, b'=', ..] if k.is_ascii_alphabetic() => *k,
        _ => return Err(bad(line, "expected a <type>=<value> line")),
    };
    match kind {
        b'v' => Ok(Item::Version),
        b'o' => Ok(Item::Origin(std::str::from_utf8(line.field()).ok().and_then(parse_origin))),
        b'c' => parse_connection(line.field_str()?).map(Item::Connection).map_err(|what| bad(line, what)),
        b'm' => parse_media(line.field_str()?).map(Item::Media).map_err(|what| bad(line, what)),
        b'a' => parse_attr(line).map(Item::Attr),
        _ => Ok(Item::Other),
    }
}

/// Whitespace-separated tokens with their byte offsets.
fn tokens(s: &str) -> impl Iterator<Item = (usize, &str)> {
    s.split([' ', '\t'])
        .scan(0usize, |offset, tok| {
            let start = *offset;
            *offset += tok.len() + 1;
            Some((start, tok))
        })
        .filter(|(_, tok)| !tok.is_empty())
}

/// Parses a non-empty all-ASCII-digit string (no sign, no spaces).
fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `<nettype> <addrtype> <address>` as used by `c=`, `o=` and `a=rtcp`.
/// Multicast suffixes (`/ttl`, `/count`) are ignored.
fn parse_net_addr(nettype: &str, addrtype: &str, addr: &str) -> Result<IpAddr, &'static str> {
    if !nettype.eq_ignore_ascii_case("IN") {
        return Err("network type is not IN");
    }
    let host = addr.split('/').next().unwrap_or(addr);
    if addrtype.eq_ignore_ascii_case("IP4") {
        host.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| "address is not a valid IPv4 address")
    } else if addrtype.eq_ignore_ascii_case("IP6") {
        host.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| "address is not a valid IPv6 address")
    } else {
        Err("address type is not IP4 or IP6")
    }
}

fn parse_origin(value: &str) -> Option<Origin> {
    let toks: Vec<(usize, &str)> = tokens(value).collect();
    let [_, _, _, (net_at, net), (_, atype), (addr_at, addr)] = toks.as_slice() else {
        return None;
    };
    Some(Origin { addr: parse_net_addr(net, atype, addr).ok(), span: *net_at..addr_at + addr.len() })
}

fn parse_connection(value: &str) -> Result<IpAddr, &'static str> {
    let mut toks = tokens(value).map(|(_, t)| t);
    match (toks.next(), toks.next(), toks.next()) {
        (Some(net), Some(atype), Some(addr)) => parse_net_addr(net, atype, addr),
        _ => Err("c= needs <nettype> <addrtype> <address>"),
    }
}

fn parse_media(value: &str) -> Result<MediaLine<'_>, &'static str> {
    let mut toks = tokens(value);
    let (Some((_, kind)), Some((port_at, port_field)), Some((_, proto))) = (toks.next(), toks.next(), toks.next())
    else {
        return Err("m= needs <media> <port> <proto> <fmt>...");
    };
    let (port_str, count) = match port_field.split_once('/') {
        Some((p, c)) => (p, Some(c)),
        None => (port_field, None),
    };
    let port = digits::<u16>(port_str).ok_or("m= port is not a number 0-65535")?;
    if count.is_some_and(|c| digits::<u16>(c).is_none()) {
        return Err("m= port count is not a number");
    }
    Ok(MediaLine {
        kind,
        port,
        port_span: port_at..port_at + port_str.len(),
        proto,
        formats: toks.map(|(_, t)| t).collect(),
    })
}

fn parse_attr<'a>(line: &Line<'a>) -> Result<Attr<'a>, SdpError> {
    let value = line.field();
    let (name, rest) = match value.iter().position(|b| *b == b':') {
        Some(i) => (value.get(..i).unwrap_or_default(), value.get(i + 1..).unwrap_or_default()),
        None => (value, &[][..]),
    };
    Ok(match name {
        b"rtcp" => {
            let rest = std::str::from_utf8(rest).map_err(|_| SdpError::NotUtf8 { line: line.no })?;
            let mut toks = tokens(rest).map(|(_, t)| t);
            let port =
                toks.next().and_then(digits::<u16>).ok_or_else(|| bad(line, "a=rtcp port is not a number 0-65535"))?;
            let addr = match (toks.next(), toks.next(), toks.next()) {
                (None, _, _) => None,
                (Some(net), Some(atype), Some(addr)) => {
                    Some(parse_net_addr(net, atype, addr).map_err(|what| bad(line, what))?)
                }
                _ => return Err(bad(line, "a=rtcp address needs <nettype> <addrtype> <address>")),
            };
            Attr::Rtcp { port, addr }
        }
        b"rtcp-mux" => Attr::RtcpMux,
        b"rtpmap" => std::str::from_utf8(rest)
            .ok()
            .and_then(parse_rtpmap)
            .map_or(Attr::Other, |(pt, name, rate)| Attr::Rtpmap(pt, name, rate)),
        b"sendrecv" | b"sendonly" | b"recvonly" | b"inactive" => {
            // ASCII by the match above.
            Attr::Direction(std::str::from_utf8(name).unwrap_or_default())
        }
        b"candidate" | b"remote-candidates" | b"end-of-candidates" | b"ice-ufrag" | b"ice-pwd" | b"ice-options"
        | b"ice-lite" | b"ice-mismatch" | b"ice-pacing" => Attr::Ice,
        _ => Attr::Other,
    })
}

/// `<pt> <encoding name>/<clock rate>[/<params>]`; `None` if malformed.
fn parse_rtpmap(rest: &str) -> Option<(u8, &str, u32)> {
    let mut toks = tokens(rest).map(|(_, t)| t);
    let pt = digits::<u8>(toks.next()?).filter(|pt| *pt <= 127)?;
    let mut enc = toks.next()?.split('/');
    let name = enc.next().filter(|n| !n.is_empty())?;
    let rate = digits::<u32>(enc.next()?)?;
    Some((pt, name, rate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V4_AUDIO: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn rw<'a>(addr: &str, ports: &'a [Option<u16>], rtcp: &'a [Option<u16>]) -> Rewrite<'a> {
        Rewrite { addr: ip(addr), ports, rtcp_ports: rtcp, replace_origin: false, remove_ice: false }
    }

    fn run(text: &str, rw: &Rewrite<'_>) -> String {
        let out = rewrite(text.as_bytes(), rw).expect("rewrite");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn parse_ipv4_audio() {
        let sdp = Sdp::parse(V4_AUDIO.as_bytes()).expect("parse");
        assert_eq!(sdp.origin_addr, Some(ip("192.0.2.10")));
        assert_eq!(sdp.session_addr, Some(ip("192.0.2.10")));
        assert_eq!(sdp.media.len(), 1);
        let m = &sdp.media[0];
        assert_eq!(m.kind, "audio");
        assert_eq!(m.port, 49170);
        assert_eq!(m.proto, "RTP/AVP");
        assert_eq!(m.formats, ["0", "8", "101"]);
        assert_eq!(m.addr, None);
        assert_eq!(m.remote_addr(&sdp), Some(ip("192.0.2.10")));
        assert_eq!(m.direction.as_deref(), Some("sendrecv"));
        assert_eq!(m.rtcp, None);
        assert!(!m.rtcp_mux);
        assert_eq!(m.codec_names(), ["PCMU/8000", "PCMA/8000", "telephone-event/8000"]);
    }

    #[test]
    fn rewrite_ipv4_audio() {
        let out = run(V4_AUDIO, &rw("203.0.113.1", &[Some(30000)], &[Some(30001)]));
        let expected =
            V4_AUDIO.replace("c=IN IP4 192.0.2.10", "c=IN IP4 203.0.113.1").replace("m=audio 49170", "m=audio 30000");
        assert_eq!(out, expected);

        let mut r = rw("203.0.113.1", &[Some(30000)], &[]);
        r.replace_origin = true;
        let out = run(V4_AUDIO, &r);
        assert!(out.contains("o=alice 2890844526 2890844526 IN IP4 203.0.113.1\r\n"));
    }

    #[test]
    fn ipv6_in_and_out() {
        let text = "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n\
m=audio 5004 RTP/AVP 0\r\na=rtcp:5005 IN IP6 2001:db8::1\r\n";
        let sdp = Sdp::parse(text.as_bytes()).expect("parse");
        assert_eq!(sdp.session_addr, Some(ip("2001:db8::1")));
        assert_eq!(sdp.media[0].rtcp, Some((5005, Some(ip("2001:db8::1")))));
        let out = run(text, &rw("2001:db8::99", &[Some(40000)], &[Some(40001)]));
        assert_eq!(
            out,
            "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::99\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\na=rtcp:40001 IN IP6 2001:db8::99\r\n"
        );
    }

    #[test]
    fn ipv4_rewritten_to_ipv6_relay() {
        let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n\
m=audio 5004 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\na=rtcp:5005 IN IP4 192.0.2.1\r\n";
        let mut r = rw("2001:db8::7", &[Some(6000)], &[Some(6001)]);
        r.replace_origin = true;
        let out = run(text, &r);
        assert_eq!(
            out,
            "v=0\r\no=- 1 1 IN IP6 2001:db8::7\r\ns=-\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\nc=IN IP6 2001:db8::7\r\na=rtcp:6001 IN IP6 2001:db8::7\r\n"
        );
        let back = Sdp::parse(out.as_bytes()).expect("reparse");
        assert_eq!(back.media[0].addr, Some(ip("2001:db8::7")));
        assert_eq!(back.origin_addr, Some(ip("2001:db8::7")));
    }

    #[test]
    fn audio_and_video_each_get_their_port() {
        let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 5004 RTP/AVP 0\r\nm=video 5006/2 RTP/AVP 96 31\r\nc=IN IP4 192.0.2.2/127\r\n\
a=rtpmap:96 H264/90000\r\n";
        let sdp = Sdp::parse(text.as_bytes()).expect("parse");
        assert_eq!(sdp.media.len(), 2);
        assert_eq!(sdp.media[1].port, 5006);
        assert_eq!(sdp.media[1].addr, Some(ip("192.0.2.2")));
        assert_eq!(sdp.media[1].codec_names(), ["H264/90000", "H261/90000"]);
        let out = run(text, &rw("198.51.100.1", &[Some(7000), Some(7002)], &[]));
        assert_eq!(
            out,
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n\
m=audio 7000 RTP/AVP 0\r\nm=video 7002/2 RTP/AVP 96 31\r\nc=IN IP4 198.51.100.1\r\n\
a=rtpmap:96 H264/90000\r\n"
        );
    }

    #[test]
    fn untouched_sections() {
        let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 5004 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\nm=image 6000 udptl t38\r\ni=fax\r\n\
a=T38FaxVersion:0\r\nm=text 7000 RTP/AVP 98\r\nc=IN IP4 192.0.2.9\r\n";
        // Port-0 video stays 0 although a port is given; image and text are
        // beyond what is anchored / explicitly None.
        let out = run(text, &rw("198.51.100.1", &[Some(8000), Some(8002), None], &[]));
        assert_eq!(
            out,
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n\
m=audio 8000 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\nm=image 6000 udptl t38\r\ni=fax\r\n\
c=IN IP4 192.0.2.1\r\na=T38FaxVersion:0\r\nm=text 7000 RTP/AVP 98\r\nc=IN IP4 192.0.2.9\r\n"
        );
        let back = Sdp::parse(out.as_bytes()).expect("reparse");
        assert_eq!(back.media[2].remote_addr(&back), Some(ip("192.0.2.1")));

        // Nothing anchored: the body is unchanged.
        assert_eq!(run(text, &rw("198.51.100.1", &[], &[])), text);
        assert_eq!(run(text, &rw("198.51.100.1", &[None, Some(1)], &[])), text);
    }

    #[test]
    fn inserted_connection_at_end_keeps_missing_newline() {
        let text = "v=0\nc=IN IP4 192.0.2.1\nm=audio 5004 RTP/AVP 0\nm=audio 5006 RTP/AVP 0";
        let out = run(text, &rw("198.51.100.1", &[Some(1000)], &[]));
        assert_eq!(
            out,
            "v=0\nc=IN IP4 198.51.100.1\nm=audio 1000 RTP/AVP 0\nm=audio 5006 RTP/AVP 0\nc=IN IP4 192.0.2.1"
        );
    }

    #[test]
    fn hold_address_is_kept() {
        let text = "v=0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n";
        let out = run(text, &rw("198.51.100.1", &[Some(1000)], &[]));
        assert_eq!(out, text.replace("5004", "1000"));
    }

    #[test]
    fn rtcp_with_and_without_address() {
        let text = "v=0\nc=IN IP4 192.0.2.1\nm=audio 5004 RTP/AVP 0\na=rtcp:5005\n\
m=audio 5008 RTP/AVP 0\na=rtcp:5009 IN IP4 192.0.2.1\n";
        let sdp = Sdp::parse(text.as_bytes()).expect("parse");
        assert_eq!(sdp.media[0].rtcp, Some((5005, None)));
        assert_eq!(sdp.media[1].rtcp, Some((5009, Some(ip("192.0.2.1")))));
        let out = run(text, &rw("198.51.100.1", &[Some(1000), Some(2000)], &[Some(1001), Some(2001)]));
        assert_eq!(
            out,
            "v=0\nc=IN IP4 198.51.100.1\nm=audio 1000 RTP/AVP 0\na=rtcp:1001\n\
m=audio 2000 RTP/AVP 0\na=rtcp:2001 IN IP4 198.51.100.1\n"
        );
        // No RTCP port given: the stale a=rtcp is dropped.
        let out = run(text, &rw("198.51.100.1", &[Some(1000), Some(2000)], &[None]));
        assert_eq!(
            out,
            "v=0\nc=IN IP4 198.51.100.1\nm=audio 1000 RTP/AVP 0\n\
m=audio 2000 RTP/AVP 0\n"
        );
    }

    #[test]
    fn rtcp_mux() {
        let text = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 5004 RTP/SAVPF 111\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtcp:5004\r\na=rtcp-mux\r\n";
        let sdp = Sdp::parse(text.as_bytes()).expect("parse");
        assert!(sdp.media[0].rtcp_mux);
        assert_eq!(sdp.media[0].clock_rate(111), Some(48000));
        let out = run(text, &rw("198.51.100.1", &[Some(3000)], &[Some(3000)]));
        assert_eq!(
            out,
            "v=0\r\nc=IN IP4 198.51.100.1\r\nm=audio 3000 RTP/SAVPF 111\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtcp:3000\r\na=rtcp-mux\r\n"
        );
    }

    const ICE: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\na=ice-lite\r\nt=0 0\r\n\
m=audio 5004 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 192.0.2.1\r\na=ice-ufrag:abcd\r\n\
a=ice-pwd:0123456789abcdef01234567\r\na=ice-options:trickle\r\n\
a=candidate:1 1 UDP 2130706431 192.0.2.1 5004 typ host\r\n\
a=candidate:2 1 UDP 1694498815 203.0.113.9 5004 typ srflx raddr 192.0.2.1 rport 5004\r\n\
a=end-of-candidates\r\na=remote-candidates:1 192.0.2.50 6000\r\na=setup:actpass\r\n";

    #[test]
    fn ice_removed_or_kept() {
        let mut r = rw("198.51.100.1", &[Some(1000)], &[]);
        r.remove_ice = true;
        assert_eq!(
            run(ICE, &r),
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n\
m=audio 1000 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 198.51.100.1\r\na=setup:actpass\r\n"
        );
        r.remove_ice = false;
        let kept = run(ICE, &r);
        assert_eq!(
            kept,
            ICE.replace("m=audio 5004", "m=audio 1000").replace("c=IN IP4 192.0.2.1", "c=IN IP4 198.51.100.1")
        );
        assert_eq!(kept.matches("a=candidate:").count(), 2);
    }

    #[test]
    fn ice_removal_keeps_missing_final_newline() {
        let text = "v=0\nc=IN IP4 192.0.2.1\nm=audio 5004 RTP/AVP 0\na=candidate:1 1 UDP 1 192.0.2.1 5004 typ host";
        let mut r = rw("198.51.100.1", &[Some(1000)], &[]);
        r.remove_ice = true;
        assert_eq!(run(text, &r), "v=0\nc=IN IP4 198.51.100.1\nm=audio 1000 RTP/AVP 0");
    }

    #[test]
    fn unknown_lines_and_lf_only_preserved() {
        let text = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=Caf\u{e9}  session \nx=unknown thing\n\
b=AS:64\nt=0 0\nm=audio   5004   RTP/AVP 0\nc=IN IP4 192.0.2.1\nk=prompt\n\
a=x-custom:  spaced  value\na=rtpmap:bogus\n\n";
        let out = run(text, &rw("198.51.100.1", &[Some(1000)], &[]));
        assert_eq!(out, text.replace("5004", "1000").replace("c=IN IP4 192.0.2.1", "c=IN IP4 198.51.100.1"));
        assert!(!out.contains('\r'));
        // Non-UTF-8 bytes in lines the relay does not interpret are copied.
        let mut raw = b"v=0\r\ns=\xff\xfe\r\nc=IN IP4 192.0.2.1\r\nm=audio 5004 RTP/AVP 0\r\n".to_vec();
        let out = rewrite(&raw, &rw("198.51.100.1", &[Some(1000)], &[])).expect("rewrite");
        raw.truncate(9);
        assert!(out.starts_with(&raw));
    }

    #[test]
    fn crlf_and_mixed_endings_preserved() {
        let text = "v=0\r\ns=-\nc=IN IP4 192.0.2.1\r\nt=0 0\nm=audio 5004 RTP/AVP 0\r\na=sendonly";
        let out = run(text, &rw("198.51.100.1", &[Some(1000)], &[]));
        assert_eq!(out, "v=0\r\ns=-\nc=IN IP4 198.51.100.1\r\nt=0 0\nm=audio 1000 RTP/AVP 0\r\na=sendonly");
        let sdp = Sdp::parse(text.as_bytes()).expect("parse");
        assert_eq!(sdp.media[0].direction.as_deref(), Some("sendonly"));
    }

    #[test]
    fn odd_endings_found_by_proptest() {
        // A dropped final line takes the blank lines that preceded it.
        let mut r = rw("198.51.100.1", &[], &[]);
        r.remove_ice = true;
        let text = "v=0\r\n\r\na=candidate:1 1 UDP 1 192.0.2.1 5004 typ host";
        assert_eq!(run(text, &r), "v=0");
        // A lone CR is not a line ending; a line inserted at the end goes
        // after a real one.
        let text = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 1 RTP/AVP 0\r\nm=video 2 RTP/AVP 96\rv=0\r";
        let out = run(text, &rw("198.51.100.1", &[Some(9)], &[]));
        assert_eq!(
            out,
            "v=0\r\nc=IN IP4 198.51.100.1\r\nm=audio 9 RTP/AVP 0\r\nm=video 2 RTP/AVP 96\rv=0\r\r\nc=IN IP4 192.0.2.1"
        );
        let sdp = Sdp::parse(out.as_bytes()).expect("reparse");
        assert_eq!(sdp.media[1].remote_addr(&sdp), Some(ip("192.0.2.1")));
    }

    #[test]
    fn trailing_blanks_are_ignored() {
        let text = "v=0\r\nc=IN IP4 192.0.2.1 \r\nm=audio 5004 RTP/AVP 0 8  \r\na=sendonly\t\r\r\n\
a=rtcp:5005 \r\n";
        let sdp = Sdp::parse(text.as_bytes()).expect("parse");
        let m = &sdp.media[0];
        assert_eq!(sdp.session_addr, Some(ip("192.0.2.1")));
        assert_eq!(m.formats, ["0", "8"]);
        assert_eq!(m.direction.as_deref(), Some("sendonly"));
        assert_eq!(m.rtcp, Some((5005, None)));
        assert_eq!(
            run(text, &rw("198.51.100.1", &[Some(1000)], &[Some(1001)])),
            "v=0\r\nc=IN IP4 198.51.100.1\r\nm=audio 1000 RTP/AVP 0 8  \r\na=sendonly\t\r\r\n\
a=rtcp:1001\r\n"
        );
    }

    #[test]
    fn clock_rates() {
        let text = "v=0\nm=audio 5004 RTP/AVP 0 9 18 96 13\na=rtpmap:96 AMR-WB/16000\n\
a=rtpmap:0 PCMU/8000\nm=video 5006 RTP/AVP 26 34 31 32 97\n";
        let sdp = Sdp::parse(text.as_bytes()).expect("parse");
        let (a, v) = (&sdp.media[0], &sdp.media[1]);
        assert_eq!(a.clock_rate(0), Some(8000));
        assert_eq!(a.clock_rate(9), Some(8000));
        assert_eq!(a.clock_rate(18), Some(8000));
        assert_eq!(a.clock_rate(13), Some(8000));
        assert_eq!(a.clock_rate(96), Some(16000));
        assert_eq!(a.clock_rate(97), None);
        assert_eq!(v.clock_rate(26), Some(90000));
        assert_eq!(v.clock_rate(34), Some(90000));
        assert_eq!(v.clock_rate(96), None);
        assert_eq!(a.codec_names(), ["PCMU/8000", "G722/8000", "G729/8000", "AMR-WB/16000", "CN/8000"]);
        assert_eq!(v.codec_names(), ["JPEG/90000", "H263/90000", "H261/90000", "MPV/90000"]);
        assert_eq!(a.remote_addr(&sdp), None);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        const IP4: &str = "address is not a valid IPv4 address";
        const PORT: &str = "m= port is not a number 0-65535";
        let table: &[(&[u8], usize, &str)] = &[
            (b"hello world", 1, "expected a <type>=<value> line"),
            (b"v=0\n a=x\n", 2, "expected a <type>=<value> line"),
            (b"s=-\r\nv=0\r\n", 1, "SDP must start with a v= line"),
            (b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n", 2, PORT),
            (b"v=0\nm=audio -1 RTP/AVP 0\n", 2, PORT),
            (b"v=0\nm=audio +5 RTP/AVP 0\n", 2, PORT),
            (b"v=0\nm=audio 5004/x RTP/AVP 0\n", 2, "m= port count is not a number"),
            (b"v=0\nm=audio\n", 2, "m= needs <media> <port> <proto> <fmt>..."),
            (b"v=0\n\nc=IN IP4 300.1.1.1\n", 3, IP4),
            (b"v=0\nc=IN IP4 2001:db8::1\n", 2, IP4),
            (b"v=0\nc=IN IP4 host.example.com\n", 2, IP4),
            (b"v=0\nc=IN IP6 192.0.2.1\n", 2, "address is not a valid IPv6 address"),
            (b"v=0\nc=IN IPX 1.2.3.4\n", 2, "address type is not IP4 or IP6"),
            (b"v=0\nc=ATM NSAP 47\n", 2, "network type is not IN"),
            (b"v=0\nc=IN IP4\n", 2, "c= needs <nettype> <addrtype> <address>"),
            (b"v=0\nm=audio 1 RTP/AVP 0\na=rtcp:x\n", 3, "a=rtcp port is not a number 0-65535"),
            (b"v=0\nm=audio 1 RTP/AVP 0\na=rtcp:5 IN IP4\n", 3, "a=rtcp address needs <nettype> <addrtype> <address>"),
            (b"v=0\nm=audio 1 RTP/AVP 0\na=rtcp:5 IN IP4 ::1\n", 3, IP4),
        ];
        for &(input, line, what) in table {
            let want = Err(SdpError::BadLine { line, what });
            assert_eq!(Sdp::parse(input), want, "{:?}", String::from_utf8_lossy(input));
            // rewrite reports the same errors.
            let r = rw("192.0.2.1", &[Some(1)], &[]);
            assert_eq!(rewrite(input, &r).map(|_| ()), want.map(|_: Sdp| ()));
        }
        assert_eq!(Sdp::parse(b""), Err(SdpError::Empty));
        assert_eq!(Sdp::parse(b"\r\n\n"), Err(SdpError::Empty));
        assert_eq!(Sdp::parse(b"v=0\nc=IN IP4 \xff\n"), Err(SdpError::NotUtf8 { line: 2 }));
        assert_eq!(
            SdpError::BadLine { line: 4, what: PORT }.to_string(),
            "SDP line 4: m= port is not a number 0-65535"
        );
    }

    #[test]
    fn lenient_informational_lines() {
        let text = b"v=0\no=- 1 1 IN IP4 host.example.com\no=short\nm=audio 0 RTP/AVP\n\
a=rtpmap:300 X/8000\na=rtpmap:96\na=rtpmap:97 Y/abc\n";
        let sdp = Sdp::parse(text).expect("parse");
        assert_eq!(sdp.origin_addr, None);
        assert!(sdp.media[0].formats.is_empty());
        assert!(sdp.media[0].rtpmap.is_empty());

        let text = "v=0\no=- 1 1 IN IP4 host.example.com\nc=IN IP4 192.0.2.1\nm=audio 1 RTP/AVP 0\n";
        let mut r = rw("192.0.2.9", &[Some(2)], &[]);
        r.replace_origin = true;
        assert_eq!(run(text, &r), "v=0\no=- 1 1 IN IP4 192.0.2.9\nc=IN IP4 192.0.2.9\nm=audio 2 RTP/AVP 0\n");
    }

    fn sdp_line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("v=0".to_owned()),
            Just("o=- 1 1 IN IP4 192.0.2.1".to_owned()),
            Just("c=IN IP4 192.0.2.1".to_owned()),
            Just("c=IN IP6 ::".to_owned()),
            Just("c=IN IP4 0.0.0.0".to_owned()),
            Just("m=audio 5004 RTP/AVP 0 8".to_owned()),
            Just("m=video 0 RTP/AVP 31".to_owned()),
            Just("m=video 6000/2 RTP/AVP 96".to_owned()),
            Just("i=info".to_owned()),
            Just("a=rtcp:5005".to_owned()),
            Just("a=rtcp:5005 IN IP6 ::1".to_owned()),
            Just("a=rtcp-mux".to_owned()),
            Just("a=candidate:1 1 UDP 1 192.0.2.1 5004 typ host".to_owned()),
            Just("a=ice-ufrag:x".to_owned()),
            Just("a=rtpmap:96 H264/90000".to_owned()),
            Just(String::new()),
            "[a-z]=[ -~]{0,20}",
            "[ -~]{0,12}",
        ]
    }

    fn sdp_text() -> impl Strategy<Value = (Vec<u8>, bool)> {
        (
            proptest::collection::vec((sdp_line(), prop_oneof![Just("\r\n"), Just("\n"), Just("\r"), Just("")]), 0..16),
            any::<bool>(),
        )
            .prop_map(|(lines, v_first)| {
                let mut out = if v_first { b"v=0\r\n".to_vec() } else { Vec::new() };
                for (l, e) in lines {
                    out.extend_from_slice(l.as_bytes());
                    out.extend_from_slice(e.as_bytes());
                }
                (out, v_first)
            })
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(
            input in proptest::collection::vec(any::<u8>(), 0..512),
            ports in proptest::collection::vec(proptest::option::of(any::<u16>()), 0..4),
            flags in any::<(bool, bool, bool)>(),
        ) {
            let _ = Sdp::parse(&input);
            let addr = if flags.2 { ip("::1") } else { ip("127.0.0.1") };
            let r = Rewrite { addr, ports: &ports, rtcp_ports: &ports,
                              replace_origin: flags.0, remove_ice: flags.1 };
            let _ = rewrite(&input, &r);
        }

        #[test]
        fn sdp_like_input(
            (input, _) in sdp_text(),
            ports in proptest::collection::vec(proptest::option::of(1u16..), 0..4),
            flags in any::<(bool, bool, bool)>(),
        ) {
            let parsed = Sdp::parse(&input);
            // Nothing anchored and nothing requested: output equals input.
            let none = Rewrite { addr: ip("192.0.2.200"), ports: &[], rtcp_ports: &[],
                                 replace_origin: false, remove_ice: false };
            let same = rewrite(&input, &none);
            prop_assert_eq!(parsed.is_ok(), same.is_ok());
            if let Ok(same) = same {
                prop_assert_eq!(same, input.clone());
            }

            let addr = if flags.2 { ip("2001:db8::1") } else { ip("198.51.100.1") };
            let r = Rewrite { addr, ports: &ports, rtcp_ports: &ports,
                              replace_origin: flags.0, remove_ice: flags.1 };
            if let (Ok(before), Ok(out)) = (parsed, rewrite(&input, &r)) {
                prop_assert_eq!(ends_with_eol(&out), ends_with_eol(&input));
                let after = Sdp::parse(&out).expect("rewritten SDP parses");
                prop_assert_eq!(after.media.len(), before.media.len());
                for (i, (b, a)) in before.media.iter().zip(&after.media).enumerate() {
                    let want = match ports.get(i).copied().flatten() {
                        Some(p) if b.port != 0 => p,
                        _ => b.port,
                    };
                    prop_assert_eq!(a.port, want);
                    prop_assert_eq!(&a.formats, &b.formats);
                    if b.port != 0 && ports.get(i).copied().flatten().is_none() {
                        prop_assert_eq!(a.remote_addr(&after), b.remote_addr(&before));
                    }
                }
            }
        }
    }
}
