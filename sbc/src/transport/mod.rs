//! SIP transports: per realm, one UDP socket, a TCP listener and a TLS
//! listener with their connections, polled with mio by the signaling
//! thread. Every message in and out names its realm (an index into the
//! configured realms).
//!
//! The transport only frames messages (datagrams as they are; streams split
//! by the blank line and `Content-Length`). It does not parse them.
//!
//! Connections a peer opened to us are its flows (RFC 5626): whatever goes
//! back to that peer (responses, and requests to a phone that registered
//! over it) uses the same connection, and once it is closed the transport
//! never dials the peer's address instead (it is a NAT's ephemeral port,
//! not a listener). Closed flows are reported ([`Transport::take_closed_flows`])
//! so the registrar can drop the bindings that used them. Connections are
//! bounded, each bound counted in [`ConnStats`]: the realm's source ACL
//! is checked at accept ([`Transport::set_admission`]); accepted
//! connections are capped in all and per source address, apart from the
//! connections we dial (so peers cannot crowd out the trunks); a TLS
//! handshake timeout; a deadline for each message, from its first byte
//! (a peer trickling a message is closed); an idle timeout, counted from
//! the last complete message (or keep-alive) so a trickle of bytes cannot
//! extend it, which also closes a connection whose output has made no
//! progress that long; and a cap on a connection's pending output (a peer
//! that never reads is closed).
//!
//! Transport errors (RFC 3261 §18.4) are reported per destination: a send
//! that fails at once returns its error, and a connection that fails after
//! messages were queued on it (refused, reset, a TLS handshake that fails
//! or times out, closed before its output went out) is reported by
//! [`Transport::take_undelivered`], so that the transactions waiting on
//! that destination end at once instead of at their timeout.

mod reap;
mod stream;
pub mod tls;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

pub use stream::frame;
use stream::{Closing, Conn};
pub use tls::TlsSetup;

const WAKER: Token = Token(usize::MAX);
/// Tokens per realm: UDP, TCP listener, TLS listener.
const PER_REALM: usize = 3;
/// How long a peer's closed flow is remembered (never redialled).
const GONE_MEMORY: Duration = Duration::from_secs(2 * 3600);
/// At most this many closed flows are remembered.
const GONE_CAP: usize = 65_536;

/// SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Proto {
    /// The Via transport token.
    #[must_use]
    pub fn via_name(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }

    /// Whether the transport is reliable (RFC 3261 timers differ).
    #[must_use]
    pub fn reliable(self) -> bool {
        self != Self::Udp
    }

    /// The transport named by a Via token or a `transport=` URI parameter.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Udp, Self::Tcp, Self::Tls].into_iter().find(|p| p.via_name().eq_ignore_ascii_case(name))
    }

    /// The `;transport=` URI parameter for it (none for UDP, the default).
    #[must_use]
    pub fn uri_param(self) -> &'static str {
        match self {
            Self::Udp => "",
            Self::Tcp => ";transport=tcp",
            Self::Tls => ";transport=tls",
        }
    }
}

/// A framed message that arrived.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The message bytes.
    pub data: Vec<u8>,
    /// The peer.
    pub src: SocketAddr,
    /// How it came.
    pub proto: Proto,
    /// The realm whose socket it came to.
    pub realm: usize,
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The bytes.
    pub data: Vec<u8>,
    /// The destination.
    pub dest: SocketAddr,
    /// The transport.
    pub proto: Proto,
    /// The realm whose socket it leaves from.
    pub realm: usize,
}

/// Inputs that the transport drops rather than delivers, for counting.
#[derive(Debug, Default, Clone, Copy)]
pub struct Drops {
    /// Datagrams or stream messages over the size limit.
    pub oversize: u64,
    /// Streams whose framing broke (bad Content-Length); the connection is closed.
    pub bad_framing: u64,
}

/// Stream connection events since start, for counting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnStats {
    /// Connections refused at accept because `max_connections` accepted
    /// connections were open, or `max_connections_per_ip` from its address.
    pub rejected: u64,
    /// Connections closed at accept because the realm's ACL denies the source.
    pub acl_denied: u64,
    /// Connections closed because their pending output passed `max_output`
    /// (a peer that does not read what we send).
    pub output_overflows: u64,
    /// TLS handshakes that failed (bad or untrusted certificate, bad records).
    pub tls_handshake_failures: u64,
    /// TLS handshakes (or TCP connects) not finished within the timeout.
    pub tls_handshake_timeouts: u64,
    /// Connections closed after being idle: no complete message (or
    /// RFC 5626 keep-alive) received and nothing to send, or output
    /// pending with no write progress, for `idle`.
    pub idle_closes: u64,
    /// Connections closed because a message did not arrive complete
    /// within `message_deadline` of its first byte (slowloris).
    pub deadline_closes: u64,
}

