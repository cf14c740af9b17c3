//! A blocking ng client, and call setup (offer + answer) on a relay, with
//! both legs on one interface or each on its own (ng `direction`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use media_relay::bencode::{decode, Value};

static COOKIE: AtomicU64 = AtomicU64::new(0);

/// Talks ng to one relay.
pub struct NgClient {
    sock: UdpSocket,
    relay: SocketAddr,
    prefix: String,
    buf: Vec<u8>,
}

/// One call set up on the relay: where each leg must send.
#[derive(Debug, Clone, Copy)]
pub struct CallPorts {
    /// Relay port the caller (A) sends to.
    pub to_a: u16,
    /// Relay port the callee (B) sends to.
    pub to_b: u16,
}

/// One call set up on the relay: the relay address each leg must send to.
#[derive(Debug, Clone, Copy)]
pub struct CallAddrs {
    /// Where the caller (A) sends.
    pub to_a: SocketAddrV4,
    /// Where the callee (B) sends.
    pub to_b: SocketAddrV4,
}

/// Where a call's two legs are: each side's media address and, on a relay
/// with several interfaces, the interface each side is anchored on.
#[derive(Debug, Clone, Copy)]
pub struct Legs<'a> {
    /// The caller's (A) and the callee's (B) address, written in their SDP.
    pub addr: [Ipv4Addr; 2],
    /// The relay interfaces of A and B (the offer's ng `direction`);
    /// `None`: the relay's first interface for both.
    pub direction: Option<[&'a str; 2]>,
}

impl Legs<'static> {
    /// Both legs on 127.0.0.1, on the relay's first interface.
    pub const LOOPBACK: Self = Self { addr: [Ipv4Addr::LOCALHOST; 2], direction: None };
}

impl NgClient {
    /// A client for `relay`.
    ///
    /// # Errors
    /// Socket errors.
    pub fn new(relay: SocketAddr) -> std::io::Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        let prefix = format!("b{}x{}", std::process::id(), crate::now_ns() % 1_000_000_007);
        Ok(Self { sock, relay, prefix, buf: vec![0; 65536] })
    }

    fn cookie(&self) -> String {
        format!("{}_{}", self.prefix, COOKIE.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends a command (retrying with the same cookie) and decodes the reply.
    ///
    /// # Errors
    /// No reply after retries, or an undecodable reply.
    pub fn cmd(&mut self, d: &Value) -> Result<Value, String> {
        let cookie = self.cookie();
        let mut msg = format!("{cookie} ").into_bytes();
        d.encode(&mut msg);
        for _ in 0..6 {
            self.sock.send_to(&msg, self.relay).map_err(|e| e.to_string())?;
            while let Ok((n, _)) = self.sock.recv_from(&mut self.buf) {
                let r = &self.buf[..n];
                if let Some(body) = r.strip_prefix(format!("{cookie} ").as_bytes()) {
                    return decode(body).map_err(|e| e.to_string());
                }
            }
        }
        Err(format!("no ng reply from {}", self.relay))
    }

    /// Pings the relay until it answers or `within` has passed; whether it
    /// answered.
    pub fn wait_ready(&mut self, within: Duration) -> bool {
        let mut ping = Value::dict();
        ping.insert("command", Value::str("ping"));
        let deadline = Instant::now() + within;
        while self.cmd(&ping).is_err() {
            if Instant::now() > deadline {
                return false;
            }
        }
        true
    }

    /// Sends several commands at once and collects the replies: one
    /// datagram each, cookies matched. Used to measure ng throughput.
    ///
    /// # Errors
    /// A missing reply after retries.
    pub fn pipeline(&mut self, cmds: &[Value]) -> Result<Vec<Value>, String> {
        let items: Vec<(String, Vec<u8>)> = cmds
            .iter()
            .map(|d| {
                let c = self.cookie();
                let mut m = format!("{c} ").into_bytes();
                d.encode(&mut m);
                (c, m)
            })
            .collect();
        let mut out: Vec<Option<Value>> = vec![None; items.len()];
        for _ in 0..6 {
            for (i, (_, m)) in items.iter().enumerate() {
                if out[i].is_none() {
                    self.sock.send_to(m, self.relay).map_err(|e| e.to_string())?;
                }
            }
            while out.iter().any(Option::is_none) {
                let Ok((n, _)) = self.sock.recv_from(&mut self.buf) else { break };
                let r = &self.buf[..n];
                let Some(sp) = r.iter().position(|&b| b == b' ') else { continue };
                if let Some(i) = items.iter().position(|(c, _)| c.as_bytes() == &r[..sp]) {
                    out[i] = decode(&r[sp + 1..]).ok();
                }
            }
            if out.iter().all(Option::is_some) {
                return Ok(out.into_iter().flatten().collect());
            }
        }
        Err("ng replies missing".into())
    }
}

impl NgClient {
    /// Sends several encoded command dictionaries at once (one `sendmmsg`)
    /// and waits until each has an `ok` reply, matching cookies without
    /// decoding the replies: the client's own work stays small beside the
    /// relay's. Used to measure ng throughput.
    ///
    /// # Errors
    /// A reply that is not `ok`, or a missing reply after retries.
    pub fn pipeline_ok(&mut self, bodies: &[Vec<u8>]) -> Result<(), String> {
        use std::fmt::Write;
        use std::os::fd::AsRawFd;
        let base = format!("{}_{}_", self.prefix, COOKIE.fetch_add(1, Ordering::Relaxed));
        let msgs: Vec<Vec<u8>> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut c = base.clone();
                let _ = write!(c, "{i} ");
                let mut m = c.into_bytes();
                m.extend_from_slice(b);
                m
            })
            .collect();
        let mut done = vec![false; msgs.len()];
        let mut left = msgs.len();
        let relay = match self.relay {
            SocketAddr::V4(a) => Some(a),
            SocketAddr::V6(_) => None,
        };
        for _ in 0..6 {
            let todo: Vec<&Vec<u8>> = msgs.iter().zip(&done).filter(|(_, d)| !**d).map(|(m, _)| m).collect();
            let mut sent = 0;
            if let Some(to) = relay {
                for chunk in todo.chunks(crate::sys::MAX) {
                    let pkts: Vec<(&[u8], SocketAddrV4)> = chunk.iter().map(|m| (m.as_slice(), to)).collect();
                    let n = crate::sys::send_many(self.sock.as_raw_fd(), &pkts);
                    sent += n;
                    if n < chunk.len() {
                        break;
                    }
                }
            }
            for m in &todo[sent..] {
                self.sock.send_to(m, self.relay).map_err(|e| e.to_string())?;
            }
            while left > 0 {
                let Ok((n, _)) = self.sock.recv_from(&mut self.buf) else { break };
                let r = &self.buf[..n];
                let Some(rest) = r.strip_prefix(base.as_bytes()) else { continue };
                let Some(sp) = rest.iter().position(|&b| b == b' ') else { continue };
                let i = std::str::from_utf8(&rest[..sp]).ok().and_then(|x| x.parse::<usize>().ok());
                let Some(i) = i.filter(|&i| i < done.len() && !done[i]) else { continue };
                if !rest[sp..].windows(12).any(|w| w == b"6:result2:ok") {
                    return Err(format!("ng command failed: {}", String::from_utf8_lossy(&rest[sp + 1..])));
                }
                done[i] = true;
                left -= 1;
            }
            if left == 0 {
                return Ok(());
            }
        }
        Err("ng replies missing".into())
    }
}

