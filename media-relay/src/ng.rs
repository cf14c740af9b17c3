//! The rtpengine-compatible "ng" control protocol: UDP datagrams of the form
//! `cookie SP bencoded-dict`, as sent by Kamailio's and OpenSIPS's rtpengine
//! modules. A thin codec over [`MediaControl`].
//!
//! Retransmissions: a command whose (source, cookie) was seen in the last
//! `ng_cache_age` gets the cached reply and is not executed again. The cache
//! is bounded in entries and in age.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bencode::{self, Value, ValueRef};
use crate::control::{CallReport, MediaControl, RelayError, SdpOptions, SdpRequest, StreamReport};

/// The commands we implement, in metrics order.
pub const COMMANDS: [&str; 7] = ["ping", "offer", "answer", "delete", "query", "list", "statistics"];

/// ng server counters, read by the metrics exporter.
#[derive(Debug, Default)]
pub struct NgCounters {
    /// Commands executed, by [`COMMANDS`] index.
    pub commands: [AtomicU64; 7],
    /// Commands answered with `result: error`.
    pub errors: AtomicU64,
    /// Retransmissions answered from the cache.
    pub cache_hits: AtomicU64,
    /// Datagrams dropped because not even a cookie could be read.
    pub dropped: AtomicU64,
}

/// Bounded reply cache keyed by (source, cookie).
///
/// An entry's key is the source and the cookie in one byte string, shared
/// by the index and the age queue, so a stored reply costs two exact-size
/// allocations (key and reply); a lookup builds its key on the stack.
pub struct ReplyCache {
    map: HashMap<Rc<[u8]>, Box<[u8]>>,
    order: VecDeque<(Instant, Rc<[u8]>)>,
    max: usize,
    age: Duration,
    /// Scratch for building lookup keys.
    key: Vec<u8>,
}

impl ReplyCache {
    /// A cache of at most `max` replies, each kept for `age`.
    #[must_use]
    pub fn new(max: usize, age: Duration) -> Self {
        Self { map: HashMap::new(), order: VecDeque::new(), max: max.max(1), age, key: Vec::with_capacity(320) }
    }

    /// `src` and `cookie` as one key, in `self.key`.
    fn make_key(&mut self, src: SocketAddr, cookie: &[u8]) {
        self.key.clear();
        match src {
            SocketAddr::V4(a) => self.key.extend_from_slice(&a.ip().octets()),
            SocketAddr::V6(a) => self.key.extend_from_slice(&a.ip().octets()),
        }
        self.key.extend_from_slice(&src.port().to_be_bytes());
        self.key.extend_from_slice(cookie);
    }

    /// The cached reply, if still fresh.
    pub fn get(&mut self, src: SocketAddr, cookie: &[u8], now: Instant) -> Option<&[u8]> {
        self.expire(now);
        self.make_key(src, cookie);
        self.map.get(self.key.as_slice()).map(AsRef::as_ref)
    }

    /// Stores a reply, evicting the oldest when full.
    pub fn put(&mut self, src: SocketAddr, cookie: &[u8], reply: &[u8], now: Instant) {
        self.expire(now);
        self.make_key(src, cookie);
        if let Some(old) = self.map.get_mut(self.key.as_slice()) {
            *old = reply.into();
            return;
        }
        while self.map.len() >= self.max {
            let Some((_, k)) = self.order.pop_front() else { break };
            self.map.remove(&k);
        }
        let key: Rc<[u8]> = Rc::from(self.key.as_slice());
        self.map.insert(Rc::clone(&key), reply.into());
        self.order.push_back((now, key));
    }

    /// Number of cached replies.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.duration_since(*t) < self.age {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.map.remove(&k);
            }
        }
    }
}

/// Splits a datagram into cookie and body. `None` when there is no cookie.
#[must_use]
pub fn split_cookie(datagram: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = datagram.iter().position(|&b| b == b' ')?;
    let (cookie, rest) = datagram.split_at(sp);
    if cookie.is_empty() || cookie.len() > 256 || cookie.iter().any(|b| !b.is_ascii_graphic()) {
        return None;
    }
    Some((cookie, rest.get(1..).unwrap_or_default()))
}