/// Bounds on stream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections peers opened to us (TCP and TLS) at most; the ones we
    /// dial are counted apart, with the same bound.
    pub max_connections: usize,
    /// Connections accepted from one source address at most.
    pub max_connections_per_ip: usize,
    /// Bytes queued on one connection and not yet written, at most: past
    /// it the connection is closed.
    pub max_output: usize,
    /// A connection with nothing sent or received for this long is closed,
    /// and so is one whose pending output made no progress for this long.
    pub idle: Duration,
    /// A TLS handshake (or an outgoing TCP connect) must finish within this.
    pub handshake: Duration,
    /// A message must arrive complete within this of its first byte: a
    /// connection trickling one slower is closed.
    pub message_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_ip: 32,
            max_output: 1 << 20,
            idle: Duration::from_secs(300),
            handshake: Duration::from_secs(10),
            message_deadline: Duration::from_secs(5),
        }
    }
}

/// A connection a peer opened to us, now closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The realm it came to.
    pub realm: usize,
    /// `Tcp` or `Tls`.
    pub proto: Proto,
    /// The peer's address.
    pub peer: SocketAddr,
}

/// Messages queued for a destination that the transport could not
/// deliver: the connection they were queued on failed or never came up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undelivered {
    /// The realm whose connection it was.
    pub realm: usize,
    /// `Tcp` or `Tls`.
    pub proto: Proto,
    /// The destination (the peer's address).
    pub dest: SocketAddr,
    /// What failed, for the log.
    pub why: &'static str,
}

/// Whether realm `realm` takes connections from an address (its ACL).
pub type Admission = Box<dyn Fn(usize, IpAddr) -> bool + Send>;

/// Whether a source may send at all (false: banned; the check counts it).
pub type SourceGuard = Box<dyn Fn(IpAddr) -> bool + Send>;

/// One realm's sockets.
struct RealmSockets {
    udp: UdpSocket,
    /// Datagrams the kernel dropped on `udp`'s full receive queue, as last
    /// reported with a datagram (`SO_RXQ_OVFL`).
    rxq_drops: u32,
    listener: Option<TcpListener>,
    tls_listener: Option<TcpListener>,
    /// Local address outgoing TCP connections bind to (port 0).
    local: SocketAddr,
}

/// The sbc's SIP sockets.
pub struct Transport {
    poll: Poll,
    events: Events,
    /// By realm index; realm `i` polls as tokens `3i` (UDP), `3i + 1` (TCP)
    /// and `3i + 2` (TLS).
    realms: Vec<RealmSockets>,
    conns: HashMap<Token, Conn>,
    /// Open accepted connections per source address (canonical).
    per_ip: HashMap<IpAddr, usize>,
    /// Open accepted connections (the rest of `conns` we dialled).
    accepted: usize,
    /// The realms' ACLs, checked at accept (none: every source).
    admission: Option<Admission>,
    /// The guard's ban check, before anything else (none: every source).
    guard: Option<SourceGuard>,
    /// Stream connection to a peer, by (realm, transport, peer).
    by_peer: HashMap<(usize, Proto, SocketAddr), Token>,
    /// Peers whose connection to us closed, and when: never dialled.
    gone: HashMap<(usize, Proto, SocketAddr), Instant>,
    closed_flows: Vec<Flow>,
    /// Transport errors not yet taken.
    undelivered: Vec<Undelivered>,
    next: usize,
    max_msg: usize,
    rbuf: Vec<u8>,
    tls: Option<TlsSetup>,
    limits: Limits,
    /// Drop counters since start.
    pub drops: Drops,
    /// Connection counters since start.
    pub stats: ConnStats,
}

impl Transport {
    /// Binds UDP (and TCP when `tcp`) on `listen`: one realm.
    ///
    /// # Errors
    /// The bind error.
    pub fn bind(listen: SocketAddr, tcp: bool, max_msg: usize) -> io::Result<Self> {
        Self::bind_realms(&[listen], tcp, max_msg, false)
    }

