//! `xsbc-ua`: a small SIP user agent with RTP for failover drills.
//!
//! It places (`caller`) or answers (`callee`) calls through the sbc, sends
//! 20 ms RTP packets both ways, and records, per call, whether it was
//! answered, how it ended, and the largest gap between RTP packets it
//! received. The HA tests run it on both sides of an sbc pair and kill the
//! active node mid-call; operators can run the same drill.
//!
//! ```text
//! xsbc-ua caller --local 10.0.1.2:5060 --proxy 10.0.0.100:5060 --to callee \
//!     --rtp-ip 10.0.1.2 --rtp-base 20000 --calls 20 --rate 10 --duration-ms 10000 \
//!     --report caller.jsonl
//! xsbc-ua callee --local 10.0.2.2:5060 --proxy 10.0.0.100:5060 \
//!     --rtp-ip 10.0.2.2 --rtp-base 30000 --run-ms 30000 --report callee.jsonl
//! ```
//!
//! With `--callee-hangup-odd`, odd-numbered calls ask the callee (header
//! `X-Hangup: callee`) to send the BYE after `--duration-ms`.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use sbc::error::Error;
use sbc::sip::{Header, Message, Method};

#[derive(Parser, Debug)]
#[command(name = "xsbc-ua", about = "SIP UA with RTP gap measurement, for failover drills")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Place calls.
    Caller {
        #[command(flatten)]
        common: Common,
        /// User part of the Request-URI.
        #[arg(long, default_value = "callee")]
        to: String,
        /// Number of calls.
        #[arg(long, default_value_t = 1)]
        calls: usize,
        /// New calls per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Call length from the answer, milliseconds.
        #[arg(long, default_value_t = 5000)]
        duration_ms: u64,
        /// Odd calls are hung up by the callee.
        #[arg(long)]
        callee_hangup_odd: bool,
        /// Give up on everything after this long.
        #[arg(long, default_value_t = 120_000)]
        max_ms: u64,
    },
    /// Register a user (the contact is `--local`), then exit.
    Register {
        /// Address to bind and to register as the contact.
        #[arg(long)]
        local: SocketAddr,
        /// The sbc.
        #[arg(long)]
        proxy: SocketAddr,
        /// User part of the address-of-record.
        #[arg(long)]
        user: String,
        /// Seconds.
        #[arg(long, default_value_t = 300)]
        expires: u32,
    },
    /// Answer calls.
    Callee {
        #[command(flatten)]
        common: Common,
        /// Ring this long before answering, milliseconds.
        #[arg(long, default_value_t = 0)]
        ring_ms: u64,
        /// When asked to hang up, do it this long after the answer.
        #[arg(long, default_value_t = 5000)]
        duration_ms: u64,
        /// Exit after this long.
        #[arg(long, default_value_t = 60_000)]
        run_ms: u64,
    },
}

/// `register`: one REGISTER, retransmitted until a final answer.
fn register(local: SocketAddr, proxy: SocketAddr, user: &str, expires: u32) -> Result<(), Error> {
    let sock = UdpSocket::bind(local).map_err(|source| Error::BindUa { addr: local, source })?;
    let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
    let pid = std::process::id();
    let text = format!(
        "REGISTER sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKreg{pid};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@{ip}>;tag=r{pid}\r\nTo: <sip:{user}@{ip}>\r\nCall-ID: reg-{pid}@{local}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{local}>\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
        ip = proxy.ip()
    );
    let mut buf = [0u8; 4096];
    for _ in 0..10 {
        sock.send_to(text.as_bytes(), proxy).map_err(|source| Error::SendRegister { source })?;
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let Ok(m) = Message::parse(&buf[..n]) else { continue };
            match m.code() {
                Some(200) => return Ok(()),
                Some(c) if c >= 300 => return Err(Error::RegisterRefused(c)),
                _ => {}
            }
        }
    }
    Err(Error::RegisterTimeout)
}