/// The encoded offer, answer and delete of a call between [`Legs`] (as
/// [`offer_answer`] and [`command`] build them), for any call-id: a call's
/// command is its template with the call-id spliced in, so a load
/// generator builds no dictionary per command.
pub struct CycleTemplates {
    /// Per step (offer, answer, delete): the bytes before and after the
    /// call-id string.
    parts: [(Vec<u8>, Vec<u8>); 3],
}

impl CycleTemplates {
    const PLACEHOLDER: &'static str = "\u{1}call-id\u{1}";

    /// The templates of calls between `legs`, A's media at `a_port` and
    /// B's at `b_port`.
    #[must_use]
    pub fn new(legs: &Legs<'_>, a_port: u16, b_port: u16) -> Self {
        let (offer, answer) = offer_answer(Self::PLACEHOLDER, legs, a_port, b_port);
        let delete = command("delete", Self::PLACEHOLDER, "a", None, None);
        let needle = format!("{}:{}", Self::PLACEHOLDER.len(), Self::PLACEHOLDER).into_bytes();
        let split = |v: Value| {
            let b = v.to_bytes();
            let at = b.windows(needle.len()).position(|w| w == needle.as_slice()).unwrap_or(b.len());
            (b[..at].to_vec(), b.get(at + needle.len()..).unwrap_or_default().to_vec())
        };
        Self { parts: [split(offer), split(answer), split(delete)] }
    }

    /// Appends step `step`'s command (0 offer, 1 answer, 2 delete) of call
    /// `call_id` to `out`: the same bytes the dictionary would encode to.
    pub fn write(&self, step: usize, call_id: &str, out: &mut Vec<u8>) {
        use std::io::Write;
        let (before, after) = &self.parts[step.min(2)];
        out.extend_from_slice(before);
        let _ = write!(out, "{}:{call_id}", call_id.len());
        out.extend_from_slice(after);
    }
}

/// An SDP offering G.711 at `port` on 127.0.0.1.
#[must_use]
pub fn sdp(port: u16) -> String {
    sdp_at(Ipv4Addr::LOCALHOST, port)
}