    /// Binds UDP (and TCP when `tcp`) on each realm's `listens[i]`,
    /// optionally with `IP_FREEBIND` so an address may be one this host
    /// does not hold yet (an HA pair's virtual IPs).
    ///
    /// # Errors
    /// The bind error, naming the address.
    pub fn bind_realms(listens: &[SocketAddr], tcp: bool, max_msg: usize, freebind: bool) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut realms = Vec::with_capacity(listens.len());
        for (i, &listen) in listens.iter().enumerate() {
            let udp_sock = bind_socket(listen, false, freebind)?;
            if let Err(e) = crate::sys::enable_rxq_ovfl(&udp_sock) {
                tracing::warn!(%listen, error = %e, "SO_RXQ_OVFL unavailable: receive-queue drops not counted");
            }
            let mut udp = UdpSocket::from_std(udp_sock.into());
            poll.registry().register(&mut udp, Token(PER_REALM * i), Interest::READABLE)?;
            let listener = if tcp {
                let mut l = TcpListener::from_std(bind_socket(listen, true, freebind)?.into());
                poll.registry().register(&mut l, Token(PER_REALM * i + 1), Interest::READABLE)?;
                Some(l)
            } else {
                None
            };
            realms.push(RealmSockets {
                udp,
                rxq_drops: 0,
                listener,
                tls_listener: None,
                local: SocketAddr::new(listen.ip(), 0),
            });
        }
        Ok(Self {
            poll,
            events: Events::with_capacity(256),
            next: PER_REALM * realms.len(),
            realms,
            conns: HashMap::new(),
            per_ip: HashMap::new(),
            accepted: 0,
            admission: None,
            guard: None,
            by_peer: HashMap::new(),
            gone: HashMap::new(),
            closed_flows: Vec::new(),
            undelivered: Vec::new(),
            max_msg,
            rbuf: vec![0; max_msg + 1],
            tls: None,
            limits: Limits::default(),
            drops: Drops::default(),
            stats: ConnStats::default(),
        })
    }

    /// Enables TLS: listens on `listens[i]` for realm `i` where given
    /// (which needs `setup.server`), and dials TLS destinations as `setup`
    /// says.
    ///
    /// # Errors
    /// The bind error, naming the address, or a TLS port without a server
    /// configuration.
    pub fn enable_tls(&mut self, listens: &[Option<SocketAddr>], setup: TlsSetup, freebind: bool) -> io::Result<()> {
        for (i, l) in listens.iter().enumerate() {
            let (Some(listen), Some(r)) = (l, self.realms.get_mut(i)) else { continue };
            if setup.server.is_none() {
                return Err(io::Error::other(format!("TLS on {listen} needs a certificate and key")));
            }
            let mut l = TcpListener::from_std(bind_socket(*listen, true, freebind)?.into());
            self.poll.registry().register(&mut l, Token(PER_REALM * i + 2), Interest::READABLE)?;
            r.tls_listener = Some(l);
        }
        self.tls = Some(setup);
        Ok(())
    }

    /// Sets the bounds on stream connections.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Sets the check of the realm's source ACL made at accept: a
    /// connection from a source it denies is closed at once.
    pub fn set_admission(&mut self, admission: Admission) {
        self.admission = Some(admission);
    }

    /// Sets the guard's ban check, made on each datagram and at accept.
    pub fn set_guard(&mut self, guard: SourceGuard) {
        self.guard = Some(guard);
    }

    /// A waker that makes a blocked [`poll`](Self::poll) return.
    ///
    /// # Errors
    /// When the waker cannot be created (call it once).
    pub fn waker(&self) -> io::Result<std::sync::Arc<mio::Waker>> {
        Ok(std::sync::Arc::new(mio::Waker::new(self.poll.registry(), WAKER)?))
    }

    /// The first realm's bound UDP address.
    ///
    /// # Errors
    /// The getsockname error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.realm_addr(0)
    }

    /// Realm `realm`'s bound UDP address.
    ///
    /// # Errors
    /// The getsockname error, or an unknown realm.
    pub fn realm_addr(&self, realm: usize) -> io::Result<SocketAddr> {
        self.realms.get(realm).ok_or_else(|| io::Error::other(format!("no realm {realm}")))?.udp.local_addr()
    }

    /// Realm `realm`'s bound TLS address, when it serves TLS.
    #[must_use]
    pub fn tls_addr(&self, realm: usize) -> Option<SocketAddr> {
        self.realms.get(realm)?.tls_listener.as_ref()?.local_addr().ok()
    }

    /// Each realm's count of datagrams the kernel dropped on its full SIP
    /// UDP receive queue, by realm index (updated as datagrams are read).
    pub fn rx_queue_drops(&self) -> impl Iterator<Item = u64> + '_ {
        self.realms.iter().map(|r| u64::from(r.rxq_drops))
    }

    /// Open stream connections.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Connections peers opened to us that closed since the last call.
    pub fn take_closed_flows(&mut self) -> Vec<Flow> {
        std::mem::take(&mut self.closed_flows)
    }

    /// Destinations whose queued messages were lost since the last call
    /// (transport errors found after [`send`](Self::send) returned).
    pub fn take_undelivered(&mut self) -> Vec<Undelivered> {
        std::mem::take(&mut self.undelivered)
    }

    /// Peers' connections this node does not hold although the layer
    /// above knows of them (after an HA takeover: the connections phones
    /// had opened to the old active). They count as closed: never
    /// dialled, and reported by [`take_closed_flows`](Self::take_closed_flows).
    /// A flow this node does hold is left alone. Returns how many counted.
    pub fn lose_flows(&mut self, flows: &[Flow], now: Instant) -> usize {
        let mut n = 0;
        for f in flows {
            let key = (f.realm, f.proto, f.peer);
            if f.proto == Proto::Udp || self.by_peer.contains_key(&key) {
                continue;
            }
            if self.gone.len() < GONE_CAP || self.gone.contains_key(&key) {
                self.gone.insert(key, now);
            }
            self.closed_flows.push(*f);
            n += 1;
        }
        n
    }

    /// Waits up to `timeout` and appends every message that arrived to `out`.
    ///
    /// # Errors
    /// A poll error.
    pub fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<Inbound>, now: Instant) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let tokens: Vec<(Token, bool, bool)> =
            self.events.iter().map(|e| (e.token(), e.is_readable() || e.is_read_closed(), e.is_writable())).collect();
        let n = PER_REALM * self.realms.len();
        for (t, readable, writable) in tokens {
            match t {
                WAKER => {}
                Token(k) if k < n && k % PER_REALM == 0 => self.read_udp(k / PER_REALM, out),
                Token(k) if k < n => self.accept(k / PER_REALM, k % PER_REALM == 2, now),
                t => {
                    if writable {
                        self.flush(t, now);
                    }
                    if readable {
                        self.read_stream(t, out, now);
                    }
                }
            }
        }
        self.reap(now);
        Ok(())
    }

    fn read_udp(&mut self, realm: usize, out: &mut Vec<Inbound>) {
        let Some(r) = self.realms.get_mut(realm) else { return };
        loop {
            let rbuf = &mut self.rbuf;
            match r.udp.try_io(|| crate::sys::recv_counting_drops(&r.udp, rbuf)) {
                Ok((n, src, drops)) => {
                    r.rxq_drops = drops.unwrap_or(r.rxq_drops);
                    if self.guard.as_ref().is_some_and(|allowed| !allowed(src.ip())) {
                        continue;
                    }
                    if n > self.max_msg {
                        self.drops.oversize += 1;
                        tracing::debug!(%src, "datagram over max_message_size dropped");
                        continue;
                    }
                    out.push(Inbound { data: self.rbuf[..n].to_vec(), src, proto: Proto::Udp, realm });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // ICMP errors surface here on some kernels; they are not fatal.
                    tracing::debug!(error = %e, "UDP receive error");
                    return;
                }
            }
        }
    }

    fn accept(&mut self, realm: usize, tls: bool, now: Instant) {
        loop {
            let Some(r) = self.realms.get(realm) else { return };
            let Some(l) = (if tls { r.tls_listener.as_ref() } else { r.listener.as_ref() }) else { return };
            match l.accept() {
                Ok((stream, peer)) => {
                    let ip = peer.ip().to_canonical();
                    if self.guard.as_ref().is_some_and(|allowed| !allowed(ip)) {
                        continue; // banned: closed at once
                    }
                    if self.admission.as_ref().is_some_and(|permits| !permits(realm, ip)) {
                        self.stats.acl_denied += 1;
                        tracing::debug!(%peer, realm, "connection closed: the realm's ACL denies the source");
                        continue;
                    }
                    if self.accepted >= self.limits.max_connections {
                        self.stats.rejected += 1;
                        crate::warn_limited!(%peer, max = self.limits.max_connections, "connection refused: limit reached");
                        continue;
                    }
                    if self.per_ip.get(&ip).is_some_and(|&n| n >= self.limits.max_connections_per_ip) {
                        self.stats.rejected += 1;
                        let max = self.limits.max_connections_per_ip;
                        crate::info_limited!(%peer, max, "connection refused: max_connections_per_ip from its address");
                        continue;
                    }
                    let session = match (tls, self.tls.as_ref().and_then(|s| s.server.as_ref())) {
                        (false, _) => None,
                        (true, Some(cfg)) => match rustls::ServerConnection::new(Arc::clone(cfg)) {
                            Ok(c) => Some(rustls::Connection::from(c)),
                            Err(e) => {
                                crate::warn_limited!(error = %e, "TLS session could not be created");
                                continue;
                            }
                        },
                        (true, None) => continue,
                    };
                    let proto = if tls { Proto::Tls } else { Proto::Tcp };
                    self.gone.remove(&(realm, proto, peer));
                    let _ = self.add_conn(stream, peer, realm, session, true, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    crate::warn_limited!(error = %e, "TCP accept failed");
                    return;
                }
            }
        }
    }

    fn add_conn(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        realm: usize,
        tls: Option<rustls::Connection>,
        accepted: bool,
        now: Instant,
    ) -> io::Result<Token> {
        let t = Token(self.next);
        self.next += 1;
        self.poll.registry().register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)?;
        let proto = if tls.is_some() { Proto::Tls } else { Proto::Tcp };
        let mut tls = tls;
        if let Some(s) = &mut tls {
            // rustls refuses more than this, before and after the handshake.
            s.set_buffer_limit(Some(self.limits.max_output));
        }
        if accepted {
            self.accepted += 1;
            *self.per_ip.entry(peer.ip().to_canonical()).or_default() += 1;
        }
        let conn = Conn {
            stream,
            peer,
            realm,
            proto,
            tls,
            accepted,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            connected: accepted,
            opened: now,
            last_used: now,
            msg_started: None,
            last_write: now,
        };
        self.conns.insert(t, conn);
        self.by_peer.insert((realm, proto, peer), t);
        Ok(t)
    }

    /// Closes connection `t`; when messages queued on it are lost, that is
    /// a transport error for its destination, `why`.
    fn close(&mut self, t: Token, now: Instant, why: &'static str) {
        if let Some(mut c) = self.conns.remove(&t) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            if c.accepted {
                self.accepted -= 1;
                let ip = c.peer.ip().to_canonical();
                if let Some(n) = self.per_ip.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_ip.remove(&ip);
                    }
                }
            }
            if c.lost_output() {
                crate::info_limited!(dest = %c.peer, proto = c.proto.via_name(), why, "transport error: messages not delivered");
                self.undelivered.push(Undelivered { realm: c.realm, proto: c.proto, dest: c.peer, why });
            }
            let key = (c.realm, c.proto, c.peer);
            if self.by_peer.get(&key) == Some(&t) {
                self.by_peer.remove(&key);
                if c.accepted {
                    self.closed_flows.push(Flow { realm: c.realm, proto: c.proto, peer: c.peer });
                    if self.gone.len() < GONE_CAP {
                        self.gone.insert(key, now);
                    }
                }
            }
        }
    }

    fn read_stream(&mut self, t: Token, out: &mut Vec<Inbound>, now: Instant) {
        let Some(c) = self.conns.get_mut(&t) else { return };
        c.connected = true;
        let was_handshaking = c.handshaking();
        let mut closing = c.read(out, self.max_msg, now);
        // TLS: the handshake's answers (and anything queued during it).
        if closing.is_none() && c.flush(now) {
            closing = Some(Closing::Gone);
        }
        match closing {
            None => {}
            Some(why) => {
                let text = match why {
                    Closing::BadFraming => {
                        self.drops.bad_framing += 1;
                        "broken framing"
                    }
                    Closing::TlsFailed if was_handshaking => {
                        self.stats.tls_handshake_failures += 1;
                        "TLS handshake failed"
                    }
                    Closing::TlsFailed => "TLS failed",
                    Closing::Gone => "connection refused, reset or closed",
                };
                self.close(t, now, text);
            }
        }
    }

    fn flush(&mut self, t: Token, now: Instant) {
        let failed = self.conns.get_mut(&t).is_some_and(|c| {
            c.connected = true;
            c.flush(now)
        });
        if failed {
            self.close(t, now, "write failed");
        }
    }

    /// Sends a message. TCP and TLS reuse the connection to the peer, or
    /// open one, unless the peer's own connection to us has closed (a
    /// phone's flow: it is not dialled). A failure found later (the
    /// connect refused, the TLS handshake failed or timed out, the
    /// connection closed before the message went out) is reported by
    /// [`take_undelivered`](Self::take_undelivered).
    ///
    /// # Errors
    /// The send or connect error (a transport error for the transaction).
    pub fn send(&mut self, o: &Outbound, now: Instant) -> io::Result<()> {
        let r = self.realms.get(o.realm).ok_or_else(|| io::Error::other(format!("no realm {}", o.realm)))?;
        if o.proto == Proto::Udp {
            return r.udp.send_to(&o.data, o.dest).map(|_| ());
        }
        let key = (o.realm, o.proto, o.dest);
        let t = match self.by_peer.get(&key) {
            Some(t) => *t,
            None => {
                if self.gone.contains_key(&key) {
                    return Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the peer's connection is closed (its own flow is never dialled)",
                    ));
                }
                if self.conns.len() - self.accepted >= self.limits.max_connections {
                    return Err(io::Error::other("connection limit reached (connections we dialled)"));
                }
                let session = match o.proto {
                    Proto::Tls => {
                        let setup = self.tls.as_ref().ok_or_else(|| io::Error::other("TLS is not configured"))?;
                        let d = setup.dial(o.dest);
                        let c = rustls::ClientConnection::new(d.config, d.name).map_err(io::Error::other)?;
                        Some(rustls::Connection::from(c))
                    }
                    _ => None,
                };
                let s = connect_from(r.local, o.dest)?;
                self.add_conn(s, o.dest, o.realm, session, false, now)?
            }
        };
        let (mut failed, mut overflow) = (false, false);
        if let Some(c) = self.conns.get_mut(&t) {
            overflow = !c.queue(&o.data, self.limits.max_output, now);
            c.last_used = now;
            failed = !overflow && c.connected && c.flush(now);
        }
        if failed {
            self.close(t, now, "write failed");
        } else if overflow {
            // The peer does not read: this message and what waits are lost.
            let why = "pending output over the cap";
            self.stats.output_overflows += 1;
            crate::info_limited!(dest = %o.dest, max = self.limits.max_output, "closing connection: {why}");
            let reported = self.undelivered.len();
            self.close(t, now, why);
            if self.undelivered.len() == reported {
                self.undelivered.push(Undelivered { realm: o.realm, proto: o.proto, dest: o.dest, why });
            }
        }
        Ok(())
    }
}

