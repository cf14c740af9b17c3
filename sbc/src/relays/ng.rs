//! A blocking ng client (rtpengine's control protocol: one UDP datagram
//! `"<cookie> <bencoded dict>"`, the reply echoes the cookie), with the
//! cookie and retransmission rules of Kamailio's rtpengine module:
//!
//! - every request gets a cookie of its own, unique across processes
//!   (process id, start time, counter), so a relay's reply cache never
//!   answers a new request with an old reply;
//! - a request without a reply is sent again with the *same* cookie, so the
//!   relay answers a retransmission from its cache instead of executing the
//!   command twice;
//! - after `retransmits + 1` sends and `timeout` in all, it fails.
//!
//! Replies with another cookie (late replies to earlier requests) are
//! skipped. A reply with our cookie that does not decode is an error.
//! The socket is connected to the relay, so an ICMP port unreachable (the
//! relay process is gone) ends the request at once.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use media_relay::bencode::{self, Value};

/// Why an ng request failed.
#[derive(Debug, thiserror::Error)]
pub enum NgError {
    /// No reply within the timeout, retransmissions included.
    #[error("no reply after {sends} sends in {ms} ms")]
    Timeout {
        /// Datagrams sent (the first and the retransmissions).
        sends: u32,
        /// The timeout.
        ms: u128,
    },
    /// The relay's host answered with ICMP port unreachable: nothing listens.
    #[error("connection refused (nothing listens)")]
    Refused,
    /// A reply with our cookie that is not a bencoded dictionary.
    #[error("reply does not decode: {0}")]
    BadReply(String),
    /// The relay answered `result: error`.
    #[error("{0}")]
    Rejected(String),
    /// A socket operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl NgError {
    /// Whether the relay did not answer at all (a reason to try another
    /// relay and to take this one out of service), as opposed to an answer
    /// that refused the request.
    #[must_use]
    pub fn is_silence(&self) -> bool {
        !matches!(self, NgError::Rejected(_))
    }
}

/// One relay's ng endpoint, used by one thread at a time (a lock keeps a
/// second caller from reading the first one's reply).
pub struct NgClient {
    /// The socket and the reply buffer.
    io: Mutex<(UdpSocket, Vec<u8>)>,
    server: SocketAddr,
    prefix: String,
    counter: AtomicU64,
    /// Total time a request may take, retransmissions included.
    pub timeout: Duration,
    /// Sends after the first.
    pub retransmits: u32,
}

impl NgClient {
    /// A client for the relay at `server`.
    ///
    /// # Errors
    /// When the socket cannot be bound or connected.
    pub fn new(server: SocketAddr, timeout: Duration, retransmits: u32) -> Result<Self, NgError> {
        let bind: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let sock = UdpSocket::bind(bind).map_err(|source| NgError::Io { op: "bind ng client socket", source })?;
        sock.connect(server).map_err(|source| NgError::Io { op: "connect ng client socket", source })?;
        Ok(Self {
            io: Mutex::new((sock, vec![0u8; 65_536])),
            server,
            prefix: cookie_prefix(),
            counter: AtomicU64::new(0),
            timeout,
            retransmits,
        })
    }

    /// The relay's address.
    #[must_use]
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The next cookie.
    fn cookie(&self) -> String {
        format!("{}_{}", self.prefix, self.counter.fetch_add(1, Relaxed))
    }