fn error_reply(reason: &str) -> Value {
    let mut v = Value::dict();
    v.insert("result", Value::str("error")).insert("error-reason", Value::str(reason));
    v
}

fn ok() -> Value {
    let mut v = Value::dict();
    v.insert("result", Value::str("ok"));
    v
}

fn get_str<'a>(d: &ValueRef<'a>, key: &'static str) -> Result<&'a str, RelayError> {
    d.get(key).and_then(ValueRef::as_str).ok_or(RelayError::MissingKey(key))
}

/// Whether a list of strings (or one space-separated string) holds `word`,
/// ignoring ASCII case.
fn list_has(v: Option<&ValueRef<'_>>, word: &str) -> bool {
    match v {
        Some(ValueRef::List(items)) => items.iter().filter_map(ValueRef::as_str).any(|s| s.eq_ignore_ascii_case(word)),
        Some(ValueRef::Bytes(b)) => String::from_utf8_lossy(b).split_whitespace().any(|s| s.eq_ignore_ascii_case(word)),
        _ => false,
    }
}

fn sdp_options(d: &ValueRef<'_>) -> SdpOptions {
    let ice = d.get("ICE").and_then(ValueRef::as_str);
    let dir: Vec<String> = match d.get("direction") {
        Some(ValueRef::List(items)) => items.iter().filter_map(ValueRef::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    SdpOptions {
        replace_origin: list_has(d.get("replace"), "origin"),
        // ICE is removed unless the command asks to pass it through.
        ice_remove: !ice
            .is_some_and(|i| ["pass", "passthrough", "pass-through"].iter().any(|p| i.eq_ignore_ascii_case(p))),
        direction: [dir.first().cloned(), dir.get(1).cloned()],
    }
}

/// A command's reply: a dictionary, or a call report, which is encoded
/// straight from the report (it is the largest reply, sent on every delete).
enum Reply {
    Dict(Value),
    /// `{result: ok, sdp: ...}`, the reply to an offer or an answer.
    Sdp(Vec<u8>),
    Report(CallReport),
}

impl Reply {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Dict(v) => v.encode(out),
            Reply::Sdp(sdp) => {
                // As `sdp_value` encodes, without building it.
                out.push(b'd');
                bencode::write_bytes(out, b"result");
                bencode::write_bytes(out, b"ok");
                bencode::write_bytes(out, b"sdp");
                bencode::write_bytes(out, sdp);
                out.push(b'e');
            }
            Reply::Report(r) => encode_report(r, out),
        }
    }
}

fn sdp_value(sdp: Vec<u8>) -> Value {
    let mut v = ok();
    v.insert("sdp", Value::Bytes(sdp));
    v
}

/// Executes one decoded command. Returns the reply dictionary.
pub fn dispatch(ctl: &dyn MediaControl, cmd: &Value, counters: &NgCounters) -> Value {
    match execute(ctl, &ValueRef::from(cmd), counters) {
        Reply::Dict(v) => v,
        Reply::Sdp(sdp) => sdp_value(sdp),
        Reply::Report(r) => report_value(&r),
    }
}

