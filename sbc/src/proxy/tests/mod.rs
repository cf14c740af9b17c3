//! In-process tests of the whole proxy (both layers): SIP messages and
//! times go in, datagrams come out. No socket, no sleep: the clock is an
//! `Instant` the test moves, and the media relay is [`FakeRelay`].
//!
//! The cast: a caller at `CALLER` (NATed: its Via says 10.0.0.1:5062), the
//! proxy at 127.0.0.1:5060, and two trunks, `a` then `b`, tried in order.

mod auth;
mod call;
mod cancel;
mod caps;
mod dns;
mod failover;
mod guard;
mod ha_state;
mod limits;
mod messages;
mod noack;
mod policy;
mod quality;
mod realms;
mod relay_pin;
mod reload;
mod sip;
mod trunk_auth;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media_relay::control::{CallReport, MediaControl, RelayError, RelayTotals, SdpRequest};

use super::Proxy;
use crate::cdr::CdrWriter;
use crate::config::Config;
use crate::metrics::SbcMetrics;
use crate::sip::Message;
use crate::transport::{Inbound, Outbound, Proto};

/// The caller's source address (its Via names a private address).
pub(super) const CALLER: &str = "192.0.2.10:40000";
/// Trunk `a`, tried first.
pub(super) const TRUNK_A: &str = "127.0.0.1:5070";
/// Trunk `b`, tried when `a` fails.
pub(super) const TRUNK_B: &str = "127.0.0.1:5080";
/// The address the fake relay puts in every SDP it rewrites.
pub(super) const RELAY_IP: &str = "203.0.113.1";