    /// Sends `dict` and returns the reply dictionary. A reply with
    /// `result: error` is [`NgError::Rejected`] with its `error-reason`.
    ///
    /// # Errors
    /// See [`NgError`].
    pub fn request(&self, dict: &Value) -> Result<Value, NgError> {
        let cookie = self.cookie();
        let mut msg = Vec::with_capacity(512);
        msg.extend_from_slice(cookie.as_bytes());
        msg.push(b' ');
        dict.encode(&mut msg);
        let mut io = self.io.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (sock, buf) = &mut *io;
        let start = Instant::now();
        let sends = self.retransmits.saturating_add(1);
        let per_send = self.timeout / sends;
        for n in 0..sends {
            match sock.send(&msg) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(NgError::Refused),
                Err(source) => return Err(NgError::Io { op: "send ng request", source }),
            }
            let until = if n + 1 == sends { start + self.timeout } else { start + per_send * (n + 1) };
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                sock.set_read_timeout(Some(left)).map_err(|source| NgError::Io { op: "set ng timeout", source })?;
                let len = match sock.recv(buf) {
                    Ok(len) => len,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(NgError::Refused),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => return Err(NgError::Io { op: "receive ng reply", source }),
                };
                if let Some(reply) = match_reply(&buf[..len], cookie.as_bytes()) {
                    return decode_reply(reply);
                }
            }
        }
        Err(NgError::Timeout { sends, ms: self.timeout.as_millis() })
    }

    /// `ping`, answered `pong`.
    ///
    /// # Errors
    /// See [`NgError`]; a reply other than `pong` is [`NgError::BadReply`].
    pub fn ping(&self) -> Result<(), NgError> {
        let mut d = Value::dict();
        d.insert("command", Value::str("ping"));
        let r = self.request(&d)?;
        match r.get("result").and_then(Value::as_str) {
            Some("pong") => Ok(()),
            other => Err(NgError::BadReply(format!("ping answered {other:?}"))),
        }
    }
}

/// The body of a datagram whose cookie is `cookie`; `None` for anything
/// else (another request's reply, garbage without a cookie).
fn match_reply<'a>(datagram: &'a [u8], cookie: &[u8]) -> Option<&'a [u8]> {
    let (c, body) = media_relay::ng::split_cookie(datagram)?;
    (c == cookie).then_some(body)
}

fn decode_reply(body: &[u8]) -> Result<Value, NgError> {
    let v = bencode::decode(body).map_err(|e| NgError::BadReply(e.to_string()))?;
    if v.as_dict().is_none() {
        return Err(NgError::BadReply("not a dictionary".into()));
    }
    if v.get("result").and_then(Value::as_str) == Some("error") {
        let reason = v.get("error-reason").and_then(Value::as_str).unwrap_or("error without a reason");
        return Err(NgError::Rejected(reason.to_owned()));
    }
    Ok(v)
}