fn execute(ctl: &dyn MediaControl, cmd: &ValueRef<'_>, counters: &NgCounters) -> Reply {
    let Some(name) = cmd.get("command").and_then(ValueRef::as_str) else {
        counters.errors.fetch_add(1, Relaxed);
        return Reply::Dict(error_reply("Missing key `command`"));
    };
    let idx = COMMANDS.iter().position(|c| c.eq_ignore_ascii_case(name));
    let Some(idx) = idx else {
        counters.errors.fetch_add(1, Relaxed);
        return Reply::Dict(error_reply("Unrecognized command"));
    };
    counters.commands[idx].fetch_add(1, Relaxed);
    let r = match COMMANDS[idx] {
        "ping" => {
            let mut v = Value::dict();
            v.insert("result", Value::str("pong"));
            Ok(Reply::Dict(v))
        }
        "offer" | "answer" => sdp_command(ctl, cmd, COMMANDS[idx] == "answer").map(Reply::Sdp),
        "delete" => get_str(cmd, "call-id").and_then(|id| {
            let from = cmd.get("from-tag").and_then(ValueRef::as_str);
            ctl.delete(id, from).map(Reply::Report)
        }),
        "query" => get_str(cmd, "call-id").and_then(|id| ctl.query(id).map(Reply::Report)),
        "list" => {
            let limit = cmd.get("limit").and_then(ValueRef::as_int).and_then(|l| usize::try_from(l).ok()).unwrap_or(32);
            let calls: Vec<Value> = ctl.list(limit).into_iter().map(Value::from).collect();
            let mut v = ok();
            v.insert("calls", Value::List(calls));
            Ok(Reply::Dict(v))
        }
        _ => Ok(Reply::Dict(statistics_value(ctl))),
    };
    r.unwrap_or_else(|e| {
        counters.errors.fetch_add(1, Relaxed);
        Reply::Dict(error_reply(&e.to_string()))
    })
}

fn sdp_command(ctl: &dyn MediaControl, cmd: &ValueRef<'_>, answer: bool) -> Result<Vec<u8>, RelayError> {
    let call_id = get_str(cmd, "call-id")?;
    let from_tag = get_str(cmd, "from-tag")?;
    let to_tag = cmd.get("to-tag").and_then(ValueRef::as_str).filter(|t| !t.is_empty());
    let sdp = cmd.get("sdp").and_then(ValueRef::as_bytes).ok_or(RelayError::MissingKey("sdp"))?;
    let req = SdpRequest { call_id, from_tag, to_tag, sdp, opts: sdp_options(cmd) };
    if answer {
        ctl.answer(&req)
    } else {
        ctl.offer(&req)
    }
}

fn endpoint_value(a: SocketAddr) -> Value {
    let mut v = Value::dict();
    v.insert("family", Value::str(if a.is_ipv4() { "IPv4" } else { "IPv6" }))
        .insert("address", Value::from(a.ip().to_string()))
        .insert("port", Value::from(i64::from(a.port())));
    v
}

fn stream_value(s: &StreamReport) -> Value {
    let st = &s.stats.stats;
    let mut stats = Value::dict();
    stats
        .insert("packets", Value::from(st.packets))
        .insert("bytes", Value::from(st.bytes))
        .insert("errors", Value::from(s.stats.foreign_drops))
        .insert("rtp-packets", Value::from(st.rtp_packets))
        .insert("expected", Value::from(st.expected))
        .insert("lost", Value::Int(st.lost))
        .insert("duplicates", Value::from(st.duplicates))
        .insert("reordered", Value::from(st.reordered))
        .insert("jitter", Value::from(u64::from(st.jitter)))
        .insert("jitter-us", Value::from(u64::from(st.jitter_us)))
        .insert("last-packet-age-ms", Value::from(age_ms(st.last_packet)));
    let mut v = Value::dict();
    v.insert("local port", Value::from(i64::from(s.local_port)));
    if let Some(e) = s.endpoint {
        v.insert("endpoint", endpoint_value(e));
    }
    if let Some(e) = s.advertised {
        v.insert("advertised endpoint", endpoint_value(e));
    }
    v.insert("latched", Value::from(i64::from(s.latched))).insert("stats", stats);
    v
}

fn age_ms(last: crate::Nanos) -> i64 {
    if last == 0 {
        return -1;
    }
    let age = crate::sys::monotonic_ns().saturating_sub(last) / 1_000_000;
    i64::try_from(age).unwrap_or(i64::MAX)
}