/// A non-blocking socket bound to `listen` (listening when `stream`).
fn bind_socket(listen: SocketAddr, stream: bool, freebind: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (ty, proto) = if stream { (Type::STREAM, Protocol::TCP) } else { (Type::DGRAM, Protocol::UDP) };
    let s = Socket::new(Domain::for_address(listen), ty.nonblocking(), Some(proto))?;
    if freebind {
        if listen.is_ipv4() {
            s.set_freebind(true)?;
        } else {
            s.set_freebind_ipv6(true)?;
        }
    }
    if stream {
        s.set_reuse_address(true)?;
    }
    s.bind(&listen.into()).map_err(|e| io::Error::new(e.kind(), format!("binding {listen}: {e}")))?;
    if stream {
        s.listen(1024)?;
    }
    Ok(s)
}

/// A non-blocking TCP connection to `dest` from `local` (the realm's
/// address, port 0), so that it leaves through that realm's network.
fn connect_from(local: SocketAddr, dest: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    if local.ip().is_unspecified() || local.is_ipv4() != dest.is_ipv4() {
        return TcpStream::connect(dest);
    }
    let s = Socket::new(Domain::for_address(dest), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    s.bind(&local.into())?;
    match s.connect(&dest.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}

#[cfg(test)]
mod tests;