/// Parses a socket address constant.
pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// One `offer` or `answer` the relay got: `(kind, call_id, from_tag, to_tag)`.
pub(super) type SdpCall = (&'static str, String, String, Option<String>);

/// A `MediaControl` that allocates one port per (call, tag) and rewrites
/// SDP to `RELAY_IP` and that port, remembering every call it got.
#[derive(Default)]
pub(super) struct FakeRelay {
    ports: Mutex<HashMap<(String, String), u16>>,
    /// `offer`/`answer` calls, in order.
    pub(super) calls: Mutex<Vec<SdpCall>>,
    /// Call-IDs deleted.
    pub(super) deleted: Mutex<Vec<String>>,
    /// The ng `direction` of every offer, in order.
    pub(super) directions: Mutex<Vec<[Option<String>; 2]>>,
    /// Standing for a pool of remote relays: the relay every offered call
    /// is placed on (`None`: a single relay, no placement).
    pub(super) remote: Mutex<Option<String>>,
    /// Calls pinned with `place`, and calls placed by an offer.
    pub(super) placed: Mutex<HashMap<String, String>>,
    /// What `query` and `delete` report, when set (else an empty report;
    /// `query` then fails).
    pub(super) report: Mutex<Option<CallReport>>,
    /// Quality events for the next `take_quality_events`.
    pub(super) quality_events: Mutex<Vec<media_relay::control::QualityEvent>>,
    /// What `idle_calls` answers.
    pub(super) idle: Mutex<Vec<String>>,
}

impl FakeRelay {
    fn rewrite(&self, call_id: &str, tag: &str) -> Vec<u8> {
        let mut ports = self.ports.lock().unwrap();
        let next = 40_000 + 2 * u16::try_from(ports.len()).unwrap();
        let port = *ports.entry((call_id.to_owned(), tag.to_owned())).or_insert(next);
        sip::sdp(RELAY_IP, port).into_bytes()
    }

    /// Port pairs handed out so far.
    pub(super) fn allocated(&self) -> usize {
        self.ports.lock().unwrap().len()
    }

    fn record(&self, kind: &'static str, req: &SdpRequest<'_>) {
        let to = req.to_tag.map(str::to_owned);
        self.calls.lock().unwrap().push((kind, req.call_id.to_owned(), req.from_tag.to_owned(), to));
    }
}

impl MediaControl for FakeRelay {
    fn offer(&self, req: &SdpRequest<'_>) -> Result<Vec<u8>, RelayError> {
        self.record("offer", req);
        self.directions.lock().unwrap().push(req.opts.direction.clone());
        if let Some(r) = self.remote.lock().unwrap().clone() {
            self.placed.lock().unwrap().entry(req.call_id.to_owned()).or_insert(r);
        }
        Ok(self.rewrite(req.call_id, req.from_tag))
    }

    fn answer(&self, req: &SdpRequest<'_>) -> Result<Vec<u8>, RelayError> {
        self.record("answer", req);
        Ok(self.rewrite(req.call_id, req.to_tag.unwrap_or_default()))
    }

    fn delete(&self, call_id: &str, _from_tag: Option<&str>) -> Result<CallReport, RelayError> {
        self.deleted.lock().unwrap().push(call_id.to_owned());
        let empty = || CallReport { call_id: call_id.to_owned(), created: 0, last_signal: 0, legs: Vec::new() };
        Ok(self.report.lock().unwrap().clone().unwrap_or_else(empty))
    }

    fn query(&self, _call_id: &str) -> Result<CallReport, RelayError> {
        self.report.lock().unwrap().clone().ok_or(RelayError::UnknownCall)
    }

    fn take_quality_events(&self) -> Vec<media_relay::control::QualityEvent> {
        std::mem::take(&mut *self.quality_events.lock().unwrap())
    }

    fn idle_calls(&self, _idle: Duration) -> Vec<String> {
        self.idle.lock().unwrap().clone()
    }

    fn list(&self, _limit: usize) -> Vec<String> {
        Vec::new()
    }

    fn totals(&self) -> RelayTotals {
        RelayTotals::default()
    }

    fn placement(&self, call_id: &str) -> Option<String> {
        self.placed.lock().unwrap().get(call_id).cloned()
    }

    fn place(&self, call_id: &str, relay: &str) {
        self.placed.lock().unwrap().insert(call_id.to_owned(), relay.to_owned());
    }
}

/// A datagram the proxy sent, parsed.
#[derive(Debug)]
pub(super) struct Sent {
    pub(super) dest: SocketAddr,
    /// The realm whose socket it left from.
    pub(super) realm: usize,
    pub(super) msg: Message,
}

impl Sent {
    /// Status code of a response (0 for a request).
    pub(super) fn code(&self) -> u16 {
        self.msg.code().unwrap_or(0)
    }

    /// Method of a request, or the CSeq method of a response.
    pub(super) fn method(&self) -> String {
        match self.msg.method() {
            Some(m) => m.to_string(),
            None => self.msg.cseq().map(|c| c.1.to_string()).unwrap_or_default(),
        }
    }

    /// The body as text.
    pub(super) fn body(&self) -> String {
        String::from_utf8_lossy(&self.msg.body).into_owned()
    }
}

/// The proxy with the fake relay, its metrics and a clock.
pub(super) struct Harness {
    pub(super) proxy: Proxy,
    pub(super) relay: Arc<FakeRelay>,
    pub(super) metrics: Arc<SbcMetrics>,
    pub(super) now: Instant,
}

impl Harness {
    /// Trunks `a` and `b` in one route, tried in that order; probes off.
    pub(super) fn new() -> Self {
        Self::with_config(&Self::config())
    }

    /// The configuration of [`new`](Self::new): trunks `a` and `b`.
    pub(super) fn config() -> String {
        crate::config::DEFAULT_TOML
            .replace(
                "name = \"local-trunk\"\naddress = \"127.0.0.1:5070\"",
                &format!("name = \"a\"\naddress = \"{TRUNK_A}\""),
            )
            .replace("trunks = [\"local-trunk\"]", "trunks = [\"a\", \"b\"]")
            + &format!("\n[[trunk]]\nname = \"b\"\naddress = \"{TRUNK_B}\"\nprobe = false\n")
    }

    /// A proxy on the configuration `toml`.
    pub(super) fn with_config(toml: &str) -> Self {
        let cfg = Arc::new(Config::from_toml(toml).unwrap());
        let names: Vec<String> = cfg.trunks.iter().map(|t| t.name.clone()).collect();
        let metrics = Arc::new(SbcMetrics::new(&names));
        let relay = Arc::new(FakeRelay::default());
        let media: Arc<dyn MediaControl> = relay.clone();
        let proxy = Proxy::new(cfg, media, Arc::clone(&metrics), CdrWriter::open(None).unwrap());
        let mut h = Self { proxy, relay, metrics, now: Instant::now() };
        h.proxy.on_timer(h.now);
        h
    }

    /// Delivers `data` from `src` over UDP and returns what the proxy sent.
    pub(super) fn send(&mut self, src: &str, data: &[u8]) -> Vec<Sent> {
        self.send_in(0, src, data)
    }

    /// Delivers `data` from `src` over UDP to realm `realm`'s socket.
    pub(super) fn send_in(&mut self, realm: usize, src: &str, data: &[u8]) -> Vec<Sent> {
        self.proxy.handle(Inbound { data: data.to_vec(), src: addr(src), proto: Proto::Udp, realm }, self.now);
        self.drain()
    }

    /// Moves the clock `d` forward, firing every timer on the way (as the
    /// signaling loop would), and returns what the proxy sent.
    pub(super) fn advance(&mut self, d: Duration) -> Vec<Sent> {
        let until = self.now + d;
        while let Some(t) = self.proxy.next_deadline().filter(|t| *t <= until) {
            self.now = self.now.max(t);
            self.proxy.on_timer(self.now);
        }
        self.now = until;
        self.proxy.on_timer(self.now);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Sent> {
        self.proxy.drain_output().into_iter().map(parse).collect()
    }

    /// A counter or gauge of the proxy's metrics.
    pub(super) fn gauge(&self, f: impl Fn(&SbcMetrics) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.metrics).load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn parse(o: Outbound) -> Sent {
    assert_eq!(o.proto, Proto::Udp);
    Sent { dest: o.dest, realm: o.realm, msg: Message::parse(&o.data).expect("the proxy sends SIP that parses") }
}

/// The single message in `out` sent to `dest`; panics if there is not
/// exactly one.
pub(super) fn only_to<'a>(out: &'a [Sent], dest: &str) -> &'a Sent {
    let to: Vec<&Sent> = out.iter().filter(|s| s.dest == addr(dest)).collect();
    assert_eq!(to.len(), 1, "one message to {dest}, got {out:#?}");
    to[0]
}