/// The rtpengine-shaped report of a call (`query`, `delete`).
#[must_use]
pub fn report_value(r: &CallReport) -> Value {
    let mut tags = Value::dict();
    for leg in &r.legs {
        let medias: Vec<Value> = leg
            .medias
            .iter()
            .map(|m| {
                let mut mv = Value::dict();
                mv.insert("index", Value::from(m.index as u64))
                    .insert("type", Value::from(m.kind.as_str()))
                    .insert("protocol", Value::from(m.protocol.as_str()))
                    .insert("codecs", Value::List(m.codecs.iter().map(|c| Value::from(c.as_str())).collect()))
                    .insert("streams", Value::List(m.streams.iter().map(stream_value).collect()));
                mv
            })
            .collect();
        let mut lv = Value::dict();
        lv.insert("tag", Value::from(leg.tag.as_str())).insert("medias", Value::List(medias));
        // A leg whose tag is not known yet is reported under an empty key.
        tags.insert(&leg.tag, lv);
    }
    let totals_of = |rtcp: bool| {
        let (p, b, e) = r.totals(rtcp);
        let mut t = Value::dict();
        t.insert("packets", Value::from(p)).insert("bytes", Value::from(b)).insert("errors", Value::from(e));
        t
    };
    let mut totals = Value::dict();
    totals.insert("RTP", totals_of(false)).insert("RTCP", totals_of(true));
    let mut v = ok();
    v.insert("created", Value::from(r.created))
        .insert("last signal", Value::from(r.last_signal))
        .insert("tags", tags)
        .insert("totals", totals);
    v
}

/// Appends `ip`'s text as a bencoded string, as `Value::from(ip.to_string())`
/// encodes: an IPv4 address without an allocation.
fn write_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    let std::net::IpAddr::V4(v4) = ip else {
        bencode::write_bytes(out, ip.to_string().as_bytes());
        return;
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let digits = [o / 100, o / 10 % 10, o % 10];
        let skip = if o >= 100 {
            0
        } else if o >= 10 {
            1
        } else {
            2
        };
        for d in &digits[skip..] {
            text[len] = b'0' + d;
            len += 1;
        }
    }
    bencode::write_bytes(out, &text[..len]);
}

/// Writes `report_value(r)` to `out` byte for byte, without building it.
fn encode_report(r: &CallReport, out: &mut Vec<u8>) {
    use bencode::{write_bytes as key, write_int as int, write_uint as uint};
    let endpoint = |out: &mut Vec<u8>, a: SocketAddr| {
        out.push(b'd');
        key(out, b"family");
        key(out, if a.is_ipv4() { b"IPv4" } else { b"IPv6" });
        key(out, b"address");
        write_ip(out, a.ip());
        key(out, b"port");
        int(out, i64::from(a.port()));
        out.push(b'e');
    };
    let stream = |out: &mut Vec<u8>, s: &StreamReport| {
        let st = &s.stats.stats;
        out.push(b'd');
        key(out, b"local port");
        int(out, i64::from(s.local_port));
        if let Some(e) = s.endpoint {
            key(out, b"endpoint");
            endpoint(out, e);
        }
        if let Some(e) = s.advertised {
            key(out, b"advertised endpoint");
            endpoint(out, e);
        }
        key(out, b"latched");
        int(out, i64::from(s.latched));
        key(out, b"stats");
        out.push(b'd');
        for (k, v) in [
            (&b"packets"[..], st.packets),
            (b"bytes", st.bytes),
            (b"errors", s.stats.foreign_drops),
            (b"rtp-packets", st.rtp_packets),
            (b"expected", st.expected),
        ] {
            key(out, k);
            uint(out, v);
        }
        key(out, b"lost");
        int(out, st.lost);
        for (k, v) in [
            (&b"duplicates"[..], st.duplicates),
            (b"reordered", st.reordered),
            (b"jitter", u64::from(st.jitter)),
            (b"jitter-us", u64::from(st.jitter_us)),
        ] {
            key(out, k);
            uint(out, v);
        }
        key(out, b"last-packet-age-ms");
        int(out, age_ms(st.last_packet));
        out.push(b'e');
        out.push(b'e');
    };
    out.push(b'd');
    key(out, b"result");
    key(out, b"ok");
    key(out, b"created");
    uint(out, r.created);
    key(out, b"last signal");
    uint(out, r.last_signal);
    key(out, b"tags");
    out.push(b'd');
    for (i, leg) in r.legs.iter().enumerate() {
        // As `Value::insert` does: a tag appears once, where it first
        // appears, with the last leg of that tag.
        if r.legs[..i].iter().any(|l| l.tag == leg.tag) {
            continue;
        }
        let leg = r.legs[i..].iter().rev().find(|l| l.tag == leg.tag).unwrap_or(leg);
        key(out, leg.tag.as_bytes());
        out.push(b'd');
        key(out, b"tag");
        key(out, leg.tag.as_bytes());
        key(out, b"medias");
        out.push(b'l');
        for m in &leg.medias {
            out.push(b'd');
            key(out, b"index");
            uint(out, m.index as u64);
            key(out, b"type");
            key(out, m.kind.as_bytes());
            key(out, b"protocol");
            key(out, m.protocol.as_bytes());
            key(out, b"codecs");
            out.push(b'l');
            for c in &m.codecs {
                key(out, c.as_bytes());
            }
            out.push(b'e');
            key(out, b"streams");
            out.push(b'l');
            for s in &m.streams {
                stream(out, s);
            }
            out.push(b'e');
            out.push(b'e');
        }
        out.push(b'e');
        out.push(b'e');
    }
    out.push(b'e');
    key(out, b"totals");
    out.push(b'd');
    for (name, rtcp) in [(&b"RTP"[..], false), (b"RTCP", true)] {
        let (p, b, e) = r.totals(rtcp);
        key(out, name);
        out.push(b'd');
        key(out, b"packets");
        uint(out, p);
        key(out, b"bytes");
        uint(out, b);
        key(out, b"errors");
        uint(out, e);
        out.push(b'e');
    }
    out.push(b'e');
    out.push(b'e');
}