/// An SDP offering G.711 at `addr`:`port`.
#[must_use]
pub fn sdp_at(addr: Ipv4Addr, port: u16) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
}

/// Builds an ng command dictionary.
#[must_use]
pub fn command(cmd: &str, call_id: &str, from: &str, to: Option<&str>, sdp: Option<&str>) -> Value {
    let mut d = Value::dict();
    d.insert("command", Value::str(cmd)).insert("call-id", Value::str(call_id)).insert("from-tag", Value::str(from));
    if let Some(t) = to {
        d.insert("to-tag", Value::str(t));
    }
    if let Some(s) = sdp {
        d.insert("sdp", Value::str(s))
            .insert("replace", Value::List(vec![Value::str("origin"), Value::str("session-connection")]))
            .insert("ICE", Value::str("remove"))
            .insert("flags", Value::List(vec![Value::str("trust-address")]));
    }
    d
}

/// The first `m=` port of a reply's SDP.
#[must_use]
pub fn reply_port(v: &Value) -> Option<u16> {
    let sdp = v.get("sdp")?.as_bytes()?;
    let text = std::str::from_utf8(sdp).ok()?;
    text.lines().find(|l| l.starts_with("m="))?.split(' ').nth(1)?.parse().ok()
}

/// The first `m=` port of a reply's SDP at its session `c=` address.
#[must_use]
pub fn reply_addr(v: &Value) -> Option<SocketAddrV4> {
    let sdp = v.get("sdp")?.as_bytes()?;
    let text = std::str::from_utf8(sdp).ok()?;
    let ip = text.lines().find_map(|l| l.trim_end().strip_prefix("c=IN IP4 "))?.parse().ok()?;
    Some(SocketAddrV4::new(ip, reply_port(v)?))
}

/// Sets up a call: the caller's media at `a_port`, the callee's at `b_port`.
///
/// # Errors
/// An ng error or an unreadable reply.
pub fn setup_call(ng: &mut NgClient, call_id: &str, a_port: u16, b_port: u16) -> Result<CallPorts, String> {
    let c = setup_call_on(ng, call_id, &Legs::LOOPBACK, a_port, b_port)?;
    Ok(CallPorts { to_a: c.to_a.port(), to_b: c.to_b.port() })
}

/// The offer (from A at `a_port`) and the answer (from B at `b_port`) of
/// a call between `legs`. The offer names the legs' interfaces (rtpengine
/// reads an answer's `direction` the other way round, so only the offer
/// carries it).
#[must_use]
pub fn offer_answer(call_id: &str, legs: &Legs<'_>, a_port: u16, b_port: u16) -> (Value, Value) {
    let mut offer = command("offer", call_id, "a", None, Some(&sdp_at(legs.addr[0], a_port)));
    if let Some([a, b]) = legs.direction {
        offer.insert("direction", Value::List(vec![Value::str(a), Value::str(b)]));
    }
    (offer, command("answer", call_id, "a", Some("b"), Some(&sdp_at(legs.addr[1], b_port))))
}

/// Sets up a call between `legs`: the caller's media at `a_port`, the
/// callee's at `b_port`.
///
/// # Errors
/// An ng error or an unreadable reply.
pub fn setup_call_on(
    ng: &mut NgClient,
    call_id: &str,
    legs: &Legs<'_>,
    a_port: u16,
    b_port: u16,
) -> Result<CallAddrs, String> {
    let (offer, answer) = offer_answer(call_id, legs, a_port, b_port);
    let offer = ng.cmd(&offer)?;
    let to_b = reply_addr(&offer).ok_or_else(|| format!("offer failed: {offer:?}"))?;
    let answer = ng.cmd(&answer)?;
    let to_a = reply_addr(&answer).ok_or_else(|| format!("answer failed: {answer:?}"))?;
    Ok(CallAddrs { to_a, to_b })
}

/// Deletes a call.
///
/// # Errors
/// An ng transport error.
pub fn delete_call(ng: &mut NgClient, call_id: &str) -> Result<(), String> {
    ng.cmd(&command("delete", call_id, "a", None, None)).map(|_| ())
}

/// Where one in-flight call of [`cycle_rate`] stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Offer,
    Answer,
    Delete,
}

/// One slot of [`cycle_rate`]'s window: a call going through offer,
/// answer and delete, then the next call.
struct Slot {
    call: u64,
    step: Step,
    /// The datagram of the command in flight, resent after a timeout.
    msg: Vec<u8>,
    sent: Instant,
}