/// `x<pid>_<start ns>`: unique across processes and restarts.
fn cookie_prefix() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("x{}_{:x}", std::process::id(), t.as_nanos() & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    /// A fake relay: hands each datagram to `reply`, which returns what to
    /// send back (nothing, one or several datagrams). Returns its address and
    /// a channel of the datagrams it received.
    fn fake(
        mut reply: impl FnMut(usize, &[u8]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut n = 0;
            while let Ok((len, from)) = sock.recv_from(&mut buf) {
                let d = buf[..len].to_vec();
                let replies = reply(n, &d);
                n += 1;
                if tx.send(d).is_err() {
                    return;
                }
                for r in replies {
                    let _ = sock.send_to(&r, from);
                }
            }
        });
        (addr, rx)
    }

    fn cookie_of(d: &[u8]) -> Vec<u8> {
        d[..d.iter().position(|&b| b == b' ').unwrap()].to_vec()
    }

    fn with_cookie(d: &[u8], body: &str) -> Vec<u8> {
        let mut r = cookie_of(d);
        r.push(b' ');
        r.extend_from_slice(body.as_bytes());
        r
    }

    fn ping_dict() -> Value {
        let mut d = Value::dict();
        d.insert("command", Value::str("ping"));
        d
    }

    #[test]
    fn cookies_are_unique_and_the_reply_is_matched() {
        let (addr, rx) = fake(|_, d| vec![with_cookie(d, "d6:result4:ponge")]);
        let c = NgClient::new(addr, Duration::from_millis(900), 2).unwrap();
        c.ping().unwrap();
        c.ping().unwrap();
        let (a, b) = (rx.recv().unwrap(), rx.recv().unwrap());
        assert_ne!(cookie_of(&a), cookie_of(&b));
        assert_eq!(&a[cookie_of(&a).len()..], b" d7:command4:pinge");
        // Another client (another run) does not reuse them.
        let c2 = NgClient::new(addr, Duration::from_millis(900), 2).unwrap();
        c2.ping().unwrap();
        let d = rx.recv().unwrap();
        assert_ne!(cookie_of(&d), cookie_of(&a));
        assert_ne!(cookie_of(&d), cookie_of(&b));
    }

    #[test]
    fn a_lost_request_is_retransmitted_with_the_same_cookie() {
        // The first two sends get no reply; the third is answered.
        let (addr, rx) = fake(|n, d| if n < 2 { vec![] } else { vec![with_cookie(d, "d6:result4:ponge")] });
        let c = NgClient::new(addr, Duration::from_millis(900), 2).unwrap();
        let t = Instant::now();
        c.ping().unwrap();
        let took = t.elapsed();
        let sends: Vec<Vec<u8>> = rx.try_iter().collect();
        assert_eq!(sends.len(), 3);
        assert!(sends.iter().all(|s| *s == sends[0]), "same datagram, same cookie");
        // Retransmissions at 300 ms and 600 ms.
        assert!(took >= Duration::from_millis(580) && took < Duration::from_millis(900), "{took:?}");
    }

    #[test]
    fn silence_times_out_after_the_total_timeout() {
        let (addr, rx) = fake(|_, _| vec![]);
        let c = NgClient::new(addr, Duration::from_millis(300), 2).unwrap();
        let t = Instant::now();
        let e = c.ping().unwrap_err();
        let took = t.elapsed();
        assert!(matches!(e, NgError::Timeout { sends: 3, ms: 300 }), "{e}");
        assert!(e.is_silence());
        assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(450), "{took:?}");
        thread::sleep(Duration::from_millis(20));
        assert_eq!(rx.try_iter().count(), 3);
    }

    #[test]
    fn stale_and_garbage_datagrams_are_skipped() {
        // Before the real reply: a reply to another cookie, a datagram with
        // no cookie at all, and a cookie made of control characters.
        let (addr, _rx) = fake(|_, d| {
            vec![
                b"x1_0_99 d6:result4:ponge".to_vec(),
                b"garbage".to_vec(),
                b"\x01\x02 d6:result4:ponge".to_vec(),
                with_cookie(d, "d6:result4:ponge"),
            ]
        });
        let c = NgClient::new(addr, Duration::from_millis(600), 2).unwrap();
        c.ping().unwrap();
    }

    #[test]
    fn a_reply_that_does_not_decode_is_an_error() {
        let (addr, _rx) = fake(|n, d| vec![with_cookie(d, if n == 0 { "d6:result" } else { "li1ee" })]);
        let c = NgClient::new(addr, Duration::from_millis(600), 2).unwrap();
        assert!(matches!(c.request(&ping_dict()), Err(NgError::BadReply(_))));
        assert!(matches!(c.request(&ping_dict()), Err(NgError::BadReply(e)) if e.contains("dictionary")));
    }

    #[test]
    fn an_error_result_is_rejected_with_its_reason() {
        let (addr, _rx) = fake(|_, d| vec![with_cookie(d, "d6:result5:error12:error-reason15:Unknown call-ide")]);
        let c = NgClient::new(addr, Duration::from_millis(600), 2).unwrap();
        let e = c.request(&ping_dict()).unwrap_err();
        assert!(matches!(&e, NgError::Rejected(r) if r == "Unknown call-id"), "{e}");
        assert!(!e.is_silence());
    }

    #[test]
    fn nobody_listening_fails_at_once() {
        let addr = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let c = NgClient::new(addr, Duration::from_secs(3), 2).unwrap();
        let t = Instant::now();
        let e = c.ping().unwrap_err();
        assert!(matches!(e, NgError::Refused), "{e}");
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