fn statistics_value(ctl: &dyn MediaControl) -> Value {
    let t = ctl.totals();
    let mut cur = Value::dict();
    cur.insert("sessionsown", Value::from(t.sessions as u64))
        .insert("sessionsforeign", Value::Int(0))
        .insert("sessionstotal", Value::from(t.sessions as u64))
        .insert("transcodedmedia", Value::Int(0))
        .insert("portsinuse", Value::from((t.port_pairs_in_use * 2) as u64))
        .insert("portstotal", Value::from((t.port_pairs_total * 2) as u64));
    let mut tot = Value::dict();
    tot.insert("managedsessions", Value::from(t.created))
        .insert("deletedsessions", Value::from(t.deleted))
        .insert("timeoutsessions", Value::from(t.timed_out))
        .insert("endedwithmediaboth", Value::from(t.ended_both))
        .insert("endedwithmediaoneway", Value::from(t.ended_oneway))
        .insert("endedwithoutmedia", Value::from(t.ended_none));
    let mut s = Value::dict();
    s.insert("currentstatistics", cur).insert("totalstatistics", tot);
    let mut v = ok();
    v.insert("statistics", s);
    v
}

/// Handles one datagram: returns the reply datagram, or `None` when it is
/// dropped (no cookie).
pub fn handle_datagram(
    ctl: &dyn MediaControl,
    cache: &mut ReplyCache,
    counters: &NgCounters,
    src: SocketAddr,
    datagram: &[u8],
    now: Instant,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    handle_into(ctl, cache, counters, src, datagram, now, &mut out).then_some(out)
}

