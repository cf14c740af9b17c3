//! SIP transports: per realm, one UDP socket and a TCP listener with its
//! connections, polled with mio by the signaling thread. Every message in
//! and out names its realm (an index into the configured realms).
//!
//! The transport only frames messages (datagrams as they are; streams split
//! by the blank line and `Content-Length`). It does not parse them.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

const WAKER: Token = Token(usize::MAX);
/// TCP connections idle this long are closed.
const TCP_IDLE: Duration = Duration::from_secs(300);

/// SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Proto {
    /// The Via transport token.
    #[must_use]
    pub fn via_name(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        }
    }

    /// Whether the transport is reliable (RFC 3261 timers differ).
    #[must_use]
    pub fn reliable(self) -> bool {
        self == Self::Tcp
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

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    realm: usize,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    connected: bool,
    last_used: Instant,
}

/// One realm's sockets.
struct RealmSockets {
    udp: UdpSocket,
    listener: Option<TcpListener>,
    /// Local address outgoing TCP connections bind to (port 0).
    local: SocketAddr,
}

/// The sbc's SIP sockets.
pub struct Transport {
    poll: Poll,
    events: Events,
    /// By realm index; realm `i` polls as tokens `2i` (UDP) and `2i + 1` (TCP).
    realms: Vec<RealmSockets>,
    conns: HashMap<Token, Conn>,
    /// TCP connection to a peer, by (realm, peer).
    by_peer: HashMap<(usize, SocketAddr), Token>,
    next: usize,
    max_msg: usize,
    rbuf: Vec<u8>,
    /// Drop counters since start.
    pub drops: Drops,
}