#[derive(clap::Args, Debug)]
struct Common {
    /// SIP address to bind and advertise.
    #[arg(long)]
    local: SocketAddr,
    /// The sbc (where every request goes).
    #[arg(long)]
    proxy: SocketAddr,
    /// RTP address.
    #[arg(long)]
    rtp_ip: IpAddr,
    /// First RTP port; call i uses base + 2i.
    #[arg(long)]
    rtp_base: u16,
    /// JSON-lines report, rewritten as calls end.
    #[arg(long)]
    report: PathBuf,
}

const PTIME: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Rtp {
    sent: u64,
    received: u64,
    last_rx: Option<Instant>,
    max_gap: Duration,
    /// Time of the largest gap's end, since the call started.
    max_gap_at: Duration,
    seq: u16,
    next_tx: Option<Instant>,
}

struct Call {
    index: usize,
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    /// Caller: we sent the INVITE.
    outgoing: bool,
    invite: Option<Message>,
    /// Callee: the last response to the INVITE, for retransmission.
    last_response: Option<Vec<u8>>,
    retransmit_at: Option<Instant>,
    retransmit_gap: Duration,
    retransmits: u32,
    started: Instant,
    answered: Option<Instant>,
    acked: bool,
    ring_until: Option<Instant>,
    remote_target: Option<String>,
    route_set: Vec<String>,
    rtp_sock: UdpSocket,
    rtp_dest: Option<SocketAddr>,
    rtp: Rtp,
    hangup_at: Option<Instant>,
    callee_hangs_up: bool,
    bye: Option<Vec<u8>>,
    bye_code: u16,
    ended: Option<&'static str>,
    end_time: Option<Instant>,
    cseq: u32,
    failed_code: u16,
}

impl Call {
    /// Records how and when the call ended, unless it already had; returns
    /// whether this was the end.
    fn end(&mut self, how: &'static str, now: Instant) -> bool {
        if self.ended.is_some() {
            return false;
        }
        self.ended = Some(how);
        self.end_time = Some(now);
        true
    }
}

struct Ua {
    common: Common,
    sip: UdpSocket,
    calls: Vec<Call>,
    by_id: HashMap<String, usize>,
    branch: u64,
    pid: u32,
}