/// [`handle_datagram`] writing the reply into `out` (cleared first), so a
/// server reuses one buffer. False when the datagram is dropped.
fn handle_into(
    ctl: &dyn MediaControl,
    cache: &mut ReplyCache,
    counters: &NgCounters,
    src: SocketAddr,
    datagram: &[u8],
    now: Instant,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    let Some((cookie, body)) = split_cookie(datagram) else {
        counters.dropped.fetch_add(1, Relaxed);
        tracing::debug!(%src, len = datagram.len(), "ng datagram without a cookie dropped");
        return false;
    };
    if let Some(cached) = cache.get(src, cookie, now) {
        counters.cache_hits.fetch_add(1, Relaxed);
        out.extend_from_slice(cached);
        return true;
    }
    let reply = match bencode::decode_ref(body) {
        Ok(cmd @ ValueRef::Dict(_)) => execute(ctl, &cmd, counters),
        Ok(_) => {
            counters.errors.fetch_add(1, Relaxed);
            Reply::Dict(error_reply("Request is not a dictionary"))
        }
        Err(e) => {
            counters.errors.fetch_add(1, Relaxed);
            Reply::Dict(error_reply(&format!("Failed to decode bencode: {e}")))
        }
    };
    out.extend_from_slice(cookie);
    out.push(b' ');
    reply.encode(out);
    cache.put(src, cookie, out, now);
    true
}

/// Commands read (with one `recvmmsg`) and handled before their replies
/// are sent (with one `sendmmsg`) and the queued worker changes handed over.
const BATCH: usize = crate::sys::udp::MANY;

/// Serves the ng protocol on `socket` until `shutdown` is set.
///
/// Datagrams are read in batches of what is queued (at most 16, one
/// `recvmmsg`) and answered in order. After each batch its replies are sent
/// back to back with one `sendmmsg`, so a client waiting for several
/// replies is woken once rather than once per reply, and then the queued
/// worker changes are flushed with one wakeup (the sockets are bound and
/// steered before any reply; a worker woken first would only delay the
/// replies on a shared core).
///
/// # Errors
/// When the socket cannot be polled.
pub fn serve(
    socket: UdpSocket,
    ctl: &dyn MediaControl,
    counters: &Arc<NgCounters>,
    cache_size: usize,
    cache_age: Duration,
    shutdown: &AtomicBool,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    socket.set_nonblocking(true)?;
    let mut socket = mio::net::UdpSocket::from_std(socket);
    let fd = socket.as_raw_fd();
    let mut poll = mio::Poll::new()?;
    poll.registry().register(&mut socket, mio::Token(0), mio::Interest::READABLE)?;
    let mut events = mio::Events::with_capacity(8);
    let mut cache = ReplyCache::new(cache_size, cache_age);
    // A UDP datagram is at most 64 KiB; pages are touched only as
    // datagrams that long arrive.
    let mut bufs: Vec<Box<[u8]>> = (0..BATCH).map(|_| vec![0u8; 65536].into_boxed_slice()).collect();
    let mut meta = [(0usize, None::<SocketAddr>); BATCH];
    // Reused for every batch: no allocation per reply beyond the cached copy.
    let mut replies: Vec<(SocketAddr, Vec<u8>)> = (0..BATCH).map(|_| (buf_addr(), Vec::new())).collect();
    while !shutdown.load(Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(200))) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        // Edge-triggered: read until nothing is queued. A short batch means
        // the queue was empty when it was read, and a datagram queued since
        // raises a new event, so it needs no extra read to find out (the
        // poll timeout reads again in any case). Under a steady stream of
        // commands the socket is never drained: the batch bound hands the
        // queued changes to the workers every few commands too, so their
        // rings never fill.
        loop {
            let n = match crate::sys::udp::recv_many(fd, &mut bufs, &mut meta) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "ng socket receive failed");
                    0
                }
            };
            if n == 0 {
                break;
            }
            let mut n_replies = 0;
            for (buf, &(len, src)) in bufs.iter().zip(&meta).take(n) {
                let (Some(src), Some(datagram)) = (src, buf.get(..len)) else { continue };
                let Some((to, reply)) = replies.get_mut(n_replies) else { break };
                if handle_into(ctl, &mut cache, counters, src, datagram, Instant::now(), reply) {
                    *to = src;
                    n_replies += 1;
                }
            }
            let mut out = [(buf_addr(), &[][..]); BATCH];
            for (o, (to, reply)) in out.iter_mut().zip(&replies).take(n_replies) {
                *o = (*to, reply.as_slice());
            }
            crate::sys::udp::send_many(fd, &out[..n_replies], |i, e| {
                tracing::warn!(error = %e, src = %out[i].0, "ng reply could not be sent");
            });
            ctl.flush();
            if n < BATCH {
                break;
            }
        }
    }
    Ok(())
}

