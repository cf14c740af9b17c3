//! A blocking ng client, and call setup (offer + answer) on a relay.

use std::net::{SocketAddr, UdpSocket};
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

/// An SDP offering G.711 at `port` on 127.0.0.1.
#[must_use]
pub fn sdp(port: u16) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
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

/// Sets up a call: the caller's media at `a_port`, the callee's at `b_port`.
///
/// # Errors
/// An ng error or an unreadable reply.
pub fn setup_call(ng: &mut NgClient, call_id: &str, a_port: u16, b_port: u16) -> Result<CallPorts, String> {
    let offer = ng.cmd(&command("offer", call_id, "a", None, Some(&sdp(a_port))))?;
    let to_b = reply_port(&offer).ok_or_else(|| format!("offer failed: {offer:?}"))?;
    let answer = ng.cmd(&command("answer", call_id, "a", Some("b"), Some(&sdp(b_port))))?;
    let to_a = reply_port(&answer).ok_or_else(|| format!("answer failed: {answer:?}"))?;
    Ok(CallPorts { to_a, to_b })
}

/// Deletes a call.
///
/// # Errors
/// An ng transport error.
pub fn delete_call(ng: &mut NgClient, call_id: &str) -> Result<(), String> {
    ng.cmd(&command("delete", call_id, "a", None, None)).map(|_| ())
}