fn sdp_dest(body: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(body).ok()?;
    let mut ip: Option<IpAddr> = None;
    let mut port: Option<u16> = None;
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("c=IN IP4 ").or_else(|| line.strip_prefix("c=IN IP6 ")) {
            ip = c.trim().parse().ok();
        }
        if let Some(m) = line.strip_prefix("m=audio ") {
            port = m.split_whitespace().next().and_then(|p| p.parse().ok());
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

fn contact_uri(m: &Message) -> Option<String> {
    m.contacts().into_iter().find_map(|c| match c {
        sbc::sip::Contact::Addr(a) => Some(a.uri.to_string()),
        sbc::sip::Contact::Star => None,
    })
}

impl Ua {
    fn next_branch(&mut self) -> String {
        self.branch += 1;
        format!("z9hG4bKua{}x{}", self.pid, self.branch)
    }

    fn send(&self, data: &[u8]) {
        let _ = self.sip.send_to(data, self.common.proxy);
    }

    fn sdp(&self, port: u16, id: usize) -> Vec<u8> {
        let ip = self.common.rtp_ip;
        let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
        format!(
            "v=0\r\no=- {id} 1 IN {fam} {ip}\r\ns=xsbc-ua\r\nc=IN {fam} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
        )
        .into_bytes()
    }

    fn new_call(&mut self, index: usize, call_id: String, outgoing: bool, now: Instant) -> std::io::Result<usize> {
        let port = self.common.rtp_base + u16::try_from(index * 2).unwrap_or(0);
        let rtp_sock = UdpSocket::bind(SocketAddr::new(self.common.rtp_ip, port))?;
        rtp_sock.set_nonblocking(true)?;
        let k = self.calls.len();
        self.calls.push(Call {
            index,
            call_id: call_id.clone(),
            local_tag: format!("t{}x{index}", self.pid),
            remote_tag: None,
            outgoing,
            invite: None,
            last_response: None,
            retransmit_at: None,
            retransmit_gap: Duration::from_millis(500),
            retransmits: 0,
            started: now,
            answered: None,
            acked: false,
            ring_until: None,
            remote_target: None,
            route_set: Vec::new(),
            rtp_sock,
            rtp_dest: None,
            rtp: Rtp::default(),
            hangup_at: None,
            callee_hangs_up: false,
            bye: None,
            bye_code: 0,
            ended: None,
            end_time: None,
            cseq: 1,
            failed_code: 0,
        });
        self.by_id.insert(call_id, k);
        Ok(k)
    }

    fn place_call(&mut self, index: usize, to: &str, callee_hangs_up: bool, now: Instant) -> std::io::Result<()> {
        let call_id = format!("ua-{}-{index}@{}", self.pid, self.common.local.ip());
        let k = self.new_call(index, call_id.clone(), true, now)?;
        let port = self.calls[k].rtp_sock.local_addr()?.port();
        let branch = self.next_branch();
        let local = self.common.local;
        let proxy = self.common.proxy;
        let tag = self.calls[k].local_tag.clone();
        let hang = if callee_hangs_up { "X-Hangup: callee\r\n" } else { "" };
        let body = self.sdp(port, index);
        let text = format!(
            "INVITE sip:{to}@{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:caller@{local}>;tag={tag}\r\nTo: <sip:{to}@{proxy}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{local}>\r\n{hang}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(&body);
        self.send(&bytes);
        let c = &mut self.calls[k];
        c.callee_hangs_up = callee_hangs_up;
        c.invite = Message::parse(&bytes).ok();
        c.last_response = Some(bytes);
        c.retransmit_at = Some(now + c.retransmit_gap);
        Ok(())
    }

    /// An in-dialog request (ACK, BYE) along the route set.
    fn in_dialog(&mut self, k: usize, method: &str, cseq: u32) -> Vec<u8> {
        let branch = self.next_branch();
        let local = self.common.local;
        let c = &self.calls[k];
        let target = c.remote_target.clone().unwrap_or_else(|| format!("sip:{}", self.common.proxy));
        let (from, to) = if c.outgoing {
            (
                format!("<sip:caller@{local}>;tag={}", c.local_tag),
                format!("<sip:callee@{}>;tag={}", self.common.proxy, c.remote_tag.clone().unwrap_or_default()),
            )
        } else {
            (
                format!("<sip:callee@{local}>;tag={}", c.local_tag),
                format!("<sip:caller@{}>;tag={}", self.common.proxy, c.remote_tag.clone().unwrap_or_default()),
            )
        };
        let mut routes = String::new();
        for r in &c.route_set {
            routes.push_str(&format!("Route: <{r}>\r\n"));
        }
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\n{routes}From: {from}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            c.call_id
        )
        .into_bytes()
    }

    fn send_bye(&mut self, k: usize, now: Instant) {
        let cseq = self.calls[k].cseq + 1;
        self.calls[k].cseq = cseq;
        let bye = self.in_dialog(k, "BYE", cseq);
        self.send(&bye);
        let c = &mut self.calls[k];
        c.bye = Some(bye);
        c.retransmits = 0;
        c.retransmit_gap = Duration::from_millis(500);
        c.retransmit_at = Some(now + c.retransmit_gap);
        c.hangup_at = None;
        c.rtp.next_tx = None;
    }

    fn on_sip(&mut self, data: &[u8], now: Instant, ring: Duration, duration: Duration) {
        let Ok(msg) = Message::parse(data) else { return };
        let Some(call_id) = msg.call_id().map(str::to_owned) else { return };
        if msg.is_request() {
            let method = msg.method().cloned();
            match method {
                Some(Method::Invite) => {
                    if let Some(&k) = self.by_id.get(&call_id) {
                        if let Some(r) = self.calls[k].last_response.clone() {
                            self.send(&r);
                        }
                        return;
                    }
                    let index = self.calls.len();
                    let Ok(k) = self.new_call(index, call_id, false, now) else { return };
                    let c = &mut self.calls[k];
                    c.remote_tag = msg.from_tag();
                    c.rtp_dest = sdp_dest(&msg.body);
                    c.remote_target = contact_uri(&msg);
                    c.route_set = msg.record_routes().iter().map(|r| r.uri.to_string()).collect();
                    c.callee_hangs_up = msg.header("x-hangup").is_some_and(|v| v.trim() == "callee");
                    c.invite = Some(msg.clone());
                    c.ring_until = Some(now + ring);
                    let tag = c.local_tag.clone();
                    let ringing = self.response(&msg, 180, "Ringing", &tag, None);
                    self.send(&ringing);
                    self.calls[k].last_response = Some(ringing);
                }
                Some(Method::Ack) => {
                    if let Some(&k) = self.by_id.get(&call_id) {
                        let c = &mut self.calls[k];
                        c.acked = true;
                        c.retransmit_at = None;
                        if c.callee_hangs_up && c.hangup_at.is_none() && c.ended.is_none() {
                            c.hangup_at = Some(now + duration);
                        }
                    }
                }
                Some(Method::Bye) => {
                    let tag = self.by_id.get(&call_id).map(|&k| self.calls[k].local_tag.clone()).unwrap_or_default();
                    let ok = self.response(&msg, 200, "OK", &tag, None);
                    self.send(&ok);
                    if let Some(&k) = self.by_id.get(&call_id) {
                        let c = &mut self.calls[k];
                        if c.end("bye-received", now) {
                            c.rtp.next_tx = None;
                            c.retransmit_at = None;
                            c.hangup_at = None;
                        }
                    }
                }
                _ => {
                    let ok = self.response(&msg, 200, "OK", "ua", None);
                    self.send(&ok);
                }
            }
            return;
        }
        let Some(&k) = self.by_id.get(&call_id) else { return };
        let code = msg.code().unwrap_or(0);
        let cseq_method = msg.cseq().map(|c| c.1);
        if cseq_method == Some(Method::Bye) {
            if code >= 200 {
                let c = &mut self.calls[k];
                c.bye_code = code;
                c.retransmit_at = None;
                c.end("bye-sent", now);
            }
            return;
        }
        if cseq_method != Some(Method::Invite) || !self.calls[k].outgoing {
            return;
        }
        if code < 200 {
            let c = &mut self.calls[k];
            if c.answered.is_none() {
                c.retransmit_at = None;
            }
            return;
        }
        if code >= 300 {
            let c = &mut self.calls[k];
            c.failed_code = code;
            c.retransmit_at = None;
            c.end("failed", now);
            // ACK for a non-2xx goes hop by hop; the proxy absorbs it.
            return;
        }
        let first = self.calls[k].answered.is_none();
        if first {
            let c = &mut self.calls[k];
            c.answered = Some(now);
            c.retransmit_at = None;
            c.remote_tag = msg.to_tag();
            c.remote_target = contact_uri(&msg);
            let mut rr: Vec<String> = msg.record_routes().iter().map(|r| r.uri.to_string()).collect();
            rr.reverse();
            c.route_set = rr;
            c.rtp_dest = sdp_dest(&msg.body);
            c.rtp.next_tx = Some(now);
            if !c.callee_hangs_up {
                c.hangup_at = Some(now + duration);
            }
        }
        // ACK every 2xx (retransmissions included).
        let ack = self.in_dialog(k, "ACK", 1);
        self.send(&ack);
        self.calls[k].acked = true;
    }

    fn response(&self, req: &Message, code: u16, reason: &str, tag: &str, body: Option<Vec<u8>>) -> Vec<u8> {
        let mut r = req.response_with_tag(code, reason, tag);
        for h in req.headers_named("record-route") {
            r.insert_before_first("content-length", h.clone());
        }
        r.insert_before_first("content-length", Header::new("Contact", &format!("<sip:callee@{}>", self.common.local)));
        if let Some(b) = body {
            r.insert_before_first("content-length", Header::new("Content-Type", "application/sdp"));
            r.set_body(b);
        }
        r.to_bytes()
    }

    fn tick(&mut self, now: Instant) {
        let mut buf = [0u8; 2048];
        for k in 0..self.calls.len() {
            // RTP in.
            loop {
                let c = &mut self.calls[k];
                match c.rtp_sock.recv_from(&mut buf) {
                    Ok((n, _)) if n >= 12 => {
                        if c.ended.is_some() {
                            continue;
                        }
                        c.rtp.received += 1;
                        if let Some(last) = c.rtp.last_rx {
                            let gap = now.saturating_duration_since(last);
                            if gap > c.rtp.max_gap {
                                c.rtp.max_gap = gap;
                                c.rtp.max_gap_at = now.saturating_duration_since(c.started);
                            }
                        }
                        c.rtp.last_rx = Some(now);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            // RTP out.
            let c = &mut self.calls[k];
            if let (Some(at), Some(dest)) = (c.rtp.next_tx, c.rtp_dest) {
                if now >= at && c.ended.is_none() {
                    let mut pkt = [0u8; 172];
                    pkt[0] = 0x80;
                    pkt[2..4].copy_from_slice(&c.rtp.seq.to_be_bytes());
                    let ts = u32::from(c.rtp.seq).wrapping_mul(160);
                    pkt[4..8].copy_from_slice(&ts.to_be_bytes());
                    pkt[8..12].copy_from_slice(&(0x5000_0000u32 + c.index as u32).to_be_bytes());
                    let _ = c.rtp_sock.send_to(&pkt, dest);
                    c.rtp.seq = c.rtp.seq.wrapping_add(1);
                    c.rtp.sent += 1;
                    // Keep the cadence, but never burst to catch up.
                    let next = at + PTIME;
                    c.rtp.next_tx = Some(if next < now { now + PTIME } else { next });
                }
            }
            // Callee answers after ringing.
            if let Some(until) = c.ring_until {
                if now >= until {
                    c.ring_until = None;
                    c.answered = Some(now);
                    c.rtp.next_tx = Some(now);
                    let port = c.rtp_sock.local_addr().map(|a| a.port()).unwrap_or(0);
                    let (invite, tag, index) = (c.invite.clone(), c.local_tag.clone(), c.index);
                    if let Some(inv) = invite {
                        let body = self.sdp(port, index);
                        let ok = self.response(&inv, 200, "OK", &tag, Some(body));
                        self.send(&ok);
                        let c = &mut self.calls[k];
                        c.last_response = Some(ok);
                        c.retransmit_gap = Duration::from_millis(500);
                        c.retransmit_at = Some(now + c.retransmit_gap);
                    }
                }
            }
            let c = &mut self.calls[k];
            // Retransmissions: INVITE (caller), 200 (callee), BYE (either).
            if let Some(at) = c.retransmit_at {
                if now >= at {
                    c.retransmits += 1;
                    c.retransmit_gap = (c.retransmit_gap * 2).min(Duration::from_secs(4));
                    let data = if c.bye.is_some() { c.bye.clone() } else { c.last_response.clone() };
                    if c.retransmits > 10 {
                        c.retransmit_at = None;
                        let how = if c.bye.is_some() { "bye-timeout" } else { "setup-timeout" };
                        c.end(how, now);
                    } else {
                        c.retransmit_at = Some(now + c.retransmit_gap);
                        if let Some(d) = data {
                            self.send(&d);
                        }
                    }
                }
            }
            let c = &self.calls[k];
            if c.hangup_at.is_some_and(|t| now >= t) && c.ended.is_none() {
                self.send_bye(k, now);
            }
        }
    }

    fn write_report(&self, path: &PathBuf) {
        // Wall-clock times, so that other processes' events can be compared.
        let wall = |t: Instant| {
            let now = Instant::now();
            let unix =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            unix.saturating_sub(now.saturating_duration_since(t).as_millis() as u64)
        };
        let mut out = String::new();
        for c in &self.calls {
            let rec = serde_json::json!({
                "index": c.index,
                "call_id": c.call_id,
                "answered": c.answered.is_some(),
                "ended": c.ended,
                "bye_code": c.bye_code,
                "failed_code": c.failed_code,
                "rtp_sent": c.rtp.sent,
                "rtp_received": c.rtp.received,
                "max_gap_ms": c.rtp.max_gap.as_secs_f64() * 1000.0,
                "max_gap_at_ms": c.rtp.max_gap_at.as_millis() as u64,
                "started_unix_ms": wall(c.started),
                "answered_unix_ms": c.answered.map(wall),
                "ended_unix_ms": c.end_time.map(wall),
                "duration_ms": c.end_time.zip(c.answered).map(|(e, a)| e.saturating_duration_since(a).as_millis() as u64),
            });
            out.push_str(&rec.to_string());
            out.push('\n');
        }
        let tmp = path.with_extension("tmp");
        if std::fs::File::create(&tmp).and_then(|mut f| f.write_all(out.as_bytes())).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let (common, ring, duration) = match &cli.mode {
        Mode::Caller { common, duration_ms, .. } => (common, 0, *duration_ms),
        Mode::Callee { common, ring_ms, duration_ms, .. } => (common, *ring_ms, *duration_ms),
        Mode::Register { local, proxy, user, expires } => match register(*local, *proxy, user, *expires) {
            Ok(()) => {
                println!("xsbc-ua: {user} registered at {local}");
                return;
            }
            Err(e) => {
                eprintln!("xsbc-ua: {e}");
                std::process::exit(1);
            }
        },
    };
    let sip = match UdpSocket::bind(common.local) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xsbc-ua: binding {}: {e}", common.local);
            std::process::exit(2);
        }
    };
    let _ = sip.set_nonblocking(true);
    let common = Common {
        local: common.local,
        proxy: common.proxy,
        rtp_ip: common.rtp_ip,
        rtp_base: common.rtp_base,
        report: common.report.clone(),
    };
    let report = common.report.clone();
    let mut ua = Ua { common, sip, calls: Vec::new(), by_id: HashMap::new(), branch: 0, pid: std::process::id() };
    let start = Instant::now();
    let (ring, duration) = (Duration::from_millis(ring), Duration::from_millis(duration));
    let mut buf = vec![0u8; 65536];
    let mut placed = 0usize;
    let mut last_report = start;
    let mut ended_seen = 0usize;
    loop {
        let now = Instant::now();
        while let Ok((n, _)) = ua.sip.recv_from(&mut buf) {
            let data = buf[..n].to_vec();
            ua.on_sip(&data, Instant::now(), ring, duration);
        }
        match &cli.mode {
            Mode::Caller { to, calls, rate, callee_hangup_odd, max_ms, .. } => {
                let due =
                    if *rate > 0.0 { (now.duration_since(start).as_secs_f64() * rate) as usize + 1 } else { *calls };
                while placed < (*calls).min(due) {
                    let odd = placed % 2 == 1;
                    if let Err(e) = ua.place_call(placed, to, *callee_hangup_odd && odd, now) {
                        eprintln!("xsbc-ua: call {placed}: {e}");
                    }
                    placed += 1;
                }
                let all_done = placed == *calls && ua.calls.iter().all(|c| c.ended.is_some());
                if all_done || now.duration_since(start) > Duration::from_millis(*max_ms) {
                    ua.tick(now);
                    ua.write_report(&report);
                    let ok = ua.calls.iter().filter(|c| matches!(c.ended, Some("bye-sent" | "bye-received"))).count();
                    println!("xsbc-ua: {ok}/{} calls completed", ua.calls.len());
                    return;
                }
            }
            Mode::Register { .. } => return,
            Mode::Callee { run_ms, .. } => {
                if now.duration_since(start) > Duration::from_millis(*run_ms) {
                    ua.write_report(&report);
                    return;
                }
            }
        }
        ua.tick(now);
        // Rewrite the report when a call ends, and twice a second anyway.
        let ended = ua.calls.iter().filter(|c| c.ended.is_some()).count();
        if ended != ended_seen || now.duration_since(last_report) > Duration::from_millis(500) {
            ua.write_report(&report);
            last_report = now;
            ended_seen = ended;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