/// Length of the first complete message in a stream buffer: `Ok(None)` when
/// more bytes are needed, `Err` when the framing is broken. Leading CRLFs
/// (keep-alives) are reported as a message of only those bytes.
///
/// # Errors
/// A missing or unreadable Content-Length, or a message over `max`.
pub fn frame(buf: &[u8], max: usize) -> Result<Option<usize>, &'static str> {
    let ws = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    if ws > 0 {
        return Ok(Some(ws));
    }
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
        return if buf.len() > max { Err("header section too large") } else { Ok(None) };
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "header section is not UTF-8")?;
    let mut cl: Option<usize> = None;
    for line in head.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            cl = Some(value.trim().parse().map_err(|_| "bad Content-Length")?);
        }
    }
    let Some(cl) = cl else { return Err("Content-Length is required on stream transports") };
    let total = head_end.checked_add(cl).ok_or("bad Content-Length")?;
    if total > max {
        return Err("message too large");
    }
    Ok(if buf.len() >= total { Some(total) } else { None })
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
        use socket2::{Domain, Protocol, Socket, Type};
        let poll = Poll::new()?;
        let mut realms = Vec::with_capacity(listens.len());
        for (i, &listen) in listens.iter().enumerate() {
            let sock = |ty: Type, proto: Protocol| -> io::Result<Socket> {
                let s = Socket::new(Domain::for_address(listen), ty.nonblocking(), Some(proto))?;
                if freebind {
                    if listen.is_ipv4() {
                        s.set_freebind(true)?;
                    } else {
                        s.set_freebind_ipv6(true)?;
                    }
                }
                if ty == Type::STREAM {
                    s.set_reuse_address(true)?;
                }
                s.bind(&listen.into()).map_err(|e| io::Error::new(e.kind(), format!("binding {listen}: {e}")))?;
                Ok(s)
            };
            let mut udp = UdpSocket::from_std(sock(Type::DGRAM, Protocol::UDP)?.into());
            poll.registry().register(&mut udp, Token(2 * i), Interest::READABLE)?;
            let listener = if tcp {
                let s = sock(Type::STREAM, Protocol::TCP)?;
                s.listen(1024)?;
                let mut l = TcpListener::from_std(s.into());
                poll.registry().register(&mut l, Token(2 * i + 1), Interest::READABLE)?;
                Some(l)
            } else {
                None
            };
            realms.push(RealmSockets { udp, listener, local: SocketAddr::new(listen.ip(), 0) });
        }
        Ok(Self {
            poll,
            events: Events::with_capacity(256),
            next: 2 * realms.len(),
            realms,
            conns: HashMap::new(),
            by_peer: HashMap::new(),
            max_msg,
            rbuf: vec![0; max_msg + 1],
            drops: Drops::default(),
        })
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
        let n = 2 * self.realms.len();
        for (t, readable, writable) in tokens {
            match t {
                WAKER => {}
                Token(k) if k < n && k % 2 == 0 => self.read_udp(k / 2, out),
                Token(k) if k < n => self.accept(k / 2, now),
                t => {
                    if writable {
                        self.flush(t);
                    }
                    if readable {
                        self.read_tcp(t, out, now);
                    }
                }
            }
        }
        self.reap_idle(now);
        Ok(())
    }

    fn read_udp(&mut self, realm: usize, out: &mut Vec<Inbound>) {
        let Some(r) = self.realms.get(realm) else { return };
        loop {
            match r.udp.recv_from(&mut self.rbuf) {
                Ok((n, src)) => {
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

    fn accept(&mut self, realm: usize, now: Instant) {
        loop {
            let Some(l) = self.realms.get(realm).and_then(|r| r.listener.as_ref()) else { return };
            match l.accept() {
                Ok((stream, peer)) => {
                    let _ = self.add_conn(stream, peer, realm, true, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
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
        connected: bool,
        now: Instant,
    ) -> io::Result<Token> {
        let t = Token(self.next);
        self.next += 1;
        self.poll.registry().register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)?;
        let conn = Conn { stream, peer, realm, rbuf: Vec::new(), wbuf: Vec::new(), connected, last_used: now };
        self.conns.insert(t, conn);
        self.by_peer.insert((realm, peer), t);
        Ok(t)
    }

    fn close(&mut self, t: Token) {
        if let Some(mut c) = self.conns.remove(&t) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            if self.by_peer.get(&(c.realm, c.peer)) == Some(&t) {
                self.by_peer.remove(&(c.realm, c.peer));
            }
        }
    }

    fn read_tcp(&mut self, t: Token, out: &mut Vec<Inbound>, now: Instant) {
        let max = self.max_msg;
        let mut close = false;
        {
            let Some(c) = self.conns.get_mut(&t) else { return };
            c.connected = true;
            c.last_used = now;
            let mut chunk = [0u8; 16384];
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        close = true;
                        break;
                    }
                    Ok(n) => c.rbuf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
            loop {
                match frame(&c.rbuf, max) {
                    Ok(Some(n)) => {
                        let msg: Vec<u8> = c.rbuf.drain(..n).collect();
                        if msg.iter().all(|&b| b == b'\r' || b == b'\n') {
                            continue;
                        }
                        out.push(Inbound { data: msg, src: c.peer, proto: Proto::Tcp, realm: c.realm });
                    }
                    Ok(None) => break,
                    Err(why) => {
                        tracing::info!(peer = %c.peer, why, "closing TCP connection: broken framing");
                        self.drops.bad_framing += 1;
                        close = true;
                        break;
                    }
                }
            }
        }
        if close {
            self.close(t);
        }
    }

    fn flush(&mut self, t: Token) {
        let mut close = false;
        if let Some(c) = self.conns.get_mut(&t) {
            c.connected = true;
            while !c.wbuf.is_empty() {
                match c.stream.write(&c.wbuf) {
                    Ok(0) => {
                        close = true;
                        break;
                    }
                    Ok(n) => {
                        c.wbuf.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
        }
        if close {
            self.close(t);
        }
    }

    fn reap_idle(&mut self, now: Instant) {
        let idle: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.wbuf.is_empty() && now.duration_since(c.last_used) > TCP_IDLE)
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            self.close(t);
        }
    }

    /// Sends a message. TCP reuses a connection to the peer or opens one.
    ///
    /// # Errors
    /// The send or connect error (a transport error for the transaction).
    pub fn send(&mut self, o: &Outbound, now: Instant) -> io::Result<()> {
        let r = self.realms.get(o.realm).ok_or_else(|| io::Error::other(format!("no realm {}", o.realm)))?;
        match o.proto {
            Proto::Udp => r.udp.send_to(&o.data, o.dest).map(|_| ()),
            Proto::Tcp => {
                let t = match self.by_peer.get(&(o.realm, o.dest)) {
                    Some(t) => *t,
                    None => {
                        let s = connect_from(r.local, o.dest)?;
                        self.add_conn(s, o.dest, o.realm, false, now)?
                    }
                };
                if let Some(c) = self.conns.get_mut(&t) {
                    c.wbuf.extend_from_slice(&o.data);
                    c.last_used = now;
                    if c.connected {
                        self.flush(t);
                    }
                }
                Ok(())
            }
        }
    }
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
mod tests {
    use super::*;

    #[test]
    fn stream_framing() {
        let m = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabcNEXT";
        assert_eq!(frame(m, 65535), Ok(Some(m.len() - 4)));
        assert_eq!(frame(&m[..20], 65535), Ok(None));
        assert_eq!(frame(b"\r\n\r\nINVITE", 65535), Ok(Some(4)));
        assert!(frame(b"X\r\n\r\n", 65535).is_err(), "no Content-Length on a stream");
        assert!(frame(b"X\r\nl: -1\r\n\r\n", 65535).is_err());
        assert!(frame(b"X\r\nl: 99999999\r\n\r\n", 65535).is_err());
        assert_eq!(frame(b"X\r\nl: 2\r\n\r\nab", 65535), Ok(Some(13)));
    }
}