/// A placeholder address for the reply slots.
fn buf_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_split() {
        assert_eq!(split_cookie(b"abc d3:fooi1ee"), Some((&b"abc"[..], &b"d3:fooi1ee"[..])));
        assert_eq!(split_cookie(b"nocookie"), None);
        assert_eq!(split_cookie(b" d3:fooi1ee"), None);
        assert_eq!(split_cookie(b"\x01\x02 x"), None);
    }

    fn sample_report(tags: [&str; 2]) -> CallReport {
        use crate::control::{LegReport, MediaReport};
        use crate::stats::StatsSnapshot;
        use crate::stream::DirSnapshot;
        let stream = |port: u16, endpoint: Option<&str>, latched: bool, packets: u64| StreamReport {
            local_port: port,
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            advertised: Some("[2001:db8::1]:4000".parse().unwrap()),
            latched,
            stats: DirSnapshot {
                stats: StatsSnapshot {
                    packets,
                    bytes: packets * 172,
                    lost: -3,
                    jitter: 7,
                    jitter_us: 875,
                    duplicates: u64::MAX,
                    ..StatsSnapshot::default()
                },
                foreign_drops: 2,
                rtcp: crate::rtcp::RtcpReport::default(),
            },
        };
        let leg = |tag: &str, base: u16| LegReport {
            tag: tag.to_owned(),
            medias: vec![MediaReport {
                index: 1,
                kind: "audio".into(),
                protocol: "RTP/AVP".into(),
                codecs: vec!["PCMU/8000".into(), "telephone-event/8000".into()],
                streams: [stream(base, Some("192.0.2.1:4000"), true, 10), stream(base + 1, None, false, 0)],
                quality: crate::control::QualityReport::default(),
            }],
        };
        CallReport {
            call_id: "c".into(),
            created: 1_700_000_000,
            last_signal: 1_700_000_001,
            legs: vec![leg(tags[0], 30000), leg(tags[1], 30002)],
        }
    }

    #[test]
    fn report_encodes_as_its_value_does() {
        for tags in [["a", "b"], ["a", ""], ["", ""], ["b", "b"]] {
            let r = sample_report(tags);
            let mut direct = Vec::new();
            encode_report(&r, &mut direct);
            assert_eq!(direct, report_value(&r).to_bytes(), "tags {tags:?}");
        }
    }

    #[test]
    fn ip_text_is_the_display_text() {
        for ip in ["0.0.0.0", "9.10.99.100", "255.255.255.255", "192.0.2.1", "2001:db8::1"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(out, Value::from(ip.to_string()).to_bytes(), "{ip}");
        }
    }

    #[test]
    fn sdp_reply_encodes_as_its_value() {
        let sdp = b"v=0\r\nm=audio 30000 RTP/AVP 0\r\n".to_vec();
        let mut direct = Vec::new();
        Reply::Sdp(sdp.clone()).encode(&mut direct);
        assert_eq!(direct, sdp_value(sdp).to_bytes());
    }

    #[test]
    fn cache_is_bounded_in_size_and_age() {
        let t0 = Instant::now();
        let src: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut c = ReplyCache::new(2, Duration::from_secs(30));
        c.put(src, b"a", b"A", t0);
        c.put(src, b"b", b"B", t0);
        c.put(src, b"c", b"C", t0);
        assert_eq!(c.len(), 2);
        assert!(c.get(src, b"a", t0).is_none(), "oldest evicted");
        assert_eq!(c.get(src, b"c", t0), Some(&b"C"[..]));
        let other: SocketAddr = "127.0.0.1:10".parse().unwrap();
        assert!(c.get(other, b"c", t0).is_none(), "keyed by source too");
        assert!(c.get(src, b"c", t0 + Duration::from_secs(31)).is_none(), "expired");
        assert!(c.is_empty());
    }
}