/// Offer+answer+delete cycles per second that `relay` sustains with
/// `window` calls in flight for `secs` seconds, each call between `legs`.
///
/// Each slot of the window sends its next command as soon as the reply to
/// the previous one arrives, so the relay always has commands queued and
/// the rate is what it can process, not one round trip per batch. A
/// command without a reply after 500 ms is resent with the same cookie
/// (the relay answers a repeat from its reply cache).
///
/// # Errors
/// A socket error, a failed offer or answer, or a command unanswered after
/// six tries.
pub fn cycle_rate(relay: SocketAddr, legs: &Legs<'_>, secs: f64, window: usize) -> Result<f64, String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
    let tag = crate::now_ns() % 1_000_000_007;
    let templates = CycleTemplates::new(legs, 4000, 4000);
    let encode = |slot: usize, call: u64, step: Step| -> Vec<u8> {
        let id = format!("cyc-{tag}-{call}");
        // The cookie names the slot and the step, so a reply is matched
        // without a lookup; a late reply to an earlier step is ignored.
        let mut m = format!("{slot}.{call}.{} ", step as u8).into_bytes();
        templates.write(step as usize, &id, &mut m);
        m
    };
    let t0 = Instant::now();
    let mut next_call = 0u64;
    let mut slots: Vec<Slot> = (0..window.max(1))
        .map(|i| {
            next_call += 1;
            Slot { call: next_call, step: Step::Offer, msg: encode(i, next_call, Step::Offer), sent: t0 }
        })
        .collect();
    for s in &slots {
        sock.send_to(&s.msg, relay).map_err(|e| e.to_string())?;
    }
    let mut done = 0u64;
    let mut retries = 0u32;
    let mut buf = vec![0u8; 65536];
    let limit = Duration::from_secs_f64(secs);
    while t0.elapsed() < limit {
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(_) => {
                // Nothing for 100 ms: resend what has waited 500 ms.
                for s in &mut slots {
                    if s.sent.elapsed() > Duration::from_millis(500) {
                        retries += 1;
                        if retries > 6 * window as u32 {
                            return Err(format!("ng replies missing from {relay}"));
                        }
                        sock.send_to(&s.msg, relay).map_err(|e| e.to_string())?;
                        s.sent = Instant::now();
                    }
                }
                continue;
            }
        };
        let r = &buf[..n];
        let Some(sp) = r.iter().position(|&b| b == b' ') else { continue };
        let mut parts = std::str::from_utf8(&r[..sp]).unwrap_or("").split('.');
        let (Some(i), Some(call), Some(step)) = (
            parts.next().and_then(|x| x.parse::<usize>().ok()),
            parts.next().and_then(|x| x.parse::<u64>().ok()),
            parts.next().and_then(|x| x.parse::<u8>().ok()),
        ) else {
            continue;
        };
        let Some(s) = slots.get_mut(i) else { continue };
        if s.call != call || s.step as u8 != step {
            continue;
        }
        if s.step != Step::Delete && !r[sp..].windows(5).any(|w| w == b"3:sdp") {
            return Err(format!("ng {:?} failed: {}", step, String::from_utf8_lossy(&r[sp + 1..])));
        }
        s.step = match s.step {
            Step::Offer => Step::Answer,
            Step::Answer => Step::Delete,
            Step::Delete => {
                done += 1;
                next_call += 1;
                s.call = next_call;
                Step::Offer
            }
        };
        s.msg = encode(i, s.call, s.step);
        s.sent = Instant::now();
        sock.send_to(&s.msg, relay).map_err(|e| e.to_string())?;
    }
    let rate = done as f64 / t0.elapsed().as_secs_f64();
    // Calls still in flight are deleted (best effort), so the relay is
    // left empty for what is measured next.
    for (i, s) in slots.iter().enumerate() {
        if s.step != Step::Offer {
            let _ = sock.send_to(&encode(i, s.call, Step::Delete), relay);
        }
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_encode_as_the_dictionaries_do() {
        let two =
            Legs { addr: [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)], direction: Some(["i", "o"]) };
        for legs in [Legs::LOOPBACK, two] {
            let t = CycleTemplates::new(&legs, 4000, 4002);
            let (offer, answer) = offer_answer("cyc-7-12", &legs, 4000, 4002);
            let delete = command("delete", "cyc-7-12", "a", None, None);
            for (step, v) in [offer, answer, delete].into_iter().enumerate() {
                let mut out = b"cookie ".to_vec();
                t.write(step, "cyc-7-12", &mut out);
                assert_eq!(out[7..], v.to_bytes()[..], "step {step}");
            }
        }
    }

    #[test]
    fn reply_addr_reads_the_session_address_and_the_first_port() {
        let mut reply = Value::dict();
        reply
            .insert("result", Value::str("ok"))
            .insert("sdp", Value::str(&sdp_at(Ipv4Addr::new(127, 0, 0, 2), 30_000)));
        assert_eq!(reply_addr(&reply), Some("127.0.0.2:30000".parse().unwrap()));
        assert_eq!(reply_addr(&Value::dict()), None, "no SDP, no address");
    }
}
